"""`spikeforge demo`: digits CNN -> SNN file -> accuracy vs T, with no download."""
from __future__ import annotations

import json
import os
import time

import torch


def accuracy_vs_T(snn, x, y, steps, progress=True):
    """Reference-SNN accuracy for each T (one run at max(T) would bias nothing, but T is a run parameter)."""
    from tqdm import tqdm

    out = {}
    for T in tqdm(steps, desc="SNN accuracy vs T", disable=not progress or None):
        out[T] = float((snn.predict(x, T) == y).float().mean())
    return out


def plot_accuracy(path, ann_acc, acc):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.4))
    steps = sorted(acc)
    ax.plot(steps, [100 * acc[t] for t in steps], "o-", label="SNN (IF, soft reset)")
    ax.axhline(100 * ann_acc, color="k", ls="--", label=f"ANN {100 * ann_acc:.1f}%")
    ax.set_xscale("log", base=2)
    ax.set_xticks(steps, [str(t) for t in steps])
    ax.set_xlabel("time steps T")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("digits: converted SNN accuracy vs T")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_demo(out_dir="spikeforge-demo", epochs=20, steps=(1, 2, 4, 8, 16, 32), seed=0):
    from benchmarks.data import load_digits_split
    from benchmarks.models import DigitsResNet
    from converter import SpikingNetwork, convert, write_network
    from converter.training import accuracy, train_classifier
    from simulator import load_network

    os.makedirs(out_dir, exist_ok=True)
    torch.manual_seed(seed)
    xtr, ytr, xte, yte = load_digits_split(seed=seed)
    t0 = time.time()
    print(f"training DigitsResNet on {len(xtr)} digits for {epochs} epochs ...")
    model = train_classifier(DigitsResNet(), xtr, ytr, epochs=epochs, lr=0.05, seed=seed)
    ann = accuracy(model, xte, yte)
    print(f"ANN test accuracy {100 * ann:.2f}% ({time.time() - t0:.1f} s)")
    net = convert(model, [xtr[:512]], norm="percentile", percentile=99.9, name="digits-resnet")
    path = write_network(net, os.path.join(out_dir, "digits-resnet.h5"))
    print(f"wrote {path}")
    snn = SpikingNetwork(load_network(path))
    acc = accuracy_vs_T(snn, xte, yte, list(steps))
    rows = ["| T | SNN accuracy (%) | loss vs ANN (points) |", "|---:|---:|---:|"]
    rows += [f"| {t} | {100 * a:.2f} | {100 * (ann - a):.2f} |" for t, a in acc.items()]
    table = "\n".join(rows)
    with open(os.path.join(out_dir, "accuracy.md"), "w") as fh:
        fh.write(f"# digits-resnet: ANN {100 * ann:.2f}%\n\n{table}\n")
    with open(os.path.join(out_dir, "accuracy.json"), "w") as fh:
        json.dump({"ann_accuracy": ann, "snn_accuracy": {str(t): a for t, a in acc.items()}}, fh, indent=2)
    plot_accuracy(os.path.join(out_dir, "accuracy_vs_T.png"), ann, acc)
    print(f"\nANN {100 * ann:.2f}%\n{table}\n\nresults in {out_dir}/")
    return ann, acc
