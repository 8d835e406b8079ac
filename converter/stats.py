"""Activation statistics of an ANN on calibration batches, for threshold normalization."""
from __future__ import annotations

import numpy as np
import torch
import torch.fx


class _Recorder(torch.fx.Interpreter):
    def __init__(self, gm, names, sink):
        super().__init__(gm)
        self.names, self.sink = names, sink

    def run_node(self, n):
        out = super().run_node(n)
        if n.name in self.names:
            self.sink(n.name, out)
        return out


class ActivationStats:
    """Per-node maximum and a bounded random sample of positive values (for percentiles).

    Percentiles are taken over positive activations (zeros of a ReLU carry no
    information about its range). At most `sample_size` values per node are
    kept, so memory stays bounded for any number of batches.
    """

    def __init__(self, sample_size: int = 1_000_000, seed: int = 0):
        self.sample_size = sample_size
        self.rng = np.random.default_rng(seed)
        self.max, self.samples, self.seen = {}, {}, {}

    def add(self, name, tensor):
        values = tensor.detach().reshape(-1).double().cpu().numpy()
        self.max[name] = max(self.max.get(name, -np.inf), float(values.max()) if values.size else -np.inf)
        pos = values[values > 0]
        kept = self.samples.get(name, np.empty(0))
        seen = self.seen.get(name, 0) + pos.size
        self.seen[name] = seen
        merged = np.concatenate([kept, pos])
        if merged.size > self.sample_size:
            merged = self.rng.choice(merged, self.sample_size, replace=False)
        self.samples[name] = merged

    def percentile(self, name, p):
        s = self.samples.get(name)
        if s is None or s.size == 0:
            return 0.0
        return float(np.percentile(s, p))


@torch.no_grad()
def collect(gm: torch.fx.GraphModule, batches, names, progress=None) -> ActivationStats:
    """Run the traced ANN on `batches` and record activations at the fx nodes `names`."""
    stats = ActivationStats()
    names = set(names)
    recorder = _Recorder(gm, names, stats.add)
    for i, x in enumerate(batches):
        recorder.run(x)
        if progress:
            progress(i)
    return stats
