"""Cores that hold boxes of (C, H, W) populations (format 1.9) and Loihi's synapse lists
(spikeforge.converter.synapse_memory): the chip's own mapping of SANA-FE's DVS-gesture network, list words counted
by hand, the reader's checks of boxes, and both backends on a box-mapped network (the suite's autouse fixture runs
every numba simulation on the torch backend too and asserts identical spikes and counters)."""
import h5py
import numpy as np
import pytest

from spikeforge import simulator
from spikeforge.converter import writer
from spikeforge.converter.mapping import _over, core_load, map_network, one_population_per_core, partition
from spikeforge.converter.synapse_memory import list_words, shared_conv_lists
from spikeforge.converter.writer import write_network
from spikeforge.hwmodels import core_memory, estimate, load_target
from spikeforge.simulator.fileformat import FORMAT_VERSION
from spikeforge.simulator.network import Network, Population, Projection, box_indices

LISTS = {"neurons_per_core": 1024, "axons_per_core": 4096, "synapse_memory_bytes_per_core": 131072,
         "weight_bits": 8, "cores_per_chip": 128, "synapse_word_bits": 64, "list_entry_header_bits": 10,
         "synapses_per_list_entry": 60, "min_index_bits": 6, "conv_list_sharing": 1, "cx_base_groups": 16}


def _dvs_like(seed=0):
    """SANA-FE's DVS-gesture network's shapes (32x32 input, 3x3 convs of 16 (stride 2), 32, 64 and 11 channels,
    dense 11) with random weights: what maps where does not depend on the weights' values."""
    rng = np.random.default_rng(seed)
    pops = [Population.make("in", "input", (1, 32, 32))]
    projs, shape, prev = [], (1, 32, 32), "in"
    for i, (c, s) in enumerate(((16, 2), (32, 1), (64, 1), (11, 1)), 1):
        h = (shape[1] - 3) // s + 1
        w = rng.normal(0, 0.3, (c, shape[0], 3, 3)).astype(np.float32)
        shape = (c, h, h)
        pops.append(Population.make(f"conv{i}", "if", shape, 1.0, 0.0))
        projs.append(Projection(f"w{i}", "conv2d", prev, f"conv{i}", w, kernel=(3, 3), stride=(s, s)))
        prev = f"conv{i}"
    pops.append(Population.make("dense", "readout", (11,)))
    projs.append(Projection("fc", "dense", prev, "dense", rng.normal(0, 0.1, (11, 891)).astype(np.float32)))
    return Network(pops, projs, None, None, {"name": "dvs-like"})


def _tile(box):
    return tuple(int(box[k + 1] - box[k]) for k in (0, 2, 4))


def test_dvs_gesture_network_maps_onto_the_chips_cores_layer_by_layer():
    """The chip (SANA-FE snn/dvs.yaml, made by Intel's compiler) used input 1, conv1 8, conv2 8, conv3 22, conv4 9,
    dense 1 = 49 cores, with tiles (channels x rows x columns) conv2 4x13x13, conv3 32x1x11, conv4 11x1x9 and conv1
    16x15x2 (here 16x2x15: rows are cut before columns; the count is the same)."""
    net = map_network(_dvs_like(), load_target("loihi"), placement="snake")
    cores = net.cores
    per_layer = [int((cores.population == i).sum()) for i in range(len(net.populations))]
    assert per_layer == [1, 8, 8, 22, 9, 1]
    first = {int(p): _tile(cores.box[np.flatnonzero(cores.population == p)[0]]) for p in range(1, 5)}
    assert first == {1: (16, 2, 15), 2: (4, 13, 13), 3: (32, 1, 11), 4: (11, 1, 9)}


def test_every_core_of_the_dvs_mapping_is_within_the_loihi_limits_and_conv1_is_bound_by_output_axons():
    target = load_target("loihi")
    limits = target.limits
    parts = partition(_dvs_like(), limits)
    for _, _, _, load, _ in parts:
        assert _over(load, limits) == []
    conv1 = [load for pi, _, _, load, _ in parts if pi == 1]
    # conv2 is cut into 8 channel tiles: every conv1 neuron sends one axon to each of them, 480 x 8 entries
    assert max(load.output_axons for load in conv1) == 480 * 8
    # without the output-axon limit, conv1's memory and neurons allow 4 cores (960 neurons)
    loose = partition(_dvs_like(), dict(limits, output_axons_per_core=0))
    assert sum(1 for p in loose if p[0] == 1) == 4


def test_shared_conv_lists_counted_by_hand():
    """A 5x5 input, one 3x3 kernel, valid: the 3x3 output on one core. Input columns 0..4 reach output columns
    {0}, {0,1}, {0,1,2}, {1,2}, {2}; destination groups: column 0 (3 compartments), then columns 1-2 (6): G = 2,
    padded to 2 x 6 = 12 compartments. Offsets (row 0) of columns 0, 1, 2: 0, 1, 1 + 2·3 = 7; the five input
    columns' patterns are distinct, of 1, 2, 3, 2, 1 kernel columns. Every input row (5) reaching the box keeps one
    list per pattern, padded to its longest row (3 kernel rows): 3·c synapses, 10 + 3c·(8 + 6) bits -> 1, 2, 3, 2,
    1 words: 5 x 9 = 45 words."""
    net = Network([Population.make("in", "input", (1, 5, 5)), Population.make("o", "if", (1, 3, 3), 1.0, 0.0)],
                  [Projection("k", "conv2d", "in", "o", np.ones((1, 1, 3, 3), np.float32), kernel=(3, 3))],
                  None, None, {})
    shared = shared_conv_lists(net.projections[0], (1, 5, 5), (1, 3, 3), (0, 1, 0, 3, 0, 3), LISTS)
    assert (shared.words, shared.compartments, shared.groups) == (45, 12, 2)
    load = core_load(net, net.populations[1], 0, 9, dict(LISTS, box_partition=1), box=(0, 1, 0, 3, 0, 3))
    assert load.synapse_bytes == 45 * 8 and load.compartments == 12 and load.axons == 25


def test_dense_lists_use_the_dense_encoding_by_hand():
    """100 inputs into 20 neurons on one core: each input's list of 20 contiguous targets, one entry: dense
    (10 + 6) + 20·8 = 176 bits = 3 words (sparse would be 10 + 20·14 = 290 bits, 5 words); 100 lists = 2,400 B."""
    assert int(list_words(20, LISTS, 6, contiguous=True)) == 3 and int(list_words(20, LISTS, 6)) == 5
    net = Network([Population.make("in", "input", (100,)), Population.make("h", "if", (20,), 1.0, 0.0)],
                  [Projection("w", "dense", "in", "h", np.ones((20, 100), np.float32))], None, None, {})
    assert core_load(net, net.populations[1], 0, 20, LISTS).synapse_bytes == 2400


def test_output_axons_of_a_layer_follow_how_the_next_layer_was_cut():
    """o (600 neurons, 100 per core) takes 6 cores; every h neuron reaches all 6: 100 x 6 = 600 output axon
    entries on h's core, over a limit of 300, so h is cut in two (50 x 6 = 300)."""
    pops = [Population.make("in", "input", (4,)), Population.make("h", "if", (100,), 1.0, 0.0),
            Population.make("o", "if", (600,), 1.0, 0.0)]
    projs = [Projection("a", "dense", "in", "h", np.ones((100, 4), np.float32)),
             Projection("b", "dense", "h", "o", np.ones((600, 100), np.float32))]
    limits = dict(LISTS, neurons_per_core=100, output_axons_per_core=300)
    parts = partition(Network(pops, projs, None, None, {}), limits)
    assert [(p[0], p[1], p[2], p[3].output_axons) for p in parts if p[0] == 1] == [(1, 0, 50, 300), (1, 50, 100, 300)]
    assert [p[3].output_axons for p in parts if p[0] == 0] == [8]  # each input reaches h's 2 cores


def test_a_box_mapped_network_round_trips_and_runs_like_the_unmapped_one(tmp_path):
    """Written (format 1.9, /mapping/cores/box) and read back; the same outputs and spike counts as on one core per
    population; each population's per-core counters add up to the same totals; numba == torch (fixture)."""
    net = _dvs_like()
    mapped = map_network(net, load_target("loihi"), placement="snake")
    write_network(mapped, tmp_path / "box.h5")
    with h5py.File(tmp_path / "box.h5") as h5:
        assert h5.attrs["format_version"] == FORMAT_VERSION and h5["mapping/cores/box"].shape == (49, 6)
    back = simulator.load_network(tmp_path / "box.h5")
    np.testing.assert_array_equal(back.cores.box, mapped.cores.box)
    cores, edges = one_population_per_core(net.populations, net.projections)
    write_network(Network(net.populations, net.projections, cores, edges, {"name": "flat"}), tmp_path / "flat.h5")
    x = np.random.default_rng(1).random((3, 1, 32, 32)).astype(np.float32) * 0.6
    a = simulator.run(tmp_path / "flat.h5", x, 6, record_counts=True)
    b = simulator.run(tmp_path / "box.h5", x, 6, record_counts=True)
    np.testing.assert_array_equal(a.output, b.output)
    for name in ("synops", "spikes", "neuron_updates", "active_neurons"):
        assert a.total(name) == b.total(name)
    spikes = b.counters[..., simulator.COUNTERS.index("spikes")].sum(0)
    conv3 = np.flatnonzero(back.cores.population == 3)
    counts = b.spike_counts["conv3"].sum(0).reshape(-1)
    assert [int(spikes[c]) for c in conv3] == [int(counts[box_indices(back.cores.box[c], (64, 11, 11))].sum())
                                              for c in conv3]
    assert b.total("packets") > a.total("packets")
    labels = [back.populations[int(p)].name for p in back.cores.population]
    cost = estimate(b.counters, simulator.COUNTERS, len(x), load_target("loihi"), labels, core_memory(back))
    assert cost.steps == 6 + 5 and cost.dynamic_total_pj > 0  # T + the 5 pipelined layers after the input


def _copy_core(cores, src, dst):
    for a in (cores.box, cores.neuron_start, cores.neuron_stop):
        a[dst] = a[src]


@pytest.mark.parametrize("edit,problem", [
    (lambda c: c.box.__setitem__((3, 1), 40), "outside population 'conv1'"),
    (lambda c: c.box.__setitem__((3, 5), 14), "are not its box's span"),
    (lambda c: _copy_core(c, 2, 3), "is on 2 cores, not one"),
    (lambda c: c.box.__setitem__((48,), [0, 1, 0, 1, 0, 1]), "boxes are of (C, H, W) or (M, N) populations"),
    (lambda c: c.box.__setitem__((5, 0), -2), "neither a box"),
])
def test_bad_boxes_are_refused_naming_the_core(tmp_path, edit, problem):
    mapped = map_network(_dvs_like(), load_target("loihi"), placement="snake")
    edit(mapped.cores)
    with pytest.raises(simulator.NetworkFileError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        simulator.validate_network(mapped)
    path = tmp_path / "bad.h5"  # and in a file: the reader runs the same checks
    writer.write_hdf5(str(path), lambda h5: writer._fill(h5, mapped, None, "test"))
    with pytest.raises(simulator.NetworkFileError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        simulator.load_network(path)


def _windows_net(rng, k, s, p, kind, groups, residual):
    """in (C, 13, 13) -> a window projection (conv2d of kernel k, stride s, pad p, groups; or avg / max pooling)
    -> o, with optionally a second input `r` of o's shape read by identity, or `d` read densely."""
    c = 4
    pops = [Population.make("in", "input", (c, 13, 13))]
    h = (13 + 2 * p - k) // s + 1
    c_out = 6 if kind == "conv2d" else c
    if kind == "conv2d":
        w = rng.normal(0, 0.3, (c_out, c // groups, k, k)).astype(np.float32)
        projs = [Projection("w", "conv2d", "in", "o", w, kernel=(k, k), stride=(s, s), padding=(p, p),
                            groups=groups)]
    else:
        projs = [Projection("w", kind, "in", "o", None, kernel=(k, k), stride=(s, s), padding=(p, p))]
    if residual == "identity":
        pops.append(Population.make("r", "input", (c_out, h, h)))
        projs.append(Projection("skip", "identity", "r", "o", None))
    elif residual == "dense":
        pops.append(Population.make("d", "input", (5,)))
        projs.append(Projection("fc", "dense", "d", "o", rng.normal(0, 0.1, (c_out * h * h, 5)).astype(np.float32)))
    pops.append(Population.make("o", "if", (c_out, h, h), 1.0, 0.0))
    return Network(pops, projs, None, None, {})


@pytest.mark.parametrize("limits", [dict(LISTS, neurons_per_core=12, box_partition=1, chips=8),
                                    dict(LISTS, neurons_per_core=30, conv_list_sharing=0, box_partition=1),
                                    dict(load_target("loihi").limits, neurons_per_core=20)])
def test_boxes_moved_from_a_translation_have_the_loads_computed_box_by_box(limits, monkeypatch):
    """Every box's load (neurons, axons, synapse bytes, compartments, groups, output axons and each source's fan,
    index by index) is the same whether moved from a translated box or computed afresh, for convolutions of
    every kernel, stride, padding and grouping, pooling, and a second input read by identity or densely; and
    moves are made."""
    from spikeforge.converter import mapping

    rng = np.random.default_rng(3)
    moved = []
    load = mapping._Translations.load

    def counting(self, box):
        hit = load(self, box)
        moved.append(hit is not None)
        return hit

    cases = [(k, s, p, kind, g, r) for k in (1, 3, 5) for s in (1, 2, 3) for p in (0, 1, 2) if p < k
             for kind, g in (("conv2d", 1), ("conv2d", 2), ("avgpool", 1), ("maxpool", 1))
             for r in (None, "identity", "dense") if kind == "conv2d" or (r is None and k > 1)]
    for case in cases:
        net = _windows_net(rng, *case)
        monkeypatch.setattr(mapping._Translations, "load", lambda self, box: None)
        fresh = partition(net, limits)
        monkeypatch.setattr(mapping._Translations, "load", counting)
        mapped = partition(net, limits)
        assert [(p[0], p[1], p[2], p[4]) for p in mapped] == [(p[0], p[1], p[2], p[4]) for p in fresh], case
        for a, b in zip(mapped, fresh):
            la, lb = a[3], b[3]
            assert (la.neurons, la.axons, la.synapse_bytes, la.compartments, la.groups, la.output_axons) == \
                (lb.neurons, lb.axons, lb.synapse_bytes, lb.compartments, lb.groups, lb.output_axons), (case, a[4])
            assert la.fans.keys() == lb.fans.keys()
            for name in la.fans:
                assert np.array_equal(la.fans[name].index, lb.fans[name].index), (case, a[4], name)
                assert np.array_equal(la.fans[name].count, lb.fans[name].count), (case, a[4], name)
    assert sum(moved) > 500
