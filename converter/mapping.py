"""Mapping of populations onto the cores of a hardware target.

`one_population_per_core`: the trivial mapping every converter writes first (one core per population, on a
square mesh of one chip). `map_network(net, target)`: the real one:

1. Partition, from the last population to the first (a core's output axons depend on how the populations it
   feeds were cut): every population is cut into as few cores as the target's per-core limits allow: neurons
   per core (compartments as laid out), input axons (distinct source neurons with a synapse into the core),
   output axons (one per neuron and destination core, where the target limits them) and synapse memory. Memory
   is bits per synapse (weight bits + target-index bits, or the target's fixed `bits_per_synapse`; a conv kernel
   stored once per core when the target shares weights) or, where the target stores per-axon synapse lists in
   words (Loihi), `synapse_memory`'s list encoding with shared conv lists. Multi-threshold sources with the
   parallel payload store 2n weight copies. Where the target cuts convolutions into boxes (`box_partition`), a
   (C, H, W) population is cut into channels x rows x columns tiles (a core's box, format 1.9), and an ec_matmul
   node's (M, N) products into rows x columns tiles (1.14); otherwise into contiguous neuron ranges. A network
   that needs more cores than cores per chip x chips, or a neuron that alone breaks a core limit, raises
   `MappingError` naming the limit, the layer and by how much.
2. Placement on the 2D mesh (chips tile a square grid of meshes): `"snake"` walks the cores in layer order
   along a boustrophedon path (consecutive cores are neighbours), `"anneal"` starts there and swaps cores
   (and empty slots) by simulated annealing to shorten Σ traffic x Manhattan distance, traffic being the
   axons of each core edge (one packet per source neuron that fires) or measured spike counts.
3. The core edges: synapses and axons (= packets per step when every source neuron fires once) per pair.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math

import numpy as np

from spikeforge.errors import UserError
from spikeforge.simulator.geometry import projection_kernel, synapses_per_source
from spikeforge.simulator.network import CoreEdges, CoreTable, Network, box_indices, box_shape, box_span

from .placement import chip_mesh, place
from .synapse_memory import channels_fed, index_bits, list_words, shared_conv_lists, taps_reaching, uses_lists


class MappingError(UserError):
    """The network does not fit the target; the message names the limit, the layer and the excess."""


class WorkBudgetWarning(UserWarning):
    """A work budget per core that some layers' cores still pass after map_to_work's re-cuts (the mapping is valid;
    the command line prints it as a note)."""


def one_population_per_core(populations, projections, x=None, y=None):
    """Return (CoreTable, CoreEdges) with core i holding population i whole, at (x[i], y[i]) on chip 0 (default: a
    square grid in order; chips with their own placement rule give theirs, several rows may share a position)."""
    n = len(populations)
    width = max(1, math.ceil(math.sqrt(n)))
    ids = np.arange(n, dtype=np.int64)
    x = ids % width if x is None else np.asarray(x, np.int64)
    y = ids // width if y is None else np.asarray(y, np.int64)
    cores = CoreTable(core_id=ids, chip=np.zeros(n, np.int64), x=x, y=y,
                      population=ids.copy(), neuron_start=np.zeros(n, np.int64),
                      neuron_stop=np.array([p.size for p in populations], np.int64))
    return cores, core_edges(populations, projections, cores)


# ----------------------------------------------------------------------------------------------- fan-in
def fan_into_box(proj, source_shape, target_shape, box) -> "Fan":
    """Synapses from the source neurons into the box (c0, c1, h0, h1, w0, w1) of a (C, H, W) target, kept sparse.
    A window (conv2d / avgpool / maxpool) fan is a product: output channels of the box fed by the source channel x
    kernel rows x kernel columns reaching the box from the source row and column (exact, no transposed conv)."""
    n_src = int(np.prod(source_shape))
    if proj.kind in MATMUL_KINDS:
        return _matmul_box_fan(proj, source_shape, target_shape, box)
    if proj.kind in ("conv2d", "avgpool", "maxpool"):
        (kh, kw), (sh, sw), (ph, pw), cin_g, cout_g = projection_kernel(proj, source_shape, target_shape)
        c_in, h_in, w_in = source_shape
        c0, c1, h0, h1, w0, w1 = (int(v) for v in box)
        per_axis = (channels_fed(c_in, cin_g, cout_g, c0, c1), taps_reaching(h_in, kh, sh, ph, h0, h1),
                    taps_reaching(w_in, kw, sw, pw, w0, w1))
        c, r, q = (np.flatnonzero(a) for a in per_axis)  # the fan is a product: its nonzeros, ascending
        nc, nr, nq = (a[i] for a, i in zip(per_axis, (c, r, q)))
        index = (c[:, None, None] * (h_in * w_in) + r[None, :, None] * w_in + q[None, None, :]).reshape(-1)
        count = (nc[:, None, None] * nr[None, :, None] * nq[None, None, :]).reshape(-1)
        return Fan(index.astype(np.int64, copy=False), count.astype(np.int64, copy=False))
    members = box_indices(box, target_shape)
    if proj.kind == "dense":
        return Fan(np.arange(n_src, dtype=np.int64), np.full(n_src, len(members), np.int64))
    if proj.kind == "identity":
        return Fan(members.copy(), np.ones(len(members), np.int64))
    if proj.kind == "sparse":
        ptr, sources = _by_target(proj, n_src)
        members = members[members < len(ptr) - 1]  # targets past the last stored index have no synapse
        lo, hi = ptr[members], ptr[members + 1]
        lens = hi - lo
        at = np.repeat(lo - np.cumsum(lens) + lens, lens) + np.arange(int(lens.sum()))
        return Fan.of(np.bincount(sources[at], minlength=n_src).astype(np.int64))
    raise ValueError(f"a {proj.kind} projection into a box of cores is not supported")


BOX_KINDS = ("conv2d", "avgpool", "maxpool", "dense", "identity", "sparse")
MATMUL_KINDS = ("matmul_a", "matmul_b")


def fan_into_range(proj, source_shape, target_shape, start, stop) -> np.ndarray:
    """Synapses from every source neuron (C order) into the target neurons start..stop-1."""
    n_src, n_tgt = int(np.prod(source_shape)), int(np.prod(target_shape))
    if proj.kind in MATMUL_KINDS:
        return matmul_fan(proj, source_shape, target_shape, start, stop)
    if start == 0 and stop == n_tgt:
        return synapses_per_source(proj, source_shape, target_shape)
    if proj.kind == "dense":
        return np.full(n_src, stop - start, np.int64)
    if proj.kind == "sparse":
        return np.bincount(_range_sources(proj, n_src, start, stop), minlength=n_src).astype(np.int64)
    if proj.kind == "identity":
        out = np.zeros(n_src, np.int64)
        out[start:stop] = 1
        return out
    if proj.kind == "pointwise":
        return _pointwise_fan(proj.weight, n_src, start, stop)
    return _window_fan(proj, source_shape, target_shape, start, stop)


def matmul_fan(proj, source_shape, target_shape, start, stop) -> np.ndarray:
    """Products among the node's neurons start..stop-1 (row-major (M, N)) that each operand element reaches: an
    element of A (i, k) the products of row i, an element of B (k, j) those of column j (source element (r, c) is
    operand element (c, r) when the projection is transposed). Its events are sent to the cores holding them."""
    m, n = int(target_shape[0]), int(target_shape[1])
    line = _operand_lines(proj, source_shape, target_shape)
    if proj.kind == "matmul_a":
        i = np.arange(m, dtype=np.int64)
        per_row = np.clip(np.minimum(stop, (i + 1) * n) - np.maximum(start, i * n), 0, None)
        return per_row[line]
    j = np.arange(n, dtype=np.int64)
    first = np.maximum(0, -((j - start) // n))  # the least i with i·N + j >= start
    last = np.minimum(m - 1, (stop - 1 - j) // n)  # the most i with i·N + j < stop
    return np.clip(last - first + 1, 0, None)[line]


def _operand_lines(proj, source_shape, target_shape) -> np.ndarray:
    """The line of products each source element meets: row i of the (M, N) products for an element (i, k) of A,
    column j for an element (k, j) of B (source element (r, c) is operand element (c, r) when transposed)."""
    m, n = int(target_shape[0]), int(target_shape[1])
    rows = int(source_shape[0]) if len(source_shape) > 1 else 1
    size = int(np.prod(source_shape))
    src = np.arange(size, dtype=np.int64)
    if proj.transpose:
        cols = size // rows
        src = (src % cols) * rows + src // cols  # operand element of each source element
    return src // (size // m) if proj.kind == "matmul_a" else src % n


def _matmul_box_fan(proj, source_shape, target_shape, box) -> "Fan":
    """Products in the tile (0, 1, r0, r1, c0, c1) of an (M, N) ec_matmul node that each operand element reaches:
    an element of row i of A the tile's c1 - c0 products of row i when r0 <= i < r1, an element of column j of B
    its r1 - r0 products of column j when c0 <= j < c1. A tile of r x c products needs the r rows of A and the c
    columns of B, K (r + c) input axons; a range of products along rows needs whole rows of B's columns."""
    _, _, r0, r1, c0, c1 = (int(v) for v in box)
    line = _operand_lines(proj, source_shape, target_shape)
    lo, hi, per = (r0, r1, c1 - c0) if proj.kind == "matmul_a" else (c0, c1, r1 - r0)
    index = np.flatnonzero((line >= lo) & (line < hi)).astype(np.int64)
    return Fan(index, np.full(len(index), per, np.int64))


_POINTWISE_CUM = {}  # id(weight) -> (weight, prefix counts of its nonzero weights over outputs)
_BY_TARGET = {}  # (id(indices), id(indptr)) -> (indices, column pointers, sources by target, indptr): the last
# few sparse projections; map_network empties it when it returns (a 100 M-synapse transpose is over a GB)


def _range_sources(proj, n_src, start, stop) -> np.ndarray:
    """The source of every synapse of a sparse projection into its targets start..stop-1 (targets past the last
    stored index have none)."""
    ptr, sources = _by_target(proj, n_src)
    stop = min(stop, len(ptr) - 1)
    return sources[ptr[start]:ptr[stop]] if start < stop else sources[:0]


def _by_target(proj, n_src):
    """A sparse projection's synapses by target (CSC): (pointers, sources), the sources of target t being
    sources[pointers[t]:pointers[t + 1]]; made once per projection (scipy's O(synapses) transpose), so a target
    range's fan costs its own synapses, not a scan of them all (a split 100,352-input readout has 100 M synapses
    and thousands of candidate cores)."""
    import scipy.sparse as sp

    key = (id(proj.indices), id(proj.indptr))
    hit = _BY_TARGET.get(key)
    if hit is None or hit[0] is not proj.indices or hit[3] is not proj.indptr:
        n_tgt = int(proj.indices.max(initial=-1)) + 1
        ones = np.ones(len(proj.indices), np.int8)
        csc = sp.csr_matrix((ones, proj.indices, proj.indptr), shape=(n_src, n_tgt)).tocsc()
        hit = (proj.indices, csc.indptr.astype(np.int64), csc.indices, proj.indptr)
        while len(_BY_TARGET) >= 8:
            _BY_TARGET.pop(next(iter(_BY_TARGET)))
        _BY_TARGET[key] = hit
    return hit[1], hit[2]


def _pointwise_fan(weight, n_src, start, stop):
    """pointwise: row r's input channel c reaches the nonzero weights of column c whose output r·d_out + o
    falls in start..stop-1 (the range fan, spread over every source)."""
    fan = _pointwise_range_fan(weight, start, stop)
    out = np.zeros(n_src, np.int64)
    out[fan.index] = fan.count
    return out


def _nonzero_prefix(weight):
    """(d_out + 1, d_in) prefix counts of a pointwise weight's nonzeros over outputs, once per weight array (a
    split ViT's relays ask for it at every candidate core)."""
    hit = _POINTWISE_CUM.get(id(weight))
    if hit is None or hit[0] is not weight:
        while len(_POINTWISE_CUM) >= 64:
            _POINTWISE_CUM.pop(next(iter(_POINTWISE_CUM)))
        hit = _POINTWISE_CUM[id(weight)] = (weight, np.vstack([np.zeros((1, weight.shape[1]), np.int64),
                                                               np.cumsum(weight != 0, axis=0)]))
    return hit[1]


def _pointwise_range_fan(weight, start, stop) -> "Fan":
    """A pointwise projection's fan into outputs start..stop-1, from the rows (tokens) they cover only."""
    d_out, d_in = weight.shape
    rows = np.arange(start // d_out, (stop - 1) // d_out + 1)
    lo = np.clip(start - rows * d_out, 0, d_out)
    hi = np.clip(stop - rows * d_out, 0, d_out)
    cum = _nonzero_prefix(weight)
    count = (cum[hi] - cum[lo]).reshape(-1)
    index = (rows[:, None] * d_in + np.arange(d_in)[None, :]).reshape(-1)
    keep = count > 0
    return Fan(index[keep], count[keep].astype(np.int64))


def range_fan(proj, source_shape, target_shape, start, stop) -> "Fan":
    """fan_into_range kept sparse; a window projection's range is cut into the boxes it covers (range_boxes), whose
    fans are exact products (fan_into_box), instead of a transposed convolution over the whole map."""
    if proj.kind in ("conv2d", "avgpool", "maxpool") and len(target_shape) == 3:
        fans = [fan_into_box(proj, source_shape, target_shape, b) for b in range_boxes(start, stop, target_shape)]
        out = fans[0]
        for f in fans[1:]:
            out = out.plus(f)
        return out
    if proj.kind == "pointwise":  # from the tokens the range covers, not the whole map
        return _pointwise_range_fan(np.asarray(proj.weight), start, stop)
    if proj.kind == "identity":  # the range's own neurons, not a scan of the whole source
        index = np.arange(start, stop, dtype=np.int64)
        return Fan(index, np.ones(len(index), np.int64))
    if proj.kind == "sparse":
        n_src = int(np.prod(source_shape))
        own = _range_sources(proj, n_src, start, stop)
        if len(own) * 16 < n_src:  # few synapses: sort the range's own, not a count over every source
            index, count = np.unique(own, return_counts=True)
            return Fan(index.astype(np.int64, copy=False), count.astype(np.int64, copy=False))
        return Fan.of(np.bincount(own, minlength=n_src).astype(np.int64))
    return Fan.of(fan_into_range(proj, source_shape, target_shape, start, stop))


def range_boxes(start, stop, shape) -> list:
    """The boxes (c0, c1, h0, h1, w0, w1) that tile the C-order range start..stop-1 of a (C, H, W) map (at most
    five: a partial row, whole rows, whole channels, whole rows, a partial row)."""
    _, h, w = (int(v) for v in shape)
    out = []

    def rows(c, a, b):  # positions a..b-1 of channel c (within one channel)
        r0, r1 = a // w, b // w
        if r0 == r1:
            out.append((c, c + 1, r0, r0 + 1, a % w, b % w))
            return
        if a % w:
            out.append((c, c + 1, r0, r0 + 1, a % w, w))
            r0 += 1
        if r1 > r0:
            out.append((c, c + 1, r0, r1, 0, w))
        if b % w:
            out.append((c, c + 1, r1, r1 + 1, 0, b % w))

    hw = h * w
    c0, c1 = start // hw, stop // hw
    if c0 == c1:
        rows(c0, start % hw, stop % hw)
        return out
    if start % hw:
        rows(c0, start % hw, hw)
        c0 += 1
    if c1 > c0:
        out.append((c0, c1, 0, h, 0, w))
    if stop % hw:
        rows(c1, 0, stop % hw)
    return out


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

    def plus(self, other):
        """Both fans' synapses (two projections from one source)."""
        index, inverse = np.unique(np.concatenate([self.index, other.index]), return_inverse=True)
        return Fan(index, np.bincount(inverse, weights=np.concatenate([self.count, other.count]),
                                      minlength=len(index)).astype(np.int64))

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
    """What one candidate core (a neuron range or a box of one population) needs."""

    neurons: int
    axons: int
    synapse_bytes: float
    fans: dict  # source population name -> Fan: synapses per source neuron into this range
    output_axons: int = 0  # axon entries its neurons' events need: one per (neuron, destination core)
    compartments: int = 0  # neurons as laid out (shared conv lists interleave destination groups: padding)
    groups: int = 0  # destination groups of shared conv lists (a compartment-offset window each)


_INDEX = [None, None, None]  # (populations list, projections list, their index): the network last partitioned


def _index(net):
    """({name: population}, {name: incoming projections}) of `net`, built once per network, not per candidate
    core (a ViT has 600 populations and its partition asks for tens of thousands of cores)."""
    pops, projs, hit = _INDEX
    if pops is not net.populations or projs is not net.projections or \
            len(hit[0]) != len(net.populations) or hit[2] != len(net.projections):
        incoming = {p.name: [] for p in net.populations}
        for q in net.projections:
            incoming.setdefault(q.target, []).append(q)
        hit = ({p.name: p for p in net.populations}, incoming, len(net.projections))
        _INDEX[:] = [net.populations, net.projections, hit]
    return hit[0], hit[1]


def core_load(net, pop, start, stop, limits, box=None) -> CoreLoad:
    """Neurons, distinct input axons and synapse memory of the neurons start..stop-1 of `pop` (or of its box)."""
    pops, incoming = _index(net)
    neurons = stop - start if box is None else int(np.prod(np.subtract(box[1::2], box[0::2])))
    lists = uses_lists(limits)
    idx_bits = index_bits(limits, min(neurons, limits["neurons_per_core"])) if lists else 0
    bits = limits.get("bits_per_synapse", 0) or \
        limits["weight_bits"] + max(1, math.ceil(math.log2(max(2, limits["neurons_per_core"]))))
    fans, memory_bits, compartments, groups = {}, 0.0, neurons, 0
    for q in incoming.get(pop.name, []):
        if box is None:
            fan = range_fan(q, pops[q.source].shape, pop.shape, start, stop)
        else:
            fan = fan_into_box(q, pops[q.source].shape, pop.shape, box)
        fans[q.source] = fan if q.source not in fans else fans[q.source].plus(fan)
        copies = pops[q.source].weight_copies
        if q.kind in MATMUL_KINDS + ("maxpool",):  # operands; a max pooling gate stores no weights
            continue
        if lists:
            if q.kind in ("conv2d", "avgpool") and box is not None and limits.get("conv_list_sharing", 0):
                shared = shared_conv_lists(q, pops[q.source].shape, pop.shape, box, limits)
                words = shared.words
                compartments = max(compartments, shared.compartments)
                groups = max(groups, shared.groups)
            else:
                words = int(list_words(fan.count, limits, idx_bits, contiguous=q.kind == "dense").sum())
            memory_bits += words * limits["synapse_word_bits"] * copies
        elif q.kind in ("conv2d", "avgpool") and limits.get("weight_sharing", 0):
            if box is None:
                per_channel = int(np.prod(pop.shape[1:]))
                channels = (stop - 1) // per_channel - start // per_channel + 1
            else:
                channels = int(box[1] - box[0])
            taps = q.weight[0].size if q.kind == "conv2d" else 1
            memory_bits += channels * taps * limits["weight_bits"] * copies
        elif q.kind == "pointwise" and limits.get("weight_sharing", 0):  # the weight rows of the outputs held
            d_out = q.weight.shape[0]
            held = np.unique(np.arange(start, stop) % d_out)
            memory_bits += np.count_nonzero(q.weight[held]) * limits["weight_bits"] * copies
        else:
            memory_bits += int(fan.count.sum()) * bits * copies
    axons = sum(len(f.index) for f in fans.values())
    return CoreLoad(neurons, axons, memory_bits / 8, fans, compartments=compartments, groups=groups)


def _over(load, limits):
    """(limit name, needed, allowed) for every per-core limit this load breaks."""
    checks = [("neurons_per_core", max(load.neurons, load.compartments)), ("axons_per_core", load.axons),
              ("synapse_memory_bytes_per_core", load.synapse_bytes)]
    if limits.get("output_axons_per_core", 0):
        checks.append(("output_axons_per_core", load.output_axons))
    if limits.get("cx_base_groups", 0):
        checks.append(("cx_base_groups", load.groups))
    if limits.get("work_neurons_per_core", 0):  # a cap balance_work set for this population
        checks.append(("work_neurons_per_core", load.neurons))
    return [(k, v, limits[k]) for k, v in checks if v > limits[k]]


def partition(net, limits, progress=None, max_neurons=None):
    """[(population index, start, stop, CoreLoad, box)] with as few cores per population as the limits allow
    (box None: the core holds the range start..stop-1). A network whose neurons alone need more cores than the
    target has is refused before any fan-in is computed (minutes for an ImageNet-size network).

    Populations are cut from the last to the first: a core's output axons (one per neuron and destination core,
    `output_axons_per_core`) depend on how the populations it feeds were cut. Where the target cuts convolutions
    into boxes (`box_partition`), a (C, H, W) population fed only by window, dense, identity or sparse projections
    is cut into channels x rows x columns tiles, the fewest that fit, row cuts preferred over column cuts over
    channel cuts (rows share the least input), and an ec_matmul node into tiles of rows x columns of products;
    others into contiguous ranges. max_neurons: {population name:
    the most of its neurons a core may hold} (`balance_work`), below the chip's own limits."""
    _INDEX[:] = [None, None, None]  # built afresh: a caller may have edited the lists of an earlier network
    capacity = int(limits["cores_per_chip"] * limits.get("chips", 1))
    caps = {name: max(1, int(n)) for name, n in (max_neurons or {}).items()}
    least = {p.name: max(1, math.ceil(p.size / min(int(limits["neurons_per_core"]), caps.get(p.name, p.size))))
             for p in net.populations}
    capped = [p.name for p in net.populations  # caps that raise a layer's cores
              if least[p.name] > max(1, math.ceil(p.size / limits["neurons_per_core"]))]
    if sum(least.values()) > capacity:
        raise MappingError(_too_many_cores(least, limits, capacity, at_least=True, capped=capped))
    _check_fan_in(net, limits)
    # destination cores of each neuron's events, from the populations cut so far
    dest = {p.name: np.zeros(p.size, np.int64) for p in net.populations}
    chosen = {}
    for pi in reversed(range(len(net.populations))):
        pop = net.populations[pi]
        out = dest[pop.name]
        lim = limits
        if pop.name in caps:
            lim = dict(limits, work_neurons_per_core=caps[pop.name])
        parts = _box_partition(net, pi, lim, out) if _boxable(net, pop, lim) else \
            _range_partition(net, pi, lim, out)
        for part in parts:
            for name, fan in part[3].fans.items():
                dest[name][fan.index] += 1
        chosen[pi] = parts
        if progress:
            progress(pop.name, len(parts))
    cores = [part for pi in range(len(net.populations)) for part in chosen[pi]]
    if len(cores) > capacity:
        per_layer = {}
        for pi, *_ in cores:
            per_layer[net.populations[pi].name] = per_layer.get(net.populations[pi].name, 0) + 1
        raise MappingError(_too_many_cores(per_layer, limits, capacity, capped=capped))
    return cores


def _widest_neuron(net, pop) -> int:
    """A neuron of `pop` with the most inputs: the centre of a (C, H, W) map (a window's full kernel), else the
    target of the first dense or sparse projection with the most non-zero weights (0 where there is none)."""
    if len(pop.shape) == 3:
        return (pop.shape[1] // 2) * pop.shape[2] + pop.shape[2] // 2
    for q in net.incoming(pop.name):
        if q.kind == "dense":
            return int(np.count_nonzero(q.weight, axis=1).argmax())
        if q.kind == "sparse":  # CSR by source: a target's fan-in is how often it is an index
            return int(np.bincount(q.indices, minlength=1).argmax())
    return 0


def _check_fan_in(net, limits):
    """Before any partitioning (minutes for a large network): every layer whose widest neuron alone needs more input
    axons or synapse memory than a core has, all named in one refusal with each need, the limit and what would
    make it fit (a partition stops at the first layer it cannot cut, from the last layer back)."""
    bad = []
    for pop in net.populations:
        if not net.incoming(pop.name):
            continue
        j = _widest_neuron(net, pop)
        over = [o for o in _over(core_load(net, pop, j, j + 1, limits), limits)
                if o[0] in ("axons_per_core", "synapse_memory_bytes_per_core")]
        if over:
            bad.append((pop, j, over))
    if bad:
        kinds = {o[0] for *_, over in bad for o in over}
        raise MappingError("; ".join(_needs(pop, j, over) for pop, j, over in bad)
                           + (NO_SPLIT if "axons_per_core" in kinds else "")
                           + (NO_MEMORY if "synapse_memory_bytes_per_core" in kinds else ""))


NO_SPLIT = " (map_network splits such layers unless split=False)"
NO_MEMORY = (" (a core stores the weights of its neurons' inputs: fewer weight bits (convert --fixed-point onto a "
             "narrower target), pruned or fewer inputs per neuron, or a target with more synapse memory per core)")


def _needs(pop, where, over):
    """What one neuron that alone breaks core limits needs, against each limit."""
    return f"layer {pop.name!r}: neuron {where} alone needs " + " and ".join(
        f"{name.replace('_per_core', '')} {need:g} but a core allows {allowed:g} ({need / allowed:.2f}x over)"
        for name, need, allowed in over)


def _alone(pop, where, over):
    """The refusal of one neuron that alone breaks a core limit (splitting helps only the input-axon limit)."""
    return MappingError(_needs(pop, where, over) + (NO_SPLIT if over[0][0] == "axons_per_core" else ""))


def _range_partition(net, pi, limits, out):
    """Contiguous ranges of population pi, as few as fit (`out`: destination cores per neuron): equal ranges, the
    fewest that fit found by galloping up from the neurons' bound (each failure's worst overload as a hint), then
    bisecting down to within 1/64 of the fewest (a layer bound by input axons needs many more cores than neurons:
    stepping one core at a time computed every core's load hundreds of times)."""
    pop = net.populations[pi]
    running = np.concatenate([[0], np.cumsum(out)])
    block = _block(net, pop)
    blocks = pop.size // block

    def attempt(per, first_failure=False):
        """(cores, worst overload) of `per` equal ranges per block (no core straddles two blocks); with
        first_failure, stops at the first core over a limit (a bisection step needs no more)."""
        bounds = np.concatenate([b * block + np.linspace(0, block, per + 1)[:-1].round().astype(np.int64)
                                 for b in range(blocks)] + [[pop.size]]).astype(np.int64)
        parts, worst = [], 1.0
        for a, b in zip(bounds[:-1], bounds[1:]):
            load = core_load(net, pop, int(a), int(b), limits)
            load.output_axons = int(running[b] - running[a])
            over = _over(load, limits)
            if over and b - a == 1:
                raise _alone(pop, int(a), over)
            for _, need, allowed in over:
                worst = max(worst, need / allowed)
            if over and first_failure:
                break
            parts.append((pi, int(a), int(b), load, None))
        return parts, worst

    per = math.ceil(max(1, math.ceil(pop.size / _neuron_cap(limits))) / blocks)
    failed, step = 0, 1  # the most ranges per block known not to fit
    while True:
        parts, worst = attempt(per)
        if worst <= 1.0:
            break
        failed = per
        per = min(block, max(per + step, math.ceil(per * worst)))
        step *= 2
    while per - failed > max(1, per // 64):  # the fewest that fit, to within 1/64 of them (each step is a pass)
        mid = (per + failed) // 2
        got, worst = attempt(mid, first_failure=True)
        if worst <= 1.0:
            per, parts = mid, got
        else:
            failed = mid
    return parts


def _neuron_cap(limits) -> int:
    """The most neurons a core of this population may hold: the chip's limit, or balance_work's cap below it."""
    chip = int(limits["neurons_per_core"])
    return min(chip, int(limits.get("work_neurons_per_core", 0) or chip))


def balance_work(work, per_core) -> dict:
    """{population: the most neurons a core may hold} so that a core of neurons of the layer's mean work does not
    pass `per_core` per step (map_to_work then checks every core and cuts busier ones finer):
    `work` is {population name: work per neuron per step}, synaptic operations or nanoseconds of core time
    (`work_per_neuron`, measured), `per_core` a budget in the same unit. A chip step lasts as long as its slowest
    core: a population whose neurons each do much work (a ViT's attention products gather a row times a column
    every step) is cut finer, on more cores, so that it no longer sets every step's length. Measure `work` on the
    network as it will be mapped (after split_fan_in, so a split layer's relays carry its partial sums)."""
    if isinstance(per_core, bool) or not isinstance(per_core, (int, float, np.integer, np.floating)) or \
            not (np.isfinite(per_core) and per_core > 0):
        raise ValueError(f"the work budget per core must be a finite number > 0, got {per_core!r}")
    return {name: max(1, int(per_core // w)) for name, w in work.items() if w > 0}


def _check_work_unit(unit):
    if unit not in ("synops", "ns"):
        raise ValueError(f"unit must be 'synops' or 'ns', got {unit!r}")


def split_and_measure_work(net, target, x, steps, calibration=None, hop_delay=0, unit="synops"):
    """(net, work): `net` pipelined by `hop_delay` and its fan-in split for `target` as map_network would do it,
    and its work per neuron per step on `x` (`work_per_neuron` in `unit`), so a split layer's partial sums are
    measured on its relays. Map the result with map_to_work(net, target, x, steps, work, budget, unit)."""
    _check_work_unit(unit)
    from spikeforge.hwmodels.cost import prices_core_time

    if unit == "ns" and not prices_core_time(target):
        raise MappingError(f"target {target.name!r} prices no core time (its time_ns are 0): a budget in ns cannot "
                           "cut its cores; give one in synaptic operations")
    rule = getattr(target, "mapping", "cores")
    if rule != "cores":
        raise MappingError(f"a work budget per core applies to targets placed on cores; {target.name!r} places a "
                           f"network by its chip's own rule ({rule})")
    from .fanin import split_fan_in

    net, _ = split_fan_in(pipelined(net, hop_delay), target.limits, calibration=calibration, steps=steps)
    return net, work_per_neuron(net, x, steps, target if unit == "ns" else None)


# projections whose events received per core shrink with the core's neurons (work_per_neuron)
_DIVIDING_KINDS = ("identity", "pointwise", "conv2d", "avgpool", "maxpool")


def work_per_neuron(net, x, steps, target=None) -> dict:
    """{population name: work per neuron per step} of `net` (runnable: one core per population) on samples `x`
    over `steps` steps, from the simulator's own counts: synaptic operations, or with a `target` the nanoseconds of
    core time it prices them at that divide with a core's neurons (hwmodels.estimate's per-core compute: synaptic
    ops, MACs, neuron updates, active neurons, spikes and packets sent and received, each at its time per event).

    The packets a core receives (one per source event reaching any of its neurons) count for populations fed only
    by projections whose received events divide with the neurons (identity; pointwise, down to a row; windowed,
    up to the windows' overlap), not for others (a dense layer's every core receives every event of its source,
    however few neurons it holds). With one core per population a neuron's packets go to one core per destination
    layer; cut finer, its events reach more cores, which this does not foresee."""
    per_core = core_work(net, x, steps, target, dividing=True)
    out = {}
    for core, pi in enumerate(net.cores.population):
        pop = net.populations[int(pi)]
        out[pop.name] = out.get(pop.name, 0.0) + float(per_core[core]) / pop.size
    return out


def core_work(net, x, steps, target=None, dividing=False) -> np.ndarray:
    """Work per step of each core of `net` (runnable) on samples `x` over `steps` steps, per sample: synaptic
    operations, or with a `target` nanoseconds of core compute time as it prices them (a neuron's update once per
    step, its events spread over the steps). dividing: leave out the packets received by cores of populations fed
    by projections whose received events do not divide with the neurons (work_per_neuron's forecast)."""
    from spikeforge import simulator

    return work_of(net, simulator.run(net, np.asarray(x), steps), steps, target, dividing)


def work_of(net, res, steps, target=None, dividing=False) -> np.ndarray:
    """core_work from a simulation `res` of `net` already run (on len(res.output) samples over `steps` steps)."""
    from spikeforge import simulator

    names, n = list(simulator.COUNTERS), len(res.output)
    if target is None:
        return res.counters[:, :, names.index("synops")].sum(axis=0) / (n * steps)
    from spikeforge.hwmodels import estimate

    if isinstance(target, str):
        from spikeforge.hwmodels import load_target

        target = load_target(target)
    rep = estimate(res.counters, names, n, target, network=net)
    per_core = rep.core_compute_ns.copy()  # summed over the chip's steps; a core's time is linear in its counts
    if dividing:
        received = res.counters[:, :, names.index("packets_in")].sum(axis=0) / n
        for core, pi in enumerate(net.cores.population):
            if not all(q.kind in _DIVIDING_KINDS for q in net.incoming(net.populations[int(pi)].name)):
                per_core[core] -= received[core] * target.time_ns["packets_in"]
    # a neuron is updated in every step the (pipelined) chip runs, its events come in T of them: the updates'
    # time per step once, the events' spread over T steps
    updates = res.counters[:, :, names.index("neuron_updates")].sum(axis=0) / (n * steps) * \
        target.time_ns["neuron_updates"]
    return ((per_core - updates * rep.steps) + updates * steps) / steps


MAX_WORK_ROUNDS = 3  # re-mappings map_to_work makes at most after the caps from the layers' mean work


def map_to_work(net, target, x, steps, work, per_core, unit="synops", rounds=MAX_WORK_ROUNDS, **kw):
    """(mapped network, caps, over): `net` (split and measured by split_and_measure_work, `work` its work per
    neuron) mapped with balance_work's caps, checked core by core on the samples `x`, and mapped again while a
    core's work per step passes `per_core`: each layer owning such a core capped lower, by the ratio of the budget
    to its busiest core's work (at least one neuron fewer; not a layer whose last cut gained it nothing), at most
    `rounds` times. The caps from a layer's mean work leave cores of its busier neurons over the budget (a ViT's
    class token, a convolution's centre; up to 21 % on the CIFAR-10 ViT). over: {layer: work per step of its
    busiest core} still over after the last round, {} when every core is within the budget on `x` (a single
    neuron may do more than the budget alone). A re-cut that needs more cores than the chips have returns the
    last mapping that fit. kw: further map_network arguments (placement, seed, chips; a progress callback is
    called once per mapping). A core's work is measured as work_per_neuron measures it (in ns, the packets
    received behind projections whose events do not divide are left out: cutting cannot lower them)."""
    _check_work_unit(unit)
    caps, before, last = balance_work(work, per_core), {}, None
    for round_ in range(rounds + 1):
        try:
            mapped = map_network(net, target, hop_delay=0, split=False, max_neurons=caps, **kw)
        except MappingError:
            if last is None:  # the caps from the mean do not fit: the budget needs more cores than there are
                raise
            return last  # a re-cut that needs more cores than the chips have: the last mapping that fit
        done = core_work(mapped, x, steps, target if unit == "ns" else None, dividing=True)
        busiest = {}  # layer -> (work, neurons) of its busiest core
        for core, pi in enumerate(mapped.cores.population):
            name = mapped.populations[int(pi)].name
            if done[core] > busiest.get(name, (-1.0, 0))[0]:
                busiest[name] = (float(done[core]), mapped.cores.size(core))
        over = {name: w for name, (w, _) in busiest.items() if w > per_core * (1 + 1e-9)}
        last = mapped, caps, over
        # a layer whose busiest core gained nothing from its last cut is not cut again: what remains of its work
        # does not divide with its neurons
        lower = {name: max(1, min(int(n * per_core // w), n - 1)) for name, (w, n) in busiest.items()
                 if name in over and n > 1 and w < 0.999 * before.get(name, math.inf)}
        if not over or not lower or round_ == rounds:
            return last
        before = {name: busiest[name][0] for name in lower}  # the layers cut now, against their work before
        caps = dict(caps, **{name: min(caps.get(name, n), n) for name, n in lower.items()})


def _block(net, pop) -> int:
    """The run of neurons a core of `pop` should not straddle: a dense / sparse split's relays are one block per
    part (part p's relays share part p's sources; a core across two parts needs both ranges of axons); else the
    whole population."""
    for s in json.loads(net.attrs.get("fan_in_split", "[]")):
        q = next((q for q in net.projections if q.name == s["projection"]), None)
        if q is not None and q.target == pop.name and q.kind == "sparse" and pop.size % s["parts"] == 0:
            return pop.size // int(s["parts"])
    return pop.size


def _boxable(net, pop, limits) -> bool:
    """Cut into boxes: a (C, H, W) population fed by window, dense, identity or sparse projections, or an (M, N)
    ec_matmul node (tiles of rows x columns of products), where the target cuts convolutions into boxes."""
    if not limits.get("box_partition", 0):
        return False
    kinds = {q.kind for q in net.incoming(pop.name)}
    if len(pop.shape) == 2 and kinds:
        return kinds <= set(MATMUL_KINDS)
    return len(pop.shape) == 3 and kinds <= set(BOX_KINDS)


@functools.lru_cache(maxsize=256)
def _tile_sizes(n):
    """The distinct tile lengths of cutting n into 1..n near-equal parts (ceil(n / parts))."""
    return tuple(sorted({-(-n // k) for k in range(1, n + 1)}, reverse=True))


def _box_at(shape, tile, j):
    """Box j of `_boxes(shape, tile)` without building the list."""
    n = [-(-size // t) for size, t in zip(shape, tile)]
    idx = (j // (n[1] * n[2]), (j // n[2]) % n[1], j % n[2])
    return tuple(v for i, t, size in zip(idx, tile, shape) for v in (i * t, min((i + 1) * t, size)))


def _boxes(shape, tile):
    """The boxes (c0, c1, h0, h1, w0, w1) of a tiling, in canonical order of their corners."""
    ranges = [[(a, min(a + t, n)) for a in range(0, n, t)] for n, t in zip(shape, tile)]
    return [(c0, c1, h0, h1, w0, w1) for c0, c1 in ranges[0] for h0, h1 in ranges[1] for w0, w1 in ranges[2]]


def _box_partition(net, pi, limits, out, translate=True):
    """Tiles of channels x rows x columns of the (C, H, W) population pi (rows x columns of an (M, N) one), the
    fewest that fit the limits. translate: a box whose load is a translation of one already computed is moved
    from it (`_Translations`), not recomputed."""
    pop = net.populations[pi]
    shape = box_shape(pop.shape)
    moves = _Translations(net, pop, shape) if translate else None
    capacity = int(limits["cores_per_chip"] * limits.get("chips", 1))
    table = np.zeros((shape[0] + 1, shape[1] + 1, shape[2] + 1), np.int64)  # summed-area table of output axons
    table[1:, 1:, 1:] = out.reshape(shape).cumsum(0).cumsum(1).cumsum(2)  # per neuron: a box's sum in 8 lookups
    candidates = []
    for tc in _tile_sizes(shape[0]):
        for th in _tile_sizes(shape[1]):
            for tw in _tile_sizes(shape[2]):
                if tc * th * tw <= _neuron_cap(limits):
                    n = [-(-size // t) for size, t in zip(shape, (tc, th, tw))]
                    candidates.append((n[0] * n[1] * n[2], n[0], n[2], n[1], (tc, th, tw)))
    candidates.sort()
    for count, *_, tile in candidates:
        if count > capacity:
            break
        first = count // 2  # an inner tile first: the most loaded, so a misfit is found early
        box = _box_at(shape, tile, first)
        sends = limits.get("output_axons_per_core", 0)
        if sends and _box_sum(table, box) > sends and count < pop.size:
            continue  # its output axons need no fans: refuse the tiling before computing any
        load = _box_load(net, pop, shape, box, table, limits, count == pop.size, moves)
        if load is None:
            continue
        boxes = _boxes(shape, tile)
        if sends and max(_box_sum(table, b) for b in boxes) > sends and count < pop.size:
            continue
        loads = {first: load}
        for j in (j for j in range(len(boxes)) if j != first):
            loads[j] = _box_load(net, pop, shape, boxes[j], table, limits, count == pop.size, moves)
            if loads[j] is None:
                break
        else:
            return [(pi, *box_span(box, shape), loads[j], box) for j, box in enumerate(boxes)]
    raise MappingError(f"layer {pop.name!r}: no tiling of its {shape} neurons fits the target's "
                       f"{capacity} cores")


def _box_load(net, pop, shape, box, table, limits, alone, moves=None):
    """The CoreLoad of one box (its output axons from the summed-area table), or None where it breaks a limit;
    `alone` (one neuron per box): a misfit is the neuron's own, refused naming it. moves: a `_Translations` of
    `pop` that gives the load by moving a translated box's."""
    load = moves.load(box) if moves is not None else None
    if load is None:
        load = core_load(net, pop, *box_span(box, shape), limits, box=box)
        if moves is not None:
            moves.keep(box, load)
    load.output_axons = _box_sum(table, box)
    over = _over(load, limits)
    if over and alone:
        raise _alone(pop, box_span(box, shape)[0], over)
    return None if over else load


class _Translations:
    """Loads of boxes of one (C, H, W) population that are translations of each other. Two boxes with the same
    channels and extent, apart along an axis where every window projection into them (conv2d / avgpool / maxpool)
    reads inside its source, away from both edges, need the same axons, synapses and lists (shared conv lists
    included: their reach pattern is relative to the box), and each fan is the other's moved by the stride times
    the shift (identity: by the shift; dense: unmoved). Anything else into the population (sparse, two
    projections from one source, ec_matmul operands) leaves it to core_load box by box."""

    def __init__(self, net, pop, shape):
        pops, incoming = _index(net)
        self.moves, self.kept = [], {}
        self.windows = []  # per window projection along (rows, columns): (kernel, stride, pad, source size)
        sources = [q.source for q in incoming.get(pop.name, [])]
        self.ok = len(pop.shape) == 3 and len(set(sources)) == len(sources)
        for q in incoming.get(pop.name, []) if self.ok else ():
            src = pops[q.source].shape
            if q.kind in ("conv2d", "avgpool", "maxpool"):
                (kh, kw), (sh, sw), (ph, pw), *_ = projection_kernel(q, src, pop.shape)
                self.windows.append(((kh, sh, ph, int(src[1])), (kw, sw, pw, int(src[2]))))
                self.moves.append((q.source, int(sh) * int(src[2]), int(sw)))
            elif q.kind == "identity":
                self.moves.append((q.source, int(shape[2]), 1))
            elif q.kind == "dense":
                self.moves.append((q.source, 0, 0))
            else:
                self.ok = False

    def _inside(self, axis, lo, hi):
        """Every window's reach of outputs lo..hi-1 along `axis` lies strictly inside its source."""
        for w in self.windows:
            k, s, p, n = w[axis]
            if lo * s - p < 1 or (hi - 1) * s - p + k - 1 > n - 2:
                return False
        return True

    def _key(self, box):
        c0, c1, h0, h1, w0, w1 = box
        rows = ("in", h1 - h0) if self._inside(0, h0, h1) else (h0, h1)
        cols = ("in", w1 - w0) if self._inside(1, w0, w1) else (w0, w1)
        return c0, c1, rows, cols

    def load(self, box):
        """The box's CoreLoad moved from a kept translation of it, or None."""
        if not self.ok:
            return None
        hit = self.kept.get(self._key(box))
        if hit is None:
            return None
        base, was = hit
        dh, dw = box[2] - was[2], box[4] - was[4]
        fans = dict(base.fans)
        for source, per_row, per_col in self.moves:
            if source in fans and (dh or dw):
                f = fans[source]
                fans[source] = Fan(f.index + (dh * per_row + dw * per_col), f.count)
        return dataclasses.replace(base, fans=fans)

    def keep(self, box, load):
        if self.ok:
            self.kept.setdefault(self._key(box), (load, box))


def _box_sum(table, box):
    c0, c1, h0, h1, w0, w1 = box
    t = table
    return int(t[c1, h1, w1] - t[c0, h1, w1] - t[c1, h0, w1] - t[c1, h1, w0] + t[c0, h0, w1] + t[c0, h1, w0]
               + t[c1, h0, w0] - t[c0, h0, w0])


def _too_many_cores(per_layer, limits, capacity, at_least=False, capped=()):
    """The refusal of a network over the target's cores: what it needs, what there is, the largest layers, and
    whether caps on neurons per core (max_neurons, convert --ops-per-core / --ns-per-core) raised the count."""
    need = sum(per_layer.values())
    top = ", ".join(f"{n}: {c}" for n, c in sorted(per_layer.items(), key=lambda kv: -kv[1])[:3])
    why = f" (its neurons alone, {int(limits['neurons_per_core'])} per core)" if at_least else ""
    if capped:
        names = ", ".join(capped[:3]) + (f" and {len(capped) - 3} more" if len(capped) > 3 else "")
        why += (f" with {len(capped)} layer{'s' if len(capped) != 1 else ''} capped below the chip's neurons per "
                f"core ({names}; max_neurons, --ops-per-core / --ns-per-core: a larger budget needs fewer cores)")
    per_chip = int(limits["cores_per_chip"])
    return (f"the network needs {'at least ' if at_least else ''}{need} cores{why} but the target has "
            f"{per_chip} cores per chip x {int(limits.get('chips', 1))} chips = {capacity} "
            f"({need / capacity:.2f}x over; largest layers {top}); a system of {'at least ' if at_least else ''}"
            f"{-(-need // per_chip)} chips holds them (map_network(..., chips=N), spikeforge convert --chips N)")


def _sums_by_core(owner, count):
    """(source cores reached, synapses from each, axons from each: its neurons with a synapse) of one fan, whose
    neuron i lies on core owner[i] and has count[i] synapses; cores reached by no synapse are left out. The cores
    a fan reaches are usually a short run of ids, so they are counted in place (bincount over that run) rather
    than sorted (np.unique); a fan spread over a wide run of ids is sorted."""
    lo, hi = int(owner.min()), int(owner.max())
    if hi - lo < 4 * len(owner) + 1024:
        local = owner - lo
        syn = np.bincount(local, weights=count, minlength=hi - lo + 1).astype(np.int64)
        ax = np.bincount(local, weights=(count > 0).astype(np.float64), minlength=hi - lo + 1)
        reached = np.flatnonzero(syn > 0)
        return reached + lo, syn[reached], ax[reached].astype(np.int64)
    reached, inverse = np.unique(owner, return_inverse=True)
    syn = np.bincount(inverse, weights=count, minlength=len(reached)).astype(np.int64)
    ax = np.bincount(inverse, weights=(count > 0).astype(np.float64), minlength=len(reached))
    keep = syn > 0
    return reached[keep].astype(np.int64), syn[keep], ax[keep].astype(np.int64)


def core_edges(populations, projections, cores, loads=None):
    """CoreEdges: for every pair of cores joined by synapses, the synapse count and the axons (distinct source
    neurons of the source core with a synapse into the destination core). Each population's neuron -> core array
    is made once; a destination core's fan is then split by source core in one pass (no scan of source cores)."""
    shapes = {p.name: p.shape for p in populations}
    index = {p.name: i for i, p in enumerate(populations)}
    core_of = {p.name: cores.core_of(i, p.shape) for i, p in enumerate(populations)}
    src_all, dst_all, syn_all, ax_all = [], [], [], []
    for t in range(len(cores.core_id)):
        pop = populations[int(cores.population[t])]
        a, b = int(cores.neuron_start[t]), int(cores.neuron_stop[t])
        if loads is not None:
            fans = loads[t].fans
        else:
            fans = {}
            for q in projections:
                if q.target == pop.name:
                    f = fan_into_box(q, shapes[q.source], pop.shape, cores.box[t]) if cores.is_box(t) else \
                        Fan.of(fan_into_range(q, shapes[q.source], pop.shape, a, b))
                    fans[q.source] = f if q.source not in fans else fans[q.source].plus(f)
        for src_name, fan in sorted(fans.items(), key=lambda kv: index[kv[0]]):
            if not len(fan.index):
                continue
            reached, syn, ax = _sums_by_core(core_of[src_name][fan.index], fan.count)
            src_all.append(reached)
            dst_all.append(np.full(len(reached), t, np.int64))
            syn_all.append(syn)
            ax_all.append(ax)
    if not src_all:
        empty = np.zeros(0, np.int64)
        return CoreEdges(src=empty, dst=empty.copy(), synapses=empty.copy(), axons=empty.copy())
    src, dst = np.concatenate(src_all), np.concatenate(dst_all)
    syn, ax = np.concatenate(syn_all), np.concatenate(ax_all)
    key = src * len(cores.core_id) + dst  # one row per ordered pair, sorted by (src, dst)
    uniq, inverse = np.unique(key, return_inverse=True)
    return CoreEdges(src=uniq // len(cores.core_id), dst=uniq % len(cores.core_id),
                     synapses=np.bincount(inverse, weights=syn).astype(np.int64),
                     axons=np.bincount(inverse, weights=ax).astype(np.int64))


def map_network(net: Network, target, placement: str = "anneal", traffic=None, seed: int = 0,
                progress=None, hop_delay: int = 0, split: bool = True, calibration=None, steps: int = 32,
                chips: int | None = None, max_neurons: dict | None = None) -> Network:
    """`net` with its populations partitioned and placed on `target` (a hwmodels Target or its limits dict); a
    target whose mapping rule is "speck" or "xylo" places it by that chip's rule (converter/speck.py, xylo.py).

    traffic: optional {population name: spikes per neuron} (e.g. a simulation's spike counts) to weigh the
    placement by measured packets instead of one packet per axon. hop_delay: steps every projection's delay
    gains (`pipelined`): 1 is the hardware pipeline of Loihi / SANA-FE, where a spike crosses one hop per step.
    split: a layer whose neurons need more input axons than a core has is split into partial-sum relays and the
    layer (converter/fanin.py; the file's attribute fan_in_split lists them); False refuses it instead.
    calibration: samples (and `steps`) that set spiking relays' thresholds from their partial sums (fanin.py).
    chips: the chips of the system mapped onto (None: the target's board, limits.chips); placement fills as
    many as the network needs (converter/placement.py).
    max_neurons: {population name: most neurons per core} below the chip's limits (`balance_work`: the cores of
    populations with much work per neuron cut finer, for shorter steps).
    """
    if chips is not None and (isinstance(chips, bool) or not isinstance(chips, (int, np.integer)) or chips < 1):
        raise ValueError(f"chips must be a whole number >= 1, got {chips!r}")
    seen = set()
    twice = sorted({p.name for p in net.populations if p.name in seen or seen.add(p.name)})
    if twice:  # the mapper finds a layer's inputs by its name
        raise MappingError(f"populations share a name: {', '.join(map(repr, twice))} (each needs its own)")
    try:
        return _map_network(net, target, placement, traffic, seed, progress, hop_delay, split, calibration, steps,
                            chips, max_neurons)
    finally:
        _BY_TARGET.clear()
        _POINTWISE_CUM.clear()
        _INDEX[:] = [None, None, None]


def _map_network(net, target, placement, traffic, seed, progress, hop_delay, split, calibration, steps, chips,
                 max_neurons=None):
    net = pipelined(net, hop_delay)
    rule = getattr(target, "mapping", "cores")
    if rule in ("speck", "xylo") and max_neurons:
        raise ValueError(f"max_neurons applies to targets placed on cores; {target.name!r} places a network by its "
                         f"chip's own rule ({rule})")
    if rule in ("speck", "xylo") and chips is not None:
        raise ValueError(f"chips applies to targets placed on cores; {target.name!r} places a network by its "
                         f"chip's own rule ({rule})")
    if rule == "speck":  # chips with their own placement rule (hwmodels.targets.MAPPING_RULES)
        from .speck import map_speck
        return map_speck(net, target.name)
    if rule == "xylo":
        from .xylo import map_xylo
        return map_xylo(net, target.name)
    limits = target.limits if hasattr(target, "limits") else dict(target)
    if chips is not None:
        limits = dict(limits, chips=int(chips))
    _check_payloads(net, limits)
    if placement not in ("snake", "anneal"):
        raise ValueError(f"placement must be 'snake' or 'anneal', got {placement!r}")
    if split:
        from .fanin import split_fan_in
        net, _ = split_fan_in(net, limits, calibration=calibration, steps=steps, runnable=False)
    if max_neurons:
        unknown = sorted(set(max_neurons) - {p.name for p in net.populations})
        if unknown:
            raise ValueError(f"max_neurons names no population of the network: {unknown[:5]}")
        bad = {k: v for k, v in max_neurons.items() if isinstance(v, bool) or
               not isinstance(v, (int, np.integer)) or v < 1}
        if bad:
            raise ValueError(f"max_neurons must map populations to whole numbers >= 1, got "
                             f"{dict(list(bad.items())[:3])}")
    parts = partition(net, limits, progress, max_neurons)
    n = len(parts)
    ids = np.arange(n, dtype=np.int64)
    cores = CoreTable(core_id=ids, chip=np.zeros(n, np.int64), x=np.zeros(n, np.int64), y=np.zeros(n, np.int64),
                      population=np.array([p[0] for p in parts], np.int64),
                      neuron_start=np.array([p[1] for p in parts], np.int64),
                      neuron_stop=np.array([p[2] for p in parts], np.int64))
    if any(p[4] is not None for p in parts):
        cores.box = np.array([p[4] if p[4] is not None else (-1,) * 6 for p in parts], np.int64)
    edges = core_edges(net.populations, net.projections, cores, [p[3] for p in parts])
    weight = edges.axons.astype(np.float64)
    if placement == "anneal" and traffic is not None:
        weight = _measured_traffic(net, cores, edges, parts, traffic)
    cores.chip, cores.x, cores.y = place(n, edges.src, edges.dst, weight, limits, placement, seed)
    attrs = dict(net.attrs, mapping=f"{getattr(target, 'name', 'custom')}:{placement}",
                 chip_mesh=list(chip_mesh(limits)))
    return Network(net.populations, net.projections, cores, edges, attrs)


def chip_rule_check(net, target) -> dict:
    """{"rule", "fits", "reason", "layers"}: `net` checked by `target`'s own placement rule (speck: each layer's
    kernel / neuron memory against the core it is matched to; xylo: what the network uses of the core against
    what the core has). No placement is made."""
    from .speck import SPECK, assign_cores, speck_layers
    from .xylo import XYLO_AUDIO2, check_xylo

    out = {"rule": target.mapping, "fits": True, "reason": "", "layers": []}
    try:
        if target.mapping == "speck":
            layers = speck_layers(net)
            cores = assign_cores(layers)
            out["layers"] = [{"layer": lay.name, "core": cores[lay.name],
                              "kernel memory": f"{lay.kernel_memory} of {SPECK['kernel_memory'][cores[lay.name]]}",
                              "neuron memory": f"{lay.neuron_memory} of {SPECK['neuron_memory'][cores[lay.name]]}"}
                             for lay in layers]
        elif target.mapping == "xylo":
            used = check_xylo(net)
            out["layers"] = [{k: f"{v} of {XYLO_AUDIO2[k]}" for k, v in used.items()}]
    except MappingError as exc:
        out.update(fits=False, reason=str(exc))
    return out


def payload_bits(pop) -> tuple:
    """(bits, what) an event of `pop` carries when sent as one graded spike: a group neuron's count up to tau, a
    multi-threshold neuron's level value 2^k (k < levels, plus a sign bit when it has negative levels), a signed
    neuron's sign; 1 for binary spikes (and for payloads expanded into parallel synapses)."""
    if pop.model == "group" and pop.payload != "expanded":
        return max(1, math.ceil(math.log2(int(pop.tau) + 1))), f"a count up to tau = {int(pop.tau)}"
    if pop.model == "multi_threshold" and pop.payload != "parallel":
        signed = pop.threshold_neg is not None
        return int(pop.levels) + signed, f"a level value up to 2^{int(pop.levels) - 1}{' and its sign' * signed}"
    if pop.model == "signed":
        return 2, "a sign"
    if pop.model == "sigma_delta":
        return 16, "a graded sigma-delta payload (netx's 16-bit messages)"
    return 1, "a binary spike"


def _check_payloads(net, limits):
    """On a target that states its graded spikes' width (limits.spike_payload_bits), every population's events
    fit it; MappingError naming the layer otherwise."""
    width = int(limits.get("spike_payload_bits", 0) or 0)
    if width <= 0:
        return
    for pop in net.populations:
        bits, what = payload_bits(pop)
        if bits > width:
            raise MappingError(f"layer {pop.name!r}: its spikes carry {bits} bits ({what}); the target's graded "
                               f"spikes carry {width}")


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
        spikes = np.asarray(spikes).reshape(-1)
        if cores.is_box(s):
            members = cores.neurons(s, net.populations[int(cores.population[s])].shape)
            out[e] = float(spikes[members[np.isin(members, fan.index, assume_unique=True)]].sum())
            continue
        a, b = cores.neuron_start[s], cores.neuron_stop[s]
        out[e] = float(spikes[a:b][fan.mask(int(a), int(b))].sum())
    return out
