"""The engine-order sums of torch_ordered as one Triton kernel per projection, for CUDA devices.

torch_ordered adds a projection's terms one vectorized step per fan-in position: two kernels per position, each
reading and writing the whole current, so a ViT's step moves gigabytes per projection and its time goes into memory
traffic and launches. Here each program keeps a block of targets' currents in registers and adds the same terms in the
same order: `acc = acc + x * w`, the product rounded, then the sum (compiled with `enable_fp_fusion=False`: no fused
multiply-add, which would round once and give other last bits than the engine). One launch per projection and step.

Used when the device is CUDA and Triton imports (it ships with PyTorch's CUDA wheels); SPIKEFORGE_TRITON=0 turns it
off. TRITON_INTERPRET=1 runs the same kernels on the CPU (numpy) for tests without a GPU.
"""
from __future__ import annotations

import os

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # a CPU-only install: the kernels are never asked for
    triton = None


def available(device):
    """Whether ordered sums on `device` go through these kernels."""
    if triton is None or os.environ.get("SPIKEFORGE_TRITON", "1") == "0":
        return False
    return torch.device(device).type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1"


if triton is not None:

    @triton.jit
    def _rows_kernel(cur, xt, w, M, N, K, ROWS, PER_ROW: tl.constexpr, BLOCK_M: tl.constexpr,
                     BLOCK_N: tl.constexpr):
        """cur (M, N) += Σ_k xt[k, m] · w[k, n] (w[k, m % ROWS, n] when PER_ROW), k = 0, 1, ... in order."""
        rm = (tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
        rn = (tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)
        in_m, in_n = rm < M, rn < N
        inside = in_m[:, None] & in_n[None, :]
        at = cur + rm[:, None] * N + rn[None, :]
        acc = tl.load(at, mask=inside, other=0.0)
        row = rm % ROWS
        for k in tl.range(0, K):
            xk = tl.load(xt + k * M + rm, mask=in_m, other=0.0)
            if PER_ROW:
                wk = tl.load(w + (k * ROWS + row[:, None]) * N + rn[None, :], mask=inside, other=0.0)
                acc = acc + xk[:, None] * wk
            else:
                wk = tl.load(w + k * N + rn, mask=in_n, other=0.0)
                acc = acc + xk[:, None] * wk[None, :]
        tl.store(at, acc, mask=inside)

    @triton.jit
    def _ell_kernel(cur, x, src, w, B, N, S, WIDTH, BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr):
        """cur (B, N) += Σ_k x[b, src[k, n]] · w[k, n], k = 0, 1, ... in order (an ELL table)."""
        rb = (tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)).to(tl.int64)
        rn = (tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)
        in_b, in_n = rb < B, rn < N
        inside = in_b[:, None] & in_n[None, :]
        at = cur + rb[:, None] * N + rn[None, :]
        acc = tl.load(at, mask=inside, other=0.0)
        for k in tl.range(0, WIDTH):
            s = tl.load(src + k * N + rn, mask=in_n, other=0)
            wk = tl.load(w + k * N + rn, mask=in_n, other=0.0)
            xv = tl.load(x + rb[:, None] * S + s[None, :], mask=inside, other=0.0)
            acc = acc + xv * wk[None, :]
        tl.store(at, acc, mask=inside)

    @triton.jit
    def _matmul_kernel(out, a, b, sa, sb, M, N, K, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
        """out[p] (M, N) = Σ_k (a_ik·(b_kj + sb_kj) + sa_ik·b_kj), k in order, from 0: an EC matrix product's
        increment S_A(t)·S_B(t) - S_A(t-1)·S_B(t-1) for sample p (a, sa (P, M, K); b, sb (P, K, N))."""
        p = tl.program_id(0).to(tl.int64)
        ri = (tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
        rj = (tl.program_id(2) * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)
        in_i, in_j = ri < M, rj < N
        at_a, at_b = p * M * K + ri * K, p * K * N + rj
        acc = tl.zeros((BLOCK_M, BLOCK_N), tl.float64)
        for k in tl.range(0, K):
            a_k = tl.load(a + at_a + k, mask=in_i, other=0.0)
            sa_k = tl.load(sa + at_a + k, mask=in_i, other=0.0)
            b_k = tl.load(b + at_b + k * N, mask=in_j, other=0.0)
            sb_k = tl.load(sb + at_b + k * N, mask=in_j, other=0.0)
            acc = acc + (a_k[:, None] * (b_k + sb_k)[None, :] + sa_k[:, None] * b_k[None, :])
        tl.store(out + p * M * N + ri[:, None] * N + rj[None, :], acc, mask=in_i[:, None] & in_j[None, :])


def _blocks(n):
    """(block of rows, block of targets) for n targets per row: float64 accumulators stay in registers."""
    block_n = min(64, triton.next_power_of_2(max(int(n), 1)))
    return 4096 // block_n if block_n < 64 else 64, block_n


def ordered_rows(cur, xt, w, rows=1):
    """cur (M, N), contiguous, += xt (K, M) against w (K, N), or (K, rows, N) per row m % rows; in place."""
    m, n = cur.shape
    k = xt.shape[0]
    if k == 0 or m == 0 or n == 0:
        return
    block_m, block_n = _blocks(n)
    grid = (triton.cdiv(m, block_m), triton.cdiv(n, block_n))
    _rows_kernel[grid](cur, xt, w, m, n, k, rows, PER_ROW=w.dim() == 3, BLOCK_M=block_m, BLOCK_N=block_n,
                       enable_fp_fusion=False)


def ordered_ell(cur, x, src, w):
    """cur (B, N), contiguous, += Σ_k x[:, src[k]] · w[k] over the ELL table src, w (width, N); in place."""
    b, n = cur.shape
    width = src.shape[0]
    if width == 0 or b == 0 or n == 0:
        return
    block_b, block_n = _blocks(n)
    grid = (triton.cdiv(b, block_b), triton.cdiv(n, block_n))
    _ell_kernel[grid](cur, x, src, w, b, n, x.shape[1], width, BLOCK_B=block_b, BLOCK_N=block_n,
                      enable_fp_fusion=False)


def ec_matmul_sum(a, b, s_a, s_b):
    """(P, M, N): Σ_k a_ik·(b_kj + S_B,kj) + S_A,ik·b_kj per sample, k in order (torch_backend._matmul_update);
    all four operands contiguous."""
    p, m, k = a.shape
    n = b.shape[2]
    out = torch.empty(p, m, n, dtype=a.dtype, device=a.device)
    if out.numel() == 0:
        return out
    block_m = block_n = 32 if max(m, n) <= 32 else 64
    grid = (p, triton.cdiv(m, block_m), triton.cdiv(n, block_n))
    _matmul_kernel[grid](out, a, b, s_a, s_b, m, n, k, BLOCK_M=block_m, BLOCK_N=block_n, enable_fp_fusion=False)
    return out
