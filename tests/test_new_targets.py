"""The loihi2, speck and xylo targets (issue 33): every constant with a source, the calibrated ones re-derived from
the published workload they came from, map_network placing a network by each chip's rule (the placement changes
what it costs, never what it computes), and a sweep over the three targets that says where a network stops fitting."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from spikeforge import hwmodels, simulator
from spikeforge.converter import write_network
from spikeforge.converter.mapping import MappingError, map_network, one_population_per_core
from spikeforge.converter.speck import speck_layers
from spikeforge.hwmodels.targets import TargetError, load_target
from spikeforge.simulator import load_network
from spikeforge.simulator.network import Network, Population, Projection

NEW = ("loihi2", "speck", "xylo")


@pytest.mark.parametrize("name", NEW)
def test_every_constant_of_a_new_target_names_its_source(name):
    t = load_target(name)
    assert name in hwmodels.available()
    assert t.sources and all(isinstance(s, str) and s.strip() for s in t.sources.values())
    assert t.mapping == {"loihi2": "cores", "speck": "speck", "xylo": "xylo"}[name]
    raw = json.loads(open(t.path, encoding="utf-8").read())
    for section in ("energy_pj", "time_ns", "limits"):
        for key, entry in raw[section].items():
            assert entry["source"], f"{name}: {section}.{key} has no source"


def test_calibrated_constants_follow_from_the_published_workloads_they_name():
    """Each calibration's arithmetic from its source: Speck (9.5 - 0.42) mW x 0.54 s / 10^6 spikes; Xylo 291 uW /
    6.25 MHz per cycle x 7 / 22 / 3 cycles; Loihi 2 1.385611 mJ / 16 steps / 158,509 PilotNet neurons."""
    speck, xylo, loihi2 = (load_target(n) for n in ("speck", "xylo", "loihi2"))
    assert speck.energy_pj["spikes"] == pytest.approx((9.5 - 0.42) * 0.54 / 1e6 * 1e9, abs=0.1)
    assert "CALIBRATION" in speck.sources["energy_pj.spikes"] and "Yao" in speck.sources["energy_pj.spikes"]
    cycle = 291e-6 / 6.25e6 * 1e12
    for event, cycles in (("synops", 7), ("neuron_updates", 22), ("spikes", 3)):
        assert xylo.energy_pj[event] == pytest.approx(cycles * cycle, abs=0.01)
        assert xylo.time_ns[event] == pytest.approx(cycles * 160.0)
    neurons = 200 * 66 * 3 + 99 * 32 * 24 + 49 * 15 * 36 + 24 * 7 * 48 + 22 * 4 * 64 + 20 * 2 * 64 + 161
    assert neurons == 158509
    assert loihi2.energy_pj["neuron_updates"] == pytest.approx(1.385611e9 / 16 / neurons, abs=0.1)
    assert loihi2.static_power_mw_per_chip == pytest.approx((342.234 + 352.063) / 2, abs=0.1)


def test_a_mapping_rule_the_schema_does_not_know_is_refused(tmp_path):
    raw = json.loads(open(load_target("speck").path, encoding="utf-8").read())
    raw["mapping"] = {"rule": "spinnaker", "source": "x"}
    path = tmp_path / "t.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(TargetError, match="mapping must be an object with a 'rule' \\(cores, speck, xylo\\)"):
        load_target(str(path))
    del raw["mapping"]
    path.write_text(json.dumps(raw))
    assert load_target(str(path)).mapping == "cores"


def _conv_net():
    """input 2x16x16 -> conv 8 (3x3, pad 1) -> 2x2 average pooling -> conv 8 (3x3) -> dense readout 4."""
    rng = np.random.default_rng(0)
    pops = [Population.make("in", "input", (2, 16, 16)), Population.make("c1", "if", (8, 16, 16), 1.0, 0.0),
            Population.make("p1", "if", (8, 8, 8), 1.0, 0.0), Population.make("c2", "if", (8, 6, 6), 1.0, 0.0),
            Population.make("readout", "readout", (4,))]
    projs = [Projection("w1", "conv2d", "in", "c1", rng.normal(0.3, 0.5, (8, 2, 3, 3)).astype(np.float32),
                        kernel=(3, 3), stride=(1, 1), padding=(1, 1)),
             Projection("pool", "avgpool", "c1", "p1", None, kernel=(2, 2), stride=(2, 2)),
             Projection("w2", "conv2d", "p1", "c2", rng.normal(0.2, 0.5, (8, 8, 3, 3)).astype(np.float32),
                        kernel=(3, 3), stride=(1, 1), padding=(0, 0)),
             Projection("fc", "dense", "c2", "readout", rng.normal(0, 0.3, (4, 288)).astype(np.float32))]
    return Network(pops, projs, *one_population_per_core(pops, projs), {"name": "conv"})


def test_speck_places_one_layer_per_core_and_the_placed_file_computes_what_the_network_does(tmp_path):
    net = _conv_net()
    placed = map_network(net, load_target("speck"))
    x = dict(zip([p.name for p in placed.populations], placed.cores.x.tolist()))
    y = dict(zip([p.name for p in placed.populations], placed.cores.y.tolist()))
    assert y == {"in": 1, "c1": 0, "p1": 0, "c2": 0, "readout": 0}  # the input on the chip's input interface
    assert x["p1"] == x["c1"]  # the sum pooling is done by its source's core
    assert len({x["c1"], x["c2"], x["readout"]}) == 3 and all(0 <= x[k] < 9 for k in x)
    path = write_network(placed, str(tmp_path / "speck.h5"))
    back = load_network(path)
    assert back.attrs["mapping"] == "speck:speck"
    frames = (np.random.default_rng(1).random((3, 5, 2, 16, 16)) < 0.2).astype(np.float64)
    a = simulator.run(simulator.prepare(net), frames, 5, record=("c2",))
    b = simulator.run(simulator.prepare(back), frames, 5, record=("c2",))
    assert np.array_equal(a.output, b.output) and np.array_equal(a.spikes["c2"], b.spikes["c2"])
    assert a.per_sample[:, 2].sum() == b.per_sample[:, 2].sum() > 0  # the same spikes, only placed


def test_speck_refuses_graded_neurons_naming_the_layer():
    net = _conv_net()
    c1 = net.populations[1]
    net.populations[1] = Population.make("c1", "multi_threshold", c1.shape, 1.0, 0.0, levels=2)
    with pytest.raises(MappingError, match="layer 'c1': 'multi_threshold' neurons; a Speck core's neurons are "
                                           "integrate-and-fire with binary spikes"):
        map_network(net, load_target("speck"))


def _xylo_net(n_in=12, hidden=(40, 30), out=6):
    rng = np.random.default_rng(2)
    sizes = (n_in,) + hidden + (out,)
    pops = [Population.make("in", "input", (n_in,))]
    projs = []
    for i, n in enumerate(sizes[1:], 1):
        last = i == len(sizes) - 1
        pops.append(Population.make("readout" if last else f"h{i}", "readout" if last else "lif", (n,), 1.0, 0.0,
                                    **({} if last else {"decay": 0.9})))
        projs.append(Projection(f"w{i}", "dense", pops[i - 1].name, pops[i].name,
                                rng.normal(0.2, 0.4, (n, sizes[i - 1])).astype(np.float32)))
    return Network(pops, projs, *one_population_per_core(pops, projs), {"name": "xylo-net"})


def test_xylo_holds_the_whole_network_on_its_one_core_and_prices_it_by_cycles():
    net = _xylo_net()
    placed = map_network(net, load_target("xylo"))
    assert placed.cores.x.tolist() == [0] * 4 and placed.cores.y.tolist() == [0] * 4
    assert placed.cores.sizes().tolist() == [12, 40, 30, 6]
    frames = (np.random.default_rng(3).random((4, 6, 12)) < 0.3).astype(np.float64)
    res = simulator.run(simulator.prepare(placed), frames, 6)
    assert np.array_equal(res.output, simulator.run(simulator.prepare(net), frames, 6).output)
    target = load_target("xylo")
    labels = [p.name for p in placed.populations]
    cost = hwmodels.estimate(res.counters, simulator.COUNTERS, 4, target, labels, hwmodels.core_memory(placed))
    per = res.counters.sum(axis=(0, 1)) / 4
    c = {k: per[simulator.COUNTERS.index(k)] for k in ("synops", "neuron_updates", "spikes")}
    # dynamic energy: cycles x pJ per cycle, by hand; no packets or hops on one core
    dyn = c["synops"] * 7 * 46.56 + c["neuron_updates"] * 22 * 46.56 + c["spikes"] * 3 * 46.56
    assert cost.dynamic_total_pj == pytest.approx(dyn, rel=1e-3)
    assert cost.latency_ns == pytest.approx(6 * 1e6)  # each step lasts the 1 ms dt (its cycles take far less)
    assert cost.static_pj == pytest.approx(0.217 * 6 * 1e6)


@pytest.mark.parametrize("change, message", [
    (dict(n_in=64), "input 'in': 64 channels; Xylo takes at most 16"),
    (dict(out=10), "layer 'readout': 10 output neurons; Xylo has 8"),
    (dict(hidden=(600, 500)), "the hidden layers hold 1100 neurons"),
    (dict(hidden=(40, 100)), "layer 'h1': neuron 0 reaches 100 neurons; a Xylo hidden neuron reaches at most 64"),
])
def test_xylo_refuses_what_its_core_cannot_hold_naming_the_layer_and_the_rule(change, message):
    with pytest.raises(MappingError, match=message):
        map_network(_xylo_net(**change), load_target("xylo"))


def test_loihi2_maps_graded_spikes_and_cuts_convolutions_into_boxes():
    net = _conv_net()
    c1 = net.populations[1]
    net.populations[1] = Population.make("c1", "multi_threshold", c1.shape, 1.0, 0.0, levels=2)
    target = load_target("loihi2")
    assert target.limits["spike_payload_bits"] == 24
    placed = map_network(net, dict(target.limits, neurons_per_core=512))
    assert placed.cores.box is not None and len(placed.cores) > len(net.populations)
    frames = (np.random.default_rng(1).random((2, 4, 2, 16, 16)) < 0.2).astype(np.float64)
    a = simulator.run(simulator.prepare(net), frames, 4)
    b = simulator.run(simulator.prepare(placed), frames, 4)
    assert np.array_equal(a.output, b.output)


SPEC = """
name = "new targets"
store = "store"
[network]
model = "spikeforge.models:DigitsMLP"
epochs = 2
[data]
name = "digits"
test_samples = 40
[axes]
T = [2]
target = ["loihi2", "speck", "xylo"]
"""


def test_a_sweep_over_the_new_targets_prices_those_that_fit_and_says_why_xylo_does_not(tmp_path):
    (tmp_path / "s.toml").write_text(SPEC)
    out = subprocess.run([sys.executable, "-m", "spikeforge.cli", "sweep", str(tmp_path / "s.toml"), "--workers",
                          "1"], capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr[-2000:]
    rows = {}
    for f in os.listdir(tmp_path / "store" / "points"):
        r = json.loads((tmp_path / "store" / "points" / f).read_text())
        rows[r["target"]] = r
    assert rows["loihi2"]["status"] == "ok" and rows["speck"]["status"] == "ok"
    assert rows["speck"]["cores"] == 4 and rows["loihi2"]["energy_uj"] > rows["speck"]["energy_uj"] > 0
    assert rows["xylo"]["status"] != "ok" and "64 channels; Xylo takes at most 16" in rows["xylo"]["error"]
    summary = (tmp_path / "store" / "summary.md").read_text()
    assert "does not fit the target" in summary and "Xylo takes at most 16" in summary


XYLO_SPEC = """
name = "xylo digits"
store = "store"
[network]
model = "spikeforge.models:DigitsXyloMLP"
epochs = 30
[data]
name = "digits-xylo"
[axes]
T = [8]
target = ["xylo", "loihi2"]
"""


def test_the_xylo_sized_digits_fit_xylo_and_are_priced_by_its_cycles(tmp_path):
    """4x4 digits 0-7 (16 inputs, 8 classes) through a 16-64-32-8 MLP: Xylo holds it on its one core."""
    from spikeforge.data import load_digits_xylo_split

    xtr, ytr, xte, yte = load_digits_xylo_split()
    assert xtr.shape[1:] == (1, 4, 4) and int(ytr.max()) == 7 and len(xte) == int((yte < 8).sum())
    (tmp_path / "s.toml").write_text(XYLO_SPEC)
    out = subprocess.run([sys.executable, "-m", "spikeforge.cli", "sweep", str(tmp_path / "s.toml"), "--workers",
                          "1"], capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = {r["target"]: r for r in (json.loads((tmp_path / "store" / "points" / f).read_text())
                                     for f in os.listdir(tmp_path / "store" / "points"))}
    xylo = rows["xylo"]
    assert xylo["status"] == "ok" and xylo["cores"] == 1 and xylo["accuracy"] > 60
    # each of the 8 steps lasts at least Xylo's 1 ms dt: the idle power runs 8 ms
    assert xylo["latency_us"] >= 8000 and xylo["static_uj"] == pytest.approx(0.217 * 8, rel=1e-6)


def test_a_pooling_folded_into_a_convolution_runs_on_speck_as_its_source_cores_sum_pooling():
    """2x2 average pooling then a 3x3 convolution, folded (the converter's default) into one 6x6 stride-2 kernel: on
    Speck the source core sum-pools and the next core holds the 3x3 kernel, 64 x 16 x 64 = 65,536 entries (the
    6x6 kernel would need 64 x 64 x 64); re-encoding the pooling instead (pooling 'spike') adds a population. A
    6x6 stride-2 kernel that is no folded pooling (other weights) needs the full memory and is refused."""
    import torch
    from torch import nn

    from spikeforge.converter import convert
    from spikeforge.converter.speck import folded_pooling

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 64, 3, 1, 1), nn.ReLU(), nn.AvgPool2d(2), nn.Conv2d(64, 64, 3, 1, 1),
                          nn.ReLU(), nn.Flatten(), nn.Linear(64 * 8 * 8, 4)).eval()
    x = torch.rand(8, 3, 16, 16)
    folded = convert(model, [x])
    conv = next(q for q in folded.projections if q.kind == "conv2d" and q.weight.shape[2] == 6)
    assert tuple(conv.stride) == (2, 2) and folded_pooling(conv) == 2
    layer = next(lay for lay in speck_layers(folded) if lay.name == conv.target)
    assert layer.kernel_memory == 64 * 16 * 64
    placed = map_network(folded, load_target("speck"))
    assert placed.cores.slots() == 4 and len(placed.populations) == 4  # input interface + 3 cores, no pooled map
    assert len(convert(model, [x], pooling="spike").populations) == 5
    conv.weight = conv.weight + np.random.default_rng(0).normal(0, 1e-3, conv.weight.shape).astype(np.float32)
    assert folded_pooling(conv) == 1
    with pytest.raises(MappingError, match=r"kernel memory 262144 entries, the largest Speck core has 65536$"):
        map_network(folded, load_target("speck"))


def test_graded_spikes_wider_than_a_targets_payload_are_refused_naming_the_layer():
    """A multi-threshold neuron of n levels sends the level value 2^k (k < n) as one graded spike: n bits (one more
    with negative levels). Loihi 2's 24 bits hold the file format's largest (7 levels, signed: 8 bits); a target
    whose graded spikes carry 4 bits refuses 7 levels."""
    net = _conv_net()
    c1 = net.populations[1]
    net.populations[1] = Population.make("c1", "multi_threshold", c1.shape, 1.0, 0.0, levels=7, threshold_neg=1.0)
    assert len(map_network(net, load_target("loihi2"), placement="snake").cores) >= 5
    narrow = dict(load_target("loihi2").limits, spike_payload_bits=4)
    with pytest.raises(MappingError, match=r"layer 'c1': its spikes carry 8 bits \(a level value up to 2\^6 and "
                                           r"its sign\); the target's graded spikes carry 4"):
        map_network(net, narrow)


def test_inspect_checks_a_chip_with_its_own_rule_by_that_rule(tmp_path, capsys):
    """inspect --target speck lists each layer's memories against its core; --target xylo says why a network does
    not fit; neither prints per-core limit utilizations (those are for the cut-into-cores targets)."""
    from spikeforge.cli import main

    path = write_network(map_network(_conv_net(), load_target("speck")), str(tmp_path / "conv.h5"))
    assert main(["inspect", path, "--target", "speck"]) == 0
    out = capsys.readouterr().out
    assert "fits speck (speck rule):" in out and "over capacity" not in out
    # c2: 8 -> 8 channels, 3x3 (16 taps): kernel 8 x 16 x 8 = 1,024; neurons 8 x 8 x 8 (6x6 rounded up) = 512
    assert "layer c2, core" in out and "kernel memory 1024 of" in out and "neuron memory 512 of" in out
    assert main(["inspect", path, "--target", "xylo", "--json"]) == 0
    check = json.loads(capsys.readouterr().out)["chip_rule"]
    assert check == {"rule": "xylo", "fits": False, "layers": [],
                     "reason": "input 'in': 512 channels; Xylo takes at most 16"}
