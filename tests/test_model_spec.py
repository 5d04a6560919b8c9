"""``export --model FILE.py:FUNCTION``: a custom residual network with a checkpoint through the CLI, what the
manifest records, and every bad spec as one line, exit 2, nothing written."""

from __future__ import annotations

import json
import textwrap

import pytest
import torch

from resnet_deploy.cli import main

from .conftest import SMALL, run_cli

MODEL_PY = textwrap.dedent('''
    import torch
    from torch import nn


    class Block(nn.Module):
        """A residual block with a squeeze-excitation gate and a BatchNorm that follows no Conv."""

        def __init__(self, c):
            super().__init__()
            self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
            self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
            self.se = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(c, 4, 1), nn.ReLU(), nn.Conv2d(4, c, 1),
                                    nn.Sigmoid())

        def forward(self, x):
            y = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
            return torch.relu(x + y * self.se(y))


    class TinyResNet(nn.Module):
        def __init__(self, num_classes=7):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16),
                                      nn.ReLU())
            self.blocks = nn.Sequential(Block(16), Block(16))
            self.classifier = nn.Linear(16, num_classes)

        def forward(self, x):
            return self.classifier(self.blocks(self.stem(x)).mean((2, 3)))


    def build(num_classes=7):
        return TinyResNet(num_classes)


    def fixed():
        return TinyResNet(5)


    def not_a_module():
        return 42


    def spatial():
        return nn.Conv2d(3, 4, 1)
''')


@pytest.fixture(scope="module")
def user_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("user")
    (d / "my_resnet.py").write_text(MODEL_PY)
    (d / "broken.py").write_text("import torch\ndef build(:\n")
    (d / "raises.py").write_text("raise RuntimeError('no GPU here\\nsecond line')\n")
    ns: dict = {}
    exec(compile(MODEL_PY, "my_resnet.py", "exec"), ns)
    torch.manual_seed(3)
    net = ns["build"](10)
    from resnet_deploy.models import randomize_batchnorm

    randomize_batchnorm(net, 3)
    torch.save({"state_dict": net.state_dict(), "epoch": 9}, d / "ckpt.pth")
    torch.save(ns["build"](3).state_dict(), d / "ckpt3.pth")
    return d, net


def test_custom_module_with_checkpoint_from_the_cli(user_files, tmp_path):
    d, net = user_files
    out = tmp_path / "bundle"
    r = run_cli("export", "--model", f"{d / 'my_resnet.py'}:build", "--weights", d / "ckpt.pth", "--num-classes",
                "10", "--input-size", SMALL, "--engine", "never", "--out", out, "--json")
    assert r.returncode == 0, r.stderr
    m = json.loads((out / "manifest.json").read_text())
    assert m["arch"].endswith("my_resnet.py:build") and m["num_classes"] == 10
    src = m["model"]
    assert src["function"] == "build" and src["num_classes_argument"] is True
    import hashlib

    assert src["source_sha256"] == hashlib.sha256((d / "my_resnet.py").read_bytes()).hexdigest()
    assert m["weights"]["source"] == "checkpoint" and m["weights"]["sha256"]
    assert m["validation"]["fp32"]["passed"] and m["fusion"]["targets"]["onnxruntime"]["parity"]["passed"]
    report = json.loads((out / "fusion_report.json").read_text())["targets"]["onnxruntime"]
    assert len(report["recognized"]) == 2  # both SE gates seen in a module we never heard of
    # the checkpoint's weights, not the function's own: the bundle's eager program gives the net's logits
    from resnet_deploy.bundle import load_exported_program

    x = torch.randn(2, 3, SMALL, SMALL)
    with torch.no_grad():
        assert torch.allclose(load_exported_program(out / "model.pt2")(x), net.eval()(x), atol=1e-5)


def test_module_spec_and_output_size(user_files, tmp_path, monkeypatch):
    """A package.module spec, FUNCTION without num_classes: C comes from the output (and must match)."""
    d, _ = user_files
    monkeypatch.syspath_prepend(str(d))
    from resnet_deploy.pipeline.api import export_model

    res = export_model("my_resnet:fixed", tmp_path / "b", weights="random", input_size=SMALL, fuse=False,
                       engine="never")
    assert res.manifest["num_classes"] == 5 and res.manifest["model"]["num_classes_argument"] is False
    assert res.manifest["model"]["source_file"].endswith("my_resnet.py") and res.manifest["weights"]["source"] == "random"


def run(argv, capsys):
    code = main(argv)
    return code, capsys.readouterr().err.strip()


CASES = {
    "file missing": (["--model", "{d}/nope.py:build"], ["nope.py", "does not exist"]),
    "syntax error": (["--model", "{d}/broken.py:build"], ["broken.py:build", "does not import", "SyntaxError"]),
    "raises on import": (["--model", "{d}/raises.py:build"], ["does not import", "RuntimeError: no GPU here"]),
    "no such module": (["--model", "no_such_pkg.models:build"], ["no module named 'no_such_pkg.models'"]),
    "missing function": (["--model", "{d}/my_resnet.py:make"], ["no function 'make'", "build, fixed"]),
    "not a module": (["--model", "{d}/my_resnet.py:not_a_module"], ["returned int, not a torch.nn.Module"]),
    "output not (N, C)": (["--model", "{d}/my_resnet.py:spatial"], ["output has shape (2, 4, 64, 64)", "(N, C)"]),
    "classes vs fixed head": (["--model", "{d}/my_resnet.py:fixed", "--num-classes", "10"],
                              ["--num-classes 10", "outputs 5 classes", "takes no num_classes"]),
    "checkpoint head": (["--model", "{d}/my_resnet.py:build", "--weights", "{d}/ckpt3.pth"],
                        ["classifier (classifier.weight) with 3 classes", "--num-classes 3"]),
    "checkpoint of another net": (["--model", "{d}/my_resnet.py:build", "--weights", "{d}/other.pth"],
                                  ["does not fit the module build() returns", "missing keys"]),
    "malformed spec": (["--model", "my_resnet.py"], ["path/to/file.py:FUNCTION"]),
    "both": (["--model", "{d}/my_resnet.py:build", "--arch", "resnet18"], ["mutually exclusive"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_model_spec(case, user_files, tmp_path, capsys):
    d, _ = user_files
    if not (d / "other.pth").exists():
        torch.save({"fc.weight": torch.zeros(2, 2)}, d / "other.pth")
    extra, needles = CASES[case]
    out = tmp_path / "out"
    argv = ["export", "--weights", "random", "--input-size", str(SMALL), "--out", str(out)]
    argv += [a.format(d=d) for a in extra]
    if "--weights" in extra:  # the case's own weights win
        argv = argv[:1] + argv[3:]
    code, err = run(argv, capsys)
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("error:"), err
    for needle in needles:
        assert needle in err, (needle, err)
    assert list(tmp_path.iterdir()) == []


def test_neither_arch_nor_model(capsys, tmp_path):
    code, err = run(["export", "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "--arch" in err and "--model" in err and len(err.splitlines()) == 1
