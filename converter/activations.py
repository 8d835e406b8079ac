"""ANN activations the converter understands beyond ReLU: clip and QCFS."""
from __future__ import annotations

import torch
from torch import nn


class ClipReLU(nn.Module):
    """clip(x, 0, θ): a ReLU with an upper bound; converts with θ as the threshold.

    trainable=True makes θ a parameter that learns (the clip-activation ANN that two-stage
    conversion starts from): the gradient reaches θ through the clipped elements.
    """

    def __init__(self, threshold: float = 1.0, trainable: bool = False):
        super().__init__()
        if trainable:
            self.threshold = nn.Parameter(torch.tensor(float(threshold)))
        else:
            self.threshold = float(threshold)

    def forward(self, x):
        if isinstance(self.threshold, torch.Tensor):
            return torch.minimum(torch.relu(x), self.threshold)
        return x.clamp(0.0, self.threshold)

    def extra_repr(self):
        return f"threshold={float(self.threshold):g}" + (", trainable" if isinstance(self.threshold, torch.Tensor)
                                                         else "")


class _FloorSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return torch.floor(x)

    @staticmethod
    def backward(ctx, grad):
        return grad


class QCFS(nn.Module):
    """Quantization-clip-floor-shift activation (METHODS.md):
    a = λ · clip(floor(z·L/λ + 1/2) / L, 0, 1), λ trainable, straight-through floor.
    Converts with θ = λ and v0 = θ/2.
    """

    def __init__(self, levels: int = 8, init_threshold: float = 8.0):
        super().__init__()
        if levels < 1:
            raise ValueError(f"QCFS levels must be >= 1, got {levels}")
        self.levels = int(levels)
        self.threshold = nn.Parameter(torch.tensor(float(init_threshold)))

    def forward(self, x):
        lam = self.threshold
        y = _FloorSTE.apply(x * self.levels / lam + 0.5) / self.levels
        return lam * y.clamp(0.0, 1.0)

    def extra_repr(self):
        return f"levels={self.levels}"


class QCActivation(nn.Module):
    """Stage I of two-stage conversion (Wang et al.; METHODS.md): quantized clip with noise.

    g(x) = θ · clip(Q(x)/θ, 0, 1), Q(x) = (θ/T)·floor(x·T/θ + 1/2) (the θ/2T shift), straight-through
    floor, θ trainable. In training each element is quantized with probability p (Bernoulli mask M):
    Q̂(x) = x + (Q(x) - x)·M; in evaluation every element is quantized. Converts with θ and v0 = θ/2.
    With negative_slope α > 0 (Leaky ReLU networks) the quantized input is clipped to [-θ, θ] and its
    negative part scaled by α: the mean output of a signed IF neuron.
    """

    def __init__(self, threshold: float, T: int, p: float = 0.15, negative_slope: float = 0.0):
        super().__init__()
        if T < 1 or not 0.0 <= p <= 1.0 or not 0.0 <= negative_slope <= 1.0:
            raise ValueError(f"QCActivation needs T >= 1, 0 <= p <= 1 and 0 <= negative_slope <= 1, "
                             f"got T={T}, p={p}, negative_slope={negative_slope}")
        self.threshold = nn.Parameter(torch.tensor(float(threshold)))
        self.T, self.p, self.negative_slope = int(T), float(p), float(negative_slope)

    def forward(self, x):
        th = self.threshold
        q = _FloorSTE.apply(x * self.T / th + 0.5) * th / self.T
        if self.training and self.p < 1.0:
            mask = (torch.rand_like(x) < self.p).to(x.dtype)
            q = x + (q - x) * mask
        if self.negative_slope:
            q = torch.maximum(torch.minimum(q, th), -th)
            return torch.where(q < 0, self.negative_slope * q, q)
        return torch.minimum(torch.relu(q), th)

    def extra_repr(self):
        return f"T={self.T}, p={self.p}" + (f", negative_slope={self.negative_slope}" if self.negative_slope else "")
