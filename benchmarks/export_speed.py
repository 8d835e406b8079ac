"""ECMT export speed, side by side: this checkout's `converter/ecmt_export.py` and the one of an earlier commit,
alternating in one process on the CIFAR-10 ViT (the trained checkpoint when present, else random weights), and
whether both write the same network.

    python -m benchmarks.export_speed [--old REV] [--reps 2] [--out OUT.json]

--old: a git revision whose exporter is loaded from `git show REV:converter/ecmt_export.py` (default HEAD~1).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

from spikeforge.converter import ecmt_export
from spikeforge.converter.ecmt import collect_thresholds
from spikeforge.models import ViT
from spikeforge.simulator.atomic import write_text

ROOT = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))


def _old_exporter(rev):
    """The exporter module of git revision `rev` (its relative imports made absolute)."""
    text = subprocess.run(["git", "-C", ROOT, "show", f"{rev}:converter/ecmt_export.py"], check=True,
                          capture_output=True, text=True).stdout
    text = text.replace("from .ecmt ", "from spikeforge.converter.ecmt ").replace(
        "from .mapping ", "from spikeforge.converter.mapping ")
    path = os.path.join(tempfile.mkdtemp(), "old_ecmt_export.py")
    with open(path, "w") as f:
        f.write(text)
    spec = importlib.util.spec_from_file_location("old_ecmt_export", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["old_ecmt_export"] = module
    spec.loader.exec_module(module)
    return module


def _same(a, b):
    """Same populations and bit-identical projection arrays."""
    if [p.name for p in a.populations] != [p.name for p in b.populations]:
        return False
    return all(np.array_equal(getattr(x, k), getattr(y, k)) for x, y in zip(a.projections, b.projections)
               for k in ("weight", "indices", "indptr") if getattr(x, k, None) is not None)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--old", default="HEAD~1")
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--out")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    model = ViT(3, 32, 4, 192, 4, 4, 384).eval()  # benchmarks/cifar10_vit.py's defaults
    ckpt = os.path.join(os.path.dirname(__file__), "checkpoints", "cifar10_vit.pt")
    if os.path.exists(ckpt):
        model.load_state_dict({k: v.float() for k, v in torch.load(ckpt, map_location="cpu",
                                                                   weights_only=True).items()})
    thresholds = collect_thresholds(model, [torch.rand(64, 3, 32, 32)], p=99.0)
    old = _old_exporter(args.old)
    rows, nets = [], {}
    for rep in range(args.reps):
        for name, module in (("old", old), ("new", ecmt_export)):
            t0 = time.perf_counter()
            nets[name] = module.export_ecmt(model, thresholds, (3, 32, 32), levels=4)
            rows.append({"rep": rep, "exporter": name, "seconds": round(time.perf_counter() - t0, 1)})
            print(json.dumps(rows[-1]), flush=True)
    result = {"old": args.old, "trained": os.path.exists(ckpt), "runs": rows,
              "same_network": _same(nets["old"], nets["new"])}
    print(json.dumps({"same_network": result["same_network"]}))
    if args.out:
        write_text(args.out, json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
