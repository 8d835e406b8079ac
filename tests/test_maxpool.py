"""Spiking max pooling (format 1.7): each output passes on the spikes of the neuron of its window with the most
spikes so far (Rueckauer et al. 2017); engine, torch backend and reference agree; files, validator, converter."""
import numpy as np
import pytest
import torch
from torch import nn

from spikeforge import simulator
from spikeforge.converter import ConversionError, SpikingNetwork, convert, write_network
from spikeforge.converter.mapping import map_network, one_population_per_core
from spikeforge.converter.training import train_classifier
from spikeforge.hwmodels.targets import load_target
from spikeforge.simulator import Network, NetworkFileError, Population, Projection, load_network


def _net(pops, projs):
    cores, edges = one_population_per_core(pops, projs)
    return Network(pops, projs, cores, edges, {})


def _gate_network():
    """input (1, 2, 2) -> IF a -> 2x2 max pooling m -> readout (weight 1)."""
    pops = [Population.make("in", "input", (1, 2, 2)),
            Population.make("a", "if", (1, 2, 2), 1.0, np.array([0.9, 0.0, 0.0, 0.0])),
            Population.make("m", "maxpool", (1, 1, 1), 1.0, 0.0, 0.0),
            Population.make("out", "readout", (1,))]
    projs = [Projection("in_a", "identity", "in", "a"),
             Projection("pool", "maxpool", "a", "m", kernel=(2, 2), stride=(2, 2), padding=(0, 0)),
             Projection("fc", "dense", "m", "out", np.ones((1, 1), np.float32))]
    return _net(pops, projs)


def test_gate_follows_the_neuron_with_most_spikes_so_far_by_hand():
    """a(0,0): v0 0.9, input 0.3 -> fires at t1, t4; a(0,1): input 0.9 -> fires at t2, t3, t4. Counts after each
    step (0,0)/(0,1): 1/0, 1/1 (tie: the first wins, it is silent), 1/2, 2/3. So m fires at t1, t3, t4."""
    net = _gate_network()
    x = np.array([[0.3, 0.9, 0.0, 0.0]]).reshape(1, 1, 2, 2)
    res = simulator.run(net, x, 4, record=["a"], record_counts=True)
    np.testing.assert_array_equal(res.spikes["a"][0].reshape(4, 4)[:, :2], [[1, 0], [0, 1], [0, 1], [1, 1]])
    assert res.output[0, 0] == pytest.approx(3 / 4)  # three passed spikes of payload θ = 1, weight 1, over T = 4
    assert res.total("spikes") == 5 + 3  # a's five, m's three
    assert res.total("synops") == 5 * 1 + 3 * 1  # each of a's spikes reaches its one window; m's reach the readout
    out, _ = SpikingNetwork(net)(torch.as_tensor(x), 4)
    assert float(out[0, 0]) == pytest.approx(3 / 4)


class _PoolNet(nn.Module):
    """conv-ReLU-maxpool(2) -> conv-ReLU-maxpool(3, 2, 1) -> linear, on 1x8x8 digits."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(1, 8, 3, padding=1), nn.Conv2d(8, 16, 3, padding=1)
        self.pool1, self.pool2 = nn.MaxPool2d(2), nn.MaxPool2d(3, 2, 1)
        self.fc = nn.Linear(16 * 2 * 2, 10)

    def forward(self, x):
        x = self.pool1(torch.relu(self.c1(x)))
        x = self.pool2(torch.relu(self.c2(x)))
        return self.fc(x.flatten(1))


@pytest.fixture(scope="module")
def pool_ann(digits):
    xtr, ytr, _, _ = digits
    return train_classifier(_PoolNet(), xtr, ytr, epochs=20, lr=0.05, seed=0)


@pytest.mark.parametrize("neuron", ["if", "group"])
def test_converted_max_pooling_cnn_engine_equals_reference_and_the_file(pool_ann, digits, neuron, tmp_path):
    net = convert(pool_ann, [digits[0][:256]], neuron=neuron, tau=4)
    assert [p.model for p in net.populations].count("maxpool") == 2
    path = write_network(net, tmp_path / "pool.h5")
    x = digits[2][:12].double().numpy()
    res = simulator.run(path, x, 8, record_counts=True)
    out, rec = SpikingNetwork(load_network(path))(torch.as_tensor(x), 8)
    for name, counts in rec.spike_counts.items():
        np.testing.assert_array_equal(res.spike_counts[name], counts.numpy(), err_msg=name)
    np.testing.assert_allclose(res.output, out.numpy(), rtol=1e-9, atol=1e-12)
    # the analog form of the network is the ANN, max pooling included
    ann = pool_ann(digits[2][:12]).double()
    np.testing.assert_allclose(SpikingNetwork(net).analog_forward(x).numpy(), ann.detach().numpy(), atol=1e-4)


def test_max_pooling_cnn_converts_with_a_small_accuracy_cost(pool_ann, digits):
    _, _, xte, yte = digits
    ann = float((pool_ann(xte).argmax(1) == yte).float().mean())
    net = convert(pool_ann, [digits[0][:256]], norm="percentile", percentile=99.9)
    snn = float((simulator.run(net, xte.double().numpy(), 32).predictions() == yte.numpy()).mean())
    assert ann > 0.9 and snn >= ann - 0.05, (ann, snn)


@pytest.mark.parametrize("mode", ["cc", "fc"])
def test_two_stage_calibration_runs_through_max_pooling(pool_ann, digits, mode):
    """Stage II simulates the layers before each one it calibrates, max pooling gates included (it raised 'unknown
    projection kind' for a layer after a max pooling); at T = 4 the calibrated network is not worse."""
    from spikeforge.converter.calibration import calibrate

    xtr, _, xte, yte = digits
    net = convert(pool_ann, [xtr[:256]], norm="percentile", percentile=99.9)
    cal = calibrate(net, pool_ann, xtr[:256], 4, mode=mode, epochs=2, device="cpu")
    before, after = (float((simulator.run(n, xte.double().numpy(), 4).predictions() == yte.numpy()).mean())
                     for n in (net, cal))
    assert after >= before - 0.01, (before, after)
    assert [p.model for p in cal.populations].count("maxpool") == 2


def test_max_pooling_maps_onto_loihi_without_synapse_memory(pool_ann, digits):
    net = map_network(convert(pool_ann, [digits[0][:64]]), load_target("loihi"), placement="snake")
    x = digits[2][:4].double().numpy()
    assert simulator.run(net, x, 4).total("spikes") > 0


@pytest.mark.parametrize("neuron", ["if", "group"])
def test_max_pooling_in_fixed_point_keeps_the_float_networks_accuracy(pool_ann, digits, neuron, tmp_path):
    """8-bit weights, 24-bit membranes: the gates pass integer events on; engine == reference == file (and the
    torch backend, conftest), and the accuracy within 2 points of the float network's."""
    from spikeforge.converter.fixed_point import to_fixed_point

    net = convert(pool_ann, [digits[0][:256]], neuron=neuron, tau=4, norm="percentile", percentile=99.9)
    fixed = to_fixed_point(net, 8, 24)
    assert fixed.attrs["numeric_mode"] == "fixed" and [p.model for p in fixed.populations].count("maxpool") == 2
    path = write_network(fixed, tmp_path / "fixed.h5")
    _, _, xte, yte = digits
    x = xte[:200].double().numpy()
    res = simulator.run(path, x, 16, record_counts=True)
    out, rec = SpikingNetwork(load_network(path))(torch.as_tensor(x), 16)
    for name, counts in rec.spike_counts.items():
        np.testing.assert_array_equal(res.spike_counts[name], counts.numpy(), err_msg=name)
    np.testing.assert_allclose(res.output, out.numpy(), rtol=1e-9, atol=1e-12)
    float_acc = (simulator.run(net, x, 16).predictions() == yte[:200].numpy()).mean()
    assert (res.predictions() == yte[:200].numpy()).mean() >= float_acc - 0.02


def _invalid(edit):
    net = _gate_network()
    edit(net)
    with pytest.raises(NetworkFileError) as exc:
        simulator.validate_network(net)
    return str(exc.value)


def test_invalid_max_pooling_is_refused_naming_the_part():
    def into_if(net):
        net.populations[2].model = "if"

    assert "maxpool projection into a 'if' population" in _invalid(into_if)

    def from_the_input(net):
        net.projections[1].source = "in"

    assert "max pooling of a 'input' population" in _invalid(from_the_input)

    def with_bias(net):
        net.populations[2].bias = np.ones(1)

    assert "maxpool population has no bias" in _invalid(with_bias)

    def two_inputs(net):
        net.projections.append(Projection("extra", "dense", "a", "m", np.ones((1, 4), np.float32)))

    assert "takes exactly one projection" in _invalid(two_inputs) or "dense projection into a 'maxpool'" in \
        _invalid(two_inputs)


def test_converter_refuses_max_pooling_it_cannot_convert_naming_the_node():
    class BeforeRelu(nn.Module):
        def __init__(self):
            super().__init__()
            self.c, self.p, self.fc = nn.Conv2d(1, 4, 3, padding=1), nn.MaxPool2d(2), nn.Linear(64, 10)

        def forward(self, x):
            return self.fc(torch.relu(self.p(self.c(x))).flatten(1))

    with pytest.raises(ConversionError, match=r"node 'p'.*after the ReLU"):
        convert(BeforeRelu().eval(), [torch.rand(4, 1, 8, 8)])

    class Ceil(_PoolNet):
        def __init__(self):
            super().__init__()
            self.pool1 = nn.MaxPool2d(2, ceil_mode=True)

    with pytest.raises(ConversionError, match=r"pool1 \(MaxPool2d with ceil_mode"):
        convert(Ceil().eval(), [torch.rand(4, 1, 8, 8)])
    with pytest.raises(ConversionError, match=r"max pooling of multi-threshold neurons"):
        convert(_PoolNet().eval(), [torch.rand(4, 1, 8, 8)], neuron="multi_threshold")


def test_exports_refuse_max_pooling_naming_the_population():
    from spikeforge.interop.nir_export import NirExportError, to_nir

    with pytest.raises(NirExportError, match=r"population 'm': spiking max pooling"):
        to_nir(_gate_network())
