"""Address-event streams (simulator.events): the documented binning rule on hand-made events, event files (.npz,
HDF5) and their errors, and binned counts (> 1 = repeated spikes) simulated identically by the engine, the torch
backend and the reference, with the input's synaptic work counted by hand."""
import numpy as np
import pytest
import torch

from spikeforge import simulator
from spikeforge.converter import SpikingNetwork
from spikeforge.converter.mapping import one_population_per_core
from spikeforge.errors import UserError
from spikeforge.simulator import Network, Population, Projection, bin_events, bin_samples, load_events, save_events
from spikeforge.simulator.arrays import WEIGHT_BYTES

SYNOPS, MACS, BYTES = (simulator.COUNTERS.index(k) for k in ("synops", "macs", "synapse_bytes_read"))


def _ev(t, x, y, p):
    return {"t": np.array(t), "x": np.array(x), "y": np.array(y), "p": np.array(p)}


def test_fixed_dt_bins_counts_polarity_channels_and_drops_events_outside_the_window():
    ev = _ev([130, 100, 105, 180, 199, 200, 99], [0, 1, 1, 2, 0, 0, 0], [0, 2, 2, 1, 0, 0, 0], [1, 0, 0, 1, -1, 1, 1])
    f, dropped = bin_events(ev, (2, 3, 3), T=4, dt=25, t0=100)  # window [100, 200): steps of 25 us
    assert f.shape == (4, 2, 3, 3) and dropped == 2  # t = 200 and t = 99 are outside
    assert f[0, 0, 2, 1] == 2  # two off events of one pixel in step 0: a count of 2
    assert f[1, 1, 0, 0] == 1  # t = 130: step floor(30 / 25) = 1, on -> channel 1
    assert f[3, 1, 1, 2] == 1 and f[3, 0, 0, 0] == 1  # t = 180, 199: step 3; p = -1 is off
    assert f.sum() == 5
    summed, _ = bin_events(ev, (1, 3, 3), T=4, dt=25, t0=100)  # one channel: polarities summed
    assert np.array_equal(summed[:, 0], f.sum(1))


def test_default_window_spans_the_sample_and_the_last_event_lands_in_the_last_step():
    ev = {"t": np.array([1010, 1000, 1040, 1020]), "address": np.array([3, 0, 5, 3])}  # unsorted times are fine
    f, dropped = bin_events(ev, (6,), T=4)  # t0 = 1000, span 40: steps of 10, the last one closed
    assert dropped == 0
    assert f.tolist() == [[1, 0, 0, 0, 0, 0], [0, 0, 0, 1, 0, 0], [0, 0, 0, 1, 0, 0], [0, 0, 0, 0, 0, 1]]
    one, _ = bin_events({"t": np.array([7, 7]), "address": np.array([1, 1])}, (2,), T=3)
    assert one.tolist() == [[0, 2], [0, 0], [0, 0]]


def test_event_files_round_trip_and_errors_name_the_file_and_field(tmp_path):
    samples = [_ev([5, 3], [0, 1], [1, 0], [1, 0]), _ev([], [], [], []), _ev([12], [2], [2], [0])]
    for name in ("ev.npz", "ev.h5"):
        save_events(tmp_path / name, samples, labels=[4, 5, 6])
        got, labels = load_events(tmp_path / name, "label")
        assert labels.tolist() == [4, 5, 6] and len(got) == 3 and len(got[1]["t"]) == 0
        assert got[0]["t"].tolist() == [5, 3] and got[2]["x"].tolist() == [2]
    save_events(tmp_path / "ev.npz", samples + [_ev([], [], [], [])])  # a last sample without events is kept
    frames, dropped = bin_samples(load_events(tmp_path / "ev.npz")[0], (2, 3, 3), T=2, dt=5, t0=0)
    assert frames.shape == (4, 2, 2, 3, 3) and dropped.tolist() == [0, 0, 1, 0]  # t = 12 is after [0, 10)
    assert frames[0, 1, 1, 1, 0] == 1 and frames[0, 0, 0, 0, 1] == 1 and frames.sum() == 2  # (t, p, y, x)
    bad = tmp_path / "bad.npz"
    np.savez(bad, t=np.array([1, 2]), x=np.array([0, 1]), y=np.array([0, 0]))
    with pytest.raises(UserError, match=f"{bad}: no field 'p'"):
        load_events(bad)
    np.savez(bad, t=np.array([1, -2]), x=np.array([0, 1]), y=np.array([0, 0]), p=np.array([0, 1]))
    with pytest.raises(UserError, match=f"{bad}: field 't' has a negative time \\(-2 at event 1\\)"):
        load_events(bad)
    np.savez(bad, t=np.array([1, 2]), x=np.array([0, 3]), y=np.array([0, 0]), p=np.array([0, 1]))
    with pytest.raises(UserError, match=r"bad.npz \(sample 0\): field 'x' has 3 at event 1, outside the input's "
                                        r"width 3"):
        bin_samples(load_events(bad)[0], (2, 3, 3), T=2, source=str(bad))
    with pytest.raises(UserError, match="field 'p' has 2 at event 0"):
        bin_events(_ev([1], [0], [0], [2]), (2, 3, 3), T=2)
    with pytest.raises(UserError, match=r"need an input of shape \(2, H, W\).*give the events as \(t, address\)"):
        bin_events(_ev([1], [0], [0], [1]), (18,), T=2)
    with pytest.raises(UserError, match="field 'address' has 18 at event 0, outside the input of 18 neurons"):
        bin_events({"t": np.array([0]), "address": np.array([18])}, (18,), T=2)
    with pytest.raises(FileNotFoundError):
        load_events(tmp_path / "missing.npz")


def _event_net():
    """in (2, 4, 4) -> conv 3x3 (3 channels, padding 1) -> IF -> dense -> readout (3)."""
    rng = np.random.default_rng(3)
    pops = [Population.make("in", "input", (2, 4, 4)), Population.make("c", "if", (3, 4, 4), 0.6, 0.3),
            Population.make("out", "readout", (3,))]
    projs = [Projection("conv", "conv2d", "in", "c", rng.normal(0, 0.5, (3, 2, 3, 3)).astype(np.float32),
                        padding=(1, 1)),
             Projection("fc", "dense", "c", "out", rng.normal(0, 0.3, (3, 48)).astype(np.float32))]
    return Network(pops, projs, *one_population_per_core(pops, projs), {})


def test_binned_counts_are_repeated_spikes_identical_in_engine_backend_and_reference():
    net = _event_net()
    rng = np.random.default_rng(5)
    samples = [_ev(rng.integers(0, 1000, n), rng.integers(0, 4, n), rng.integers(0, 4, n), rng.integers(0, 2, n))
               for n in (60, 200, 5)]
    T = 6
    frames, dropped = bin_samples(samples, (2, 4, 4), T)
    assert dropped.sum() == 0 and frames.max() >= 3  # several events of one pixel in one step
    res = simulator.run(net, frames, T, spikes=True, record_counts=True)  # crosschecked with the torch backend
    out, rec = SpikingNetwork(net)(torch.as_tensor(frames), T)
    np.testing.assert_array_equal(res.spike_counts["c"], rec.spike_counts["c"].numpy())
    np.testing.assert_allclose(res.output, out.numpy(), rtol=1e-9, atol=1e-12)
    # by hand: an input pixel (y, x) reaches (valid rows) x (valid columns) x 3 conv neurons; each event costs that
    valid = np.array([2, 3, 3, 2])
    fan = 3 * valid[:, None] * valid[None, :]
    events = frames.sum(axis=1)  # (B, 2, 4, 4) events per pixel over all steps
    conv_core = int(np.flatnonzero(res.core_population == 1)[0])
    expected = (events * fan).sum(axis=(1, 2, 3))
    assert res.counters[:, conv_core, SYNOPS].sum() == expected.sum() and res.total("macs") == 0
    assert res.counters[:, conv_core, BYTES].sum() == expected.sum() * WEIGHT_BYTES  # one weight read per synop
    hidden = res.per_sample[:, SYNOPS] - res.spike_counts["c"].reshape(3, -1).sum(1) * 3  # minus c -> out synapses
    assert hidden.tolist() == expected.tolist()
    per_step = (frames * fan).sum(axis=(0, 2, 3, 4))
    assert res.counters[:, conv_core, SYNOPS].tolist() == per_step.tolist()
    as_analog = simulator.run(net, frames, T, spikes=False)  # the same counts as currents: MACs, one per value
    assert as_analog.counters[:, conv_core, MACS].sum() == ((frames > 0) * fan).sum()
    np.testing.assert_array_equal(as_analog.output, res.output)


def test_repeated_spikes_are_counted_on_every_core_of_a_split_layer(tmp_path):
    """A 2150-neuron hidden layer mapped onto Loihi's 1024-neuron cores: each core counts, per input event, one
    synaptic operation per hidden neuron it holds."""
    from conftest import write_tiny_network

    from spikeforge.converter.mapping import map_network
    from spikeforge.hwmodels import load_target

    net = map_network(simulator.load_network(write_tiny_network(tmp_path / "tiny.h5")), load_target("loihi"))
    rng = np.random.default_rng(6)
    frames = rng.integers(0, 4, (3, 4, 64)).astype(np.float64) * (rng.random((3, 4, 64)) < 0.3)
    assert frames.max() == 3
    res = simulator.run(net, frames, 4, spikes=True)  # crosschecked with the torch backend
    hidden = net.cores.population == 1
    assert hidden.sum() >= 3
    per_core = res.counters[:, hidden, SYNOPS].sum(0)
    neurons = (net.cores.neuron_stop - net.cores.neuron_start)[hidden]
    assert per_core.tolist() == (frames.sum() * neurons).astype(int).tolist()
    static = simulator.run(net, frames[:, 0], 4, spikes=True)  # the same counts every step
    repeated = simulator.run(net, np.repeat(frames[:, :1], 4, axis=1), 4, spikes=True)
    assert np.array_equal(static.counters, repeated.counters) and static.total("macs") == 0
    assert static.counters[:, hidden, SYNOPS].sum(0).tolist() == (frames[:, 0].sum() * 4 * neurons).tolist()


def test_repeated_spikes_through_a_delayed_input_projection_count_when_sent():
    """Input counts through a projection of delay 2: the reference gets the same spikes, and the synaptic work is
    counted at the step the events are sent (the engine's rule for delays), n per synapse for a count n."""
    net = _event_net()
    net.projections[0].delay = 2
    rng = np.random.default_rng(7)
    frames = rng.integers(0, 3, (2, 5, 2, 4, 4)).astype(np.float64)
    res = simulator.run(net, frames, 5, spikes=True, record_counts=True, record=("c",))  # crosschecked with torch
    assert res.spikes["c"][:, :2].sum() == 0 and res.spikes["c"][:, 2:].any()  # nothing arrives before step 2
    _, rec = SpikingNetwork(net)(torch.as_tensor(frames), 5)
    np.testing.assert_array_equal(res.spike_counts["c"], rec.spike_counts["c"].numpy())
    valid = np.array([2, 3, 3, 2])
    fan = 3 * valid[:, None] * valid[None, :]
    conv_core = int(np.flatnonzero(res.core_population == 1)[0])
    assert res.counters[:, conv_core, SYNOPS].tolist() == (frames * fan).sum(axis=(0, 2, 3, 4)).tolist()


def test_spikes_true_refuses_values_that_are_not_counts():
    net = _event_net()
    with pytest.raises(ValueError, match=r"spikes=True needs spike counts \(non-negative integers\), but input "
                                         r"sample 1 has 0.5"):
        simulator.run(net, np.stack([np.zeros((2, 2, 4, 4)), np.full((2, 2, 4, 4), 0.5)]), 2, spikes=True)


def test_digits_events_follow_the_documented_saccade_rule_and_run_on_a_two_channel_input():
    """One bright pixel: 4 events (|d| = 1, threshold 0.25) off where it leaves and on where it arrives, per move,
    evenly spread in the move; binned per move (dt = move_us) each step holds those 4 + 4 as counts."""
    from spikeforge.data import digits_events

    img = np.zeros((1, 1, 3, 3))
    img[0, 0, 0, 0] = 1.0
    (ev,), shape = digits_events(img, threshold=0.25, move_us=1000)
    assert shape == (4, 4) and len(ev["t"]) == 32
    first = ev["t"] < 1000  # move right: (y 0, x 0) off, (y 0, x 1) on
    assert sorted(ev["t"][first & (ev["x"] == 0)].tolist()) == [200, 400, 600, 800]
    assert set(zip(ev["y"][first], ev["x"][first], ev["p"][first])) == {(0, 0, 0), (0, 1, 1)}
    frames, dropped = bin_events(ev, (2, *shape), T=4, dt=1000, t0=0)
    assert dropped == 0 and frames.sum(axis=(1, 2, 3)).tolist() == [8, 8, 8, 8]
    assert frames[1, 1, 1, 1] == 4 and frames[1, 0, 0, 1] == 4  # move down: on at (1, 1), off at (0, 1)
    res = simulator.run(_event_net_for(shape), frames[None], 4, spikes=True)
    assert res.total("macs") == 0 and res.total("synops") > 0


def _event_net_for(shape):
    rng = np.random.default_rng(9)
    pops = [Population.make("in", "input", (2, *shape)), Population.make("h", "if", (5,), 0.5, 0.25),
            Population.make("out", "readout", (2,))]
    projs = [Projection("a", "dense", "in", "h", rng.normal(0, 0.5, (5, 2 * shape[0] * shape[1])).astype(np.float32)),
             Projection("b", "dense", "h", "out", rng.normal(0, 0.5, (2, 5)).astype(np.float32))]
    return Network(pops, projs, *one_population_per_core(pops, projs), {})
