"""Conversion methods on scikit-learn digits: each must beat plain max-normalized IF conversion at T <= 4.

Margins are below what was measured (see the closing note of issue 5): max-norm IF T=1/2/4: 10/72/91%;
QCFS(L=4) IF 92/97/99; IF + group neurons (τ=4) 98/98/99; two-stage with percentile θ (QC, CC, FC)
T=2 91/95/94, T=4 97/98/99; with MSE-initialised θ the T=2 QC-SNN reaches 97 before calibration.
"""
import numpy as np
import pytest
import torch

from spikeforge import simulator
from spikeforge.converter import QCFS, QCActivation, SpikingNetwork, convert
from spikeforge.converter.calibration import calibrate
from spikeforge.converter.qc import qc_finetune, to_qc_ann
from spikeforge.converter.training import train_classifier
from spikeforge.converter.writer import write_network
from spikeforge.models import DigitsResNet


def _acc(net, x, y, T):
    return float((SpikingNetwork(net, dtype=torch.float32).predict(x, T) == y).float().mean())


@pytest.fixture(scope="module")
def baseline(trained_resnet, digits):
    xtr, _, xte, yte = digits
    net = convert(trained_resnet, [xtr[:512]], norm="max")
    return {T: _acc(net, xte, yte, T) for T in (1, 2, 4)}


def test_group_neurons_beat_if(trained_resnet, digits, baseline):
    xtr, _, xte, yte = digits
    net = convert(trained_resnet, [xtr[:512]], norm="percentile", percentile=99.9, neuron="group", tau=4)
    acc = {T: _acc(net, xte, yte, T) for T in (1, 2, 4)}
    print("GN", acc, "IF max", baseline)
    assert acc[1] >= baseline[1] + 0.5
    assert acc[2] >= baseline[2] + 0.15
    assert acc[4] >= baseline[4] + 0.04


def test_qcfs_beats_if(digits, baseline):
    xtr, ytr, xte, yte = digits
    torch.manual_seed(0)
    model = train_classifier(DigitsResNet(act=lambda: QCFS(levels=4, init_threshold=4.0)), xtr, ytr, epochs=30,
                             lr=0.05, seed=0)
    net = convert(model, [xtr[:512]])
    acc = {T: _acc(net, xte, yte, T) for T in (1, 2, 4)}
    print("QCFS", acc, "IF max", baseline)
    assert acc[1] >= baseline[1] + 0.5
    assert acc[2] >= baseline[2] + 0.15
    assert acc[4] >= baseline[4] + 0.04


@pytest.mark.parametrize("T", [2, 4])
def test_two_stage_beats_if_and_calibration_helps(trained_resnet, digits, baseline, T):
    xtr, ytr, xte, yte = digits
    # θ from the 99.9th percentile leaves a QC-SNN error that Stage II has to remove
    qc = qc_finetune(to_qc_ann(trained_resnet, T, p=0.15, calibration=[xtr[:512]], init="percentile"), xtr, ytr,
                     epochs=10, lr=1e-3)
    net = convert(qc, [xtr[:512]])
    plain = _acc(net, xte, yte, T)
    cc = _acc(calibrate(net, qc, xtr[:256], T, mode="cc", device="cpu"), xte, yte, T)
    fc_net = calibrate(net, qc, xtr[:256], T, mode="fc", device="cpu")
    fc = _acc(fc_net, xte, yte, T)
    print(f"T={T} IF max {baseline[T]:.4f} QC {plain:.4f} CC {cc:.4f} FC {fc:.4f}")
    assert cc >= plain
    assert fc >= plain
    assert fc >= baseline[T] + 0.04
    if T == 2:  # θ that minimises the T-level quantization error starts Stage I much closer
        qc_mse = qc_finetune(to_qc_ann(trained_resnet, T, p=0.15, calibration=[xtr[:512]], init="mse"), xtr, ytr,
                             epochs=10, lr=1e-3)
        mse = _acc(convert(qc_mse, [xtr[:512]]), xte, yte, T)
        print(f"T={T} QC-SNN with MSE-initialised θ {mse:.4f}")
        assert mse >= plain + 0.03
    # calibrated v0 is per neuron (the first layer, fed a constant analog current, already matches the
    # QC-ANN exactly and keeps its v0), and the simulator runs the calibrated network like the reference
    assert np.all(fc_net.populations[1].v_init == net.populations[1].v_init)
    assert len(np.unique(fc_net.populations[2].v_init)) > 1
    res = simulator.run(fc_net, xte[:7].numpy(), T, record_counts=True)
    _, rec = SpikingNetwork(fc_net)(xte[:7], T)
    for name, c in rec.spike_counts.items():
        np.testing.assert_array_equal(res.spike_counts[name], c.numpy())


def test_qc_activation_is_qcfs_with_T_levels_in_eval_and_noisy_in_training():
    x = torch.linspace(-1, 5, 301)
    qc = QCActivation(4.0, T=4, p=0.0).eval()
    qcfs = QCFS(levels=4, init_threshold=4.0)
    torch.testing.assert_close(qc(x), qcfs(x))
    qc.train()  # p = 0: nothing quantized, a plain clip
    torch.testing.assert_close(qc(x), x.clamp(0, 4.0))
    qc.p = 1.0
    torch.testing.assert_close(qc(x), qcfs(x))
    torch.manual_seed(0)
    qc.p = 0.5
    frac = ((qc(x) - x.clamp(0, 4)).abs() > 1e-6).float().mean()
    assert 0.2 < float(frac) < 0.6


def test_group_neuron_simulator_matches_reference_with_both_payloads(trained_resnet, digits):
    xtr, _, xte, _ = digits
    graded = convert(trained_resnet, [xtr[:256]], neuron="group", tau=4)
    expanded = convert(trained_resnet, [xtr[:256]], neuron="group", tau=4, payload="expanded")
    x = xte[:7].numpy()
    rg = simulator.run(graded, x, 4, record_counts=True)
    re_ = simulator.run(expanded, x, 4, record_counts=True)
    _, rec = SpikingNetwork(graded)(xte[:7], 4)
    for name, c in rec.spike_counts.items():
        np.testing.assert_array_equal(rg.spike_counts[name], c.numpy())
    np.testing.assert_array_equal(rg.output, re_.output)
    # expanded payloads: every member spike is an event, so spikes count S and synops S x fan-out
    member_spikes = sum(int(c.sum()) for c in rec.spike_counts.values())
    assert re_.total("spikes") == member_spikes
    assert rg.total("spikes") < member_spikes
    assert re_.total("synops") > rg.total("synops")


@pytest.mark.parametrize("slope", [0.0, 0.1])
def test_first_layer_snn_equals_qc_ann_exactly(slope):
    """A constant input current makes the SNN's mean output equal the QC-ANN activation (IF and signed)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 40), QCActivation(1.5, T=4, p=1.0, negative_slope=slope),
                                torch.nn.Linear(40, 3)).eval()
    x = torch.randn(64, 5)
    net = convert(model, [x])
    assert net.populations[1].model == ("signed" if slope else "if")
    with torch.no_grad():  # float32 parameters are exact in float64, like the reference's
        model = model.double()
        hidden = model[1](model[0](x.double()))
        want = model[2](hidden)
    out, _ = SpikingNetwork(net)(x, 4)
    torch.testing.assert_close(out, want, rtol=1e-9, atol=1e-9)
    assert bool((hidden < 0).any()) == bool(slope)


def test_signed_neuron_rounds_both_signs_and_simulator_matches_reference(tmp_path):
    """Signed IF: over T steps of a constant current x, count = round(T·x/θ) clipped to [-T, T]; a negative
    spike carries -α·θ. A Leaky ReLU CNN converts to signed populations that the engine runs exactly."""
    from spikeforge.converter import write_network
    from spikeforge.simulator import load_network
    from spikeforge.simulator.network import Network, Population, Projection

    theta, T, alpha = 2.0, 8, 0.25
    xs = np.array([-3.0, -1.26, -0.6, -0.1, 0.0, 0.2, 0.74, 1.3, 5.0], np.float32)
    pops = [Population.make("in", "input", (len(xs),)),
            Population.make("s", "signed", (len(xs),), theta, theta / 2, negative_slope=alpha),
            Population.make("out", "readout", (len(xs),))]
    projs = [Projection("in_s", "dense", "in", "s", np.eye(len(xs), dtype=np.float32)),
             Projection("s_out", "dense", "s", "out", np.eye(len(xs), dtype=np.float32))]
    from spikeforge.converter.mapping import one_population_per_core
    net = Network(pops, projs, *one_population_per_core(pops, projs), {})
    res = simulator.run(net, xs[None], T, record_counts=True, record=["s"])
    want = np.clip(np.floor(T * xs / theta + 0.5), -T, T)
    np.testing.assert_array_equal(res.spike_counts["s"][0], want)
    np.testing.assert_allclose(res.output[0], np.where(want < 0, alpha, 1.0) * want * theta / T, atol=1e-6)
    assert res.total("spikes") == int(np.abs(res.spikes["s"]).sum()) == int(np.abs(want).sum())

    class LeakyCNN(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.c2 = torch.nn.Conv2d(1, 6, 3, padding=1), torch.nn.Conv2d(6, 8, 3, stride=2)
            self.fc = torch.nn.Linear(8 * 3 * 3, 10)

        def forward(self, x):
            x = torch.nn.functional.leaky_relu(self.c1(x), 0.1)
            x = torch.nn.functional.leaky_relu(self.c2(x), 0.2)
            return self.fc(x.flatten(1))

    torch.manual_seed(0)
    model = LeakyCNN().eval()
    x = torch.randn(7, 1, 8, 8)
    cnn = load_network(write_network(convert(model, [x]), tmp_path / "leaky.h5"))
    assert [p.negative_slope for p in cnn.populations if p.model == "signed"] == pytest.approx([0.1, 0.2])
    torch.testing.assert_close(SpikingNetwork(cnn).analog_forward(x), model.double()(x.double()))
    got = simulator.run(cnn, x.numpy(), 6, record_counts=True)
    out, rec = SpikingNetwork(cnn)(x, 6)
    assert any(bool((c < 0).any()) for c in rec.spike_counts.values())  # negative spikes happen
    for name, c in rec.spike_counts.items():
        np.testing.assert_array_equal(got.spike_counts[name], c.numpy())
    np.testing.assert_allclose(got.output, out.numpy(), rtol=1e-5, atol=1e-5)


def test_kl_loss_has_gradient_at_silent_and_saturated_neurons():
    """A neuron that never fires (or always fires) against a target in between must still be pushed."""
    from spikeforge.converter.calibration import _loss
    theta, T = torch.tensor(2.0), 4
    out = torch.tensor([0.0, 2.0, 1.0], requires_grad=True)
    target = torch.tensor([1.0, 1.0, 1.0])
    loss = _loss("kl", out, target, theta, T)
    loss.backward()
    assert out.grad[0] < 0 < out.grad[1]  # raise the silent one, lower the saturated one
    assert abs(float(out.grad[2])) < 1e-7 and float(loss.detach()) > 0
    assert float(_loss("kl", target.clone(), target, theta, T)) == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize("loss", ["kl", "mse"])
def test_fine_calibration_never_ends_above_its_starting_loss(trained_resnet, digits, loss):
    xtr, ytr, _, _ = digits
    qc = to_qc_ann(trained_resnet, 2, p=0.15, calibration=[xtr[:512]], init="percentile")
    net = convert(qc, [xtr[:512]])
    msgs = []
    calibrate(net, qc, xtr[:128], 2, mode="fc", epochs=3, lr=5e-2, device="cpu", loss=loss,
              progress=lambda name, msg: msgs.append(msg))
    pairs = [msg.split(f"FC {loss} ")[1].split(" after")[0].split(" -> ") for msg in msgs if "FC" in msg]
    assert len(pairs) == len(msgs) > 2
    assert all(float(end) <= float(start) for start, end in pairs)


def test_fine_calibration_of_biases_and_readout(trained_resnet, digits, tmp_path):
    xtr, _, xte, _ = digits
    qc = to_qc_ann(trained_resnet, 2, p=0.15, calibration=[xtr[:512]], init="percentile")
    net = convert(qc, [xtr[:512]])
    msgs = {}
    plain = calibrate(net, qc, xtr[:128], 2, mode="fc", epochs=3, device="cpu")
    both = calibrate(net, qc, xtr[:128], 2, mode="fc", epochs=3, device="cpu", bias=True, readout=True,
                     progress=lambda name, msg: msgs.setdefault(name, msg))
    readout = net.populations[-1]
    assert readout.model == "readout" and "readout" in both.attrs["calibration"]
    start, end = map(float, msgs[readout.name].split("readout mse ")[1].split(" after")[0].split(" -> "))
    assert end < start  # the readout is fitted to the ANN's outputs
    hidden = [i for i, p in enumerate(net.populations) if p.model == "if"]
    # biases move only when asked (plain fine calibration keeps them); the readout's weights move too
    assert all(np.array_equal(plain.populations[i].bias, net.populations[i].bias) for i in hidden)
    assert any(not np.array_equal(both.populations[i].bias, net.populations[i].bias) for i in hidden)
    fc_in = [i for i, pr in enumerate(net.projections) if pr.target == readout.name]
    assert fc_in and all(not np.array_equal(both.projections[i].weight, net.projections[i].weight) for i in fc_in)
    # the calibrated biases survive the file and the engine runs the result like the reference
    path = tmp_path / "cal.h5"
    write_network(both, path)
    loaded = simulator.load_network(path)
    res = simulator.run(loaded, xte[:7].numpy(), 2, record_counts=True)
    out, rec = SpikingNetwork(both)(xte[:7], 2)
    for name, c in rec.spike_counts.items():
        np.testing.assert_array_equal(res.spike_counts[name], c.numpy())
    np.testing.assert_allclose(res.output, out.numpy(), rtol=1e-5, atol=1e-5)


def test_fine_calibration_options_need_fine_mode(trained_resnet, digits):
    xtr = digits[0]
    net = convert(trained_resnet, [xtr[:64]])
    with pytest.raises(ValueError, match="fine calibration"):
        calibrate(net, trained_resnet, xtr[:8], 2, mode="cc", readout=True, device="cpu")


def test_stage_two_settings_parse_and_name_bad_words():
    from spikeforge.converter.calibration import FC_DEFAULTS, calibration_samples, parse_setting

    assert parse_setting("base") == FC_DEFAULTS
    s = parse_setting("lr=2e-4,n=2048,flip,seed=3")
    assert (s["lr"], s["n"], s["flip"], s["seed"], s["bias"]) == (2e-4, 2048, True, 3, False)
    for bad, word in (("foo=1", "'foo'"), ("lr=x", "lr='x'"), ("flip=1", "flip is a flag")):
        with pytest.raises(ValueError, match=word):
            parse_setting(bad)
    x = torch.arange(20.0).reshape(10, 1, 1, 2)
    assert torch.equal(calibration_samples(x, 3), x[:3])
    mirrored = calibration_samples(x, 3, seed=1, flip=True)
    assert mirrored.shape[0] == 6 and torch.equal(mirrored[3:], mirrored[:3].flip(-1))
    assert not torch.equal(mirrored[:3], x[:3])  # another subset
