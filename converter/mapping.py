"""Mapping of populations onto the cores of a hardware target.

`one_population_per_core`: the trivial mapping every converter writes first (one core per population, on a
square mesh of one chip). `map_network(net, target)`: the real one:

1. Partition: every population is cut into contiguous neuron ranges, as few as the target's per-core limits
   allow: neurons per core, input axons (distinct source neurons with a synapse into the core), and synapse
   memory (bits per synapse = weight bits + target-index bits, or the target's fixed `bits_per_synapse`; a conv
   kernel is stored once per core when the target shares weights; multi-threshold sources with the parallel
   payload store 2n weight copies). A network that needs more cores than cores per chip x chips, or a neuron
   that alone breaks a core limit, raises `MappingError` naming the limit, the layer and by how much.
2. Placement on the 2D mesh (chips tile a square grid of meshes): `"snake"` walks the cores in layer order
   along a boustrophedon path (consecutive cores are neighbours), `"anneal"` starts there and swaps cores
   (and empty slots) by simulated annealing to shorten Σ traffic x Manhattan distance, traffic being the
   axons of each core edge (one packet per source neuron that fires) or measured spike counts.
3. The core edges: synapses and axons (= packets per step when every source neuron fires once) per pair.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from spikeforge.errors import UserError
from spikeforge.simulator.geometry import projection_kernel, synapses_per_source
from spikeforge.simulator.network import CoreEdges, CoreTable, Network


class MappingError(UserError):
    """The network does not fit the target; the message names the limit, the layer and the excess."""


def one_population_per_core(populations, projections):
    """Return (CoreTable, CoreEdges) with core i holding population i whole."""
    n = len(populations)
    width = max(1, math.ceil(math.sqrt(n)))
    ids = np.arange(n, dtype=np.int64)
    cores = CoreTable(core_id=ids, chip=np.zeros(n, np.int64), x=ids % width, y=ids // width,
                      population=ids.copy(), neuron_start=np.zeros(n, np.int64),
                      neuron_stop=np.array([p.size for p in populations], np.int64))
    return cores, core_edges(populations, projections, cores)


# ----------------------------------------------------------------------------------------------- fan-in
def fan_into_range(proj, source_shape, target_shape, start, stop) -> np.ndarray:
    """Synapses from every source neuron (C order) into the target neurons start..stop-1."""
    n_src, n_tgt = int(np.prod(source_shape)), int(np.prod(target_shape))
    if start == 0 and stop == n_tgt:
        return synapses_per_source(proj, source_shape, target_shape)
    if proj.kind == "dense":
        return np.full(n_src, stop - start, np.int64)
    if proj.kind == "sparse":
        rows = np.repeat(np.arange(n_src), np.diff(proj.indptr))
        inside = (proj.indices >= start) & (proj.indices < stop)
        return np.bincount(rows[inside], minlength=n_src).astype(np.int64)
    if proj.kind == "identity":
        out = np.zeros(n_src, np.int64)
        out[start:stop] = 1
        return out
    if proj.kind == "pointwise":
        return _pointwise_fan(proj.weight, n_src, start, stop)
    if proj.kind in ("matmul_a", "matmul_b"):  # compute-node operands: split in proportion (nodes rarely split)
        full = synapses_per_source(proj, source_shape, target_shape)
        return np.round(full * (stop - start) / n_tgt).astype(np.int64)
    return _window_fan(proj, source_shape, target_shape, start, stop)


def _pointwise_fan(weight, n_src, start, stop):
    """pointwise: row r's input channel c reaches the nonzero weights of column c whose output r·d_out + o
    falls in start..stop-1 (prefix sums over o, no synapse list)."""
    d_out, d_in = weight.shape
    cum = np.vstack([np.zeros((1, d_in), np.int64), np.cumsum(weight != 0, axis=0)])
    base = np.arange(n_src // d_in) * d_out
    lo = np.clip(start - base, 0, d_out)
    hi = np.clip(stop - base, 0, d_out)
    return (cum[hi] - cum[lo]).reshape(-1).astype(np.int64)


def _window_fan(proj, source_shape, target_shape, start, stop):
    """conv2d / avgpool: a transposed convolution of the range's indicator with a kernel of ones."""
    import torch
    import torch.nn.functional as F

    (kh, kw), stride, padding, cin_g, cout_g = projection_kernel(proj, source_shape, target_shape)
    c, h, w = source_shape
    cout = target_shape[0]
    groups = proj.groups if proj.kind == "conv2d" else c
    oh, ow = target_shape[1:]
    if groups == 1 and stop - start < cout * oh * ow:  # only the output channels the range touches
        c0, c1 = start // (oh * ow), (stop - 1) // (oh * ow) + 1
        target_shape, start, stop, cout = (c1 - c0, oh, ow), start - c0 * oh * ow, stop - c0 * oh * ow, c1 - c0
    mask = torch.zeros(int(np.prod(target_shape)), dtype=torch.float64)
    mask[start:stop] = 1
    ones = torch.ones(cout, c // groups, kh, kw, dtype=torch.float64)
    extra = [h - ((oh - 1) * stride[0] - 2 * padding[0] + kh), w - ((ow - 1) * stride[1] - 2 * padding[1] + kw)]
    # output_padding must be smaller than the stride; larger remainders are rows no output reaches (pad after)
    op = [min(e, s - 1) if e > 0 else 0 for e, s in zip(extra, stride)]
    out = F.conv_transpose2d(mask.reshape(1, *target_shape), ones, stride=stride, padding=padding,
                             output_padding=op, groups=groups)[0]
    out = F.pad(out, (0, w - out.shape[2], 0, h - out.shape[1]))
    return np.rint(out.numpy()).astype(np.int64).reshape(-1)


# ------------------------------------------------------------------------------------------- partition
@dataclasses.dataclass(frozen=True)
class Fan:
    """Synapses per source neuron into one core, kept sparse: a core of a large map sees a small part of its
    sources (dense per-core arrays of every source neuron took tens of GB for an ImageNet-size ResNet)."""

    index: np.ndarray  # source neurons with at least one synapse into the core, ascending
    count: np.ndarray  # their synapse counts

    @classmethod
    def of(cls, dense):
        nz = np.flatnonzero(dense)
        return cls(nz, np.asarray(dense)[nz])

    def within(self, start, stop):
        """(synapses, axons) from the source neurons start..stop-1."""
        i, j = np.searchsorted(self.index, (start, stop))
        return int(self.count[i:j].sum()), int(j - i)

    def mask(self, start, stop):
        """Boolean (stop - start,): which of the source neurons start..stop-1 have a synapse into the core."""
        out = np.zeros(stop - start, bool)
        i, j = np.searchsorted(self.index, (start, stop))
        out[self.index[i:j] - start] = True
        return out


@dataclasses.dataclass
class CoreLoad:
    """What one candidate core (a neuron range of one population) needs."""

    neurons: int
    axons: int
    synapse_bytes: float
    fans: dict  # source population name -> Fan: synapses per source neuron into this range


def core_load(net, pop, start, stop, limits) -> CoreLoad:
    """Neurons, distinct input axons and synapse memory of the neurons start..stop-1 of `pop`."""
    shapes = {p.name: p.shape for p in net.populations}
    pops = {p.name: p for p in net.populations}
    bits = limits.get("bits_per_synapse", 0) or \
        limits["weight_bits"] + max(1, math.ceil(math.log2(max(2, limits["neurons_per_core"]))))
    fans, memory_bits = {}, 0.0
    for q in net.incoming(pop.name):
        fan = fan_into_range(q, shapes[q.source], pop.shape, start, stop)
        fans[q.source] = fan if q.source not in fans else fans[q.source] + fan
        copies = pops[q.source].weight_copies
        if q.kind in ("matmul_a", "matmul_b", "maxpool"):  # operands; a max pooling gate stores no weights
            continue
        if q.kind in ("conv2d", "avgpool") and limits.get("weight_sharing", 0):
            per_channel = int(np.prod(pop.shape[1:]))
            channels = (stop - 1) // per_channel - start // per_channel + 1
            taps = q.weight[0].size if q.kind == "conv2d" else 1
            memory_bits += channels * taps * limits["weight_bits"] * copies
        elif q.kind == "pointwise" and limits.get("weight_sharing", 0):  # the weight rows of the outputs held
            d_out = q.weight.shape[0]
            held = np.unique(np.arange(start, stop) % d_out)
            memory_bits += np.count_nonzero(q.weight[held]) * limits["weight_bits"] * copies
        else:
            memory_bits += int(fan.sum()) * bits * copies
    fans = {name: Fan.of(f) for name, f in fans.items()}
    axons = sum(len(f.index) for f in fans.values())
    return CoreLoad(stop - start, axons, memory_bits / 8, fans)


def _over(load, limits):
    """(limit name, needed, allowed) for every per-core limit this load breaks."""
    checks = (("neurons_per_core", load.neurons), ("axons_per_core", load.axons),
              ("synapse_memory_bytes_per_core", load.synapse_bytes))
    return [(k, v, limits[k]) for k, v in checks if v > limits[k]]


def partition(net, limits, progress=None):
    """[(population index, start, stop, CoreLoad)] with as few cores per population as the limits allow. A network
    whose neurons alone need more cores than the target has is refused before any fan-in is computed (minutes for
    an ImageNet-size network)."""
    capacity = int(limits["cores_per_chip"] * limits.get("chips", 1))
    least = {p.name: max(1, math.ceil(p.size / limits["neurons_per_core"])) for p in net.populations}
    if sum(least.values()) > capacity:
        raise MappingError(_too_many_cores(least, limits, capacity, at_least=True))
    cores = []
    for pi, pop in enumerate(net.populations):
        k = max(1, math.ceil(pop.size / limits["neurons_per_core"]))
        while True:
            bounds = np.linspace(0, pop.size, k + 1).round().astype(np.int64)
            loads = [core_load(net, pop, int(a), int(b), limits) for a, b in zip(bounds[:-1], bounds[1:])]
            worst = 1.0
            for (a, b), load in zip(zip(bounds[:-1], bounds[1:]), loads):
                for name, need, allowed in _over(load, limits):
                    if b - a == 1:
                        raise MappingError(
                            f"layer {pop.name!r}: neuron {a} alone needs {name.replace('_per_core', '')} "
                            f"{need:g} but a core allows {allowed:g} ({need / allowed:.2f}x over); splitting one "
                            "neuron's fan-in over several cores is not supported")
                    worst = max(worst, need / allowed)
            if worst <= 1.0:
                break
            k = min(pop.size, max(k + 1, math.ceil(k * worst)))
        cores += [(pi, int(a), int(b), load) for a, b, load in zip(bounds[:-1], bounds[1:], loads)]
        if progress:
            progress(pop.name, k)
    if len(cores) > capacity:
        per_layer = {}
        for pi, *_ in cores:
            per_layer[net.populations[pi].name] = per_layer.get(net.populations[pi].name, 0) + 1
        raise MappingError(_too_many_cores(per_layer, limits, capacity))
    return cores


def _too_many_cores(per_layer, limits, capacity, at_least=False):
    """The refusal of a network over the target's cores: what it needs, what there is, the largest layers."""
    need = sum(per_layer.values())
    top = ", ".join(f"{n}: {c}" for n, c in sorted(per_layer.items(), key=lambda kv: -kv[1])[:3])
    why = f" (its neurons alone, {int(limits['neurons_per_core'])} per core)" if at_least else ""
    return (f"the network needs {'at least ' if at_least else ''}{need} cores{why} but the target has "
            f"{int(limits['cores_per_chip'])} cores per chip x {int(limits.get('chips', 1))} chips = {capacity} "
            f"({need / capacity:.2f}x over; largest layers {top})")


# ------------------------------------------------------------------------------------------- placement
def mesh_slots(n_cores, limits):
    """(chip, x, y) of every slot in walking order: a boustrophedon path per chip, chips on a square grid."""
    per_chip = int(limits["cores_per_chip"])
    width = int(limits.get("mesh_width", 0)) or math.ceil(math.sqrt(per_chip))
    height = math.ceil(per_chip / width)
    chips = max(1, math.ceil(n_cores / per_chip))
    grid = math.ceil(math.sqrt(chips))
    slots = []
    for chip in range(chips):
        cx, cy = (chip % grid) * width, (chip // grid) * height
        for i in range(per_chip):
            row, col = divmod(i, width)
            col = col if row % 2 == 0 else width - 1 - col
            slots.append((chip, cx + col, cy + row))
    return np.array(slots, np.int64)


def placement_cost(pos, src, dst, weight):
    """Σ weight x Manhattan distance between the slots of the edge ends (pos: (cores, 2) x, y)."""
    return float((weight * np.abs(pos[src] - pos[dst]).sum(axis=1)).sum())


def anneal(slots, src, dst, weight, n_cores, iters=None, seed=0):
    """Assignment core -> slot index by simulated annealing of swaps, starting from the walking order."""
    rng = np.random.default_rng(seed)
    n_slots = len(slots)
    xy = slots[:, 1:].astype(np.int64)
    where = np.arange(n_cores)  # core -> slot
    occupant = np.full(n_slots, -1)
    occupant[:n_cores] = np.arange(n_cores)
    # undirected adjacency (CSR) with summed weights
    keep = src != dst
    u = np.concatenate([src[keep], dst[keep]])
    v = np.concatenate([dst[keep], src[keep]])
    w = np.concatenate([weight[keep], weight[keep]]).astype(np.float64)
    order = np.argsort(u, kind="stable")
    u, v, w = u[order], v[order], w[order]
    ptr = np.searchsorted(u, np.arange(n_cores + 1))
    if len(u) == 0 or n_cores < 2:
        return where

    def moved(core, slot, skip):
        a, b = ptr[core], ptr[core + 1]
        nb, wt = v[a:b], w[a:b]
        m = nb != skip
        nb, wt = nb[m], wt[m]
        old = np.abs(xy[where[nb]] - xy[where[core]]).sum(axis=1)
        new = np.abs(xy[where[nb]] - xy[slot]).sum(axis=1)
        return float((wt * (new - old)).sum())

    iters = iters or min(200_000, 200 * n_cores)
    temp0 = 0.5 * float(w.mean())  # accept early uphill moves of about half an average edge x one hop
    cost = best = 0.0  # relative to the start
    best_where = where.copy()
    span = min(n_slots, max(2 * n_cores, n_cores + 16))  # empty slots near the used ones are candidates too
    for it in range(iters):
        temp = temp0 * (1 - it / iters) + 1e-9
        i = int(rng.integers(n_cores))
        s = int(rng.integers(span))
        j = occupant[s]
        if j == i:
            continue
        si = where[i]
        delta = moved(i, s, j)
        if j >= 0:
            delta += moved(j, si, i)
        if delta <= 0 or rng.random() < math.exp(-delta / temp):
            where[i], occupant[s], occupant[si] = s, i, j
            if j >= 0:
                where[j] = si
            cost += delta
            if cost < best - 1e-9:
                best, best_where = cost, where.copy()
    return best_where


def core_edges(populations, projections, cores, loads=None):
    """CoreEdges: for every pair of cores joined by synapses, the synapse count and the axons (distinct source
    neurons of the source core with a synapse into the destination core)."""
    index = {p.name: i for i, p in enumerate(populations)}
    shapes = {p.name: p.shape for p in populations}
    by_pop = {}
    for c in range(len(cores.core_id)):
        by_pop.setdefault(int(cores.population[c]), []).append(c)
    edges = {}
    for t in range(len(cores.core_id)):
        pop = populations[int(cores.population[t])]
        a, b = int(cores.neuron_start[t]), int(cores.neuron_stop[t])
        if loads is not None:
            fans = loads[t].fans
        else:
            fans = {}
            for q in projections:
                if q.target == pop.name:
                    f = fan_into_range(q, shapes[q.source], pop.shape, a, b)
                    fans[q.source] = f if q.source not in fans else fans[q.source] + f
            fans = {name: Fan.of(f) for name, f in fans.items()}
        for src_name, fan in fans.items():
            for s in by_pop[index[src_name]]:
                syn, ax = fan.within(int(cores.neuron_start[s]), int(cores.neuron_stop[s]))
                if syn:
                    edges[(s, t)] = (syn, ax)
    keys = sorted(edges)
    return CoreEdges(src=np.array([k[0] for k in keys], np.int64), dst=np.array([k[1] for k in keys], np.int64),
                     synapses=np.array([edges[k][0] for k in keys], np.int64),
                     axons=np.array([edges[k][1] for k in keys], np.int64))


def map_network(net: Network, target, placement: str = "anneal", traffic=None, seed: int = 0,
                progress=None, hop_delay: int = 0) -> Network:
    """`net` with its populations partitioned and placed on `target` (a hwmodels Target or its limits dict).

    traffic: optional {population name: spikes per neuron} (e.g. a simulation's spike counts) to weigh the
    placement by measured packets instead of one packet per axon. hop_delay: steps every projection's delay
    gains (`pipelined`): 1 is the hardware pipeline of Loihi / SANA-FE, where a spike crosses one hop per step.
    """
    net = pipelined(net, hop_delay)
    limits = target.limits if hasattr(target, "limits") else dict(target)
    if placement not in ("snake", "anneal"):
        raise ValueError(f"placement must be 'snake' or 'anneal', got {placement!r}")
    parts = partition(net, limits, progress)
    n = len(parts)
    ids = np.arange(n, dtype=np.int64)
    cores = CoreTable(core_id=ids, chip=np.zeros(n, np.int64), x=np.zeros(n, np.int64), y=np.zeros(n, np.int64),
                      population=np.array([p[0] for p in parts], np.int64),
                      neuron_start=np.array([p[1] for p in parts], np.int64),
                      neuron_stop=np.array([p[2] for p in parts], np.int64))
    edges = core_edges(net.populations, net.projections, cores, [p[3] for p in parts])
    slots = mesh_slots(n, limits)
    where = np.arange(n)
    if placement == "anneal":
        weight = edges.axons.astype(np.float64)
        if traffic is not None:
            weight = _measured_traffic(net, cores, edges, parts, traffic)
        where = anneal(slots, edges.src, edges.dst, weight, n, seed=seed)
    cores.chip, cores.x, cores.y = slots[where, 0], slots[where, 1], slots[where, 2]
    attrs = dict(net.attrs, mapping=f"{getattr(target, 'name', 'custom')}:{placement}")
    return Network(net.populations, net.projections, cores, edges, attrs)


def pipelined(net: Network, steps: int = 1) -> Network:
    """`net` with every projection delivering `steps` later (its delay + steps): a chip's pipeline, in which a
    population sees its sources' events of the previous step instead of the same step's. The delays add up
    along a path, so a residual block's skip connection arrives earlier than its main branch, as on the chip."""
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 0:
        raise ValueError(f"hop delay must be a whole number of steps >= 0, got {steps!r}")
    if steps == 0:
        return net
    projections = [dataclasses.replace(q, delay=int(q.delay) + int(steps)) for q in net.projections]
    attrs = dict(net.attrs, hop_delay=int(net.attrs.get("hop_delay", 0)) + int(steps))
    return Network(net.populations, projections, net.cores, net.core_edges, attrs)


def _measured_traffic(net, cores, edges, parts, traffic):
    """Packets per edge from measured spikes: Σ spikes of the source core's neurons with a synapse into dst."""
    out = np.zeros(len(edges.src))
    for e, (s, t) in enumerate(zip(edges.src, edges.dst)):
        src = net.populations[int(cores.population[s])].name
        fan = parts[t][3].fans.get(src)
        spikes = traffic.get(src)
        if fan is None or spikes is None:
            continue
        a, b = cores.neuron_start[s], cores.neuron_stop[s]
        out[e] = float(np.asarray(spikes).reshape(-1)[a:b][fan.mask(int(a), int(b))].sum())
    return out
