#!/usr/bin/env bash
# Set up (idempotent) and run the test suite: everything that needs no GPU; gpu tests skip themselves.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
python -m pytest -q "$@"
