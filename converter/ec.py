"""Expectation compensation and multi-threshold neurons for spiking transformers (ECMT; METHODS.md).

Torch reference building blocks, stateful over time steps like the IF neurons in `spiking.py`
(`reset_state(batch)` then one call per step). Multi-threshold neurons are also a neuron model of the network
file and the numba engine (`multi_threshold_fire` is the shared rule), and ECFunction runs the file's `ec` nodes.

- `ECFunction(F)`: for a nonlinear F (softmax, LayerNorm, GELU) keeps the running input sum S(t) and
  outputs O(t) = t·F(S(t)/t) - (t-1)·F(S(t-1)/(t-1)), so that Σ_{t<=T} O(t) = T·F(mean input).
- `ECMatMul`: product of two spiking operands by accumulation: S_K(t) = S_A(t)·S_B(t) is updated with
  K(t) = A(t)B(t) + A(t)S_B(t-1) + S_A(t-1)B(t), and O(t) = S_K(t)/t - S_K(t-1)/(t-1).
- `MultiThresholdNeurons`: 2n levels θ1·2^k and -θ2·2^k (k < n); each step at most one spike, on the
  level that best matches the membrane; x = that level, v = m - x.
"""
from __future__ import annotations

import torch
from torch import nn


class ECFunction(nn.Module):
    """Expectation compensation of `fn` over time steps (exact in expectation, see module docstring)."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn
        self.total = None
        self.t = 0
        self.previous = None  # (t-1)·F(S(t-1)/(t-1))

    def reset_state(self, batch=None):
        self.total, self.t, self.previous = None, 0, None

    def forward(self, x):
        self.total = x.clone() if self.total is None else self.total + x
        self.t += 1
        current = self.t * self.fn(self.total / self.t)
        out = current if self.previous is None else current - self.previous
        self.previous = current
        return out


class Relay(ECFunction):
    """EC of the identity, which is the identity: each step's output is that step's input, exactly (no running
    sum, no rounding); a relay node forwards a value several later nodes read (format: ec function identity)."""

    def __init__(self):
        super().__init__(lambda x: x)

    def forward(self, x):
        return x


class ECMatMul(nn.Module):
    """Accumulating matrix product of two spiking operands (A @ B per step, batched over leading dims)."""

    def __init__(self):
        super().__init__()
        self.reset_state()

    def reset_state(self, batch=None):
        self.sum_a = self.sum_b = self.sum_k = None
        self.t = 0

    def forward(self, a, b):
        k = a @ b
        if self.sum_a is not None:
            k = k + a @ self.sum_b + self.sum_a @ b
        self.sum_a = a.clone() if self.sum_a is None else self.sum_a + a
        self.sum_b = b.clone() if self.sum_b is None else self.sum_b + b
        previous = self.sum_k
        self.sum_k = k if previous is None else previous + k
        self.t += 1
        if previous is None:
            return self.sum_k.clone()
        return self.sum_k / self.t - previous / (self.t - 1)


def multi_threshold_fire(m, t1, t2, n: int):
    """Signed level multiple s (±2^k, 0 if silent) each neuron fires for membrane m, and its value.

    Positive side: the largest k < n with m >= t1·2^k - t1/2 fires t1·2^k; negative side: the largest k with
    m < -t2·2^k + t2/2 fires -t2·2^k; nothing if -t2/2 <= m < t1/2. Same arithmetic as the numba kernel.
    """
    s = torch.zeros_like(m)
    for k in range(n):  # ascending levels: the last one that qualifies wins
        s = torch.where(m >= t1 * 2 ** k - t1 / 2, torch.full_like(s, 2 ** k), s)
        if t2 is not None:  # None: positive levels only
            s = torch.where(m < -t2 * 2 ** k + t2 / 2, torch.full_like(s, -(2 ** k)), s)
    return s, (t1 * s if t2 is None else torch.where(s > 0, t1 * s, t2 * s))


class MultiThresholdNeurons(nn.Module):
    """Multi-threshold neurons with n positive levels θ1·2^k and n negative levels -θ2·2^k (k = 0..n-1).

    m = v + I; positive side: the largest k with m >= θ1·2^k - θ1/2 fires level θ1·2^k; negative side:
    the most negative level λ with m < λ + θ2/2 fires; nothing if -θ2/2 <= m < θ1/2. x = level, v = m - x.
    forward returns the emitted value x (0 where silent); `channel` holds the level index (+k+1 / -(k+1)).
    """

    def __init__(self, theta_pos, theta_neg, n: int, v_init=None):
        super().__init__()
        if n < 1:
            raise ValueError(f"multi-threshold neurons need n >= 1 levels per sign, got {n}")
        self.register_buffer("theta_pos", torch.as_tensor(theta_pos, dtype=torch.float64))
        self.register_buffer("theta_neg", torch.as_tensor(theta_neg, dtype=torch.float64))
        if bool((self.theta_pos <= 0).any()) or bool((self.theta_neg <= 0).any()):
            raise ValueError("multi-threshold base thresholds θ1 and θ2 must be > 0")
        self.n = int(n)
        self.v_init = v_init
        self.v = None
        self.channel = None

    def reset_state(self, batch=None):
        self.v = None if self.v_init is None else torch.as_tensor(self.v_init).clone()

    def forward(self, current):
        dtype = current.dtype
        m = current if self.v is None else self.v + current
        t1, t2 = self.theta_pos.to(dtype), self.theta_neg.to(dtype)
        s, x = multi_threshold_fire(m, t1, t2, self.n)
        k = torch.log2(s.abs().clamp(min=1)).round().to(torch.int64)
        self.channel = torch.where(s > 0, k + 1, torch.where(s < 0, -(k + 1), torch.zeros_like(k)))
        self.v = m - x
        return x
