"""Encoders for static data (simulator.encoding): rate and latency frames follow their documented rules, the same
seed gives the same spikes whatever the chunking, sharding and backend, engine == torch backend == reference, and
the input's synaptic work is counted by hand."""
import numpy as np
import pytest
import torch

from spikeforge import simulator
from spikeforge.converter import SpikingNetwork, convert
from spikeforge.simulator import Encoding, Network, Population, Projection, encode
from spikeforge.simulator.encoding import ENCODINGS

SYNOPS, MACS = simulator.COUNTERS.index("synops"), simulator.COUNTERS.index("macs")


@pytest.fixture(scope="module")
def mlp_net(trained_mlp, digits):
    return convert(trained_mlp, [digits[0][:256]], norm="max")


def _tiny(n_in=6, hidden=4):
    """in (n_in) -> dense -> IF (hidden) -> readout (3), one core per layer: hand-countable."""
    from spikeforge.converter.mapping import one_population_per_core

    rng = np.random.default_rng(0)
    pops = [Population.make("in", "input", (n_in,)), Population.make("h", "if", (hidden,), 0.5, 0.25),
            Population.make("out", "readout", (3,))]
    projs = [Projection("a", "dense", "in", "h", rng.normal(0, 0.5, (hidden, n_in)).astype(np.float32)),
             Projection("b", "dense", "h", "out", rng.normal(0, 0.5, (3, hidden)).astype(np.float32))]
    return Network(pops, projs, *one_population_per_core(pops, projs), {})


def test_latency_fires_once_at_the_documented_step_and_rate_follows_the_probability():
    x = np.array([[0.0, 0.1, 0.5, 0.75, 1.0]])
    f = encode(x, 5, "latency")
    assert f.shape == (1, 5, 5) and f.sum(1).tolist() == [[0, 1, 1, 1, 1]]
    # step round((1 - x)(T - 1)), halves up: 0.1 -> 3.6 -> 4, 0.5 -> 2, 0.75 -> 1, 1 -> 0
    assert f[0].argmax(0)[1:].tolist() == [4, 2, 1, 0]
    p = np.linspace(0, 1, 11)[None]
    r = encode(p, 4000, "rate", seed=3)
    assert set(np.unique(r)) <= {0.0, 1.0}
    np.testing.assert_allclose(r[0].mean(0), p[0], atol=0.03)
    assert r[0, :, 0].sum() == 0 and r[0, :, -1].sum() == 4000  # p = 0 never, p = 1 every step
    assert np.array_equal(encode(x, 3, "direct"), np.repeat(x[:, None], 3, 1))


def test_same_seed_same_spikes_whatever_the_chunk_and_a_different_seed_differs():
    x = np.random.default_rng(0).random((7, 2, 3))
    whole = encode(x, 6, "rate", seed=5)
    parts = np.concatenate([encode(x[a:b], 6, "rate", seed=5, first=a) for a, b in ((0, 3), (3, 4), (4, 7))])
    assert np.array_equal(whole, parts)
    assert not np.array_equal(whole, encode(x, 6, "rate", seed=6))
    assert not np.array_equal(whole[1:], encode(x[1:], 6, "rate", seed=5))  # a sample's spikes follow its index


@pytest.mark.parametrize("name", ["rate", "latency"])
def test_encoded_runs_match_the_reference_across_chunks_shards_and_backends(mlp_net, digits, name):
    x = digits[2][:9].double().numpy()
    T = 10
    enc = Encoding(name, seed=4)
    res = simulator.run(mlp_net, x, T, record_counts=True, encoding=enc, batch_size=4)  # crosschecked with torch
    frames = encode(x, T, name, seed=4)
    assert res.total("macs") == 0 and res.total("synops") > 0
    out, rec = SpikingNetwork(mlp_net)(torch.as_tensor(frames), T)
    for pop, counts in rec.spike_counts.items():
        np.testing.assert_array_equal(res.spike_counts[pop], counts.numpy(), err_msg=pop)
    np.testing.assert_allclose(res.output, out.numpy(), rtol=1e-9, atol=1e-12)
    for other in (simulator.run(mlp_net, frames, T, record_counts=True),  # the frames themselves
                  simulator.run(mlp_net, x, T, record_counts=True, encoding=enc, batch_size=1),
                  simulator.run(mlp_net, x, T, record_counts=True, encoding=enc, backend="torch", device="cpu")):
        assert np.array_equal(other.per_sample, res.per_sample)
        for pop in res.spike_counts:
            assert np.array_equal(other.spike_counts[pop], res.spike_counts[pop])
    shard = simulator.run(mlp_net, x[5:], T, record_counts=True, encoding=enc, sample_offset=5)
    assert np.array_equal(shard.per_sample, res.per_sample[5:])
    if name == "rate":
        other_seed = simulator.run(mlp_net, x, T, record_counts=True, encoding=Encoding(name, seed=5))
        assert not np.array_equal(other_seed.per_sample[:, SYNOPS], res.per_sample[:, SYNOPS])


@pytest.mark.parametrize("name", ENCODINGS)
def test_input_work_is_counted_by_hand(name):
    """Per step, every input spike costs one synaptic operation per synapse (4 on the hidden core); direct: one
    MAC per nonzero input and synapse every step."""
    net = _tiny()
    x = np.array([[0.0, 0.2, 0.5, 1.0, 0.9, 0.0], [1.0, 1.0, 0.0, 0.3, 0.0, 0.0]])
    T = 8
    res = simulator.run(net, x, T, encoding=name, record_counts=True)
    hidden_core = int(np.flatnonzero(res.core_population == 1)[0])
    if name == "direct":
        assert res.per_sample[:, MACS].tolist() == [4 * 4 * T, 3 * 4 * T]
        assert res.counters[:, hidden_core, SYNOPS].sum() == 0
        return
    assert res.total("macs") == 0
    if name == "latency":  # one spike per nonzero input
        expected = [4 * 4, 3 * 4]
    else:
        frames = encode(x, T, "rate", seed=0)
        expected = (frames.sum(axis=(1, 2)) * 4).astype(int).tolist()
        assert expected[1] >= 2 * T * 4  # the two inputs of value 1 spike every step
    per_sample_hidden = res.per_sample[:, SYNOPS] - res.spike_counts["h"].sum(1) * 3  # minus the h -> out synapses
    assert per_sample_hidden.tolist() == expected
    assert res.counters[:, hidden_core, SYNOPS].sum() == sum(expected)


def test_out_of_domain_inputs_are_named_and_clip_is_an_option(mlp_net):
    x = np.full((3, 1, 8, 8), 0.5)
    x[2, 0, 0, 0] = -0.25
    for name in ("rate", "latency"):
        with pytest.raises(ValueError, match=r"inputs: the %s encoding needs values in \[0, 1\], but sample 2 has "
                                             r"values in \[-0.25, 0.5\].*clip=True" % name):
            simulator.run(mlp_net, x, 4, encoding=name)
    clipped = encode(x, 4, "latency", clip=True)
    assert clipped[2, :, 0, 0, 0].sum() == 0 and clipped[0].sum() == 64
    assert str(Encoding("rate", 2, clip=True)) == "rate (seed 2), clipped to [0, 1]"
    with pytest.raises(ValueError, match="encoding must be one of direct, rate, latency, got 'poisson'"):
        simulator.run(mlp_net, x, 4, encoding="poisson")
    with pytest.raises(ValueError, match="seed must be an integer >= 0"):
        Encoding("rate", seed=-1)
    with pytest.raises(ValueError, match="already have one frame per step"):
        simulator.run(mlp_net, np.zeros((2, 4, 1, 8, 8)), 4, encoding="rate")


def test_default_chunks_of_an_encoded_run_bound_the_frames_memory(monkeypatch):
    """Without batch_size, a chunk's encoded frames stay under ENCODED_CHUNK_BYTES (here 3 samples' worth); the
    spikes do not depend on it."""
    from spikeforge.simulator import engine

    net, T = _tiny(), 5
    x = np.random.default_rng(1).random((8, 6))
    whole = simulator.run(net, x, T, encoding="rate")
    monkeypatch.setattr(engine, "ENCODED_CHUNK_BYTES", 8 * T * 6 * 3)
    done = []
    small = engine.run(net, x, T, encoding="rate", progress=lambda d, n: done.append(d))
    assert done == [3, 6, 8] and np.array_equal(small.per_sample, whole.per_sample)
