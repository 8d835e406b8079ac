"""Which mapping a report prices (spikeforge.fit, issue 37 item 1): the file's own where it was made for the target
and fits it, else the network re-mapped for the target; with --no-remap, cores the target cannot hold are refused
naming the layer and the limit. Never a mapping priced silently on a target it does not fit."""
import json

import numpy as np
import pytest

from spikeforge.cli import main
from spikeforge.converter import write_network
from spikeforge.converter.mapping import map_network, one_population_per_core
from spikeforge.fit import fit_targets, mapped_for, misfits
from spikeforge.hwmodels import load_target
from spikeforge.simulator import Network, Population, Projection


def _wide(inputs=300):
    """in (300 analog) -> h (8 IF) -> out: h's neurons each read 300 input axons, more than TrueNorth's 256 and
    fewer than Loihi's 4,096."""
    rng = np.random.default_rng(0)
    pops = [Population.make("in", "input", (inputs,)), Population.make("h", "if", (8,), 1.0, 0.0),
            Population.make("out", "readout", (8,))]
    projs = [Projection("a", "dense", "in", "h", rng.uniform(-0.02, 0.05, (8, inputs)).astype(np.float32)),
             Projection("b", "dense", "h", "out", np.eye(8, dtype=np.float32))]
    cores, edges = one_population_per_core(pops, projs)
    return Network(pops, projs, cores, edges, {"mapping": "one-population-per-core"})


def test_misfits_names_the_layer_its_need_and_the_targets_limit():
    """One population per core: the input's core holds 300 neurons and h's core needs 300 input axons, both over
    TrueNorth's 256 by 300 / 256 = 1.17x; nothing over on Loihi (1,024 neurons, 4,096 axons)."""
    net = _wide()
    assert misfits(net, load_target("loihi")) == []
    assert misfits(net, load_target("truenorth")) == [
        "layer 'in': core 0 needs 300 neurons, a truenorth core has 256 (1.17x)",
        "layer 'h': core 1 needs 300 input axons, a truenorth core has 256 (1.17x)"]


def test_the_files_own_mapping_is_used_only_for_the_target_it_was_made_for():
    net = map_network(_wide(), load_target("loihi"))
    assert mapped_for(net) == "loihi" and mapped_for(_wide()) is None
    loihi, truenorth = fit_targets(net, [load_target("loihi"), load_target("truenorth")])
    assert loihi.network is net and not loihi.remapped and loihi.mapping.startswith("the file's mapping for loihi")
    assert truenorth.remapped and mapped_for(truenorth.network) == "truenorth"
    assert misfits(truenorth.network, load_target("truenorth")) == []  # split into relays that fit 256 axons
    assert "the file is mapped for loihi" in truenorth.mapping


def test_without_remapping_cores_that_fit_are_priced_as_they_are_and_others_refused():
    net = map_network(_wide(), load_target("loihi"))
    (same,) = fit_targets(net, [load_target("loihi2")], remap=False)
    assert same.network is net and "within loihi2's limits" in same.mapping
    from spikeforge.errors import UserError

    with pytest.raises(UserError, match=r"mapped for loihi, and its cores do not fit truenorth: layer 'in': .*; "
                                        r"layer 'h': core \d+ needs 300 input axons, a truenorth core has 256 "
                                        r"\(1.17x\)\. Leave out --no-remap"):
        fit_targets(net, [load_target("truenorth")], "net.h5", remap=False)


@pytest.fixture
def wide_files(tmp_path):
    net = map_network(_wide(), load_target("loihi"))
    path = tmp_path / "wide.h5"
    write_network(net, path)
    x = np.random.default_rng(1).uniform(0, 1, (6, 300)).astype(np.float32)
    np.savez(tmp_path / "data.npz", x=x, y=np.arange(6) % 8)
    return path, tmp_path / "data.npz"


def test_report_re_maps_a_file_made_for_another_target_and_says_so(wide_files, tmp_path, capsys):
    path, data = wide_files
    out = tmp_path / "rep"
    assert main(["report", str(path), "--data", str(data), "--x-key", "x", "--y-key", "y", "--T", "4",
                 "--target", "loihi", "--target", "truenorth", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "loihi: the file's mapping for loihi" in printed
    assert "truenorth: re-mapped for truenorth by this command" in printed
    doc = json.loads((out / "report.json").read_text())
    by = {r["target"]: r for r in doc["rows"]}
    assert by["truenorth"]["mapping"].startswith("re-mapped for truenorth")
    md = (out / "report.md").read_text()
    assert "mapping priced: loihi: the file's mapping" in md
    assert "Mapping per layer for truenorth" in md and "Mapping per layer for loihi" in md
    # the re-mapped network has h's relays (h.part), which the Loihi mapping does not
    assert "| h.part |" in md.split("Mapping per layer for truenorth")[1]
    assert "| h.part |" not in md.split("Mapping per layer for truenorth")[0]


def test_report_no_remap_refuses_cores_the_target_cannot_hold_with_exit_2(wide_files, tmp_path, capsys):
    path, data = wide_files
    out = tmp_path / "rep"
    assert main(["report", str(path), "--data", str(data), "--x-key", "x", "--T", "4", "--target", "truenorth",
                 "--no-remap", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "do not fit truenorth: layer 'in'" in err and "layer 'h': core 1 needs 300 input axons" in err
    assert "Traceback" not in err
    assert not out.exists()


def test_inspect_sizes_synapse_memory_as_the_mapped_target_stores_it_and_says_how(wide_files, tmp_path, capsys):
    """A Loihi-mapped file without --target: h's core at Loihi's 8-bit weights, measured against Loihi and said so;
    an unmapped file: 32-bit weights, said so (issue 37 item 6: 298 KB shown with the width unsaid)."""
    path, _ = wide_files
    assert main(["inspect", str(path), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["weights_sized_as"].startswith("loihi's 8-bit weights (the target the file was mapped for")
    assert all("util_axons" in r for r in doc["core_loads"])
    write_network(_wide(), tmp_path / "plain.h5")
    assert main(["inspect", str(tmp_path / "plain.h5")]) == 0
    assert "synapse memory (syn KB, 1 KB = 1,024 bytes) at 32-bit weights (no target" in capsys.readouterr().out


def test_a_sweep_over_a_network_file_with_only_test_arrays_runs_and_names_its_mapping(tmp_path, capsys):
    """Issue 37 item 3: [network] file with an .npz of x_test / y_test only; each point maps the file for its
    target and says so; the command names only the plots it wrote, and a sweep whose points all fail names none."""
    write_network(_wide(), tmp_path / "net.h5")
    x = np.random.default_rng(1).uniform(0, 1, (5, 300)).astype(np.float32)
    np.savez(tmp_path / "data.npz", x_test=x, y_test=np.arange(5) % 8)
    spec = tmp_path / "spec.toml"
    spec.write_text('store = "st"\n[network]\nfile = "net.h5"\n[data]\npath = "data.npz"\n[axes]\nT = [2]\n'
                    'target = ["loihi", "truenorth"]\n')
    assert main(["sweep", str(spec), "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert "2 points (0 failed)" in out and "the Pareto plots accuracy_vs_energy.png" in out
    import csv

    rows = {r["target"]: r for r in csv.DictReader(open(tmp_path / "st" / "results.csv"))}
    assert rows["loihi"]["mapping"] == "loihi:snake" and rows["truenorth"]["mapping"] == "truenorth:snake"
    bad = tmp_path / "bad.toml"  # one chip of one core holds none of it: every point fails
    bad.write_text('store = "st2"\n[network]\nfile = "net.h5"\n[data]\npath = "data.npz"\n[axes]\nT = [2]\n'
                   'target = ["truenorth"]\n"limits.cores_per_chip" = [1]\n"limits.chips" = [1]\n')
    assert main(["sweep", str(bad), "--workers", "1"]) == 1
    assert "(no plots: no point succeeded)" in capsys.readouterr().out
    assert not any((tmp_path / "st2" / p).exists() for p in ("energy_vs_cores.png", "accuracy_vs_energy.png"))
    assert "No point succeeded: no Pareto fronts and no plots." in (tmp_path / "st2" / "summary.md").read_text()


def test_a_report_over_every_built_in_target_leaves_out_those_that_cannot_hold_it_and_says_so(wide_files, tmp_path,
                                                                                              capsys):
    """No --target: the wide dense layer (300 inputs) maps onto every chip but Xylo (its few input channels): Xylo is
    left out, named with the reason, in report.md and report.json and on stdout, instead of failing the report or
    pricing it anyway."""
    path, data = wide_files
    out = tmp_path / "rep"
    assert main(["report", str(path), "--data", str(data), "--x-key", "x", "--T", "2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    doc = json.loads((out / "report.json").read_text())
    left = {r["target"] for r in doc["left_out"]}
    assert left == {"xylo"}, left
    assert {r["target"] for r in doc["rows"]} == {"generic45nm", "loihi", "loihi2", "speck", "truenorth"}
    assert "left out: xylo: " in printed and "cannot be re-mapped for xylo" in printed
    assert "left out (the network does not fit them): " in (out / "report.md").read_text()
