"""Stage I of two-stage conversion: clip-activation ANN -> QC-ANN, then fine-tuning (Wang et al.)."""
from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from .activations import QCFS, ClipReLU, QCActivation
from .convert import trace
from .stats import collect


def best_clip(values: np.ndarray, T: int) -> float:
    """θ minimising the mean squared error between positive activations and their T-level quantized clip.

    The starting θ for a ReLU layer: a high percentile wastes the few levels a small T has on rare
    large values; this trades clipping error against quantization error (searched on a grid).
    """
    v = np.sort(np.asarray(values, np.float64))
    if v.size == 0:
        return 1e-3
    if v.size > 200_000:
        v = v[np.linspace(0, v.size - 1, 200_000).astype(np.int64)]
    best, best_err = float(v[-1]), np.inf
    for theta in np.quantile(v, np.linspace(0.5, 1.0, 101)):
        if theta <= 0:
            continue
        q = np.clip(np.floor(v * T / theta + 0.5), 0, T) * theta / T
        err = float(np.mean((q - v) ** 2))
        if err < best_err:
            best, best_err = float(theta), err
    return max(best, 1e-3)


def to_qc_ann(model: nn.Module, T: int, p: float = 0.15, calibration=None, percentile: float = 99.9,
              init: str = "mse") -> nn.Module:
    """Copy of `model` with every ClipReLU / ReLU6 / ReLU / LeakyReLU / QCFS / QCActivation replaced by a
    QCActivation(θ, T, p) (Leaky ReLU keeps its slope: signed neurons after conversion).

    θ starts at the clip bound (or the trained λ / θ); for plain and leaky ReLUs, from the activation on
    `calibration` batches (required when the model has them): init="mse" (default) picks the θ whose
    T-level quantization best fits the activations (`best_clip`), init="percentile" the `percentile`-th
    percentile.
    """
    if init not in ("mse", "percentile"):
        raise ValueError(f"init must be 'mse' or 'percentile', got {init!r}")
    model = copy.deepcopy(model).eval()
    gm = trace(model)
    modules = dict(gm.named_modules())
    relus = [n for n in gm.graph.nodes if n.op == "call_module" and type(modules[n.target]) in (nn.ReLU, nn.LeakyReLU)]
    stats = None
    if relus:
        if calibration is None:
            raise ValueError("the model has ReLU activations: pass calibration batches to initialise θ")
        stats = collect(gm, list(calibration), [n.name for n in relus])
    start = {}
    for n in gm.graph.nodes:
        if n.op != "call_module":
            continue
        m = modules[n.target]
        if isinstance(m, ClipReLU):
            start[n.target] = (float(torch.as_tensor(m.threshold).detach()), 0.0)
        elif isinstance(m, nn.ReLU6):
            start[n.target] = (6.0, 0.0)
        elif isinstance(m, (QCFS, QCActivation)):
            start[n.target] = (float(m.threshold.detach()), getattr(m, "negative_slope", 0.0))
        elif type(m) in (nn.ReLU, nn.LeakyReLU):
            theta = best_clip(stats.samples.get(n.name, np.empty(0)), T) if init == "mse" else \
                max(stats.percentile(n.name, percentile), 1e-3)
            start[n.target] = (theta, getattr(m, "negative_slope", 0.0))
    for target, (theta, slope) in start.items():
        parent_name, _, child = target.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, QCActivation(theta, T, p, slope))
    return model


def qc_finetune(model, x, y, epochs=10, lr=1e-4, batch_size=128, seed=0, device="cpu", progress=None):
    """Fine-tune weights and thresholds of a QC-ANN with Adam (lr 1e-4 by default) and cross-entropy."""
    from .training import fit

    torch.manual_seed(seed)  # the quantization-noise masks
    opt = torch.optim.Adam(model.to(device).parameters(), lr=lr)
    return fit(model, x, y, opt, None, epochs, batch_size, seed, device, progress)
