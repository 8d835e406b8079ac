"""Hostile inputs to `import-nir` and `inspect --png` are refused (or drawn) in bounded time and memory: a one-line
UserError naming the file / node, never a MemoryError, a hang or a traceback."""
import resource
import time

import h5py
import nir
import numpy as np
import pytest

from spikeforge.cli import main
from spikeforge.converter import write_network
from spikeforge.converter.mapping import core_load, one_population_per_core
from spikeforge.errors import UserError
from spikeforge.interop import nir_import
from spikeforge.interop.nir_import import NirImportError, from_nir
from spikeforge.simulator import Network, Population, Projection
from spikeforge.simulator.network import CoreEdges, CoreTable


class _Bounded:
    """Asserts the block took under `seconds` and grew the peak RSS by less than `mib`."""

    def __init__(self, seconds=5, mib=300):
        self.seconds, self.mib = seconds, mib

    def __enter__(self):
        self.t0, self.rss = time.time(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return self

    def __exit__(self, *exc):
        assert time.time() - self.t0 < self.seconds
        assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - self.rss < self.mib * 1024  # KiB


def _cli_error(capsys, argv):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


# --------------------------------------------------------------------------------------------- NIR import

def _small_graph():
    """input (4) -> lin (3x4) -> lif (3) -> output: a valid graph to corrupt."""
    return nir.NIRGraph(nodes={
        "input": nir.Input(input_type={"input": np.array([4])}),
        "lin": nir.Linear(weight=np.ones((3, 4), np.float32)),
        "lif": nir.IF(r=np.ones(3), v_threshold=np.ones(3)),
        "output": nir.Output(output_type={"output": np.array([3])})},
        edges=[("input", "lin"), ("lin", "lif"), ("lif", "output")], type_check=False)


def _nir_file(tmp_path, edit=None, name="g.nir"):
    path = tmp_path / name
    nir.write(path, _small_graph())
    if edit is not None:
        with h5py.File(path, "a") as h5:
            edit(h5["node/nodes"])
    return path


def test_the_small_graph_imports(tmp_path):
    assert main(["import-nir", str(_nir_file(tmp_path)), str(tmp_path / "x.h5")]) == 0


def _declared(shape, dtype="f4"):
    def edit(nodes):
        del nodes["lin/weight"]
        nodes["lin"].create_dataset("weight", shape=shape, dtype=dtype, chunks=True)  # declared, never written
    return edit


def test_datasets_declaring_more_than_the_bound_are_refused_before_nir_reads_them(tmp_path, capsys):
    path = _nir_file(tmp_path, _declared((2**20, 2**20)))  # 4 TiB of fill value in a file of a few KB
    with _Bounded():
        err = _cli_error(capsys, ["import-nir", str(path), str(tmp_path / "x.h5")])
    assert err.startswith(f"spikeforge import-nir: error: {path}: its datasets declare 4 TiB in all") and \
        "SPIKEFORGE_MAX_DATASET_BYTES" in err and not (tmp_path / "x.h5").exists()


def test_the_nir_byte_bound_is_the_file_formats_and_can_be_lowered(tmp_path, monkeypatch):
    from spikeforge.simulator.fileformat import MAX_DATASET_BYTES

    assert nir_import.MAX_NIR_BYTES == MAX_DATASET_BYTES
    monkeypatch.setattr(nir_import, "MAX_NIR_BYTES", 16)
    path = _nir_file(tmp_path)
    with pytest.raises(NirImportError, match=f"{path}: its datasets declare .* more than the 16 bytes"):
        nir_import.import_nir(path, tmp_path / "x.h5")


@pytest.mark.parametrize("edit, message", [
    (_declared((2**40, 1), "i1"), r"node 'lin': weight \(1099511627776, 1\) declares 1,099,511,627,776 outputs"),
    (_declared((2**17, 2**17), "i1"), r"node 'lin': weight \(131072, 131072\) has 1.72e\+10 elements, more than "
                                      r"the 8,589,934,592 synapses"),
    (lambda n: n["lin"].create_dataset("output_type", data=np.array([2**40])),
     r"node 'lin': output_type \(1099511627776,\) has 1.1e\+12 values, more than the 2,147,483,647"),
    (lambda n: (n["output"].__delitem__("shape"), n["output"].create_dataset("shape", data=[2**20, 2**20, 4])),
     r"node 'output': shape \(1048576, 1048576, 4\) has 4.4e\+12 values"),
    (lambda n: (n["input"].__delitem__("shape"), n["input"].create_dataset("shape", data=np.ones(10**5, int))),
     r"node 'input': shape declares 100,000 dimensions"),
    (lambda n: n["lif"].create_dataset("v_leak", shape=(2**16, 2**16), dtype="i1", chunks=True),
     r"node 'lif': v_leak \(65536, 65536\) has 4.29e\+09 values"),
])
def test_absurd_declared_shapes_are_refused_from_the_hdf5_metadata(edit, message, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(nir_import, "MAX_NIR_BYTES", 2**62)  # past the byte bound: the shape checks speak
    path = _nir_file(tmp_path, edit)
    with _Bounded():
        with pytest.raises(NirImportError, match=f"{path}: {message}"):
            nir_import.import_nir(path, tmp_path / "x.h5")
    assert not (tmp_path / "x.h5").exists()


def test_cli_refuses_a_declared_shape_in_one_line(tmp_path, capsys):
    path = _nir_file(tmp_path, lambda n: n["lin"].create_dataset("input_type", data=np.array([2**40, 2**40])))
    err = _cli_error(capsys, ["import-nir", str(path), str(tmp_path / "x.h5")])
    assert err.startswith(f"spikeforge import-nir: error: {path}: node 'lin': input_type")


def test_a_nir_file_reading_another_file_is_refused(tmp_path):
    other = _nir_file(tmp_path, name="other.nir")
    path = _nir_file(tmp_path, lambda n: n.__setitem__("extra", h5py.ExternalLink(str(other), "/node")))
    with pytest.raises(UserError, match=f"{path}: /node/nodes/extra is an external link"):
        nir_import.import_nir(path, tmp_path / "x.h5")


def test_a_file_of_too_many_objects_is_refused_before_they_are_walked(tmp_path, capsys):
    def edit(nodes):
        meta = nodes["lin"].create_group("metadata")
        for i in range(nir_import.MAX_NIR_OBJECTS):
            meta.create_group(f"g{i}")
    path = _nir_file(tmp_path, edit)
    with _Bounded(seconds=2):
        err = _cli_error(capsys, ["import-nir", str(path), str(tmp_path / "x.h5")])
    assert err.startswith(f"spikeforge import-nir: error: {path}: more than 30,000 HDF5 objects")


def test_too_many_nodes_or_edges_are_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(nir_import, "MAX_NODES", 3)
    path = _nir_file(tmp_path)
    with pytest.raises(NirImportError, match=f"{path}: the graph has more than 3 nodes"):
        nir_import.import_nir(path, tmp_path / "x.h5")
    with pytest.raises(NirImportError, match="the graph has 4 nodes, more than 3"):
        from_nir(_small_graph())
    monkeypatch.setattr(nir_import, "MAX_NODES", 10)
    monkeypatch.setattr(nir_import, "MAX_EDGES", 2)
    with pytest.raises(NirImportError, match=f"{path}: the graph has 3 edges, more than 2"):
        nir_import.import_nir(path, tmp_path / "x.h5")


def test_a_chain_multiplying_out_to_too_many_synapses_is_refused_before_scipy_builds_it(tmp_path, capsys):
    n = 2**17  # two weights of 2^17 values through one neuron-wide bottleneck: a 2^17 x 2^17 product
    graph = nir.NIRGraph(nodes={
        "input": nir.Input(input_type={"input": np.array([n])}),
        "down": nir.Linear(weight=np.ones((1, n), np.float32)),
        "up": nir.Linear(weight=np.ones((n, 1), np.float32)),
        "if": nir.IF(r=np.ones(n, np.float32), v_threshold=np.ones(n, np.float32)),
        "output": nir.Output(output_type={"output": np.array([n])})},
        edges=[("input", "down"), ("down", "up"), ("up", "if"), ("if", "output")], type_check=False)
    message = r"node 'up': the chain input -> down -> up -> if multiplied out into one projection makes up to " \
              r"1.72e\+10 synapses, more than the 8,589,934,592"
    with _Bounded():
        with pytest.raises(NirImportError, match=message):
            from_nir(graph)
    nir.write(tmp_path / "bomb.nir", graph)
    with _Bounded():
        err = _cli_error(capsys, ["import-nir", str(tmp_path / "bomb.nir"), str(tmp_path / "x.h5")])
    assert f"{tmp_path / 'bomb.nir'}: node 'up': the chain" in err


def _scales(k, n=4):
    """input -> k diamonds of Scale nodes (2^k paths) -> if -> output."""
    nodes = {"input": nir.Input(input_type={"input": np.array([n])})}
    edges, last = [], "input"
    for i in range(k):
        for side in "ab":
            nodes[f"{side}{i}"] = nir.Scale(scale=np.ones(n))
            edges.append((last, f"{side}{i}"))
        nodes[f"m{i}"] = nir.Scale(scale=np.ones(n))
        edges += [(f"a{i}", f"m{i}"), (f"b{i}", f"m{i}")]
        last = f"m{i}"
    nodes["if"] = nir.IF(r=np.ones(n), v_threshold=np.ones(n))
    nodes["output"] = nir.Output(output_type={"output": np.array([n])})
    edges += [(last, "if"), ("if", "output")]
    return nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)


def test_diamonds_of_linear_nodes_do_not_multiply_paths_without_bound():
    with _Bounded():
        with pytest.raises(NirImportError, match="node 'if': more than 10,000 paths of linear nodes"):
            from_nir(_scales(40))  # 2^40 paths


def test_a_long_chain_of_linear_nodes_imports_without_recursion():
    n, k = 3, 3000
    nodes = {"input": nir.Input(input_type={"input": np.array([n])})}
    names = ["input"] + [f"s{i}" for i in range(k)] + ["if", "output"]
    nodes.update({f"s{i}": nir.Affine(weight=np.eye(n), bias=np.full(n, 1e-4)) for i in range(k)})
    nodes["if"] = nir.IF(r=np.ones(n), v_threshold=np.ones(n))
    nodes["output"] = nir.Output(output_type={"output": np.array([n])})
    graph = nir.NIRGraph(nodes=nodes, edges=list(zip(names[:-1], names[1:])), type_check=False)
    with _Bounded(seconds=10):
        net = from_nir(graph)
    np.testing.assert_allclose(net.populations[1].bias, k * 1e-4, rtol=1e-5)  # every bias, through the chain


def test_many_projections_of_one_name_are_named_in_linear_time():
    from spikeforge.interop.nir_import import _projection_name

    class Op:
        type, name, node = "Linear", "same", None

    used, suffixes = set(), {}
    with _Bounded(seconds=2):
        names = [_projection_name("a", "b", [Op()], used, None, suffixes) for _ in range(3000)]
    assert names[:3] == ["same", "same_", "same__"] and len(set(names)) == 3000
    used = {"x_"}
    assert [_projection_name("a", "b", [type("O", (Op,), {"name": "x"})()], used) for _ in range(2)] == ["x", "x__"]


# ---------------------------------------------------------------------------------------------- inspect

def _network(hidden=100):
    rng = np.random.default_rng(0)
    pops = [Population.make("in", "input", (64,)), Population.make("h", "if", (hidden,), 1.0, 0.5),
            Population.make("out", "readout", (10,))]
    projs = [Projection("a", "dense", "in", "h", (rng.normal(size=(hidden, 64)) * 0.3).astype(np.float32)),
             Projection("b", "dense", "h", "out", (rng.normal(size=(10, hidden)) * 0.1).astype(np.float32))]
    return Network(pops, projs, *one_population_per_core(pops, projs), {"name": "far"})


def _png_ok(path):
    import matplotlib.image

    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    img = matplotlib.image.imread(path)
    assert img.shape[0] > 200 and img.shape[1] > 200 and img.shape[0] * img.shape[1] < 4000 * 4000
    assert img.std() > 0.01


def test_inspect_png_of_cores_far_apart_on_the_mesh(tmp_path, capsys):
    net = _network()
    net.cores.x[:] = [0, 2**24 - 1, 5]  # valid: coordinates up to 2^24; a heatmap by extent is 2 PiB
    net.cores.y[:] = [0, 3, 2**24 - 1]
    path = write_network(net, tmp_path / "far.h5")
    with _Bounded(seconds=10):
        assert main(["inspect", path, "--target", "loihi", "--png", str(tmp_path / "far.png")]) == 0
    _png_ok(tmp_path / "far.png")


def test_far_apart_cores_are_drawn_on_their_occupied_columns_and_rows(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    from spikeforge import inspect_cores

    figs = {}
    monkeypatch.setattr(inspect_cores, "save_figure", lambda fig, path, **kw: figs.setdefault("fig", fig))
    monkeypatch.setattr(plt, "close", lambda fig: None)
    net = _network()
    net.cores.x[:] = [0, 2**24 - 1, 5]
    net.cores.y[:] = [0, 3, 2**24 - 1]
    notes = inspect_cores.plot_cores(net, inspect_cores.core_loads(net), tmp_path / "x.png")
    heat, graph = figs["fig"].axes[:2]
    assert heat.images[0].get_array().shape == (3, 3)  # the 3 occupied rows x 3 occupied columns
    assert [t.get_text() for t in heat.get_xticklabels()] == ["0", "5", str(2**24 - 1)]
    assert "occupied columns / rows" in " ".join(heat.get_title().split()) and notes
    assert heat.images[0].get_clim() == (0, 100)
    assert [t.get_text() for t in graph.get_legend().get_texts()] == ["in (1)", "h (1)", "out (1)"]


def test_a_small_mesh_is_drawn_whole_as_before(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    from spikeforge import inspect_cores
    from spikeforge.hwmodels.targets import load_target

    figs = {}
    monkeypatch.setattr(inspect_cores, "save_figure", lambda fig, path, **kw: figs.setdefault("fig", fig))
    monkeypatch.setattr(plt, "close", lambda fig: None)
    net = _network(hidden=2150)  # 2.1x Loihi's neurons per core
    assert inspect_cores.plot_cores(net, inspect_cores.core_loads(net, load_target("loihi")), tmp_path / "x.png") \
        == []
    heat = figs["fig"].axes[0]
    assert heat.images[0].get_array().shape == (2, 2) and heat.get_title().startswith("per-core load on the mesh")
    # h's 2,150 neurons (2.1x) weigh more than its synapse lists (64 lists of 2,150 contiguous targets: 1.09x)
    assert "(1 cores over capacity)" in heat.get_title() and [t.get_text() for t in heat.texts] == ["2.1x"]


def _many_cores(n=100_000, seed=0):
    """in (n) -identity-> h (n, one neuron per core) -sparse-> out (n, 4 cores), cores scattered over 2^24."""
    rng = np.random.default_rng(seed)
    pops = [Population.make("in", "input", (n,)), Population.make("h", "if", (n,), 1.0),
            Population.make("out", "readout", (n,))]
    nnz = 3 * n
    rows = np.sort(rng.integers(0, n, nnz))
    indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=n))]).astype(np.int64)
    projs = [Projection("a", "identity", "in", "h"),
             Projection("b", "sparse", "h", "out", np.ones(nnz, np.float32), indptr,
                        rng.integers(0, n, nnz).astype(np.int32))]
    k = 1 + n + 4
    bounds = np.linspace(0, n, 5).astype(np.int64)
    cores = CoreTable(core_id=np.arange(k), chip=np.zeros(k, np.int64), x=rng.integers(0, 2**24, k),
                      y=rng.integers(0, 2**24, k), population=np.array([0] + [1] * n + [2] * 4),
                      neuron_start=np.concatenate([[0], np.arange(n), bounds[:-1]]),
                      neuron_stop=np.concatenate([[n], np.arange(1, n + 1), bounds[1:]]))
    edges = CoreEdges(rng.integers(0, k, 2 * k), rng.integers(0, k, 2 * k), np.ones(2 * k, np.int64),
                      rng.integers(1, 50, 2 * k))
    return Network(pops, projs, cores, edges, {"name": "many"})


def test_a_hundred_thousand_scattered_cores_load_and_draw_in_seconds(tmp_path, monkeypatch):
    from spikeforge import inspect_cores
    from spikeforge.hwmodels.targets import load_target

    net = _many_cores()
    target = load_target("loihi")
    with _Bounded(seconds=8, mib=600):
        rows = inspect_cores.core_loads(net, target)
        notes = inspect_cores.plot_cores(net, rows, tmp_path / "many.png", "many")
    assert len(rows) == len(net.cores)
    assert any("binned" in t for t in notes) and any("every 6th of 100,005 cores" in t for t in notes)
    assert any("widest of 200,010 edges" in t for t in notes)
    _png_ok(tmp_path / "many.png")
    for i in [0, 1, 2, 50_000, 100_000, 100_001, 100_002, 100_003, 100_004]:  # the same as core_load
        pop = net.populations[net.cores.population[i]]
        load = core_load(net, pop, int(net.cores.neuron_start[i]), int(net.cores.neuron_stop[i]), target.limits)
        assert (rows[i]["neurons"], rows[i]["axons"], rows[i]["synapse_bytes"]) == \
            (load.neurons, load.axons, load.synapse_bytes), i


def test_core_loads_count_like_core_load_for_every_kind_and_split():
    from spikeforge.converter.mapping import map_network
    from spikeforge.hwmodels.targets import load_target
    from spikeforge.inspect_cores import core_loads

    rng = np.random.default_rng(3)
    pops = [Population.make("img", "input", (2, 8, 8)), Population.make("cv", "if", (4, 8, 8), 1.0),
            Population.make("h", "if", (256,), 1.0), Population.make("s", "if", (256,), 1.0),
            Population.make("s2", "if", (256,), 1.0), Population.make("out", "readout", (10,))]
    mask = rng.random((256, 256)) < 0.05
    csr = [np.flatnonzero(mask[i]) for i in range(256)]
    indptr = np.concatenate([[0], np.cumsum([len(r) for r in csr])]).astype(np.int64)
    indices = np.concatenate([rng.permutation(r) for r in csr]).astype(np.int32)  # unsorted within rows
    projs = [Projection("c", "conv2d", "img", "cv", rng.normal(size=(4, 2, 3, 3)).astype(np.float32),
                        padding=(1, 1)),
             Projection("d", "dense", "cv", "h", rng.normal(size=(256, 256)).astype(np.float32)),
             Projection("sp", "sparse", "h", "s", np.ones(len(indices), np.float32), indptr, indices),
             Projection("id", "identity", "h", "s"),
             Projection("alone", "sparse", "h", "s2", np.ones(len(indices), np.float32), indptr, indices),
             Projection("o", "sparse", "s", "out", np.ones(256, np.float32),
                        np.arange(257, dtype=np.int64), (np.arange(256) % 10).astype(np.int32))]
    net = Network(pops, projs, *one_population_per_core(pops, projs), {"name": "kinds"})
    target = load_target("loihi")
    limits = dict(target.limits, neurons_per_core=37)
    target.limits = limits
    mapped = map_network(net, target, "snake")
    assert len(mapped.cores) > 20
    for t in (None, target):
        rows = core_loads(mapped, t)
        lim = t.limits if t is not None else {"weight_bits": 32, "neurons_per_core": 1024}
        for i, r in enumerate(rows):
            c = mapped.cores
            load = core_load(mapped, mapped.populations[c.population[i]], int(c.neuron_start[i]),
                             int(c.neuron_stop[i]), lim, box=c.box[i] if c.is_box(i) else None)
            assert (r["neurons"], r["axons"], r["synapse_bytes"]) == (load.neurons, load.axons, load.synapse_bytes)


def test_core_loads_are_linear_in_populations(tmp_path):
    from spikeforge.inspect_cores import core_loads, plot_cores

    k = 3000
    pops = [Population.make(f"p{i}", "input" if i == 0 else "if", (2,), 1.0) for i in range(k)]
    projs = [Projection(f"q{i}", "identity", f"p{i}", f"p{i + 1}") for i in range(k - 1)]
    net = Network(pops, projs, *one_population_per_core(pops, projs), {"name": "long"})
    with _Bounded(seconds=6):
        rows = core_loads(net)
        notes = plot_cores(net, rows, tmp_path / "long.png")
    assert [r["axons"] for r in rows[:3]] == [0, 2, 2]
    assert any("2,960 of 3,000 layers in grey" in t for t in notes)
    _png_ok(tmp_path / "long.png")
