"""Plot the ECMT ViT on CIFAR-10: accuracy and energy ratio vs T, from the JSON files cifar10_vit.py writes.

    python -m benchmarks.plot_vit OUT.png REFERENCE.json [ENGINE.json]

Left: accuracy per T for each n (reference, all test images), the ANN dashed, the engine's accuracy on its
subset as markers (with the ANN on that subset); right: the energy ratio, with 1 marked.
"""
from __future__ import annotations

import json
import sys

from spikeforge.simulator.atomic import save_figure


def plot(reference, engine, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (acc_ax, e_ax) = plt.subplots(1, 2, figsize=(10, 4))
    by_n = {}
    for row in reference["ecmt"].values():
        by_n.setdefault(row["n"], []).append(row)
    for n, rows in sorted(by_n.items(), reverse=True):
        rows.sort(key=lambda r: r["T"])
        ts = [r["T"] for r in rows]
        acc_ax.plot(ts, [100 * r["accuracy"] for r in rows], "o-", label=f"ECMT n={n} (reference, 10k images)")
        e_ax.plot(ts, [r["energy_ratio"] for r in rows], "o-", label=f"n={n}, reference bookkeeping")
    acc_ax.axhline(100 * reference["ann"], ls="--", color="k", label="ANN")
    if engine and "engine" in engine:
        steps = engine["engine"]["steps"]
        ts = sorted(steps, key=int)
        m = engine["engine"]["images"]
        acc_ax.plot([int(t) for t in ts], [100 * steps[t]["accuracy"] for t in ts], "s", color="tab:red",
                    label=f"engine, file ({m} images)")
        acc_ax.axhline(100 * engine["engine"]["ann_accuracy"], ls=":", color="tab:red", label=f"ANN ({m} images)")
        e_ax.plot([int(t) for t in ts], [steps[t]["engine_energy_ratio"] for t in ts], "s", color="tab:red",
                  label="engine counts (n=4)")
    e_ax.axhline(1.0, ls="--", color="k")
    acc_ax.set(xlabel="time steps T", ylabel="test accuracy %", title="ECMT ViT, CIFAR-10", ylim=(50, 82))
    e_ax.set(xlabel="time steps T", ylabel="energy ratio SNN / ANN", title="(MAC·4.6 + AC·0.9 pJ) / ANN")
    acc_ax.legend(fontsize=7)
    e_ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
    plt.close(fig)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) not in (2, 3):
        raise SystemExit(__doc__)
    loaded = []
    for p in argv[1:]:
        with open(p) as fh:
            loaded.append(json.load(fh))
    plot(loaded[0], loaded[1] if len(loaded) > 1 else None, argv[0])


if __name__ == "__main__":
    main()
