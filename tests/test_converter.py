import numpy as np
import pytest
import torch
from torch import nn

from spikeforge import simulator
from spikeforge.converter import QCFS, ClipReLU, ConversionError, SpikingNetwork, convert, write_network
from spikeforge.converter.training import accuracy
from spikeforge.models import DigitsResNet
from spikeforge.simulator import load_network


def _randomize_bn(model, seed=0):
    """Give every BatchNorm non-trivial statistics so fusion is really exercised."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.3)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.2)
    return model.eval()


def test_cnn_with_bn_and_residual_converts_exactly(tmp_path):
    torch.manual_seed(0)
    model = _randomize_bn(DigitsResNet(width=8))
    x = torch.rand(16, 1, 8, 8)
    net = convert(model, [x], pooling="spike")
    kinds = sorted({p.kind for p in net.projections})
    assert kinds == ["avgpool", "conv2d", "dense", "identity"]
    # residual: block1's output population integrates a conv and an identity projection
    assert sorted(p.kind for p in net.incoming("block1_act2")) == ["conv2d", "identity"]
    assert sorted(p.kind for p in net.incoming("block2_act2")) == ["conv2d", "conv2d"]
    path = write_network(net, tmp_path / "net.h5")
    back = load_network(path)
    assert [p.name for p in back.populations] == [p.name for p in net.populations]
    # The network evaluated as an ANN (IF -> ReLU) equals the original model: BN fused, wiring right.
    ref = model.double()(x.double())
    got = SpikingNetwork(back).analog_forward(x)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


class _PoolNet(nn.Module):
    """conv -> pool(2) -> conv -> overlapping pool(3, 2, 1) -> conv -> global pool -> flatten -> linear."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2, self.c3 = nn.Conv2d(2, 4, 3, padding=1), nn.Conv2d(4, 6, 3, padding=1), nn.Conv2d(6, 5, 1)
        self.bn = nn.BatchNorm2d(6)
        self.fc = nn.Linear(5, 3)

    def forward(self, x):
        x = torch.relu(self.c1(x))
        x = torch.relu(self.bn(self.c2(nn.functional.avg_pool2d(x, 2))))
        x = torch.relu(self.c3(nn.functional.avg_pool2d(x, 3, 2, 1)))
        return self.fc(nn.functional.adaptive_avg_pool2d(x, 1).flatten(1))


def test_pooling_is_folded_into_the_next_synaptic_layer_exactly(tmp_path):
    torch.manual_seed(0)
    model = _randomize_bn(_PoolNet())
    x = torch.rand(9, 2, 12, 12)
    folded = convert(model, [x])
    spiked = convert(model, [x], pooling="spike")
    # non-overlapping pool -> conv and global pool -> linear are absorbed; the overlapping pool is re-encoded
    assert [p.name for p in folded.populations] == ["input", "relu", "relu_1", "avg_pool2d_1_spikes", "relu_2",
                                                    "readout"]
    assert len(spiked.populations) == len(folded.populations) + 2
    proj = {p.name: p for p in folded.projections}
    conv = proj["c2"]
    assert (tuple(conv.weight.shape), tuple(conv.kernel), tuple(conv.stride), tuple(conv.padding)) == \
        ((6, 4, 6, 6), (6, 6), (2, 2), (2, 2))
    assert proj["fc"].weight.shape == (3, 5 * 3 * 3)
    ref = model.double()(x.double())
    for net in (folded, spiked):  # evaluated as ANNs both equal the model
        torch.testing.assert_close(SpikingNetwork(net).analog_forward(x), ref, rtol=1e-6, atol=1e-6)
    # the simulator runs the folded kernels spike for spike like the reference
    back = load_network(write_network(folded, tmp_path / "f.h5"))
    res = simulator.run(back, x.numpy(), 6, record_counts=True)
    out, rec = SpikingNetwork(back)(x, 6)
    for name, c in rec.spike_counts.items():
        np.testing.assert_array_equal(res.spike_counts[name], c.numpy())
    np.testing.assert_allclose(res.output, out.numpy(), rtol=1e-5, atol=1e-5)


class _PoolThenTwoConvs(nn.Module):
    """A stem, an overlapping average pooling, then a bottleneck's body and its projection shortcut both reading
    the pooled map (ResNet-50's first block)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AvgPool2d(3, 2, 1))
        self.body = nn.Sequential(nn.Conv2d(4, 6, 1), nn.ReLU(), nn.Conv2d(6, 8, 3, padding=1))
        self.short = nn.Conv2d(4, 8, 1)
        self.head = nn.Sequential(nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 3))

    def forward(self, x):
        p = self.stem(x)
        return self.head(self.body(p) + self.short(p))


def test_a_pooled_map_read_by_two_layers_is_re_encoded_once(tmp_path):
    """The pooling is overlapping, so its map becomes spikes before a convolution reads it: one population that
    both the body and the shortcut read, not one per reader under the same name (which no file can hold)."""
    torch.manual_seed(0)
    model = _PoolThenTwoConvs().eval()
    x = torch.rand(5, 1, 8, 8)
    net = convert(model, [x])
    names = [p.name for p in net.populations]
    assert len(names) == len(set(names)) and names.count("stem_2_spikes") == 1
    readers = sorted(q.target for q in net.projections if q.source == "stem_2_spikes")
    assert readers == ["body_1", "head_0"]  # the body's first ReLU and the block's output ReLU (the shortcut)
    torch.testing.assert_close(SpikingNetwork(net).analog_forward(x), model.double()(x.double()), rtol=1e-6,
                               atol=1e-6)
    back = load_network(write_network(net, tmp_path / "n.h5"))  # the writer validates it
    res = simulator.run(back, x.numpy(), 4)
    out, _ = SpikingNetwork(back)(x, 4)
    np.testing.assert_allclose(res.output, out.numpy(), rtol=1e-5, atol=1e-5)


def test_round_trip_preserves_every_array(tmp_path, trained_resnet, digits):
    net = convert(trained_resnet, [digits[0][:64]])
    back = load_network(write_network(net, tmp_path / "n.h5"))
    for a, b in zip(net.populations, back.populations):
        assert (a.name, a.model, tuple(a.shape), a.reset) == (b.name, b.model, tuple(b.shape), b.reset)
        for f in ("threshold", "v_init", "bias"):
            np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
    for a, b in zip(net.projections, back.projections):
        assert (a.name, a.kind, a.source, a.target) == (b.name, b.kind, b.source, b.target)
        if a.weight is not None:
            np.testing.assert_array_equal(a.weight, b.weight)
    np.testing.assert_array_equal(net.cores.neuron_stop, back.cores.neuron_stop)
    g = back.core_graph()
    assert g.number_of_nodes() == len(net.populations)
    assert g.number_of_edges() == len({(p.source, p.target) for p in net.projections})


def test_thresholds_max_percentile_and_v_init(digits):
    torch.manual_seed(0)
    model = DigitsResNet(width=8).eval()
    x = digits[0][:128]
    net_max = convert(model, [x], norm="max")
    net_p = convert(model, [x], norm="percentile", percentile=99.0, v_init_fraction=0.25)
    # max over the calibration data of the stem's ReLU output
    stem_out = model.stem(x).detach()
    assert net_max.population("stem_2").threshold[0] == pytest.approx(float(stem_out.max()), rel=1e-6)
    pos = stem_out[stem_out > 0].double().numpy()
    assert net_p.population("stem_2").threshold[0] == pytest.approx(np.percentile(pos, 99.0), rel=1e-5)
    for p in net_p.populations:
        if p.model == "if":
            np.testing.assert_allclose(p.v_init, 0.25 * p.threshold, rtol=1e-6)
            assert np.all(net_max.population(p.name).threshold >= p.threshold)


def test_qcfs_and_clip_thresholds_come_from_the_activation():
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), QCFS(levels=4, init_threshold=2.5),
                          nn.Linear(32, 16), ClipReLU(1.5), nn.Linear(16, 8), nn.ReLU6(), nn.Linear(8, 3))
    net = convert(model, [torch.rand(8, 1, 8, 8)])
    thetas = [float(p.threshold[0]) for p in net.populations if p.model == "if"]
    assert thetas == pytest.approx([2.5, 1.5, 6.0])
    np.testing.assert_allclose(net.populations[1].v_init, 1.25)


def _same_network(a, b):
    assert [(p.name, p.model, p.shape) for p in a.populations] == [(p.name, p.model, p.shape) for p in b.populations]
    for p, q in zip(a.populations, b.populations):
        np.testing.assert_array_equal(p.threshold, q.threshold)
        np.testing.assert_array_equal(p.v_init, q.v_init)
    for p, q in zip(a.projections, b.projections, strict=True):
        np.testing.assert_array_equal(p.weight, q.weight)


def test_calibration_as_one_array_or_a_loader_of_pairs_equals_a_list_of_batches():
    """convert takes the samples as one tensor / array (split in 128-sample batches, as convert_pipeline does) or
    a DataLoader of (inputs, labels) pairs; the thresholds are the same as from the list of those batches."""
    torch.manual_seed(0)
    model = _randomize_bn(DigitsResNet(width=8))
    x = torch.rand(300, 1, 8, 8)
    ref = convert(model, list(torch.split(x, 128)), norm="percentile", percentile=99.0)
    _same_network(ref, convert(model, x, norm="percentile", percentile=99.0))
    _same_network(ref, convert(model, x.double().numpy(), norm="percentile", percentile=99.0))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, torch.zeros(300, dtype=torch.long)),
                                         batch_size=128)
    _same_network(ref, convert(model, loader, norm="percentile", percentile=99.0))


@pytest.mark.parametrize("calibration, message", [
    (torch.rand(64), "calibration samples must be shaped (N, *input shape) with N >= 1, got (64,)"),
    ([{"x": torch.rand(2, 1, 8, 8)}], "calibration batch 0 is a dict, not a tensor or array"),
    ([torch.rand(2, 1, 8, 8), torch.rand(2, 64)], "calibration batch 1 has samples of shape (64,), batch 0 (1, 8, 8)"),
    ([torch.rand(4)], "calibration batch 0 must be real samples (batch, *input shape), got torch.float32 (4,)"),
    (5, "calibration must be a tensor or array of samples (N, *input shape) or an iterable of batches, got int"),
    ([], "no calibration batches given"),
])
def test_bad_calibration_data_is_named(calibration, message):
    model = DigitsResNet(width=8).eval()
    with pytest.raises(ConversionError) as err:
        convert(model, calibration)
    assert message in str(err.value)


def test_unsupported_modules_are_all_listed_with_fx_names():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Sigmoid(), nn.MaxPool2d(2, ceil_mode=True), nn.Flatten(),
                          nn.Linear(36, 2), nn.Tanh())
    with pytest.raises(ConversionError) as err:
        convert(model, [torch.rand(2, 1, 8, 8)])
    msg = str(err.value)
    for expected in ("1 (Sigmoid)", "2 (MaxPool2d with ceil_mode", "5 (Tanh)"):
        assert expected in msg
    assert "\n" not in msg


def test_an_lstm_is_named_without_the_nodes_that_unpack_its_output():
    class Recurrent(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm, self.fc = nn.LSTM(8, 4, batch_first=True), nn.Linear(4, 2)

        def forward(self, x):
            out, (h, c) = self.lstm(x.reshape(-1, 8, 8))
            return self.fc(out[:, -1])
    with pytest.raises(ConversionError) as err:
        convert(Recurrent(), [torch.rand(2, 1, 8, 8)])
    assert str(err.value) == "unsupported operations in the model: lstm (LSTM)"  # not its getitem / getattr


def test_two_linear_layers_without_activation_are_refused():
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.Linear(8, 2))
    with pytest.raises(ConversionError, match="without an activation"):
        convert(model, [torch.rand(2, 1, 8, 8)])


def test_if_neuron_semantics_by_hand():
    """One input, one IF neuron (θ=1, v0=0.5), weight 0.3, readout weight 1: spikes at the steps
    where the running sum 0.5 + 0.3 t crosses the next integer."""
    model = nn.Sequential(nn.Linear(1, 1, bias=False), nn.ReLU(), nn.Linear(1, 1, bias=False))
    model[0].weight.data.fill_(0.3)
    model[2].weight.data.fill_(1.0)
    net = convert(model, [torch.tensor([[1.0 / 0.3]])])  # max activation 1.0 -> θ = 1
    assert net.populations[1].threshold[0] == pytest.approx(1.0)
    snn = SpikingNetwork(net)
    out, rec = snn(torch.tensor([[1.0]]), 10, record_spikes=True)
    s = rec.spikes[net.populations[1].name][:, 0, 0].tolist()
    # m_t = 0.5 + 0.3 t - (spikes so far): crossings at t = 2 (1.1), 5 (2.0), 9 (3.2) -- 1-based
    expected = [0, 1, 0, 0, 1, 0, 0, 0, 1, 0]
    assert s == expected
    assert float(out) == pytest.approx(3 * 1.0 / 10)


def test_snn_accuracy_approaches_ann_as_T_grows(trained_resnet, digits):
    _, _, xte, yte = digits
    ann = accuracy(trained_resnet, xte, yte)
    net = convert(trained_resnet, [digits[0][:512]], norm="percentile", percentile=99.9)
    snn = SpikingNetwork(net)
    acc = {T: float((snn.predict(xte, T) == yte).float().mean()) for T in (4, 8, 16, 32)}
    print("ANN", ann, "SNN", acc)
    assert ann > 0.95
    assert acc[32] >= ann - 0.01
    assert acc[16] >= ann - 0.02
    assert acc[4] <= acc[32] + 1e-9
    assert acc[4] > 0.85
