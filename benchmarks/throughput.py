"""Simulator throughput: synaptic events per second of the numba engine (one thread, all threads) and of the exact
torch backend (CPU, and GPU when present), with the float32 torch reference (no counters) for scale.

    python -m benchmarks.throughput [--T 8] [--batch 8] [--quick]

(a) a VGG-like conv net on 32x32x3 inputs (random weights, thresholds by max normalization on
random inputs, converted with the real converter); (b) a large sparse random network (CSR).
Synaptic events = synaptic operations + MACs, as counted by the simulator itself.
"""
from __future__ import annotations

import argparse
import time

import numba
import numpy as np
import torch
from torch import nn

from spikeforge import simulator
from spikeforge.converter import SpikingNetwork, convert
from spikeforge.converter.mapping import one_population_per_core
from spikeforge.simulator import Network, Population, Projection


def vgg_like(width=64):
    def block(cin, cout):
        return [nn.Conv2d(cin, cout, 3, 1, 1), nn.BatchNorm2d(cout), nn.ReLU()]

    layers = block(3, width) + block(width, width) + [nn.AvgPool2d(2)]
    layers += block(width, 2 * width) + block(2 * width, 2 * width) + [nn.AvgPool2d(2)]
    layers += block(2 * width, 4 * width) + block(4 * width, 4 * width) + [nn.AvgPool2d(2)]
    layers += [nn.Flatten(), nn.Linear(4 * width * 16, 512), nn.ReLU(), nn.Linear(512, 10)]
    return nn.Sequential(*layers)


def vgg_network(seed=0):
    torch.manual_seed(seed)
    model = vgg_like().eval()
    calib = torch.rand(32, 3, 32, 32)
    return convert(model, [calib], norm="percentile", percentile=99.0), calib


def sparse_network(n=50_000, fan_out=500, layers=3, seed=0):
    """Random CSR layers; thresholds chosen so roughly a tenth of the neurons fire per step."""
    rng = np.random.default_rng(seed)
    pops = [Population.make("in", "input", (2000,))]
    projs = []
    prev = "in"
    for i in range(layers):
        n_src = pops[-1].size
        indptr = np.arange(0, (n_src + 1) * fan_out, fan_out, dtype=np.int64)[:n_src + 1]
        idx = rng.integers(0, n, n_src * fan_out).astype(np.int32)
        w = rng.normal(0.02, 0.1, n_src * fan_out).astype(np.float32)
        name = f"h{i}"
        pops.append(Population.make(name, "if", (n,), 1.0, 0.5))
        projs.append(Projection(f"{prev}_{name}", "sparse", prev, name, w, indptr, idx))
        prev = name
    pops.append(Population.make("out", "readout", (10,)))
    projs.append(Projection("readout", "dense", prev, "out", rng.normal(0, 0.01, (10, n)).astype(np.float32)))
    cores, edges = one_population_per_core(pops, projs)
    net = Network(pops, projs, cores, edges, {})
    simulator.validate_network(net)
    x = (rng.random((64, 2000)) < 0.2).astype(np.float64)
    return net, x


def _timed(flat, x, T, repeats, **options):
    """Best wall time of `repeats` runs (after one warm-up run) and the last Result."""
    simulator.run(flat, x[:2], T, **options)  # compile / build the torch plan
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        res = simulator.run(flat, x, T, batch_size=len(x), **options)  # one chunk: prange spreads its samples
        best = min(best, time.perf_counter() - t0)
    return best, res


def measure(label, net, x, T, repeats=3):
    """Rows: numba on 1 and all threads, the exact torch backend on the CPU (and the GPU when there is one), the
    float32 torch reference (no counters) for scale; every exact row's counter totals compared with numba's."""
    flat = simulator.prepare(net)
    threads_all = numba.config.NUMBA_NUM_THREADS
    rows = []
    for threads in sorted({1, threads_all}):
        numba.set_num_threads(threads)
        t, res = _timed(flat, x, T, repeats)
        rows.append(("numba", "cpu", threads, t, res.totals()))
    numba.set_num_threads(threads_all)
    torch.set_num_threads(threads_all)
    reference = rows[-1][4]
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for dev in devices:
        t, res = _timed(flat, x, T, repeats, backend="torch", device=dev)
        rows.append(("torch (exact)", dev, threads_all, t, res.totals()))
    ref = SpikingNetwork(net, dtype=torch.float32)
    t0 = time.perf_counter()
    ref(torch.as_tensor(x, dtype=torch.float32), T)
    t_ref = time.perf_counter() - t0
    events = reference["synops"] + reference["macs"]
    print(f"\n## {label}: {len(x)} samples x T={T}, {reference['spikes']} spikes, {events:.3e} synaptic events")
    print("| backend | device | threads | wall (s) | synaptic events/s | vs numba all threads | identical totals |")
    print("|---|---|---:|---:|---:|---:|---|")
    t_numba = rows[len({1, threads_all}) - 1][3]
    for backend, dev, threads, t, totals in rows:
        print(f"| {backend} | {dev} | {threads} | {t:.3f} | {events / t:.3e} | {t_numba / t:.2f}x | "
              f"{'yes' if totals == reference else 'NO'} |")
    print(f"| torch reference float32 (no counters) | cpu | {threads_all} | {t_ref:.3f} | {events / t_ref:.3e} | "
          f"{t_numba / t_ref:.2f}x | - |")
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--T", type=int, default=8)
    p.add_argument("--batch", type=int, default=max(8, 2 * numba.config.NUMBA_NUM_THREADS),
                   help="samples (default: 8, or two per thread when there are more than 4 threads)")
    p.add_argument("--quick", action="store_true", help="smaller sparse network")
    args = p.parse_args(argv)
    print(f"numba threads available: {numba.config.NUMBA_NUM_THREADS}")
    net, calib = vgg_network()
    x = np.random.default_rng(1).random((args.batch, 3, 32, 32))
    measure("VGG-like conv net, 32x32x3", net, x, args.T)
    snet, sx = sparse_network(n=10_000 if args.quick else 50_000)
    measure("sparse random network (CSR)", snet, sx[:args.batch * 2], args.T)


if __name__ == "__main__":
    main()
