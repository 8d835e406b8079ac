import json

import numpy as np
import pytest

from spikeforge import hwmodels, simulator
from spikeforge.converter.mapping import one_population_per_core
from spikeforge.simulator import Network, Population, Projection


@pytest.fixture(scope="module")
def tiny():
    """input (2) -> 3 IF -> readout (2); counters hand-checked in test_simulator: per step on core 1
    MACs 3, spikes [2, 1, 3, 1], updates 3; on core 2 synops [4, 2, 6, 2], updates 2; hops 2 per packet."""
    pops = [Population.make("in", "input", (2,)), Population.make("h", "if", (3,), 1.0, 0.5),
            Population.make("out", "readout", (2,))]
    projs = [Projection("w1", "dense", "in", "h", np.array([[1.0, 0.5], [0.6, 0.5], [0.2, 0.5]], np.float32)),
             Projection("w2", "dense", "h", "out", np.ones((2, 3), np.float32))]
    cores, edges = one_population_per_core(pops, projs)
    net = Network(pops, projs, cores, edges, {})
    res = simulator.run(net, np.array([[1.0, 0.0], [1.0, 0.0]]), 4)  # two identical samples
    return net, res


def _estimate(net, res, target):
    labels = [p.name for p in net.populations]
    return hwmodels.estimate(res.counters, simulator.COUNTERS, 2, hwmodels.load_target(target), labels,
                             hwmodels.core_memory(net))


def test_loihi_energy_and_latency_by_hand(tiny):
    """Loihi is pipelined: h (stage 1, fed by the input) does step t's work in chip step t + 1, out (stage 2) in
    t + 2; the chip runs T + 2 = 6 steps and accesses its 5 neurons in each. The analog input is a bias (no MAC
    unit): nothing charged. Per sample: h spikes [2, 1, 3, 1], one packet each to out (2 hops); out's synaptic
    ops [4, 2, 6, 2] and packets in [2, 1, 3, 1]; every neuron active every step (input or spikes each step)."""
    net, res = tiny
    cost = _estimate(net, res, "loihi")
    assert cost.steps == 6 and cost.T == 4
    # SANA-FE-calibrated per-event costs; 'out' is fed by a dense projection (35.5 pJ, 3.8 ns per synaptic op)
    dynamic = 14 * 35.5 + 6 * 5 * 51.2 + 20 * 21.6 + 7 * 69.3 + 7 * 111.0 + 14 * 3.5
    assert cost.dynamic_total_pj == pytest.approx(dynamic)
    assert cost.dynamic_pj["synops"] == pytest.approx(14 * 35.5) and cost.dynamic_pj["macs"] == 0
    assert cost.dynamic_pj["neuron_updates"] == pytest.approx(30 * 51.2)
    assert cost.dynamic_pj["active_neurons"] == pytest.approx(20 * 21.6)
    # per chip step: slowest core (compute + its messages out and in) + one packet's route + barrier (1 tile)
    spikes = np.array([2, 1, 3, 1])
    h = np.full(6, 3 * 6.0)
    h[1:5] += 3 * 3.7 + spikes * (30.0 + 5.1)
    out = np.full(6, 2 * 6.0)
    out[2:6] += 2 * 3.7 + 2 * spikes * 3.8 + spikes * 16.0
    network = np.array([0, 1, 1, 1, 1, 0]) * 2 * 5.3
    step = np.maximum(h, out) + network + 600.0
    np.testing.assert_allclose(cost.latency_ns_per_step, step)
    latency = float(step.sum())
    assert cost.latency_ns == pytest.approx(latency)
    assert cost.barrier_ns == 600.0 and cost.chips == 1 and cost.tiles == 1
    # what the latency is made of: the slowest core's time, the route, the barriers; h bounds the steps it is slower in
    assert cost.latency_parts_ns == pytest.approx({"compute": np.maximum(h, out).sum(), "network": network.sum(),
                                                   "barrier": 6 * 600.0, "floor": 0.0})
    assert sum(cost.latency_parts_ns.values()) == pytest.approx(latency)
    assert cost.bounding_layers_ns == pytest.approx({"h": h[h >= out].sum(), "out": out[out > h].sum()})
    assert 0 < (out > h).sum() < 6  # both layers bound some step
    # static: 104.4 mW per powered chip, apart from the dynamic energy
    assert cost.static_chip_pj == pytest.approx(104.4 * latency) and cost.static_core_pj == 0
    assert cost.energy_pj == pytest.approx(dynamic + 104.4 * latency)
    assert cost.layer_energy_pj["out"]["synops"] == pytest.approx(14 * 35.5)
    assert cost.layer_energy_pj["h"]["macs"] == 0
    # input path: analog input as biases, 12 MACs counted but not priced
    assert cost.input["mode"] == "analog (first-layer biases written by the host; no MAC unit on the chip)"
    assert cost.input["macs"] == 12 and cost.input["energy_pj"] == 0
    comp = cost.components()
    assert comp["neuron access"] == pytest.approx(30 * 51.2) and comp["neuron update"] == pytest.approx(20 * 21.6)
    assert comp["messages"] == pytest.approx(7 * 111.0) and comp["static"] == cost.static_pj
    assert sum(comp.values()) == pytest.approx(cost.energy_pj)
    # a host that paces the chip at 10 us per step: the steps last that long, and static power runs as long
    paced = hwmodels.estimate(res.counters, simulator.COUNTERS, 2, hwmodels.load_target("loihi"),
                              [p.name for p in net.populations], hwmodels.core_memory(net), host_step_ns=10_000.0)
    assert paced.latency_ns == 6 * 10_000.0 and paced.static_pj == pytest.approx(104.4 * 60_000.0)
    assert paced.latency_parts_ns["floor"] == pytest.approx(60_000.0 - latency)
    assert paced.dynamic_total_pj == pytest.approx(dynamic)


def test_analog_input_as_drive_events_costs_a_message_and_a_synaptic_op_per_reached_neuron(tiny):
    """analog_input "drive" (SANA-FE's export): the input [1, 0] reaches h's 3 neurons every step, so core 1
    receives 3 drive messages (16 ns each) and does 3 synaptic ops (35.5 pJ, 3.8 ns) per step; MACs cost nothing."""
    import dataclasses

    net, res = tiny
    loihi = hwmodels.load_target("loihi")
    labels = [p.name for p in net.populations]
    bias = hwmodels.estimate(res.counters, simulator.COUNTERS, 2, loihi, labels, hwmodels.core_memory(net))
    drive = hwmodels.estimate(res.counters, simulator.COUNTERS, 2, dataclasses.replace(loihi, analog_input="drive"),
                              labels, hwmodels.core_memory(net))
    assert drive.dynamic_total_pj - bias.dynamic_total_pj == pytest.approx(4 * 3 * 35.5)
    assert drive.input["mode"] == "analog (one drive event per first-layer neuron and step)"
    spikes = np.array([2, 1, 3, 1])
    h = np.full(6, 3 * 6.0)
    h[1:5] += 3 * 3.7 + spikes * 35.1
    out = np.full(6, 2 * 6.0)
    out[2:6] += 2 * 3.7 + 2 * spikes * 3.8 + spikes * 16.0
    driven = h.copy()
    driven[1:5] += 3 * (16.0 + 3.8)  # h does the drives in its own steps (stage 1)
    network = np.array([0, 1, 1, 1, 1, 0]) * 2 * 5.3 + 600.0
    np.testing.assert_allclose(bias.latency_ns_per_step, np.maximum(h, out) + network)
    np.testing.assert_allclose(drive.latency_ns_per_step, np.maximum(driven, out) + network)


def test_generic45nm_uses_sram_energy_by_array_size(tiny):
    net, res = tiny
    cost = _estimate(net, res, "generic45nm")
    # every core's memories are below 8 KB: 1.25 pJ per byte (Horowitz: 10 pJ per 64-bit read)
    expected = 14 * 0.9 + 12 * 4.6 + 20 * 0.9 + (12 + 14) * 4 * 1.25 + 2 * 20 * 4 * 1.25
    assert cost.energy_pj == pytest.approx(expected)
    target = hwmodels.load_target("generic45nm")
    assert target.energy_per_event("synapse_bytes_read", 20_000) == 2.5
    assert target.energy_per_event("synapse_bytes_read", 10**9) == 12.5


def test_truenorth_tick_static_power_and_supply_voltage(tiny):
    net, res = tiny
    cost = _estimate(net, res, "truenorth")
    assert cost.steps == 6 and cost.latency_ns == pytest.approx(6 * 1e6)  # 1 ms tick per step, T + 2 stages
    # one powered chip at 64.5 mW for 6 ms; 14 synaptic events at the incremental 2.3 pJ (the input: a bias)
    assert cost.static_pj == pytest.approx(64.5 * 6e6) == cost.static_chip_pj
    assert cost.energy_pj == pytest.approx(14 * 2.3 + 64.5 * 6e6)
    # at 0.70 V: dynamic energy and the per-tick floor both scale as (0.70 / 0.80)²
    target = hwmodels.load_target("truenorth")
    low = hwmodels.estimate(res.counters, simulator.COUNTERS, 2, target, [p.name for p in net.populations],
                            hwmodels.core_memory(net), voltage=0.70)
    f = (0.70 / 0.80) ** 2
    assert low.energy_pj == pytest.approx(f * (14 * 2.3 + 64.5 * 6e6)) and low.voltage == 0.70
    with pytest.raises(hwmodels.TargetError, match=r"supply voltage 1.2 V is outside its published range 0.7-1.05"):
        hwmodels.estimate(res.counters, simulator.COUNTERS, 2, target, [p.name for p in net.populations], voltage=1.2)
    with pytest.raises(hwmodels.TargetError, match="target 'loihi' has no supply_voltage section"):
        hwmodels.estimate(res.counters, simulator.COUNTERS, 2, hwmodels.load_target("loihi"),
                          [p.name for p in net.populations], voltage=0.8)


def test_ann_cost_and_paper_energy(tiny):
    net, res = tiny
    ann = hwmodels.ann_cost(net)
    assert ann["macs"] == 2 * 3 + 3 * 2
    assert ann["energy_pj"] == pytest.approx(12 * 4.6)
    assert hwmodels.paper_energy_pj(14, 12) == pytest.approx(14 * 0.9 + 12 * 4.6)


def test_every_constant_cites_a_source():
    from spikeforge.hwmodels.targets import LIMITS, OPTIONAL_LIMITS, TIMED_EVENTS

    for name in hwmodels.available():
        t = hwmodels.load_target(name)
        required = [f"energy_pj.{e}" for e in hwmodels.EVENTS] + [f"limits.{k}" for k in LIMITS] + \
            [f"time_ns.{k}" for k in TIMED_EVENTS + ("barrier",)] + ["static_power_mw_per_core", "tick_ns"]
        assert set(required) <= set(t.sources), name
        optional = {f"limits.{k}" for k in OPTIONAL_LIMITS} | {"static_power_mw_per_chip", "pipelined_layers",
                                                              "analog_input", "supply_voltage", "mapping"}
        assert set(t.sources) - set(required) <= optional, name
        assert all(isinstance(s, str) and len(s) > 5 for s in t.sources.values()), name


def test_bad_target_files_are_named(tmp_path):
    with pytest.raises(hwmodels.TargetError, match="unknown target 'nope'"):
        hwmodels.load_target("nope")
    raw = json.loads(open(hwmodels.load_target("loihi").path).read())
    raw["energy_pj"]["synops"]["value"] = -1
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(raw))
    with pytest.raises(hwmodels.TargetError, match=r"energy_pj.synops.value must be a finite number >= 0"):
        hwmodels.load_target(p)
    del raw["time_ns"]["barrier"]
    raw["energy_pj"]["synops"]["value"] = 1.0
    p.write_text(json.dumps(raw))
    with pytest.raises(hwmodels.TargetError, match=r"time_ns.barrier is missing"):
        hwmodels.load_target(p)


def test_demo_writes_a_complete_report(tmp_path, capsys):
    from spikeforge.demo import run_demo

    rows = run_demo(str(tmp_path), epochs=3, steps=(2, 8))
    shown = capsys.readouterr().out
    # the digits ResNet (64 inputs, 10 classes) does not fit Xylo Audio 2: the demo says why and reports the others
    assert "xylo: does not fit, left out of the report: input 'input': 64 channels; Xylo takes at most 16" in shown
    assert "speck: fits on 7 cores (mapping rule: speck)" in shown
    # nor TrueNorth's 256-axon cores without splitting, every layer named at once: block2's second conv (32 x 9 +
    # 16 shortcut inputs) and the readout (512 inputs); the report prices the converted network, so it is left out
    assert "truenorth: does not fit, left out of the report: layer 'block2_act2': neuron 10 alone needs axons 304 " \
        "but a core allows 256 (1.19x over); layer 'readout': neuron 0 alone needs axons 512 but a core allows 256 " \
        "(2.00x over); it fits once these layers are split into partial sums (spikeforge convert --target " \
        "truenorth), but this report prices the network as converted" in shown
    for f in ("report.md", "report.json", "report.csv", "accuracy_vs_T.png", "spikes_per_step_T8.png",
              "energy_per_layer_loihi_T8.png", "digits-resnet.h5"):
        assert (tmp_path / f).stat().st_size > 0, f
    md = (tmp_path / "report.md").read_text()
    assert "\ninput encoding: direct\n" in md  # as `report` writes it
    # each target priced on its own mapping, said; the two left out named with why
    assert "mapping priced: generic45nm: mapped for generic45nm by the demo (" in md
    assert "left out (the network does not fit them): truenorth: layer 'block2_act2'" in md and "xylo: input" in md
    assert {r["target"] for r in rows} == {"loihi", "loihi2", "speck", "generic45nm"}
    by_t = {r["T"]: r for r in rows if r["target"] == "loihi"}
    assert by_t[8]["sops_mean"] > by_t[2]["sops_mean"] > 0
    assert 0 < by_t[8]["energy_ratio"]
    # the latency table: its parts add up to the latency, and it names the layer whose cores were most often slowest
    cost = by_t[8]["cost"]
    assert sum(cost.latency_parts_ns.values()) == pytest.approx(cost.latency_ns)
    assert sum(cost.bounding_layers_ns.values()) == pytest.approx(cost.latency_parts_ns["compute"])
    top = next(iter(cost.bounding_layers_ns))
    row = f"| loihi | 8 | {cost.steps} | {cost.latency_ns / 1e3:.4g} | {cost.latency_parts_ns['compute'] / 1e3:.4g} | "
    assert any(line.startswith(row) and f"| {top} (" in line for line in md.splitlines()), row


def test_report_header_names_the_input_encoding(tiny, tmp_path):
    from spikeforge.report import evaluate, write_report

    net, _ = tiny
    x = np.array([[1.0, 0.0], [0.5, 0.5]])
    rows, runs, ann = evaluate(net, x, np.array([0, 1]), [2], ["loihi"])
    write_report(tmp_path / "a", "tiny", rows, runs, ann, net, 2, encoding="rate (seed 0)")
    head = (tmp_path / "a" / "report.md").read_text().splitlines()[:4]
    assert "input encoding: rate (seed 0)" in head
    assert json.loads((tmp_path / "a" / "report.json").read_text())["encoding"] == "rate (seed 0)"
    write_report(tmp_path / "b", "tiny", rows, runs, ann, net, 2)
    assert "input encoding" not in (tmp_path / "b" / "report.md").read_text()


def _write(tmp_path, raw, name="t.json"):
    p = tmp_path / name
    p.write_text(json.dumps(raw))
    return p


def test_old_target_files_still_load_with_a_fixed_barrier_and_no_chip_power(tiny, tmp_path):
    net, res = tiny
    raw = json.loads(open(hwmodels.load_target("loihi").path).read())
    del raw["static_power_mw_per_chip"]
    for sec in ("energy_pj", "time_ns"):
        del raw[sec]["synops"]["by_kind"]
    raw["time_ns"]["barrier"] = {"value": 465.0, "source": "old file"}
    for sec in ("energy_pj", "time_ns"):  # files older than the receive and update events
        del raw[sec]["packets_in"], raw[sec]["active_neurons"]
    for key in ("pipelined_layers", "analog_input"):
        del raw[key]
    old = hwmodels.load_target(_write(tmp_path, raw))
    assert old.energy_per_event("active_neurons") == 0 and old.time_ns["packets_in"] == 0
    assert not old.pipelined and old.analog_input == "mac"
    assert old.static_power_mw_per_chip == 0 and old.barrier_ns(1000) == 465.0
    assert old.synop_cost("conv2d") == 35.5 and old.synop_cost("conv2d", "time") == 3.8
    cost = hwmodels.estimate(res.counters, simulator.COUNTERS, 2, old, ["in", "h", "out"], hwmodels.core_memory(net))
    assert cost.static_pj == 0 and cost.barrier_ns == 465.0


def test_barrier_grows_with_the_cores_in_use_and_synops_priced_by_kind():
    t = hwmodels.load_target("loihi")
    # keyed on the tiles in use (4 cores per tile, filled in order)
    assert [t.barrier_ns(n) for n in (1, 4, 5, 12, 13, 112, 113, 4096)] == [600, 600, 1000, 1000, 1400, 1400, 1800,
                                                                          1800]
    assert [t.barrier_ns(8, tiles) for tiles in (1, 2, 3, 4, 28, 29)] == [600, 1000, 1000, 1400, 1400, 1800]
    assert hwmodels.cost.tiles_in_use(9, np.array([0] * 5 + [1] * 4), 4) == 3
    assert (t.synop_cost("dense"), t.synop_cost("sparse"), t.synop_cost("conv2d"), t.synop_cost("mixed")) == \
        (35.5, 33.6, 24.0, 35.5)
    assert t.synop_cost("conv2d", "time") == 3.1


def test_conv_cores_and_chips_in_use_are_priced_from_the_mapping(tiny):
    net, res = tiny
    target = hwmodels.load_target("loihi")
    mem = hwmodels.core_memory(net)
    assert mem["synapse_kind"][2] == "dense" and list(mem["input_core"]) == [False, True, False]
    conv = dict(mem, synapse_kind=["mixed", "dense", "conv2d"], chip=np.array([0, 1, 1]))
    cost = hwmodels.estimate(res.counters, simulator.COUNTERS, 2, target, ["in", "h", "out"], conv)
    assert cost.dynamic_pj["synops"] == pytest.approx(14 * 24.0)
    assert cost.chips == 2 and cost.static_pj == pytest.approx(2 * 104.4 * cost.latency_ns)
    # no mapping facts: chips = ceil(cores / cores_per_chip)
    bare = hwmodels.estimate(res.counters, simulator.COUNTERS, 2, target, ["in", "h", "out"])
    assert bare.chips == 1 and bare.dynamic_pj["synops"] == pytest.approx(14 * 35.5)
    assert bare.input["synops"] is None


def test_spike_encoded_input_is_priced_as_synaptic_ops(tiny):
    net, _ = tiny
    frames = np.zeros((1, 3, 2))
    frames[0, :, 0] = 1  # input neuron 0 spikes every step: 3 synapses x 3 steps on core 1
    res = simulator.run(net, frames, 3)
    cost = hwmodels.estimate(res.counters, simulator.COUNTERS, 1, hwmodels.load_target("loihi"), ["in", "h", "out"],
                             hwmodels.core_memory(net))
    assert cost.input["mode"].startswith("spike") and cost.input["macs"] == 0
    assert cost.input["synops"] == 9 and cost.input["synops_pj"] == pytest.approx(9 * 35.5)


@pytest.mark.parametrize("section, key, value, message", [
    ("time_ns", "barrier", {"value": 1, "by_cores": [[5, 1], [1, 2]], "source": "x"},
     r"time_ns.barrier.by_cores must be \[\[cores >= 1, ns >= 0\], ...\] with increasing cores"),
    ("time_ns", "barrier", {"value": 1, "by_cores": "fast", "source": "x"}, r"time_ns.barrier.by_cores must be"),
    ("energy_pj", "synops", {"value": 1, "by_kind": {"dense": 1, "pool": 2}, "source": "x"},
     r"energy_pj.synops.by_kind must be \{kind: number >= 0\} with kinds in dense, sparse, conv2d"),
    ("energy_pj", "synops", {"value": 1, "by_kind": {"dense": -1}, "source": "x"}, r"energy_pj.synops.by_kind"),
    ("", "static_power_mw_per_chip", {"value": "lots", "source": "x"},
     r"static_power_mw_per_chip.value must be a finite number"),
])
def test_bad_new_fields_name_the_file_and_field(tmp_path, section, key, value, message):
    raw = json.loads(open(hwmodels.load_target("loihi").path).read())
    (raw[section] if section else raw)[key] = value
    p = _write(tmp_path, raw, "mine.json")
    with pytest.raises(hwmodels.TargetError, match=message) as err:
        hwmodels.load_target(p)
    assert str(p) in str(err.value)


def test_estimate_given_the_network_prices_as_the_report_does(trained_mlp, digits):
    """Issue 37: the README's estimate (core labels only) and `report` (core memory sizes too) gave different
    energies for one run (generic45nm 12.22 vs 35.50 µJ); given the network, estimate works the sizes out itself."""
    from spikeforge import simulator
    from spikeforge.converter import convert
    from spikeforge.converter.mapping import map_network
    from spikeforge.hwmodels import estimate, load_target
    from spikeforge.report import evaluate

    net = map_network(convert(trained_mlp, [digits[0][:64]]), load_target("loihi"))
    x, y = digits[2][:20].numpy(), digits[3][:20].numpy()
    rows, runs, _ = evaluate(net, x, y, [4], ["loihi", "generic45nm"])
    for row in rows:
        cost = estimate(runs[4].counters, simulator.COUNTERS, len(x), load_target(row["target"]), network=net)
        assert cost.energy_pj / 1e6 == row["target_energy_uj"], row["target"]
    with pytest.raises(ValueError, match="give the network"):
        estimate(runs[4].counters, simulator.COUNTERS, len(x), load_target("loihi"))
