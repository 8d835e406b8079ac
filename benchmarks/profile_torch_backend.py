"""Where the exact torch backend spends its time: its convolution variants timed side by side on the CIFAR-10
ResNet-20 (random test images are fine for timing, so no dataset is needed), each checked against the numba
engine's counters, then torch.profiler's top operators for the default variant.

    python -m benchmarks.profile_torch_backend [--images 3000] [--T 4] [--neuron if] [--device cuda] [--no-check]

Variants (simulator.torch_backend / torch_conv knobs): float64 convolutions (im2col + float64 GEMM, or cuDNN) or
sliced ones (spike levels through exact slices: torch_triton's implicit-GEMM kernel, the default on a GPU, or
im2col + float32 GEMM with TF32 tensor cores on or off); im2col as one strided copy or one copy per kernel offset.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from spikeforge import simulator
from spikeforge.converter import QCFS, convert
from spikeforge.simulator import torch_backend, torch_conv

from .cifar10 import ResNet20
from .scale import CHECKPOINT

VARIANTS = {  # name -> (SLICED_CONV, FLOAT64_CONV, TF32, IM2COL, IMPLICIT)
    "sliced, implicit gemm": (True, "gemm", True, "strided", True),
    "float64 gemm": (False, "gemm", False, "strided", False),
    "float64 gemm, im2col slices": (False, "gemm", False, "slices", False),
    "sliced, tf32": (True, "gemm", True, "strided", False),
    "sliced, tf32, im2col slices": (True, "gemm", True, "slices", False),
    "sliced, fp32": (True, "gemm", False, "strided", False),
    "float64 cudnn": (False, "cudnn", False, "strided", False),
}


def _set(variant):
    (torch_backend.SLICED_CONV, torch_backend.FLOAT64_CONV, torch_conv.TF32, torch_conv.IM2COL,
     torch_conv.IMPLICIT) = VARIANTS[variant]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=3000)
    p.add_argument("--T", type=int, default=4)
    p.add_argument("--neuron", default="if")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--no-check", action="store_true", help="skip the numba run that checks the counters")
    p.add_argument("--rows", type=int, default=25, help="profiler rows for the first variant (0: no profile)")
    args = p.parse_args(argv)
    model = ResNet20(act=lambda: QCFS(4, 8.0))
    model.load_state_dict(torch.load(CHECKPOINT, map_location="cpu", weights_only=True))
    model = model.float().eval()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.images, 3, 32, 32, generator=g)
    net = convert(model, [x[:256]], neuron=args.neuron, tau=4)
    xs = x.double().numpy()
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    ref = None
    if not args.no_check:
        flat = simulator.prepare(net)
        simulator.run(flat, xs[:8], args.T)
        t0 = time.perf_counter()
        ref = simulator.run(flat, xs, args.T)
        print(f"numba: {time.perf_counter() - t0:.3f} s", flush=True)
    for variant in args.variants:
        _set(variant)
        flat = simulator.prepare(net)  # a fresh plan for this variant
        simulator.run(flat, xs[:16], args.T, backend="torch", device=args.device)
        sync()
        t0 = time.perf_counter()
        res = simulator.run(flat, xs, args.T, backend="torch", device=args.device)
        sync()
        wall = time.perf_counter() - t0
        same = "" if ref is None else (
            f", identical totals {res.totals() == ref.totals() and np.array_equal(res.per_sample, ref.per_sample)}"
            f", same predictions {float((res.predictions() == ref.predictions()).mean()):.4f}")
        print(f"{variant}: {args.images} images, T={args.T}, {args.neuron}: {wall:.3f} s{same}", flush=True)
    if not args.rows:
        return
    _set(args.variants[0])
    flat = simulator.prepare(net)
    simulator.run(flat, xs[:16], args.T, backend="torch", device=args.device)
    activities = [torch.profiler.ProfilerActivity.CPU]
    if args.device.startswith("cuda"):
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        simulator.run(flat, xs, args.T, backend="torch", device=args.device)
        sync()
    key = "cuda_time_total" if args.device.startswith("cuda") else "cpu_time_total"
    print(f"profile of {args.variants[0]!r}")
    print(prof.key_averages().table(sort_by=key, row_limit=args.rows))


if __name__ == "__main__":
    main()
