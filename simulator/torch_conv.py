"""Convolutions for the exact torch backend: spike levels through float32 tensor hardware with integer-exact sums.

A spiking population's output is an integer level per neuron (0/1 for IF, 0..τ for group neurons) times one
payload u (θ, θ/τ or 1). Its target current Σ_j w_j·u·level_j is computed from the float64 weights W = w·u
(the products the engine forms per event) split into S slices of b bits:

    W = 2^E · Σ_s q_s · 2^(-b(s+1)),   q_s integers, |q_s| <= 2^b,   S·b >= 55

Each slice's convolution Σ_j q_s,j · level_j is a sum of integers below 2^24, so float32 arithmetic (and TF32
tensor cores, whose 11-bit inputs hold every q_s exactly) computes it exactly in any summation order; the slices
are then combined in float64. The current equals the exact sum of the engine's products to within the last bits of
float64, as the engine's own sequential float64 sum does, and it is the same bit for bit on every device
(the float32 sums are exact, the float64 combination runs in one fixed order).

Convolutions run as im2col (one strided copy) + batched GEMM (cuBLAS on a GPU, with its tensor cores), in sub-batches
that bound the unfolded copy's memory. cuDNN is avoided for the exact path: its Winograd / FFT algorithms round.
On a GPU with Triton, a sliced convolution with one group runs instead as one kernel (torch_triton.sliced_conv):
patches read in place (never written out), float16 slices (|q_s| <= 2^11: exact) on tensor cores with float32 sums,
and the slices combined in float64 in the same order in registers, so one float64 current is written per target
instead of S float32 slice outputs plus a combination pass. Same bits as the GEMM path.
"""
from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F

from . import torch_triton

TOTAL_BITS = 55  # slices' precision below the largest weight: past float64's 53 bits
MAX_SLICE_BITS = 11  # what a TF32 input holds exactly (10 stored mantissa bits + the implicit one)
FLOAT16_EXACT = 2048  # levels up to this are exact in float16 and TF32 (11 significant bits)
MIN_SLICE_BITS = 4  # below this the slices cost more than a float64 convolution
UNFOLD_BYTES = 1 << 30  # unfolded columns + slice outputs per sub-batch
IM2COL = "strided"  # "strided": pad + one strided copy; "slices": one copy per kernel offset, borders zeroed
IMPLICIT = True  # on a GPU (Triton), sliced convolutions as torch_triton's implicit-GEMM kernel (same bits)
TF32 = True  # let the sliced GEMMs use TF32 tensor cores (exact for their inputs; see above)


def im2col(x, kh, kw, stride, padding):
    """(B, C, H, W) -> (B, C·kh·kw, Ho·Wo) patches in F.unfold's order (F.unfold on a GPU launches a kernel per
    sample): by IM2COL's method."""
    if IM2COL == "slices":
        return _im2col_slices(x, kh, kw, stride, padding)
    if padding[0] or padding[1]:
        x = F.pad(x, (padding[1], padding[1], padding[0], padding[0]))
    b, c, h, w = x.shape
    ho, wo = (h - kh) // stride[0] + 1, (w - kw) // stride[1] + 1
    s0, s1, s2, s3 = x.stride()
    patches = x.as_strided((b, c, kh, kw, ho, wo), (s0, s1, s2, s3, s2 * stride[0], s3 * stride[1]))
    return patches.reshape(b, c * kh * kw, ho * wo)


def _im2col_slices(x, kh, kw, stride, padding):
    """im2col as one copy per kernel offset (i, j) of the input rectangle it sees, zeros where it sees padding."""
    b, c, h, w = x.shape
    (sh, sw), (ph, pw) = stride, padding
    ho, wo = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    cols = torch.empty(b, c, kh, kw, ho, wo, dtype=x.dtype, device=x.device)
    for i in range(kh):
        di = i - ph
        y0, y1 = max(0, (sh - 1 - di) // sh), min(ho, (h - 1 - di) // sh + 1)  # 0 <= y·sh + di < h
        for j in range(kw):
            dj = j - pw
            x0, x1 = max(0, (sw - 1 - dj) // sw), min(wo, (w - 1 - dj) // sw + 1)
            dst = cols[:, :, i, j]
            if y1 <= y0 or x1 <= x0:
                dst.zero_()
                continue
            dst[:, :, :y0].zero_()
            dst[:, :, y1:].zero_()
            dst[:, :, y0:y1, :x0].zero_()
            dst[:, :, y0:y1, x1:].zero_()
            dst[:, :, y0:y1, x0:x1] = x[:, :, y0 * sh + di:(y1 - 1) * sh + di + 1:sh,
                                        x0 * sw + dj:(x1 - 1) * sw + dj + 1:sw]
    return cols.reshape(b, c * kh * kw, ho * wo)


def conv_gemm(x, weight, stride, padding, groups):
    """F.conv2d(x, weight, stride=stride, padding=padding, groups=groups) as im2col + batched matmul, in x's dtype.

    x (B, C, H, W) -> (B, O, Ho, Wo). Float64 goes to the GPU's FP64 tensor cores through cuBLAS."""
    b, c, h, w = x.shape
    o, cg, kh, kw = weight.shape
    ho = (h + 2 * padding[0] - kh) // stride[0] + 1
    wo = (w + 2 * padding[1] - kw) // stride[1] + 1
    k, length = cg * kh * kw, ho * wo
    per_sample = x.element_size() * (c * kh * kw * length + o * length)
    sub = max(1, UNFOLD_BYTES // per_sample)
    out = torch.empty(b, o, length, dtype=x.dtype, device=x.device)
    wg = weight.reshape(groups, o // groups, k)
    for i in range(0, b, sub):
        cols = im2col(x[i:i + sub], kh, kw, stride, padding)  # (b', C·kh·kw, L)
        if groups == 1:
            torch.matmul(wg[0], cols, out=out[i:i + sub])
        else:
            cols = cols.reshape(cols.shape[0], groups, k, length)
            out[i:i + sub] = torch.matmul(wg, cols).reshape(cols.shape[0], o, length)
    return out.reshape(b, o, ho, wo)


class SlicedConv:
    """A convolution of integer levels (at most `max_level` in magnitude) with float64 weights, exact per slice."""

    def __init__(self, weight64, stride, padding, groups, max_level, bits):
        self.stride, self.padding, self.groups = tuple(stride), tuple(padding), int(groups)
        self.out_channels, _, self.kh, self.kw = weight64.shape
        self.max_level = max_level
        amax = float(weight64.abs().max())
        self.zero = amax == 0.0
        self._packed = self._scales = None  # the kernel's weights, made on its first call
        self._broken = False  # the kernel failed to compile or launch for this convolution
        if self.zero:
            return
        e = math.frexp(amax)[1]  # amax < 2^e
        r = torch.ldexp(weight64, torch.tensor(-e, dtype=weight64.dtype, device=weight64.device))
        n_slices = -(-TOTAL_BITS // bits)
        slices, self.scales = [], []
        for s in range(1, n_slices + 1):
            q = torch.round(torch.ldexp(r, torch.tensor(bits * s, dtype=r.dtype, device=r.device)))
            r = r - torch.ldexp(q, torch.tensor(-bits * s, dtype=r.dtype, device=r.device))  # exact: r's low bits
            slices.append(q)
            self.scales.append(math.ldexp(1.0, e - bits * s))
        o, cg, kh, kw = weight64.shape
        g = self.groups
        # output channels ordered (group, slice, channel of the group): one GEMM per group yields every slice
        stacked = torch.stack([q.reshape(g, o // g, cg, kh, kw) for q in slices], 1)  # (g, S, O/g, cg, kh, kw)
        self.weight = stacked.reshape(g * n_slices * (o // g), cg, kh, kw).to(torch.float32)

    @staticmethod
    def takes(weight64):
        """Whether the weights slice exactly: all zero, or the largest at least 2^-900, so that every slice's scale
        2^(e - b·s) is a normal float64 (an integer times it exact)."""
        amax = float(weight64.abs().max()) if weight64.numel() else 0.0
        return amax == 0.0 or amax >= 2.0 ** -900

    @staticmethod
    def bits_for(fan_in, max_level):
        """Bits per slice that keep every float32 partial sum an exact integer (|sum| < 2^24), or 0 when too few."""
        bound = fan_in * max_level
        bits = min(MAX_SLICE_BITS, 23 - math.ceil(math.log2(bound + 1)))
        return bits if bits >= MIN_SLICE_BITS else 0

    def uses_kernel(self, device):
        """Whether calls on `device` run torch_triton's implicit-GEMM kernel (CUDA, one group, levels exact in
        float16, the kernel checked on this device) rather than im2col + GEMM: the same currents, the patches
        never written."""
        return (IMPLICIT and not self.zero and not self._broken and self.groups == 1
                and self.max_level <= FLOAT16_EXACT and torch_triton.available(device) and kernel_ok(device))

    def level_dtype(self, device):
        """The dtype calls on `device` take the levels in: float16 for the kernel, float32 for the GEMM path."""
        return torch.float16 if self.uses_kernel(device) else torch.float32

    def __call__(self, levels, in_shape):
        """levels (B, n) integer levels (float32 for the GEMM path; any float dtype for the kernel, float16 read
        fastest) -> float64 currents (B, O·Ho·Wo), canonical layout."""
        b = levels.shape[0]
        if self.zero:
            _, h, w = in_shape
            ho = (h + 2 * self.padding[0] - self.kh) // self.stride[0] + 1
            wo = (w + 2 * self.padding[1] - self.kw) // self.stride[1] + 1
            return torch.zeros(b, self.out_channels * ho * wo, dtype=torch.float64, device=levels.device)
        if self.uses_kernel(levels.device):
            try:
                return self._kernel(levels, in_shape)
            except Exception as err:  # noqa: BLE001 -- a configuration that does not compile or launch here
                self._broken = True
                warnings.warn(f"the Triton convolution kernel failed on {levels.device} for a {self.out_channels}-"
                              f"channel {self.kh}x{self.kw} convolution of {in_shape} ({type(err).__name__}: "
                              f"{err}); this convolution runs as im2col + GEMM", RuntimeWarning, stacklevel=2)
        return self._gemm(levels, in_shape)

    def _kernel(self, levels, in_shape):
        """The currents by torch_triton.sliced_conv (zeros come out +0.0, as the engine's)."""
        if self._packed is None:  # the slices (S, O, C·kh·kw) as the kernel reads them
            q = self.weight.reshape(len(self.scales), self.out_channels, -1)
            self._packed = torch_triton.pack_slices(q)
            self._scales = torch.tensor(self.scales, dtype=torch.float64, device=levels.device)
        return torch_triton.sliced_conv(levels, self._packed, self._scales, in_shape, self.out_channels,
                                        (self.kh, self.kw), self.stride, self.padding)

    def _gemm(self, levels, in_shape):
        """The currents by im2col + float32 GEMM per slice (TF32 only where the levels fit its 11 bits)."""
        b = levels.shape[0]
        y = _gemm_tf32(levels.to(torch.float32).reshape(b, *in_shape), self.weight, self.stride, self.padding,
                       self.groups, self.max_level <= FLOAT16_EXACT)
        g, n_slices = self.groups, len(self.scales)
        y = y.reshape(b, g, n_slices, self.out_channels // g, -1)
        cur = y[:, :, 0].to(torch.float64).mul_(self.scales[0])
        for s in range(1, n_slices):
            cur.add_(y[:, :, s], alpha=self.scales[s])  # integer · 2^k: exact product, one rounding per add
        return cur.reshape(b, -1)


_KERNEL_OK = {}  # device -> whether the sliced-conv kernel gave the GEMM path's currents on the probe


def kernel_ok(device):
    """Whether torch_triton's sliced-conv kernel gives the GEMM path's currents on `device`: checked once per device
    and process on a probe (5 and 11 slices, 16 and 70 output channels, stride, padding, negative levels); a
    compile error or any differing current warns once and sliced convolutions use im2col + GEMM there."""
    return torch_triton.checked_once(_KERNEL_OK, device, _probe, "convolution kernel",
                                     "sliced convolutions run as im2col + GEMM")


def _probe(device):
    """None if the kernel's currents equal the GEMM path's bit for bit on the probe, else which differ."""
    gen = torch.Generator().manual_seed(0)
    for c, o, stride, max_level in ((8, 70, (1, 1), 4), (8, 16, (2, 1), FLOAT16_EXACT)):
        w = torch.randn(o, c, 3, 3, generator=gen, dtype=torch.float64).to(device)
        conv = SlicedConv(w, stride, (1, 2), 1, max_level, SlicedConv.bits_for(c * 9, max_level))
        levels = torch.randint(-max_level, max_level + 1, (3, c * 81), generator=gen).to(device)
        got = conv._kernel(levels.to(torch.float16), (c, 9, 9))
        want = conv._gemm(levels.to(torch.float32), (c, 9, 9)) + 0.0  # -0.0 -> +0.0, as the kernel gives
        if not torch.equal(got.view(torch.int64), want.view(torch.int64)):
            return f"its currents differ from im2col + GEMM ({len(conv.scales)} slices, {o} channels)"
    return None


def _gemm_tf32(x, weight, stride, padding, groups, levels_fit=True):
    """conv_gemm with TF32 tensor cores allowed (when TF32 and the levels fit TF32's 11 bits), the caller's setting
    restored."""
    matmul = torch.backends.cuda.matmul
    before = matmul.allow_tf32
    matmul.allow_tf32 = TF32 and levels_fit and x.is_cuda
    try:
        return conv_gemm(x, weight, stride, padding, groups)
    finally:
        matmul.allow_tf32 = before
