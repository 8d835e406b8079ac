"""Plot CIFAR-10 SNN accuracy vs T per method from the JSON files benchmarks/cifar10.py writes.

    python -m benchmarks.plot_cifar OUT.png RESULT.json [RESULT.json ...]

One panel per architecture; a JSON holding a two-stage sweep adds its best fine-calibrated accuracy per T,
and the source ANN accuracies are drawn as dashed lines. Several JSONs of one architecture are merged.
"""
from __future__ import annotations

import json
import sys

STYLES = {"if_max": ("IF, max norm", "tab:gray"), "qcfs": ("QCFS", "tab:blue"),
          "qcfs_gn": ("QCFS + GN τ=4", "tab:green"), "two_stage": ("two-stage (I + II)", "tab:red")}


def merge(paths):
    """arch -> {method -> {T: accuracy}, "_ann" -> {label: accuracy}}."""
    out = {}
    for path in paths:
        with open(path) as fh:
            r = json.load(fh)
        arch = out.setdefault(r["arch"], {"_ann": {}})
        for key, label in (("relu_ann", "ReLU ANN"), ("qcfs_ann", "QCFS ANN"), ("clip_ann", "clip ANN")):
            if key in r:
                arch["_ann"][label] = r[key]
        for name, accs in r["methods"].items():
            curve = arch.setdefault(name, {})
            for key, value in accs.items():
                T = int(key.split("_")[0])
                acc = value["fc"] if isinstance(value, dict) else value
                curve[T] = max(acc, curve.get(T, 0.0))
    return out


def plot(data, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(data), figsize=(5 * len(data), 4), squeeze=False)
    for ax, (arch, methods) in zip(axes[0], sorted(data.items())):
        for name, (label, color) in STYLES.items():
            if name in methods:
                Ts = sorted(methods[name])
                ax.plot(Ts, [100 * methods[name][T] for T in Ts], "o-", color=color, label=label)
        for (label, acc), ls in zip(sorted(methods["_ann"].items()), ("--", ":", "-.")):
            ax.axhline(100 * acc, color="k", ls=ls, lw=0.8, label=f"{label} {100 * acc:.1f}")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("time steps T")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"CIFAR-10 {arch}")
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 2:
        raise SystemExit(__doc__)
    plot(merge(argv[1:]), argv[0])
    print(f"wrote {argv[0]}")


if __name__ == "__main__":
    main()
