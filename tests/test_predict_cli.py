"""``resnet-deploy predict``: top-k per image and ms, JSON lines, unreadable images, one-line bad options, and on the
trained digits network the same top-1 as eager PyTorch, image for image."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from resnet_deploy.cli import main

from . import digits
from .conftest import IMAGES


@pytest.fixture
def photos(tmp_path) -> Path:
    """The repository's photos in a nested folder, plus one file that is not an image."""
    root = tmp_path / "photos"
    (root / "nested").mkdir(parents=True)
    for p in sorted(IMAGES.iterdir()):
        if p.suffix != ".md":
            shutil.copy(p, root / ("nested" if p.suffix == ".png" else "") / p.name)
    (root / "nested" / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    return root


def run(argv, capsys):
    code = main(["predict", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err.strip().splitlines()


def test_json_lines_and_an_unreadable_image(r18_bundle, photos, capsys):
    code, out, err = run([r18_bundle, photos, "--json", "--top-k", "3", "--batch", "2"], capsys)
    assert code == 1, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert [Path(r["image"]).name for r in lines] == ["chelsea.jpg", "coffee.jpg", "hubble_deep_field.webp",
                                                       "astronaut.png", "rocket.png"]
    for r in lines:
        assert set(r) == {"image", "top", "ms"} and r["ms"] > 0 and len(r["top"]) == 3
        assert all(set(t) == {"index", "label", "score"} and t["label"] == str(t["index"]) for t in r["top"])
        assert r["top"][0]["score"] >= r["top"][1]["score"] >= r["top"][2]["score"]
    broken = [line for line in err if "broken.jpg" in line]
    assert len(broken) == 1 and broken[0].startswith("error: cannot read image"), err
    assert err[0].startswith("model onnxruntime fp32 (model.onnxruntime.onnx), batch 2: ")
    assert re.search(r"^5 image\(s\) predicted in [\d.]+ s: [\d.]+ ms per image$", err[-2], re.M), err
    assert err[-1] == "error: 1 image path(s) could not be read (listed above); the other 5 were predicted"


def test_human_output_lists_top_k_and_ms(r18_bundle, capsys):
    code, out, err = run([r18_bundle, IMAGES / "coffee.jpg", IMAGES / "rocket.png", "--top-k", "2", "--quiet-threads"],
                         capsys)
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 6 and re.fullmatch(r".*coffee\.jpg  \([\d.]+ ms\)", lines[0]), lines
    assert all(re.fullmatch(r"  0\.\d{4}  \d", line) for line in lines[1:3] + lines[4:6]), lines


def test_missing_path_is_one_line_and_the_rest_still_runs(r18_bundle, tmp_path, capsys):
    code, out, err = run([r18_bundle, tmp_path / "nope.jpg", IMAGES / "coffee.jpg", "--json"], capsys)
    assert code == 1 and len(out.splitlines()) == 1
    assert sum("nope.jpg" in line for line in err) == 1, err


@pytest.mark.parametrize("extra, needles", [
    (["--backend", "onnx"], ["'onnx' is not one of", "'onnxruntime'", "'openvino'", "'tensorrt'"]),
    (["--precision", "fp8"], ["'fp8' is not one of", "'fp32', 'fp16', 'bf16', 'int8'"]),
    (["--top-k", "0"], ["--top-k", "x>=1"]),
    (["--batch", "0"], ["--batch", "x>=1"]),
    (["--device", "tpu"], ["'tpu' is not one of", "'cpu', 'gpu'"]),
    (["--precision", "int8"], ["has no int8 artifact", "resnet-deploy quantize", "it has: "]),
    (["--backend", "tensorrt"], ["backend tensorrt runs on gpu, not cpu", "--device gpu"]),
    (["--backend", "tensorrt", "--device", "gpu"], ["tensorrt is not installed", "pip install 'resnet-deploy[gpu]'"]),
])
def test_bad_options_are_one_line_and_exit_2(r18_bundle, extra, needles, capsys):
    code, out, err = run([r18_bundle, IMAGES, *extra], capsys)
    assert code == 2 and out == "" and len(err) == 1 and err[0].startswith("error:"), err
    for needle in needles:
        assert needle in err[0], (needle, err[0])


@pytest.mark.proof
def test_top1_equals_eager_on_the_trained_digits_network(tmp_path, capsys):
    """The issue's done-when: on the trained digits network, predict's top-1 over its labelled images (the
    held-out split as PNG files) equals eager PyTorch's, image for image."""
    import torch

    from resnet_deploy.pipeline.api import export

    x_train, y_train, x_test, y_test, test_images = digits.dataset()
    model = digits.trained_model(x_train, y_train)
    folder = digits.write_image_folder(tmp_path / "val", test_images, y_test)
    export(model, tmp_path / "bundle", preprocessing=digits.preprocessing(), arch="resnet18",
           weights={"source": "digits-trained"}, num_classes=10)
    with torch.no_grad():
        eager = model(torch.from_numpy(x_test)).numpy().argmax(1)

    code, out, err = run([tmp_path / "bundle", folder, "--json", "--top-k", "1"], capsys)
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert len(lines) == len(y_test) == 450
    index = {int(Path(r["image"]).stem): r["top"][0]["index"] for r in lines}  # file k is test image k
    got = np.array([index[k] for k in range(len(y_test))])
    assert np.array_equal(got, eager), f"{int((got != eager).sum())} images differ"
    assert (got == y_test).mean() * 100 >= digits.MIN_TOP1  # and the network is a real one
