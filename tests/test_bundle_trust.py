"""Bundle trust: a manifest may only name files inside its bundle; anything else is refused before it is read.

Each untrusted bundle has its ``model.onnx`` moved to a folder beside the bundle and the manifest reaching it
there: by a ``../`` name, by an absolute name, or through a symlink inside the bundle. Every command and API
entry point that reads a bundle must refuse it with exit 2 and one line naming the entry, and open nothing in
that folder: an audit hook sees every file Python opens (hashing, ``onnx.load``, ``shutil.copy2`` ...).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from resnet_deploy import layout
from resnet_deploy.bundle import SCHEMA_VERSION, load_eager, read_manifest, verified, verify
from resnet_deploy.cli import main
from resnet_deploy.errors import UserError
from resnet_deploy.types import Precision, Target

from .conftest import run_cli

NOT_A_NAME = "not a bundle file name"
_watch: list = []  # while a test watches: [the outside folder's real path, the paths opened in it]


def _audit(event: str, args: tuple) -> None:
    if event == "open" and _watch and isinstance(args[0], (str, bytes, os.PathLike)):
        path = os.path.realpath(os.fsdecode(args[0]))
        if path == _watch[0] or path.startswith(_watch[0] + os.sep):
            _watch[1].append(path)


sys.addaudithook(_audit)  # audit hooks cannot be removed: it records only while ``opened_in`` is active


@contextlib.contextmanager
def opened_in(folder: Path):
    """The list of files opened under ``folder`` (symlinks resolved) while the block runs."""
    opened: list[str] = []
    _watch[:] = [os.path.realpath(folder), opened]
    try:
        yield opened
    finally:
        _watch.clear()


HOW = ["dotdot", "absolute", "symlink"]


def untrust(bundle: Path, how: str) -> str:
    """Move the bundle's model.onnx to ``outside/`` beside it and make the manifest reach it there ``how``;
    returns the manifest entry's name. Size and sha256 still match, so only the name gives it away."""
    outside = bundle.parent / "outside"
    outside.mkdir()
    target = outside / layout.FP32_ONNX
    shutil.move(bundle / layout.FP32_ONNX, target)
    name = {"dotdot": f"../outside/{layout.FP32_ONNX}", "absolute": str(target), "symlink": layout.FP32_ONNX}[how]
    if how == "symlink":
        (bundle / layout.FP32_ONNX).symlink_to(target)
    path = bundle / layout.MANIFEST
    m = json.loads(path.read_text())
    m["files"] = {name if n == layout.FP32_ONNX else n: e for n, e in m["files"].items()}
    path.write_text(json.dumps(m, indent=2))
    return name


@pytest.fixture(params=HOW)
def untrusted(request, r18_bundle_copy) -> tuple[Path, str]:
    return r18_bundle_copy, untrust(r18_bundle_copy, request.param)


def commands(bundle: Path, tmp: Path) -> dict[str, list[str]]:
    b = str(bundle)
    return {
        "info": ["info", b],
        "bench": ["bench", b, "--backend", "onnxruntime", "--batch", "1", "--warmup", "0", "--iters", "1",
                  "--samples", "2", "--no-plot", "--out", str(tmp / "bench")],
        "triton": ["triton", b, "--repo", str(tmp / "repo"), "--device", "cpu"],
        "fuse": ["fuse", b, "--force"],
        "quantize": ["quantize", b, "--fp16", "--force"],
        "build": ["build", b, "--force"],  # TensorRT is absent: the trust check must come first
    }


def assert_refused(code: int, err: str, name: str, opened: list[str]) -> None:
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    assert NOT_A_NAME in lines[0] and repr(name) in lines[0], lines[0]
    assert opened == [], f"read outside the bundle: {opened}"


@pytest.mark.parametrize("command", ["info", "bench", "triton", "fuse", "quantize", "build"])
def test_command_refuses_untrusted_bundle(command, untrusted, tmp_path, capsys):
    bundle, name = untrusted
    with opened_in(bundle.parent / "outside") as opened:
        code = main(commands(bundle, tmp_path)[command])
    assert_refused(code, capsys.readouterr().err, name, opened)


def _verified(b, name):
    """``verified`` on a manifest that did not come through ``read_manifest``: it checks the name itself."""
    return verified(b, json.loads((b / layout.MANIFEST).read_text()), name)


def _bench(b, name):
    from resnet_deploy.bench import BenchConfig, run_bench

    return run_bench(b, BenchConfig(backends=["onnxruntime"], batches=[1], warmup=0, iters=1, samples=2))


def _triton(b, name):
    from resnet_deploy.deploy.triton import write_triton_repo

    return write_triton_repo(b, b.parent / "repo", device="cpu")


def _fuse(b, name):
    from resnet_deploy.pipeline.update import fuse_bundle

    return fuse_bundle(b, force=True)


def _quantize(b, name):
    from resnet_deploy.pipeline.update import quantize_bundle
    from resnet_deploy.precision.stage import PrecisionOptions

    return quantize_bundle(b, PrecisionOptions(fp16=True), force=True)


def _build(b, name):
    from resnet_deploy.engines.stage import BuildOptions
    from resnet_deploy.pipeline.update import build_bundle

    return build_bundle(b, BuildOptions(), force=True)


API = {"read_manifest": lambda b, name: read_manifest(b), "verify": lambda b, name: verify(b),
       "verified": _verified, "load_eager": lambda b, name: load_eager(b), "run_bench": _bench,
       "write_triton_repo": _triton, "fuse_bundle": _fuse, "quantize_bundle": _quantize, "build_bundle": _build}


@pytest.mark.parametrize("entry_point", list(API))
def test_api_refuses_untrusted_bundle(entry_point, untrusted):
    bundle, name = untrusted
    with opened_in(bundle.parent / "outside") as opened, pytest.raises(UserError) as e:
        API[entry_point](bundle, name)
    assert NOT_A_NAME in str(e.value) and repr(name) in str(e.value)
    assert "\n" not in str(e.value)
    assert opened == []


@pytest.mark.parametrize("command", ["info", "triton"])
def test_cli_process_refuses_dotdot(command, r18_bundle_copy, tmp_path):
    """As the issue saw it: info reported 'checksums all ok' for ../, triton died with a protobuf traceback."""
    name = untrust(r18_bundle_copy, "dotdot")
    r = run_cli(*commands(r18_bundle_copy, tmp_path)[command])
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines() == [r.stderr.strip()] and NOT_A_NAME in r.stderr and repr(name) in r.stderr


BAD_NAMES = ["../secret.txt", "a/../../secret.txt", "..", "a/..", "/etc/passwd", "//server/share/x", "C:x",
             "c:/windows/x", "..\\secret.txt", "a\\b.onnx", "", "a//b.onnx", "./model.onnx", "a/", "x\x00y"]


def write_manifest(folder: Path, names) -> Path:
    folder.mkdir()
    files = {n: {"size": 0, "sha256": "0" * 64, "kind": "onnx"} for n in names}
    (folder / layout.MANIFEST).write_text(json.dumps({"schema_version": SCHEMA_VERSION, "files": files}))
    return folder


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_names_are_refused(name, tmp_path):
    bundle = write_manifest(tmp_path / "b", [layout.FP32_ONNX, name])
    with pytest.raises(UserError) as e:
        read_manifest(bundle)
    msg = str(e.value)
    assert NOT_A_NAME in msg and repr(name) in msg and "\n" not in msg


def every_layout_name() -> list[str]:
    graphs = [layout.FP32_ONNX, layout.ORT_ONNX, layout.FP16_ONNX, layout.BF16_ONNX,
              *(layout.int8_onnx(t) for t in Target)]
    plans = [layout.plan(p) for p in Precision]
    irs = [layout.openvino_ir(p) for p in Precision]
    return [*graphs, *map(layout.external_data, graphs), layout.EAGER_PROGRAM, layout.FUSION_REPORT,
            layout.CALIBRATION, *plans, *map(layout.plan_layers, plans), *irs, *map(layout.ir_weights, irs)]


def test_every_layout_name_and_a_nested_one_pass(tmp_path):
    names = every_layout_name() + ["extra/model.onnx"]  # the layout has no subfolders; a plain one is fine
    assert list(read_manifest(write_manifest(tmp_path / "b", names))["files"]) == names


def test_symlink_inside_the_bundle_is_followed(r18_bundle_copy, capsys):
    """A symlink that stays inside the bundle is not a trust problem."""
    (r18_bundle_copy / "real").mkdir()
    shutil.move(r18_bundle_copy / layout.FP32_ONNX, r18_bundle_copy / "real" / layout.FP32_ONNX)
    (r18_bundle_copy / layout.FP32_ONNX).symlink_to(Path("real") / layout.FP32_ONNX)
    assert verify(r18_bundle_copy) == []
    assert main(["info", str(r18_bundle_copy)]) == 0
