"""Side-by-side with SANA-FE (spikeforge.interop.sanafe) and the explicit synapse lists the export
uses (simulator.geometry.explicit_synapses)."""
import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from spikeforge.converter import convert
from spikeforge.converter.fixed_point import to_fixed_point
from spikeforge.converter.mapping import map_network, pipelined
from spikeforge.hwmodels.targets import load_target
from spikeforge.simulator.geometry import explicit_synapses
from spikeforge.simulator.network import Network, Population, Projection


@pytest.mark.parametrize("kind, stride, padding, groups", [("conv2d", 1, 1, 1), ("conv2d", 2, 1, 2),
                                                           ("conv2d", 2, 0, 1), ("avgpool", 2, 0, 1)])
def test_explicit_synapses_reproduce_torch(kind, stride, padding, groups):
    rng = np.random.default_rng(1)
    cin, cout = 4, (6 if kind == "conv2d" else 4)
    x = rng.normal(size=(cin, 7, 7))
    if kind == "conv2d":
        w = rng.normal(size=(cout, cin // groups, 3, 3)).astype(np.float32)
        proj = Projection("k", "conv2d", "a", "b", w, stride=(stride, stride), padding=(padding, padding),
                          groups=groups)
        ref = F.conv2d(torch.tensor(x)[None], torch.tensor(w, dtype=torch.float64), stride=stride, padding=padding,
                       groups=groups)[0].numpy()
    else:
        proj = Projection("p", "avgpool", "a", "b", kernel=(2, 2), stride=(2, 2), padding=(0, 0))
        ref = F.avg_pool2d(torch.tensor(x)[None], 2)[0].numpy()
    s, t, wt = explicit_synapses(proj, (cin, 7, 7), ref.shape)
    out = np.zeros(ref.size)
    np.add.at(out, t, wt * x.reshape(-1)[s])
    np.testing.assert_allclose(out, ref.reshape(-1), atol=1e-9)
    assert len(np.unique(s * ref.size + t)) == len(s)  # every synapse once


def _mapped_fixed(model, calib, neurons_per_core=24):
    loihi = load_target("loihi")
    small = dataclasses.replace(loihi, limits=dict(loihi.limits, neurons_per_core=neurons_per_core))
    snn = convert(model, [calib], norm="percentile", percentile=99.0)
    fixed = to_fixed_point(snn, 8, 24)
    return map_network(fixed, small, placement="anneal"), loihi


def test_sanafe_counts_energy_and_readout_equal_ours():
    """A layered conv net on 24-neuron cores (so layers span cores and packets travel several hops): spikes,
    synaptic events, packets, hops and the readout are identical, aligned energy equal to rounding."""
    pytest.importorskip("sanafe")
    from spikeforge.interop.sanafe import compare

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, stride=2, padding=1),
                          nn.ReLU(), nn.Flatten(), nn.Linear(6 * 3 * 3, 5))
    x = torch.rand(4, 1, 6, 6)
    net, target = _mapped_fixed(model, x)
    assert len(net.cores) >= 6
    r = compare(net, x.numpy(), 6, target)
    assert r.ours["spikes"] > 50 and r.ours["hops"] > r.ours["packets"]  # the check is not vacuous
    assert r.sanafe == r.ours
    assert r.sanafe_energy_pj == pytest.approx(r.ours_energy_pj, rel=1e-9)
    assert r.readout_max_diff == 0.0 and r.same_predictions == 4


def test_sanafe_export_refuses_what_it_cannot_keep_exact(tmp_path):
    from spikeforge.interop.sanafe import SanaFeExportError, check_exportable

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(9, 8), nn.ReLU(), nn.Linear(8, 3))
    x = torch.rand(4, 1, 3, 3)
    net, _ = _mapped_fixed(model, x)
    check_exportable(net)
    with pytest.raises(SanaFeExportError, match="fixed-point"):
        check_exportable(convert(model, [x]))
    pops = [Population.make("in", "input", (3,)), Population.make("a", "if", (3,), 1.0),
            Population.make("b", "if", (3,), 1.0), Population.make("c", "if", (3,), 1.0),
            Population.make("out", "readout", (3,))]
    eye = np.eye(3, dtype=np.float32)
    projs = [Projection("in_a", "dense", "in", "a", eye), Projection("a_b", "dense", "a", "b", eye),
             Projection("b_c", "dense", "b", "c", eye), Projection("skip", "dense", "a", "c", eye),
             Projection("c_out", "dense", "c", "out", eye)]
    skip = Network(pops, projs, net.cores, net.core_edges, dict(net.attrs))
    with pytest.raises(SanaFeExportError, match=r"'skip' \('a' -> 'c', delay 0\) does not line up with 'b_c'"):
        check_exportable(skip)
    check_exportable(pipelined(skip, 1))  # one step per hop: every path lines up


def test_sanafe_export_writes_files_sanafe_loads(tmp_path):
    """export() writes SANA-FE's architecture and network files; SANA-FE reads them back with every group."""
    sanafe = pytest.importorskip("sanafe")
    from spikeforge.interop.sanafe import export

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(9, 8), nn.ReLU(), nn.Linear(8, 3))
    x = torch.rand(4, 1, 3, 3)
    net, target = _mapped_fixed(model, x, neurons_per_core=4)
    arch_path, snn_path = export(net, target, x[0].numpy(), 4, tmp_path / "out")
    arch = sanafe.load_arch(arch_path)
    loaded = sanafe.load_net(snn_path, arch)
    assert {p.name for p in net.populations[1:]} <= set(loaded.groups)
    assert len(arch.cores()) == (int(net.cores.x.max()) + 1) * (int(net.cores.y.max()) + 1) * (1 + 3 + 4)


class _Residual(nn.Module):
    """conv -> ReLU -> conv, + the first ReLU's output (identity skip) -> ReLU -> linear."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 6 * 6, 5)

    def forward(self, x):
        h = torch.relu(self.c1(x))
        return self.fc(torch.relu(self.c2(h) + h).flatten(1))


def test_pipelined_residual_network_counts_equal_sanafe():
    """One step per hop (SANA-FE's and the chip's own timing) lines up a residual block's skip connection with its
    main branch: spikes, synaptic events, packets, hops and the readout identical in both simulators."""
    pytest.importorskip("sanafe")
    from spikeforge.interop.sanafe import compare

    torch.manual_seed(0)
    model = _Residual()
    x = torch.rand(4, 1, 6, 6)
    loihi = load_target("loihi")
    small = dataclasses.replace(loihi, limits=dict(loihi.limits, neurons_per_core=24))
    fixed = to_fixed_point(convert(model, [x], norm="percentile", percentile=99.0), 8, 24)
    assert sorted(q.source for q in fixed.incoming("relu_1")) == ["relu", "relu"]  # main branch and skip meet
    assert [q.kind for q in fixed.incoming("relu_1")].count("conv2d") == 1
    net = map_network(fixed, small, placement="anneal", hop_delay=1)
    r = compare(net, x.numpy(), 8, loihi)
    assert r.ours["spikes"] > 50 and r.ours["hops"] > r.ours["packets"]
    assert r.sanafe == r.ours
    assert r.sanafe_energy_pj == pytest.approx(r.ours_energy_pj, rel=1e-9)
    assert r.readout_max_diff == 0.0 and r.same_predictions == 4
