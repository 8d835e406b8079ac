"""ECMT spiking ViT on scikit-learn digits through the file format: reference bookkeeping vs the engine's counts.

    python -m benchmarks.digits_vit [--steps 1 2 4 8 12]

Trains DigitsViT (the tests' recipe, 40 epochs on CPU), exports it with and without relays
(`spikeforge.converter.ecmt_export`), runs every test image in the numba engine at each T, and prints accuracy,
the reference's ACs / MACs (`spikeforge.converter.ecmt`, the ECMT paper's bookkeeping) and the engine's synaptic
events / MACs per image, with the energy ratio of each (E_AC 0.9 pJ, E_MAC 4.6 pJ over the ANN's MACs).
"""
from __future__ import annotations

import argparse
import time

import torch

from spikeforge import simulator
from spikeforge.converter.ecmt import ann_macs, collect_thresholds, ecmt_forward, energy_ratio
from spikeforge.converter.ecmt_export import export_ecmt
from spikeforge.converter.training import accuracy, train_classifier
from spikeforge.data import load_digits_split
from spikeforge.models import DigitsViT


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, nargs="+", default=[1, 2, 4, 6, 8, 12])
    p.add_argument("--levels", type=int, default=4)
    args = p.parse_args(argv)
    xtr, ytr, xte, yte = load_digits_split(seed=0)
    torch.manual_seed(0)
    vit = train_classifier(DigitsViT(), xtr, ytr, epochs=40, lr=0.05, seed=0)
    ann = accuracy(vit, xte, yte)
    macs = ann_macs(vit, xte[:1])
    thresholds = collect_thresholds(vit, [xtr[:512]])
    flats = {}
    for relays in (True, False):
        t0 = time.time()
        flats[relays] = simulator.engine.prepare(export_ecmt(vit, thresholds, (1, 8, 8), args.levels, relays=relays))
        print(f"exported (relays={relays}) in {time.time() - t0:.1f} s", flush=True)
    print(f"ANN {100 * ann:.2f}%, {macs} MACs per image, {len(xte)} test images")
    print("| T | reference acc % | engine acc % | ref ACs | ref MACs | ref ratio | engine synops | engine MACs "
          "| engine ratio | no relays: synops / MACs / ratio |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    n = len(xte)
    for T in args.steps:
        out, ref = ecmt_forward(vit, xte, T, thresholds, n=args.levels)
        row = []
        for relays in (True, False):
            res = simulator.run(flats[relays], xte.numpy(), T)
            eng = {"acs": res.total("synops"), "macs": res.total("macs")}
            row.append((float((torch.as_tensor(res.predictions()) == yte).float().mean()), eng,
                        energy_ratio(eng, macs * n)))
        (acc, eng, ratio), (_, eng0, ratio0) = row
        print(f"| {T} | {100 * float((out.argmax(1) == yte).float().mean()):.2f} | {100 * acc:.2f} "
              f"| {ref['acs'] / n:,.0f} | {ref['macs'] / n:,.0f} | {energy_ratio(ref, macs * n):.3f} "
              f"| {eng['acs'] / n:,.0f} | {eng['macs'] / n:,.0f} | {ratio:.3f} "
              f"| {eng0['acs'] / n:,.0f} / {eng0['macs'] / n:,.0f} / {ratio0:.3f} |", flush=True)


if __name__ == "__main__":
    main()
