"""experiments/cifar_lt.lua's protocol (LDAM-DRW, Cao et al. 2019) in PyTorch,
on the same long-tailed images, to tell a shortened schedule's distance from
the published figures apart from anything cbnet does (issue 10). Not a test.

    build/bin/cbnet run bench/export_lt.lua /tmp/lt100.safetensors --data ../shared/data/cifar10-jpg
    /usr/bin/python3 bench/cifar_lt_torch.py /tmp/lt100.safetensors --method ce --epochs 30
        [--method ce|ce-drw|ldam|ldam-drw|balanced-softmax] [--seed 0] [--threads 2] [--eval-every 5]
        [--checkpoint FILE]  (saved after every epoch; a run given an existing one continues from it)

The protocol, as cifar_lt.lua's defaults and LDAM-DRW's code: ResNet-32 with
option-A shortcuts and Kaiming-normal weights (the cosine classifier for LDAM),
SGD lr 0.1, momentum 0.9, weight decay 2e-4 on every parameter, batch 128,
linear warm-up over 5/200 of the epochs, lr x0.01 at 160/200 and x0.0001 at
180/200 of them (per epoch), class-balanced re-weighting (beta 0.9999) from the
epoch 160/200 on for the -drw methods, pad-4 crop + flip. Prints the test accuracy
every --eval-every epochs and at the end, per class at the end."""
import argparse
import math
import os
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from bench_torch import ResNet32
from convnet_torch import batch  # the same crop, flip and normalisation
from fast_lt_torch import setup, test_accuracy


class NormedLinear(nn.Module):
    def __init__(self, n_in, n_out):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_in, n_out).uniform_(-1, 1).renorm_(2, 1, 1e-5).mul_(1e5))

    def forward(self, x):
        return F.normalize(x, dim=1).mm(F.normalize(self.weight, dim=0))


def resnet32(normed):
    """bench_torch's ResNet-32 (option A) with LDAM-DRW's initialisation:
    Kaiming-normal convolutions and linear layer, or the cosine classifier."""
    net = ResNet32()
    if normed:
        net.linear = NormedLinear(64, 10)
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight)
    return net


def main():
    p = argparse.ArgumentParser()
    p.add_argument("data")
    p.add_argument("--method", default="ce", choices=["ce", "ce-drw", "ldam", "ldam-drw", "balanced-softmax"])
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--eval-every", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint", help="file saved after every epoch; continued from when it exists")
    a = p.parse_args()
    start = time.time()
    rng, xtr, ytr, xte, yte, counts = setup(a)
    # cbnet.longtail.schedule: milestones at 160/200 and 180/200, warm-up 5/200, DRW from the first
    first, second = math.floor(a.epochs * 160 / 200 + 0.5), math.floor(a.epochs * 180 / 200 + 0.5)
    warmup = max(1, math.floor(a.epochs * 5 / 200 + 0.5))
    effective = 1 - np.power(0.9999, counts)
    cb = (1 - 0.9999) / effective
    cb = torch.tensor(cb / cb.sum() * len(counts), dtype=torch.float32)
    margins = 1 / np.sqrt(np.sqrt(counts))
    margins = torch.tensor(margins * 0.5 / margins.max(), dtype=torch.float32)
    log_prior = torch.tensor(np.log(counts / counts.sum()), dtype=torch.float32)

    def loss_fn(logits, y, epoch):
        weight = cb if a.method.endswith("-drw") and epoch >= first else None
        if a.method.startswith("ldam"):
            onehot = F.one_hot(y, logits.shape[1]).bool()
            return F.cross_entropy(30 * torch.where(onehot, logits - margins[y].view(-1, 1), logits), y, weight=weight)
        if a.method == "balanced-softmax":
            return F.cross_entropy(logits + log_prior, y)
        return F.cross_entropy(logits, y, weight=weight)

    net = resnet32(normed=a.method.startswith("ldam"))
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=2e-4)

    n, begin = len(xtr), 0
    if a.checkpoint and os.path.exists(a.checkpoint):
        state = torch.load(a.checkpoint)
        if (state["method"], state["epochs"], state["seed"]) != (a.method, a.epochs, a.seed):
            raise SystemExit(f"{a.checkpoint} is of another run: {state['method']}, {state['epochs']} epochs, seed {state['seed']}")
        net.load_state_dict(state["net"])
        opt.load_state_dict(state["opt"])
        rng.bit_generator.state = state["rng"]
        torch.set_rng_state(state["torch_rng"])
        begin = state["epoch"]
        print(f"continuing from {a.checkpoint} after epoch {begin}", flush=True)
    for epoch in range(begin, a.epochs):
        factor = (epoch + 1) / warmup if epoch < warmup else 0.01 ** ((epoch >= first) + (epoch >= second))
        for g in opt.param_groups:
            g["lr"] = 0.1 * factor
        t0 = time.time()
        perm = rng.permutation(n)
        net.train()
        for s in range(0, n, 128):
            idx = perm[s:s + 128]
            x, y = batch(xtr[idx], rng, True), ytr[idx]
            loss = loss_fn(net(x), y, epoch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        line = f"epoch {epoch + 1}/{a.epochs} loss {loss.item():.4f} ({n / (time.time() - t0):.0f} img/s)"
        if (epoch + 1) % a.eval_every == 0 or epoch + 1 == a.epochs:
            line += f" test acc {test_accuracy(net, xte, yte, flip=False)[0]:.4f}"
        print(line, flush=True)
        if a.checkpoint:  # atomic: a run killed while saving keeps the previous epoch's file
            torch.save({"method": a.method, "epochs": a.epochs, "seed": a.seed, "epoch": epoch + 1,
                        "net": net.state_dict(), "opt": opt.state_dict(), "rng": rng.bit_generator.state,
                        "torch_rng": torch.get_rng_state()}, a.checkpoint + ".tmp")
            os.replace(a.checkpoint + ".tmp", a.checkpoint)
    acc, per_class = test_accuracy(net, xte, yte, flip=False)
    print("per class:", " ".join(f"{v:.3f}" for v in per_class))
    print(f"{a.method}: test accuracy {acc:.4f} at the last epoch; wall {time.time() - start:.1f} s "
          f"(torch {torch.__version__}, {a.threads} threads)")


if __name__ == "__main__":
    main()
