"""--convention snntorch / norse without the libraries: graphs written the way snnTorch 1.0 and Norse 1.1 write them
(layer-wide scalar parameters, no dt) against those libraries' update equations written out here in float32, on
per-step spike trains; warnings and refusals name the node. (tests/test_nir_libs.py runs the libraries themselves.)"""
import nir
import numpy as np
import pytest
import torch

from spikeforge import simulator
from spikeforge.cli import main
from spikeforge.interop.nir_import import NirImportError, NirImportWarning, from_nir

T = 16
f32 = np.float32


def _graph(neurons, n_in=10, sizes=(14, 5), seed=0):
    """Input -> Affine -> neuron -> Affine -> neuron -> Output, layer-wide (0-d) neuron parameters."""
    rng = np.random.default_rng(seed)
    nodes = {"input": nir.Input(np.array([n_in]))}
    prev, edges, last = n_in, [], "input"
    for i, (size, neuron) in enumerate(zip(sizes, neurons)):
        nodes[f"fc{i}"] = nir.Affine(rng.normal(0.15, 0.5, (size, prev)).astype(f32),
                                     rng.normal(0, .1, size).astype(f32))
        nodes[f"n{i}"] = neuron
        edges += [(last, f"fc{i}"), (f"fc{i}", f"n{i}")]
        last, prev = f"n{i}", size
    nodes["output"] = nir.Output(np.array([prev]))
    edges.append((last, "output"))
    return nir.NIRGraph(nodes, edges, type_check=False)


def _reference(graph, x, step):
    """Per-step spikes of the two neuron layers; `step(node, v, current) -> (v, spikes)` is the tool's update."""
    v, out = {}, {"n0": [], "n1": []}
    for t in range(T):
        h = torch.as_tensor(x[:, t])
        for name in ("fc0", "n0", "fc1", "n1"):
            node = graph.nodes[name]
            if name.startswith("fc"):
                h = h @ torch.as_tensor(node.weight).T + torch.as_tensor(node.bias)
            else:
                v[name], h = step(node, v.get(name), h)
                out[name].append(h)
    return {k: torch.stack(s, 1).numpy() for k, s in out.items()}


def _mismatches(net, graph, x, step):
    ref = _reference(graph, x, step)
    res = simulator.run(net, x, T, record=["n0", "n1"])
    for name, spikes in ref.items():
        assert 0 < spikes.sum() < spikes.size, name  # fires, not always
    return {name: int((res.spikes[name].reshape(spikes.shape) != spikes).sum()) for name, spikes in ref.items()}


def _trains(n, seed=1):
    return (np.random.default_rng(seed).uniform(size=(12, T, n)) < 0.35).astype(f32)


def test_snntorch_convention_equals_the_leaky_update_with_layer_wide_beta():
    """snnTorch's Leaky (reset to zero): mem = β·mem + I, spike when mem > θ; export: τ = dt/(1-β), r = τ/dt."""
    dt, betas, thetas = 1e-4, (f32(0.8), f32(0.95)), (f32(0.6), f32(1.0))

    def lif(beta, theta):
        tau = f32(dt) / (f32(1) - beta)
        return nir.LIF(tau=np.array(tau), r=np.array(tau / f32(dt)), v_leak=np.array(f32(0)),
                       v_threshold=np.array(theta), v_reset=np.array(f32(0)))
    graph = _graph([lif(b, th) for b, th in zip(betas, thetas)])

    def leaky(node, mem, current):
        beta = dict(zip(("n0", "n1"), betas))[[k for k, n in graph.nodes.items() if n is node][0]]
        mem = torch.zeros_like(current) if mem is None else mem
        mem = torch.tensor(beta) * mem + current
        spk = (mem > torch.tensor(node.v_threshold)).float()
        return mem * (1 - spk), spk
    net = from_nir(graph, convention="snntorch")  # dt 1e-4 by default
    assert [p.size for p in net.populations] == [10, 14, 5, 5]  # 0-d parameters broadcast over the layer
    np.testing.assert_array_equal(net.populations[1].decay, betas[0])  # snnTorch's own β, to the bit
    assert net.projections[0].weight.tobytes() == graph.nodes["fc0"].weight.tobytes()  # gain exactly 1
    assert _mismatches(net, graph, _trains(10), leaky) == {"n0": 0, "n1": 0}


def test_cli_imports_an_snntorch_graph_and_simulates_its_spike_train_file(tmp_path, capsys):
    """import-nir --convention snntorch, then simulate --input with (N, T, *shape) 0/1 frames: the readout counts
    the output layer's spikes, equal to snnTorch's update written out; input spikes cost synaptic operations."""
    import json

    dt, beta = 1e-4, f32(0.9)
    tau = f32(dt) / (f32(1) - beta)
    lif = nir.LIF(tau=np.array(tau), r=np.array(tau / f32(dt)), v_leak=np.array(f32(0)),
                  v_threshold=np.array(f32(0.8)), v_reset=np.array(f32(0)))
    graph = _graph([lif, lif])
    nir.write(tmp_path / "g.nir", graph, compression=None)  # 0-d parameters: nir's gzip refuses them
    assert main(["import-nir", str(tmp_path / "g.nir"), str(tmp_path / "g.h5"), "--convention", "snntorch"]) == 0
    x = _trains(10, seed=4)
    ref = _reference(graph, x, lambda node, mem, i: _leaky_step(beta, node, mem, i))
    y = ref["n1"].sum(1).argmax(1)
    np.savez(tmp_path / "frames.npz", x=x, y=y)
    capsys.readouterr()
    assert main(["simulate", str(tmp_path / "g.h5"), "--input", str(tmp_path / "frames.npz"), "--x-key", "x",
                 "--y-key", "y", "--T", str(T), "--out", str(tmp_path / "run.npz")]) == 0
    summary = json.loads((tmp_path / "run.json").read_text())
    assert summary["accuracy"] == 1.0 and summary["totals"]["macs"] == 0
    with np.load(tmp_path / "run.npz") as run:
        np.testing.assert_allclose(run["output"] * T, ref["n1"].sum(1))
    assert 0 < ref["n1"].sum() < ref["n1"].size


def _leaky_step(beta, node, mem, current):
    mem = torch.zeros_like(current) if mem is None else mem
    mem = torch.tensor(beta) * mem + current
    spk = (mem > torch.tensor(node.v_threshold)).float()
    return mem * (1 - spk), spk


def test_snntorch_leaky_layers_mixing_beta_1_with_leaky_neurons_and_beta_0_import():
    """A Leaky layer whose β is 1 for some neurons (snnTorch writes τ = r = inf there) and below 1 for others
    imports as one lif layer (it was refused: "split the layer"), and β = 0 (τ = dt: dt/τ = 1) as decay 0, a
    neuron that keeps nothing from the last step (it was refused with a hint to pass a smaller dt, which would
    describe another network); both give the Leaky update's spikes."""
    dt = 1e-4
    beta0 = np.where(np.arange(14) % 2 == 0, f32(1.0), f32(0.85)).astype(f32)
    with np.errstate(divide="ignore"):
        tau0 = (f32(dt) / (f32(1) - beta0)).astype(f32)
    mixed = nir.LIF(tau=tau0, r=tau0 / f32(dt), v_leak=np.zeros(14, f32), v_threshold=np.full(14, 0.9, f32),
                    v_reset=np.zeros(14, f32))
    memoryless = nir.LIF(tau=np.full(5, f32(dt)), r=np.ones(5, f32), v_leak=np.zeros(5, f32),
                         v_threshold=np.full(5, 0.5, f32), v_reset=np.zeros(5, f32))
    graph = _graph([mixed, memoryless])
    net = from_nir(graph, convention="snntorch")
    np.testing.assert_array_equal(net.populations[1].decay, beta0)
    np.testing.assert_array_equal(net.populations[2].decay, 0.0)
    betas = {"n0": beta0, "n1": f32(0.0)}

    def leaky(node, mem, current):
        name = [k for k, n in graph.nodes.items() if n is node][0]
        return _leaky_step(betas[name], node, mem, current)
    assert _mismatches(net, graph, _trains(10), leaky) == {"n0": 0, "n1": 0}


def test_norse_convention_equals_lifbox_and_iaf_updates():
    """Norse: LIFBox v += dt·τ_mem_inv·(v_leak - v + I) from v = v_leak, written as τ = dt/τ_mem_inv; IAF v += I;
    spike when v > θ, reset to 0."""
    dt, inv, v_leak = 1e-3, f32(150.0), f32(0.1)
    graph = _graph([nir.LIF(tau=np.array(f32(dt) / inv), r=np.array(f32(1)), v_leak=np.array(v_leak),
                            v_threshold=np.array(f32(0.4)), v_reset=np.array(f32(0))),
                    nir.IF(r=np.array(f32(1)), v_threshold=np.array(f32(1.2)), v_reset=np.array(f32(0)))])

    def norse_step(node, v, current):
        if isinstance(node, nir.LIF):
            v = torch.full_like(current, float(v_leak)) if v is None else v
            v = v + f32(dt) * inv * (current + v_leak - v)
        else:
            v = (torch.zeros_like(current) if v is None else v) + current
        z = (v > torch.tensor(node.v_threshold)).float()
        return v * (1 - z), z
    net = from_nir(graph, convention="norse")
    assert net.attrs["nir_dt"] == 1e-3 and [p.model for p in net.populations[1:3]] == ["lif", "if"]
    np.testing.assert_allclose(net.populations[1].decay, 1 - dt * inv, rtol=1e-6)
    np.testing.assert_allclose(net.populations[1].v_init, v_leak)
    assert _mismatches(net, graph, _trains(10), norse_step) == {"n0": 0, "n1": 0}
    with pytest.raises(NirImportError, match=r"node 'n0': tau \S+ < dt 1.0 at neuron 0.*--convention snntorch"):
        from_nir(graph)  # read as NIR equations at dt = 1


def _lif(n=14, **kw):
    p = {"tau": np.full(n, 5e-4, f32), "r": np.full(n, 5.0, f32), "v_leak": np.zeros(n, f32),
         "v_threshold": np.ones(n, f32), "v_reset": np.zeros(n, f32)}
    p.update(kw)
    return nir.LIF(**p)


def _if(n=5, **kw):
    p = {"r": np.ones(n, f32), "v_threshold": np.ones(n, f32), "v_reset": np.zeros(n, f32)}
    p.update(kw)
    return nir.IF(**p)


@pytest.mark.parametrize("convention, neurons, dt, message", [
    ("norse", [_lif(tau=np.full(14, 1e-5, f32), r=np.ones(14, f32)), _if(r=np.full(5, 2.0, f32))], None,
     r"node 'n1': r = 2.0 \(Norse writes r = 1"),
    ("snntorch", [_lif(r=np.full(14, 2.0, f32)), _if()], None, r"node 'n0': r·dt/tau = 0.4 at neuron 0, not 1"),
    ("nir", [_lif(), _if(r=np.array([1, -1, 1, 1, 1], f32))], 1e-4, r"node 'n1': r = -1.0 < 0 at neuron 1"),
    # snnTorch writes no IF node: a sinabs IF graph read with its dt 1e-4 would integrate 1e-4 of each input
    ("snntorch", [_lif(tau=np.full(14, 1e-3, f32), r=np.full(14, 10.0, f32)), _if()], None,
     r"node 'n1': an IF node under --convention snntorch integrates dt·r = 0.0001 of its input"),
])
@pytest.mark.filterwarnings("ignore:.*an IF node under --convention snntorch")
def test_suspicious_values_warn_naming_the_node(convention, neurons, dt, message):
    with pytest.warns(NirImportWarning, match=message):
        from_nir(_graph(neurons), dt=dt, convention=convention)


def test_cli_prints_warnings_as_one_line_and_refuses_threshold_zero(tmp_path, capsys):
    graph = _graph([_lif(r=np.full(14, 2.0, f32)), _if()])
    graph.metadata = {"dt": 2e-4}
    nir.write(tmp_path / "g.nir", graph)
    assert main(["import-nir", str(tmp_path / "g.nir"), str(tmp_path / "g.h5"), "--convention", "snntorch",
                 "--dt", "1e-4"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert "spikeforge import-nir: warning: dt 0.0001 given, the graph's metadata says 0.0002: using 0.0001" in err
    assert any(line.startswith("spikeforge import-nir: warning: node 'n0': r·dt/tau = 0.4") for line in err)
    bad = _graph([_lif(), _if(v_threshold=np.array([1, 1, 0, 1, 1], f32))])
    nir.write(tmp_path / "bad.nir", bad)
    assert main(["import-nir", str(tmp_path / "bad.nir"), str(tmp_path / "bad.h5"), "--dt", "1e-4"]) == 2
    err = capsys.readouterr().err
    assert "node 'n1': v_threshold 0.0 at neuron 2" in err and not (tmp_path / "bad.h5").exists()
    assert main(["import-nir", str(tmp_path / "g.nir"), str(tmp_path / "x.h5"), "--convention", "brian"]) == 2
    assert "--convention: invalid choice: 'brian'" in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore:.*an IF node under --convention snntorch")
def test_parameters_of_different_shapes_are_refused_and_a_batch_dimension_is_dropped():
    g = _graph([_lif(), _if()])
    g.nodes["n0"].tau = np.full(7, 5e-4, f32)  # tau for 7 neurons, the rest for 14 (nir's constructor refuses it)
    with pytest.raises(NirImportError, match=r"node 'n0': parameters of different shapes \(tau \(7,\), r \(14,\)"):
        from_nir(g, dt=1e-4)
    g = _graph([_lif(), _if()])
    g.nodes["input"] = nir.Input(np.array([1, 10]))  # snnTorch's export without ignore_dims=[0]
    with pytest.warns(NirImportWarning, match=r"input shape \(1, 10\) read as \(10,\)"):
        net = from_nir(g, convention="snntorch")
    assert net.populations[0].shape == (10,)
    with pytest.raises(NirImportError, match="convention 'brian'"):
        from_nir(g, convention="brian")
