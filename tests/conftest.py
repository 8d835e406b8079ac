import os

import numpy as np
import pytest
import torch

from spikeforge.converter.training import train_classifier
from spikeforge.data import load_digits_split
from spikeforge.models import DigitsMLP, DigitsResNet


@pytest.fixture(scope="session")
def digits():
    return load_digits_split(seed=0)


@pytest.fixture(scope="session")
def trained_resnet(digits):
    torch.manual_seed(0)
    xtr, ytr, _, _ = digits
    return train_classifier(DigitsResNet(), xtr, ytr, epochs=20, lr=0.05, seed=0)


@pytest.fixture(scope="session")
def trained_mlp(digits):
    torch.manual_seed(0)
    xtr, ytr, _, _ = digits
    return train_classifier(DigitsMLP(), xtr, ytr, epochs=20, lr=0.05, seed=0)


# ---- every simulation of the suite also runs on the exact torch backend (CPU) and must agree ----
# SPIKEFORGE_CROSSCHECK=0 turns it off. The terminal summary lists how many runs were compared and which neuron
# models and projection kinds they covered.
_CROSSCHECKED = {"runs": 0, "models": set(), "projections": set(), "fixed": 0}


def assert_same_result(a, b):
    """Spikes, counters and flows identical; outputs and traces equal to 1e-9 relative."""
    from spikeforge.simulator import COUNTERS

    bad = {name: int(np.abs(a.counters[..., i] - b.counters[..., i]).sum()) for i, name in enumerate(COUNTERS)
           if not np.array_equal(a.counters[..., i], b.counters[..., i])}
    spikes = {k: int((a.spike_counts[k] != b.spike_counts[k]).sum()) for k in a.spike_counts
              if k in b.spike_counts and not np.array_equal(a.spike_counts[k], b.spike_counts[k])}
    assert not bad, f"counters differ (absolute difference per counter {bad}; neurons whose counts differ {spikes})"
    assert np.array_equal(a.per_sample, b.per_sample), "per-sample counters differ"
    np.testing.assert_allclose(a.output, b.output, rtol=1e-9, atol=1e-12)
    assert a.spike_counts.keys() == b.spike_counts.keys()
    for k in a.spike_counts:
        assert np.array_equal(a.spike_counts[k], b.spike_counts[k]), f"spike counts of {k} differ"
    for k in a.spikes:
        assert np.array_equal(a.spikes[k], b.spikes[k]), f"raster of {k} differs"
    if a.traces is not None:
        np.testing.assert_allclose(a.traces, b.traces, rtol=1e-9, atol=1e-12)
    if a.flows is not None:
        assert np.array_equal(a.flows, b.flows), "flows differ"


@pytest.fixture(autouse=True)
def torch_backend_crosscheck(monkeypatch):
    if os.environ.get("SPIKEFORGE_CROSSCHECK", "1") == "0":
        yield
        return
    from spikeforge import simulator
    from spikeforge.simulator import engine

    real = engine.run

    def checked(network, inputs, T, *args, backend="numba", device=None, progress=None, **kwargs):
        res = real(network, inputs, T, *args, backend=backend, device=device, progress=progress, **kwargs)
        if backend == "numba":
            flat = engine.prepare(network)
            other = real(flat, inputs, T, *args, backend="torch", device="cpu", **kwargs)
            assert_same_result(res, other)
            _CROSSCHECKED["runs"] += 1
            _CROSSCHECKED["models"].update(p.model for p in flat.net.populations)
            _CROSSCHECKED["projections"].update(q.kind for q in flat.net.projections)
            _CROSSCHECKED["fixed"] += flat.net.attrs.get("numeric_mode") == "fixed"
        return res

    monkeypatch.setattr(engine, "run", checked)
    monkeypatch.setattr(simulator, "run", checked)
    yield


def pytest_terminal_summary(terminalreporter):
    c = _CROSSCHECKED
    if c["runs"]:
        terminalreporter.write_line(
            f"torch backend == numba engine on {c['runs']} runs ({c['fixed']} fixed point); models: "
            f"{', '.join(sorted(c['models']))}; projections: {', '.join(sorted(c['projections']))}")
