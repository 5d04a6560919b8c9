"""Shared fixtures: small models and bundles built once per session (64x64 inputs, randomised BatchNorm)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
IMAGES = DATA / "images"
SMALL = 64


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``resnet-deploy`` in a subprocess (as a user would), capturing output."""
    return subprocess.run([sys.executable, "-m", "resnet_deploy", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, **(env or {})}, timeout=600)


def pytest_collection_modifyitems(config, items):
    """``slow`` tests run only when asked for (``-m slow``, or any -m expression naming it)."""
    if "slow" in (config.getoption("-m") or ""):
        return
    skip = pytest.mark.skip(reason="slow: run with -m slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def images_dir() -> Path:
    return IMAGES


@pytest.fixture(scope="session")
def r18_bundle(tmp_path_factory) -> Path:
    """A resnet18 bundle (random weights, randomised BN, 64x64), exported once per session; do not modify."""
    from resnet_deploy import export_arch

    out = tmp_path_factory.mktemp("bundles") / "r18"
    export_arch("resnet18", out, weights="random", input_size=SMALL, num_classes=10, images=IMAGES)
    return out


@pytest.fixture
def r18_bundle_copy(r18_bundle, tmp_path) -> Path:
    """A private copy of the resnet18 bundle that a test may change."""
    dst = tmp_path / "r18"
    shutil.copytree(r18_bundle, dst)
    return dst
