"""Stage I of two-stage conversion: clip-activation ANN -> QC-ANN, then fine-tuning (Wang et al.)."""
from __future__ import annotations

import copy

import torch
from torch import nn

from .activations import QCFS, ClipReLU, QCActivation
from .convert import trace
from .stats import collect


def to_qc_ann(model: nn.Module, T: int, p: float = 0.15, calibration=None, percentile: float = 99.9) -> nn.Module:
    """Copy of `model` with every ClipReLU / ReLU6 / ReLU / LeakyReLU / QCFS / QCActivation replaced by a
    QCActivation(θ, T, p) (Leaky ReLU keeps its slope: signed neurons after conversion).

    θ starts at the clip bound (or the trained λ / θ); for plain and leaky ReLUs at the `percentile`-th
    percentile of the activation on `calibration` batches (required when the model has them).
    """
    model = copy.deepcopy(model).eval()
    gm = trace(model)
    modules = dict(gm.named_modules())
    relus = [n for n in gm.graph.nodes if n.op == "call_module" and type(modules[n.target]) in (nn.ReLU, nn.LeakyReLU)]
    stats = None
    if relus:
        if calibration is None:
            raise ValueError("the model has ReLU activations: pass calibration batches to initialise θ")
        stats = collect(gm, list(calibration), [n.name for n in relus])
    init = {}
    for n in gm.graph.nodes:
        if n.op != "call_module":
            continue
        m = modules[n.target]
        if isinstance(m, ClipReLU):
            init[n.target] = (m.threshold, 0.0)
        elif isinstance(m, nn.ReLU6):
            init[n.target] = (6.0, 0.0)
        elif isinstance(m, (QCFS, QCActivation)):
            init[n.target] = (float(m.threshold.detach()), getattr(m, "negative_slope", 0.0))
        elif type(m) in (nn.ReLU, nn.LeakyReLU):
            init[n.target] = (max(stats.percentile(n.name, percentile), 1e-3), getattr(m, "negative_slope", 0.0))
    for target, (theta, slope) in init.items():
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
