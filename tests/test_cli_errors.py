"""Every bad input of `export`: one line naming the value (and the valid choices), exit 2, nothing written."""

from __future__ import annotations

import pytest
import torch
import torchvision

from resnet_deploy.cli import main

from .conftest import SMALL, run_cli


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpts")
    r18 = torchvision.models.resnet18(num_classes=10).state_dict()
    torch.save(r18, d / "r18_10.pth")
    torch.save(torchvision.models.resnet50(num_classes=10).state_dict(), d / "r50.pth")
    data = (d / "r18_10.pth").read_bytes()
    (d / "truncated.pth").write_bytes(data[: len(data) // 2])
    (d / "notes.txt").write_text("not a checkpoint\n")
    torch.save({"epoch": 3, "lr": 0.1}, d / "no_state.pth")
    torch.save({"fc.weight": torch.zeros(3, 3)}, d / "wrong_shape.pth")
    (d / "names3.txt").write_text("cat\ndog\nbird\n\n")
    return d


def run(argv, capsys):
    code = main(argv)
    err = capsys.readouterr().err.strip()
    return code, err


CASES = {
    "unknown arch": (["--arch", "resnet51"], ["resnet51", "resnet18", "wide_resnet101_2"]),
    "weights file missing": (["--weights", "{d}/nope.pth"], ["nope.pth", "does not exist"]),
    "not a checkpoint": (["--weights", "{d}/notes.txt"], ["notes.txt", "not a readable PyTorch checkpoint"]),
    "truncated checkpoint": (["--weights", "{d}/truncated.pth"], ["truncated.pth", "not a readable"]),
    "no state dict": (["--weights", "{d}/no_state.pth"], ["no_state.pth", "holds no state_dict"]),
    "arch mismatch": (["--weights", "{d}/r50.pth", "--num-classes", "10"],
                      ["unexpected keys", "layer1.0.conv3.weight", "shape mismatch layer1.0.conv1.weight"]),
    "missing keys": (["--weights", "{d}/wrong_shape.pth"],
                     ["missing keys (conv1.weight, bn1.weight", "fc.weight: checkpoint (3, 3) vs model (1000, 512)"]),
    "classifier mismatch": (["--weights", "{d}/r18_10.pth"], ["10 classes", "--num-classes 10"]),
    "malformed input size": (["--input-size", "64x"], ["'64x'", "HxW"]),
    "too small input size": (["--input-size", "16x64"], ["16x64", ">= 32"]),
    "mean not three numbers": (["--mean", "0.5,0.5"], ["--mean", "'0.5,0.5'", "three"]),
    "mean not numbers": (["--mean", "a,b,c"], ["--mean", "'a,b,c'", "three numbers"]),
    "std not positive": (["--std", "0.2,0,0.2"], ["--std", "> 0"]),
    "unknown weights name": (["--weights", "IMAGENET9K_V9"], ["IMAGENET9K_V9", "IMAGENET1K_V1", "random", "PATH"]),
    "bad opset": (["--opset", "11"], ["--opset 11", "18"]),
    "resize below crop": (["--resize", "40"], ["--resize 40", ">= 64"]),
    "class names count": (["--class-names", "{d}/names3.txt"], ["names3.txt", "3 class name(s)", "1000 classes"]),
    "class names missing": (["--class-names", "{d}/nope.txt"], ["--class-names", "nope.txt", "does not exist"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_export_input(case, checkpoints, tmp_path, capsys):
    extra, needles = CASES[case]
    out = tmp_path / "out"
    argv = ["export", "--arch", "resnet18", "--weights", "random", "--input-size", str(SMALL), "--out", str(out)]
    argv += [a.format(d=checkpoints) for a in extra]
    code, err = run(argv, capsys)
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("error:"), err
    for needle in needles:
        assert needle in err, (needle, err)
    assert list(tmp_path.iterdir()) == []  # nothing written, not even a temporary folder


def test_bad_output_folders(tmp_path, capsys):
    base = ["export", "--arch", "resnet18", "--weights", "random", "--input-size", str(SMALL)]
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("x")
    code, err = run(base + ["--out", str(taken)], capsys)
    assert code == 2 and "exists and is not empty" in err and "--force" in err
    assert [p.name for p in taken.iterdir()] == ["keep.txt"]
    afile = tmp_path / "file"
    afile.write_text("x")
    code, err = run(base + ["--out", str(afile)], capsys)
    assert code == 2 and "not a folder" in err
    code, err = run(base + ["--out", "/proc/resnet-deploy-out"], capsys)  # unwritable even for root
    assert code == 2 and "not writable" in err and len(err.splitlines()) == 1


def test_images_folder_without_readable_images(tmp_path, capsys):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    (imgs / "broken.jpg").write_bytes(b"not really a jpeg")
    (imgs / "readme.txt").write_text("hello")
    out = tmp_path / "out"
    argv = ["export", "--arch", "resnet18", "--weights", "random", "--input-size", str(SMALL), "--out", str(out),
            "--images", str(imgs)]
    code, err = run(argv, capsys)
    assert code == 2 and "no readable image" in err and str(imgs) in err, err
    assert not out.exists()
    code, err = run(argv[:-1] + [str(tmp_path / "missing")], capsys)
    assert code == 2 and "does not exist" in err


def test_offline_torchvision_weights_say_what_to_do(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))  # an empty cache, and no network here
    monkeypatch.setattr("torch.hub.download_url_to_file",
                        lambda *a, **k: (_ for _ in ()).throw(ConnectionError("network unreachable")))
    code, err = run(["export", "--arch", "resnet18", "--weights", "DEFAULT", "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and len(err.splitlines()) == 1
    assert "ResNet18_Weights.IMAGENET1K_V1" in err and "--weights random" in err and "PATH" in err


def test_subprocess_error_has_no_traceback(tmp_path):
    r = run_cli("export", "--arch", "resnet18", "--weights", "random", "--input-size", "8", "--out", tmp_path / "o")
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and r.stderr.strip().count("\n") == 0, r.stderr
