"""Design-space sweeps (spikeforge.sweep): a small sweep on a local Dask cluster is killed midway and resumed
without recomputing finished points; failing points are recorded and the sweep goes on."""
import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from spikeforge import sweep

SPEC = """
name = "test sweep"
store = "store"
[network]
model = "spikeforge.models:DigitsMLP"
epochs = 3
[data]
name = "digits"
test_samples = 60
[axes]
T = [1, 2, 3, 4, 5, 6, 7, 8]
target = ["loihi", "generic45nm"]
"limits.axons_per_core" = [1, 4096]
"""


def _point_files(store):
    """The stored points (a writer killed mid-write may also leave a temporary file beside them)."""
    folder = os.path.join(store, "points")
    return sorted(f for f in os.listdir(folder) if f.endswith(".json")) if os.path.isdir(folder) else []


def _sweep_cmd(spec):
    return [sys.executable, "-m", "spikeforge.cli", "sweep", spec, "--workers", "1"]


def test_sweep_killed_midway_resumes_without_recomputing(tmp_path):
    spec_path = tmp_path / "spec.toml"
    spec_path.write_text(SPEC)
    store = str(tmp_path / "store")
    env = dict(os.environ)
    proc = subprocess.Popen(_sweep_cmd(str(spec_path)), cwd=tmp_path, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while len(_point_files(store)) < 3 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver, the local cluster and its worker: no clean-up runs
    proc.wait()
    before = {f: (tmp_path / "store" / "points" / f).read_text() for f in _point_files(store)}
    assert 3 <= len(before) < 32, "the kill should land midway"
    first_run = {json.loads(t)["run_id"] for t in before.values()}
    assert len(first_run) == 1

    out = subprocess.run(_sweep_cmd(str(spec_path)), cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    # the 1-axon points fail: the sweep finishes them all, then exits 1 with the count
    assert out.returncode == 1, out.stderr[-2000:]
    assert "spikeforge sweep: 16 of 32 points failed" in out.stderr and "Traceback" not in out.stderr
    assert f"32 points: {len(before)} finished (skipped), {32 - len(before)} to run" in out.stdout
    after = _point_files(store)
    assert len(after) == 32 and sorted(os.listdir(os.path.join(store, "points"))) == after  # no stale temp files
    for f, text in before.items():  # finished points were not recomputed (same run id, same bytes)
        assert (tmp_path / "store" / "points" / f).read_text() == text
    rows = [json.loads((tmp_path / "store" / "points" / f).read_text()) for f in after]
    assert sum(r["run_id"] in first_run for r in rows) == len(before)

    # the 1-axon points fail in the mapper (no fan-in split gives a neuron of 64 inputs one axon) and say why;
    # the others ran (8-axon cores would now map: the split makes trees of relays)
    bad = [r for r in rows if r["status"] != "ok"]
    assert len(bad) == 16 and all(r["limits.axons_per_core"] == 1 and "axons" in r["error"] for r in bad)
    ok = [r for r in rows if r["status"] == "ok"]
    assert all(0 < r["accuracy"] <= 100 and r["energy_uj"] > 0 and r["cores"] >= 3 for r in ok)
    # each energy figure comes with its components (they add up to it) and its target's validation band
    for r in ok:
        assert sum(r[c] for c in sweep.COMPONENT_COLUMNS) == pytest.approx(r["energy_uj"])
        assert r["energy_band"] == "not validated (0 independent rows compared)"  # loihi, generic45nm
    # more steps, more synaptic work, on every target
    for target in ("loihi", "generic45nm"):
        syn = [r["synops"] for r in sorted(ok, key=lambda r: r["T"]) if r["target"] == target]
        assert np.all(np.diff(syn) > 0)
    with open(tmp_path / "store" / "results.csv") as fh:
        assert len(list(csv.DictReader(fh))) == 32
    for png in ("accuracy_vs_energy.png", "accuracy_vs_latency.png", "energy_vs_cores.png"):
        assert (tmp_path / "store" / png).stat().st_size > 5000
    summary = (tmp_path / "store" / "summary.md").read_text()
    assert "16 failed" in summary and "## Energy by component" in summary
    # the points that do not fit are a finding: their own section with the mapper's reason, a note on the plots
    assert "## Points whose network does not fit the target (left out of the plots)" in summary
    assert "## Failed points" not in summary
    assert sweep.unfit_note(bad) == "left out: 16 points whose network does not fit the target (generic45nm, " \
        "loihi); summary.md says why"
    assert "| loihi | not validated (0 independent rows compared) |" in summary


def test_pareto_front_by_hand():
    # energy (lower better) vs accuracy (higher better): (1, 50) (2, 80) (3, 70) (4, 90) (2, 60)
    front = sweep.pareto([1, 2, 3, 4, 2], [50, 80, 70, 90, 60])
    assert front.tolist() == [0, 1, 3]


def test_spec_errors_name_the_key(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text('[network]\nmodel = "m:f"\n[axes]\nvoltage = [1]\n')
    with pytest.raises(sweep.SweepSpecError, match="unknown axis 'voltage'"):
        sweep.load_spec(p)
    p.write_text('[network]\nmodel = "m:f"\nfile = "x.h5"\n[axes]\nT = [1]\n')
    with pytest.raises(sweep.SweepSpecError, match="exactly one of model"):
        sweep.load_spec(p)
    p.write_text('[network]\nmodel = "spikeforge.models:DigitsMLP"\n[axes]\n"limits.qubits" = [1]\n')
    with pytest.raises(sweep.SweepSpecError, match="target 'loihi' has no limits entry 'qubits'"):
        sweep.load_spec(p)


def _data_spec(tmp_path, network, **arrays):
    np.savez(tmp_path / "data.npz", **arrays)
    spec = tmp_path / "spec.toml"
    spec.write_text(f'[network]\n{network}\n[data]\npath = "data.npz"\n[axes]\nT = [2]\n')
    return spec


@pytest.mark.parametrize("arrays, message", [
    (dict(x_train=np.zeros((5, 64)), y_train=np.zeros(5, int), x_test=np.zeros((3, 64))),
     "no array y_test (it holds x_train, y_train, x_test; a sweep needs x_train, y_train, x_test, y_test)"),
    (dict(x=np.zeros((5, 64)), y=np.zeros(5, int)), "no array x_train, y_train, x_test, y_test (it holds x, y;"),
    (dict(x_train=np.zeros((5, 64)), y_train=np.zeros(4, int), x_test=np.zeros((3, 64)), y_test=np.zeros(3, int)),
     "x_train has 5 samples but y_train 4 labels"),
    (dict(x_train=np.zeros((5, 64)), y_train=np.zeros(5), x_test=np.zeros((3, 64)), y_test=np.zeros(3, int)),
     "y_train must be integer class labels (N,), got float64 (5,)"),
    (dict(x_train=np.zeros(5), y_train=np.zeros(5, int), x_test=np.zeros((3, 64)), y_test=np.zeros(3, int)),
     "x_train must be numeric samples (N, *input shape), got float64 (5,)"),
])
def test_sweep_data_file_is_checked_when_the_spec_is_read(tmp_path, arrays, message):
    """A model trained here needs x_train, y_train, x_test, y_test: a missing or mismatched array is refused before
    any point runs (it used to fail every point with a KeyError)."""
    spec = _data_spec(tmp_path, 'model = "spikeforge.models:DigitsMLP"', **arrays)
    with pytest.raises(sweep.SweepSpecError, match="data.npz: ") as err:
        sweep.load_spec(spec)
    assert message in str(err.value)


def test_sweep_of_a_network_file_needs_only_test_arrays(tmp_path):
    (tmp_path / "net.h5").write_bytes(b"")  # load_spec checks that it exists; the simulator reads it
    spec = _data_spec(tmp_path, 'file = "net.h5"', x_test=np.zeros((3, 64)), y_test=np.zeros(3, int))
    assert sweep.load_spec(spec)["data"]["path"].endswith("data.npz")
    (tmp_path / "data.npz").write_text("not an npz")
    with pytest.raises(sweep.SweepSpecError, match="data.npz: not a readable .npz"):
        sweep.load_spec(spec)


def test_a_store_of_another_recipe_is_refused_before_any_point_runs(tmp_path):
    """A point's id hashes its axis values; a store made with other [network] / [data] settings (or another network
    file's content) would hand its finished points and trained ANN to this spec: refused, naming what differs."""
    spec_path = tmp_path / "s.toml"
    spec_path.write_text('store = "st"\n[network]\nmodel = "spikeforge.models:DigitsMLP"\nepochs = 3\n'
                         '[axes]\nT = [2]\n')
    sweep._check_recipe(sweep.load_spec(spec_path))  # the first run records the recipe
    sweep._check_recipe(sweep.load_spec(spec_path))  # the same spec again: fine
    spec_path.write_text(spec_path.read_text().replace("epochs = 3", "epochs = 1"))
    with pytest.raises(sweep.SweepSpecError, match=r"st holds a sweep of another recipe \(\[network\] epochs = 3 "
                                                   r"there, 1 here\)"):
        sweep.run_sweep(sweep.load_spec(spec_path))
    (tmp_path / "net.h5").write_bytes(b"one")
    spec_path.write_text('store = "fs"\n[network]\nfile = "net.h5"\n[axes]\nT = [2]\n')
    sweep._check_recipe(sweep.load_spec(spec_path))
    (tmp_path / "net.h5").write_bytes(b"two")  # the same path, another network
    with pytest.raises(sweep.SweepSpecError, match=r"\[network\] file_sha256 = "):
        sweep.run_sweep(sweep.load_spec(spec_path))


def _run_cli(argv, cwd):
    return subprocess.run([sys.executable, "-m", "spikeforge.cli", *argv], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("edit, message", [
    (("epochs = 20", "epocs = 2"), "unknown key 'epocs' in [network] (allowed: model, file, epochs, lr,"),
    (("[data]", "[data]\nsamples = 3"), "unknown key 'samples' in [data] (allowed: name, path, test_samples, seed)"),
    (('name = "digits MLP"', 'nmae = "x"'), "unknown key 'nmae' in the top level (allowed: name, store,"),
    (('"loihi", "loihi2"', '"lohi", "loihi2"'), "axis 'target': unknown target 'lohi'"),
    (("models:DigitsMLP", "models:DigitsMPL"), "model 'spikeforge.models:DigitsMPL': spikeforge.models has no "
                                                "'DigitsMPL' (it has"),
    (("spikeforge.models:", "spikeforge.modles:"), "cannot import 'spikeforge.modles'"),
    (('name = "digits MLP"', 'name = "digits MLP'), "not a valid TOML spec (Illegal character"),
    (("T = [2, 4, 8, 16]", "T = [2, 4.5]"), "axis 'T': 4.5 is not an integer >= 1"),
    (('neuron = ["if", "group"]', 'neuron = ["if", "lif"]'), "axis 'neuron': 'lif' is not one of if, group"),
    (('name = "digits"', 'name = "mnist"'), "[data] unknown dataset 'mnist'"),
])
def test_bad_specs_are_refused_when_read_naming_file_and_key(tmp_path, edit, message):
    """Before a store folder exists or Dask starts: exit 2, one line naming the spec file and the key."""
    from importlib import resources

    text = resources.files("spikeforge").joinpath("examples/sweep_digits.toml").read_text()
    assert edit[0] in text
    (tmp_path / "bad.toml").write_text(text.replace(edit[0], edit[1], 1))
    t0 = time.time()
    out = _run_cli(["sweep", "bad.toml", "--workers", "1"], tmp_path)
    assert out.returncode == 2 and out.stdout == "", out.stderr
    assert out.stderr.startswith("spikeforge sweep: error: bad.toml: ") and message in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert os.listdir(tmp_path) == ["bad.toml"]  # no store folder
    assert time.time() - t0 < 60  # nothing was trained or started


# ---- store ownership, stale temporaries, malformed stores and specs --------------------------------------------

SMALL = 'store = "{store}"\n[network]\nmodel = "{model}"\nepochs = 1\n[axes]\nT = [2]\n'


def _small_spec(tmp_path, store="st", model="spikeforge.models:DigitsMLP"):
    path = tmp_path / "s.toml"
    path.write_text(SMALL.format(store=store, model=model))
    return path


def test_a_store_over_a_folder_of_the_users_files_is_refused_and_leaves_them_untouched(tmp_path):
    """store = "." over a folder holding the user's own summary.md and results.csv used to overwrite them: refused
    (exit 2, one line naming the store and the files) before anything is written; the files are byte-identical."""
    spec_path = _small_spec(tmp_path, store=".")
    mine = {"summary.md": b"# my notes\n\nnot a sweep\n", "results.csv": b"a,b\n1,2\n"}
    for name, data in mine.items():
        (tmp_path / name).write_bytes(data)
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(sweep.UserError, match=rf"store {tmp_path} holds 'results.csv', 'summary.md' and 's.toml' "
                                              r"that this sweep did not make; give a new or empty folder"):
        sweep.run_sweep(sweep.load_spec(spec_path))
    out = _run_cli(["sweep", "s.toml", "--workers", "1"], tmp_path)
    assert out.returncode == 2 and out.stdout == "", out.stderr
    assert out.stderr.startswith(f"spikeforge sweep: error: store {tmp_path} holds 'results.csv', 'summary.md'")
    assert len(out.stderr.strip().splitlines()) == 1
    assert sorted(os.listdir(tmp_path)) == before  # no marker, no points/, no recipe, no temporaries
    for name, data in mine.items():
        assert (tmp_path / name).read_bytes() == data


def test_a_store_the_sweep_made_is_reused_and_an_earlier_versions_store_adopted(tmp_path):
    store = str(tmp_path / "st")
    sweep.open_store(store)  # a new store: the marker first, then points/
    assert sorted(os.listdir(store)) == [sweep.MARKER, "points"]
    assert json.loads((tmp_path / "st" / sweep.MARKER).read_text()) == sweep.MARKER_CONTENT
    for name in sweep.STORE_FILES:  # everything a finished sweep leaves
        (tmp_path / "st" / name).write_text("x")
    (tmp_path / "st" / "points" / "0123456789abcdef.json").write_text("{}")
    sweep.open_store(store)  # reused as it is
    assert sorted(os.listdir(store)) == sorted([sweep.MARKER, "points", *sweep.STORE_FILES])
    (tmp_path / "st" / "notes.txt").write_text("mine")  # marked or not, a file a sweep does not make is refused
    with pytest.raises(sweep.UserError, match=r"holds 'notes.txt' that this sweep did not make"):
        sweep.open_store(store)
    # an earlier version's store (no marker; points/ of point files only, its outputs) is adopted: marked
    old = tmp_path / "old"
    (old / "points").mkdir(parents=True)
    (old / "points" / "0123456789abcdef.json").write_text("{}")
    (old / "summary.md").write_text("# Sweep\n")
    sweep.open_store(str(old))
    assert sorted(os.listdir(old)) == sorted([sweep.MARKER, "points", "summary.md"])
    # an empty folder is taken; a folder of only the sweep's file names but none of its marks is not
    (tmp_path / "empty").mkdir()
    sweep.open_store(str(tmp_path / "empty"))
    assert os.path.isfile(tmp_path / "empty" / sweep.MARKER)
    (tmp_path / "yours").mkdir()
    (tmp_path / "yours" / "summary.md").write_text("mine")
    with pytest.raises(sweep.UserError, match=r"holds 'summary.md' that this sweep did not make"):
        sweep.open_store(str(tmp_path / "yours"))
    assert os.listdir(tmp_path / "yours") == ["summary.md"]


def test_stale_temporaries_of_dead_processes_are_removed_and_live_ones_kept(tmp_path):
    """A killed sweep leaves `.spikeforge-tmp-<host>-<pid>-...` files: the next run removes those of processes that
    are gone, never a live writer's (a concurrent sweep's) nor anything else."""
    from spikeforge.simulator import atomic

    store = tmp_path / "st"
    sweep.open_store(str(store))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # (reaped: its pid is free)
    for folder in (store, store / "points"):
        live = atomic.temporary_name(str(folder))  # this process's: a live writer
        stale = os.path.basename(live).replace(f"-{os.getpid()}-", f"-{dead.pid}-")
        (folder / stale).write_text("half a point")
        assert atomic._NAME.match(stale)
    sweep.open_store(str(store))
    for folder in (store, store / "points"):
        left = [n for n in os.listdir(folder) if n.startswith(".spikeforge-tmp-")]
        assert len(left) == 1 and f"-{os.getpid()}-" in left[0]


def test_store_that_is_not_a_string_is_refused_naming_key_and_type(tmp_path):
    (tmp_path / "s.toml").write_text(SMALL.replace('"{store}"', "5").format(model="spikeforge.models:DigitsMLP"))
    with pytest.raises(sweep.SweepSpecError, match=r"s.toml: store must be a folder path \(a non-empty string\), "
                                                   r"got int 5"):
        sweep.load_spec(tmp_path / "s.toml")
    assert os.listdir(tmp_path) == ["s.toml"]


def test_a_model_factory_that_returns_no_torch_module_is_refused_when_the_spec_is_read(tmp_path, monkeypatch):
    (tmp_path / "sweep_factory_mod.py").write_text("def net():\n    return {'layers': 3}\n\n"
                                                   "def broken():\n    raise RuntimeError('no GPU here')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(sweep.SweepSpecError, match=r"\[network\] model 'sweep_factory_mod:net': net\(\) returned a "
                                                   r"dict \(\{'layers': 3\}\), not a torch.nn.Module"):
        sweep.load_spec(_small_spec(tmp_path, model="sweep_factory_mod:net"))
    with pytest.raises(sweep.SweepSpecError, match=r"calling broken\(\) raised RuntimeError: no GPU here"):
        sweep.load_spec(_small_spec(tmp_path, model="sweep_factory_mod:broken"))
    assert not (tmp_path / "st").exists()  # refused before any store folder


@pytest.mark.parametrize("content, problem", [
    ('{"status": "ok"}', "no 'id' in it"),
    ('{"id": "0123456789abcdef"}', "no 'status' in it"),
    ('{"id": "0123456789abcd', "not JSON: "),
    ("[1, 2]", "a JSON list, not an object"),
    ('{"id": "fedcba9876543210", "status": "error", "error": "x"}', "its id 'fedcba9876543210' is not its file"),
    ('{"id": "0123456789abcdef", "status": "ok", "accuracy": 90}', "status 'ok' without a number for synops,"),
])
def test_a_damaged_point_file_is_refused_naming_it(tmp_path, content, problem):
    store = tmp_path / "st"
    sweep.open_store(str(store))
    path = store / "points" / "0123456789abcdef.json"
    path.write_text(content)
    with pytest.raises(sweep.SweepSpecError) as err:
        sweep.finished(str(store))
    assert str(err.value).startswith(f"store {store}: {path} is not a point this sweep wrote (")
    assert problem in str(err.value) and str(err.value).endswith("delete it to run that point again")
    assert path.read_text() == content
