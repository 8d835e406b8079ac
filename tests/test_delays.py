"""Projection delays (format 1.8) and the hardware pipeline (one step per hop): an event sent at step t arrives
at t + delay; engine, torch backend (conftest cross-checks every run) and reference agree; counts by hand."""
import numpy as np
import pytest
import torch

from spikeforge import simulator
from spikeforge.converter import SpikingNetwork, convert, write_network
from spikeforge.converter.mapping import map_network, one_population_per_core, pipelined
from spikeforge.hwmodels.targets import load_target
from spikeforge.simulator import Network, NetworkFileError, Population, Projection, load_network


def _net(pops, projs):
    cores, edges = one_population_per_core(pops, projs)
    return Network(pops, projs, cores, edges, {})


def _chain(delay):
    """input (1) -> IF a (θ 1) -> IF b (θ 1, weight 1, the given delay) -> readout."""
    pops = [Population.make("in", "input", (1,)), Population.make("a", "if", (1,), 1.0, 0.0),
            Population.make("b", "if", (1,), 1.0, 0.0), Population.make("out", "readout", (1,))]
    projs = [Projection("in_a", "dense", "in", "a", np.ones((1, 1), np.float32)),
             Projection("a_b", "dense", "a", "b", np.ones((1, 1), np.float32), delay=delay),
             Projection("b_out", "dense", "b", "out", np.ones((1, 1), np.float32))]
    return _net(pops, projs)


def _reference_counts(net, x, T):
    out, rec = SpikingNetwork(net)(torch.as_tensor(x), T)
    return out.numpy(), {k: v.numpy() for k, v in rec.spike_counts.items()}


def test_a_delayed_spike_arrives_delay_steps_later_and_its_synapse_counts_then():
    """a fires every step (input 1 >= θ 1). With delay 2, b gets a's step-t spike at t + 2: b fires at t = 2..5,
    4 spikes of 6; the a -> b synapse works when a spike is sent (a chip's synapse unit takes it as it arrives and
    adds it to the accumulator of its delivery step): 6 synaptic operations, one per step, the last two never
    delivered."""
    T = 6
    net = _chain(2)
    res = simulator.run(net, np.ones((1, 1)), T, record=["a", "b"], record_counts=True)
    np.testing.assert_array_equal(res.spikes["a"][0, :, 0], [1, 1, 1, 1, 1, 1])
    np.testing.assert_array_equal(res.spikes["b"][0, :, 0], [0, 0, 1, 1, 1, 1])
    synops = res.counters[:, :, simulator.COUNTERS.index("synops")]
    b_core = int(np.flatnonzero(res.core_population == 2)[0])
    np.testing.assert_array_equal(synops[:, b_core], [1, 1, 1, 1, 1, 1])
    spikes = res.counters[:, :, simulator.COUNTERS.index("spikes")]
    assert spikes[:, int(np.flatnonzero(res.core_population == 1)[0])].sum() == 6  # sent: counted when sent
    assert res.output[0, 0] == pytest.approx(4 / T)
    out, counts = _reference_counts(net, np.ones((1, 1)), T)
    np.testing.assert_array_equal(res.spike_counts["b"], counts["b"])
    np.testing.assert_allclose(res.output, out, rtol=1e-12)
    undelayed = simulator.run(_chain(0), np.ones((1, 1)), T, record=["b"])
    np.testing.assert_array_equal(undelayed.spikes["b"][0, :, 0], np.ones(T))


def test_a_delayed_static_input_is_delivered_from_step_delay_on():
    net = _chain(0)
    net.projections[0].delay = 3
    res = simulator.run(net, np.ones((2, 1)), 5, record=["a"])
    np.testing.assert_array_equal(res.spikes["a"][:, :, 0], [[0, 0, 0, 1, 1]] * 2)
    macs = res.counters[:, :, simulator.COUNTERS.index("macs")].sum(axis=1)
    np.testing.assert_array_equal(macs, [2, 2, 2, 2, 2])  # two samples, one input synapse each, sent every step


@pytest.fixture(scope="module")
def cnn(trained_resnet, digits):
    return convert(trained_resnet, [digits[0][:256]], neuron="group", tau=4)


def test_pipelined_residual_network_engine_equals_reference_and_lags_by_its_depth(cnn, digits):
    """One step per hop on a residual CNN: the skip connections arrive before the main branches, as on a chip;
    spike counts equal the reference's, the torch backend's (conftest) and the file's."""
    x = digits[2][:6].double().numpy()
    T = 10
    piped = pipelined(cnn, 1)
    assert all(q.delay == 1 for q in piped.projections) and piped.attrs["hop_delay"] == 1
    assert any(q.kind == "identity" for q in piped.projections)  # residual: paths of different lengths meet
    res = simulator.run(piped, x, T, record_counts=True)
    out, counts = _reference_counts(piped, x, T)
    for name, c in counts.items():
        np.testing.assert_array_equal(res.spike_counts[name], c, err_msg=name)
    np.testing.assert_allclose(res.output, out, rtol=1e-9, atol=1e-12)
    plain = simulator.run(cnn, x, T, record_counts=True)
    assert res.total("spikes") < plain.total("spikes")  # deep layers start later
    assert not np.array_equal(res.output, plain.output)


def test_delays_survive_the_file_and_the_mapping(cnn, digits, tmp_path):
    piped = map_network(cnn, load_target("loihi"), placement="snake", hop_delay=1)
    piped.projections[0].delay = 3
    path = write_network(piped, tmp_path / "piped.h5")
    back = load_network(path)
    assert [q.delay for q in back.projections] == [q.delay for q in piped.projections]
    x = digits[2][:3].double().numpy()
    a, b = simulator.run(piped, x, 6), simulator.run(back, x, 6)
    assert np.array_equal(a.per_sample, b.per_sample) and np.array_equal(a.output, b.output)
    assert "delay" not in _h5_attrs(write_network(cnn, tmp_path / "plain.h5"), cnn.projections[0].name)


def _h5_attrs(path, projection):
    import h5py

    with h5py.File(path, "r") as h5:
        return dict(h5[f"projections/{projection}"].attrs)


def test_a_pipelined_max_pooling_gate_by_hand():
    """Every hop 2 steps: a gets its input from t = 2, so a(0,0) (v0 0.75, input 0.5) fires at t = 2, 4, 6, 8 and
    a(0,1) (input 0.75) at t = 3, 4, 5, 7, 8. The gate counts them 2 steps later: at 4 (1/0: a(0,0) wins, it
    fired), 5 (1/1: a(0,0) wins, silent at t = 3), 6 (2/2: a(0,0), fired), 7 (2/3: a(0,1)), 8 (3/3: a(0,0)): m
    fires at t = 4, 6, 7, 8; of these the readout gets t = 4 and 6 before T = 9 ends: output 2/9."""
    from test_maxpool import _gate_network

    net = pipelined(_gate_network(), 2)
    net.populations[1].v_init[0] = 0.75
    x = np.array([[0.5, 0.75, 0.0, 0.0]]).reshape(1, 1, 2, 2)
    res = simulator.run(net, x, 9, record=["a", "m"], record_counts=True)
    np.testing.assert_array_equal(res.spikes["a"][0].reshape(9, 4)[:, :2].T, [[0, 0, 1, 0, 1, 0, 1, 0, 1],
                                                                             [0, 0, 0, 1, 1, 1, 0, 1, 1]])
    np.testing.assert_array_equal(res.spikes["m"][0].reshape(9), [0, 0, 0, 0, 1, 0, 1, 1, 1])
    assert res.output[0, 0] == pytest.approx(2 / 9)
    out, counts = _reference_counts(net, x, 9)
    np.testing.assert_array_equal(res.spike_counts["a"], counts["a"])
    np.testing.assert_allclose(res.output, out, rtol=1e-12)


@pytest.mark.parametrize("T", [1, 3, 6])
def test_pipelined_matmul_node_matches_the_reference(T):
    from test_ec_nodes import _matmul_net

    net = pipelined(_matmul_net(), 1)
    net.projections[3].delay = 2  # the operands arrive a step apart
    x = np.random.default_rng(5).normal(0, 1, (3, 10)).astype(np.float32)
    res = simulator.run(net, x, T, record_counts=True)
    out, counts = _reference_counts(net, x, T)
    for name, c in counts.items():
        np.testing.assert_array_equal(res.spike_counts[name], c, err_msg=name)
    np.testing.assert_allclose(res.output.reshape(3, -1), out.reshape(3, -1), rtol=1e-9, atol=1e-12)
    assert (res.output == 0).all() == (T < 4)  # the product reaches the readout 2 + 1 steps after A and B exist


@pytest.mark.parametrize("delay, problem", [(-1, "delay -1 must be an integer"), (True, "delay True"),
                                            (1.5, "delay 1.5"), (10**6, "from 0 to 4096")])
def test_bad_delays_are_refused_naming_the_projection(tmp_path, delay, problem):
    net = _chain(0)
    net.projections[1].delay = delay
    with pytest.raises(NetworkFileError, match=rf"/projections/a_b.*{problem}"):
        simulator.validate_network(net)


def test_a_non_integer_delay_attribute_in_a_file_is_refused(tmp_path):
    import h5py

    path = write_network(_chain(1), tmp_path / "n.h5")
    with h5py.File(path, "a") as h5:
        h5["projections/a_b"].attrs["delay"] = 1.5
    with pytest.raises(NetworkFileError, match=r"a_b.*'delay' must be an integer"):
        load_network(path)


def test_hop_delay_must_be_a_whole_number():
    with pytest.raises(ValueError, match="hop delay"):
        pipelined(_chain(0), -1)
