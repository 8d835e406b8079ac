import numba
import numpy as np
import pytest
import torch

from spikeforge import simulator
from spikeforge.converter import SpikingNetwork, convert, write_network
from spikeforge.converter.mapping import one_population_per_core
from spikeforge.simulator import Network, NetworkFileError, Population, Projection


def _assert_matches_reference(net, x, T):
    res = simulator.run(net, x, T, record_counts=True)
    out, rec = SpikingNetwork(net)(torch.as_tensor(x), T)
    assert set(res.spike_counts) == set(rec.spike_counts)
    for name, counts in rec.spike_counts.items():
        np.testing.assert_array_equal(res.spike_counts[name], counts.numpy(), err_msg=name)
    np.testing.assert_allclose(res.output, out.numpy(), rtol=1e-5, atol=1e-6)
    return res


@pytest.fixture(scope="module")
def converted(trained_resnet, trained_mlp, digits):
    calib = digits[0][:256]
    return {"resnet": convert(trained_resnet, [calib], norm="percentile", percentile=99.9),
            "mlp": convert(trained_mlp, [calib], norm="max")}


@pytest.mark.parametrize("model", ["resnet", "mlp"])
@pytest.mark.parametrize("T", [1, 4, 16])
@pytest.mark.parametrize("batch", [1, 7])
def test_simulator_equals_torch_reference(converted, digits, model, T, batch):
    x = digits[2][:batch].numpy()
    res = _assert_matches_reference(converted[model], x, T)
    assert res.total("spikes") > 0


def _hand_network(projs, pops):
    cores, edges = one_population_per_core(pops, projs)
    net = Network(pops, projs, cores, edges, {})
    simulator.validate_network(net)
    return net


def test_strided_grouped_padded_conv_pool_sparse_identity_match_reference():
    """Every projection kind and conv parameter on random weights, against the reference."""
    rng = np.random.default_rng(1)

    def if_pop(name, shape, theta):
        return Population.make(name, "if", shape, theta, theta / 2, rng.normal(0, 0.05, int(np.prod(shape))))

    pops = [Population.make("in", "input", (4, 9, 9)),
            if_pop("a", (6, 5, 5), 0.8),      # conv k3 s2 p1 groups 2
            if_pop("b", (6, 3, 3), 0.5),      # avgpool k3 s2 p1
            if_pop("c", (54,), 0.7),          # identity from b (3D -> 1D) + sparse from a
            Population.make("out", "readout", (5,))]
    n_sparse = 150
    rows = np.sort(rng.integers(0, 150, n_sparse))
    indptr = np.searchsorted(rows, np.arange(151)).astype(np.int64)
    projs = [Projection("conv", "conv2d", "in", "a", rng.normal(0, 0.4, (6, 2, 3, 3)).astype(np.float32),
                        stride=(2, 2), padding=(1, 1), groups=2),
             Projection("pool", "avgpool", "a", "b", kernel=(3, 3), stride=(2, 2), padding=(1, 1)),
             Projection("ident", "identity", "b", "c"),
             Projection("sp", "sparse", "a", "c", rng.normal(0, 0.3, n_sparse).astype(np.float32), indptr,
                        rng.integers(0, 54, n_sparse).astype(np.int32)),
             Projection("fc", "dense", "c", "out", rng.normal(0, 0.3, (5, 54)).astype(np.float32))]
    net = _hand_network(projs, pops)
    x = rng.uniform(0, 1, (7, 4, 9, 9))
    x[x < 0.3] = 0
    for T in (1, 4, 16):
        res = _assert_matches_reference(net, x, T)
    assert all(res.total(k) > 0 for k in ("synops", "macs", "spikes"))


def test_lif_unit_spikes_and_strict_threshold_by_hand():
    """Format 1.5 options (NIR semantics). Input 1 drives two leaky populations (decay 0.5, zero reset) with
    current 0.75 and 1. 'ge' (θ 0.75, spikes carry θ): m = 0.75 >= θ every step -> fires 4 times, each 0.75.
    'gt' (θ 1, unit spikes): m = 1 (no: not > 1), then 0.5 + 1 = 1.5 (fires, reset to 0), ... -> steps 2 and 4."""
    pops = [Population.make("in", "input", (1,)),
            Population.make("ge", "lif", (1,), 0.75, 0.0, reset="zero", decay=0.5),
            Population.make("gt", "lif", (1,), 1.0, 0.0, reset="zero", decay=0.5, spike_value="unit",
                            threshold_test="gt"),
            Population.make("out", "readout", (2,))]
    projs = [Projection("a", "dense", "in", "ge", np.array([[0.75]], np.float32)),
             Projection("b", "dense", "in", "gt", np.array([[1.0]], np.float32)),
             Projection("ra", "dense", "ge", "out", np.array([[1.0], [0.0]], np.float32)),
             Projection("rb", "dense", "gt", "out", np.array([[0.0], [1.0]], np.float32))]
    net = _hand_network(projs, pops)
    res = simulator.run(net, np.ones((1, 1)), 4, record=["ge", "gt"], trace=[("gt", 0)])
    np.testing.assert_array_equal(res.spikes["ge"][0, :, 0], [1, 1, 1, 1])
    np.testing.assert_array_equal(res.spikes["gt"][0, :, 0], [0, 1, 0, 1])
    np.testing.assert_array_equal(res.traces[0, :, 0], [1.0, 0.0, 1.0, 0.0])
    np.testing.assert_allclose(res.output, [[0.75, 0.5]])
    _assert_matches_reference(net, np.ones((1, 1)), 4)


def test_leaky_neurons_with_nir_options_match_reference():
    """lif populations (random decays, every reset, unit / θ spikes, >= / > tests) on conv and dense layers."""
    rng = np.random.default_rng(3)
    pops = [Population.make("in", "input", (2, 8, 8)),
            Population.make("a", "lif", (4, 4, 4), 0.6, 0.0, rng.normal(0, 0.05, 64), reset="zero",
                            decay=rng.uniform(0.5, 1.0, 64), spike_value="unit", threshold_test="gt"),
            Population.make("b", "lif", (30,), rng.uniform(0.3, 1.0, 30), 0.1, reset="subtract",
                            decay=rng.uniform(0.7, 1.0, 30)),
            Population.make("c", "if", (20,), 0.5, 0.25, reset="none", spike_value="unit", threshold_test="gt"),
            Population.make("out", "readout", (5,))]
    projs = [Projection("conv", "conv2d", "in", "a", rng.normal(0, 0.5, (4, 2, 3, 3)).astype(np.float32),
                        stride=(2, 2), padding=(1, 1)),
             Projection("fa", "dense", "a", "b", rng.normal(0.05, 0.3, (30, 64)).astype(np.float32)),
             Projection("fb", "dense", "b", "c", rng.normal(0.05, 0.3, (20, 30)).astype(np.float32)),
             Projection("skip", "dense", "a", "c", rng.normal(0, 0.2, (20, 64)).astype(np.float32)),
             Projection("fc", "dense", "c", "out", rng.normal(0, 0.3, (5, 20)).astype(np.float32))]
    net = _hand_network(projs, pops)
    x = rng.uniform(0, 1, (5, 2, 8, 8))
    for T in (1, 4, 16):
        res = _assert_matches_reference(net, x, T)
    assert all(res.spike_counts[p].sum() > 0 for p in ("a", "b", "c"))


def test_active_neurons_are_those_an_event_reached_or_with_a_bias():
    """in (2) -> h (3 IF, θ = 1) through a sparse table in0 -> h0 (weight 0: still a stored synapse) and
    in1 -> h2 (0.5); h1 has a bias of 0.1 and no synapse; h -> readout (2), dense. Frames [1,0], [0,0], [0,1],
    [1,1]: h0 is reached in steps 0 and 3, h1 is active every step (its bias), h2 in steps 2 and 3, where it
    reaches θ and fires: the readout is reached in step 3 only. Every mapped neuron is still accessed."""
    pops = [Population.make("in", "input", (2,)),
            Population.make("h", "if", (3,), 1.0, 0.0, np.array([0.0, 0.1, 0.0])),
            Population.make("out", "readout", (2,))]
    projs = [Projection("w1", "sparse", "in", "h", np.array([0.0, 0.5], np.float32), np.array([0, 1, 2]),
                        np.array([0, 2])),
             Projection("w2", "dense", "h", "out", np.ones((2, 3), np.float32))]
    net = _hand_network(projs, pops)
    x = np.array([[[1, 0], [0, 0], [0, 1], [1, 1]]], np.float32)
    res = simulator.run(net, x, 4, record=["h"])
    np.testing.assert_array_equal(res.spikes["h"][0], [[0, 0, 0], [0, 0, 0], [0, 0, 0], [0, 0, 1]])
    np.testing.assert_array_equal(res.counter("active_neurons"), [[0, 2, 0], [0, 1, 0], [0, 2, 0], [0, 3, 2]])
    np.testing.assert_array_equal(res.counter("neuron_updates"), [[0, 3, 2]] * 4)
    np.testing.assert_array_equal(res.counter("packets_in"), [[0, 0, 0]] * 3 + [[0, 0, 1]])


def test_counters_equal_hand_computed_values():
    """input (2) -> 3 IF (θ=1, v0=0.5) -> readout (2). Input [1, 0]: one analog event per step.
    IF currents 1.0, 0.6, 0.2: spikes over 4 steps are 4, 2 (steps 1, 3), 1 (step 3)."""
    pops = [Population.make("in", "input", (2,)),
            Population.make("h", "if", (3,), 1.0, 0.5),
            Population.make("out", "readout", (2,))]
    w1 = np.array([[1.0, 0.5], [0.6, 0.5], [0.2, 0.5]], np.float32)
    projs = [Projection("w1", "dense", "in", "h", w1),
             Projection("w2", "dense", "h", "out", np.ones((2, 3), np.float32))]
    net = _hand_network(projs, pops)
    res = simulator.run(net, np.array([[1.0, 0.0]]), 4, record=["h"], trace=[("h", 1)])
    np.testing.assert_array_equal(res.spikes["h"][0], [[1, 1, 0], [1, 0, 0], [1, 1, 1], [1, 0, 0]])
    np.testing.assert_allclose(res.traces[0, :, 0], [0.1, 0.7, 0.3, 0.9], atol=1e-6)  # weights are float32
    # cores: 0 = in (0,0), 1 = h (1,0), 2 = out (0,1) on a 2-wide mesh; h -> out is 2 hops
    expected = {"macs": 3 * 4, "spikes": 7, "synops": 7 * 2, "packets": 7, "hops": 7 * 2,
                "synapse_bytes_read": (12 + 14) * 4, "neuron_updates": (3 + 2) * 4,
                "state_bytes_read": 20 * 4, "state_bytes_written": 20 * 4,
                "packets_in": 7,  # each spike's packet, received by the readout's core
                "active_neurons": (3 + 2) * 4,  # h gets the input every step; out a spike of h every step
                "chip_packets": 0, "chip_hops": 0}  # one chip
    assert res.totals() == expected
    np.testing.assert_array_equal(res.counter("packets_in")[:, 2], [2, 1, 3, 1])  # on the receiving core
    np.testing.assert_array_equal(res.counter("packets_in")[:, :2], 0)
    np.testing.assert_array_equal(res.counter("active_neurons"), [[0, 3, 2]] * 4)
    np.testing.assert_array_equal(res.counter("spikes")[:, 1], [2, 1, 3, 1])  # per step, on core 1
    np.testing.assert_array_equal(res.counter("synops")[:, 2], [4, 2, 6, 2])  # synapses live at the target
    np.testing.assert_array_equal(res.counter("macs")[:, 1], [3, 3, 3, 3])
    assert res.per_sample[0].tolist() == [expected[k] for k in simulator.COUNTERS]
    np.testing.assert_allclose(res.output, [[7 / 4, 7 / 4]])


@pytest.mark.parametrize("stride, pixel, fan_out", [(1, (0, 0), 4), (1, (0, 1), 6), (1, (1, 1), 9),
                                                     (2, (0, 0), 1), (2, (1, 1), 4), (2, (3, 3), 1)])
def test_conv_synapse_walk_counts_by_hand(stride, pixel, fan_out):
    """A single analog input pixel walks its kernel row: corner, edge and centre fan-outs of a 3x3 conv."""
    out_hw = 4 if stride == 1 else 2
    pops = [Population.make("in", "input", (1, 4, 4)),
            Population.make("a", "if", (2, out_hw, out_hw), 100.0, 0.0),
            Population.make("out", "readout", (1,))]
    projs = [Projection("c", "conv2d", "in", "a", np.ones((2, 1, 3, 3), np.float32), stride=(stride, stride),
                        padding=(1, 1)),
             Projection("fc", "dense", "a", "out", np.ones((1, 2 * out_hw * out_hw), np.float32))]
    net = _hand_network(projs, pops)
    x = np.zeros((1, 1, 4, 4))
    x[0, 0][pixel] = 1.0
    res = simulator.run(net, x, 3)
    assert res.total("macs") == 3 * 2 * fan_out  # 2 output channels
    assert res.total("spikes") == 0


def test_results_do_not_depend_on_thread_count(converted, digits):
    x = digits[2][:16].numpy()
    flat = simulator.prepare(converted["resnet"])
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = simulator.run(flat, x, 8, record_counts=True, batch_size=5)
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        many = simulator.run(flat, x, 8, record_counts=True, batch_size=16)
    finally:
        numba.set_num_threads(before)
    np.testing.assert_array_equal(one.output, many.output)
    np.testing.assert_array_equal(one.counters, many.counters)
    for name in one.spike_counts:
        np.testing.assert_array_equal(one.spike_counts[name], many.spike_counts[name])


def test_malformed_files_never_reach_the_kernels(tmp_path, converted):
    import h5py

    path = write_network(converted["mlp"], tmp_path / "mlp.h5")
    sim = simulator.run(path, np.zeros((1, 1, 8, 8)), 2)
    assert sim.output.shape == (1, 10)
    name = converted["mlp"].projections[0].name
    with h5py.File(path, "r+") as h5:
        del h5[f"projections/{name}/weight"]
        h5[f"projections/{name}/weight"] = np.zeros((3, 3), np.float32)
    with pytest.raises(NetworkFileError, match=r"shape \(3, 3\) != \(target size, source size\)"):
        simulator.run(path, np.zeros((1, 1, 8, 8)), 2)
    bad = converted["mlp"]
    bad.cores.neuron_stop[1] += 5  # a core claims neurons the population does not have
    try:
        with pytest.raises(NetworkFileError, match="do not tile"):
            simulator.run(bad, np.zeros((1, 1, 8, 8)), 2)
    finally:
        bad.cores.neuron_stop[1] -= 5


def test_bad_inputs_are_refused_clearly(converted):
    net = converted["mlp"]
    with pytest.raises(ValueError, match=r"do not fit the input population of shape \(1, 8, 8\)"):
        simulator.run(net, np.zeros((2, 10)), 4)
    x = np.zeros((3, 1, 8, 8))
    x[2, 0, 1, 1] = np.nan
    with pytest.raises(ValueError, match="input sample 2 contains NaN"):
        simulator.run(net, x, 4)
    with pytest.raises(ValueError, match="T must be an integer >= 1"):
        simulator.run(net, x[:1], 0)


def test_inputs_in_the_input_shape_flattened_or_without_size_1_dimensions_give_the_same_run(converted):
    """(N, 1, 8, 8), (N, 64), (N, 8, 8), (N, 8, 1, 8) and per-step frames (N, T, 64) hold the same values in the
    same (C) order; (N, 4, 16), which has the right number of values in another layout (e.g. channels last), is
    refused rather than read in the wrong order."""
    net = converted["mlp"]
    x = np.random.default_rng(0).random((3, 1, 8, 8))
    ref = simulator.run(net, x, 4)
    for shaped in (x.reshape(3, 64), x.reshape(3, 8, 8), x.reshape(3, 1, 1, 8, 8), x.reshape(3, 8, 1, 8)):
        assert np.array_equal(simulator.run(net, shaped, 4).per_sample, ref.per_sample), shaped.shape
    frames = np.repeat(x.reshape(3, 1, 64), 4, axis=1)
    assert np.array_equal(simulator.run(net, frames, 4).output, ref.output)
    with pytest.raises(ValueError, match=r"inputs of shape \(3, 4, 16\) do not fit the input population of shape "
                                         r"\(1, 8, 8\) and T=4 \(another layout, e.g. channels last, is not "
                                         r"reordered\)"):
        simulator.run(net, x.reshape(3, 4, 16), 4)
    with pytest.raises(ValueError, match=r"inputs of shape \(3, 4, 4, 16\) do not fit .* \(another layout"):
        simulator.run(net, np.repeat(x.reshape(3, 1, 4, 16), 4, axis=1), 4)


def test_runs_too_large_for_memory_are_refused_before_work(converted):
    net = converted["mlp"]
    x = np.zeros((2, 1, 8, 8))
    with pytest.raises(ValueError, match=r"T=1000000000 with 2 samples .* needs about .* [GT]iB .* allowed \(half "
                                         r"of this machine's memory\)"):
        simulator.run(net, x, 10**9)
    with pytest.raises(ValueError, match=r"needs about 4.12 KiB .* more than the 1000 bytes allowed by max_bytes"):
        simulator.run(net, x, 4, max_bytes=1000)  # 4 steps x (2 samples x 4 cores x 10 + 4 cores x 13 counters) x 8 B
    assert simulator.run(net, x, 4, max_bytes=10**6).T == 4


def test_row_core_tables_from_fan_out_equal_the_synapse_walk(converted, monkeypatch):
    """One core per population: the row-core tables from each row's fan-out equal the kernel's walk of every
    synapse (every projection kind; stride, padding, groups)."""
    from spikeforge.simulator import arrays

    rng = np.random.default_rng(3)
    pops = [Population.make("in", "input", (4, 9, 9)),
            Population.make("a", "if", (6, 5, 5), 0.8, 0.4), Population.make("b", "if", (6, 3, 3), 0.5, 0.2),
            Population.make("c", "if", (54,), 0.7, 0.3), Population.make("out", "readout", (5,))]
    indptr = np.searchsorted(np.sort(rng.integers(0, 150, 90)), np.arange(151)).astype(np.int64)
    projs = [Projection("conv", "conv2d", "in", "a", rng.normal(0, 0.4, (6, 2, 3, 3)).astype(np.float32),
                        stride=(2, 2), padding=(1, 1), groups=2),
             Projection("pool", "avgpool", "a", "b", kernel=(3, 3), stride=(2, 2), padding=(1, 1)),
             Projection("ident", "identity", "b", "c"),
             Projection("sp", "sparse", "a", "c", rng.normal(0, 0.3, 90).astype(np.float32), indptr,
                        rng.integers(0, 54, 90).astype(np.int32)),
             Projection("fc", "dense", "c", "out", rng.normal(0, 0.3, (5, 54)).astype(np.float32))]
    for net in (_hand_network(projs, pops), converted["resnet"], converted["mlp"]):
        fast = simulator.prepare(net).routing
        monkeypatch.setattr(arrays, "SINGLE_CORE_ROWS", False)
        walked = simulator.prepare(net).routing
        monkeypatch.setattr(arrays, "SINGLE_CORE_ROWS", True)
        for name in ("rc_off", "rc_ptr", "rc_core", "rc_cnt", "n_packets", "n_hops"):
            np.testing.assert_array_equal(getattr(fast, name), getattr(walked, name), err_msg=name)
