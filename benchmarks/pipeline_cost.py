"""What a chip's pipeline costs a converted network: accuracy against T, layer-synchronous (every population sees
its sources' spikes of the same step, as the conversion papers simulate) vs pipelined (one step per hop, as Loihi
and SANA-FE run: `pipelined(net, 1)`), on the committed CIFAR-10 ResNet-20 (QCFS L=4, group neurons τ=4).

    python -m benchmarks.pipeline_cost --data-dir DATA [--images 500] [--T 128] [--neuron group]
        [--out benchmarks/results/pipeline_cost.json]

One run per variant at the largest T: the readout's running sums (traced every step) give the prediction at
every T <= that (argmax of the sum, the mean's argmax). Exact engine (numba), --images random test images.
Also the steps the input takes to reach the readout (the longest path's delays: the depth in hops when
pipelined) and the synaptic operations per image over the run. Pipelined, the readout's sum is also taken from
the step the input first reaches it (a deployment would start reading the output then). Writes the rows and a plot
(accuracy vs T).
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch

from spikeforge import simulator
from spikeforge.converter import QCFS, convert
from spikeforge.converter.mapping import pipelined
from spikeforge.simulator.atomic import write_text

from .cifar10 import ResNet20, load_tensors
from .scale import CHECKPOINT

STEPS = (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128)


def _steps_to_readout(net):
    """Steps the input's first effect takes to reach the readout: the longest-delay path (0 layer-synchronous;
    the number of hops of the longest path when pipelined)."""
    longest = {net.input.name: 0}
    for pop in net.populations[1:]:
        longest[pop.name] = max(longest[q.source] + int(q.delay) for q in net.incoming(pop.name))
    return longest[net.populations[-1].name]


def _accuracy_per_step(res, readout_size, y, start=0):
    """Accuracy of the prediction after each step: argmax of the readout sums traced so far, counted from step
    `start` on (the sums of the steps before it subtracted; nan before it)."""
    sums = res.traces.reshape(len(y), res.T, readout_size)
    if start:
        sums = sums - sums[:, start - 1:start]
    acc = (sums.argmax(axis=2) == y[:, None]).mean(axis=0)
    acc[:start] = np.nan
    return acc


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", required=True)
    p.add_argument("--images", type=int, default=500)
    p.add_argument("--T", type=int, default=128)
    p.add_argument("--neuron", default="group", choices=["group", "if"])
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "pipeline_cost.json"))
    args = p.parse_args(argv)
    xtr, _, xte, yte = load_tensors(args.data_dir, "cpu")
    pick = np.random.default_rng(0).permutation(len(xte))[:args.images]  # the test batch is sorted by class
    x, y = xte[pick].numpy().astype(np.float64), yte[pick].numpy()
    model = ResNet20(act=lambda: QCFS(4, 8.0))
    model.load_state_dict(torch.load(CHECKPOINT, map_location="cpu", weights_only=True))
    net = convert(model.float().eval(), [xtr[:512]], neuron=args.neuron, tau=4)
    readout = net.populations[-1]
    trace = [(readout.name, i) for i in range(readout.size)]
    rows = []
    for variant, variant_net in (("layer-synchronous", net), ("pipelined, 1 step per hop", pipelined(net, 1))):
        t0 = time.perf_counter()
        res = simulator.run(variant_net, x, args.T, trace=trace,
                            progress=lambda d, n: print(f"\r  {variant}: {d}/{n} images", end="", flush=True))
        wall = time.perf_counter() - t0
        print()
        synops = res.counters[:, :, simulator.COUNTERS.index("synops")]
        depth = _steps_to_readout(variant_net)
        for read_from in sorted({0, depth}):  # the whole run; and the readout summed once the input reaches it
            acc = _accuracy_per_step(res, readout.size, y, read_from)
            row = {"network": "CIFAR-10 ResNet-20 16/32/64, QCFS L=4", "neuron": args.neuron, "variant": variant,
                   "images": len(y), "T": args.T, "input_to_readout_steps": depth, "readout_from_step": read_from,
                   "synops_per_image": float(synops.sum() / len(y)), "wall_s": round(wall, 1),
                   "accuracy": {str(t): (None if np.isnan(acc[t - 1]) else float(acc[t - 1]))
                                for t in STEPS if t <= args.T}}
            rows.append(row)
            print(json.dumps(row), flush=True)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    write_text(args.out, json.dumps(rows, indent=1))
    _plot(rows, os.path.splitext(args.out)[0] + ".png")
    print("| variant | steps from input to readout | readout summed from step | " +
          " | ".join(f"T={t}" for t in rows[0]["accuracy"]) + " |")
    print("|---|---:|---:|" + "---:|" * len(rows[0]["accuracy"]))
    for r in rows:
        print(f"| {r['variant']} | {r['input_to_readout_steps']} | {r['readout_from_step']} | " +
              " | ".join("-" if a is None else f"{100 * a:.2f}" for a in r["accuracy"].values()) + " |")


def _plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for r, marker in zip(rows, "osd"):
        steps = [int(t) for t, a in r["accuracy"].items() if a is not None]
        label = r["variant"] + (f", readout from step {r['readout_from_step']}" if r["readout_from_step"] else "")
        ax.plot(steps, [100 * r["accuracy"][str(t)] for t in steps], marker=marker, label=label)
    steps = [int(t) for t in rows[0]["accuracy"]]
    ax.set_xscale("log", base=2)
    ax.set_xticks(steps, [str(t) for t in steps])
    ax.set_xlabel("time steps T")
    ax.set_ylabel(f"accuracy, % ({rows[0]['images']} CIFAR-10 test images)")
    ax.set_title(f"ResNet-20 ({rows[0]['neuron']} neurons): the chip's pipeline costs steps")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(loc="center left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
