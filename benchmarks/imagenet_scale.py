"""ImageNet-size structure: a ResNet-34 or a ViT-S/16 on 224x224 inputs (random weights): convert, map onto Loihi
(cores and chips), write and load the network file, simulate on the numba engine and on the exact torch backend.

    python -m benchmarks.imagenet_scale [--model resnet34 | vit-s16] [--images 100] [--numba-images 1] [--T 4]
        [--device cuda] [--targets T ...] [--network FILE] [--out OUT.json] [--depth 12] [--chunk-rows 1024]

--model vit-s16: ViT-S/16 (196 patches + class token, dim 384, 12 blocks, 6 heads, MLP 1536, 1000 classes) as an
ECMT network (multi-threshold neurons with n=4 levels, EC nodes), thresholds from 8 random images, exported on
--device; --depth: blocks (12), --chunk-rows: probe rows per pass (256 fits a one-block export in 24 GiB on a CPU).
--images 0 / --numba-images 0 skip a simulator. Session 12's one-block Loihi mapping: --model vit-s16 --depth 1
--device cpu --chunk-rows 256 --images 0 --numba-images 0 --targets loihi.

--targets: targets to map onto (cores and chips needed, or why it does not fit); the file simulated is the
converter's own (one core per population), so the simulation figures do not depend on a mapping. --network FILE:
skip converting and mapping, simulate a file an earlier run wrote (--keep FILE keeps it).

--stem max (default): the stem's 3x3 / 2 max pooling as a spiking max pooling (format 1.7); --stem avg: an average
pooling instead (what session 10's GPU rows ran, before max pooling existed). Rows: one JSON object per measured
step (stage, seconds, and what it measured).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time

import numpy as np
import torch
from torch import nn

from spikeforge import simulator
from spikeforge.converter import convert
from spikeforge.converter.mapping import MappingError, map_network
from spikeforge.converter.writer import write_network
from spikeforge.hwmodels.targets import load_target
from spikeforge.models import BasicBlock
from spikeforge.simulator.atomic import write_text


class ResNet34(nn.Module):
    """ResNet-34 for 224x224 ImageNet inputs: 7x7/2 stem, 3x3/2 pooling, [3, 4, 6, 3] basic blocks of
    64/128/256/512 channels, global average pooling, 1000 classes."""

    def __init__(self, max_pool=False, classes=1000):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU())
        self.pool = nn.MaxPool2d(3, 2, 1) if max_pool else nn.AvgPool2d(3, 2, 1)
        blocks, cin = [], 64
        for cout, n, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
            for i in range(n):
                blocks.append(BasicBlock(cin, cout, stride if i == 0 else 1))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, classes))

    def forward(self, x):
        return self.head(self.blocks(self.pool(self.stem(x))))


def _peak_rss_gib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20


def _convert_resnet34(args):
    torch.manual_seed(0)
    calib = torch.randn(8, 3, 224, 224)
    model = ResNet34(max_pool=args.stem == "max").eval()
    return convert(model, [calib], norm="max", name="resnet34-224-random"), \
        f"convert (8 calibration images, {args.stem} pooling stem)"


def _convert_vit_s16(args):
    from spikeforge.converter.ecmt import collect_thresholds
    from spikeforge.converter.ecmt_export import export_ecmt
    from spikeforge.models import ViT

    torch.manual_seed(0)
    model = ViT(3, 224, 16, 384, args.depth, 6, 1536, classes=1000).eval()
    calib = torch.randn(8, 3, 224, 224)
    thresholds = collect_thresholds(model, [calib], p=99.0)

    def progress(done, total, name):
        if done % 50 == 0 or done == total:
            print(f"  export: {done}/{total} sources probed ({name})", flush=True)

    net = export_ecmt(model.to(args.device), thresholds, (3, 224, 224), levels=4, name="vit-s16-224-random",
                      device=args.device, progress=progress, chunk_rows=args.chunk_rows)
    if args.device.startswith("cuda"):
        torch.cuda.empty_cache()
    return net, f"ECMT export on {args.device} (thresholds from 8 random images)"


def _build(args, row):
    """Convert, write and load the network; (the network, the flattened network from its file)."""
    t0 = time.perf_counter()
    net, stage = (_convert_vit_s16 if args.model == "vit-s16" else _convert_resnet34)(args)
    n = sum(pop.size for pop in net.populations)
    synapses = sum(int(np.asarray(q.indices).size) if q.kind == "sparse" else 0 for q in net.projections)
    row(stage, time.perf_counter() - t0, populations=len(net.populations), projections=len(net.projections),
        neurons=int(n), sparse_synapses=synapses)
    with tempfile.TemporaryDirectory() as tmp:
        path = args.keep or os.path.join(tmp, f"{args.model}.h5")
        t0 = time.perf_counter()
        write_network(net, path)
        row("write network file", time.perf_counter() - t0, file_mib=round(os.path.getsize(path) / 2 ** 20, 1))
        t0 = time.perf_counter()
        flat = simulator.prepare(path)
        row("load, validate and flatten", time.perf_counter() - t0)
    return net, flat


def _map(net, targets, row):
    """Cores and chips each target needs for the network (after the simulations: mapping can take minutes)."""
    for target in targets:
        t0 = time.perf_counter()
        try:
            mapped = map_network(net, load_target(target), placement="snake")
            row(f"map onto {target} (snake placement)", time.perf_counter() - t0,
                cores=int(len(mapped.cores.core_id)), chips=int(len(np.unique(mapped.cores.chip))))
        except MappingError as exc:
            row(f"map onto {target}", time.perf_counter() - t0, refused=True, message=str(exc))


def _simulate_torch(args, flat, x, ref, row):
    """The torch backend: the plan and one image, then --images images (progress per chunk); counters compared
    with the engine's on its images."""
    options = dict(backend="torch", device=args.device)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    t0 = time.perf_counter()
    first = simulator.run(flat, x[:1], args.T, **options)  # builds the plan
    sync()
    row(f"torch exact on {args.device}: build the plan, then 1 image, T={args.T}", time.perf_counter() - t0,
        synops_first_image=first.total("synops"), spikes_first_image=first.total("spikes"))
    t0 = time.perf_counter()

    def progress(done, total):
        print(f"  torch: {done}/{total} images, {time.perf_counter() - t0:.1f} s", flush=True)

    res = simulator.run(flat, x[:args.images], args.T, progress=progress, **options)
    sync()
    same = bool(np.array_equal(res.per_sample[:args.numba_images], ref.per_sample)) if ref is not None else None
    gpu_mem = torch.cuda.max_memory_allocated() / 2 ** 30 if args.device.startswith("cuda") else None
    row(f"torch exact on {args.device}, {args.images} images, T={args.T}", time.perf_counter() - t0,
        identical_counters_on_the_numba_images=same, device_peak_gib=gpu_mem,
        synops_per_image=res.total("synops") / args.images)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=("resnet34", "vit-s16"), default="resnet34")
    p.add_argument("--images", type=int, default=100, help="images on the torch backend")
    p.add_argument("--numba-images", type=int, default=1)
    p.add_argument("--depth", type=int, default=12, help="vit-s16: transformer blocks")
    p.add_argument("--chunk-rows", type=int, default=1024, help="vit-s16: probe rows per forward pass")
    p.add_argument("--T", type=int, default=4)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--targets", nargs="*", default=["loihi", "generic45nm"])
    p.add_argument("--stem", choices=("max", "avg"), default="max")
    p.add_argument("--network", help="a network file written by an earlier run (--keep): simulate it only")
    p.add_argument("--keep", help="keep the mapped network file here")
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "imagenet_scale.json"))
    args = p.parse_args(argv)
    rows = []

    def row(stage, seconds, **info):
        rows.append({"stage": stage, "seconds": round(seconds, 2), "peak_rss_gib": round(_peak_rss_gib(), 2),
                     **info})
        print(json.dumps(rows[-1]), flush=True)
        write_text(args.out, json.dumps(rows, indent=1))

    net, flat = (None, simulator.prepare(args.network)) if args.network else _build(args, row)
    x = torch.randn(max(args.images, args.numba_images), 3, 224, 224, generator=torch.Generator().manual_seed(1))
    x = x.double().numpy()
    ref = None
    if args.numba_images:
        t0 = time.perf_counter()
        ref = simulator.run(flat, x[:args.numba_images], args.T)
        row(f"numba engine, {args.numba_images} image(s), T={args.T}", time.perf_counter() - t0,
            synops_per_image=ref.total("synops") / args.numba_images,
            spikes_per_image=ref.total("spikes") / args.numba_images)
    if args.images:
        _simulate_torch(args, flat, x, ref, row)
    del ref, flat
    if net is not None:
        _map(net, args.targets, row)


if __name__ == "__main__":
    main()
