"""Where the exact torch backend's time goes on any CIFAR-10 network file: wall time of one run, then a torch profile
(CPU and CUDA) of a shorter one, as tables sorted by device time and by host time (`profile_torch_backend` times
the ResNet-20's convolution variants instead).

    python -m benchmarks.profile_torch_file --network NET.h5 --data-dir DATA [--images 1000] [--profile-images 500]
        [--T 4] [--device cuda]

NET.h5: a CIFAR-10 network file (3x32x32 input), e.g. the ECMT ViT that `benchmarks.cifar10_vit` exports; DATA holds
the standard python batches (../shared/datasets/cifar10_batches.py).
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

from spikeforge import simulator
from spikeforge.simulator import torch_triton

from .cifar10 import load_tensors


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--network", required=True)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--images", type=int, default=1000)
    p.add_argument("--profile-images", type=int, default=500)
    p.add_argument("--T", type=int, default=4)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    _, _, xte, _ = load_tensors(args.data_dir, "cpu")
    x = xte[:args.images].numpy().astype(np.float64)
    flat = simulator.prepare(simulator.load_network(args.network))
    options = {"backend": "torch", "device": args.device}
    cuda = args.device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    simulator.run(flat, x[:8], args.T, **options)  # build the plan, compile the kernels
    sync()
    print(f"ordered sums as Triton kernels: {torch_triton.available(args.device)}", flush=True)
    t0 = time.perf_counter()
    simulator.run(flat, x, args.T, **options)
    sync()
    print(f"torch backend on {args.device}, T={args.T}, {len(x)} images: {time.perf_counter() - t0:.2f} s", flush=True)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        simulator.run(flat, x[:args.profile_images], args.T, **options)
        sync()
    table = prof.key_averages()
    if cuda:
        print(table.table(sort_by="cuda_time_total", row_limit=20, max_name_column_width=60))
    print(table.table(sort_by="cpu_time_total", row_limit=20, max_name_column_width=60))


if __name__ == "__main__":
    main()
