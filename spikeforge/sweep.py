"""Design-space sweeps on Dask: `spikeforge sweep SPEC.toml [--scheduler ADDRESS] [--workers N]` (spikeforge.cli).

A spec names a network (a model factory trained here on a dataset, or a network file), the conversion recipe,
the data, and axes; every combination of axis values is a point. Points run on Dask (a local cluster by
default, an existing scheduler with --scheduler); each finished point is written at once, atomically, as
STORE/points/<id>.json (id = hash of its axis values), so an interrupted sweep resumes and skips finished points
(a store holds one recipe, STORE/recipe.json: a spec with other [network] / [data] settings is refused on it);
a failing point records its error and the sweep goes on. At the end: STORE/results.csv (and results.parquet when
pandas + pyarrow are installed), Pareto plots (accuracy vs energy, accuracy vs latency, energy vs cores) and
STORE/summary.md.

A sweep writes only into a store folder that is new, empty or a sweep store (marked by STORE/.spikeforge-sweep,
written before anything else; an unmarked store of an earlier version is adopted): a folder holding anything the
sweep does not make (a user's summary.md, notes, the spec itself for store = ".") is refused before any work.

Axes (docs in `spikeforge sweep --example`): target, T, neuron ("if" | "group"), tau, weight_bits (0 = float),
calibration ("none" | "cc": closed-form coarse calibration of the initial membranes), placement
("snake" | "anneal"), limits.<name> (any target limit: neurons_per_core, weight_bits, mesh_width, ...),
energy_pj.<event> and time_ns.<event> (any target cost).
"""
from __future__ import annotations

import csv
import hashlib
import itertools
import json
import os
import sys
import time
import uuid

import numpy as np

from spikeforge.errors import UserError
from spikeforge.simulator.atomic import atomic_output, remove_stale, save_figure, write_text

AXES = ("target", "T", "neuron", "tau", "weight_bits", "calibration", "placement")
AXIS_PREFIXES = ("limits.", "energy_pj.", "time_ns.")
DEFAULTS = {"target": "loihi", "T": 8, "neuron": "if", "tau": 4, "weight_bits": 0, "calibration": "none",
            "placement": "snake"}
METRICS = ("accuracy", "synops", "energy_uj", "latency_us", "cores")
# [data] name -> its loader in spikeforge.data (no download): the digits, and the digits cut to Xylo's size
DATASETS = {"digits": "load_digits_split", "digits-xylo": "load_digits_xylo_split"}
# energy_uj by component (hwmodels.cost.COMPONENTS and static), one column each, and the band behind it
COMPONENTS = ("synapse", "neuron access", "neuron update", "spikes", "messages", "hops", "input", "static")
COMPONENT_COLUMNS = tuple(f"{c.replace(' ', '_')}_uj" for c in COMPONENTS)


class SweepSpecError(UserError):
    """The sweep spec is malformed; the message names the key."""


TOP_KEYS = ("name", "store", "network", "data", "axes")
NETWORK_KEYS = ("model", "file", "epochs", "lr", "norm", "percentile", "calibration_samples", "seed")
DATA_KEYS = ("name", "path", "test_samples", "seed")
CHOICES = {"neuron": ("if", "group"), "calibration": ("none", "cc"), "placement": ("snake", "anneal")}
INT_AXES = {"T": 1, "tau": 1, "weight_bits": 0}  # axis -> smallest value

# what a sweep writes into its store (write_outputs, _model, _check_recipe, run_sweep); nothing else is its own
MARKER = ".spikeforge-sweep"
MARKER_CONTENT = {"kind": "spikeforge-sweep-store", "version": 1}
PLOTS = ("accuracy_vs_energy.png", "accuracy_vs_latency.png", "energy_vs_cores.png")
STORE_FILES = ("recipe.json", "ann.pt", "results.csv", "results.parquet", "summary.md", *PLOTS)
STORE_FOLDERS = ("points",)


def load_spec(path) -> dict:
    """Read and check a TOML spec completely (keys, axes and their values, targets, model, data), so that a bad
    spec is refused before a store folder is made or Dask starts; every error names the file and the key. Relative
    paths in it (network file, data path, target files) are taken relative to the spec's folder."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    path = os.fspath(path)
    with open(path, "rb") as fh:
        try:
            spec = tomllib.load(fh)
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise SweepSpecError(f"{path}: not a valid TOML spec ({exc})") from None
    where = os.path.dirname(os.path.abspath(path))

    def fail(message):
        raise SweepSpecError(f"{path}: {message}")

    def known(table, allowed, section):
        for key in table:
            if key not in allowed:
                fail(f"unknown key {key!r} in {section} (allowed: {', '.join(allowed)})")

    known(spec, TOP_KEYS, "the top level")
    if "store" in spec and (not isinstance(spec["store"], str) or not spec["store"].strip()):
        fail(f"store must be a folder path (a non-empty string), got {type(spec['store']).__name__} "
             f"{spec['store']!r}")
    net = spec.get("network")
    if not isinstance(net, dict) or ("model" not in net) == ("file" not in net):
        fail("[network] needs exactly one of model = 'module:factory' or file = 'net.h5'")
    known(net, NETWORK_KEYS, "[network]")
    for key in ("epochs", "calibration_samples", "seed"):
        if key in net and (not isinstance(net[key], int) or isinstance(net[key], bool) or net[key] < 0):
            fail(f"[network] {key} must be an integer >= 0, got {net[key]!r}")
    if "file" in net:
        net["file"] = os.path.join(where, str(net["file"]))
        if not os.path.isfile(net["file"]):
            fail(f"[network] file {net['file']}: no such file")
    axes = spec.get("axes", {})
    if not isinstance(axes, dict) or not axes:
        fail("[axes] must name at least one axis with a list of values")
    for key, values in axes.items():
        if key not in AXES and not key.startswith(AXIS_PREFIXES):
            fail(f"unknown axis {key!r} (axes: {', '.join(AXES)}, {', '.join(p + '<name>' for p in AXIS_PREFIXES)})")
        if not isinstance(values, list) or not values:
            fail(f"axis {key!r} must be a non-empty list")
        for v in values:
            if key in INT_AXES and (not isinstance(v, int) or isinstance(v, bool) or v < INT_AXES[key]):
                fail(f"axis {key!r}: {v!r} is not an integer >= {INT_AXES[key]}")
            if key in CHOICES and v not in CHOICES[key]:
                fail(f"axis {key!r}: {v!r} is not one of {', '.join(CHOICES[key])}")
            if key.startswith(AXIS_PREFIXES) and (not isinstance(v, (int, float)) or isinstance(v, bool)):
                fail(f"axis {key!r}: {v!r} is not a number")
    fixed = "file" in net and (set(axes.get("neuron", ["if"])) != {"if"} or
                               set(axes.get("calibration", ["none"])) != {"none"})
    if fixed:
        fail("a network file is fixed: the neuron and calibration axes need network.model")
    if "target" in axes:  # a target file is found relative to the spec's folder
        axes["target"] = [os.path.join(where, t) if isinstance(t, str) and os.path.isfile(os.path.join(where, t))
                          else t for t in axes["target"]]
    _check_targets(axes, fail)
    if "model" in net:  # imported last: the cheap checks first
        _check_model(net["model"], fail)
    data = spec.setdefault("data", {"name": "digits"})
    if not isinstance(data, dict):
        fail("[data] must be a table")
    known(data, DATA_KEYS, "[data]")
    if "path" in data:
        data["path"] = os.path.join(where, str(data["path"]))
        if not os.path.isfile(data["path"]):
            fail(f"[data] path {data['path']}: no such file")
        _check_data_file(data["path"], "model" in net, fail)
    elif data.get("name", "digits") not in DATASETS:
        fail(f"[data] unknown dataset {data.get('name')!r} (give name = {' or '.join(map(repr, DATASETS))} or "
             "path = 'file.npz' with x_train, y_train, x_test, y_test)")
    if "test_samples" in data and (not isinstance(data["test_samples"], int) or data["test_samples"] < 1):
        fail(f"[data] test_samples must be an integer >= 1, got {data['test_samples']!r}")
    spec["store"] = os.path.normpath(os.path.join(where, spec.get("store", os.path.splitext(os.path.basename(path))[0]
                                                                  + "-results")))
    return spec


def _check_data_file(path, train, fail):
    """The .npz of [data] path holds x_test and y_test (and x_train, y_train when a model is trained here): numeric
    arrays, one integer label per sample. Checked when the spec is read, not on every point."""
    needed = (("x_train", "y_train") if train else ()) + ("x_test", "y_test")
    from spikeforge.simulator.arrayfiles import list_arrays, read_arrays

    files = []
    try:  # numeric arrays only, their declared sizes within the memory bound, checked before reading
        files = [n for n in list_arrays(path) if n is not None]
        arrays = read_arrays(path, [k for k in needed if k in files])
    except (OSError, ValueError, EOFError) as exc:  # (a SweepSpecError is a ValueError: fail outside this block)
        arrays = exc
    if isinstance(arrays, Exception):
        fail(f"[data] path {path}: not a readable .npz ({' '.join(str(arrays).split()) or type(arrays).__name__})")
    missing = [k for k in needed if k not in arrays]
    if missing:
        fail(f"[data] path {path}: no array {', '.join(missing)} (it holds {', '.join(files) or 'no named arrays'}; "
             f"a sweep needs {', '.join(needed)})")
    for x, y in zip(needed[::2], needed[1::2]):
        if arrays[x].dtype.kind not in "biuf" or arrays[x].ndim < 2:
            fail(f"[data] path {path}: {x} must be numeric samples (N, *input shape), got {arrays[x].dtype} "
                 f"{arrays[x].shape}")
        if arrays[y].ndim != 1 or arrays[y].dtype.kind not in "biu":
            fail(f"[data] path {path}: {y} must be integer class labels (N,), got {arrays[y].dtype} {arrays[y].shape}")
        if len(arrays[x]) != len(arrays[y]) or not len(arrays[x]):
            fail(f"[data] path {path}: {x} has {len(arrays[x])} samples but {y} {len(arrays[y])} labels")


def _check_model(spec_text, fail):
    """network.model names an importable MODULE:CALLABLE that returns a torch.nn.Module (imported and called here,
    before any folder or cluster: a factory returning something else used to fail only after the store was made)."""
    import importlib

    if not isinstance(spec_text, str) or spec_text.count(":") != 1:
        fail(f"[network] model must be 'module:factory', got {spec_text!r}")
    mod, attr = spec_text.split(":")
    try:
        module = importlib.import_module(mod)
    except ImportError as exc:
        fail(f"[network] model {spec_text!r}: cannot import {mod!r} ({exc})")
    if not callable(getattr(module, attr, None)):
        options = sorted(n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n))
                         and isinstance(getattr(module, n), type))
        fail(f"[network] model {spec_text!r}: {mod} has no {attr!r}" + (f" (it has {', '.join(options)})"
                                                                          if options else ""))
    import torch

    with torch.random.fork_rng(devices=[]):  # (the global RNG is left as it was: _model seeds it before training)
        try:
            model = getattr(module, attr)()
        except Exception as exc:  # noqa: BLE001 - the user's code: say whose error it is
            model = exc
    if isinstance(model, Exception):
        fail(f"[network] model {spec_text!r}: calling {attr}() raised {type(model).__name__}: "
             f"{' '.join(str(model).split())[:300]}")
    if not isinstance(model, torch.nn.Module):
        fail(f"[network] model {spec_text!r}: {attr}() returned {_what(model)}, not a torch.nn.Module")


def _what(value) -> str:
    """A short description of a value for an error message: its type, and its text when that is short."""
    text = " ".join(repr(value).split())
    return f"a {type(value).__name__}" + (f" ({text})" if len(text) <= 60 else "")


def _check_targets(axes, fail):
    """Every target loads, and every limits. / energy_pj. / time_ns. axis names an entry each target has."""
    from spikeforge.hwmodels.targets import load_target

    targets = []
    for t in axes.get("target", [DEFAULTS["target"]]):
        try:
            targets.append(load_target(str(t)))
        except UserError as exc:
            fail(f"axis 'target': {exc}")
    for key in axes:
        for prefix in AXIS_PREFIXES:
            if key.startswith(prefix):
                for t in targets:
                    table = getattr(t, prefix[:-1])
                    if key[len(prefix):] not in table:
                        fail(f"axis {key!r}: target {t.name!r} has no {prefix[:-1]} entry {key[len(prefix):]!r} "
                             f"(it has {', '.join(table)})")


def points(spec) -> list:
    """Every combination of the axis values, as parameter dicts (axis order as in the spec)."""
    keys = list(spec["axes"])
    return [dict(zip(keys, combo)) for combo in itertools.product(*(spec["axes"][k] for k in keys))]


def point_id(params) -> str:
    return hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]


# ---- evaluation of one point (runs on a Dask worker) ------------------------------------------------------

_CACHE = {}


def _data(spec):
    """(x_train, y_train, x_test, y_test) as float32 / int64 arrays: scikit-learn digits or an .npz."""
    key = ("data", json.dumps(spec["data"], sort_keys=True))
    if key not in _CACHE:
        d = spec["data"]
        if "path" in d:
            from spikeforge.simulator.arrayfiles import list_arrays, read_arrays

            keys = [k for k in ("x_train", "y_train", "x_test", "y_test") if k in list_arrays(d["path"])]
            got = read_arrays(d["path"], keys)  # (a network file's sweep needs only x_test, y_test)
            arrays = tuple(got.get(k) for k in ("x_train", "y_train", "x_test", "y_test"))
        elif d.get("name", "digits") in DATASETS:
            from spikeforge import data

            load = getattr(data, DATASETS[d.get("name", "digits")])
            arrays = tuple(a.numpy() for a in load(seed=int(d.get("seed", 0))))
        else:
            raise SweepSpecError(f"[data]: unknown dataset {d.get('name')!r}")
        n = int(d.get("test_samples", len(arrays[2])))
        _CACHE[key] = (arrays[0], arrays[1], arrays[2][:n], arrays[3][:n])
    return _CACHE[key]


def _model(spec):
    """The trained torch model (trained once per store; the weights are cached in STORE/ann.pt)."""
    import importlib

    import torch

    from spikeforge.converter.training import train_classifier

    net = spec["network"]
    mod, attr = net["model"].split(":", 1)
    torch.manual_seed(int(net.get("seed", 0)))  # the initial weights too: a store's ANN is reproducible
    model = getattr(importlib.import_module(mod), attr)()
    if not isinstance(model, torch.nn.Module):  # (load_spec checked it; the module may have changed since)
        raise SweepSpecError(f"[network] model {net['model']!r}: {attr}() returned {_what(model)}, not a "
                             "torch.nn.Module")
    path = os.path.join(spec["store"], "ann.pt")
    if os.path.exists(path):
        try:
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        except Exception as exc:  # noqa: BLE001 - a damaged file, or a model whose code changed since
            raise SweepSpecError(f"store {spec['store']}: {path} does not load into [network] model "
                                 f"{net['model']!r} ({type(exc).__name__}: {' '.join(str(exc).split())[:200]}); "
                                 "delete it to train the model again") from None
        return model.eval()
    xtr, ytr, _, _ = _data(spec)
    model = train_classifier(model, torch.as_tensor(xtr), torch.as_tensor(ytr), epochs=int(net.get("epochs", 20)),
                             lr=float(net.get("lr", 0.05)), seed=int(net.get("seed", 0)))
    with atomic_output(path) as tmp:
        torch.save(model.state_dict(), tmp)
    return model.eval()


def _network(spec, p):
    """The converted (or loaded) network for a point's neuron / calibration / precision, cached per worker."""
    # the store names the sweep: a worker of a shared cluster may serve several sweeps
    key = ("net", spec["store"], p["neuron"], p["tau"], p["calibration"],
           p["T"] if p["calibration"] != "none" else None)
    if key in _CACHE:
        return _CACHE[key]
    import torch

    from spikeforge.converter import convert

    net_spec = spec["network"]
    if "file" in net_spec:
        from spikeforge.simulator import load_network

        if p["neuron"] != "if" or p["calibration"] != "none":
            raise SweepSpecError("a network file is fixed: the neuron and calibration axes need network.model")
        net = load_network(net_spec["file"], isolate=True)
    else:
        model = _model(spec)
        xtr = torch.as_tensor(_data(spec)[0])
        n_cal = int(net_spec.get("calibration_samples", 256))
        net = convert(model, [xtr[:n_cal]], norm=net_spec.get("norm", "percentile"),
                      percentile=float(net_spec.get("percentile", 99.9)), neuron=p["neuron"], tau=int(p["tau"]))
        if p["calibration"] == "cc":
            from spikeforge.converter.calibration import calibrate

            net = calibrate(net, model, xtr[:n_cal], int(p["T"]), mode="cc")
        elif p["calibration"] != "none":
            raise SweepSpecError(f"calibration {p['calibration']!r}: use 'none' or 'cc'")
    _CACHE[key] = net
    return net


def _target(p):
    """The point's target with its overridden limits and costs."""
    import dataclasses

    from spikeforge.hwmodels.targets import load_target

    t = load_target(p["target"])
    limits, energy, times = dict(t.limits), dict(t.energy_pj), dict(t.time_ns)
    for key, value in p.items():
        for prefix, table in zip(AXIS_PREFIXES, (limits, energy, times)):
            if key.startswith(prefix):
                name = key[len(prefix):]
                if name not in table:
                    raise SweepSpecError(f"axis {key!r}: target {t.name!r} has no {prefix[:-1]} entry {name!r}")
                table[name] = float(value)
    return dataclasses.replace(t, limits=limits, energy_pj=energy, time_ns=times)


def evaluate_point(spec, params) -> dict:
    """Run one point: convert, quantize, map, simulate, cost. Returns a row (status ok, or error + message)."""
    t0 = time.time()
    p = dict(DEFAULTS, **params)
    row = {"id": point_id(params), **params, "status": "ok", "error": ""}
    try:
        from spikeforge import simulator
        from spikeforge.converter.mapping import map_network
        from spikeforge.hwmodels import band_short, core_memory, estimate
        from spikeforge.hwmodels.noc import chip_link_loads

        target = _target(p)
        net = _network(spec, p)
        if int(p["weight_bits"]):
            from spikeforge.converter.fixed_point import to_fixed_point

            net = to_fixed_point(net, int(p["weight_bits"]), int(target.limits.get("membrane_bits") or 24))
        x_train, _, x, y = _data(spec)  # training samples (if any) set spiking fan-in relays' thresholds
        net = map_network(net, target, p["placement"], steps=int(p["T"]),
                          calibration=None if x_train is None else x_train[:64])
        res = simulator.run(net, x, int(p["T"]), record_links=True, **spec.get("execution", {}))
        labels = [net.populations[int(i)].name for i in net.cores.population]
        mem = core_memory(net)
        links = chip_link_loads(res, net, target, mem)
        cost = estimate(res.counters, simulator.COUNTERS, len(x), target, labels, mem, links=links)
        row.update(accuracy=float((res.predictions() == y).mean() * 100), synops=res.total("synops") / len(x),
                   energy_uj=cost.energy_pj / 1e6, latency_us=cost.latency_ns / 1e3, cores=net.cores.slots(),
                   mapping=str(net.attrs["mapping"]),
                   **{col: cost.components()[c] / 1e6 for c, col in zip(COMPONENTS, COMPONENT_COLUMNS)},
                   energy_band=band_short(target))
    except Exception as exc:  # noqa: BLE001 - a failing point is recorded and the sweep goes on
        row.update(status="error", error=f"{type(exc).__name__}: {exc}")
    row.update(seconds=round(time.time() - t0, 3), worker_pid=os.getpid())
    return row


# ---- driver ------------------------------------------------------------------------------------------------

def _some(names, shown=3) -> str:
    """'a', 'b' and 'c' / 'a', 'b', 'c' and 4 more."""
    quoted = [repr(n) for n in names]
    if len(quoted) <= shown:
        return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " and " + quoted[-1]
    return ", ".join(quoted[:shown]) + f" and {len(quoted) - shown} more"


def _is_recipe(path) -> bool:
    """STORE/recipe.json as _check_recipe writes it (an unmarked store of an earlier version is known by it)."""
    try:
        with open(path) as fh:
            content = json.load(fh)
    except (OSError, ValueError):
        return False
    return isinstance(content, dict) and set(content) == {"network", "data"}


def claim_store(store):
    """Refuse, before anything is written, a store folder that holds what a sweep does not make; else make or adopt
    it as a sweep store (STORE/.spikeforge-sweep, the first thing written into it).

    A store may be new, empty, marked, or unmarked but made by an earlier version (its points/ folder holds only
    point files, or its recipe.json is a sweep's): it is adopted. Whatever the marker says, every entry must be one
    a sweep makes (or a `.spikeforge-` file): `store = "."` over a folder of the user's own summary.md and
    results.csv would overwrite them, and a sweep never deletes or renames what is not its own."""
    if os.path.lexists(store) and not os.path.isdir(store):
        raise UserError(f"store {store} is a file, not a folder: give a new or empty folder (store = '...')")
    entries = sorted(os.listdir(store)) if os.path.isdir(store) else []
    own = [e for e in entries if e in STORE_FILES + STORE_FOLDERS]
    foreign = [e for e in entries if e not in own and not e.startswith(".spikeforge-")]
    points_dir = os.path.join(store, "points")
    made_here = (os.path.isfile(os.path.join(store, MARKER))
                 or (os.path.isdir(points_dir) and all(n.endswith(".json") or n.startswith(".spikeforge-")
                                                       for n in os.listdir(points_dir)))
                 or _is_recipe(os.path.join(store, "recipe.json")))
    suspects = foreign if made_here else own + foreign  # (without a sweep's marks its own names are the user's too)
    if suspects:
        raise UserError(f"store {store} holds {_some(suspects)} that this sweep did not make; give a new or empty "
                        "folder (store = '...' in the spec; a sweep writes only into a new or empty folder or a "
                        "store it made)")
    for e in own:
        if os.path.isdir(os.path.join(store, e)) != (e in STORE_FOLDERS):
            kind = ("a folder", "file") if e in STORE_FILES else ("not a folder", "folder")
            raise UserError(f"store {store}: {e!r} is {kind[0]}, where a sweep writes its {kind[1]} {e!r}; move it "
                            "away or give another store")
    if not os.path.isfile(os.path.join(store, MARKER)):
        os.makedirs(store, exist_ok=True)
        write_text(os.path.join(store, MARKER), json.dumps(MARKER_CONTENT) + "\n")


def open_store(store):
    """Claim the store (claim_store), then remove the temporary files of killed runs in it and in points/ (only
    spikeforge's, only of processes that are gone: a concurrent sweep's live temporary is kept)."""
    claim_store(store)
    os.makedirs(os.path.join(store, "points"), exist_ok=True)
    remove_stale(store)
    remove_stale(os.path.join(store, "points"))


def _row_problem(row, name):
    """What is wrong with a stored point row (None when nothing): a sweep writes {"id", axis values, "status": "ok"
    with every metric, or "error" with its message, ...} into points/<id>.json."""
    if not isinstance(row, dict):
        return f"a JSON {type(row).__name__}, not an object"
    if "id" not in row or "status" not in row:
        return f"no {' or '.join(repr(k) for k in ('id', 'status') if k not in row)} in it"
    if row["id"] != name[:-len(".json")]:
        return f"its id {row['id']!r} is not its file name"
    if row["status"] == "ok":
        bad = [m for m in METRICS if not isinstance(row.get(m), (int, float)) or isinstance(row.get(m), bool)]
        return f"status 'ok' without a number for {', '.join(bad)}" if bad else None
    if row["status"] == "error":
        return None if isinstance(row.get("error"), str) else "status 'error' without an error message"
    return f"status {row['status']!r} is neither 'ok' nor 'error'"


def _bad_point(store, path, problem):
    return SweepSpecError(f"store {store}: {path} is not a point this sweep wrote ({problem}); delete it to run "
                          "that point again")


def finished(store) -> dict:
    """id -> row of every point already in the store.

    A point file that cannot be read, is not JSON, or is not a row a sweep writes is refused, naming it, rather than
    skipped and rerun: point files are written atomically (a killed run leaves only a temporary, removed on the next
    run), so a damaged one was edited or broken by something else, and rerunning would silently overwrite it (and
    hide the damage); deleting it is one command and reruns just that point."""
    folder = os.path.join(store, "points")
    out = {}
    if os.path.isdir(folder):
        for name in sorted(os.listdir(folder)):
            if name.endswith(".json") and not name.startswith(".spikeforge-"):
                path = os.path.join(folder, name)
                try:
                    with open(path, encoding="utf-8") as fh:
                        row = json.load(fh)
                except OSError as exc:
                    raise _bad_point(store, path, f"cannot be read: {exc.strerror or type(exc).__name__}") from None
                except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
                    raise _bad_point(store, path, f"not JSON: {' '.join(str(exc).split())[:120]}") from None
                problem = _row_problem(row, name)
                if problem:
                    raise _bad_point(store, path, problem)
                out[row["id"]] = row
    return out


def recipe(spec) -> dict:
    """What every point of a store shares besides its axis values: [network] (a network file by its content's
    hash) and [data]. A point's id hashes its axis values only, so a store holds one recipe."""
    net = dict(spec["network"])
    if "file" in net:
        digest = hashlib.sha256()
        with open(net["file"], "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        net["file_sha256"] = digest.hexdigest()
    return {"network": net, "data": dict(spec["data"])}


def _check_recipe(spec):
    """Refuse a store made with another recipe (its finished points and trained ANN would be reused as if they
    were this spec's, silently); record the recipe of a new store (STORE/recipe.json)."""
    path = os.path.join(spec["store"], "recipe.json")
    mine = json.loads(json.dumps(recipe(spec)))  # (as it reads back: tuples as lists)
    if os.path.exists(path):
        try:
            with open(path, encoding="utf-8") as fh:
                theirs = json.load(fh)
        except ValueError as exc:  # (an OSError names the file itself)
            raise SweepSpecError(f"store {spec['store']}: {path} is not JSON ({' '.join(str(exc).split())[:120]})"
                                 "; give this spec another store = '...' (or delete that folder)") from None
        if not isinstance(theirs, dict) or not all(isinstance(theirs.get(part, {}), dict) for part in mine):
            raise SweepSpecError(f"store {spec['store']}: {path} is not a sweep's recipe (a JSON object of "
                                 "[network] and [data]); give this spec another store = '...' (or delete that "
                                 "folder)")
        if theirs != mine:
            diff = [f"[{part}] {key} = {theirs.get(part, {}).get(key)!r} there, {mine[part].get(key)!r} here"
                    for part in mine for key in sorted(set(mine[part]) | set(theirs.get(part, {})))
                    if mine[part].get(key) != theirs.get(part, {}).get(key)]
            raise SweepSpecError(f"store {spec['store']} holds a sweep of another recipe ({'; '.join(diff)}): its "
                                 "finished points and trained ANN would be taken for this spec's; give this spec "
                                 "another store = '...' (or delete that folder)")
    else:
        os.makedirs(spec["store"], exist_ok=True)
        write_text(path, json.dumps(mine, indent=1, sort_keys=True))


def run_sweep(spec, scheduler=None, workers=None, retry_errors=False, log=print) -> list:
    """Run the sweep's missing points on Dask and write every result as it arrives; returns all rows."""
    from dask.distributed import as_completed
    from tqdm import tqdm

    from spikeforge.cluster import dask_client

    store = spec["store"]
    open_store(store)  # refuses a folder of someone else's files; removes the temporaries of killed runs
    _check_recipe(spec)
    done = finished(store)
    everything = points(spec)
    for p in everything:  # a point's id hashes its axis values: a stored row of other values was edited
        row = done.get(point_id(p))
        if row is not None and any(k not in row or row[k] != v for k, v in p.items()):
            values = ", ".join(f"{k} = {v!r}" for k, v in p.items())
            raise _bad_point(store, os.path.join(store, "points", f"{row['id']}.json"),
                             f"its axis values are not those its id names: {values}")
    if retry_errors:
        done = {k: v for k, v in done.items() if v["status"] == "ok"}
    todo = [p for p in everything if point_id(p) not in done]
    log(f"{len(everything)} points: {len(done)} finished (skipped), {len(todo)} to run; store {store}")
    if "model" in spec["network"]:
        _model(spec)  # train once here, so that workers only load the weights
    run_id = uuid.uuid4().hex[:12]
    if todo:
        with dask_client(scheduler, workers) as client:
            futures = [client.submit(evaluate_point, spec, p, key=f"point-{point_id(p)}-{run_id}", pure=False)
                       for p in todo]
            with tqdm(total=len(todo), desc="sweep", unit="point", file=sys.stderr) as bar:
                for fut in as_completed(futures):
                    row = dict(fut.result(), run_id=run_id)
                    write_text(os.path.join(store, "points", f"{row['id']}.json"), json.dumps(row, indent=1))
                    done[row["id"]] = row
                    bar.update(1)
                    if row["status"] != "ok":
                        bar.write(f"point {row['id']} failed: {row['error']}")
    rows = [done[point_id(p)] for p in everything]
    write_outputs(spec, rows)
    return rows


def unfit(rows) -> list:
    """The failed points whose network does not fit their target (the mapper refused it, saying why)."""
    return [r for r in rows if r["status"] != "ok" and str(r.get("error", "")).startswith("MappingError")]


def unfit_note(unmapped) -> str:
    """The note a plot carries for the points it leaves out because they do not fit their target."""
    n = len(unmapped)
    targets = sorted({str(r.get("target", DEFAULTS.get("target"))) for r in unmapped})
    return (f"left out: {n} point{'s' * (n != 1)} whose network does not fit the target "
            f"({', '.join(targets)}); summary.md says why")


def pareto(xs, ys, minimize_x=True) -> np.ndarray:
    """Indices of the points no other point beats on both x (lower or higher) and y (higher), sorted by x."""
    xs, ys = np.asarray(xs, float), np.asarray(ys, float)
    sx = xs if minimize_x else -xs
    keep = [i for i in range(len(xs)) if not np.any((sx <= sx[i]) & (ys >= ys[i]) & ((sx < sx[i]) | (ys > ys[i])))]
    return np.array(sorted(keep, key=lambda i: xs[i]), np.int64)


def write_outputs(spec, rows):
    """results.csv (+ parquet), the three Pareto PNGs and summary.md."""
    store = spec["store"]
    keys = list(spec["axes"])
    cols = ["id", *keys, "status", *METRICS, *COMPONENT_COLUMNS, "energy_band", "mapping", "seconds", "error"]
    with atomic_output(os.path.join(store, "results.csv")) as tmp, open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    try:
        import pandas as pd

        table = pd.DataFrame(rows)[[c for c in cols if any(c in r for r in rows)]]
        with atomic_output(os.path.join(store, "results.parquet")) as tmp:
            table.to_parquet(tmp)
    except ImportError:
        pass
    ok = [r for r in rows if r["status"] == "ok"]
    unmapped = unfit(rows)
    plots = [("accuracy_vs_energy.png", "energy_uj", "accuracy", "energy per inference (µJ)", "accuracy (%)", True),
             ("accuracy_vs_latency.png", "latency_us", "accuracy", "latency per inference (µs)", "accuracy (%)", True),
             ("energy_vs_cores.png", "cores", "energy_uj", "cores", "energy per inference (µJ)", None)]
    fronts = {}
    if ok:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        label_key = "target" if "target" in keys else keys[0]
        for fname, xk, yk, xl, yl, min_x in plots:
            x = np.array([r[xk] for r in ok], float)
            y = np.array([r[yk] for r in ok], float)
            # energy vs cores: fewer cores and lower energy are both better
            front = pareto(x, -y if min_x is None else y)
            fronts[fname] = [ok[i] for i in front]
            fig, ax = plt.subplots(figsize=(6, 4.2))
            for lab in sorted({str(r[label_key]) for r in ok}):
                sel = [i for i, r in enumerate(ok) if str(r[label_key]) == lab]
                ax.scatter(x[sel], y[sel], s=22, alpha=0.75, label=f"{label_key}={lab}")
            # the front's points are ringed (a front of one point has no line to show) and joined as a staircase
            spots, ties = np.unique(np.column_stack([x[front], y[front]]), axis=0, return_counts=True)
            tied = f" at {len(spots)} positions; xN: N points tie" if len(spots) < len(front) else ""
            ax.plot(x[front], y[front], "k--", lw=1, marker="o", ms=10, mfc="none", mew=1.3,
                    drawstyle="steps-post" if min_x is None else "default",
                    label=f"Pareto front ({len(front)} point{'s' * (len(front) != 1)}{tied})")
            for (sx, sy), count in zip(spots, ties):
                if count > 1:  # tied points share one ring: say how many it stands for
                    ax.annotate(f"x{count}", (sx, sy), textcoords="offset points", xytext=(7, 5), fontsize=7)
            ax.set_xlabel(xl)
            ax.set_ylabel(yl)
            for k, values, set_scale, axis in ((xk, x, ax.set_xscale, ax.xaxis), (yk, y, ax.set_yscale, ax.yaxis)):
                if k in ("energy_uj", "latency_us") and values.min() > 0 and values.max() > 20 * values.min():
                    from matplotlib.ticker import NullFormatter

                    set_scale("log")  # figures spanning decades (TrueNorth beside Loihi) on a log axis
                    axis.set_minor_formatter(NullFormatter())  # labelled minor ticks overlap on a short decade
            if xk == "cores":  # whole cores only
                from matplotlib.ticker import MaxNLocator

                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.margins(0.08)
            ax.set_title(f"{spec.get('name', 'sweep')}: {yl} vs {xl}", fontsize=9)
            ax.legend(fontsize=7)
            fig.tight_layout()
            if unmapped:  # said on the plot: a point missing because it does not fit is a finding, not a gap
                fig.subplots_adjust(bottom=fig.subplotpars.bottom + 0.05)
                fig.text(0.01, 0.01, unfit_note(unmapped), fontsize=6.5, color="dimgray")
            save_figure(fig, os.path.join(store, fname), dpi=120)
            plt.close(fig)
    lines = [f"# Sweep {spec.get('name', '')}", "",
             f"{len(rows)} points, {len(ok)} ok, {len(rows) - len(ok)} failed. Axes: "
             + "; ".join(f"{k} = {spec['axes'][k]}" for k in keys), ""]
    if not ok:  # no plot drawn: none named, and none of an earlier run's left to be taken for this one's
        for fname, *_ in plots:
            if os.path.exists(os.path.join(store, fname)):
                os.remove(os.path.join(store, fname))
        lines += ["No point succeeded: no Pareto fronts and no plots.", ""]
    for fname, xk, yk, *_ in plots if ok else ():
        lines += [f"## Pareto front: {yk} vs {xk} ({fname})", "",
                  "| " + " | ".join(keys + list(METRICS)) + " |", "|" + "---|" * (len(keys) + len(METRICS))]
        for r in fronts.get(fname, []):
            lines.append("| " + " | ".join(str(r[k]) for k in keys) + " | "
                         + " | ".join(f"{r[m]:.4g}" for m in METRICS) + " |")
        lines.append("")
    priced = [r for r in ok if COMPONENT_COLUMNS[0] in r]  # points stored by an older version have no components
    if priced:
        lines += ["## Energy by component (µJ per inference; results.csv has every point)", "",
                  "| " + " | ".join(keys + ["energy_uj", *COMPONENTS]) + " |",
                  "|" + "---|" * (len(keys) + 1 + len(COMPONENTS))]
        for r in priced:
            lines.append("| " + " | ".join(str(r[k]) for k in keys) + f" | {r['energy_uj']:.4g} | "
                         + " | ".join(f"{r[c]:.4g}" for c in COMPONENT_COLUMNS) + " |")
        bands = {}
        for r in priced:
            bands.setdefault(r.get("target", DEFAULTS.get("target")), r["energy_band"])
        lines += ["", "How far the energy figures can be trusted (each target's band over its independent "
                  "validation rows):", "", "| target | energy band |", "|---|---|"]
        lines += [f"| {t} | {b} |" for t, b in bands.items()] + [""]
    if unmapped:
        lines += ["## Points whose network does not fit the target (left out of the plots)", ""] + \
            [f"- {', '.join(f'{k}={r[k]}' for k in keys)}: {r['error'].split(': ', 1)[-1]}" for r in unmapped] + [""]
    bad = [r for r in rows if r["status"] != "ok" and r not in unmapped]
    if bad:
        lines += ["## Failed points", ""] + [f"- {', '.join(f'{k}={r[k]}' for k in keys)}: {r['error']}"
                                             for r in bad]
    write_text(os.path.join(store, "summary.md"), "\n".join(lines) + "\n")
