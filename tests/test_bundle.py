"""Bundle integrity: checksums, `info`, atomic writes (nothing left after a failure), refusing to overwrite."""

from __future__ import annotations

import pytest
import torch

from resnet_deploy import export, export_arch
from resnet_deploy.bundle import BundleUpdate, read_manifest, verify
from resnet_deploy.cli import main
from resnet_deploy.errors import CheckFailed, UserError

from .conftest import SMALL


def leftovers(parent, name):
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(f".{name}.") or p.name == name)


def test_info_verifies_checksums(r18_bundle_copy, capsys):
    assert main(["info", str(r18_bundle_copy)]) == 0
    out = capsys.readouterr().out
    assert "resnet18" in out and "all ok" in out and "model.onnx" in out
    with open(r18_bundle_copy / "model.onnx", "r+b") as f:  # flip one byte, same size
        f.seek(1000)
        b = f.read(1)
        f.seek(1000)
        f.write(bytes([b[0] ^ 0xFF]))
    assert verify(r18_bundle_copy) == ["model.onnx: sha256 mismatch"]
    assert main(["info", str(r18_bundle_copy)]) == 1
    captured = capsys.readouterr()
    assert "MISMATCH" in captured.out and "model.onnx" in captured.err


def test_info_on_missing_file_and_non_bundle(r18_bundle_copy, tmp_path, capsys):
    (r18_bundle_copy / "model.pt2").unlink()
    assert main(["info", str(r18_bundle_copy)]) == 1
    assert main(["info", str(tmp_path)]) == 2
    assert "no manifest.json" in capsys.readouterr().err


class Boom(RuntimeError):
    pass


@pytest.mark.parametrize("exc", [Boom, KeyboardInterrupt])
def test_failure_mid_export_leaves_nothing(tmp_path, monkeypatch, exc):
    import resnet_deploy.exporter.stage as export_stage

    def fail(*a, **k):
        raise exc("injected")

    # after model.onnx is written and validated, before the bundle is complete
    monkeypatch.setattr(export_stage, "save_exported_program", fail)
    with pytest.raises(exc):
        export_arch("resnet18", tmp_path / "out", weights="random", input_size=SMALL)
    assert leftovers(tmp_path, "out") == []


class ExportCheat(torch.nn.Module):
    """Behaves differently under torch.export than in eager mode, so the exported graph is really wrong."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3)
        self.fc = torch.nn.Linear(8, 6)

    def forward(self, x):
        y = self.fc(self.conv(x).mean((2, 3)))
        return y.flip(-1) if torch.compiler.is_exporting() else y


def test_broken_parity_fails_and_keeps_no_bundle(tmp_path):
    torch.manual_seed(0)
    with pytest.raises(CheckFailed, match="parity broken"):
        # fold_bn=False: the PyTorch fold re-traces the model with torch.fx, which would bake in the eager branch
        export(ExportCheat(), tmp_path / "cheat", input_size=SMALL, fold_bn=False)
    assert leftovers(tmp_path, "cheat") == []


def test_existing_folder_needs_force(r18_bundle_copy, tmp_path):
    marker = r18_bundle_copy / "user-notes.txt"
    marker.write_text("mine")
    with pytest.raises(UserError, match="--force"):
        export_arch("resnet18", r18_bundle_copy, weights="random", input_size=SMALL)
    assert marker.read_text() == "mine"
    export_arch("resnet18", r18_bundle_copy, weights="random", input_size=SMALL, force=True)
    assert not marker.exists() and verify(r18_bundle_copy) == []
    assert leftovers(r18_bundle_copy.parent, r18_bundle_copy.name) == [r18_bundle_copy.name]


def test_bundle_update_is_atomic(r18_bundle_copy):
    before = read_manifest(r18_bundle_copy)
    with pytest.raises(Boom):
        with BundleUpdate(r18_bundle_copy) as b:
            (b.path / "extra.json").write_text("{}")
            b.add_file("extra.json", kind="report")
            raise Boom
    assert read_manifest(r18_bundle_copy) == before and not (r18_bundle_copy / "extra.json").exists()
    with BundleUpdate(r18_bundle_copy) as b:
        (b.path / "extra.json").write_text("{}")
        b.add_file("extra.json", kind="report")
    assert "extra.json" in read_manifest(r18_bundle_copy)["files"] and verify(r18_bundle_copy) == []
    assert sorted(p.name for p in r18_bundle_copy.iterdir() if p.name.startswith(".")) == []
    with pytest.raises(UserError, match="--force"):
        with BundleUpdate(r18_bundle_copy) as b:
            (b.path / "extra.json").write_text("[]")
            b.add_file("extra.json", kind="report")


def test_info_shows_failed_precisions_and_the_recommendation(r18_bundle_copy, capsys):
    """A bundle whose INT8 target missed its budget: `info` still exits 0 (the checksums are fine) but shows the
    failure with its reason, and bench's recommendation with where and when it was measured; --json alike."""
    import json

    reason = "INT8 accuracy budget not met: onnxruntime: top-1 drop 20.00 points > --max-drop 1.0 even with 3 layer(s)"
    pick = {"backend": "onnxruntime", "precision": "fp32", "artifact": "model.onnxruntime.onnx", "batch": 1,
            "mode": "latency", "p50_ms": 5.8, "throughput_ips": 172.4, "kind": "onnx", "served_from": "model.onnx"}
    with BundleUpdate(r18_bundle_copy) as b:
        b.manifest.setdefault("precision", {})["int8"] = {
            "calibration": {"method": "mse", "num_samples": 5, "reused_cache": False}, "max_drop": 1.0,
            "gate_data": "images:5", "targets": {"onnxruntime": {"passed": False}}, "failed": reason}
        b.manifest["recommended"] = {"cpu": {"cpu": "AMD EPYC", "measured": "2026-01-02", "latency": pick}}
    assert main(["info", str(r18_bundle_copy)]) == 0
    out = capsys.readouterr().out
    assert f"int8 FAILED, left out of the bundle: {reason}" in out and "all ok" in out
    assert ("recommended for cpu latency: onnxruntime fp32 (model.onnxruntime.onnx), batch 1: p50 5.80 ms, "
            "172.4 img/s; measured 2026-01-02 on AMD EPYC") in out
    assert main(["info", str(r18_bundle_copy), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] and data["failures"] == {"int8": reason} and data["recommended"]["cpu"]["latency"] == pick
