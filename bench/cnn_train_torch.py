"""PyTorch side of bench/cnn_train.lua: the same CNN, optimizer and batch.
Usage: cnn_train_torch.py BATCH STEPS REPEATS THREADS; prints images/s."""
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

batch, steps, repeats, threads = (int(a) for a in sys.argv[1:5])
torch.set_num_threads(threads)  # PyTorch defaults to one thread on these machines
torch.manual_seed(0)
net = nn.Sequential(
    nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
    nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
    nn.Flatten(), nn.Linear(4096, 10))
opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
x, y = torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,))


def step():
    loss = F.cross_entropy(net(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()


for _ in range(3):
    step()
rates = []
for _ in range(repeats):
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    rates.append(steps * batch / (time.perf_counter() - t0))
rates.sort()
print(rates[(repeats - 1) // 2])
