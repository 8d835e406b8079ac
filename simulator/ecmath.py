"""exp and erf for EC nodes from +, −, ×, ÷ and powers of two only, so that every backend gives the same bits.

An EC node's output O(t) = t·F(S(t)/t) − (t−1)·F(S(t−1)/(t−1)) is sent only when it is not exactly 0, so F's last
bit decides events. libm's exp and erf are not correctly rounded, differ between C libraries, and CUDA's differ from
both; these are fixed sequences of correctly rounded operations (no fused multiply-add), written the same way in
the engine (numba, here) and in the GPU kernels (torch_triton), and give the same result on any IEEE-754 machine.
Accuracy: within a few units in the last place of the true value (tests/test_ecmath.py measures it against libm).

exp(x): x = k·ln2 + r with k = floor(x/ln2 + 1/2) and r = (x − k·LN2_HI) − k·LN2_LO (ln2 split so that k·LN2_HI is
exact), exp(r) by its Taylor polynomial of degree 13 in Horner form (|r| <= 0.347: truncation below 1e-17),
times 2^k. exp(x) = 0 for x < −700 (below 2^−1009) and +inf for x > 709.
erf(x) = sign(x)·erf(|x|); for a = |x| < 2.5: (2/√π)·e^{−a²}·a·P(a²), P(u) = Σ_{n<N} c_n u^n with c_n =
2^n / (1·3···(2n+1)) (positive terms, no cancellation; N = 20 for a < 1, 32 for a < 1.75, else 52; no division),
as four Horner chains in w = u^4 (see erf); for 2.5 <= a < 6:
1 − e^{−a²}/(√π·f), f the continued fraction a + (1/2)/(a + 1/(a + (3/2)/(a + ...))) evaluated from depth 40 up; 1 for
a >= 6 (erfc(6) < 2^−55). Coefficients are exact rationals rounded once (fractions), the same on every machine.
Editing this file: numba's on-disk cache of kernels.py does not notice, so touch kernels.py (or delete its cached
*.nbi / *.nbc files) or the engine keeps the old functions.
"""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
from numba import njit

LN2_HI = 6.93147180369123816490e-01  # ln 2 in its leading 32 bits: k·LN2_HI is exact for |k| < 2^20
LN2_LO = 1.90821492927058770002e-10  # ln 2 − LN2_HI
INV_LN2 = 1.44269504088896338700e+00
TWO_OVER_SQRT_PI = 1.12837916709551255856e+00
SQRT_PI = 1.77245385090551588192e+00
SQRT2 = 1.41421356237309514547e+00  # √2 rounded (math.sqrt(2.0)): GELU divides by it
EXP_MIN, EXP_MAX = -700.0, 709.0
EXP_DEGREE = 13
ERF_SERIES_END, ERF_SERIES_TERMS, ERF_CF_DEPTH, ERF_ONE = 2.5, 52, 40, 6.0
EXP_COEFFS = tuple(1.0 / math.factorial(n) for n in range(EXP_DEGREE + 1))  # 1/n!, correctly rounded
ERF_COEFFS = tuple(float(Fraction(2 ** n, math.prod(range(1, 2 * n + 2, 2)))) for n in range(ERF_SERIES_TERMS))


@njit(cache=True, inline="always")
def pow2(k):
    """2^k for an integral float k in [−1022, 1023], exactly (built from its exponent bits)."""
    return np.int64((np.int64(k) + 1023) << 52).view(np.float64)


@njit(cache=True)
def exp(x):
    """e^x as described in the module docstring."""
    if x < EXP_MIN:
        return 0.0
    if x > EXP_MAX:
        return np.inf
    k = math.floor(x * INV_LN2 + 0.5)
    r = (x - k * LN2_HI) - k * LN2_LO
    p = EXP_COEFFS[EXP_DEGREE]
    for n in range(EXP_DEGREE - 1, -1, -1):
        p = p * r + EXP_COEFFS[n]
    return p * pow2(k)


@njit(cache=True, inline="always")
def erf_terms(a):
    """Terms of P for 0 <= a < 2.5, a multiple of 4: the last one below 1e-19 of the sum (20 below 1, 32 below
    1.75, else 52)."""
    return 20 if a < 1.0 else 32 if a < 1.75 else ERF_SERIES_TERMS


@njit(cache=True)
def erf(x):
    """erf(x) as described in the module docstring."""
    a = abs(x)
    if a >= ERF_ONE:
        y = 1.0
    elif a < ERF_SERIES_END:
        u = a * a
        w = (u * u) * (u * u)
        q0 = q1 = q2 = q3 = 0.0  # P(u) = Q0(w) + u·(Q1(w) + u·(Q2(w) + u·Q3(w))), Q_r(w) = Σ_k c_{4k+r} w^k
        for k in range(erf_terms(a) // 4 - 1, -1, -1):  # four independent chains: a quarter of the latency
            q0 = q0 * w + ERF_COEFFS[4 * k]
            q1 = q1 * w + ERF_COEFFS[4 * k + 1]
            q2 = q2 * w + ERF_COEFFS[4 * k + 2]
            q3 = q3 * w + ERF_COEFFS[4 * k + 3]
        p = q0 + u * (q1 + u * (q2 + u * q3))
        y = TWO_OVER_SQRT_PI * exp(-u) * (a * p)
    else:
        f = a
        for n in range(ERF_CF_DEPTH, 0, -1):
            f = a + (0.5 * n) / f
        y = 1.0 - exp(-(a * a)) / (SQRT_PI * f)
    return -y if x < 0.0 else y
