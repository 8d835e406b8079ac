"""Validation bands: how far a target's energy and latency figures agree with published chip measurements.

The rows come from benchmarks/validate_targets.py (benchmarks/results/validation.json, one per published
figure); the bands it derives here ship with the built-in targets (targets/_validation.json), so reports can say
next to every energy figure how far it can be trusted. Only workload rows make a band: unit rows (a constant read
back) and calibration rows (the figure a constant was fitted to) would vouch for themselves.
"""
from __future__ import annotations

import json
import os

from .targets import BANDS_FILE, BUILTIN_TARGETS, Target

TOLERANCE = {"energy": 0.25, "latency": 0.50}  # issue 23: within 25 % energy, 50 % latency


def bands(rows) -> dict:
    """{target: {metric: {rows, within, blocked, max_abs_dev, ratio_min, ratio_max}}} over the workload rows."""
    out = {}
    for r in rows:
        if r.get("kind", "workload") != "workload":
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


def _builtin(target: Target) -> bool:
    return os.path.dirname(os.path.abspath(target.path)) == os.path.abspath(str(BUILTIN_TARGETS))


def validation_band(target) -> dict:
    """The band of a built-in target (a Target or its name); {} for user files and unvalidated targets."""
    if isinstance(target, Target):
        if not _builtin(target):
            return {}
        target = target.name
    f = BUILTIN_TARGETS.joinpath(BANDS_FILE)
    if not f.is_file():
        return {}
    return json.loads(f.read_text(encoding="utf-8")).get(target, {})


def band_text(target, metric="energy") -> str:
    """One line for a report: the band of `metric` ('energy' or 'latency') of a target."""
    if isinstance(target, Target) and not _builtin(target):
        return "not validated (user target file)"
    b = validation_band(target).get(metric)
    if not b:
        return "not validated"
    if not b["rows"]:
        return f"not validated ({b['blocked']} row(s), all blocked: see benchmarks/results/validation.json)"
    return (f"±{100 * b['max_abs_dev']:.0f} % (ours / published {b['ratio_min']:.2f}-{b['ratio_max']:.2f} over "
            f"{b['rows']} reference workload(s), {b['within']} within ±{100 * TOLERANCE[metric]:.0f} %; "
            f"{b['blocked']} blocked)")
