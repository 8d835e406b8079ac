"""snnTorch and Norse graphs exported by the libraries themselves, imported with --convention and run on their own
per-step input spike trains: every spike (sample, step, neuron) equal to the library's own simulation. And the
other way: a spikeforge network exported to NIR and run by Norse's from_nir. Skipped where a library is missing
(tests/test_nir_conventions.py covers the same conventions against their equations without the libraries)."""
import warnings

import nir
import numpy as np
import pytest
import torch

from spikeforge import simulator
from spikeforge.cli import main
from spikeforge.converter.mapping import one_population_per_core
from spikeforge.interop.nir_export import to_nir
from spikeforge.interop.nir_import import NirImportWarning, from_nir
from spikeforge.simulator import Network, Population, Projection

T = 20
# nirtorch 2.6 says extract_nir_graph / load (what snnTorch 1.0 and Norse 1.1 call) will go: their concern, not ours
pytestmark = pytest.mark.filterwarnings("ignore:nirtorch.*deprecated:DeprecationWarning")


def _spike_trains(shape, seed, p=0.3, steps=T):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand((16, steps) + tuple(shape), generator=g) < p).float()


def _record(modules, kinds):
    """Forward hooks that keep the spikes of every module of `kinds`, per step."""
    rec = {name: [] for name, m in modules if isinstance(m, kinds)}

    def hook(name):
        return lambda mod, inp, out: rec[name].append((out[0] if isinstance(out, tuple) else out).detach().clone())
    handles = [m.register_forward_hook(hook(name)) for name, m in modules if name in rec]
    return rec, handles


def _compare(net, x, lib_spikes):
    """Run the imported network on the same frames (numba engine); mismatching (sample, step, neuron) per layer."""
    n_steps = x.shape[1]
    res = simulator.run(net, x.numpy(), n_steps, record=list(lib_spikes), record_counts=True)
    mismatches, spikes = {}, {}
    for name, steps in lib_spikes.items():
        ours = res.spikes[name].reshape(len(x), n_steps, -1)
        theirs = torch.stack(steps, 1).numpy().reshape(len(x), n_steps, -1)
        mismatches[name] = int((ours != theirs).sum())
        spikes[name] = int(theirs.sum())
        assert 0 < spikes[name] < theirs.size, (name, spikes[name])  # the layer fires, and not every step
    return mismatches, spikes, res


# --------------------------------------------------------------------------- snnTorch

def _snntorch_mlp(per_neuron):
    snn = pytest.importorskip("snntorch")
    torch.manual_seed(1)
    n1, n2 = 24, 6
    beta1 = torch.rand(n1) * 0.5 + 0.5 if per_neuron else 0.85
    th1 = torch.rand(n1) * 0.5 + 0.5 if per_neuron else 0.7
    beta2 = torch.rand(n2) * 0.3 + 0.6 if per_neuron else 0.9
    th2 = torch.rand(n2) * 0.5 + 0.75 if per_neuron else 1.0
    net = torch.nn.Sequential(torch.nn.Linear(16, n1), snn.Leaky(beta=beta1, threshold=th1, init_hidden=True,
                                                                 reset_mechanism="zero"),
                              torch.nn.Linear(n1, n2), snn.Leaky(beta=beta2, threshold=th2, init_hidden=True,
                                                                 output=True, reset_mechanism="zero"))
    with torch.no_grad():
        net[0].weight.mul_(1.5)
        net[0].bias.add_(0.1)
        net[2].weight.mul_(2.0)
    return net


def _snntorch_graph(net, sample):
    """snnTorch's export; for layer-wide (scalar) β / θ, snnTorch 1.0's export_to_nir stops in nir's type
    inference ('1.input: []'), so the graph is taken one step earlier: nirtorch with snnTorch's own node map."""
    pytest.importorskip("snntorch")
    import nirtorch
    from snntorch.export_nir import _extract_snntorch_module, export_to_nir

    try:
        return export_to_nir(net, sample, ignore_dims=[0])
    except ValueError as exc:
        assert "Type inference" in str(exc)
        return nirtorch.extract_nir_graph(net, _extract_snntorch_module, sample, model_name="snntorch",
                                          ignore_dims=[0])


def _snntorch_run(net, x, kinds=None):
    """snnTorch's own spikes of its neuron modules (Leaky unless `kinds`), by module name, per step."""
    import snntorch as snn
    from snntorch import utils

    rec, handles = _record(list(net.named_modules()), kinds or snn.Leaky)
    utils.reset(net)
    with torch.no_grad():
        for t in range(x.shape[1]):
            net(x[:, t])
    for h in handles:
        h.remove()
    return rec


@pytest.mark.parametrize("per_neuron", [True, False], ids=["per-neuron", "scalar"])
def test_snntorch_export_runs_spike_exact_on_its_own_spike_trains(per_neuron, tmp_path):
    net = _snntorch_mlp(per_neuron)
    graph = _snntorch_graph(net, torch.zeros(1, 16))
    # nir 1.0.8's writer refuses 0-d parameter arrays with its default gzip ("Scalar datasets don't support
    # chunk/filter options"): layer-wide parameters are written uncompressed
    nir.write(tmp_path / "snn.nir", graph, **({} if per_neuron else {"compression": None}))
    assert main(["import-nir", str(tmp_path / "snn.nir"), str(tmp_path / "snn.h5"), "--convention", "snntorch"]) == 0
    ours = simulator.load_network(tmp_path / "snn.h5")
    assert [p.model for p in ours.populations] == ["input", "lif", "lif", "readout"]
    assert [p.size for p in ours.populations] == [16, 24, 6, 6]  # scalar β / θ broadcast over the layer
    x = _spike_trains((16,), seed=3)
    mismatches, spikes, res = _compare(ours, x, _snntorch_run(net, x))
    assert mismatches == {"1": 0, "3": 0}, (mismatches, spikes)
    assert res.total("macs") == 0 and res.total("synops") > 0  # spike trains in: synaptic operations only
    np.testing.assert_allclose(res.output * T, res.spike_counts["3"])  # the Output reads the spike count


def test_snntorch_conv_export_runs_spike_exact(tmp_path):
    snn = pytest.importorskip("snntorch")
    torch.manual_seed(4)
    net = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3, padding=1),
                              snn.Leaky(beta=torch.full((4, 8, 8), 0.8), threshold=torch.full((4, 8, 8), 0.5),
                                        init_hidden=True, reset_mechanism="zero"),
                              torch.nn.AvgPool2d(2), torch.nn.Flatten(), torch.nn.Linear(64, 5),
                              snn.Leaky(beta=torch.full((5,), 0.9), threshold=torch.ones(5), init_hidden=True,
                                        output=True, reset_mechanism="zero"))
    with torch.no_grad():
        net[4].weight.mul_(3.0)
    graph = _snntorch_graph(net, torch.zeros(1, 2, 8, 8))
    ours = from_nir(graph, convention="snntorch")
    assert [q.kind for q in ours.projections][:2] == ["conv2d", "sparse"]  # AvgPool·Flatten·Linear in one
    x = _spike_trains((2, 8, 8), seed=5, p=0.4)
    mismatches, spikes, _ = _compare(ours, x, _snntorch_run(net, x))
    assert mismatches == {"1": 0, "5": 0}, (mismatches, spikes)


def test_snntorch_recurrent_and_synaptic_layers_run_spike_exact_over_30_steps(tmp_path):
    """RLeaky, RSynaptic (dense recurrent weights with biases) and Synaptic, zero reset as snnTorch's own NIR import
    builds them: snnTorch empties their membranes the step after a spike (dropping that step's input) and feeds
    the recurrent spikes back a step late; imported as cuba neurons held one step and recurrent projections."""
    snn = pytest.importorskip("snntorch")
    from snntorch.export_nir import export_to_nir

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(6, 10),
        snn.RLeaky(beta=torch.rand(10) * 0.4 + 0.5, threshold=torch.ones(10), linear_features=10, init_hidden=True,
                   reset_mechanism="zero"),
        torch.nn.Linear(10, 8),
        snn.RSynaptic(alpha=torch.rand(8) * 0.5 + 0.3, beta=torch.rand(8) * 0.4 + 0.5, threshold=torch.full((8,), 0.8),
                      linear_features=8, init_hidden=True, reset_mechanism="zero"),
        torch.nn.Linear(8, 4),
        snn.Synaptic(alpha=torch.rand(4) * 0.5 + 0.3, beta=torch.full((4,), 0.9), threshold=torch.ones(4),
                     init_hidden=True, output=True, reset_mechanism="zero"))
    with torch.no_grad():
        for i, gain in ((0, 2.0), (2, 2.0), (4, 2.5)):
            net[i].weight.mul_(gain)
        net[1].recurrent.weight.mul_(1.5)
        net[3].recurrent.weight.mul_(1.5)
    nir.write(tmp_path / "rec.nir", export_to_nir(net, torch.zeros(1, 6), ignore_dims=[0]))
    assert main(["import-nir", str(tmp_path / "rec.nir"), str(tmp_path / "rec.h5"), "--convention", "snntorch"]) == 0
    ours = simulator.load_network(tmp_path / "rec.h5")
    assert [(p.name, p.model, p.refractory) for p in ours.populations[1:4]] == [
        ("1.lif", "cuba", 1), ("3.lif", "cuba", 1), ("5", "cuba", 1)]
    assert [(q.source, q.target, q.delay) for q in ours.projections if ours.recurrent(q)] == [
        ("1.lif", "1.lif", 1), ("3.lif", "3.lif", 1)]
    x = (torch.rand(16, 30, 6, generator=torch.Generator().manual_seed(1)) < 0.4).float()
    theirs = _snntorch_run(net, x, (snn.RLeaky, snn.RSynaptic, snn.Synaptic))
    res = simulator.run(ours, x.numpy(), 30, record=["1.lif", "3.lif", "5"])
    for k, name in (("1", "1.lif"), ("3", "3.lif"), ("5", "5")):
        lib = torch.stack(theirs[k], 1).numpy().reshape(16, 30, -1)
        assert 0 < lib.sum() < lib.size / 2, (name, lib.sum())
        np.testing.assert_array_equal(res.spikes[name].reshape(lib.shape), lib, err_msg=name)


def test_snntorch_conv_synaptic_and_rleaky_run_spike_exact_over_30_steps():
    """A Conv2d into a per-neuron Synaptic layer, then a recurrent dense RLeaky and a Synaptic readout layer.
    (snnTorch 1.0 cannot export a convolutional RLeaky: it writes one β per channel for a (C, H, W) layer.)"""
    snn = pytest.importorskip("snntorch")
    from snntorch.export_nir import export_to_nir

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(2, 4, 3, padding=1),
        snn.Synaptic(alpha=torch.rand(4, 6, 6) * 0.5 + 0.3, beta=torch.rand(4, 6, 6) * 0.3 + 0.6,
                     threshold=torch.ones(4, 6, 6), init_hidden=True, reset_mechanism="zero"),
        torch.nn.Flatten(), torch.nn.Linear(144, 8),
        snn.RLeaky(beta=torch.full((8,), 0.85), threshold=torch.ones(8), linear_features=8, init_hidden=True,
                   reset_mechanism="zero"),
        torch.nn.Linear(8, 5),
        snn.Synaptic(alpha=torch.full((5,), 0.7), beta=torch.full((5,), 0.85), threshold=torch.ones(5),
                     init_hidden=True, output=True, reset_mechanism="zero"))
    with torch.no_grad():
        for i, gain in ((0, 2.0), (3, 3.0), (5, 3.0)):
            net[i].weight.mul_(gain)
    ours = from_nir(export_to_nir(net, torch.zeros(1, 2, 6, 6), ignore_dims=[0]), convention="snntorch")
    assert [q.kind for q in ours.projections][:2] == ["conv2d", "dense"]
    x = (torch.rand(8, 30, 2, 6, 6, generator=torch.Generator().manual_seed(2)) < 0.4).float()
    theirs = _snntorch_run(net, x, (snn.Synaptic, snn.RLeaky))
    res = simulator.run(ours, x.numpy(), 30, record=["1", "4.lif", "6"])
    for k, name in (("1", "1"), ("4", "4.lif"), ("6", "6")):
        lib = torch.stack(theirs[k], 1).numpy().reshape(8, 30, -1)
        assert 0 < lib.sum() < lib.size / 2, (name, lib.sum())
        np.testing.assert_array_equal(res.spikes[name].reshape(lib.shape), lib, err_msg=name)


def test_snntorch_import_exports_and_round_trips_through_the_cli(tmp_path):
    """export-nir of an imported snnTorch graph, imported again: the same arrays and the same spikes."""
    net = _snntorch_mlp(per_neuron=True)
    nir.write(tmp_path / "snn.nir", _snntorch_graph(net, torch.zeros(1, 16)))
    assert main(["import-nir", str(tmp_path / "snn.nir"), str(tmp_path / "a.h5"), "--convention", "snntorch"]) == 0
    assert main(["export-nir", str(tmp_path / "a.h5"), str(tmp_path / "a.nir")]) == 0
    assert main(["import-nir", str(tmp_path / "a.nir"), str(tmp_path / "b.h5")]) == 0
    a, b = simulator.load_network(tmp_path / "a.h5"), simulator.load_network(tmp_path / "b.h5")
    for p, q in zip(a.populations, b.populations):
        assert (p.name, p.model, p.shape, p.reset, p.threshold_test) == (q.name, q.model, q.shape, q.reset,
                                                                          q.threshold_test)
        for field in ("threshold", "bias", "decay", "v_init"):
            x, y = getattr(p, field), getattr(q, field)
            assert (x is None and y is None) or np.array_equal(x, y), (p.name, field)
    for p, q in zip(a.projections, b.projections):
        assert (p.kind, p.source, p.target) == (q.kind, q.source, q.target)
        assert p.weight is None or np.array_equal(p.weight, q.weight)
    x = _spike_trains((16,), seed=8).numpy()
    ra, rb = simulator.run(a, x, T, record_counts=True), simulator.run(b, x, T, record_counts=True)
    assert ra.totals() == rb.totals() and ra.total("spikes") > 0
    np.testing.assert_array_equal(ra.output, rb.output)


# --------------------------------------------------------------------------- Norse

def _norse_run(net, x, kinds=None):
    """Norse's own spikes of its cells (LIFBox and IAF unless `kinds`), by module name, per step."""
    norse = pytest.importorskip("norse.torch")
    rec, handles = _record(list(net.named_modules()), kinds or (norse.LIFBoxCell, norse.IAFCell))
    state = None
    with torch.no_grad():
        for t in range(x.shape[1]):
            _, state = net(x[:, t], state)
    for h in handles:
        h.remove()
    return rec


def _names(net, rec):
    """SequentialState names its children '0', '1', ...; nirtorch names the NIR nodes the same way."""
    return {k.split(".")[-1]: v for k, v in rec.items()}


def _norse_cuba(n, tau_syn_inv, tau_mem_inv, v_th, shape=None):
    norse = pytest.importorskip("norse.torch")
    shape = shape or (n,)
    return norse.LIFCell(norse.LIFParameters(
        tau_syn_inv=torch.full(shape, tau_syn_inv), tau_mem_inv=torch.full(shape, tau_mem_inv),
        v_th=torch.full(shape, v_th), v_leak=torch.zeros(shape), v_reset=torch.zeros(shape)))


@pytest.mark.parametrize("conv", [False, True], ids=["mlp", "conv"])
def test_norse_lifcell_runs_spike_exact_over_30_steps(conv):
    """Norse's LIFCell (a current-based LIF: the input jumps i, v moves by dt·τ_mem_inv·(v_leak - v + i), then i
    decays) exported by Norse and read as cuba neurons, against Norse's own spikes."""
    norse = pytest.importorskip("norse.torch")
    torch.manual_seed(2)
    if conv:
        # (Norse 1.1's to_nir writes no node for a Flatten: two convolutional layers)
        net = norse.SequentialState(torch.nn.Conv2d(2, 4, 3, padding=1),
                                    _norse_cuba(0, 200.0, 100.0, 0.3, (4, 6, 6)), torch.nn.Conv2d(4, 3, 3, padding=1),
                                    _norse_cuba(0, 300.0, 150.0, 0.2, (3, 6, 6)))
        shape, sample = (2, 6, 6), torch.zeros(1, 2, 6, 6)
    else:
        net = norse.SequentialState(torch.nn.Linear(16, 20), _norse_cuba(20, 200.0, 100.0, 0.3),
                                    torch.nn.Linear(20, 6), _norse_cuba(6, 300.0, 150.0, 0.2))
        shape, sample = (16,), torch.zeros(1, 16)
    with torch.no_grad():
        net[0].weight.mul_(3.0)
        net[-2].weight.mul_(3.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NirImportWarning)  # Norse's graph keeps the sample's batch dimension
        ours = from_nir(norse.to_nir(net, sample), convention="norse")
    cuba = [p for p in ours.populations if p.model == "cuba"]
    assert len(cuba) == 2 and all(p.refractory == 0 for p in cuba)
    np.testing.assert_allclose(cuba[0].decay, 0.9, rtol=1e-6)  # 1 - dt·tau_mem_inv
    np.testing.assert_allclose(cuba[0].syn_decay, 0.8, rtol=1e-6)  # 1 - dt·tau_syn_inv
    x = _spike_trains(shape, seed=7, p=0.3, steps=30)
    names = [p.name for p in cuba]
    mismatches, spikes, _ = _compare(ours, x, {k: v for k, v in _names(net, _norse_run(net, x, norse.LIFCell)).items()
                                              if k in names})
    assert mismatches == {n: 0 for n in names}, (mismatches, spikes)


def test_norse_mlp_export_runs_spike_exact_on_its_own_spike_trains(tmp_path):
    norse = pytest.importorskip("norse.torch")
    torch.manual_seed(2)
    net = norse.SequentialState(torch.nn.Linear(16, 20),
                                norse.LIFBoxCell(norse.LIFBoxParameters(tau_mem_inv=torch.tensor(200.0),
                                                                        v_leak=torch.tensor(0.1),
                                                                        v_th=torch.tensor(0.3))),
                                torch.nn.Linear(20, 6), norse.IAFCell(norse.IAFParameters(v_th=torch.tensor(1.5))))
    with torch.no_grad():
        net[0].weight.mul_(2.0)
        net[2].weight.mul_(2.0)
        net[2].bias.add_(0.2)
    graph = norse.to_nir(net, torch.zeros(1, 16))  # dt = 1e-3, its default
    assert np.isclose(float(graph.nodes["1"].tau), 1e-3 / 200)  # Norse 1.1 writes tau = dt / tau_mem_inv
    nir.write(tmp_path / "norse.nir", graph, compression=None)  # 0-d parameters: see the snnTorch test
    assert main(["import-nir", str(tmp_path / "norse.nir"), str(tmp_path / "n.h5"), "--convention", "norse"]) == 0
    ours = simulator.load_network(tmp_path / "n.h5")
    np.testing.assert_allclose(ours.populations[1].decay, 0.8, rtol=1e-6)  # 1 - dt·tau_mem_inv
    x = _spike_trains((16,), seed=6)
    mismatches, spikes, res = _compare(ours, x, _names(net, _norse_run(net, x)))
    assert mismatches == {"1": 0, "3": 0}, (mismatches, spikes)
    # export-nir of the imported graph, imported again: v0 = v_leak and the unit IAF gain ride in the metadata
    assert main(["export-nir", str(tmp_path / "n.h5"), str(tmp_path / "back.nir")]) == 0
    assert main(["import-nir", str(tmp_path / "back.nir"), str(tmp_path / "back.h5")]) == 0
    again = simulator.run(simulator.load_network(tmp_path / "back.h5"), x.numpy(), T, record_counts=True)
    assert again.totals() == res.totals()
    np.testing.assert_array_equal(again.output, res.output)


def test_norse_conv_export_runs_spike_exact(tmp_path):
    norse = pytest.importorskip("norse.torch")
    torch.manual_seed(7)
    net = norse.SequentialState(torch.nn.Conv2d(2, 4, 3, padding=1), norse.LIFBoxCell(),
                                torch.nn.Conv2d(4, 3, 3, stride=2), norse.IAFCell())
    with torch.no_grad():
        net[0].weight.mul_(4.0)
        net[2].weight.mul_(3.0)
    graph = norse.to_nir(net, torch.zeros(1, 2, 8, 8))  # its Input keeps the batch dimension: (1, 2, 8, 8)
    with pytest.warns(UserWarning, match=r"input shape \(1, 2, 8, 8\) read as \(2, 8, 8\)"):
        ours = from_nir(graph, convention="norse")
    x = _spike_trains((2, 8, 8), seed=9, p=0.5)
    mismatches, spikes, _ = _compare(ours, x, _names(net, _norse_run(net, x)))
    assert mismatches == {"1": 0, "3": 0}, (mismatches, spikes)


def test_spikeforge_if_network_exported_runs_in_norse():
    """Ours -> NIR -> norse.from_nir: an IF network with NIR's own semantics (reset to 0, v > θ, v0 = 0, unit
    spikes) gives the same spikes in Norse; Norse drops the I readout, so its per-step output summed over T is our
    readout v(T). (Our LIF does not go through: Norse's import ignores r, the input gain.)"""
    norse = pytest.importorskip("norse.torch")
    rng = np.random.default_rng(11)
    pops = [Population.make("in", "input", (16,)),
            Population.make("h", "if", (20,), rng.uniform(0.5, 1.5, 20), 0.0, rng.normal(0, 0.1, 20), reset="zero",
                            spike_value="unit", threshold_test="gt"),
            Population.make("out", "readout", (5,), bias=rng.normal(0, 0.1, 5))]
    projs = [Projection("fc1", "dense", "in", "h", rng.normal(0.1, 0.6, (20, 16)).astype(np.float32)),
             Projection("fc2", "dense", "h", "out", rng.normal(0, 0.6, (5, 20)).astype(np.float32))]
    ours = Network(pops, projs, *one_population_per_core(pops, projs), {"numeric_mode": "float32"})
    module = norse.from_nir(to_nir(ours), dt=1.0)
    x = _spike_trains((16,), seed=12)
    spikes = {"h": []}
    module.h.register_forward_hook(lambda mod, inp, out: spikes["h"].append(out[0].detach().clone()))
    state, total = None, 0
    with torch.no_grad():
        for t in range(T):
            out, state = module(x[:, t], state)
            total = total + out.double()
    mismatches, counts, res = _compare(ours, x, spikes)
    assert mismatches == {"h": 0}, (mismatches, counts)
    np.testing.assert_allclose(res.output * T, total.numpy(), rtol=1e-5, atol=1e-4)  # Norse sums in float32


@pytest.mark.filterwarnings("ignore:divide by zero:RuntimeWarning")  # snnTorch's export of beta = 1
def test_export_nir_snntorch_convention_reads_back_in_snntorch_with_the_same_spikes(tmp_path):
    """`export-nir --convention snntorch`: the graph snnTorch's own import_from_nir turns into Leaky layers (dt =
    1e-4, τ = dt/(1 - β), r = τ/dt; β = 1 as τ = 1e13·dt) that spike as our engine does; a converted network
    (subtractive reset, the >= test) is refused naming the population, exit 2."""
    snn = pytest.importorskip("snntorch")
    from snntorch.export_nir import export_to_nir
    from snntorch.import_nir import import_from_nir

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(6, 10),
        snn.Leaky(beta=torch.rand(10) * 0.4 + 0.5, threshold=torch.ones(10), init_hidden=True, reset_mechanism="zero"),
        torch.nn.Linear(10, 4),
        snn.Leaky(beta=torch.ones(4), threshold=torch.ones(4), init_hidden=True, output=True, reset_mechanism="zero"))
    with torch.no_grad():
        net[0].weight.mul_(2.0)
        net[2].weight.mul_(2.0)
    ours = from_nir(export_to_nir(net, torch.zeros(1, 6), ignore_dims=[0]), convention="snntorch")
    path = tmp_path / "ours.h5"
    from spikeforge.converter.writer import write_network
    write_network(ours, path)
    assert main(["export-nir", str(path), str(tmp_path / "back.nir"), "--convention", "snntorch"]) == 0
    back = import_from_nir(nir.read(tmp_path / "back.nir"))
    x = (torch.rand(8, 30, 6, generator=torch.Generator().manual_seed(3)) < 0.4).float()
    rec = _snntorch_run(back, x)
    assert sorted(rec) == ["1", "3"]
    res = simulator.run(ours, x.numpy(), 30, record=["1", "3"])
    for n in rec:
        theirs = torch.stack(rec[n], 1).numpy().reshape(8, 30, -1)
        assert 0 < theirs.sum() < theirs.size / 2
        np.testing.assert_array_equal(res.spikes[n].reshape(theirs.shape), theirs, err_msg=n)


def test_export_nir_snntorch_convention_refuses_what_snntorch_would_read_differently(tmp_path, capsys, trained_mlp,
                                                                                     digits):
    from spikeforge.converter import convert
    from spikeforge.converter.writer import write_network

    write_network(convert(trained_mlp, [digits[0][:64]]), tmp_path / "conv.h5")
    assert main(["export-nir", str(tmp_path / "conv.h5"), str(tmp_path / "x.nir"), "--convention", "snntorch"]) == 2
    err = capsys.readouterr().err
    assert "snnTorch's import builds neurons that reset to 0" in err and "reset 'subtract'" in err, err
    assert not (tmp_path / "x.nir").exists()


def test_export_nir_norse_convention_reads_back_in_norse_with_the_same_spikes(tmp_path):
    """`export-nir --convention norse`: a conv -> LIF (β per channel) -> average pooling -> IF -> dense -> cuba ->
    readout network read by Norse 1.1's own from_nir (dt = 1e-3: LIFBox with τ = dt/(1 - β), its input gain 1 - β
    undone in the weights; the pooling as a depthwise conv; the cuba as Norse's LIBox synapse + LIFBox) spikes as our
    engine does in every layer over 30 steps, and its Affine output summed over the steps is our readout x T."""
    norse = pytest.importorskip("norse.torch")
    from norse.torch.utils.import_nir import CubaLIF as NorseCuba

    from spikeforge.converter.mapping import one_population_per_core
    from spikeforge.converter.writer import write_network
    from spikeforge.simulator import Network, Population, Projection

    rng = np.random.default_rng(4)
    unit = dict(reset="zero", spike_value="unit", threshold_test="gt")
    beta = np.repeat([0.5, 0.75, 0.875, 0.625], 36)
    pops = [Population.make("input", "input", (2, 6, 6)),
            Population.make("lif", "lif", (4, 6, 6), 1.0, decay=beta, **unit),
            Population.make("if", "if", (4, 3, 3), 0.6, **unit),
            Population.make("cuba", "cuba", (10,), 0.8, decay=0.75, syn_decay=0.5, **unit),
            Population.make("out", "readout", (5,))]
    projs = [Projection("c", "conv2d", "input", "lif", rng.normal(0.3, 0.5, (4, 2, 3, 3)).astype(np.float32),
                        padding=(1, 1)),
             Projection("p", "avgpool", "lif", "if", kernel=(2, 2), stride=(2, 2)),
             Projection("d", "dense", "if", "cuba", rng.normal(0.4, 0.6, (10, 36)).astype(np.float32)),
             Projection("r", "dense", "cuba", "out", rng.normal(0, 1, (5, 10)).astype(np.float32))]
    pops[1].bias[:] = np.repeat([0.05, -0.02, 0.1, 0.0], 36)
    cores, edges = one_population_per_core(pops, projs)
    ours = Network(pops, projs, cores, edges, {"name": "hand"})
    write_network(ours, tmp_path / "h.h5")
    assert main(["export-nir", str(tmp_path / "h.h5"), str(tmp_path / "h.nir"), "--convention", "norse"]) == 0
    # its Flatten counts the batch dimension (start_dim 1), as Norse's torch modules need, and NIR's type check
    # (which Norse does not run) rejects: read without it
    module = norse.from_nir(nir.read(tmp_path / "h.nir", type_check=False))
    x = _spike_trains((2, 6, 6), seed=5, p=0.4)[:8]
    rec, handles = _record(list(module.named_modules()), (norse.LIFBoxCell, norse.IAFCell, NorseCuba))
    total, state = 0, None
    with torch.no_grad():
        for t in range(T):
            out, state = module(x[:, t], state)
            total = total + out.double()
    for h in handles:
        h.remove()
    theirs = {name.split(".")[-1]: v for name, v in rec.items() if not name.endswith(".lif")}
    assert sorted(theirs) == ["cuba", "if", "lif"]
    mismatches, spikes, res = _compare(ours, x, theirs)
    assert mismatches == {"lif": 0, "if": 0, "cuba": 0}, (mismatches, spikes)
    np.testing.assert_allclose(res.output * T, total.numpy(), rtol=1e-5, atol=1e-4)  # Norse sums in float32


def test_export_nir_norse_convention_refuses_what_norse_would_read_differently(tmp_path, capsys, trained_mlp, digits):
    from spikeforge.converter import convert
    from spikeforge.converter.writer import write_network

    write_network(convert(trained_mlp, [digits[0][:64]]), tmp_path / "conv.h5")
    assert main(["export-nir", str(tmp_path / "conv.h5"), str(tmp_path / "x.nir"), "--convention", "norse"]) == 2
    assert "reset 'subtract'" in capsys.readouterr().err
    assert not (tmp_path / "x.nir").exists()


# --------------------------------------------------------------------------- sinabs


def test_sinabs_graph_imports_spike_for_spike_as_sinabs_runs_it(tmp_path):
    """sinabs 3.1's to_nir of Linear -> IAF -> Linear -> LIF (per-neuron τ) read with --convention sinabs: the
    layers sinabs's own from_nir builds (MultiSpike: several spikes a step, subtractive reset, IF membranes kept at
    or above -θ, LIF decay exp(-1/τ) without input scaling) spike exactly as our engine (and the torch reference,
    on the same network) over 30 steps; read as NIR's equations (--convention nir) they do not."""
    sinabs = pytest.importorskip("sinabs")
    import sinabs.layers as sl

    from spikeforge.converter.spiking import SpikingNetwork

    torch.manual_seed(0)
    B, steps = 8, 30
    model = torch.nn.Sequential(
        torch.nn.Linear(16, 20), sl.IAFSqueeze(batch_size=B, spike_threshold=1.0, min_v_mem=-1.0),
        torch.nn.Linear(20, 6), sl.LIFSqueeze(tau_mem=torch.linspace(2.0, 8.0, 6), spike_threshold=torch.ones(6),
                                              norm_input=False, batch_size=B))
    with torch.no_grad():
        model[0].weight.mul_(3.0)
        model[2].weight.mul_(2.0)
    x = (torch.rand(B, steps, 16, generator=torch.Generator().manual_seed(4)) < 0.4).float()
    graph = sinabs.to_nir(model, x.reshape(B * steps, 16))
    nir.write(tmp_path / "sinabs.nir", graph)
    sinabs.reset_states(model)
    rec, handles = _record(list(model.named_modules()), (sl.IAFSqueeze, sl.LIFSqueeze))
    with torch.no_grad():
        model(x.reshape(B * steps, 16))
    for h in handles:
        h.remove()
    assert main(["import-nir", str(tmp_path / "sinabs.nir"), str(tmp_path / "s.h5"), "--convention", "sinabs"]) == 0
    ours = simulator.load_network(tmp_path / "s.h5")
    assert [(p.model, p.multi_spike, p.membrane_floor) for p in ours.populations[1:3]] == [
        ("if", True, "-threshold"), ("lif", True, "none")]
    res = simulator.run(ours, x.numpy(), steps, record=["1", "3"])
    _, ref = SpikingNetwork(ours)(x, steps, record_spikes=True)
    for name in ("1", "3"):
        theirs = rec[name][0].reshape(B, steps, -1).numpy()
        assert theirs.max() >= 2, name  # several spikes in a step, somewhere
        np.testing.assert_array_equal(res.spikes[name].reshape(theirs.shape), theirs, err_msg=name)
        np.testing.assert_array_equal(ref.spikes[name].numpy().swapaxes(0, 1).reshape(theirs.shape), theirs)
    plain = from_nir(nir.read(tmp_path / "sinabs.nir"), convention="nir")
    other = simulator.run(plain, x.numpy(), steps, record=["1"])
    assert not np.array_equal(other.spikes["1"].reshape(B, steps, -1), rec["1"][0].reshape(B, steps, -1).numpy())
