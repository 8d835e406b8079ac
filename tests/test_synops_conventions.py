"""Synaptic-operation conventions (simulator.run(synops=...)): "all" counts every stored synapse an event reaches,
zero weights included; "effective" counts NeuroBench's effective operations, written out here from its definition
(neurobench 2.3, metrics/workload/synaptic_operations.py: per connection layer and step, the layer applied with
its weights made 0/1 and its bias dropped to the inputs made 0/1, summed; identity and pooling are no connection
layers). Both backends count alike (conftest); spikes do not depend on the convention."""
import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from spikeforge import simulator
from spikeforge.converter.mapping import map_network, one_population_per_core
from spikeforge.hwmodels.targets import load_target
from spikeforge.simulator import Network, Population, Projection

T = 10


def _pruned(rng, shape, keep=0.5):
    return (rng.normal(0, 1, shape) * (rng.random(shape) < keep)).astype(np.float32)


def _conv_net(seed=0):
    """(2, 6, 6) spike frames -conv2d 3x3 (pruned)-> IF (3, 6, 6) -dense (pruned)-> IF (4,) -identity-> readout."""
    rng = np.random.default_rng(seed)
    k, w = _pruned(rng, (3, 2, 3, 3)), _pruned(rng, (4, 108))
    pops = [Population.make("in", "input", (2, 6, 6)),
            Population.make("c", "if", (3, 6, 6), 0.6, 0.0, 0.0, spike_value="unit"),
            Population.make("h", "if", (4,), 0.6, 0.0, 0.0, spike_value="unit"),
            Population.make("o", "readout", (4,))]
    projs = [Projection("conv", "conv2d", "in", "c", k, stride=(1, 1), padding=(1, 1)),
             Projection("fc", "dense", "c", "h", w), Projection("id", "identity", "h", "o")]
    return Network(pops, projs, *one_population_per_core(pops, projs), {}), k, w


def _neurobench_effective(x, conv_spikes, h_spikes, k, w):
    """NeuroBench's effective ACs of _conv_net: binary weights on binary inputs, per connection layer and step."""
    total = 0.0
    kb, wb = torch.as_tensor(k != 0, dtype=torch.float64), torch.as_tensor(w != 0, dtype=torch.float64)
    for t in range(x.shape[1]):
        total += float(F.conv2d(torch.as_tensor(x[:, t] != 0, dtype=torch.float64), kb, padding=1).sum())
        total += float((torch.as_tensor(conv_spikes[:, t].reshape(len(x), -1) != 0, dtype=torch.float64)
                        @ wb.T).sum())
    return total


def test_effective_synops_equal_neurobenchs_on_a_pruned_conv_net_and_all_counts_every_synapse():
    net, k, w = _conv_net()
    x = (np.random.default_rng(1).random((6, T, 2, 6, 6)) < 0.4).astype(np.float64)
    every = simulator.run(net, x, T, record=["c", "h"])
    eff = simulator.run(net, x, T, record=["c", "h"], synops="effective")
    for name in ("c", "h"):
        np.testing.assert_array_equal(every.spikes[name], eff.spikes[name])
    c, h = every.spikes["c"], every.spikes["h"]
    assert 0 < c.sum() < c.size / 2 and h.sum() > 0
    assert eff.total("synops") == _neurobench_effective(x, c, h, k, w)
    # all: each input spike reaches its 3x3 window's 3 channels (fewer at the border), each c spike 4, each h 1
    taps = F.conv2d(torch.as_tensor(x.reshape(-1, 2, 6, 6)), torch.ones(3, 2, 3, 3, dtype=torch.float64),
                    padding=1).sum()
    assert every.total("synops") == float(taps) + c.sum() * 4 + h.sum()
    assert eff.total("synops") < every.total("synops")
    assert eff.total("synapse_bytes_read") == 4 * eff.total("synops")  # zero weights are not read either


def test_effective_counts_hold_on_many_cores_and_an_analog_input_counts_effective_macs():
    """Mapped onto Loihi cores of 16 neurons (layers cut in ranges: counts per row and core), the effective count is the
    same; an analog input counts its nonzero values times the nonzero weights they reach as MACs."""
    net, k, w = _conv_net(seed=3)
    loihi = load_target("loihi")
    mapped = map_network(net, dataclasses.replace(loihi, limits=dict(loihi.limits, neurons_per_core=16)))
    assert len(mapped.cores) > 8
    x = (np.random.default_rng(2).random((4, T, 2, 6, 6)) < 0.4).astype(np.float64)
    a = simulator.run(net, x, T, synops="effective")
    b = simulator.run(mapped, x, T, synops="effective")
    assert a.total("synops") == b.total("synops") > 0
    analog = np.random.default_rng(4).uniform(0, 1, (3, 2, 6, 6)) * (np.random.default_rng(5).random((3, 2, 6, 6))
                                                                   < 0.5)
    res = simulator.run(net, analog, 1, synops="effective")
    kb = torch.as_tensor(k != 0, dtype=torch.float64)
    assert res.total("macs") == float(F.conv2d(torch.as_tensor(analog != 0, dtype=torch.float64), kb,
                                               padding=1).sum())


def test_an_unknown_synops_convention_is_refused():
    net, _, _ = _conv_net()
    with pytest.raises(ValueError, match="synops must be one of all, effective, got 'neurobench'"):
        simulator.run(net, np.zeros((1, 2, 6, 6)), 2, synops="neurobench")


def test_simulate_and_report_take_the_convention_and_say_it(tmp_path):
    import json

    from spikeforge.cli import main
    from spikeforge.converter.writer import write_network

    net, _, _ = _conv_net()
    write_network(net, tmp_path / "n.h5")
    x = (np.random.default_rng(1).random((3, T, 2, 6, 6)) < 0.4).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    totals = {}
    for synops in ("all", "effective"):
        assert main(["simulate", str(tmp_path / "n.h5"), "--input", str(tmp_path / "x.npy"), "--T", str(T),
                     "--synops", synops, "--out", str(tmp_path / f"{synops}.npz")]) == 0
        doc = json.loads((tmp_path / f"{synops}.json").read_text())
        assert doc["synops"] == synops
        totals[synops] = doc["totals"]["synops"]
    assert totals["effective"] == simulator.run(net, x, T, synops="effective").total("synops") < totals["all"]
    np.save(tmp_path / "static.npy", np.random.default_rng(2).uniform(0, 1, (3, 2, 6, 6)).astype(np.float32))
    assert main(["report", str(tmp_path / "n.h5"), "--data", str(tmp_path / "static.npy"), "--T", "4",
                 "--synops", "effective", "--target", "loihi", "--out", str(tmp_path / "rep")]) == 0
    assert "NeuroBench's effective operations (synops effective" in (tmp_path / "rep" / "report.md").read_text()
    assert json.loads((tmp_path / "rep" / "report.json").read_text())["synops"] == "effective"


def test_activation_sparsity_is_neurobenchs_over_the_recorded_spiking_layers():
    """NeuroBench's ActivationSparsity (metrics/workload/activation_sparsity.py): zero activations over all
    activations of the neuron layers, all steps and samples; here over the recorded populations."""
    net, _, _ = _conv_net()
    x = (np.random.default_rng(6).random((5, T, 2, 6, 6)) < 0.4).astype(np.float64)
    res = simulator.run(net, x, T, record=["c", "h"])
    # IF neurons send at most one unit spike per step: the counted spikes are the nonzero activations
    spikes = res.total("spikes")
    assert 0 < spikes and res.activation_sparsity() == 1 - spikes / (5 * T * (108 + 4))
    with pytest.raises(ValueError, match="run with record="):
        simulator.run(net, x, T).activation_sparsity()


@pytest.mark.parametrize("conv", [False, True])
def test_effective_synops_equal_what_neurobench_itself_counts(conv):
    """NeuroBench 2.3's own SynapticOperations (Effective_ACs) on a 50 %-pruned snnTorch MLP and conv net fed 0/1
    frames, against the same network imported through NIR (--convention snntorch) counted with synops "effective":
    equal per sample; "all" counts the pruned synapses too."""
    pytest.importorskip("neurobench")
    snn = pytest.importorskip("snntorch")
    from neurobench.benchmarks import Benchmark
    from neurobench.metrics.workload import SynapticOperations
    from neurobench.models import SNNTorchModel
    from snntorch.export_nir import export_to_nir
    from torch.utils.data import DataLoader, TensorDataset

    from spikeforge.interop.nir_import import from_nir

    torch.manual_seed(0)

    def leaky(shape, output=False):
        return snn.Leaky(beta=torch.full(shape, 0.8), threshold=torch.ones(shape), init_hidden=True, output=output,
                         reset_mechanism="zero")

    if conv:
        net = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3, padding=1), leaky((4, 6, 6)), torch.nn.Flatten(),
                                  torch.nn.Linear(144, 10), leaky((10,), output=True))
        shape = (2, 6, 6)
    else:
        net = torch.nn.Sequential(torch.nn.Linear(16, 24), leaky((24,)), torch.nn.Linear(24, 10),
                                  leaky((10,), output=True))
        shape = (16,)
    with torch.no_grad():
        for layer in (net[0], net[-2]):
            layer.weight.mul_(2.5 * (torch.rand_like(layer.weight) < 0.5).float())
    B = 16
    x = (torch.rand(B, 30, *shape, generator=torch.Generator().manual_seed(1)) < 0.3).float()
    data = DataLoader(TensorDataset(x, torch.zeros(B, dtype=torch.long)), batch_size=B)
    counted = Benchmark(SNNTorchModel(net), data, [], [], [[], [SynapticOperations]]).run(quiet=True)
    theirs = counted["SynapticOperations"]["Effective_ACs"]
    ours = from_nir(export_to_nir(net, torch.zeros(1, *shape), ignore_dims=[0]), convention="snntorch")
    eff = simulator.run(ours, x.numpy(), 30, synops="effective")
    every = simulator.run(ours, x.numpy(), 30, synops="all")
    assert theirs > 0 and eff.total("synops") / B == theirs
    assert every.total("synops") > eff.total("synops")
