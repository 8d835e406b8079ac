"""SynSense Speck / DYNAP-CNN mapping rule (issue 33, first step): one network layer per core, as sinabs maps it.

A Speck chip has 9 cores; each runs one layer (convolution -> integrate-and-fire -> sum pooling) and sends its
events to at most 2 destination cores. A layer fits a core when its kernel and neuron memories fit the core's
(the cores differ); sinabs assigns layers to cores by a bipartite matching. Memories, as sinabs'
`DynapcnnLayer.memory_summary` computes them (a dense layer is a convolution whose kernel is its whole input):

    kernel memory  K = c · 2^(ceil(log2(kx·ky)) + ceil(log2 f))      c input channels, f output channels
    neuron memory  N = f · 2^(ceil(log2 fy) + ceil(log2 fx))         (f, fy, fx) the layer's output

Sources (read with the search tool; docs/TARGETS.md will carry them with the speck target): sinabs
`sinabs/backend/dynapcnn/chips/dynapcnn.py` get_constraints (memories per core), `dynapcnn_layer.py`
memory_summary (the formulas), `mapping.py` (matching), `docs/speck/overview.md` and
`docs/speck/faqs/available_network_arch.md` (9 cores, 2 destinations, channels <= 1024, kernel <= 16x16,
strides 1 / 2 / 4 / 8, padding <= 7, sum pooling 1x1 / 2x2 / 4x4). A population fed only by an average pooling is
that sum pooling, done by its source's core; so is a pooling the converter folded into the next convolution
(`folded_pooling`: kernel, stride and padding r times larger, weights constant over r x r blocks). Neurons are
integrate-and-fire with binary spikes (sinabs deploys IAF layers only). What each event costs is the `speck`
target's (hwmodels/targets/speck.json).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from spikeforge.simulator.network import Network

from .mapping import MappingError, one_population_per_core

SPECK = {  # sinabs get_constraints(): per core, entries
    "kernel_memory": (16384, 16384, 16384, 32768, 32768, 65536, 65536, 16384, 16384),
    "neuron_memory": (65536, 65536, 65536, 32768, 32768, 16384, 16384, 16384, 16384),
    "destinations": 2, "max_channels": 1024, "max_kernel": 16, "strides": (1, 2, 4, 8), "max_padding": 7,
    "pooling": (1, 2, 4), "max_input": 128, "max_output": 64,
}
LAYER_KINDS = ("conv2d", "dense", "avgpool", "identity")  # what a core's input can be


@dataclass(frozen=True)
class SpeckLayer:
    """One network layer as a Speck core sees it: its memories (entries) and the layers it sends to."""

    name: str
    kernel_memory: int
    neuron_memory: int
    destinations: tuple


def _pow2(n) -> int:
    return 2 ** math.ceil(math.log2(max(1, int(n))))


def layer_memory(net, pop) -> tuple:
    """(kernel memory, neuron memory) of population `pop` as one Speck layer, checking its projections' shapes
    against the core's feature limits (MappingError naming the layer and the limit)."""
    shapes = {p.name: tuple(p.shape) for p in net.populations}
    out = tuple(pop.shape) if len(pop.shape) == 3 else (int(np.prod(pop.shape)), 1, 1)
    f = out[0]
    if pop.model not in ("if", "readout"):
        raise MappingError(f"layer {pop.name!r}: {pop.model!r} neurons; a Speck core's neurons are integrate-and-fire "
                           "with binary spikes (sinabs deploys IAF layers only)")
    if len(pop.shape) == 3 and max(pop.shape[1:]) > SPECK["max_output"]:
        raise MappingError(f"layer {pop.name!r}: output map {pop.shape[1]}x{pop.shape[2]}; a Speck core's output "
                           f"map is at most {SPECK['max_output']}x{SPECK['max_output']}")
    if f > SPECK["max_channels"]:
        raise MappingError(f"layer {pop.name!r}: {f} channels, a Speck core has at most {SPECK['max_channels']}")
    kernel = 0
    for q in net.incoming(pop.name):
        if q.kind not in LAYER_KINDS:
            raise MappingError(f"layer {pop.name!r}: a {q.kind} projection has no Speck equivalent (a core takes "
                               "a convolution, a dense layer as a convolution, sum pooling or a residual sum)")
        src = shapes[q.source] if len(shapes[q.source]) == 3 else (int(np.prod(shapes[q.source])), 1, 1)
        if max(src[1:]) > SPECK["max_input"]:
            raise MappingError(f"layer {pop.name!r}: input map {src[1]}x{src[2]}; a Speck core takes at most "
                               f"{SPECK['max_input']}x{SPECK['max_input']}")
        if q.kind == "conv2d":
            (kh, kw), stride, padding = q.weight.shape[2:], tuple(q.stride), tuple(q.padding)
            r = folded_pooling(q)  # the source core sum-pools by r; this core convolves the pooled map
            if r > 1:
                kh, kw = kh // r, kw // r
                stride, padding = tuple(v // r for v in stride), tuple(v // r for v in padding)
            if max(kh, kw) > SPECK["max_kernel"]:
                raise MappingError(f"layer {pop.name!r}: kernel {kh}x{kw}, a Speck core takes at most "
                                   f"{SPECK['max_kernel']}x{SPECK['max_kernel']}")
            if any(s not in SPECK["strides"] for s in stride):
                raise MappingError(f"layer {pop.name!r}: stride {stride}, a Speck core strides by "
                                   f"{', '.join(map(str, SPECK['strides']))}")
            if max(padding) > SPECK["max_padding"]:
                raise MappingError(f"layer {pop.name!r}: padding {padding}, a Speck core pads at most "
                                   f"{SPECK['max_padding']}")
            kernel += q.weight.shape[1] * _pow2(kh * kw) * _pow2(q.weight.shape[0])
        elif q.kind == "dense":  # a convolution whose kernel is the whole input map
            kernel += src[0] * _pow2(src[1] * src[2]) * _pow2(f)
    neurons = f * _pow2(out[1]) * _pow2(out[2])
    return kernel, neurons


def folded_pooling(q) -> int:
    """r > 1 where a convolution is an r x r average pooling folded into a convolution (the converter's default,
    pooling "fold": kernel, stride and padding multiples of r, the weights constant over r x r blocks), which a Speck
    chip runs as its source core's sum pooling followed by the r-times smaller kernel; else 1."""
    w = np.asarray(q.weight)
    kh, kw = w.shape[2:]
    for r in sorted((p for p in SPECK["pooling"] if p > 1), reverse=True):
        if kh % r or kw % r or any(int(v) % r for v in tuple(q.stride) + tuple(q.padding)):
            continue
        blocks = w.reshape(w.shape[0], w.shape[1], kh // r, r, kw // r, r)
        if np.array_equal(blocks, np.broadcast_to(blocks[:, :, :, :1, :, :1], blocks.shape)):
            return r
    return 1


def _pooled(net) -> dict:
    """{pooled population: its source}: populations fed only by one average pooling of another, which a Speck core
    does as the sum pooling of its own output (no core of their own); a window other than 1, 2 or 4 is refused."""
    out = {}
    for pop in net.populations[1:]:
        qs = net.incoming(pop.name)
        if len(qs) == 1 and qs[0].kind == "avgpool":
            k = tuple(qs[0].kernel)
            if k[0] != k[1] or k[0] not in SPECK["pooling"] or tuple(qs[0].stride) != k:
                raise MappingError(f"layer {pop.name!r}: pooling {k[0]}x{k[1]} stride {tuple(qs[0].stride)}; a Speck "
                                   f"core sum-pools {', '.join(f'{n}x{n}' for n in SPECK['pooling'])} (stride = size)")
            out[pop.name] = qs[0].source
    return out


def speck_layers(net) -> list:
    """The network's layers (every population but the input and pooled ones) with their memories and
    destinations; a layer sending to more than the cores' 2 destinations is refused naming it."""
    pooled = _pooled(net)

    def sends_to(name):
        dest = []
        for q in net.projections:
            if q.source == name:
                dest += sends_to(q.target) if q.target in pooled else [q.target]
        return list(dict.fromkeys(dest))

    layers = []
    for pop in net.populations[1:]:
        if pop.name in pooled:
            continue
        dest = tuple(sends_to(pop.name))
        if len(dest) > SPECK["destinations"]:
            raise MappingError(f"layer {pop.name!r} sends to {len(dest)} layers ({', '.join(dest)}); a Speck core "
                               f"has at most {SPECK['destinations']} destinations")
        layers.append(SpeckLayer(pop.name, *layer_memory(net, pop), dest))
    return layers


def assign_cores(layers, spec=SPECK) -> dict:
    """{layer name: core index}: a matching of layers onto cores whose memories hold them (scipy's maximum
    bipartite matching, as sinabs' max-flow); MappingError naming the layer and memory that does not fit."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import maximum_bipartite_matching

    kmem, nmem = np.asarray(spec["kernel_memory"]), np.asarray(spec["neuron_memory"])
    if len(layers) > len(kmem):
        raise MappingError(f"the network has {len(layers)} layers; a Speck chip has {len(kmem)} cores, one layer "
                           "each")
    fits = np.array([(kmem >= lay.kernel_memory) & (nmem >= lay.neuron_memory) for lay in layers])
    for lay, row in zip(layers, fits):
        if not row.any():
            k_ok = kmem >= lay.kernel_memory
            which = "kernel" if not k_ok.any() else "neuron"
            need = lay.kernel_memory if which == "kernel" else lay.neuron_memory
            best = (kmem if which == "kernel" else nmem)[k_ok if which == "neuron" else slice(None)].max()
            raise MappingError(f"layer {lay.name!r}: {which} memory {need} entries, the largest Speck core "
                               f"{'that holds its kernel ' if which == 'neuron' else ''}has {int(best)}")
    match = maximum_bipartite_matching(csr_matrix(fits.astype(np.int8)), perm_type="column")
    if (match < 0).any():
        left = [lay.name for lay, m in zip(layers, match) if m < 0]
        raise MappingError(f"no Speck core is left for layer(s) {', '.join(map(repr, left))}: the layers that fit "
                           "only the large-memory cores outnumber them")
    return {lay.name: int(m) for lay, m in zip(layers, match)}


def map_speck(net: Network, name: str = "speck") -> Network:
    """`net` placed on a Speck chip: each layer on the core `assign_cores` gives it (x = core index, y = 0), a pooled
    population on its source's core (the sum pooling of that core's output), the input on the chip's input
    interface (x = 0, y = 1). One core-table row per population, each holding it whole; MappingError (naming the
    layer and the rule) for a network that does not fit."""
    layers = speck_layers(net)
    core = assign_cores(layers)
    pooled = _pooled(net)

    def where(name_):
        while name_ in pooled:
            name_ = pooled[name_]
        return core[name_]

    x = [0] + [where(p.name) for p in net.populations[1:]]
    y = [1] + [0] * (len(net.populations) - 1)
    cores, edges = one_population_per_core(net.populations, net.projections, x, y)
    return Network(net.populations, net.projections, cores, edges, dict(net.attrs, mapping=f"{name}:speck"))
