"""Torch spiking modules: the reference implementation of a converted network.

`SpikingNetwork` runs a `Network` (the in-memory form of a network file) time
step by time step with dense torch tensors. The numba simulator must produce
the same spikes for the same file. Semantics (DESIGN.md): populations in
topological order, layer-synchronous (spikes of step t reach the next layer at
step t), analog input injected as constant current every step, non-spiking
readout whose output is the mean input current over T.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from spikeforge.simulator.network import Network

from .ec import ECFunction, ECMatMul, Relay, multi_threshold_fire

# F of each EC node function (normalization over the last dimension, no affine part)
_EC_FNS = {"gelu": lambda eps: F.gelu,
           "layernorm": lambda eps: (lambda x: F.layer_norm(x, x.shape[-1:], eps=eps)),
           "softmax": lambda eps: (lambda x: torch.softmax(x, -1))}


class IFNeurons(nn.Module):
    """Integrate-and-fire neurons: m = v + I; s = [m >= θ]; v = m - s·θ (soft reset) or 0 (zero reset).

    Output value x = θ·s (what the spike carries downstream). Options of if / lif populations (format 1.5):
    decay β (lif: m = β·v + I), unit spikes (x = s), strict test (s = [m > θ]).
    """

    vmax = 0.0  # > 0: fixed point (integer input per step, saturating membrane, unit payload)

    def value(self, spikes):
        return spikes if (self.vmax or self.unit) else spikes * self.threshold

    def __init__(self, threshold, v_init, reset="subtract", decay=None, unit=False, strict=False):
        super().__init__()
        self.register_buffer("threshold", threshold)
        self.register_buffer("v_init", v_init)
        self.decay = decay
        self.reset = reset
        self.unit, self.strict = unit, strict
        self.v = None

    def reset_state(self, batch):
        self.v = self.v_init.expand(batch, *self.v_init.shape).clone()

    def integrate(self, current):
        """m = v + I; in fixed point I is rounded half up and m saturates at [-vmax - 1, vmax] (as the engine)."""
        v = self.v if self.decay is None else self.v * self.decay
        if not self.vmax:
            return v + current
        return (v + torch.floor(current + 0.5)).clamp(-self.vmax - 1, self.vmax)

    def fires(self, m):
        """[m >= θ], or [m > θ] with the strict test (bool)."""
        return (m > self.threshold) if self.strict else (m >= self.threshold)

    def after_reset(self, m, spikes):
        """The membrane after this step's spikes (0 / 1 values): m - s·θ, m·(1 - s) or m by the reset mode."""
        if self.reset == "subtract":
            return m - spikes * self.threshold
        if self.reset == "zero":
            return m * (spikes == 0)
        return m

    multi = False  # floor(m / θ) spikes a step where it fires (sinabs's MultiSpike)
    floor = False  # the membrane kept at or above -θ after the reset

    def forward(self, current):
        m = self.integrate(current)
        spikes = self.fires(m).to(m.dtype)
        if self.multi:
            spikes = torch.where(spikes > 0, torch.floor(m / self.threshold), spikes)
        self.v = self.after_reset(m, spikes)
        if self.floor:
            self.v = torch.maximum(self.v, -self.threshold)
        return spikes


class CubaNeurons(IFNeurons):
    """Current-based LIF neurons (format 1.12): i = α·i + I, m = β·v + i (membrane first: m = β·v + i, then
    i = α·i + I); s = [m >= θ] (or m > θ) unless the membrane is held; reset as IF neurons; after a spike the
    membrane is held for `refractory` steps (no spike, its current still integrates)."""

    def __init__(self, threshold, v_init, reset, decay, syn_decay, membrane_first, refractory, unit, strict,
                 loihi_bias=None):
        super().__init__(threshold, v_init, reset, decay, unit, strict)
        self.syn_decay, self.membrane_first, self.refractory = syn_decay, membrane_first, refractory
        self.loihi_bias = loihi_bias  # arithmetic "loihi": the bias, which enters the membrane (None: float)

    def reset_state(self, batch):
        super().reset_state(batch)
        self.syn = torch.zeros_like(self.v)
        self.hold = torch.zeros_like(self.v, dtype=torch.int64)

    def forward(self, current):
        if self.loihi_bias is not None:  # Loihi's 24-bit integer CUBA (network.ARITHMETICS)
            wrap = 2.0 ** 23
            i = torch.trunc(self.syn * self.syn_decay) + current - self.loihi_bias
            self.syn = torch.where(i > wrap, i - 2 * wrap, torch.where(i <= -wrap, i + 2 * wrap, i))
            m = torch.clamp(torch.trunc(self.v * self.decay) + self.syn + self.loihi_bias, 1 - wrap, wrap - 1)
        elif self.membrane_first:
            m = self.v * self.decay + self.syn
            self.syn = self.syn * self.syn_decay + current
        else:
            self.syn = self.syn * self.syn_decay + current
            m = self.v * self.decay + self.syn
        held = self.hold > 0
        spikes = self.fires(m) & ~held
        s = spikes.to(m.dtype)
        self.v = torch.where(held, self.v, self.after_reset(m, s))
        self.hold = torch.where(held, self.hold - 1, torch.where(spikes, self.refractory, 0))
        return s


class SigmaDeltaNeurons(IFNeurons):
    """Sigma-delta neurons (format 1.13): σ += I - bias (wrapped at 24 bits with input_wrap), a = max(0, σ + bias)
    (delta_input: a = I - bias); d = a - a_prev + r; |d| >= θ, d != 0: payload floor(d / 2^shift), r = 0; else r = d.
    Returns 1 where an event leaves; `value` gives the payloads."""

    def __init__(self, threshold, v_init, bias, delta_input, shift, wrap):
        super().__init__(threshold, v_init)
        self.bias, self.delta_input, self.shift, self.wrap = bias, delta_input, shift, wrap

    def reset_state(self, batch):
        super().reset_state(batch)
        self.prev = torch.zeros_like(self.v)
        self.residue = torch.zeros_like(self.v)
        self.payload = torch.zeros_like(self.v)

    def forward(self, current):
        x = current - self.bias
        if self.wrap:
            x = x - 2.0 ** 24 * torch.floor((x + 2.0 ** 23) / 2.0 ** 24)
        if self.delta_input:
            act = x
            self.v = act
        else:
            self.v = self.v + x
            act = torch.clamp(self.v + self.bias, min=0.0)
        d = act - self.prev + self.residue
        fired = (d != 0) & (d.abs() >= self.threshold)
        self.prev, self.residue = act, torch.where(fired, torch.zeros_like(d), d)
        self.payload = torch.where(fired, torch.floor(d / 2.0 ** self.shift), torch.zeros_like(d))
        return fired.to(d.dtype)

    def value(self, s):
        return self.payload


class MultiThresholdIF(IFNeurons):
    """Multi-threshold neurons of a network file (ECMT): levels θ·2^k and -θ_neg·2^k, k < n, soft reset.

    Returns the signed level multiple s (±2^k, 0 if silent); value = θ·s or θ_neg·s. See `ec.multi_threshold_fire`.
    """

    def __init__(self, threshold, threshold_neg, v_init, levels):
        super().__init__(threshold, v_init)
        self.threshold_neg = threshold_neg  # None: positive levels only
        self.levels = int(levels)

    def forward(self, current):
        m = self.v + current
        s, x = multi_threshold_fire(m, self.threshold, self.threshold_neg, self.levels)
        self.v = m - x
        return s

    def value(self, s):
        if self.threshold_neg is None:
            return self.threshold * s
        return torch.where(s > 0, self.threshold * s, self.threshold_neg * s)


class GroupNeurons(IFNeurons):
    """Group neurons (Lv et al.): τ IF members with thresholds jθ/τ (j = 1..τ) sharing one membrane.

    m = v + I; S = Σ_j [m >= jθ/τ]; v = m - (θ/τ)·S. Returns S (member spikes); value = (θ/τ)·S.
    """

    def __init__(self, threshold, v_init, tau, reset="subtract"):
        super().__init__(threshold, v_init, reset)
        self.tau = int(tau)

    def forward(self, current):
        m = self.integrate(current)
        count = torch.zeros_like(m)
        for j in range(1, self.tau + 1):
            count = count + (m >= self.threshold * j / self.tau).to(m.dtype)
        unit = self.threshold / self.tau
        if self.reset == "subtract":
            self.v = m - unit * count
        elif self.reset == "zero":
            self.v = torch.where(count > 0, torch.zeros_like(m), m)
        else:
            self.v = m
        return count

    def value(self, count):
        return count if self.vmax else count * (self.threshold / self.tau)


class SignedNeurons(IFNeurons):
    """Signed IF neurons for Leaky ReLU networks: m = v + I; s = +1 if m >= θ, -1 if m < 0, else 0;
    v = m - s·θ. A positive spike carries θ, a negative one -α·θ (α = the Leaky ReLU slope).
    """

    def __init__(self, threshold, v_init, negative_slope):
        super().__init__(threshold, v_init, "subtract")
        self.negative_slope = float(negative_slope)

    def forward(self, current):
        m = self.v + current
        s = (m >= self.threshold).to(m.dtype) - (m < 0).to(m.dtype)
        self.v = m - s * self.threshold
        return s

    def value(self, s):
        return torch.where(s < 0, self.negative_slope * s, s) * self.threshold


class Readout(nn.Module):
    """Non-spiking integrator: accumulates its input current; output = mean over steps."""

    def __init__(self):
        super().__init__()
        self.total = None

    def reset_state(self, batch):
        self.total = None

    def forward(self, current):
        self.total = current.clone() if self.total is None else self.total + current
        return self.total


@dataclass
class StepRecord:
    """What a run of the reference records, per population name."""

    spike_counts: dict  # name -> (B, *shape) total spikes over T
    spikes: dict | None = None  # name -> (T, B, *shape) if recorded


def _t(a, dtype, device=None):
    return torch.as_tensor(np.asarray(a)).to(device=device, dtype=dtype)


class SpikingNetwork(nn.Module):
    """Runs a `Network` with torch tensors; float64 by default so it is a precise reference."""

    def __init__(self, net: Network, dtype=torch.float64, device=None):
        super().__init__()
        self.net = net
        self.dtype = dtype
        self.device = torch.device(device or "cpu")
        self.neurons = nn.ModuleDict()
        self.shapes = {p.name: tuple(p.shape) for p in net.populations}
        self.biases = {}
        for p in net.populations:
            shape = tuple(p.shape)
            self.biases[p.name] = _t(p.bias, dtype, device).reshape(shape)
            theta, v0 = _t(p.threshold, dtype, device).reshape(shape), _t(p.v_init, dtype, device).reshape(shape)
            if p.model in ("if", "lif"):
                self.neurons[p.name] = IFNeurons(
                    theta, v0, p.reset, None if p.decay is None else _t(p.decay, dtype, device).reshape(shape),
                    p.spike_value == "unit", p.threshold_test == "gt")
                self.neurons[p.name].multi = p.multi_spike
                self.neurons[p.name].floor = p.membrane_floor == "-threshold"
            elif p.model == "cuba":
                self.neurons[p.name] = CubaNeurons(
                    theta, v0, p.reset, _t(p.decay, dtype, device).reshape(shape),
                    _t(p.syn_decay, dtype, device).reshape(shape), p.synapse_order == "membrane_first", p.refractory,
                    p.spike_value == "unit", p.threshold_test == "gt",
                    self.biases[p.name] if p.arithmetic == "loihi" else None)
            elif p.model == "sigma_delta":
                self.neurons[p.name] = SigmaDeltaNeurons(theta, v0, self.biases[p.name], p.delta_input,
                                                         p.payload_shift, p.input_wrap == 24)
            elif p.model == "group":
                self.neurons[p.name] = GroupNeurons(theta, v0, p.tau, p.reset)
            elif p.model == "signed":
                self.neurons[p.name] = SignedNeurons(theta, v0, p.negative_slope)
            elif p.model == "multi_threshold":
                self.neurons[p.name] = MultiThresholdIF(
                    theta, None if p.threshold_neg is None else _t(p.threshold_neg, dtype, device).reshape(shape), v0,
                    p.levels)
            elif p.model == "ec":
                self.neurons[p.name] = Relay() if p.function == "identity" else ECFunction(_EC_FNS[p.function](p.eps))
            elif p.model == "ec_matmul":
                self.neurons[p.name] = ECMatMul()
            elif p.model == "readout":
                self.neurons[p.name] = Readout()
        from spikeforge.simulator.arrays import fixed_vmax

        for p in net.populations:
            if p.model in ("if", "group"):
                self.neurons[p.name].vmax = fixed_vmax(net)
        self.weights = {}
        self.sparse_index = {}
        for pr in net.projections:
            if pr.weight is not None:
                self.weights[pr.name] = _t(pr.weight, dtype, device)
            if pr.kind == "sparse":
                rows = np.repeat(np.arange(len(pr.indptr) - 1), np.diff(pr.indptr))
                self.sparse_index[pr.name] = (torch.as_tensor(rows, device=device),
                                              torch.as_tensor(pr.indices.astype(np.int64), device=device))
        self.incoming = {p.name: net.incoming(p.name) for p in net.populations}

    def _project(self, pr, x):
        """Current that projection `pr` delivers for source values x (B, *source shape)."""
        b = x.shape[0]
        if pr.kind == "dense":
            return F.linear(x.reshape(b, -1), self.weights[pr.name])
        if pr.kind == "conv2d":
            return F.conv2d(x, self.weights[pr.name], stride=tuple(pr.stride), padding=tuple(pr.padding),
                            groups=pr.groups)
        if pr.kind == "avgpool":
            return F.avg_pool2d(x, tuple(pr.kernel), tuple(pr.stride), tuple(pr.padding), count_include_pad=True)
        if pr.kind == "identity":
            return x
        if pr.kind == "pointwise":
            w = self.weights[pr.name]
            return (x.reshape(b, -1, w.shape[1]) @ w.T).reshape(b, -1)
        if pr.kind == "sparse":
            rows, cols = self.sparse_index[pr.name]
            n_tgt = int(np.prod(self.shapes[pr.target]))
            out = torch.zeros(b, n_tgt, dtype=x.dtype, device=x.device)
            return out.index_add_(1, cols, x.reshape(b, -1)[:, rows] * self.weights[pr.name])
        raise ValueError(f"unknown projection kind {pr.kind!r}")

    def _operands(self, p, arriving, b):
        """(A (B, M, K), B (B, K, N)) of an ec_matmul node from its matmul_a / matmul_b sources' values."""
        m, n = self.shapes[p.name]
        ops = {}
        for pr in self.incoming[p.name]:
            v = arriving(pr)[0]
            ops[pr.kind] = v.reshape(b, *self.shapes[pr.source]).transpose(-1, -2) if pr.transpose else v
        a = ops["matmul_a"].reshape(b, m, -1)
        return a, ops["matmul_b"].reshape(b, a.shape[-1], n)

    @torch.no_grad()
    def forward(self, x, T: int, record_spikes=False):
        """Run T steps on input batch x (batch, *input shape), the same input every step, or (batch, T, *input
        shape), one frame per step; return (readout mean over T, StepRecord)."""
        if T < 1:
            raise ValueError(f"T must be >= 1, got {T}")
        x = torch.as_tensor(x).to(device=self.device, dtype=self.dtype)
        b = x.shape[0]
        in_shape = self.shapes[self.net.input.name]
        frames = x.ndim == len(in_shape) + 2 and x.shape[1] == T
        x = x.reshape(b, T, *in_shape) if frames else x.reshape(b, *in_shape)
        for m in self.neurons.values():
            m.reset_state(b)
        counts = {n: torch.zeros(b, *self.shapes[n], dtype=torch.int64, device=self.device) for n in self.neurons
                  if isinstance(self.neurons[n], IFNeurons)}
        spikes = {n: [] for n in counts} if record_spikes else None
        pooled = {p.name: torch.zeros(b, *self.shapes[self.incoming[p.name][0].source], dtype=self.dtype,
                                      device=self.device) for p in self.net.populations if p.model == "maxpool"}
        out = None
        longest = max((pr.delay for pr in self.net.projections), default=0)
        past = {}  # step -> (values, levels) of every population, while a delayed projection needs them

        def arriving(pr):
            """(values, levels) projection pr delivers at step t: its source's of step t - delay (zeros before)."""
            if pr.delay == 0:
                return values[pr.source], levels.get(pr.source)
            if t < pr.delay:  # (a recurrent projection's source has not run this step yet)
                zero = torch.zeros(b, *self.shapes[pr.source], dtype=self.dtype, device=self.device)
                return zero, zero
            then_values, then_levels = past[t - pr.delay]
            return then_values[pr.source], then_levels.get(pr.source)

        for t in range(T):
            values = {self.net.input.name: x[:, t] if frames else x}
            levels = {}
            for p in self.net.populations[1:]:
                if p.model == "ec_matmul":
                    values[p.name] = self.neurons[p.name](*self._operands(p, arriving, b))
                    continue
                if p.model == "maxpool":
                    values[p.name] = self._max_pool(p, pooled[p.name], arriving)
                    continue
                current = self.biases[p.name].expand(b, *self.shapes[p.name])
                for pr in self.incoming[p.name]:
                    current = current + self._project(pr, arriving(pr)[0]).reshape(b, *self.shapes[p.name])
                neuron = self.neurons[p.name]
                if p.reset_every and t % p.reset_every == p.reset_phase:  # the state restarts (Lava's LIFReset)
                    neuron.reset_state(b)
                if isinstance(neuron, IFNeurons):
                    s = neuron(current)
                    levels[p.name] = s
                    counts[p.name] += s.to(torch.int64)
                    if record_spikes:
                        spikes[p.name].append(s.to(torch.int8))
                    values[p.name] = neuron.value(s)
                elif isinstance(neuron, ECFunction):
                    values[p.name] = neuron(current)
                else:
                    out = neuron(current)
            if longest:
                past[t] = (values, levels)
                past.pop(t - longest, None)
        record = StepRecord(counts, {n: torch.stack(v) for n, v in spikes.items()} if record_spikes else None)
        return out / T, record

    def _max_pool(self, p, pooled, arriving):
        """Spiking max pooling: add the source's spikes (member spikes of group neurons) to its counts; each output
        passes on the value its window's most active source neuron sent this step (the first in the window on a
        tie, as F.max_pool2d's indices)."""
        pr = self.incoming[p.name][0]
        source_values, source_levels = arriving(pr)
        pooled += source_levels
        _, idx = F.max_pool2d(pooled, tuple(pr.kernel), tuple(pr.stride), tuple(pr.padding), return_indices=True)
        b, c = idx.shape[:2]
        return source_values.reshape(b, c, -1).gather(2, idx.reshape(b, c, -1)).reshape(idx.shape)

    @torch.no_grad()
    def analog_forward(self, x):
        """Evaluate the network as the ANN it came from (IF populations = ReLU, signed = Leaky ReLU).

        Checks the conversion's wiring and BatchNorm fusion exactly, independent of spiking.
        """
        x = torch.as_tensor(x).to(device=self.device, dtype=self.dtype)
        b = x.shape[0]
        values = {self.net.input.name: x.reshape(b, *self.shapes[self.net.input.name])}
        out = None
        for p in self.net.populations[1:]:
            if p.model == "ec_matmul":
                a, bm = self._operands(p, lambda pr: (values[pr.source], None), b)
                values[p.name] = a @ bm
                continue
            if p.model == "maxpool":
                pr = self.incoming[p.name][0]
                values[p.name] = F.max_pool2d(values[pr.source], tuple(pr.kernel), tuple(pr.stride),
                                              tuple(pr.padding))
                continue
            current = self.biases[p.name].expand(b, *self.shapes[p.name])
            for pr in self.incoming[p.name]:
                current = current + self._project(pr, values[pr.source]).reshape(b, *self.shapes[p.name])
            neuron = self.neurons[p.name]
            if isinstance(neuron, ECFunction):
                values[p.name] = neuron.fn(current)
            elif isinstance(neuron, SignedNeurons):
                values[p.name] = F.leaky_relu(current, neuron.negative_slope)
            elif isinstance(neuron, MultiThresholdIF) and neuron.threshold_neg is not None:
                values[p.name] = current  # two-sided multi-threshold neurons carry signed values unchanged
            else:
                values[p.name] = torch.relu(current)
            out = current
        return out

    def predict(self, x, T: int, batch_size: int = 256):
        """Class predictions (argmax of the readout) for all of x, in batches."""
        preds = []
        for i in range(0, len(x), batch_size):
            out, _ = self(x[i:i + batch_size], T)
            preds.append(out.reshape(out.shape[0], -1).argmax(1).cpu())
        return torch.cat(preds)
