"""Numba kernels of the event-driven engine; they take bundles (namedtuples) of arrays built by simulator.arrays.

Layout conventions (built by simulator.arrays):
- neurons of all populations live in one global index space; population p owns
  [off[p], off[p] + n[p]); (C, H, W) populations are stored channel-last
  (index (y*W + x)*C + c) so that a conv event updates contiguous output channels;
- an event is (local neuron index, payload value, multiplicity); a spike of an IF neuron
  carries θ; a group neuron's event carries (θ/τ)·S and, when its target expands payloads,
  multiplicity S (S member spikes, S times the synaptic work); an analog input carries its
  value (and its synaptic work is counted as MACs);
- per (sample, step, core) dynamic counters, indexed by the C_* constants: a packet counts on the core sending it
  (C_PACKETS) and on the one receiving it (C_PACKETS_IN); C_ACTIVE counts the neurons with input this step (a
  stored synapse delivered an event to them, whatever its weight) or a non-zero bias, which a chip updates, where
  every mapped neuron is accessed (the static neuron_updates counter).
The engine accumulates membrane and currents in float64: results do not depend
on summation order, hence not on the thread count either.
"""
import math
from collections import namedtuple

import numpy as np
from numba import njit, prange

from . import ecmath

KIND_DENSE, KIND_SPARSE, KIND_CONV, KIND_MM_A, KIND_MM_B, KIND_POINTWISE, KIND_MAXPOOL = 0, 1, 2, 3, 4, 5, 6
MODEL_INPUT, MODEL_IF, MODEL_READOUT, MODEL_GROUP, MODEL_SIGNED = 0, 1, 2, 3, 4
MODEL_MULTI, MODEL_EC, MODEL_ECMM, MODEL_LIF, MODEL_MAXPOOL, MODEL_CUBA, MODEL_SIGMA_DELTA = 5, 6, 7, 8, 9, 10, 11
# pop_flags bits of if / lif / cuba populations: a spike carries 1 instead of θ; fire on m > θ instead of m >= θ;
# (cuba) the membrane reads last step's synaptic current, then the current takes this step's input; (cuba) Loihi's
# 24-bit integer arithmetic (network.ARITHMETICS "loihi")
FLAG_UNIT_SPIKE, FLAG_STRICT_TEST, FLAG_MEMBRANE_FIRST, FLAG_LOIHI = 1, 2, 4, 8
# sigma_delta populations: the activation is the step's input (delta_input); the input wraps at 24 bits (input_wrap)
FLAG_DELTA_INPUT, FLAG_WRAP24 = 16, 32
# if / lif populations: floor(m / θ) spikes a step (sinabs's MultiSpike); the membrane kept at or above -θ
FLAG_MULTI_SPIKE, FLAG_FLOOR_NEG_THETA = 64, 128
LOIHI_STATE = 8388608.0  # 2^23: Loihi's 24-bit current wraps to (-2^23, 2^23], its membrane saturates at 2^23 - 1
EC_GELU, EC_LAYERNORM, EC_SOFTMAX, EC_IDENTITY = 0, 1, 2, 3
RESET_SUBTRACT, RESET_ZERO, RESET_NONE = 0, 1, 2
C_SYNOPS, C_MACS, C_SPIKES, C_PACKETS, C_HOPS, C_SYN_BYTES, C_PACKETS_IN, C_ACTIVE = 0, 1, 2, 3, 4, 5, 6, 7
C_CHIP_PACKETS, C_CHIP_HOPS = 8, 9  # packets that leave their chip; chip-to-chip links they cross
N_DYNAMIC_COUNTERS = 10
# geometry columns of a conv projection
G_CIN, G_H, G_W, G_COUT, G_HO, G_WO, G_KH, G_KW, G_SH, G_SW, G_PH, G_PW, G_GROUPS = range(13)

# Bundles the kernels take (numba passes a namedtuple of arrays as one argument). Kernels copy the fields they use
# into locals before their loops: a field read inside a hot loop measurably slowed the neuron updates.
# Per population p (0 is the input), int64 unless noted: neurons [off[p], off[p] + n[p]); model / reset / flags
# (FLAG_*) / func (EC_*, -1) codes; tau: the model's size parameter (τ, levels, last dimension); expand: payloads
# expanded (0/1); alpha, vmax, eps: float64; aux[p]..aux[p + 1]: an ec_matmul node's operand state, a maxpool
# population's spike counts of its source neurons; incoming
# projections in_proj[in_ptr[p]:in_ptr[p + 1]], its recurrent outgoing ones (onto itself or an earlier population)
# back_proj[back_ptr[p]:back_ptr[p + 1]]; refractory: cuba's hold steps; reset_every / reset_phase: the steps at
# whose start a cuba / sigma_delta / readout population's state restarts (network.Population). Per neuron,
# float64: theta, theta_neg, v_init, bias, decay, syn_decay (cuba's synaptic current factor).
# Delayed projections: a source whose events are delivered up to D steps later keeps hlen[p] = D + 1 steps of
# them (0: none), step t's in the event arrays from hoff[p] + (t mod hlen[p])·n[p], their number in
# hist_n[hslot[p] + t mod hlen[p]]; hoff / hslot have one entry more (the end: the event arrays' length).
Populations = namedtuple("Populations", ("off", "n", "model", "reset", "tau", "expand", "alpha", "vmax", "flags",
                                         "func", "eps", "aux", "in_ptr", "in_proj", "back_ptr", "back_proj",
                                         "refractory", "reset_every", "reset_phase", "theta", "theta_neg", "v_init",
                                         "bias", "decay", "syn_decay",
                                         "hlen", "hoff", "hslot"))
# Per projection q, int64: kind (KIND_*), source population, target neuron offset and size, offsets into
# weights / indptr / indices, geom (q, 13) (G_* columns; (d_in, d_out) pointwise; matmul operand shape), mac
# (analog work is counted as MACs), weight bytes per synapse, delay (steps). weights float32, indptr int64,
# indices uint32.
Projections = namedtuple("Projections", ("kind", "src", "tgt_off", "tgt_n", "woff", "ioff", "xoff", "geom", "mac",
                                         "wbytes", "delay", "weights", "indptr", "indices"))
# Per neuron: core_of (int32), packets per event (int32) and their hops on chips' meshes (int64), those of them
# to another chip (int32) and the chip-to-chip links they cross (int64). Per projection q, the
# target cores of source row e: rc_core[rc_ptr[rc_off[q] + e]:rc_ptr[rc_off[q] + e + 1]] with synapse counts
# rc_cnt. Flows a neuron's packets take: fl_id[fl_ptr[i]:fl_ptr[i + 1]], flow k from core flow_src[k] to
# flow_dst[k] (one packet per flow and event: the receiving core's packets_in counter; recorded per flow only
# when the Outputs' flows array has a column per flow).
Routing = namedtuple("Routing", ("core_of", "n_packets", "n_hops", "n_chip_packets", "n_chip_hops", "rc_off",
                                 "rc_ptr", "rc_core", "rc_cnt", "fl_ptr", "fl_id", "flow_src", "flow_dst"))
# What one run keeps (built by simulator.engine.run): raster column of population p's first neuron rec_off[p]
# (-1: not recorded); traced neurons tr_idx[tr_ptr[p]:tr_ptr[p + 1]]; raster, trace and flow widths (int);
# record_counts (bool): count spikes per neuron.
Recording = namedtuple("Recording", ("rec_off", "tr_ptr", "tr_idx", "n_rec", "n_trace", "n_flows",
                                     "record_counts"))
# One sample's results: out: readout mean over T (engine order); ctr: (T, cores, N_DYNAMIC_COUNTERS) int64;
# counts: spikes per neuron (if record_counts); rec: (T, recorded neurons) int8 spike raster (member spikes of a
# group neuron, -1 for a negative spike, ±2^k for a multi-threshold level); trace: (T, traced neurons) membrane
# after update; flows: (T, flows) int64 packets per core-to-core flow.
Outputs = namedtuple("Outputs", ("out", "ctr", "counts", "rec", "trace", "flows"))
# One sample's working state: v: membranes, the running input sum S(t) of EC nodes; prev: EC nodes'
# (t-1)·F(S(t-1)/(t-1)), ec_matmul nodes' S_K(t-1)/(t-1), cuba neurons' synaptic current; hold: the steps a cuba
# neuron's membrane is still held after its last spike; aux: ec_matmul operands; cur: this step's input
# currents; the events population p queued: ev_idx / ev_val / ev_mult / ev_rec[off[p]:off[p] + ev_n[p]] (local
# neuron, payload, multiplicity, what counts / rasters record), past steps' events after them (Populations: hoff),
# hist_n their numbers; acc: readout sums; reached: t + 1 where a stored synapse delivered an event to the neuron in
# step t (the neurons with input, counted as active).
State = namedtuple("State", ("v", "prev", "hold", "aux", "cur", "ev_idx", "ev_val", "ev_mult", "ev_rec", "ev_n",
                             "hist_n", "acc", "reached"))


@njit(cache=True)
def _conv_events(cur, tgt_off, weights, w_off, geom, ev_idx, ev_val, k0, k1):
    """Deliver events k0..k1 through a shared-kernel convolution (channel-last populations).

    An event at input (y, x, c) reaches output (oy, ox) through tap ky when oy·stride = y + pad - ky;
    the valid taps are found once per event, then each tap updates C_out/groups contiguous outputs.
    """
    cin = geom[G_CIN]
    w = geom[G_W]
    cout = geom[G_COUT]
    ho = geom[G_HO]
    wo = geom[G_WO]
    kh = geom[G_KH]
    kw = geom[G_KW]
    sh = geom[G_SH]
    sw = geom[G_SW]
    ph = geom[G_PH]
    pw = geom[G_PW]
    cin_g = cin // geom[G_GROUPS]
    cout_g = cout // geom[G_GROUPS]
    for k in range(k0, k1):
        e = ev_idx[k]
        val = ev_val[k]
        pos = e // cin
        c = e - pos * cin
        y = pos // w
        x = pos - y * w
        g = c // cin_g
        wg = ((g * cin_g + (c - g * cin_g)) * kh) * kw * cout_g
        ty0 = y + ph
        tx0 = x + pw
        # first tap with (y + pad - ky) divisible by the stride and the output row inside the map
        ky = ty0 % sh
        oy = ty0 // sh
        while oy >= ho:
            ky += sh
            oy -= 1
        kx_first = tx0 % sw
        ox_first = tx0 // sw
        while ox_first >= wo:
            kx_first += sw
            ox_first -= 1
        while ky < kh and oy >= 0:
            kx = kx_first
            ox = ox_first
            row_t = tgt_off + oy * wo * cout + g * cout_g
            row_w = w_off + wg + ky * kw * cout_g
            while kx < kw and ox >= 0:
                # slice views indexed by the loop counter alone let LLVM vectorize this loop
                out = cur[row_t + ox * cout:row_t + ox * cout + cout_g]
                wrow = weights[row_w + kx * cout_g:row_w + (kx + 1) * cout_g]
                for o in range(cout_g):
                    out[o] += wrow[o] * val
                kx += sw
                ox -= 1
            ky += sh
            oy -= 1


@njit(cache=True)
def _maxpool_events(cur, tgt_off, geom, aux, base, ev_idx, ev_rec, k0, k1):
    """Spiking max pooling, delivery: add the events' member spikes to their neurons' counts (aux[base + e]),
    then for every window an event's neuron lies in, mark the event (k + 1 in cur) if that neuron is the window's
    winner: the most spikes so far, the first in (ky, kx) order on a tie (channel-last populations)."""
    c = geom[G_CIN]
    h = geom[G_H]
    w = geom[G_W]
    ho = geom[G_HO]
    wo = geom[G_WO]
    kh = geom[G_KH]
    kw = geom[G_KW]
    sh = geom[G_SH]
    sw = geom[G_SW]
    ph = geom[G_PH]
    pw = geom[G_PW]
    for k in range(k0, k1):
        aux[base + ev_idx[k]] += ev_rec[k]
    for k in range(k0, k1):
        e = ev_idx[k]
        pos = e // c
        ch = e - pos * c
        y = pos // w
        x = pos - y * w
        for ky in range(kh):
            ty = y + ph - ky
            if ty < 0 or ty % sh != 0 or ty // sh >= ho:
                continue
            oy = ty // sh
            for kx in range(kw):
                tx = x + pw - kx
                if tx < 0 or tx % sw != 0 or tx // sw >= wo:
                    continue
                ox = tx // sw
                best = -1.0
                winner = -1
                for wy in range(kh):
                    sy = oy * sh - ph + wy
                    if sy < 0 or sy >= h:
                        continue
                    for wx in range(kw):
                        sx = ox * sw - pw + wx
                        if sx < 0 or sx >= w:
                            continue
                        j = (sy * w + sx) * c + ch
                        if aux[base + j] > best:
                            best = aux[base + j]
                            winner = j
                if winner == e:
                    cur[tgt_off + (oy * wo + ox) * c + ch] = k + 1.0


@njit(cache=True)
def _maxpool_update(p, pops, s):
    """Spiking max pooling, firing: a neuron whose window's winner fired this step re-sends that event (payload,
    multiplicity and member spikes unchanged)."""
    off = pops.off[p]
    cur = s.cur
    ev_idx, ev_val, ev_mult, ev_rec = s.ev_idx, s.ev_val, s.ev_mult, s.ev_rec
    m_ev = 0
    for i in range(off, off + pops.n[p]):
        if cur[i] > 0.0:
            k = int(cur[i]) - 1
            m_ev = _queue(ev_idx, ev_val, ev_mult, ev_rec, off, m_ev, i, ev_val[k], ev_mult[k], ev_rec[k])
    s.ev_n[p] = m_ev


@njit(cache=True)
def _dense_events(cur, tgt_off, n_t, weights, w_off, ev_idx, ev_val, k0, k1):
    """Deliver events k0..k1 through a dense matrix: one contiguous row of n_t weights per source neuron."""
    out = cur[tgt_off:tgt_off + n_t]
    for k in range(k0, k1):
        w0 = w_off + ev_idx[k] * n_t
        wrow = weights[w0:w0 + n_t]
        val = ev_val[k]
        for j in range(n_t):
            out[j] += wrow[j] * val


@njit(cache=True)
def _pointwise_events(cur, tgt_off, weights, w_off, indptr, i_off, indices, x_off, d_in, d_out, ev_idx, ev_val,
                      k0, k1):
    """Token-wise linear map: source neuron (row r, channel c) adds its column c's nonzero weights to target
    row r (the per-channel lists are stored once, like a CSR over the d_in channels)."""
    for k in range(k0, k1):
        e = ev_idx[k]
        r = e // d_in
        c = e - r * d_in
        val = ev_val[k]
        out = cur[tgt_off + r * d_out:]
        j0 = indptr[i_off + c]
        j1 = indptr[i_off + c + 1]
        idx = indices[x_off + j0:x_off + j1]
        wrow = weights[w_off + j0:w_off + j1]
        for j in range(j1 - j0):
            out[idx[j]] += wrow[j] * val


@njit(cache=True)
def _sparse_events(cur, tgt_off, weights, w_off, indptr, i_off, indices, x_off, ev_idx, ev_val, k0, k1):
    """Deliver events k0..k1 through a CSR matrix: each source row lists its targets and weights."""
    out = cur[tgt_off:]
    for k in range(k0, k1):
        e = ev_idx[k]
        val = ev_val[k]
        j0 = indptr[i_off + e]
        j1 = indptr[i_off + e + 1]
        idx = indices[x_off + j0:x_off + j1]  # unsigned: no negative-index wraparound code
        wrow = weights[w_off + j0:w_off + j1]
        for j in range(j1 - j0):
            out[idx[j]] += wrow[j] * val


@njit(cache=True, parallel=True)
def run_batch(X, T, n_cores, readout, pops, projs, routing, recording):
    """Run every sample of X (B, steps, input size, engine order) independently, samples in parallel; steps is 1
    (the same input every step) or T (one input frame per step).

    Returns the Outputs fields (out, ctr, counts, rec, trace, flows), each with a leading batch axis.
    """
    B = X.shape[0]
    n_total = pops.theta.shape[0]
    ctr = np.zeros((B, T, n_cores, N_DYNAMIC_COUNTERS), np.int64)
    out = np.zeros((B, pops.n[readout]))
    counts = np.zeros((B, n_total if recording.record_counts else 1), np.int32)
    rec = np.zeros((B, T, recording.n_rec), np.int8)
    trace = np.zeros((B, T, recording.n_trace))
    flows = np.zeros((B, T, recording.n_flows), np.int64)
    for b in prange(B):
        run_sample(X[b], T, readout, pops, projs, routing, recording,
                   Outputs(out[b], ctr[b], counts[b], rec[b], trace[b], flows[b]))
    return out, ctr, counts, rec, trace, flows


@njit(cache=True)
def run_sample(x, T, readout, pops, projs, routing, recording, o):
    """Run one sample (x: (1 or T, input size) input values, engine order) for T steps, filling its Outputs o."""
    s = _new_state(pops, readout)
    _input_events(x[0], pops, s)
    for t in range(T):
        if t > 0 and x.shape[0] > 1:  # one input frame per step
            _input_events(x[t], pops, s)
        _keep_events(0, t, pops, s)
        for p in range(1, pops.off.shape[0]):
            _input_currents(p, t, pops, projs, routing, s, o.ctr)
            _count_active(p, t, pops, routing.core_of, s.reached, o.ctr)
            _update(p, t, pops, routing, recording, s, o)
            _keep_events(p, t, pops, s)
            _count_recurrent(p, t, pops, projs, routing, s, o.ctr)
            _record_trace(p, t, recording, s.v, o.trace)
    acc = s.acc
    out = o.out
    for i in range(acc.shape[0]):
        out[i] = acc[i] / T


@njit(cache=True)
def _new_state(pops, readout):
    """A sample's fresh State: membranes at v_init, sums and currents zero, no events queued (ev_mult one)."""
    n_total = pops.theta.shape[0]
    n_pops = pops.off.shape[0]
    n_ev = pops.hoff[n_pops]  # this step's events, then the kept past steps'
    n_hold = n_total if (pops.model == MODEL_CUBA).any() else 1  # only cuba neurons are held
    return State(pops.v_init.copy(), np.zeros(n_total), np.zeros(n_hold, np.int64),
                 np.zeros(max(pops.aux[n_pops], 1)), np.zeros(n_total),
                 np.empty(n_ev, np.int64), np.empty(n_ev), np.ones(n_ev, np.int64),
                 np.empty(n_ev, np.int64), np.zeros(n_pops, np.int64), np.zeros(max(pops.hslot[n_pops], 1), np.int64),
                 np.zeros(pops.n[readout]), np.zeros(n_total, np.int64))


@njit(cache=True)
def _keep_events(p, t, pops, s):
    """Copy population p's events of step t into its history slot, for projections that deliver them later."""
    hlen = pops.hlen[p]
    if hlen == 0:
        return
    slot = t % hlen
    src = pops.off[p]
    dst = pops.hoff[p] + slot * pops.n[p]
    m = s.ev_n[p]
    s.ev_idx[dst:dst + m] = s.ev_idx[src:src + m]
    s.ev_val[dst:dst + m] = s.ev_val[src:src + m]
    s.ev_mult[dst:dst + m] = s.ev_mult[src:src + m]
    s.ev_rec[dst:dst + m] = s.ev_rec[src:src + m]
    s.hist_n[pops.hslot[p] + slot] = m


@njit(cache=True)
def _input_events(x, pops, s):
    """Queue the nonzero input values as the input population's events (once when the input is the same every
    step, else each step). With expand[0] set the values are spike counts: a count n is one event of value n and
    multiplicity n (n x weight delivered, n synaptic operations per synapse), as a group neuron's expanded event."""
    off = pops.off[0]
    ev_idx = s.ev_idx
    ev_val = s.ev_val
    ev_mult = s.ev_mult
    counts = pops.expand[0] != 0
    n_in = 0
    for i in range(pops.n[0]):
        if x[i] != 0.0:
            ev_idx[off + n_in] = i
            ev_val[off + n_in] = x[i]
            ev_mult[off + n_in] = int(x[i]) if counts else 1
            n_in += 1
    s.ev_n[0] = n_in


@njit(cache=True)
def _input_currents(p, t, pops, projs, routing, s, ctr):
    """Set population p's input currents of step t: its bias plus the queued events of every incoming projection."""
    cur = s.cur
    bias = pops.bias
    off = pops.off[p]
    for i in range(off, off + pops.n[p]):
        cur[i] = bias[i]
    for j in range(pops.in_ptr[p], pops.in_ptr[p + 1]):
        _deliver(p, pops.in_proj[j], t, pops, projs, routing, s, ctr)


@njit(cache=True)
def _count_recurrent(p, t, pops, projs, routing, s, ctr):
    """Count the synaptic work of population p's events of step t through its recurrent projections, in the step
    they are sent as for any delayed projection (delivered later, by _deliver, which does not count them)."""
    s0 = pops.off[p]
    for j in range(pops.back_ptr[p], pops.back_ptr[p + 1]):
        q = pops.back_proj[j]
        _count_synapses(t, routing.rc_off[q], projs.wbytes[q], C_MACS if projs.mac[q] else C_SYNOPS, s0,
                        s0 + s.ev_n[p], s, routing, ctr)


@njit(cache=True)
def _deliver(p, q, t, pops, projs, routing, s, ctr):
    """Deliver the source's events through projection q into population p: this step's, or those of step t - delay
    (none before the first delay steps). Their synaptic work is counted in the step they are sent (this step's
    events; a chip's synapse unit processes a spike as it arrives, into the accumulator of its delivery step), so
    events still on their way after the last step are counted too."""
    src = projs.src[q]
    d = projs.delay[q]
    s0 = pops.off[src]  # this step's events: the ones counted
    s1 = s0 + s.ev_n[src]
    if d == 0:
        k0, k1 = s0, s1
    elif t < d:
        k0, k1 = s0, s0
    else:
        slot = (t - d) % pops.hlen[src]
        k0 = pops.hoff[src] + slot * pops.n[src]
        k1 = k0 + s.hist_n[pops.hslot[src] + slot]
    ctr_kind = C_MACS if projs.mac[q] else C_SYNOPS
    kind = projs.kind[q]
    cur = s.cur
    ev_idx = s.ev_idx
    ev_val = s.ev_val
    weights = projs.weights
    tgt_off = projs.tgt_off[q]
    w_off = projs.woff[q]
    if kind == KIND_MM_A or kind == KIND_MM_B:
        _matmul_operand(kind, s.aux, pops.aux[p], projs.geom[q], ev_idx, ev_val, k0, k1, ctr, t,
                        routing.core_of, tgt_off, ctr_kind, s0, s1)
    elif kind == KIND_MAXPOOL:
        _maxpool_events(cur, tgt_off, projs.geom[q], s.aux, pops.aux[p], ev_idx, s.ev_rec, k0, k1)
    elif kind == KIND_DENSE:
        _dense_events(cur, tgt_off, projs.tgt_n[q], weights, w_off, ev_idx, ev_val, k0, k1)
    elif kind == KIND_SPARSE:
        _sparse_events(cur, tgt_off, weights, w_off, projs.indptr, projs.ioff[q], projs.indices, projs.xoff[q],
                       ev_idx, ev_val, k0, k1)
    elif kind == KIND_POINTWISE:
        geom = projs.geom[q]
        _pointwise_events(cur, tgt_off, weights, w_off, projs.indptr, projs.ioff[q], projs.indices, projs.xoff[q],
                          geom[0], geom[1], ev_idx, ev_val, k0, k1)
    else:
        _conv_events(cur, tgt_off, weights, w_off, projs.geom[q], ev_idx, ev_val, k0, k1)
    _mark_reached(q, t, projs, s.reached, ev_idx, k0, k1)
    if src < p:  # a recurrent projection's events were counted when sent (_count_recurrent)
        _count_synapses(t, routing.rc_off[q], projs.wbytes[q], ctr_kind, s0, s1, s, routing, ctr)


@njit(cache=True)
def _mark_reached(q, t, projs, reached, ev_idx, k0, k1):
    """Stamp t + 1 on every target neuron a stored synapse of projection q delivers one of events k0..k1 to (any
    weight, zero included): the neurons with input this step. Dense targets are all reached by any event; an
    ec_matmul's products by the events of their row of A (i, k: row i) or column of B (k, j: column j); sparse and
    pointwise ones by their rows' stored entries; convolutions (and pooling) by the taps inside the map, every
    output channel of the event's group (max pooling: its own channel)."""
    if k1 <= k0:
        return
    kind = projs.kind[q]
    tgt_off = projs.tgt_off[q]
    stamp = t + 1
    if kind == KIND_DENSE:
        reached[tgt_off:tgt_off + projs.tgt_n[q]] = stamp
        return
    if kind == KIND_MM_A or kind == KIND_MM_B:
        geom = projs.geom[q]
        for k in range(k0, k1):
            first, stride, count = _operand_line(kind, _operand_element(ev_idx[k], geom), geom)
            for j in range(count):
                reached[tgt_off + first + j * stride] = stamp
        return
    indptr = projs.indptr
    indices = projs.indices
    i_off = projs.ioff[q]
    x_off = projs.xoff[q]
    geom = projs.geom[q]
    if kind == KIND_SPARSE:
        for k in range(k0, k1):
            e = ev_idx[k]
            for j in range(indptr[i_off + e], indptr[i_off + e + 1]):
                reached[tgt_off + indices[x_off + j]] = stamp
        return
    if kind == KIND_POINTWISE:
        d_in = geom[0]
        d_out = geom[1]
        for k in range(k0, k1):
            e = ev_idx[k]
            r = e // d_in
            c = e - r * d_in
            for j in range(indptr[i_off + c], indptr[i_off + c + 1]):
                reached[tgt_off + r * d_out + indices[x_off + j]] = stamp
        return
    pool = kind == KIND_MAXPOOL
    cin = geom[G_CIN]
    w = geom[G_W]
    cout = cin if pool else geom[G_COUT]
    ho = geom[G_HO]
    wo = geom[G_WO]
    kh = geom[G_KH]
    kw = geom[G_KW]
    sh = geom[G_SH]
    sw = geom[G_SW]
    ph = geom[G_PH]
    pw = geom[G_PW]
    groups = cin if pool else geom[G_GROUPS]
    cin_g = cin // groups
    cout_g = cout // groups
    last = -1  # events are in engine order (channel-last): those of one input position and group mark alike
    for k in range(k0, k1):
        e = ev_idx[k]
        pos = e // cin
        c = e - pos * cin
        key = pos * groups + c // cin_g
        if key == last:
            continue
        last = key
        y = pos // w
        x = pos - y * w
        c0 = (c // cin_g) * cout_g
        for ky in range(kh):
            ty = y + ph - ky
            if ty < 0 or ty % sh != 0 or ty // sh >= ho:
                continue
            for kx in range(kw):
                tx = x + pw - kx
                if tx < 0 or tx % sw != 0 or tx // sw >= wo:
                    continue
                base = tgt_off + ((ty // sh) * wo + tx // sw) * cout + c0
                reached[base:base + cout_g] = stamp


@njit(cache=True)
def _count_active(p, t, pops, core_of, reached, ctr):
    """Count population p's active neurons of step t on their cores: reached by an event, or with a bias."""
    bias = pops.bias
    stamp = t + 1
    for i in range(pops.off[p], pops.off[p] + pops.n[p]):
        if reached[i] == stamp or bias[i] != 0.0:
            ctr[t, core_of[i], C_ACTIVE] += 1


@njit(cache=True)
def _count_synapses(t, r0, wb, ctr_kind, k0, k1, s, routing, ctr):
    """Count events k0..k1's synaptic operations (or MACs) and weight bytes on each target core (row-core table
    from r0): per core, not per synapse, so counting costs far less than delivering."""
    ev_idx = s.ev_idx
    ev_mult = s.ev_mult
    rc_ptr = routing.rc_ptr
    rc_core = routing.rc_core
    rc_cnt = routing.rc_cnt
    for k in range(k0, k1):
        e = ev_idx[k]
        mult = ev_mult[k]
        for r in range(rc_ptr[r0 + e], rc_ptr[r0 + e + 1]):
            c = rc_core[r]
            ctr[t, c, ctr_kind] += rc_cnt[r] * mult
            ctr[t, c, C_SYN_BYTES] += rc_cnt[r] * wb * mult


@njit(cache=True)
def _restart(p, model, pops, s):
    """Population p's state as at the start of a run: membranes v_init, a cuba's currents and holds 0, a sigma-delta
    neuron's last activation and residue 0, a readout's sums 0 (Lava's LIFReset, at the steps reset_every /
    reset_phase say)."""
    off = pops.off[p]
    for i in range(off, off + pops.n[p]):
        s.v[i] = pops.v_init[i]
        if model == MODEL_CUBA:
            s.prev[i] = 0.0
            s.hold[i] = 0
        elif model == MODEL_READOUT:
            s.acc[i - off] = 0.0
    if model == MODEL_SIGMA_DELTA:  # its activation and residue
        for k in range(pops.aux[p], pops.aux[p + 1]):
            s.aux[k] = 0.0


@njit(cache=True)
def _update(p, t, pops, routing, recording, s, o):
    """Update population p's neurons from this step's currents by its model, then count the events they queued."""
    model = pops.model[p]
    every = pops.reset_every[p]
    if every > 0 and t % every == pops.reset_phase[p]:
        _restart(p, model, pops, s)
    if model == MODEL_IF or model == MODEL_LIF:
        _if_update(p, pops, s)
    elif model == MODEL_CUBA:
        _cuba_update(p, pops, s)
    elif model == MODEL_SIGMA_DELTA:
        _sigma_delta_update(p, pops, s)
    elif model == MODEL_GROUP:
        _group_update(p, pops, s)
    elif model == MODEL_SIGNED:
        _signed_update(p, pops, s)
    elif model == MODEL_MULTI:
        _multi_update(p, pops, s)
    elif model == MODEL_ECMM:
        _matmul_update(p, t, pops, s)
    elif model == MODEL_EC:
        _ec_update(p, t, pops, routing.core_of, s, o.ctr)
    elif model == MODEL_READOUT:
        _readout_update(p, pops, s)
    elif model == MODEL_MAXPOOL:
        _maxpool_update(p, pops, s)
    _count_events(p, t, model == MODEL_EC or model == MODEL_ECMM, pops, routing, recording, s, o)


@njit(cache=True)
def _record_trace(p, t, recording, v, trace):
    """Keep the membranes of population p's traced neurons after its update of step t."""
    tr_idx = recording.tr_idx
    for k in range(recording.tr_ptr[p], recording.tr_ptr[p + 1]):
        trace[t, k] = v[tr_idx[k]]


@njit(cache=True, inline="always")
def _integrate(v, current, vmax):
    """m = v + I. Fixed point (vmax > 0): the step's input is rounded to an integer (half up) and the membrane
    saturates at [-vmax - 1, vmax], a (membrane_bits)-bit two's-complement register."""
    if vmax == 0.0:
        return v + current
    m = v + np.floor(current + 0.5)
    return min(max(m, -vmax - 1.0), vmax)


@njit(cache=True)
def _count_events(p, t, analog, pops, routing, recording, s, o):
    """Count population p's queued events of step t: packets, hops and flows; for spikes also the spikes (times
    their multiplicity), per-neuron counts and raster entries. Apart from the neuron loops, so that these touch
    only membranes and the queue."""
    off = pops.off[p]
    rec0 = recording.rec_off[p]
    record_counts = recording.record_counts
    ev_idx = s.ev_idx
    ev_mult = s.ev_mult
    ev_rec = s.ev_rec
    ctr = o.ctr
    counts = o.counts
    rec = o.rec
    flows = o.flows
    core_of = routing.core_of
    n_packets = routing.n_packets
    n_hops = routing.n_hops
    n_chip = routing.n_chip_packets
    n_chip_hops = routing.n_chip_hops
    fl_ptr = routing.fl_ptr
    fl_id = routing.fl_id
    flow_dst = routing.flow_dst
    for k in range(off, off + s.ev_n[p]):
        i = off + ev_idx[k]
        if analog:  # a compute node's value: packets and hops count, spikes do not
            _count_packets(t, i, 1, ctr, flows, core_of, n_packets, n_hops, n_chip, n_chip_hops, fl_ptr, fl_id,
                           flow_dst)
            continue
        mult = ev_mult[k]
        ctr[t, core_of[i], C_SPIKES] += mult
        _count_packets(t, i, mult, ctr, flows, core_of, n_packets, n_hops, n_chip, n_chip_hops, fl_ptr, fl_id,
                       flow_dst)
        if record_counts:
            counts[i] += ev_rec[k]
        if rec0 >= 0:
            rec[t, rec0 + i - off] = ev_rec[k]


@njit(cache=True, inline="always")
def _count_packets(t, i, mult, ctr, flows, core_of, n_packets, n_hops, n_chip, n_chip_hops, fl_ptr, fl_id,
                   flow_dst):
    """Count the packets and hops (on chips, between chips) of `mult` events of neuron i on its core, each packet
    on the core receiving it, and (when flows are recorded) on its core-to-core flow."""
    c = core_of[i]
    ctr[t, c, C_PACKETS] += n_packets[i] * mult
    ctr[t, c, C_HOPS] += n_hops[i] * mult
    ctr[t, c, C_CHIP_PACKETS] += n_chip[i] * mult
    ctr[t, c, C_CHIP_HOPS] += n_chip_hops[i] * mult
    record = flows.shape[1] > 0
    for k in range(fl_ptr[i], fl_ptr[i + 1]):
        f = fl_id[k]
        ctr[t, flow_dst[f], C_PACKETS_IN] += mult
        if record:
            flows[t, f] += mult


@njit(cache=True, inline="always")
def _queue(ev_idx, ev_val, ev_mult, ev_rec, off, m_ev, i, val, mult, sv):
    """Queue neuron i's event: payload val, delivered mult times; sv is what counts/rasters record.

    Returns the population's new event count.
    """
    ev_idx[off + m_ev] = i - off
    ev_val[off + m_ev] = val
    ev_mult[off + m_ev] = mult
    ev_rec[off + m_ev] = sv
    return m_ev + 1


@njit(cache=True, inline="always")
def _queue_value(ev_idx, ev_val, off, m_ev, i, val):
    """Queue a compute node's analog output val of neuron i. Returns the population's new event count."""
    ev_idx[off + m_ev] = i - off
    ev_val[off + m_ev] = val
    return m_ev + 1


@njit(cache=True, inline="always")
def _after_spike(m, theta, reset):
    """The membrane after a spike at m: m - θ (subtract), 0 (zero) or m (none)."""
    if reset == RESET_SUBTRACT:
        return m - theta
    if reset == RESET_ZERO:
        return 0.0
    return m


@njit(cache=True)
def _if_update(p, pops, s):
    """IF / LIF neurons: m = v·decay (LIF) + I; a spike (θ, or 1 for unit spikes) when m reaches θ, then reset."""
    off = pops.off[p]
    n = pops.n[p]
    reset = pops.reset[p]
    vmax = pops.vmax[p]
    leaky = pops.model[p] == MODEL_LIF
    unit = vmax != 0.0 or (pops.flags[p] & FLAG_UNIT_SPIKE) != 0
    strict = (pops.flags[p] & FLAG_STRICT_TEST) != 0
    multi = (pops.flags[p] & FLAG_MULTI_SPIKE) != 0
    floor_neg = (pops.flags[p] & FLAG_FLOOR_NEG_THETA) != 0
    v = s.v
    cur = s.cur
    theta = pops.theta
    decay = pops.decay
    ev_idx, ev_val, ev_mult, ev_rec = s.ev_idx, s.ev_val, s.ev_mult, s.ev_rec
    m_ev = 0
    for i in range(off, off + n):
        m = _integrate(v[i] * decay[i] if leaky else v[i], cur[i], vmax)
        if m > theta[i] or (m == theta[i] and not strict):
            k = int(np.floor(m / theta[i])) if multi else 1  # spikes this step (sinabs's MultiSpike: as many as fit)
            v[i] = m - k * theta[i] if reset == RESET_SUBTRACT else _after_spike(m, theta[i], reset)
            # one event of k spikes: it carries their summed value and counts as k (as a group neuron's count)
            m_ev = _queue(ev_idx, ev_val, ev_mult, ev_rec, off, m_ev, i, k * (1.0 if unit else theta[i]), k, k)
        else:
            v[i] = m
        if floor_neg and v[i] < -theta[i]:
            v[i] = -theta[i]
    s.ev_n[p] = m_ev


@njit(cache=True)
def _cuba_update(p, pops, s):
    """Current-based LIF neurons: i = α·i + I, m = β·v + i (membrane first: m = β·v + i, then i = α·i + I); a
    spike (θ, or 1) when m reaches θ, then reset, and the membrane held for `refractory` steps (no input, no spike)."""
    off = pops.off[p]
    n = pops.n[p]
    reset = pops.reset[p]
    refractory = pops.refractory[p]
    unit = (pops.flags[p] & FLAG_UNIT_SPIKE) != 0
    strict = (pops.flags[p] & FLAG_STRICT_TEST) != 0
    membrane_first = (pops.flags[p] & FLAG_MEMBRANE_FIRST) != 0
    loihi = (pops.flags[p] & FLAG_LOIHI) != 0
    v = s.v
    syn = s.prev
    hold = s.hold
    cur = s.cur
    theta = pops.theta
    bias = pops.bias
    decay = pops.decay
    syn_decay = pops.syn_decay
    ev_idx, ev_val, ev_mult, ev_rec = s.ev_idx, s.ev_val, s.ev_mult, s.ev_rec
    m_ev = 0
    for i in range(off, off + n):
        if loihi:
            m = _loihi_cuba(i, v, syn, cur, bias, decay, syn_decay)
        elif membrane_first:
            m = v[i] * decay[i] + syn[i]
            syn[i] = syn[i] * syn_decay[i] + cur[i]
        else:
            syn[i] = syn[i] * syn_decay[i] + cur[i]
            m = v[i] * decay[i] + syn[i]
        if hold[i] > 0:
            hold[i] -= 1
            continue
        if m > theta[i] or (m == theta[i] and not strict):
            v[i] = _after_spike(m, theta[i], reset)
            hold[i] = refractory
            m_ev = _queue(ev_idx, ev_val, ev_mult, ev_rec, off, m_ev, i, 1.0 if unit else theta[i], 1, 1)
        else:
            v[i] = m
    s.ev_n[p] = m_ev


@njit(cache=True)
def _loihi_cuba(i, v, syn, cur, bias, decay, syn_decay):
    """Neuron i of a cuba population in Loihi's arithmetic (Lava's bit-accurate LIF): the current decays and is
    truncated toward zero, takes the step's synaptic input (cur less the bias) and wraps into (-2^23, 2^23]; the
    membrane decays and truncates likewise, takes the current and the bias and saturates at ±(2^23 - 1). Every
    value is an integer held exactly in float64 (decays are multiples of 1/4096). Returns the membrane."""
    x = np.trunc(syn[i] * syn_decay[i]) + (cur[i] - bias[i])
    if x > LOIHI_STATE:
        x -= 2.0 * LOIHI_STATE
    elif x <= -LOIHI_STATE:
        x += 2.0 * LOIHI_STATE
    syn[i] = x
    m = np.trunc(v[i] * decay[i]) + x + bias[i]
    return min(max(m, 1.0 - LOIHI_STATE), LOIHI_STATE - 1.0)


@njit(cache=True)
def _sigma_delta_update(p, pops, s):
    """Sigma-delta neurons (network.NEURON_MODELS): I = the step's synaptic input (wrapped at 24 bits where Lava's
    conv synapse wraps it); σ += I and a = max(0, σ + bias), or a = I (delta_input); d = a - a_prev + r; |d| >= θ:
    a graded event floor(d / 2^payload_shift) and r = 0, else r = d; a_prev = a. v holds σ (a for delta_input);
    a_prev and r live in aux[aux[p]:aux[p + 1]] (n each); counts and rasters record 1 per event."""
    off = pops.off[p]
    n = pops.n[p]
    unit = 2.0 ** pops.tau[p]
    delta_input = (pops.flags[p] & FLAG_DELTA_INPUT) != 0
    wrap = (pops.flags[p] & FLAG_WRAP24) != 0
    v = s.v
    cur = s.cur
    aux = s.aux
    a0 = pops.aux[p]
    theta = pops.theta
    bias = pops.bias
    ev_idx, ev_val, ev_mult, ev_rec = s.ev_idx, s.ev_val, s.ev_mult, s.ev_rec
    m_ev = 0
    for i in range(off, off + n):
        j = i - off
        x = cur[i] - bias[i]
        if wrap:
            x -= 2.0 * LOIHI_STATE * np.floor((x + LOIHI_STATE) / (2.0 * LOIHI_STATE))
        if delta_input:
            act = x
            v[i] = act
        else:
            v[i] += x
            act = max(0.0, v[i] + bias[i])
        d = act - aux[a0 + j] + aux[a0 + n + j]
        aux[a0 + j] = act
        if d != 0.0 and abs(d) >= theta[i]:
            aux[a0 + n + j] = 0.0
            m_ev = _queue(ev_idx, ev_val, ev_mult, ev_rec, off, m_ev, i, np.floor(d / unit), 1, 1)
        else:
            aux[a0 + n + j] = d
    s.ev_n[p] = m_ev


@njit(cache=True)
def _group_update(p, pops, s):
    """Group neurons (Lv et al.): τ IF members with thresholds jθ/τ share one membrane.

    S = #{j : m >= jθ/τ}; v = m - (θ/τ)·S; one event with payload (θ/τ)·S. Member spikes
    (S) are what `counts`/`rec` record; packets and spikes count S when payloads are expanded.
    """
    off = pops.off[p]
    n = pops.n[p]
    tau = pops.tau[p]
    expand = pops.expand[p]
    reset = pops.reset[p]
    vmax = pops.vmax[p]
    v = s.v
    cur = s.cur
    theta = pops.theta
    ev_idx, ev_val, ev_mult, ev_rec = s.ev_idx, s.ev_val, s.ev_mult, s.ev_rec
    m_ev = 0
    for i in range(off, off + n):
        m = _integrate(v[i], cur[i], vmax)
        sv = 0
        for j in range(1, tau + 1):
            if m >= theta[i] * j / tau:
                sv += 1
            else:
                break
        if sv > 0:
            unit = theta[i] / tau
            if reset == RESET_SUBTRACT:
                v[i] = m - unit * sv
            elif reset == RESET_ZERO:
                v[i] = 0.0
            else:
                v[i] = m
            m_ev = _queue(ev_idx, ev_val, ev_mult, ev_rec, off, m_ev, i, (unit if vmax == 0.0 else 1.0) * sv,
                          sv if expand else 1, sv)
        else:
            v[i] = m
    s.ev_n[p] = m_ev


@njit(cache=True)
def _signed_update(p, pops, s):
    """Signed IF neurons (Leaky ReLU networks, Wang et al.): the membrane is kept in [0, θ).

    m = v + I; a positive spike (value θ) if m >= θ, a negative spike (value -α·θ) if m < 0;
    v = m - s·θ. With v0 = θ/2 the count over T steps rounds T·x/θ to the nearest integer on both
    sides, so the mean value is LeakyReLU_α of the quantized, clipped input.
    """
    off = pops.off[p]
    n = pops.n[p]
    alpha = pops.alpha[p]
    v = s.v
    cur = s.cur
    theta = pops.theta
    ev_idx, ev_val, ev_mult, ev_rec = s.ev_idx, s.ev_val, s.ev_mult, s.ev_rec
    m_ev = 0
    for i in range(off, off + n):
        m = v[i] + cur[i]
        sv = 0
        if m >= theta[i]:
            sv = 1
        elif m < 0.0:
            sv = -1
        if sv != 0:
            v[i] = m - sv * theta[i]
            m_ev = _queue(ev_idx, ev_val, ev_mult, ev_rec, off, m_ev, i,
                          theta[i] if sv > 0 else -alpha * theta[i], 1, sv)
        else:
            v[i] = m
    s.ev_n[p] = m_ev


@njit(cache=True)
def _multi_update(p, pops, s):
    """Multi-threshold neurons (ECMT): levels θ·2^k and -θ_neg·2^k, k < n; at most one event per step.

    m = v + I; the largest k with m >= θ·2^k - θ/2 fires θ·2^k, else (unless one-sided) the largest k with
    m < -θ_neg·2^k + θ_neg/2 fires -θ_neg·2^k; v = m - level. Counts/rasters record ±2^k (the level
    in units of its base threshold); the event carries the level itself.
    """
    off = pops.off[p]
    n = pops.n[p]
    levels = pops.tau[p]
    v = s.v
    cur = s.cur
    theta = pops.theta
    theta_neg = pops.theta_neg
    ev_idx, ev_val, ev_mult, ev_rec = s.ev_idx, s.ev_val, s.ev_mult, s.ev_rec
    m_ev = 0
    for i in range(off, off + n):
        m = v[i] + cur[i]
        sv = 0
        for k in range(levels):
            if m >= theta[i] * 2.0 ** k - theta[i] / 2:
                sv = 1 << k
        if sv == 0 and theta_neg[i] > 0.0:  # θ_neg = 0: a one-sided neuron (positive levels only)
            for k in range(levels):
                if m < -theta_neg[i] * 2.0 ** k + theta_neg[i] / 2:
                    sv = -(1 << k)
        if sv != 0:
            level = theta[i] * sv if sv > 0 else theta_neg[i] * sv
            v[i] = m - level
            m_ev = _queue(ev_idx, ev_val, ev_mult, ev_rec, off, m_ev, i, level, 1, sv)
        else:
            v[i] = m
    s.ev_n[p] = m_ev


@njit(cache=True)
def _operand_element(e, geom):
    """The operand element a source neuron's event is: itself, or (c, r) for source (rows, cols) element (r, c)
    when the projection is transposed (geom: _matmul_layout's)."""
    if geom[3]:
        rows, cols = geom[4], geom[5]
        return (e % cols) * rows + e // cols
    return e


@njit(cache=True)
def _operand_line(kind, e, geom):
    """(first, stride, count): the products (row-major (M, N)) operand element e meets, first + j·stride for j <
    count: row i of them for A's (i, k), column j for B's (k, j)."""
    m, inner, n = geom[0], geom[1], geom[2]
    if kind == KIND_MM_A:
        return (e // inner) * n, 1, n
    return e % n, n, m


@njit(cache=True)
def _matmul_operand(kind, aux, base, geom, ev_idx, ev_val, k0, k1, ctr, t, core_of, tgt_off, ctr_kind, s0, s1):
    """Gather events k0..k1 of one operand of an EC matrix product into A(t) or B(t), and count the work of the
    events s0..s1 its source sent this step on the cores of the products they reach.

    An element of A (i, k) meets row k of B(t) and of S_B(t-1): 2 operations for each product (i, j) of row i
    (2N); an element of B (k, j) meets column j of S_A(t-1): 1 for each product (i, j) of column j (M); so
    A(t)B(t) is counted once, on A's side. Each product's operations count on the core that holds it.
    """
    start = base if kind == KIND_MM_A else base + geom[0] * geom[1]
    ops = 2 if kind == KIND_MM_A else 1
    for k in range(k0, k1):
        aux[start + _operand_element(ev_idx[k], geom)] += ev_val[k]
    for k in range(s0, s1):
        first, stride, count = _operand_line(kind, _operand_element(ev_idx[k], geom), geom)
        for j in range(count):
            ctr[t, core_of[tgt_off + first + j * stride], ctr_kind] += ops


@njit(cache=True)
def _matmul_update(p, t, pops, s):
    """Accumulating EC matrix product (ECMT) of an (M, N) node from A(t) (M, K) and B(t) (K, N).

    S_K(t) = S_K(t-1) + A(t)B(t) + A(t)S_B(t-1) + S_A(t-1)B(t) = S_A(t)S_B(t); O(t) = S_K(t)/t - S_K(t-1)/(t-1),
    so Σ_{t<=T} O(t) = T·mean(A)·mean(B). S_K lives in `total` (the membranes), S_K(t-1)/(t-1) in `prev`. Nonzero
    O(t) leave as analog events (packets and hops counted); the operand work was counted as the events came in.
    """
    off = pops.off[p]
    n = pops.tau[p]
    mm = pops.n[p] // n
    base = pops.aux[p]
    end = pops.aux[p + 1]
    aux = s.aux
    total = s.v
    prev = s.prev
    ev_idx = s.ev_idx
    ev_val = s.ev_val
    inner = (end - base) // (2 * (mm + n))  # the aux block holds 2·(M + N)·K values
    a_t, b_t = base, base + mm * inner
    s_a, s_b = base + mm * inner + inner * n, base + 2 * mm * inner + inner * n
    tt = t + 1.0
    m_ev = 0
    for i in range(mm):
        for j in range(n):
            acc = 0.0
            for k in range(inner):
                a = aux[a_t + i * inner + k]
                b = aux[b_t + k * n + j]
                acc += a * (b + aux[s_b + k * n + j]) + aux[s_a + i * inner + k] * b
            e = off + i * n + j
            total[e] += acc
            o_e = total[e] / tt - prev[e]
            prev[e] = total[e] / tt
            if o_e != 0.0:
                m_ev = _queue_value(ev_idx, ev_val, off, m_ev, e, o_e)
    for k in range(mm * inner + inner * n):  # S_A += A(t), S_B += B(t); clear the step's operands
        aux[s_a + k] += aux[a_t + k]
        aux[a_t + k] = 0.0
    s.ev_n[p] = m_ev


@njit(cache=True)
def _ec_update(p, t, pops, core_of, s, ctr):
    """Expectation-compensated nonlinearity (ECMT): S(t) += I; O(t) = t·F(S(t)/t) - (t-1)·F(S(t-1)/(t-1)).

    F is applied per group of `group` consecutive elements (layernorm, softmax: the last dimension). The
    identity (a relay) forwards the step's input unchanged and computes nothing.
    Every nonzero O(t) leaves as an event with that value (packets and hops counted, no spike); one MAC per
    element per step, the ECMT paper's convention for EC nodes.
    """
    off = pops.off[p]
    n = pops.n[p]
    func = pops.func[p]
    group = pops.tau[p]
    eps = pops.eps[p]
    total = s.v
    prev = s.prev
    cur = s.cur
    ev_idx = s.ev_idx
    ev_val = s.ev_val
    tt = t + 1.0
    m_ev = 0
    if func == EC_IDENTITY:  # a relay: the step's input leaves as it is, no computation (no MAC)
        for i in range(off, off + n):
            if cur[i] != 0.0:
                m_ev = _queue_value(ev_idx, ev_val, off, m_ev, i, cur[i])
        s.ev_n[p] = m_ev
        return
    out = s.cur  # each element's output overwrites its own input, which the group no longer needs
    for g0 in range(off, off + n, group):
        g1 = g0 + group
        for i in range(g0, g1):
            total[i] += cur[i]
        _ec_group(total, prev, out, g0, g1, tt, func, eps)
        for i in range(g0, g1):
            ctr[t, core_of[i], C_MACS] += 1
            if out[i] != 0.0:
                m_ev = _queue_value(ev_idx, ev_val, off, m_ev, i, out[i])
    s.ev_n[p] = m_ev


@njit(cache=True, inline="always")
def _ec_group(total, prev, out, g0, g1, tt, func, eps):
    """O = tt·F(S/tt) - prev over one normalization group [g0, g1) into out (prev <- tt·F(S/tt)); S = total. Sums in
    index order; exp and erf from ecmath (the same bits on every machine). The torch backend calls this on a CPU
    (ec_outputs) and runs the same operations as a Triton kernel on a GPU (torch_triton.ec_outputs)."""
    group = g1 - g0
    mean = scale = top = norm = 0.0
    if func == EC_LAYERNORM:
        for i in range(g0, g1):
            mean += total[i] / tt
        mean /= group
        var = 0.0
        for i in range(g0, g1):
            d = total[i] / tt - mean
            var += d * d
        scale = 1.0 / math.sqrt(var / group + eps)
    elif func == EC_SOFTMAX:
        top = -np.inf
        for i in range(g0, g1):
            top = max(top, total[i] / tt)
        for i in range(g0, g1):
            norm += ecmath.exp(total[i] / tt - top)
    for i in range(g0, g1):
        x = total[i] / tt
        if func == EC_GELU:
            y = 0.5 * x * (1.0 + ecmath.erf(x / ecmath.SQRT2))
        elif func == EC_LAYERNORM:
            y = (x - mean) * scale
        else:
            y = ecmath.exp(x - top) / norm
        out[i] = tt * y - prev[i]
        prev[i] = tt * y


@njit(cache=True, parallel=True)
def ec_outputs(total, prev, t, func, group, eps):
    """EC outputs O(t) of a batch (B, n) of running sums S(t), updating prev (B, n) in place: the engine's
    arithmetic for the torch backend."""
    out = np.empty_like(total)
    for b in prange(total.shape[0]):
        for g0 in range(0, total.shape[1], group):
            _ec_group(total[b], prev[b], out[b], g0, g0 + group, t + 1.0, func, eps)
    return out


@njit(cache=True)
def _readout_update(p, pops, s):
    """Readout neurons integrate without firing: acc += I, kept as their membrane; the output is acc / T."""
    off = pops.off[p]
    acc = s.acc
    v = s.v
    cur = s.cur
    for i in range(pops.n[p]):
        acc[i] += cur[off + i]
        v[off + i] = acc[i]


@njit(cache=True, inline="always")
def _tally(c, hist, seen, n_seen):
    """Count one synapse onto core c; remember c the first time this row reaches it."""
    if hist[c] == 0:
        seen[n_seen] = c
        n_seen += 1
    hist[c] += 1
    return n_seen


@njit(cache=True)
def row_core_table(kind, n_src, tgt_off, tgt_n, geom, ioff, xoff, indptr, indices, core_of, n_cores,
                   weights=np.zeros(0, np.float32), woff=0):
    """For every source row of one projection: the target cores it reaches and how many synapses on each (with
    `weights`, the projection's weights from `woff`: only those of nonzero weight, NeuroBench's effective count).

    Returns (ptr (n_src+1), core, count) in CSR form. Walks each row once, as the engine will (dense rows of tgt_n
    weights, CSR lists, a pointwise channel's list, a convolution's taps).
    """
    nonzero = weights.shape[0] > 0
    hist = np.zeros(n_cores, np.int64)
    ptr = np.zeros(n_src + 1, np.int64)
    cores_out = []
    counts_out = []
    seen = np.empty(n_cores, np.int64)
    for e in range(n_src):
        n_seen = 0
        if kind == KIND_DENSE:
            for j in range(tgt_n):
                if nonzero and weights[woff + e * tgt_n + j] == 0.0:
                    continue
                c = core_of[tgt_off + j]
                n_seen = _tally(c, hist, seen, n_seen)
        elif kind == KIND_SPARSE:
            for k in range(indptr[ioff + e], indptr[ioff + e + 1]):
                if nonzero and weights[woff + k] == 0.0:
                    continue
                c = core_of[tgt_off + indices[xoff + k]]
                n_seen = _tally(c, hist, seen, n_seen)
        elif kind == KIND_POINTWISE:
            r = e // geom[0]
            ch = e - r * geom[0]
            for k in range(indptr[ioff + ch], indptr[ioff + ch + 1]):
                if nonzero and weights[woff + k] == 0.0:
                    continue
                c = core_of[tgt_off + r * geom[1] + indices[xoff + k]]
                n_seen = _tally(c, hist, seen, n_seen)
        else:
            cin = geom[G_CIN]
            cout = geom[G_COUT]
            groups = geom[G_GROUPS]
            cin_g = cin // groups
            cout_g = cout // groups
            pos = e // cin
            ch = e - pos * cin
            y = pos // geom[G_W]
            x = pos - y * geom[G_W]
            g = ch // cin_g
            for ky in range(geom[G_KH]):
                ty = y + geom[G_PH] - ky
                if ty < 0 or ty % geom[G_SH] != 0 or ty // geom[G_SH] >= geom[G_HO]:
                    continue
                for kx in range(geom[G_KW]):
                    tx = x + geom[G_PW] - kx
                    if tx < 0 or tx % geom[G_SW] != 0 or tx // geom[G_SW] >= geom[G_WO]:
                        continue
                    t0 = tgt_off + ((ty // geom[G_SH]) * geom[G_WO] + tx // geom[G_SW]) * cout + g * cout_g
                    w0 = woff + ((ch * geom[G_KH] + ky) * geom[G_KW] + kx) * cout_g
                    for o in range(cout_g):
                        if nonzero and weights[w0 + o] == 0.0:
                            continue
                        c = core_of[t0 + o]
                        n_seen = _tally(c, hist, seen, n_seen)
        for k in range(n_seen):
            c = seen[k]
            cores_out.append(c)
            counts_out.append(hist[c])
            hist[c] = 0
        ptr[e + 1] = ptr[e] + n_seen
    core_arr = np.empty(len(cores_out), np.int32)
    cnt_arr = np.empty(len(counts_out), np.int64)
    for k in range(len(cores_out)):
        core_arr[k] = cores_out[k]
        cnt_arr[k] = counts_out[k]
    return ptr, core_arr, cnt_arr

