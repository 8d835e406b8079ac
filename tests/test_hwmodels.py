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
    net, res = tiny
    cost = _estimate(net, res, "loihi")
    dynamic = 14 * 23.6 + 12 * 23.6 + 20 * 52.0 + 7 * 29.0 + 7 * 1.7 + 14 * 3.5
    assert cost.energy_pj == pytest.approx(dynamic)
    assert cost.dynamic_pj["synops"] == pytest.approx(14 * 23.6)
    # per step: slowest core compute + slowest core network + barrier 465 ns
    spikes = np.array([2, 1, 3, 1])
    compute = np.maximum(3 * 3.5 + 3 * 5.3 + spikes * 3.1, 2 * spikes * 3.5 + 2 * 5.3)
    network = spikes * 2.1 + 2 * spikes * 5.3
    np.testing.assert_allclose(cost.latency_ns_per_step, compute + network + 465.0)
    assert cost.latency_ns == pytest.approx(float((compute + network + 465.0).sum()))
    assert cost.layer_energy_pj["out"]["synops"] == pytest.approx(14 * 23.6)
    assert cost.layer_energy_pj["h"]["macs"] == pytest.approx(12 * 23.6)


def test_generic45nm_uses_sram_energy_by_array_size(tiny):
    net, res = tiny
    cost = _estimate(net, res, "generic45nm")
    # every core's memories are below 8 KB: 1.25 pJ per byte (Horowitz: 10 pJ per 64-bit read)
    expected = 14 * 0.9 + 12 * 4.6 + 20 * 0.9 + (12 + 14) * 4 * 1.25 + 2 * 20 * 4 * 1.25
    assert cost.energy_pj == pytest.approx(expected)
    target = hwmodels.load_target("generic45nm")
    assert target.energy_per_event("synapse_bytes_read", 20_000) == 2.5
    assert target.energy_per_event("synapse_bytes_read", 10**9) == 12.5


def test_truenorth_tick_and_static_power(tiny):
    net, res = tiny
    cost = _estimate(net, res, "truenorth")
    assert cost.latency_ns == pytest.approx(4 * 1e6)  # 1 ms tick per step
    assert cost.static_pj == pytest.approx(0.0159 * 3 * 4e6)
    assert cost.energy_pj == pytest.approx(26 * 26.0 + 0.0159 * 3 * 4e6)


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
        assert set(t.sources) - set(required) <= {f"limits.{k}" for k in OPTIONAL_LIMITS}, name
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


def test_demo_writes_a_complete_report(tmp_path):
    from spikeforge.demo import run_demo

    rows = run_demo(str(tmp_path), epochs=3, steps=(2, 8))
    for f in ("report.md", "report.json", "report.csv", "accuracy_vs_T.png", "spikes_per_step_T8.png",
              "energy_per_layer_loihi_T8.png", "digits-resnet.h5"):
        assert (tmp_path / f).stat().st_size > 0, f
    assert {r["target"] for r in rows} == {"loihi", "truenorth", "generic45nm"}
    by_t = {r["T"]: r for r in rows if r["target"] == "loihi"}
    assert by_t[8]["sops_mean"] > by_t[2]["sops_mean"] > 0
    assert 0 < by_t[8]["energy_ratio"]


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
