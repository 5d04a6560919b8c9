"""The backend table is the one answer to "which artifact does backend X run, is it here, build me a runner":
a backend added from one file appears in bench, in the recommendation and in triton, with nothing else edited."""

from __future__ import annotations

import json
import re

import pytest

from resnet_deploy.backends import table
from resnet_deploy.errors import UserError
from tests.conftest import run_cli

TOY = {"RESNET_DEPLOY_BACKENDS": "tests.toy_backend"}


def test_every_builtin_backend_declares_itself_once():
    names = table.names()
    assert names[:3] == ["eager", "eager-channels-last", "torch-compile"]
    assert {"onnxruntime", "onnxruntime-cuda", "onnxruntime-tensorrt", "openvino", "tensorrt"} <= set(names)
    assert len(names) == len(set(names))
    for spec in table.all_backends():
        assert spec.device in table.DEVICES
        assert spec.served_by is None or table.get(spec.served_by).triton is not None, spec.name


def test_unknown_backend_is_one_line_naming_the_choices():
    with pytest.raises(UserError, match=r"unknown backend 'onnx': choose one of eager, .*tensorrt"):
        table.parse_list("eager,onnx")


def test_toy_backend_appears_in_help_of_bench_and_triton():
    for command in ("bench", "triton"):
        r = run_cli(command, "--help", env=TOY)
        assert r.returncode == 0, r.stderr
        assert "toy" in r.stdout, command


def test_toy_backend_is_benchmarked_and_recommended(r18_bundle_copy, tmp_path):
    r = run_cli("bench", r18_bundle_copy, "--precision", "fp32", "--batch", "1", "--iters", "3", "--warmup", "1",
                "--no-plot", "--json", "--out", tmp_path / "bench", env=TOY)
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    rows = [row for row in result["results"] if row["backend"] == "toy"]
    assert rows and rows[0]["artifact"] == "model.onnx" and rows[0]["accuracy"]["top1_agreement"] == 1.0
    manifest = json.loads((r18_bundle_copy / "manifest.json").read_text())
    assert "toy" in manifest["recommended"]["cpu"]["latency"]["by_backend"]


def test_toy_backend_gets_its_own_triton_model(r18_bundle_copy, tmp_path):
    repo = tmp_path / "repo"
    r = run_cli("triton", r18_bundle_copy, "--repo", repo, "--backend", "toy,onnxruntime", "--device", "cpu", env=TOY)
    assert r.returncode == 0, r.stderr
    config = (repo / "resnet18_toy" / "config.pbtxt").read_text()
    assert re.search(r'platform: "onnxruntime_onnx"', config) and "KIND_CPU" in config
    assert (repo / "resnet18_toy" / "1" / "model.onnx").is_file()
    assert (repo / "resnet18_onnx" / "1" / "model.onnx").is_file()


def test_without_the_plugin_the_toy_backend_is_unknown(r18_bundle, tmp_path):
    r = run_cli("triton", r18_bundle, "--repo", tmp_path / "repo", "--backend", "toy")
    assert r.returncode == 2 and "unknown backend 'toy'" in r.stderr
