import json
import os

import numpy as np
import pytest
import torch

from spikeforge.cli import main


def _mlp_inputs(tmp_path, trained_mlp, digits, n_test):
    """Write the MLP's weights, 128 calibration samples and n_test labelled test samples; return the start of a
    `spikeforge convert` command line for them (add --out and options)."""
    xtr, _, xte, yte = digits
    torch.save(trained_mlp.state_dict(), tmp_path / "mlp.pt")
    np.savez(tmp_path / "calib.npz", x=xtr[:128].numpy())
    np.savez(tmp_path / "test.npz", x=xte[:n_test].numpy(), y=yte[:n_test].numpy())
    return ["convert", "--model", "spikeforge.models:DigitsMLP", "--weights", str(tmp_path / "mlp.pt"),
            "--calibration", str(tmp_path / "calib.npz")]


def test_convert_inspect_simulate_from_the_command_line(tmp_path, trained_mlp, digits, capsys):
    convert = _mlp_inputs(tmp_path, trained_mlp, digits, 50)
    net = tmp_path / "mlp.h5"
    assert main(convert + ["--out", str(net), "--norm", "max"]) == 0
    assert main(["inspect", str(net)]) == 0
    gn = tmp_path / "mlp-gn.h5"
    assert main(convert + ["--out", str(gn), "--neuron", "group", "--tau", "3",
                           "--calibrate", "cc", "--T", "2", "--calib-samples", "64"]) == 0
    from spikeforge.simulator import load_network
    loaded = load_network(gn)
    assert {p.model for p in loaded.populations} == {"input", "group", "readout"}
    assert loaded.populations[1].tau == 3 and loaded.attrs["calibration"] == "cc T=2 N=64"
    assert "valid, format 1.14" in capsys.readouterr().out
    mt = tmp_path / "mlp-mt.h5"
    assert main(convert + ["--out", str(mt), "--neuron", "multi_threshold", "--levels", "3",
                           "--payload", "parallel"]) == 0
    hidden = load_network(mt).populations[1]
    assert (hidden.model, hidden.levels, hidden.payload) == ("multi_threshold", 3, "parallel")
    assert hidden.threshold_neg is None  # ReLU layers: one-sided
    out = tmp_path / "run.npz"
    assert main(["simulate", str(net), "--input", str(tmp_path / "test.npz"), "--x-key", "x", "--y-key", "y",
                 "--T", "16", "--out", str(out), "--batch-size", "16"]) == 0
    summary = json.loads((tmp_path / "run.json").read_text())
    assert summary["samples"] == 50 and summary["accuracy"] > 0.85
    data = np.load(out)
    assert data["output"].shape == (50, 10)
    assert data["counters"].shape[0] == 16
    assert summary["totals"]["spikes"] == int(data["per_sample"][:, 2].sum())


def test_two_stage_from_the_command_line(tmp_path, trained_mlp, digits, capsys):
    xtr, ytr, _, _ = digits
    torch.save(trained_mlp.state_dict(), tmp_path / "mlp.pt")
    np.savez(tmp_path / "train.npz", x=xtr[:256].numpy(), y=ytr[:256].numpy())
    out = tmp_path / "two-stage.h5"
    args = ["convert", "--model", "spikeforge.models:DigitsMLP", "--weights", str(tmp_path / "mlp.pt"),
            "--calibration", str(tmp_path / "train.npz"), "--key", "x", "--out", str(out), "--T", "2"]
    assert main(args + ["--qc-epochs", "2", "--p", "0.5", "--y-key", "y", "--calibrate", "fc", "--loss", "kl",
                        "--calib-samples", "64", "--epochs", "2"]) == 0
    from spikeforge.simulator import load_network
    net = load_network(out)
    assert net.attrs["calibration"] == "fc T=2 N=64 loss=kl"
    assert len(np.unique(net.populations[2].v_init)) > 1  # calibrated per neuron
    capsys.readouterr()
    assert main(args + ["--qc-epochs", "1"]) == 2
    assert "spikeforge convert: error: --qc-epochs needs --y-key" in capsys.readouterr().err
    # the options' own names, and an option that would do nothing is refused rather than ignored
    untimed = [a for a in args if a not in ("--T", "2")]
    for extra, words in ((untimed + ["--calibrate", "cc"], "--calibrate tune the network for a number of steps: "
                                                            "give --T"),
                         (args, "--T is the number of steps --calibrate or --qc-epochs tune for; without them it "
                                "does nothing"),
                         (untimed + ["--fixed-point"], "--fixed-point takes its weight and membrane bits from a "
                                                       "target: give --target")):
        assert main(extra) == 2, words
        assert words in capsys.readouterr().err


def test_cli_reports_bad_files_without_a_traceback(tmp_path, capsys):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"garbage")
    assert main(["inspect", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "not a readable HDF5 file" in err and "Traceback" not in err


def test_debug_shows_the_traceback_and_keeps_the_exit_codes(tmp_path, capsys, monkeypatch):
    """--debug adds the traceback; a user error still exits 2 (scripts test the code), a bug of ours 1."""
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"garbage")
    assert main(["inspect", str(bad), "--debug"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("spikeforge inspect: error: ")
    import spikeforge.cli as cli

    def broken(args):
        raise KeyError("oops")
    monkeypatch.setitem(cli.COMMANDS, "inspect", broken)
    assert main(["inspect", str(bad), "--debug"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "internal error: KeyError: 'oops'" in err and "run again" not in err
    assert main(["inspect", str(bad)]) == 1
    assert "Traceback" not in capsys.readouterr().err


def test_convert_onto_a_target_and_inspect_its_cores(tmp_path, trained_resnet, digits, capsys):
    """--target maps the network (Loihi limits: more cores than layers, 11 for 7); inspect prints per-layer core loads
    against the target and writes the PNG; the mapped file simulates like the unmapped one."""
    xtr, _, xte, _ = digits
    torch.save(trained_resnet.state_dict(), tmp_path / "r.pt")
    np.savez(tmp_path / "calib.npz", x=xtr[:128].numpy())
    common = ["convert", "--model", "spikeforge.models:DigitsResNet", "--weights", str(tmp_path / "r.pt"),
              "--calibration", str(tmp_path / "calib.npz"), "--norm", "max"]
    assert main(common + ["--out", str(tmp_path / "plain.h5")]) == 0
    assert main(common + ["--out", str(tmp_path / "loihi.h5"), "--target", "loihi"]) == 0
    capsys.readouterr()
    png = tmp_path / "cores.png"
    assert main(["inspect", str(tmp_path / "loihi.h5"), "--target", "loihi", "--png", str(png)]) == 0
    out = capsys.readouterr().out
    assert "11 cores on 1 chip(s), mapping loihi:anneal" in out and "util max (n/a/mem)" in out
    assert png.stat().st_size > 10_000 and png.read_bytes()[:4] == b"\x89PNG"
    from spikeforge import simulator

    a = simulator.run(tmp_path / "plain.h5", xte[:10].numpy(), 4)
    b = simulator.run(tmp_path / "loihi.h5", xte[:10].numpy(), 4)
    np.testing.assert_array_equal(a.output, b.output)
    assert b.total("packets") > a.total("packets")  # split layers: a spike reaches several destination cores
    # --ops-per-core: busy layers cut finer (more cores), the same outputs, the slowest core's work per step lower
    assert main(common + ["--out", str(tmp_path / "busy.h5"), "--target", "loihi", "--ops-per-core", "200"]) == 0
    c = simulator.run(tmp_path / "busy.h5", xte[:10].numpy(), 4)
    np.testing.assert_array_equal(a.output, c.output)
    busy = simulator.load_network(tmp_path / "busy.h5")
    assert len(busy.cores.population) > 11
    most = [r.counter("synops").max(axis=1).max() for r in (b, c)]
    assert most[1] < most[0], most
    capsys.readouterr()
    assert main(common + ["--out", str(tmp_path / "x.h5"), "--ops-per-core", "200"]) == 2
    assert "--ops-per-core cuts the cores of a --target's mapping by work: give --target" in capsys.readouterr().err
    assert main(common + ["--out", str(tmp_path / "x.h5"), "--target", "loihi", "--ops-per-core", "200",
                          "--ns-per-core", "2000"]) == 2
    assert "give one work budget per core: --ops-per-core or --ns-per-core" in capsys.readouterr().err
    # --ns-per-core: cut by core time as Loihi prices it; more cores than the chip's limits alone, same outputs
    assert main(common + ["--out", str(tmp_path / "timed.h5"), "--target", "loihi", "--ns-per-core", "3000"]) == 0
    np.testing.assert_array_equal(a.output, simulator.run(tmp_path / "timed.h5", xte[:10].numpy(), 4).output)
    assert len(simulator.load_network(tmp_path / "timed.h5").cores.population) > 11
    assert not (tmp_path / "x.h5").exists()


def test_convert_with_a_hop_delay_writes_pipelined_projections(tmp_path, trained_mlp, digits, capsys):
    from spikeforge import simulator

    convert = _mlp_inputs(tmp_path, trained_mlp, digits, 10)
    assert main(convert + ["--out", str(tmp_path / "piped.h5"), "--target", "loihi", "--hop-delay", "1"]) == 0
    net = simulator.load_network(tmp_path / "piped.h5")
    assert [q.delay for q in net.projections] == [1] * len(net.projections) and net.attrs["hop_delay"] == 1
    x = np.load(tmp_path / "test.npz")["x"]
    res = simulator.run(net, x, 3, record_counts=True)  # three hops: nothing reaches the readout by T = 3
    assert res.total("spikes") > 0 and np.all(res.output == res.output[:1])
    capsys.readouterr()
    sim = ["simulate", str(tmp_path / "piped.h5"), "--input", str(tmp_path / "test.npz"), "--x-key", "x",
           "--out", str(tmp_path / "r.npz")]
    assert main(sim + ["--T", "4"]) == 0  # a note: 3 of the 4 steps carry nothing to the readout
    assert "note: T=4: the input reaches the readout only after 3 steps" in capsys.readouterr().err
    assert main(sim + ["--T", "8"]) == 0 and "note:" not in capsys.readouterr().err
    assert main(convert + ["--out", str(tmp_path / "bad.h5"), "--hop-delay", "-1"]) == 2
    assert "argument --hop-delay: '-1' is not an integer >= 0" in capsys.readouterr().err


def test_convert_names_the_layers_a_work_budget_leaves_over_in_a_note(tmp_path, trained_mlp, digits, capsys):
    """--ops-per-core below what one neuron does alone: the layers are cut to single neurons, and the note names
    the layers still over the budget; the file is written (the budget is a wish, the mapping is valid)."""
    convert = _mlp_inputs(tmp_path, trained_mlp, digits, 10)
    capsys.readouterr()
    assert main(convert + ["--out", str(tmp_path / "tight.h5"), "--target", "loihi", "--ops-per-core", "0.5"]) == 0
    err = capsys.readouterr().err
    assert "spikeforge convert: note: work budget 0.5 synops per core and step:" in err and "busiest:" in err, err
    assert (tmp_path / "tight.h5").exists()


def test_report_with_fixed_point(tmp_path, trained_mlp, digits, capsys):
    convert = _mlp_inputs(tmp_path, trained_mlp, digits, 60)
    net = tmp_path / "mlp.h5"
    assert main(convert + ["--out", str(net), "--norm", "max"]) == 0
    assert main(["report", str(net), "--data", str(tmp_path / "test.npz"), "--x-key", "x", "--y-key", "y",
                 "--T", "4", "8", "--target", "loihi", "--target", "generic45nm", "--fixed-point",
                 "--out", str(tmp_path / "rep")]) == 0
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "## Fixed point" in md and "| loihi | 8 / 24 | 8 |" in md
    printed = capsys.readouterr().out  # the fixed-point table printed with a heading (issue 37: it had none)
    assert "\nFixed point (weights, thresholds and membranes in the target's integer widths):\n|" in printed
    # SOPs in a unit that shows them (issue 37: "SOPs (G)" of 3.05e-05): a digits MLP's are thousands
    assert "| SOPs (k) mean ± std |" in md
    assert "generic45nm | 32" not in md  # 32-bit "weights" are float: no fixed-point row
    rows = json.loads((tmp_path / "rep" / "report.json").read_text())["fixed_point"]
    assert [r["T"] for r in rows] == [4, 8] and all(r["agreement"] > 0.9 for r in rows)
    # rate-encoded: the fixed-point runs get the same spike trains as the float ones (seeded per sample)
    assert main(["report", str(net), "--data", str(tmp_path / "test.npz"), "--x-key", "x", "--y-key", "y",
                 "--T", "8", "--target", "loihi", "--fixed-point", "--encoding", "rate", "--seed", "2",
                 "--out", str(tmp_path / "rate")]) == 0
    (row,) = json.loads((tmp_path / "rate" / "report.json").read_text())["fixed_point"]
    from spikeforge import simulator
    from spikeforge.converter.fixed_point import to_fixed_point
    from spikeforge.simulator import Encoding

    x = np.load(tmp_path / "test.npz")["x"]
    enc = Encoding("rate", seed=2)
    float_pred = simulator.run(net, x, 8, encoding=enc).predictions()
    fixed_pred = simulator.run(to_fixed_point(simulator.load_network(net), 8, 24), x, 8, encoding=enc).predictions()
    assert row["agreement"] == float((float_pred == fixed_pred).mean())


def test_sweep_example_is_shipped_and_loads(tmp_path, capsys):
    from spikeforge import sweep

    assert main(["sweep", "--example"]) == 0
    spec_path = tmp_path / "sweep.toml"
    spec_path.write_text(capsys.readouterr().out)
    spec = sweep.load_spec(str(spec_path))
    assert spec["store"] == str(tmp_path / "sweep_digits")
    assert main(["sweep"]) == 2
    assert "spikeforge sweep: error: give a sweep spec file" in capsys.readouterr().err


def test_bad_samples_and_labels_exit_2_and_leave_earlier_results(tmp_path, trained_mlp, digits, capsys):
    from spikeforge.converter import convert, write_network

    xtr, _, xte, yte = digits
    net = write_network(convert(trained_mlp, [xtr[:128]]), tmp_path / "mlp.h5")
    np.savez(tmp_path / "ok.npz", x=xte[:8].numpy(), y=yte[:8].numpy())
    out = tmp_path / "run.npz"
    assert main(["simulate", str(net), "--input", str(tmp_path / "ok.npz"), "--x-key", "x", "--y-key", "y",
                 "--T", "2", "--out", str(out)]) == 0
    before = (out.read_bytes(), out.with_suffix(".json").read_bytes())
    summary = json.loads(out.with_suffix(".json").read_text())
    assert json.loads(str(np.load(out)["summary"]))["run_id"] == summary["run_id"]
    (tmp_path / "garbage.npz").write_bytes(b"not an array file")
    np.savez(tmp_path / "float_labels.npz", x=xte[:8].numpy(), y=yte[:8].numpy() + 0.5)
    np.savez(tmp_path / "short_labels.npz", x=xte[:8].numpy(), y=yte[:5].numpy())
    np.savez(tmp_path / "shifted_labels.npz", x=xte[:8].numpy(), y=yte[:8].numpy() + 5)
    cases = [(["--input", str(tmp_path / "shifted_labels.npz"), "--x-key", "x", "--y-key", "y"],
              f"the labels (--y-key) run from {int(yte[:8].min()) + 5} to {int(yte[:8].max()) + 5}, but the "
              "network's readout has 10 outputs: labels must be class indices 0 .. 9"),
             (["--input", str(tmp_path / "garbage.npz")], "garbage.npz: not a .npy / .npz file"),
             (["--input", str(tmp_path / "float_labels.npz"), "--x-key", "x", "--y-key", "y"],
              "labels 'y' must be a 1-d integer array"),
             (["--input", str(tmp_path / "short_labels.npz"), "--x-key", "x", "--y-key", "y"],
              "5 labels in 'y' for 8 samples"),
             (["--input", str(tmp_path / "ok.npz"), "--x-key", "nope"], "no array 'nope'")]
    capsys.readouterr()
    for extra, words in cases:
        assert main(["simulate", str(net), "--T", "2", "--out", str(out)] + extra) == 2, words
        err = capsys.readouterr().err
        assert err.startswith("spikeforge simulate: error: ") and words in err, err
    assert (out.read_bytes(), out.with_suffix(".json").read_bytes()) == before
    assert main(["report", str(net), "--data", str(tmp_path / "ok.npz"), "--x-key", "x", "--T", "2",
                 "--out", str(tmp_path / "rep"), "--limit", "0"]) == 2
    assert "--limit must be >= 1" in capsys.readouterr().err


def test_bad_weights_and_conflicting_options_are_named(tmp_path, trained_mlp, digits, capsys, monkeypatch):
    xtr = digits[0]
    np.savez(tmp_path / "calib.npz", x=xtr[:64].numpy())
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    torch.save(trained_mlp.state_dict(), tmp_path / "mlp.pt")
    base = ["convert", "--calibration", str(tmp_path / "calib.npz"), "--out", str(tmp_path / "n.h5")]
    capsys.readouterr()
    assert main(base + ["--model", "spikeforge.models:DigitsMLP", "--weights", str(tmp_path / "notes.txt")]) == 2
    err = capsys.readouterr().err
    assert "--weights " + str(tmp_path / "notes.txt") + ": not a weights-only torch checkpoint" in err
    (tmp_path / "hello.txt").write_text("hello notes\n")  # pickle's reader fails on it with a bare KeyError('101')
    assert main(base + ["--model", "spikeforge.models:DigitsMLP", "--weights", str(tmp_path / "hello.txt")]) == 2
    assert "hello.txt: not a weights-only torch checkpoint (a state_dict of tensors): its bytes do not read as one " \
        "(KeyError 101)" in capsys.readouterr().err
    assert main(base + ["--model", "spikeforge.models:DigitsResNet", "--weights", str(tmp_path / "mlp.pt")]) == 2
    assert "do not fit --model spikeforge.models:DigitsResNet" in capsys.readouterr().err
    # the user's model module: a non-callable, a factory that raises, one that returns no module, a file path
    (tmp_path / "usermodels.py").write_text("import torch\nnot_callable = 3\n"
                                            "def broken():\n    raise RuntimeError('oops in the factory')\n"
                                            "def not_a_module():\n    return 'model'\n")
    monkeypatch.chdir(tmp_path)
    for spec, message in (("usermodels:not_callable", "not_callable is a int, not a function or class"),
                          ("usermodels:broken", "calling broken() raised RuntimeError: oops in the factory"),
                          ("usermodels:not_a_module", "not_a_module() returned a str, not a torch.nn.Module"),
                          ("./usermodels.py:broken", "give a module name, not a file (e.g. mymodels:resnet20")):
        assert main(base + ["--model", spec]) == 2, spec
        assert f"spikeforge convert: error: --model {spec}: {message}" in _err(capsys)
    np.savez(tmp_path / "labels_first.npz", y=np.zeros(64, np.int64), x=xtr[:64].numpy())
    nan = xtr[:64].numpy().copy()
    nan[3, 0, 2, 2] = np.nan
    np.savez(tmp_path / "nan.npz", x=nan)
    for calib, message in ((["--calibration", "labels_first.npz"], "--calibration labels_first.npz: its first array "
                            "(--key names another) holds int64 of shape (64,), not samples (N, *input shape)"),
                           (["--calibration", "nan.npz"], "--calibration nan.npz: sample 3 of its first array "
                                                          "(--key names another) contains NaN or inf")):
        assert main(base + ["--model", "spikeforge.models:DigitsMLP"] + calib) == 2, message
        assert message in _err(capsys)
    assert main(base + ["--model", "spikeforge.models:DigitsMLP"]) == 0
    assert "note: no --weights: the model's weights are those DigitsMLP() gave it" in capsys.readouterr().err
    (tmp_path / "bad.toml").write_text("name = \n")
    assert main(["sweep", str(tmp_path / "bad.toml")]) == 2
    assert "bad.toml: not a valid TOML spec" in capsys.readouterr().err
    assert main(["demo", "--T", "0", "--out", str(tmp_path / "d")]) == 2
    assert "every --T must be >= 1" in capsys.readouterr().err and not (tmp_path / "d").exists()


# ---- issue 22: bad input and bounds on work, from the command line (a small untrained network, no training) ----

def _err(capsys):
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


def test_max_memory_flag_bounds_simulate_and_report_and_is_named_in_the_refusal(tmp_path, tiny, capsys):
    net, data = tiny
    out = tmp_path / "run.npz"
    base = ["simulate", str(net), "--input", str(data), "--x-key", "x", "--out", str(out)]
    assert main(base + ["--T", "2", "--max-memory", "1K"]) == 2  # the samples alone need more: refused first
    assert f"error: {data}: the arrays read from it declare" in (err := _err(capsys)) and "--max-memory" in err
    assert main(base + ["--T", "100000", "--max-memory", "16M"]) == 2
    err = _err(capsys)
    assert err.startswith("spikeforge simulate: error: T=100000 with 20 samples")
    assert "than the 16 MiB allowed by --max-memory;" in err
    assert err.strip().endswith("or raise --max-memory (e.g. --max-memory 64G)") and "max_bytes" not in err
    assert not out.exists()
    # --T 10^9 needs hundreds of GiB: refused by the default bound (half of the machine's memory) before any work
    assert main(base + ["--T", "1000000000"]) == 2
    assert "allowed (half of this machine's memory)" in (err := _err(capsys)) and "--max-memory" in err
    assert main(base + ["--T", "2", "--max-memory", "64G"]) == 0 and out.exists()
    capsys.readouterr()
    rep = tmp_path / "rep"
    assert main(["report", str(net), "--data", str(data), "--x-key", "x", "--T", "100000", "--out", str(rep),
                 "--target", "loihi", "--max-memory", "16M"]) == 2
    assert "spikeforge report: error: T=100000" in _err(capsys) and not rep.exists()
    assert main(base + ["--T", "2", "--max-memory", "lots"]) == 2
    assert "argument --max-memory: 'lots' is not a size" in _err(capsys)


def test_bad_choices_and_arguments_give_one_line_and_exit_2(tiny, tmp_path, capsys):
    net, data = tiny
    cases = [(["simulate", str(net), "--input", str(data), "--T", "2", "--out", "r.npz", "--backend", "nope"],
              "spikeforge simulate: error: argument --backend: invalid choice: 'nope'"),
             (["inspect", str(net), "--png"], "spikeforge inspect: error: argument --png: expected one argument"),
             (["inspect", str(net), "--png", str(tmp_path / "cores.txt")],
              f"spikeforge inspect: error: --png {tmp_path / 'cores.txt'}: the image is written as PNG"),
             (["convert", "--model", "m:f", "--calibration", "c.npz", "--out", "o.h5", "--norm", "mean"],
              "spikeforge convert: error: argument --norm: invalid choice: 'mean'"),
             (["simulate", str(net), "--T", "2"], "spikeforge simulate: error: the following arguments are required"),
             (["frobnicate"], "spikeforge: error: argument command: invalid choice: 'frobnicate'")]
    for argv, words in cases:
        assert main(argv) == 2, argv
        err = _err(capsys)
        assert err.startswith(words) and "usage:" not in err, err


def test_missing_files_keys_for_npy_and_unwritable_outputs_are_named(tiny, tmp_path, capsys):
    net, data = tiny
    np.save(tmp_path / "x.npy", np.load(data)["x"])
    out = tmp_path / "run.npz"
    sim = ["simulate", str(net), "--T", "2", "--out", str(out)]
    cases = [(sim[:1] + [str(tmp_path / "nope.h5")] + sim[2:] + ["--input", str(data)],
              f"spikeforge simulate: error: {tmp_path / 'nope.h5'}: no such file"),
             (sim + ["--input", str(tmp_path / "nope.npz")], f"{tmp_path / 'nope.npz'}: no such file"),
             (sim + ["--input", str(tmp_path / "x.npy"), "--x-key", "x"],
              "x.npy: a .npy file holds one array, so --x-key x cannot pick one"),
             (sim + ["--input", str(tmp_path / "x.npy"), "--y-key", "y"],
              "x.npy: a .npy file holds one array, so --y-key y cannot pick one"),
             (["inspect", str(tmp_path / "nope.h5")], "spikeforge inspect: error: "),
             (["sweep", str(tmp_path / "nope.toml")],
              f"spikeforge sweep: error: {tmp_path / 'nope.toml'}: no such file")]
    for argv, words in cases:
        assert main(argv) == 2, argv
        err = _err(capsys)
        assert words in err, err
    assert not out.exists()
    # a folder that cannot take the output: the message names the user's --out, never the temporary file
    bad_out = tmp_path / "missing" / "run.npz"
    assert main(["simulate", str(net), "--T", "2", "--input", str(data), "--x-key", "x", "--out", str(bad_out)]) == 2
    err = _err(capsys)
    assert f"{bad_out}: cannot write it" in err and ".spikeforge-" not in err


def test_demo_quick_honours_an_explicit_T_and_epochs(monkeypatch, tmp_path):
    import spikeforge.demo

    calls = []
    monkeypatch.setattr(spikeforge.demo, "run_demo", lambda out, **kw: calls.append(kw))
    assert main(["demo", "--quick", "--out", str(tmp_path / "d")]) == 0
    assert main(["demo", "--quick", "--T", "4", "--epochs", "1", "--out", str(tmp_path / "d")]) == 0
    assert main(["demo", "--T", "4", "--out", str(tmp_path / "d")]) == 0
    assert calls == [{"epochs": 3, "steps": [2, 8], "test_samples": 120},
                     {"epochs": 1, "steps": [4], "test_samples": 120},
                     {"epochs": 20, "steps": [4], "test_samples": None}]


def test_report_folder_is_replaced_as_a_whole(tiny, tmp_path, capsys):
    """A new report leaves no file of an earlier one (the T=4 plots), a killed run's leftovers are removed, a folder
    of other files is refused before simulating, and the printed path has no double slash."""
    net, data = tiny
    rep = tmp_path / "rep"
    base = ["report", str(net), "--data", str(data), "--x-key", "x", "--y-key", "y", "--target", "loihi",
            "--out", str(rep) + "/"]
    assert main(base + ["--T", "2", "4"]) == 0
    assert (rep / "spikes_per_step_T4.png").exists() and (rep / "accuracy_vs_T.png").exists()
    assert f"report written to {rep}/report.md\n" in capsys.readouterr().out
    # what a run killed with SIGKILL leaves: its temporary sibling folder and a writer's temporary file inside
    (tmp_path / ".rep.spikeforge-tmp-999999999").mkdir()
    (tmp_path / ".rep.spikeforge-tmp-999999999" / "report.md").write_text("half")
    (rep / ".spikeforge-abc.tmp").write_text("half")
    assert main(base + ["--T", "2"]) == 0
    assert sorted(os.listdir(rep)) == [".spikeforge-outputs.json", "energy_per_layer_loihi_T2.png", "report.csv",
                                       "report.json", "report.md", "spikes_per_step_T2.png"]
    assert os.listdir(tmp_path) == ["rep"]
    before = {f: (rep / f).read_bytes() for f in os.listdir(rep)}
    (rep / "notes.txt").write_text("mine")
    capsys.readouterr()
    assert main(base + ["--T", "2"]) == 2
    assert "holds 'notes.txt' that spikeforge did not write there" in _err(capsys)
    (rep / "notes.txt").unlink()
    assert {f: (rep / f).read_bytes() for f in os.listdir(rep)} == before
    (rep / "holiday.png").write_bytes(b"my picture")  # a user's PNG: a report writes PNGs, but not this one
    assert main(base + ["--T", "2"]) == 2
    assert "holds 'holiday.png' that spikeforge did not write there" in _err(capsys)
    assert (rep / "holiday.png").read_bytes() == b"my picture"
    (rep / "holiday.png").unlink()
    assert main(base[:-1] + [str(net), "--T", "2"]) == 2  # --out naming a file
    assert "is a file; the report is a folder" in _err(capsys)


def test_inspect_says_over_capacity(tiny, capsys):
    net, _ = tiny
    assert main(["inspect", str(net), "--target", "loihi"]) == 0
    out = capsys.readouterr().out
    line = next(t for t in out.splitlines() if t.startswith("h ") and "over capacity" in t)
    # h: 2,150 neurons; 64 lists of 2,150 contiguous targets, 36 entries of (10 + 10) bits + 2,150 x 8 bits = 280
    # words: 143,360 B of Loihi's 131,072 (1.09x)
    assert "2.10/" in line and "over capacity (neurons 2.10x, memory 1.09x)" in line
    assert "2 of 4 cores over capacity for loihi" in out
    assert main(["inspect", str(net), "--target", "loihi", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["core_loads"]
    assert [r["over_capacity"] for r in rows] == [False, True, True, False]


def test_replace_folder_keeps_the_old_folder_on_failure_and_follows_a_link(tmp_path):
    from spikeforge.outputs import replace_folder

    real = tmp_path / "real"
    real.mkdir()
    (real / "report.md").write_text("old")
    (real / "report.json").write_text('{"rows": []}')  # a report of spikeforge 0.2.0 (no marker): adopted
    (tmp_path / "link").symlink_to(real)
    try:
        with replace_folder(tmp_path / "link") as tmp:
            open(os.path.join(tmp, "report.md"), "w").write("half")
            raise RuntimeError("the writer failed")
    except RuntimeError:
        pass
    assert (real / "report.md").read_text() == "old" and sorted(os.listdir(tmp_path)) == ["link", "real"]
    with replace_folder(tmp_path / "link") as tmp:
        open(os.path.join(tmp, "report.md"), "w").write("new")
    assert (tmp_path / "link").is_symlink() and (tmp_path / "link" / "report.md").read_text() == "new"
    assert sorted(os.listdir(tmp_path)) == ["link", "real"]


def test_simulate_reads_per_step_spike_trains_and_names_a_wrong_T(tiny, tmp_path, capsys):
    net, _ = tiny
    rng = np.random.default_rng(2)
    np.savez(tmp_path / "frames.npz", x=(rng.random((5, 3, 64)) < 0.3).astype(np.float32), y=np.arange(5))
    base = ["simulate", str(net), "--input", str(tmp_path / "frames.npz"), "--x-key", "x", "--y-key", "y",
            "--out", str(tmp_path / "run.npz")]
    assert main(base + ["--T", "3"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["T"] == 3 and summary["totals"]["macs"] == 0 and summary["totals"]["synops"] > 0
    assert main(base + ["--T", "4"]) == 2
    assert "or (batch, 4, 64) (one frame per step)" in _err(capsys)


def test_simulate_and_report_encode_static_samples_with_a_seed(tiny, tmp_path, capsys):
    """--encoding rate: the same seed gives the same run as the library's, another seed another one; latency: one
    spike per nonzero input, counted by hand; the summary and the report say which encoding."""
    from spikeforge import simulator

    net, data = tiny
    x = np.load(data)["x"]

    def simulate(*extra, out="run.npz"):
        argv = ["simulate", str(net), "--input", str(data), "--x-key", "x", "--T", "5", "--out", str(tmp_path / out)]
        assert main(argv + list(extra)) == 0
        capsys.readouterr()
        return json.loads((tmp_path / out).with_suffix(".json").read_text()), np.load(tmp_path / out)

    summary, run = simulate("--encoding", "rate", "--seed", "3", "--batch-size", "7")
    assert summary["encoding"] == "rate (seed 3)" and summary["totals"]["macs"] == 0
    lib = simulator.run(net, x, 5, encoding=simulator.Encoding("rate", seed=3))
    assert np.array_equal(run["per_sample"], lib.per_sample) and np.array_equal(run["counters"], lib.counters)
    assert not np.array_equal(simulate("--encoding", "rate", "--seed", "4")[1]["per_sample"], run["per_sample"])
    summary, run = simulate("--encoding", "latency")
    hidden = int(np.flatnonzero(run["core_population"] == 1)[0])
    assert summary["encoding"] == "latency"  # 2150 synapses per input spike on the hidden core, one spike per input
    assert run["counters"][:, hidden, 0].sum() == np.count_nonzero(x) * 2150
    rep = tmp_path / "rep"
    assert main(["report", str(net), "--data", str(data), "--x-key", "x", "--T", "2", "--target", "loihi",
                 "--out", str(rep), "--encoding", "rate", "--seed", "1"]) == 0
    assert "input encoding: rate (seed 1)" in (rep / "report.md").read_text()


def test_simulate_and_report_bin_an_event_file(tiny, tmp_path, capsys):
    """--events: an event file (t, address, sample, labels) binned by the documented rule; counts are spikes
    (synaptic operations), as the library's bin_samples + run(spikes=True) gives."""
    from spikeforge import simulator

    net, _ = tiny
    rng = np.random.default_rng(4)
    samples = [{"t": rng.integers(0, 4000, n), "address": rng.integers(0, 64, n)} for n in (300, 0, 120, 900)]
    simulator.save_events(tmp_path / "ev.npz", samples, labels=[1, 2, 3, 4])
    out = tmp_path / "run.npz"
    assert main(["simulate", str(net), "--input", str(tmp_path / "ev.npz"), "--events", "--dt", "500",
                 "--t0", "0", "--y-key", "label", "--T", "6", "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    frames, dropped = simulator.bin_samples(samples, (64,), 6, dt=500, t0=0)
    assert summary["events_left_out"] == int(dropped.sum()) > 0  # events after 3000 fall outside [0, 3000)
    assert summary["encoding"] == "events, steps of 500 from t0 = 0" and summary["totals"]["macs"] == 0
    assert frames.max() > 1  # repeated spikes in one step
    lib = simulator.run(net, frames, 6, spikes=True)
    assert np.array_equal(np.load(out)["per_sample"], lib.per_sample)
    rep = tmp_path / "rep"
    assert main(["report", str(net), "--data", str(tmp_path / "ev.npz"), "--events", "--y-key", "label",
                 "--T", "2", "4", "--target", "loihi", "--out", str(rep), "--limit", "3"]) == 0
    assert "input encoding: events, each sample's span / T per step" in (rep / "report.md").read_text()
    assert json.loads((rep / "report.json").read_text())["encoding"].startswith("events")


def test_simulate_reads_frames_and_samples_from_hdf5(tiny, tmp_path, capsys):
    """--input .h5: a root dataset picked by --x-key (labels by --y-key), frames or static samples to encode."""
    import h5py

    from spikeforge import simulator

    net, data = tiny
    rng = np.random.default_rng(8)
    frames = (rng.random((4, 3, 64)) < 0.4).astype(np.float32)
    with h5py.File(tmp_path / "in.h5", "w") as f:
        f["frames"], f["static"], f["labels"] = frames, rng.random((4, 64)), np.arange(4)
    base = ["simulate", str(net), "--input", str(tmp_path / "in.h5"), "--y-key", "labels", "--T", "3",
            "--out", str(tmp_path / "r.npz")]
    assert main(base + ["--x-key", "frames"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["encoding"] == "per-step frames from the file" and summary["totals"]["macs"] == 0
    assert np.array_equal(np.load(tmp_path / "r.npz")["per_sample"], simulator.run(net, frames, 3).per_sample)
    assert main(base + ["--x-key", "static", "--encoding", "latency"]) == 0
    assert json.loads(capsys.readouterr().out)["encoding"] == "latency"
    assert main(base + ["--x-key", "nope"]) == 2
    assert "in.h5: no array 'nope' (has ['frames', 'labels', 'static'])" in _err(capsys)


def test_bad_encoding_and_event_options_are_named(tiny, tmp_path, capsys):
    net, data = tiny
    np.savez(tmp_path / "big.npz", x=np.full((2, 64), 2.0))
    np.savez(tmp_path / "ev.npz", t=np.array([3, -1]), x=np.array([0, 1]), y=np.array([0, 0]), p=np.array([1, 0]))
    base = ["simulate", str(net), "--T", "3", "--out", str(tmp_path / "r.npz")]
    cases = [(["--input", str(tmp_path / "big.npz"), "--encoding", "rate"],
              "--encoding rate needs --input values in [0, 1], but sample 0 has values in [2, 2]"),
             (["--input", str(data), "--encoding", "poisson"], "argument --encoding: invalid choice: 'poisson'"),
             (["--input", str(data), "--seed", "2"], "--seed applies to --encoding rate, not direct"),
             (["--input", str(data), "--encoding", "latency", "--seed", "2"], "--seed applies to --encoding rate"),
             (["--input", str(data), "--dt", "5"], "--dt applies to --events only"),
             (["--input", str(tmp_path / "ev.npz")], "holds event fields (t, x, y, p): add --events"),
             (["--input", str(tmp_path / "ev.npz"), "--events"], "field 't' has a negative time (-1 at event 1)"),
             (["--input", str(tmp_path / "ev.npz"), "--events", "--encoding", "rate"],
              "--encoding does not apply to --events"),
             (["--input", str(tmp_path / "late.npz"), "--events", "--t0", "1e12", "--dt", "10"],
              "late.npz: T=3: all 2 events fall outside the window [t0, t0 + T * dt): no sample has any input"),
             (["--input", str(data), "--out", str(tmp_path / "r.txt")],
              "the results are a .npz file; give a name ending in .npz")]
    np.savez(tmp_path / "late.npz", t=np.array([3, 5]), address=np.array([0, 1]))  # (t, address): the net is 1-d
    for argv, words in cases:
        assert main(base + argv) == 2, argv
        err = _err(capsys)
        assert err.startswith("spikeforge simulate: error: ") and words in err, err



def test_report_prices_a_target_at_a_supply_voltage_and_a_host_paced_step(tiny, tmp_path, capsys):
    """--voltage truenorth=0.75 scales TrueNorth's dynamic energy and floor by (0.75 / 0.8)²; --host-step-us makes
    no step shorter (a 1 ms tick already is longer); bad values are refused before simulating, exit 2."""
    net, data = tiny
    base = ["report", str(net), "--data", str(data), "--x-key", "x", "--y-key", "y", "--target", "truenorth",
            "--T", "2"]
    assert main(base + ["--out", str(tmp_path / "nominal")]) == 0
    assert main(base + ["--voltage", "truenorth=0.75", "--host-step-us", "2000", "--out", str(tmp_path / "low")]) == 0
    nominal = json.loads((tmp_path / "nominal" / "report.json").read_text())["rows"][0]
    low = json.loads((tmp_path / "low" / "report.json").read_text())["rows"][0]
    assert low["voltage"] == 0.75 and low["host_step_us"] == 2000.0
    # 2 ms per step instead of 1 ms: the static energy doubles before the voltage scales it
    assert low["latency_us"] == pytest.approx(2 * nominal["latency_us"])
    f = (0.75 / 0.8) ** 2
    assert low["target_dynamic_uj"] == pytest.approx(f * nominal["target_dynamic_uj"])
    assert low["target_static_uj"] == pytest.approx(2 * f * nominal["target_static_uj"])
    assert "priced at: truenorth 0.75 V; host-paced steps of at least 2000 µs" in \
        (tmp_path / "low" / "report.md").read_text()
    capsys.readouterr()
    for extra, message in ((["--voltage", "truenorth=1.2"], "supply voltage 1.2 V is outside its published range"),
                           (["--voltage", "loihi=0.8"], "'loihi' is not one of the targets reported (truenorth)"),
                           (["--voltage", "0.75"], "--voltage '0.75': give TARGET=VOLTS"),
                           (["--host-step-us", "nan"], "--host-step-us must be a finite number >= 0")):
        assert main(base + extra + ["--out", str(tmp_path / "bad")]) == 2, extra
        err = _err(capsys)
        assert message in err and "Traceback" not in err, (extra, err)
        assert not (tmp_path / "bad").exists()


def test_a_model_module_that_is_not_found_says_where_it_must_be(tmp_path, capsys, monkeypatch):
    """Issue 37: `--model mymodels:net` with no mymodels module said only "No module named 'mymodels'"."""
    monkeypatch.chdir(tmp_path)
    np.savez(tmp_path / "calib.npz", x=np.zeros((4, 1, 8, 8), np.float32))
    assert main(["convert", "--model", "mymodels:net", "--calibration", str(tmp_path / "calib.npz"),
                 "--out", str(tmp_path / "n.h5")]) == 2
    err = capsys.readouterr().err
    assert "No module named 'mymodels'" in err and "mymodels.py in the current folder" in err, err
    assert str(tmp_path) in err and not (tmp_path / "n.h5").exists()
