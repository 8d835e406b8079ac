"""Numba kernels of the event-driven engine: plain arrays and scalars in and out.

Layout conventions (built by simulator.arrays):
- neurons of all populations live in one global index space; population p owns
  [pop_off[p], pop_off[p] + pop_n[p]); (C, H, W) populations are stored channel-last
  (index (y*W + x)*C + c) so that a conv event updates contiguous output channels;
- an event is (local neuron index, payload value, multiplicity); a spike of an IF neuron
  carries θ; a group neuron's event carries (θ/τ)·S and, when its target expands payloads,
  multiplicity S (S member spikes, S times the synaptic work); an analog input carries its
  value (and its synaptic work is counted as MACs);
- per (sample, step, core) dynamic counters, indexed by the C_* constants.
The engine accumulates membrane and currents in float64: results do not depend
on summation order, hence not on the thread count either.
"""
import math

import numpy as np
from numba import njit, prange

KIND_DENSE, KIND_SPARSE, KIND_CONV, KIND_MM_A, KIND_MM_B, KIND_POINTWISE = 0, 1, 2, 3, 4, 5
MODEL_INPUT, MODEL_IF, MODEL_READOUT, MODEL_GROUP, MODEL_SIGNED = 0, 1, 2, 3, 4
MODEL_MULTI, MODEL_EC, MODEL_ECMM, MODEL_LIF = 5, 6, 7, 8
# pop_flags bits of if / lif populations: a spike carries 1 instead of θ; fire on m > θ instead of m >= θ
FLAG_UNIT_SPIKE, FLAG_STRICT_TEST = 1, 2
EC_GELU, EC_LAYERNORM, EC_SOFTMAX, EC_IDENTITY = 0, 1, 2, 3
RESET_SUBTRACT, RESET_ZERO, RESET_NONE = 0, 1, 2
C_SYNOPS, C_MACS, C_SPIKES, C_PACKETS, C_HOPS, C_SYN_BYTES = 0, 1, 2, 3, 4, 5
N_DYNAMIC_COUNTERS = 6
# geometry columns of a conv projection
G_CIN, G_H, G_W, G_COUT, G_HO, G_WO, G_KH, G_KW, G_SH, G_SW, G_PH, G_PW, G_GROUPS = range(13)


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
def _dense_events(cur, tgt_off, n_t, weights, w_off, ev_idx, ev_val, k0, k1):
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


@njit(cache=True)
def run_sample(x, T, ctr, out, counts, rec, trace,
               pop_off, pop_n, pop_model, pop_reset, pop_tau, pop_expand, pop_alpha, pop_vmax, pop_flags, pop_func, pop_eps, pop_aux, pop_rec_off, in_ptr, in_proj, tr_ptr, tr_idx,
               theta, theta_neg, v_init, bias, decay, core_of, n_packets, n_hops, fl_ptr, fl_id, flows,
               proj_kind, proj_src, proj_tgt_off, proj_tgt_n, proj_woff, proj_ioff, proj_xoff, proj_geom,
               proj_mac, proj_wbytes, weights, indptr, indices, rc_off, rc_ptr, rc_core, rc_cnt,
               readout_pop, record_counts):
    """Run one sample for T steps.

    x: input values (engine order); ctr: (T, cores, N_DYNAMIC_COUNTERS) int64, filled;
    out: readout mean over T (engine order); counts: spikes per neuron (if record_counts);
    rec: (T, recorded neurons) int8 spike raster (member spikes of a group neuron, -1 for a negative spike,
         ±2^k for a multi-threshold level);
    trace: (T, traced neurons) membrane after update.
    """
    n_total = theta.shape[0]
    n_pops = pop_off.shape[0]
    v = v_init.copy()  # membranes; the running input sum S(t) of EC nodes
    prev = np.zeros(n_total)  # EC nodes: (t-1)·F(S(t-1)/(t-1)); ec_matmul nodes: S_K(t-1)/(t-1)
    aux = np.zeros(max(pop_aux[n_pops], 1))  # ec_matmul operands, see simulator.arrays
    cur = np.zeros(n_total)
    ev_idx = np.empty(n_total, np.int64)
    ev_val = np.empty(n_total)
    ev_mult = np.ones(n_total, np.int64)
    ev_n = np.zeros(n_pops, np.int64)
    acc = np.zeros(pop_n[readout_pop])
    # the analog input is the same every step: its events are built once
    n_in = 0
    for i in range(pop_n[0]):
        if x[i] != 0.0:
            ev_idx[pop_off[0] + n_in] = i
            ev_val[pop_off[0] + n_in] = x[i]
            n_in += 1
    ev_n[0] = n_in
    for t in range(T):
        for p in range(1, n_pops):
            off = pop_off[p]
            n = pop_n[p]
            for i in range(off, off + n):
                cur[i] = bias[i]
            for j in range(in_ptr[p], in_ptr[p + 1]):
                q = in_proj[j]
                s = proj_src[q]
                s_off = pop_off[s]
                ctr_kind = C_MACS if proj_mac[q] else C_SYNOPS
                wb = proj_wbytes[q]
                r0 = rc_off[q]
                k0 = s_off
                k1 = s_off + ev_n[s]
                kind = proj_kind[q]
                if kind == KIND_MM_A or kind == KIND_MM_B:
                    _matmul_operand(kind, aux, pop_aux[p], proj_geom[q], ev_idx, ev_val, k0, k1, ctr, t,
                                    core_of[proj_tgt_off[q]], ctr_kind)
                elif kind == KIND_DENSE:
                    _dense_events(cur, proj_tgt_off[q], proj_tgt_n[q], weights, proj_woff[q], ev_idx, ev_val, k0, k1)
                elif kind == KIND_SPARSE:
                    _sparse_events(cur, proj_tgt_off[q], weights, proj_woff[q], indptr, proj_ioff[q], indices,
                                   proj_xoff[q], ev_idx, ev_val, k0, k1)
                elif kind == KIND_POINTWISE:
                    _pointwise_events(cur, proj_tgt_off[q], weights, proj_woff[q], indptr, proj_ioff[q], indices,
                                      proj_xoff[q], proj_geom[q][0], proj_geom[q][1], ev_idx, ev_val, k0, k1)
                else:
                    _conv_events(cur, proj_tgt_off[q], weights, proj_woff[q], proj_geom[q], ev_idx, ev_val, k0, k1)
                for k in range(k0, k1):
                    e = ev_idx[k]
                    mult = ev_mult[k]
                    for r in range(rc_ptr[r0 + e], rc_ptr[r0 + e + 1]):
                        c = rc_core[r]
                        ctr[t, c, ctr_kind] += rc_cnt[r] * mult
                        ctr[t, c, C_SYN_BYTES] += rc_cnt[r] * wb * mult
            model = pop_model[p]
            if model == MODEL_IF or model == MODEL_LIF:
                reset = pop_reset[p]
                m_ev = 0
                rec0 = pop_rec_off[p]
                vmax = pop_vmax[p]
                leaky = model == MODEL_LIF
                unit = vmax != 0.0 or (pop_flags[p] & FLAG_UNIT_SPIKE) != 0
                strict = (pop_flags[p] & FLAG_STRICT_TEST) != 0
                for i in range(off, off + n):
                    m = _integrate(v[i] * decay[i] if leaky else v[i], cur[i], vmax)
                    if m > theta[i] or (m == theta[i] and not strict):
                        if reset == RESET_SUBTRACT:
                            v[i] = m - theta[i]
                        elif reset == RESET_ZERO:
                            v[i] = 0.0
                        else:
                            v[i] = m
                        m_ev = _emit(t, i, off, m_ev, 1.0 if unit else theta[i], 1, 1, rec0, ev_idx, ev_val,
                                     ev_mult, ctr, core_of, n_packets, n_hops, fl_ptr, fl_id, flows, record_counts,
                                     counts, rec)
                    else:
                        v[i] = m
                ev_n[p] = m_ev
            elif model == MODEL_GROUP:
                _group_update(p, t, off, n, pop_tau[p], pop_expand[p], pop_reset[p], pop_vmax[p], pop_rec_off[p], v, cur,
                              theta,
                              ev_idx, ev_val, ev_mult, ev_n, ctr, core_of, n_packets, n_hops, fl_ptr, fl_id, flows,
                              record_counts, counts,
                              rec)
            elif model == MODEL_SIGNED:
                _signed_update(p, t, off, n, pop_alpha[p], pop_rec_off[p], v, cur, theta, ev_idx, ev_val, ev_mult, ev_n,
                               ctr, core_of, n_packets, n_hops, fl_ptr, fl_id, flows, record_counts, counts, rec)
            elif model == MODEL_MULTI:
                _multi_update(p, t, off, n, pop_tau[p], pop_rec_off[p], v, cur, theta, theta_neg, ev_idx, ev_val,
                              ev_mult, ev_n, ctr, core_of, n_packets, n_hops, fl_ptr, fl_id, flows, record_counts,
                              counts, rec)
            elif model == MODEL_ECMM:
                _matmul_update(p, t, off, n // pop_tau[p], pop_tau[p], pop_aux[p], pop_aux[p + 1], aux, v, prev, ev_idx,
                               ev_val, ev_n, ctr, core_of, n_packets, n_hops, fl_ptr, fl_id, flows)
            elif model == MODEL_EC:
                _ec_update(p, t, off, n, pop_func[p], pop_tau[p], pop_eps[p], v, prev, cur, ev_idx, ev_val, ev_n, ctr,
                           core_of, n_packets, n_hops, fl_ptr, fl_id, flows)
            elif model == MODEL_READOUT:
                for i in range(n):
                    acc[i] += cur[off + i]
                    v[off + i] = acc[i]
            for k in range(tr_ptr[p], tr_ptr[p + 1]):
                trace[t, k] = v[tr_idx[k]]
    for i in range(acc.shape[0]):
        out[i] = acc[i] / T


@njit(cache=True, inline="always")
def _integrate(v, current, vmax):
    """m = v + I. Fixed point (vmax > 0): the step's input is rounded to an integer (half up) and the membrane
    saturates at [-vmax - 1, vmax], a (membrane_bits)-bit two's-complement register."""
    if vmax == 0.0:
        return v + current
    m = v + np.floor(current + 0.5)
    return min(max(m, -vmax - 1.0), vmax)


@njit(cache=True, inline="always")
def _count_packets(t, i, mult, ctr, core_of, n_packets, n_hops, fl_ptr, fl_id, flows):
    """Count the packets and hops of `mult` events of neuron i, and each packet on its core-to-core flow."""
    c = core_of[i]
    ctr[t, c, C_PACKETS] += n_packets[i] * mult
    ctr[t, c, C_HOPS] += n_hops[i] * mult
    for k in range(fl_ptr[i], fl_ptr[i + 1]):
        flows[t, fl_id[k]] += mult


@njit(cache=True, inline="always")
def _emit(t, i, off, m_ev, val, mult, s, rec0, ev_idx, ev_val, ev_mult, ctr, core_of, n_packets, n_hops, fl_ptr, fl_id,
          flows,
          record_counts, counts, rec):
    """Queue neuron i's event (payload val, delivered mult times) and count it; s is what counts/rasters record.

    Returns the population's new event count.
    """
    ev_idx[off + m_ev] = i - off
    ev_val[off + m_ev] = val
    ev_mult[off + m_ev] = mult
    ctr[t, core_of[i], C_SPIKES] += mult
    _count_packets(t, i, mult, ctr, core_of, n_packets, n_hops, fl_ptr, fl_id, flows)
    if record_counts:
        counts[i] += s
    if rec0 >= 0:
        rec[t, rec0 + i - off] = s
    return m_ev + 1


@njit(cache=True)
def _group_update(p, t, off, n, tau, expand, reset, vmax, rec0, v, cur, theta, ev_idx, ev_val, ev_mult, ev_n, ctr, core_of,
                  n_packets, n_hops, fl_ptr, fl_id, flows, record_counts, counts, rec):
    """Group neurons (Lv et al.): τ IF members with thresholds jθ/τ share one membrane.

    S = #{j : m >= jθ/τ}; v = m - (θ/τ)·S; one event with payload (θ/τ)·S. Member spikes
    (S) are what `counts`/`rec` record; packets and spikes count S when payloads are expanded.
    """
    m_ev = 0
    for i in range(off, off + n):
        m = _integrate(v[i], cur[i], vmax)
        s = 0
        for j in range(1, tau + 1):
            if m >= theta[i] * j / tau:
                s += 1
            else:
                break
        if s > 0:
            unit = theta[i] / tau
            if reset == RESET_SUBTRACT:
                v[i] = m - unit * s
            elif reset == RESET_ZERO:
                v[i] = 0.0
            else:
                v[i] = m
            m_ev = _emit(t, i, off, m_ev, (unit if vmax == 0.0 else 1.0) * s, s if expand else 1, s, rec0, ev_idx,
                         ev_val, ev_mult, ctr,
                         core_of, n_packets, n_hops, fl_ptr, fl_id, flows, record_counts, counts, rec)
        else:
            v[i] = m
    ev_n[p] = m_ev


@njit(cache=True)
def _signed_update(p, t, off, n, alpha, rec0, v, cur, theta, ev_idx, ev_val, ev_mult, ev_n, ctr, core_of, n_packets,
                   n_hops, fl_ptr, fl_id, flows, record_counts, counts, rec):
    """Signed IF neurons (Leaky ReLU networks, Wang et al.): the membrane is kept in [0, θ).

    m = v + I; a positive spike (value θ) if m >= θ, a negative spike (value -α·θ) if m < 0;
    v = m - s·θ. With v0 = θ/2 the count over T steps rounds T·x/θ to the nearest integer on both
    sides, so the mean value is LeakyReLU_α of the quantized, clipped input.
    """
    m_ev = 0
    for i in range(off, off + n):
        m = v[i] + cur[i]
        s = 0
        if m >= theta[i]:
            s = 1
        elif m < 0.0:
            s = -1
        if s != 0:
            v[i] = m - s * theta[i]
            m_ev = _emit(t, i, off, m_ev, theta[i] if s > 0 else -alpha * theta[i], 1, s, rec0, ev_idx, ev_val,
                         ev_mult, ctr, core_of, n_packets, n_hops, fl_ptr, fl_id, flows, record_counts, counts, rec)
        else:
            v[i] = m
    ev_n[p] = m_ev


@njit(cache=True, inline="always")
def _emit_value(t, i, off, m_ev, val, ev_idx, ev_val, ctr, core_of, n_packets, n_hops, fl_ptr, fl_id, flows):
    """Queue a compute node's analog output val of neuron i as an event: packets and hops count, spikes do not.

    Returns the population's new event count.
    """
    ev_idx[off + m_ev] = i - off
    ev_val[off + m_ev] = val
    _count_packets(t, i, 1, ctr, core_of, n_packets, n_hops, fl_ptr, fl_id, flows)
    return m_ev + 1


@njit(cache=True)
def _multi_update(p, t, off, n, levels, rec0, v, cur, theta, theta_neg, ev_idx, ev_val, ev_mult, ev_n, ctr, core_of,
                  n_packets, n_hops, fl_ptr, fl_id, flows, record_counts, counts, rec):
    """Multi-threshold neurons (ECMT): levels θ·2^k and -θ_neg·2^k, k < n; at most one event per step.

    m = v + I; the largest k with m >= θ·2^k - θ/2 fires θ·2^k, else (unless one-sided) the largest k with
    m < -θ_neg·2^k + θ_neg/2 fires -θ_neg·2^k; v = m - level. Counts/rasters record ±2^k (the level
    in units of its base threshold); the event carries the level itself.
    """
    m_ev = 0
    for i in range(off, off + n):
        m = v[i] + cur[i]
        s = 0
        for k in range(levels):
            if m >= theta[i] * 2.0 ** k - theta[i] / 2:
                s = 1 << k
        if s == 0 and theta_neg[i] > 0.0:  # θ_neg = 0: a one-sided neuron (positive levels only)
            for k in range(levels):
                if m < -theta_neg[i] * 2.0 ** k + theta_neg[i] / 2:
                    s = -(1 << k)
        if s != 0:
            level = theta[i] * s if s > 0 else theta_neg[i] * s
            v[i] = m - level
            m_ev = _emit(t, i, off, m_ev, level, 1, s, rec0, ev_idx, ev_val, ev_mult, ctr, core_of, n_packets,
                         n_hops, fl_ptr, fl_id, flows, record_counts, counts, rec)
        else:
            v[i] = m
    ev_n[p] = m_ev


@njit(cache=True)
def _matmul_operand(kind, aux, base, geom, ev_idx, ev_val, k0, k1, ctr, t, core, ctr_kind):
    """Gather this step's events of one operand of an EC matrix product into A(t) or B(t) and count the work.

    An element of A (i, k) meets row k of B(t) and of S_B(t-1): 2N operations; an element of B (k, j)
    meets column j of S_A(t-1): M operations (so A(t)B(t) is counted once, on A's side).
    """
    m, inner, n, transpose, rows, cols = geom[0], geom[1], geom[2], geom[3], geom[4], geom[5]
    start = base if kind == KIND_MM_A else base + m * inner
    work = 2 * n if kind == KIND_MM_A else m
    for k in range(k0, k1):
        e = ev_idx[k]
        if transpose:  # source (rows, cols) element (r, c) is operand element (c, r)
            e = (e % cols) * rows + e // cols
        aux[start + e] += ev_val[k]
    ctr[t, core, ctr_kind] += work * (k1 - k0)


@njit(cache=True)
def _matmul_update(p, t, off, mm, n, base, end, aux, total, prev, ev_idx, ev_val, ev_n, ctr, core_of, n_packets,
                   n_hops, fl_ptr, fl_id, flows):
    """Accumulating EC matrix product (ECMT) of an (M, N) node from A(t) (M, K) and B(t) (K, N).

    S_K(t) = S_K(t-1) + A(t)B(t) + A(t)S_B(t-1) + S_A(t-1)B(t) = S_A(t)S_B(t); O(t) = S_K(t)/t - S_K(t-1)/(t-1),
    so Σ_{t<=T} O(t) = T·mean(A)·mean(B). S_K lives in `total`, S_K(t-1)/(t-1) in `prev`. Nonzero O(t)
    leave as analog events (packets and hops counted); the operand work was counted as the events came in.
    """
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
            o = total[e] / tt - prev[e]
            prev[e] = total[e] / tt
            if o != 0.0:
                m_ev = _emit_value(t, e, off, m_ev, o, ev_idx, ev_val, ctr, core_of, n_packets, n_hops, fl_ptr, fl_id,
                                   flows)
    for k in range(mm * inner + inner * n):  # S_A += A(t), S_B += B(t); clear the step's operands
        aux[s_a + k] += aux[a_t + k]
        aux[a_t + k] = 0.0
    ev_n[p] = m_ev


@njit(cache=True)
def _ec_update(p, t, off, n, func, group, eps, total, prev, cur, ev_idx, ev_val, ev_n, ctr, core_of, n_packets,
               n_hops, fl_ptr, fl_id, flows):
    """Expectation-compensated nonlinearity (ECMT): S(t) += I; O(t) = t·F(S(t)/t) - (t-1)·F(S(t-1)/(t-1)).

    F is applied per group of `group` consecutive elements (layernorm, softmax: the last dimension). The
    identity (a relay) forwards the step's input unchanged and computes nothing.
    Every nonzero O(t) leaves as an event with that value (packets and hops counted, no spike); one MAC per
    element per step, the ECMT paper's convention for EC nodes.
    """
    tt = t + 1.0
    m_ev = 0
    if func == EC_IDENTITY:  # a relay: the step's input leaves as it is, no computation (no MAC)
        for i in range(off, off + n):
            if cur[i] != 0.0:
                m_ev = _emit_value(t, i, off, m_ev, cur[i], ev_idx, ev_val, ctr, core_of, n_packets, n_hops, fl_ptr,
                                   fl_id, flows)
        ev_n[p] = m_ev
        return
    for g0 in range(off, off + n, group):
        g1 = g0 + group
        for i in range(g0, g1):
            total[i] += cur[i]
        if func == EC_LAYERNORM:
            mean = 0.0
            for i in range(g0, g1):
                mean += total[i] / tt
            mean /= group
            var = 0.0
            for i in range(g0, g1):
                var += (total[i] / tt - mean) ** 2
            scale = 1.0 / math.sqrt(var / group + eps)
        elif func == EC_SOFTMAX:
            top = -np.inf
            for i in range(g0, g1):
                top = max(top, total[i] / tt)
            norm = 0.0
            for i in range(g0, g1):
                norm += math.exp(total[i] / tt - top)
        for i in range(g0, g1):
            x = total[i] / tt
            if func == EC_GELU:
                y = 0.5 * x * (1.0 + math.erf(x / math.sqrt(2.0)))
            elif func == EC_LAYERNORM:
                y = (x - mean) * scale
            else:
                y = math.exp(x - top) / norm
            o = tt * y - prev[i]
            prev[i] = tt * y
            ctr[t, core_of[i], C_MACS] += 1
            if o != 0.0:
                m_ev = _emit_value(t, i, off, m_ev, o, ev_idx, ev_val, ctr, core_of, n_packets, n_hops, fl_ptr, fl_id,
                                   flows)
    ev_n[p] = m_ev


@njit(cache=True, parallel=True)
def run_batch(X, T, n_cores, n_rec, n_trace, record_counts,
              pop_off, pop_n, pop_model, pop_reset, pop_tau, pop_expand, pop_alpha, pop_vmax, pop_flags, pop_func, pop_eps, pop_aux, pop_rec_off, in_ptr, in_proj, tr_ptr, tr_idx,
              theta, theta_neg, v_init, bias, decay, core_of, n_packets, n_hops, fl_ptr, fl_id, n_flows,
              proj_kind, proj_src, proj_tgt_off, proj_tgt_n, proj_woff, proj_ioff, proj_xoff, proj_geom,
              proj_mac, proj_wbytes, weights, indptr, indices, rc_off, rc_ptr, rc_core, rc_cnt, readout_pop):
    """Run every row of X (B, input size, engine order) independently, samples in parallel.

    n_flows > 0: also count, per sample and step, the packets of every core-to-core flow (fl_ptr / fl_id list
    the flows of each neuron's spike; with n_flows = 0, fl_ptr is all zeros and nothing is counted)."""
    B = X.shape[0]
    n_total = theta.shape[0]
    ctr = np.zeros((B, T, n_cores, N_DYNAMIC_COUNTERS), np.int64)
    out = np.zeros((B, pop_n[readout_pop]))
    counts = np.zeros((B, n_total if record_counts else 1), np.int32)
    rec = np.zeros((B, T, n_rec), np.int8)
    trace = np.zeros((B, T, n_trace))
    flows = np.zeros((B, T, n_flows), np.int64)
    for b in prange(B):
        run_sample(X[b], T, ctr[b], out[b], counts[b], rec[b], trace[b],
                   pop_off, pop_n, pop_model, pop_reset, pop_tau, pop_expand, pop_alpha, pop_vmax, pop_flags, pop_func, pop_eps, pop_aux, pop_rec_off, in_ptr, in_proj, tr_ptr, tr_idx,
                   theta, theta_neg, v_init, bias, decay, core_of, n_packets, n_hops, fl_ptr, fl_id, flows[b],
                   proj_kind, proj_src, proj_tgt_off, proj_tgt_n, proj_woff, proj_ioff, proj_xoff, proj_geom,
                   proj_mac, proj_wbytes, weights, indptr, indices, rc_off, rc_ptr, rc_core, rc_cnt,
                   readout_pop, record_counts)
    return out, ctr, counts, rec, trace, flows


@njit(cache=True, inline="always")
def _tally(c, hist, seen, n_seen):
    """Count one synapse onto core c; remember c the first time this row reaches it."""
    if hist[c] == 0:
        seen[n_seen] = c
        n_seen += 1
    hist[c] += 1
    return n_seen


@njit(cache=True)
def row_core_table(kind, n_src, tgt_off, tgt_n, geom, ioff, xoff, indptr, indices, core_of, n_cores):
    """For every source row of one projection: the target cores it reaches and how many synapses on each.

    Returns (ptr (n_src+1), core, count) in CSR form. Walks each row once, as the engine will.
    """
    hist = np.zeros(n_cores, np.int64)
    ptr = np.zeros(n_src + 1, np.int64)
    cores_out = []
    counts_out = []
    seen = np.empty(n_cores, np.int64)
    for e in range(n_src):
        n_seen = 0
        if kind == KIND_DENSE:
            for j in range(tgt_n):
                c = core_of[tgt_off + j]
                n_seen = _tally(c, hist, seen, n_seen)
        elif kind == KIND_SPARSE:
            for k in range(indptr[ioff + e], indptr[ioff + e + 1]):
                c = core_of[tgt_off + indices[xoff + k]]
                n_seen = _tally(c, hist, seen, n_seen)
        elif kind == KIND_POINTWISE:
            r = e // geom[0]
            ch = e - r * geom[0]
            for k in range(indptr[ioff + ch], indptr[ioff + ch + 1]):
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
                    for o in range(cout_g):
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
