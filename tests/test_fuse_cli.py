"""``resnet-deploy fuse`` as a user runs it: list, fuse a file with a report, fuse a bundle, bad input."""

from __future__ import annotations

import json

import onnx
import pytest

from resnet_deploy.bundle import read_manifest, verify

from .conftest import run_cli


def test_list_names_every_pass():
    from resnet_deploy.fuse import pass_names

    r = run_cli("fuse", "--list")
    assert r.returncode == 0
    assert [line.split()[0] for line in r.stdout.splitlines()] == pass_names()


def test_fuse_file_with_report(r18_bundle, tmp_path):
    out, rep = tmp_path / "m.ort.onnx", tmp_path / "report.json"
    r = run_cli("fuse", r18_bundle / "model.onnx", "-o", out, "--target", "onnxruntime", "--report", rep)
    assert r.returncode == 0, r.stderr
    assert "layer4.1" in r.stdout and "FusedConv" in r.stdout  # the per-block table (the summary is on stdout)
    ops = [n.op_type for n in onnx.load(str(out)).graph.node]
    assert ops.count("FusedConv") == 17 and "Relu" not in ops
    assert json.loads(rep.read_text())["ops_after"]["com.microsoft:FusedConv"] == 17
    again = run_cli("fuse", r18_bundle / "model.onnx", "-o", out)
    assert again.returncode == 2 and "--force" in again.stderr
    skipped = run_cli("fuse", r18_bundle / "model.onnx", "-o", out, "--force", "--skip", "fuse-conv-relu", "-q")
    assert skipped.returncode == 0 and skipped.stdout == "" and skipped.stderr == ""  # quiet means quiet
    assert [n.op_type for n in onnx.load(str(out)).graph.node].count("FusedConv") == 8


@pytest.mark.parametrize("args, message", [
    (["--target", "gpu"], "unknown fusion target 'gpu'"),
    (["--skip", "fold-everything"], "unknown pass 'fold-everything'"),
])
def test_bad_options(r18_bundle, tmp_path, args, message):
    out = tmp_path / "out.onnx"
    r = run_cli("fuse", r18_bundle / "model.onnx", "-o", out, *args)
    assert r.returncode == 2 and message in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not out.exists()


def test_not_an_onnx_file(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_text("this is not a protobuf\n")
    r = run_cli("fuse", bad, "-o", tmp_path / "out.onnx")
    assert r.returncode == 2 and "is not an ONNX model" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "out.onnx").exists()


def test_fuse_bundle_in_place(r18_bundle_copy):
    r = run_cli("fuse", r18_bundle_copy)
    assert r.returncode == 2 and "--force" in r.stderr  # the bundle already has its fused graph
    r = run_cli("fuse", r18_bundle_copy, "--force", "-q")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "" and r.stderr == ""  # quiet: no tables, no progress
    assert verify(r18_bundle_copy) == []
    fusion = read_manifest(r18_bundle_copy)["fusion"]
    assert fusion["targets"]["onnxruntime"]["parity"]["passed"]
    assert fusion["torch_fold"]["folded"] == 20  # kept from the export


def test_fuse_bundle_says_why_the_portable_count_is_unchanged(r18_bundle_copy):
    r = run_cli("fuse", r18_bundle_copy, "--force")
    assert r.returncode == 0, r.stderr
    # the export fused model.onnx already: nothing is left to rewrite in it
    assert ("node counts (portable): 49 nodes (20 BatchNorm folded into their Conv in PyTorch before export; "
            "nothing left to fuse for portable)") in r.stdout
    assert "node counts (onnxruntime): 49 -> 24 nodes" in r.stdout and "onnxruntime parity vs eager" in r.stdout


def test_export_rejects_unknown_fuse_skip_before_work(tmp_path):
    r = run_cli("export", "--arch", "resnet18", "--weights", "random", "--input-size", "64", "--fuse-skip", "bogus",
                "--out", tmp_path / "b")
    assert r.returncode == 2 and "unknown pass 'bogus'" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "b").exists()
