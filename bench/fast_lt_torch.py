"""experiments/fast_lt.lua's recipe in PyTorch, on the same images, to compare
time and accuracy on the same machine (issue 13). Not a test.

    build/bin/cbnet run bench/export_lt.lua /tmp/lt100.safetensors --data ../shared/data/cifar10-jpg
    /usr/bin/python3 bench/fast_lt_torch.py /tmp/lt100.safetensors [--epochs 64]
        [--widths 64,128,256] [--seed 0] [--threads 2]
        [--trivial-augment] [--posthoc D] [--tta-translate]
    the hour's recipe (fast_lt.lua --budget 60):
        --epochs 90 --ema 0.998 --trivial-augment --posthoc 0.25 --tta-translate

The recipe, as fast_lt.lua's defaults: fastnet (3x3 stem, per width conv ->
max-pool -> BN+ReLU -> conv -> BN+ReLU, global max pool, bias-free linear,
logits / 8), balanced softmax with label smoothing 0.1 spread as the training
prior, SGD lr 0.2 Nesterov
momentum 0.9, weight decay 5e-4 on weights (not on BN parameters), batch 128,
cosine schedule per epoch after 2 epochs of linear warm-up, pad-4 crop + flip +
cutout 8, EMA of weights and BN statistics (decay 0.999) evaluated with
left-right flip test-time augmentation, the test set once at the end. Prints
the test accuracy and the wall time of the whole run (loading included).
--trivial-augment: torchvision's TrivialAugmentWide on each uint8 image before
the crop (cbnet's is checked against it op by op: bench/parity_augment.py);
--posthoc D: predictions from logits - D log prior; --tta-translate: cbnet's
experiment.translate_tta (half the flip average, a quarter each of the images
moved one pixel down-right and up-left, zeros coming in)."""
import argparse
import json
import math
import struct
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from convnet_torch import MEAN, STD, batch  # the same crop, flip and normalisation

DTYPES = {"U8": np.uint8, "I64": np.int64, "F32": np.float32}


def read_safetensors(path):
    with open(path, "rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(size))
        blob = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        out[name] = np.frombuffer(blob[start:end], dtype=DTYPES[info["dtype"]]).reshape(info["shape"])
    return out, header.get("__metadata__", {})


def fastnet(widths, classes=10, stem=None):
    stem = stem or widths[0] // 2
    layers = [nn.Conv2d(3, stem, 3, padding=1, bias=False), nn.BatchNorm2d(stem), nn.ReLU()]
    planes = stem
    for w in widths:
        layers += [nn.Conv2d(planes, w, 3, padding=1, bias=False), nn.MaxPool2d(2), nn.BatchNorm2d(w), nn.ReLU(),
                   nn.Conv2d(w, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU()]
        planes = w
    body = nn.Sequential(*layers)
    head = nn.Linear(planes, classes, bias=False)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers, self.linear = body, head

        def forward(self, x):
            f = self.layers(x)
            return self.linear(F.max_pool2d(f, f.shape[-1]).flatten(1)) / 8

    return Net()


def setup(a):
    """Threads and seeds from the arguments, then the exported images:
    (numpy generator, train images, train labels (torch), test images, test
    labels, per-class training counts)."""
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    t, _ = read_safetensors(a.data)
    counts = np.bincount(t["train_labels"], minlength=10).astype(np.float64)
    return (np.random.default_rng(a.seed), t["train_images"], torch.from_numpy(t["train_labels"].astype(np.int64)),
            t["test_images"], t["test_labels"], counts)


def moved(x, dy, dx):
    """x (N x C x H x W) moved dy rows down and dx columns right, zeros coming in."""
    out = torch.zeros_like(x)
    h, w = x.shape[2], x.shape[3]
    out[:, :, max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = x[:, :, max(-dy, 0):h - max(dy, 0),
                                                                       max(-dx, 0):w - max(dx, 0)]
    return out


def test_accuracy(net, images, labels, flip, translate=False, shift=None):
    """Accuracy and per-class accuracy of net (in eval mode) on uint8 images,
    with left-right flip test-time augmentation when flip, the translated
    views too when translate, predictions from logits - shift when given."""
    net.eval()
    correct = np.zeros(10)

    def flipped(x):
        return (net(x) + net(torch.flip(x, dims=[3]))) / 2 if flip else net(x)

    with torch.no_grad():
        for s in range(0, len(images), 256):
            x = torch.from_numpy((images[s:s + 256].astype(np.float32) / 255.0 - MEAN) / STD)
            logits = flipped(x)
            if translate:
                logits = logits * 0.5 + flipped(moved(x, 1, 1)) * 0.25 + flipped(moved(x, -1, -1)) * 0.25
            if shift is not None:
                logits = logits - shift
            pred = logits.argmax(1).numpy()
            for c in range(10):
                correct[c] += np.sum((pred == c) & (labels[s:s + 256] == c))
    return correct.sum() / len(labels), correct / np.bincount(labels, minlength=10)


def augment(images, rng, cutout, trivial=None):
    """convnet_torch's pad-4 crop and flip, normalised; then cutout to 0 in the
    normalised image (the mean colour), as cbnet's augment does. trivial: an
    operation on one uint8 C x H x W tensor applied first (TrivialAugmentWide)."""
    if trivial is not None:
        images = np.stack([trivial(torch.from_numpy(np.array(im))).numpy() for im in images])
    x = batch(images, rng, True)
    n, _, h, w = x.shape
    for i in range(n if cutout else 0):
        cy, cx = rng.integers(0, h), rng.integers(0, w)
        y0, x0 = max(cy - cutout // 2, 0), max(cx - cutout // 2, 0)
        x[i, :, y0:cy - cutout // 2 + cutout, x0:cx - cutout // 2 + cutout] = 0
    return x


def main():
    p = argparse.ArgumentParser()
    p.add_argument("data")
    p.add_argument("--epochs", type=int, default=64)
    p.add_argument("--widths", default="64,128,256")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.2)
    p.add_argument("--wd", type=float, default=5e-4)
    p.add_argument("--smoothing", type=float, default=0.1)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--cutout", type=int, default=8)
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--trivial-augment", action="store_true")
    p.add_argument("--posthoc", type=float, default=0.0)
    p.add_argument("--tta-translate", action="store_true")
    a = p.parse_args()
    start = time.time()
    rng, xtr, ytr, xte, yte, counts = setup(a)
    trivial = None
    if a.trivial_augment:
        import torchvision.transforms as T
        trivial = T.TrivialAugmentWide()
    prior = torch.tensor(counts / counts.sum(), dtype=torch.float32)
    log_prior = prior.log()
    net = fastnet([int(w) for w in a.widths.split(",")])
    decay = [p for p in net.parameters() if p.dim() >= 2]
    no_decay = [p for p in net.parameters() if p.dim() < 2]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": a.wd}, {"params": no_decay, "weight_decay": 0}],
                          lr=a.lr, momentum=0.9, nesterov=True)
    ema = {k: v.detach().clone() for k, v in net.state_dict().items()}
    n = len(xtr)
    for epoch in range(a.epochs):
        if epoch < a.warmup:
            factor = (epoch + 1) / a.warmup
        else:
            span = max(a.epochs - a.warmup, 1)
            factor = (1 + math.cos(math.pi * min(epoch - a.warmup, span) / span)) / 2
        for g in opt.param_groups:
            g["lr"] = a.lr * factor
        t0 = time.time()
        perm = rng.permutation(n)
        net.train()
        for s in range(0, n, a.batch_size):
            idx = perm[s:s + a.batch_size]
            x, y = augment(xtr[idx], rng, a.cutout, trivial), ytr[idx]
            adjusted = net(x) + log_prior
            # label smoothing spread as the training prior (cbnet's smoothing_prior)
            spread = -(F.log_softmax(adjusted, 1) * prior).sum(1).mean()
            loss = (1 - a.smoothing) * F.cross_entropy(adjusted, y) + a.smoothing * spread
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                for k, v in net.state_dict().items():
                    if v.dtype.is_floating_point:
                        ema[k].mul_(a.ema).add_(v, alpha=1 - a.ema)
                    else:
                        ema[k].copy_(v)
        print(f"epoch {epoch + 1}/{a.epochs} loss {loss.item():.4f} ({n / (time.time() - t0):.0f} img/s)", flush=True)
    net.load_state_dict(ema)
    accuracy, per_class = test_accuracy(net, xte, yte, flip=True, translate=a.tta_translate,
                                        shift=a.posthoc * log_prior if a.posthoc else None)
    print("per class:", " ".join(f"{v:.3f}" for v in per_class))
    print(f"test accuracy {accuracy:.4f}; wall {time.time() - start:.1f} s "
          f"(torch {torch.__version__}, {a.threads} threads)")


if __name__ == "__main__":
    main()
