"""Flatten a validated `Network` into the contiguous arrays the numba kernels take (done once per network)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import kernels as K
from .fileformat import matmul_inner
from .geometry import projection_kernel, sparse_projection, synapse_matrix
from .network import Network

_MODEL_CODES = {"input": K.MODEL_INPUT, "if": K.MODEL_IF, "group": K.MODEL_GROUP, "signed": K.MODEL_SIGNED,
                "multi_threshold": K.MODEL_MULTI, "ec": K.MODEL_EC, "ec_matmul": K.MODEL_ECMM,
                "readout": K.MODEL_READOUT, "lif": K.MODEL_LIF}
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
    """Engine arrays of a network plus what is needed to translate results back."""

    net: Network
    arrays: dict  # name -> array, passed to the kernels by keyword order
    perms: list  # per population: engine -> canonical index
    n_cores: int
    static_per_core: np.ndarray  # (cores, 3): neuron updates, state bytes read, state bytes written per step

    @property
    def n_neurons(self):
        return int(self.arrays["theta"].shape[0])


def fixed_vmax(net) -> float:
    """Largest membrane value of a fixed-point file (2^(membrane_bits-1) - 1); 0.0 for float files."""
    if net.attrs.get("numeric_mode") != "fixed":
        return 0.0
    return float(2 ** (int(net.attrs["membrane_bits"]) - 1) - 1)


def _core_of(net, offsets, perms) -> np.ndarray:
    """Core of every neuron, in engine order."""
    core_of = np.empty(offsets[-1], np.int32)
    for pi, pop in enumerate(net.populations):
        canon = np.empty(pop.size, np.int32)
        for ci in np.flatnonzero(net.cores.population == pi):
            canon[net.cores.neuron_start[ci]:net.cores.neuron_stop[ci]] = ci
        core_of[offsets[pi]:offsets[pi + 1]] = canon[perms[pi]]
    return core_of


def _flags(pop) -> int:
    """pop_flags bits of an if / lif population (unit spikes, strict threshold test)."""
    return (K.FLAG_UNIT_SPIKE if pop.spike_value == "unit" else 0) | \
        (K.FLAG_STRICT_TEST if pop.threshold_test == "gt" else 0)


def _size_param(pop) -> int:
    """The one integer a model's kernel needs: τ of group neurons, n levels of multi-threshold neurons, the last
    dimension of EC nodes (normalization group) and of ec_matmul nodes (N)."""
    if pop.model == "multi_threshold":
        return pop.levels
    if pop.model in ("ec", "ec_matmul"):
        return pop.shape[-1]
    return pop.tau


def flatten(net: Network) -> FlatNetwork:
    """Build engine arrays from a validated network (call `validate_network` or `load_network` first)."""
    pops = net.populations
    index = {p.name: i for i, p in enumerate(pops)}
    perms = [engine_order(p.shape) for p in pops]
    sizes = np.array([p.size for p in pops], np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)

    def gather(field):
        return np.concatenate([getattr(p, field).astype(np.float64)[perms[i]] for i, p in enumerate(pops)])

    theta_neg = np.concatenate([np.zeros(p.size) if p.threshold_neg is None else
                                p.threshold_neg.astype(np.float64)[perms[i]] for i, p in enumerate(pops)])
    core_of = _core_of(net, offsets, perms)
    mm_inner = {p.name: matmul_inner(net, p) for p in pops if p.model == "ec_matmul"}
    n_cores = len(net.cores)

    weights, indptr, indices = [], [], []
    w_pos = i_pos = x_pos = 0
    rc_ptrs, rc_cores, rc_cnts = [], [], []
    rc_pos = rc_entry = 0
    cols = {k: [] for k in ("kind", "src", "tgt", "tgt_off", "tgt_n", "woff", "ioff", "xoff", "geom", "mac",
                            "wbytes", "rc_off")}
    pairs_src, pairs_core = [], []  # (global source neuron, destination core), for packets and hops
    for proj in net.projections:
        s, t = index[proj.source], index[proj.target]
        src, tgt = pops[s], pops[t]
        inv_t = _inverse(perms[t])
        geom = np.zeros(13, np.int64)
        if proj.kind == "pointwise" and not (_is_identity(perms[s]) and _is_identity(perms[t])):
            # rows of a reordered (C, H, W) population: explicit synapses
            proj = sparse_projection(proj.name, proj.source, proj.target, synapse_matrix(proj, src.shape, tgt.shape))
        if proj.kind == "pointwise":  # per input channel: its nonzero (output channel, weight) pairs
            kind = K.KIND_POINTWISE
            d_out, d_in = proj.weight.shape
            cols_c = np.asarray(proj.weight).T  # (d_in, d_out)
            ptr = np.concatenate([[0], np.cumsum(np.count_nonzero(cols_c, axis=1))]).astype(np.int64)
            ch, out_ch = np.nonzero(cols_c)
            indptr.append(ptr)
            indices.append(out_ch.astype(np.int32))
            weights.append(cols_c[ch, out_ch].astype(np.float32))
            n_w = int(ptr[-1])
            geom[:2] = (d_in, d_out)
        elif proj.kind == "dense":
            kind = K.KIND_DENSE
            # rows per engine source neuron, columns in engine target order
            w = proj.weight[np.ix_(perms[t], perms[s])].T
            weights.append(np.ascontiguousarray(w, np.float32).reshape(-1))
            n_w = w.size
        elif proj.kind in ("matmul_a", "matmul_b"):  # operands are gathered by the node, which counts the work
            kind = K.KIND_MM_A if proj.kind == "matmul_a" else K.KIND_MM_B
            m, n = tgt.shape
            inner = mm_inner[tgt.name]
            geom[:6] = (m, inner, n, int(proj.transpose), src.shape[0], src.size // src.shape[0])
            n_w = 0
        elif proj.kind in ("sparse", "identity"):
            kind = K.KIND_SPARSE
            if proj.kind == "identity":
                rows_c = np.arange(src.size + 1, dtype=np.int64)
                cols_c = np.arange(src.size, dtype=np.int64)
                data_c = np.ones(src.size, np.float32)
            else:
                rows_c, cols_c, data_c = proj.indptr.astype(np.int64), proj.indices.astype(np.int64), proj.weight
            # reorder rows to engine source order and map columns to engine target indices
            lengths = np.diff(rows_c)[perms[s]]
            starts = rows_c[:-1][perms[s]]
            ptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
            take = (np.repeat(starts - ptr[:-1], lengths) + np.arange(ptr[-1])).astype(np.int64)
            indptr.append(ptr)
            indices.append(inv_t[cols_c[take]].astype(np.int32))
            weights.append(np.asarray(data_c, np.float32)[take])
            n_w = int(ptr[-1])
        else:
            kind = K.KIND_CONV
            (kh, kw), (sh, sw), (ph, pw), cin_g, cout_g = projection_kernel(proj, src.shape, tgt.shape)
            cin, h, w_ = src.shape
            cout, ho, wo = tgt.shape
            groups = cin // cin_g
            if proj.kind == "avgpool":
                kern = np.full((groups, 1, kh, kw, 1), 1.0 / (kh * kw), np.float32)
            else:  # (C_out, C_in/g, kh, kw) -> (g, C_in/g, kh, kw, C_out/g): output channels innermost
                kern = proj.weight.reshape(groups, cout_g, cin_g, kh, kw).transpose(0, 2, 3, 4, 1)
            weights.append(np.ascontiguousarray(kern, np.float32).reshape(-1))
            n_w = kern.size
            geom[:] = (cin, h, w_, cout, ho, wo, kh, kw, sh, sw, ph, pw, groups)
        cols["kind"].append(kind)
        cols["src"].append(s)
        cols["tgt"].append(t)
        cols["tgt_off"].append(offsets[t])
        cols["tgt_n"].append(tgt.size)
        cols["woff"].append(w_pos)
        cols["ioff"].append(i_pos)
        cols["xoff"].append(x_pos)
        cols["geom"].append(geom)
        # analog values: multiply-accumulates (the input layer always, the papers' convention); compute-node
        # values through an identity or weights that are all 1 (routing, e.g. attention heads concatenated,
        # a relay's stream): accumulations
        cols["mac"].append(1 if src.model == "input" or (src.model in ANALOG_MODELS and not _routes_only(proj))
                           else 0)
        cols["wbytes"].append(WEIGHT_BYTES)
        cols["rc_off"].append(rc_pos)
        w_pos += n_w
        has_csr = kind in (K.KIND_SPARSE, K.KIND_POINTWISE)  # these appended an indptr / indices pair
        if has_csr:
            i_pos += len(indptr[-1])
            x_pos += int(indptr[-1][-1])
        ptr_arr = indptr[-1] if has_csr else np.zeros(1, np.int64)
        idx_arr = indices[-1] if has_csr else np.zeros(1, np.int32)
        idx_arr = idx_arr.astype(np.uint32)
        if kind in (K.KIND_MM_A, K.KIND_MM_B):  # no synapse rows; every operand element reaches the node's cores
            rptr, rcore, rcnt = np.zeros(src.size + 1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.int64)
            node_cores = np.unique(core_of[offsets[t]:offsets[t + 1]])
            pairs_src.append(offsets[s] + np.repeat(np.arange(src.size), len(node_cores)))
            pairs_core.append(np.tile(node_cores, src.size).astype(np.int64))
        else:
            rptr, rcore, rcnt = K.row_core_table(kind, src.size, offsets[t], tgt.size, geom, 0, 0, ptr_arr, idx_arr,
                                                 core_of, n_cores)
        rc_ptrs.append(rptr + rc_entry)
        rc_cores.append(rcore)
        rc_cnts.append(rcnt)
        rc_pos += src.size + 1
        rc_entry += len(rcore)
        pairs_src.append(offsets[s] + np.repeat(np.arange(src.size), np.diff(rptr)))
        pairs_core.append(rcore.astype(np.int64))

    n_total = int(offsets[-1])
    n_packets, n_hops, fl_ptr, fl_id, flow_src, flow_dst = _packets_and_hops(net, core_of, pairs_src, pairs_core,
                                                                             n_total, n_cores)
    in_ptr = np.zeros(len(pops) + 1, np.int64)
    in_proj = []
    for pi, pop in enumerate(pops):
        qs = [qi for qi, q in enumerate(net.projections) if q.target == pop.name]
        in_proj += qs
        in_ptr[pi + 1] = in_ptr[pi] + len(qs)

    def cat(chunks, dtype):
        return np.concatenate(chunks).astype(dtype) if chunks else np.zeros(1, dtype)

    arrays = dict(
        pop_off=offsets[:-1].copy(), pop_n=sizes,
        pop_model=np.array([_MODEL_CODES[p.model] for p in pops], np.int64),
        pop_reset=np.array([_RESET_CODES[p.reset] for p in pops], np.int64),
        pop_tau=np.array([_size_param(p) for p in pops], np.int64),
        pop_func=np.array([_EC_CODES[p.function] for p in pops], np.int64),
        pop_eps=np.array([p.eps for p in pops], np.float64),
        # ec_matmul nodes: [A(t), B(t), S_A, S_B] in one auxiliary state vector, from pop_aux[p] to pop_aux[p + 1]
        pop_aux=np.concatenate([[0], np.cumsum([2 * (p.shape[0] + p.shape[1]) * mm_inner[p.name]
                                                if p.model == "ec_matmul" else 0 for p in pops])]).astype(np.int64),
        pop_expand=np.array([p.payload == "expanded" for p in pops], np.int64),
        pop_alpha=np.array([p.negative_slope for p in pops], np.float64),
        pop_vmax=np.array([fixed_vmax(net) if p.model in ("if", "group") else 0.0 for p in pops], np.float64),
        pop_flags=np.array([_flags(p) for p in pops], np.int64),
        in_ptr=in_ptr, in_proj=np.array(in_proj, np.int64),
        theta=gather("threshold"), theta_neg=theta_neg, v_init=gather("v_init"), bias=gather("bias"),
        decay=np.concatenate([np.ones(p.size) if p.decay is None else p.decay.astype(np.float64)[perms[i]]
                              for i, p in enumerate(pops)]),
        core_of=core_of, n_packets=n_packets, n_hops=n_hops, fl_ptr=fl_ptr, fl_id=fl_id, flow_src=flow_src,
        flow_dst=flow_dst,
        proj_kind=np.array(cols["kind"], np.int64), proj_src=np.array(cols["src"], np.int64),
        proj_tgt_off=np.array(cols["tgt_off"], np.int64), proj_tgt_n=np.array(cols["tgt_n"], np.int64),
        proj_woff=np.array(cols["woff"], np.int64), proj_ioff=np.array(cols["ioff"], np.int64),
        proj_xoff=np.array(cols["xoff"], np.int64),
        proj_geom=np.array(cols["geom"], np.int64).reshape(-1, 13),
        proj_mac=np.array(cols["mac"], np.int64), proj_wbytes=np.array(cols["wbytes"], np.int64),
        weights=cat(weights, np.float32), indptr=cat(indptr, np.int64), indices=cat(indices, np.uint32),
        rc_off=np.array(cols["rc_off"], np.int64), rc_ptr=cat(rc_ptrs, np.int64), rc_core=cat(rc_cores, np.int32),
        rc_cnt=cat(rc_cnts, np.int64),
    )
    static = np.zeros((n_cores, 3), np.int64)
    for ci in range(n_cores):
        if pops[int(net.cores.population[ci])].model != "input":
            n = int(net.cores.neuron_stop[ci] - net.cores.neuron_start[ci])
            static[ci] = (n, n * STATE_BYTES, n * STATE_BYTES)
    return FlatNetwork(net, arrays, perms, n_cores, static)


def _packets_and_hops(net, core_of, pairs_src, pairs_core, n_total, n_cores):
    """Per neuron: packets per spike (distinct destination cores over all its projections) and their mesh hops;
    and the core-to-core flows its packets belong to (CSR fl_ptr / fl_id into flow_src / flow_dst)."""
    n_packets = np.zeros(n_total, np.int32)
    n_hops = np.zeros(n_total, np.int64)
    if not pairs_src:
        empty = np.zeros(0, np.int64)
        return n_packets, n_hops, np.zeros(n_total + 1, np.int64), empty, empty, empty
    src = np.concatenate(pairs_src).astype(np.int64)
    core = np.concatenate(pairs_core)
    key = np.unique(src * n_cores + core)  # sorted by source neuron
    src, core = key // n_cores, key % n_cores
    n_packets += np.bincount(src, minlength=n_total).astype(np.int32)
    x, y = net.cores.x.astype(np.int64), net.cores.y.astype(np.int64)
    sc = core_of[src]
    hops = np.abs(x[sc] - x[core]) + np.abs(y[sc] - y[core])
    n_hops += np.bincount(src, weights=hops, minlength=n_total).astype(np.int64)
    flow_key, fl_id = np.unique(sc.astype(np.int64) * n_cores + core, return_inverse=True)
    fl_ptr = np.concatenate([[0], np.cumsum(n_packets)]).astype(np.int64)
    return n_packets, n_hops, fl_ptr, fl_id.astype(np.int64), flow_key // n_cores, flow_key % n_cores
