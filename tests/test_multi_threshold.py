"""Multi-threshold neurons (ECMT) in the file format, the numba engine and the torch reference."""
import numpy as np
import pytest
import torch

from spikeforge import simulator
from spikeforge.converter import SpikingNetwork, convert, write_network
from spikeforge.converter.mapping import one_population_per_core
from spikeforge.simulator import NetworkFileError, load_network
from spikeforge.simulator.network import Network, Population, Projection


def _hand_net(theta_neg=0.5, payload="graded"):
    """input -> identity dense -> 3 multi-threshold neurons (θ = 1, n = 3, v0 = 0) -> identity dense -> readout."""
    pops = [Population.make("in", "input", (3,)),
            Population.make("mt", "multi_threshold", (3,), 1.0, 0.0, payload=payload, levels=3,
                            threshold_neg=theta_neg),
            Population.make("out", "readout", (3,))]
    projs = [Projection("in_mt", "dense", "in", "mt", np.eye(3, dtype=np.float32)),
             Projection("mt_out", "dense", "mt", "out", np.eye(3, dtype=np.float32))]
    return Network(pops, projs, *one_population_per_core(pops, projs), {})


def test_levels_by_hand_in_engine_and_reference(tmp_path):
    # θ = 1, levels 1, 2, 4 fire at m >= 0.5, 1.5, 3.5; θ_neg = 0.5, levels -0.5, -1, -2 at m < -0.25, -0.75, -1.75
    # x = 2.6: m = 2.6 -> 2 (v 0.6), 3.2 -> 2 (v 1.2), 3.8 -> 4 (v -0.2), 2.4 -> 2
    # x = -0.7: m = -0.7 -> -1 (v -0.2), -0.9 -> -2 (v 0.1), -0.6 -> -1 (v -0.1), -0.8 -> -2
    # x = 0.3: m = 0.3 silent, 0.6 -> 1 (v -0.4), -0.1 silent (above -0.25), 0.2 silent
    want = np.array([[2, -1, 0], [2, -2, 1], [4, -1, 0], [2, -2, 0]])
    x = np.array([[2.6, -0.7, 0.3]], np.float32)
    path = tmp_path / "mt.h5"
    write_network(_hand_net(), path)
    net = load_network(path)
    assert net.populations[1].levels == 3 and net.populations[1].threshold_neg[0] == 0.5
    res = simulator.run(net, x, 4, record=["mt"], record_counts=True)
    np.testing.assert_array_equal(res.spikes["mt"][0], want)
    np.testing.assert_array_equal(res.spike_counts["mt"][0], want.sum(0))
    values = np.where(want > 0, want * 1.0, want * 0.5).sum(0) / 4  # level values through the identity readout
    np.testing.assert_allclose(res.output[0], values, rtol=1e-6)
    out, rec = SpikingNetwork(net)(torch.as_tensor(x), 4, record_spikes=True)
    np.testing.assert_array_equal(rec.spikes["mt"][:, 0].numpy(), want)
    np.testing.assert_allclose(out[0].numpy(), values, rtol=1e-6)
    # one event per step per firing neuron whatever its level; it walks a dense row of 3 stored weights
    assert res.total("spikes") == np.count_nonzero(want) and res.total("synops") == 3 * np.count_nonzero(want)


def test_one_sided_neurons_never_fire_negative():
    res = simulator.run(_hand_net(theta_neg=None), np.array([[2.6, -0.7, 0.3]], np.float32), 4, record=["mt"])
    np.testing.assert_array_equal(res.spikes["mt"][0], [[2, 0, 0], [2, 0, 1], [4, 0, 0], [2, 0, 0]])


def test_parallel_payload_gives_the_same_events_and_counters_but_2n_weight_copies():
    from spikeforge.hwmodels import core_memory
    x = np.array([[2.6, -0.7, 0.3]], np.float32)
    a, b = (simulator.run(_hand_net(payload=p), x, 4, record_counts=True) for p in ("graded", "parallel"))
    np.testing.assert_array_equal(a.spike_counts["mt"], b.spike_counts["mt"])
    assert a.totals() == b.totals()
    # the readout core holds the 3x3 dense weights out of the multi-threshold population: 36 bytes, x 2n = 6
    graded, parallel = (core_memory(_hand_net(payload=p))["synapse_bytes"] for p in ("graded", "parallel"))
    assert graded[2] == 36 and parallel[2] == 6 * 36 and parallel[1] == graded[1] == 36
    assert core_memory(_hand_net(theta_neg=None, payload="parallel"))["synapse_bytes"][2] == 3 * 36


@pytest.mark.parametrize("change, problem", [
    (dict(levels=0), "levels 0 must be 1 to 7"),
    (dict(levels=8), "levels 8 must be 1 to 7"),
    (dict(threshold_neg=np.array([0.5, 0.0, 0.5], np.float32)), "must be > 0, got 0.0 at index 1"),
    (dict(threshold_neg=np.array([0.5, np.nan, 0.5], np.float32)), "non-finite"),
    (dict(reset="zero"), "need reset 'subtract'"),
    (dict(payload="expanded"), "payload 'expanded' does not apply"),
])
def test_bad_multi_threshold_populations_are_rejected(tmp_path, change, problem):
    net = _hand_net()
    for key, value in change.items():
        setattr(net.populations[1], key, value)
    with pytest.raises(NetworkFileError, match=problem):
        write_network(net, tmp_path / "bad.h5")
    assert not (tmp_path / "bad.h5").exists()


def test_other_models_reject_multi_threshold_fields(tmp_path):
    net = _hand_net()
    net.populations[2].threshold_neg = np.ones(3, np.float32)
    with pytest.raises(NetworkFileError, match="only multi-threshold neurons have one"):
        write_network(net, tmp_path / "bad.h5")


def test_converted_multi_threshold_resnet_beats_if_and_engine_matches_reference(trained_resnet, digits):
    """ReLU layers become one-sided multi-threshold neurons (n = 4, top level = the max-norm threshold).

    Measured: IF max T=1/2/4 13.8 / 78.6 / 92.2 %; multi-threshold 89.3 / 98.2 / 98.7 %."""
    xtr, _, xte, yte = digits
    mt = convert(trained_resnet, [xtr[:512]], neuron="multi_threshold", levels=4)
    ref = SpikingNetwork(mt, dtype=torch.float32)
    acc = {T: float((ref.predict(xte, T) == yte).float().mean()) for T in (1, 2)}
    print("multi-threshold", acc)
    assert acc[1] >= 0.85 and acc[2] >= 0.96
    res = simulator.run(mt, xte[:16].numpy(), 3, record_counts=True)
    _, rec = SpikingNetwork(mt)(xte[:16], 3)
    for name, c in rec.spike_counts.items():
        np.testing.assert_array_equal(res.spike_counts[name], c.numpy())
