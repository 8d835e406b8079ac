"""Target currents summed in the numba engine's order, for the torch backend.

The engine starts a population's current from its bias and adds w·value per event, projection after projection
(in the order the file lists them), each projection's events in the source's engine order (kernels._deliver).
Float64 addition is not associative: a GEMM (cuBLAS tiles, split-K) rounds the same terms differently in the last
bit. Multi-threshold spikes (m >= θ·2^k - θ/2) and EC events (is O(t) exactly 0?) are decided at exact ties often
enough (quantized levels cancelling) that a last-bit difference changes events. Here the same terms are added in
the same order, so the currents are bit-identical: one vectorized step per position in a target's sum (its fan-in),
each step `cur += x[:, source] * w` over the whole batch and every target (product rounded, then the sum rounded,
as the engine does; no fused multiply-add). A term whose value or weight is 0 adds ±0, which changes nothing.
On a CUDA device with Triton the same sums run as one kernel per projection (torch_triton), the same terms in the
same order.
"""
from __future__ import annotations

import numpy as np
import torch

from . import torch_triton

ELL_ENTRIES = 1 << 27  # largest (fan-in x targets) table of a sparse projection summed in order


def source_rank(perm):
    """Canonical source index -> its position in the engine's event order (perm: engine position -> canonical)."""
    rank = np.empty(len(perm), np.int64)
    rank[perm] = np.arange(len(perm))
    return rank


class OrderedDense:
    """Dense W (targets, sources): target j gets Σ over sources in engine order of x_i·W_ji."""

    def __init__(self, weight, rank):
        order = np.argsort(rank)
        self.order = torch.as_tensor(order, device=weight.device)
        self.kernel = torch_triton.available(weight.device)
        self.w = weight.T[self.order].contiguous()  # (sources in order, targets)

    def accumulate(self, cur, x):
        xt = x[:, self.order].T.contiguous()  # (sources in order, batch)
        if self.kernel:
            return torch_triton.ordered_rows(_owned(cur), xt, self.w)
        for xk, wk in zip(xt.unbind(0), self.w.unbind(0)):
            cur += xk[:, None] * wk


class OrderedPointwise:
    """Token-wise W (d_out, d_in) over a (rows, d_in) source: target (r, j) gets Σ over channels c, in the engine
    order of the sources (r, c), of x_rc·W_jc."""

    def __init__(self, weight, rank, rows):
        d_out, d_in = weight.shape
        self.rows, self.d_in, self.d_out = rows, d_in, d_out
        per_row = np.argsort(rank.reshape(rows, d_in), axis=1, kind="stable")  # (rows, d_in) channels in order
        wt = weight.T.contiguous()  # (d_in, d_out)
        self.kernel = torch_triton.available(weight.device)
        if (per_row == per_row[:1]).all():  # every row in one channel order (a core holds whole channels or rows)
            self.gather = None
            self.order = torch.as_tensor(per_row[0], device=weight.device)
            self.wt = wt[self.order].contiguous()  # (d_in, d_out): channels in order
        else:
            self.gather = torch.as_tensor(per_row, device=weight.device)
            self.wt = wt[self.gather.T].contiguous()  # (d_in, rows, d_out): per position in order

    def accumulate(self, cur, x):
        b = x.shape[0]
        xv = x.reshape(b, self.rows, self.d_in)
        xs = xv[:, :, self.order] if self.gather is None else \
            torch.gather(xv, 2, self.gather.expand(b, -1, -1))
        xt = xs.permute(2, 0, 1).contiguous()  # (positions in order, batch, rows)
        if self.kernel:
            return torch_triton.ordered_rows(_owned(cur).view(b * self.rows, self.d_out),
                                             xt.view(self.d_in, b * self.rows), self.wt, self.rows)
        cv = cur.view(b, self.rows, self.d_out)
        for xk, wk in zip(xt.unbind(0), self.wt.unbind(0)):
            cv += xk[:, :, None] * wk


class OrderedSparse:
    """Sparse synapses (source, target, w): each target's terms sorted by source engine order (duplicates kept in
    file order), padded with zero weights to the largest fan-in (an ELL table)."""

    def __init__(self, sources, targets, weights, rank, n_targets, device):
        key = np.lexsort((rank[sources], targets))  # by target, then source order; stable
        sources, targets, weights = sources[key], targets[key], weights[key]
        fan_in = np.bincount(targets, minlength=n_targets)
        start = np.concatenate([[0], np.cumsum(fan_in)[:-1]])
        pos = np.arange(len(targets)) - start[targets]
        width = int(fan_in.max()) if len(fan_in) else 0
        src = np.zeros((width, n_targets), np.int64)
        w = np.zeros((width, n_targets))
        src[pos, targets], w[pos, targets] = sources, weights
        self.src, self.w = torch.as_tensor(src, device=device), torch.as_tensor(w, device=device)  # (width, targets)
        self.kernel = torch_triton.available(device)

    @staticmethod
    def fits(fan_in_max, n_targets):
        return fan_in_max * n_targets <= ELL_ENTRIES

    def accumulate(self, cur, x):
        if self.kernel:
            return torch_triton.ordered_ell(_owned(cur), x.contiguous(), self.src, self.w)
        for sk, wk in zip(self.src.unbind(0), self.w.unbind(0)):
            cur += x[:, sk] * wk


def _owned(cur):
    """cur itself, which a kernel writes in place: it must be one contiguous block."""
    if not cur.is_contiguous():
        raise ValueError("an ordered sum writes its current in place: it must be contiguous")
    return cur
