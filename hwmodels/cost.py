"""Counters -> energy and latency for a target; the ANN's cost for the energy ratio.

Inputs are plain arrays (the simulator's counters), never the engine itself:
counters (T, cores, K) summed over `n_samples` samples, K named by `counter_names`.
Conventions:
- energy per inference = dynamic (Σ_core Σ_event count·E_event; a synaptic op priced by the kind of projection
  into its core where the target says so) + static ((power per used core x cores + power per chip x chips in
  use) x latency), the two kept apart;
- latency per step = slowest core's compute (synops, MACs, neuron updates, spikes)
  + network time + barrier (growing with the cores in use where the target gives a table); at least the
  target's tick. Network time: with link loads (hwmodels.noc, XY routes)
  the busiest core's packet injections + (busiest link load + longest active route - 1) x t_hop; without them,
  the core whose packets and hops take longest (its hops charged as if serialized at its router);
- paper-style energy of the conversion papers (METHODS.md): E = SOPs·E_AC + MACs·E_MAC with
  E_AC = 0.9 pJ, E_MAC = 4.6 pJ; the ANN costs MACs·E_MAC.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from spikeforge.simulator.geometry import synapse_count

from .targets import EVENTS, Target

E_AC_PJ = 0.9
E_MAC_PJ = 4.6
_COMPUTE = ("synops", "macs", "neuron_updates", "spikes")
_NETWORK = ("packets", "hops")


@dataclass
class CostReport:
    """Energy (pJ) and latency (ns) of one inference, averaged over the simulated samples."""

    target: str
    T: int
    energy_pj: float
    dynamic_pj: dict  # event -> pJ
    static_pj: float
    latency_ns: float
    latency_ns_per_step: np.ndarray
    core_energy_pj: np.ndarray  # (cores, len(EVENTS))
    layer_energy_pj: dict = field(default_factory=dict)  # layer -> {event: pJ}
    static_core_pj: float = 0.0  # per-used-core share of static_pj
    static_chip_pj: float = 0.0  # per-powered-chip share of static_pj
    chips: int = 1  # chips the mapping uses
    barrier_ns: float = 0.0  # per-step synchronization charged (cores in use)
    input: dict = field(default_factory=dict)  # how the input is delivered and what that costs (input_path)

    @property
    def dynamic_total_pj(self) -> float:
        return float(sum(self.dynamic_pj.values()))

    def to_dict(self):
        return {"target": self.target, "T": self.T, "energy_pj": self.energy_pj, "dynamic_pj": self.dynamic_pj,
                "dynamic_total_pj": self.dynamic_total_pj, "static_pj": self.static_pj,
                "static_core_pj": self.static_core_pj, "static_chip_pj": self.static_chip_pj, "chips": self.chips,
                "barrier_ns": self.barrier_ns, "input": self.input, "latency_ns": self.latency_ns,
                "latency_ns_per_step": self.latency_ns_per_step.tolist(), "layer_energy_pj": self.layer_energy_pj}


def estimate(counters, counter_names, n_samples, target: Target, core_labels, core_memory=None,
             links=None) -> CostReport:
    """Energy and latency per inference on `target`.

    core_labels: the layer (population) name of each core, for the per-layer breakdown;
    core_memory: optional dict of per-core facts (hwmodels.core_memory): 'synapse_bytes' and 'state_bytes' select
    the SRAM energy of size-dependent targets (the largest array is assumed when absent); 'synapse_kind' the
    synaptic-op cost of targets that price it by projection kind; 'chip' the chips in use (else cores /
    cores_per_chip, rounded up); 'input_core' the cores fed by the input, for the input path's energy;
    links: optional hwmodels.noc.LinkLoads of the same run, for the link-level network time.
    """
    counters = np.asarray(counters, dtype=np.float64)
    if counters.ndim != 3 or counters.shape[2] != len(counter_names):
        raise ValueError(f"counters must be (T, cores, {len(counter_names)}), got {counters.shape}")
    if n_samples < 1:
        raise ValueError("n_samples must be >= 1")
    missing = [e for e in EVENTS if e not in counter_names]
    if missing:
        raise ValueError(f"counters lack {missing}")
    T, n_cores, _ = counters.shape
    if len(core_labels) != n_cores:
        raise ValueError(f"{len(core_labels)} core labels for {n_cores} cores")
    per_inf = counters / n_samples
    col = {name: i for i, name in enumerate(counter_names)}
    memory = core_memory or {}
    kinds = memory.get("synapse_kind")
    core_energy = np.zeros((n_cores, len(EVENTS)))
    for j, event in enumerate(EVENTS):
        counts = per_inf[:, :, col[event]].sum(axis=0)
        if event == "synapse_bytes_read":
            sizes = memory.get("synapse_bytes")
        elif event.startswith("state_bytes"):
            sizes = memory.get("state_bytes")
        else:
            sizes = None
        if event == "synops" and kinds is not None:
            unit = np.array([target.synop_cost(k) for k in kinds])
        else:
            unit = np.array([target.energy_per_event(event, None if sizes is None else sizes[c])
                             for c in range(n_cores)])
        core_energy[:, j] = counts * unit
    syn_time = np.full(n_cores, target.time_ns["synops"]) if kinds is None else \
        np.array([target.synop_cost(k, "time") for k in kinds])
    compute = per_inf[:, :, col["synops"]] * syn_time + sum(
        per_inf[:, :, col[e]] * target.time_ns[e] for e in _COMPUTE if e != "synops")  # (T, cores)
    if links is None:
        network = sum(per_inf[:, :, col[e]] * target.time_ns[e] for e in _NETWORK).max(axis=1)
    else:
        if len(links.loads) != T:
            raise ValueError(f"link loads cover {len(links.loads)} steps, counters {T}")
        busiest = links.busiest() / n_samples
        wire = np.where(busiest > 0, busiest + links.longest_route - 1, 0.0)
        injection = (per_inf[:, :, col["packets"]] * target.time_ns["packets"]).max(axis=1)
        network = injection + wire * target.time_ns["hops"]
    barrier = target.barrier_ns(n_cores)
    step = compute.max(axis=1) + network + barrier
    step = np.maximum(step, target.tick_ns)
    latency = float(step.sum())
    if memory.get("chip") is not None:
        chips = len(np.unique(np.asarray(memory["chip"])))
    else:
        chips = -(-n_cores // int(target.limits["cores_per_chip"]))
    static_core = target.static_power_mw_per_core * n_cores * latency  # mW x ns = pJ
    static_chip = target.static_power_mw_per_chip * chips * latency
    static = static_core + static_chip
    layers = {}
    for c, label in enumerate(core_labels):
        entry = layers.setdefault(label, {e: 0.0 for e in EVENTS})
        for j, e in enumerate(EVENTS):
            entry[e] += float(core_energy[c, j])
    dynamic = {e: float(core_energy[:, j].sum()) for j, e in enumerate(EVENTS)}
    return CostReport(target.name, T, float(sum(dynamic.values()) + static), dynamic, float(static), latency, step,
                      core_energy, layers, float(static_core), float(static_chip), int(chips), float(barrier),
                      input_path(core_energy, per_inf[:, :, col["macs"]].sum(), per_inf[:, :, col["synops"]].sum(
                          axis=0), memory.get("input_core")))


def input_path(core_energy, macs, core_synops, input_core) -> dict:
    """How the input reaches the network and its energy per inference: analog input is counted as MACs on the
    first layer's cores; spike-encoded input (0/1 frames, encoders) as synaptic ops on those cores. Without
    `input_core` the synaptic share of the input is unknown (None)."""
    mac_pj = float(core_energy[:, EVENTS.index("macs")].sum())
    out = {"mode": "analog (MACs on the first layer)" if macs > 0 else "spike-encoded (synaptic ops)",
           "macs": float(macs), "macs_pj": mac_pj, "synops": None, "synops_pj": None}
    if input_core is not None:
        mask = np.asarray(input_core, bool)
        out["synops"] = float(core_synops[mask].sum())
        out["synops_pj"] = float(core_energy[mask, EVENTS.index("synops")].sum())
        if macs == 0 and out["synops"] == 0:
            out["mode"] = "none (no input events)"
    out["energy_pj"] = mac_pj + (out["synops_pj"] or 0.0)
    return out


def ann_cost(net) -> dict:
    """MACs (conv / dense / sparse synapses) and adds (pooling, residual identity) of one ANN inference."""
    shapes = {p.name: p.shape for p in net.populations}
    macs = adds = 0
    for q in net.projections:
        n = synapse_count(q, shapes[q.source], shapes[q.target])
        if q.kind in ("dense", "sparse", "conv2d", "matmul_a"):
            macs += n
        else:
            adds += n
    return {"macs": int(macs), "adds": int(adds), "energy_pj": macs * E_MAC_PJ + adds * E_AC_PJ}


def paper_energy_pj(synops, macs) -> float:
    """SNN energy in the convention of the conversion papers: SOPs·0.9 pJ + MACs·4.6 pJ."""
    return float(synops) * E_AC_PJ + float(macs) * E_MAC_PJ


def core_memory(net, weight_bytes=4, state_bytes=4) -> dict:
    """Per-core facts the cost model uses: synapse memory and neuron-state bytes (shared conv kernels stored once
    per core), the kind of projection into the core ('synapse_kind': its incoming projections' kind when they all
    share one, else 'mixed'), its chip, and whether the input feeds it ('input_core').

    Projections out of multi-threshold neurons with payload "parallel" store one weight copy per level
    (2n, or n when one-sided): parallel parameter normalization trades synapse memory for graded events.
    """
    shapes = {p.name: p.shape for p in net.populations}
    pops = {p.name: p for p in net.populations}
    per_pop_explicit = {p.name: 0 for p in net.populations}
    per_pop_shared = {p.name: 0 for p in net.populations}
    for q in net.projections:
        copies = pops[q.source].weight_copies
        if q.kind == "conv2d":
            per_pop_shared[q.target] += q.weight.size * weight_bytes * copies
        elif q.kind in ("dense", "sparse"):
            per_pop_explicit[q.target] += synapse_count(q, shapes[q.source], shapes[q.target]) * weight_bytes * copies
    c = net.cores
    syn = np.zeros(len(c), np.int64)
    state = np.zeros(len(c), np.int64)
    for i in range(len(c)):
        pop = net.populations[int(c.population[i])]
        n = int(c.neuron_stop[i] - c.neuron_start[i])
        syn[i] = per_pop_shared[pop.name] + per_pop_explicit[pop.name] * n // pop.size
        state[i] = n * state_bytes
    kinds = {}
    for q in net.projections:
        kinds.setdefault(q.target, set()).add(q.kind)
    fed = {q.target for q in net.projections if q.source == net.input.name}
    names = [net.populations[int(p)].name for p in c.population]
    kind = [next(iter(kinds[n])) if len(kinds.get(n, ())) == 1 else "mixed" for n in names]
    return {"synapse_bytes": syn, "state_bytes": state, "synapse_kind": kind, "chip": np.asarray(c.chip),
            "input_core": np.array([n in fed for n in names], bool)}
