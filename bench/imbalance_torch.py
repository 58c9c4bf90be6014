"""experiments/imbalance.lua's sweep in PyTorch (Debian's python3-torch), on
the same long-tailed images, for the README's end-to-end wall time. Not a test.

    build/bin/cbnet run bench/export_lt.lua /tmp/lt100.safetensors --data ../shared/data/cifar10-jpg
    /usr/bin/python3 bench/imbalance_torch.py /tmp/lt100.safetensors
        [--epochs 10] [--betas 0.9999,0.9,0.5,0.1] [--gamma 1] [--threads 2] [--seed 0]

The recipe, as imbalance.lua's defaults: the seed study's CNN (widths 32, 64),
SGD lr 1e-3, momentum 0.9, weight decay 5e-4 on the weights only (not on
biases and batch-norm parameters), batch 64, pad-4 crop + flip, 10 epochs;
one run with cross-entropy, then one per beta with the class-balanced focal
loss in the sigmoid form of Cui et al.'s code (last bias started at
-log(C - 1)); the test set evaluated after every epoch. Prints each run's best
test accuracy and its per-class accuracy there, then the wall time of the
whole sweep, loading included (export_lt.lua's long-tailed draw is
imbalance.lua's: exp profile, imbalance 100, seed 0)."""
import argparse
import math
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from convnet_torch import batch  # the same crop, flip and normalisation
from fast_lt_torch import setup, test_accuracy


def convnet(w1, w2, classes=10):
    return nn.Sequential(
        nn.Conv2d(3, w1, 3, padding=1), nn.BatchNorm2d(w1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(w1, w2, 3, padding=1), nn.BatchNorm2d(w2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(w2 * 8 * 8, classes))


def cb_weights(counts, beta):
    """(1 - beta) / (1 - beta^n_c), normalised to sum to the number of classes."""
    raw = (1 - beta) / (1 - np.power(beta, counts))
    return torch.tensor(raw / raw.sum() * len(counts), dtype=torch.float32)


def cb_focal(logits, labels, weights, gamma):
    """The class-balanced sigmoid focal loss of Cui et al.'s code (cbnet.loss.class_balanced)."""
    z = F.one_hot(labels, logits.shape[1]).float()
    per = F.binary_cross_entropy_with_logits(logits, z, reduction="none")
    if gamma:
        per = per * torch.exp(-gamma * z * logits - gamma * F.softplus(-logits))
    return (per * weights[labels].view(-1, 1)).sum() / logits.shape[0]


def train_run(a, rng, xtr, ytr, xte, yte, weights):
    net = convnet(*(int(v) for v in a.widths.split(",")))
    if weights is not None:
        with torch.no_grad():
            net[-1].bias.fill_(-math.log(10 - 1))
    decay = [p for p in net.parameters() if p.dim() >= 2]
    no_decay = [p for p in net.parameters() if p.dim() < 2]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": a.wd}, {"params": no_decay, "weight_decay": 0}],
                          lr=a.lr, momentum=a.momentum)
    best = (-1.0, 0, None)
    for epoch in range(1, a.epochs + 1):
        net.train()
        order = rng.permutation(len(xtr))
        for start in range(0, len(order), a.batch_size):
            idx = order[start:start + a.batch_size]
            logits = net(batch(xtr[idx], rng, True))
            labels = ytr[idx]
            loss = F.cross_entropy(logits, labels) if weights is None else cb_focal(logits, labels, weights, a.gamma)
            opt.zero_grad()
            loss.backward()
            opt.step()
        acc, per_class = test_accuracy(net, xte, yte, flip=False)
        if acc > best[0]:
            best = (acc, epoch, per_class)
    return best


def main():
    p = argparse.ArgumentParser()
    p.add_argument("data")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--wd", type=float, default=5e-4)
    p.add_argument("--betas", default="0.9999,0.9,0.5,0.1")
    p.add_argument("--gamma", type=float, default=1.0)
    p.add_argument("--widths", default="32,64")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    start = time.time()
    rng, xtr, ytr, xte, yte, counts = setup(a)
    runs = [("CE", None)] + [(f"CB focal beta={b}", cb_weights(counts, float(b))) for b in a.betas.split(",")]
    for label, weights in runs:
        t0 = time.time()
        acc, epoch, per_class = train_run(a, rng, xtr, ytr, xte, yte, weights)
        print(f"{label}: best accuracy {acc:.4f} (epoch {epoch} of {a.epochs}, {time.time() - t0:.0f} s); per class "
              + " ".join(f"{v:.2f}" for v in per_class), flush=True)
    print(f"total wall time {time.time() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
