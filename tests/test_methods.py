"""Conversion methods on scikit-learn digits: each must beat plain max-normalized IF conversion at T <= 4.

Margins are below what was measured (see the closing note of issue 5): max-norm IF T=1/2/4: 10/72/91%;
QCFS(L=4) IF 87/96/99; IF + group neurons (τ=4) 97/98/99; two-stage (QC T, CC + FC) 37/92/98.
"""
import numpy as np
import pytest
import torch

import simulator
from benchmarks.models import DigitsResNet
from converter import QCFS, QCActivation, SpikingNetwork, convert
from converter.calibration import calibrate
from converter.qc import qc_finetune, to_qc_ann
from converter.training import train_classifier


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
    qc = qc_finetune(to_qc_ann(trained_resnet, T, p=0.15, calibration=[xtr[:512]]), xtr, ytr, epochs=10, lr=1e-3)
    net = convert(qc, [xtr[:512]])
    plain = _acc(net, xte, yte, T)
    cc = _acc(calibrate(net, qc, xtr[:256], T, mode="cc", device="cpu"), xte, yte, T)
    fc_net = calibrate(net, qc, xtr[:256], T, mode="fc", device="cpu")
    fc = _acc(fc_net, xte, yte, T)
    print(f"T={T} IF max {baseline[T]:.4f} QC {plain:.4f} CC {cc:.4f} FC {fc:.4f}")
    assert cc >= plain
    assert fc >= plain
    assert fc >= baseline[T] + 0.04
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
