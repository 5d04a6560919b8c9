#!/usr/bin/env bash
# Set up (idempotent) and run the test suite: everything that needs no GPU; gpu tests skip themselves.
# Without arguments (as CI runs it) the accuracy proofs (marker `proof`) then run a second time with torch and
# oneDNN held to AVX2 kernels: training differs per instruction set, so this retrains and checks what an
# AVX2-only machine gets, on any machine. Arguments go to the first pass only, which is then the only one.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/setup_cpp.sh   # compiler, cmake and pinned ONNX Runtime headers for the C++ loader tests
. .venv/bin/activate
status=0
python -m pytest -q "$@" || status=$?
if [ $# -eq 0 ]; then
  echo "== second pass: accuracy proofs with AVX2 kernels (ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2) =="
  ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 python -m pytest -q -m proof || status=$?
fi
exit "$status"
