"""Issue 34's priced rows in one table and one plot: each network on each chip as mapped with fan-in splitting,
against its unsplit hypothetical (the same chip with enough input axons and synapse memory per core that nothing
is split), read from the fanin_split runs' json files.

    python -m benchmarks.plot_fanin [OUT.png]

Prints a markdown table (cores, chips, synaptic ops, packets, energy and latency per inference; split and
hypothetical, and their ratio) and draws cores, energy and latency side by side on log axes. Every figure comes from
the files named in RUNS; a pair split over two files (a network priced in one run, its hypothetical in another)
names both.
"""
from __future__ import annotations

import json
import os
import sys

from spikeforge.simulator.atomic import save_figure

RESULTS = os.path.join(os.path.dirname(__file__), "results", "fanin_split")
# (label, target, files): the latest run of each network on each chip that was simulated on the GPU machine's torch
# backend; later files override earlier ones for the same mapping
RUNS = [
    ("CIFAR-10 ResNet-20 (trained)", "truenorth", ["cifar_resnet20_gpu.json"]),
    ("CIFAR-10 ResNet-20 (trained)", "loihi", ["cifar_resnet20_gpu.json"]),
    ("CIFAR-10 VGG-16", "truenorth", ["vgg16_truenorth_priced_gpu_s25.json"]),
    ("CIFAR-10 VGG-16", "loihi", ["vgg16_loihi_priced_gpu_s31.json"]),
    ("ResNet-34 at 224", "loihi",
     ["resnet34_loihi_priced_gpu_s25.json", "resnet34_loihi_hypothetical_inputs_gpu_s31.json"]),
    ("ViT-S/16 at 224", "loihi", ["vit-s16_loihi_tiles_priced_gpu_s31.json"]),
]
MAPPINGS = ("split", "unsplit_hypothetical")


def load_pair(target, files, results=RESULTS):
    """{'split': counts, 'unsplit_hypothetical': counts, 'runs': {mapping: the priced record it came from},
    'mapped': mapping record, 'axons_hypothetical': the hypothetical core's input axons, 'files'}:
    the priced records of `target` in `files`, later files overriding earlier ones mapping by mapping."""
    pair = {"files": files}
    for name in files:
        with open(os.path.join(results, name)) as f:
            for rec in json.load(f):
                if rec.get("target") != target:
                    continue
                if "images" not in rec:
                    pair.setdefault("mapped", rec)
                    continue
                for m in MAPPINGS:
                    if isinstance(rec.get(m), dict):
                        pair[m] = rec[m]
                        pair.setdefault("runs", {})[m] = rec
                if "axons_hypothetical" in rec and isinstance(rec.get("unsplit_hypothetical"), dict):
                    pair["axons_hypothetical"] = rec["axons_hypothetical"]
    if "split" not in pair:
        raise ValueError(f"{files}: no priced split mapping for target {target!r}")
    return pair


def nothing_split(pair):
    return pair.get("mapped", {}).get("split_layers") == 0


def rows(runs=RUNS, results=RESULTS):
    """[(label, target, pair)] for every run, in RUNS order."""
    return [(label, target, load_pair(target, files, results)) for label, target, files in runs]


def _si(x, unit=""):
    """3 significant digits, trailing zeros kept (3.70 G beside 3.72 G)."""
    if x == 0:
        return "0"
    for scale, prefix in ((1e9, " G"), (1e6, " M"), (1e3, " k")):
        if abs(x) >= scale:
            return f"{x / scale:#.3g}{prefix}{unit}".replace(". ", " ")
    return f"{x:#.3g}".rstrip(".") + (f" {unit}" if unit else "")


def _energy(uj):
    return f"{uj / 1e6:.2f} J" if uj >= 1e6 else f"{uj / 1e3:.1f} mJ"


def _latency(us):
    return f"{us / 1e3:.1f} ms" if us >= 1e3 else f"{us:.0f} µs"


def table(all_rows):
    """Markdown: one line per mapping, then the split / hypothetical ratios."""
    out = ["| network | chip | mapping | run | accuracy | cores / chips | synaptic ops | packets (leaving their chip)"
           " | energy (of it static) | latency (steps) |",
           "|---|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for label, target, pair in all_rows:
        for m in MAPPINGS:
            c = pair.get(m)
            if c is None:
                continue
            run = pair["runs"][m]  # each mapping's own run: a hypothetical may come from another file
            how = f"{run['images']} images, T = {run['T']}" + ("" if run.get("trained", True) else ", random weights")
            if m == "unsplit_hypothetical" and nothing_split(pair):
                out.append(f"| {label} | {target} | unsplit hypothetical | | | (nothing split: the same) | | | | |")
                continue
            name = "split" if m == "split" else f"unsplit hypothetical ({pair['axons_hypothetical']:,} axons)"
            acc = "" if c.get("accuracy") is None else f"{c['accuracy']:.1f} %"
            out.append(f"| {label} | {target} | {name} | {how} | {acc} | {c['cores']:,} / {c['chips']:,} | "
                       f"{_si(c['synops'])} | {_si(c['packets'])} ({_si(c['chip_packets'])}) | "
                       f"{_energy(c['energy_uj'])} ({_energy(c['static_uj'])}) | "
                       f"{_latency(c['latency_us'])} ({c['steps']}) |")
    out += ["", "| network | chip | split / hypothetical: cores | synaptic ops | packets | energy | latency | steps |",
            "|---|---|---:|---:|---:|---:|---:|---:|"]
    for label, target, pair in all_rows:
        s, h = pair["split"], pair.get("unsplit_hypothetical")
        if h is None or nothing_split(pair):
            continue
        r = [s[k] / h[k] for k in ("cores", "synops", "packets", "energy_uj", "latency_us")]
        out.append(f"| {label} | {target} | {r[0]:.2f}x | {r[1]:.4f}x | {r[2]:.2f}x | {r[3]:.2f}x | {r[4]:.2f}x | "
                   f"{s['steps'] - h['steps']:+d} |")
    return "\n".join(out)


def _bar_label(x):
    if x >= 1e4:
        return f"{x / 1e3:#.3g}".rstrip(".") + "k"  # 11.2k beside 11.7k, 724k
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


def plot(all_rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("cores", "cores", 1), ("energy_uj", "energy per inference (mJ)", 1e3),
              ("latency_us", "latency per inference (ms)", 1e3)]
    labels = [f"{label}\non {target}" for label, target, _ in all_rows]
    fig, axes = plt.subplots(1, 3, figsize=(14, 0.85 * len(all_rows) + 1.6), sharey=True)
    for ax, (key, title, div) in zip(axes, panels):
        for i, (_, _, pair) in enumerate(all_rows):
            s = pair["split"][key] / div
            ax.barh(i - 0.2, s, 0.38, color="tab:blue", label="split (the chip's own cores)" if i == 0 else None)
            ax.text(s, i - 0.2, f" {_bar_label(s)}", va="center", fontsize=7)
            h = pair.get("unsplit_hypothetical")
            if h is not None and not nothing_split(pair):
                hv = h[key] / div
                ax.barh(i + 0.2, hv, 0.38, color="tab:gray",
                        label="unsplit hypothetical (wider cores)" if i == 0 else None)
                ax.text(hv, i + 0.2, f" {_bar_label(hv)}", va="center", fontsize=7)
            elif h is not None:
                ax.text(s, i + 0.2, "  nothing split", va="center", fontsize=7, color="dimgray")
        ax.set_xscale("log")
        ax.set_title(title, fontsize=10)
        ax.grid(axis="x", alpha=0.3)
        lo, hi = ax.get_xlim()
        ax.set_xlim(lo, hi * 8)
    axes[0].set_yticks(range(len(labels)), labels, fontsize=8)
    axes[0].invert_yaxis()
    fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=2, fontsize=8, frameon=False)
    fig.suptitle("Issue 34: fan-in splitting on the chips against an unsplit hypothetical (exact counts, "
                 "simulated on the GPU backend)", fontsize=10)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    save_figure(fig, path)
    plt.close(fig)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    out = argv[0] if argv else os.path.join(RESULTS, "summary.png")
    all_rows = rows()
    print(table(all_rows))
    plot(all_rows, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
