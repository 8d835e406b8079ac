"""EC compute nodes (expectation-compensated GELU / LayerNorm / softmax) in the file format and the engine."""
import copy

import numpy as np
import pytest
import torch
from scipy.special import erf

from spikeforge import simulator
from spikeforge.converter import SpikingNetwork, write_network
from spikeforge.converter.mapping import one_population_per_core
from spikeforge.simulator import NetworkFileError, load_network
from spikeforge.simulator.network import Network, Population, Projection

SHAPE = (2, 6)  # (tokens, features): layernorm and softmax normalize each token's 6 features
N = 12


def _numpy_fn(name, x, eps=1e-5):
    if name == "gelu":
        return 0.5 * x * (1 + erf(x / np.sqrt(2)))
    if name == "layernorm":
        return (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + eps)
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _net(function, tail=False):
    """input -> dense -> two-sided multi-threshold -> identity -> EC node -> identity -> readout, or with
    tail=True: EC node -> identity -> multi-threshold -> dense -> readout (EC events drive spikes)."""
    rng = np.random.default_rng(1)
    pops = [Population.make("in", "input", SHAPE),
            Population.make("mt", "multi_threshold", SHAPE, 0.25, 0.0, levels=3, threshold_neg=0.25),
            Population.make("ec", "ec", SHAPE, 0.0, 0.0, function=function)]
    projs = [Projection("in_mt", "dense", "in", "mt", rng.normal(0, 0.6, (N, N)).astype(np.float32)),
             Projection("mt_ec", "identity", "mt", "ec")]
    if tail:
        pops.append(Population.make("mt2", "multi_threshold", SHAPE, 0.125, 0.0, levels=3, threshold_neg=0.125))
        projs += [Projection("ec_mt2", "identity", "ec", "mt2"),
                  Projection("mt2_out", "dense", "mt2", "out", rng.normal(0, 0.5, (5, N)).astype(np.float32))]
        pops.append(Population.make("out", "readout", (5,)))
    else:
        pops.append(Population.make("out", "readout", SHAPE))
        projs.append(Projection("ec_out", "identity", "ec", "out"))
    return Network(pops, projs, *one_population_per_core(pops, projs), {})


@pytest.mark.parametrize("function", ["gelu", "layernorm", "softmax"])
@pytest.mark.parametrize("T", [1, 3, 8])
def test_engine_ec_identity_and_reference(tmp_path, function, T):
    """Σ_{t<=T} O(t) = T·F(mean input): the readout after the node is F of the mean of its spiking input."""
    write_network(_net(function), tmp_path / "ec.h5")
    net = load_network(tmp_path / "ec.h5")
    assert net.populations[2].function == function
    x = np.random.default_rng(2).normal(0, 1, (4, N)).astype(np.float32)
    res = simulator.run(net, x, T, record=["mt"], record_counts=True)
    levels = res.spikes["mt"] * 0.25  # θ = θ_neg = 0.25: a level s carries 0.25·s
    mean_in = levels.mean(axis=1).reshape(4, *SHAPE)
    want = _numpy_fn(function, mean_in).reshape(4, N)
    np.testing.assert_allclose(res.output.reshape(4, N), want, rtol=1e-9, atol=1e-12)
    out, rec = SpikingNetwork(net)(torch.as_tensor(x), T)
    np.testing.assert_array_equal(res.spike_counts["mt"], rec.spike_counts["mt"].numpy())
    np.testing.assert_allclose(res.output.reshape(4, N), out.reshape(4, N).numpy(), rtol=1e-9, atol=1e-12)
    # one MAC per element per step for the node, plus the analog input's dense MACs (N per nonzero input)
    per_core = res.counter("macs").sum(0)
    assert per_core[2] == 4 * N * T and per_core[1] == 4 * T * N * N


def test_ec_events_drive_downstream_spikes_like_the_reference():
    net = _net("layernorm", tail=True)
    x = np.random.default_rng(3).normal(0, 1, (16, N)).astype(np.float32)
    res = simulator.run(net, x, 6, record_counts=True)
    out, rec = SpikingNetwork(net)(torch.as_tensor(x), 6)
    for name in ("mt", "mt2"):
        np.testing.assert_array_equal(res.spike_counts[name], rec.spike_counts[name].numpy())
    assert np.abs(res.spike_counts["mt2"]).sum() > 0
    np.testing.assert_allclose(res.output, out.numpy(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("change, problem", [
    (dict(function="tanh"), "unknown EC function 'tanh'"),
    (dict(eps=0.0), "eps 0.0 must be in"),
    (dict(v_init=np.full(N, 0.5, np.float32)), "v_init must be 0"),
    (dict(shape=(2, 2, 3)), "EC nodes take shape"),
])
def test_bad_ec_nodes_are_rejected(tmp_path, change, problem):
    net = _net("gelu")
    for key, value in change.items():
        setattr(net.populations[2], key, value)
    with pytest.raises(NetworkFileError, match=problem):
        write_network(net, tmp_path / "bad.h5")


def test_only_ec_nodes_have_a_function(tmp_path):
    net = _net("gelu")
    net.populations[1].function = "gelu"
    with pytest.raises(NetworkFileError, match="only EC nodes have a function"):
        write_network(net, tmp_path / "bad.h5")


M, K_, NN = 2, 3, 4


def _matmul_net(bias=0.0, b_size=K_ * NN, out_kind="identity", transpose=False):
    """input -> dense -> A (2x3) and B (3x4) two-sided multi-threshold operands -> ec_matmul (2x4) -> readout."""
    rng = np.random.default_rng(4)
    pops = [Population.make("in", "input", (10,)),
            Population.make("a", "multi_threshold", (M, K_), 0.25, 0.0, levels=3, threshold_neg=0.25),
            Population.make("b", "multi_threshold", (NN, K_) if transpose else (b_size,), 0.5, 0.0, levels=2,
                            threshold_neg=0.5),
            Population.make("k", "ec_matmul", (M, NN), 0.0, 0.0, bias),
            Population.make("out", "readout", (M, NN))]
    projs = [Projection("in_a", "dense", "in", "a", rng.normal(0, 0.7, (M * K_, 10)).astype(np.float32)),
             Projection("in_b", "dense", "in", "b", rng.normal(0, 0.7, (b_size, 10)).astype(np.float32)),
             Projection("a_k", "matmul_a", "a", "k"), Projection("b_k", "matmul_b", "b", "k", transpose=transpose),
             Projection("k_out", out_kind, "k", "out")]
    return Network(pops, projs, *one_population_per_core(pops, projs), {})


@pytest.mark.parametrize("T, transpose", [(1, False), (2, False), (5, False), (3, True)])
def test_engine_ec_matmul_identity_reference_and_counts(tmp_path, T, transpose):
    """Σ_{t<=T} O(t) = T·mean(A)·mean(B); the operand work is 2N per event of A and M per event of B."""
    write_network(_matmul_net(transpose=transpose), tmp_path / "mm.h5")
    net = load_network(tmp_path / "mm.h5")
    x = np.random.default_rng(5).normal(0, 1, (3, 10)).astype(np.float32)
    res = simulator.run(net, x, T, record=["a", "b"])
    mean_a = (res.spikes["a"] * 0.25).mean(axis=1).reshape(3, M, K_)
    mean_b = (res.spikes["b"] * 0.5).mean(axis=1)
    mean_b = mean_b.reshape(3, NN, K_).transpose(0, 2, 1) if transpose else mean_b.reshape(3, K_, NN)
    np.testing.assert_allclose(res.output.reshape(3, M, NN), mean_a @ mean_b, rtol=1e-9, atol=1e-12)
    out, _ = SpikingNetwork(net)(torch.as_tensor(x), T)
    np.testing.assert_allclose(res.output.reshape(3, -1), out.reshape(3, -1).numpy(), rtol=1e-9, atol=1e-12)
    events_a, events_b = np.count_nonzero(res.spikes["a"]), np.count_nonzero(res.spikes["b"])
    assert res.counter("synops").sum(0)[3] == 2 * NN * events_a + M * events_b
    np.testing.assert_allclose(SpikingNetwork(net).analog_forward(torch.as_tensor(x)).reshape(3, -1).numpy(),
                               _analog_product(net, x), rtol=1e-9)


@pytest.mark.parametrize("transpose, tiles", [(False, False), (True, False), (False, True), (True, True)])
def test_matmul_operand_work_counts_on_the_cores_holding_the_products(transpose, tiles):
    """The (2, 4) node cut 3 neurons per core (balance_work's cap): into the ranges [0, 3), [3, 5), [5, 8) of its
    products, or (a target that cuts into boxes, format 1.14) into 4 tiles of 1 row x 2 columns. An event of A (i, k)
    does 2 operations for each product of row i, an event of B (k, j) 1 for each product of column j, each on the
    core holding that product (not all on the node's first core)."""
    import dataclasses

    from spikeforge.converter.mapping import balance_work, map_network
    from spikeforge.hwmodels import load_target

    assert balance_work({"k": 40.0, "a": 0.0}, 120) == {"k": 3}
    loihi = load_target("loihi")
    target = dataclasses.replace(loihi, limits=dict(loihi.limits, box_partition=1.0 if tiles else 0.0))
    net = map_network(_matmul_net(transpose=transpose), target, max_neurons={"k": 3})
    k = [p.name for p in net.populations].index("k")
    cores = np.flatnonzero(net.cores.population == k)
    if tiles:  # 3 products per core: 1 x 2 or 2 x 1 tiles, 4 cores either way; rows are cut first
        assert [tuple(net.cores.box[c]) for c in cores] == [(0, 1, 0, 1, 0, 2), (0, 1, 0, 1, 2, 4),
                                                            (0, 1, 1, 2, 0, 2), (0, 1, 1, 2, 2, 4)]
    else:
        assert not net.cores.has_boxes()
        assert [(net.cores.neuron_start[c], net.cores.neuron_stop[c]) for c in cores] == [(0, 3), (3, 5), (5, 8)]
    x = np.random.default_rng(7).normal(0, 0.05, (3, 10)).astype(np.float32)  # sparse operands: idle rows
    T = 4
    res = simulator.run(net, x, T, record=["a", "b"])
    a = res.spikes["a"].reshape(3, T, M, K_) != 0
    b = res.spikes["b"].reshape(3, T, NN, K_).transpose(0, 1, 3, 2) != 0 if transpose else \
        res.spikes["b"].reshape(3, T, K_, NN) != 0
    row_events = a.sum(3)  # (samples, T, M): events of A in each row i
    col_events = b.sum(2)  # (samples, T, N): events of B in each column j
    owner = net.cores.core_of(k, (M, NN)).reshape(M, NN)
    want = np.zeros((T, len(net.cores.population)))
    for i in range(M):
        for j in range(NN):
            want[:, owner[i, j]] += 2 * row_events[:, :, i].sum(0) + col_events[:, :, j].sum(0)
    got = res.counter("synops")
    np.testing.assert_array_equal(got[:, cores], want[:, cores])
    assert np.all(want[:, cores].sum(0) > 0)  # every core of the node does some of the work
    # a product has input in a step when its row of A or its column of B sent an event: active on its own core
    active = (row_events[:, :, :, None] > 0) | (col_events[:, :, None, :] > 0)  # (samples, T, M, N)
    want_active = np.zeros((T, len(net.cores.population)))
    np.add.at(want_active.T, owner.reshape(-1), active.sum(0).reshape(T, -1).T)
    np.testing.assert_array_equal(res.counter("active_neurons")[:, cores], want_active[:, cores])
    any_event = (row_events.sum(2) + col_events.sum(2)) > 0  # (samples, T): the node had some input
    assert 0 < want_active.sum() < any_event.sum() * M * NN  # not every product whenever any operand event came
    # an operand event is sent to the cores holding its row (A) or column (B), not to all of the node's cores
    row_cores = np.array([len(np.unique(owner[i])) for i in range(M)])
    col_cores = np.array([len(np.unique(owner[:, j])) for j in range(NN)])
    packets = res.counter("packets").sum(0)
    for name, sent in (("a", (row_events * row_cores).sum()), ("b", (col_events * col_cores).sum())):
        src = np.flatnonzero(net.cores.population == [p.name for p in net.populations].index(name))
        assert packets[src].sum() == sent and sent < 3 * (row_events.sum() if name == "a" else col_events.sum())
        # the mapper sees those flows: an edge from the operand's core into each core of the node it reaches
        assert set(net.core_edges.dst[np.isin(net.core_edges.src, src)]) == set(cores)


@pytest.mark.parametrize("m, k, n, transpose", [(3, 2, 4, False), (4, 3, 2, True), (1, 5, 3, False)])
def test_matmul_fan_into_every_tile_and_range_equals_brute_force(m, k, n, transpose):
    """The mapper's fan of each operand element into a tile (0, 1, r0, r1, c0, c1) or range of (M, N) products:
    an element of A (i, k) reaches the products of row i held there, one of B (k, j) those of column j."""
    from spikeforge.converter.mapping import fan_into_box, fan_into_range

    a_shape, b_shape = (m, k), ((n, k) if transpose else (k, n))
    projs = {"a": Projection("a_k", "matmul_a", "a", "p"), "b": Projection("b_k", "matmul_b", "b", "p",
                                                                          transpose=transpose)}

    def brute(kind, held):  # held: (M, N) bool, the products in the tile or range
        out = np.zeros(m * k if kind == "a" else k * n, np.int64)
        for e in range(len(out)):
            if kind == "a":
                out[e] = held[e // k].sum()
            else:
                r, c = divmod(e, b_shape[1])
                j = r if transpose else c  # a transposed source element (j, k) is B's (k, j)
                out[e] = held[:, j].sum()
        return out

    for kind, shape in (("a", a_shape), ("b", b_shape)):
        for r0 in range(m):
            for r1 in range(r0 + 1, m + 1):
                for c0 in range(n):
                    for c1 in range(c0 + 1, n + 1):
                        held = np.zeros((m, n), bool)
                        held[r0:r1, c0:c1] = True
                        fan = fan_into_box(projs[kind], shape, (m, n), (0, 1, r0, r1, c0, c1))
                        got = np.zeros(int(np.prod(shape)), np.int64)
                        got[fan.index] = fan.count
                        np.testing.assert_array_equal(got, brute(kind, held))
        for start in range(m * n):
            for stop in range(start + 1, m * n + 1):
                held = np.zeros(m * n, bool)
                held[start:stop] = True
                np.testing.assert_array_equal(fan_into_range(projs[kind], shape, (m, n), start, stop),
                                              brute(kind, held.reshape(m, n)))


def _attention_product(tokens=40, inner=24):
    """Q (tokens x inner) · Kᵀ as one ec_matmul node of tokens x tokens products, operands from an input."""
    rng = np.random.default_rng(2)
    pops = [Population.make("in", "input", (8,)),
            Population.make("q", "multi_threshold", (tokens, inner), 0.5, 0.0, levels=2, threshold_neg=0.5),
            Population.make("kt", "multi_threshold", (tokens, inner), 0.5, 0.0, levels=2, threshold_neg=0.5),
            Population.make("qk", "ec_matmul", (tokens, tokens), 0.0, 0.0),
            Population.make("out", "readout", (tokens, tokens))]
    projs = [Projection("in_q", "dense", "in", "q", rng.normal(0, 0.7, (tokens * inner, 8)).astype(np.float32)),
             Projection("in_k", "dense", "in", "kt", rng.normal(0, 0.7, (tokens * inner, 8)).astype(np.float32)),
             Projection("q_qk", "matmul_a", "q", "qk"), Projection("k_qk", "matmul_b", "kt", "qk", transpose=True),
             Projection("qk_out", "identity", "qk", "out")]
    return Network(pops, projs, *one_population_per_core(pops, projs), {})


def test_attention_products_cut_into_tiles_need_fewer_cores_and_compute_the_same(tmp_path):
    """40 x 40 products of a 24-wide inner dimension on cores of 256 axons: a range of products along rows needs
    all of B's columns that its rows cross (24 x 40 = 960 axons for any range of 40 or more), so ranges hold at most
    9 products (1 row of A, 9 columns: 240 axons) and need at least 178 cores; tiles of 5 x 5 products need
    24 x 10 = 240 axons and 64 cores (6 x 4 tiles: 70, 7 x 3: 84). Both are within every limit; written, read back
    and run, they give the unmapped outputs."""
    import dataclasses

    from spikeforge.converter.mapping import _over, core_load, map_network
    from spikeforge.hwmodels import load_target

    loihi = load_target("loihi")
    limits = dict(loihi.limits, axons_per_core=256)
    net = _attention_product()
    x = np.random.default_rng(3).normal(0, 1, (2, 8)).astype(np.float32)
    flat = simulator.run(net, x, 3)
    cores = {}
    for tiles in (False, True):
        target = dataclasses.replace(loihi, limits=dict(limits, box_partition=1.0 if tiles else 0.0))
        mapped = map_network(net, target, placement="snake")
        on = np.flatnonzero(mapped.cores.population == 3)
        cores[tiles] = len(on)
        for c in on:
            box = tuple(int(v) for v in mapped.cores.box[c]) if mapped.cores.is_box(c) else None
            load = core_load(mapped, mapped.populations[3], int(mapped.cores.neuron_start[c]),
                             int(mapped.cores.neuron_stop[c]), target.limits, box=box)
            assert not _over(load, target.limits) and load.axons <= 256
        write_network(mapped, tmp_path / f"qk{int(tiles)}.h5")
        res = simulator.run(tmp_path / f"qk{int(tiles)}.h5", x, 3)
        np.testing.assert_array_equal(res.output, flat.output)
    assert cores[True] == 64 and cores[False] >= 178


def test_analog_matmul_operand_counts_macs():
    """An operand from a compute node carries analog values: its M operations per event are MACs, the spiking
    operand's 2N per event stay accumulations (FORMAT.md, ec_matmul)."""
    net = _matmul_net()
    net.populations[2] = Population.make("b", "ec", (K_ * NN,), 0.0, 0.0, function="gelu")
    x = np.random.default_rng(6).normal(0, 1, (3, 10)).astype(np.float32)
    T = 3
    res = simulator.run(net, x, T, record=["a"])
    events_a = np.count_nonzero(res.spikes["a"])
    assert res.counter("synops").sum(0)[3] == 2 * NN * events_a
    assert res.counter("macs").sum(0)[3] == M * 3 * T * K_ * NN  # every GELU output is nonzero


def _analog_product(net, x):
    w_a, w_b = net.projections[0].weight.astype(np.float64), net.projections[1].weight.astype(np.float64)
    a = x.astype(np.float64) @ w_a.T  # two-sided multi-threshold populations are linear in the ANN view
    b = x.astype(np.float64) @ w_b.T
    b = b.reshape(-1, NN, K_).transpose(0, 2, 1) if net.projections[3].transpose else b.reshape(-1, K_, NN)
    return (a.reshape(-1, M, K_) @ b).reshape(len(x), -1)


@pytest.mark.parametrize("kwargs, problem", [
    (dict(bias=0.5), "take no bias"),
    (dict(out_kind="matmul_a"), "matmul_a projection into a 'readout' population"),
    (dict(b_size=10), r"sizes 6 \(A\) and 10 \(B\) do not make"),
])
def test_bad_ec_matmul_nodes_are_rejected(tmp_path, kwargs, problem):
    with pytest.raises(NetworkFileError, match=problem):
        write_network(_matmul_net(**kwargs), tmp_path / "bad.h5")


def test_exported_vit_engine_equals_file_reference_spike_for_spike(tmp_path):
    """An untrained DigitsViT written by export_ecmt: every population's spikes in the engine equal the torch
    reference of the file, whose output equals the ops-interface reference (float32 weights: 1e-6)."""
    from spikeforge.converter.ecmt import collect_thresholds, ecmt_forward
    from spikeforge.converter.ecmt_export import export_ecmt
    from spikeforge.models import DigitsViT

    torch.manual_seed(0)
    vit = DigitsViT().eval()
    x = torch.rand(6, 1, 8, 8) * 16
    thresholds = collect_thresholds(vit, [x])
    net = export_ecmt(vit, thresholds, (1, 8, 8))
    models = [p.model for p in net.populations]
    assert models.count("ec_matmul") == 2 * 2 * 4  # per block: 2 products x 4 heads
    functions = [p.function for p in net.populations if p.model == "ec"]
    # per block LN, LN, GELU and a softmax per head; the final LN; relays carry the residual stream into
    # block0.ln2, block1.ln1 and block1.ln2 (each reads the previous stream point plus its branch)
    assert [functions.count(f) for f in ("layernorm", "softmax", "gelu", "identity")] == [5, 8, 2, 3]
    kinds = [q.kind for q in net.projections]
    assert kinds.count("pointwise") > 30 and kinds.count("dense") + kinds.count("sparse") < 10
    write_network(net, tmp_path / "vit.h5")
    res = simulator.run(tmp_path / "vit.h5", x.numpy(), 3, record_counts=True)
    out, rec = SpikingNetwork(load_network(tmp_path / "vit.h5"))(x, 3)
    for name, counts in rec.spike_counts.items():
        np.testing.assert_array_equal(res.spike_counts[name], counts.numpy(), err_msg=name)
    np.testing.assert_allclose(res.output, out.numpy(), rtol=1e-9, atol=1e-12)
    ref, _ = ecmt_forward(vit.double(), x.double(), 3, thresholds, n=4)
    np.testing.assert_allclose(res.output, ref.numpy(), rtol=1e-5, atol=1e-6)



def _count_passes(monkeypatch):
    """Record (source, last, nodes seen) of every probe pass the exporter runs (a list, filled as they run)."""
    from spikeforge.converter import ecmt_export

    passes, real = [], ecmt_export._Exporter._pass

    def counted(self, source, rows, on_input, last=None, leaves=None):
        ops = real(self, source, rows, on_input, last, leaves)
        passes.append((source, last, ops.position))
        return ops

    monkeypatch.setattr(ecmt_export._Exporter, "_pass", counted)
    return passes


def test_export_reads_the_residual_streams_image_map_once_and_stops_passes_early(monkeypatch):
    """The image reaches every LayerNorm on the residual stream through the same map: one full probe reads it and
    those nodes share it (checked against each node's own random-row responses); a full probe's passes end at the
    last node they are for (at ImageNet size a pass through the whole model per 1,024 pixels is what made the
    export too slow). The network written is the one the per-node probes gave (the test above checks its spikes)."""
    from spikeforge.converter import ecmt_export
    from spikeforge.converter.ecmt import collect_thresholds
    from spikeforge.models import DigitsViT

    torch.manual_seed(0)
    vit = DigitsViT().eval()
    thresholds = collect_thresholds(vit, [torch.rand(6, 1, 8, 8) * 16])
    passes = _count_passes(monkeypatch)
    model = copy.deepcopy(vit).double()
    with torch.no_grad():
        exporter = ecmt_export._Exporter(model, thresholds, (1, 8, 8), 4, "graded", None, None)
        nodes = exporter.run()
    readers = [n for n in nodes if "input" in n.terms]
    assert [n.name for n in readers] == ["block0_ln1", "block0_ln2", "block1_ln1", "block1_ln2"]
    assert all(n.terms["input"] is readers[0].terms["input"] for n in readers)
    probes = [(last, seen) for source, last, seen in passes if source == "input"]
    assert len(probes) == 3  # the structured probe (1 + 2 rows), then the patch probe: patches, then offsets
    assert probes[0] == (exporter.order["ln"], exporter.order["ln"] + 1)  # the last node reading the stream
    assert probes[1] == probes[2] == (exporter.order["block0_ln1"], exporter.order["block0_ln1"] + 1)  # its leader


def test_a_patch_embeddings_map_read_in_two_passes_equals_the_full_probes(monkeypatch):
    """The image enters through a Conv2d with kernel == stride: the patch probe (rows of random values on one patch,
    then rows of 1 at one offset of every patch) reads the same map as a unit row per pixel, in 2 passes whatever
    the image size; the network written is the same, weight for weight."""
    from spikeforge.converter import ecmt_export
    from spikeforge.converter.ecmt import collect_thresholds
    from spikeforge.models import ViT

    torch.manual_seed(0)
    vit = ViT(3, 16, 4, 32, 1, 2, 64, classes=4).eval()  # 16 patches of 4 x 4 x 3 = 48 offsets: 768 pixels
    thresholds = collect_thresholds(vit, [torch.rand(6, 3, 16, 16)])
    passes = _count_passes(monkeypatch)
    two = ecmt_export.export_ecmt(vit, thresholds, (3, 16, 16), chunk_rows=64)
    assert sum(source == "input" for source, _, _ in passes) == 3  # structured, patches, offsets
    passes.clear()
    monkeypatch.setattr(ecmt_export._Exporter, "_patch_probe", lambda self, src, leaders, verify: leaders)
    full = ecmt_export.export_ecmt(vit, thresholds, (3, 16, 16), chunk_rows=64)
    assert sum(source == "input" for source, _, _ in passes) == 1 + 768 // 64  # a unit row per pixel
    _assert_same_network(two, full)


def test_export_probes_end_at_each_sources_last_reader_and_write_the_same_network(monkeypatch):
    """Each node's probe passes stop at the last node that reads its output (found once by following autograd from
    every node's input back to the node outputs it is computed from): a query head, read only by its attention
    product, stops at itself; an MLP output, on the residual stream, at the final LayerNorm. The network written is
    the one whole-model passes give, weight for weight, in fewer node visits."""
    from spikeforge.converter import ecmt_export
    from spikeforge.converter.ecmt import collect_thresholds
    from spikeforge.models import DigitsViT

    torch.manual_seed(0)
    vit = DigitsViT().eval()
    thresholds = collect_thresholds(vit, [torch.rand(6, 1, 8, 8) * 16])
    passes = _count_passes(monkeypatch)
    with torch.no_grad():
        exporter = ecmt_export._Exporter(copy.deepcopy(vit).double(), thresholds, (1, 8, 8), 4, "graded", None, None)
    order, last = exporter.order, exporter.last
    assert last["block0_q_h0"] == order["block0_q_h0"] and last["block1_av_h2"] == order["block1_proj_in"]
    assert last["block0_gelu"] == order["block0_fc2_in"] and last["block0_fc2_in"] == order["ln"]
    assert last["ln"] == order["head_in"]
    # a head's softmax reaches its attention population through the heads' stack, which autograd sees whole
    assert order["block0_attn_h1"] <= last["block0_softmax_h1"] <= order["block0_attn_h3"]
    passes.clear()
    stopped = ecmt_export.export_ecmt(vit, thresholds, (1, 8, 8))
    stopped_visits = sum(seen for _, _, seen in passes)  # the tracing pass that finds the stops included
    passes.clear()
    monkeypatch.setattr(ecmt_export._Exporter, "_last_targets", lambda self: {})
    whole = ecmt_export.export_ecmt(vit, thresholds, (1, 8, 8))
    assert stopped_visits < 0.7 * sum(seen for _, _, seen in passes)
    _assert_same_network(stopped, whole)



def test_export_in_small_row_blocks_writes_the_same_network():
    """Probe rows go through the model chunk_rows at a time (memory: rows x the largest activation; a ViT-S/16's
    structured probe of a 197 x 1536 source is 1,735 rows): decisions are taken over all blocks, so 5 rows per pass
    give the network one pass gives, weight for weight."""
    from spikeforge.converter.ecmt import collect_thresholds
    from spikeforge.converter.ecmt_export import export_ecmt
    from spikeforge.models import DigitsViT

    torch.manual_seed(0)
    vit = DigitsViT().eval()
    thresholds = collect_thresholds(vit, [torch.rand(6, 1, 8, 8) * 16])
    whole, blocks = (export_ecmt(vit, thresholds, (1, 8, 8), chunk_rows=rows) for rows in (4096, 5))
    _assert_same_network(whole, blocks)


def _assert_same_network(a_net, b_net):
    """Same populations and projections, weight for weight and bias for bias."""
    assert [(q.name, q.kind) for q in a_net.projections] == [(q.name, q.kind) for q in b_net.projections]
    for a, b in zip(a_net.projections, b_net.projections):
        for key in ("weight", "indices", "indptr"):
            if getattr(a, key, None) is not None:
                assert np.array_equal(getattr(a, key), getattr(b, key)), (a.name, key)
    assert [p.name for p in a_net.populations] == [p.name for p in b_net.populations]
    for a, b in zip(a_net.populations, b_net.populations):
        assert np.array_equal(np.asarray(a.bias), np.asarray(b.bias)), a.name


def _pointwise_relay_net():
    """in (3, 6) -pointwise W1-> mt (3, 6) -pointwise W2-> relay (3, 4) <-pointwise W3- in; relay -identity->
    mt2 (3, 4) -dense-> readout (5,). W2 and W3 have zero entries (columns of unequal fan-out)."""
    rng = np.random.default_rng(7)
    w1 = rng.normal(0, 0.5, (6, 6)).astype(np.float32)
    w2 = (rng.normal(0, 0.5, (4, 6)) * (rng.random((4, 6)) < 0.6)).astype(np.float32)
    w3 = (rng.normal(0, 0.3, (4, 6)) * (rng.random((4, 6)) < 0.5)).astype(np.float32)
    pops = [Population.make("in", "input", (3, 6)),
            Population.make("mt", "multi_threshold", (3, 6), 0.2, 0.0, levels=3, threshold_neg=0.2),
            Population.make("relay", "ec", (3, 4), 0.0, 0.0, bias=0.05, function="identity"),
            Population.make("mt2", "multi_threshold", (3, 4), 0.1, 0.0, levels=2, threshold_neg=0.1),
            Population.make("out", "readout", (5,))]
    projs = [Projection("w1", "pointwise", "in", "mt", w1), Projection("w2", "pointwise", "mt", "relay", w2),
             Projection("w3", "pointwise", "in", "relay", w3), Projection("r", "identity", "relay", "mt2"),
             Projection("o", "dense", "mt2", "out", rng.normal(0, 0.5, (5, 12)).astype(np.float32))]
    return Network(pops, projs, *one_population_per_core(pops, projs), {}), (w1, w2, w3)


def test_pointwise_projection_and_relay_match_reference_and_hand_counts(tmp_path):
    """The engine equals the torch reference spike for spike; the counters equal hand counts: analog input
    through a pointwise map costs one MAC per nonzero weight of its column, a spike one AC per nonzero weight
    of its column, a relay computes nothing and its values reach mt2 through an identity (ACs, no MACs)."""
    net, (w1, w2, w3) = _pointwise_relay_net()
    write_network(net, tmp_path / "pw.h5")
    net = load_network(tmp_path / "pw.h5")
    B, T = 8, 6
    x = np.random.default_rng(8).normal(0, 1, (B, 18)).astype(np.float32)
    x[x < -0.8] = 0.0  # some zero inputs send no event
    res = simulator.run(net, x, T, record=["mt", "mt2"], record_counts=True)
    out, rec = SpikingNetwork(net, dtype=torch.float64)(torch.as_tensor(x), T)
    for name in ("mt", "mt2"):
        np.testing.assert_array_equal(res.spike_counts[name], rec.spike_counts[name].numpy())
    assert np.count_nonzero(res.spike_counts["mt2"]) > 0
    np.testing.assert_allclose(res.output, out.numpy(), rtol=1e-9, atol=1e-12)
    # the analog ANN the file describes: relay = W2·relu-free mt values + W3·x per row
    xin = x.reshape(B, 3, 6).astype(np.float64)
    ann = SpikingNetwork(net, dtype=torch.float64).analog_forward(torch.as_tensor(x)).numpy()
    h = xin @ w1.T.astype(np.float64)
    relay = h @ w2.T.astype(np.float64) + xin @ w3.T.astype(np.float64) + 0.05
    want = relay.reshape(B, 12) @ net.projections[-1].weight.T.astype(np.float64)
    np.testing.assert_allclose(ann, want, rtol=1e-5, atol=1e-5)
    per_core = lambda k: res.counter(k).sum(0)  # noqa: E731  (summed over samples and steps)
    fan1, fan2, fan3 = (np.count_nonzero(w, axis=0) for w in (w1, w2, w3))
    nz_cols = (x.reshape(B, 3, 6) != 0).sum((0, 1))  # nonzero inputs per channel
    assert per_core("macs")[1] == T * int(nz_cols @ fan1)
    events = (res.spikes["mt"] != 0).sum((0, 1)).reshape(3, 6).sum(0)  # mt events per channel
    assert per_core("synops")[2] == int(events @ fan2)
    assert per_core("macs")[2] == T * int(nz_cols @ fan3)
    assert per_core("macs")[3] == 0 and per_core("synops")[3] == B * T * 12  # bias 0.05: every relay value != 0
    assert per_core("macs")[2] + per_core("synops")[2] > 0 and per_core("macs")[0] == 0


def test_pointwise_geometry_and_mapping_fans_agree():
    from spikeforge.converter.mapping import fan_into_range
    from spikeforge.simulator.geometry import synapse_matrix, synapses_per_source

    net, (w1, w2, _) = _pointwise_relay_net()
    q = net.projections[1]
    m = synapse_matrix(q, (3, 6), (3, 4)).toarray()
    np.testing.assert_array_equal(m, np.kron(np.eye(3), w2))
    np.testing.assert_array_equal(synapses_per_source(q, (3, 6), (3, 4)), (m != 0).sum(0))
    for start, stop in ((0, 12), (1, 7), (5, 6), (4, 12)):
        np.testing.assert_array_equal(fan_into_range(q, (3, 6), (3, 4), start, stop),
                                      (m[start:stop] != 0).sum(0))


@pytest.mark.parametrize("weight_shape, problem", [((4, 5), "does not map source"), ((4,), "expected 2 dimensions")])
def test_bad_pointwise_projection_is_rejected(tmp_path, weight_shape, problem):
    net, _ = _pointwise_relay_net()
    net.projections[1].weight = np.ones(weight_shape, np.float32)
    with pytest.raises(NetworkFileError, match=problem):
        write_network(net, tmp_path / "bad.h5")


def test_relays_carry_the_residual_stream_once_and_change_no_result():
    """With relays the input image reaches only the first stream relay (its 64 pixels x 32 channels of the patch
    embedding), and the network computes the same function with fewer synaptic events and MACs."""
    from spikeforge.converter.ecmt import collect_thresholds
    from spikeforge.converter.ecmt_export import export_ecmt
    from spikeforge.models import DigitsViT

    torch.manual_seed(1)
    vit = DigitsViT().eval()
    x = torch.rand(5, 1, 8, 8) * 16
    thresholds = collect_thresholds(vit, [x])
    folded, relayed = (export_ecmt(vit, thresholds, (1, 8, 8), relays=r) for r in (False, True))
    from_input = lambda net: [q for q in net.projections if q.source == "input"]  # noqa: E731
    # folded: the image reaches both LNs of both blocks (not the final LN: the class token never sees it directly)
    assert sorted(q.target for q in from_input(folded)) == ["block0_ln1", "block0_ln2", "block1_ln1", "block1_ln2"]
    (q,) = from_input(relayed)
    assert q.target == "block0_ln1_relay" and q.kind == "sparse" and len(q.indices) == 64 * 32
    res = {k: simulator.run(net, x.numpy(), 4) for k, net in (("folded", folded), ("relayed", relayed))}
    np.testing.assert_allclose(res["relayed"].output, res["folded"].output, rtol=1e-6, atol=1e-6)
    assert res["relayed"].total("synops") < res["folded"].total("synops")
    assert res["relayed"].total("macs") < res["folded"].total("macs")


def test_identity_before_an_engine_order_sum_leaves_the_source_values_alone():
    """An EC node fed by an identity projection first and a dense one second: the torch backend sums the dense
    currents in place in the engine's order, into its own tensor, never into the values the identity handed over
    (the same multi-threshold output a later readout projection reads)."""
    rng = np.random.default_rng(3)
    pops = [Population.make("in", "input", SHAPE),
            Population.make("mt", "multi_threshold", SHAPE, 0.25, 0.0, levels=3, threshold_neg=0.25),
            Population.make("mt2", "multi_threshold", SHAPE, 0.125, 0.0, levels=3, threshold_neg=0.125),
            Population.make("ec", "ec", SHAPE, 0.0, 0.0, function="gelu"),
            Population.make("out", "readout", (5,))]
    projs = [Projection("in_mt", "dense", "in", "mt", rng.normal(0, 0.6, (N, N)).astype(np.float32)),
             Projection("in_mt2", "dense", "in", "mt2", rng.normal(0, 0.6, (N, N)).astype(np.float32)),
             Projection("mt_ec", "identity", "mt", "ec"),
             Projection("mt2_ec", "dense", "mt2", "ec", rng.normal(0, 0.5, (N, N)).astype(np.float32)),
             Projection("mt_out", "dense", "mt", "out", rng.normal(0, 0.5, (5, N)).astype(np.float32)),
             Projection("ec_out", "dense", "ec", "out", rng.normal(0, 0.5, (5, N)).astype(np.float32))]
    net = Network(pops, projs, *one_population_per_core(pops, projs), {})
    x = rng.normal(0, 1, (6, N)).astype(np.float32)
    ref = simulator.run(net, x, 4, record_counts=True)
    res = simulator.run(net, x, 4, record_counts=True, backend="torch", device="cpu")
    np.testing.assert_allclose(res.output, ref.output, rtol=1e-9, atol=1e-12)
    assert np.array_equal(res.per_sample, ref.per_sample)
