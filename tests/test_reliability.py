"""What must never slip through: NaN/Inf, bad data, missing or altered artifacts, races, and output made for logs.

Each test here failed before the fix it covers (issue: reliability sweep).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
import torchvision

from resnet_deploy import export
from resnet_deploy.bundle import BundleUpdate, read_manifest, verify
from resnet_deploy.cli import main
from resnet_deploy.errors import CheckFailed, UserError
from resnet_deploy.files import StagedDir
from resnet_deploy.models import randomize_batchnorm
from resnet_deploy.stages.reference import first_nonfinite_node
from resnet_deploy.validate import Bar, compare

from .conftest import SMALL, run_cli


def one_line_error(r) -> str:
    """The error: one line, the last on stderr (warnings may come before it), no traceback."""
    lines = r.stderr.strip().splitlines()
    assert "Traceback" not in r.stderr and [l for l in lines if l.startswith("error:")] == lines[-1:], r.stderr
    return lines[-1]


def small_resnet(seed: int = 0):
    torch.manual_seed(seed)
    model = torchvision.models.resnet18(num_classes=10)
    randomize_batchnorm(model, seed)
    return model.eval()


# ---------------------------------------------------------------- NaN / Inf is never a pass

def test_compare_names_the_non_finite_side_and_never_passes():
    ref = np.ones((4, 10), np.float32)
    nan = np.full((4, 10), np.nan, np.float32)
    both = compare(nan, nan)  # identical NaN logits used to give cosine 1.0 and 100% agreement
    anything = Bar(min_top1_agreement=0.0, max_spread_error=math.inf)
    assert not both.meets(anything) and "eager output has 40 NaN" in both.nonfinite
    assert both.to_dict()["cosine"] is None  # strict JSON: null, not NaN
    cand = ref.copy()
    cand[2, 3] = np.inf
    p = compare(ref, cand)
    assert not p.meets(anything) and p.nonfinite == "candidate output has 0 NaN and 1 Inf values in 1 of 4 samples"


def test_nan_weights_are_refused_at_load_time(tmp_path):
    state = small_resnet().state_dict()
    state["conv1.weight"][0, 0, 0, 0] = float("nan")
    torch.save(state, tmp_path / "nan.pth")
    out = tmp_path / "b"
    r = run_cli("export", "--arch", "resnet18", "--weights", tmp_path / "nan.pth", "--num-classes", "10",
                "--input-size", SMALL, "--out", out)
    assert r.returncode == 2
    err = one_line_error(r)
    assert "nan.pth" in err and "'conv1.weight'" in err and "1 NaN/Inf" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nan.pth"]  # nothing written


class NegativeSqrt(torch.nn.Module):
    """Finite weights, non-finite activations: sqrt of negative numbers."""

    def forward(self, x):
        return torch.sqrt(x - 1e6)


def test_nan_at_run_time_fails_export_and_names_the_module(tmp_path):
    model = small_resnet()
    model.layer1 = torch.nn.Sequential(model.layer1, NegativeSqrt())
    with pytest.raises(CheckFailed) as e:
        export(model, tmp_path / "b", input_size=SMALL, fuse=False, engine="never")
    msg = str(e.value)
    assert e.value.exit_code == 1 and "fp32 ONNX graph vs eager: not finite" in msg
    assert "eager output has" in msg and "candidate output has" in msg
    assert "module 'layer1.1' (NegativeSqrt)" in msg and msg.endswith("nothing written")
    assert not (tmp_path / "b").exists() and list(tmp_path.iterdir()) == []


def fake_tensorrt(monkeypatch, plan_outputs):
    """TensorRT stood in for by a plan whose outputs are ``plan_outputs(batch)``; the build stage around it is real."""
    from resnet_deploy.backends import tensorrt as trt_backend
    from resnet_deploy.backends.base import Runner

    class FakePlanRunner(Runner):
        name = "fake plan"

        def __init__(self, plan_path, build_info=None):
            super().__init__()

        def _activate(self):
            pass

        def _infer(self, batch):
            return plan_outputs(batch)

    monkeypatch.setattr(trt_backend, "require", lambda: None)
    monkeypatch.setattr(trt_backend, "build_plan", lambda *a, **k: trt_backend.BuiltPlan(
        plan=b"fake plan", layers_json='{"Layers": []}', num_layers=0, seconds=0.0, timing_cache=None, env={}))
    monkeypatch.setattr(trt_backend, "TensorRTRunner", FakePlanRunner)


def int8_graph(path):
    """A lone INT8 graph (Q/DQ of its input, 4 logits) that ONNX Runtime runs as the plan's reference."""
    import onnx
    from onnx import TensorProto, helper

    inits = [helper.make_tensor("s", TensorProto.FLOAT, [], [0.1]), helper.make_tensor("z", TensorProto.INT8, [], [0])]
    nodes = [helper.make_node("QuantizeLinear", ["input", "s", "z"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["logits"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 4])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    return path


def test_every_stage_check_treats_nan_as_failure(tmp_path, monkeypatch):
    """The checks of the precision gate, the plan build and the benchmark: NaN rows are misses, never a pass."""
    from resnet_deploy.bench.harness import accuracy_fields
    from resnet_deploy.precision import int8_budget as budget
    from resnet_deploy.engines.stage import BuildOptions, build_onnx_file
    from resnet_deploy.validate import topk_accuracy

    ref = np.eye(4, dtype=np.float32) * 5
    labels = np.arange(4)
    nan = np.full((4, 4), np.nan, np.float32)  # argmax of NaN rows is 0: label 0 used to count as a hit
    assert topk_accuracy(nan, labels, 1) == 0.0 and topk_accuracy(nan, labels, 5) == 0.0
    acc = budget.accuracy(nan, ref, labels)
    assert acc.top1 == 0.0 and acc.agreement == 0.0 and acc.nonfinite
    assert budget.drop(budget.accuracy(ref, ref, labels), acc) == 100
    fields = accuracy_fields(nan, ref, labels)
    assert fields["nonfinite"].startswith("eager fp32") is False and "this backend output has 16 NaN" in fields["nonfinite"]
    assert fields["cosine"] is None and fields["top1"] == 0.0
    assert "nonfinite" not in accuracy_fields(ref, ref, labels)  # finite rows keep the schema-2 accuracy block

    # an int8 plan below its bar only warns (finite but wrong: the logits reversed), a NaN plan fails
    graph = int8_graph(tmp_path / "model.onnx")
    fake_tensorrt(monkeypatch, lambda x: x[:, ::-1].copy())
    wrong = build_onnx_file(graph, None, BuildOptions(batch="1:4:4"))
    (warning,) = wrong.warnings
    assert warning.startswith("model.int8.plan vs eager at batches [1, 4]: parity broken")
    assert (tmp_path / "model.int8.plan").read_bytes() == b"fake plan"
    fake_tensorrt(monkeypatch, lambda x: np.full(x.shape, np.nan, np.float32))
    (tmp_path / "nan").mkdir()
    with pytest.raises(CheckFailed, match=r"model.int8.plan vs eager at batches \[1, 4\]: not finite: plan output"):
        build_onnx_file(graph, tmp_path / "nan", BuildOptions(batch="1:4:4"))
    assert list((tmp_path / "nan").iterdir()) == []


def test_first_nonfinite_node_finds_the_overflowing_node(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 2])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [None, 2])
    big = helper.make_tensor("big", TensorProto.FLOAT, [], [1e30])
    graph = helper.make_graph([helper.make_node("Relu", ["input"], ["r"], name="ok_relu"),
                               helper.make_node("Mul", ["r", "big"], ["m"], name="first_bad"),
                               helper.make_node("Mul", ["m", "big"], ["logits"], name="second_bad")],
                              "g", [x], [y], [big])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    onnx.checker.check_model(model)
    data = np.array([[1e10, 1.0]], np.float32)
    assert first_nonfinite_node(model, data) == "ONNX node 'first_bad' (Mul)"
    assert first_nonfinite_node(model, np.zeros((1, 2), np.float32)) is None


# ---------------------------------------------------------------- bad data is a clean error

@pytest.mark.parametrize("option", ["--calib", "--val"])
def test_nan_in_calibration_or_validation_arrays(r18_bundle_copy, tmp_path, option):
    data = np.random.default_rng(0).standard_normal((6, 3, SMALL, SMALL)).astype(np.float32)
    bad = data.copy()
    bad[3, 1, 5, 5] = np.nan
    bad[4, 0, 0, 0] = np.inf
    np.savez(tmp_path / "good.npz", x=data)
    np.savez(tmp_path / "bad.npz", x=bad)
    args = ["--calib", tmp_path / ("bad.npz" if option == "--calib" else "good.npz")]
    if option == "--val":
        args += ["--val", tmp_path / "bad.npz"]
    before = {p.name: p.stat().st_mtime_ns for p in r18_bundle_copy.iterdir()}
    r = run_cli("quantize", r18_bundle_copy, "--int8", *args)
    assert r.returncode == 2
    err = one_line_error(r)
    assert f"{option} " in err and "bad.npz" in err and "sample 3 holds NaN/Inf" in err and "2 of 6" in err
    assert {p.name: p.stat().st_mtime_ns for p in r18_bundle_copy.iterdir()} == before


def test_garbage_images_are_skipped_and_counted(images_dir, tmp_path):
    imgs = tmp_path / "imgs"
    shutil.copytree(images_dir, imgs)
    (imgs / "truncated.jpg").write_bytes((images_dir / "coffee.jpg").read_bytes()[:2000])
    (imgs / "empty.png").write_bytes(b"")
    out = tmp_path / "b"
    r = run_cli("export", "--arch", "resnet18", "--weights", "random", "--input-size", SMALL, "--num-classes", "10",
                "--images", imgs, "--no-fuse", "--engine", "never", "--out", out)
    assert r.returncode == 0, r.stderr
    assert "images:5 from" in r.stdout and "2 unreadable skipped" in r.stdout
    assert read_manifest(out)["validation"]["fp32"]["inputs"].endswith("2 unreadable skipped")


# ---------------------------------------------------------------- missing or altered artifacts

def _flip_byte(path):
    with open(path, "r+b") as f:
        f.seek(2000)
        b = f.read(1)
        f.seek(2000)
        f.write(bytes([b[0] ^ 0xFF]))


@pytest.mark.parametrize("case", ["bench eager, model.pt2 missing", "bench onnxruntime, model.onnxruntime.onnx altered",
                                  "quantize, model.onnx altered", "fuse bundle, model.pt2 missing",
                                  "triton, model.onnx altered", "build, model.onnx altered"])
def test_missing_or_altered_artifact_is_one_line_exit_1(r18_bundle_copy, tmp_path, case):
    b = r18_bundle_copy
    name = case.split(", ")[1].split()[0]
    if "missing" in case:
        (b / name).unlink()
    else:
        _flip_byte(b / name)
    command = case.split(",")[0].split()
    args = {"bench": ["--batch", "1", "--iters", "1", "--warmup", "0", "--out", tmp_path / "rep", "--no-plot",
                      "--backend", command[-1] if len(command) > 1 else "eager"],
            "quantize": ["--fp16"], "fuse": ["--force"], "triton": ["--repo", tmp_path / "repo"],
            "build": []}[command[0]]
    r = run_cli(command[0], b, *args)
    assert r.returncode == 1, (r.returncode, r.stderr)
    err = one_line_error(r)
    assert name in err and "failed verification" in err and "resnet-deploy info" in err
    assert not (tmp_path / "rep").exists() and not (tmp_path / "repo").exists()


# ---------------------------------------------------------------- never replace without --force, even racing

def test_final_rename_refuses_a_target_that_appeared_meanwhile(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(UserError, match="exists and is not empty: pass --force"):
        with StagedDir(out) as first:
            (first.path / "a").write_text("first")
            with StagedDir(out) as second:  # both passed the up-front check; the second finishes first
                (second.path / "b").write_text("second")
    assert [p.name for p in out.iterdir()] == ["b"]  # the winner's folder, untouched
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # the loser left nothing behind
    with StagedDir(out, force=True) as third:
        (third.path / "c").write_text("third")
    assert [p.name for p in out.iterdir()] == ["c"]


@pytest.fixture
def umask_set():
    """Set the process umask for one test (the tests run in one thread); restored afterwards."""
    old = []

    def set_to(mask: int) -> None:
        old.append(os.umask(mask))

    yield set_to
    if old:
        os.umask(old[0])


def _modes(root):
    """{path relative to root: permission bits} of root and everything under it."""
    return {str(p.relative_to(root)): p.stat().st_mode & 0o777 for p in [root, *root.rglob("*")]}


@pytest.mark.parametrize("umask, folder, file", [(0o022, 0o755, 0o644), (0o077, 0o700, None)])
def test_new_folders_get_the_mode_mkdir_gives(r18_bundle, tmp_path, umask_set, umask, folder, file):
    """A bundle, a Triton repository and a bench --out folder are written into a staging folder renamed into place:
    they get the umask's ordinary mode, as mkdir gives (a server running as another user reads them), not a
    temporary folder's private 0700; under a private umask they stay private (files copied from a bundle keep
    their mode there, behind a folder nobody else can enter)."""
    from resnet_deploy.bundle import BundleWriter
    from resnet_deploy.deploy.triton import write_triton_repo

    umask_set(umask)
    with BundleWriter(tmp_path / "bundle") as b:
        (b.path / "model.onnx").write_bytes(b"stand-in")
        b.add_file("model.onnx", kind="onnx", precision="fp32")
    write_triton_repo(r18_bundle, tmp_path / "repo", device="cpu")
    with StagedDir(tmp_path / "bench", what="--out") as staged:  # what bench --out does
        (staged.path / "report.json").write_text("{}")
    for root in ("bundle", "repo", "bench"):
        modes = _modes(tmp_path / root)
        assert {n: m for n, m in modes.items() if (tmp_path / root / n).is_dir()} == \
            {n: folder for n in modes if (tmp_path / root / n).is_dir()}, root
        if file is not None:
            assert {n: m for n, m in modes.items() if (tmp_path / root / n).is_file()} == \
                {n: file for n in modes if (tmp_path / root / n).is_file()}, root


def test_commands_write_folders_other_users_can_read(r18_bundle, r18_bundle_copy, tmp_path):
    """The commands themselves under umask 022: triton and bench folders are 0755, their files 0644; every file
    of an exported bundle has the mode a plain write gives."""
    def cli(*args):
        return subprocess.run(["bash", "-c", 'umask 022 && exec "$0" -m resnet_deploy "$@"', sys.executable,
                               *map(str, args)], capture_output=True, text=True, timeout=600)

    r = cli("triton", r18_bundle, "--repo", tmp_path / "repo", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    r = cli("bench", r18_bundle_copy, "--backend", "onnxruntime", "--precision", "fp32", "--batch", "1", "--warmup",
            "1", "--iters", "2", "--samples", "2", "--no-plot", "--out", tmp_path / "bench")
    assert r.returncode == 0, r.stderr
    for root in (tmp_path / "repo", tmp_path / "bench"):
        assert set(_modes(root).values()) == {0o755, 0o644}, _modes(root)
    mask = os.umask(0)  # the session's umask, under which the fixture exported the bundle
    os.umask(mask)
    modes = _modes(r18_bundle)
    assert modes.pop(".") == 0o777 & ~mask
    assert set(modes.values()) == {0o666 & ~mask}, modes


def test_two_concurrent_exports_one_wins(tmp_path):
    out = tmp_path / "same"
    cmd = [sys.executable, "-m", "resnet_deploy", "export", "--arch", "resnet18", "--weights", "random",
           "--input-size", str(SMALL), "--num-classes", "10", "--no-fuse", "--engine", "never", "--out", str(out)]
    procs = [subprocess.Popen(cmd + ["--seed", str(i)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    results = [(p.wait(timeout=600), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    loser = next(err for code, err in results if code == 2)
    assert "exists and is not empty: pass --force" in loser and "Traceback" not in loser
    assert verify(out) == [] and main(["info", str(out)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["same"]


def test_a_bundle_being_changed_refuses_a_second_writer(r18_bundle_copy):
    with BundleUpdate(r18_bundle_copy):
        r = run_cli("quantize", r18_bundle_copy, "--fp16")
        assert r.returncode == 2
        assert "being changed by another resnet-deploy process" in one_line_error(r)
        r = run_cli("fuse", r18_bundle_copy, "--force")
        assert r.returncode == 2 and "being changed" in r.stderr
    assert verify(r18_bundle_copy) == []


# ---------------------------------------------------------------- output made for logs and scripts

def test_summary_on_stdout_never_hard_wrapped(r18_bundle_copy):
    r = run_cli("quantize", r18_bundle_copy, "--fp16")  # stdout and stderr are pipes here, not terminals
    assert r.returncode == 0, r.stderr
    line = next(l for l in r.stdout.splitlines() if l.startswith("fp16 "))
    assert "cosine" in line and "top-1 agreement" in line and "kept fp32" in line  # one line, however long
    assert "done Converting to FP16" in r.stderr and "done" not in r.stdout  # progress on stderr


def test_json_output_of_every_command(r18_bundle_copy, tmp_path):
    def as_json(*args):
        r = run_cli(*args, "--json")
        return r.returncode, json.loads(r.stdout)  # exactly one JSON object on stdout

    code, info = as_json("info", r18_bundle_copy)
    assert code == 0 and info["ok"] and info["artifacts"]["model.onnx"]["status"] == "ok"
    assert info["validation"]["fp32"]["passed"] is True
    code, q = as_json("quantize", r18_bundle_copy, "--fp16")
    assert code == 0 and q["ok"] and "model.fp16.onnx" in q["artifacts"] and q["validation"]["fp16"]["passed"]
    code, f = as_json("fuse", r18_bundle_copy, "--force")
    assert code == 0 and f["fusion"]["targets"]["onnxruntime"]["parity"]["passed"]
    code, bench = as_json("bench", r18_bundle_copy, "--backend", "onnxruntime", "--precision", "fp32", "--batch", "1",
                          "--iters", "2", "--warmup", "0", "--no-plot", "--out", tmp_path / "rep")
    assert code == 0 and bench["ok"] and bench["results"][0]["backend"] == "onnxruntime"
    assert bench["report"]["json"].endswith("report.json") and (tmp_path / "rep" / "report.json").is_file()
    code, built = as_json("build", r18_bundle_copy)  # no TensorRT here: the error is JSON too
    assert code == 2 and built["ok"] is False and "tensorrt" in built["error"]
    out = tmp_path / "exported"
    code, e = as_json("export", "--arch", "resnet18", "--weights", "random", "--input-size", SMALL, "--num-classes",
                      "10", "--no-fuse", "--engine", "never", "--out", out)
    assert code == 0 and e["bundle"] == str(out.absolute()) and e["validation"]["fp32"]["cosine"] > 0.99999
    assert any("RANDOM" in w for w in e["warnings"])
