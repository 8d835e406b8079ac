"""ECMT for transformers written against an `ops` interface (the torch reference of ECMT).

A model's forward calls `ops.embed` (the analog input layer), `ops.linear(name, layer, x)` for every
linear layer, `ops.mt(name, x)` before every matrix product operand, `ops.ln`, `ops.softmax`, `ops.gelu`
and `ops.matmul` (see spikeforge.models.DigitsViT). Three implementations:
- `AnnOps`: the plain ANN;
- `StatsOps`: the ANN, recording the values at each `mt` point (base thresholds: p-th / (1-p)-th percentile);
- `ECMTOps`: one time step of the spiking version: multi-threshold neurons at the `mt` points, expectation
  compensation for LayerNorm / softmax / GELU and the accumulating product for two spiking operands.
Linear layers, residual additions and the class-token / position terms are linear, so running the same
forward once per step with these ops makes the mean output over T approach the ANN's.
A ViT written in plain torch gets this interface from torch.fx: `spikeforge.converter.vit_trace.trace_vit`. The
exporter `spikeforge.converter.ecmt_export.export_ecmt` writes either kind into a network file.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .ec import ECFunction, ECMatMul, MultiThresholdNeurons


class AnnOps:
    """The ANN itself, counting its multiply-accumulates (`macs`) the way the ECMT paper does:
    linear layers, matrix products and the input convolution by their MACs, LayerNorm / softmax / GELU
    one MAC per element."""

    def __init__(self):
        self.macs = 0
        self.acs = 0

    def embed(self, layer, x):
        """The analog input layer: a Conv2d (patch embedding) or a linear layer on the image's values."""
        out = layer(x)
        if isinstance(layer, torch.nn.Conv2d):
            self.macs += out.numel() * layer.in_channels // layer.groups * layer.kernel_size[0] * layer.kernel_size[1]
        else:
            self.macs += out.numel() * layer.in_features
        return out

    def linear(self, name, layer, x):
        x = self.mt(name, x)
        self.macs += x.numel() * layer.out_features
        return layer(x)

    def mt(self, name, x):
        return x

    def _elementwise(self, out):
        self.macs += out.numel()
        return out

    def ln(self, name, module, x):
        return self._elementwise(module(x))

    def softmax(self, name, x):
        return self._elementwise(torch.softmax(x, -1))

    def gelu(self, name, x):
        return self._elementwise(F.gelu(x))

    def matmul(self, name, a, b):
        self.macs += a.numel() * b.shape[-1]
        return a @ b


class StatsOps(AnnOps):
    """The ANN, keeping a bounded sample of the values at every multi-threshold point."""

    def __init__(self, sample=200_000, seed=0):
        super().__init__()
        self.values, self.sample = {}, sample
        self.rng = np.random.default_rng(seed)

    def mt(self, name, x):
        v = np.concatenate([self.values.get(name, np.empty(0)), x.detach().reshape(-1).double().cpu().numpy()])
        self.values[name] = v if v.size <= self.sample else self.rng.choice(v, self.sample, replace=False)
        return x

    def thresholds(self, p=99.0):
        """name -> (θ1, θ2): the p-th percentile and minus the (100-p)-th, each at least 1e-3 of the range."""
        out = {}
        for name, v in self.values.items():
            scale = max(float(np.abs(v).max()), 1e-6)
            out[name] = (max(float(np.percentile(v, p)), 1e-3 * scale),
                         max(-float(np.percentile(v, 100 - p)), 1e-3 * scale))
        return out


class ECMTOps(AnnOps):
    """One time step of the ECMT spiking network; state lives in per-name modules, `reset()` between inputs."""

    def __init__(self, thresholds, n=4):
        super().__init__()
        self.thresholds, self.n = thresholds, int(n)
        self.state = {}
        self.spikes = 0  # spikes emitted by multi-threshold neurons (one event each)

    def reset(self):
        self.state = {}
        self.spikes = self.macs = self.acs = 0

    def linear(self, name, layer, x):
        """A spike reaches out_features synapses (one weight copy per level: accumulation only)."""
        s = self.mt(name, x)
        self.acs += int((s != 0).sum()) * layer.out_features
        return layer(s)

    def _get(self, name, make):
        if name not in self.state:
            self.state[name] = make()
            self.state[name].reset_state()
        return self.state[name]

    def mt(self, name, x):
        if name not in self.thresholds:
            raise KeyError(f"no base thresholds for multi-threshold point {name!r}: collect them with StatsOps")
        t1, t2 = self.thresholds[name]
        out = self._get(name, lambda: MultiThresholdNeurons(t1, t2, self.n))(x)
        self.spikes += int((out != 0).sum())
        return out

    def ln(self, name, module, x):
        return self._elementwise(self._get(name, lambda: ECFunction(module))(x))

    def softmax(self, name, x):
        return self._elementwise(self._get(name, lambda: ECFunction(lambda z: torch.softmax(z, -1)))(x))

    def gelu(self, name, x):
        return self._elementwise(self._get(name, lambda: ECFunction(F.gelu))(x))

    def matmul(self, name, a, b):
        """A @ B + A @ S_B + S_A @ B: each spike of A meets a row of B and of S_B, each spike of B a
        column of S_A (accumulations)."""
        self.acs += int((a != 0).sum()) * b.shape[-1] * 2 + int((b != 0).sum()) * a.shape[-2]
        return self._get(name, ECMatMul)(a, b)


def collect_thresholds(model, batches, p=99.0):
    """Base thresholds of every multi-threshold point from the ANN's values on `batches`."""
    ops = StatsOps()
    model.eval()
    with torch.no_grad():
        for x in batches:
            model(x, ops)
    return ops.thresholds(p)


@torch.no_grad()
def ecmt_forward(model, x, T, thresholds, n=4):
    """Mean output over T steps of the ECMT network (analog input every step) and its operation counts:
    dict(spikes, acs, macs) summed over the batch and the T steps."""
    if T < 1:
        raise ValueError(f"T must be >= 1, got {T}")
    model.eval()
    ops = ECMTOps(thresholds, n)
    ops.reset()
    total = 0
    for _ in range(T):
        total = total + model(x, ops)
    return total / T, {"spikes": ops.spikes, "acs": ops.acs, "macs": ops.macs}


@torch.no_grad()
def ann_macs(model, x):
    """MACs of the ANN on batch x (same conventions as the ECMT counts)."""
    model.eval()
    ops = AnnOps()
    model(x, ops)
    return ops.macs


def energy_ratio(counts, ann, e_ac=0.9, e_mac=4.6):
    """(MACs·E_MAC + ACs·E_AC) of the SNN over MACs·E_MAC of the ANN (pJ figures of METHODS.md)."""
    return (counts["macs"] * e_mac + counts["acs"] * e_ac) / (ann * e_mac)
