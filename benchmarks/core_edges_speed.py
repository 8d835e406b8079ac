"""Mapping time with a mapped network's core edges summed in place (`converter.mapping._sums_by_core`) against the
sort it replaced (np.unique per destination core and source), side by side in one process, alternating; checks
that both give the same cores, placement and core edges array for array.

    python -m benchmarks.core_edges_speed --out DIR [--net resnet50] [--target loihi] [--rounds 2]

Prints one line per mapping and writes DIR/core_edges_speed.json.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from spikeforge.converter import convert, mapping
from spikeforge.hwmodels import load_target
from spikeforge.simulator.atomic import write_text

from .fanin_split import _inputs, _network


def sums_by_sort(owner, count):
    """The sort the in-place sums replaced (session 30's core_edges), kept here as the reference."""
    reached, inverse = np.unique(owner, return_inverse=True)
    syn = np.bincount(inverse, weights=count, minlength=len(reached)).astype(np.int64)
    ax = np.bincount(inverse, weights=(count > 0).astype(np.float64), minlength=len(reached))
    keep = syn > 0
    return reached[keep].astype(np.int64), syn[keep], ax[keep].astype(np.int64)


def same_mapping(a, b) -> bool:
    cores = ("core_id", "chip", "x", "y", "population", "neuron_start", "neuron_stop")
    edges = ("src", "dst", "synapses", "axons")
    return all(np.array_equal(getattr(a.cores, f), getattr(b.cores, f)) for f in cores) and \
        all(np.array_equal(getattr(a.core_edges, f), getattr(b.core_edges, f)) for f in edges)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--net", default="resnet50")
    p.add_argument("--target", default="loihi")
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    model, shape, trained = _network(args.net)
    calib, _, _ = _inputs(args.net, shape, trained, argparse.Namespace(images=0, price=0, data_dir=None))
    net = convert(model, [calib], norm="percentile" if trained else "max", percentile=99.99)
    target = load_target(args.target)
    in_place = mapping._sums_by_core
    rows, first = [], {}
    try:
        for _ in range(args.rounds):
            for how, sums in (("sort", sums_by_sort), ("in place", in_place)):
                mapping._sums_by_core = sums
                t0 = time.perf_counter()
                m = mapping.map_network(net, target, chips=4096)
                seconds = time.perf_counter() - t0
                first.setdefault(how, m)
                rows.append({"sums": how, "map_s": round(seconds, 2), "cores": len(m.cores.core_id)})
                print(f"{args.net} onto {args.target}, core edges summed by {how}: {seconds:.1f} s, "
                      f"{len(m.cores.core_id)} cores", flush=True)
    finally:
        mapping._sums_by_core = in_place
    same = same_mapping(first["sort"], first["in place"])
    print(f"same cores, placement and core edges: {same}")
    write_text(os.path.join(args.out, "core_edges_speed.json"),
               json.dumps({"network": args.net, "target": args.target, "runs": rows, "same_mapping": same}, indent=1))
    if not same:
        raise SystemExit("the two ways of summing gave different mappings")


if __name__ == "__main__":
    main()
