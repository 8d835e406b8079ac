"""Spiking max pooling on CIFAR-10: train a small VGG-style CNN with max pooling, convert it (the pools become
spiking max pooling), simulate exactly, and report the conversion loss (ANN minus SNN accuracy) per T.

    python -m benchmarks.cifar10_maxpool --data-dir DATA [--epochs 6] [--images 1000] [--T 8 16 32 64]
        [--out benchmarks/results/cifar10_maxpool.json]

Network: conv 32-32, max pool 2, conv 64-64, max pool 2, conv 128, max pool 2, linear (ReLU, BatchNorm). Trained
with SGD (lr 0.05 one-cycle, nesterov, wd 5e-4, random translation + flip) on the device the machine has.
Thresholds: max norm and 99.99th percentile of 2,000 training images. SNN accuracy on a random --images of the
test set with the exact torch backend (the engine's semantics; identical counters to the numba engine).
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch
from torch import nn

from spikeforge import simulator
from spikeforge.converter import convert
from spikeforge.simulator.atomic import write_text

from .cifar10 import ann_accuracy, load_tensors, train


def vgg_maxpool():
    def block(cin, cout):
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

    return nn.Sequential(*block(3, 32), *block(32, 32), nn.MaxPool2d(2), *block(32, 64), *block(64, 64),
                         nn.MaxPool2d(2), *block(64, 128), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(128 * 16, 10))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", required=True)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--images", type=int, default=1000, help="random test images for the SNN")
    p.add_argument("--T", type=int, nargs="+", default=[8, 16, 32, 64])
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "cifar10_maxpool.json"))
    args = p.parse_args(argv)
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    xtr, ytr, xte, yte = load_tensors(args.data_dir, dev)
    t0 = time.time()
    model = train(vgg_maxpool(), xtr, ytr, args.epochs, lr=0.05, log=lambda m: print(m, flush=True))
    model = model.float().eval()
    rows = {"epochs": args.epochs, "train_s": round(time.time() - t0, 1), "ann": ann_accuracy(model, xte, yte)}
    pick = torch.as_tensor(np.random.default_rng(0).permutation(len(xte))[:args.images], device=xte.device)
    x, y = xte[pick], yte[pick]
    rows["ann_on_these"] = ann_accuracy(model, x, y)
    print(f"ANN {100 * rows['ann']:.2f}% (on the {len(x)} SNN images {100 * rows['ann_on_these']:.2f}%)", flush=True)
    calib = [xtr[i:i + 500].cpu() for i in range(0, 2000, 500)]
    backend = dict(backend="torch", device=str(dev))
    for norm in ("max", "percentile"):
        net = convert(model.cpu(), calib, norm=norm, percentile=99.99)
        flat = simulator.prepare(net)
        for T in args.T:
            res = simulator.run(flat, x.double().cpu().numpy(), T, **backend)
            acc = float((res.predictions() == y.cpu().numpy()).mean())
            rows[f"{norm}_T{T}"] = {"accuracy": acc, "loss": rows["ann_on_these"] - acc,
                                    "synops_per_image": res.total("synops") / len(x)}
            print(f"{norm} T={T}: SNN {100 * acc:.2f}% (loss {100 * (rows['ann_on_these'] - acc):.2f} points)",
                  flush=True)
            write_text(args.out, json.dumps(rows, indent=1))
        model.to(dev)


if __name__ == "__main__":
    main()
