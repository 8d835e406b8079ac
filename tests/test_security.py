"""Files that read other files, outputs that stay whole, write errors in one line, inputs bounded before reading
(issue 38). Every refusal is exit 2 with one line naming the file, object or argument."""
import errno
import json
import os
import pickle
import resource
import shutil
import signal
import stat
import zipfile

import h5py
import numpy as np
import pytest

from spikeforge import simulator
from spikeforge.cli import main
from spikeforge.outputs import load_run
from spikeforge.simulator.atomic import remove_stale, temporary_name

SECRET = b"TOP-SECRET-" * 4096


def _err(capsys):
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


@pytest.fixture()
def secret(tmp_path):
    path = tmp_path / "secret.txt"
    path.write_bytes(SECRET)
    return path


def _borrowing_copy(src, dst, how, secret):
    """A copy of network file src whose weight /projections/a/weight reads from elsewhere (how: external storage on
    the secret text file, an external link into src, or a virtual dataset over src)."""
    shutil.copy(src, dst)
    with h5py.File(dst, "a") as f:
        shape, dtype = f["projections/a/weight"].shape, f["projections/a/weight"].dtype
        del f["projections/a/weight"]
        if how == "external storage":
            f.create_dataset("projections/a/weight", shape=shape, dtype=dtype,
                             external=[(str(secret), 0, int(np.prod(shape)) * dtype.itemsize)])
        elif how == "external link":
            f["projections/a/weight"] = h5py.ExternalLink(str(src), "/projections/a/weight")
        else:
            layout = h5py.VirtualLayout(shape=shape, dtype=dtype)
            layout[:] = h5py.VirtualSource(str(src), "projections/a/weight", shape=shape)
            f.create_virtual_dataset("projections/a/weight", layout)
    return dst


HOW = ["external storage", "external link", "virtual dataset"]
SAID = {"external storage": "keeps its data in external file", "external link": "is an external link to",
        "virtual dataset": "is a virtual dataset"}


@pytest.mark.parametrize("how", HOW)
def test_network_file_borrowing_data_from_another_file_is_refused_before_reading(how, tiny, tmp_path, secret,
                                                                                  capsys):
    net, _ = tiny
    bad = _borrowing_copy(net, tmp_path / "bad.h5", how, secret)
    for isolate in (False, True):
        with pytest.raises(simulator.NetworkFileError, match=f"/projections/a/weight {SAID[how]}"):
            simulator.load_network(bad, isolate=isolate)
    out = tmp_path / "leak.nir"
    assert main(["export-nir", str(bad), str(out)]) == 2  # no command copies the borrowed bytes into an output
    assert SAID[how] in _err(capsys) and not out.exists()
    assert main(["inspect", str(bad)]) == 2 and "spikeforge reads only self-contained HDF5 files" in _err(capsys)


@pytest.mark.parametrize("how", HOW)
def test_data_and_event_files_borrowing_data_are_refused(how, tiny, tmp_path, secret, capsys):
    net, data = tiny
    x = np.load(data)["x"]
    src = tmp_path / "src.h5"
    with h5py.File(src, "w") as f:
        f["x"] = x
        f["t"], f["address"] = np.arange(5), np.arange(5)
    for name, extra in (("data.h5", []), ("events.h5", ["--events", "--T", "2"])):
        path = tmp_path / name
        with h5py.File(path, "w") as f:
            key = "x" if name == "data.h5" else "t"
            if how == "external storage":
                f.create_dataset(key, shape=(20, 64) if key == "x" else (5,), dtype="f4" if key == "x" else "i8",
                                 external=[(str(secret), 0, 20 * 64 * 4)])
            elif how == "external link":
                f[key] = h5py.ExternalLink(str(src), key)
            else:
                layout = h5py.VirtualLayout(shape=src_shape(src, key), dtype=np.float32 if key == "x" else np.int64)
                layout[:] = h5py.VirtualSource(str(src), key, shape=src_shape(src, key))
                f.create_virtual_dataset(key, layout)
            if key == "t":
                f["address"] = np.arange(5)
        args = ["simulate", str(net), "--input", str(path), "--out", str(tmp_path / "r.npz")]
        assert main(args + (extra or ["--T", "2"])) == 2
        assert f"/{key} {SAID[how]}" in _err(capsys)
        assert not (tmp_path / "r.npz").exists()


def src_shape(src, key):
    with h5py.File(src, "r") as f:
        return f[key].shape


def test_float64_weights_beyond_float32_are_refused(tiny, tmp_path):
    net, _ = tiny
    bad = tmp_path / "huge.h5"
    shutil.copy(net, bad)
    with h5py.File(bad, "a") as f:
        w = f["projections/b/weight"][()].astype(np.float64)
        del f["projections/b/weight"]
        w[3, 4] = -1e300
        f["projections/b/weight"] = w
    with pytest.raises(simulator.NetworkFileError, match=r"projections/b/weight: weight -1e\+300 at flat index"):
        simulator.load_network(bad)


def test_simulate_pair_is_committed_together_and_a_mixed_pair_is_refused(tiny, tmp_path, monkeypatch, capsys):
    """A run stopped between the two renames leaves a new .npz beside the old .json: load_run refuses that pair,
    and the next simulate removes the stopped run's temporary file."""
    net, data = tiny
    out = tmp_path / "run.npz"
    base = ["simulate", str(net), "--input", str(data), "--x-key", "x", "--out", str(out)]
    assert main(base + ["--T", "2"]) == 0
    arrays, summary = load_run(out)
    assert summary["T"] == 2 and json.loads((tmp_path / "run.json").read_text())["run_id"] == summary["run_id"]
    real_replace, calls = os.replace, []

    def stop_after_the_npz(a, b):  # a kill -9 between the renames, as far as the files can tell
        calls.append(b)
        if str(b).endswith(".json"):
            raise KeyboardInterrupt
        real_replace(a, b)

    monkeypatch.setattr(os, "replace", stop_after_the_npz)
    assert main(base + ["--T", "3"]) == 130
    monkeypatch.setattr(os, "replace", real_replace)
    capsys.readouterr()
    assert [os.path.basename(c) for c in calls] == ["run.npz", "run.json"]
    with pytest.raises(ValueError, match="run.json does not belong to .*run.npz"):
        load_run(out)
    assert main(base + ["--T", "4"]) == 0
    assert load_run(out)[1]["T"] == 4 and sorted(os.listdir(tmp_path)) == ["run.json", "run.npz"]


def test_outputs_that_are_inputs_folders_or_fifos_are_refused_before_any_work(tiny, tmp_path, capsys):
    net, data = tiny
    before = data.read_bytes()
    copy = tmp_path / "in.npz"
    copy.write_bytes(before)
    base = ["simulate", str(net), "--x-key", "x", "--T", "2"]
    assert main(base + ["--input", str(copy), "--out", str(copy)]) == 2
    assert "is the input" in _err(capsys) and copy.read_bytes() == before
    fifo = tmp_path / "pipe.npz"
    os.mkfifo(fifo)
    assert main(base + ["--input", str(data), "--out", str(fifo)]) == 2
    assert "not a regular file" in _err(capsys) and stat.S_ISFIFO(os.stat(fifo).st_mode)
    (tmp_path / "run2.npz").write_bytes(b"mine")
    (tmp_path / "run2.json").mkdir()
    assert main(base + ["--input", str(data), "--out", str(tmp_path / "run2.npz")]) == 2
    assert "run2.json is a folder" in _err(capsys) and (tmp_path / "run2.npz").read_bytes() == b"mine"
    assert main(["export-nir", str(net), str(net)]) == 2 and "is the input" in _err(capsys)


def _zip_bomb(path, n):
    """An .npz whose member declares n float64 values (the data itself is left out: only the header is read)."""
    header = {"descr": "<f8", "fortran_order": False, "shape": (n,)}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z, z.open("x.npy", "w") as fh:
        np.lib.format.write_array_header_1_0(fh, header)
        fh.write(b"\0" * 4096)


@pytest.mark.parametrize("case, said", [
    ("structured", "holds [('a', '<f4'), ('b', '<i4')] values, not plain numbers"),
    ("strings", "holds <U3 values, not plain numbers"),
    ("datetimes", "holds datetime64[s] values, not plain numbers"),
    ("bomb", "the arrays read from it declare 7.28 TiB, more than the memory bound 100 MiB"),
    ("tight", "the arrays read from it declare 1.56 KiB, more than the memory bound 1 KiB"),  # not "0.0 MiB"
])
def test_sample_files_of_other_dtypes_or_declaring_too_much_are_refused(case, said, tiny, tmp_path, capsys):
    net, _ = tiny
    path = tmp_path / "x.npz"
    if case == "bomb":
        _zip_bomb(path, 10**12)
    else:
        x = {"structured": np.zeros(20, [("a", "f4"), ("b", "i4")]), "strings": np.array(["abc"] * 20),
             "datetimes": np.array(["2020-01-01T00:00:00"] * 20, "datetime64[s]"), "tight": np.zeros(200)}[case]
        np.savez(path, x=x)
    args = ["simulate", str(net), "--input", str(path), "--T", "2", "--out", str(tmp_path / "r.npz"),
            "--max-memory", "1K" if case == "tight" else "100M"]
    assert main(args) == 2 and said in _err(capsys)


def _events(path, **arrays):
    np.savez(path, **arrays)
    return str(path)


def test_event_files_and_windows_that_cannot_be_simulated_are_refused(tiny, tmp_path, capsys):
    net, _ = tiny
    t, a = np.array([0, 10, 20]), np.array([1, 2, 3])
    base = ["simulate", str(net), "--events", "--out", str(tmp_path / "r.npz")]
    cases = [
        (_events(tmp_path / "many.npz", t=t, address=a, n_samples=np.array(10**12)), ["--T", "2"],
         "declares 1000000000000 samples"),
        (_events(tmp_path / "e.npz", t=t, address=a), ["--T", "1000000000"], "T=1000000000: binning 1 event"),
        (_events(tmp_path / "none.npz", t=t[:0], address=a[:0], label=np.zeros(3, np.int64)),
         ["--T", "2", "--y-key", "label"], "no events"),
        (_events(tmp_path / "e.npz", t=t, address=a), ["--T", "2", "--t0", "inf"], "argument --t0: 'inf' is not"),
        (_events(tmp_path / "e.npz", t=t, address=a), ["--T", "2", "--t0", "1e308"], "all 3 events fall outside"),
        (_events(tmp_path / "s.npz", t=np.zeros(3, [("a", "f4")]), address=a), ["--T", "2"],
         "holds [('a', '<f4')] values"),
    ]
    for path, extra, said in cases:
        assert main(base + ["--input", path] + extra) == 2, said
        assert said in _err(capsys)


def test_t0_without_dt_leaves_out_the_events_before_it():
    ev = {"t": np.array([0, 10, 20]), "address": np.array([0, 1, 2])}
    frames, dropped = simulator.bin_events(ev, (3,), 2, t0=20)
    assert dropped == 2 and frames.sum() == 1 and frames[0, 2] == 1
    frames, dropped = simulator.bin_events(ev, (3,), 2, t0=10)
    assert dropped == 1 and frames[0, 1] == 1 and frames[1, 2] == 1
    assert simulator.bin_events(ev, (3,), 2, t0=100)[1] == 3


def test_weights_that_are_a_pickle_but_no_state_dict_are_a_user_error(tmp_path, tiny, capsys):
    net, data = tiny
    weights = tmp_path / "w.pt"
    weights.write_bytes(pickle.dumps([1, 2, 3]))
    assert main(["convert", "--model", "spikeforge.models:DigitsMLP", "--weights", str(weights), "--calibration",
                 str(data), "--out", str(tmp_path / "n.h5")]) == 2
    assert f"--weights {weights}: not a weights-only torch checkpoint" in _err(capsys)


def test_model_import_puts_the_current_folder_last(tmp_path, monkeypatch):
    """A module in the current folder cannot shadow an installed package (an h5py.py there is never imported),
    while the named module is still found there."""
    import importlib.util
    import sys

    from spikeforge.cli import _load_model

    (tmp_path / "h5py.py").write_text("raise SystemExit('the h5py.py of the current folder ran')\n")
    (tmp_path / "mymodels.py").write_text("import torch\n\ndef net():\n    return torch.nn.Linear(2, 2)\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".", str(tmp_path))])
    model = _load_model("mymodels:net", None)
    assert model.in_features == 2 and sys.path[-1] == str(tmp_path)
    assert not importlib.util.find_spec("h5py").origin.startswith(str(tmp_path))


def test_a_full_disk_is_one_line_and_the_old_output_stays(tiny, tmp_path, capsys):
    """Writes beyond a file-size limit fail like a full disk (EFBIG instead of ENOSPC, from the kernel): exit 2,
    one line naming the output, the previous files intact, no temporary left."""
    net, data = tiny
    out, run = tmp_path / "net.nir", tmp_path / "run.npz"
    out.write_bytes(b"the previous export")
    simulate = ["simulate", str(net), "--input", str(data), "--x-key", "x", "--T", "2", "--out", str(run)]
    assert main(simulate) == 0
    before = {f: (tmp_path / f).read_bytes() for f in ("run.npz", "run.json")}
    capsys.readouterr()
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    codes = []
    try:
        for limit, args in ((64 * 1024, ["export-nir", str(net), str(out)]), (1024, simulate)):
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
            codes.append(main(args))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)
    lines = capsys.readouterr().err.strip().splitlines()
    assert codes == [2, 2] and len(lines) == 2 and "Traceback" not in lines
    assert lines[0] == (f"spikeforge export-nir: error: file too large while writing {out}; the previous net.nir "
                        "(if any) is unchanged")
    assert lines[1] == (f"spikeforge simulate: error: file too large while writing {run} and {tmp_path / 'run.json'}; "
                        "the previous run.npz and run.json (if any) are unchanged")
    assert out.read_bytes() == b"the previous export"
    assert {f: (tmp_path / f).read_bytes() for f in ("run.npz", "run.json")} == before
    assert sorted(os.listdir(tmp_path)) == ["net.nir", "run.json", "run.npz"]


def test_write_errors_name_the_output_for_a_full_disk(tmp_path):
    from spikeforge.simulator.atomic import OutputWriteError, atomic_output

    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(OutputWriteError, match=f"no space left on the device while writing {target}"):
        with atomic_output(target) as tmp:
            open(tmp, "w").write("new")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["a.txt"]


def test_stale_temporaries_of_dead_writers_go_and_nothing_else(tmp_path):
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    mine = temporary_name(str(tmp_path), ".npz")
    theirs = os.path.basename(mine).replace(f"-{os.getpid()}-", f"-{pid}-")
    (tmp_path / theirs).write_text("half")
    (tmp_path / ".spikeforge-user-notes.tmp").write_text("not ours by name")
    (tmp_path / "results.tmp").write_text("the user's")
    assert remove_stale(tmp_path) == [theirs]
    assert sorted(os.listdir(tmp_path)) == sorted([os.path.basename(mine), ".spikeforge-user-notes.tmp",
                                                   "results.tmp"])
