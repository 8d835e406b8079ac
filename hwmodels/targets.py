"""Hardware targets as data: JSON files in one schema (docs/TARGETS.md), every constant with its source."""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from importlib import resources

import numpy as np

from spikeforge.errors import UserError

# Built-in targets ship as package data (spikeforge/hwmodels/targets/*.json), read through importlib.resources so
# they are found in a wheel, a zip or an editable install alike.
BUILTIN_TARGETS = resources.files(__package__).joinpath("targets")
# Event types a target prices; they are the simulator's counter names.
EVENTS = ("synops", "macs", "spikes", "packets", "hops", "synapse_bytes_read",
          "neuron_updates", "state_bytes_read", "state_bytes_written")
TIMED_EVENTS = ("synops", "macs", "neuron_updates", "spikes", "packets", "hops")
LIMITS = ("neurons_per_core", "axons_per_core", "cores_per_chip", "synapse_memory_bytes_per_core", "weight_bits")
# Optional limits and their defaults: chips on the board, mesh columns per chip (0: square), whether conv kernels
# are stored once per core (weight sharing), bits per stored synapse (0: weight bits + target-index bits),
# membrane (state) bits for the fixed-point mode.
OPTIONAL_LIMITS = {"chips": 1.0, "mesh_width": 0.0, "weight_sharing": 0.0, "bits_per_synapse": 0.0,
                   "membrane_bits": 0.0}
# Projection kinds a synaptic-op cost may depend on ("by_kind" in energy_pj.synops / time_ns.synops): calibrated
# chip models price a dense, sparse and convolutional synapse differently (SANA-FE's Loihi model).
SYNAPSE_KINDS = ("dense", "sparse", "conv2d")
# Sections whose numbers a validation band vouches for (constants_digest): a band computed for other constants
# is not shown.
PRICED = ("energy_pj", "time_ns", "static_power_mw_per_core", "static_power_mw_per_chip", "tick_ns")


class TargetError(UserError):
    """A target file is missing a field or has an invalid value."""


@dataclass
class Target:
    """Per-event energy (pJ) and time (ns), static power, tick, and limits of one hardware target."""

    name: str
    description: str
    energy_pj: dict  # event -> float, or list of (memory size bytes, pJ per byte) for SRAM-size-dependent costs
    time_ns: dict  # event -> float, plus "barrier"
    static_power_mw_per_core: float
    tick_ns: float
    limits: dict
    sources: dict  # "section.key" -> citation
    path: str = ""
    static_power_mw_per_chip: float = 0.0  # charged for every chip the mapping uses (leakage of a powered chip)
    barrier_by_cores: tuple = ()  # ((cores, ns), ...) increasing: per-step sync grows with the cores in use
    synops_by_kind: dict = None  # {"energy": {kind: pJ}, "time": {kind: ns}} for SYNAPSE_KINDS
    validation: dict = None  # optional band (benchmarks/validate_targets.py): {"digest", "energy", "latency", ...}
    digest: str = ""  # constants_digest of the file's priced sections

    def barrier_ns(self, cores: int) -> float:
        """Per-step synchronization with `cores` cores in use: the entry of the largest key <= cores (a step
        function, as SANA-FE's table), else the fixed time_ns.barrier."""
        value = self.time_ns["barrier"]
        for n, ns in self.barrier_by_cores:
            if cores >= n:
                value = ns
        return value

    def synop_cost(self, kind, which="energy") -> float:
        """pJ (which='energy') or ns ('time') of one synaptic op into a projection of `kind`."""
        table = (self.synops_by_kind or {}).get(which, {})
        if kind in table:
            return table[kind]
        return self.energy_per_event("synops") if which == "energy" else self.time_ns["synops"]

    def energy_per_event(self, event, memory_bytes=None):
        """pJ per event; SRAM-size-dependent entries pick the smallest array holding `memory_bytes`."""
        e = self.energy_pj[event]
        if isinstance(e, float):
            return e
        for size, pj in e:
            if memory_bytes is None or memory_bytes <= size:
                return pj
        return e[-1][1]


def available() -> list:
    """Names of the built-in targets."""
    return sorted(r.name[:-5] for r in BUILTIN_TARGETS.iterdir() if r.name.endswith(".json"))


def constants_digest(raw: dict) -> str:
    """sha256 of the numbers of a target file's priced sections (sources and descriptions left out): a validation
    band holds only for the constants it was computed with."""
    def numbers(x):
        if isinstance(x, dict):
            return {k: numbers(v) for k, v in sorted(x.items()) if k != "source"}
        if isinstance(x, list):
            return [numbers(v) for v in x]
        return x

    blob = json.dumps({k: numbers(raw.get(k)) for k in PRICED}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()



def _number(section, key, entry, where):
    if not isinstance(entry, dict) or "source" not in entry:
        raise TargetError(f"{where}: {section}.{key} must be an object with a 'value' and a 'source'")
    if "sram_pj_per_byte" in entry:
        table = entry["sram_pj_per_byte"]
        try:
            table = [(float(s), float(v)) for s, v in table]
        except (TypeError, ValueError):
            raise TargetError(f"{where}: {section}.{key}.sram_pj_per_byte must be [[bytes, pJ], ...]") from None
        if not table or any(s <= 0 or v < 0 for s, v in table) or [s for s, _ in table] != sorted(s for s, _ in table):
            raise TargetError(f"{where}: {section}.{key}.sram_pj_per_byte must be non-empty, increasing, non-negative")
        return table
    value = entry.get("value")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value) or value < 0:
        raise TargetError(f"{where}: {section}.{key}.value must be a finite number >= 0, got {value!r}")
    return float(value)


def _table(entry, key, where, field, keys=None):
    """A [[x, y], ...] table (increasing x, y >= 0) or a {kind: y} map (keys given) of an entry, checked."""
    raw = entry[key]
    try:
        if keys is not None:
            if not isinstance(raw, dict) or set(raw) - set(keys):
                raise ValueError
            out = {k: float(v) for k, v in raw.items()}
            bad = any(not np.isfinite(v) or v < 0 for v in out.values())
        else:
            out = tuple((float(n), float(v)) for n, v in raw)
            bad = not out or any(n < 1 or v < 0 or not np.isfinite(v) for n, v in out) or \
                [n for n, _ in out] != sorted({n for n, _ in out})
    except (TypeError, ValueError):
        bad = True
    if bad:
        want = f"{{kind: number >= 0}} with kinds in {', '.join(keys)}" if keys is not None else \
            "[[cores >= 1, ns >= 0], ...] with increasing cores"
        raise TargetError(f"{where}: {field}.{key} must be {want}, got {raw!r}")
    return out


def _read(path):
    with open(path, encoding="utf-8") as fh:
        return fh.read()


def load_target(name_or_path) -> Target:
    """Load a built-in target by name (loihi, truenorth, generic45nm) or a user JSON file in the same schema."""
    path = os.fspath(name_or_path)
    builtin = None
    if not os.path.exists(path):
        builtin = BUILTIN_TARGETS.joinpath(f"{path}.json")
        if "/" in path or os.sep in path or not builtin.is_file():
            raise TargetError(f"unknown target {path!r}: not a file and not one of {', '.join(available())}")
        path = str(builtin)
    try:
        raw = json.loads(builtin.read_text(encoding="utf-8") if builtin is not None else _read(path))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TargetError(f"{path}: cannot read target file ({exc})") from None
    if not isinstance(raw, dict):
        raise TargetError(f"{path}: a target file holds one JSON object, got {type(raw).__name__}")
    sources = {}

    def section(name, keys):
        sec = raw.get(name)
        if not isinstance(sec, dict):
            raise TargetError(f"{path}: missing section {name!r}")
        out = {}
        for k in keys:
            if k not in sec:
                raise TargetError(f"{path}: {name}.{k} is missing")
            out[k] = _number(name, k, sec[k], path)
            sources[f"{name}.{k}"] = sec[k]["source"]
        return out

    by_kind = {}
    for sec, which in (("energy_pj", "energy"), ("time_ns", "time")):
        entry = raw.get(sec, {}).get("synops") if isinstance(raw.get(sec), dict) else None
        if isinstance(entry, dict) and "by_kind" in entry:
            by_kind[which] = _table(entry, "by_kind", path, f"{sec}.synops", SYNAPSE_KINDS)
    barrier = raw.get("time_ns", {}).get("barrier") if isinstance(raw.get("time_ns"), dict) else None
    by_cores = ()
    if isinstance(barrier, dict) and "by_cores" in barrier:
        by_cores = _table(barrier, "by_cores", path, "time_ns.barrier")
    energy = section("energy_pj", EVENTS)
    times = section("time_ns", TIMED_EVENTS + ("barrier",))
    limits = section("limits", LIMITS)
    for k, default in OPTIONAL_LIMITS.items():
        entry = raw["limits"].get(k)
        limits[k] = default if entry is None else _number("limits", k, entry, path)
        if entry is not None:
            sources[f"limits.{k}"] = entry["source"]
    if limits["chips"] < 1 or limits["cores_per_chip"] < 1 or limits["neurons_per_core"] < 1:
        raise TargetError(f"{path}: limits.chips, cores_per_chip and neurons_per_core must be >= 1")
    for k in ("static_power_mw_per_core", "tick_ns"):
        if k not in raw:
            raise TargetError(f"{path}: {k} is missing")
        sources[k] = raw[k].get("source", "") if isinstance(raw[k], dict) else ""
    static = _number("", "static_power_mw_per_core", raw["static_power_mw_per_core"], path)
    tick = _number("", "tick_ns", raw["tick_ns"], path)
    per_chip = 0.0
    if "static_power_mw_per_chip" in raw:  # optional (older files have none): leakage of every powered chip
        per_chip = _number("", "static_power_mw_per_chip", raw["static_power_mw_per_chip"], path)
        sources["static_power_mw_per_chip"] = raw["static_power_mw_per_chip"]["source"]
    if any(not isinstance(v, float) for v in list(times.values()) + list(limits.values()) + [static, tick, per_chip]):
        raise TargetError(f"{path}: only energy entries may be SRAM tables")
    validation = raw.get("validation")
    if validation is not None and not (isinstance(validation, dict) and isinstance(validation.get("digest"), str)):
        raise TargetError(f"{path}: validation must be an object with a 'digest' (benchmarks/validate_targets.py "
                          "writes it)")
    return Target(str(raw.get("name", os.path.basename(path))), str(raw.get("description", "")), energy, times,
                  static, tick, limits, sources, path, per_chip, by_cores, by_kind or None, validation,
                  constants_digest(raw))
