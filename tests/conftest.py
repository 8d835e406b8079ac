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
# SPIKEFORGE_CROSSCHECK=0 turns it off; SPIKEFORGE_CROSSCHECK_DEVICE=cuda runs the torch side on a GPU. The terminal
# summary lists how many runs were compared and which neuron models and projection kinds they covered.
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
            device = os.environ.get("SPIKEFORGE_CROSSCHECK_DEVICE", "cpu")
            other = real(flat, inputs, T, *args, backend="torch", device=device, **kwargs)
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
            f"torch backend ({os.environ.get('SPIKEFORGE_CROSSCHECK_DEVICE', 'cpu')}) == numba engine on "
            f"{c['runs']} runs ({c['fixed']} fixed point); models: "
            f"{', '.join(sorted(c['models']))}; projections: {', '.join(sorted(c['projections']))}")


def write_tiny_network(path, hidden=2150):
    """A 64 -> hidden IF -> 300 IF -> 10 readout network, one core per layer (with the default hidden=2150 its
    hidden core holds 2.1x Loihi's 1024 neurons): command-line tests that need no training."""
    from spikeforge.converter import write_network
    from spikeforge.converter.mapping import one_population_per_core
    from spikeforge.simulator.network import Network, Population, Projection

    rng = np.random.default_rng(0)
    pops = [Population.make("in", "input", (64,)), Population.make("h", "if", (hidden,), 1.0, 0.5),
            Population.make("h2", "if", (300,), 1.0, 0.5), Population.make("out", "readout", (10,))]
    projs = [Projection("a", "dense", "in", "h", (rng.normal(size=(hidden, 64)) * 0.3).astype(np.float32)),
             Projection("b", "dense", "h", "h2", (rng.normal(size=(300, hidden)) * 0.05).astype(np.float32)),
             Projection("c", "dense", "h2", "out", (rng.normal(size=(10, 300)) * 0.1).astype(np.float32))]
    return write_network(Network(pops, projs, *one_population_per_core(pops, projs), {"name": "tiny"}), path)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """(network file, .npz with 20 samples x and integer labels y) of write_tiny_network."""
    folder = tmp_path_factory.mktemp("tiny")
    rng = np.random.default_rng(1)
    np.savez(folder / "data.npz", x=rng.random((20, 64)).astype(np.float32), y=rng.integers(0, 10, 20))
    return write_tiny_network(folder / "tiny.h5"), folder / "data.npz"
