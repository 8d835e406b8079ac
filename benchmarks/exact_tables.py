"""The CIFAR-10 ResNet-20 table's main rows with the file's exact semantics: every committed checkpoint converted as
`benchmarks.cifar10` converts it, simulated on all test images by the exact torch backend (float64, the numba
engine's spikes and counters), next to the float32 torch reference's accuracies recorded in run 2.

    python -m benchmarks.exact_tables --data-dir DATA [--T 1 2 4 8 16 32] [--out OUT.json]

Rows: IF with max norm (ReLU checkpoint, thresholds from 2,000 training images), QCFS L=4 with IF neurons, QCFS
L=4 with group neurons (τ=4). Also the synaptic operations per image (the engine's count). OUT defaults to
benchmarks/results/cifar10_resnet20_exact.json.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import torch

from spikeforge import simulator
from spikeforge.converter import QCFS, convert
from spikeforge.simulator.atomic import write_text

from .cifar10 import ResNet20, load_tensors

HERE = os.path.dirname(__file__)
METHODS = {  # name -> (checkpoint, activation, convert options, run-2 key)
    "IF, max norm": ("resnet20_relu.pt", None, dict(norm="max"), "if_max"),
    "QCFS L=4": ("resnet20_qcfs4.pt", lambda: QCFS(4, 8.0), dict(neuron="if"), "qcfs"),
    "QCFS L=4 + GN τ=4": ("resnet20_qcfs4.pt", lambda: QCFS(4, 8.0), dict(neuron="group", tau=4), "qcfs_gn"),
}


def _model(checkpoint, act):
    model = ResNet20() if act is None else ResNet20(act=act)
    state = torch.load(os.path.join(HERE, "checkpoints", checkpoint), map_location="cpu", weights_only=True)
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    return model.float().eval()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", required=True)
    p.add_argument("--T", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--limit", type=int, help="a random N test images (smoke test)")
    p.add_argument("--out", default=os.path.join(HERE, "results", "cifar10_resnet20_exact.json"))
    args = p.parse_args(argv)
    xtr, _, xte, yte = load_tensors(args.data_dir, "cpu", args.limit)
    with open(os.path.join(HERE, "results", "cifar10_resnet20_run2.json")) as fh:
        run2 = json.load(fh)["methods"]
    calib = [xtr[i:i + 500] for i in range(0, 2000, 500)]
    x, y = xte.double().numpy(), yte.numpy()
    rows = []
    for name, (checkpoint, act, options, key) in METHODS.items():
        flat = simulator.prepare(convert(_model(checkpoint, act), calib, **options))
        for T in args.T:
            t0 = time.perf_counter()
            res = simulator.run(flat, x, T, backend="torch", device=args.device)
            row = {"method": name, "T": T, "images": len(x), "accuracy": float((res.predictions() == y).mean()),
                   "float32_reference": run2.get(key, {}).get(str(T)),
                   "synops_per_image": res.total("synops") / len(x), "wall_s": round(time.perf_counter() - t0, 3),
                   "backend": f"torch exact on {args.device}"}
            rows.append(row)
            print(json.dumps(row), flush=True)
            write_text(args.out, json.dumps(rows, indent=1))
    print("| method | " + " | ".join(f"T={T}" for T in args.T) + " |")
    print("|---|" + "---:|" * len(args.T))
    for name in METHODS:
        cells = []
        for T in args.T:
            r = next(r for r in rows if r["method"] == name and r["T"] == T)
            ref = "" if r["float32_reference"] is None else f" ({100 * r['float32_reference']:.2f})"
            cells.append(f"{100 * r['accuracy']:.2f}{ref}")
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
