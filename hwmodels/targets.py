"""Hardware targets as data: JSON files in one schema (docs/TARGETS.md), every constant with its source."""
from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from importlib import resources

import numpy as np

from spikeforge.errors import UserError

# Built-in targets ship as package data (spikeforge/hwmodels/targets/*.json), read through importlib.resources so
# they are found in a wheel, a zip or an editable install alike.
BUILTIN_TARGETS = resources.files(__package__).joinpath("targets")
# Event types a target prices; they are the simulator's counter names.
# neuron_updates: every mapped neuron each step (its access); active_neurons: the neurons with input or a bias in the
# step (their update); packets are priced on the sending core, packets_in on the receiving one.
EVENTS = ("synops", "macs", "spikes", "packets", "hops", "synapse_bytes_read", "packets_in", "active_neurons",
          "chip_packets", "chip_hops", "neuron_updates", "state_bytes_read", "state_bytes_written")
TIMED_EVENTS = ("synops", "macs", "neuron_updates", "active_neurons", "spikes", "packets", "packets_in", "hops",
                "chip_hops")
# Events a target file may leave out (files written before they existed): priced 0, i.e. included in others.
OPTIONAL_EVENTS = ("packets_in", "active_neurons", "chip_packets")
# A chip-to-chip link crossing where a target file prices none: one on-chip hop's energy and time (a lower bound;
# no chip-to-chip figure is published for it), said in its source.
CHIP_HOP_FALLBACK = "no chip-to-chip link figure in this target file: priced as one on-chip hop (a lower bound)"
# how a chip takes analog input: MAC units; per-neuron biases the host writes; or one drive event per input-fed
# neuron and step (a packet received and a synaptic op, as SANA-FE's export drives a first layer)
ANALOG_INPUT = ("mac", "bias", "drive")
LIMITS = ("neurons_per_core", "axons_per_core", "cores_per_chip", "synapse_memory_bytes_per_core", "weight_bits")
# Optional limits and their defaults: chips on the board, mesh columns per chip (0: square), whether conv kernels
# are stored once per core (weight sharing), bits per stored synapse (0: weight bits + target-index bits),
# membrane (state) bits for the fixed-point mode.
OPTIONAL_LIMITS = {"chips": 1.0, "mesh_width": 0.0, "weight_sharing": 0.0, "bits_per_synapse": 0.0,
                   "membrane_bits": 0.0, "cores_per_tile": 1.0,
                   # chips whose compilers cut conv outputs into (channels, rows, columns) boxes, one per core; a
                   # per-core limit of output axon entries (one per neuron and destination core)
                   "box_partition": 0.0, "output_axons_per_core": 0.0,
                   # synapse lists in words (converter/synapse_memory.py); 0 word bits: bits per synapse instead
                   "synapse_word_bits": 0.0, "list_entry_header_bits": 0.0, "synapses_per_list_entry": 1.0,
                   "min_index_bits": 0.0, "conv_list_sharing": 0.0, "cx_base_groups": 0.0,
                   # bits a graded (integer-valued) spike carries (Loihi 2); 0: not stated
                   "spike_payload_bits": 0.0}
# Projection kinds a synaptic-op cost may depend on ("by_kind" in energy_pj.synops / time_ns.synops): calibrated
# chip models price a dense, sparse and convolutional synapse differently (SANA-FE's Loihi model).
SYNAPSE_KINDS = ("dense", "sparse", "conv2d")
# How a target's mapper places a network (the optional top-level "mapping": {"rule", "source"}): "cores" cuts
# populations into cores within the limits (converter/mapping.py); "speck" one layer per core of a SynSense
# Speck / DYNAP-CNN chip (converter/speck.py); "xylo" the whole network on Xylo's one SNN core (converter/xylo.py).
MAPPING_RULES = ("cores", "speck", "xylo")
# Sections whose numbers a validation band vouches for (constants_digest): a band computed for other constants
# is not shown.
PRICED = ("energy_pj", "time_ns", "static_power_mw_per_core", "static_power_mw_per_chip", "tick_ns",
          "pipelined_layers", "analog_input", "supply_voltage")


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
    barrier_by_tiles: tuple = ()  # ((tiles, ns), ...): per-step sync keyed on the tiles in use (limits.cores_per_tile)
    pipelined: bool = False  # one step per layer: a spike sent in step t is processed in step t + 1
    analog_input: str = "mac"  # ANALOG_INPUT: how analog input enters the chip
    voltage: dict = None  # {"nominal", "min", "max", "static_mw_per_chip": ((V, mW), ...)} (supply_voltage)
    mapping: str = "cores"  # MAPPING_RULES: the rule converter.mapping.map_network places the network by
    barrier_by_chips: tuple = ()  # ((chips, ns), ...): measured per-step sync of systems of several chips

    def barrier_ns(self, cores: int, tiles: int = None, chips: int = 1) -> float:
        """Per-step synchronization with `cores` cores (on `tiles` tiles, `chips` chips) in use: the entry of the
        largest key <= the tiles (barrier.by_tiles) or cores (barrier.by_cores) in use (a step function, as
        SANA-FE's table), else the fixed time_ns.barrier. On several chips, where the target gives measured
        multi-chip barriers (barrier.by_chips), the barrier is interpolated linearly in log2(chips) between one
        chip's (the table's) and those points, and held beyond the last."""
        one = self._one_chip_barrier(cores, tiles)
        if chips <= 1 or not self.barrier_by_chips:
            return one
        xs = [0.0] + [math.log2(n) for n, _ in self.barrier_by_chips]
        ys = [one] + [ns for _, ns in self.barrier_by_chips]
        return float(np.interp(math.log2(chips), xs, ys))

    def _one_chip_barrier(self, cores, tiles):
        value = self.time_ns["barrier"]
        table, used = (self.barrier_by_tiles, tiles) if self.barrier_by_tiles else (self.barrier_by_cores, cores)
        if used is None:
            used = -(-cores // int(self.limits.get("cores_per_tile", 1)))
        for n, ns in table:
            if used >= n:
                value = ns
        return value

    def voltage_scale(self, volts=None) -> tuple:
        """(dynamic energy factor, static power per chip in mW) at supply `volts` (None: the nominal): dynamic
        energy goes with V² (CV²); the static power is the target's published curve, interpolated, where it gives
        one, else scales as V^static_exponent (2 where the floor is per-tick switching, as TrueNorth's)."""
        if volts is None:
            return 1.0, self.static_power_mw_per_chip
        v = self.voltage
        if not v:
            raise TargetError(f"target {self.name!r} has no supply_voltage section: its voltage cannot be set")
        if not v["min"] <= volts <= v["max"]:
            raise TargetError(f"target {self.name!r}: supply voltage {volts} V is outside its published range "
                              f"{v['min']}-{v['max']} V")
        curve = v.get("static_mw_per_chip") or ()
        static = float(np.interp(volts, [a for a, _ in curve], [b for _, b in curve])) if curve else \
            self.static_power_mw_per_chip * (volts / v["nominal"]) ** v["static_exponent"]
        return (volts / v["nominal"]) ** 2, static

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


def _table(entry, key, where, field, keys=None, what="cores"):
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
            f"[[{what} >= 1, ns >= 0], ...] with increasing {what}"
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
    digest = constants_digest(raw)  # of the file as written (before events it leaves out are filled in)

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
    by_tiles = ()
    if isinstance(barrier, dict) and "by_tiles" in barrier:
        by_tiles = _table(barrier, "by_tiles", path, "time_ns.barrier", what="tiles")
    by_chips = ()
    if isinstance(barrier, dict) and "by_chips" in barrier:
        by_chips = _table(barrier, "by_chips", path, "time_ns.barrier", what="chips")
        if by_chips[0][0] < 2:
            raise TargetError(f"{path}: time_ns.barrier.by_chips keys are systems of 2 or more chips, got "
                              f"{by_chips[0][0]:g}")
    for sec in ("energy_pj", "time_ns"):  # events newer than the file: priced 0 (their cost sits in other events)
        if isinstance(raw.get(sec), dict):
            for event in OPTIONAL_EVENTS:
                raw[sec].setdefault(event, {"value": 0.0, "source": "not in this target file: included in other "
                                                                      "events"})
    for sec in ("energy_pj", "time_ns"):
        if isinstance(raw.get(sec), dict) and isinstance(raw[sec].get("hops"), dict):
            hop = raw[sec]["hops"]
            raw[sec].setdefault("chip_hops", {"value": hop.get("value"), "source": f"{CHIP_HOP_FALLBACK}: "
                                                                                   f"{hop.get('source', '')}"})
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
    pipelined = False
    if "pipelined_layers" in raw:
        pipelined = _number("", "pipelined_layers", raw["pipelined_layers"], path) not in (0.0,)
        sources["pipelined_layers"] = raw["pipelined_layers"]["source"]
    analog = _choice(raw, "analog_input", "mode", ANALOG_INPUT, "mac", sources, path)
    voltage = None
    if "supply_voltage" in raw:
        voltage = _voltage(raw["supply_voltage"], path)
        sources["supply_voltage"] = raw["supply_voltage"]["source"]
    mapping = _choice(raw, "mapping", "rule", MAPPING_RULES, "cores", sources, path)
    validation = raw.get("validation")
    if validation is not None and not (isinstance(validation, dict) and isinstance(validation.get("digest"), str)):
        raise TargetError(f"{path}: validation must be an object with a 'digest' (benchmarks/validate_targets.py "
                          "writes it)")
    return Target(str(raw.get("name", os.path.basename(path))), str(raw.get("description", "")), energy, times,
                  static, tick, limits, sources, path, per_chip, by_cores, by_kind or None, validation,
                  digest, by_tiles, pipelined, analog, voltage, mapping, by_chips)


def _choice(raw, section, key, allowed, default, sources, path):
    """An optional {key: one of `allowed`, "source": ...} section (e.g. analog_input.mode, mapping.rule): its value,
    or `default` where the file has none; its source is recorded."""
    if section not in raw:
        return default
    entry = raw[section]
    if not isinstance(entry, dict) or entry.get(key) not in allowed or "source" not in entry:
        raise TargetError(f"{path}: {section} must be an object with a {key!r} ({', '.join(allowed)}) and a "
                          "'source'")
    sources[section] = entry["source"]
    return entry[key]


def _voltage(entry, path):
    """The supply_voltage section: nominal (the voltage the energies hold at), min, max (V), optionally
    static_mw_per_chip [[V, mW], ...] (a published leakage curve) or static_exponent (the per-chip floor goes as
    V^static_exponent; default 0: unchanged), and a source."""
    try:
        if not isinstance(entry, dict) or "source" not in entry:
            raise ValueError
        out = {k: float(entry[k]) for k in ("nominal", "min", "max")}
        out["static_exponent"] = float(entry.get("static_exponent", 0.0))
        if not 0 < out["min"] <= out["nominal"] <= out["max"] or not all(np.isfinite(list(out.values()))):
            raise ValueError
        curve = tuple((float(a), float(b)) for a, b in entry.get("static_mw_per_chip", ()))
        if any(b < 0 or not np.isfinite(b) for _, b in curve) or [a for a, _ in curve] != sorted({a for a, _ in curve}):
            raise ValueError
    except (TypeError, ValueError, KeyError):
        raise TargetError(f"{path}: supply_voltage must be an object with nominal, min, max (0 < min <= nominal <= "
                          "max, volts), optionally static_mw_per_chip [[volts, mW], ...] with increasing volts or "
                          "static_exponent, and a source") from None
    out["static_mw_per_chip"] = curve
    return out
