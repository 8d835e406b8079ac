"""Where the exact torch backend spends its time: torch.profiler over one run of the CIFAR-10 ResNet-20 (random test
images are fine for timing, so no dataset is needed), the top operators by device and by CPU time.

    python -m benchmarks.profile_torch_backend [--images 2000] [--T 4] [--neuron if] [--device cuda]
"""
from __future__ import annotations

import argparse
import time

import torch

from spikeforge import simulator
from spikeforge.converter import QCFS, convert

from .cifar10 import ResNet20
from .scale import CHECKPOINT


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--T", type=int, default=4)
    p.add_argument("--neuron", default="if")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--rows", type=int, default=25)
    args = p.parse_args(argv)
    model = ResNet20(act=lambda: QCFS(4, 8.0))
    model.load_state_dict(torch.load(CHECKPOINT, map_location="cpu", weights_only=True))
    model = model.float().eval()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.images, 3, 32, 32, generator=g)
    flat = simulator.prepare(convert(model, [x[:256]], neuron=args.neuron, tau=4))
    xs = x.double().numpy()
    options = dict(backend="torch", device=args.device)
    simulator.run(flat, xs[:16], args.T, **options)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    sync()
    t0 = time.perf_counter()
    simulator.run(flat, xs, args.T, **options)
    sync()
    print(f"{args.images} images, T={args.T}, {args.neuron}: {time.perf_counter() - t0:.3f} s unprofiled")
    activities = [torch.profiler.ProfilerActivity.CPU]
    if args.device.startswith("cuda"):
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        simulator.run(flat, xs, args.T, **options)
        sync()
    key = "cuda_time_total" if args.device.startswith("cuda") else "cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=args.rows))
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))


if __name__ == "__main__":
    main()
