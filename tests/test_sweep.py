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
"limits.axons_per_core" = [8, 4096]
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
    # the 8-axon points fail: the sweep finishes them all, then exits 1 with the count
    assert out.returncode == 1, out.stderr[-2000:]
    assert "spikeforge sweep: 16 of 32 points failed" in out.stderr and "Traceback" not in out.stderr
    assert f"32 points: {len(before)} finished (skipped), {32 - len(before)} to run" in out.stdout
    after = _point_files(store)
    assert len(after) == 32 and sorted(os.listdir(os.path.join(store, "points"))) == after  # no stale temp files
    for f, text in before.items():  # finished points were not recomputed (same run id, same bytes)
        assert (tmp_path / "store" / "points" / f).read_text() == text
    rows = [json.loads((tmp_path / "store" / "points" / f).read_text()) for f in after]
    assert sum(r["run_id"] in first_run for r in rows) == len(before)

    # the 8-axon points fail in the mapper (64 input axons per neuron) and say why; the others ran
    bad = [r for r in rows if r["status"] != "ok"]
    assert len(bad) == 16 and all(r["limits.axons_per_core"] == 8 and "axons" in r["error"] for r in bad)
    ok = [r for r in rows if r["status"] == "ok"]
    assert all(0 < r["accuracy"] <= 100 and r["energy_uj"] > 0 and r["cores"] >= 3 for r in ok)
    # more steps, more synaptic work, on every target
    for target in ("loihi", "generic45nm"):
        syn = [r["synops"] for r in sorted(ok, key=lambda r: r["T"]) if r["target"] == target]
        assert np.all(np.diff(syn) > 0)
    with open(tmp_path / "store" / "results.csv") as fh:
        assert len(list(csv.DictReader(fh))) == 32
    for png in ("accuracy_vs_energy.png", "accuracy_vs_latency.png", "energy_vs_cores.png"):
        assert (tmp_path / "store" / png).stat().st_size > 5000
    assert "16 failed" in (tmp_path / "store" / "summary.md").read_text()


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
    (('"loihi", "truenorth"', '"lohi", "truenorth"'), "axis 'target': unknown target 'lohi'"),
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
