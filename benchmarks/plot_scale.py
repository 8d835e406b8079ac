"""Plot the exact simulation at scale (results/scale.json): wall time of the 16-thread numba engine and of the
torch backend on the GPU per network, neuron and T, from each row group's latest session, with the speed-ups.

    python -m benchmarks.plot_scale [benchmarks/results/scale.json] [OUT.png]

Only groups whose rows all have identical counter totals are drawn as plain bars; a group with a differing row is
hatched and says so (the torch backend's point is the engine's counters, not only its speed).
"""
from __future__ import annotations

import json
import os
import sys

from spikeforge.simulator.atomic import save_figure

RESULTS = os.path.join(os.path.dirname(__file__), "results")
SHORT = {"CIFAR-10 ResNet-20 16/32/64, QCFS L=4": "ResNet-20",
         "CIFAR-10 wide ResNet-20 64/128/256, random weights, max norm": "wide ResNet-20 (random)",
         "CIFAR-10 ECMT ViT (dim 192, 4 blocks), n=4": "ECMT ViT"}


def latest_groups(rows):
    """{(network, neuron, T, images): rows of the latest session that measured that group}, in first-seen order."""
    groups = {}
    for row in rows:
        key = (row["network"], row["neuron"], row["T"], row["images"])
        best = groups.get(key)
        if best is None or row.get("session", 0) > best[0].get("session", 0):
            groups[key] = [row]
        elif row.get("session", 0) == best[0].get("session", 0):
            best.append(row)
    return groups


def plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = list(SHORT)
    groups = sorted(((k, g) for k, g in latest_groups(rows).items() if k[3] == 10_000),
                    key=lambda kg: (order.index(kg[0][0]) if kg[0][0] in order else len(order), kg[0][1], kg[0][2]))
    labels, fig_rows = [], []
    for (network, neuron, T, images), group in groups:
        numba = [r for r in group if r["backend"] == "numba"]
        torch_rows = [r for r in group if r["backend"] == "torch"]
        if not numba or not torch_rows:
            continue
        fastest = min(torch_rows, key=lambda r: r["wall_s"])
        neuron = "IF" if neuron == "if" else neuron.replace("tau", "τ")
        labels.append(f"{SHORT.get(network, network)}, {neuron}, T={T}\n(session {group[0].get('session', '?')}, "
                      f"{images:,} images)")
        fig_rows.append((numba[0], fastest, all(r["identical_totals"] for r in group)))
    fig, ax = plt.subplots(figsize=(9, 0.75 * len(fig_rows) + 1.4))
    y = range(len(fig_rows))
    for i, (numba, fastest, same) in enumerate(fig_rows):
        hatch = None if same else "//"
        ax.barh(i + 0.2, numba["wall_s"], 0.38, color="tab:blue", hatch=hatch,
                label="numba engine, 16 threads" if i == 0 else None)
        ax.barh(i - 0.2, fastest["wall_s"], 0.38, color="tab:orange", hatch=hatch,
                label="torch exact backend, one H200" if i == 0 else None)
        conv = f", {fastest['conv']}" if fastest.get("conv") else ""
        ax.text(fastest["wall_s"] * 1.08, i - 0.2, f"{fastest['wall_s']:.2f} s: {fastest['speedup']:.1f}x{conv}"
                + ("" if same else ", counters DIFFER"), va="center", fontsize=8)
        ax.text(numba["wall_s"] * 1.08, i + 0.2, f"{numba['wall_s']:.1f} s", va="center", fontsize=8)
    ax.set_yticks(list(y), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlim(0.3, 3000)
    ax.set_xlabel("wall time for all 10,000 CIFAR-10 test images (s, log scale)")
    ax.set_title("Exact simulation: identical spikes and counters, engine vs GPU backend")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=130)
    plt.close(fig)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    src = argv[0] if argv else os.path.join(RESULTS, "scale.json")
    out = argv[1] if len(argv) > 1 else os.path.join(RESULTS, "scale.png")
    with open(src) as f:
        plot(json.load(f), out)
    print(out)


if __name__ == "__main__":
    main()
