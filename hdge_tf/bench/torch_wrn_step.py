#!/usr/bin/env python3
"""A PyTorch yardstick for hdge-bench: the training-step time of the JEM/HDGE-layout
Wide-ResNet (pre-activation, no normalization, leaky ReLU 0.2, biased convs, the
stride on each group's first block's SECOND conv, 1x1 strided shortcut) in PyTorch
on this CPU, so a Keras step can be compared with it in the same run.

    pip install torch numpy          # in a scratch venv, not the project's
    python torch_wrn_step.py --depth=16 --width=4 --batch=64 --threads=2 [--sgld=20]

Prints one JSON line: median CE step seconds (forward, backward, Adam), and with
--sgld N the median time of N SGLD steps (forward + input gradient, no weight grads).
"""

import argparse
import json
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=stride, padding=1)
        self.short = (
            nn.Conv2d(cin, cout, 1, stride=stride)
            if (stride != 1 or cin != cout)
            else None
        )

    def forward(self, x):
        out = self.conv1(F.leaky_relu(x, 0.2))
        out = self.conv2(F.leaky_relu(out, 0.2))
        return out + (self.short(x) if self.short is not None else x)


class WRN(nn.Module):
    def __init__(self, depth, width, classes, channels):
        super().__init__()
        n = (depth - 4) // 6
        widths = [16, 16 * width, 32 * width, 64 * width]
        self.stem = nn.Conv2d(channels, widths[0], 3, padding=1)
        layers, cin = [], widths[0]
        for g, stride in zip(range(3), (1, 2, 2), strict=True):
            for i in range(n):
                layers.append(Block(cin, widths[g + 1], stride if i == 0 else 1))
                cin = widths[g + 1]
        self.blocks = nn.Sequential(*layers)
        self.head = nn.Linear(cin, classes)

    def forward(self, x):
        x = F.leaky_relu(self.blocks(self.stem(x)), 0.2)
        return self.head(F.adaptive_avg_pool2d(x, 1).flatten(1))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--depth", type=int, default=16)
    p.add_argument("--width", type=int, default=4)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--channels", type=int, default=3)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--sgld", type=int, default=0, help="also time N SGLD steps")
    a = p.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(a.threads)
    net = WRN(a.depth, a.width, a.classes, a.channels)
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    x = torch.empty(a.batch, a.channels, a.size, a.size).uniform_(-1, 1)
    y = torch.randint(0, a.classes, (a.batch,))
    ce = []
    for i in range(a.warmup + a.repeats):
        t = time.perf_counter()
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i >= a.warmup:
            ce.append(time.perf_counter() - t)
    out = {
        "depth": a.depth,
        "width": a.width,
        "batch": a.batch,
        "threads": a.threads,
        "ce_step_s": round(statistics.median(ce), 4),
        "torch": torch.__version__,
    }
    if a.sgld:
        sg = []
        for i in range(2 + max(3, a.repeats // 3)):
            xs = torch.empty_like(x).uniform_(-1, 1)
            t = time.perf_counter()
            for _ in range(a.sgld):
                xs.requires_grad_(True)
                g = torch.autograd.grad(net(xs).logsumexp(1).sum(), [xs])[0]
                xs = (xs + g + 0.01 * torch.randn_like(xs)).detach()
            if i >= 2:
                sg.append(time.perf_counter() - t)
        out["sgld_steps"] = a.sgld
        out["sgld_chain_s"] = round(statistics.median(sg), 4)
        out["sgld_chain_in_ce_steps"] = round(out["sgld_chain_s"] / out["ce_step_s"], 2)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
