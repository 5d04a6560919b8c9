"""The C++ reference loader (cpp/): built once per session, run on real images, compared with the Python side.

Needs cmake and a C++ compiler (skipped, with the reason, only when those are absent) plus the packages that
scripts/setup_cpp.sh installs (libstb-dev, libjpeg-dev, nlohmann-json3-dev, ONNX Runtime headers): without those the build
fails and so does the test, since CI runs that script first.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from . import tolerances
from resnet_deploy import validate
from resnet_deploy.backends.onnxruntime import OnnxRuntimeRunner
from resnet_deploy.bundle import read_manifest
from resnet_deploy.preprocess import Preprocessing, preprocess_image

ROOT = Path(__file__).resolve().parents[1]
CPP = ROOT / "cpp"
# A gitignored build folder, kept between sessions so a rerun only rebuilds what changed.
BUILD = CPP / "build" / "pytest"


def _toolchain_missing() -> str | None:
    if shutil.which("cmake") is None:
        return "cmake is not installed (scripts/setup_cpp.sh installs it)"
    if not any(shutil.which(c) for c in (os.environ.get("CXX", "c++"), "g++", "clang++")):
        return "no C++ compiler is installed (scripts/setup_cpp.sh installs g++)"
    return None


@pytest.fixture(scope="session")
def infer_bin() -> Path:
    """Configure and build cpp/ once per session (incremental when the folder is already there)."""
    reason = _toolchain_missing()
    if reason:
        pytest.skip(f"C++ toolchain absent: {reason}")
    res = subprocess.run(["bash", str(CPP / "build.sh"), str(BUILD)], capture_output=True, text=True,
                         env={**os.environ, "PYTHON": sys.executable}, timeout=900)
    assert res.returncode == 0, f"C++ build failed:\n{res.stdout[-4000:]}\n{res.stderr[-4000:]}"
    exe = BUILD / "resnet_deploy_infer"
    assert exe.is_file()
    return exe


def run_infer(exe: Path, *args) -> subprocess.CompletedProcess:
    return subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="session")
def parity_images(tmp_path_factory, images_dir) -> list[Path]:
    """Real photos as PNG in the modes and sizes that exercise every branch: RGB, greyscale, RGBA, palette, an
    image smaller than the resize (upscaling), sizes whose crop offset is x.5 (Python rounds half to even); plus
    the JPEGs as they are and a greyscale JPEG (decoded by libjpeg-turbo on both sides)."""
    out = tmp_path_factory.mktemp("png")
    paths = [images_dir / "astronaut.png", images_dir / "rocket.png", images_dir / "chelsea.jpg",
             images_dir / "coffee.jpg"]
    with Image.open(images_dir / "chelsea.jpg") as im:
        im.save(out / "chelsea.png")
        im.convert("L").save(out / "chelsea_grey.png")
        im.convert("L").save(out / "chelsea_grey.jpg", quality=90)
        paths.append(out / "chelsea_grey.jpg")
        im.resize((45, 31), Image.BILINEAR).save(out / "chelsea_small.png")  # shorter side 31 < 73: upscales
        paths += [out / "chelsea.png", out / "chelsea_grey.png", out / "chelsea_small.png"]
    with Image.open(images_dir / "coffee.jpg") as im:
        rgba = im.convert("RGBA")
        rgba.putalpha(128)
        rgba.save(out / "coffee_rgba.png")
        im.convert("P", palette=Image.ADAPTIVE).save(out / "coffee_palette.png")
        paths += [out / "coffee_rgba.png", out / "coffee_palette.png"]
    with Image.open(images_dir / "hubble_deep_field.webp") as im:
        im.save(out / "hubble.png")
        paths.append(out / "hubble.png")
    return paths


def python_inputs(bundle: Path, paths: list[Path]) -> np.ndarray:
    pre = Preprocessing.from_dict(read_manifest(bundle)["preprocessing"])
    arrays = []
    for p in paths:
        with Image.open(p) as im:
            arrays.append(preprocess_image(im, pre))
    return np.stack(arrays)


def test_cpp_matches_python_preprocessing_and_logits(infer_bin, r18_bundle, parity_images, tmp_path):
    dump_in, dump_logits = tmp_path / "input.bin", tmp_path / "logits.bin"
    res = run_infer(infer_bin, r18_bundle, *parity_images, "--topk", "3", "--warmup", "0", "--runs", "2",
                    "--dump-input", dump_in, "--dump-logits", dump_logits)
    assert res.returncode == 0, res.stderr

    # Preprocessing: the same float32 tensor, bit for bit (PIL's resampling, offsets and arithmetic reproduced).
    ref_in = python_inputs(r18_bundle, parity_images)
    got_in = np.fromfile(dump_in, dtype=np.float32).reshape(ref_in.shape)
    mismatch = np.abs(got_in - ref_in).max(axis=(1, 2, 3))
    assert np.array_equal(got_in, ref_in), {str(p.name): float(d) for p, d in zip(parity_images, mismatch)}

    # Logits: the same model file in Python's ONNX Runtime.
    model = re.search(r"^model\s+(\S+)", res.stdout, re.M).group(1)
    with OnnxRuntimeRunner(r18_bundle / model) as ort:
        ref = ort.infer(ref_in)
    got = np.fromfile(dump_logits, dtype=np.float32).reshape(ref.shape)
    parity = validate.compare(ref, got)
    assert parity.max_rel_diff <= tolerances.FP32["max_rel_diff"], parity
    assert parity.top1_agreement == 1.0

    # The printed report: one block per image with top-3 classes that are the reference's, and the latency.
    blocks = res.stdout.split("image    ")[1:]
    assert len(blocks) == len(parity_images)
    for block, row in zip(blocks, ref):
        printed = [int(c) for c in re.findall(r"class (\d+)", block)]
        assert printed == list(np.argsort(-row)[:3])
    assert re.search(r"latency\s+batch %d: median [\d.]+ ms" % len(parity_images), res.stdout)


def test_cpp_bicubic_matches_python(infer_bin, r18_bundle, parity_images, tmp_path):
    """timm's configs say bicubic: the C++ loader reproduces PIL's bicubic resampling bit for bit too."""
    b = tmp_path / "bicubic"
    shutil.copytree(r18_bundle, b)
    manifest = json.loads((b / "manifest.json").read_text())
    manifest["preprocessing"]["interpolation"] = "bicubic"
    (b / "manifest.json").write_text(json.dumps(manifest, indent=2))
    dump_in = tmp_path / "input.bin"
    res = run_infer(infer_bin, b, *parity_images, "--warmup", "0", "--runs", "1", "--dump-input", dump_in)
    assert res.returncode == 0, res.stderr
    ref_in = python_inputs(b, parity_images)
    assert not np.array_equal(ref_in, python_inputs(r18_bundle, parity_images))  # the filter does change pixels
    got_in = np.fromfile(dump_in, dtype=np.float32).reshape(ref_in.shape)
    mismatch = np.abs(got_in - ref_in).max(axis=(1, 2, 3))
    assert np.array_equal(got_in, ref_in), {str(p.name): float(d) for p, d in zip(parity_images, mismatch)}


def test_cpp_single_image_batch(infer_bin, r18_bundle, images_dir, tmp_path):
    dump = tmp_path / "logits.bin"
    res = run_infer(infer_bin, r18_bundle, images_dir / "astronaut.png", "--runs", "1", "--dump-logits", dump)
    assert res.returncode == 0, res.stderr
    x = python_inputs(r18_bundle, [images_dir / "astronaut.png"])
    with OnnxRuntimeRunner(r18_bundle / "model.onnx") as ort:
        ref = ort.infer(x)
    got = np.fromfile(dump, dtype=np.float32).reshape(ref.shape)
    assert validate.compare(ref, got).max_rel_diff <= tolerances.FP32["max_rel_diff"]


@pytest.mark.parametrize("case", ["no-int8-artifact", "undecodable-image", "webp-unsupported", "missing-image",
                                  "not-a-bundle",
                                  "bad-precision", "bad-topk", "tensorrt-not-built", "no-image"])
def test_cpp_bad_input_is_one_line_exit_2(infer_bin, r18_bundle, images_dir, tmp_path, case):
    img = images_dir / "astronaut.png"
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n but not really a png")
    args, expect = {
        "no-int8-artifact": ((r18_bundle, img, "--precision", "int8"), "has no int8 ONNX model"),
        "undecodable-image": ((r18_bundle, broken), "cannot decode image"),
        "webp-unsupported": ((r18_bundle, images_dir / "hubble_deep_field.webp"), "readable: PNG, JPEG"),
        "missing-image": ((r18_bundle, tmp_path / "nope.png"), "cannot decode image"),
        "not-a-bundle": ((tmp_path, img), "is not a resnet-deploy bundle"),
        "bad-precision": ((r18_bundle, img, "--precision", "fp64"), "choose one of fp32, fp16, int8"),
        "bad-topk": ((r18_bundle, img, "--topk", "zero"), "--topk zero must be an integer >= 1"),
        "tensorrt-not-built": ((r18_bundle, img, "--backend", "tensorrt"), "built without TensorRT"),
        "no-image": ((r18_bundle,), "expected BUNDLE and at least one IMAGE"),
    }[case]
    res = run_infer(infer_bin, *args)
    assert res.returncode == 2, (res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expect in lines[0], res.stderr
    assert res.stdout == ""


def test_cpp_prints_class_names(infer_bin, images_dir, tmp_path):
    """A bundle that records class names (a 1000-class torchvision arch: ImageNet's) gets each top-k row's name
    after the columns the rows always had; a malformed names list is one line, exit 2."""
    import torchvision

    from resnet_deploy import export_arch

    res = export_arch("resnet18", tmp_path / "named", weights="random", input_size=64, fuse=False, engine="never")
    names = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.meta["categories"]
    out = run_infer(infer_bin, res.path, images_dir / "chelsea.jpg", "--topk", "3", "--warmup", "0", "--runs", "1")
    assert out.returncode == 0, out.stderr
    rows = re.findall(r"^  \d\. class (\d+) +prob [\d.]+  logit -?[\d.]+(?:  (.+))?$", out.stdout, re.M)
    assert len(rows) == 3 and all(label == names[int(c)] for c, label in rows), out.stdout

    manifest = json.loads((res.path / "manifest.json").read_text())
    manifest["classes"]["names"] = names[:-1]
    (res.path / "manifest.json").write_text(json.dumps(manifest))
    out = run_infer(infer_bin, res.path, images_dir / "chelsea.jpg", "--runs", "1")
    assert out.returncode == 2 and out.stdout == "", (out.stdout, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "classes.names has 999 names but num_classes is 1000" in lines[0], out.stderr


def test_build_script_names_missing_prerequisites(tmp_path):
    """Without cmake or a compiler on PATH, build.sh stops with a message naming each and how to install it."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "dirname", "printf"):
        found = shutil.which(tool)
        if found:
            (bin_dir / tool).symlink_to(found)
    res = subprocess.run([str(bin_dir / "bash"), str(CPP / "build.sh"), str(tmp_path / "build")],
                         capture_output=True, text=True, env={"PATH": str(bin_dir)}, timeout=60)
    assert res.returncode == 2
    assert "missing prerequisite: cmake (apt-get install cmake)" in res.stderr
    assert "a C++17 compiler (apt-get install g++)" in res.stderr
    assert not (tmp_path / "build").exists()


def test_build_script_finds_the_projects_venv(tmp_path):
    """From a fresh shell (the venv not on PATH, no PYTHON), build.sh hands CMake <repo>/.venv/bin/python, whose
    onnxruntime wheel has the library, not a python3 without it; it says which Python and why. PYTHON still wins,
    and without a .venv it falls back to python3 on PATH. (cmake, the compiler and make are stand-ins that log.)"""
    repo = tmp_path / "repo"
    shutil.copytree(CPP, repo / "cpp", ignore=shutil.ignore_patterns("build", ".deps"))
    venv_python = repo / ".venv" / "bin" / "python"
    venv_python.parent.mkdir(parents=True)
    venv_python.symlink_to(sys.executable)
    bin_dir, log = tmp_path / "bin", tmp_path / "cmake.log"
    bin_dir.mkdir()
    for tool, script in (("cmake", f'echo "$@" >> "{log}"'), ("c++", "exit 0"), ("make", "exit 0")):
        (bin_dir / tool).write_text(f"#!/bin/sh\n{script}\n")
        (bin_dir / tool).chmod(0o755)
    path = f"{bin_dir}:{os.defpath}"  # no venv on it

    def build(**env):
        log.unlink(missing_ok=True)
        res = subprocess.run(["bash", str(repo / "cpp" / "build.sh"), str(tmp_path / "build")], capture_output=True,
                             text=True, env={"PATH": path, "HOME": str(tmp_path), **env}, timeout=60)
        assert res.returncode == 0, res.stderr
        configure = log.read_text().splitlines()[0]
        return res.stdout, re.search(r"-DPython3_EXECUTABLE=(\S+)", configure)

    out, used = build()
    assert used and used.group(1) == str(venv_python)
    assert f"using Python {venv_python} (the project's .venv)" in out
    out, used = build(PYTHON="/opt/some/python")
    assert used.group(1) == "/opt/some/python" and "using Python /opt/some/python (PYTHON)" in out
    venv_python.unlink()
    out, used = build()
    python3 = shutil.which("python3", path=path)
    assert (used.group(1) if used else None) == python3 and "(python3 on PATH; set PYTHON=" in out


# ---------------------------------------------------------------- plan build records (TensorRT host code)

@pytest.fixture(scope="session")
def probe_bin(infer_bin) -> Path:
    """cpp/tests/bundle_probe, built with the loader: prints what load_bundle() read from a manifest."""
    exe = BUILD / "bundle_probe"
    assert exe.is_file(), "bundle_probe was not built (RESNET_DEPLOY_TEST_HELPERS is ON by default)"
    return exe


def _bundle_with_plans(r18_bundle: Path, dst: Path, plans) -> Path:
    """The r18 bundle's manifest (all load_bundle reads) with ``engines.plans`` set to ``plans``."""
    dst.mkdir()
    m = read_manifest(r18_bundle)
    m["engines"] = {"status": "built", "reason": None, "plans": plans}
    (dst / "manifest.json").write_text(json.dumps(m))
    return dst


def test_cpp_reads_version_compat_from_plan_records(probe_bin, r18_bundle, tmp_path):
    """The TensorRT backend allows a plan's host code (setEngineHostCodeAllowed) exactly when its manifest record
    says version_compat, as the Python runner does; a plan without a record keeps TensorRT's default (refused)."""
    plans = {"model.fp32.plan": {"tensorrt": "10.9.0.34", "version_compat": True, "precision": "fp32"},
             "model.fp16.plan": {"tensorrt": "11.1.0", "version_compat": False},
             "model.int8.plan": {"tensorrt": "11.1.0"}}  # written before the field existed: false
    bundle = _bundle_with_plans(r18_bundle, tmp_path / "b", plans)
    res = run_infer(probe_bin, bundle, "model.fp32.plan", "model.fp16.plan", "model.int8.plan", "model.other.plan")
    assert res.returncode == 0, res.stderr
    out = res.stdout.splitlines()
    assert "record model.fp32.plan version_compat=true tensorrt=10.9.0.34" in out
    assert "record model.fp16.plan version_compat=false tensorrt=11.1.0" in out
    assert "record model.int8.plan version_compat=false tensorrt=11.1.0" in out
    assert [line for line in out if line.startswith("host_code")] == [
        "host_code model.fp32.plan allowed", "host_code model.fp16.plan refused", "host_code model.int8.plan refused",
        "host_code model.other.plan refused"]
    assert any(line.startswith("file model.onnx kind=onnx") for line in out)


def test_cpp_bundle_without_plan_records(probe_bin, r18_bundle):
    """An exported bundle whose plans were skipped (engines.plans is empty) loads; no plan gets host code."""
    res = run_infer(probe_bin, r18_bundle, "model.fp32.plan")
    assert res.returncode == 0, res.stderr
    assert not [line for line in res.stdout.splitlines() if line.startswith("record ")]
    assert "host_code model.fp32.plan refused" in res.stdout


@pytest.mark.parametrize("plans,expect", [
    ({"model.fp32.plan": {"version_compat": "yes"}}, "engines.plans['model.fp32.plan'] version_compat is \"yes\": "
                                                     "must be true or false"),
    ({"model.fp32.plan": {"version_compat": 1}}, "version_compat is 1: must be true or false"),
    ({"model.fp32.plan": ["not", "an", "object"]}, "engines.plans['model.fp32.plan'] must be an object"),
    (["model.fp32.plan"], "engines.plans must be an object"),
])
def test_cpp_bad_plan_record_is_one_line_exit_2(probe_bin, r18_bundle, tmp_path, plans, expect):
    res = run_infer(probe_bin, _bundle_with_plans(r18_bundle, tmp_path / "b", plans), "model.fp32.plan")
    assert res.returncode == 2, (res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expect in lines[0], res.stderr


def test_cpp_follows_the_bundles_recommendation(infer_bin, r18_bundle, images_dir, tmp_path):
    """Without --precision the loader runs what bench recorded as fastest for ONNX Runtime on the CPU."""
    b = tmp_path / "b"
    shutil.copytree(r18_bundle, b)
    manifest = json.loads((b / "manifest.json").read_text())
    pick = {"backend": "onnxruntime", "precision": "fp32", "artifact": "model.onnx", "batch": 1}
    manifest["recommended"] = {"cpu": {"latency": {**pick, "by_backend": {"onnxruntime": pick}}}}
    (b / "manifest.json").write_text(json.dumps(manifest))
    res = run_infer(infer_bin, b, images_dir / "astronaut.png", "--runs", "1")
    assert res.returncode == 0, res.stderr
    assert "model.onnx, recommended by resnet-deploy bench" in res.stderr
    assert re.search(r"^model\s+model\.onnx ", res.stdout, re.M), res.stdout
    res = run_infer(infer_bin, r18_bundle, images_dir / "astronaut.png", "--runs", "1")  # no recommendation: fp32
    assert res.returncode == 0 and "recommended" not in res.stderr
    assert re.search(r"^model\s+model\.onnxruntime\.onnx ", res.stdout, re.M), res.stdout
