#!/usr/bin/env bash
# Configure and build the C++ loader: cpp/build.sh [BUILD_DIR] [extra cmake arguments...]
# Checks its prerequisites first and says how to get each one that is missing.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=${1:-$here/build}
shift || true
missing=()
command -v cmake >/dev/null 2>&1 || missing+=("cmake (apt-get install cmake)")
if ! command -v "${CXX:-c++}" >/dev/null 2>&1 && ! command -v g++ >/dev/null 2>&1; then
  missing+=("a C++17 compiler (apt-get install g++)")
fi
command -v make >/dev/null 2>&1 || command -v ninja >/dev/null 2>&1 || missing+=("make (apt-get install make)")
if [ ${#missing[@]} -gt 0 ]; then
  printf 'error: missing prerequisite: %s\n' "${missing[@]}" >&2
  echo "       scripts/setup_cpp.sh installs them all on Debian/Ubuntu" >&2
  exit 2
fi
# The Python whose onnxruntime wheel provides the library: $PYTHON, else the project's venv (<repo>/.venv, where the
# README installs it, whether or not it is activated), else python3 on PATH.
venv_python=$(cd "$here/.." && pwd)/.venv/bin/python
if [ -n "${PYTHON:-}" ]; then
  python=$PYTHON; from="PYTHON"
elif [ -x "$venv_python" ]; then
  python=$venv_python; from="the project's .venv"
else
  python=$(command -v python3 || true); from="python3 on PATH; set PYTHON=<python with onnxruntime> to choose"
fi
echo "using Python ${python:-(none found)} ($from)"
cmake -S "$here" -B "$build" -DCMAKE_BUILD_TYPE=Release ${python:+-DPython3_EXECUTABLE="$python"} "$@"
cmake --build "$build" -j "$(nproc 2>/dev/null || echo 2)"
echo "built $build/resnet_deploy_infer"
