"""Exact simulation at scale: the committed CIFAR-10 ResNet-20 (QCFS L=4) on all test images, numba engine on every
core vs the exact torch backend on the GPU; wall time, speed-up and whether every counter total is identical.

    python -m benchmarks.scale --data-dir DATA --T 4 8 [--images 10000] [--networks resnet20 resnet20w]
        [--out benchmarks/results/scale.json]

Networks: `resnet20`, the committed ResNet-20 (IF and group neurons); `resnet20w`, a wide ResNet-20 (64/128/256,
random weights, max-norm IF thresholds from 2,000 training images; timing only, at the first T given); `vit`, the
committed CIFAR-10 ECMT ViT (n=4 levels, exported as benchmarks.cifar10_vit does; --vit-images random test images).
--variants runs the torch backend's convolution variants side by side (`implicit`: exact slices in torch_triton's
implicit-GEMM kernel, the default on a GPU; `sliced`: exact slices through im2col + float32/TF32 GEMM; `gemm`:
float64 im2col + GEMM; `cudnn`: float64 cuDNN), each row saying which (field conv). Field ordered_sums: whether the
engine-order sums (ViT) ran as Triton kernels or term by term (SPIKEFORGE_TRITON=0); ec_functions: whether the EC
nodes' F ran as the Triton kernel or on the host.
DATA holds the standard python batches (../shared/datasets/cifar10_batches.py). Rows (a list of objects): network,
neuron, images, T, backend, device, conv, threads, wall_s, speedup (the all-threads numba wall time over this row's),
identical_totals (every counter's total and every sample's counters equal to numba's), accuracy.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import time

import numba
import numpy as np
import torch

from spikeforge import simulator
from spikeforge.converter import QCFS, convert
from spikeforge.simulator import torch_backend, torch_conv, torch_triton
from spikeforge.simulator.atomic import write_text

from .cifar10 import ResNet20, ResNet20Wide, load_tensors

CHECKPOINT = os.path.join(os.path.dirname(__file__), "checkpoints", "resnet20_qcfs4.pt")


# torch backend convolutions (simulator.torch_backend / torch_conv knobs): SLICED_CONV, FLOAT64_CONV, IMPLICIT
CONV_VARIANTS = {"default": None, "implicit": (True, "gemm", True), "sliced": (True, "gemm", False),
                 "gemm": (False, "gemm", False), "cudnn": (False, "cudnn", False)}
KNOBS = ((torch_backend, "SLICED_CONV"), (torch_backend, "FLOAT64_CONV"), (torch_conv, "IMPLICIT"))


@contextlib.contextmanager
def _conv_variant(name):
    """Run with one convolution variant of the torch backend, restoring the defaults after."""
    saved = [getattr(module, knob) for module, knob in KNOBS]
    for (module, knob), value in zip(KNOBS, CONV_VARIANTS[name] or saved):
        setattr(module, knob, value)
    try:
        yield
    finally:
        for (module, knob), value in zip(KNOBS, saved):
            setattr(module, knob, value)


def _conv_name(variant, device):
    """What a variant ran: exact slices (Triton implicit GEMM, or im2col + float32/TF32 GEMM) or float64 (GEMM or
    cuDNN; torch's conv2d on a CPU)."""
    sliced, f64, implicit = CONV_VARIANTS[variant] or [getattr(module, knob) for module, knob in KNOBS]
    if sliced:
        return "sliced implicit gemm" if implicit and torch_triton.available(device) else "sliced tf32"
    return f"float64 {f64}" if device.startswith("cuda") else "float64 conv2d"


def _timed(flat, x, T, **options):
    simulator.run(flat, x[:8], T, **options)  # compile, or build the torch plan and warm the GPU
    if options.get("device", "").startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    res = simulator.run(flat, x, T, **options)
    return time.perf_counter() - t0, res


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", required=True)
    p.add_argument("--T", type=int, nargs="+", default=[4, 8])
    p.add_argument("--images", type=int, default=10_000)
    p.add_argument("--neurons", nargs="+", default=["if", "group"])
    p.add_argument("--networks", nargs="+", default=["resnet20"], choices=["resnet20", "resnet20w", "vit"])
    p.add_argument("--vit-images", type=int, default=1000, help="test images for the ViT rows")
    p.add_argument("--variants", nargs="+", default=["default"], choices=list(CONV_VARIANTS),
                   help="torch backend convolution variants, run side by side (default: the backend's defaults)")
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "scale.json"))
    args = p.parse_args(argv)
    xtr, _, xte, yte = load_tensors(args.data_dir, "cpu")
    x, y = xte[:args.images].numpy().astype(np.float64), yte[:args.images].numpy()
    devices = ["cuda"] if torch.cuda.is_available() else ["cpu"]
    threads = numba.config.NUMBA_NUM_THREADS
    rows = []
    everything = (x, y)
    for network, neuron, net, steps in _networks(args, xtr):
        flat = simulator.prepare(net)
        x, y = everything
        vit = network.startswith("CIFAR-10 ECMT ViT")
        if vit:
            pick = np.random.default_rng(0).permutation(len(x))[:args.vit_images]
            x, y = x[pick], y[pick]
        for T in steps:
            t_numba, ref = _timed(flat, x, T)
            runs = [("numba", "cpu", t_numba, ref)]
            for dev in devices:
                for variant in args.variants:
                    with _conv_variant(variant):
                        t, res = _timed(flat, x, T, backend="torch", device=dev)
                    runs.append(("torch", dev, t, res, variant))
            for backend, dev, t, res, *variant in runs:
                row = {"network": network, "neuron": neuron, "images": len(x), "T": T, "backend": backend,
                       "device": dev, "threads": threads, "wall_s": round(t, 3), "speedup": round(t_numba / t, 2),
                       "conv": _conv_name(variant[0], dev) if variant and not vit else None,
                       "ordered_sums": ("triton" if torch_triton.available(dev) else "term by term")
                       if backend == "torch" else None,
                       "ec_functions": ("triton" if torch_triton.available(dev) and torch_triton.ec_kernel_ok(dev)
                                        else "host") if backend == "torch" and vit else None,
                       "identical_totals": bool(res.totals() == ref.totals()
                                                and np.array_equal(res.per_sample, ref.per_sample)),
                       "same_predictions": float((res.predictions() == ref.predictions()).mean()),
                       "accuracy": float((res.predictions() == y).mean())}
                rows.append(row)
                print(json.dumps(row), flush=True)
                os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
                write_text(args.out, json.dumps(rows, indent=1))
    print("| network | neuron | T | images | backend | device | conv | wall s | speed-up | identical totals "
          "| accuracy |")
    print("|---|---|---:|---:|---|---|---|---:|---:|---|---:|")
    for r in rows:
        print(f"| {r['network']} | {r['neuron']} | {r['T']} | {r['images']} | {r['backend']} | {r['device']} | "
              f"{r['conv'] or ''} | "
              f"{r['wall_s']:.2f} | "
              f"{r['speedup']:.1f}x | {'yes' if r['identical_totals'] else 'NO'} | {100 * r['accuracy']:.2f} |")


def _networks(args, xtr):
    """(network name, neuron, converted network, steps) per row group."""
    if "resnet20" in args.networks:
        model = ResNet20(act=lambda: QCFS(4, 8.0))
        model.load_state_dict(torch.load(CHECKPOINT, map_location="cpu", weights_only=True))
        model = model.float().eval()
        for neuron in args.neurons:
            yield ("CIFAR-10 ResNet-20 16/32/64, QCFS L=4", neuron if neuron == "if" else "group tau=4",
                   convert(model, [xtr[:512]], neuron=neuron, tau=4, name=f"resnet20-qcfs4-{neuron}"), args.T)
    if "resnet20w" in args.networks:
        torch.manual_seed(0)
        model = ResNet20Wide().float().eval()
        calib = [xtr[i:i + 500] for i in range(0, 2000, 500)]
        yield ("CIFAR-10 wide ResNet-20 64/128/256, random weights, max norm", "if",
               convert(model, calib, norm="max", name="resnet20w-random"), args.T[:1])
    if "vit" in args.networks:
        from spikeforge.converter.ecmt import collect_thresholds
        from spikeforge.converter.ecmt_export import export_ecmt
        from spikeforge.models import ViT

        vit = ViT(3, 32, 4, 192, 4, 4, 384)
        state = torch.load(os.path.join(os.path.dirname(CHECKPOINT), "cifar10_vit.pt"), map_location="cpu",
                           weights_only=True)
        vit.load_state_dict({k: v.float() for k, v in state.items()})
        vit = vit.float().eval()
        thresholds = collect_thresholds(vit, [xtr[i:i + 256] for i in range(0, 1024, 256)], p=99.0)
        dev = "cuda" if torch.cuda.is_available() else "cpu"
        yield ("CIFAR-10 ECMT ViT (dim 192, 4 blocks), n=4", "multi-threshold + EC",
               export_ecmt(vit.to(dev), thresholds, (3, 32, 32), levels=4, device=dev), args.T)


if __name__ == "__main__":
    main()
