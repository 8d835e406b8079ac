"""Robustness: generated malformed network files, writers killed mid-write, untrusted checkpoints, determinism."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch

from spikeforge import simulator
from spikeforge.cli import main
from spikeforge.converter import convert, write_network
from spikeforge.converter.mapping import map_network
from spikeforge.converter.training import train_classifier
from spikeforge.hwmodels.targets import load_target
from spikeforge.models import DigitsMLP
from spikeforge.simulator.atomic import remove_stale

import fuzz_reader

N_EXAMPLES = 400


@pytest.fixture(scope="module")
def base_file(tmp_path_factory):
    return write_network(fuzz_reader.base_network(), tmp_path_factory.mktemp("fuzz") / "base.h5")


def test_malformed_files_are_rejected_cleanly_or_run(base_file, tmp_path):
    """Every generated malformation: NetworkFileError naming the file, or a valid network that runs; no other
    exception, no crash, bounded reader memory (fuzz_reader.check). `python tests/fuzz_reader.py` runs
    more examples and prints the tally."""
    assert simulator.load_network(base_file)  # the base itself is valid
    tally, incidents = fuzz_reader.fuzz(base_file, tmp_path, N_EXAMPLES)
    # libhdf5 itself crashed or hung in-process on these (nothing in-process prevents that); the isolated
    # reader the command line uses must turn every one into a NetworkFileError
    assert all(isolated for *_, isolated in incidents), incidents
    assert sum(tally.values()) >= N_EXAMPLES
    for kind in fuzz_reader.MUTATIONS:  # every kind was generated and produced rejections
        assert tally[(kind, "rejected")] > 0, (kind, dict(tally))


def test_isolated_reading_equals_in_process_and_survives_libhdf5_crashes(base_file, tmp_path):
    """load_network(isolate=True), as the CLI reads: same network and same errors as in-process, and a file on
    which libhdf5 itself segfaults or loops (found by the fuzzing: one flipped bit in a root attribute message)
    becomes a NetworkFileError naming the file."""
    a, b = simulator.load_network(base_file), simulator.load_network(base_file, isolate=True)
    assert [p.name for p in a.populations] == [p.name for p in b.populations]
    for p, q in zip(a.populations + a.projections, b.populations + b.projections):
        for field in ("threshold", "bias", "decay", "weight", "indices"):
            x, y = getattr(p, field, None), getattr(q, field, None)
            assert (x is None) == (y is None) and (x is None or np.array_equal(x, y)), (p.name, field)
    bad = tmp_path / "bad.h5"
    fuzz_reader.apply({"kind": "attribute", "name": ("/", "format_version"), "value": "1.99"}, base_file, bad)
    with pytest.raises(simulator.NetworkFileError, match="version 1.99 is not supported") as err:
        simulator.load_network(bad, isolate=True)
    assert str(bad) in str(err.value)
    # the in-process reader, in a process of its own
    probe = [sys.executable, "-c",
             "import sys; from spikeforge.simulator import load_network; load_network(sys.argv[1])", str(bad)]
    for flip, message in (((929, 2), "the HDF5 library crashed reading this file"),
                          ((2273, 3), "reading did not finish within 5 s")):
        fuzz_reader.apply({"kind": "bitflip", "flips": [flip]}, base_file, bad)
        try:
            harmful = subprocess.run(probe, capture_output=True, timeout=5,
                                     env=dict(os.environ)).returncode < 0
        except subprocess.TimeoutExpired:
            harmful = True
        if not harmful:  # a libhdf5 without this bug (or a different file layout): nothing to show here
            continue
        with pytest.raises(simulator.NetworkFileError, match=message):
            simulator.load_network(bad, isolate=True, timeout=5)


def _replace(h5, name, data):
    del h5[name]
    h5.create_dataset(name, data=data)


def _replace_lazily(h5, name, shape):
    """A dataset of `shape` declared but never written (HDF5 allocates chunks lazily: the file stays small)."""
    del h5[name]
    h5.create_dataset(name, shape=shape, dtype="f4", chunks=tuple(min(64, s) for s in shape))


@pytest.mark.parametrize("edit, message", [
    (lambda h5: h5.create_dataset("populations/fc_act/decay", data=np.ones(8, np.float32)),
     "only lif and cuba neurons have one"),
    (lambda h5: h5["populations/pool_act/decay"].__setitem__(0, 1.5), r"decay: must be in \[0, 1\], got 1.5"),
    (lambda h5: h5["populations/pool_act"].attrs.__setitem__("threshold_test", ">="), "threshold_test '>='"),
    (lambda h5: h5["populations/readout"].attrs.__setitem__("spike_value", "unit"),
     "apply to if, lif and cuba neurons only"),
    (lambda h5: h5["mapping/cores/x"].__setitem__(1, 2**40), "is beyond"),
    (lambda h5: _replace_lazily(h5, "projections/fc/weight", (2**20, 2**20)),
     "has 1099511627776 elements, more than the 24 its header allows|declare 4 TiB in all"),
    (lambda h5: _replace_lazily(h5, "projections/fc/weight", (24,)), "expected 2 dimensions"),
    (lambda h5: _replace(h5, "projections/sp/indptr", np.r_[0, 2, 1, np.arange(6, 37, 2)].astype(np.uint64)),
     "never decrease"),  # unsigned: the decrease would wrap to a huge step
    (lambda h5: _replace(h5, "mapping/cores/x", np.array([0, 2**64 - 1, 0, 1, 2], np.uint64)),
     "does not fit a signed 64-bit integer"),
])
def test_specific_malformations_name_the_problem(base_file, tmp_path, edit, message):
    import h5py

    bad = tmp_path / "bad.h5"
    bad.write_bytes(open(base_file, "rb").read())
    with h5py.File(bad, "r+") as h5:
        edit(h5)
    with pytest.raises(simulator.NetworkFileError, match=message) as err:
        simulator.load_network(bad)
    assert str(bad) in str(err.value)


# --------------------------------------------------------------------------- atomic writes under SIGKILL

_WRITER = textwrap.dedent("""
    import sys
    import numpy as np
    from spikeforge.converter.mapping import one_population_per_core
    from spikeforge.simulator.network import Network, Population, Projection
    n = 2500
    pops = [Population.make("in", "input", (n,)), Population.make("h", "if", (n,), 1.0, 0.5),
            Population.make("out", "readout", (10,))]
    rng = np.random.default_rng(0)
    projs = [Projection("a", "dense", "in", "h", rng.normal(size=(n, n)).astype(np.float32)),
             Projection("b", "dense", "h", "out", rng.normal(size=(10, n)).astype(np.float32))]
    net = Network(pops, projs, *one_population_per_core(pops, projs), {})
    if sys.argv[1] == "h5":
        from spikeforge.converter.writer import write_network as write
    else:
        from spikeforge.interop.nir_export import export_nir as write
    print("ready", flush=True)
    while True:
        write(net, sys.argv[2])
""")


@pytest.mark.parametrize("kind", ["h5", "nir"])
def test_writer_killed_midway_leaves_the_old_file_intact(kind, base_file, tmp_path):
    """A process rewriting a 25 MB network file (or its NIR export) in a loop is SIGKILLed while a temporary file
    is being written: the file at the destination is still the old one, byte for byte, and still loads."""
    from spikeforge.interop.nir_export import export_nir

    target = tmp_path / f"keep.{kind}"
    if kind == "h5":
        target.write_bytes(open(base_file, "rb").read())
    else:
        export_nir(base_file, target)
    env = dict(os.environ)
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, kind, str(target)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    assert proc.stdout.readline().strip() == b"ready"
    deadline = time.time() + 120
    temps = []
    while time.time() < deadline and not temps:
        temps = [f for f in os.listdir(tmp_path) if f.startswith(".spikeforge-")]
        time.sleep(0.005)
    assert temps, "the writer never started a temporary file"
    for _ in range(200):  # kill it while a temporary file is being written (the file is built in memory first)
        if any(f.startswith(".spikeforge-") for f in os.listdir(tmp_path)):
            break
        time.sleep(0.001)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    # the old file or a whole new one: it loads, with the same content
    if kind == "h5":
        again = simulator.load_network(target)
        assert [p.name for p in again.populations] == [p.name for p in simulator.load_network(base_file).populations]
    else:
        import nir
        nir.read(target)
    left = [f for f in os.listdir(tmp_path) if f.startswith(".spikeforge-")]
    assert remove_stale(tmp_path) == left  # what the killed writer left goes (its process is gone), nothing else
    assert [f for f in os.listdir(tmp_path) if f.startswith(".spikeforge-")] == []


_REPORT_WRITER = textwrap.dedent("""
    import sys
    import numpy as np
    from spikeforge import hwmodels, simulator
    from spikeforge.outputs import replace_folder
    from spikeforge.report import evaluate, write_report
    net = simulator.load_network(sys.argv[1])
    z = np.load(sys.argv[2])
    made = {T: evaluate(net, z["x"][:4], z["y"][:4], [T], [hwmodels.load_target("loihi")]) for T in (2, 3)}
    print("ready", flush=True)
    i = 0
    while True:  # generation i has T = 2 + i % 2: its plots have other names than the previous generation's
        rows, runs, ann = made[2 + i % 2]
        with replace_folder(sys.argv[3]) as tmp:
            write_report(tmp, f"{sys.argv[4]}-gen{i}", rows, runs, ann, net, 4)
        i += 1
""")


def _report_state(folder):
    """(report name, file names) of a report folder, after checking that it is complete: every file of its
    generation is there, nothing else is, and every PNG reads."""
    import json

    import matplotlib.image

    files = sorted(os.listdir(folder))
    name = json.loads((folder / "report.json").read_text())["name"]
    assert f"# spikeforge report: {name}\n" in (folder / "report.md").read_text()
    T = json.loads((folder / "report.json").read_text())["rows"][0]["T"]
    assert files == sorted([".spikeforge-outputs.json", "report.md", "report.json", "report.csv",
                            f"spikes_per_step_T{T}.png", f"energy_per_layer_loihi_T{T}.png"]), files
    for f in files:
        if f.endswith(".png"):
            matplotlib.image.imread(folder / f)
    return name, files


def test_report_killed_while_writing_leaves_the_old_or_the_complete_new_report(tiny, tmp_path):
    """A process rewriting a report folder in a loop is SIGKILLed at random moments, most of them while the new
    report is being written: the folder is always one whole report (the previous one byte for byte, or a complete
    newer one with none of the previous one's plots); the next `spikeforge report` removes what the kills left."""
    import random

    net, data = tiny
    out = tmp_path / "rep"
    assert main(["report", net, "--data", str(data), "--x-key", "x", "--y-key", "y", "--T", "4",
                 "--target", "loihi", "--out", str(out)]) == 0
    previous = ("tiny", {f: (out / f).read_bytes() for f in os.listdir(out)})
    rng = random.Random(0)
    during_write = 0
    for kill in range(8):
        proc = subprocess.Popen([sys.executable, "-c", _REPORT_WRITER, net, str(data), str(out), f"kill{kill}"],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(rng.uniform(0.0, 1.5))
        temps = [f for f in os.listdir(tmp_path) if f.startswith(".rep.spikeforge-")]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        during_write += bool(temps)
        name, files = _report_state(out)
        now = {f: (out / f).read_bytes() for f in files}
        if name == previous[0]:  # no newer report was swapped in: the previous one, byte for byte
            assert now == previous[1]
        previous = (name, now)
    assert during_write >= 4, "the kills should land while a report is being written"
    assert main(["report", net, "--data", str(data), "--x-key", "x", "--y-key", "y", "--T", "2",
                 "--target", "loihi", "--out", str(out)]) == 0
    assert os.listdir(tmp_path) == ["rep"]  # no temporary sibling left
    assert _report_state(out)[0] == "tiny"


# --------------------------------------------------------------------------- untrusted checkpoints

class _Payload:
    """Pickles into a call of os.system: what a malicious checkpoint would carry."""

    def __init__(self, flag):
        self.flag = flag

    def __reduce__(self):
        return os.system, (f"touch {self.flag}",)


def test_checkpoints_are_loaded_weights_only(tmp_path, digits, capsys):
    flag = tmp_path / "pwned"
    torch.save({"weight": _Payload(str(flag))}, tmp_path / "evil.pt")
    np.savez(tmp_path / "calib.npz", x=digits[0][:16].numpy())
    rc = main(["convert", "--model", "spikeforge.models:DigitsMLP", "--weights", str(tmp_path / "evil.pt"),
               "--calibration", str(tmp_path / "calib.npz"), "--out", str(tmp_path / "net.h5")])
    assert rc == 2 and not flag.exists() and not (tmp_path / "net.h5").exists()
    assert "evil.pt: not a weights-only torch checkpoint" in capsys.readouterr().err


# --------------------------------------------------------------------------- determinism

def _pipeline(digits, seed):
    xtr, ytr, xte, _ = digits
    torch.manual_seed(seed)  # parameter initialization
    model = train_classifier(DigitsMLP(), xtr[:400], ytr[:400], epochs=2, lr=0.05, seed=seed)
    net = map_network(convert(model, [xtr[:128]], norm="percentile"), load_target("loihi"), "anneal", seed=seed)
    return net, simulator.run(net, xte[:30].numpy(), 4, record_counts=True)


def test_results_are_deterministic_given_a_seed(digits):
    (a, ra), (b, rb), (c, _) = _pipeline(digits, 7), _pipeline(digits, 7), _pipeline(digits, 8)
    for p, q in zip(a.projections, b.projections):
        np.testing.assert_array_equal(p.weight, q.weight)
    for col in ("x", "y", "population", "neuron_start"):
        np.testing.assert_array_equal(getattr(a.cores, col), getattr(b.cores, col))
    np.testing.assert_array_equal(ra.output, rb.output)
    np.testing.assert_array_equal(ra.counters, rb.counters)
    assert not np.array_equal(a.projections[0].weight, c.projections[0].weight)  # the seed is what fixes them
