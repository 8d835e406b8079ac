"""Map converted networks onto the built-in targets: cores, chips, Σ axons x hops for snake vs annealed
placement, simulated hops/packets, the busiest XY link (packets per image in its busiest step), NoC energy,
latency with the per-core and the link-level network model, mapping time; a table (Markdown) and PNGs.

    python -m benchmarks.mapping --out benchmarks/results/mapping
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch

from spikeforge import simulator
from spikeforge.converter import convert
from spikeforge.converter.mapping import MappingError, map_network
from spikeforge.converter.placement import placement_cost
from spikeforge.converter.training import train_classifier
from spikeforge.data import load_digits_split
from spikeforge.hwmodels import core_memory, estimate
from spikeforge.hwmodels.noc import chip_link_loads
from spikeforge.hwmodels.targets import load_target
from spikeforge.inspect_cores import core_loads, plot_cores
from spikeforge.models import DigitsResNet
from spikeforge.simulator.atomic import write_text


def _nets():
    torch.manual_seed(0)
    xtr, ytr, xte, yte = load_digits_split(seed=0)
    ann = train_classifier(DigitsResNet(), xtr, ytr, epochs=20, lr=0.05, seed=0)
    yield "digits-resnet", convert(ann, [xtr[:256]], norm="percentile", percentile=99.9), xte[:200].numpy()
    from .cifar10 import ARCHS

    r20 = ARCHS["resnet20"]().eval()  # structure only (random weights): mapping does not depend on values
    yield "cifar-resnet20", convert(r20, [torch.rand(16, 3, 32, 32)], norm="max"), None


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--T", type=int, default=8)
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    rows = []
    for name, net, x in _nets():
        for tname in ("loihi", "truenorth", "generic45nm"):
            target = load_target(tname)
            for placement in ("snake", "anneal"):
                t0 = time.time()
                try:
                    m = map_network(net, target, placement)
                except MappingError as exc:
                    rows.append({"network": name, "target": tname, "placement": placement, "error": str(exc)})
                    print(f"{name} on {tname}: {exc}")
                    break
                seconds = time.time() - t0
                e = m.core_edges
                pos = np.stack([m.cores.x, m.cores.y], 1)
                row = {"network": name, "target": tname, "placement": placement, "cores": len(m.cores),
                       "chips": int(m.cores.chip.max()) + 1, "axon_hops": placement_cost(pos, e.src, e.dst, e.axons),
                       "map_s": round(seconds, 2)}
                if x is not None:
                    res = simulator.run(m, x, args.T, record_links=True)
                    labels = [m.populations[int(i)].name for i in m.cores.population]
                    mem = core_memory(m)
                    ll = chip_link_loads(res, m, target, mem)
                    rep = estimate(res.counters, simulator.COUNTERS, len(x), target, labels, mem)
                    rep_links = estimate(res.counters, simulator.COUNTERS, len(x), target, labels, mem, links=ll)
                    row.update(packets=res.total("packets") / len(x), hops=res.total("hops") / len(x),
                               busiest_link=float(ll.busiest().max()) / len(x),
                               noc_uj=(rep.dynamic_pj["packets"] + rep.dynamic_pj["hops"]) / 1e6,
                               energy_uj=rep.energy_pj / 1e6, latency_us=rep.latency_ns / 1e3,
                               latency_links_us=rep_links.latency_ns / 1e3)
                rows.append(row)
                print(row, flush=True)
                if placement == "anneal":
                    plot_cores(m, core_loads(m, target), os.path.join(args.out, f"{name}_{tname}.png"),
                               f"{name} on {tname} ({len(m.cores)} cores, annealed placement)")
    write_text(os.path.join(args.out, "mapping.json"), json.dumps(rows, indent=2))
    cols = ["network", "target", "placement", "cores", "chips", "axon_hops", "packets", "hops", "busiest_link",
            "noc_uj", "energy_uj", "latency_us", "latency_links_us", "map_s"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['network']} | {r['target']} | does not fit: {r['error']} |")
            continue
        lines.append("| " + " | ".join(f"{r[c]:.4g}" if isinstance(r.get(c), float) else str(r.get(c, ""))
                                       for c in cols) + " |")
    write_text(os.path.join(args.out, "mapping.md"), "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
