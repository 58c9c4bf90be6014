"""Parity of cbnet's image operations (TrivialAugment's vocabulary,
data.image_op) with torchvision.transforms.functional on the same uint8
images, with the calls torchvision's TrivialAugmentWide makes. Not a test.

    /usr/bin/python3 bench/parity_augment.py [--cbnet build/bin/cbnet]
(needs torchvision: Debian's python3-torchvision). For each operation and
magnitude prints the share of pixels that differ and the largest difference;
exit status 1 if a photometric operation differs in more than 0.5 % of its
pixels or by more than 1 anywhere, or a geometric one anywhere but at exact
ties of nearest-neighbour sampling (a source exactly half-way between pixels:
torch's float32 grid rounds those by its arithmetic's noise)."""
import argparse
import math
import os
import subprocess
import sys
import tempfile

import torch
import torchvision.transforms.functional as TF
from torchvision.transforms import InterpolationMode

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fast_lt_torch import read_safetensors  # noqa: E402

NEAREST = InterpolationMode.NEAREST


def torchvision_op(img, name, m):
    """torchvision 0.14's autoaugment._apply_op."""
    if name == "shear_x":
        return TF.affine(img, angle=0.0, translate=[0, 0], scale=1.0, shear=[math.degrees(math.atan(m)), 0.0],
                         interpolation=NEAREST, fill=None, center=[0, 0])
    if name == "shear_y":
        return TF.affine(img, angle=0.0, translate=[0, 0], scale=1.0, shear=[0.0, math.degrees(math.atan(m))],
                         interpolation=NEAREST, fill=None, center=[0, 0])
    if name == "translate_x":
        return TF.affine(img, angle=0.0, translate=[int(m), 0], scale=1.0, interpolation=NEAREST,
                         shear=[0.0, 0.0], fill=None)
    if name == "translate_y":
        return TF.affine(img, angle=0.0, translate=[0, int(m)], scale=1.0, interpolation=NEAREST,
                         shear=[0.0, 0.0], fill=None)
    if name == "rotate":
        return TF.rotate(img, m, interpolation=NEAREST, fill=None)
    if name == "brightness":
        return TF.adjust_brightness(img, 1.0 + m)
    if name == "color":
        return TF.adjust_saturation(img, 1.0 + m)
    if name == "contrast":
        return TF.adjust_contrast(img, 1.0 + m)
    if name == "sharpness":
        return TF.adjust_sharpness(img, 1.0 + m)
    if name == "posterize":
        return TF.posterize(img, int(m))
    if name == "solarize":
        return TF.solarize(img, m)
    if name == "autocontrast":
        return TF.autocontrast(img)
    if name == "equalize":
        return TF.equalize(img)
    raise ValueError(name)


def source(name, m, x, y, h, w):
    """The source coordinates of output pixel (x, y) that cbnet's geometric
    operations compute (core/data/image_ops.c), in double precision."""
    if name == "shear_x":
        return x + m * (y + 0.5), y
    if name == "shear_y":
        return x, y + m * (x + 0.5)
    if name == "rotate":
        t = math.radians(m)
        dx, dy = x - (w - 1) / 2, y - (h - 1) / 2
        return math.cos(t) * dx - math.sin(t) * dy + (w - 1) / 2, math.sin(t) * dx + math.cos(t) * dy + (h - 1) / 2
    return None  # translations: integers


def at_tie(name, m, x, y, h, w):
    """Whether nearest-neighbour sampling of pixel (x, y) is a tie: a source
    coordinate exactly half-way between two pixels, where torch's float32 grid
    and cbnet's double arithmetic may round either way."""
    src = source(name, m, x, y, h, w)
    return src is not None and any(abs(c - math.floor(c) - 0.5) < 1e-9 for c in src)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--cbnet", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "build", "bin", "cbnet"))
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "ops.safetensors")
        here = os.path.dirname(os.path.abspath(__file__))
        subprocess.run([a.cbnet, "run", os.path.join(here, "parity_augment.lua"), path], check=True)
        t, _ = read_safetensors(path)
    images = torch.from_numpy(t.pop("images").copy())
    worst, failed = {}, []
    for key in sorted(t):
        name, m = key.split(" ")
        ours = torch.from_numpy(t[key].copy()).int()
        theirs = torch.stack([torchvision_op(img, name, float(m)) for img in images]).int()
        diff = (ours - theirs).abs()
        share, largest = (diff > 0).float().mean().item(), diff.max().item()
        note = ""
        if source(name, float(m), 0, 0, 32, 32) is not None and largest > 0:
            # a geometric operation may differ only where the source is an exact tie
            h, w = images.shape[-2:]
            spots = (diff > 0).any(1).nonzero().tolist()
            ties = sum(at_tie(name, float(m), x, y, h, w) for _, y, x in spots)
            note = f"  ({ties} of {len(spots)} differing positions at exact ties)"
            if ties < len(spots):
                failed.append(key)
        elif share > 0.005 or largest > 1:
            failed.append(key)
        print(f"{key:32s} differing pixels {100 * share:6.2f} %  largest difference {largest}{note}")
        worst[name] = max(worst.get(name, 0), share)
    print("worst share of differing pixels per operation:",
          ", ".join(f"{n} {100 * s:.2f} %" for n, s in sorted(worst.items())))
    if failed:
        print("FAILED:", ", ".join(failed))
        sys.exit(1)


if __name__ == "__main__":
    main()
