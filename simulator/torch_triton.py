"""The torch backend's Triton kernels for CUDA devices: the engine-order sums of torch_ordered, one per projection.

torch_ordered adds a projection's terms one vectorized step per fan-in position: two kernels per position, each
reading and writing the whole current, so a ViT's step moves gigabytes per projection and its time goes into memory
traffic and launches. Here each program keeps a block of targets' currents in registers and adds the same terms in the
same order: `acc = acc + x * w`, the product rounded, then the sum (compiled with `enable_fp_fusion=False`: no fused
multiply-add, which would round once and give other last bits than the engine). One launch per projection and step.
The EC nodes' F (softmax, LayerNorm, GELU; kernels._ec_group) runs here too, on the device, with ecmath's exp and erf:
before, every EC node and step sent its sums to the host and back (80 % of a ViT's GPU time). So do torch_conv's
sliced convolutions of spike levels, as one implicit GEMM (sliced_conv): no im2col matrix, every weight slice of a
channel tile in one float16 GEMM with exact float32 sums, the slices combined in float64 in order in registers.

Used when the device is CUDA and Triton imports (it ships with PyTorch's CUDA wheels); SPIKEFORGE_TRITON=0 turns it
off. TRITON_INTERPRET=1 runs the same kernels on the CPU (numpy) for tests without a GPU.
"""
from __future__ import annotations

import os
import warnings

import numpy as np
import torch

from . import ecmath
from . import kernels as K

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
    def _current_tile(cur, M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
        """This program's tile of the current cur (M, N): rows, columns, their masks, the tile's mask, its
        addresses and its values."""
        rm = (tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
        rn = (tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)
        in_m, in_n = rm < M, rn < N
        inside = in_m[:, None] & in_n[None, :]
        at = cur + rm[:, None] * N + rn[None, :]
        return rm, rn, in_m, in_n, inside, at, tl.load(at, mask=inside, other=0.0)

    @triton.jit
    def _rows_kernel(cur, xt, w, M, N, K, ROWS, PER_ROW: tl.constexpr, BLOCK_M: tl.constexpr,
                     BLOCK_N: tl.constexpr):
        """cur (M, N) += Σ_k xt[k, m] · w[k, n] (w[k, m % ROWS, n] when PER_ROW), k = 0, 1, ... in order."""
        rm, rn, in_m, in_n, inside, at, acc = _current_tile(cur, M, N, BLOCK_M, BLOCK_N)
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
        rb, rn, in_b, in_n, inside, at, acc = _current_tile(cur, B, N, BLOCK_B, BLOCK_N)
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

    @triton.jit
    def _sliced_conv_kernel(out, x, w, scales, M, C, H, W, N, HO, WO, K, SH, SW, PH, PW, KH: tl.constexpr,
                            KW: tl.constexpr, S: tl.constexpr, S_PAD: tl.constexpr, WIDTH: tl.constexpr,
                            BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
        """out (B, N, HO, WO) = Σ_s scales[s] · conv(x, q_s), s = 0, 1, ... added in order in float64, for x (B, C,
        H, W) integer levels and S integer weight slices q_s, packed by pack_slices as w (tiles, K = C·KH·KW,
        S_PAD, BLOCK_N) float16 (both exact; WIDTH = S_PAD·BLOCK_N): one GEMM per tile of BLOCK_N channels gives
        every slice's sum, in float32 (exact: integers below 2^24). M = B·HO·WO output positions; patches read in
        place (implicit im2col), each once for all slices."""
        rm = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
        in_m = rm < M
        length = HO * WO
        b, pos = rm // length, rm % length
        y0, x0 = (pos // WO) * SH - PH, (pos % WO) * SW - PW  # the patch's corner in the input
        at_x = x + b.to(tl.int64) * (C * H * W)
        at_w = w + tl.program_id(1).to(tl.int64) * K * WIDTH + tl.arange(0, WIDTH)[None, :]
        acc = tl.zeros((BLOCK_M, WIDTH), tl.float32)
        for k0 in tl.range(0, K, BLOCK_K):
            rk = k0 + tl.arange(0, BLOCK_K)
            in_k = rk < K
            c, i, j = rk // (KH * KW), (rk // KW) % KH, rk % KW
            yy, xx = y0[:, None] + i[None, :], x0[:, None] + j[None, :]
            seen = in_m[:, None] & in_k[None, :] & (yy >= 0) & (yy < H) & (xx >= 0) & (xx < W)
            a = tl.load(at_x[:, None] + (c[None, :] * H + yy) * W + xx, mask=seen, other=0.0)
            ws = tl.load(at_w + rk[:, None] * WIDTH, mask=in_k[:, None], other=0.0)
            acc = tl.dot(a.to(tl.float16), ws, acc)
        acc3 = tl.reshape(acc, (BLOCK_M, S_PAD, BLOCK_N))
        which = tl.arange(0, S_PAD)[None, :, None]
        cur = tl.zeros((BLOCK_M, BLOCK_N), tl.float64)
        for s in tl.static_range(S):
            sums = tl.sum(tl.where(which == s, acc3, 0.0), axis=1)  # slice s's sums (one term each: exact)
            part = sums.to(tl.float64) * tl.load(scales + s)  # an integer times a power of two: exact
            if s == 0:
                cur = part
            else:
                cur = cur + part
        rn = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
        at = out + (b.to(tl.int64) * N * length + pos)[:, None] + rn[None, :] * length
        tl.store(at, cur, mask=in_m[:, None] & (rn < N)[None, :])

    # EC functions (kernels._ec_group, ecmath): every float64 constant is loaded from `consts` (CONSTS below), as a
    # Python float in a kernel could be materialized in float32 (literals here are exact in float32); float64 `/`
    # and tl.sqrt are IEEE round-to-nearest (div.rn.f64, sqrt.rn.f64; tl.div_rn / sqrt_rn take float32 only)
    @triton.jit
    def _exp(x, consts):
        """ecmath.exp, lane by lane."""
        k = tl.floor(x * tl.load(consts + 14) + 0.5)
        r = (x - k * tl.load(consts + 15)) - k * tl.load(consts + 16)
        p = tl.load(consts + 13) + tl.zeros_like(x)
        for j in tl.range(0, 13):
            p = p * r + tl.load(consts + 12 - j)
        k = tl.minimum(tl.maximum(k, -1022.0), 1023.0)  # lanes outside the range are replaced below
        y = p * ((k.to(tl.int64) + 1023) << 52).to(tl.float64, bitcast=True)
        y = tl.where(x < tl.load(consts + 20), 0.0, y)
        return tl.where(x > tl.load(consts + 21), float("inf"), y)

    @triton.jit
    def _erf(x, consts):
        """ecmath.erf, lane by lane: both branches computed, one kept."""
        a = tl.abs(x)
        e = _exp(-(a * a), consts)
        u = a * a
        w = (u * u) * (u * u)
        quarter = tl.where(a < 1.0, 5, tl.where(a < 1.75, 8, 13))  # ecmath.erf_terms / 4
        q0 = tl.zeros_like(a)
        q1 = tl.zeros_like(a)
        q2 = tl.zeros_like(a)
        q3 = tl.zeros_like(a)
        for j in tl.range(0, 13):  # k = 12 .. 0; a lane's chains start at k = quarter - 1, from 0
            k = 12 - j
            on = k < quarter
            q0 = tl.where(on, q0 * w + tl.load(consts + 25 + 4 * k), q0)
            q1 = tl.where(on, q1 * w + tl.load(consts + 26 + 4 * k), q1)
            q2 = tl.where(on, q2 * w + tl.load(consts + 27 + 4 * k), q2)
            q3 = tl.where(on, q3 * w + tl.load(consts + 28 + 4 * k), q3)
        series = tl.load(consts + 17) * e * (a * (q0 + u * (q1 + u * (q2 + u * q3))))
        f = a
        n = tl.zeros_like(a) + 40.0  # 40, 39, ..., 1
        for _ in tl.range(0, 40):
            f = a + (0.5 * n) / f
            n = n - 1.0
        tail = 1.0 - e / (tl.load(consts + 18) * f)
        y = tl.where(a < 2.5, series, tail)
        y = tl.where(a >= 6.0, 1.0, y)
        return tl.where(x < 0.0, -y, y)

    @triton.jit
    def _ec_kernel(out, total, prev, consts, R, G, FUNC: tl.constexpr, BLOCK: tl.constexpr):
        """kernels._ec_group for R groups of G values (one lane per group, its values in index order)."""
        rows = (tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)).to(tl.int64)
        live = rows < R
        base = rows * G
        tt = tl.load(consts + 22)
        gf = tl.load(consts + 24)  # G as a float
        mean = tl.zeros((BLOCK,), tl.float64)
        scale = tl.zeros((BLOCK,), tl.float64)
        top = tl.zeros((BLOCK,), tl.float64)
        norm = tl.zeros((BLOCK,), tl.float64)
        if FUNC == 1:  # layernorm
            for i in tl.range(0, G):
                mean = mean + tl.load(total + base + i, mask=live, other=0.0) / tt
            mean = mean / gf
            var = tl.zeros((BLOCK,), tl.float64)
            for i in tl.range(0, G):
                d = tl.load(total + base + i, mask=live, other=0.0) / tt - mean
                var = var + d * d
            scale = (1.0 + tl.zeros_like(var)) / tl.sqrt(var / gf + tl.load(consts + 23))
        if FUNC == 2:  # softmax
            top = top - float("inf")
            for i in tl.range(0, G):
                top = tl.maximum(top, tl.load(total + base + i, mask=live, other=0.0) / tt)
            for i in tl.range(0, G):
                norm = norm + _exp(tl.load(total + base + i, mask=live, other=0.0) / tt - top, consts)
        for i in tl.range(0, G):
            x = tl.load(total + base + i, mask=live, other=0.0) / tt
            if FUNC == 0:  # gelu
                y = (0.5 * x) * (1.0 + _erf(x / tl.load(consts + 19), consts))
            elif FUNC == 1:
                y = (x - mean) * scale
            else:
                y = _exp(x - top, consts) / norm
            ty = tt * y
            tl.store(out + base + i, ty - tl.load(prev + base + i, mask=live, other=0.0), mask=live)
            tl.store(prev + base + i, ty, mask=live)


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


CONV_BLOCK_M = 128  # output positions per program of the sliced convolution
INT32_POSITIONS = 2 ** 31 - 1  # output positions per launch (B·HO·WO), indexed in int32 in the kernel


def pack_slices(q):
    """Integer weight slices q (S, O, K) -> (w (tiles, K, S_PAD, BLOCK_N) float16, BLOCK_N) for sliced_conv: a
    tile's channels of every slice side by side, slices padded with zeros to a power of two; |q| <= 2^11: exact."""
    n_slices, o, k = q.shape
    s_pad = triton.next_power_of_2(n_slices)
    block_n = max(16 // s_pad, min(triton.next_power_of_2(o), 256 // s_pad))  # GEMM width >= 16 (tl.dot)
    tiles = triton.cdiv(o, block_n)
    w = torch.zeros(s_pad, tiles * block_n, k, dtype=torch.float16, device=q.device)
    w[:n_slices, :o] = q
    return w.reshape(s_pad, tiles, block_n, k).permute(1, 3, 0, 2).contiguous(), block_n


def sliced_conv(levels, packed, scales, in_shape, out_channels, kernel, stride, padding):
    """torch_conv.SlicedConv's currents (B, O·HO·WO) float64 from levels (B, C·H·W) (any float dtype) with slices
    packed by pack_slices and their scales (S,) float64 on the device; groups = 1."""
    c, h, w = in_shape
    kh, kw = kernel
    packed, block_n = packed
    tiles, k, s_pad, _ = packed.shape
    ho = (h + 2 * padding[0] - kh) // stride[0] + 1
    wo = (w + 2 * padding[1] - kw) // stride[1] + 1
    levels, b = levels.contiguous(), levels.shape[0]
    out = torch.empty(b, out_channels * ho * wo, dtype=torch.float64, device=levels.device)
    if out.numel() == 0:
        return out
    block_m = CONV_BLOCK_M
    width = s_pad * block_n
    warps = 8 if block_m * width >= 128 * 128 else 4
    per_launch = max(1, (INT32_POSITIONS - block_m) // (ho * wo))  # the kernel counts positions in int32
    for i in range(0, b, per_launch):
        part, into = levels[i:i + per_launch], out[i:i + per_launch]
        m = part.shape[0] * ho * wo
        _sliced_conv_kernel[(triton.cdiv(m, block_m), tiles)](
            into, part, packed, scales, m, c, h, w, out_channels, ho, wo, k, stride[0], stride[1], padding[0],
            padding[1], KH=kh, KW=kw, S=len(scales), S_PAD=s_pad, WIDTH=width, BLOCK_M=block_m, BLOCK_N=block_n,
            BLOCK_K=32, num_warps=warps, enable_fp_fusion=False)
    return out


# float64 constants of the EC kernels, by index: 0-13 exp's 1/n!, 14 1/ln2, 15 LN2_HI, 16 LN2_LO, 17 2/√π, 18 √π,
# 19 √2, 20-21 exp's range, per call 22 t + 1, 23 eps, 24 the group size; 25-76 erf's c_n
CONSTS = ecmath.EXP_COEFFS + (ecmath.INV_LN2, ecmath.LN2_HI, ecmath.LN2_LO, ecmath.TWO_OVER_SQRT_PI, ecmath.SQRT_PI,
                              ecmath.SQRT2, ecmath.EXP_MIN, ecmath.EXP_MAX)
if not (ecmath.ERF_SERIES_END == 2.5 and ecmath.ERF_SERIES_TERMS == 52 and ecmath.ERF_CF_DEPTH == 40
        and ecmath.ERF_ONE == 6.0 and ecmath.EXP_DEGREE == 13):
    raise AssertionError("torch_triton's EC kernel is written for ecmath's constants")
_CONSTS_ON = {}  # (device, t, eps, group) -> the constants on that device, made once


def ec_outputs(total, prev, t, func, group, eps):
    """EC outputs O(t) (B, n) of running sums `total` (B, n), updating prev (B, n) in place, as kernels.ec_outputs
    does on the host; func as kernels.EC_* (gelu 0, layernorm 1, softmax 2); both contiguous."""
    key = (str(total.device), t, float(eps), int(group))
    consts = _CONSTS_ON.get(key)
    if consts is None:
        consts = _CONSTS_ON[key] = torch.tensor(CONSTS + (t + 1.0, float(eps), float(group)) + ecmath.ERF_COEFFS,
                                                dtype=torch.float64, device=total.device)
    out = torch.empty_like(total)
    rows = total.numel() // group
    if rows:
        block = 64
        _ec_kernel[(triton.cdiv(rows, block),)](out, total, prev, consts, rows, group, FUNC=int(func), BLOCK=block,
                                                enable_fp_fusion=False)
    return out


def checked_once(cache, device, probe, what, instead):
    """Whether a kernel passes its probe on `device`, run once per device and process (results in `cache`):
    probe(device) returns None or what differs, and an error it raises (a compile or launch failure) counts as a
    difference. A difference warns once, naming the kernel, the device and the reason; the caller then takes its
    other path (`instead` says which)."""
    key = str(torch.device(device))
    if key not in cache:
        try:
            problem = probe(device)
        except Exception as err:  # noqa: BLE001 -- any compile or launch failure means: the other path
            problem = f"{type(err).__name__}: {err}"
        if problem:
            warnings.warn(f"the Triton {what} is not used on {key}: {problem}; {instead}", RuntimeWarning,
                          stacklevel=3)
        cache[key] = problem is None
    return cache[key]


_EC_CHECKED = {}  # device -> whether the EC kernel reproduced the engine on the probe


def ec_kernel_ok(device):
    """Whether the EC kernel gives the engine's bits on `device`: checked once per device and process on a probe
    (every function, two steps, zeros, ties, both erf branches, exp's range ends) against kernels.ec_outputs. A
    compile error or a mismatch warns once and the torch backend computes F on the host instead."""
    return checked_once(_EC_CHECKED, device, _ec_probe, "EC kernel", "EC functions run on the host")


def _ec_probe(device):
    """None if the EC kernel's outputs equal kernels.ec_outputs' on the probe, else which differ."""
    rng = np.random.default_rng(0)
    b, group = 3, 16
    for func in (K.EC_GELU, K.EC_LAYERNORM, K.EC_SOFTMAX):
        prev = rng.normal(0, 1, (b, 4 * group))
        prev_dev = torch.tensor(prev, device=device)  # a copy: the engine updates prev in place
        for t in range(2):
            total = rng.normal(0, 2, prev.shape) * 2.0 ** rng.integers(-4, 5, prev.shape)
            total[:, ::5] = 0.0
            total[:, 1::7] = total[:, 2::7]  # ties
            total[0, :4] = [9.0, -9.0, 4.0, -1500.0]
            want = K.ec_outputs(total.copy(), prev, t, func, group, 1e-5)
            got = ec_outputs(torch.tensor(total, device=device), prev_dev, t, func, group, 1e-5)
            if not (np.array_equal(got.cpu().numpy(), want) and np.array_equal(prev_dev.cpu().numpy(), prev)):
                return f"its outputs differ from the engine's (EC function {func}, step {t})"
    return None
