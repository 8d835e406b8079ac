"""Side-by-side check against SANA-FE: the same mapped fixed-point network, inputs and per-event costs in both
simulators; spikes, synaptic operations, packets, hops, readout, energy and wall time compared.

    python -m benchmarks.sanafe_compare --out benchmarks/results/sanafe [--samples 20 --T 8]

Needs `pip install sanafe` (the `compare` extra). Costs are aligned on the events both simulators price the same
way (synaptic op, spike, message, hop: the target's values); neuron updates and memory traffic are left out of
the aligned energy, because SANA-FE here updates every neuron in every step of its longer, depth-shifted run.
"""
from __future__ import annotations

import argparse
import json
import os

from spikeforge.hwmodels.targets import load_target
from spikeforge.interop.sanafe import EVENTS, compare
from spikeforge.simulator.atomic import write_text


def _digits_nets(seed=0):
    """Layered digits networks (an MLP and a small CNN) trained here, converted, fixed point (8 / 24 bits) and
    mapped on Loihi, once with its 1,024-neuron cores and once with 32-neuron cores (layers spread over many
    cores, packets travel several hops); and the test images."""
    import dataclasses

    import torch
    from torch import nn

    from spikeforge.converter import convert
    from spikeforge.converter.fixed_point import to_fixed_point
    from spikeforge.converter.mapping import map_network
    from spikeforge.converter.training import train_classifier
    from spikeforge.data import load_digits_split

    torch.manual_seed(seed)
    xtr, ytr, xte, yte = load_digits_split(seed=seed)
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10))
    cnn = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
                        nn.Flatten(), nn.Linear(16 * 4 * 4, 10))
    loihi = load_target("loihi")
    small = dataclasses.replace(loihi, limits=dict(loihi.limits, neurons_per_core=32))
    for name, model in (("MLP 64-128-64-10", mlp), ("CNN c8-c16s2-fc10", cnn)):
        ann = train_classifier(model, xtr, ytr, epochs=20, lr=0.05, seed=seed)
        snn = convert(ann, [xtr[:256]], norm="percentile", percentile=99.9)
        fixed = to_fixed_point(snn, loihi.limits["weight_bits"], int(loihi.limits["membrane_bits"]))
        for label, target in (("1024", loihi), ("32", small)):
            yield f"{name}, {label}-neuron cores", map_network(fixed, target, placement="anneal"), xte.numpy()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--samples", type=int, default=50)
    p.add_argument("--T", type=int, nargs="+", default=[4, 8])
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    target = load_target("loihi")
    rows = []
    for name, net, x in _digits_nets():
        for T in args.T:
            r = compare(net, x[:args.samples], T, target,
                        progress=lambda d, n: print(f"\r  {name} T={T}: sample {d}/{n}", end="", flush=True))
            print()
            row = {"network": name, "T": T, "cores": len(net.cores), "samples": r.samples,
                   **{f"ours_{k}": r.ours[k] for k in EVENTS}, **{f"sanafe_{k}": r.sanafe[k] for k in EVENTS},
                   "ours_energy_pj": r.ours_energy_pj, "sanafe_energy_pj": r.sanafe_energy_pj,
                   "energy_rel_diff": abs(r.sanafe_energy_pj - r.ours_energy_pj) / max(r.ours_energy_pj, 1e-30),
                   "readout_max_abs_diff": r.readout_max_diff, "same_predictions": r.same_predictions,
                   "ours_wall_s": r.ours_wall_s, "sanafe_sim_wall_s": r.sanafe_sim_wall_s,
                   "sanafe_build_wall_s": r.sanafe_build_wall_s,
                   "wall_ratio": r.sanafe_sim_wall_s / max(r.ours_wall_s, 1e-12),
                   "ours_latency_us": r.ours_latency_ns / r.samples / 1e3,
                   "sanafe_sim_time_us": r.sanafe_sim_time_ns / r.samples / 1e3}
            rows.append(row)
            print(json.dumps(row))
    write_text(os.path.join(args.out, "sanafe_compare.json"), json.dumps(rows, indent=1))
    lines = ["| network | T | cores | spikes (ours = SANA-FE) | synops | packets | hops |"
             " aligned energy µJ, all samples: ours / SANA-FE | readout"
             " | wall s ours (2 threads) / SANA-FE sim (1 thread) (ratio) | latency µs ours / SANA-FE |",
             "|---|---:|---:|---|---|---|---|---|---|---|---|"]
    for r in rows:
        def pair(k):
            a, b = r[f"ours_{k}"], r[f"sanafe_{k}"]
            return f"{a:,}" if a == b else f"{a:,} / {b:,}"
        lines.append(
            f"| {r['network']} | {r['T']} | {r['cores']} | {pair('spikes')} | {pair('synops')} | {pair('packets')} | "
            f"{pair('hops')} | {r['ours_energy_pj'] / 1e6:.4f} / {r['sanafe_energy_pj'] / 1e6:.4f} "
            f"({100 * r['energy_rel_diff']:.2g}%) | {r['same_predictions']}/{r['samples']} same, max diff "
            f"{r['readout_max_abs_diff']:.2g} | {r['ours_wall_s']:.3f} / {r['sanafe_sim_wall_s']:.2f} "
            f"({r['wall_ratio']:.0f}x) | {r['ours_latency_us']:.1f} / {r['sanafe_sim_time_us']:.1f} |")
    write_text(os.path.join(args.out, "sanafe_compare.md"), "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
