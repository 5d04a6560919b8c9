"""Class names travel with the bundle: torchvision's and timm's ImageNet names (offline, from their code),
``--class-names FILE`` for your own models, none otherwise; recorded as ``manifest["classes"]`` and shown by
``info``."""

from __future__ import annotations

import json

import pytest
import torchvision

from resnet_deploy import export_arch
from resnet_deploy.bundle import read_manifest
from resnet_deploy.cli import main
from resnet_deploy.errors import UserError
from resnet_deploy.models.classes import read_class_names, timm_classes

from .conftest import SMALL

FAST = dict(weights="random", input_size=SMALL, fuse=False, engine="never")
NAMES = ["café au lait", "日本語", "tabby, tabby cat", "a/b", "x" * 80, "six", "seven", "eight", "nine", "ten"]


def run(argv, capsys):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err.strip()


def test_resnet50_labels_are_torchvisions_categories(tmp_path, capsys):
    res = export_arch("resnet50", tmp_path / "r50", **FAST)
    classes = read_manifest(res.path)["classes"]
    assert classes["names"] == torchvision.models.ResNet50_Weights.IMAGENET1K_V1.meta["categories"]
    assert classes["source"] == "torchvision ResNet50_Weights.IMAGENET1K_V2"  # random weights: the arch's DEFAULT
    code, out, _ = run(["info", res.path], capsys)
    assert code == 0 and "classes     1000 names from torchvision ResNet50_Weights.IMAGENET1K_V2" in out


def test_class_names_round_trip(tmp_path, capsys):
    names_file = tmp_path / "names.txt"
    names_file.write_bytes(("\r\n".join(NAMES) + "\r\n\r\n  \n").encode("utf-8"))  # CRLF, blank trailing lines
    out = tmp_path / "r18"
    code, _, err = run(["export", "--arch", "resnet18", "--weights", "random", "--input-size", SMALL, "--num-classes",
                        len(NAMES), "--no-fuse", "--engine", "never", "--class-names", names_file, "--out", out], capsys)
    assert code == 0, err
    raw = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert raw["classes"] == {"names": NAMES, "source": f"--class-names {names_file}"}
    code, text, _ = run(["info", out], capsys)
    assert code == 0 and f"classes     10 names from --class-names {names_file}" in text
    code, text, _ = run(["info", out, "--json"], capsys)
    assert json.loads(text)["classes"] == {"count": 10, "source": f"--class-names {names_file}"}


def test_class_names_override_and_python_list(tmp_path):
    res = export_arch("resnet18", tmp_path / "r18", class_names=["zero", "one", "two"], num_classes=3, **FAST)
    assert res.manifest["classes"] == {"names": ["zero", "one", "two"], "source": "class_names argument"}


def test_other_class_counts_have_no_names(r18_bundle, capsys):
    assert "classes" not in read_manifest(r18_bundle)  # resnet18 with 10 classes, no --class-names
    code, out, _ = run(["info", r18_bundle], capsys)
    assert code == 0 and "classes     no names (readers show the class index)" in out


def test_a_count_known_only_after_the_build_is_checked_before_export(tmp_path, capsys):
    """--model without --num-classes: the count comes from the module's output, and is still checked first."""
    model = tmp_path / "net.py"
    model.write_text("import torchvision\n\ndef build():\n    return torchvision.models.resnet18(num_classes=4)\n")
    names_file = tmp_path / "names.txt"
    names_file.write_text("a\nb\nc\n")
    out = tmp_path / "out"
    code, _, err = run(["export", "--model", f"{model}:build", "--weights", "random", "--input-size", SMALL,
                        "--class-names", names_file, "--out", out], capsys)
    assert code == 2 and len(err.splitlines()) == 1, err
    assert str(names_file) in err and "3 class name(s)" in err and "4 classes" in err, err
    assert not out.exists()


@pytest.mark.parametrize("content, needle", [
    (b"", "holds no class names"),
    (b"\n\n", "holds no class names"),
    (b"a\n\nb\n", "line 2 is blank"),
    (b"caf\xe9\n", "is not UTF-8 text"),
])
def test_unusable_class_names_files(tmp_path, content, needle):
    f = tmp_path / "names.txt"
    f.write_bytes(content)
    with pytest.raises(UserError, match=needle):
        read_class_names(f)
    with pytest.raises(UserError, match="does not exist"):
        read_class_names(tmp_path / "nope.txt")
    with pytest.raises(UserError, match="cannot be read"):
        read_class_names(tmp_path)  # a folder


def test_byte_order_mark_is_no_name(tmp_path):
    f = tmp_path / "names.txt"
    f.write_bytes("\ufeffone\ntwo".encode("utf-8"))
    assert read_class_names(f).names == ("one", "two")


def test_timm_labels_are_timms_imagenet_info(tmp_path):
    pytest.importorskip("timm")
    from timm.data import ImageNetInfo

    res = export_arch("timm/resnet18", tmp_path / "t18", **FAST)
    info = ImageNetInfo("imagenet-1k")
    assert res.manifest["classes"] == {"names": [info.index_to_description(i) for i in range(1000)],
                                       "source": "timm imagenet-1k"}
    assert timm_classes(11821).source == "timm imagenet-12k" and len(timm_classes(11821).names) == 11821
    assert timm_classes(10) is None
