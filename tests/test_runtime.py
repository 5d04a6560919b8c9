"""``resnet_deploy.load``: which artifact it picks and why, the bundle's own preprocessing bit for bit, predict and
model(x) against eager, threads, NaN, closing, and one-line errors. Real ONNX Runtime sessions on real photos."""

from __future__ import annotations

import dataclasses
import json
import shutil
import threading

import numpy as np
import pytest
from PIL import Image

import resnet_deploy
from resnet_deploy import layout
from resnet_deploy.backends import table
from resnet_deploy.bundle import load_eager, read_manifest
from resnet_deploy.deploy.runtime import Prediction, expand_images
from resnet_deploy.errors import CheckFailed, MissingDependency, UserError
from resnet_deploy.preprocess import Preprocessing, UnreadableImage, load_images
from resnet_deploy.stages.reference import make_inputs
from resnet_deploy import validate

from .conftest import IMAGES, SMALL, run_cli
from .test_bundle_trust import NOT_A_NAME, opened_in, untrust
from .tolerances import FP32


@pytest.fixture(scope="module")
def model(r18_bundle):
    with resnet_deploy.load(r18_bundle) as m:
        yield m


def edit_manifest(bundle, change) -> None:
    path = bundle / layout.MANIFEST
    m = json.loads(path.read_text())
    change(m)
    path.write_text(json.dumps(m, indent=2))


def row(backend: str, artifact: str, precision: str = "fp32", batch: int = 1, p50: float = 1.0) -> dict:
    """A row as bench's ``recommend`` writes it."""
    return {"backend": backend, "precision": precision, "artifact": artifact, "batch": batch, "mode": "latency",
            "p50_ms": p50, "throughput_ips": round(batch * 1e3 / p50, 2)}


def recommend(bundle, *rows, mode: str = "latency") -> None:
    """``recommended.cpu[mode]``: the first row wins, every row is the best of its backend."""
    entry = {**rows[0], "by_backend": {r["backend"]: r for r in rows}, "cpp": {}}
    edit_manifest(bundle, lambda m: m.setdefault("recommended", {}).update(
        {"cpu": {"cpu": "Test CPU", "isa": [], mode: entry}}))


def openvino_missing(monkeypatch) -> None:
    def missing():
        raise MissingDependency("openvino", extra="openvino", what="--backend openvino")

    table.all_backends()
    monkeypatch.setitem(table._table, "openvino", dataclasses.replace(table.get("openvino"), available=missing))


# ----------------------------------------------------------------------------------------------- the pick
def test_without_a_recommendation_fp32_onnxruntime_is_picked(model):
    d = model.describe()
    assert (d["backend"], d["precision"], d["artifact"]) == ("onnxruntime", "fp32", layout.ORT_ONNX)
    assert "no usable bench measurement" in d["why"] and d["batch"] == 8 and d["mode"] == "latency"
    assert d["runtime"]["providers"] == ["CPUExecutionProvider"] and d["labels"] == "class index"


def test_bench_recommendation_is_followed(r18_bundle_copy):
    recommend(r18_bundle_copy, row("openvino", layout.FP32_ONNX, p50=0.5), row("onnxruntime", layout.ORT_ONNX))
    with resnet_deploy.load(r18_bundle_copy) as m:
        assert (m.backend, m.artifact, m.batch) == ("openvino", layout.FP32_ONNX, 1)
        assert "bench's latency pick for cpu (measured on Test CPU: p50 0.5 ms at batch 1)" in m.describe()["why"]
    with resnet_deploy.load(r18_bundle_copy, backend="onnxruntime", batch=4) as m:  # bench's best onnxruntime row
        assert (m.backend, m.artifact, m.batch) == ("onnxruntime", layout.ORT_ONNX, 4)
        assert "the fastest onnxruntime row of bench's latency run" in m.describe()["why"]
    with resnet_deploy.load(r18_bundle_copy, mode="throughput") as m:  # no throughput entry: the rule
        assert m.backend == "onnxruntime" and "no usable bench measurement" in m.describe()["why"]


def test_recommended_backend_missing_here_falls_to_the_next_measured_row(r18_bundle_copy, monkeypatch):
    recommend(r18_bundle_copy, row("openvino", layout.FP32_ONNX, p50=0.5), row("onnxruntime", layout.ORT_ONNX))
    openvino_missing(monkeypatch)
    with resnet_deploy.load(r18_bundle_copy) as m:
        why = m.describe()["why"]
    assert m.backend == "onnxruntime" and "the fastest onnxruntime row" in why
    assert "passed over: openvino fp32 (model.onnx): openvino is not installed" in why and "[openvino]" in why
    with pytest.raises(MissingDependency, match=r"^openvino is not installed .*resnet-deploy\[openvino\]'$"):
        resnet_deploy.load(r18_bundle_copy, backend="openvino")


def test_stale_or_failed_rows_are_passed_over(r18_bundle_copy):
    recommend(r18_bundle_copy, row("onnxruntime", layout.int8_onnx("onnxruntime"), "int8", p50=0.2),
              row("openvino", layout.FP32_ONNX, p50=0.5))
    edit_manifest(r18_bundle_copy, lambda m: m["validation"].update({layout.FP32_ONNX: {"passed": False}}))
    with resnet_deploy.load(r18_bundle_copy) as m:
        why = m.describe()["why"]
    assert (m.backend, m.precision, m.artifact) == ("onnxruntime", "fp32", layout.ORT_ONNX)
    assert "the bundle does not list model.int8.onnxruntime.onnx" in why
    assert "openvino fp32 (model.onnx): its validation record in the bundle did not pass" in why


def test_a_real_bench_run_is_followed(r18_bundle_copy, tmp_path):
    # a complete run (every runnable backend and precision): only such a run records the recommendation
    r = run_cli("bench", r18_bundle_copy, "--batch", "1", "--iters", "5", "--warmup", "1", "--no-plot",
                "--out", tmp_path / "bench")
    assert r.returncode == 0, r.stderr
    best = read_manifest(r18_bundle_copy)["recommended"]["cpu"]["latency"]
    with resnet_deploy.load(r18_bundle_copy) as m:
        assert (m.backend, m.artifact, m.batch) == (best["backend"], best["artifact"], best["batch"])
        assert m.describe()["why"].startswith("bench's latency pick for cpu")


@pytest.mark.parametrize("kwargs, needles", [
    ({"backend": "onnx"}, ["unknown backend 'onnx'", "onnxruntime", "openvino"]),
    ({"precision": "fp8"}, ["unknown precision 'fp8'", "fp32, fp16, bf16, int8"]),
    ({"precision": "int8"}, ["has no int8 artifact", "quantize", "--int8 --calib DIR", "onnxruntime fp32 (",
                             "onnxruntime-cuda fp32 (model.onnx) [onnxruntime-gpu is not installed"]),
    ({"backend": "tensorrt"}, ["backend tensorrt runs on gpu, not cpu", "device='gpu'"]),
    ({"backend": "tensorrt", "device": "gpu"}, ["tensorrt is not installed", "pip install 'resnet-deploy[gpu]'"]),
    ({"device": "tpu"}, ["unknown device 'tpu'", "cpu, gpu"]),
    ({"mode": "fast"}, ["unknown mode 'fast'", "latency, throughput"]),
    ({"batch": 0}, ["batch 0 must be >= 1"]),
])
def test_bad_requests_are_one_line(r18_bundle, kwargs, needles):
    with pytest.raises(UserError) as e:
        resnet_deploy.load(r18_bundle, **kwargs)
    assert "\n" not in str(e.value)
    for needle in needles:
        assert needle in str(e.value), (needle, str(e.value))


def test_untrusted_or_altered_bundle_is_refused(r18_bundle_copy):
    name = untrust(r18_bundle_copy, "dotdot")
    with opened_in(r18_bundle_copy.parent / "outside") as opened, pytest.raises(UserError) as e:
        resnet_deploy.load(r18_bundle_copy)
    assert NOT_A_NAME in str(e.value) and repr(name) in str(e.value) and opened == []


def test_altered_artifact_fails_verification(r18_bundle_copy):
    with open(r18_bundle_copy / layout.ORT_ONNX, "ab") as f:
        f.write(b"\0")
    with pytest.raises(CheckFailed, match=r"model.onnxruntime.onnx .*failed verification \(size"):
        resnet_deploy.load(r18_bundle_copy)


# ----------------------------------------------------------------------------------------------- preprocessing
def test_preprocessing_is_exports_reference_input_bit_for_bit(model, r18_bundle):
    """The runtime reads an image as export's reference inputs do (and as the C++ loader, tested bit for bit
    against the same function in test_deploy_cpp), from a path, a PIL image or a uint8 array."""
    pre = Preprocessing.from_dict(read_manifest(r18_bundle)["preprocessing"])
    data, _, _ = make_inputs(pre, IMAGES)
    paths = expand_images(IMAGES)
    assert paths == load_images(IMAGES, pre).paths and len(paths) == len(data) == 5
    assert np.array_equal(np.stack([model.preprocess(p) for p in paths]), data)
    for path, ref in zip(paths, data):
        with Image.open(path) as im:
            assert np.array_equal(model.preprocess(im), ref), path.name
            assert np.array_equal(model.preprocess(np.asarray(im.convert("RGB"))), ref), path.name


def test_bad_image_inputs(model, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(UnreadableImage, match="cannot read image .*broken.png"):
        model.predict([IMAGES / "coffee.jpg", broken])
    with pytest.raises(UserError, match=r"float32 array of shape \(1, 3, 64, 64\).*model\(x\)"):
        model.predict(np.zeros((1, 3, SMALL, SMALL), np.float32))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="holds no image"):
        model.predict(tmp_path / "empty")
    with pytest.raises(UserError, match="top_k 0 must be >= 1"):
        model.predict(IMAGES, top_k=0)
    results = list(model.predictions([broken, IMAGES / "coffee.jpg"], skip_unreadable=True))
    assert results[0].top is None and "broken.png" in results[0].error and len(results[1].top) == 5


# ----------------------------------------------------------------------------------------------- inference
def test_model_call_matches_eager(model, r18_bundle):
    import torch

    data, _, _ = make_inputs(model.preprocessing, IMAGES)
    with torch.inference_mode():
        eager = load_eager(r18_bundle)(torch.from_numpy(data)).numpy()
    parity = validate.compare(eager, model(data))
    assert parity.cosine >= FP32["min_cosine"] and parity.top1_agreement == FP32["min_agreement"]
    assert parity.max_rel_diff <= FP32["max_rel_diff"]
    with pytest.raises(UserError, match=r"float32 NCHW \(N, 3, 64, 64\), got float32 \(2, 3, 32, 32\)"):
        model(np.zeros((2, 3, 32, 32), np.float32))
    with pytest.raises(UserError, match="got uint8"):
        model(np.zeros((2, 3, SMALL, SMALL), np.uint8))
    assert model(np.zeros((0, 3, SMALL, SMALL), np.float32)).shape == (0, 10)


def test_predict_is_softmax_top_k_of_the_logits(model, tmp_path):
    nested = tmp_path / "photos" / "deeper"
    nested.mkdir(parents=True)
    for p in expand_images(IMAGES):
        shutil.copy(p, nested if p.suffix == ".png" else tmp_path / "photos")
    paths = expand_images(tmp_path / "photos")
    assert len(paths) == 5 and sum(p.parent == nested for p in paths) == 2  # recursive
    logits = model(np.stack([model.preprocess(p) for p in paths]))
    preds = model.predict(tmp_path / "photos", top_k=3)
    assert len(preds) == 5 and all(len(p) == 3 and isinstance(p[0], Prediction) for p in preds)
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    for top, row, p in zip(preds, logits, probs):
        assert [t.index for t in top] == list(np.argsort(-row, kind="stable")[:3])
        assert [t.label for t in top] == [str(t.index) for t in top]
        assert [t.score for t in top] == pytest.approx([p[t.index] for t in top], rel=1e-6)
        assert top[0].score >= top[1].score >= top[2].score
    mixed = [paths[0], Image.open(paths[0]), np.asarray(Image.open(paths[0]).convert("RGB"))]
    assert model.predict(mixed, top_k=3) == [preds[0]] * 3
    assert model.predict(paths[0], top_k=3) == [preds[0]]


def test_batch_size_does_not_change_the_answer(r18_bundle, model):
    with resnet_deploy.load(r18_bundle, batch=2, spinning=False) as small:
        assert small.batch == 2 and small.describe()["runtime"]["spinning"] is False
        got = small.predict(IMAGES)
    want = model.predict(IMAGES)
    assert [[t.index for t in p] for p in got] == [[t.index for t in p] for p in want]
    assert [t.score for p in got for t in p] == pytest.approx([t.score for p in want for t in p], rel=1e-5)


def test_class_names_come_from_the_manifest(r18_bundle_copy):
    names = [f"class {i}" for i in range(10)]
    edit_manifest(r18_bundle_copy, lambda m: m.update(classes={"names": names, "source": "test list"}))
    with resnet_deploy.load(r18_bundle_copy) as m:
        top = m.predict(IMAGES / "coffee.jpg", top_k=10)[0]
        assert [t.label for t in top] == [names[t.index] for t in top]
        assert m.describe()["labels"] == "class names from test list"
    edit_manifest(r18_bundle_copy, lambda m: m.update(classes={"names": names[:3], "source": "test list"}))
    with pytest.raises(UserError, match="lists 3 class names for a model with 10 classes"):
        resnet_deploy.load(r18_bundle_copy)


def test_nan_logits_are_an_error(model):
    x = np.full((2, 3, SMALL, SMALL), np.nan, np.float32)
    x[1] = 0.0
    with pytest.raises(CheckFailed, match=r"returned NaN/Inf logits for 1 of 2 inputs"):
        model(x)


def test_threads_get_the_single_threaded_results(model):
    paths = expand_images(IMAGES)
    data = np.stack([model.preprocess(p) for p in paths])
    want_logits, want_top = model(data), model.predict(paths)
    results, errors = [], []

    def work(k: int) -> None:
        try:
            for i in range(3):
                results.append((np.array_equal(model(data[(k + i) % 5:]), want_logits[(k + i) % 5:]),
                                model.predict(paths) == want_top))
        except Exception as e:  # noqa: BLE001 - reported by the assert below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(results) == 12 and all(a and b for a, b in results)


def test_close_releases_the_runtime(r18_bundle):
    with resnet_deploy.load(r18_bundle) as m:
        runner = m._runner
        assert runner.is_active
    assert not runner.is_active and m.describe()["runtime"] == "closed"
    with pytest.raises(RuntimeError, match="is closed"):
        m(np.zeros((1, 3, SMALL, SMALL), np.float32))
    m.close()  # twice is fine
