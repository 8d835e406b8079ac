import json

import numpy as np
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
    assert "valid, format 1.6" in capsys.readouterr().out
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


def test_cli_reports_bad_files_without_a_traceback(tmp_path, capsys):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"garbage")
    assert main(["inspect", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "not a readable HDF5 file" in err and "Traceback" not in err


def test_convert_onto_a_target_and_inspect_its_cores(tmp_path, trained_resnet, digits, capsys):
    """--target maps the network (Loihi limits: more cores than layers); inspect prints per-layer core loads
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
    assert "13 cores on 1 chip(s), mapping loihi:anneal" in out and "util max (n/a/mem)" in out
    assert png.stat().st_size > 10_000 and png.read_bytes()[:4] == b"\x89PNG"
    from spikeforge import simulator

    a = simulator.run(tmp_path / "plain.h5", xte[:10].numpy(), 4)
    b = simulator.run(tmp_path / "loihi.h5", xte[:10].numpy(), 4)
    np.testing.assert_array_equal(a.output, b.output)
    assert b.total("packets") > a.total("packets")  # split layers: a spike reaches several destination cores


def test_report_with_fixed_point(tmp_path, trained_mlp, digits, capsys):
    convert = _mlp_inputs(tmp_path, trained_mlp, digits, 60)
    net = tmp_path / "mlp.h5"
    assert main(convert + ["--out", str(net), "--norm", "max"]) == 0
    assert main(["report", str(net), "--data", str(tmp_path / "test.npz"), "--x-key", "x", "--y-key", "y",
                 "--T", "4", "8", "--target", "loihi", "--target", "generic45nm", "--fixed-point",
                 "--out", str(tmp_path / "rep")]) == 0
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "## Fixed point" in md and "| loihi | 8 / 24 | 8 |" in md
    assert "generic45nm | 32" not in md  # 32-bit "weights" are float: no fixed-point row
    rows = json.loads((tmp_path / "rep" / "report.json").read_text())["fixed_point"]
    assert [r["T"] for r in rows] == [4, 8] and all(r["agreement"] > 0.9 for r in rows)


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
    cases = [(["--input", str(tmp_path / "garbage.npz")], "garbage.npz: not a .npy / .npz file"),
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


def test_bad_weights_and_conflicting_options_are_named(tmp_path, trained_mlp, digits, capsys):
    xtr = digits[0]
    np.savez(tmp_path / "calib.npz", x=xtr[:64].numpy())
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    torch.save(trained_mlp.state_dict(), tmp_path / "mlp.pt")
    base = ["convert", "--calibration", str(tmp_path / "calib.npz"), "--out", str(tmp_path / "n.h5")]
    capsys.readouterr()
    assert main(base + ["--model", "spikeforge.models:DigitsMLP", "--weights", str(tmp_path / "notes.txt")]) == 2
    assert "--weights " + str(tmp_path / "notes.txt") + ": not a weights-only torch checkpoint" in \
        capsys.readouterr().err
    assert main(base + ["--model", "spikeforge.models:DigitsResNet", "--weights", str(tmp_path / "mlp.pt")]) == 2
    assert "do not fit --model spikeforge.models:DigitsResNet" in capsys.readouterr().err
    (tmp_path / "bad.toml").write_text("name = \n")
    assert main(["sweep", str(tmp_path / "bad.toml")]) == 2
    assert "bad.toml: not a valid TOML spec" in capsys.readouterr().err
    assert main(["demo", "--T", "0", "--out", str(tmp_path / "d")]) == 2
    assert "every --T must be >= 1" in capsys.readouterr().err and not (tmp_path / "d").exists()
