"""Counters -> energy and latency for a target; the ANN's cost for the energy ratio.

Inputs are plain arrays (the simulator's counters), never the engine itself:
counters (T, cores, K) summed over `n_samples` samples, K named by `counter_names`.
The model follows the chips' structure (DESIGN.md, "Counters and costs"):
- the steps the chip runs: a pipelined target (pipelined_layers) processes a spike one step after it is sent, so
  the population at pipeline stage k (core_memory's "stage": projections on the longest path from the input, the
  host's input counting as one) does in chip step t + k what the simulator counts in step t: each core's counts
  are shifted by its stage, and the chip runs T + the deepest stage steps, every mapped neuron accessed in each;
- energy per inference = dynamic (Σ_core Σ_event count·E_event; a synaptic op priced by the kind of projection
  into its core where the target says so; neuron access (neuron_updates, every mapped neuron) apart from neuron
  update (active_neurons, those with input or a bias); packets on the sender, packets_in on the receiver; MACs
  only where the target has MAC units (analog_input "bias": the host writes the first layer's currents as biases,
  nothing is charged on the chip; "drive": one drive event per neuron the input reaches, a packet received and a
  synaptic op, as SANA-FE's export delivers it)) x the supply-voltage factor (V / V_nominal)², + static ((power
  per used core x cores + power per chip at that voltage x chips in use) x latency), the two kept apart;
- latency = Σ over the chip's steps of max(step time, tick, host step); step time = the slowest core (its compute
  and its own messages out and in) + network time + barrier (keyed on the tiles or cores in use, and on the chips
  in use where the target gives multi-chip barriers). Network time: with link loads (hwmodels.noc, XY routes, on
  the chip's steps) the busiest link's packets x its link time + the slowest active route's time - one hop;
  without them, the longest mean route time of any core's packets that step ((hops x t_hop + chip_hops x
  t_chip_hop) / packets: one packet's flight through pipelined routers; serialization is in the cores' message
  times); a chip-to-chip link is priced and timed as the target's chip_hops;
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
# what a core does in a step, each at the target's time per event (synaptic ops by projection kind)
_CORE_TIME = ("macs", "neuron_updates", "active_neurons", "spikes", "packets", "packets_in")
# counters that hold per step what every step holds (a chip accesses its neurons in every step it runs)
_PER_STEP = ("neuron_updates", "state_bytes_read", "state_bytes_written")
# the components reports show, and the events each sums
COMPONENTS = {"synapse": ("synops", "synapse_bytes_read"), "neuron access": ("neuron_updates", "state_bytes_read",
              "state_bytes_written"), "neuron update": ("active_neurons",), "spikes": ("spikes",),
              "messages": ("packets", "packets_in"), "hops": ("hops",), "chip links": ("chip_packets", "chip_hops"),
              "input": ("macs",)}


@dataclass
class CostReport:
    """Energy (pJ) and latency (ns) of one inference, averaged over the simulated samples."""

    target: str
    T: int
    energy_pj: float
    dynamic_pj: dict  # event -> pJ
    static_pj: float
    latency_ns: float
    latency_ns_per_step: np.ndarray  # per chip step (T + stages of them on a pipelined target)
    core_energy_pj: np.ndarray  # (cores, len(EVENTS))
    layer_energy_pj: dict = field(default_factory=dict)  # layer -> {event: pJ}
    static_core_pj: float = 0.0  # per-used-core share of static_pj
    static_chip_pj: float = 0.0  # per-powered-chip share of static_pj
    chips: int = 1  # chips the mapping uses
    barrier_ns: float = 0.0  # per-step synchronization charged (cores / tiles in use)
    input: dict = field(default_factory=dict)  # how the input is delivered and what that costs (input_path)
    steps: int = 0  # time steps the chip runs for one inference (T + pipeline stages)
    tiles: int = 0  # tiles in use (cores when the target has one core per tile)
    voltage: float = None  # the supply voltage priced (None: the target's nominal)
    host_step_ns: float = None  # the host's pacing, if any: no step is shorter
    latency_parts_ns: dict = field(default_factory=dict)  # compute / network / barrier / floor: what the steps spent
    bounding_layers_ns: dict = field(default_factory=dict)  # layer -> compute ns of the steps its core was busiest
    core_compute_ns: np.ndarray = None  # (cores,) each core's own compute time, summed over the chip's steps

    @property
    def dynamic_total_pj(self) -> float:
        return float(sum(self.dynamic_pj.values()))

    def components(self) -> dict:
        """pJ per component (COMPONENTS, plus static): what reports show next to every energy figure."""
        out = {name: float(sum(self.dynamic_pj.get(e, 0.0) for e in events)) for name, events in COMPONENTS.items()}
        out["static"] = float(self.static_pj)
        return out

    def to_dict(self):
        return {"target": self.target, "T": self.T, "steps": self.steps, "energy_pj": self.energy_pj,
                "dynamic_pj": self.dynamic_pj, "dynamic_total_pj": self.dynamic_total_pj,
                "components_pj": self.components(), "static_pj": self.static_pj,
                "static_core_pj": self.static_core_pj, "static_chip_pj": self.static_chip_pj, "chips": self.chips,
                "tiles": self.tiles, "barrier_ns": self.barrier_ns, "voltage": self.voltage,
                "host_step_ns": self.host_step_ns, "input": self.input, "latency_ns": self.latency_ns,
                "latency_parts_ns": self.latency_parts_ns, "bounding_layers_ns": self.bounding_layers_ns,
                "latency_ns_per_step": self.latency_ns_per_step.tolist(), "layer_energy_pj": self.layer_energy_pj}


def chip_steps(per_inf, stage, names):
    """(T + S, cores, K) counts on the chip's steps: core c's counts of step t land in step t + stage[c]; the
    per-step counters (_PER_STEP: every neuron accessed) hold in every step the chip runs."""
    S = int(stage.max(initial=0))
    if S == 0:
        return per_inf
    out = staggered(per_inf, stage, S, np.float64)
    for name in _PER_STEP:
        j = names[name]
        out[:, :, j] = per_inf[0, :, j][None, :]
    return out


def staggered(a, offset, extra, dtype):
    """(T + extra, ...) array: column j of a (T, columns, ...) moved down by offset[j] <= extra steps, zeros elsewhere
    (what a pipelined chip does in its steps; noc.link_loads shifts the flows alike)."""
    offset = np.asarray(offset, np.int64)
    T = len(a)
    out = np.zeros((T + extra,) + a.shape[1:], dtype)
    for k in np.unique(offset):
        cols = np.flatnonzero(offset == k)
        out[k:k + T, cols] = a[:, cols]
    return out


def tiles_in_use(n_cores, chip, cores_per_tile) -> int:
    """Tiles the cores occupy, the mapper filling each chip's tiles in order: Σ_chips ⌈cores on it / per tile⌉."""
    if chip is None:
        return -(-n_cores // cores_per_tile)
    _, per_chip = np.unique(np.asarray(chip), return_counts=True)
    return int((-(-per_chip // cores_per_tile)).sum())


def estimate(counters, counter_names, n_samples, target: Target, core_labels=None, core_memory=None,
             links=None, host_step_ns=None, voltage=None, network=None) -> CostReport:
    """Energy and latency per inference on `target`.

    network: the simulated network (a `Network`): its cores' layers and memory facts (hwmodels.core_memory), what
    `spikeforge report` prices with, unless core_labels / core_memory are given;
    core_labels: the layer (population) name of each core, for the per-layer breakdown;
    core_memory: optional dict of per-core facts (hwmodels.core_memory): 'synapse_bytes' and 'state_bytes' select
    the SRAM energy of size-dependent targets (without them, the smallest array's energy: pass `network` or
    these); 'synapse_kind' the
    synaptic-op cost of targets that price it by projection kind; 'chip' the chips in use (else cores /
    cores_per_chip, rounded up); 'input_core' the cores fed by the input, for the input path's energy (and the
    drive events of analog_input "drive"); 'stage'
    the pipeline stage of each core (pipelined targets; none: every core at stage 0);
    links: optional hwmodels.noc.LinkLoads of the same run on the chip's steps (noc.link_loads(..., stage=)), for
    the link-level network time; host_step_ns: a host that paces the chip (e.g. streams input each step): no step
    is shorter; voltage: the supply voltage (volts; None: the target's nominal, at which its energies hold).
    """
    if network is not None:
        if core_labels is None:
            core_labels = [network.populations[int(p)].name for p in network.cores.population]
        if core_memory is None:
            core_memory = _memory_of(network)
    if core_labels is None:
        raise ValueError("give the network (network=) or each core's layer name (core_labels)")
    counters = np.asarray(counters, dtype=np.float64)
    if counters.ndim != 3 or counters.shape[2] != len(counter_names):
        raise ValueError(f"counters must be (T, cores, {len(counter_names)}), got {counters.shape}")
    if n_samples < 1:
        raise ValueError("n_samples must be >= 1")
    missing = [e for e in EVENTS if e not in counter_names]
    if missing:
        raise ValueError(f"counters lack {missing}")
    if host_step_ns is not None and not (np.isfinite(host_step_ns) and host_step_ns >= 0):
        raise ValueError(f"host_step_ns must be a finite number >= 0, got {host_step_ns}")
    T, n_cores, _ = counters.shape
    if len(core_labels) != n_cores:
        raise ValueError(f"{len(core_labels)} core labels for {n_cores} cores")
    col = {name: i for i, name in enumerate(counter_names)}
    memory = core_memory or {}
    stage = np.zeros(n_cores, np.int64)
    if target.pipelined and memory.get("stage") is not None:
        stage = np.asarray(memory["stage"], np.int64)
    per_inf = counters / n_samples
    no_macs = target.analog_input != "mac"
    if target.analog_input == "drive" and memory.get("input_core") is not None:
        # one drive event per neuron the analog input reaches in a step (the active neurons of the cores it feeds,
        # in the steps it arrives): a packet received and a synaptic op each
        fed = np.asarray(memory["input_core"], bool)[None, :] & (per_inf[:, :, col["macs"]] > 0)
        drive = np.where(fed, per_inf[:, :, col["active_neurons"]], 0.0)
        per_inf = per_inf.copy()
        per_inf[:, :, col["packets_in"]] += drive
        per_inf[:, :, col["synops"]] += drive
    chip = chip_steps(per_inf, stage, col)
    steps = len(chip)
    dyn_factor, chip_static_mw = target.voltage_scale(voltage)
    kinds = memory.get("synapse_kind")
    core_energy = np.zeros((n_cores, len(EVENTS)))
    for j, event in enumerate(EVENTS):
        counts = chip[:, :, col[event]].sum(axis=0)
        if event == "synapse_bytes_read":
            sizes = memory.get("synapse_bytes")
        elif event.startswith("state_bytes"):
            sizes = memory.get("state_bytes")
        else:
            sizes = None
        if event == "synops" and kinds is not None:
            unit = np.array([target.synop_cost(k) for k in kinds])
        elif event == "macs" and no_macs:
            unit = np.zeros(n_cores)
        else:
            unit = np.array([target.energy_per_event(event, None if sizes is None else sizes[c])
                             for c in range(n_cores)])
        core_energy[:, j] = counts * unit * dyn_factor
    syn_time = np.full(n_cores, target.time_ns["synops"]) if kinds is None else \
        np.array([target.synop_cost(k, "time") for k in kinds])
    compute = chip[:, :, col["synops"]] * syn_time + sum(
        chip[:, :, col[e]] * target.time_ns[e] for e in _CORE_TIME if not (e == "macs" and no_macs))
    if links is None:
        packets = chip[:, :, col["packets"]]
        wire = chip[:, :, col["hops"]] * target.time_ns["hops"] + chip[:, :, col["chip_hops"]] * \
            target.time_ns["chip_hops"]
        network = np.divide(wire, packets, out=np.zeros_like(packets), where=packets > 0).max(axis=1)
    else:
        if len(links.loads) != steps:
            raise ValueError(f"link loads cover {len(links.loads)} steps, the chip runs {steps} (T = {T} plus "
                             f"{steps - T} pipeline stages: noc.link_loads(..., stage=) shifts them)")
        hop, chip_hop = target.time_ns["hops"], target.time_ns["chip_hops"]
        busiest = links.busiest_ns(hop, chip_hop) / n_samples
        network = np.where(busiest > 0, busiest + links.route_ns(hop, chip_hop) - hop, 0.0)
    if memory.get("chip") is not None:
        chips = len(np.unique(np.asarray(memory["chip"])))
    else:
        chips = -(-n_cores // int(target.limits["cores_per_chip"]))
    tiles = tiles_in_use(n_cores, memory.get("chip"), int(target.limits.get("cores_per_tile", 1)))
    barrier = target.barrier_ns(n_cores, tiles, chips)
    raw = compute.max(axis=1) + network + barrier
    step = np.maximum(raw, max(target.tick_ns, host_step_ns or 0.0))
    latency = float(step.sum())
    parts, bounding = latency_parts(compute, network, barrier, step - raw, core_labels)
    static_core = target.static_power_mw_per_core * n_cores * latency  # mW x ns = pJ
    static_chip = chip_static_mw * chips * latency
    static = static_core + static_chip
    layers = {}
    for c, label in enumerate(core_labels):
        entry = layers.setdefault(label, {e: 0.0 for e in EVENTS})
        for j, e in enumerate(EVENTS):
            entry[e] += float(core_energy[c, j])
    dynamic = {e: float(core_energy[:, j].sum()) for j, e in enumerate(EVENTS)}
    path = input_path(core_energy, chip[:, :, col["macs"]].sum(), chip[:, :, col["synops"]].sum(axis=0),
                      memory.get("input_core"), target.analog_input)
    return CostReport(target.name, T, float(sum(dynamic.values()) + static), dynamic, float(static), latency, step,
                      core_energy, layers, float(static_core), float(static_chip), int(chips), float(barrier), path,
                      steps, tiles, voltage, host_step_ns, parts, bounding, compute.sum(axis=0))


def prices_core_time(target: Target) -> bool:
    """Whether `target` gives a core any compute time (the events `estimate` sums into a core's step time): a
    budget of core time (mapping.work_per_neuron) means nothing on one that does not."""
    synop_times = [target.time_ns["synops"], *((target.synops_by_kind or {}).get("time", {}).values())]
    return any(v > 0 for v in synop_times) or any(target.time_ns[e] > 0 for e in _CORE_TIME)


def latency_parts(compute, network, barrier, floor, core_labels):
    """What a latency is made of, so a report can say what bounds it: the busiest core's own time (compute and
    its messages) summed over the steps, the network's route time, the barriers, and the idle time a tick or
    host pacing adds (`floor`); and per layer, the compute time of the steps in which one of its cores was the
    busiest (the first such core on a tie)."""
    steps = len(compute)
    parts = {"compute": float(compute.max(axis=1).sum()) if compute.size else 0.0,
             "network": float(np.sum(network)), "barrier": float(barrier * steps), "floor": float(np.sum(floor))}
    bounding = {}
    if compute.size:
        for t, c in enumerate(compute.argmax(axis=1)):
            if compute[t, c] > 0:
                label = core_labels[int(c)]
                bounding[label] = bounding.get(label, 0.0) + float(compute[t, c])
    return parts, dict(sorted(bounding.items(), key=lambda kv: -kv[1]))


def input_path(core_energy, macs, core_synops, input_core, analog="mac") -> dict:
    """How the input reaches the network and its energy per inference: analog input is counted as MACs on the
    first layer's cores (priced where the target has MAC units; analog="bias": the host writes the first layer's
    currents as biases, not priced on the chip); spike-encoded input (0/1 frames, encoders) as synaptic ops on
    those cores. Without `input_core` the synaptic share of the input is unknown (None)."""
    mac_pj = float(core_energy[:, EVENTS.index("macs")].sum())
    analog_mode = {"mac": "analog (MACs on the first layer)",
                   "bias": "analog (first-layer biases written by the host; no MAC unit on the chip)",
                   "drive": "analog (one drive event per first-layer neuron and step)"}[analog]
    out = {"mode": analog_mode if macs > 0 else "spike-encoded (synaptic ops)",
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


def _memory_of(net) -> dict:
    """core_memory(net), for estimate (whose argument of that name hides the function)."""
    return core_memory(net)


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
        n = c.size(i)
        syn[i] = per_pop_shared[pop.name] + per_pop_explicit[pop.name] * n // pop.size
        state[i] = n * state_bytes
    kinds = {}
    for q in net.projections:
        kinds.setdefault(q.target, set()).add(q.kind)
    fed = {q.target for q in net.projections if q.source == net.input.name}
    names = [net.populations[int(p)].name for p in c.population]
    kind = [next(iter(kinds[n])) if len(kinds.get(n, ())) == 1 else "mixed" for n in names]
    stages = pipeline_stages(net)
    return {"synapse_bytes": syn, "state_bytes": state, "synapse_kind": kind, "chip": np.asarray(c.chip),
            "input_core": np.array([n in fed for n in names], bool),
            "stage": np.array([stages[n] for n in names], np.int64)}


def pipeline_stages(net) -> dict:
    """Population name -> its stage on a chip that processes a spike one step after it is sent: the host's input
    takes one step (stage 1 for the populations it feeds), a projection without delay one more; one with a delay
    d >= 1 arrives when the simulator delivers it (its d steps hold the chip's step). The longest path wins (a
    compiler aligns shorter paths with delays). The input population is stage 0."""
    stage = {net.input.name: 0}
    for pop in net.populations[1:]:  # in topological order
        stage[pop.name] = max((stage[q.source] + (1 if int(q.delay) == 0 else 0) for q in net.incoming(pop.name)),
                              default=1)
    return stage
