"""NIR export / import: exact round trips, foreign graphs against a NIR reference, clear refusals."""
import nir
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from spikeforge import simulator
from spikeforge.cli import main
from spikeforge.converter import convert, write_network
from spikeforge.converter.mapping import one_population_per_core
from spikeforge.interop.nir_export import NirExportError, to_nir
from spikeforge.interop.nir_import import NirImportError, from_nir
from spikeforge.simulator import Network, Population, Projection


def _assert_same_network(a, b):
    assert [p.name for p in a.populations] == [p.name for p in b.populations]
    for p, q in zip(a.populations, b.populations):
        assert (p.model, tuple(p.shape), p.reset, p.spike_value, p.threshold_test) == \
               (q.model, tuple(q.shape), q.reset, q.spike_value, q.threshold_test), p.name
        for field in ("threshold", "v_init", "bias", "decay"):
            x, y = getattr(p, field), getattr(q, field)
            assert (x is None) == (y is None), (p.name, field)
            if x is not None:
                np.testing.assert_array_equal(x, y, err_msg=f"{p.name}/{field}")
    pa, pb = {q.name: q for q in a.projections}, {q.name: q for q in b.projections}
    assert set(pa) == set(pb)
    for name, q in pa.items():
        r = pb[name]
        assert (q.kind, q.source, q.target) == (r.kind, r.source, r.target), name
        if q.weight is not None:
            np.testing.assert_array_equal(q.weight, r.weight, err_msg=name)


def _assert_same_run(a, b, x, T):
    ra, rb = simulator.run(a, x, T, record_counts=True), simulator.run(b, x, T, record_counts=True)
    np.testing.assert_array_equal(ra.output, rb.output)
    for name, counts in ra.spike_counts.items():
        np.testing.assert_array_equal(counts, rb.spike_counts[name], err_msg=name)
    return ra


@pytest.mark.parametrize("model", ["mlp", "resnet"])
def test_converted_networks_round_trip_through_nir_files(model, trained_mlp, trained_resnet, digits, tmp_path):
    net = convert({"mlp": trained_mlp, "resnet": trained_resnet}[model], [digits[0][:256]], norm="percentile")
    path = write_network(net, tmp_path / "net.h5")
    assert main(["export-nir", str(path), str(tmp_path / "net.nir")]) == 0
    graph = nir.read(tmp_path / "net.nir")  # a valid NIR file, type-checked by the nir package
    assert {"IF", "Scale", "I", "Input", "Output"} <= {type(n).__name__ for n in graph.nodes.values()}
    assert main(["import-nir", str(tmp_path / "net.nir"), str(tmp_path / "back.h5")]) == 0
    back = simulator.load_network(tmp_path / "back.h5")
    _assert_same_network(net, back)
    res = _assert_same_run(net, back, digits[2][:40].numpy(), 8)
    assert res.total("spikes") > 0


def test_every_nir_mappable_part_round_trips():
    """avgpool, reshaping identity, sparse (comes back dense), lif with unit spikes and the > test, zero reset."""
    rng = np.random.default_rng(0)
    pops = [Population.make("in", "input", (2, 8, 8)),
            Population.make("c", "if", (4, 8, 8), 0.7, 0.35, np.repeat(rng.normal(0, .05, 4), 64)),
            Population.make("p", "lif", (4, 4, 4), 0.5, 0.0, reset="zero", decay=rng.uniform(0.6, 1.0, 64),
                            spike_value="unit", threshold_test="gt"),
            Population.make("f", "if", (64,), 0.4, 0.2),
            Population.make("h", "lif", (12,), 0.6, 0.3, decay=0.9),
            Population.make("out", "readout", (3,), bias=rng.normal(0, 0.1, 3))]
    nnz_rows = rng.integers(0, 4, 64)
    indptr = np.concatenate([[0], np.cumsum(nnz_rows)]).astype(np.int64)
    indices = np.concatenate([rng.choice(12, k, replace=False) for k in nnz_rows]).astype(np.int32)
    projs = [Projection("conv", "conv2d", "in", "c", rng.normal(0, .5, (4, 2, 3, 3)).astype(np.float32),
                        stride=(1, 1), padding=(1, 1)),
             Projection("pool", "avgpool", "c", "p", kernel=(2, 2), stride=(2, 2)),
             Projection("flat", "identity", "p", "f"),
             Projection("sp", "sparse", "f", "h", rng.normal(.1, .4, indptr[-1]).astype(np.float32), indptr, indices),
             Projection("fc", "dense", "h", "out", rng.normal(0, .5, (3, 12)).astype(np.float32))]
    net = Network(pops, projs, *one_population_per_core(pops, projs), {"numeric_mode": "float32"})
    simulator.validate_network(net)
    back = from_nir(to_nir(net))
    assert back.projections[3].kind == "dense"  # NIR has no sparse node
    back.projections[3] = projs[3]
    _assert_same_network(net, back)
    res = _assert_same_run(net, back, rng.uniform(0, 1, (6, 2, 8, 8)), 16)
    assert all(res.spike_counts[p].sum() > 0 for p in ("c", "p", "f", "h"))
    pops[3].bias[:] = 0.1  # fed by a reshape only: no Affine / Conv2d node to carry a bias
    with pytest.raises(NirExportError, match="population 'f': its bias has no NIR form"):
        to_nir(net)


# --------------------------------------------------------------------------- graphs in other tools' conventions

def _snntorch_style_graph(rng):
    """Conv -> LIF -> SumPool -> Flatten (torch's start_dim=1) -> Affine -> IF -> Affine -> I, as snnTorch and
    Sinabs write NIR: LIF(tau = dt/(1-beta), r = tau/dt), unit spikes, reset to 0, no spikeforge metadata."""
    beta = 0.75
    tau = np.full((4, 8, 8), 1 / (1 - beta))
    nodes = {
        "input": nir.Input(input_type={"input": np.array([2, 8, 8])}),
        "conv": nir.Conv2d(input_shape=(8, 8), weight=rng.normal(0, .6, (4, 2, 3, 3)), stride=1, padding=1,
                           dilation=1, groups=1, bias=rng.normal(0.1, .1, 4)),
        "lif": nir.LIF(tau=tau, r=tau.copy(), v_leak=np.zeros((4, 8, 8)), v_threshold=np.full((4, 8, 8), 1.0),
                       v_reset=np.zeros((4, 8, 8))),
        "pool": nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0])),
        "flat": nir.Flatten(input_type={"input": np.array([4, 4, 4])}, start_dim=1),
        "fc1": nir.Affine(weight=rng.normal(0.05, .3, (16, 64)), bias=rng.normal(0, .1, 16)),
        "if": nir.IF(r=np.full(16, 0.5), v_threshold=np.full(16, 0.75), v_reset=np.zeros(16)),
        "fc2": nir.Affine(weight=rng.normal(0, .5, (5, 16)), bias=np.zeros(5)),
        "integrator": nir.I(r=np.ones(5)),
        "output": nir.Output(output_type={"output": np.array([5])}),
    }
    _float32(nodes)  # torch-based tools write float32 parameters
    names = list(nodes)
    edges = list(zip(names[:-1], names[1:]))
    return nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)


def _float32(nodes):
    for node in nodes.values():
        for key, value in vars(node).items():
            if isinstance(value, np.ndarray) and value.dtype == np.float64 and key not in ("input_type", "output_type"):
                setattr(node, key, value.astype(np.float32))


def _nir_reference(graph, x, T, dt=1.0):
    """Discrete-time reading of a sequential NIR graph, written from the NIR equations (forward Euler at dt,
    spike when v > v_threshold, reset to v_reset, unit spikes); float64. Returns spike counts per neuron node and
    the final integrator state."""
    order, nxt = [], dict(graph.edges)
    node = "input"
    while node in nxt:
        node = nxt[node]
        order.append(node)
    v, counts = {}, {}
    t64 = lambda a: torch.as_tensor(np.asarray(a, np.float64))  # noqa: E731
    out = None
    for _ in range(T):
        h = torch.as_tensor(x, dtype=torch.float64)
        for name in order:
            n = graph.nodes[name]
            kind = type(n).__name__
            if kind == "Conv2d":
                h = F.conv2d(h, t64(n.weight), t64(n.bias), stride=n.stride, padding=n.padding)
            elif kind == "SumPool2d":
                h = F.avg_pool2d(h, tuple(n.kernel_size), tuple(n.stride)) * float(np.prod(n.kernel_size))
            elif kind == "Flatten":
                h = h.flatten(1)
            elif kind == "Affine":
                h = h @ t64(n.weight).T + t64(n.bias)
            elif kind == "Linear":
                h = h @ t64(n.weight).T
            elif kind in ("LIF", "IF", "I"):
                vv = v.get(name, torch.zeros_like(h))
                if kind == "LIF":
                    vv = vv + dt / t64(n.tau) * (t64(n.v_leak) - vv + t64(n.r) * h)
                else:
                    vv = vv + dt * t64(n.r) * h
                if kind == "I":
                    v[name] = h = vv
                    continue
                z = (vv > t64(n.v_threshold)).to(torch.float64)
                v[name] = torch.where(z > 0, t64(n.v_reset), vv)
                counts[name] = counts.get(name, 0) + z
                h = z
            elif kind == "Output":
                out = h
    return {k: c.numpy().reshape(len(x), -1).astype(np.int64) for k, c in counts.items()}, out.numpy()


def test_graph_in_snntorch_conventions_simulates_like_the_nir_equations(tmp_path):
    rng = np.random.default_rng(5)
    graph = _snntorch_style_graph(rng)
    nir.write(tmp_path / "foreign.nir", graph)
    assert main(["import-nir", str(tmp_path / "foreign.nir"), str(tmp_path / "net.h5"), "--target", "loihi"]) == 0
    net = simulator.load_network(tmp_path / "net.h5")
    models = {p.name: (p.model, p.reset, p.spike_value, p.threshold_test) for p in net.populations}
    assert models["lif"] == ("lif", "zero", "unit", "gt") and models["if"] == ("if", "zero", "unit", "gt")
    assert [q.kind for q in net.projections] == ["conv2d", "sparse", "dense"]  # SumPool·Flatten·Affine multiplied
    x = rng.uniform(0, 1, (8, 2, 8, 8))
    T = 12
    counts, v_final = _nir_reference(graph, x, T)
    res = simulator.run(net, x, T, record_counts=True)
    for name in ("lif", "if"):
        np.testing.assert_array_equal(res.spike_counts[name].reshape(len(x), -1), counts[name], err_msg=name)
        assert 0 < counts[name].mean() < T
    np.testing.assert_allclose(res.output * T, v_final, rtol=1e-9, atol=1e-9)  # spikeforge reports v(T) / T


def test_graph_ending_in_spiking_neurons_reads_out_their_spike_rate():
    """Input -> Affine -> LIF -> Affine -> LIF -> Output (a classifier by spike counts, as snnTorch writes it)."""
    rng = np.random.default_rng(2)
    tau1, tau2 = np.full(20, 2.0), np.full(4, 8.0)
    nodes = {"input": nir.Input(input_type={"input": np.array([10])}),
             "fc1": nir.Affine(weight=rng.normal(0.1, .5, (20, 10)), bias=np.zeros(20)),
             "lif1": nir.LIF(tau=tau1, r=tau1.copy(), v_leak=np.zeros(20), v_threshold=np.ones(20)),
             "fc2": nir.Linear(weight=rng.normal(0.2, .5, (4, 20))),
             "lif2": nir.LIF(tau=tau2, r=np.full(4, 2.0), v_leak=np.full(4, 0.5), v_threshold=np.full(4, 0.5)),
             "output": nir.Output(output_type={"output": np.array([4])})}
    _float32(nodes)
    graph = nir.NIRGraph(nodes=nodes, edges=list(zip(list(nodes)[:-1], list(nodes)[1:])))
    net = from_nir(graph)
    assert net.readout.name == "output" and net.projections[-1].kind == "identity"
    x = rng.uniform(0, 1, (16, 10))
    counts, _ = _nir_reference(graph, x, 10)
    res = simulator.run(net, x, 10, record_counts=True)
    np.testing.assert_array_equal(res.spike_counts["lif1"], counts["lif1"])
    np.testing.assert_array_equal(res.spike_counts["lif2"], counts["lif2"])
    np.testing.assert_allclose(res.output, counts["lif2"] / 10)


# --------------------------------------------------------------------------- refusals

def _chain(*nodes, shape=(4,)):
    d = {"input": nir.Input(input_type={"input": np.array(shape)})}
    d.update({f"n{i}": n for i, n in enumerate(nodes)})
    d["output"] = nir.Output(output_type={"output": np.array([2])})
    names = list(d)
    return nir.NIRGraph(nodes=d, edges=list(zip(names[:-1], names[1:])), type_check=False)


@pytest.mark.parametrize("graph, message", [
    (_chain(nir.Affine(weight=np.ones((2, 4)), bias=np.zeros(2)),
            nir.LI(tau=np.ones(2), r=np.ones(2), v_leak=np.zeros(2))), "node 'n1': LI is not supported"),
    (_chain(nir.Affine(weight=np.ones((2, 4)), bias=np.zeros(2)),
            nir.CubaLIF(tau_syn=np.full(2, 0.5), tau_mem=np.full(2, 2.0), r=np.ones(2), v_leak=np.zeros(2),
                        v_threshold=np.ones(2))), "tau_syn 0.5 at neuron 0 is below dt 1.0"),
    (_chain(nir.Affine(weight=np.ones((2, 4)), bias=np.zeros(2)),
            nir.IF(r=np.ones(2), v_threshold=np.ones(2), v_reset=np.full(2, -0.5))), "v_reset -0.5 != 0"),
    (_chain(nir.Affine(weight=np.ones((2, 4)), bias=np.zeros(2)),
            nir.LIF(tau=np.full(2, 0.5), r=np.ones(2), v_leak=np.zeros(2), v_threshold=np.ones(2))),
     "tau 0.5 < dt 1.0"),
    (_chain(nir.Affine(weight=np.ones((2, 3)), bias=np.zeros(2))), "does not take an input of 4 values"),
    (_chain(nir.Conv2d(input_shape=(4, 4), weight=np.ones((1, 1, 3, 3)), stride=1, padding=2, dilation=2,
                       groups=1, bias=np.zeros(1)), shape=(1, 4, 4)), "dilation"),
    (_chain(nir.Affine(weight=np.ones((2, 4)), bias=np.zeros(2)),
            nir.IF(r=np.ones(2), v_threshold=np.zeros(2))), "v_threshold must be > 0"),
])
def test_unmappable_nir_graphs_are_refused_naming_the_node(graph, message):
    with pytest.raises(NirImportError, match=message):
        from_nir(graph)


def test_models_without_nir_equivalent_are_refused(trained_mlp, digits):
    gn = convert(trained_mlp, [digits[0][:64]], neuron="group", tau=4)
    with pytest.raises(NirExportError, match="group neurons"):
        to_nir(gn)
    mt = convert(trained_mlp, [digits[0][:64]], neuron="multi_threshold")
    with pytest.raises(NirExportError, match="multi-threshold neurons"):
        to_nir(mt)


def test_unreadable_nir_file_gives_a_clear_cli_error(tmp_path, capsys):
    (tmp_path / "bad.nir").write_bytes(b"\x89HDF\r\n garbage")
    assert main(["import-nir", str(tmp_path / "bad.nir"), str(tmp_path / "x.h5")]) == 2
    err = capsys.readouterr().err
    assert "bad.nir: not a readable NIR file" in err and not (tmp_path / "x.h5").exists()


def _huge_graph(shape):
    return nir.NIRGraph(nodes={"input": nir.Input(input_type={"input": np.array(shape)}),
                               "flat": nir.Flatten(input_type={"input": np.array(shape)}, start_dim=0),
                               "output": nir.Output(output_type={"output": np.array([int(np.prod(shape))])})},
                        edges=[("input", "flat"), ("flat", "output")], type_check=False)


@pytest.mark.parametrize("shape, message", [
    ([10**6] * 3, r"node 'input': input shape \(1000000, 1000000, 1000000\) has 1e\+18 values, more than the "
                  r"2,147,483,647 a population can hold"),
    ([2**16, 2**16], r"node 'input': input shape \(65536, 65536\) has 4.29e\+09 values"),
    ([10, 0], r"node 'input': input shape \(10, 0\) has a dimension < 1"),
])
def test_huge_or_empty_nir_shapes_are_refused_before_allocation(shape, message, tmp_path, capsys):
    import resource
    import time

    t0, rss = time.time(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(NirImportError, match=message):
        from_nir(_huge_graph(shape))
    assert time.time() - t0 < 5 and resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss < 200_000  # KiB
    nir.write(tmp_path / "huge.nir", _huge_graph(shape))
    assert main(["import-nir", str(tmp_path / "huge.nir"), str(tmp_path / "x.h5")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"spikeforge import-nir: error: {tmp_path / 'huge.nir'}: node 'input'") and \
        len(err.splitlines()) == 1 and not (tmp_path / "x.h5").exists()


def test_a_padding_that_makes_a_huge_convolution_output_is_refused_naming_the_node():
    graph = nir.NIRGraph(nodes={
        "input": nir.Input(input_type={"input": np.array([1, 4, 4])}),
        "conv": nir.Conv2d(input_shape=(4, 4), weight=np.ones((1, 1, 1, 1)), stride=1, padding=10**6, dilation=1,
                           groups=1, bias=np.zeros(1)),
        "output": nir.Output(output_type={"output": np.array([1])})},
        edges=[("input", "conv"), ("conv", "output")], type_check=False)
    with pytest.raises(NirImportError, match=r"node 'conv': output shape \(1, 2000004, 2000004\) has 4e\+12 values"):
        from_nir(graph)


def test_a_dropped_edge_names_the_nodes_left_dangling():
    from spikeforge.interop.nir_import import NirImportError, from_nir

    nodes = {"input": nir.Input(np.array([4])), "fc1": nir.Affine(np.ones((3, 4)), np.zeros(3)),
             "lif": nir.LIF(tau=np.full(3, 0.01), r=np.ones(3), v_leak=np.zeros(3), v_threshold=np.ones(3)),
             "fc2": nir.Affine(np.ones((2, 3)), np.zeros(2)), "output": nir.Output(np.array([2]))}
    graph = nir.NIRGraph(nodes, [("input", "fc1"), ("lif", "fc2"), ("fc2", "output")])  # fc1 -> lif dropped
    with pytest.raises(NirImportError, match=r"-> 'lif'.*<- 'fc1'.*missing edge"):
        from_nir(graph, dt=1e-4)


def test_a_readout_named_output_exports_and_round_trips(trained_mlp, digits, tmp_path):
    """Graphs imported from snnTorch / Norse name their readout 'output': the exporter's Output node must not
    overwrite it (it did, making a self-loop and 'No output nodes found')."""
    import dataclasses

    net = convert(trained_mlp, [digits[0][:256]], norm="percentile")
    renamed = {net.readout.name: "output"}
    pops = [dataclasses.replace(p, name=renamed.get(p.name, p.name)) for p in net.populations]
    projs = [dataclasses.replace(q, target=renamed.get(q.target, q.target)) for q in net.projections]
    cores, edges = one_population_per_core(pops, projs)
    net = simulator.Network(pops, projs, cores, edges, net.attrs)
    path = write_network(net, tmp_path / "net.h5")
    assert main(["export-nir", str(path), str(tmp_path / "net.nir")]) == 0
    graph = nir.read(tmp_path / "net.nir")
    assert type(graph.nodes["output"]).__name__ == "I" and "output_" in graph.nodes
    assert main(["import-nir", str(tmp_path / "net.nir"), str(tmp_path / "back.h5")]) == 0
    _assert_same_run(net, simulator.load_network(tmp_path / "back.h5"), digits[2][:20].numpy(), 4)


def _lif_chain(neuron):
    nodes = {"input": nir.Input(np.array([4])), "fc1": nir.Affine(np.eye(3, 4) * 0.3, np.zeros(3)), "lif": neuron,
             "fc2": nir.Affine(np.ones((2, 3)), np.zeros(2)), "output": nir.Output(np.array([2]))}
    return nir.NIRGraph(nodes, [("input", "fc1"), ("fc1", "lif"), ("lif", "fc2"), ("fc2", "output")])


def test_snntorch_if_export_with_infinite_tau_and_r_imports_as_if():
    """snnTorch writes a Leaky with beta = 1 as LIF(tau = inf, r = inf): an IF neuron whose input gain is
    dt·r/tau = 1, the same network as IF(r = 1/dt)."""
    from spikeforge.interop.nir_import import from_nir

    dt = 1e-4
    lif = nir.LIF(tau=np.full(3, np.inf), r=np.full(3, np.inf), v_leak=np.zeros(3), v_threshold=np.ones(3))
    a = from_nir(_lif_chain(lif), dt=dt)
    b = from_nir(_lif_chain(nir.IF(r=np.full(3, 1 / dt), v_threshold=np.ones(3))), dt=dt)
    assert a.populations[1].model == "if"
    x = np.random.default_rng(0).uniform(0, 2, (5, 4))
    ra, rb = simulator.run(a, x, 6), simulator.run(b, x, 6)
    assert ra.totals() == rb.totals() and ra.total("spikes") > 0
    np.testing.assert_array_equal(ra.output, rb.output)


@pytest.mark.parametrize("neuron, message", [
    (nir.IF(r=np.array([1.0, 0.0, 1.0]), v_threshold=np.ones(3)), r"node 'lif': r = 0 at neuron 1"),
    (nir.LIF(tau=np.full(3, np.inf), r=np.ones(3), v_leak=np.zeros(3), v_threshold=np.ones(3)),
     r"node 'lif': tau = inf .* needs r = inf"),
])
def test_deaf_or_ambiguous_neurons_are_refused_naming_the_node(neuron, message):
    from spikeforge.interop.nir_import import NirImportError, from_nir

    with pytest.raises(NirImportError, match=message):
        from_nir(_lif_chain(neuron), dt=1e-4)


def test_a_graph_without_dt_says_to_pass_the_training_step():
    from spikeforge.interop.nir_import import NirImportError, from_nir

    lif = nir.LIF(tau=np.full(3, 1e-3), r=np.full(3, 10.0), v_leak=np.zeros(3), v_threshold=np.ones(3))
    with pytest.raises(NirImportError, match=r"no dt metadata .* --convention snntorch / norse .*snnTorch's "
                                             r"export assumes dt = 1e-4"):
        from_nir(_lif_chain(lif))
    assert from_nir(_lif_chain(lif), dt=1e-4).populations[1].model == "lif"
    net = from_nir(_lif_chain(lif), convention="snntorch")  # its default dt, 1e-4
    assert net.attrs["nir_dt"] == 1e-4 and net.attrs["nir_convention"] == "snntorch"
    np.testing.assert_allclose(net.populations[1].decay, 0.9)


# --------------------------------------------------------------------------- delays (format 1.8)

def test_pipelined_network_round_trips_through_nir_delay_nodes(trained_resnet, digits, tmp_path):
    """Every projection one step (and one more on the first): Delay(d·dt) nodes on export, the same delays,
    network and spikes back on import."""
    from spikeforge.converter.mapping import pipelined

    net = pipelined(convert(trained_resnet, [digits[0][:256]], norm="percentile"), 1)
    net.projections[0].delay = 2
    graph = to_nir(net)
    delays = [n for n in graph.nodes.values() if isinstance(n, nir.Delay)]
    assert len(delays) == len(net.projections)
    back = from_nir(graph)
    _assert_same_network(net, back)
    assert {q.name: q.delay for q in back.projections} == {q.name: q.delay for q in net.projections}
    _assert_same_run(net, back, digits[2][:10].numpy(), 8)


def _delayed_chain(delay, bias=0.0, dt=1.0):
    return from_nir(_chain(nir.Affine(weight=np.ones((2, 4)), bias=np.full(2, bias)), nir.Delay(delay=delay),
                           nir.IF(r=np.ones(2), v_threshold=np.ones(2), v_reset=np.zeros(2))), dt=dt)


def test_a_nir_delay_node_delays_its_projection_in_steps_of_dt():
    (q,) = [q for q in _delayed_chain(np.full(2, 0.003), dt=0.001).projections if q.target == "n2"]
    assert q.delay == 3 and q.kind == "dense"
    net = _delayed_chain(np.full(2, 3.0))
    res = simulator.run(net, np.ones((1, 4)), 5, record=["n2"])
    assert res.spikes["n2"][0, :3].sum() == 0 and res.spikes["n2"][0, 3:].all()  # input arrives from step 3


@pytest.mark.parametrize("delay, bias, message", [
    (np.array([1.0, 2.0]), 0.0, "delays that differ between elements"),
    (np.full(2, 1.5), 0.0, "delay 1.5 is not a whole number of steps of dt 1"),
    (np.full(2, 2.0), 0.5, "a bias flows through this Delay"),
])
def test_nir_delays_spikeforge_cannot_keep_are_refused_naming_the_node(delay, bias, message):
    with pytest.raises(NirImportError, match=f"node 'n1': {message}"):
        _delayed_chain(delay, bias)


def test_import_nir_maps_onto_a_system_of_more_chips_than_the_board_with_chips(tmp_path, capsys):
    """A target whose board (1 chip of 4 cores of 64 neurons) cannot hold the graph's 533 neurons: import-nir
    --target refuses it naming how many chips would, and --chips N maps it onto N chips."""
    import json
    from importlib import resources

    spec = json.loads(resources.files("spikeforge.hwmodels").joinpath("targets/loihi.json").read_text())
    spec["name"] = "tiny-loihi"
    for key, value in (("neurons_per_core", 64), ("cores_per_chip", 4), ("chips", 1), ("mesh_width", 2)):
        spec["limits"][key]["value"] = value
    (tmp_path / "tiny.json").write_text(json.dumps(spec))
    nir.write(tmp_path / "foreign.nir", _snntorch_style_graph(np.random.default_rng(5)))
    argv = ["import-nir", str(tmp_path / "foreign.nir"), str(tmp_path / "net.h5"), "--target",
            str(tmp_path / "tiny.json")]
    assert main(argv) == 2
    assert "chips holds them" in capsys.readouterr().err and not (tmp_path / "net.h5").exists()
    assert main(argv + ["--chips", "4"]) == 0
    net = simulator.load_network(tmp_path / "net.h5")
    assert len(np.unique(net.cores.chip)) > 1 and net.cores.slots() > 4
    assert main(["import-nir", str(tmp_path / "foreign.nir"), str(tmp_path / "b.h5"), "--chips", "4"]) == 2
    assert "--chips is the size of the system" in capsys.readouterr().err


@pytest.mark.parametrize("kernel", [(2, 2), (4, 3), (3, 2)])
def test_same_padding_with_an_even_kernel_pads_as_torch_does(kernel):
    """padding 'same' with an even kernel pads one more after than before (torch's rule), which a symmetric conv
    cannot: imported as the symmetric conv of k // 2 with its first output row / column dropped, one sparse
    projection. The IF layer's first-step current (θ huge: its membrane) equals torch's conv2d(padding='same')."""
    import torch

    rng = np.random.default_rng(0)
    w = rng.normal(0, 1, (3, 2) + kernel).astype(np.float32)
    nodes = {"input": nir.Input(input_type={"input": np.array([2, 5, 6])}),
             "conv": nir.Conv2d(input_shape=(5, 6), weight=w, stride=1, padding="same", dilation=1, groups=1,
                                bias=np.zeros(3, np.float32)),
             "if": nir.IF(r=np.ones((3, 5, 6)), v_threshold=np.full((3, 5, 6), 1e9)),
             "output": nir.Output(output_type={"output": np.array([3, 5, 6])})}
    net = from_nir(nir.NIRGraph(nodes=nodes, edges=[("input", "conv"), ("conv", "if"), ("if", "output")],
                                type_check=False))
    assert net.populations[1].shape == (3, 5, 6)
    assert net.projections[0].kind == ("conv2d" if kernel[0] % 2 and kernel[1] % 2 else "sparse")
    x = rng.uniform(0, 1, (1, 2, 5, 6))
    res = simulator.run(net, x, 1, trace=[("if", i) for i in range(90)])
    want = torch.nn.functional.conv2d(torch.tensor(x), torch.tensor(w, dtype=torch.float64), padding="same")
    np.testing.assert_allclose(res.traces[0, 0], want.numpy().reshape(-1), rtol=1e-5, atol=1e-5)
