#!/usr/bin/env bash
# Set up (idempotent) and run the test suite: everything that needs no GPU; gpu tests skip themselves.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/setup_cpp.sh   # compiler, cmake and pinned ONNX Runtime headers for the C++ loader tests
. .venv/bin/activate
python -m pytest -q "$@"
