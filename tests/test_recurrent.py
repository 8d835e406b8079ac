"""Current-based LIF neurons (cuba) and recurrent projections (format 1.12): the numba engine, the torch reference
(converter.spiking) and the torch backend (conftest's cross-check) give the same spikes; synaptic operations of a
recurrent projection are counted in the step its events are sent; files round-trip and bad ones are refused naming
the part; NIR graphs with CubaLIF nodes and recurrent edges import and run as the NIR equations say."""
import nir
import numpy as np
import pytest
import torch

from spikeforge import simulator
from spikeforge.converter.mapping import map_network, one_population_per_core
from spikeforge.converter.spiking import SpikingNetwork
from spikeforge.converter.writer import write_network
from spikeforge.hwmodels.targets import load_target
from spikeforge.interop.nir_import import NirImportError, from_nir
from spikeforge.simulator import Network, Population, Projection
from spikeforge.simulator.fileformat import NetworkFileError, validate_network

T = 30


def _recurrent_net(order="current_first", refractory=1, reset="zero", n_in=6, n_h=10, n_o=3, seed=0):
    """input -dense-> h (cuba, per-neuron β and α) with a dense recurrent projection onto itself (delay 1)
    -dense-> readout."""
    rng = np.random.default_rng(seed)
    pops = [Population.make("in", "input", (n_in,)),
            Population.make("h", "cuba", (n_h,), 1.0, 0.0, 0.0, reset=reset, decay=rng.uniform(0.6, 0.95, n_h),
                            syn_decay=rng.uniform(0.3, 0.9, n_h), refractory=refractory, synapse_order=order,
                            spike_value="unit", threshold_test="gt"),
            Population.make("o", "readout", (n_o,))]
    projs = [Projection("w", "dense", "in", "h", rng.normal(0, 0.8, (n_h, n_in)).astype(np.float32)),
             Projection("r", "dense", "h", "h", rng.normal(0, 0.5, (n_h, n_h)).astype(np.float32), delay=1),
             Projection("o", "dense", "h", "o", rng.normal(0, 0.5, (n_o, n_h)).astype(np.float32))]
    return Network(pops, projs, *one_population_per_core(pops, projs), {})


def _hand_run(net, x):
    """The cuba equations written out for _recurrent_net: spikes (B, T, n_h) and the readout mean."""
    h = net.populations[1]
    w, r, o = (q.weight.astype(np.float64) for q in net.projections)
    beta, alpha = h.decay.astype(np.float64), h.syn_decay.astype(np.float64)
    b, n = len(x), h.size
    v, i, hold, z = np.zeros((b, n)), np.zeros((b, n)), np.zeros((b, n), int), np.zeros((b, n))
    spikes, acc = [], 0.0
    for t in range(x.shape[1]):
        cur = x[:, t] @ w.T + z @ r.T  # last step's spikes come back through r
        if h.synapse_order == "membrane_first":
            m = beta * v + i
            i = alpha * i + cur
        else:
            i = alpha * i + cur
            m = beta * v + i
        held = hold > 0
        fired = (m > 1.0) & ~held
        v = np.where(held, v, np.where(fired, 0.0, m))
        hold = np.where(held, hold - 1, np.where(fired, h.refractory, 0))
        z = fired.astype(np.float64)
        spikes.append(z)
        acc = acc + z @ o.T
    return np.stack(spikes, 1), acc / x.shape[1]


@pytest.mark.parametrize("order, refractory", [("current_first", 1), ("membrane_first", 0), ("current_first", 3)])
def test_cuba_with_recurrence_matches_its_equations_the_reference_and_hand_counted_synops(order, refractory):
    net = _recurrent_net(order, refractory)
    x = (np.random.default_rng(1).random((4, T, 6)) < 0.4).astype(np.float64)
    res = simulator.run(net, x, T, record=["h"], record_counts=True)
    spikes, out = _hand_run(net, x)
    assert 0 < spikes.sum() < spikes.size / 2
    np.testing.assert_array_equal(res.spikes["h"].reshape(spikes.shape), spikes)
    np.testing.assert_allclose(res.output, out, rtol=1e-12)
    _, rec = SpikingNetwork(net)(torch.as_tensor(x), T, record_spikes=True)
    np.testing.assert_array_equal(rec.spikes["h"].numpy().transpose(1, 0, 2), spikes)
    # every input spike reaches 10 neurons, every h spike 10 (recurrent, the last step's included) + 3 (readout)
    assert res.total("synops") == x.sum() * 10 + spikes.sum() * 13


def test_refractory_hold_drops_the_membranes_input_but_not_the_currents():
    """One neuron, constant input 1: α = 0.5, β = 1, θ = 2.5, zero reset, held 2 steps after each spike. The
    current climbs 1, 1.5, 1.75, ...; the membrane m = v + i fires at step 1 (1 + 1.5 = 2.5 >= θ), is held at 0
    for steps 2 and 3 while the current goes on (1.75, 1.875), then restarts from it: 1.9375, then 1.9375 + 1.96875
    fires at step 5."""
    pops = [Population.make("in", "input", (1,)),
            Population.make("h", "cuba", (1,), 2.5, 0.0, 0.0, reset="zero", decay=1.0, syn_decay=0.5, refractory=2),
            Population.make("o", "readout", (1,))]
    projs = [Projection("w", "dense", "in", "h", np.ones((1, 1), np.float32)),
             Projection("o", "dense", "h", "o", np.ones((1, 1), np.float32))]
    net = Network(pops, projs, *one_population_per_core(pops, projs), {})
    res = simulator.run(net, np.ones((1, 1)), 8, record=["h"], trace=[("h", 0)])
    assert res.spikes["h"].reshape(-1).tolist() == [0, 1, 0, 0, 0, 1, 0, 0]
    np.testing.assert_array_equal(res.traces.reshape(-1), [1.0, 0.0, 0.0, 0.0, 1.9375, 0.0, 0.0, 0.0])


def test_cuba_recurrent_file_round_trips_and_maps_onto_chips(tmp_path):
    net = _recurrent_net("membrane_first", 2)
    write_network(net, tmp_path / "r.h5")
    back = simulator.load_network(tmp_path / "r.h5")
    h = back.populations[1]
    assert (h.model, h.synapse_order, h.refractory) == ("cuba", "membrane_first", 2)
    np.testing.assert_array_equal(h.syn_decay, net.populations[1].syn_decay)
    assert back.projections[1].delay == 1 and back.recurrent(back.projections[1])
    x = (np.random.default_rng(2).random((2, T, 6)) < 0.4).astype(np.float64)
    ref = simulator.run(net, x, T, record_counts=True)
    for target in ("loihi", "truenorth"):
        mapped = map_network(back, load_target(target))
        res = simulator.run(mapped, x, T, record_counts=True)
        np.testing.assert_array_equal(res.spike_counts["h"], ref.spike_counts["h"])
        assert res.total("synops") == ref.total("synops")


@pytest.mark.parametrize("change, message", [
    (lambda n: setattr(n.projections[1], "delay", 0), r"projections/r: .*recurrent projection.* delay of at least 1"),
    (lambda n: setattr(n.populations[1], "syn_decay", np.full(10, 1.5, np.float32)), "syn_decay.*must be in"),
    (lambda n: setattr(n.populations[1], "synapse_order", "sideways"), "unknown synapse_order 'sideways'"),
    (lambda n: setattr(n.populations[1], "refractory", -1), "refractory -1 must be an integer"),
    (lambda n: setattr(n.populations[1], "model", "lif"), "apply to cuba neurons only"),
    (lambda n: n.projections.append(Projection("back", "dense", "o", "h", np.ones((10, 3), np.float32), delay=1)),
     "not a dense projection from 'readout'"),
])
def test_bad_cuba_and_recurrent_parts_are_refused_naming_them(change, message):
    net = _recurrent_net()
    change(net)
    with pytest.raises(NetworkFileError, match=message):
        validate_network(net)


# --------------------------------------------------------------------------- NIR

def _graph(nodes, edges):
    return nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)


def test_nir_recurrent_edge_imports_as_a_projection_one_step_late():
    """input -> a (Affine 4->3) -> n1 (IF) -> rec (Affine 3->3) -> n1, and n1 -> out (Affine 3->2) -> Output:
    n1's current is a(x) + rec(z(t - 1)), the recurrent bias included from the first step."""
    rng = np.random.default_rng(3)
    wa, ba = rng.normal(0, 1, (3, 4)), rng.normal(0, 0.2, 3)
    wr, br = rng.normal(0, 0.6, (3, 3)), rng.normal(0, 0.2, 3)
    wo = rng.normal(0, 1, (2, 3))
    g = _graph({"input": nir.Input(input_type={"input": np.array([4])}), "a": nir.Affine(weight=wa, bias=ba),
                "n1": nir.IF(r=np.ones(3), v_threshold=np.full(3, 0.8)), "rec": nir.Affine(weight=wr, bias=br),
                "out": nir.Linear(weight=wo), "output": nir.Output(output_type={"output": np.array([2])})},
               [("input", "a"), ("a", "n1"), ("n1", "rec"), ("rec", "n1"), ("n1", "out"), ("out", "output")])
    net = from_nir(g)
    recurrent = [q for q in net.projections if net.recurrent(q)]
    assert [(q.name, q.source, q.target, q.delay) for q in recurrent] == [("rec", "n1", "n1", 1)]
    x = rng.uniform(0, 1, (5, 4))
    res = simulator.run(net, x, T, record=["n1"])
    v, z, spikes = np.zeros((5, 3)), np.zeros((5, 3)), []
    for _ in range(T):  # the NIR equations at dt = 1: v += r·I; spike when v > θ; v = 0 after
        v = v + x @ wa.T + ba + z @ wr.T + br
        fired = v > 0.8
        v, z = np.where(fired, 0.0, v), fired.astype(float)
        spikes.append(z)
    spikes = np.stack(spikes, 1)
    assert 0 < spikes.sum() < spikes.size
    np.testing.assert_array_equal(res.spikes["n1"].reshape(spikes.shape), spikes)


def test_nir_cubalif_imports_with_its_current_and_gains():
    """A CubaLIF at dt = 1 (τ_syn 2, w_in 2: α = 0.5, gain 1; τ_mem 4, r 2: β = 0.75, gain 0.5): forward Euler
    with the current updated first."""
    rng = np.random.default_rng(4)
    w = rng.normal(0, 1.5, (3, 4))
    node = nir.CubaLIF(tau_syn=np.full(3, 2.0), tau_mem=np.full(3, 4.0), r=np.full(3, 2.0), v_leak=np.zeros(3),
                       v_threshold=np.full(3, 0.5), w_in=np.full(3, 2.0))
    g = _graph({"input": nir.Input(input_type={"input": np.array([4])}), "w": nir.Linear(weight=w), "c": node,
                "output": nir.Output(output_type={"output": np.array([3])})},
               [("input", "w"), ("w", "c"), ("c", "output")])
    net = from_nir(g)
    c = net.populations[1]
    assert (c.model, c.refractory, c.synapse_order) == ("cuba", 0, "current_first")
    np.testing.assert_array_equal(c.decay, 0.75)
    np.testing.assert_array_equal(c.syn_decay, 0.5)
    x = (rng.random((6, T, 4)) < 0.5).astype(np.float64)
    res = simulator.run(net, x, T, record=["c"])
    i, v, spikes = np.zeros((6, 3)), np.zeros((6, 3)), []
    for t in range(T):
        i = i + 0.5 * (-i + 2.0 * (x[:, t] @ w.T))
        v = v + 0.25 * (-v + 2.0 * i)
        fired = v > 0.5
        v = np.where(fired, 0.0, v)
        spikes.append(fired)
    spikes = np.stack(spikes, 1)
    assert 0 < spikes.sum() < spikes.size
    np.testing.assert_array_equal(res.spikes["c"].reshape(spikes.shape), spikes)


def test_nir_loop_of_linear_nodes_and_leaky_cubalif_are_refused_naming_them():
    loop = _graph({"input": nir.Input(input_type={"input": np.array([2])}), "a": nir.Linear(weight=np.eye(2)),
                   "b": nir.Linear(weight=np.eye(2)), "n": nir.IF(r=np.ones(2), v_threshold=np.ones(2)),
                   "output": nir.Output(output_type={"output": np.array([2])})},
                  [("input", "a"), ("a", "b"), ("b", "a"), ("b", "n"), ("n", "output")])
    with pytest.raises(NirImportError, match="loop of linear nodes (a -> b -> a|b -> a -> b)"):
        from_nir(loop)
    leaky = _graph({"input": nir.Input(input_type={"input": np.array([2])}), "w": nir.Linear(weight=np.eye(2)),
                    "c": nir.CubaLIF(tau_syn=np.full(2, 2.0), tau_mem=np.full(2, 4.0), r=np.ones(2),
                                     v_leak=np.array([0.0, 0.5]), v_threshold=np.ones(2), w_in=np.ones(2)),
                    "output": nir.Output(output_type={"output": np.array([2])})},
                   [("input", "w"), ("w", "c"), ("c", "output")])
    with pytest.raises(NirImportError, match="node 'c': v_leak 0.5 at neuron 1"):
        from_nir(leaky)


@pytest.mark.parametrize("order, refractory, delay", [("current_first", 1, 1), ("membrane_first", 2, 3)])
def test_cuba_recurrent_network_round_trips_through_nir(order, refractory, delay, tmp_path):
    """export-nir writes a CubaLIF (gains 1 at dt = 1) and the recurrent edge back to its neuron (a longer delay as a
    Delay node); import-nir rebuilds the same network, spike for spike."""
    from spikeforge.cli import main

    net = _recurrent_net(order, refractory)
    net.projections[1].delay = delay
    write_network(net, tmp_path / "a.h5")
    assert main(["export-nir", str(tmp_path / "a.h5"), str(tmp_path / "a.nir")]) == 0
    graph = nir.read(tmp_path / "a.nir")
    assert type(graph.nodes["h"]).__name__ == "CubaLIF"
    assert main(["import-nir", str(tmp_path / "a.nir"), str(tmp_path / "b.h5")]) == 0
    back = simulator.load_network(tmp_path / "b.h5")
    h, h2 = net.populations[1], back.populations[1]
    assert (h2.model, h2.synapse_order, h2.refractory) == ("cuba", order, refractory)
    for field in ("decay", "syn_decay", "threshold"):
        np.testing.assert_array_equal(getattr(h2, field), getattr(h, field))
    assert [(q.source, q.target, q.delay) for q in back.projections if back.recurrent(q)] == [("h", "h", delay)]
    x = (np.random.default_rng(5).random((3, T, 6)) < 0.4).astype(np.float64)
    a, b = simulator.run(net, x, T, record_counts=True), simulator.run(back, x, T, record_counts=True)
    assert a.total("spikes") > 0
    np.testing.assert_array_equal(a.spike_counts["h"], b.spike_counts["h"])
    np.testing.assert_array_equal(a.output, b.output)


def test_an_hdf5_file_that_is_not_a_network_says_what_it_is_and_which_importer_reads_it(tmp_path, capsys):
    """A NIR graph or a lava-dl netx file given where a network file goes: exit 2 naming the file, what it looks
    like and what to do (it said "missing attribute 'format'")."""
    import h5py

    from spikeforge.cli import main

    graph = _graph({"input": nir.Input(input_type={"input": np.array([2])}), "w": nir.Linear(weight=np.eye(2)),
                    "n": nir.IF(r=np.ones(2), v_threshold=np.ones(2)),
                    "output": nir.Output(output_type={"output": np.array([2])})},
                   [("input", "w"), ("w", "n"), ("n", "output")])
    nir.write(tmp_path / "model.nir", graph)
    with h5py.File(tmp_path / "model.net", "w") as f:  # netx: layers in groups "layer/0", "layer/1", ...
        f.create_group("layer/0").attrs["type"] = "input"
    for name, words in (("model.nir", ["is a NIR graph file", f"spikeforge import-nir {tmp_path / 'model.nir'}"]),
                        ("model.net", ["lava-dl netx network", "spikeforge import-lava"])):
        assert main(["inspect", str(tmp_path / name)]) == 2
        err = capsys.readouterr().err
        assert f"{tmp_path / name}: not a spikeforge network file" in err, err
        assert all(w in err for w in words) and "Traceback" not in err, err


def test_inspect_marks_a_recurrent_projection_and_its_delay(tmp_path, capsys):
    from spikeforge.cli import main

    net = _recurrent_net()
    net.projections[1].delay = 2
    write_network(net, tmp_path / "r.h5")
    assert main(["inspect", str(tmp_path / "r.h5")]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.strip()}
    assert lines["r"].endswith("(recurrent, delay 2)") and "recurrent" not in lines["w"]


def test_export_nir_help_lists_every_model_without_a_nir_node_and_import_nir_prints_what_it_wrote(tmp_path,
                                                                                                 capsys):
    """Issue 37: `export-nir --help` named group, signed and multi-threshold neurons and EC nodes but not spiking
    max pooling; `import-nir` printed only the file name, where `convert` prints the counts."""
    from spikeforge.cli import main
    from spikeforge.interop.nir_export import NO_NIR_EQUIVALENT

    assert main(["export-nir", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "maxpool" in NO_NIR_EQUIVALENT and all(model in text for model in NO_NIR_EQUIVALENT), text
    net = _recurrent_net()
    write_network(net, tmp_path / "a.h5")
    assert main(["export-nir", str(tmp_path / "a.h5"), str(tmp_path / "a.nir")]) == 0
    capsys.readouterr()
    assert main(["import-nir", str(tmp_path / "a.nir"), str(tmp_path / "b.h5")]) == 0
    assert f"wrote {tmp_path / 'b.h5'}: 3 populations, 3 projections (1 recurrent), 3 cores" in capsys.readouterr().out
