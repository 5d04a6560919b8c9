"""fp16 / bf16 graphs and the mixed-precision fallback, on tiny ResNets run in ONNX Runtime (no mocks).

The converter (``precision/reduced_convert.py``): graphs that pass the full checker, kept nodes really in fp32, bf16 at
opset 22 with fp32 I/O, and an emulation whose numbers are exactly bf16 storage with fp32 arithmetic. The fallback
(``precision/fp32_fallback.py``): an activation that overflows fp16 is found, kept in fp32 with its reason, and the
graph then passes; NaN/Inf never passes.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from resnet_deploy import validate
from resnet_deploy.errors import UserError
from resnet_deploy.models import randomize_batchnorm
from resnet_deploy.exporter.onnx_export import export_onnx
from resnet_deploy.precision import fp32_fallback, reduced_convert
from resnet_deploy.precision.reduced_precision import check_graph

SIZE = 32


class Block(nn.Module):
    """A basic residual block; ``scale`` multiplies the inner activation and divides it back (same function in
    exact arithmetic, but the inner tensor leaves fp16's range when scale is 1e5)."""

    def __init__(self, c: int, scale: float = 1.0):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.scale = scale

    def forward(self, x):
        y = self.bn1(self.conv1(x))
        y = torch.relu(y * self.scale) if self.scale != 1.0 else torch.relu(y)
        y = self.bn2(self.conv2(y))
        y = y / self.scale if self.scale != 1.0 else y
        return torch.relu(y + x)


class TinyResNet(nn.Module):
    def __init__(self, classes: int = 10, scale: float = 1.0, width: int = 8):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(width),
                                  nn.ReLU())
        self.b1, self.b2 = Block(width), Block(width, scale)
        self.fc = nn.Linear(width, classes)

    def forward(self, x):
        x = self.b2(self.b1(self.stem(x)))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def tiny(scale: float = 1.0, seed: int = 0, classes: int = 10) -> nn.Module:
    torch.manual_seed(seed)
    m = TinyResNet(classes, scale)
    randomize_batchnorm(m, seed)
    return m.eval()


def exported(model, tmp_path):
    path = tmp_path / "tiny.onnx"
    export_onnx(model, path, (SIZE, SIZE))
    return onnx.load(str(path))


def inputs(n: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, SIZE, SIZE), dtype=np.float32)


def eager(model, x):
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def initializer_types(model) -> dict[str, int]:
    return {t.name: t.data_type for t in model.graph.initializer}


@pytest.fixture(scope="module")
def tiny_graph(tmp_path_factory):
    m = tiny()
    return m, exported(m, tmp_path_factory.mktemp("tiny"))


@pytest.mark.parametrize("fmt", [reduced_convert.FP16, reduced_convert.BF16], ids=str)
def test_converted_graph_is_typed_and_checked(tiny_graph, tmp_path, fmt):
    model, g = tiny_graph
    out = reduced_convert.convert(g, fmt)
    onnx.save(out.model, str(tmp_path / "m.onnx"))
    reduced_convert.check_written(tmp_path / "m.onnx")  # full checker: strict types everywhere
    m = onnx.load(str(tmp_path / "m.onnx"))
    assert m.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # fp32 I/O, Casts at the edges
    assert m.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert reduced_convert.default_opset(m) >= fmt.min_opset
    conv_weights = {n.input[1] for n in m.graph.node if n.op_type == "Conv"}
    assert {initializer_types(m)[w] for w in conv_weights} == {fmt.elem_type}
    assert out.kept == {}
    x = inputs()
    emulated = reduced_convert.convert(g, fmt, emulate=True)
    got = check_graph(emulated.model, x, True)
    p = validate.compare(eager(model, x), got)
    assert p.nonfinite is None and p.top1_agreement == 1.0 and 0 < p.max_abs_diff < 0.05, p


def test_kept_node_stays_fp32(tiny_graph):
    _, g = tiny_graph
    conv = next(n for n in g.graph.node if n.op_type == "Conv")
    out = reduced_convert.convert(g, reduced_convert.FP16, [conv.name])
    node = next(n for n in out.model.graph.node if n.name == conv.name)
    types = initializer_types(out.model)
    assert types[node.input[1]] == onnx.TensorProto.FLOAT  # its weights are not rounded
    assert out.kept[conv.name] == {"op": "Conv", "reason": "user", "detail": "--keep-fp32"}
    # it reads the graph's fp32 input directly and its output is cast before the next fp16 node
    assert node.input[0] == g.graph.input[0].name
    cast_of_output = [n for n in out.model.graph.node if n.op_type == "Cast" and node.output[0] in n.input]
    assert cast_of_output or all(c.name in out.kept for c in out.model.graph.node if node.output[0] in c.input)


def test_unknown_keep_node_names_valid_ones(tiny_graph):
    _, g = tiny_graph
    with pytest.raises(UserError) as e:
        reduced_convert.check_keep(g, ["no_such_node"], graph_name="model.onnx")
    msg = str(e.value)
    assert "'no_such_node'" in msg and "\n" not in msg and g.graph.node[0].name in msg


def test_emulation_is_bf16_storage_with_fp32_arithmetic(tmp_path):
    """One Conv: the emulated output equals conv(round(x), round(w)) in fp32, rounded to bf16: exactly."""
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, bias=False).eval()
    g = exported(conv, tmp_path)
    x = inputs(2)
    got = check_graph(reduced_convert.convert(g, reduced_convert.BF16, emulate=True).model, x, True)
    rx, rw = (reduced_convert.BF16.round(a) for a in (x, conv.weight.detach().numpy()))
    with torch.no_grad():
        want = reduced_convert.BF16.round(
            torch.nn.functional.conv2d(torch.from_numpy(rx), torch.from_numpy(rw)).numpy())
    assert np.array_equal(got, want)
    plain = check_graph(g, x, False)
    assert not np.array_equal(got, plain)  # the rounding really happens (no Cast pair optimized away)


def test_fp16_overflow_falls_back_to_fp32(tmp_path):
    model = tiny(scale=1e5)
    g = exported(model, tmp_path)
    x = inputs()
    ref = eager(model, x)
    bar = validate.BARS["fp16"]
    emulated = reduced_convert.convert(g, reduced_convert.FP16, emulate=True)
    plain = validate.compare(ref, check_graph(emulated.model, x, True))
    assert plain.nonfinite and not plain.meets(bar)  # NaN/Inf: never a pass
    res = fp32_fallback.convert_within_bar(g, reduced_convert.FP16, bar, x, ref, lambda m: check_graph(m, x, True),
                                           emulate=True)
    assert res.passed and res.parity.nonfinite is None and res.parity.meets(bar)
    assert res.attempts[0]["passed"] is False and res.attempts[0]["nonfinite"]
    assert [a["step"] for a in res.attempts] == ["convert", "range"]
    reasons = {n: k["reason"] for n, k in res.kept.items()}
    muls = [n.name for n in g.graph.node if n.op_type in ("Mul", "Div")]
    assert set(muls) <= set(reasons) and set(reasons.values()) == {"overflow"}
    assert all("65504" in k["detail"] for k in res.kept.values())
    assert len(res.kept) <= 6  # the scaled block only, not the whole graph
    # the graph to write: those nodes in fp32, the rest fp16, finite and within the bar in ONNX Runtime too
    types = initializer_types(res.graph.model)
    assert onnx.TensorProto.FLOAT16 in types.values()
    native = validate.compare(ref, check_graph(res.graph.model, x, False))
    assert native.meets(bar), native


def test_fallback_gives_up_within_its_attempts(tiny_graph):
    """An impossible bar: the fallback stops (bounded attempts, at most half the graph in its tail) and says so."""
    model, g = tiny_graph
    x = inputs()
    ref = eager(model, x)
    impossible = validate.Bar(min_top1_agreement=1.0, max_spread_error=0.0)
    res = fp32_fallback.convert_within_bar(g, reduced_convert.BF16, impossible, x, ref,
                                           lambda m: check_graph(m, x, True), emulate=True)
    assert not res.passed and 1 < len(res.attempts) <= fp32_fallback.MAX_ATTEMPTS
    assert len(res.kept) < len(reduced_convert.compute_nodes(g))


def test_bf16_emulation_matches_a_real_bf16_engine(tiny_graph, tmp_path):
    """On a CPU with bf16, OpenVINO's bf16 run (a real bf16 engine) and the emulation err by the same amount."""
    ov = pytest.importorskip("resnet_deploy.backends.openvino")
    pytest.importorskip("openvino")
    if not ov.bf16_supported():
        pytest.skip("this CPU has no bf16 (AVX-512 BF16 / AMX)")
    _, g = tiny_graph
    path = tmp_path / "tiny.onnx"
    onnx.save(g, str(path))
    x = inputs(32, seed=1)
    ref = check_graph(g, x, False)
    emulated = check_graph(reduced_convert.convert(g, reduced_convert.BF16, emulate=True).model, x, True)
    with ov.OpenVinoRunner(path, precision="bf16") as r:
        real = validate.run_batches(r, x, 8)

    def rms(a):
        return float(np.sqrt(((a - ref) ** 2).mean()))

    assert rms(real) > 0 and rms(emulated) > 0
    assert 0.33 < rms(emulated) / rms(real) < 3, (rms(emulated), rms(real))


# ---------------------------------------------------------------------------------------------- through the stage

def _export(model, out, x, **precision):
    from resnet_deploy.pipeline.api import export
    from resnet_deploy.precision import PrecisionOptions

    return export(model, out, input_size=str(x.shape[-1]), inputs=(x, None, f"test inputs:{len(x)}"),
                  precision=PrecisionOptions(**precision), engine="never")


def small_logits_resnet18(x: np.ndarray, seed: int = 0) -> nn.Module:
    """The issue's shape: a 2-class resnet18 whose logits are small because the classifier is orthogonal to the
    features' common part (as with inputs preprocessed the wrong way: the features barely vary between images),
    so the logits are a difference of large nearly-equal sums and fp16's rounding of the features shows."""
    import torchvision

    torch.manual_seed(seed)
    m = torchvision.models.resnet18(num_classes=2)
    randomize_batchnorm(m, seed)
    m.eval()
    feats = []
    hook = m.avgpool.register_forward_hook(lambda mod, args, out: feats.append(out.flatten(1)))
    with torch.no_grad():
        m(torch.from_numpy(x))
    hook.remove()
    mu = feats[0].mean(0)
    with torch.no_grad():
        m.fc.weight -= (m.fc.weight @ mu)[:, None] * mu[None, :] / (mu @ mu)
        m.fc.bias.zero_()
    return m


def test_small_logits_still_yield_an_fp16_graph(tmp_path):
    """Seen: cosine 0.998 vs the 0.9999 bar with 100% top-1 agreement, and the whole export lost."""
    from resnet_deploy.bundle import read_manifest

    x = np.random.default_rng(0).uniform(0.3, 0.7, (16, 3, 64, 64)).astype(np.float32)  # unnormalised pixels
    model = small_logits_resnet18(x)
    ref = eager(model, x)
    res = _export(model, tmp_path / "b", x, fp16=True)
    g = onnx.load(str(tmp_path / "b" / "model.onnx"))
    plain = validate.compare(ref, check_graph(reduced_convert.convert(g, reduced_convert.FP16).model, x, False))
    assert plain.cosine < 0.9999 and plain.top1_agreement == 1.0  # the shape, in ONNX Runtime as seen
    m = read_manifest(res.path)
    assert "model.fp16.onnx" in m["files"] and m["validation"]["fp16"]["passed"]
    f16 = m["precision"]["fp16"]
    assert f16["attempts"] and f16["attempts"][-1]["passed"]
    if not f16["attempts"][0]["passed"]:  # the fallback was needed: recorded with a reason per node
        assert f16["kept_fp32"] and all(k["reason"] and k["detail"] for k in f16["kept_fp32"].values())


def test_fp16_overflow_through_export(tmp_path):
    from resnet_deploy.bundle import read_manifest

    model, x = tiny(scale=1e5), inputs()
    res = _export(model, tmp_path / "b", x, fp16=True)
    m = read_manifest(res.path)
    f16 = m["precision"]["fp16"]
    assert [a["step"] for a in f16["attempts"]] == ["convert", "range"]
    assert f16["attempts"][0]["nonfinite"] and not f16["attempts"][0]["passed"]  # NaN/Inf never passes
    assert {k["reason"] for k in f16["kept_fp32"].values()} == {"overflow"}
    assert m["validation"]["fp16"]["passed"] and m["validation"]["fp16"]["nonfinite"] is None
    g = onnx.load(str(res.path / "model.fp16.onnx"))
    kept_muls = [n for n in g.graph.node if n.name in f16["kept_fp32"] and n.op_type == "Mul"]
    types = initializer_types(g)
    assert kept_muls and all(types.get(i, onnx.TensorProto.FLOAT) == onnx.TensorProto.FLOAT
                             for n in kept_muls for i in n.input)


def test_keep_fp32_from_the_command_line(r18_bundle_copy):
    import json

    from resnet_deploy.cli import main

    g = onnx.load(str(r18_bundle_copy / "model.onnx"))
    conv = next(n for n in g.graph.node if n.op_type == "Conv")
    assert main(["quantize", str(r18_bundle_copy), "--fp16", "--keep-fp32", conv.name]) == 0
    m = json.loads((r18_bundle_copy / "manifest.json").read_text())
    assert m["precision"]["fp16"]["kept_fp32"][conv.name] == {"op": "Conv", "reason": "user",
                                                              "detail": "--keep-fp32"}
    out = onnx.load(str(r18_bundle_copy / "model.fp16.onnx"))
    node = next(n for n in out.graph.node if n.name == conv.name)
    assert initializer_types(out)[node.input[1]] == onnx.TensorProto.FLOAT
    others = [n for n in out.graph.node if n.op_type == "Conv" and n.name != conv.name]
    assert all(initializer_types(out)[n.input[1]] == onnx.TensorProto.FLOAT16 for n in others)


def test_unknown_keep_fp32_node_is_one_line(r18_bundle_copy):
    from .conftest import run_cli

    before = {p.name: p.stat().st_mtime_ns for p in r18_bundle_copy.iterdir()}
    r = run_cli("quantize", r18_bundle_copy, "--fp16", "--keep-fp32", "node_conv2d,layer9.conv")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [r.stderr.strip()]  # one line, no traceback
    assert "'layer9.conv'" in r.stderr and "node_conv2d" in r.stderr and "Traceback" not in r.stderr
    assert {p.name: p.stat().st_mtime_ns for p in r18_bundle_copy.iterdir()} == before
    r = run_cli("quantize", r18_bundle_copy, "--int8", "--calib", "x.npz", "--keep-fp32", "node_conv2d")
    assert r.returncode == 2 and "--keep-fp32 only applies with --fp16 or --bf16" in r.stderr


@pytest.fixture(scope="module")
def bf16_bundle(r18_bundle, tmp_path_factory):
    """The session's resnet18 bundle with --bf16 added (from the command line)."""
    import shutil

    from .conftest import run_cli

    b = tmp_path_factory.mktemp("bf16") / "b"
    shutil.copytree(r18_bundle, b)
    r = run_cli("quantize", b, "--bf16")
    assert r.returncode == 0, r.stderr
    return b, r


def test_bf16_graph_written_validated_recorded(bf16_bundle):
    from resnet_deploy.bundle import read_manifest, verify

    b, r = bf16_bundle
    m = read_manifest(b)
    g = onnx.load(str(b / "model.bf16.onnx"))
    onnx.checker.check_model(g, full_check=True)
    assert reduced_convert.default_opset(g) >= 22
    assert onnx.TensorProto.BFLOAT16 in initializer_types(g).values()
    assert g.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # fp32 I/O, Casts at the edges
    assert m["files"]["model.bf16.onnx"]["precision"] == "bf16" and m["files"]["model.bf16.onnx"]["target"] == \
        "tensorrt"
    v = m["validation"]["bf16"]
    assert v["passed"] and v["nonfinite"] is None and "emulation" in v["validated_by"]
    assert "cannot run it" in v["onnxruntime_cpu"]["skipped"]  # no bf16 Conv in ONNX Runtime's CPU
    assert "bf16 model.bf16.onnx" in r.stdout and verify(b) == []


def test_bf16_openvino_run_recorded_and_benched(bf16_bundle, tmp_path):
    import json

    pytest.importorskip("openvino")
    from resnet_deploy.backends.openvino import bf16_supported
    from resnet_deploy.bundle import read_manifest

    from .conftest import run_cli

    b, _ = bf16_bundle
    m = read_manifest(b)
    ov = m["precision"]["bf16"]["openvino"]
    if not bf16_supported():
        assert "no bf16 support" in ov["skipped"]
        return
    assert ov["passed"] and ov["artifact"] == "model.onnx"
    assert m["validation"]["model.onnx@bf16"]["backend"] == "openvino-cpu (inference precision bf16)"
    assert m["files"]["model.onnx"]["inference_precisions"] == ["bf16"]
    r = run_cli("bench", b, "--backend", "openvino", "--batch", "1", "--iters", "3", "--warmup", "1", "--no-plot",
                "--out", tmp_path / "rep", "--json")
    assert r.returncode == 0, r.stderr
    rows = {row["precision"]: row for row in json.loads(r.stdout)["results"]}
    assert rows["bf16"]["runner"]["inference_precision"] == "bf16" and rows["fp32"]["runner"][
        "inference_precision"] == "f32"
    assert rows["bf16"]["accuracy"]["top1_agreement"] >= 0.9


def test_bf16_skipped_with_a_note_on_a_cpu_without_bf16(bf16_bundle, r18_bundle_copy, monkeypatch, tmp_path):
    pytest.importorskip("openvino")
    from resnet_deploy.backends import openvino
    from resnet_deploy.bench import BenchConfig, run_bench
    from resnet_deploy.bundle import read_manifest
    from resnet_deploy.precision import PrecisionOptions
    from resnet_deploy.pipeline.update import quantize_bundle

    monkeypatch.setattr(openvino, "bf16_supported", lambda ov_core=None: False)
    b, _ = bf16_bundle
    report = run_bench(b, BenchConfig(backends=["openvino"], batches=[1], iters=2, warmup=0))
    assert {r["precision"] for r in report["results"]} == {"fp32"}
    assert any("openvino bf16" in n and "no bf16 support" in n for n in report["notes"])
    manifest, _ = quantize_bundle(r18_bundle_copy, PrecisionOptions(bf16=True))  # not an error
    assert "no bf16 support" in manifest["precision"]["bf16"]["openvino"]["skipped"]
    assert "model.bf16.onnx" in read_manifest(r18_bundle_copy)["files"]
