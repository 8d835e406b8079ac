"""EC compute nodes (expectation-compensated GELU / LayerNorm / softmax) in the file format and the engine."""
import numpy as np
import pytest
import torch
from scipy.special import erf

import simulator
from converter import SpikingNetwork, write_network
from converter.mapping import one_population_per_core
from simulator import NetworkFileError, load_network
from simulator.network import Network, Population, Projection

SHAPE = (2, 6)  # (tokens, features): layernorm and softmax normalize each token's 6 features
N = 12


def _numpy_fn(name, x, eps=1e-5):
    if name == "gelu":
        return 0.5 * x * (1 + erf(x / np.sqrt(2)))
    if name == "layernorm":
        return (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + eps)
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _net(function, tail=False):
    """input -> dense -> two-sided multi-threshold -> identity -> EC node -> identity -> readout, or with
    tail=True: EC node -> identity -> multi-threshold -> dense -> readout (EC events drive spikes)."""
    rng = np.random.default_rng(1)
    pops = [Population.make("in", "input", SHAPE),
            Population.make("mt", "multi_threshold", SHAPE, 0.25, 0.0, levels=3, threshold_neg=0.25),
            Population.make("ec", "ec", SHAPE, 0.0, 0.0, function=function)]
    projs = [Projection("in_mt", "dense", "in", "mt", rng.normal(0, 0.6, (N, N)).astype(np.float32)),
             Projection("mt_ec", "identity", "mt", "ec")]
    if tail:
        pops.append(Population.make("mt2", "multi_threshold", SHAPE, 0.125, 0.0, levels=3, threshold_neg=0.125))
        projs += [Projection("ec_mt2", "identity", "ec", "mt2"),
                  Projection("mt2_out", "dense", "mt2", "out", rng.normal(0, 0.5, (5, N)).astype(np.float32))]
        pops.append(Population.make("out", "readout", (5,)))
    else:
        pops.append(Population.make("out", "readout", SHAPE))
        projs.append(Projection("ec_out", "identity", "ec", "out"))
    return Network(pops, projs, *one_population_per_core(pops, projs), {})


@pytest.mark.parametrize("function", ["gelu", "layernorm", "softmax"])
@pytest.mark.parametrize("T", [1, 3, 8])
def test_engine_ec_identity_and_reference(tmp_path, function, T):
    """Σ_{t<=T} O(t) = T·F(mean input): the readout after the node is F of the mean of its spiking input."""
    write_network(_net(function), tmp_path / "ec.h5")
    net = load_network(tmp_path / "ec.h5")
    assert net.populations[2].function == function
    x = np.random.default_rng(2).normal(0, 1, (4, N)).astype(np.float32)
    res = simulator.run(net, x, T, record=["mt"], record_counts=True)
    levels = res.spikes["mt"] * 0.25  # θ = θ_neg = 0.25: a level s carries 0.25·s
    mean_in = levels.mean(axis=1).reshape(4, *SHAPE)
    want = _numpy_fn(function, mean_in).reshape(4, N)
    np.testing.assert_allclose(res.output.reshape(4, N), want, rtol=1e-9, atol=1e-12)
    out, rec = SpikingNetwork(net)(torch.as_tensor(x), T)
    np.testing.assert_array_equal(res.spike_counts["mt"], rec.spike_counts["mt"].numpy())
    np.testing.assert_allclose(res.output.reshape(4, N), out.reshape(4, N).numpy(), rtol=1e-9, atol=1e-12)
    # one MAC per element per step for the node, plus the analog input's dense MACs (N per nonzero input)
    per_core = res.counter("macs").sum(0)
    assert per_core[2] == 4 * N * T and per_core[1] == 4 * T * N * N


def test_ec_events_drive_downstream_spikes_like_the_reference():
    net = _net("layernorm", tail=True)
    x = np.random.default_rng(3).normal(0, 1, (16, N)).astype(np.float32)
    res = simulator.run(net, x, 6, record_counts=True)
    out, rec = SpikingNetwork(net)(torch.as_tensor(x), 6)
    for name in ("mt", "mt2"):
        np.testing.assert_array_equal(res.spike_counts[name], rec.spike_counts[name].numpy())
    assert np.abs(res.spike_counts["mt2"]).sum() > 0
    np.testing.assert_allclose(res.output, out.numpy(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("change, problem", [
    (dict(function="tanh"), "unknown EC function 'tanh'"),
    (dict(eps=0.0), "eps 0.0 must be in"),
    (dict(v_init=np.full(N, 0.5, np.float32)), "v_init must be 0"),
    (dict(shape=(2, 2, 3)), "EC nodes take shape"),
])
def test_bad_ec_nodes_are_rejected(tmp_path, change, problem):
    net = _net("gelu")
    for key, value in change.items():
        setattr(net.populations[2], key, value)
    with pytest.raises(NetworkFileError, match=problem):
        write_network(net, tmp_path / "bad.h5")


def test_only_ec_nodes_have_a_function(tmp_path):
    net = _net("gelu")
    net.populations[1].function = "gelu"
    with pytest.raises(NetworkFileError, match="only EC nodes have a function"):
        write_network(net, tmp_path / "bad.h5")
