#!/usr/bin/env bash
# Create .venv with resnet-deploy and its dev tools. torch/torchvision are pinned to the releases these
# machines install from local disk, so no second (multi-GB) torch is ever pulled in.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
python -m pip install -q -e ".[dev]"
