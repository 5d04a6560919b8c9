"""Make a calibration set for the benchmarks: N random crops/flips of the repository photos, as a float32 .npz.

The repository holds only a handful of real photos (tests/data/images). The benchmarks that time calibration
or compare INT8 toolchains need a few hundred samples; this makes them reproducibly from those photos:
each sample is a random-resized crop (scale 0.25-1.0 of the shorter side, random position) of one photo,
flipped left-right with probability 1/2, resized to the model's input size and normalized with ImageNet
mean/std, NCHW. The photos' variety is small, so the set is good for timing and for comparing quantizers on
the same data, not for claiming ImageNet accuracy.

    python benchmarks/make_calib.py /tmp/calib512.npz --count 512            # 224x224
    python benchmarks/make_calib.py /tmp/calib64.npz --count 64 --size 64
    python benchmarks/make_calib.py calib.npz --count 128 --size 64 --force   # replace calib.npz (the README)
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

REPO_IMAGES = Path(__file__).resolve().parents[1] / "tests" / "data" / "images"
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def make(count: int, size: int, seed: int = 0, root: Path = REPO_IMAGES) -> np.ndarray:
    paths = sorted(p for p in root.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp"))
    photos = [Image.open(p).convert("RGB") for p in paths]
    rng = np.random.default_rng(seed)
    out = np.empty((count, 3, size, size), np.float32)
    for i in range(count):
        img = photos[i % len(photos)]
        w, h = img.size
        side = int(min(w, h) * rng.uniform(0.25, 1.0))
        x, y = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
        crop = img.crop((x, y, x + side, y + side)).resize((size, size), Image.BILINEAR)
        if rng.random() < 0.5:
            crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
        arr = (np.asarray(crop, np.float32) / 255.0 - MEAN) / STD
        out[i] = arr.transpose(2, 0, 1)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path, help="the .npz to write (key 'x')")
    p.add_argument("--count", type=int, default=300)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="replace an existing OUT")
    a = p.parse_args(argv)
    if a.out.exists() and not a.force:
        raise SystemExit(f"error: {a.out} exists: pass --force to replace it")
    x = make(a.count, a.size, a.seed)
    np.savez(a.out, x=x)
    print(f"{a.out}: {x.shape[0]} samples {tuple(x.shape[1:])}, float32, {x.nbytes / 2**20:.0f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
