"""The `spikeforge` command line."""
from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time

EXAMPLES = {
    "demo": "spikeforge demo --out spikeforge-demo",
    "convert": "spikeforge convert --model benchmarks.models:DigitsResNet --weights resnet.pt "
               "--calibration calib.npz --out net.h5 --norm percentile --percentile 99.99",
    "inspect": "spikeforge inspect net.h5",
}


def _parser():
    p = argparse.ArgumentParser(prog="spikeforge", description="ANN-to-SNN conversion and event-driven "
                                "neuromorphic hardware simulation.")
    sub = p.add_subparsers(dest="command", required=True)

    def add(name, help_text):
        return sub.add_parser(name, help=help_text, description=help_text,
                              epilog=f"example:\n  {EXAMPLES[name]}", formatter_class=argparse.RawDescriptionHelpFormatter)

    d = add("demo", "Train a small CNN on scikit-learn digits, convert it, and evaluate the SNN for several T.")
    d.add_argument("--out", default="spikeforge-demo", help="output folder (default: %(default)s)")
    d.add_argument("--epochs", type=int, default=20)
    d.add_argument("--T", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32], help="time steps to evaluate")

    c = add("convert", "Convert a trained torch model into a network file.")
    c.add_argument("--model", required=True, help="MODULE:CALLABLE returning the torch.nn.Module")
    c.add_argument("--weights", help="state_dict saved with torch.save (loaded with weights_only=True)")
    c.add_argument("--calibration", required=True, help=".npy or .npz (first array, or --key) of input samples")
    c.add_argument("--key", help="array name inside the .npz")
    c.add_argument("--out", required=True, help="network file to write (HDF5)")
    c.add_argument("--norm", choices=("max", "percentile"), default="percentile")
    c.add_argument("--percentile", type=float, default=99.99)
    c.add_argument("--v-init", type=float, default=0.5, help="initial potential as a fraction of θ")
    c.add_argument("--batch-size", type=int, default=128)

    i = add("inspect", "Validate a network file and summarize its populations, projections and cores.")
    i.add_argument("file")
    i.add_argument("--json", action="store_true", help="print the summary as JSON")
    return p


def _load_model(spec, weights):
    import torch

    if ":" not in spec:
        raise SystemExit(f"--model must be MODULE:CALLABLE, got {spec!r}")
    mod, attr = spec.split(":", 1)
    sys.path.insert(0, os.getcwd())
    model = getattr(importlib.import_module(mod), attr)()
    if weights:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    return model


def _load_array(path, key):
    import numpy as np

    data = np.load(path, allow_pickle=False)
    if isinstance(data, np.lib.npyio.NpzFile):
        names = list(data.keys())
        if key is None and not names:
            raise SystemExit(f"{path}: empty .npz")
        name = key or names[0]
        if name not in names:
            raise SystemExit(f"{path}: no array {name!r} (has {names})")
        data = data[name]
    return data


def cmd_convert(args):
    import torch
    from tqdm import tqdm

    from converter import convert, write_network

    model = _load_model(args.model, args.weights)
    x = torch.as_tensor(_load_array(args.calibration, args.key), dtype=torch.float32)
    batches = [x[i:i + args.batch_size] for i in range(0, len(x), args.batch_size)]
    bar = tqdm(total=len(batches), desc="calibration batches", disable=None)
    net = convert(model, batches, norm=args.norm, percentile=args.percentile, v_init_fraction=args.v_init,
                  progress=lambda i: bar.update(1))
    bar.close()
    write_network(net, args.out)
    print(f"wrote {args.out}: {len(net.populations)} populations, {len(net.projections)} projections")


def summarize(net):
    from simulator.geometry import synapse_count

    shapes = {p.name: p.shape for p in net.populations}
    return {
        "attrs": {k: (v.item() if hasattr(v, "item") else v) for k, v in net.attrs.items()
                  if k not in ("population_order", "projection_order")},
        "populations": [{"name": p.name, "model": p.model, "shape": list(p.shape), "neurons": p.size,
                         "threshold_mean": float(p.threshold.mean())} for p in net.populations],
        "projections": [{"name": q.name, "kind": q.kind, "source": q.source, "target": q.target,
                         "synapses": synapse_count(q, shapes[q.source], shapes[q.target])} for q in net.projections],
        "cores": len(net.cores),
    }


def cmd_inspect(args):
    from simulator import load_network

    s = summarize(load_network(args.file))
    if args.json:
        print(json.dumps(s, indent=2, default=str))
        return
    print(f"{args.file}: valid, format {s['attrs'].get('format_version')}, {s['cores']} cores")
    print(f"{'population':24} {'model':8} {'shape':>14} {'neurons':>9} {'θ mean':>9}")
    for p in s["populations"]:
        print(f"{p['name']:24} {p['model']:8} {str(tuple(p['shape'])):>14} {p['neurons']:>9} {p['threshold_mean']:>9.4f}")
    print(f"\n{'projection':24} {'kind':9} {'source -> target':40} {'synapses':>10}")
    for q in s["projections"]:
        print(f"{q['name']:24} {q['kind']:9} {q['source'] + ' -> ' + q['target']:40} {q['synapses']:>10}")


def cmd_demo(args):
    from benchmarks.demo import run_demo

    run_demo(args.out, epochs=args.epochs, steps=args.T)


def main(argv=None):
    args = _parser().parse_args(argv)
    t0 = time.time()
    try:
        {"demo": cmd_demo, "convert": cmd_convert, "inspect": cmd_inspect}[args.command](args)
    except (ValueError, FileNotFoundError) as exc:  # NetworkFileError, ConversionError included
        print(f"spikeforge {args.command}: error: {exc}", file=sys.stderr)
        return 2
    if args.command == "demo":
        print(f"done in {time.time() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
