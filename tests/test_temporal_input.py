"""Per-step inputs (batch, T, *input shape): spike trains and time-varying currents; engine, torch backend and
reference agree, a repeated frame equals the static input, and the input's work is counted by hand."""
import numpy as np
import pytest
import torch

from spikeforge import simulator
from spikeforge.converter import SpikingNetwork, convert


@pytest.fixture(scope="module")
def mlp_net(trained_mlp, digits):
    return convert(trained_mlp, [digits[0][:256]], norm="max")


@pytest.fixture(scope="module")
def cnn_net(trained_resnet, digits):
    return convert(trained_resnet, [digits[0][:256]], neuron="group", tau=4)


def test_a_frame_repeated_every_step_equals_the_static_input(cnn_net, digits):
    x = digits[2][:5].double().numpy()
    T = 6
    static = simulator.run(cnn_net, x, T, record_counts=True)
    frames = simulator.run(cnn_net, np.repeat(x[:, None], T, axis=1), T, record_counts=True)
    assert np.array_equal(static.per_sample, frames.per_sample) and static.totals() == frames.totals()
    np.testing.assert_array_equal(static.output, frames.output)


@pytest.mark.parametrize("kind", ["spikes", "currents"])
def test_per_step_inputs_match_the_reference_and_count_the_input_work_by_hand(mlp_net, kind):
    rng = np.random.default_rng(0)
    T, n_in = 8, mlp_net.input.size
    hidden = mlp_net.projections[0]
    assert hidden.source == "input" and hidden.kind == "dense"
    fan_out = hidden.weight.shape[0]
    if kind == "spikes":  # Bernoulli spike trains at the pixel intensity
        x = (rng.random((4, T, *mlp_net.input.shape)) < 0.3).astype(np.float64)
    else:
        x = rng.uniform(-1, 1, (4, T, *mlp_net.input.shape)) * (rng.random((4, T, n_in)) < 0.5).reshape(
            4, T, *mlp_net.input.shape)
    res = simulator.run(mlp_net, x, T, record_counts=True)
    out, rec = SpikingNetwork(mlp_net)(torch.as_tensor(x), T)
    for name, counts in rec.spike_counts.items():
        np.testing.assert_array_equal(res.spike_counts[name], counts.numpy(), err_msg=name)
    np.testing.assert_allclose(res.output, out.numpy(), rtol=1e-9, atol=1e-12)
    events = np.count_nonzero(x.reshape(4, -1), axis=1)  # input events of each sample over all steps
    macs = res.per_sample[:, simulator.COUNTERS.index("macs")]
    if kind == "spikes":  # spike trains: synaptic operations, no MACs
        assert macs.sum() == 0
        core = int(np.flatnonzero(res.core_population == 1)[0])  # the first hidden layer's core: input synapses only
        assert res.counters[:, core, simulator.COUNTERS.index("synops")].sum() == events.sum() * fan_out
        static = simulator.run(mlp_net, x[:, 0], T)  # the same values as a static input count MACs
        assert static.total("macs") == np.count_nonzero(x[:, 0]) * fan_out * T
    else:
        np.testing.assert_array_equal(macs, events * fan_out)


def test_inputs_of_the_wrong_shape_name_both_forms(mlp_net):
    with pytest.raises(ValueError, match=r"expected \(batch, 1, 8, 8\) .* or \(batch, 4, 1, 8, 8\)"):
        simulator.run(mlp_net, np.zeros((2, 5, 1, 8, 8)), 4)


def test_a_spike_frame_counts_synaptic_operations_at_t_1_as_at_any_t(mlp_net):
    """One (batch, 1, *input shape) frame of 0 / 1 values at T = 1 is a spike frame, as the same frames are at
    T > 1: synaptic operations, no MACs (it counted MACs). The same values given as a static input
    (batch, *input shape) stay an analog input, MACs."""
    rng = np.random.default_rng(0)
    shape = tuple(mlp_net.input.shape)
    frame = (rng.random((4, 1) + shape) < 0.3).astype(np.float64)
    one = simulator.run(mlp_net, frame, 1)
    two = simulator.run(mlp_net, np.concatenate([frame, np.zeros_like(frame)], 1), 2)
    assert one.total("macs") == 0 and one.total("synops") > 0
    np.testing.assert_array_equal(one.counters[0], two.counters[0])  # step 0 counted alike, whatever T
    static = simulator.run(mlp_net, frame[:, 0], 1)
    assert static.total("macs") > 0
