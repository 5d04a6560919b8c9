"""The C++ TensorRT backend's DeviceBuffer, compiled alone against a stand-in CUDA runtime (cpp/tests/stub_cuda).

The backend itself is only built with -DWITH_TENSORRT=ON (TensorRT and CUDA, absent here); DeviceBuffer sits in a
header of its own so that its allocation logic can be compiled and run without them. The stub's cudaMalloc fails on
demand and its cudaFree counts frees of pointers it does not hold.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

CPP = Path(__file__).resolve().parents[1] / "cpp"


def test_device_buffer_failed_allocation_leaves_no_dangling_pointer(tmp_path):
    cxx = next((c for c in (os.environ.get("CXX", "c++"), "g++", "clang++") if shutil.which(c)), None)
    if cxx is None:
        pytest.skip("no C++ compiler is installed (scripts/setup_cpp.sh installs g++)")
    exe = tmp_path / "device_buffer_test"
    build = subprocess.run([cxx, "-std=c++17", "-Wall", "-Wextra", "-Werror", "-I", str(CPP / "tests" / "stub_cuda"),
                            "-I", str(CPP / "src"), str(CPP / "tests" / "device_buffer_test.cpp"), "-o", str(exe)],
                           capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and run.stdout.strip() == "device_buffer: ok", run.stderr
