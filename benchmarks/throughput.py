"""Simulator throughput: synaptic events per second, one thread and all threads, vs the torch reference.

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


def measure(label, net, x, T, repeats=3):
    flat = simulator.prepare(net)
    simulator.run(flat, x[:2], T)  # compile / warm up
    rows = []
    threads_all = numba.config.NUMBA_NUM_THREADS
    for threads in sorted({1, threads_all}):
        numba.set_num_threads(threads)
        best = np.inf
        for _ in range(repeats):
            t0 = time.perf_counter()
            res = simulator.run(flat, x, T, batch_size=max(1, len(x) // threads))
            best = min(best, time.perf_counter() - t0)
        events = res.total("synops") + res.total("macs")
        rows.append((threads, best, events, events / best))
    numba.set_num_threads(threads_all)
    torch.set_num_threads(threads_all)
    ref = SpikingNetwork(net, dtype=torch.float32)
    t0 = time.perf_counter()
    ref(torch.as_tensor(x, dtype=torch.float32), T)
    t_ref = time.perf_counter() - t0
    print(f"\n## {label}: {len(x)} samples x T={T}, {res.total('spikes')} spikes, {events:.3e} synaptic events")
    print("| threads | wall (s) | synaptic events/s | per thread | torch reference (s) | speed-up vs torch |")
    print("|---:|---:|---:|---:|---:|---:|")
    for threads, t, ev, rate in rows:
        print(f"| {threads} | {t:.3f} | {rate:.3e} | {rate / threads:.3e} | {t_ref:.3f} | {t_ref / t:.2f}x |")
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--T", type=int, default=8)
    p.add_argument("--batch", type=int, default=8)
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
