"""A CIFAR-10 CNN that fits a SynSense Speck chip: train (GPU), convert, place on Speck's 9 cores, simulate, price.

    python -m benchmarks.cifar10_speck --data-dir DATA --epochs 40 --out OUT [--T 8 16 32 64 128]

SpeckCNN is sized to sinabs' per-core memories (converter/speck.py): 32/64-channel 3x3 convolutions whose kernel
memory c_in x 16 x c_out fits the cores that hold it (64 x 64 needs cores 5 or 6, which two layers take), average
pooling that each core does as sum pooling of its own output (the converter folds it into the next convolution;
the Speck rule reads it back), and a dense readout (a 4x4 convolution on the chip).
The converted network is placed on each target by its own rule (speck: one layer per core; loihi2 / loihi: boxes),
its accuracy measured on the test images (--test-images: the first N of a fixed shuffle) with the torch
reference, and its events counted on the first
--energy-images test images (of a fixed shuffle) with the simulator's torch backend and priced on every target.
Writes OUT/cifar10_speck.json, OUT/cifar10_speck.md, OUT/cifar10_speck.png and OUT/cifar10_speck.h5 (placed on speck).
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch
from torch import nn

from spikeforge import simulator
from spikeforge.converter import convert, write_network
from spikeforge.converter.mapping import map_network
from spikeforge.converter.speck import SPECK, assign_cores, speck_layers
from spikeforge.hwmodels import core_memory, estimate, load_target
from spikeforge.simulator.atomic import write_text

from .cifar10 import _load, _save, ann_accuracy, prepare_run, snn_accuracy, train

TARGETS = ("speck", "loihi2", "loihi")


class SpeckCNN(nn.Module):
    """32C3-32C3-P2-64C3-64C3-P2-64C3-P2-32C3-FC10 for 3x32x32 inputs (conv-BN-ReLU, average pooling)."""

    def __init__(self, act=nn.ReLU, classes=10):
        super().__init__()

        def block(cin, cout):
            return [nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), act()]

        self.features = nn.Sequential(*block(3, 32), *block(32, 32), nn.AvgPool2d(2), *block(32, 64),
                                      *block(64, 64), nn.AvgPool2d(2), *block(64, 64), nn.AvgPool2d(2),
                                      *block(64, 32))
        self.fc = nn.Linear(32 * 4 * 4, classes)

    def forward(self, x):
        return self.fc(self.features(x).flatten(1))


def placement_table(net) -> list:
    """Each layer's Speck memories and the core it was matched to, with that core's memories."""
    layers = speck_layers(net)
    cores = assign_cores(layers)
    return [{"layer": lay.name, "kernel_memory": lay.kernel_memory, "neuron_memory": lay.neuron_memory,
             "core": cores[lay.name], "core_kernel_memory": SPECK["kernel_memory"][cores[lay.name]],
             "core_neuron_memory": SPECK["neuron_memory"][cores[lay.name]], "destinations": list(lay.destinations)}
            for lay in layers]


def price_runs(net, x, T, dev, log):
    """{target: figures} of one simulation per target's placement (the spikes are the same on every placement)."""
    out = {}
    for name in TARGETS:
        target = load_target(name)
        placed = map_network(net, target, placement="snake")
        t0 = time.time()
        res = simulator.run(simulator.prepare(placed), x, T, backend="torch", device=str(dev), batch_size=250)
        labels = [placed.populations[int(p)].name for p in placed.cores.population]
        cost = estimate(res.counters, simulator.COUNTERS, len(x), target, labels, core_memory(placed))
        per = res.per_sample.mean(axis=0)
        by_core = res.counters[:, :, simulator.COUNTERS.index("spikes")].sum(axis=0) / len(x)
        by_pop = np.bincount(placed.cores.population, weights=by_core, minlength=len(placed.populations))
        out[name] = {"cores": placed.cores.slots(), "chips": int(cost.chips),
                     "energy_uj": cost.energy_pj / 1e6, "dynamic_uj": cost.dynamic_total_pj / 1e6,
                     "static_uj": cost.static_pj / 1e6, "latency_us": cost.latency_ns / 1e3,
                     "spikes": float(per[simulator.COUNTERS.index("spikes")]),
                     "synops": float(per[simulator.COUNTERS.index("synops")]),
                     "spikes_by_layer": {p.name: float(v) for p, v in zip(placed.populations, by_pop)},
                     "accuracy_subset": None, "sim_s": time.time() - t0}
        out[name]["predictions"] = res.predictions()
        log(f"  T={T} {name}: {out[name]['cores']} cores, {out[name]['energy_uj']:.2f} uJ, "
            f"{out[name]['latency_us']:.1f} us, {out[name]['spikes']:.0f} spikes per image "
            f"({out[name]['sim_s']:.1f} s)")
    return out


def plot(results, path):
    import matplotlib
    import matplotlib.ticker
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = sorted(int(t) for t in results["snn_accuracy"])
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    a.plot(steps, [100 * results["snn_accuracy"][str(t)] for t in steps], "o-",
           label=f"SNN (IF, torch reference; {results.get('test_images', 10000):,} test images)")
    a.axhline(100 * results["ann_accuracy"], color="k", ls="--", label="ANN (10,000 test images)")
    a.set(xscale="log", xlabel="time steps T", ylabel="CIFAR-10 test accuracy (%)", title="SpeckCNN on CIFAR-10")
    a.set_xticks(steps, [str(t) for t in steps])
    a.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    a.legend(fontsize=8)
    energy_steps = sorted(int(t) for t in results["energy"])
    for name in TARGETS:
        b.plot(energy_steps, [results["energy"][str(t)][name]["energy_uj"] for t in energy_steps], "o-", label=name)
    values = [r["energy_uj"] for e in results["energy"].values() for r in e.values()]
    b.set(xscale="log", yscale="log" if max(values) > 10 * min(values) else "linear", xlabel="time steps T",
          ylabel="energy per image (µJ)", title=f"priced on each target ({results['energy_images']} test images)")
    b.set_xticks(energy_steps, [str(t) for t in energy_steps])
    b.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    b.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def table(results) -> str:
    lines = [f"SpeckCNN on CIFAR-10: ANN {100 * results['ann_accuracy']:.2f}% ({results['device']})", "",
             f"| T | SNN accuracy ({results['test_images']:,} images) | "
             + " | ".join(f"{t} energy / latency per image" for t in TARGETS) + " |",
             "|---:|---:|" + "---:|" * len(TARGETS)]
    for T, acc in sorted(results["snn_accuracy"].items(), key=lambda kv: int(kv[0])):
        e = results["energy"].get(T)
        cells = [f"{e[t]['energy_uj']:.2f} uJ / {e[t]['latency_us']:.0f} us" if e else "—" for t in TARGETS]
        lines.append(f"| {T} | {100 * acc:.2f}% | " + " | ".join(cells) + " |")
    lines += ["", "Placement on Speck (sinabs memories, entries):", "",
              "| layer | kernel | neuron | core | core kernel / neuron memory |", "|---|---:|---:|---:|---|"]
    for r in results["speck_placement"]:
        lines.append(f"| {r['layer']} | {r['kernel_memory']} | {r['neuron_memory']} | {r['core']} | "
                     f"{r['core_kernel_memory']} / {r['core_neuron_memory']} |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", required=True)
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--T", type=int, nargs="+", default=[8, 16, 32, 64, 128])
    p.add_argument("--energy-T", type=int, nargs="+", default=[16, 32, 64])
    p.add_argument("--energy-images", type=int, default=1000)
    p.add_argument("--test-images", type=int, help="SNN accuracy on the first N test images (default: all)")
    p.add_argument("--percentile", type=float, default=99.9)
    p.add_argument("--load", help="folder with speckcnn_relu.pt to reuse instead of training")
    p.add_argument("--limit", type=int, help="use only the first N training / test images (smoke test)")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    args.arch = "speckcnn"  # checkpoint name (benchmarks.cifar10's _load / _save)
    dev, (xtr, ytr, xte, yte) = prepare_run(args)
    # the JPEG copy's test batch is ordered by class: the first N images of a fixed shuffle are a fair subset
    order = torch.randperm(len(xte), generator=torch.Generator().manual_seed(0)).to(xte.device)
    xte, yte = xte[order], yte[order]

    def log(msg):
        print(msg, flush=True)

    results = {"device": torch.cuda.get_device_name() if dev.type == "cuda" else "cpu", "epochs": args.epochs,
               "percentile": args.percentile, "energy_images": min(args.energy_images, len(xte))}
    path = os.path.join(args.out, "cifar10_speck.json")

    def save():
        write_text(path, json.dumps(results, indent=1))

    t0 = time.time()
    model = _load(args, "relu", SpeckCNN(), dev, log) or train(SpeckCNN(), xtr, ytr, args.epochs, log=log)
    _save(model, os.path.join(args.out, "speckcnn_relu.pt"))
    results["ann_accuracy"] = ann_accuracy(model, xte, yte)
    results["train_s"] = time.time() - t0
    log(f"ANN {100 * results['ann_accuracy']:.2f}% ({results['train_s']:.0f} s)")
    calib = [xtr[i:i + 500] for i in range(0, 2000, 500)]
    # the default folds each pooling into the next convolution (a 6x6 stride-2 kernel): Speck runs it as the source
    # core's sum pooling and the 3x3 kernel (converter.speck.folded_pooling), with no re-encoding population
    net = convert(model.float(), calib, norm="percentile", percentile=args.percentile, name="cifar10-speckcnn")
    results["speck_placement"] = placement_table(net)
    write_network(map_network(net, load_target("speck")), os.path.join(args.out, "cifar10_speck.h5"))
    results["snn_accuracy"], results["test_images"] = {}, min(args.test_images or len(xte), len(xte))
    for T in args.T:
        n_acc = results["test_images"]
        results["snn_accuracy"][str(T)] = snn_accuracy(net, xte[:n_acc], yte[:n_acc], T, dev)
        log(f"SNN T={T}: {100 * results['snn_accuracy'][str(T)]:.2f}%")
        save()
    n = results["energy_images"]
    x, y = xte[:n].cpu().numpy(), yte[:n].cpu().numpy()
    results["energy"] = {}
    for T in args.energy_T:
        runs = price_runs(net, x, T, dev, log)
        preds = [r.pop("predictions") for r in runs.values()]
        assert all(np.array_equal(preds[0], q) for q in preds[1:]), "placements changed the predictions"
        for r in runs.values():
            r["accuracy_subset"] = float((preds[0] == y).mean())
        results["energy"][str(T)] = runs
        save()
    plot(results, os.path.join(args.out, "cifar10_speck.png"))
    md = table(results)
    write_text(os.path.join(args.out, "cifar10_speck.md"), md + "\n")
    log(md)


if __name__ == "__main__":
    main()
