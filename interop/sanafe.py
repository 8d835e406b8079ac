"""Export a converted, mapped, fixed-point network to SANA-FE (PyPI `sanafe`) and run both side by side.

SANA-FE (Boyle et al., "SANA-FE: Simulating Advanced Neuromorphic Architectures for Fast Exploration") runs a
mapped SNN on a tiled architecture description and reports spikes, messages, hops, energy and time. The export
keeps the two simulations event for event identical:

- architecture: one SANA-FE tile per spikeforge core at the core's mesh (x, y) (tile id = x·height + y, as
  SANA-FE numbers them), each with one core; per-event energies and latencies are the target's (synaptic op,
  spike, message = packet, hop in every direction); everything spikeforge prices elsewhere is 0;
- timing: SANA-FE delivers a spike one step after it is sent; a spikeforge projection delivers `delay` steps
  after (0: the same step). Each population runs spikeforge step t at SANA-FE step t + o + 1 for an offset o
  with o(target) = o(source) + 1 - delay along every projection between spiking populations: a layered
  network (delays 0) has o = its depth, a pipelined one (every delay 1, `map_network(..., hop_delay=1)`, the
  hardware's own timing) o = 1 everywhere, residual blocks included. Paths that disagree (a skip connection
  with delays 0) are refused naming the projection; SANA-FE 2.2.9's synaptic delays did not take effect in our
  tests, so they are not used. The analog input is a drive (below), so projections from it take any delay;
- drive neurons (SANA-FE "input" somas with spike trains) stand in for what SANA-FE has no field for: the
  analog input (one per first-layer neuron, weight = the rounded per-step input current, firing T times), the
  initial membrane (a "kick" per core, once), per-step biases (a "bias" per core, T times), and the end of the
  run (a "clamp" per core sends -2^40 after the last step, so no spike leaks out of a layer's T-step window).
  SANA-FE 2.2.9 keeps one spike-train position per core for its input somas (two input neurons on one core
  disturb each other's trains), so every drive neuron gets a core of its own on its target's tile: zero
  hops, and a drive core's soma and messages cost nothing. Its spikes are still charged at the target's
  synapse unit (SANA-FE picks the synapse unit of the receiving neuron), so the export returns how many
  synaptic events the drives cause, and the comparison subtracts them;
- fixed point only (integer weights, thresholds, membranes): SANA-FE fires when V > threshold, spikeforge when
  V >= θ; every membrane is shifted by +1/2, which makes the two tests the same on integers and leaves the
  subtractive reset exact; neurons update every step (force_update), as spikeforge's do.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass, field

import numpy as np

from spikeforge.errors import UserError

from .. import simulator
from ..hwmodels import core_memory, estimate
from ..hwmodels.noc import chip_link_loads
from ..simulator.atomic import atomic_output, write_text
from ..simulator.geometry import explicit_synapses

DRIVE_SOMA = "drive_soma"
CLAMP = -float(2 ** 40)
SUPPORTED_MODELS = ("input", "if", "readout")


class SanaFeExportError(UserError):
    """The network has a part the SANA-FE export cannot represent exactly; the message names it."""


def step_offsets(net) -> dict:
    """Population name -> o, such that spikeforge step t of the population runs at SANA-FE step t + o + 1 (the
    input has none: its values come from drive neurons); the smallest offset is 1, so a layered network's offsets
    are its depths. Refuses a projection whose delay does not line up with the other paths into its target."""
    offset = {}
    for pop in net.populations[1:]:
        incoming = [q for q in net.incoming(pop.name) if q.source != net.input.name]
        inputs = {int(q.delay) for q in net.incoming(pop.name) if q.source == net.input.name}
        if len(inputs) > 1:
            raise SanaFeExportError(f"population {pop.name!r} gets the input through projections of different "
                                    f"delays {sorted(inputs)}: one input drive per neuron cannot give both")
        if not incoming:
            offset[pop.name] = 0
            continue
        want = {q.name: offset[q.source] + 1 - int(q.delay) for q in incoming}
        first = incoming[0]
        for q in incoming[1:]:
            if want[q.name] != want[first.name]:
                raise SanaFeExportError(
                    f"projection {q.name!r} ({q.source!r} -> {q.target!r}, delay {q.delay}) does not line up with "
                    f"{first.name!r} ({first.source!r} -> {first.target!r}, delay {first.delay}): SANA-FE delivers "
                    "every spike one step after it is sent, so every path into a population must take the same "
                    "number of steps; pipeline the network (every projection one step, map_network(..., "
                    "hop_delay=1) or convert --hop-delay 1) or keep it strictly layered")
        offset[pop.name] = want[first.name]
    low = min(offset.values(), default=0)
    return {k: v - low + 1 for k, v in offset.items()}


depths = step_offsets  # the name before delays existed (a layered network's offsets are its depths)


def check_exportable(net):
    """Raise SanaFeExportError naming the first part with no exact SANA-FE form."""
    if net.attrs.get("numeric_mode") != "fixed":
        raise SanaFeExportError("the SANA-FE export needs a fixed-point network (converter.fixed_point."
                                "to_fixed_point): SANA-FE's threshold test is strict, spikeforge's is not")
    for pop in net.populations:
        if pop.model not in SUPPORTED_MODELS:
            raise SanaFeExportError(f"population {pop.name!r}: neuron model {pop.model!r} has no SANA-FE form here "
                                    f"(supported: {', '.join(SUPPORTED_MODELS)})")
        if pop.model == "if" and pop.reset not in ("subtract", "zero"):
            raise SanaFeExportError(f"population {pop.name!r}: reset {pop.reset!r} is not exported")
        if (pop.spike_value, pop.threshold_test) != ("threshold", "ge"):
            raise SanaFeExportError(f"population {pop.name!r}: spike_value {pop.spike_value!r} / threshold_test "
                                    f"{pop.threshold_test!r} is not exported (the shifts assume spikeforge's own)")
    for q in net.projections:
        if net.recurrent(q):
            raise SanaFeExportError(f"projection {q.name!r}: recurrent projections are not exported to SANA-FE "
                                    "(the side-by-side covers feed-forward networks)")
    chips = len(np.unique(net.cores.chip))
    if chips > 1:
        raise SanaFeExportError(f"the network spans {chips} chips; the SANA-FE export describes one chip's mesh "
                                "(and spikeforge counts chip-to-chip links apart from its hops): map it onto one chip")
    xy = set(zip(net.cores.x.tolist(), net.cores.y.tolist()))
    if len(xy) != len(net.cores):
        raise SanaFeExportError("two cores share a mesh position: map the network first "
                                "(spikeforge.converter.mapping.map_network) so every core has its own tile")
    step_offsets(net)


def drives_per_core(net) -> np.ndarray:
    """Drive neurons each spikeforge core needs: kick, clamp and bias (spiking layers), kick and bias (readout),
    plus one input neuron per neuron of a first-layer core."""
    first = {q.target for q in net.projections if q.source == net.input.name}
    out = np.zeros(len(net.cores), np.int64)
    for i in range(len(net.cores)):
        pop = net.populations[int(net.cores.population[i])]
        if pop.model == "input":
            continue
        out[i] = 3 + (net.cores.size(i) if pop.name in first else 0)
    return out


def architecture(net, target) -> dict:
    """SANA-FE architecture description (a dict; JSON is valid YAML) with the target's per-event costs: one tile
    per core position, holding the core and its drive cores."""
    e = {k: target.energy_per_event(k) * 1e-12 for k in ("synops", "spikes", "packets", "hops")}
    t = {k: target.time_ns[k] * 1e-9 for k in ("synops", "spikes", "packets", "hops")}
    width, height = int(net.cores.x.max()) + 1, int(net.cores.y.max()) + 1
    per_core = int(net.cores.sizes().max())
    hop = {f"{kind}_{d}_hop": (e if kind == "energy" else t)["hops"]
           for d in ("north", "east", "south", "west") for kind in ("energy", "latency")}
    free = {"energy_access_neuron": 0.0, "latency_access_neuron": 0.0, "energy_update_neuron": 0.0,
            "latency_update_neuron": 0.0, "energy_spike_out": 0.0, "latency_spike_out": 0.0}

    def core(name, drive):
        return {
            "name": name, "attributes": {"buffer_position": "soma", "max_neurons_supported": 1 if drive else per_core},
            "axon_in": [{"name": "axon_in", "attributes": {"energy_message_in": 0.0, "latency_message_in": 0.0}}],
            "synapse": [{"name": "synapse", "attributes": {"model": "current_based", "energy_process_spike":
                                                           e["synops"], "latency_process_spike": t["synops"]}}],
            "dendrite": [{"name": "dendrite", "attributes": {"model": "accumulator", "energy_update": 0.0,
                                                             "latency_update": 0.0}}],
            "soma": [{"name": DRIVE_SOMA, "attributes": dict(free, model="input")}] if drive else
                    [{"name": "soma", "attributes": dict(free, model="leaky_integrate_fire",
                                                         energy_spike_out=e["spikes"], latency_spike_out=t["spikes"])}],
            "axon_out": [{"name": "axon_out", "attributes": {
                "energy_message_out": 0.0 if drive else e["packets"], "latency_message_out": 0.0 if drive else
                t["packets"]}}],
        }

    m = int(drives_per_core(net).max())
    cores = [core("core", False)] + ([core(f"drive[0..{m - 1}]", True)] if m else [])
    return {"architecture": {"name": f"spikeforge-{target.name}",
                             "attributes": {"link_buffer_size": 16, "width": width, "height": height},
                             "tile": [{"name": f"tile[0..{width * height - 1}]", "attributes": hop, "core": cores}]}}


def write_architecture(net, target, path):
    write_text(path, json.dumps(architecture(net, target), indent=1))


def synapse_lists(net) -> list:
    """(source, target, weights, (source, target) pairs) of every projection out of a spiking population, as the
    Python lists SANA-FE takes; the same for every sample, so callers building many samples compute them once.
    Zero weights stay: they are stored synapses, and spikeforge counts their events too."""
    shapes = {p.name: p.shape for p in net.populations}
    out = []
    for q in net.projections:
        if q.source != net.input.name:
            s, t, w = explicit_synapses(q, shapes[q.source], shapes[q.target])
            out.append((q.source, q.target, w.tolist(), list(zip(s.tolist(), t.tolist()))))
    return out


def first_layer_drive(net, x) -> dict:
    """Per first-layer population: the integer input each neuron gets every step, round(Σ W·x + bias) half up,
    as spikeforge's fixed-point engine rounds it."""
    shapes = {p.name: p.shape for p in net.populations}
    out = {}
    x = np.asarray(x, np.float64).reshape(-1)
    for q in net.projections:
        if q.source != net.input.name:
            continue
        tgt = net.population(q.target)
        s, t, w = explicit_synapses(q, shapes[q.source], shapes[q.target])
        cur = out.get(q.target, np.asarray(tgt.bias, np.float64).copy())
        np.add.at(cur, t, np.asarray(w, np.float32).astype(np.float64) * x[s])
        out[q.target] = cur
    return {k: np.floor(v + 0.5) for k, v in out.items()}


def build_network(sanafe, arch, net, x, T, synapses=None):
    """A sanafe.Network for one sample x (input shape), mapped like `net`; synapses: synapse_lists(net), if
    already computed.

    Returns (network, steps to run, drive synaptic events): the run covers the deepest population's window.
    """
    depth = step_offsets(net)
    input_delay = {q.target: int(q.delay) for q in net.projections if q.source == net.input.name}
    m = int(drives_per_core(net).max())
    hw = arch.cores()
    tiles = net.cores.x * (int(net.cores.y.max()) + 1) + net.cores.y  # SANA-FE numbers tiles column by column
    steps = T + max(depth.values())
    drive = first_layer_drive(net, x)
    sn = sanafe.Network()
    groups = {}
    drive_events = 0

    def train(first, count):
        return [first <= s < first + count for s in range(1, steps + 1)]

    def add_drive(pop, ci, slot, label, spikes, targets, weights):
        """A drive neuron in drive core `slot` of core ci's tile, sending weights to neurons `targets` of pop."""
        nonlocal drive_events
        keep = weights != 0
        if not keep.any():
            return
        g = sn.create_neuron_group(f"{pop}/{label}@{ci}", 1, soma_hw_name=DRIVE_SOMA)
        g.neurons[0].set_attributes(model_attributes={"spikes": spikes})
        g.neurons[0].map_to_core(hw[int(tiles[ci]) * (1 + m) + 1 + slot])
        g.connect_neurons_sparse(groups[pop], {"weight": [float(v) for v in weights[keep]]},
                                 [(0, int(j)) for j in targets[keep]])
        drive_events += int(keep.sum()) * sum(spikes)

    for pop in net.populations[1:]:
        if pop.model == "readout":
            attrs = {"threshold": 1e300, "reset_mode": "none", "leak_decay": 1.0}
        else:
            attrs = {"threshold": 0.0, "reset_mode": "soft" if pop.reset == "subtract" else "hard",
                     "reset": 0.5, "leak_decay": 1.0, "force_update": True}
        g = sn.create_neuron_group(pop.name, pop.size, model_attributes=attrs, soma_hw_name="soma",
                                   log_spikes=pop.model != "readout", log_potential=pop.model == "readout")
        if pop.model == "if":
            for j, theta in enumerate(np.asarray(pop.threshold, np.float64).tolist()):
                g.neurons[j].set_attributes(model_attributes={"threshold": theta})
        groups[pop.name] = g
    for ci in range(len(net.cores)):
        pop = net.populations[int(net.cores.population[ci])]
        if pop.model == "input":
            continue
        k = depth[pop.name]
        ids = net.cores.neurons(ci, pop.shape)
        for j in ids:
            groups[pop.name].neurons[int(j)].map_to_core(hw[int(tiles[ci]) * (1 + m)])
        shift = 0.0 if pop.model == "readout" else 0.5
        add_drive(pop.name, ci, 0, "kick", train(k, 1), ids, np.asarray(pop.v_init, np.float64)[ids] + shift)
        if pop.model != "readout":
            add_drive(pop.name, ci, 1, "clamp", train(k + T, 1), ids, np.full(len(ids), CLAMP))
        if pop.name in drive:  # the rounded analog input (bias included), one drive neuron per neuron
            d = min(input_delay[pop.name], T)  # a delayed input arrives from step d on: the bias alone before
            if d:
                bias = np.floor(np.asarray(pop.bias, np.float64)[ids] + 0.5)
                add_drive(pop.name, ci, 2, "bias", train(k, d), ids, bias)
            for n, j in enumerate(ids):
                add_drive(pop.name, ci, 3 + n, f"input{j}", train(k + d, T - d), ids[n:n + 1],
                          drive[pop.name][j:j + 1])
        else:
            add_drive(pop.name, ci, 2, "bias", train(k, T), ids, np.asarray(pop.bias, np.float64)[ids])
    for source, target, weights, pairs in synapses if synapses is not None else synapse_lists(net):
        groups[source].connect_neurons_sparse(groups[target], {"weight": weights}, pairs)
    return sn, steps, drive_events


def is_drive(group_name: str) -> bool:
    return "@" in group_name


def export(net, target, x, T, folder):
    """Write SANA-FE's two input files for one sample: folder/arch.yaml and folder/snn.yaml."""
    import sanafe

    check_exportable(net)
    os.makedirs(folder, exist_ok=True)
    arch_path = os.path.join(folder, "arch.yaml")
    write_architecture(net, target, arch_path)
    arch = sanafe.load_arch(arch_path)
    sn, _, _ = build_network(sanafe, arch, net, x, T)
    snn_path = os.path.join(folder, "snn.yaml")
    with atomic_output(snn_path) as tmp:
        sn.save(tmp)
    return arch_path, snn_path


# ---- side by side: the same network, inputs and per-event costs in both simulators ----

EVENTS = ("spikes", "synops", "packets", "hops")


@dataclass
class SideBySide:
    """Totals over the compared samples; energies in pJ, times in s."""

    ours: dict = field(default_factory=lambda: {k: 0 for k in EVENTS})
    sanafe: dict = field(default_factory=lambda: {k: 0 for k in EVENTS})
    ours_energy_pj: float = 0.0
    sanafe_energy_pj: float = 0.0
    readout_max_diff: float = 0.0
    same_predictions: int = 0
    samples: int = 0
    ours_wall_s: float = 0.0
    sanafe_sim_wall_s: float = 0.0
    sanafe_build_wall_s: float = 0.0
    ours_latency_ns: float = 0.0
    sanafe_sim_time_ns: float = 0.0


def aligned_energy_pj(totals, target) -> float:
    return float(sum(totals[k] * target.energy_per_event(k) for k in EVENTS))


def run_sanafe_sample(sanafe, arch, net, target, x, T, synapses=None):
    """One sample through SANA-FE: counts of the network's own events (drive neurons excluded), aligned energy,
    the readout (T x spikeforge's mean output), simulated time and wall times."""
    t0 = time.perf_counter()
    sn, steps, drive_events = build_network(sanafe, arch, net, x, T, synapses)
    chip = sanafe.SpikingChip(arch)
    chip.load(sn)
    t1 = time.perf_counter()
    res = chip.sim(timesteps=steps, spike_trace=True, potential_trace=True, message_trace=True,
                   processing_threads=1)
    t2 = time.perf_counter()
    spikes = sum(1 for step in res["spike_trace"] for a in step if not is_drive(a.group_name))
    packets = hops = 0
    for step in res["message_trace"]:
        for m in step:
            if not m.get("placeholder") and not is_drive(m["src_neuron_group_id"]):
                packets += 1
                hops += m["hops"]
    # drive spikes are free except at the receiving synapse unit: their synaptic events are known exactly
    e_syn = target.energy_per_event("synops")
    energy_pj = res["energy"]["total"] * 1e12 - drive_events * e_syn
    synops = res["energy"]["synapse"] * 1e12 / e_syn - drive_events
    readout = np.asarray(res["potential_trace"][-1], np.float64)
    counts = {"spikes": spikes, "synops": int(round(synops)), "packets": packets, "hops": hops}
    return counts, energy_pj, readout, res["sim_time"] * 1e9, t1 - t0, t2 - t1


def compare(net, x, T, target, progress=None) -> SideBySide:
    """Run `net` (fixed point, mapped, layered) on samples x (B, *input shape) in both simulators."""
    import sanafe

    check_exportable(net)
    out = SideBySide()
    flat = simulator.prepare(net)
    simulator.run(flat, x[:1], T)  # compile outside the timing
    t0 = time.perf_counter()
    res = simulator.run(flat, x, T, batch_size=len(x))
    out.ours_wall_s = time.perf_counter() - t0
    for k in EVENTS:
        out.ours[k] = res.total(k)
    out.ours_energy_pj = aligned_energy_pj(out.ours, target)
    labels = [net.populations[int(p)].name for p in net.cores.population]
    # a second run records the flows for the link-level latency; the timed run above counts nothing extra
    routed = simulator.run(flat, x, T, batch_size=len(x), record_links=True)
    mem = core_memory(net)
    links = chip_link_loads(routed, net, target, mem)
    out.ours_latency_ns = estimate(res.counters, simulator.COUNTERS, len(x), target, labels, mem,
                                   links=links).latency_ns * len(x)
    synapses = synapse_lists(net)
    with tempfile.TemporaryDirectory(prefix="spikeforge-sanafe-") as folder:
        path = os.path.join(folder, "arch.yaml")
        write_architecture(net, target, path)
        arch = sanafe.load_arch(path)
        for b in range(len(x)):
            counts, e, readout, sim_ns, build_s, sim_s = run_sanafe_sample(sanafe, arch, net, target, x[b], T,
                                                                           synapses)
            for k in EVENTS:
                out.sanafe[k] += counts[k]
            out.sanafe_energy_pj += e
            ours_readout = res.output[b].reshape(-1) * T
            out.readout_max_diff = max(out.readout_max_diff, float(np.abs(readout - ours_readout).max()))
            out.same_predictions += int(readout.argmax() == ours_readout.argmax())
            out.sanafe_sim_time_ns += sim_ns
            out.sanafe_build_wall_s += build_s
            out.sanafe_sim_wall_s += sim_s
            out.samples += 1
            if progress:
                progress(b + 1, len(x))
    return out
