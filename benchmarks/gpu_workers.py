"""Samples over one Dask worker per GPU (issue 36): wall time and totals on 1, 2, ... GPUs against one process.

    python -m benchmarks.gpu_workers --out benchmarks/results/gpu_workers --gpus 1 2 [--images 512 --T 8]
        [--data-dir DATA]

The CIFAR-10 ResNet-20 (benchmarks/checkpoints/resnet20_relu.pt, percentile-99.99 conversion) on --images test
images (CIFAR-10 with --data-dir, else uniform random images, seed 0), T steps, the torch backend: first in this
process on one GPU (the reference, after a warm-up run that compiles the kernels), then sharded over k GPU workers
for each k of --gpus (one shard per GPU, then four), each compared with the reference: counters, per-sample
counters, spike counts and outputs, each said equal or not. Rows (with a `gpus` field) go to OUT/gpu_workers.json,
rewritten after each.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import numpy as np
import torch

from spikeforge import simulator
from spikeforge.cluster import dask_client, gpu_devices, run_sharded, visible_gpus
from spikeforge.converter import convert, write_network
from spikeforge.simulator.atomic import write_text

CKPT = os.path.join(os.path.dirname(__file__), "checkpoints", "resnet20_relu.pt")


def _inputs(args):
    if args.data_dir:
        from .cifar10 import load_tensors

        xtr, _, xte, yte = load_tensors(args.data_dir, "cpu", max(args.images, 256))
        return xtr[:256], xte[:args.images].numpy(), yte[:args.images].numpy()
    g = torch.Generator().manual_seed(0)
    return torch.rand(256, 3, 32, 32, generator=g), torch.rand(args.images, 3, 32, 32, generator=g).numpy(), None


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--gpus", type=int, nargs="+", default=[1])
    p.add_argument("--images", type=int, default=512)
    p.add_argument("--T", type=int, default=8)
    p.add_argument("--data-dir")
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    from .cifar10 import ResNet20

    model = ResNet20().eval()
    model.load_state_dict(torch.load(CKPT, map_location="cpu", weights_only=True))
    calib, x, y = _inputs(args)
    rows = []

    def out(row):
        rows.append(row)
        print(json.dumps(row), flush=True)
        write_text(os.path.join(args.out, "gpu_workers.json"), json.dumps(rows, indent=1))

    with tempfile.TemporaryDirectory() as folder:
        path = write_network(convert(model, [calib], norm="percentile", percentile=99.99),
                             os.path.join(folder, "resnet20.h5"))
        net = simulator.load_network(path)
        simulator.run(net, x[:16], args.T, backend="torch", device="cuda")  # warm-up: kernels compiled, cached
        t0 = time.perf_counter()
        ref = simulator.run(net, x, args.T, backend="torch", device="cuda", record_counts=True)
        base = time.perf_counter() - t0
        acc = None if y is None else float((ref.predictions() == y).mean() * 100)
        out({"network": "cifar-resnet20", "images": len(x), "T": args.T, "gpus": 1, "workers": 0,
             "how": "one process", "wall_s": round(base, 2), "accuracy": acc, "device": torch.cuda.get_device_name(),
             "visible_gpus": visible_gpus(), "totals": ref.totals()})
        for k in args.gpus:
            with dask_client(devices=gpu_devices(k)) as client:
                for shards in (k, 4 * k):
                    t0 = time.perf_counter()
                    res = run_sharded(path, x, args.T, client, shards=shards, backend="torch", device="cuda",
                                      record_counts=True)
                    wall = time.perf_counter() - t0
                    equal = {"counters": bool(np.array_equal(res.counters, ref.counters)),
                             "per_sample": bool(np.array_equal(res.per_sample, ref.per_sample)),
                             "output": bool(np.array_equal(res.output, ref.output)),
                             "spike_counts": all(np.array_equal(res.spike_counts[name], ref.spike_counts[name])
                                                 for name in ref.spike_counts)}
                    same = all(equal.values())
                    out({"network": "cifar-resnet20", "images": len(x), "T": args.T, "gpus": k, "workers": k,
                         "shards": shards, "how": "Dask, one worker per GPU", "wall_s": round(wall, 2),
                         "speedup_vs_one_process": round(base / wall, 2), "identical_totals": same, "equal": equal,
                         "output_max_abs_diff": float(np.abs(res.output - ref.output).max()),
                         "counter_diffs": int((res.counters != ref.counters).sum()),
                         "shard_gpus": sorted({str(s["gpu"]) for s in res.shards})})


if __name__ == "__main__":
    main()
