"""PyTorch side of bench/bench.lua: one measurement in a fresh process.

Usage: bench_torch.py NET MODE BATCH STEPS THREADS
  NET: convnet | resnet32; MODE: train | eval
Prints "IMAGES_PER_SECOND PEAK_RSS_MIB TORCH_VERSION" on one line.
The networks are the same as cbnet.models': the seed CNN (conv3x3 32 + BN +
ReLU + maxpool, conv3x3 64 + BN + ReLU + maxpool, linear) and the CIFAR
ResNet-32 (option-A shortcuts, 16/32/64 channels); SGD with momentum 0.9 and
weight decay 5e-4; random 3x32x32 inputs.
"""
import resource
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class BasicBlock(nn.Module):
    def __init__(self, in_planes, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.stride, self.extra = stride, planes - in_planes

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x
        if self.stride != 1 or self.extra:  # option A: subsample, zero channels
            shortcut = x[:, :, ::self.stride, ::self.stride]
            half = self.extra // 2
            shortcut = F.pad(shortcut, (0, 0, 0, 0, half, self.extra - half))
        return F.relu(out + shortcut)


class ResNet32(nn.Module):
    """Parameter names as cbnet.models.resnet32's after
    checkpoint.to_torch_names: conv1, bn1, layer1..3.<block>, linear."""

    def __init__(self, classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        planes = 16
        for stage, width in enumerate([16, 32, 64]):
            blocks = []
            for b in range(5):
                blocks.append(BasicBlock(planes, width, 2 if b == 0 and stage > 0 else 1))
                planes = width
            self.add_module(f"layer{stage + 1}", nn.Sequential(*blocks))
        self.linear = nn.Linear(64, classes)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return self.linear(F.adaptive_avg_pool2d(out, 1).flatten(1))


def convnet():
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(4096, 10))


def main():
    net_name, mode = sys.argv[1], sys.argv[2]
    batch, steps, threads = (int(a) for a in sys.argv[3:6])
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = ResNet32() if net_name == "resnet32" else convnet()
    x, y = torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,))
    if mode == "train":
        opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)

        def step():
            opt.zero_grad()
            F.cross_entropy(net(x), y).backward()
            opt.step()
    else:
        net.eval()

        def step():
            with torch.no_grad():
                net(x).argmax(1)
    for _ in range(3):
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    rate = steps * batch / (time.perf_counter() - t0)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{rate:.1f} {peak_mib:.0f} {torch.__version__}")


if __name__ == "__main__":
    main()
