"""The export pipeline: one checked request, a stage list run through one loop, graphs handed over in memory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from resnet_deploy.errors import UserError
from resnet_deploy.pipeline import api
from resnet_deploy.pipeline.request import ExportRequest
from resnet_deploy.preprocess import make_preprocessing


def test_export_runs_the_stage_list_in_order():
    assert [name for name, _ in api.STAGES] == ["export", "fusion", "precision", "openvino", "engines"]
    assert [stage.NAME for _, stage in api.STAGES] == ["export", "fuse", "precision", "openvino", "engines"]


def test_request_is_checked_once_and_immutable(tmp_path):
    pre = make_preprocessing("64")
    with pytest.raises(UserError, match="--opset 17 is not supported"):
        ExportRequest.create(tmp_path / "b", pre, opset=17)
    with pytest.raises(UserError, match="unknown --engine 'sometimes'"):
        ExportRequest.create(tmp_path / "b", pre, engine="sometimes")
    with pytest.raises(UserError, match="unknown pass .no_such_pass."):
        ExportRequest.create(tmp_path / "b", pre, fuse_skip=["no_such_pass"])
    request = ExportRequest.create(tmp_path / "b", pre, engine="never")
    with pytest.raises(AttributeError):
        request.opset = 19  # frozen: no stage can change what was checked
    assert str(request.engines.mode) == "never" and request.precision is None and not (tmp_path / "b").exists()


def test_export_parses_no_file_it_wrote_again(tmp_path, monkeypatch, images_dir):
    """One ``export --arch resnet18 --fp16 --int8 --calib DIR``: every stage gets the graphs the previous one wrote
    in memory, so ``onnx.load`` never reads a file of this run (it read ``model.onnx`` six times before)."""
    import onnx

    from resnet_deploy.cli import main

    out = tmp_path / "run"
    loads: list[str] = []

    def counting(load):
        def wrapper(f, *args, **kwargs):
            if isinstance(f, (str, os.PathLike)) and Path(os.path.realpath(f)).is_relative_to(os.path.realpath(out)):
                loads.append(Path(f).name)
            return load(f, *args, **kwargs)
        return wrapper

    monkeypatch.setattr(onnx, "load", counting(onnx.load))
    monkeypatch.setattr(onnx, "load_model", counting(onnx.load_model))
    out.mkdir()
    rc = main(["export", "--arch", "resnet18", "--weights", "random", "--input-size", "64", "--num-classes", "10",
               "--fp16", "--int8", "--calib", str(images_dir), "--max-drop", "100", "--engine", "never",
               "--out", str(out / "b")])
    assert rc == 0
    assert {"model.onnx", "model.onnxruntime.onnx", "model.fp16.onnx", "model.int8.onnxruntime.onnx"} <= {
        p.name for p in (out / "b").iterdir()}
    assert loads == [], f"files this run wrote were parsed again: {loads}"
