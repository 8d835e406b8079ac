"""cuba neurons in Loihi's arithmetic (format 1.13, network.ARITHMETICS "loihi"): Lava's bit-accurate LIF in 24-bit
integers, traced by hand. The engine, the torch backend and the reference agree on every run (conftest)."""
import numpy as np
import pytest

from spikeforge import simulator
from spikeforge.converter import write_network
from spikeforge.converter.mapping import one_population_per_core
from spikeforge.simulator import Network, Population, Projection
from spikeforge.simulator.fileformat import NetworkFileError


def _one(i_decay, v_decay, theta, bias=0.0, weight=64.0, n_in=1, **kw):
    """in (n_in, analog) -> h (one loihi cuba neuron; netx's iDecay / vDecay in 1/4096) -> readout."""
    pops = [Population.make("in", "input", (n_in,)),
            Population.make("h", "cuba", (1,), theta, 0.0, bias, reset="zero", decay=(4096 - v_decay) / 4096,
                            syn_decay=(4096 - i_decay) / 4096, spike_value="unit", threshold_test="gt",
                            arithmetic="loihi", **kw),
            Population.make("out", "readout", (1,))]
    projs = [Projection("a", "dense", "in", "h", np.full((1, n_in), weight, np.float32)),
             Projection("b", "dense", "h", "out", np.ones((1, 1), np.float32))]
    cores, edges = one_population_per_core(pops, projs)
    return Network(pops, projs, cores, edges, {})


def test_the_membrane_decays_by_truncation_and_fires_above_the_threshold():
    """iDecay 4096 (no current memory), vDecay 1024 (β = 3/4), θ = 25·64 = 1600, input 10 (x 64 = 640 per step):
    m = 640, trunc(480) + 640 = 1120, 840 + 640 = 1480, 1110 + 640 = 1750 > 1600: spike, membrane 0; again."""
    net = _one(4096, 1024, 1600.0)
    res = simulator.run(net, np.array([[10.0]]), 8, record=["h"], trace=[("h", 0)])
    np.testing.assert_array_equal(res.spikes["h"][0, :, 0], [0, 0, 0, 1, 0, 0, 0, 1])
    np.testing.assert_array_equal(res.traces[0, :, 0], [640, 1120, 1480, 0, 640, 1120, 1480, 0])


def test_a_negative_membrane_truncates_toward_zero_and_a_membrane_at_the_threshold_does_not_fire():
    """Input -3 (-192 per step), β = 3/4: -192, trunc(-144) - 192 = -336, -252 - 192 = -444, trunc(-333) - 192 =
    -525, trunc(-393.75) = -393 (floor: -394) - 192 = -585. A membrane equal to θ does not fire (m > θ): bias 1600
    with no membrane memory is exactly 1600 every step."""
    net = _one(4096, 1024, 1600.0)
    res = simulator.run(net, np.array([[-3.0]]), 5, trace=[("h", 0)])
    np.testing.assert_array_equal(res.traces[0, :, 0], [-192, -336, -444, -525, -585])
    at = _one(4096, 4096, 1600.0, bias=1600.0)  # vDecay 4096: no membrane memory, m = bias every step
    res = simulator.run(at, np.array([[0.0]]), 3, record=["h"], trace=[("h", 0)])
    np.testing.assert_array_equal(res.traces[0, :, 0], [1600, 1600, 1600])
    assert res.spikes["h"].sum() == 0


def test_the_current_wraps_at_24_bits_and_the_membrane_saturates():
    """iDecay 0 (the current keeps all of itself), vDecay 0, input 2^16 (x 64 = 2^22 per step): currents 2^22,
    2^23 (kept: the wrap range is (-2^23, 2^23]), 3·2^22 -> 3·2^22 - 2^24 = -2^22; the membrane 2^22, then
    2^22 + 2^23 saturates at 2^23 - 1 (θ = 2^23 - 1: a saturated membrane never exceeds it), then 2^23 - 1 - 2^22."""
    net = _one(0, 0, 2.0**23 - 1)
    res = simulator.run(net, np.array([[2.0**16]]), 3, record=["h"], trace=[("h", 0)])
    np.testing.assert_array_equal(res.traces[0, :, 0], [2**22, 2**23 - 1, 2**23 - 1 - 2**22])
    assert res.spikes["h"].sum() == 0


def test_the_bias_enters_the_membrane_not_the_decaying_current():
    """iDecay 2048 (α = 1/2), vDecay 4096 (no membrane memory), bias 100, input 8 (512) once per step: the current
    is 512, trunc(256) + 512 = 768, 384 + 512 = 896; the membrane is that plus 100 (not a current of 100 decaying)."""
    net = _one(2048, 4096, 100000.0, bias=100.0)
    res = simulator.run(net, np.array([[8.0]]), 3, trace=[("h", 0)])
    np.testing.assert_array_equal(res.traces[0, :, 0], [612, 868, 996])


def test_the_file_round_trips_loihi_arithmetic_and_refuses_what_loihi_does_not_compute(tmp_path):
    net = _one(4096, 1024, 1600.0)
    write_network(net, tmp_path / "l.h5")
    back = simulator.load_network(tmp_path / "l.h5")
    assert back.populations[1].arithmetic == "loihi" and back.attrs.get("format_version", "1.13")
    with pytest.raises(NetworkFileError, match=r"/populations/h/decay: arithmetic 'loihi' takes decay factors in 12 "
                                               r"bits \(k/4096\), got 0.9"):
        write_network(_one(4096, 409.6, 1600.0), tmp_path / "bad.h5")
    with pytest.raises(NetworkFileError, match=r"/populations/h/threshold: arithmetic 'loihi' takes integers of "
                                               r"magnitude below 2\^24, got 1600.5"):
        write_network(_one(4096, 1024, 1600.5), tmp_path / "bad.h5")
    with pytest.raises(NetworkFileError, match=r"threshold_test 'gt', reset 'zero', refractory 0; got "
                                               r"'current_first', 'gt', 'zero', 2"):
        write_network(_one(4096, 1024, 1600.0, refractory=2), tmp_path / "bad.h5")


def test_a_state_restart_zeroes_membrane_current_and_readout_at_its_phase():
    """reset_every 3, phase 1 (Lava's LIFReset): the state restarts at the start of steps 1 and 4. α = 1/2, β = 3/4,
    input 8 (512): step 0: i = 512, m = 512; step 1 (restart): i = 512, m = 512; step 2: i = 256 + 512 = 768,
    m = 384 + 768 = 1152; step 3: i = 896, m = 864 + 896 = 1760 > 1600: spike, 0; step 4 (restart): 512. The readout
    (restarting at step 1 and 4 too) sums the spikes since its last restart: 1 at step 3, 0 after step 4."""
    net = _one(2048, 1024, 1600.0, reset_every=3, reset_phase=1)
    net.populations[2] = Population.make("out", "readout", (1,), reset_every=3, reset_phase=1)
    res = simulator.run(net, np.array([[8.0]]), 5, record=["h"], trace=[("h", 0), ("out", 0)])
    np.testing.assert_array_equal(res.traces[0, :, 0], [512, 512, 1152, 0, 512])
    np.testing.assert_array_equal(res.spikes["h"][0, :, 0], [0, 0, 0, 1, 0])
    np.testing.assert_array_equal(res.traces[0, :, 1], [0, 0, 0, 1, 0])
    assert res.output[0, 0] == 0.0  # the readout's sum since its restart at step 4, over T


def test_a_restart_on_a_population_that_has_no_such_state_is_refused(tmp_path):
    net = _one(4096, 1024, 1600.0)
    net.populations[2] = Population.make("out", "readout", (1,), reset_every=3, reset_phase=3)
    with pytest.raises(NetworkFileError, match=r"reset_every 3 / reset_phase 3: a state restart applies to cuba, "
                                               r"sigma_delta and readout populations, at a phase below reset_every"):
        write_network(net, tmp_path / "bad.h5")


def test_sigma_delta_neurons_send_their_change_as_graded_payloads_by_hand():
    """in -> d (delta_input: a = I, θ 0, payload d) -> s (weight 3, delay 1, bias 2, θ 10, payload floor(d / 2))
    -> readout (delay 1), input frames 10, 10, 4, 4, 4.
    d sends 10 at step 0, nothing at step 1, 4 - 10 = -6 at step 2.
    s: step 0: σ 0, a = 2, d = 2 < 10: residue 2; step 1: σ 30, a 32, d = 32 - 2 + 2 = 32: sends 16; step 2: d 0;
    step 3: σ 30 - 18 = 12, a 14, d = 14 - 32 = -18: sends floor(-9) = -9; step 4: d 0.
    The readout sums 16 (step 2) and -9 (step 4): 7 over T = 5."""
    pops = [Population.make("in", "input", (1,)),
            Population.make("d", "sigma_delta", (1,), 0.0, reset="none", delta_input=True),
            Population.make("s", "sigma_delta", (1,), 10.0, 0.0, 2.0, reset="none", payload_shift=1),
            Population.make("out", "readout", (1,))]
    projs = [Projection("a", "dense", "in", "d", np.ones((1, 1), np.float32)),
             Projection("b", "dense", "d", "s", np.full((1, 1), 3.0, np.float32), delay=1),
             Projection("c", "dense", "s", "out", np.ones((1, 1), np.float32), delay=1)]
    cores, edges = one_population_per_core(pops, projs)
    net = Network(pops, projs, cores, edges, {})
    x = np.array([10.0, 10, 4, 4, 4]).reshape(1, 5, 1)
    res = simulator.run(net, x, 5, record=["d", "s"], trace=[("d", 0), ("s", 0), ("out", 0)])
    np.testing.assert_array_equal(res.spikes["d"][0, :, 0], [1, 0, 1, 0, 0])
    np.testing.assert_array_equal(res.spikes["s"][0, :, 0], [0, 1, 0, 1, 0])
    np.testing.assert_array_equal(res.traces[0, :, 1], [0, 30, 30, 12, 12])
    np.testing.assert_array_equal(res.traces[0, :, 2], [0, 0, 16, 16, 7])
    assert res.output[0, 0] == 7 / 5


def test_the_reference_sigma_delta_starts_from_v_init_and_restarts_to_it():
    """A sigma-delta layer with σ(0) = 20 and restarts every 3 steps: engine, torch backend (conftest) and the torch
    reference give the same events and readout (the reference ignored v_init before)."""
    import torch

    from spikeforge.converter.spiking import SpikingNetwork

    pops = [Population.make("in", "input", (2,)),
            Population.make("s", "sigma_delta", (2,), 4.0, 20.0, 1.0, reset="none", payload_shift=1, reset_every=3),
            Population.make("out", "readout", (2,))]
    projs = [Projection("a", "dense", "in", "s", np.array([[1.0, -2.0], [3.0, 0.5]], np.float32)),
             Projection("b", "dense", "s", "out", np.eye(2, dtype=np.float32), delay=1)]
    cores, edges = one_population_per_core(pops, projs)
    net = Network(pops, projs, cores, edges, {})
    x = np.random.default_rng(0).normal(0, 3, (3, 7, 2)).round()
    res = simulator.run(net, x, 7, record=["s"])
    out, rec = SpikingNetwork(net)(torch.as_tensor(x), 7, record_spikes=True)
    assert res.spikes["s"].sum() > 0
    np.testing.assert_array_equal(rec.spikes["s"].numpy().swapaxes(0, 1), res.spikes["s"])
    np.testing.assert_allclose(out.numpy(), res.output, rtol=0, atol=1e-12)


def test_multi_spike_neurons_fire_as_many_spikes_as_fit_and_floor_at_minus_theta():
    """sinabs's IAF as its from_nir builds it (MultiSpike, subtract, min_v_mem = -θ), θ = 1: inputs 2.5, 0, 0.5,
    -3, 0.7 give 2 spikes (v 0.5), none, 1 (v 0), none (v -3 floored to -1), none (v -0.3); each spike reaches the
    readout with weight 1: 3 in all over T = 5."""
    pops = [Population.make("in", "input", (1,)),
            Population.make("h", "if", (1,), 1.0, reset="subtract", spike_value="unit", multi_spike=True,
                            membrane_floor="-threshold"),
            Population.make("out", "readout", (1,))]
    projs = [Projection("a", "dense", "in", "h", np.ones((1, 1), np.float32)),
             Projection("b", "dense", "h", "out", np.ones((1, 1), np.float32))]
    cores, edges = one_population_per_core(pops, projs)
    net = Network(pops, projs, cores, edges, {})
    x = np.array([2.5, 0.0, 0.5, -3.0, 0.7]).reshape(1, 5, 1)
    res = simulator.run(net, x, 5, record=["h"], trace=[("h", 0)], record_counts=True)
    np.testing.assert_array_equal(res.spikes["h"][0, :, 0], [2, 0, 1, 0, 0])
    np.testing.assert_allclose(res.traces[0, :, 0], [0.5, 0.5, 0.0, -1.0, -0.3])
    assert res.output[0, 0] == 3 / 5 and res.total("spikes") == 3
