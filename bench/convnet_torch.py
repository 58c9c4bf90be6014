"""An independent implementation of experiments/convnet.lua's recipe in
PyTorch (Debian's python3-torch), to compare accuracies, not a test.

Usage: /usr/bin/python3 bench/convnet_torch.py [--data ROOT] [--epochs 10]
       [--batch-size 64] [--lr 1e-3] [--momentum 0.9] [--optimizer sgd|adam]
       [--schedule none|cosine] [--widths 32,64] [--no-augment] [--threads 2]
       [--seed 0]
cbnet's defaults (experiments/convnet.lua) are --optimizer adam --schedule
cosine --widths 64,128. The last line gives the wall time of the whole run,
loading and evaluation included, for the README's end-to-end figure.
ROOT holds train/<class>/*.jpg and test/<class>/*.jpg (the CIFAR-10 copy in
../shared/data/cifar10-jpg by default). Prints test accuracy per epoch."""
import argparse
import os
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

MEAN = np.array([0.4914, 0.4822, 0.4465], dtype=np.float32).reshape(1, 3, 1, 1)
STD = np.array([0.2470, 0.2435, 0.2616], dtype=np.float32).reshape(1, 3, 1, 1)


def load(root):
    classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    images, labels = [], []
    for label, name in enumerate(classes):
        folder = os.path.join(root, name)
        for file in sorted(os.listdir(folder)):
            with Image.open(os.path.join(folder, file)) as img:
                images.append(np.asarray(img.convert("RGB"), dtype=np.uint8).transpose(2, 0, 1))
            labels.append(label)
    return np.stack(images), np.array(labels, dtype=np.int64)


def batch(images, rng, augment):
    x = images.astype(np.float32) / 255.0
    if augment:  # pad-4 random crop, then a random horizontal flip, per image
        n, c, h, w = x.shape
        padded = np.zeros((n, c, h + 8, w + 8), dtype=np.float32)
        padded[:, :, 4:4 + h, 4:4 + w] = x
        out = np.empty_like(x)
        for i in range(n):
            dy, dx = rng.integers(0, 9, size=2)
            crop = padded[i, :, dy:dy + h, dx:dx + w]
            out[i] = crop[:, :, ::-1] if rng.integers(0, 2) else crop
        x = out
    return torch.from_numpy((x - MEAN) / STD)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", default="../shared/data/cifar10-jpg")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--optimizer", default="sgd")
    p.add_argument("--schedule", default="none")
    p.add_argument("--widths", default="32,64")
    p.add_argument("--no-augment", action="store_true")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    run_start = time.time()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    rng = np.random.default_rng(a.seed)
    w1, w2 = (int(v) for v in a.widths.split(","))
    xtr, ytr = load(os.path.join(a.data, "train"))
    xte, yte = load(os.path.join(a.data, "test"))
    net = nn.Sequential(
        nn.Conv2d(3, w1, 3, padding=1), nn.BatchNorm2d(w1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(w1, w2, 3, padding=1), nn.BatchNorm2d(w2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(w2 * 8 * 8, 10))
    if a.optimizer == "adam":
        opt = torch.optim.Adam(net.parameters(), lr=a.lr)
    else:
        opt = torch.optim.SGD(net.parameters(), lr=a.lr, momentum=a.momentum)
    # cosine to 0 over the epochs, stepped per epoch as cbnet's CosineLR
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, a.epochs) if a.schedule == "cosine" else None
    xte_t = batch(xte, rng, False)
    for epoch in range(1, a.epochs + 1):
        t0 = time.time()
        net.train()
        order = rng.permutation(len(xtr))
        for start in range(0, len(order), a.batch_size):
            idx = order[start:start + a.batch_size]
            loss = F.cross_entropy(net(batch(xtr[idx], rng, not a.no_augment)), torch.from_numpy(ytr[idx]))
            opt.zero_grad()
            loss.backward()
            opt.step()
        net.eval()
        with torch.no_grad():
            pred = torch.cat([net(xte_t[i:i + 500]).argmax(1) for i in range(0, len(xte_t), 500)])
        acc = (pred.numpy() == yte).mean()
        print(f"epoch {epoch:2d}  test acc {acc:.4f}  ({time.time() - t0:.0f} s)", flush=True)
        if schedule:
            schedule.step()
    print(f"total wall time {time.time() - run_start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
