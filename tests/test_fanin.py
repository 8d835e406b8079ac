"""Fan-in splitting (converter/fanin.py): a layer whose neurons need more input axons than a core has becomes
partial-sum relays plus the layer. Graded relays (Loihi 2) reproduce the unsplit network exactly; spiking relays
(Loihi, TrueNorth) re-quantize as the chip would. Engine and torch backend agree on every run (conftest)."""
import json

import numpy as np
import pytest

from spikeforge import simulator
from spikeforge.converter.fanin import split_fan_in
from spikeforge.converter.mapping import MappingError, map_network, one_population_per_core
from spikeforge.simulator import Network, Population, Projection

C = simulator.COUNTERS


def _net(pops, projs, attrs=None):
    cores, edges = one_population_per_core(pops, projs)
    return Network(pops, projs, cores, edges, attrs or {})


def _limits(axons, graded, **kw):
    return dict(dict(neurons_per_core=64, cores_per_chip=4096, axons_per_core=axons, weight_bits=8, chips=1,
                     synapse_memory_bytes_per_core=1e9, spike_payload_bits=24 if graded else 0), **kw)


def _four_inputs():
    """in (4, analog 1) -> h (one IF neuron, θ 1, v0 0; weights 0.75 split as 0.5 + 0.25 and 0.25 - 0.5) -> out."""
    pops = [Population.make("in", "input", (4,)), Population.make("h", "if", (1,), 1.0, 0.0),
            Population.make("out", "readout", (1,))]
    projs = [Projection("a", "dense", "in", "h", np.array([[0.5, 0.25, 0.25, -0.5]], np.float32)),
             Projection("b", "dense", "h", "out", np.ones((1, 1), np.float32))]
    return _net(pops, projs)


def _on_core_of(res, net, name, counter):
    core = int(np.flatnonzero(res.core_population == net.index_of(name))[0])
    return res.counters[:, core, C.index(counter)]


def test_a_graded_split_gives_the_unsplit_spikes_and_counts_its_relays_events_by_hand():
    """4 input axons, 2 per core: 2 relays (sources 0-1 and 2-3) send 0.75 and -0.25 every step; h integrates
    0.5 per step as before and fires at steps 1, 3, 5. What the split adds: the relays' 2 neuron updates, 2 events
    (packets) and, at h, 2 accumulations per step; the 4 input MACs move from h's core to the relays' core."""
    net, T = _four_inputs(), 6
    split, splits = split_fan_in(net, _limits(2, graded=True))
    assert [(s.layer, s.parts, s.axons_before, s.relay_axons, s.soma_axons, s.relay) for s in splits] == \
        [("h", 2, 4, 2, 2, "graded")]
    assert [p.name for p in split.populations] == ["in", "h.part", "h", "out"]
    assert json.loads(split.attrs["fan_in_split"])[0]["parts"] == 2
    x = np.ones((1, 4))
    a = simulator.run(net, x, T, record=["h"])
    b = simulator.run(split, x, T, record=["h"])
    np.testing.assert_array_equal(a.spikes["h"][0, :, 0], [0, 1, 0, 1, 0, 1])
    np.testing.assert_array_equal(b.spikes["h"], a.spikes["h"])
    np.testing.assert_array_equal(b.output, a.output)
    np.testing.assert_array_equal(_on_core_of(a, net, "h", "macs"), [4] * T)
    np.testing.assert_array_equal(_on_core_of(b, split, "h.part", "macs"), [4] * T)
    np.testing.assert_array_equal(_on_core_of(b, split, "h", "macs"), [0] * T)
    np.testing.assert_array_equal(_on_core_of(b, split, "h", "synops"), [2] * T)
    np.testing.assert_array_equal(_on_core_of(b, split, "h.part", "packets"), [2] * T)
    np.testing.assert_array_equal(_on_core_of(b, split, "h.part", "neuron_updates"), [2] * T)


def test_spiking_relays_round_their_partial_sums_to_spikes_as_worked_by_hand():
    """Relays are signed IF neurons with θ = h's θ = 1 and v0 = 1/2. Relay 0 gets 0.75 per step: membranes 1.25,
    1.0, 0.75, 1.5, 1.25, 1.0 fire +1 at steps 0, 1, 3, 4, 5; relay 1 gets -0.25: it fires -1 at step 2 (m < 0).
    h (v0 0) receives 2, 1, -1... per step: +1, +1, -1, +1, +1, +1 and fires at 0, 1, 4, 5: 4 spikes where the
    unsplit layer fires 3 (the relays' rounding moves spikes; the chip computes this, not the ANN's 0.5)."""
    net, T = _four_inputs(), 6
    split, splits = split_fan_in(net, _limits(2, graded=False))
    assert splits[0].relay == "spiking"
    relay = split.population("h.part")
    assert relay.model == "signed" and relay.negative_slope == 1.0
    np.testing.assert_array_equal(relay.threshold, [1.0, 1.0])
    res = simulator.run(split, np.ones((1, 4)), T, record=["h.part", "h"])
    np.testing.assert_array_equal(res.spikes["h.part"][0], [[1, 0], [1, 0], [0, -1], [1, 0], [1, 0], [1, 0]])
    np.testing.assert_array_equal(res.spikes["h"][0, :, 0], [1, 1, 0, 0, 1, 1])
    np.testing.assert_array_equal(_on_core_of(res, split, "h", "synops"), [1, 1, 1, 1, 1, 1])


def test_calibration_sets_a_spiking_relay_layers_threshold_from_its_mean_partial_sums():
    """Constant input 1: the relays' mean partial sums per step are 0.75 and -0.25, so the layer's threshold is
    the 99.99th percentile of (0.75, 0.25) over 3 samples and v0 half of it."""
    split, _ = split_fan_in(_four_inputs(), _limits(2, graded=False), calibration=np.ones((3, 4)), steps=4)
    theta = np.percentile([0.75, 0.25] * 3, 99.99)  # 3 samples x 2 relays
    np.testing.assert_allclose(split.population("h.part").threshold, [theta, theta], rtol=1e-6)
    np.testing.assert_allclose(split.population("h.part").v_init, [theta / 2] * 2, rtol=1e-6)


def _conv_net(seed=0):
    """in (4, 6, 6) -> c1 (8 ch, 3x3, 36 axons) -> c2 (6 ch, 3x3 over 8 ch: 72 axons) -> fc (20, 216 axons) ->
    out; dyadic weights, so partial sums add up exactly in any order."""
    rng = np.random.default_rng(seed)

    def w(shape):
        return (rng.integers(-8, 9, shape) / 8).astype(np.float32)
    pops = [Population.make("in", "input", (4, 6, 6)), Population.make("c1", "if", (8, 6, 6), 1.0, 0.0),
            Population.make("c2", "if", (6, 6, 6), 1.0, 0.0), Population.make("fc", "if", (20,), 1.0, 0.0),
            Population.make("out", "readout", (5,))]
    projs = [Projection("a", "conv2d", "in", "c1", w((8, 4, 3, 3)), kernel=(3, 3), padding=(1, 1)),
             Projection("b", "conv2d", "c1", "c2", w((6, 8, 3, 3)), kernel=(3, 3), padding=(1, 1)),
             Projection("c", "dense", "c2", "fc", w((20, 216))),
             Projection("d", "dense", "fc", "out", w((5, 20)))]
    return _net(pops, projs)


def test_a_mapped_graded_split_of_a_conv_net_equals_the_unsplit_net_and_split_false_refuses():
    """40 axons per core: c2's 72 axons become 2 grouped-conv parts of 4 channels (36 axons) and a soma with 2;
    fc's 216 become 6 ranges of 36 sources and a soma with 6. Mapped with these parts, outputs and every layer's
    spike counts equal the unsplit network's."""
    net, limits = _conv_net(), _limits(40, graded=True)
    with pytest.raises(MappingError, match=r"layer 'c2': neuron 21 alone needs axons 72 but a core allows 40"):
        map_network(net, limits, placement="snake", split=False)
    mapped = map_network(net, limits, placement="snake")
    rows = json.loads(mapped.attrs["fan_in_split"])
    assert [(r["layer"], r["parts"], r["relay_axons"], r["soma_axons"]) for r in rows] == \
        [("c2", 2, 36, 2), ("fc", 6, 36, 6)]
    part = mapped.population("c2.part")
    assert part.shape == (12, 6, 6) and next(q for q in mapped.projections if q.target == "c2.part").groups == 2
    x = np.random.default_rng(1).random((3, 4, 6, 6))
    a = simulator.run(net, x, 8, record_counts=True)
    b = simulator.run(mapped, x, 8, record_counts=True)
    np.testing.assert_array_equal(b.output, a.output)
    for name in ("c1", "c2", "fc"):
        np.testing.assert_array_equal(b.spike_counts[name], a.spike_counts[name])
    assert b.total("packets") > a.total("packets")


def test_a_token_wise_map_splits_over_its_input_features():
    """pointwise (3 tokens, 8 -> 6 features), 6 axons per core: 2 parts of 4 features; the relays hold
    (3, 12) = part x output feature, the join sums the parts (the readout's 18 sources: 3 ranges of 6); graded:
    the unsplit outputs."""
    rng = np.random.default_rng(2)
    pops = [Population.make("in", "input", (3, 8)), Population.make("h", "if", (3, 6), 1.0, 0.0),
            Population.make("out", "readout", (4,))]
    projs = [Projection("a", "pointwise", "in", "h", (rng.integers(-4, 5, (6, 8)) / 4).astype(np.float32)),
             Projection("b", "dense", "h", "out", np.ones((4, 18), np.float32) / 4)]
    net = _net(pops, projs)
    split, splits = split_fan_in(net, _limits(6, graded=True, neurons_per_core=18))
    assert [(s.layer, s.parts, s.relay_axons) for s in splits] == [("h", 2, 4), ("out", 3, 6)]
    assert split.population("h.part").shape == (3, 12)
    x = rng.random((2, 3, 8))
    np.testing.assert_array_equal(simulator.run(split, x, 5).output, simulator.run(net, x, 5).output)


def test_splits_that_cannot_fit_are_refused_naming_the_layer_and_why():
    net = _conv_net()
    with pytest.raises(MappingError, match=r"layer 'c1'.* no split of 'a' fits: one input channel per part "
                                           r"already needs 9 axons \(a 3x3 kernel\) and a core allows 8"):
        split_fan_in(net, _limits(8, graded=True))
    fixed = _net(net.populations, net.projections, {"numeric_mode": "fixed"})
    with pytest.raises(MappingError, match="splitting the fan-in of a fixed-point network is not supported"):
        split_fan_in(fixed, _limits(40, graded=True))


def test_the_digits_resnet_on_truenorth_is_split_and_keeps_its_accuracy(trained_resnet, digits):
    """TrueNorth's 256 axons: block2's second convolution (304) and the readout (512) are split into spiking
    relays with thresholds from the calibration samples; the mapped network classifies the test digits within
    one point of the unsplit network's accuracy (T = 32)."""
    from spikeforge.converter.pipeline import ConvertSettings, convert_pipeline

    xtr, _, xte, yte = digits
    plain = convert_pipeline(trained_resnet, xtr[:256], ConvertSettings(percentile=99.9))
    split = convert_pipeline(trained_resnet, xtr[:256], ConvertSettings(percentile=99.9, target="truenorth",
                                                                        placement="snake", T=32))
    layers = [r["layer"] for r in json.loads(split.attrs["fan_in_split"])]
    assert layers == ["block2_act2", "readout"]
    x, y = xte[:300].numpy(), yte[:300].numpy()
    acc = [(simulator.run(n, x, 32).predictions() == y).mean() for n in (plain, split)]
    assert acc[1] >= acc[0] - 0.01, acc


def _three_sources():
    """in (4) -> a, b, c (6 IF each, random weights) -> s (3 IF) from all three (6 axons each: 18 in all) -> out."""
    rng = np.random.default_rng(3)
    pops = [Population.make("in", "input", (4,))]
    pops += [Population.make(n, "if", (6,), 1.0, 0.5) for n in "abc"]
    pops += [Population.make("s", "if", (3,), 1.0, 0.5), Population.make("out", "readout", (3,))]
    projs = [Projection(f"in_{n}", "dense", "in", n, rng.uniform(0, 0.6, (6, 4)).astype(np.float32)) for n in "abc"]
    projs += [Projection(f"{n}_s", "dense", n, "s", rng.uniform(-0.2, 0.5, (3, 6)).astype(np.float32))
              for n in "abc"]
    projs.append(Projection("s_out", "dense", "s", "out", np.eye(3, dtype=np.float32)))
    return _net(pops, projs)


def test_a_layer_fed_by_several_projections_is_split_into_relays_that_each_sum_whole_projections():
    """s needs 18 axons (6 from each of a, b, c), a core has 8, and no projection alone is over: each of three
    relays sums one whole projection (6 + 6 > 8), s receives 3 relays through identity joins. Graded relays give
    the unsplit spikes exactly; the relays add 3 x 3 neuron updates and, at s, 3 accumulations per relay event."""
    net, T = _three_sources(), 12
    split, splits = split_fan_in(net, _limits(8, graded=True))
    assert [(s.layer, s.parts, s.axons_before, s.relay_axons, s.soma_axons) for s in splits] == [("s", 3, 18, 6, 3)]
    assert [p.name for p in split.populations] == ["in", "a", "b", "c", "s.part", "s.part2", "s.part3", "s", "out"]
    assert sorted(q.name for q in split.incoming("s")) == ["s.part.join", "s.part2.join", "s.part3.join"]
    x = np.random.default_rng(0).uniform(0, 1, (4, 4))
    a = simulator.run(net, x, T, record=["s"])
    b = simulator.run(split, x, T, record=["s"])
    assert a.spikes["s"].sum() > 0
    np.testing.assert_array_equal(b.spikes["s"], a.spikes["s"])
    np.testing.assert_array_equal(b.output, a.output)
    assert b.total("neuron_updates") - a.total("neuron_updates") == 3 * 3 * T * len(x)
    mapped = map_network(net, _limits(8, graded=True))
    np.testing.assert_array_equal(simulator.run(mapped, x, T).output, a.output)
    # spiking relays (binary-spike chips) re-encode each group's sum; with calibration samples their θ is set
    spiking, _ = split_fan_in(net, _limits(8, graded=False), calibration=x, steps=T)
    assert all(p.model == "signed" for p in spiking.populations if ".part" in p.name)
    assert simulator.run(spiking, x, T).output.shape == a.output.shape


def test_the_reports_mapping_table_gives_each_layers_cores_chips_split_and_energy():
    """report.mapping_table over a mapped split network: one row per layer with its cores and chips, the split
    layer's parts and axons, its relay layers named as such, and each layer's dynamic energy (the energies add up
    to the target's dynamic total)."""
    from spikeforge.hwmodels import core_memory, estimate, load_target
    from spikeforge.report import mapping_table

    loihi2 = load_target("loihi2")
    mapped = map_network(_three_sources(), dict(loihi2.limits, axons_per_core=8))
    res = simulator.run(mapped, np.ones((2, 4)), 8)
    labels = [mapped.populations[int(i)].name for i in mapped.cores.population]
    cost = estimate(res.counters, C, 2, loihi2, labels, core_memory(mapped))
    table = mapping_table(mapped, [{"T": 8, "target": "loihi2", "cost": cost}])
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ") for line in table.splitlines()[2:]}
    assert set(rows) == {p.name for p in mapped.populations}
    assert rows["s"][4] == "3 parts: 18 -> 6 + 3 axons" and rows["s.part2"][4] == "relays of s"
    for name, cells in rows.items():
        assert int(cells[2]) == int((mapped.cores.population == mapped.index_of(name)).sum()) and cells[3] == "1"
    assert sum(float(c[5].strip(" |")) for c in rows.values()) == pytest.approx(sum(cost.dynamic_pj.values()) / 1e6,
                                                                                 rel=1e-3)


def test_a_layer_whose_other_inputs_fill_a_core_is_split_again_into_a_tree_of_relays():
    """s needs 18 axons (6 from each of a, b, c) and a core has 5: each projection alone is over, so each is cut
    in 2 parts (3 axons per relay), which leaves s with 6 join axons, and those joins are grouped into 2 relays
    of relays: s ends with 2 axons. Graded relays give the unsplit spikes exactly; the 5 relay layers (3 x 6 + 2 x
    3 neurons) add their neuron updates every step."""
    net, T = _three_sources(), 12
    split, splits = split_fan_in(net, _limits(5, graded=True))
    assert [(s.layer, s.parts, s.axons_before, s.relay_axons, s.soma_axons) for s in splits] == \
        [("s", 2, 18, 3, 14), ("s", 2, 14, 3, 10), ("s", 2, 10, 3, 6), ("s", 2, 6, 4, 2)]
    assert sorted(q.source for q in split.incoming("s")) == ["s.part4", "s.part5"]
    x = np.random.default_rng(0).uniform(0, 1, (4, 4))
    a, b = simulator.run(net, x, T, record=["s"]), simulator.run(split, x, T, record=["s"])
    assert a.spikes["s"].sum() > 0
    np.testing.assert_array_equal(b.spikes["s"], a.spikes["s"])
    assert b.total("neuron_updates") - a.total("neuron_updates") == (3 * 6 + 2 * 3) * T * len(x)


def test_a_fan_in_above_the_limit_squared_becomes_two_levels_of_relays_and_the_inner_ones_are_calibrated():
    """h's neurons read 30 inputs, a core has 5 (30 > 5²): 6 relays of 5 inputs per neuron, then their 6 joins
    cut into 2 relays of 3: h reads 2. Graded: the unsplit spikes exactly. Spiking relays with calibration
    samples: every relay layer, the inner one included, gets its threshold from its own partial sums."""
    rng = np.random.default_rng(1)
    pops = [Population.make("in", "input", (30,)), Population.make("h", "if", (2,), 1.0, 0.5),
            Population.make("out", "readout", (2,))]
    projs = [Projection("w", "dense", "in", "h", rng.uniform(-0.1, 0.2, (2, 30)).astype(np.float32)),
             Projection("h_out", "dense", "h", "out", np.eye(2, dtype=np.float32))]
    net, T = _net(pops, projs), 10
    split, splits = split_fan_in(net, _limits(5, graded=True))
    assert [(s.projection, s.parts, s.relay_axons, s.soma_axons) for s in splits] == [("w", 6, 5, 6),
                                                                                     ("w.join", 2, 3, 2)]
    assert [(p.name, p.shape) for p in split.populations][1:3] == [("h.part", (12,)), ("h.part2", (4,))]
    x = rng.uniform(0, 1, (3, 30))
    a, b = simulator.run(net, x, T, record=["h"]), simulator.run(split, x, T, record=["h"])
    assert a.spikes["h"].sum() > 0
    np.testing.assert_array_equal(b.spikes["h"], a.spikes["h"])
    spiking, _ = split_fan_in(net, _limits(5, graded=False), calibration=x, steps=T)
    plain, _ = split_fan_in(net, _limits(5, graded=False))
    for name in ("h.part", "h.part2"):
        assert spiking.population(name).model == "signed"
        assert not np.array_equal(spiking.population(name).threshold, plain.population(name).threshold), name


def test_a_sparse_projection_reading_a_few_of_its_sources_is_cut_among_those():
    """h (8 neurons) reads only the first 8 of its source's 80 neurons (a class token out of a token map), a core
    has 5 axons: 2 parts of 4 read sources (16 relays), not ranges of the whole map (16 parts of 5, 128 relays,
    most of them reading nothing). Graded relays: the unsplit spikes."""
    rng = np.random.default_rng(4)
    rows = [list(range(8)) if i < 8 else [] for i in range(80)]
    indptr = np.concatenate([[0], np.cumsum([len(r) for r in rows])]).astype(np.int64)
    indices = np.concatenate(rows).astype(np.int64)
    pops = [Population.make("in", "input", (80,)), Population.make("h", "if", (8,), 1.0, 0.5),
            Population.make("out", "readout", (8,))]
    projs = [Projection("w", "sparse", "in", "h", weight=rng.uniform(-0.2, 0.5, len(indices)).astype(np.float32),
                        indptr=indptr, indices=indices),
             Projection("h_out", "identity", "h", "out")]
    net = _net(pops, projs)
    split, splits = split_fan_in(net, _limits(5, graded=True))
    assert [(s.layer, s.parts, s.relay_axons, s.soma_axons) for s in splits] == [("h", 2, 4, 2)]
    assert split.population("h.part").size == 16
    x = rng.uniform(0, 1, (3, 80))
    a, b = simulator.run(net, x, 10, record=["h"]), simulator.run(split, x, 10, record=["h"])
    assert a.spikes["h"].sum() > 0
    np.testing.assert_array_equal(b.spikes["h"], a.spikes["h"])
