"""Energy / SOP / latency report of a network file on hardware targets: Markdown, JSON, CSV and PNG plots."""
from __future__ import annotations

import csv
import io
import json
import os

import numpy as np

from spikeforge import simulator
from spikeforge.hwmodels import ann_cost, band_short, band_text, core_memory, estimate, load_target, paper_energy_pj
from spikeforge.simulator.atomic import save_figure, write_text
from spikeforge.simulator.network import relay_layers

EVENT_COLORS = {"synops": "tab:blue", "macs": "tab:orange", "neuron_updates": "tab:green",
                "active_neurons": "yellowgreen", "spikes": "tab:red", "packets": "tab:purple",
                "packets_in": "plum", "hops": "tab:brown", "synapse_bytes_read": "tab:pink",
                "state_bytes_read": "tab:gray", "state_bytes_written": "tab:olive", "chip_packets": "tab:cyan",
                "chip_hops": "darkcyan"}


# legend names of the events whose counter names do not say what is priced
EVENT_LABELS = {"neuron_updates": "neuron access (every neuron, every step)",
                "active_neurons": "neuron update (input or bias)", "packets": "packets out",
                "packets_in": "packets in", "chip_packets": "packets leaving their chip",
                "chip_hops": "chip-to-chip links crossed"}


def evaluate(network, x, y, steps, targets, progress=None, runner=None, pricing=None):
    """Simulate every T once and price the counters on every target; returns (rows, runs, ann cost).

    pricing: optional {target name: hwmodels.estimate keyword options} (voltage, host_step_ns).

    progress: optional callable(n) told how many more samples were simulated (e.g. a tqdm bar's update);
    runner: callable(x, T, progress) -> Result that simulates (default: simulator.run on this process's numba
    engine; the command line passes one for another backend or a Dask cluster).
    """
    flat = simulator.prepare(network)
    net = flat.net
    ann = ann_cost(net)
    mem = core_memory(net)
    labels = [net.populations[int(p)].name for p in net.cores.population]
    targets = [load_target(t) if isinstance(t, str) else t for t in targets]
    si, mi = simulator.COUNTERS.index("synops"), simulator.COUNTERS.index("macs")
    rows, runs = [], {}
    for T in steps:
        seen = [0]

        def advance(done, total):
            progress(done - seen[0])
            seen[0] = done

        res = (runner or (lambda x, T, progress: simulator.run(flat, x, T, progress=progress)))(
            x, T, advance if progress else None)
        runs[T] = res
        acc = float((res.predictions() == np.asarray(y)).mean()) if y is not None else float("nan")
        sops = res.per_sample[:, si].astype(np.float64)
        macs = res.per_sample[:, mi].astype(np.float64)
        paper = paper_energy_pj(sops.mean(), macs.mean())
        paper_each = sops * 0.9 + macs * 4.6
        for tgt in targets:
            cost = estimate(res.counters, simulator.COUNTERS, len(x), tgt, labels, mem,
                            **(pricing or {}).get(tgt.name, {}))
            rows.append({"target": tgt.name, "T": T, "accuracy": acc, "sops_mean": sops.mean(), "sops_std": sops.std(),
                         "macs_mean": macs.mean(), "spikes_mean": float(res.per_sample[:, 2].mean()),
                         "paper_energy_uj": paper / 1e6, "paper_energy_std_uj": float(paper_each.std()) / 1e6,
                         "energy_ratio": paper / ann["energy_pj"], "target_energy_uj": cost.energy_pj / 1e6,
                         "target_dynamic_uj": cost.dynamic_total_pj / 1e6, "target_static_uj": cost.static_pj / 1e6,
                         "input_path": cost.input["mode"], "input_energy_uj": cost.input["energy_pj"] / 1e6,
                         "energy_band": band_text(tgt, "energy"), "latency_band": band_text(tgt, "latency"),
                         "energy_band_short": band_short(tgt, "energy"),
                         "latency_us": cost.latency_ns / 1e3, "steps": cost.steps, "voltage": cost.voltage,
                         "host_step_us": None if cost.host_step_ns is None else cost.host_step_ns / 1e3,
                         "components_uj": {k: v / 1e6 for k, v in cost.components().items()},
                         "ann_macs": ann["macs"], "ann_energy_uj": ann["energy_pj"] / 1e6, "cost": cost})
    return rows, runs, ann


def evaluate_mapped(fits, x, y, steps, progress=None, runner_for=None, pricing=None):
    """`evaluate` once per mapped network of `fits` ([spikeforge.fit.Fitted]: the targets that share a network are
    priced on one simulation). Returns (rows, runs, ann cost, mappings): rows in (T, target) order, each with its
    "mapping" in words; runs and the ANN cost of the first network; mappings [(network, [target names])].

    runner_for(network, fitted list, index): optional context manager giving evaluate's runner for that network
    (the command line's backend or Dask cluster); default simulator.run here."""
    import contextlib

    groups = {}
    for f in fits:
        groups.setdefault(id(f.network), (f.network, []))[1].append(f)
    rows, runs, ann = [], None, None
    for i, (net, group) in enumerate(groups.values()):
        with (runner_for(net, group, i) if runner_for else contextlib.nullcontext()) as runner:
            got, got_runs, got_ann = evaluate(net, x, y, steps, [f.target for f in group], progress, runner,
                                              pricing)
        said = {f.target.name: f.mapping for f in group}
        rows += [dict(r, mapping=said[r["target"]]) for r in got]
        runs, ann = runs or got_runs, ann or got_ann
    order = {f.target.name: k for k, f in enumerate(fits)}
    rows.sort(key=lambda r: (r["T"], order[r["target"]]))
    return rows, runs, ann, [(net, [f.target.name for f in group]) for net, group in groups.values()]


def fixed_point_rows(network, x, y, float_runs, targets, progress=None, max_bytes=None, run=None):
    """Float vs fixed-point (each target's weight and membrane widths) accuracy and prediction agreement per T.

    float_runs: {T: Result} of the float network on x (what `evaluate` returns as runs), so it is not simulated
    again; max_bytes: simulator.run's memory bound; run(network, x, T) -> Result: how the samples enter a network
    (default: simulator.run, static inputs; the command line passes its encoder or event binning). Targets without
    membrane_bits, or whose weights are wider than 24 bits (float-like), are skipped."""
    from spikeforge.converter.fixed_point import FixedPointError, to_fixed_point

    rows = []
    float_pred = {T: res.predictions() for T, res in float_runs.items()}
    for tgt in targets:
        wb, mb = int(tgt.limits["weight_bits"]), int(tgt.limits.get("membrane_bits", 0))
        if not mb or wb > 24:
            continue
        try:
            fixed = to_fixed_point(network, wb, mb)
        except FixedPointError as exc:
            rows.append({"target": tgt.name, "weight_bits": wb, "membrane_bits": mb, "error": str(exc)})
            continue
        for T in float_runs:
            res = run(fixed, x, T) if run is not None else simulator.run(fixed, x, T, max_bytes=max_bytes)
            pred = res.predictions()
            row = {"target": tgt.name, "weight_bits": wb, "membrane_bits": mb, "T": T,
                   "agreement": float((pred == float_pred[T]).mean())}
            if y is not None:
                row["float_accuracy"] = float((float_pred[T] == y).mean())
                row["fixed_accuracy"] = float((pred == y).mean())
            rows.append(row)
            if progress:
                progress(len(x))
    return rows


def fixed_point_table(rows):
    lines = ["| target | weight / membrane bits | T | float accuracy (%) | fixed accuracy (%) | loss (points) | "
             "same prediction (%) |", "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['target']} | {r['weight_bits']} / {r['membrane_bits']} | | not convertible: "
                         f"{r['error']} | | | |")
            continue
        fa, xa = r.get("float_accuracy"), r.get("fixed_accuracy")
        acc = (f"{100 * fa:.2f} | {100 * xa:.2f} | {100 * (fa - xa):.2f}" if fa is not None else " | | ")
        lines.append(f"| {r['target']} | {r['weight_bits']} / {r['membrane_bits']} | {r['T']} | {acc} | "
                     f"{100 * r['agreement']:.2f} |")
    return "\n".join(lines)


def markdown_table(rows, ann_acc=None):
    sp, sd = pick_unit(max((abs(r["sops_mean"]) for r in rows), default=0.0), COUNT_PREFIXES)
    mp, md = pick_unit(max((abs(r["macs_mean"]) for r in rows), default=0.0), COUNT_PREFIXES)
    head = (f"| target | T | accuracy (%) | SOPs{f' ({sp})' if sp else ''} mean ± std | MACs{f' ({mp})' if mp else ''} "
            "| E paper-style (μJ) | E_SNN / E_ANN | E target (μJ): dynamic + static | input path: its energy (μJ) "
            "| latency / inference (μs) |")
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|"]
    for r in rows:
        lines.append(f"| {r['target']} | {r['T']} | {100 * r['accuracy']:.2f} | {r['sops_mean'] / sd:.3g} ± "
                     f"{r['sops_std'] / sd:.2g} | {r['macs_mean'] / md:.3g} | {r['paper_energy_uj']:.3f} | "
                     f"{r['energy_ratio']:.3f} | {r['target_energy_uj']:.4g} = {r['target_dynamic_uj']:.4g} + "
                     f"{r['target_static_uj']:.4g} | {r['input_path']}: {r['input_energy_uj']:.4g} | "
                     f"{r['latency_us']:.2f} |")
    return "\n".join(lines)


def components_table(rows):
    """Each target energy figure split into its components (hwmodels.cost.COMPONENTS and static), with the
    validation band next to it."""
    names = list(rows[0]["components_uj"]) if rows else []
    lines = ["| target | T | chip steps | " + " | ".join(f"{n} (μJ)" for n in names) + " | energy band |",
             "|---|---:|---:|" + "---:|" * len(names) + "---|"]
    for r in rows:
        lines.append(f"| {r['target']} | {r['T']} | {r['steps']} | "
                     + " | ".join(f"{r['components_uj'][n]:.4g}" for n in names) + f" | {r['energy_band_short']} |")
    return "\n".join(lines)


def latency_table(rows):
    """Each target latency split into what its steps spent (hwmodels.cost.latency_parts): the slowest core's own
    time, the route, the barriers and any tick / host floor; and the layer whose cores were the slowest for the
    most of it: what to shorten to make the chip faster."""
    lines = ["| target | T | chip steps | latency (μs) | slowest core (μs) | route (μs) | barriers (μs) "
             "| tick / host floor (μs) | slowest cores mostly in |", "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        cost = r["cost"]
        parts = {k: v / 1e3 for k, v in cost.latency_parts_ns.items()}
        total = sum(cost.bounding_layers_ns.values())
        top = ", ".join(f"{name} ({100 * ns / total:.0f} %)" for name, ns in list(cost.bounding_layers_ns.items())[:2])
        lines.append(f"| {r['target']} | {r['T']} | {r['steps']} | {r['latency_us']:.4g} | {parts['compute']:.4g} | "
                     f"{parts['network']:.4g} | {parts['barrier']:.4g} | {parts['floor']:.4g} | {top or '-'} |")
    return "\n".join(lines)


def mapping_table(net, rows):
    """Per layer: neurons, the cores and chips it takes, how mapping split its fan-in (converter.fanin: the layer's
    parts, and its relay layer `L.part`) and its dynamic energy per inference on each target at the largest T:
    where a mapped network's cores and energy go, and what splitting adds."""
    T = max(r["T"] for r in rows)
    last = [r for r in rows if r["T"] == T]
    pop = np.asarray(net.cores.population)
    splits = {}
    for s in json.loads(net.attrs.get("fan_in_split", "[]")):  # a layer split more than once: a tree of relays
        splits.setdefault(s["layer"], []).append(s)
    relays = {r: layer for r, layer in relay_layers(net.projections).items() if layer in splits}
    lines = ["| layer | neurons | cores | chips | fan-in split | " + " | ".join(f"{r['target']} (μJ)" for r in last)
             + " |", "|---|---:|---:|---:|---|" + "---:|" * len(last)]
    for i, p in enumerate(net.populations):
        mine = pop == i
        how = "; ".join(f"{s['parts']} parts: {s['axons_before']} -> {s['relay_axons']} + {s['soma_axons']} axons"
                        for s in splits.get(p.name, [])) or (f"relays of {relays[p.name]}" if p.name in relays else "")
        energy = [sum(r["cost"].layer_energy_pj.get(p.name, {}).values()) / 1e6 for r in last]
        lines.append(f"| {p.name} | {p.size} | {int(mine.sum())} | {len(np.unique(net.cores.chip[mine]))} | {how} | "
                     + " | ".join(f"{e:.4g}" for e in energy) + " |")
    return "\n".join(lines)


def _mapping_sections(rows, mappings, T_max):
    """The Markdown lines of one per-layer mapping table per mapped network (the targets priced on it)."""
    out = []
    for net, names in mappings:
        mine = [r for r in rows if r["target"] in names]
        on = f" for {', '.join(names)}" if len(mappings) > 1 else ""
        out += [f"Mapping per layer{on} ({len(net.cores)} cores on {len(np.unique(net.cores.chip))} chip(s); "
                "fan-in splits as the mapping records them), with its dynamic energy per inference at T = "
                f"{T_max}:", "", mapping_table(net, mine), ""]
    return out


def band_table(rows):
    """Each target's validation band (benchmarks/validate_targets.py's table): how far its figures can be trusted."""
    seen = {}
    for r in rows:
        seen.setdefault(r["target"], (r["energy_band"], r["latency_band"]))
    lines = ["| target | energy: how far it can be trusted | latency |", "|---|---|---|"]
    lines += [f"| {t} | {e} | {lat} |" for t, (e, lat) in seen.items()]
    return "\n".join(lines)


def legend_label(name) -> str:
    """`name` as a legend shows it: matplotlib leaves out labels starting with "_" (an nn.Sequential's layers trace
    to "_0", "_1", ...), so such a name gets a leading space."""
    return " " + name if name[:1] == "_" else name


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


ENERGY_UNITS = (("pJ", 1.0), ("nJ", 1e3), ("µJ", 1e6), ("mJ", 1e9), ("J", 1e12))
COUNT_PREFIXES = (("", 1.0), ("k", 1e3), ("M", 1e6), ("G", 1e9))


def pick_unit(largest, units) -> tuple:
    """(name, size) of the largest of `units` ((name, size) pairs, ascending) that `largest` is at least one of
    (the first where it is below all): the unit that shows the largest figure between 1 and 1000."""
    unit = units[0]
    for u in units:
        if largest >= u[1]:
            unit = u
    return unit


def energy_unit(largest_pj) -> tuple:
    """(unit, pJ per unit) for an energy of `largest_pj` picojoules."""
    return pick_unit(largest_pj, ENERGY_UNITS)


def plot_energy_per_layer(path, cost, title):
    """Stacked bars of each layer's dynamic energy by event, in the unit that fits the largest bar; layers that
    spend nothing (an input the host writes) are named under the axis instead of drawn as empty bars."""
    plt = _plt()
    spent = {layer: sum(cost.layer_energy_pj[layer].values()) for layer in cost.layer_energy_pj}
    layers = [layer for layer, e in spent.items() if e > 0] or list(spent)
    idle = [layer for layer in spent if layer not in layers]
    events = [e for e in EVENT_COLORS if any(cost.layer_energy_pj[layer][e] > 0 for layer in layers)]
    unit, per = energy_unit(max(spent.values(), default=0.0))
    fig, ax = plt.subplots(figsize=(max(6, 0.8 * len(layers) + 2), 4))
    bottom = np.zeros(len(layers))
    for e in events:
        vals = np.array([cost.layer_energy_pj[layer][e] for layer in layers]) / per
        ax.bar(layers, vals, bottom=bottom, label=EVENT_LABELS.get(e, e), color=EVENT_COLORS[e])
        bottom += vals
    if bottom.max() > 0:  # headroom: the stacked bars' bottoms are sticky edges, so the tallest bar would touch
        ax.set_ylim(0, bottom.max() * 1.15)  # the frame (and the legend)
    ax.set_ylabel(f"dynamic energy per inference ({unit})")
    if idle:
        ax.set_xlabel(f"no dynamic energy: {', '.join(idle)}", fontsize=8, color="dimgray")
    ax.set_title(title)
    ax.tick_params(axis="x", rotation=45)
    for lab in ax.get_xticklabels():
        lab.set_horizontalalignment("right")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
    plt.close(fig)


def plot_spikes_per_step(path, res, net, n_samples, title):
    plt = _plt()
    spikes = res.counter("spikes") / n_samples  # (T, cores)
    fig, ax = plt.subplots(figsize=(6.5, 4))
    steps = np.arange(1, res.T + 1)
    for pi, pop in enumerate(net.populations):
        if pop.model != "if":
            continue
        cores = np.flatnonzero(net.cores.population == pi)
        rate = spikes[:, cores].sum(axis=1) / pop.size
        ax.plot(steps, rate, marker="o", ms=3, label=legend_label(pop.name))
    ax.set_xlabel("time step")
    ax.set_ylabel("spikes per neuron per step")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
    plt.close(fig)


def plot_accuracy_energy(path, rows, ann_acc, title):
    plt = _plt()
    targets = sorted({r["target"] for r in rows})
    first = [r for r in rows if r["target"] == targets[0]]
    steps = [r["T"] for r in first]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.plot(steps, [100 * r["accuracy"] for r in first], "o-k", label="SNN accuracy")
    if ann_acc is not None:
        ax.axhline(100 * ann_acc, color="k", ls="--", lw=1, label=f"ANN {100 * ann_acc:.1f}%")
    ax.set_xscale("log", base=2)
    ax.set_xticks(steps, [str(t) for t in steps])
    ax.set_xlabel("time steps T")
    ax.set_ylabel("accuracy (%)")
    ratio = [r["energy_ratio"] for r in first]
    ax2 = ax.twinx()
    ax2.plot(steps, ratio, "s--", color="tab:blue", label="E_SNN / E_ANN (45 nm)")
    ax2.set_ylabel("energy ratio SNN / ANN", color="tab:blue")
    # fixed ranges (accuracy 0-100 %, the ratio from 0) so two lines through the same T values do not land on
    # top of each other, as two autoscaled axes put any two points on the same diagonal
    ax.set_ylim(0, 105)
    ax2.set_ylim(0, max(ratio) * 1.3 if max(ratio) > 0 else 1)
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize=8, loc="lower right")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
    plt.close(fig)


def write_report(out_dir, name, rows, runs, ann, net, n_samples, ann_acc=None, fixed_rows=None, encoding=None,
                 synops="all", mappings=None, left_out=None):
    """Write report.md / report.json / report.csv and the PNG plots into out_dir; return the Markdown of the table
    and of each target's validation band (what the command line prints).

    mappings: [(network, [target names])]: the mapped network each target's rows were priced on (spikeforge.fit;
    default: `net` for every target), one per-layer mapping table each; rows with a "mapping" entry say in words
    which mapping their figures use. left_out: [(target name, why)] of targets that cannot hold the network.

    encoding: optional description of how the input was delivered (e.g. "rate (seed 0)"), shown in the header of
    report.md and stored in report.json; None leaves it out. synops: the counting convention the runs used
    (simulator.run's synops), stated in both."""
    os.makedirs(out_dir, exist_ok=True)
    T_max = max(runs)
    plots = []
    if len(runs) > 1:
        plot_accuracy_energy(os.path.join(out_dir, "accuracy_vs_T.png"), rows, ann_acc,
                             f"{name}: accuracy and energy vs T")
        plots.append("accuracy_vs_T.png")
    plot_spikes_per_step(os.path.join(out_dir, f"spikes_per_step_T{T_max}.png"), runs[T_max], net, n_samples,
                         f"{name}: firing rate per layer (T={T_max})")
    plots.append(f"spikes_per_step_T{T_max}.png")
    for r in rows:
        if r["T"] == T_max:
            fname = f"energy_per_layer_{r['target']}_T{T_max}.png"
            plot_energy_per_layer(os.path.join(out_dir, fname), r["cost"], f"{name} on {r['target']} (T={T_max})")
            plots.append(fname)
    table = markdown_table(rows)
    bands = band_table(rows)
    md = [f"# spikeforge report: {name}", ""]
    if encoding is not None:
        md += [f"input encoding: {encoding}", ""]
    said = {r["target"]: r["mapping"] for r in rows if r.get("mapping")}
    if said:
        md += ["mapping priced: " + "; ".join(f"{t}: {m}" for t, m in said.items()), ""]
    if left_out:
        md += ["left out (the network does not fit them): " + "; ".join(f"{t}: {why}" for t, why in left_out), ""]
    priced = sorted({(r["target"], r["voltage"]) for r in rows if r["voltage"] is not None})
    paced = {r["host_step_us"] for r in rows if r["host_step_us"] is not None}
    if priced or paced:
        md += ["priced at: " + "; ".join([f"{t} {v:g} V" for t, v in priced]
                                         + [f"host-paced steps of at least {p:g} µs" for p in paced]), ""]
    md += [f"{n_samples} samples. ANN: {ann['macs'] / 1e6:.3f} M MACs per inference, {ann['energy_pj'] / 1e6:.3f} μJ "
           f"(45 nm, E_MAC = 4.6 pJ)" + (f", accuracy {100 * ann_acc:.2f}%." if ann_acc is not None else "."), "",
           "Conventions: SOPs = synaptic operations (spikes x fan-out, summed over T), mean ± std over samples; "
           + ("SOPs and MACs count every stored synapse an event reaches, zero weights included (synops all); "
              if synops == "all" else "SOPs and MACs count nonzero weights of weighted connections only, "
              "NeuroBench's effective operations (synops effective; identity and pooling connections count none); ")
           +
           "MACs = analog input layer; paper-style energy = SOPs x 0.9 pJ + MACs x 4.6 pJ and its ratio to the "
           "ANN's MACs x 4.6 pJ (as in the conversion papers); target energy = every counted event priced by the "
           "target file (dynamic) + static power x latency, over the steps the chip runs (T plus one per layer on "
           "a pipelined target); a step lasts as long as its slowest core (compute, its messages out and in) + "
           "one packet's route + the barrier (at least the target's tick). Dynamic energy counts events (every "
           "mapped neuron is accessed each step; neurons with input or a bias are also updated); static energy is "
           "the power per used core and per powered chip the target publishes, over the latency. Input path: "
           "analog input is counted as MACs on the first layer and priced as the target takes it (MAC units, "
           "biases the host writes, or drive events), spike-encoded input (0/1 frames, encoders) as synaptic ops "
           "on the cores it feeds.", "", table, "",
           "Energy by component (dynamic: synapse, neuron access, neuron update, spikes, messages, hops, chip links "
           "(packets that leave their chip and the chip-to-chip links they cross), input; and static), with the "
           "band of the target's independent validation rows:", "", components_table(rows), "",
           "Latency by part (per inference, summed over the chip steps) and the layers whose cores were the slowest "
           "(their share of the slowest-core time):", "", latency_table(rows), "",
           *_mapping_sections(rows, mappings or [(net, sorted({r["target"] for r in rows}))], T_max),
           "Validation band of each target (published chip measurements vs this model; the rows are listed in "
           "docs/TARGETS.md and computed by benchmarks/validate_targets.py, both in spikeforge's source tree, not "
           "in the installed package):", "", bands, ""]
    if fixed_rows:
        md += ["## Fixed point", "", "Weights quantized to the target's weight bits with one scale per population, "
               "integer thresholds, per-step input rounded to integers, membrane saturating at the target's "
               "membrane bits (converter.fixed_point).", "", fixed_point_table(fixed_rows), ""]
    md += [f"![{p}]({p})" for p in plots]
    text = "\n".join(md) + "\n"
    write_text(os.path.join(out_dir, "report.md"), text)
    clean = [{k: v for k, v in r.items() if k != "cost"} | {"cost": r["cost"].to_dict()} for r in rows]
    doc = {"name": name, "samples": n_samples, "encoding": encoding, "synops": synops, "ann": ann,
           "left_out": [{"target": t, "why": why} for t, why in left_out or ()],
           "ann_accuracy": ann_acc,
           "rows": clean, "fixed_point": fixed_rows or []}
    write_text(os.path.join(out_dir, "report.json"), json.dumps(doc, indent=2))
    buf = io.StringIO()
    fields = [k for k in rows[0] if k not in ("cost", "components_uj")]
    parts = list(rows[0]["components_uj"])
    w = csv.DictWriter(buf, fieldnames=fields + [f"{p.replace(' ', '_')}_uj" for p in parts])
    w.writeheader()
    for r in rows:  # one column per energy component
        w.writerow({k: r[k] for k in fields} | {f"{p.replace(' ', '_')}_uj": r["components_uj"][p] for p in parts})
    write_text(os.path.join(out_dir, "report.csv"), buf.getvalue())
    return f"{table}\n\nvalidation band of each target (how far its figures can be trusted):\n{bands}"
