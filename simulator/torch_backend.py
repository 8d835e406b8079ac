"""Exact torch backend: the engine's semantics (simulator.kernels) as tensor operations, float64, on any device.

`run_batch` returns what `kernels.run_batch` returns (readout, per-sample per-step per-core counters, spike counts,
rasters, traces, flows, in engine order), so `simulator.engine.run` assembles the same `Result` from either.
Neuron updates are the kernels' expressions written elementwise over a (batch, neurons) tensor; a population works
in canonical (C-order) layout, so convolutions are torch's. Counters are sums over events of per-neuron quantities:
a step's event multiplicities (batch, neurons) times precomputed matrices (synapses of each source neuron on each
core, packets and hops per event, the core-to-core flows each neuron's packets take) give them exactly.
Floating point: every elementwise operation is the engine's, correctly rounded (divisions by a number through
`_div`: CUDA would multiply by a reciprocal). Currents into multi-threshold and EC populations, whose events are
decided at exact ties, are summed in the engine's order (torch_ordered; on a CUDA device as Triton kernels,
torch_triton, as are the EC matrix products' inner sums), and EC functions in the engine's own arithmetic (its
code on a CPU, the same operations as a Triton kernel on a GPU, exp and erf from ecmath); other
currents come from GEMMs or exact sliced convolutions (torch_conv) and can differ from the engine's sequential sum
in the last bit, so a spike decided by that bit would differ (the tests compare spike for spike on every network
kind; the CIFAR benchmarks, counter for counter on 10,000 images). Fixed-point files are integer arithmetic and
identical by construction.
torch is imported here only; `simulator.engine` loads this module when backend="torch" is asked for.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F

from . import kernels as K
from . import torch_triton
from .arrays import _inverse
from .torch_conv import SlicedConv, conv_gemm
from .torch_ordered import OrderedDense, OrderedPointwise, OrderedSparse, source_rank

# counter columns of the dynamic counters (kernels.C_*)
_SYN, _MAC, _SPK, _PKT, _HOP, _BYT = K.C_SYNOPS, K.C_MACS, K.C_SPIKES, K.C_PACKETS, K.C_HOPS, K.C_SYN_BYTES
_PIN, _ACT, _CPK, _CHOP = K.C_PACKETS_IN, K.C_ACTIVE, K.C_CHIP_PACKETS, K.C_CHIP_HOPS

# Tuning knobs (read when a plan is built; benchmarks.profile_torch_backend compares them):
SLICED_CONV = True  # spike levels through torch_conv.SlicedConv (exact float32 slices) instead of float64 convs
FLOAT64_CONV = "cudnn"  # float64 convolutions on a GPU: "cudnn" (F.conv2d) or "gemm" (im2col + float64 GEMM)
# float64 library products (cuBLAS, cuDNN, cuSPARSE; MKL / oneDNN on a CPU) are called on blocks of this many
# samples per device type (in_fixed_rows): their summation order then does not depend on the chunk's size
LIBRARY_ROWS = {"cuda": 64, "cpu": 16}
DENSE_ROUTING_ENTRIES = 1 << 24  # a projection's synapses per (source neuron, core) as a dense matrix up to this
# targets whose currents are summed in the engine's order (torch_ordered): their events are decided at exact ties
ORDERED_MODELS = (K.MODEL_MULTI, K.MODEL_EC)


def _div(x, d):
    """x / d (d a Python number), correctly rounded on every device: CUDA divides a tensor by a CPU scalar as a
    multiplication by its reciprocal, which can differ from the engine's quotient in the last bit (and a last bit
    decides EC and multi-threshold events); by a device tensor it divides."""
    return x / torch.full((), float(d), dtype=x.dtype, device=x.device)


def _sparse_rows(rows, cols, vals, shape, device):
    """A (shape) float64 CSR matrix from COO entries (duplicates summed)."""
    with warnings.catch_warnings():  # "sparse CSR support is in beta", "invariant checks are disabled": the
        warnings.simplefilter("ignore", UserWarning)  # entries are built here, CSR @ dense is all this module uses
        m = torch.sparse_coo_tensor(torch.as_tensor(np.stack([rows, cols]).astype(np.int64)),
                                    torch.as_tensor(np.asarray(vals, np.float64)), shape,
                                    check_invariants=False).coalesce()
        return m.to_sparse_csr().to(device)


def _synapses(proj, n_src, fold):
    """A sparse projection's (source, target, weight · fold) triples, float32 weights used in float64."""
    rows = np.repeat(np.arange(n_src), np.diff(proj.indptr))
    return rows, proj.indices.astype(np.int64), np.asarray(proj.weight, np.float32).astype(np.float64) * fold


def _rows_canonical(ptr, perm):
    """The canonical source neuron of every entry of a CSR table whose rows are one population's neurons in
    engine order (ptr: its row pointers)."""
    return perm[np.repeat(np.arange(len(ptr) - 1), np.diff(ptr))]


def _per_core(matrix_t, mult):
    """(B, cores) = for every sample, Σ_i mult[b, i] · matrix[i, core]; matrix_t is the (cores, n) transpose."""
    return (matrix_t @ mult.T).T


def _per_segment_constant(values, pop):
    """(cores,) per-core values when `values` (n,) is constant over each core's neuron range, else None."""
    if not pop.seg_equal:
        return None
    if pop.seg_order is not None:
        values = values[pop.seg_order]
    v = values.reshape(-1, pop.seg_equal)
    return v[:, 0].clone() if bool((v == v[:, :1]).all()) else None


def _payload(pop):
    """(payload, largest level) of a spiking population whose value is an integer level times its payload: a float
    when one payload serves every neuron, else the (n,) tensor; (None, 0) for analog outputs."""
    theta = pop.theta
    uniform = pop.n > 0 and bool((theta == theta[0]).all())
    unit_spike = pop.vmax != 0.0 or bool(pop.flags & K.FLAG_UNIT_SPIKE)
    if pop.model in (K.MODEL_IF, K.MODEL_LIF, K.MODEL_CUBA):
        return (1.0 if unit_spike else float(theta[0]) if uniform else theta), 1
    if pop.model == K.MODEL_GROUP:
        if pop.vmax != 0.0:
            return 1.0, pop.size
        return (float(theta[0]) / pop.size if uniform else _div(theta, pop.size)), pop.size
    return None, 0


class _Out:
    """A population's output in one step: event multiplicities (float64, for the counters) and values, the latter
    given as float64 values or as integer levels times a payload (value = level · payload, formed when asked)."""

    __slots__ = ("mult", "level", "payload", "_value", "_narrow")

    def __init__(self, mult, value=None, level=None, payload=None):
        self.mult, self.level, self.payload, self._value, self._narrow = mult, level, payload, value, {}

    @property
    def value(self):
        if self._value is None:
            same = isinstance(self.payload, float) and self.payload == 1.0
            self._value = self.level if same else self.level * self.payload
        return self._value

    def narrow_level(self, dtype):
        """Levels as float32 or float16 (small integers: exact) for SlicedConv, made once per dtype."""
        if dtype not in self._narrow:
            self._narrow[dtype] = self.level.to(dtype)
        return self._narrow[dtype]


class _Pop:
    """One population's parameters, canonical layout, as tensors."""

    def __init__(self, flat, p, device):
        net, pops, rt = flat.net, flat.pops, flat.routing
        pop = net.populations[p]
        off, n = int(pops.off[p]), int(pops.n[p])
        inv = _inverse(flat.perms[p])  # canonical index -> engine position
        self.p, self.shape, self.n = p, tuple(pop.shape), n
        self.perm = torch.as_tensor(flat.perms[p].astype(np.int64), device=device)  # engine position -> canonical
        self.model, self.reset, self.size = int(pops.model[p]), int(pops.reset[p]), int(pops.tau[p])
        self.expand, self.flags, self.func = bool(pops.expand[p]), int(pops.flags[p]), int(pops.func[p])
        self.alpha, self.vmax, self.eps = float(pops.alpha[p]), float(pops.vmax[p]), float(pops.eps[p])

        def canon(a, dtype=torch.float64):
            return torch.as_tensor(np.ascontiguousarray(a[off:off + n][inv]), device=device).to(dtype)

        self.theta, self.theta_neg, self.v_init = canon(pops.theta), canon(pops.theta_neg), canon(pops.v_init)
        self.bias, self.decay, self.syn_decay = canon(pops.bias), canon(pops.decay), canon(pops.syn_decay)
        self.refractory = int(pops.refractory[p])
        self.reset_every, self.reset_phase = int(pops.reset_every[p]), int(pops.reset_phase[p])
        # a core holds a contiguous canonical neuron range of one population: per-core sums of a (B, n) tensor are
        # differences of its running sum at the ranges' ends (exact: the summed values are integers < 2^53); cores
        # holding boxes are made ranges by reading the neurons in core order first (seg_order)
        cores = np.flatnonzero(net.cores.population == p)
        cores = cores[np.argsort(net.cores.neuron_start[cores], kind="stable")]
        sizes = net.cores.sizes()[cores]
        self.seg_order = None
        if any(net.cores.is_box(c) for c in cores):
            order = np.concatenate([net.cores.neurons(c, pop.shape) for c in cores])
            self.seg_order = torch.as_tensor(order, device=device)
            starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        else:
            starts = net.cores.neuron_start[cores].astype(np.int64)
        self.seg_cores = torch.as_tensor(cores.astype(np.int64), device=device)
        self.seg_start = torch.as_tensor(starts, device=device)
        self.seg_stop = torch.as_tensor(starts + sizes, device=device)
        self.seg_size = (self.seg_stop - self.seg_start).to(torch.float64)
        # equal ranges that tile the population in order: per-core sums are a reshape and a sum
        self.seg_equal = int(sizes[0]) if len(cores) and (sizes == sizes[0]).all() and \
            int(starts[0]) == 0 and int(sizes[0]) * len(cores) == n else 0
        self.packets, self.hops = canon(rt.n_packets), canon(rt.n_hops)
        self.chip_packets, self.chip_hops = canon(rt.n_chip_packets), canon(rt.n_chip_hops)
        self.core_packets = _per_segment_constant(self.packets, self)
        self.core_hops = _per_segment_constant(self.hops, self)
        self.core_chip_packets = _per_segment_constant(self.chip_packets, self)
        self.core_chip_hops = _per_segment_constant(self.chip_hops, self)
        self.payload, self.max_level = _payload(self)
        self.flows = None  # (flows, n) transpose of the neuron -> flow incidence, when flows are recorded
        # (cores, n): the packets one event of each neuron delivers to each core (its destination cores)
        ptr = rt.fl_ptr[off:off + n + 1]
        dest = rt.flow_dst[rt.fl_id[ptr[0]:ptr[-1]]]
        self.dest = _sparse_rows(dest, _rows_canonical(ptr, flat.perms[p]), np.ones(len(dest)),
                                 (flat.n_cores, n), device) if len(dest) else None
        self.incoming = [int(q) for q in pops.in_proj[pops.in_ptr[p]:pops.in_ptr[p + 1]]]
        self.recurrent = [int(q) for q in pops.back_proj[pops.back_ptr[p]:pops.back_ptr[p + 1]]]  # outgoing
        self.has_bias = bool((self.bias != 0).any())
        self.bias_mask = (self.bias != 0)[None, :] if self.has_bias else None  # (1, n): neurons always active
        # group neurons with one θ >= 0: the thresholds θ·j/τ rise with j, so counting those reached (bucketize)
        # is the engine's loop that stops at the first one missed
        self.levels = None
        if self.model == K.MODEL_GROUP and isinstance(self.payload, float) and self.vmax == 0.0 and \
                float(self.theta[0]) >= 0.0:
            th = float(self.theta[0])
            self.levels = torch.tensor([th * j / self.size for j in range(1, self.size + 1)], dtype=torch.float64,
                                       device=device)

    def flow_matrix(self, flat, device):
        """The (flows, n) incidence of this population's neurons and the core-to-core flows their packets take."""
        rt, off = flat.routing, int(flat.pops.off[self.p])
        ptr = rt.fl_ptr[off:off + self.n + 1]
        neuron = _rows_canonical(ptr, flat.perms[self.p])
        self.flows = _sparse_rows(rt.fl_id[ptr[0]:ptr[-1]], neuron, np.ones(len(neuron)), (len(rt.flow_src), self.n),
                                  device)


class _Proj:
    """One projection: how it turns source values into target currents, and its synaptic work per core."""

    def __init__(self, flat, q, device, pops):
        net, projs, rt = flat.net, flat.projs, flat.routing
        proj = net.projections[q]
        index = {p.name: i for i, p in enumerate(net.populations)}
        self.kind = proj.kind
        self.src = index[proj.source]
        src, tgt = net.populations[self.src], net.populations[index[proj.target]]
        self.src_shape = tuple(src.shape)
        self.column = _MAC if projs.mac[q] else _SYN
        self.delay = int(proj.delay)
        self.wbytes = float(projs.wbytes[q])
        self.transpose = bool(proj.transpose)
        if proj.kind in ("matmul_a", "matmul_b"):  # operand work: per event, 2 per product of its row (A) or 1
            m, n = tgt.shape  # per product of its column (B), on the cores holding those products
            self.src_shape = tuple(src.shape)
            off = int(projs.tgt_off[q])
            product_core = rt.core_of[off:off + m * n].reshape(m, n).astype(np.int64)
            if proj.kind == "matmul_b":
                product_core = product_core.T  # (N, M): the products of each column
            self.work_cores, local = np.unique(product_core, return_inverse=True)
            local = local.reshape(product_core.shape)
            per = np.zeros((len(product_core), len(self.work_cores)))  # products of each row / column per core
            np.add.at(per, (np.repeat(np.arange(len(product_core)), product_core.shape[1]), local.reshape(-1)), 1.0)
            self.work_per_line = torch.tensor(per * (2.0 if proj.kind == "matmul_a" else 1.0), dtype=torch.float64,
                                              device=device)
            self.work_cores = torch.as_tensor(self.work_cores, device=device)
            self.mm = (m, n)
            return
        source = pops[self.src]
        # 0/1 spikes with one payload u (IF): weights w·u applied to the levels form the engine's products w·u
        # exactly, and spare forming the values
        self.levels_in = isinstance(source.payload, float) and source.max_level == 1
        self._weights(proj, src, tgt, device, source.payload if self.levels_in else 1.0)
        self.sliced = self._sliced(source)
        self.ordered = self._ordered(proj, src, tgt, pops[index[proj.target]].model, flat.perms[self.src], device)
        # synapses of each source neuron on each core, from the engine's row-core tables (rows in engine order):
        # a dense (source neurons, cores reached) matrix when small, else a sparse (cores, source neurons) one
        r0 = int(rt.rc_off[q])
        ptr = rt.rc_ptr[r0:r0 + src.size + 1]
        rows = _rows_canonical(ptr, flat.perms[self.src])
        cores, counts = rt.rc_core[ptr[0]:ptr[-1]], rt.rc_cnt[ptr[0]:ptr[-1]]
        reached, column = np.unique(cores, return_inverse=True)
        self.route_dense = self.routing_t = None
        if len(reached) * src.size <= DENSE_ROUTING_ENTRIES:
            dense = np.zeros((src.size, len(reached)))
            np.add.at(dense, (rows, column), counts)
            self.route_dense = torch.as_tensor(dense, device=device)
            self.route_cores = torch.as_tensor(reached.astype(np.int64), device=device)
        else:
            self.routing_t = _sparse_rows(cores, rows, counts, (flat.n_cores, src.size), device)
            self.route_cores = slice(None)

    def _sliced(self, src):
        """SlicedConv for a convolution whose source sends integer levels with one payload, else None."""
        if not (SLICED_CONV and self.kind in ("conv2d", "avgpool") and isinstance(src.payload, float)):
            return None
        w, stride, padding, groups = self.conv  # already times the payload when levels_in
        bits = SlicedConv.bits_for(w[0].numel(), src.max_level)
        w = w if self.levels_in else w * src.payload
        return SlicedConv(w, stride, padding, groups, src.max_level, bits) if bits and SlicedConv.takes(w) else None

    def _ordered(self, proj, src, tgt, target_model, perm, device):
        """Currents summed in the engine's order (torch_ordered) into the models whose events hinge on exact ties,
        else None (a GEMM / convolution)."""
        if target_model not in ORDERED_MODELS or proj.kind not in ("dense", "pointwise", "sparse"):
            return None
        rank = source_rank(perm)
        if proj.kind == "dense":
            return OrderedDense(self.weight, rank)
        if proj.kind == "pointwise":
            return OrderedPointwise(self.weight, rank, src.size // self.weight.shape[1])
        sources, targets, weights = _synapses(proj, src.size, self.fold)
        if not OrderedSparse.fits(int(np.bincount(targets, minlength=tgt.size).max(initial=0)), tgt.size):
            return None
        return OrderedSparse(sources, targets, weights, rank, tgt.size, device)

    def reach(self, mult):
        """(B, target neurons) or (B, 1) bool: the targets a stored synapse delivers one of the source's events
        (multiplicities `mult`, canonical order) to, whatever its weight (kernels._mark_reached)."""
        b = mult.shape[0]
        if self.kind == "dense":
            return (mult != 0).any(1, keepdim=True)
        if self.kind in ("matmul_a", "matmul_b"):  # the products of an event's row of A (column of B)
            m, n = self.mm
            hit = self.line_events(mult) > 0
            hit = hit[:, :, None] if self.kind == "matmul_a" else hit[:, None, :]
            return hit.expand(b, m, n).reshape(b, m * n)
        if self.kind == "identity":
            return mult != 0
        nz = (mult != 0).to(torch.float64)
        if self.kind == "maxpool":
            kernel, stride, padding = self.window
            return F.max_pool2d(nz.reshape(b, *self.src_shape), kernel, stride, padding).reshape(b, -1) > 0
        if self.kind in ("conv2d", "avgpool"):
            # every output channel of a group sees the same window: any event of the group's input channels
            # there, one depthwise count per group (small integers: exact in float32), then per output channel
            w, stride, padding, groups = self.conv
            c, h, wd = self.src_shape
            any_in = (mult != 0).reshape(b, groups, c // groups, h, wd).any(2).to(torch.float32)
            hit = F.conv2d(any_in, self.taps, stride=stride, padding=padding, groups=groups) > 0
            return hit.repeat_interleave(w.shape[0] // groups, dim=1).reshape(b, -1)
        if self.kind == "pointwise":
            d_in = self.weight.shape[1]
            return (nz.reshape(b, -1, d_in) @ self.pattern.T).reshape(b, -1) > 0
        return (self.pattern @ nz.T).T > 0  # sparse: its stored entries

    def work(self, mult):
        """(B, cores reached) synaptic work of events of multiplicity mult (B, source neurons), and those cores."""
        if self.route_dense is not None:
            return mult @ self.route_dense, self.route_cores
        return _per_core(self.routing_t, mult), self.route_cores

    def _weights(self, proj, src, tgt, device, fold):
        """Weights as the engine holds them: float32 values, used in float64 (average pooling too: 1/(kh·kw)),
        times `fold`."""
        f64 = torch.float64
        self.fold = fold
        if proj.kind == "avgpool":
            from .geometry import projection_kernel

            (kh, kw), stride, padding, cin_g, _ = projection_kernel(proj, src.shape, tgt.shape)
            c = src.shape[0]
            w = torch.full((c, 1, kh, kw), float(np.float32(1.0 / (kh * kw))), dtype=f64, device=device) * fold
            self.conv = (w, tuple(stride), tuple(padding), c)
            self.taps = torch.ones(c, 1, kh, kw, dtype=torch.float32, device=device)
        elif proj.kind == "maxpool":
            self.window = (tuple(proj.kernel), tuple(proj.stride), tuple(proj.padding))
        elif proj.kind == "conv2d":
            w = torch.as_tensor(np.asarray(proj.weight, np.float32), device=device).to(f64) * fold
            self.conv = (w, tuple(proj.stride), tuple(proj.padding), int(proj.groups))
            self.taps = torch.ones(int(proj.groups), 1, *w.shape[2:], dtype=torch.float32, device=device)
        elif proj.kind in ("dense", "pointwise"):
            self.weight = torch.as_tensor(np.asarray(proj.weight, np.float32), device=device).to(f64) * fold
            if proj.kind == "pointwise":  # the engine stores its nonzero weights only
                self.pattern = (torch.as_tensor(np.asarray(proj.weight, np.float32), device=device) != 0).to(f64)
        elif proj.kind == "sparse":
            rows, cols, vals = _synapses(proj, src.size, fold)
            self.sparse_t = _sparse_rows(cols, rows, vals, (tgt.size, src.size), device)
            self.pattern = _sparse_rows(cols, rows, np.ones(len(rows)), (tgt.size, src.size), device)

    def current(self, out):
        """Target current (B, target size) for a source's output (values (B, source size))."""
        if self.sliced is not None:
            return self.sliced(out.narrow_level(self.sliced.level_dtype(out.level.device)), self.src_shape)
        if self.kind == "identity":
            return out.value
        x = self.value_in(out)
        rows = LIBRARY_ROWS.get(x.device.type)  # a sample's current must not depend on its chunk's (shard's) size
        return in_fixed_rows(self._library_current, x, rows) if rows else self._library_current(x)

    def _library_current(self, x):
        """The current of float64 values or levels x (B, source size) from torch's conv / GEMM / sparse product."""
        b = x.shape[0]
        if self.kind in ("conv2d", "avgpool"):
            w, stride, padding, groups = self.conv
            conv = conv_gemm if FLOAT64_CONV == "gemm" and x.is_cuda else F.conv2d
            out = conv(x.reshape(b, *self.src_shape), w, stride=stride, padding=padding, groups=groups)
            return out.reshape(b, -1)
        if self.kind == "dense":
            return x @ self.weight.T
        if self.kind == "pointwise":
            d_out, d_in = self.weight.shape
            return (x.reshape(b, -1, d_in) @ self.weight.T).reshape(b, -1)
        return (self.sparse_t @ x.T).T  # sparse

    def value_in(self, out):
        """What the weights multiply: the levels when the payload is folded into them, else the values."""
        return out.level if self.levels_in else out.value

    def line_events(self, mult):
        """(batch, M) events in each row of A, or (batch, N) in each column of B: an ec_matmul operand's events
        (nonzero mult) by the line of products they meet."""
        events = self.operand((mult != 0).to(torch.float64))
        m, n = self.mm
        if self.kind == "matmul_a":
            return events.reshape(len(events), m, -1).sum(2)
        return events.reshape(len(events), -1, n).sum(1)

    def matmul_work(self, mult):
        """(batch, cores) operand work of the events sent: per row of A (column of B) events times that line's
        products on each core."""
        return self.line_events(mult) @ self.work_per_line

    def operand(self, x):
        """An ec_matmul operand from source values: the source read (rows, cols), transposed if asked."""
        b = x.shape[0]
        v = x.reshape(b, *self.src_shape)
        return v.transpose(-1, -2) if self.transpose else v


def in_fixed_rows(fn, x, rows):
    """fn(x) for a row-wise fn, computed on contiguous blocks of exactly `rows` rows (the last padded with zeros).
    cuBLAS, cuDNN, cuSPARSE and MKL choose their algorithm, and so the order of a float64 sum, by the shapes and
    layout they are given (MKL: the rows past a multiple of 4 by another kernel): called on chunks of different
    sizes (a shard of 128 samples, a chunk of 512) the same sample's current could differ in its last bit, and a
    spike decided by that bit with it. On blocks of one size and layout every sample's sum is the same."""
    b = x.shape[0]
    x = x.contiguous()
    if b == rows:
        return fn(x)
    pad = -b % rows
    if pad:
        x = torch.cat([x, x.new_zeros(pad, *x.shape[1:])])
    return torch.cat([fn(x[i:i + rows]) for i in range(0, b + pad, rows)])[:b]


class TorchPlan:
    """The tensors of one flattened network on one device, built once and reused for every chunk."""

    def __init__(self, flat, device, record_links):
        self.flat, self.device = flat, torch.device(device)
        self.pops = [_Pop(flat, p, self.device) for p in range(len(flat.net.populations))]
        for pop in self.pops:  # a max pooling gate passes its source's events on: same payload and levels
            if pop.model == K.MODEL_MAXPOOL:
                source = self.pops[int(flat.projs.src[pop.incoming[0]])]
                pop.payload, pop.max_level = source.payload, source.max_level
        self.projs = [_Proj(flat, q, self.device, self.pops) for q in range(len(flat.net.projections))]
        self.n_flows = len(flat.routing.flow_src) if record_links else 0
        if self.n_flows:
            for pop in self.pops:
                pop.flow_matrix(flat, self.device)


class _Run:
    """State of one chunk: membranes, EC sums, ec_matmul operands, readout sums, and what is recorded."""

    def __init__(self, plan, b, T, recording):
        dev, f64 = plan.device, torch.float64
        self.plan, self.T, self.recording = plan, T, recording
        self.v = [pop.v_init.expand(b, pop.n).clone() for pop in plan.pops]
        # EC nodes' (t-1)·F(S(t-1)/(t-1)) (a host array for kernels.ec_outputs, unless F runs on the device),
        # ec_matmul nodes' S_K(t-1)/(t-1); only those populations have one
        self.kernels = torch_triton.available(dev)  # Triton kernels for the EC matrix products (and F, if it checks)
        self.ec_on_device = self.kernels and torch_triton.ec_kernel_ok(dev)
        self.prev = {pop.p: (np.zeros((b, pop.n)) if pop.model == K.MODEL_EC and not self.ec_on_device else
                             torch.zeros(b, pop.n, dtype=f64, device=dev))
                     for pop in plan.pops if pop.model in (K.MODEL_EC, K.MODEL_ECMM)}
        self.sums = {}  # ec_matmul node p -> [S_A, S_B]
        # cuba neurons: synaptic currents and the steps their membranes are still held (kernels._cuba_update)
        self.syn = {pop.p: torch.zeros(b, pop.n, dtype=f64, device=dev) for pop in plan.pops
                    if pop.model == K.MODEL_CUBA}
        self.hold = {p: torch.zeros(b, self.syn[p].shape[1], dtype=torch.int64, device=dev) for p in self.syn}
        # sigma-delta neurons: last activation and residue (kernels._sigma_delta_update)
        self.sd = {pop.p: [torch.zeros(b, pop.n, dtype=f64, device=dev), torch.zeros(b, pop.n, dtype=f64, device=dev)]
                   for pop in plan.pops if pop.model == K.MODEL_SIGMA_DELTA}
        self.static = {}  # projection from the input (the same every step) -> its current
        self.static_work = {}  # ... -> (work, cores)
        self.static_reach = {}  # ... -> the targets it reaches (kernels._mark_reached)
        self.pooled = {}  # maxpool population -> its source neurons' spike counts so far (B, source size)
        self.ctr = torch.zeros(b, T, plan.flat.n_cores, K.N_DYNAMIC_COUNTERS, dtype=f64, device=dev)
        self.flows = torch.zeros(b, T, plan.n_flows, dtype=f64, device=dev)
        self.counts = {pop.p: torch.zeros(b, pop.n, dtype=f64, device=dev) for pop in plan.pops
                       if recording.record_counts}
        self.rasters = {}  # p -> list over t of (B, n) recorded values
        self.acc = None
        self.history = {}  # step -> every population's output of that step, kept while a delayed projection needs it
        # traced neurons (engine-global indices) as (population, canonical index), looked up once
        off = plan.flat.pops.off
        self.traced = []
        for g in recording.tr_idx[:recording.n_trace]:
            p = int(np.searchsorted(off, g, side="right") - 1)
            self.traced.append((p, int(plan.flat.perms[p][g - off[p]])))

    def source(self, t, proj, outs):
        """What projection proj delivers at step t: its source's output of step t - delay (outs: this step's);
        before the first delivery, a silent output (no events, zero values)."""
        if proj.delay == 0:
            return outs[proj.src]
        if t < proj.delay:  # (a recurrent projection's source has no output of this step yet)
            src = self.plan.pops[proj.src]
            zero = torch.zeros(self.v[0].shape[0], src.n, dtype=torch.float64, device=self.plan.device)
            return _Out(zero, value=zero, level=zero, payload=src.payload)
        return self.history[t - proj.delay][proj.src]

    def count_events(self, t, pop, mult, spikes=False):
        """An event's cost on its neuron's core: packets and hops (and spikes when they are spikes), and its
        packets on their core-to-core flows."""
        ctr = self.ctr[:, t]
        events = _core_sums(pop, mult)  # (B, cores of pop)
        if spikes:
            ctr[:, pop.seg_cores, _SPK] += events
        for column, per_core, per_neuron in ((_PKT, pop.core_packets, pop.packets), (_HOP, pop.core_hops, pop.hops),
                                             (_CPK, pop.core_chip_packets, pop.chip_packets),
                                             (_CHOP, pop.core_chip_hops, pop.chip_hops)):
            ctr[:, pop.seg_cores, column] += events * per_core if per_core is not None else \
                _core_sums(pop, mult * per_neuron)
        if pop.dest is not None:
            ctr[:, :, _PIN] += _per_core(pop.dest, mult)
        if pop.flows is not None:
            self.flows[:, t] += _per_core(pop.flows, mult)

    def emit(self, t, pop, mult, recorded):
        """Count spike events of multiplicity mult and record what counts / rasters record (s)."""
        self.count_events(t, pop, mult, spikes=True)
        if self.recording.record_counts:
            self.counts[pop.p] += recorded
        if self.recording.rec_off[pop.p] >= 0:
            self.rasters.setdefault(pop.p, []).append(recorded)


def _core_sums(pop, values):
    """(B, n) per-neuron values -> (B, cores of pop) sums over each core's neurons (exact: integers)."""
    if pop.seg_order is not None:
        values = values[..., pop.seg_order]
    if pop.seg_equal:
        return values.reshape(values.shape[0], -1, pop.seg_equal).sum(-1)
    running = F.pad(values.cumsum(-1), (1, 0))
    return running[..., pop.seg_stop] - running[..., pop.seg_start]


def _integrate(v, current, vmax):
    """m = v + I; fixed point: I rounded half up, m saturated at [-vmax - 1, vmax] (kernels._integrate)."""
    if vmax == 0.0:
        return v + current
    return torch.clamp(v + torch.floor(current + 0.5), -vmax - 1.0, vmax)


def _reset(m, fired, reset):
    """The membrane after a zero reset, or none (the subtractive reset is each model's own expression)."""
    if reset == K.RESET_ZERO:
        return torch.where(fired, torch.zeros_like(m), m)
    return m


def _if_update(run, t, pop, cur):
    """IF / LIF neurons (kernels._if_update): fire on m >= θ (m > θ strict), payload θ or 1."""
    v = run.v[pop.p]
    m = _integrate(v * pop.decay if pop.model == K.MODEL_LIF else v, cur, pop.vmax)
    fired = (m > pop.theta) if pop.flags & K.FLAG_STRICT_TEST else (m >= pop.theta)
    s = fired.to(torch.float64)
    if pop.flags & K.FLAG_MULTI_SPIKE:  # floor(m / θ) spikes where it fires (sinabs's MultiSpike)
        s = torch.where(fired, torch.floor(m / pop.theta), s)
    if pop.reset == K.RESET_SUBTRACT:  # m - s·θ: s·θ is an exact multiple of θ, as the engine's m - k·θ
        run.v[pop.p] = m - s * pop.theta
    else:
        run.v[pop.p] = _reset(m, fired, pop.reset)
    if pop.flags & K.FLAG_FLOOR_NEG_THETA:
        run.v[pop.p] = torch.maximum(run.v[pop.p], -pop.theta)
    run.emit(t, pop, s, s)
    return _Out(s, level=s, payload=pop.payload)


def _cuba_update(run, t, pop, cur):
    """Current-based LIF neurons (kernels._cuba_update): i = α·i + I and m = β·v + i (in the population's order),
    fire on m >= θ (m > θ strict) unless held, reset, hold for `refractory` steps."""
    v, syn, hold = run.v[pop.p], run.syn[pop.p], run.hold[pop.p]
    if pop.flags & K.FLAG_LOIHI:  # Loihi's 24-bit integers (kernels._loihi_cuba)
        syn = torch.trunc(syn * pop.syn_decay) + (cur - pop.bias)
        syn = torch.where(syn > K.LOIHI_STATE, syn - 2 * K.LOIHI_STATE,
                          torch.where(syn <= -K.LOIHI_STATE, syn + 2 * K.LOIHI_STATE, syn))
        run.syn[pop.p] = syn
        m = (torch.trunc(v * pop.decay) + syn + pop.bias).clamp(1 - K.LOIHI_STATE, K.LOIHI_STATE - 1)
    elif pop.flags & K.FLAG_MEMBRANE_FIRST:
        m = v * pop.decay + syn
        run.syn[pop.p] = syn * pop.syn_decay + cur
    else:
        syn = syn * pop.syn_decay + cur
        run.syn[pop.p] = syn
        m = v * pop.decay + syn
    held = hold > 0
    fired = ((m > pop.theta) if pop.flags & K.FLAG_STRICT_TEST else (m >= pop.theta)) & ~held
    s = fired.to(torch.float64)
    if pop.reset == K.RESET_SUBTRACT:
        after = torch.addcmul(m, s, pop.theta, value=-1.0)
    else:
        after = _reset(m, fired, pop.reset)
    run.v[pop.p] = torch.where(held, v, after)
    run.hold[pop.p] = torch.where(held, hold - 1, torch.where(fired, pop.refractory, 0))
    run.emit(t, pop, s, s)
    return _Out(s, level=s, payload=pop.payload)


def _sigma_delta_update(run, t, pop, cur):
    """Sigma-delta neurons (kernels._sigma_delta_update): σ += I, a = max(0, σ + bias) (or a = I); d = a - a_prev +
    r; |d| >= θ (d != 0) sends floor(d / 2^shift) and r = 0, else r = d."""
    x = cur - pop.bias
    if pop.flags & K.FLAG_WRAP24:
        x = x - 2 * K.LOIHI_STATE * torch.floor((x + K.LOIHI_STATE) / (2 * K.LOIHI_STATE))
    if pop.flags & K.FLAG_DELTA_INPUT:
        act = x
        run.v[pop.p] = act
    else:
        run.v[pop.p] = run.v[pop.p] + x
        act = torch.clamp(run.v[pop.p] + pop.bias, min=0.0)
    prev, residue = run.sd[pop.p]
    d = act - prev + residue
    fired = (d != 0) & (d.abs() >= pop.theta)
    run.sd[pop.p] = [act, torch.where(fired, torch.zeros_like(d), d)]
    mult = fired.to(torch.float64)
    run.emit(t, pop, mult, mult)
    return _Out(mult, value=torch.where(fired, torch.floor(d / 2.0 ** pop.size), torch.zeros_like(d)))


def _group_update(run, t, pop, cur):
    """Group neurons: S = #{j <= τ : m >= θ·j/τ} (counted up to the first that fails), payload (θ/τ)·S."""
    m = _integrate(run.v[pop.p], cur, pop.vmax)
    if pop.levels is not None:
        s = torch.bucketize(m, pop.levels, right=True).to(torch.float64)  # #{j : θ·j/τ <= m}
    else:
        s = torch.zeros_like(m)
        going = torch.ones_like(m, dtype=torch.bool)
        for j in range(1, pop.size + 1):
            going = going & (m >= _div(pop.theta * j, pop.size))
            s = s + going.to(torch.float64)
    unit = _div(pop.theta, pop.size)
    fired = s > 0
    # m - unit·S with the product rounded first, as the engine does (addcmul could fuse it into one rounding)
    run.v[pop.p] = m - unit * s if pop.reset == K.RESET_SUBTRACT else _reset(m, fired, pop.reset)
    mult = s if pop.expand else fired.to(torch.float64)
    run.emit(t, pop, mult, s)
    return _Out(mult, level=s, payload=pop.payload)


def _signed_update(run, t, pop, cur):
    """Signed IF neurons: +1 if m >= θ (payload θ), -1 if m < 0 (payload -α·θ); v = m - s·θ."""
    m = run.v[pop.p] + cur
    s = (m >= pop.theta).to(torch.float64) - ((m < pop.theta) & (m < 0.0)).to(torch.float64)
    fired = s != 0
    run.v[pop.p] = torch.where(fired, m - s * pop.theta, m)
    mult = fired.to(torch.float64)
    run.emit(t, pop, mult, s)
    value = torch.where(s > 0, pop.theta, torch.where(s < 0, -pop.alpha * pop.theta, torch.zeros_like(m)))
    return _Out(mult, value=value)


def _multi_update(run, t, pop, cur):
    """Multi-threshold neurons: the largest level θ·2^k (m >= θ·2^k - θ/2), else -θ_neg·2^k; v = m - level."""
    m = run.v[pop.p] + cur
    s = torch.zeros_like(m)
    for k in range(pop.size):
        s = torch.where(m >= pop.theta * 2.0 ** k - pop.theta / 2, torch.full_like(m, float(1 << k)), s)
    neg = (s == 0) & (pop.theta_neg > 0.0)
    for k in range(pop.size):
        hit = neg & (m < -pop.theta_neg * 2.0 ** k + pop.theta_neg / 2)
        s = torch.where(hit, torch.full_like(m, -float(1 << k)), s)
    fired = s != 0
    level = torch.where(s > 0, pop.theta * s, pop.theta_neg * s)
    run.v[pop.p] = torch.where(fired, m - level, m)
    mult = fired.to(torch.float64)
    run.emit(t, pop, mult, s)
    return _Out(mult, value=torch.where(fired, level, torch.zeros_like(m)))


def _ec_update(run, t, pop, cur):
    """EC nodes: S(t) += I; O(t) = t·F(S(t)/t) - (t-1)·F(S(t-1)/(t-1)), F per group of the last dimension; a relay
    forwards I. Nonzero outputs leave as analog events (packets, no spikes); one MAC per element per step."""
    if pop.func == K.EC_IDENTITY:
        mult = (cur != 0.0).to(torch.float64)
        run.count_events(t, pop, mult)
        return _Out(mult, value=cur)
    total = run.v[pop.p] + cur
    run.v[pop.p] = total
    # F in the engine's own arithmetic (kernels.ec_outputs, or the same operations as a Triton kernel: the same
    # summation order, ecmath's exp / erf): a torch erf or exp may differ in the last bit, and whether O(t) is
    # exactly 0 decides whether an event is sent
    if run.ec_on_device:
        o = torch_triton.ec_outputs(total.contiguous(), run.prev[pop.p], t, pop.func, pop.size, pop.eps)
    else:
        o = K.ec_outputs(np.ascontiguousarray(total.cpu().numpy()), run.prev[pop.p], t, pop.func, pop.size, pop.eps)
        o = torch.as_tensor(o, device=total.device)
    run.ctr[:, t, pop.seg_cores, _MAC] += pop.seg_size  # one MAC per element and step
    mult = (o != 0.0).to(torch.float64)
    run.count_events(t, pop, mult)
    return _Out(mult, value=o)


def _matmul_update(run, t, pop, operands):
    """Accumulating EC matrix product: S_K(t) = S_A(t)·S_B(t) built from this step's operands; O(t) = S_K(t)/t -
    S_K(t-1)/(t-1) leaves as analog events."""
    a, b = operands["matmul_a"].contiguous(), operands["matmul_b"].contiguous()
    sums = run.sums.setdefault(pop.p, [torch.zeros_like(a), torch.zeros_like(b)])
    s_a, s_b = sums
    # Σ_k A_ik (B_kj + S_B,kj) + S_A,ik B_kj, summed over k in order as the engine does (bit-identical outputs)
    if run.kernels:
        acc = torch_triton.ec_matmul_sum(a, b, s_a, s_b)
    else:
        acc = torch.zeros(a.shape[0], a.shape[1], b.shape[2], dtype=a.dtype, device=a.device)
        for k in range(a.shape[2]):
            a_k, b_k = a[:, :, k, None], b[:, None, k, :]
            acc = acc + (a_k * (b_k + s_b[:, None, k, :]) + s_a[:, :, k, None] * b_k)
    acc = acc.reshape(a.shape[0], -1)
    tt = t + 1.0
    total = run.v[pop.p] + acc
    run.v[pop.p] = total
    mean = _div(total, tt)
    o = mean - run.prev[pop.p]
    run.prev[pop.p] = mean
    sums[0], sums[1] = s_a + a, s_b + b
    mult = (o != 0.0).to(torch.float64)
    run.count_events(t, pop, mult)
    return _Out(mult, value=o)


def _maxpool_update(run, t, pop, proj, outs, ctr):
    """Spiking max pooling (kernels._maxpool_events / _maxpool_update): the source's member spikes add to its
    counts; each output re-sends the event its window's most active source neuron (the first on a tie: the order
    F.max_pool2d's indices keep) sent this step."""
    src = run.source(t, proj, outs)
    work, cores = proj.work(outs[proj.src].mult)  # counted when sent
    ctr[:, cores, proj.column] += work  # no weights: no synapse bytes
    b = src.mult.shape[0]
    counts = run.pooled.setdefault(pop.p, torch.zeros_like(src.mult))
    counts += src.level
    kernel, stride, padding = proj.window
    _, idx = F.max_pool2d(counts.reshape(b, *proj.src_shape), kernel, stride, padding, return_indices=True)
    c = proj.src_shape[0]
    idx = idx.reshape(b, c, -1)

    def take(x):
        return x.reshape(b, c, -1).gather(2, idx).reshape(b, -1)

    mult, level = take(src.mult), take(src.level)
    run.emit(t, pop, mult, level)
    if isinstance(src.payload, float):  # one payload: the winners' values are their levels times it
        return _Out(mult, level=level, payload=src.payload)
    return _Out(mult, value=take(src.value), level=level)


def _step(run, t, outs):
    """One time step over every population in topological order (populations 1..P-1; 0 is the input)."""
    plan = run.plan
    ctr = run.ctr[:, t]
    for pop in plan.pops[1:]:
        _count_active(run, t, pop, outs, ctr)
        if pop.model == K.MODEL_MAXPOOL:
            outs[pop.p] = _maxpool_update(run, t, pop, plan.projs[pop.incoming[0]], outs, ctr)
            continue
        cur = None
        owned = False  # cur is this step's own tensor (else a source's values or a cached static current)
        operands = {}
        for q in pop.incoming:
            proj = plan.projs[q]
            src = run.source(t, proj, outs)  # what arrives now (sent `delay` steps ago)
            recurrent = proj.src >= pop.p  # its work was counted when sent (_count_recurrent)
            sent = None if recurrent else outs[proj.src]  # sent now: its synaptic work counted now (kernels._deliver)
            same_input = proj.src == 0 and run.static_input  # the same input every step
            if proj.kind in ("matmul_a", "matmul_b"):
                operands[proj.kind] = proj.operand(src.value)
                ctr[:, proj.work_cores, proj.column] += proj.matmul_work(sent.mult)
                continue
            if same_input:  # work once per chunk
                if q not in run.static_work:
                    run.static_work[q] = proj.work(sent.mult)
                work, cores = run.static_work[q]
            elif not recurrent:
                work, cores = proj.work(sent.mult)
            static = same_input and t >= proj.delay  # and its current, once it arrives
            if proj.ordered is not None:  # the engine's sum: from the bias, term by term in its order
                if cur is None and static:  # the same every step: once per chunk
                    if q not in run.static:
                        run.static[q] = _ordered_from_bias(pop, proj, src)
                    cur = run.static[q].clone()
                elif cur is None:
                    cur = _ordered_from_bias(pop, proj, src)
                else:
                    if not owned:  # accumulated in place: never into what another projection handed over
                        cur = cur.clone()
                    proj.ordered.accumulate(cur, proj.value_in(src))
                owned = True
            else:
                if static:
                    if q not in run.static:
                        run.static[q] = proj.current(src)
                    current = run.static[q]
                else:
                    current = proj.current(src)
                # the bias first, then each projection's current, as the engine's current starts from the bias
                if cur is None:
                    cur, owned = (current + pop.bias, True) if pop.has_bias else (current, False)
                else:
                    cur, owned = cur + current, True
            if not recurrent:
                ctr[:, cores, _SYN if proj.src == 0 and run.spikes_in else proj.column] += work
                ctr[:, cores, _BYT] += work * proj.wbytes
        if cur is None:
            cur = pop.bias.expand_as(run.v[pop.p])
        model = pop.model
        if pop.reset_every and t % pop.reset_every == pop.reset_phase:  # kernels._restart
            run.v[pop.p] = pop.v_init.expand_as(run.v[pop.p]).clone()
            if model == K.MODEL_CUBA:
                run.syn[pop.p] = torch.zeros_like(run.syn[pop.p])
                run.hold[pop.p] = torch.zeros_like(run.hold[pop.p])
            elif model == K.MODEL_READOUT:
                run.acc = None  # the sum starts again from this step's current
            elif model == K.MODEL_SIGMA_DELTA:
                run.sd[pop.p] = [torch.zeros_like(a) for a in run.sd[pop.p]]
        if model in (K.MODEL_IF, K.MODEL_LIF):
            outs[pop.p] = _if_update(run, t, pop, cur)
        elif model == K.MODEL_CUBA:
            outs[pop.p] = _cuba_update(run, t, pop, cur)
        elif model == K.MODEL_SIGMA_DELTA:
            outs[pop.p] = _sigma_delta_update(run, t, pop, cur)
        elif model == K.MODEL_GROUP:
            outs[pop.p] = _group_update(run, t, pop, cur)
        elif model == K.MODEL_SIGNED:
            outs[pop.p] = _signed_update(run, t, pop, cur)
        elif model == K.MODEL_MULTI:
            outs[pop.p] = _multi_update(run, t, pop, cur)
        elif model == K.MODEL_EC:
            outs[pop.p] = _ec_update(run, t, pop, cur)
        elif model == K.MODEL_ECMM:
            m, n = pop.shape
            inner = operands["matmul_a"][0].numel() // m
            operands = {"matmul_a": operands["matmul_a"].reshape(-1, m, inner),
                        "matmul_b": operands["matmul_b"].reshape(-1, inner, n)}
            outs[pop.p] = _matmul_update(run, t, pop, operands)
        elif model == K.MODEL_READOUT:
            run.acc = cur.clone() if run.acc is None else run.acc + cur
            run.v[pop.p] = run.acc
        for q in pop.recurrent:  # kernels._count_recurrent: this step's events, counted as they are sent
            proj = plan.projs[q]
            work, cores = proj.work(outs[pop.p].mult)
            ctr[:, cores, proj.column] += work
            ctr[:, cores, _BYT] += work * proj.wbytes


def _count_active(run, t, pop, outs, ctr):
    """Count the population's active neurons of step t on its cores: those a stored synapse delivers an event to,
    or with a non-zero bias (kernels._count_active). The same input every step reaches the same neurons: its
    reach is found once per chunk."""
    reached = pop.bias_mask
    for q in pop.incoming:
        proj = run.plan.projs[q]
        if proj.src == 0 and run.static_input and t >= proj.delay:
            if q not in run.static_reach:
                run.static_reach[q] = proj.reach(run.source(t, proj, outs).mult)
            r = run.static_reach[q]
        else:
            r = proj.reach(run.source(t, proj, outs).mult)
        reached = r if reached is None else reached | r
    if reached is not None:
        active = reached.expand(ctr.shape[0], pop.n).to(torch.float64)
        ctr[:, pop.seg_cores, _ACT] += _core_sums(pop, active)


def _ordered_from_bias(pop, proj, src):
    """A population's current started from its bias and summed through an ordered projection."""
    cur = pop.bias.expand(src.mult.shape[0], pop.n).clone()
    proj.ordered.accumulate(cur, proj.value_in(src))
    return cur


def chunk_size(flat, T, device, recording, budget=None):
    """Samples per chunk: as many as `budget` bytes hold (default: half the GPU's free memory, 2 GiB on a CPU).

    Per sample: about 16 float64 values per neuron (membrane, sums, values, event counts, currents and their
    temporaries), 3 more per neuron and step of the longest delay (the outputs a delayed projection delivers
    later), plus the per-step counters, flows, raster and trace columns kept until the chunk ends."""
    n = int(flat.pops.theta.shape[0])
    longest = int(flat.projs.delay.max()) if len(flat.projs.delay) else 0
    per_step = flat.n_cores * K.N_DYNAMIC_COUNTERS + recording.n_flows + recording.n_rec + recording.n_trace
    per_sample = 8 * ((16 + 3 * min(longest, T)) * n + T * per_step)
    if budget is None:
        device = torch.device(device)
        budget = torch.cuda.mem_get_info(device)[0] // 2 if device.type == "cuda" else 2 << 30
    return int(max(1, min(budget // per_sample, 8192)))


@torch.no_grad()
def run_batch(plan, X, T, readout, recording, spikes_in=False, counts_in=False):
    """`kernels.run_batch` on torch: X (B, 1 or T steps, input size, canonical order) -> (out, ctr, counts, rec,
    trace, flows) in the engine's order; spikes_in: the input's work counts as synaptic operations; counts_in: an
    input value n is n spikes (events of multiplicity n)."""
    flat, dev = plan.flat, plan.device
    x_c = torch.as_tensor(np.ascontiguousarray(X), dtype=torch.float64).to(dev)
    b = x_c.shape[0]
    run = _Run(plan, b, T, recording)
    run.static_input, run.spikes_in = x_c.shape[1] == 1, spikes_in
    traces = []
    longest = max((proj.delay for proj in plan.projs), default=0)
    for t in range(T):
        frame = x_c[:, t if x_c.shape[1] > 1 else 0]
        outs = {0: _Out(frame if counts_in else (frame != 0.0).to(torch.float64), value=frame)}
        _step(run, t, outs)
        if longest:
            run.history[t] = outs
            run.history.pop(t - longest, None)
        if recording.n_trace:
            traces.append(_trace_columns(run))
    return _engine_outputs(run, flat, readout, recording, traces, b, T)


def _trace_columns(run):
    """Membranes of the traced neurons after this step."""
    return torch.stack([run.v[p][:, i] for p, i in run.traced], 1)


def _engine_order(tensor, pop):
    """(..., n) canonical -> engine order."""
    return tensor[..., pop.perm]


def _engine_outputs(run, flat, readout, recording, traces, b, T):
    """The six arrays `kernels.run_batch` returns, from the chunk's tensors."""
    plan = run.plan
    out = _div(_engine_order(run.acc, plan.pops[readout]), T).cpu().numpy()
    ctr = run.ctr.round().to(torch.int64).cpu().numpy()
    n_total = int(flat.pops.theta.shape[0])
    counts = np.zeros((b, n_total if recording.record_counts else 1), np.int32)
    if recording.record_counts:
        for pop in plan.pops:
            off = int(flat.pops.off[pop.p])
            counts[:, off:off + pop.n] = _engine_order(run.counts[pop.p], pop).round().to(torch.int64).cpu().numpy()
    rec = np.zeros((b, T, recording.n_rec), np.int8)
    for p, steps in run.rasters.items():
        r0 = int(recording.rec_off[p])
        rec[:, :, r0:r0 + plan.pops[p].n] = _engine_order(torch.stack(steps, 1), plan.pops[p]).cpu().numpy()
    trace = torch.stack(traces, 1).cpu().numpy() if traces else np.zeros((b, T, 0))
    flows = run.flows.round().to(torch.int64).cpu().numpy()
    return out, ctr, counts, rec, trace, flows
