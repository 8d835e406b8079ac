"""Cores cut by work (converter.mapping.balance_work, map_to_work): a chip step lasts as long as its slowest core,
and a ViT's attention products do far more synaptic operations per neuron than its other layers, so their cores
set every step's length. This maps a network onto a target with each population's neurons per core capped so that
no core's synaptic operations per step pass a budget (measured per neuron on calibration images, on the network
split as it will be mapped; then checked core by core and re-cut, --rounds times at most), for several budgets,
and prices each mapping: cores, chips, energy, latency, what bounds it and the busiest core's work per step on the
images priced.

    python -m benchmarks.work_balance --out benchmarks/results/work_balance [--net cifar-vit] [--target loihi]
        [--unit ops|ns] [--budgets none,40000,20000,10000,5000] [--data-dir DATA] [--images 8] [--T 4] [--keep DIR]

--unit ns budgets each core's compute time per step as the target prices it (mapping.work_per_neuron with the
target) instead of its synaptic operations.

cifar-vit uses the trained checkpoint with the CIFAR-10 test images from --data-dir (random images without it,
labelled so); others as benchmarks/fanin_split.py builds them. Writes OUT/work_balance.json (--unit ns:
OUT/work_balance_ns.json) and OUT/work_balance.png (latency and energy per inference against cores, one line per
unit whose rows are in OUT).
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from spikeforge import simulator
from spikeforge.converter.mapping import MAX_WORK_ROUNDS, map_network, map_to_work, split_and_measure_work, work_of
from spikeforge.hwmodels import core_memory, estimate
from spikeforge.hwmodels.targets import load_target
from spikeforge.simulator.atomic import write_text

from . import fanin_split


def _priced(m, target, x, steps):
    res = simulator.run(m, x, steps)
    labels = [m.populations[int(i)].name for i in m.cores.population]
    rep = estimate(res.counters, simulator.COUNTERS, len(x), target, labels, core_memory(m))
    return res, rep


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--net", default="cifar-vit")
    p.add_argument("--target", default="loihi")
    p.add_argument("--unit", choices=("ops", "ns"), default="ops",
                   help="budget unit: synaptic operations or nanoseconds of core compute time per core and step")
    p.add_argument("--budgets", default="none,40000,20000,10000,5000",
                   help="work per core and step in --unit ('none': the chip's limits only)")
    p.add_argument("--data-dir")
    p.add_argument("--images", type=int, default=8)
    p.add_argument("--calib", type=int, default=2, help="images the work per neuron is measured on")
    p.add_argument("--T", type=int, default=4)
    p.add_argument("--keep", help="folder to keep the converted network in (and load it from)")
    p.add_argument("--rounds", type=int, default=MAX_WORK_ROUNDS,
                   help="re-mappings after the caps from the layers' mean work (mapping.map_to_work; 0: caps only)")
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    model, shape, trained = fanin_split._network(args.net)
    wanted = args.images + args.calib
    fs_args = argparse.Namespace(data_dir=args.data_dir, images=wanted, price=wanted)
    calib, x, y = fanin_split._inputs(args.net, shape, trained, fs_args)
    if x is None:  # a trained network without --data-dir: random images, no accuracy
        trained, x, y = False, fanin_split._inputs(args.net, shape, False, fs_args)[1], None
    if args.net == "vit-s16":
        make = lambda: fanin_split._vit_s16()  # noqa: E731
    elif args.net == "cifar-vit":
        make = lambda: fanin_split._cifar_vit(model, calib)  # noqa: E731
    else:
        make = lambda: fanin_split.convert(model, [calib], norm="max")  # noqa: E731
    net, _ = fanin_split._kept(args.keep, args.net, make)
    x_work, x_run = x[:args.calib], x[args.calib:]
    y_run = None if y is None else y[args.calib:]
    target = load_target(args.target)
    t0 = time.perf_counter()
    unit = "ns" if args.unit == "ns" else "synops"
    net, work = split_and_measure_work(net, target, x_work, args.T, calibration=x_work, unit=unit)  # split once
    print(f"{args.net}: work per neuron measured on {len(x_work)} images in {time.perf_counter() - t0:.1f} s; "
          "most: " + ", ".join(f"{k} {v:.0f}" for k, v in sorted(work.items(), key=lambda kv: -kv[1])[:4]),
          flush=True)
    rows = []
    for word in args.budgets.split(","):
        budget = None if word == "none" else float(word)
        t0 = time.perf_counter()
        over = {}
        if budget is None:
            m = map_network(net, target, chips=4096, split=False)
        else:  # caps from the layers' mean work, then re-cut where a core passes the budget on the work images
            m, _, over = map_to_work(net, target, x_work, args.T, work, budget, unit=unit, rounds=args.rounds,
                                     chips=4096)
        map_s = time.perf_counter() - t0
        res, rep = _priced(m, target, x_run, args.T)
        busiest = work_of(m, res, args.T, target if unit == "ns" else None, dividing=True).max()
        n = len(x_run)
        row = {"network": args.net, "target": args.target, "trained": trained, "images": n, "T": args.T,
               "unit": args.unit, "budget": budget, "rounds": None if budget is None else args.rounds,
               "busiest_core_work": float(busiest), "layers_over_on_work_images": len(over),
               "cores": int(len(m.cores.population)),
               "chips": int(len(np.unique(m.cores.chip))), "map_s": round(map_s, 1),
               "accuracy": None if y_run is None else float((res.predictions() == y_run).mean() * 100),
               "synops": res.total("synops") / n, "packets": res.total("packets") / n,
               "energy_uj": rep.energy_pj / 1e6, "static_uj": rep.static_pj / 1e6, "latency_us": rep.latency_ns / 1e3,
               "steps": rep.steps, "latency_parts_us": {k: v / 1e3 for k, v in rep.latency_parts_ns.items()},
               "slowest_core_layers_us": {k: v / 1e3 for k, v in list(rep.bounding_layers_ns.items())[:4]}}
        rows.append(row)
        print(json.dumps(row), flush=True)
        write_text(os.path.join(args.out, _NAMES[args.unit]), json.dumps(rows, indent=1) + "\n")
    series = {}
    for unit, name in _NAMES.items():
        path = os.path.join(args.out, name)
        if os.path.exists(path):
            with open(path) as f:
                rows = [r for r in json.load(f) if r["network"] == args.net and r["target"] == args.target]
            if rows:
                series[unit] = rows
    _plot(series, os.path.join(args.out, "work_balance.png"))


_NAMES = {"ops": "work_balance.json", "ns": "work_balance_ns.json"}
_UNITS = {"ops": "synaptic ops", "ns": "ns of core time"}


def _budget(row):
    """(unit, budget) of a row."""
    return row["unit"], row["budget"]


def _plot(series, path):
    """Latency and energy per inference against cores, one line per budget unit (labels: the budgets)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(11, 4.5))
    for (unit, rows), mark, color, shift in zip(series.items(), ("o-", "^-"), ("tab:blue", "tab:orange"),
                                                ((4, 4), (4, -11))):
        rows = sorted(rows, key=lambda r: r["cores"])
        cores = [r["cores"] / 1e3 for r in rows]
        labels = ["chip limits" if _budget(r)[1] is None else f"{_budget(r)[1]:.0f}" for r in rows]
        for a, key in ((ax[0], "latency_us"), (ax[1], "energy_uj")):
            values = [r[key] / 1e3 for r in rows]
            a.plot(cores, values, mark, color=color, label=f"budget in {_UNITS[unit]}")
            if key == "energy_uj":
                a.plot(cores, [r["static_uj"] / 1e3 for r in rows], mark[0] + "--", color=color, alpha=0.5,
                       label=f"of it static ({_UNITS[unit]})")
            else:
                for c, v, lab in zip(cores, values, labels):
                    a.annotate(lab, (c, v), textcoords="offset points", xytext=shift, fontsize=7, color=color)
    for a, unit in ((ax[0], "latency per inference (ms)"), (ax[1], "energy per inference (mJ)")):
        a.set_xlabel("cores (thousands)")
        a.set_ylabel(unit)
        a.grid(alpha=0.3)
        a.legend(fontsize=8)
    r0 = next(iter(series.values()))[0]
    fig.suptitle(f"{r0['network']} on {r0['target']}, T = {r0['T']}: cores cut by work (labels: the budget per "
                 "core and step)")
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)


if __name__ == "__main__":
    main()
