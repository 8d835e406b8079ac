"""Fan-in splitting: a layer whose neurons need more input axons than one core has becomes partial sums on
several cores plus the layer itself, which adds them up (`split_fan_in`).

A neuron's inputs from one projection are cut into `parts` groups (a convolution's input channels, a dense or
sparse layer's source neurons, a token-wise map's input features). Each group feeds its own relay neuron, and
the layer's neuron (the soma) receives its relays through synapses of weight 1 instead of the original synapses:

    relay_{n,p}(t) = Σ_{i in group p} w_{n,i} s_i(t)        soma_n(t) = Σ_p out(relay_{n,p})(t) + other inputs

What a relay sends is what the chip can send:
- "graded": the partial sum itself, exactly, as one graded event (an `ec` identity node: Loihi 2's graded
  spikes; the target states `spike_payload_bits` > 1). The soma then integrates exactly the unsplit input
  (up to float summation order), one step later per hop where the target pipelines hops.
- "spiking": binary spikes only (Loihi, TrueNorth): the relay is a signed IF neuron (soft reset, v0 = θ/2) that
  re-encodes its partial sum as ±θ spikes: the rate-coded, clipped partial sums of IBM's TrueNorth splitting
  (US 11,049,000) and nengo-loihi's on/off relay neurons. Its output so far is its input so far rounded to a
  multiple of θ (the residual stays in the membrane), as long as at most one θ per step has to cross: the
  split network computes what the chip would, not the unsplit network.
Relays, their packets, hops, synaptic operations and neuron updates are ordinary populations and events, so the
simulator counts what the split costs; no correction is added afterwards.
"""
from __future__ import annotations

import dataclasses
import json
import math

import numpy as np

from spikeforge.simulator.geometry import projection_kernel
from spikeforge.simulator.network import SPIKING_MODELS, Network, Population, Projection, relay_layers

SPLITTABLE = ("conv2d", "dense", "sparse", "pointwise")
SPLIT_MODELS = SPIKING_MODELS + ("readout", "ec")  # layers whose input is a sum that relays can add in parts
EXACT_COUNT_SYNAPSES = 20_000_000  # a sparse projection's relay fan-in is counted exactly up to this size


@dataclasses.dataclass(frozen=True)
class Split:
    """One split layer: which projection was cut into how many parts, the widest neuron's axons before and after
    (relay, soma), and the relay kind."""

    layer: str
    projection: str
    parts: int
    axons_before: int
    relay_axons: int
    soma_axons: int
    relay: str

    def as_dict(self):
        return dataclasses.asdict(self)


def relay_kind(limits) -> str:
    """"graded" where the target's events carry a payload wide enough for a partial sum, else "spiking"."""
    return "graded" if int(limits.get("spike_payload_bits", 0) or 0) > 1 else "spiking"


def neuron_axons(net, pop, j) -> dict:
    """{projection name: distinct source neurons with a synapse into neuron j of `pop`}."""
    from .mapping import fan_into_range

    shapes = {p.name: p.shape for p in net.populations}
    return {q.name: int(np.count_nonzero(fan_into_range(q, shapes[q.source], pop.shape, j, j + 1)))
            for q in net.incoming(pop.name)}


def split_fan_in(net: Network, limits, relay: str | None = None, calibration=None, steps: int = 32,
                 percentile: float = 99.99, runnable: bool = True) -> tuple:
    """(network, [Split]): every layer whose widest neuron needs more input axons than `limits.axons_per_core`
    is split (`_split_once`: whole projections grouped into relays, or its widest projection cut into the fewest
    parts whose relays fit) until its widest neuron fits, which makes a tree of relays where one split leaves it
    over. Layers that need no split are returned unchanged; a layer no split can fit raises MappingError.

    Spiking relays fire at most once per step, so their threshold sets how fast a partial sum can cross: with
    `calibration` samples the network is run (for `steps`, relays exact) and each relay layer's threshold is the
    `percentile` of its partial sums' mean per step over samples and neurons, as data-based normalization sets a
    layer's threshold from its activations; without, a relay takes the threshold of the neuron it feeds (a
    readout's relays: the largest event a source sends through the largest weight).

    runnable: the split network gets one core per population (a file the simulator runs); False leaves it
    without a mapping (cores None) for a caller that partitions it next (map_network: the core graph of a
    100 M-synapse network takes seconds)."""
    from .mapping import _widest_neuron

    relay = relay or relay_kind(limits)
    if relay not in ("graded", "spiking"):
        raise ValueError(f"relay must be 'graded' or 'spiking', got {relay!r}")
    limit = int(limits["axons_per_core"])
    hop = int(net.attrs.get("hop_delay", 0))
    populations, projections, splits = list(net.populations), list(net.projections), []
    for pop in net.populations:
        if not net.incoming(pop.name):
            continue
        while True:  # a layer whose split leaves its soma over the limit is split again (a tree of relays)
            now = Network(populations, projections, None, None, net.attrs)
            j = _widest_neuron(now, pop)
            axons = neuron_axons(now, pop, j)
            total = sum(axons.values())
            if total <= limit:
                break
            splits.append(_split_once(now, pop, j, axons, limit, relay, hop, populations, projections))
    if not splits:
        return net, []
    from .mapping import one_population_per_core

    calibrate = relay == "spiking" and calibration is not None
    cores, edges = one_population_per_core(populations, projections) if runnable or calibrate else (None, None)
    out = Network(populations, projections, cores, edges, net.attrs)
    if calibrate:
        out = calibrate_relays(out, [s.layer for s in splits], calibration, steps, percentile)
    out.attrs = dict(net.attrs, fan_in_split=json.dumps([s.as_dict() for s in splits]))
    return out, splits


def _split_once(net, pop, j, axons, limit, relay, hop, populations, projections) -> Split:
    """One split of layer `pop` (whose neuron j needs `axons` per projection, more than `limit` in all), applied
    to the lists `populations` and `projections` in place: relays that each sum a group of whole projections when
    every projection fits a core, else the widest projection cut into the fewest parts whose relays fit (the soma
    then needs its other inputs plus one axon per part: when that is still over the limit, the caller splits
    the layer again, which makes a tree of relays)."""
    from .mapping import MappingError, _widest_neuron

    total = sum(axons.values())
    if net.attrs.get("numeric_mode") == "fixed":
        raise MappingError(f"layer {pop.name!r}: neuron {j} needs {total} input axons, a core allows {limit}; "
                           "splitting the fan-in of a fixed-point network is not supported: map the float "
                           "network (convert without fixed point) to split it")
    if pop.model not in SPLIT_MODELS:
        raise MappingError(f"layer {pop.name!r} ({pop.model}): neuron {j} needs {total} input axons but a core "
                           f"allows {limit}, and only {', '.join(SPLIT_MODELS)} layers are split, not {pop.model}")
    incoming = net.incoming(pop.name)
    groups = _projection_groups(incoming, axons, limit)
    if groups is not None:  # several projections, each within the limit: relays that each sum a group of them
        for name, group in zip(_free_names(populations, f"{pop.name}.part", len(groups)), groups):
            relay_pop, moved, join = _group_relay(group, net, pop, relay, hop, name)
            populations.insert(_position(populations, pop), relay_pop)
            for old, new in zip(group, moved):
                projections[_position(projections, old)] = new
            projections.insert(_position(projections, moved[-1]) + 1, join)
        return Split(pop.name, "+".join(q.name for g in groups for q in g), len(groups), total,
                     max(sum(axons[q.name] for q in g) for g in groups), len(groups), relay)
    q = max((p for p in incoming if p.kind in SPLITTABLE), key=lambda p: axons[p.name], default=None)
    if q is None:
        raise MappingError(f"layer {pop.name!r} ({pop.model}): neuron {j} needs {total} input axons but a core "
                           f"allows {limit}, and no projection into it can be split (splittable: "
                           f"{', '.join(SPLITTABLE)})")
    src, others = net.population(q.source), total - axons[q.name]
    parts = _parts(q, src, axons[q.name], limit, others)
    if parts is None:
        raise MappingError(f"layer {pop.name!r}: neuron {j} needs {total} input axons ({axons[q.name]} from "
                           f"{q.name!r}) but a core allows {limit}, and no split of {q.name!r} fits: "
                           + _why_not(q, src, limit, axons[q.name]))
    relay_pop, into, join = _rewrite(q, src, pop, parts, relay, hop, _free_name(populations, f"{pop.name}.part"))
    populations.insert(_position(populations, pop), relay_pop)
    qi = _position(projections, q)
    projections[qi:qi + 1] = [into, join]
    split_net = Network(populations, projections, None, None, net.attrs)
    per = neuron_axons(split_net, relay_pop, _widest_neuron(split_net, relay_pop))
    return Split(pop.name, q.name, parts, total, sum(per.values()), others + parts, relay)


def calibrate_relays(net, layers, x, steps, percentile=99.99, batch=16):
    """`net` with the spiking relays feeding `layers` given thresholds from data: the network is run with every
    relay exact (an identity node), and each relay layer's threshold is the `percentile` of |mean partial sum per
    step| over samples and relay neurons (the relays then fire below one spike per step on almost all inputs)."""
    from spikeforge import simulator

    layers = set(layers)
    relays = {r for r, layer in relay_layers(net.projections).items() if layer in layers}  # a tree's inner ones too
    exact = [Population.make(p.name, "ec", p.shape, function="identity") if p.name in relays else p
             for p in net.populations]
    probe = Network(exact, net.projections, net.cores, net.core_edges, net.attrs)
    into = {}
    for q in net.projections:
        if q.target in relays:
            into.setdefault(q.target, []).append(q)
    sources = sorted({q.source for qs in into.values() for q in qs
                      if net.population(q.source).model in SPIKING_MODELS and q.source not in relays})
    sums = {r: [] for r in relays}
    x = np.asarray(x)
    order = {p.name: i for i, p in enumerate(net.populations)}
    for b0 in range(0, len(x), batch):
        res = simulator.run(probe, x[b0:b0 + batch], steps, record=sources)
        means = {}  # each exact relay's mean output per step: the partial sum a relay of relays adds up
        for r, qs in sorted(into.items(), key=lambda item: order[item[0]]):
            total = None
            for q in qs:  # a relay's partial sum: every projection into it (a group relay has several)
                src = net.population(q.source)
                if q.source in means:
                    values = means[q.source]
                elif q.source in sources:
                    values = _event_values(src, res.spikes[q.source]).sum(axis=1) / steps  # (B, *shape) per step
                elif q.source == net.input.name:  # the analog input: a constant current, or frames (B, T, ...)
                    chunk = x[b0:b0 + batch]
                    values = chunk if chunk.ndim == len(src.shape) + 1 else chunk.mean(axis=1)
                else:
                    continue
                part = _apply(q, values, src, net.population(r))
                if part is not None:
                    total = part if total is None else total + part
            if total is not None:
                means[r] = total
                sums[r].append(np.abs(total))
    pops = []
    for p in net.populations:
        if p.name in relays and sums[p.name]:
            theta = float(np.percentile(np.concatenate([a.reshape(-1) for a in sums[p.name]]), percentile))
            if theta > 0:
                p = dataclasses.replace(p, threshold=np.full(p.size, theta, np.float32),
                                        v_init=np.full(p.size, theta / 2, np.float32))
        pops.append(p)
    return Network(pops, net.projections, net.cores, net.core_edges, net.attrs)



def _event_values(pop, raster):
    """(B, T, *shape) the values a spiking population's events carry, from its int8 raster."""
    r = raster.astype(np.float64)
    theta = pop.threshold.reshape(pop.shape).astype(np.float64)
    if pop.model in ("if", "lif") and pop.spike_value == "unit":
        return r
    if pop.model == "signed":
        return np.where(r > 0, r * theta, r * pop.negative_slope * theta)
    if pop.model == "multi_threshold" and pop.threshold_neg is not None:
        return np.where(r > 0, r * theta, r * pop.threshold_neg.reshape(pop.shape))
    return r * theta


def _apply(q, values, src, tgt):
    """The projection `q` applied to per-sample source values (B, *src.shape) -> (B, tgt.size); None for kinds
    that are not a weighted sum (pooling, compute-node operands)."""
    import torch
    import torch.nn.functional as F

    b = values.shape[0]
    v = values.reshape(b, -1)
    if q.kind == "identity":
        return v.astype(np.float64)
    if q.kind == "dense":
        return v @ np.asarray(q.weight, np.float64).T
    if q.kind not in ("conv2d", "pointwise", "sparse"):
        return None  # pooling, compute-node operands: not a weighted partial sum (left out of the percentile)
    if q.kind == "conv2d":
        (kh, kw), stride, padding, _, _ = projection_kernel(q, src.shape, tgt.shape)
        out = F.conv2d(torch.as_tensor(v.reshape(b, *src.shape)), torch.as_tensor(q.weight, dtype=torch.float64),
                       stride=stride, padding=padding, groups=int(q.groups))
        return out[:, :, :tgt.shape[1], :tgt.shape[2]].reshape(b, -1).numpy()
    if q.kind == "pointwise":
        d_out, d_in = q.weight.shape
        return (v.reshape(b, -1, d_in) @ np.asarray(q.weight, np.float64).T).reshape(b, -1)
    import scipy.sparse as sp

    m = sp.csr_matrix((np.asarray(q.weight, np.float64), q.indices, q.indptr), shape=(src.size, tgt.size))
    return np.asarray((m.T @ v.T).T)


def _position(items, item) -> int:
    """The index of `item` itself in `items` (list.index would compare dataclasses holding arrays by value)."""
    return next(i for i, other in enumerate(items) if other is item)


def _projection_groups(incoming, axons, limit):
    """Whole projections packed into the fewest groups of at most `limit` axons (first fit, widest first), when a
    layer's fan-in comes from several projections each within the limit and no single one dominates (a ViT's
    final LayerNorm reads every block's residual contribution); None where one projection needs splitting
    itself or one group would do."""
    if len(incoming) < 2 or any(axons[q.name] > limit for q in incoming):
        return None
    if max(axons[q.name] for q in incoming) > sum(axons.values()) - max(axons.values()) and \
            sum(axons.values()) - max(axons.values()) + 2 <= limit:
        return None  # one projection holds most of the fan-in: cut it into parts instead
    groups, load = [], []
    for q in sorted(incoming, key=lambda p: -axons[p.name]):
        k = next((i for i, used in enumerate(load) if used + axons[q.name] <= limit), None)
        if k is None:
            groups.append([q])
            load.append(axons[q.name])
        else:
            groups[k].append(q)
            load[k] += axons[q.name]
    if len(groups) < 2 or len(groups) > limit:
        return None
    order = {id(q): i for i, q in enumerate(incoming)}
    return [sorted(g, key=lambda q: order[id(q)]) for g in groups]


def _group_relay(group, net, pop, relay, hop, name):
    """(relay population shaped like `pop`, the group's projections retargeted to it, identity join relay ->
    pop): the relay adds up the group's inputs (graded: exactly; spiking: re-encoded as ±θ spikes)."""
    if relay == "graded":
        relay_pop = Population.make(name, "ec", pop.shape, function="identity")
    else:
        theta = pop.threshold if pop.model in SPIKING_MODELS else \
            np.max([_readout_theta(q, net.population(q.source), pop) for q in group], axis=0)
        relay_pop = Population.make(name, "signed", pop.shape, threshold=theta, v_init=theta / 2,
                                    negative_slope=1.0)
    moved = [dataclasses.replace(q, target=name) for q in group]
    return relay_pop, moved, Projection(f"{name}.join", "identity", name, pop.name, delay=hop)


def _free_names(populations, base, n):
    """n names base, base2, ... that no population has."""
    names, taken = [], {p.name for p in populations}
    i = 1
    while len(names) < n:
        name = base if i == 1 else f"{base}{i}"
        if name not in taken:
            names.append(name)
        i += 1
    return names


def _free_name(populations, base):
    names = {p.name for p in populations}
    name, i = base, 1
    while name in names:
        i += 1
        name = f"{base}{i}"
    return name


def _group_width(q, src) -> int:
    """The unit a split cuts in: a convolution's input channels per group, a dense / sparse layer's source
    neurons, a token-wise map's input features."""
    if q.kind == "conv2d":
        return int(q.weight.shape[1])
    if q.kind == "pointwise":
        return int(q.weight.shape[1])
    if q.kind == "sparse":  # the sources it reads (a class token's features of a whole map, say)
        return int(np.count_nonzero(np.diff(np.asarray(q.indptr))))
    return int(src.size)


def _source_part_of(q, n_src, parts):
    """The part of each source neuron of a dense or sparse projection: equal contiguous ranges of the sources
    it reads (a sparse projection reading a few of its source's neurons is cut among those, not the map)."""
    if q.kind != "sparse":
        return np.searchsorted(_ranges(n_src, parts), np.arange(n_src), side="right") - 1
    used = np.diff(np.asarray(q.indptr)) > 0
    rank = np.maximum(np.cumsum(used) - 1, 0)  # unused sources have no synapses: any part will do
    return np.searchsorted(_ranges(int(used.sum()), parts), rank, side="right") - 1


def _parts(q, src, axons, limit, others):
    """The fewest parts whose relays fit a core, or None. A convolution's parts divide its input channels per
    group (a grouped convolution per part). The soma then needs others + parts axons; a split that leaves it over
    the limit is taken only when it shrinks the soma's fan-in (parts < axons: a next split can finish it)."""
    width = _group_width(q, src)
    least = max(2, math.ceil(axons / limit))
    for parts in range(least, min(width, axons - 1) + 1):
        if q.kind == "conv2d" and width % parts:
            continue
        if _relay_axons(q, src, width, parts, axons) <= limit:
            return parts
    return None


def _relay_axons(q, src, width, parts, axons):
    """At most how many axons the widest relay needs: a conv part has 1 / parts of the window's channels (the taps
    are the same for every channel); another part's sources are a range of ceil(width / parts) and the layer's
    widest neuron's sources at most; for a sparse projection, when that bound is not enough, the exact count
    (its sources per target within one range: a join of relays is cut this way into a second level)."""
    if q.kind == "conv2d":
        return axons // parts
    bound = min(axons, math.ceil(width / parts))
    if q.kind != "sparse" or bound <= axons // parts + 1 or len(q.indices) > EXACT_COUNT_SYNAPSES:
        return bound
    indptr = np.asarray(q.indptr, np.int64)
    part_of = _source_part_of(q, src.size, parts)
    key = np.repeat(part_of, np.diff(indptr)) * (int(np.max(q.indices)) + 1) + np.asarray(q.indices, np.int64)
    return int(np.bincount(key).max()) if len(key) else 0


def _why_not(q, src, limit, axons):
    width = _group_width(q, src)
    if q.kind == "conv2d":  # one channel per part fits whenever its taps do: only the kernel can be too wide
        taps = int(np.prod(q.weight.shape[2:]))
        return (f"one input channel per part already needs {taps} axons (a {q.weight.shape[2]}x"
                f"{q.weight.shape[3]} kernel) and a core allows {limit}")
    return f"cut into ranges of its {width} sources (features), no number of parts below {axons} gives relays " \
           f"that fit {limit} axons"


def _rewrite(q, src, pop, parts, relay, hop, name):
    """(relay population, projection source -> relay, join relay -> soma) of `q` cut into `parts`."""
    if q.kind == "conv2d":
        relay_shape, into, dst = _conv_parts(q, pop, parts, name)
    elif q.kind == "pointwise":
        relay_shape, into, dst = _pointwise_parts(q, pop, parts, name)
    else:
        relay_shape, into, dst = _source_parts(q, src, pop, parts, name)
    n = int(np.prod(relay_shape))
    if relay == "graded":
        relay_pop = Population.make(name, "ec", relay_shape, function="identity")
    else:
        theta = pop.threshold[dst] if pop.model in SPIKING_MODELS else _readout_theta(q, src, pop)[dst]
        relay_pop = Population.make(name, "signed", relay_shape, threshold=theta, v_init=theta / 2,
                                    negative_slope=1.0)
    if q.kind == "pointwise":
        d_out = pop.shape[-1]
        join = Projection(f"{q.name}.join", "pointwise", name, pop.name,
                          weight=np.tile(np.eye(d_out, dtype=np.float32), (1, parts)), delay=hop)
    else:
        join = Projection(f"{q.name}.join", "sparse", name, pop.name, weight=np.ones(n, np.float32),
                          indptr=np.arange(n + 1, dtype=np.int64), indices=dst.astype(np.int64), delay=hop)
    return relay_pop, into, join


def _conv_parts(q, pop, parts, name):
    """A grouped convolution: part p of group g computes output channels of g from input channels p of g."""
    w = np.asarray(q.weight)
    cout, cin_g, kh, kw = w.shape
    groups = int(q.groups)
    cout_g, s = cout // groups, cin_g // parts
    new = w.reshape(groups, cout_g, parts, s, kh, kw).transpose(0, 2, 1, 3, 4, 5).reshape(groups * parts * cout_g,
                                                                                          s, kh, kw)
    _, h, w_ = pop.shape
    relay_shape = (groups * parts * cout_g, h, w_)
    into = dataclasses.replace(q, target=name, weight=np.ascontiguousarray(new), groups=groups * parts)
    g, p, o = np.meshgrid(np.arange(groups), np.arange(parts), np.arange(cout_g), indexing="ij")
    soma_channel = (g * cout_g + o).reshape(-1)  # relay channel (g, p, o) in C order
    dst = (soma_channel[:, None] * (h * w_) + np.arange(h * w_)[None, :]).reshape(-1)
    return relay_shape, into, dst


def _ranges(n, parts):
    return np.linspace(0, n, parts + 1).round().astype(np.int64)


def _source_parts(q, src, pop, parts, name):
    """A dense or sparse projection's sources cut into contiguous ranges (of the sources a sparse one reads);
    part p's relays are targets of range p (a sparse projection keeps every stored weight, zeros included, as the
    dense one did)."""
    n_src, n_tgt = src.size, pop.size
    part_of = _source_part_of(q, n_src, parts)
    if q.kind == "dense":
        w = np.asarray(q.weight, np.float32)  # (n_tgt, n_src)
        indptr = np.arange(0, n_src * n_tgt + 1, n_tgt, dtype=np.int64)
        indices = (part_of[:, None] * n_tgt + np.arange(n_tgt)[None, :]).reshape(-1)
        weight = np.ascontiguousarray(w.T).reshape(-1)
    else:
        indptr = np.asarray(q.indptr, np.int64)
        rows = np.repeat(np.arange(n_src), np.diff(indptr))
        indices = part_of[rows] * n_tgt + np.asarray(q.indices, np.int64)
        weight = np.asarray(q.weight, np.float32)
    into = Projection(q.name, "sparse", q.source, name, weight=weight, indptr=indptr,
                      indices=np.asarray(indices, np.int64), delay=q.delay)
    dst = np.tile(np.arange(n_tgt), parts)
    return (parts * n_tgt,), into, dst


def _pointwise_parts(q, pop, parts, name):
    """A token-wise map's input features cut into ranges: relay features (p, o) hold part p of output o."""
    w = np.asarray(q.weight, np.float32)
    d_out, d_in = w.shape
    bounds = _ranges(d_in, parts)
    new = np.zeros((parts * d_out, d_in), np.float32)
    for p in range(parts):
        new[p * d_out:(p + 1) * d_out, bounds[p]:bounds[p + 1]] = w[:, bounds[p]:bounds[p + 1]]
    rows = pop.size // d_out
    into = dataclasses.replace(q, target=name, weight=new)
    dst = (np.arange(rows)[:, None] * d_out + np.tile(np.arange(d_out), parts)[None, :]).reshape(-1)
    return tuple(pop.shape[:-1]) + (parts * d_out,), into, dst


def _readout_theta(q, src, pop):
    """Relay threshold for a soma without one (a readout): the largest value one source event carries into it
    (the source's threshold x the largest weight magnitude), so a relay passes one source event per spike."""
    theta = float(np.max(src.threshold)) if src.model in SPIKING_MODELS else 1.0
    return np.full(pop.size, max(theta * float(np.max(np.abs(q.weight))), 1e-12), np.float32)
