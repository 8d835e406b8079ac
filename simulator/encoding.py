"""Encoders for static data: a sample (batch, *shape) becomes T per-step frames (batch, T, *shape).

- direct:  the analog sample every step (its synaptic work counts as MACs); no frames are made, the engine injects
           the sample itself.
- rate:    Bernoulli spike trains: at every step, input i spikes with probability p_i = x_i (values in [0, 1]).
           Each sample draws from its own generator, `np.random.default_rng([seed, sample index])`, in the
           canonical (C) order of the input, all T steps at once: the same seed gives the same spikes whatever the
           batch chunking, the backend or the number of processes.
- latency: time to first spike: one spike per input with x_i > 0, at step round((1 - x_i)(T - 1)) (halves round
           up), so x = 1 fires at step 0 and the smallest values fire last; x_i = 0 never fires.

rate and latency need inputs in [0, 1]: other values are refused (the message names the sample and the range),
unless clip=True, which clips them to [0, 1] first (e.g. for data normalized with a mean and standard deviation).
Their frames are spikes (0 / 1): their synaptic work counts as synaptic operations.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["ENCODINGS", "Encoding", "encode", "as_encoding"]

ENCODINGS = ("direct", "rate", "latency")


@dataclass(frozen=True)
class Encoding:
    """How a static sample enters the network: name in ENCODINGS, the rate encoder's seed, and whether values
    outside [0, 1] are clipped (rate, latency) instead of refused."""

    name: str = "direct"
    seed: int = 0
    clip: bool = False

    def __post_init__(self):
        if self.name not in ENCODINGS:
            raise ValueError(f"encoding must be one of {', '.join(ENCODINGS)}, got {self.name!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {self.seed!r}")

    @property
    def spikes(self) -> bool:
        """Whether the frames are spikes (synaptic operations) rather than analog values (MACs)."""
        return self.name != "direct"

    def __str__(self):
        """What a report prints: 'direct', 'rate (seed 0)', 'latency' (+ ', clipped to [0, 1]')."""
        text = f"rate (seed {self.seed})" if self.name == "rate" else self.name
        return text + (", clipped to [0, 1]" if self.clip and self.spikes else "")

    def frames(self, x, T: int, first: int = 0) -> np.ndarray:
        """(batch, T, *shape) float64 frames of the samples x (batch, *shape); first: the index of x[0] in the whole
        run (the rate encoder seeds each sample by its index, so a chunk encodes as it would in the whole batch)."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim < 1:
            raise ValueError(f"inputs must be (batch, *input shape), got shape {x.shape}")
        if self.name == "direct":
            return np.repeat(x[:, None], T, axis=1)
        flat = self._unit(x.reshape(len(x), -1), first)
        if self.name == "rate":
            out = np.empty((len(x), T, flat.shape[1]))
            for b in range(len(x)):
                rng = np.random.default_rng([self.seed, first + b])
                out[b] = rng.random((T, flat.shape[1])) < flat[b]
        else:
            out = np.zeros((len(x), T, flat.shape[1]))
            step = np.floor((1.0 - flat) * (T - 1) + 0.5).astype(np.int64)
            b, i = np.nonzero(flat > 0)
            out[b, step[b, i], i] = 1.0
        return out.reshape(len(x), T, *x.shape[1:])

    def _unit(self, flat, first):
        """The values in [0, 1]: clipped (clip=True) or checked, naming the first sample outside."""
        if self.clip:
            return np.clip(flat, 0.0, 1.0)
        bad = np.flatnonzero((flat < 0).any(1) | (flat > 1).any(1))
        if bad.size:
            b = bad[0]
            raise ValueError(f"inputs: the {self.name} encoding needs values in [0, 1], but sample {first + b} has "
                             f"values in [{flat[b].min():.4g}, {flat[b].max():.4g}]; rescale the inputs or clip "
                             f"them to [0, 1] (encoding=Encoding({self.name!r}, clip=True); encode(..., clip=True))")
        return flat


def as_encoding(encoding) -> Encoding | None:
    """None, a name in ENCODINGS or an Encoding -> an Encoding (None for None)."""
    if encoding is None or isinstance(encoding, Encoding):
        return encoding
    if isinstance(encoding, str):
        return Encoding(encoding)
    raise ValueError(f"encoding must be one of {', '.join(ENCODINGS)} or an Encoding, got {encoding!r}")


def encode(x, T: int, encoding="direct", seed: int = 0, clip: bool = False, first: int = 0) -> np.ndarray:
    """(batch, T, *shape) frames of the static samples x (batch, *shape) by `encoding` (see the module's text); the
    same frames `simulator.run(..., encoding=Encoding(encoding, seed, clip))` simulates."""
    if isinstance(T, bool) or not isinstance(T, (int, np.integer)) or T < 1:
        raise ValueError(f"T must be an integer >= 1, got {T!r}")
    return Encoding(encoding, seed, clip).frames(x, int(T), first)
