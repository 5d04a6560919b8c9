"""``python -m build`` makes an sdist and a wheel that hold the whole package and install into a clean virtual
environment, where ``resnet-deploy --version`` runs (issue 29; the README's Install section).

Offline and without a second torch: the build runs ``--no-isolation`` with this environment's setuptools, on a copy
of the checkout (the sdist step writes ``*.egg-info`` into its source); each artifact goes into its own new virtual
environment with ``--no-deps --no-index``, whose dependencies come from this environment's site-packages through a
``.pth`` line (like ``--system-site-packages``, but pointing at this environment, not the base interpreter).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

from resnet_deploy.version import __version__

ROOT = Path(__file__).resolve().parents[1]
JUNK = shutil.ignore_patterns(".*", "__pycache__", "*.pyc", "*.egg-info", "build", "dist", "*-bundle", "bench-*")


def _env() -> dict:
    """This environment without PYTHONPATH, so that the new one imports only what it installed."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def _run(*cmd, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=_env(), timeout=600, **kw)
    assert r.returncode == 0, f"{' '.join(map(str, cmd))} exited {r.returncode}:\n{r.stdout[-3000:]}\n" \
                              f"{r.stderr[-3000:]}"
    return r


def _copy_source(dst: Path) -> None:
    """The files git would put in a fresh clone (tracked, plus new ones it does not ignore), else a filtered copy."""
    if (ROOT / ".git").exists() and shutil.which("git"):
        names = _run("git", "ls-files", "--cached", "--others", "--exclude-standard", "-z", cwd=ROOT).stdout
        for name in filter(None, names.split("\0")):
            if (ROOT / name).is_file():
                (dst / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / name, dst / name)
    else:
        shutil.copytree(ROOT, dst, ignore=JUNK, dirs_exist_ok=True)


def _package_files(src: Path) -> set[str]:
    """Every file of the package (code and data), as a path from the package's parent."""
    return {p.relative_to(src).as_posix() for p in (src / "resnet_deploy").rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}


@pytest.fixture(scope="module")
def dists(tmp_path_factory) -> dict:
    pytest.importorskip("build", reason="python -m build: pip install -e '.[dev]'")
    tmp = tmp_path_factory.mktemp("packaging")
    src = tmp / "src"
    src.mkdir()
    _copy_source(src)
    _run(sys.executable, "-m", "build", "--no-isolation", "--outdir", tmp / "dist", src)
    (sdist,), (wheel,) = sorted((tmp / "dist").glob("*.tar.gz")), sorted((tmp / "dist").glob("*.whl"))
    return {"tmp": tmp, "package": _package_files(src), "sdist": sdist, "wheel": wheel}


def test_wheel_and_sdist_hold_every_package_file(dists):
    assert dists["wheel"].name == f"resnet_deploy-{__version__}-py3-none-any.whl"
    with zipfile.ZipFile(dists["wheel"]) as z:
        in_wheel = set(z.namelist())
    assert dists["package"] - in_wheel == set()
    entry_points = zipfile.Path(dists["wheel"], f"resnet_deploy-{__version__}.dist-info/entry_points.txt").read_text()
    assert "resnet-deploy = resnet_deploy.cli:main" in entry_points
    prefix = f"resnet_deploy-{__version__}/"
    with tarfile.open(dists["sdist"]) as t:
        in_sdist = {n.removeprefix(prefix) for n in t.getnames()}
    assert dists["package"] | {"README.md", "pyproject.toml"} <= in_sdist


@pytest.mark.parametrize("artifact", ["wheel", "sdist"])
def test_installs_into_a_clean_venv(dists, artifact):
    venv = dists["tmp"] / f"venv-{artifact}"
    _run(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    site = Path(_run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip())
    (site / "_resnet_deploy_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run(sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", "--no-index",
         "--no-build-isolation", dists[artifact])
    where = _run(python, "-c", "import resnet_deploy; print(resnet_deploy.__file__)", cwd=venv).stdout.strip()
    assert Path(where).is_relative_to(site), where  # the installed copy, not the checkout
    out = _run(venv / "bin" / "resnet-deploy", "--version", cwd=venv).stdout
    assert __version__ in out, out
