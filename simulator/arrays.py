"""Flatten a validated `Network` into the bundles of contiguous arrays the numba kernels take (once per network)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import kernels as K
from .fileformat import matmul_inner
from .geometry import projection_kernel, sparse_projection, synapse_matrix, synapses_per_source
from .network import Network, chip_crossings

_MODEL_CODES = {"input": K.MODEL_INPUT, "if": K.MODEL_IF, "group": K.MODEL_GROUP, "signed": K.MODEL_SIGNED,
                "multi_threshold": K.MODEL_MULTI, "ec": K.MODEL_EC, "ec_matmul": K.MODEL_ECMM,
                "readout": K.MODEL_READOUT, "lif": K.MODEL_LIF, "maxpool": K.MODEL_MAXPOOL, "cuba": K.MODEL_CUBA,
                "sigma_delta": K.MODEL_SIGMA_DELTA}
_EC_CODES = {"": -1, "gelu": K.EC_GELU, "layernorm": K.EC_LAYERNORM, "softmax": K.EC_SOFTMAX,
             "identity": K.EC_IDENTITY}
# populations whose events carry analog values (not spikes): their synaptic work through weights is MACs
ANALOG_MODELS = ("input", "ec", "ec_matmul")
_RESET_CODES = {"subtract": K.RESET_SUBTRACT, "zero": K.RESET_ZERO, "none": K.RESET_NONE}
# bytes of modelled hardware state per neuron and per synaptic weight in float32 mode
STATE_BYTES = 4
WEIGHT_BYTES = 4


def engine_order(shape) -> np.ndarray:
    """perm such that engine[i] = canonical[perm[i]]: channel-last for (C, H, W), identity otherwise."""
    n = int(np.prod(shape))
    if len(shape) != 3:
        return np.arange(n, dtype=np.int64)
    c, h, w = shape
    return np.arange(n, dtype=np.int64).reshape(c, h, w).transpose(1, 2, 0).reshape(-1)


def _is_identity(perm):
    return bool(np.array_equal(perm, np.arange(len(perm))))


def _routes_only(proj):
    """True when every synapse of the projection has weight 0 or 1 (no multiplication)."""
    if proj.kind == "identity":
        return True
    if proj.weight is None:  # avgpool (weights 1/(kh·kw)); matmul operands (the node multiplies them)
        return False
    w = np.asarray(proj.weight)
    return bool(np.all((w == 0) | (w == 1)))


def _inverse(perm):
    inv = np.empty_like(perm)
    inv[perm] = np.arange(len(perm))
    return inv


@dataclass
class FlatNetwork:
    """Engine bundles of a network (see simulator.kernels) plus what is needed to translate results back."""

    net: Network
    pops: K.Populations
    projs: K.Projections
    routing: K.Routing
    perms: list  # per population: engine -> canonical index
    n_cores: int
    static_per_core: np.ndarray  # (cores, 3): neuron updates, state bytes read, state bytes written per step
    plans: dict = field(default_factory=dict, repr=False, compare=False)  # torch backend: (device, links) -> plan

    @property
    def n_neurons(self):
        return int(self.pops.theta.shape[0])


def fixed_vmax(net) -> float:
    """Largest membrane value of a fixed-point file (2^(membrane_bits-1) - 1); 0.0 for float files."""
    if net.attrs.get("numeric_mode") != "fixed":
        return 0.0
    return float(2 ** (int(net.attrs["membrane_bits"]) - 1) - 1)


def _core_of(net, offsets, perms) -> np.ndarray:
    """Core of every neuron, in engine order."""
    core_of = np.empty(offsets[-1], np.int32)
    for pi, pop in enumerate(net.populations):
        core_of[offsets[pi]:offsets[pi + 1]] = net.cores.core_of(pi, pop.shape)[perms[pi]]
    return core_of


def _flags(pop) -> int:
    """pop_flags bits of an if / lif / cuba population (unit spikes, strict threshold test, membrane first, Loihi's
    arithmetic)."""
    return (K.FLAG_UNIT_SPIKE if pop.spike_value == "unit" else 0) | \
        (K.FLAG_STRICT_TEST if pop.threshold_test == "gt" else 0) | \
        (K.FLAG_MEMBRANE_FIRST if pop.synapse_order == "membrane_first" else 0) | \
        (K.FLAG_LOIHI if pop.arithmetic == "loihi" else 0) | \
        (K.FLAG_DELTA_INPUT if pop.delta_input else 0) | (K.FLAG_WRAP24 if pop.input_wrap == 24 else 0) | \
        (K.FLAG_MULTI_SPIKE if pop.multi_spike else 0) | \
        (K.FLAG_FLOOR_NEG_THETA if pop.membrane_floor == "-threshold" else 0)


def _aux_size(net, pop, mm_inner) -> int:
    """Per-sample auxiliary state of a population: ec_matmul operands and sums, a maxpool gate's source counts."""
    if pop.model == "ec_matmul":
        return 2 * (pop.shape[0] + pop.shape[1]) * mm_inner[pop.name]
    if pop.model == "maxpool":
        src = next(q.source for q in net.projections if q.target == pop.name)
        return next(p.size for p in net.populations if p.name == src)
    if pop.model == "sigma_delta":  # its last activation and its residue
        return 2 * pop.size
    return 0


def _size_param(pop) -> int:
    """The one integer a model's kernel needs: τ of group neurons, n levels of multi-threshold neurons, the last
    dimension of EC nodes (normalization group) and of ec_matmul nodes (N)."""
    if pop.model == "multi_threshold":
        return pop.levels
    if pop.model in ("ec", "ec_matmul"):
        return pop.shape[-1]
    if pop.model == "sigma_delta":
        return pop.payload_shift
    return pop.tau


def flatten(net: Network) -> FlatNetwork:
    """Build the engine bundles from a validated network (call `validate_network` or `load_network` first)."""
    pops = net.populations
    perms = [engine_order(p.shape) for p in pops]
    sizes = np.array([p.size for p in pops], np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    mm_inner = {p.name: matmul_inner(net, p) for p in pops if p.model == "ec_matmul"}
    core_of = _core_of(net, offsets, perms)
    projs = _projection_arrays(net, perms, offsets, mm_inner)
    return FlatNetwork(net=net, pops=_population_arrays(net, perms, sizes, offsets, mm_inner), projs=projs,
                       routing=_routing_arrays(net, projs, offsets, core_of, perms), perms=perms,
                       n_cores=len(net.cores),
                       static_per_core=_static_per_core(net))


def _cat(chunks, dtype):
    """Concatenate per-projection chunks into one array; a single zero when there are none."""
    return np.concatenate(chunks).astype(dtype) if chunks else np.zeros(1, dtype)


def _population_arrays(net, perms, sizes, offsets, mm_inner) -> K.Populations:
    """Per-population codes and per-neuron parameters (engine order), what the neuron updates read."""
    pops = net.populations

    def gather(field):
        return np.concatenate([getattr(p, field).astype(np.float64)[perms[i]] for i, p in enumerate(pops)])

    index = {p.name: i for i, p in enumerate(pops)}
    in_ptr, back_ptr = np.zeros(len(pops) + 1, np.int64), np.zeros(len(pops) + 1, np.int64)
    in_proj, back_proj = [], []
    for pi, pop in enumerate(pops):
        qs = [qi for qi, q in enumerate(net.projections) if q.target == pop.name]
        in_proj += qs
        in_ptr[pi + 1] = in_ptr[pi] + len(qs)
        back = [qi for qi, q in enumerate(net.projections) if q.source == pop.name and index[q.target] <= pi]
        back_proj += back
        back_ptr[pi + 1] = back_ptr[pi] + len(back)
    return K.Populations(
        off=offsets[:-1].copy(), n=sizes,
        model=np.array([_MODEL_CODES[p.model] for p in pops], np.int64),
        reset=np.array([_RESET_CODES[p.reset] for p in pops], np.int64),
        tau=np.array([_size_param(p) for p in pops], np.int64),
        expand=np.array([p.payload == "expanded" for p in pops], np.int64),
        alpha=np.array([p.negative_slope for p in pops], np.float64),
        vmax=np.array([fixed_vmax(net) if p.model in ("if", "group") else 0.0 for p in pops], np.float64),
        flags=np.array([_flags(p) for p in pops], np.int64),
        func=np.array([_EC_CODES[p.function] for p in pops], np.int64),
        eps=np.array([p.eps for p in pops], np.float64),
        # ec_matmul nodes: [A(t), B(t), S_A, S_B]; maxpool populations: their source neurons' spike counts; in one
        # auxiliary state vector, from aux[p] to aux[p + 1]
        aux=np.concatenate([[0], np.cumsum([_aux_size(net, p, mm_inner) for p in pops])]).astype(np.int64),
        in_ptr=in_ptr, in_proj=np.array(in_proj, np.int64), back_ptr=back_ptr, back_proj=np.array(back_proj, np.int64),
        refractory=np.array([p.refractory for p in pops], np.int64),
        reset_every=np.array([p.reset_every for p in pops], np.int64),
        reset_phase=np.array([p.reset_phase for p in pops], np.int64),
        theta=gather("threshold"),
        theta_neg=np.concatenate([np.zeros(p.size) if p.threshold_neg is None else
                                  p.threshold_neg.astype(np.float64)[perms[i]] for i, p in enumerate(pops)]),
        v_init=gather("v_init"), bias=gather("bias"),
        decay=np.concatenate([np.ones(p.size) if p.decay is None else p.decay.astype(np.float64)[perms[i]]
                              for i, p in enumerate(pops)]),
        syn_decay=np.concatenate([np.zeros(p.size) if p.syn_decay is None else p.syn_decay.astype(np.float64)[perms[i]]
                                  for i, p in enumerate(pops)]),
        **_history_layout(net, sizes, int(offsets[-1])),
    )


def _history_layout(net, sizes, n_total):
    """hlen / hoff / hslot (kernels.Populations): each source of delayed projections keeps its events of the last
    (largest delay + 1) steps, after this step's events in the event arrays."""
    index = {p.name: i for i, p in enumerate(net.populations)}
    longest = np.zeros(len(sizes), np.int64)
    for q in net.projections:
        s = index[q.source]
        longest[s] = max(longest[s], int(q.delay))
    hlen = np.where(longest > 0, longest + 1, 0).astype(np.int64)
    hoff = (n_total + np.concatenate([[0], np.cumsum(hlen * sizes)])).astype(np.int64)
    hslot = np.concatenate([[0], np.cumsum(hlen)]).astype(np.int64)
    return {"hlen": hlen, "hoff": hoff, "hslot": hslot}


def _projection_arrays(net, perms, offsets, mm_inner) -> K.Projections:
    """Every projection's kind, geometry and synapses, concatenated; the offsets say where each one's part starts."""
    pops = net.populations
    index = {p.name: i for i, p in enumerate(pops)}
    names = ("kind", "src", "tgt_off", "tgt_n", "woff", "ioff", "xoff", "geom", "mac")
    cols = {k: [] for k in names}
    weights, indptr, indices = [], [], []
    w_pos = i_pos = x_pos = 0
    for proj in net.projections:
        s, t = index[proj.source], index[proj.target]
        src, tgt = pops[s], pops[t]
        proj = _engine_projection(proj, src, tgt, perms[s], perms[t])
        kind, geom, w, ptr, idx = _synapse_layout(proj, src, tgt, perms[s], perms[t], mm_inner)
        for k, val in zip(names, (kind, s, offsets[t], tgt.size, w_pos, i_pos, x_pos, geom, _counts_macs(src, proj))):
            cols[k].append(val)
        if w is not None:
            weights.append(w)
            w_pos += len(w)
        if ptr is not None:  # the CSR kinds
            indptr.append(ptr)
            indices.append(idx)
            i_pos += len(ptr)
            x_pos += int(ptr[-1])
    return K.Projections(
        kind=np.array(cols["kind"], np.int64), src=np.array(cols["src"], np.int64),
        tgt_off=np.array(cols["tgt_off"], np.int64), tgt_n=np.array(cols["tgt_n"], np.int64),
        woff=np.array(cols["woff"], np.int64), ioff=np.array(cols["ioff"], np.int64),
        xoff=np.array(cols["xoff"], np.int64), geom=np.array(cols["geom"], np.int64).reshape(-1, 13),
        mac=np.array(cols["mac"], np.int64),
        wbytes=np.array([0 if q.kind == "maxpool" else WEIGHT_BYTES for q in net.projections], np.int64),
        delay=np.array([int(q.delay) for q in net.projections], np.int64),
        weights=_cat(weights, np.float32), indptr=_cat(indptr, np.int64), indices=_cat(indices, np.uint32),
    )


def _engine_projection(proj, src, tgt, perm_s, perm_t):
    """The projection as the engine stores it: a pointwise one between reordered (C, H, W) populations becomes
    explicit synapses (its rows are no longer token-wise)."""
    if proj.kind == "pointwise" and not (_is_identity(perm_s) and _is_identity(perm_t)):
        return sparse_projection(proj.name, proj.source, proj.target, synapse_matrix(proj, src.shape, tgt.shape))
    return proj


def _counts_macs(src, proj) -> int:
    """1 when the projection's work counts as MACs, else 0 (synaptic operations).

    Analog values: multiply-accumulates (the input layer always, the papers' convention); compute-node values
    through an identity or weights that are all 1 (routing, e.g. attention heads concatenated, a relay's stream):
    accumulations."""
    return 1 if src.model == "input" or (src.model in ANALOG_MODELS and not _routes_only(proj)) else 0


def _synapse_layout(proj, src, tgt, perm_s, perm_t, mm_inner):
    """(kind, geom (13,), weights or None, indptr or None, indices or None) of one projection in engine order."""
    if proj.kind == "pointwise":
        return _pointwise_layout(proj)
    if proj.kind == "dense":
        return _dense_layout(proj, perm_s, perm_t)
    if proj.kind in ("matmul_a", "matmul_b"):
        return _matmul_layout(proj, src, tgt, mm_inner[tgt.name])
    if proj.kind in ("sparse", "identity"):
        return _sparse_layout(proj, src, perm_s, perm_t)
    if proj.kind == "maxpool":  # no weights: the window geometry only
        return K.KIND_MAXPOOL, _window_geom(proj, src, tgt), None, None, None
    return _conv_layout(proj, src, tgt)


def _pointwise_layout(proj):
    """Per input channel its nonzero (output channel, weight) pairs, a CSR over d_in, shared by all tokens."""
    geom = np.zeros(13, np.int64)
    d_out, d_in = proj.weight.shape
    cols_c = np.asarray(proj.weight).T  # (d_in, d_out)
    ptr = np.concatenate([[0], np.cumsum(np.count_nonzero(cols_c, axis=1))]).astype(np.int64)
    ch, out_ch = np.nonzero(cols_c)
    geom[:2] = (d_in, d_out)
    return K.KIND_POINTWISE, geom, cols_c[ch, out_ch].astype(np.float32), ptr, out_ch.astype(np.int32)


def _dense_layout(proj, perm_s, perm_t):
    """One contiguous weight row per engine source neuron, columns in engine target order."""
    w = proj.weight[np.ix_(perm_t, perm_s)].T
    return K.KIND_DENSE, np.zeros(13, np.int64), np.ascontiguousarray(w, np.float32).reshape(-1), None, None


def _matmul_layout(proj, src, tgt, inner):
    """No weights: the node gathers its operands and counts their work; geom holds the operand's shape."""
    geom = np.zeros(13, np.int64)
    m, n = tgt.shape
    geom[:6] = (m, inner, n, int(proj.transpose), src.shape[0], src.size // src.shape[0])
    return K.KIND_MM_A if proj.kind == "matmul_a" else K.KIND_MM_B, geom, None, None, None


def _sparse_layout(proj, src, perm_s, perm_t):
    """CSR with rows in engine source order and columns mapped to engine target indices (identity: a diagonal)."""
    if proj.kind == "identity":
        rows_c = np.arange(src.size + 1, dtype=np.int64)
        cols_c = np.arange(src.size, dtype=np.int64)
        data_c = np.ones(src.size, np.float32)
    else:
        rows_c, cols_c, data_c = proj.indptr.astype(np.int64), proj.indices.astype(np.int64), proj.weight
    lengths = np.diff(rows_c)[perm_s]
    starts = rows_c[:-1][perm_s]
    ptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    take = (np.repeat(starts - ptr[:-1], lengths) + np.arange(ptr[-1])).astype(np.int64)
    idx = _inverse(perm_t)[cols_c[take]].astype(np.int32)
    return K.KIND_SPARSE, np.zeros(13, np.int64), np.asarray(data_c, np.float32)[take], ptr, idx


def _window_geom(proj, src, tgt):
    """The G_* geometry columns of a windowed projection (conv2d, avgpool, maxpool)."""
    (kh, kw), (sh, sw), (ph, pw), cin_g, _ = projection_kernel(proj, src.shape, tgt.shape)
    cin, h, w_ = src.shape
    cout, ho, wo = tgt.shape
    return np.array((cin, h, w_, cout, ho, wo, kh, kw, sh, sw, ph, pw, cin // cin_g), np.int64)


def _conv_layout(proj, src, tgt):
    """Shared kernel (g, C_in/g, kh, kw, C_out/g), output channels innermost (conv, avgpool: 1/(kh·kw))."""
    geom = _window_geom(proj, src, tgt)
    (kh, kw), _, _, cin_g, cout_g = projection_kernel(proj, src.shape, tgt.shape)
    groups = int(geom[K.G_GROUPS])
    if proj.kind == "avgpool":
        kern = np.full((groups, 1, kh, kw, 1), 1.0 / (kh * kw), np.float32)
    else:  # (C_out, C_in/g, kh, kw) -> (g, C_in/g, kh, kw, C_out/g)
        kern = proj.weight.reshape(groups, cout_g, cin_g, kh, kw).transpose(0, 2, 3, 4, 1)
    return K.KIND_CONV, geom, np.ascontiguousarray(kern, np.float32).reshape(-1), None, None


SINGLE_CORE_ROWS = True  # row-core tables of a projection onto one core from its fan-out (tests compare both)


def _routing_arrays(net, projs, offsets, core_of, perms) -> K.Routing:
    """Where events go: row-core tables for the synapse counters, packets and hops per spike, core-to-core flows."""
    n_cores = len(net.cores)
    rc_off, rc_ptr, rc_core, rc_cnt, pairs_src, pairs_core = _row_core_tables(net, projs, offsets, core_of, n_cores,
                                                                               perms)
    n_packets, n_hops, n_chip, n_chip_hops, fl_ptr, fl_id, flow_src, flow_dst = _packets_and_hops(
        net, core_of, pairs_src, pairs_core, int(offsets[-1]), n_cores)
    return K.Routing(core_of=core_of, n_packets=n_packets, n_hops=n_hops, n_chip_packets=n_chip,
                     n_chip_hops=n_chip_hops, rc_off=rc_off, rc_ptr=rc_ptr,
                     rc_core=rc_core, rc_cnt=rc_cnt, fl_ptr=fl_ptr, fl_id=fl_id, flow_src=flow_src, flow_dst=flow_dst)


def _single_core_rows(net, q, s, perm, core):
    """row_core_table of projection q when all its targets sit on one core: each row's fan-out, from the geometry
    (walking every synapse took 72 s for a 224x224 ResNet-34 on one core per population)."""
    proj = net.projections[q]
    tgt = next(p for p in net.populations if p.name == proj.target)
    fan = synapses_per_source(proj, net.populations[s].shape, tgt.shape)[perm]
    has = fan > 0
    return (np.concatenate([[0], np.cumsum(has)]).astype(np.int64), np.full(int(has.sum()), core, np.int32),
            fan[has].astype(np.int64))


def _matmul_pairs(kind, geom, perm, node_core):
    """(source neuron in engine order, destination core) pairs of an ec_matmul operand: an element of A (i, k)
    goes to the cores holding row i of the (M, N) products, an element of B (k, j) to those holding column j
    (as the node's work is counted, kernels._matmul_operand, and the mapper's fan, mapping.matmul_fan)."""
    m, inner, n, transpose, rows, cols = (int(v) for v in geom[:6])
    e = np.asarray(perm, np.int64)  # canonical source element of each engine position
    if transpose:
        e = (e % cols) * rows + e // cols
    grid = np.asarray(node_core, np.int64).reshape(m, n)
    lines = grid if kind == K.KIND_MM_A else grid.T
    line = e // inner if kind == K.KIND_MM_A else e % n
    per_line = [np.unique(row) for row in lines]
    ptr = np.concatenate([[0], np.cumsum([len(c) for c in per_line])]).astype(np.int64)
    flat = np.concatenate(per_line).astype(np.int64)
    counts = np.diff(ptr)[line]
    src = np.repeat(np.arange(len(e), dtype=np.int64), counts)
    within = np.arange(len(src), dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
    return src, flat[np.repeat(ptr[line], counts) + within]


def _row_core_tables(net, projs, offsets, core_of, n_cores, perms):
    """Per projection and source row: target cores and synapses on each (the engine counts synaptic work per core
    from these), and the (source neuron, destination core) pairs that packets follow."""
    rc_off, rc_ptrs, rc_cores, rc_cnts = [], [], [], []
    rc_pos = rc_entry = 0
    pairs_src, pairs_core = [], []
    for q in range(len(projs.kind)):
        kind, s = int(projs.kind[q]), int(projs.src[q])
        n_src = int(offsets[s + 1] - offsets[s])
        tgt_off, tgt_n = int(projs.tgt_off[q]), int(projs.tgt_n[q])
        if kind in (K.KIND_MM_A, K.KIND_MM_B):  # no synapse rows; an operand element reaches its line's cores
            rptr, rcore, rcnt = np.zeros(n_src + 1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.int64)
            src, cores = _matmul_pairs(kind, projs.geom[q], perms[s], core_of[tgt_off:tgt_off + tgt_n])
            pairs_src.append(offsets[s] + src)
            pairs_core.append(cores)
        elif SINGLE_CORE_ROWS and tgt_n and (core_of[tgt_off:tgt_off + tgt_n] == core_of[tgt_off]).all():
            rptr, rcore, rcnt = _single_core_rows(net, q, s, perms[s], int(core_of[tgt_off]))
        else:
            rptr, rcore, rcnt = K.row_core_table(kind, n_src, tgt_off, tgt_n, projs.geom[q], int(projs.ioff[q]),
                                                 int(projs.xoff[q]), projs.indptr, projs.indices, core_of, n_cores)
        rc_off.append(rc_pos)
        rc_ptrs.append(rptr + rc_entry)
        rc_cores.append(rcore)
        rc_cnts.append(rcnt)
        rc_pos += n_src + 1
        rc_entry += len(rcore)
        pairs_src.append(offsets[s] + np.repeat(np.arange(n_src), np.diff(rptr)))
        pairs_core.append(rcore)
    return (np.array(rc_off, np.int64), _cat(rc_ptrs, np.int64), _cat(rc_cores, np.int32), _cat(rc_cnts, np.int64),
            pairs_src, pairs_core)


def _static_per_core(net) -> np.ndarray:
    """(cores, 3) per step: neuron updates, state bytes read and written (input cores update nothing)."""
    static = np.zeros((len(net.cores), 3), np.int64)
    sizes = net.cores.sizes()
    for ci in range(len(net.cores)):
        if net.populations[int(net.cores.population[ci])].model != "input":
            n = int(sizes[ci])
            static[ci] = (n, n * STATE_BYTES, n * STATE_BYTES)
    return static


def unique_ints(a, in_place=False) -> np.ndarray:
    """np.unique(a) of a 1-D integer array, by sorting: numpy 2.3+'s hashed np.unique spent minutes on the
    (source neuron, destination core) keys of a 69,037-core ResNet-34 mapping (35 M random keys: 66 s hashed,
    3 s sorted). in_place: sort `a` itself (no copy of a caller's array it no longer needs)."""
    if in_place:
        a.sort()
    else:
        a = np.sort(a)
    keep = np.empty(len(a), bool)
    if len(a):
        keep[0] = True
        np.not_equal(a[1:], a[:-1], out=keep[1:])
    return a[keep]


PACKET_CHUNK = 1 << 24  # (source, destination core) keys per pass: each pass's temporaries stay ~16 M entries long


def _packets_and_hops(net, core_of, pairs_src, pairs_core, n_total, n_cores):
    """Per neuron: packets per spike (distinct destination cores over all its projections), their hops on the
    chips' meshes, how many of them go to another chip and the chip-to-chip links they cross (XY routes over
    chips that tile one mesh: network.chip_cells); and the core-to-core flows its packets belong to (CSR fl_ptr /
    fl_id into flow_src / flow_dst). The keys are walked in passes of PACKET_CHUNK: a whole-array pass held a
    dozen arrays as long as the packets (16.7 GB for the 140 M packets of a 69,037-core ResNet-34 mapping)."""
    n_packets = np.zeros(n_total, np.int32)
    n_hops = np.zeros(n_total, np.int64)
    n_chip = np.zeros(n_total, np.int32)
    n_chip_hops = np.zeros(n_total, np.int64)
    if not pairs_src:
        empty = np.zeros(0, np.int64)
        return n_packets, n_hops, n_chip, n_chip_hops, np.zeros(n_total + 1, np.int64), empty, empty, empty
    key = np.concatenate(pairs_src).astype(np.int64, copy=False)
    pairs_src.clear()  # (the caller's lists: one packet's worth each, freed as soon as they are read)
    key *= n_cores
    pos = 0
    for cores in pairs_core:
        key[pos:pos + len(cores)] += cores
        pos += len(cores)
    pairs_core.clear()
    key = unique_ints(key, in_place=True)  # sorted by source neuron
    x, y = net.cores.x.astype(np.int64), net.cores.y.astype(np.int64)
    flows = []

    def chunks():
        for a in range(0, len(key), PACKET_CHUNK):
            src, core = np.divmod(key[a:a + PACKET_CHUNK], n_cores)
            yield a, src, core, core_of[src].astype(np.int64)

    for _, src, core, sc in chunks():
        crossed = chip_crossings(net.cores, net.attrs.get("chip_mesh"), sc, core)
        hops = np.maximum(np.abs(x[sc] - x[core]) + np.abs(y[sc] - y[core]) - crossed, 0)
        n_packets += np.bincount(src, minlength=n_total).astype(np.int32)
        n_hops += np.bincount(src, weights=hops, minlength=n_total).astype(np.int64)
        n_chip += np.bincount(src, weights=crossed > 0, minlength=n_total).astype(np.int32)
        n_chip_hops += np.bincount(src, weights=crossed, minlength=n_total).astype(np.int64)
        flows.append(unique_ints(sc * n_cores + core, in_place=True))
    flow_key = unique_ints(np.concatenate(flows), in_place=True)
    del flows
    fl_id = np.empty(len(key), np.int64)
    for a, src, core, sc in chunks():
        fl_id[a:a + len(src)] = np.searchsorted(flow_key, sc * n_cores + core)
    fl_ptr = np.concatenate([[0], np.cumsum(n_packets)]).astype(np.int64)
    return n_packets, n_hops, n_chip, n_chip_hops, fl_ptr, fl_id, flow_key // n_cores, flow_key % n_cores


# synaptic-operation conventions (simulator.run(synops=...)): "all" counts every stored synapse an event reaches,
# zero weights included (a chip reads them); "effective" only those with a nonzero weight, in projections that have
# weights (NeuroBench's effective operations: identity, average and max pooling connections count none)
SYNOPS_CONVENTIONS = ("all", "effective")
_WEIGHTED_KINDS = ("dense", "sparse", "conv2d", "pointwise")


def counted_as(flat: FlatNetwork, synops: str) -> FlatNetwork:
    """The flat network whose row-core counts follow the `synops` convention (the same one for "all"; for
    "effective" a copy, kept in flat.plans, with the counts of nonzero weights only). Spikes do not change."""
    if synops not in SYNOPS_CONVENTIONS:
        raise ValueError(f"synops must be one of {', '.join(SYNOPS_CONVENTIONS)}, got {synops!r}")
    if synops == "all":
        return flat
    key = ("synops", synops)
    if key not in flat.plans:
        rt, projs = flat.routing, flat.projs
        counts = np.zeros_like(rt.rc_cnt)
        n_src = np.diff(np.concatenate([flat.pops.off, [flat.n_neurons]]))
        for q, proj in enumerate(flat.net.projections):
            if proj.kind not in _WEIGHTED_KINDS:
                continue
            n = int(n_src[int(projs.src[q])])
            r0 = int(rt.rc_off[q])
            a0, a1 = int(rt.rc_ptr[r0]), int(rt.rc_ptr[r0 + n])
            eptr, ecore, ecnt = K.row_core_table(
                int(projs.kind[q]), n, int(projs.tgt_off[q]), int(projs.tgt_n[q]), projs.geom[q], int(projs.ioff[q]),
                int(projs.xoff[q]), projs.indptr, projs.indices, rt.core_of, flat.n_cores, projs.weights,
                int(projs.woff[q]))
            # onto the table's own entries (row, core): an entry whose synapses are all zero counts 0
            rows = np.repeat(np.arange(n), np.diff(rt.rc_ptr[r0:r0 + n + 1]))
            keys = rows * flat.n_cores + rt.rc_core[a0:a1]
            ekeys = np.repeat(np.arange(n), np.diff(eptr)) * flat.n_cores + ecore
            order = np.argsort(keys, kind="stable")
            counts[a0 + order[np.searchsorted(keys[order], ekeys)]] = ecnt
        flat.plans[key] = FlatNetwork(flat.net, flat.pops, projs, rt._replace(rc_cnt=counts), flat.perms,
                                      flat.n_cores, flat.static_per_core)
    return flat.plans[key]
