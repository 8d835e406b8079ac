"""Validation bands: how far a target's energy and latency figures agree with published chip measurements.

The rows come from benchmarks/validate_targets.py (benchmarks/results/validation.json, one per published
figure); the bands it derives here are stored in each built-in target file ("validation", with a digest of the
constants they hold for), so reports can say next to every energy figure how far it can be trusted, and say
"not validated" once the constants change.

Every row is one of four kinds (KINDS): `unit` (one constant against a datasheet or paper figure), `calibration`
(a figure a constant was fitted to), `consistency` (the same constants in another simulator: a check of counting
only), `independent` (a measured workload none of the target's constants came from). Only independent rows make a
band: the other three would vouch for themselves.
"""
from __future__ import annotations

import json

from .targets import BUILTIN_TARGETS, Target, constants_digest, load_target

TOLERANCE = {"energy": 0.25, "latency": 0.50}  # issue 23: within 25 % energy, 50 % latency
KINDS = ("unit", "calibration", "consistency", "independent")
NOT_VALIDATED = "not validated against a measured workload"


def bands(rows) -> dict:
    """{target: {metric: {rows, within, blocked, max_abs_dev, ratio_min, ratio_max}}} over the independent rows
    (a row without a kind in KINDS is refused: every row must say what kind of check it is)."""
    out = {}
    for r in rows:
        if r.get("kind") not in KINDS:
            raise ValueError(f"validation row {r.get('workload', r)!r}: kind must be one of {', '.join(KINDS)}, "
                             f"got {r.get('kind')!r}")
        if r["kind"] != "independent":
            continue
        m = out.setdefault(r["target"], {}).setdefault(r["metric"], {
            "rows": 0, "within": 0, "blocked": 0, "max_abs_dev": None, "ratio_min": None, "ratio_max": None})
        if r["status"] == "blocked":
            m["blocked"] += 1
            continue
        m["rows"] += 1
        m["within"] += r["status"] == "ok"
        dev = abs(r["ratio"] - 1)
        m["max_abs_dev"] = dev if m["max_abs_dev"] is None else max(m["max_abs_dev"], dev)
        m["ratio_min"] = r["ratio"] if m["ratio_min"] is None else min(m["ratio_min"], r["ratio"])
        m["ratio_max"] = r["ratio"] if m["ratio_max"] is None else max(m["ratio_max"], r["ratio"])
    return out


def validation_band(target) -> dict:
    """{metric: band} a target file carries (a Target or a built-in name), if computed for its current constants;
    else {}."""
    if not isinstance(target, Target):
        target = load_target(target)
    v = target.validation or {}
    if v.get("digest") != target.digest:
        return {}
    return {m: v[m] for m in TOLERANCE if m in v}


def band_text(target, metric="energy") -> str:
    """One line for a report: how far `metric` ('energy' or 'latency') of a target agrees with published figures."""
    if not isinstance(target, Target):
        target = load_target(target)
    if target.validation is None:
        return f"{NOT_VALIDATED} (the target file has no validation band)"
    if target.validation.get("digest") != target.digest:
        return (f"{NOT_VALIDATED} (constants changed since the band was computed: rerun "
                "benchmarks.validate_targets from spikeforge's source tree)")
    b = validation_band(target).get(metric)
    if not b:
        return NOT_VALIDATED
    if not b["rows"]:
        return (f"{NOT_VALIDATED} ({b['blocked']} independent row(s), all blocked: see "
                "benchmarks/results/validation.json in spikeforge's source tree)")
    return (f"±{100 * b['max_abs_dev']:.0f} % (ours / measured {b['ratio_min']:.2f}-{b['ratio_max']:.2f} over "
            f"{b['rows']} independent workload(s), {b['within']} within ±{100 * TOLERANCE[metric]:.0f} %; "
            f"{b['blocked']} blocked)")


def band_short(target, metric="energy") -> str:
    """The band in a few words, for a table cell next to each figure: '±18 % (3 independent rows)', or 'not
    validated (0 independent rows compared)'."""
    if not isinstance(target, Target):
        target = load_target(target)
    b = validation_band(target).get(metric)
    if not b or not b["rows"]:
        return "not validated (0 independent rows compared)"
    return f"±{100 * b['max_abs_dev']:.0f} % ({b['rows']} independent row{'s' if b['rows'] > 1 else ''})"


def write_bands(rows, source="benchmarks/results/validation.json (benchmarks/validate_targets.py)") -> list:
    """Store each built-in target's band in its own file ("validation" section, with the digest of the constants
    it holds for); returns the files written."""
    written = []
    computed = bands(rows)
    for name in {r["target"] for r in rows}:
        band = computed.get(name, {})
        path = str(BUILTIN_TARGETS.joinpath(f"{name}.json"))
        with open(path, encoding="utf-8") as fh:
            raw = json.load(fh)
        raw["validation"] = {"digest": constants_digest(raw), **band, "source": source}
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(raw, indent=1, ensure_ascii=False) + "\n")
        written.append(path)
    return written
