"""Plot two-stage conversion loss (ANN minus SNN accuracy) of the wide ResNet-20 against the published one.

    python -m benchmarks.plot_two_stage [--results benchmarks/results] [--out FIG.png]

Reads cifar10_resnet20w_calibration_T<T>*.json (benchmarks.cifar10_calibration) and groups their rows by
learning rate: a point per fine-calibration learning rate and T is the mean over calibration subsets (seeds),
its bar their range. Published: Wang et al., ResNet-20 on CIFAR-10 (METHODS.md).
"""
from __future__ import annotations

import argparse
import glob
import json
import os
from collections import defaultdict

PAPER_ANN = 96.66
PAPER = {2: 90.43, 4: 93.27, 8: 95.46, 16: 96.30}
CLIP_ANN = 92.44  # the source ANN of these runs (benchmarks/RESULTS.md)


def losses(folder):
    """{lr: {T: [loss per calibration subset]}} over settings that differ from the default only in lr / seed."""
    out = defaultdict(lambda: defaultdict(dict))
    for path in sorted(glob.glob(os.path.join(folder, "cifar10_resnet20w_calibration_T*.json"))):
        res = json.load(open(path))
        for r in res["rows"]:
            words = [w for w in r["setting"].split(",") if w != "base"]
            if any(not w.startswith(("lr=", "seed=")) for w in words):
                continue
            out[r["lr"]][res["T"]][r["seed"]] = CLIP_ANN - 100 * r["fc"]
    return {lr: {T: list(v.values()) for T, v in by_t.items()} for lr, by_t in out.items()}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", default=os.path.join(os.path.dirname(__file__), "results"))
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results",
                                                 "cifar10_resnet20w_two_stage_loss.png"))
    args = p.parse_args(argv)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from spikeforge.simulator.atomic import save_figure

    data = losses(args.results)
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    steps = sorted(T for T in PAPER if T <= 8)
    paper = [PAPER_ANN - PAPER[T] for T in steps]
    ax.plot(steps, paper, "k--o", label="published (Wang et al.)")
    ax.fill_between(steps, [v - 1 for v in paper], [v + 1 for v in paper], color="0.85", label="published ± 1")
    print("| fine-calibration lr | T | loss (mean over subsets) | subsets | range |")
    print("|---|---:|---:|---:|---|")
    for i, (lr, by_t) in enumerate(sorted(data.items(), key=lambda kv: -len(kv[1]))):
        ts = sorted(by_t)
        means = [sum(by_t[T]) / len(by_t[T]) for T in ts]
        lo = [m - min(by_t[T]) for m, T in zip(means, ts)]
        hi = [max(by_t[T]) - m for m, T in zip(means, ts)]
        if len(ts) > 1:  # lrs tried at one T only are in the table, not the plot
            ax.errorbar([T * (1 + 0.04 * (i - 0.5)) for T in ts], means, yerr=[lo, hi], marker="s", capsize=3,
                        label=f"here, Adam lr {lr:g}")
        for T, m in zip(ts, means):
            v = by_t[T]
            print(f"| {lr:g} | {T} | {m:.2f} | {len(v)} | {min(v):.2f} - {max(v):.2f} |")
    ax.set_xscale("log", base=2)
    ax.set_xticks(steps, [str(T) for T in steps])
    ax.set_xlabel("time steps T")
    ax.set_ylabel("ANN - SNN accuracy (points)")
    ax.set_title("Two-stage conversion, ResNet-20 (64/128/256), CIFAR-10")
    ax.legend(fontsize=8)
    save_figure(fig, args.out, dpi=130, bbox_inches="tight")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
