"""Stage II ablation on CIFAR-10: many fine-calibration settings on one Stage I result, each scored on the test set.

    python -m benchmarks.cifar10_calibration --data-dir DATA --load CKPT --arch resnet20w --T 2 --p 1 --ft-epochs 40 \
        --settings base lr=1e-3 n=2048 seed=1 flip bias readout --out OUT

CKPT holds <arch>_clip.pt and <arch>_qc_T<T>_p<p>_ft<E>.pt (written by benchmarks.cifar10); settings as in
spikeforge.converter.calibration.parse_setting. Accuracy is reported on all 10k test images and on two random halves,
so a
setting can be chosen on one half and reported on the other. Writes OUT/cifar10_<arch>_calibration_T<T>.json
after every setting, and a Markdown table.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import torch

from spikeforge.converter import ClipReLU, SpikingNetwork, convert
from spikeforge.converter.calibration import parse_setting
from spikeforge.converter.qc import to_qc_ann
from spikeforge.simulator.atomic import write_text

from .cifar10 import ARCHS, ann_accuracy, fine_calibrate, prepare_run, stage_one_kind


def split_accuracy(net, xte, yte, T, dev):
    """(accuracy on all test images, on the half chosen at random with seed 0 ("val"), on the other half):
    settings are chosen on one half and reported on the other, so the choice does not flatter the result."""
    snn = SpikingNetwork(net, dtype=torch.float32, device=dev)
    hit = (snn.predict(xte, T, batch_size=1000) == yte.cpu()).float()
    half = torch.randperm(len(hit), generator=torch.Generator().manual_seed(0))
    val, test = half[:len(hit) // 2], half[len(hit) // 2:]
    return float(hit.mean()), float(hit[val].mean()), float(hit[test].mean())


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", required=True)
    p.add_argument("--load", required=True, help="folder with the clip ANN and Stage I checkpoints")
    p.add_argument("--arch", choices=sorted(ARCHS), default="resnet20w")
    p.add_argument("--T", type=int, default=2)
    p.add_argument("--p", type=float, default=1.0)
    p.add_argument("--ft-epochs", type=int, default=40)
    p.add_argument("--settings", nargs="+", default=["base"])
    p.add_argument("--limit", type=int, help="use only N training / test images (smoke test)")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    try:  # reject bad settings before any work
        settings = [(s, parse_setting(s)) for s in args.settings]
    except ValueError as e:
        p.error(str(e))
    dev, (xtr, ytr, xte, yte) = prepare_run(args)
    source = ARCHS[args.arch](act=lambda: ClipReLU(4.0, trainable=True))
    calib = [xtr[i:i + 500] for i in range(0, 2000, 500)]
    qc = to_qc_ann(source.to(dev), args.T, p=args.p, calibration=calib)
    path = os.path.join(args.load, f"{args.arch}_{stage_one_kind(args.T, args.p, args.ft_epochs)}.pt")
    qc.load_state_dict(torch.load(path, map_location=dev, weights_only=True))
    qc = qc.to(dev).eval()
    net = convert(qc, calib)
    res = {"arch": args.arch, "T": args.T, "p": args.p, "ft_epochs": args.ft_epochs,
           "qc_ann": ann_accuracy(qc, xte, yte), "qc_snn": split_accuracy(net, xte, yte, args.T, dev)[0],
           "rows": []}
    out = os.path.join(args.out, f"cifar10_{args.arch}_calibration_T{args.T}")
    print(f"QC-ANN {res['qc_ann']:.4f}, QC-SNN {res['qc_snn']:.4f}", flush=True)
    for name, s in settings:
        t0 = time.time()
        acc = split_accuracy(fine_calibrate(net, qc, xtr, args.T, s, dev), xte, yte, args.T, dev)
        row = {"setting": name, **s, "fc": acc[0], "fc_val": acc[1], "fc_test": acc[2], "seconds": time.time() - t0}
        res["rows"].append(row)
        print(f"{name}: {acc[0]:.4f} (val half {acc[1]:.4f}, test half {acc[2]:.4f}; {row['seconds']:.0f} s)",
              flush=True)
        write_text(out + ".json", json.dumps(res, indent=2))
    lines = [f"QC-ANN {100 * res['qc_ann']:.2f}, QC-SNN {100 * res['qc_snn']:.2f} (T={args.T})", "",
             "| setting | CC + FC % (all) | val half | test half |", "|---|---:|---:|---:|"]
    lines += [f"| {r['setting']} | {100 * r['fc']:.2f} | {100 * r['fc_val']:.2f} | {100 * r['fc_test']:.2f} |"
              for r in res["rows"]]
    write_text(out + ".md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
