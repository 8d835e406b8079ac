"""Counters -> energy and latency for a target; the ANN's cost for the energy ratio.

Inputs are plain arrays (the simulator's counters), never the engine itself:
counters (T, cores, K) summed over `n_samples` samples, K named by `counter_names`.
Conventions:
- energy per inference = Σ_core Σ_event count·E_event + static power x cores x latency;
- latency per step = slowest core's compute (synops, MACs, neuron updates, spikes)
  + network time + barrier; at least the target's tick. Network time: with link loads (hwmodels.noc, XY routes)
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

    def to_dict(self):
        return {"target": self.target, "T": self.T, "energy_pj": self.energy_pj, "dynamic_pj": self.dynamic_pj,
                "static_pj": self.static_pj, "latency_ns": self.latency_ns,
                "latency_ns_per_step": self.latency_ns_per_step.tolist(), "layer_energy_pj": self.layer_energy_pj}


def estimate(counters, counter_names, n_samples, target: Target, core_labels, core_memory=None,
             links=None) -> CostReport:
    """Energy and latency per inference on `target`.

    core_labels: the layer (population) name of each core, for the per-layer breakdown;
    core_memory: optional dict of per-core 'synapse_bytes' and 'state_bytes', which select the
    SRAM energy of size-dependent targets (the largest array is assumed when absent);
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
    core_energy = np.zeros((n_cores, len(EVENTS)))
    for j, event in enumerate(EVENTS):
        counts = per_inf[:, :, col[event]].sum(axis=0)
        if event == "synapse_bytes_read":
            sizes = memory.get("synapse_bytes")
        elif event.startswith("state_bytes"):
            sizes = memory.get("state_bytes")
        else:
            sizes = None
        unit = np.array([target.energy_per_event(event, None if sizes is None else sizes[c]) for c in range(n_cores)])
        core_energy[:, j] = counts * unit
    compute = sum(per_inf[:, :, col[e]] * target.time_ns[e] for e in _COMPUTE)  # (T, cores)
    if links is None:
        network = sum(per_inf[:, :, col[e]] * target.time_ns[e] for e in _NETWORK).max(axis=1)
    else:
        if len(links.loads) != T:
            raise ValueError(f"link loads cover {len(links.loads)} steps, counters {T}")
        busiest = links.busiest() / n_samples
        wire = np.where(busiest > 0, busiest + links.longest_route - 1, 0.0)
        injection = (per_inf[:, :, col["packets"]] * target.time_ns["packets"]).max(axis=1)
        network = injection + wire * target.time_ns["hops"]
    step = compute.max(axis=1) + network + target.time_ns["barrier"]
    step = np.maximum(step, target.tick_ns)
    latency = float(step.sum())
    static = target.static_power_mw_per_core * n_cores * latency  # mW x ns = pJ
    layers = {}
    for c, label in enumerate(core_labels):
        entry = layers.setdefault(label, {e: 0.0 for e in EVENTS})
        for j, e in enumerate(EVENTS):
            entry[e] += float(core_energy[c, j])
    dynamic = {e: float(core_energy[:, j].sum()) for j, e in enumerate(EVENTS)}
    return CostReport(target.name, T, float(sum(dynamic.values()) + static), dynamic, float(static), latency, step,
                      core_energy, layers)


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
    """Synapse memory and neuron-state bytes held by each core (shared conv kernels stored once per core).

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
    return {"synapse_bytes": syn, "state_bytes": state}
