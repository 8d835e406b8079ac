"""Numba kernels of the event-driven engine: plain arrays and scalars in and out.

Layout conventions (built by simulator.arrays):
- neurons of all populations live in one global index space; population p owns
  [pop_off[p], pop_off[p] + pop_n[p]); (C, H, W) populations are stored channel-last
  (index (y*W + x)*C + c) so that a conv event updates contiguous output channels;
- an event is (local neuron index, payload value); a spike of an IF neuron carries θ,
  an analog input carries its value (and its synaptic work is counted as MACs);
- per (sample, step, core) dynamic counters, indexed by the C_* constants.
The engine accumulates membrane and currents in float64: results do not depend
on summation order, hence not on the thread count either.
"""
import numpy as np
from numba import njit, prange

KIND_DENSE, KIND_SPARSE, KIND_CONV = 0, 1, 2
MODEL_INPUT, MODEL_IF, MODEL_READOUT = 0, 1, 2
RESET_SUBTRACT, RESET_ZERO, RESET_NONE = 0, 1, 2
C_SYNOPS, C_MACS, C_SPIKES, C_PACKETS, C_HOPS, C_SYN_BYTES = 0, 1, 2, 3, 4, 5
N_DYNAMIC_COUNTERS = 6
# geometry columns of a conv projection
G_CIN, G_H, G_W, G_COUT, G_HO, G_WO, G_KH, G_KW, G_SH, G_SW, G_PH, G_PW, G_GROUPS = range(13)


@njit(cache=True, inline="always")
def _conv_event(cur, tgt_off, weights, w_off, geom, e, val):
    cin = geom[G_CIN]
    w = geom[G_W]
    cout = geom[G_COUT]
    ho = geom[G_HO]
    wo = geom[G_WO]
    kh = geom[G_KH]
    kw = geom[G_KW]
    sh = geom[G_SH]
    sw = geom[G_SW]
    groups = geom[G_GROUPS]
    cin_g = cin // groups
    cout_g = cout // groups
    pos = e // cin
    c = e - pos * cin
    y = pos // w
    x = pos - y * w
    g = c // cin_g
    ci = c - g * cin_g
    for ky in range(kh):
        ty = y + geom[G_PH] - ky
        if ty < 0 or ty % sh != 0:
            continue
        oy = ty // sh
        if oy >= ho:
            continue
        for kx in range(kw):
            tx = x + geom[G_PW] - kx
            if tx < 0 or tx % sw != 0:
                continue
            ox = tx // sw
            if ox >= wo:
                continue
            t0 = tgt_off + (oy * wo + ox) * cout + g * cout_g
            w0 = w_off + (((g * cin_g + ci) * kh + ky) * kw + kx) * cout_g
            for o in range(cout_g):
                cur[t0 + o] += weights[w0 + o] * val


@njit(cache=True)
def _deliver(q, e, val, cur, proj_kind, proj_tgt_off, proj_tgt_n, proj_woff, proj_ioff, proj_xoff, proj_geom,
             weights, indptr, indices):
    """Walk the synapse row of source neuron e (local index) of projection q, adding w·val."""
    kind = proj_kind[q]
    t_off = proj_tgt_off[q]
    if kind == KIND_DENSE:
        n_t = proj_tgt_n[q]
        w0 = proj_woff[q] + e * n_t
        for j in range(n_t):
            cur[t_off + j] += weights[w0 + j] * val
    elif kind == KIND_SPARSE:
        i0 = proj_ioff[q]
        x0 = proj_xoff[q]
        w0 = proj_woff[q]
        for k in range(indptr[i0 + e], indptr[i0 + e + 1]):
            cur[t_off + indices[x0 + k]] += weights[w0 + k] * val
    else:
        _conv_event(cur, t_off, weights, proj_woff[q], proj_geom[q], e, val)


@njit(cache=True)
def run_sample(x, T, ctr, out, counts, rec, trace,
               pop_off, pop_n, pop_model, pop_reset, pop_rec_off, in_ptr, in_proj, tr_ptr, tr_idx,
               theta, v_init, bias, core_of, n_packets, n_hops,
               proj_kind, proj_src, proj_tgt_off, proj_tgt_n, proj_woff, proj_ioff, proj_xoff, proj_geom,
               proj_mac, proj_wbytes, weights, indptr, indices, rc_off, rc_ptr, rc_core, rc_cnt,
               readout_pop, record_counts):
    """Run one sample for T steps.

    x: input values (engine order); ctr: (T, cores, N_DYNAMIC_COUNTERS) int64, filled;
    out: readout mean over T (engine order); counts: spikes per neuron (if record_counts);
    rec: (T, recorded neurons) uint8 spike raster; trace: (T, traced neurons) membrane after update.
    """
    n_total = theta.shape[0]
    n_pops = pop_off.shape[0]
    v = v_init.copy()
    cur = np.zeros(n_total)
    ev_idx = np.empty(n_total, np.int64)
    ev_val = np.empty(n_total)
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
                for k in range(s_off, s_off + ev_n[s]):
                    e = ev_idx[k]
                    _deliver(q, e, ev_val[k], cur, proj_kind, proj_tgt_off, proj_tgt_n, proj_woff, proj_ioff,
                             proj_xoff, proj_geom, weights, indptr, indices)
                    for r in range(rc_ptr[r0 + e], rc_ptr[r0 + e + 1]):
                        c = rc_core[r]
                        ctr[t, c, ctr_kind] += rc_cnt[r]
                        ctr[t, c, C_SYN_BYTES] += rc_cnt[r] * wb
            model = pop_model[p]
            if model == MODEL_IF:
                reset = pop_reset[p]
                m_ev = 0
                rec0 = pop_rec_off[p]
                for i in range(off, off + n):
                    m = v[i] + cur[i]
                    if m >= theta[i]:
                        if reset == RESET_SUBTRACT:
                            v[i] = m - theta[i]
                        elif reset == RESET_ZERO:
                            v[i] = 0.0
                        else:
                            v[i] = m
                        ev_idx[off + m_ev] = i - off
                        ev_val[off + m_ev] = theta[i]
                        m_ev += 1
                        c = core_of[i]
                        ctr[t, c, C_SPIKES] += 1
                        ctr[t, c, C_PACKETS] += n_packets[i]
                        ctr[t, c, C_HOPS] += n_hops[i]
                        if record_counts:
                            counts[i] += 1
                        if rec0 >= 0:
                            rec[t, rec0 + i - off] = 1
                    else:
                        v[i] = m
                ev_n[p] = m_ev
            elif model == MODEL_READOUT:
                for i in range(n):
                    acc[i] += cur[off + i]
                    v[off + i] = acc[i]
            for k in range(tr_ptr[p], tr_ptr[p + 1]):
                trace[t, k] = v[tr_idx[k]]
    for i in range(acc.shape[0]):
        out[i] = acc[i] / T


@njit(cache=True, parallel=True)
def run_batch(X, T, n_cores, n_rec, n_trace, record_counts,
              pop_off, pop_n, pop_model, pop_reset, pop_rec_off, in_ptr, in_proj, tr_ptr, tr_idx,
              theta, v_init, bias, core_of, n_packets, n_hops,
              proj_kind, proj_src, proj_tgt_off, proj_tgt_n, proj_woff, proj_ioff, proj_xoff, proj_geom,
              proj_mac, proj_wbytes, weights, indptr, indices, rc_off, rc_ptr, rc_core, rc_cnt, readout_pop):
    """Run every row of X (B, input size, engine order) independently, samples in parallel."""
    B = X.shape[0]
    n_total = theta.shape[0]
    ctr = np.zeros((B, T, n_cores, N_DYNAMIC_COUNTERS), np.int64)
    out = np.zeros((B, pop_n[readout_pop]))
    counts = np.zeros((B, n_total if record_counts else 1), np.int32)
    rec = np.zeros((B, T, n_rec), np.uint8)
    trace = np.zeros((B, T, n_trace))
    for b in prange(B):
        run_sample(X[b], T, ctr[b], out[b], counts[b], rec[b], trace[b],
                   pop_off, pop_n, pop_model, pop_reset, pop_rec_off, in_ptr, in_proj, tr_ptr, tr_idx,
                   theta, v_init, bias, core_of, n_packets, n_hops,
                   proj_kind, proj_src, proj_tgt_off, proj_tgt_n, proj_woff, proj_ioff, proj_xoff, proj_geom,
                   proj_mac, proj_wbytes, weights, indptr, indices, rc_off, rc_ptr, rc_core, rc_cnt,
                   readout_pop, record_counts)
    return out, ctr, counts, rec, trace


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
                if hist[c] == 0:
                    seen[n_seen] = c
                    n_seen += 1
                hist[c] += 1
        elif kind == KIND_SPARSE:
            for k in range(indptr[ioff + e], indptr[ioff + e + 1]):
                c = core_of[tgt_off + indices[xoff + k]]
                if hist[c] == 0:
                    seen[n_seen] = c
                    n_seen += 1
                hist[c] += 1
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
                        if hist[c] == 0:
                            seen[n_seen] = c
                            n_seen += 1
                        hist[c] += 1
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
