"""The validation table (benchmarks/results/validation.json), the bands derived from it and the report's band."""
import json
import os

import numpy as np
import pytest

from spikeforge import hwmodels
from spikeforge.hwmodels.validation import band_text, bands

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TABLE = os.path.join(ROOT, "benchmarks", "results", "validation.json")


def _row(target, metric, status, ratio, kind="independent"):
    return {"target": target, "metric": metric, "status": status, "ratio": ratio, "kind": kind}


def test_bands_by_hand():
    rows = [_row("a", "energy", "ok", 1.1), _row("a", "energy", "outside", 0.5), _row("a", "energy", "blocked", None),
            _row("a", "energy", "ok", 3.0, kind="unit"), _row("a", "energy", "ok", 1.0, kind="calibration"),
            _row("a", "energy", "ok", 1.0, kind="consistency"), _row("a", "latency", "blocked", 9.0),
            _row("b", "energy", "ok", 1.0, kind="consistency")]
    b = bands(rows)
    assert b["a"]["energy"] == {"rows": 2, "within": 1, "blocked": 1, "max_abs_dev": pytest.approx(0.5),
                                "ratio_min": 0.5, "ratio_max": 1.1}
    assert b["a"]["latency"]["rows"] == 0 and b["a"]["latency"]["blocked"] == 1
    assert "b" not in b  # a target checked only against another simulator has no band


def test_a_row_without_one_of_the_four_kinds_is_refused():
    with pytest.raises(ValueError, match="kind must be one of unit, calibration, consistency, independent"):
        bands([_row("a", "energy", "ok", 1.0, kind="workload")])


@pytest.fixture(scope="module")
def table():
    with open(TABLE) as fh:
        return json.load(fh)


def test_table_has_the_published_rows_the_issue_asks_for(table):
    fields = {"target", "workload", "quantity", "source", "published", "ours", "ratio", "note"}
    assert all(fields <= set(r) for r in table)
    assert {r["kind"] for r in table} <= set(hwmodels.validation.KINDS)
    # another simulator with the same constants checks counting, not energy: never an independent row
    assert all(r["kind"] == "consistency" for r in table if "SANA-FE" in r["source"] and "sanafe" in r["source"])
    published = [r for r in table if r["published"] is not None and len(r["source"]) > 10]
    assert sum(r["target"] == "loihi" for r in published) >= 3
    assert sum(r["target"] == "truenorth" for r in published) >= 2
    for r in table:
        if r["ratio"] is not None:
            assert r["ratio"] == pytest.approx(r["ours"] / r["published"])
        # within the band, or the row says what blocks it / why it is outside
        tol = hwmodels.validation.TOLERANCE[r["metric"]]
        if r["status"] == "ok":
            assert abs(r["ratio"] - 1) <= tol
        else:
            assert r["note"].startswith(("BLOCKED: ", "OUTSIDE the band: ")) and len(r["note"]) > 40


def test_shipped_bands_are_the_tables(table):
    shipped = {t: hwmodels.validation_band(t) for t in hwmodels.available()}
    computed = bands(table)
    assert shipped == {t: computed.get(t, {}) for t in shipped}
    for name in hwmodels.available():
        for metric in ("energy", "latency"):
            indep = [r for r in table if r["target"] == name and r["metric"] == metric and r["kind"] == "independent"
                     and r["status"] != "blocked"]
            text = band_text(name, metric)
            if not indep:
                assert text.startswith("not validated against a measured workload")
                continue
            b = shipped[name][metric]
            assert b["rows"] == len(indep)
            assert f"±{100 * b['max_abs_dev']:.0f} %" in text and f"over {len(indep)} independent workload" in text
    assert band_text("generic45nm").startswith("not validated against a measured workload (1 independent row(s), "
                                               "all blocked")


def test_report_prints_each_targets_band(tmp_path):
    from spikeforge.converter.mapping import one_population_per_core
    from spikeforge.report import evaluate, write_report
    from spikeforge.simulator import Network, Population, Projection

    pops = [Population.make("in", "input", (2,)), Population.make("h", "if", (3,), 1.0),
            Population.make("out", "readout", (2,))]
    projs = [Projection("w1", "dense", "in", "h", np.ones((3, 2), np.float32)),
             Projection("w2", "dense", "h", "out", np.ones((2, 3), np.float32))]
    net = Network(pops, projs, *one_population_per_core(pops, projs), {})
    raw = json.loads(open(hwmodels.load_target("loihi").path).read())
    raw["name"] = "my-chip"
    raw["energy_pj"]["spikes"]["value"] = 30.0  # a changed constant: loihi's band no longer holds
    mine = tmp_path / "mine.json"
    mine.write_text(json.dumps(raw))
    targets = ["loihi", "truenorth", hwmodels.load_target(mine)]
    rows, runs, ann = evaluate(net, np.array([[1.0, 0.5]]), None, [2], targets)
    printed = write_report(tmp_path / "r", "tiny", rows, runs, ann, net, 1)  # what `spikeforge report` prints
    md = (tmp_path / "r" / "report.md").read_text()
    for name in ("loihi", "truenorth"):
        assert f"| {name} | {band_text(name)} | {band_text(name, 'latency')} |" in md
        assert f"| {name} | {band_text(name)} | {band_text(name, 'latency')} |" in printed
    changed = ("not validated against a measured workload (constants changed since the band was computed: rerun "
               "benchmarks.validate_targets from spikeforge's source tree)")
    assert f"| my-chip | {changed} | {changed} |" in md
    r = next(r for r in rows if r["target"] == "loihi")
    assert r["target_energy_uj"] == pytest.approx(r["target_dynamic_uj"] + r["target_static_uj"])
    assert r["target_static_uj"] > 0 and r["input_path"].startswith("analog (first-layer biases")
    assert f"{r['target_dynamic_uj']:.4g} + {r['target_static_uj']:.4g}" in md
    # every energy figure with its components (they add up to it) and the band of independent rows beside it
    assert sum(r["components_uj"].values()) == pytest.approx(r["target_energy_uj"])
    assert set(r["components_uj"]) == {"synapse", "neuron access", "neuron update", "spikes", "messages", "hops",
                                       "chip links", "input", "static"}
    comp = r["components_uj"]
    line = (f"| loihi | 2 | {r['steps']} | " + " | ".join(f"{v:.4g}" for v in comp.values())
            + " | not validated (0 independent rows compared) |")
    assert line in md and r["steps"] == 2 + 2  # pipelined: T + two stages (h, out)
    import csv
    with open(tmp_path / "r" / "report.csv") as fh:
        loihi = next(row for row in csv.DictReader(fh) if row["target"] == "loihi")
    assert float(loihi["neuron_access_uj"]) == pytest.approx(comp["neuron access"])


def test_the_short_band_names_the_independent_rows_behind_it(table):
    from spikeforge.hwmodels import band_short

    b = hwmodels.validation_band("truenorth")["energy"]
    assert band_short("truenorth") == f"±{100 * b['max_abs_dev']:.0f} % ({b['rows']} independent rows)"
    assert band_short("loihi") == "not validated (0 independent rows compared)"


def test_a_band_holds_only_for_the_constants_it_was_computed_with(tmp_path):
    raw = json.loads(open(hwmodels.load_target("truenorth").path).read())
    p = tmp_path / "copy.json"
    p.write_text(json.dumps(dict(raw, description="my copy, same numbers")))
    same = hwmodels.load_target(p)  # sources and descriptions may change, numbers may not
    assert hwmodels.validation_band(same) == hwmodels.validation_band("truenorth") != {}
    raw["static_power_mw_per_chip"]["value"] = 60.0
    p.write_text(json.dumps(raw))
    assert hwmodels.validation_band(hwmodels.load_target(p)) == {}
    assert band_text(hwmodels.load_target(p)).startswith("not validated against a measured workload (constants "
                                                          "changed")
    del raw["validation"]
    p.write_text(json.dumps(raw))
    assert band_text(hwmodels.load_target(p)) == ("not validated against a measured workload (the target file has no "
                                                  "validation band)")
    raw["validation"] = {"energy": {}}
    p.write_text(json.dumps(raw))
    with pytest.raises(hwmodels.TargetError, match=f"{p}: validation must be an object with a 'digest'"):
        hwmodels.load_target(p)
