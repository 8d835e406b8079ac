"""Exact simulation at scale: the committed CIFAR-10 ResNet-20 (QCFS L=4) on all test images, numba engine on every
core vs the exact torch backend on the GPU; wall time, speed-up and whether every counter total is identical.

    python -m benchmarks.scale --data-dir DATA --T 4 8 [--images 10000] [--networks resnet20 resnet20w]
        [--out benchmarks/results/scale.json]
    python -m benchmarks.scale ... --part K N --out part_K.json   (K = 0 .. N-1, e.g. one device call each)
    python -m benchmarks.scale --merge part_0.json part_1.json ... --out merged.json

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
        kernel = implicit and torch_triton.available(device) and torch_conv.kernel_ok(device)
        return "sliced implicit gemm" if kernel else "sliced tf32"
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
    p.add_argument("--data-dir")
    p.add_argument("--T", type=int, nargs="+", default=[4, 8])
    p.add_argument("--images", type=int, default=10_000)
    p.add_argument("--neurons", nargs="+", default=["if", "group"])
    p.add_argument("--networks", nargs="+", default=["resnet20"], choices=["resnet20", "resnet20w", "vit"])
    p.add_argument("--vit-images", type=int, default=1000, help="test images for the ViT rows")
    p.add_argument("--variants", nargs="+", default=["default"], choices=list(CONV_VARIANTS),
                   help="torch backend convolution variants, run side by side (default: the backend's defaults)")
    p.add_argument("--part", type=int, nargs=2, metavar=("K", "N"),
                   help="run part K (0, ..., N-1) of the images split in N (after the ViT's pick): runs longer "
                        "than one call, put together with --merge")
    p.add_argument("--merge", nargs="+", metavar="ROWS", help="merge the rows of parts run with --part (files)")
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "scale.json"))
    args = p.parse_args(argv)
    if args.merge:
        try:
            rows = merge_parts([row for path in args.merge for row in json.load(open(path))])
        except (OSError, ValueError, KeyError) as err:
            p.error(f"--merge: {err}")
        write_text(args.out, json.dumps(rows, indent=1))
        _print_table(rows)
        return
    if not args.data_dir:
        p.error("--data-dir is required (unless --merge)")
    if args.part and not 0 <= args.part[0] < args.part[1]:
        p.error(f"--part K N needs 0 <= K < N, got {args.part}")
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
        if args.part:
            k, n = args.part
            x, y = x[k * len(x) // n:(k + 1) * len(x) // n], y[k * len(y) // n:(k + 1) * len(y) // n]
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
                if args.part:
                    row["part"] = f"{args.part[0]}/{args.part[1]}"
                rows.append(row)
                print(json.dumps(row), flush=True)
                os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
                write_text(args.out, json.dumps(rows, indent=1))
    _print_table(rows)


def merge_parts(rows):
    """Rows of parts K/N (--part) -> one row per network, neuron, T, backend and variant over all N parts: images
    and wall times added, identical_totals if in every part, accuracies weighted by images, speed-up against the
    merged numba row. Every part must be there exactly once."""
    groups = {}
    for row in rows:
        if "part" not in row:
            raise ValueError(f"a row without a part: {row['network']}, {row['backend']}, T={row['T']}")
        key = tuple(row.get(f) for f in ("network", "neuron", "T", "backend", "device", "conv", "ordered_sums",
                                         "ec_functions"))
        groups.setdefault(key, []).append(row)
    merged = []
    for key, parts in groups.items():
        n = int(parts[0]["part"].split("/")[1])
        have = sorted(int(r["part"].split("/")[0]) for r in parts)
        if have != list(range(n)) or any(int(r["part"].split("/")[1]) != n for r in parts):
            raise ValueError(f"{key[0]}, {key[3]}, T={key[2]}: parts {[r['part'] for r in parts]}, not 0..{n - 1} "
                             f"of {n} once each")
        images = sum(r["images"] for r in parts)
        row = {k: v for k, v in parts[0].items() if k != "part"}
        row.update(images=images, parts=n, wall_s=round(sum(r["wall_s"] for r in parts), 3),
                   identical_totals=all(r["identical_totals"] for r in parts),
                   same_predictions=sum(r["same_predictions"] * r["images"] for r in parts) / images,
                   accuracy=sum(r["accuracy"] * r["images"] for r in parts) / images)
        merged.append(row)
    for row in merged:
        ref = [r for r in merged if r["backend"] == "numba" and (r["network"], r["neuron"], r["T"]) ==
               (row["network"], row["neuron"], row["T"])]
        row["speedup"] = round(ref[0]["wall_s"] / row["wall_s"], 2) if ref else None
    return merged


def _print_table(rows):
    print("| network | neuron | T | images | backend | device | conv | wall s | speed-up | identical totals "
          "| accuracy |")
    print("|---|---|---:|---:|---|---|---|---:|---:|---|---:|")
    for r in rows:
        print(f"| {r['network']} | {r['neuron']} | {r['T']} | {r['images']} | {r['backend']} | {r['device']} | "
              f"{r['conv'] or ''} | "
              f"{r['wall_s']:.2f} | "
              f"{r['speedup'] or 0:.1f}x | {'yes' if r['identical_totals'] else 'NO'} | {100 * r['accuracy']:.2f} |")


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
