"""lava-dl netx import (interop/netx_import.py, `spikeforge import-lava`): validated against what Lava recorded.

lava-dl 0.6.0's wheel ships netx files with the spikes, currents and membranes Lava computed for them (its own
test data, `tests/lava/lib/dl/netx/gts`); `make install` downloads the wheel (it does not install on this Python)
into .cache/lava-dl, and these tests read the files out of it. None of spikeforge's constants came from them.
The hand-made files below (written with h5py in netx's layout) check the refusals. Engine == torch backend ==
reference on every run (conftest)."""
import os
import re
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest

from spikeforge import simulator
from spikeforge.cli import main
from spikeforge.interop.netx_import import NetxImportError, NetxImportWarning, from_netx

ROOT = Path(__file__).resolve().parents[1]
WHEEL = Path(os.environ.get("SPIKEFORGE_LAVA_DL_WHEEL", ROOT / ".cache" / "lava-dl" / "lava_dl-0.6.0-py3-none-any.whl"))
GTS = "tests/lava/lib/dl/netx/gts/"


@pytest.fixture(scope="module")
def lava_gts(tmp_path_factory):
    """lava-dl's netx ground-truth folders (pilotnet_lif, pilotnet_sdnn, ntidigits), extracted from its wheel."""
    if not WHEEL.exists():
        pytest.skip(f"{WHEEL} missing: `make install` downloads lava-dl's wheel (its netx files and Lava's outputs)")
    out = tmp_path_factory.mktemp("lava")
    with zipfile.ZipFile(WHEEL) as z:
        for name in z.namelist():
            if name.startswith(tuple(GTS + k for k in ("pilotnet_lif/", "ntidigits/", "pilotnet_sdnn/"))):
                z.extract(name, out)
    return out / GTS


def _gt(folder, name):
    a = np.load(folder / f"{name}.npy")
    return a.transpose(3, 2, 1, 0) if a.ndim == 4 else a.T  # Lava's (x, y, c, t) -> (t, c, y, x); (n, t) -> (t, n)


def test_pilotnet_lif_spikes_and_membranes_equal_lavas_in_every_layer_and_step(lava_gts):
    """lava-dl's PilotNet (LIF): input layer, 5 convolutions, 3 dense layers, over the 24 steps Lava recorded
    (1,118,521 spikes), with each layer's state restarting every 17 steps one step later per layer, as Lava's
    recording does (each layer's membrane is u + bias, no decayed memory, at steps k and k + 17). Spikes equal in
    every layer at every step; every layer's membranes (2,578,356 neuron-steps) equal Lava's wherever the neuron did
    not fire (Lava's recording shows a firing neuron's membrane as 128)."""
    folder = lava_gts / "pilotnet_lif"
    with h5py.File(folder / "network.net") as h5, \
            pytest.warns(NetxImportWarning, match="layer/10: the output layer integrates without decay"):
        net = from_netx(h5, "pilotnet", reset_interval=17)
    x = np.load(folder / "image.npy").transpose(2, 1, 0)[None].astype(np.float64)  # bias_mant, (c, y, x)
    layers = ["input0", "conv1", "conv2", "conv3", "conv4", "conv5", "dense7", "dense8", "dense9"]
    truth = ["input"] + [f"conv-{k}" for k in range(5)] + [f"fc-{k}" for k in range(3)]
    T = 24
    sizes = [net.populations[net.index_of(name)].size for name in layers[1:]]
    traced = [(name, i) for name, n in zip(layers[1:], sizes) for i in range(n)]
    res = simulator.run(net, x, T, record=layers, trace=traced)
    for name, gt in zip(layers, truth):
        np.testing.assert_array_equal(res.spikes[name][0].astype(bool), _gt(folder, gt), err_msg=name)
    start = np.concatenate([[0], np.cumsum(sizes)])
    for k, (name, gt) in enumerate(zip(layers[1:], truth[1:])):
        ours = res.traces[0, :, start[k]:start[k + 1]]
        quiet = ~_gt(folder, gt).reshape(T, -1)
        np.testing.assert_array_equal(ours[quiet], _gt(folder, f"{gt}-v").reshape(T, -1)[quiet], err_msg=name)


def test_pilotnet_sdnn_sigma_delta_layers_equal_lavas_sums_and_output(lava_gts):
    """lava-dl's PilotNet SDNN (a Delta input layer, 4 convs and 3 dense SigmaDelta layers with graded payloads, a
    Sigma output), the input held for every step as Lava's looping source holds it: the output layer's σ over the 9
    steps Lava recorded and the first two conv layers' σ of every neuron over the 20 steps recorded (which the
    input layer's payloads feed) equal Lava's; the torch reference gives the same output."""
    import torch

    from spikeforge.converter.spiking import SpikingNetwork

    folder = lava_gts / "pilotnet_sdnn"
    with h5py.File(folder / "network.net") as h5:
        net = from_netx(h5, "pilotnet-sdnn")
    assert [p.model for p in net.populations].count("sigma_delta") == 8 and net.populations[-1].model == "readout"
    x = np.load(folder / "input.npy")[..., 0].transpose(2, 1, 0)[None].astype(np.float64)  # (c, y, x)
    sizes = {p.name: p.size for p in net.populations}
    traced = [("dense9", 0)] + [(name, i) for name in ("conv1", "conv2") for i in range(sizes[name])]
    res = simulator.run(net, x, 20, trace=traced)
    np.testing.assert_array_equal(res.traces[0, :9, 0], np.load(folder / "output.npy")[0])
    start = 1
    for name, gt in (("conv1", "sigma1"), ("conv2", "sigma2")):
        ours = res.traces[0, :, start:start + sizes[name]]
        start += sizes[name]
        np.testing.assert_array_equal(ours, _gt(folder, gt).reshape(20, -1), err_msg=name)
    out, _ = SpikingNetwork(net)(torch.as_tensor(x), 9)
    np.testing.assert_array_equal(out.numpy().reshape(-1) * 9, np.load(folder / "output.npy")[0, -1:])


def test_ntidigits_axonal_delays_give_lavas_output_spikes(lava_gts, capsys):
    """lava-dl's NTIDIGITS network (spike input, 3 dense LOIHI layers, per-neuron axonal delays up to 62 steps; its
    last layer, average, netx does not build: --layers 5): 22,572 output spikes over 3,000 steps equal Lava's,
    which records them one step later (its input adapter's step)."""
    folder = lava_gts / "ntidigits"
    out = folder.parent / "nti.h5"
    assert main(["import-lava", str(folder / "ntidigits.net"), str(out), "--layers", "5"]) == 0
    assert "its samples: 0/1 spike frames (N, T, *(64,))" in capsys.readouterr().out
    net = simulator.load_network(out)
    with h5py.File(folder / "ntidigits.net") as h5:  # one projection per distinct delay d, delivering at d + 1
        delays = np.unique(h5["layer/3/delay"][()].astype(int))
    assert sorted(q.delay for q in net.projections if q.target == "dense3") == list(delays + 1)
    spikes = np.load(folder / "input.npy")  # (64, T)
    gt = np.load(folder / "output.npy")  # (242, T)
    T = spikes.shape[1]
    res = simulator.run(net, spikes.T[None], T, record=["dense4"])
    ours = res.spikes["dense4"][0].T
    assert ours.sum() == gt.sum() == 22_572
    np.testing.assert_array_equal(ours[:, :-1], gt[:, 1:])


def _write(path, layers):
    """A netx file of {type, shape, ..., neuron: {...}} dicts, in lava-dl's layout (netx_export.write_layers)."""
    from spikeforge.interop.netx_export import write_layers

    return write_layers(path, layers)


CUBA = {"type": "CUBA", "iDecay": 4096, "vDecay": 1024, "vThMant": 25, "refDelay": 1, "gradedSpike": False}


def _dense(w, **kw):
    return dict({"type": "dense", "shape": [w.shape[0]], "inFeatures": w.shape[1], "outFeatures": w.shape[0],
                 "weight": w.astype(np.float32), "neuron": CUBA}, **kw)


def test_a_dense_network_by_hand_fires_as_lavas_lif_and_reads_out_its_spike_counts(tmp_path):
    """input (2, CUBA, no current memory) -> dense [[10, 0], [0, 2]] -> readout of its spike counts. The input layer
    takes the samples as its bias: bias_mant 30 -> 1920 per step > 1600 fires every step; 10 -> 640, 1120, 1480,
    1750 fires every 4th step. Lava's dense synapse delivers a step later: neuron 0 gets 10 x 64 = 640 from step 1,
    neuron 1 2 x 64 = 128 at steps 4, 8, ..."""
    path = _write(tmp_path / "d.net", [{"type": "input", "shape": [2], "neuron": CUBA},
                                       _dense(np.array([[10, 0], [0, 2]]))])
    with h5py.File(path) as h5:
        net = from_netx(h5)
    assert [p.model for p in net.populations] == ["input", "cuba", "cuba", "readout"]
    res = simulator.run(net, np.array([[30.0, 10.0]]), 8, record=["input0", "dense1"], trace=[("dense1", 0)])
    np.testing.assert_array_equal(res.spikes["input0"][0], [[1, 0], [1, 0], [1, 0], [1, 1]] * 2)
    np.testing.assert_array_equal(res.traces[0, :, 0], [0, 640, 1120, 1480, 0, 640, 1120, 1480])
    np.testing.assert_array_equal(res.spikes["dense1"][0, :, 0], [0, 0, 0, 0, 1, 0, 0, 0])
    np.testing.assert_allclose(res.output[0], [1 / 8, 0.0])


@pytest.mark.parametrize("layers, message", [
    ([{"type": "input", "shape": [4, 4, 4]}, {"type": "average", "shape": [4, 1, 1]}],
     "layer/1: average layers are not imported (lava-dl's netx does not build them either)"),
    ([{"type": "input", "shape": [2]}, _dense(np.ones((2, 2)), neuron={"type": "RF_PHASE", "vThMant": 1})],
     "layer/1/neuron: RF_PHASE resonate-and-fire neurons are not imported"),
    ([{"type": "input", "shape": [2]}, _dense(-np.ones((2, 2)))],
     "layer/1: every weight is <= 0; netx and Lava's Dense then disagree on the sign mode"),
    ([{"type": "input", "shape": [3]}, _dense(np.ones((2, 2)))],
     "layer/1: weight of shape (2, 2), expected (2, 3) for 3 inputs and 2 neurons"),
    ([{"type": "dense", "shape": [2]}], "layer/0: the first layer is 'dense', not an input layer"),
    ([{"type": "input", "shape": [2]}, _dense(np.ones((2, 2)), neuron=dict(CUBA, vDecay=5000))],
     "layer/1/neuron/vDecay: 5000 outside [0, 4096], what Lava's LIF takes"),
    # malformed layers (found in review: they crashed or named the wrong thing)
    ([{"type": "input", "shape": [1, 4, 4]},
      {"type": "conv", "shape": [1, 2, 2], "kernelSize": [3, 3], "stride": [0, 0], "padding": [0, 0],
       "dilation": [1, 1], "groups": 1, "weight": np.ones((1, 1, 3, 3)), "neuron": CUBA}],
     "layer/1: kernel (3, 3), stride (0, 0) and padding (0, 0) must be positive"),
    ([{"type": "input", "shape": [2]}, _dense(np.ones((2, 2)), bias=np.ones(3))],
     "layer/1: bias has 3 values for a layer of shape (2,)"),
    ([{"type": "input", "shape": [4]}, dict(_dense(np.ones((2, 4))), weight=np.ones(7, np.float32))],
     "layer/1: weight of shape (7,), expected (2, 4)"),
    ([{"type": "input", "shape": [2]}, _dense(np.full((2, 2), 300.0))],
     "layer/1: every weight is >= 0 and some exceed 255 (300)"),
])
def test_what_lava_would_compute_otherwise_or_malformed_layers_are_refused_naming_the_layer(tmp_path, layers,
                                                                                            message):
    path = _write(tmp_path / "bad.net", layers)
    with h5py.File(path) as h5, pytest.raises(NetxImportError) as err:
        from_netx(h5)
    assert message in str(err.value)


def test_a_conv_layer_whose_sum_can_wrap_at_24_bits_is_refused_and_graded_spikes_warn(tmp_path):
    big = np.full((1, 1, 3, 3), 254.0)
    layer = {"type": "conv", "shape": [1, 2, 2], "inChannels": 1, "outChannels": 1, "kernelSize": [3, 3],
             "stride": [1, 1], "padding": [0, 0], "dilation": [1, 1], "groups": 1, "neuron": CUBA}
    ok = _write(tmp_path / "ok.net", [{"type": "input", "shape": [1, 4, 4], "neuron": dict(CUBA, gradedSpike=True)},
                                      dict(layer, weight=big)])
    with h5py.File(ok) as h5, pytest.warns(NetxImportWarning, match="layer/0: gradedSpike is set"):
        net = from_netx(h5)
    assert net.projections[1].kind == "conv2d" and net.projections[1].weight.max() == 254 * 64
    wide = dict(layer, inChannels=40000, weight=np.full((1, 40000, 3, 3), 254.0))
    bad = _write(tmp_path / "bad.net", [{"type": "input", "shape": [40000, 4, 4]}, wide])
    with h5py.File(bad) as h5, pytest.raises(NetxImportError, match=r"layer/1: a neuron's summed input can reach "
                                                                    r"9\.144e\+07, beyond the 24-bit range"):
        from_netx(h5)


def test_import_lava_from_the_command_line_and_its_refusals(tmp_path, capsys):
    path = _write(tmp_path / "d.net", [{"type": "input", "shape": [2], "neuron": CUBA},
                                       _dense(np.array([[10, 0], [0, 2]]))])
    assert main(["import-lava", str(path), str(tmp_path / "d.h5"), "--reset-interval", "8", "--target",
                 "loihi2"]) == 0
    assert "its samples: the input layer's bias_mant integers, shaped (2,)" in capsys.readouterr().out
    net = simulator.load_network(tmp_path / "d.h5")
    assert [(p.reset_every, p.reset_phase) for p in net.populations[1:]] == [(8, 0), (8, 1), (8, 1)]
    assert str(net.attrs["mapping"]).startswith("loihi2:")
    assert main(["import-lava", str(path), str(tmp_path / "e.h5"), "--reset-offset", "2"]) == 2
    assert "--reset-offset is the phase of --reset-interval" in capsys.readouterr().err
    bad = _write(tmp_path / "p.net", [{"type": "input", "shape": [4, 4, 4]}, {"type": "average", "shape": [4, 1, 1]}])
    assert main(["import-lava", str(bad), str(tmp_path / "p.h5")]) == 2
    err = capsys.readouterr().err
    assert f"{bad}: layer/1: average layers are not imported" in err and "Traceback" not in err
    assert not (tmp_path / "p.h5").exists()


def test_the_torch_reference_runs_loihi_arithmetic_and_restarts_as_the_engine(tmp_path):
    """converter.spiking.SpikingNetwork (the float64 reference) on an imported net with a conv layer, per-neuron
    delays and state restarts every 5 steps: the same spikes and readout as the engine."""
    import torch

    from spikeforge.converter.spiking import SpikingNetwork

    conv = {"type": "conv", "shape": [2, 3, 3], "inChannels": 1, "outChannels": 2, "kernelSize": [2, 2],
            "stride": [1, 1], "padding": [0, 0], "dilation": [1, 1], "groups": 1, "bias": np.array([3.0, -2.0]),
            "weight": np.array([[[[14, -6], [8, 10]]], [[[-4, 12], [6, 2]]]], np.float32),
            "neuron": dict(CUBA, iDecay=1024, vDecay=512)}
    w = np.random.default_rng(0).integers(-40, 60, (4, 18)).astype(np.float32)
    path = _write(tmp_path / "c.net", [{"type": "input", "shape": [1, 4, 4], "neuron": CUBA}, conv,
                                       {"type": "flatten", "shape": [18, 1, 1]},
                                       _dense(w, delay=np.array([0.0, 2.0, 2.0, 5.0], np.float32))])
    with h5py.File(path) as h5:
        net = from_netx(h5, reset_interval=5)
    x = np.random.default_rng(1).integers(0, 50, (3, 1, 4, 4)).astype(np.float64)
    T = 16
    res = simulator.run(net, x, T, record=["conv1", "dense3"])
    assert res.spikes["conv1"].sum() > 0 and res.spikes["dense3"].sum() > 0
    out, rec = SpikingNetwork(net)(torch.as_tensor(x), T, record_spikes=True)
    for name in ("conv1", "dense3"):
        np.testing.assert_array_equal(rec.spikes[name].numpy().swapaxes(0, 1), res.spikes[name], err_msg=name)
    np.testing.assert_array_equal(out.numpy().reshape(res.output.shape), res.output)


def _layer_values(path):
    """{layer index: {key: array}} of a netx file: the datasets netx reads (neuron groups flattened as neuron/KEY)."""
    out = {}
    with h5py.File(path) as f:
        for i in range(len(f["layer"])):
            g, vals = f[f"layer/{i}"], {}
            for key in g:
                if key == "neuron":
                    vals.update({f"neuron/{k}": g["neuron"][k][()] for k in ("iDecay", "vDecay", "vThMant")
                                 if k in g["neuron"]})
                elif key not in ("weight", "bias") or i > 0:  # the input layer's transform: never applied by netx
                    vals[key] = g[key][()]
            out[i] = vals
    return out


def test_export_lava_writes_back_the_file_lava_dl_wrote(lava_gts, tmp_path, capsys):
    """PilotNet and NTIDIGITS imported, exported, compared with lava-dl's own files: every weight, bias, decay,
    threshold, shape, kernel geometry and delay netx reads is the same; the restart schedule is printed for netx's
    Network; importing the export again simulates spike for spike as the first import."""
    for folder, name, args, again in (("pilotnet_lif", "network.net", ["--reset-interval", "17"], ["--reset-interval",
                                                                                                  "17"]),
                                      ("ntidigits", "ntidigits.net", ["--layers", "5"], [])):
        src = lava_gts / folder / name
        assert main(["import-lava", str(src), str(tmp_path / f"{folder}.h5"), *args]) == 0
        capsys.readouterr()
        assert main(["export-lava", str(tmp_path / f"{folder}.h5"), str(tmp_path / f"{folder}.net")]) == 0
        said = capsys.readouterr().out
        assert ("reset_interval=17, reset_offset=0" in said) == (folder == "pilotnet_lif")
        # flatten layers carry nothing netx computes with (and a flat input needs none): compared without them
        mine, theirs = ([v for v in _layer_values(p).values() if v["type"][0] != b"flatten"]
                        for p in (tmp_path / f"{folder}.net", src))
        assert len(mine) == len(theirs) - (folder == "ntidigits")  # its average layer is not imported (--layers 5)
        for i in range(len(mine)):
            for key, value in mine[i].items():
                if key not in theirs[i]:  # lava-dl writes a bias only with a norm: none is 0
                    assert key == "bias" and not np.any(value), (folder, i, key)
                    continue
                expected = theirs[i][key]
                if key == "weight" and np.ndim(expected) == 5:  # an older file's trailing time axis
                    expected = expected[..., 0]
                if key == "delay":
                    expected = np.clip(np.trunc(expected), 0, 62)
                if key == "shape" and len(mine[i]["shape"]) != 3:  # flat layers: lava-dl writes (N,), (N, 1, 1)
                    expected = [np.prod(expected)]  # and (1, 1, N) alike
                np.testing.assert_array_equal(np.asarray(value).reshape(-1), np.asarray(expected).reshape(-1),
                                              err_msg=f"{folder} layer {i} {key}")
        assert main(["import-lava", str(tmp_path / f"{folder}.net"), str(tmp_path / f"{folder}2.h5"), *again]) == 0
        a, b = simulator.load_network(tmp_path / f"{folder}.h5"), simulator.load_network(tmp_path / f"{folder}2.h5")
        x = np.random.default_rng(0).integers(0, 60, (1, *a.input.shape)).astype(np.float64)
        np.testing.assert_array_equal(simulator.run(a, x, 8).output, simulator.run(b, x, 8).output)


def test_export_lava_refuses_what_netx_cannot_describe_naming_it(tmp_path, trained_mlp, digits, capsys):
    """A converted network (IF neurons) and a float cuba network are refused, naming the population."""
    from spikeforge.converter import convert, write_network

    write_network(convert(trained_mlp, [digits[0][:64]]), tmp_path / "if.h5")
    assert main(["export-lava", str(tmp_path / "if.h5"), str(tmp_path / "if.net")]) == 2
    err = capsys.readouterr().err
    assert "population 'fc1_act': a 'if' population; netx describes cuba neurons in Loihi's arithmetic" in err or \
        "a 'if' population; netx describes cuba neurons in Loihi's arithmetic" in err, err
    assert not (tmp_path / "if.net").exists()


def test_export_lava_writes_pilotnet_sdnn_back_value_for_value(lava_gts, tmp_path, capsys):
    """PilotNet SDNN imported and exported: every weight, bias, threshold, shape and kernel geometry lava-dl wrote,
    the Sigma output marked; imported again it computes the same output."""
    src = lava_gts / "pilotnet_sdnn" / "network.net"
    assert main(["import-lava", str(src), str(tmp_path / "a.h5")]) == 0
    assert main(["export-lava", str(tmp_path / "a.h5"), str(tmp_path / "a.net")]) == 0
    assert "reset_interval" not in capsys.readouterr().out
    mine, theirs = ([v for v in _layer_values(p).values() if v["type"][0] != b"flatten"]
                    for p in (tmp_path / "a.net", src))
    assert len(mine) == len(theirs)
    for i in range(len(mine)):
        for key, value in mine[i].items():
            expected = theirs[i].get(key)
            if key == "shape" and len(value) != 3:
                expected = [np.prod(expected)]
            if key == "bias" and expected is None:
                assert not np.any(value)
                continue
            if key == "neuron/vThMant" and i == len(mine) - 1:  # Lava's Sigma output has no threshold
                continue
            np.testing.assert_array_equal(np.asarray(value).reshape(-1), np.asarray(expected).reshape(-1),
                                          err_msg=f"layer {i} {key}")
    with h5py.File(tmp_path / "a.net") as f:
        assert bool(f[f"layer/{len(f['layer']) - 1}/neuron/sigma_output"][()])
    assert main(["import-lava", str(tmp_path / "a.net"), str(tmp_path / "b.h5")]) == 0
    a, b = simulator.load_network(tmp_path / "a.h5"), simulator.load_network(tmp_path / "b.h5")
    x = np.load(lava_gts / "pilotnet_sdnn" / "input.npy")[..., 0].transpose(2, 1, 0)[None].astype(np.float64)
    np.testing.assert_array_equal(simulator.run(a, x, 6).output, simulator.run(b, x, 6).output)


def _cuba_net(pops, projs):
    from spikeforge.converter.mapping import one_population_per_core
    from spikeforge.simulator import Network

    cores, edges = one_population_per_core(pops, projs)
    return Network(pops, projs, cores, edges, {})


def _loihi(name, n, **kw):
    from spikeforge.simulator import Population

    return Population.make(name, "cuba", (n,), 1600.0, 0.0, 0.0, reset="zero", decay=0.75, syn_decay=0.0,
                           spike_value=kw.pop("spike_value", "unit"), threshold_test="gt", arithmetic="loihi", **kw)


def test_export_lava_refuses_networks_netx_would_compute_otherwise(tmp_path):
    """Found in review (each wrote a file that computed another network): a layer that skips the one before it,
    spikes that carry θ, a hidden sigma-delta layer whose activation is its input, a per-neuron delay of 0 steps,
    single-sign weights above 255."""
    from spikeforge.interop.netx_export import NetxExportError, export_netx
    from spikeforge.simulator import Population, Projection

    w = np.full((2, 2), 64.0 * 10, np.float32)
    inp = Population.make("input", "input", (2,))

    def chain(*pops, projs):
        return _cuba_net([inp, *pops, Population.make("out", "readout", (2,))],
                         projs + [Projection("o", "identity", pops[-1].name, "out")])

    skip = chain(_loihi("a", 2), _loihi("b", 2), projs=[Projection("pa", "dense", "input", "a", w, delay=1),
                                                         Projection("pb", "dense", "input", "b", w, delay=1)])
    theta = chain(_loihi("a", 2, spike_value="threshold"), projs=[Projection("pa", "dense", "input", "a", w,
                                                                             delay=1)])
    sd = Population.make("s", "sigma_delta", (2,), 0.0, reset="none", delta_input=True, payload_shift=6)
    hidden = chain(_loihi("a", 2), sd, projs=[Projection("pa", "dense", "input", "a", w, delay=1),
                                              Projection("ps", "dense", "a", "s", w / 64, delay=1)])
    zero = chain(_loihi("a", 2), _loihi("b", 2), projs=[
        Projection("pa", "dense", "input", "a", w, delay=1),
        Projection("pb", "sparse", "a", "b", np.full(2, 640.0, np.float32), indptr=np.arange(3),
                   indices=np.arange(2), delay=0)])
    big = chain(_loihi("a", 2), projs=[Projection("pa", "dense", "input", "a", w * 30, delay=1)])
    for net, message in ((skip, "population 'b': fed by ['input']; a netx layer reads the one before it ('a')"),
                         (theta, "population 'a': its spikes carry θ"),
                         (hidden, "population 's': a sigma-delta layer whose activation is its input"),
                         (zero, "projection 'pb': netx's per-neuron delays need each neuron reached at one delay"),
                         (big, "every weight is >= 0 and some exceed 255 (300)")):
        with pytest.raises(NetxExportError, match=re.escape(message)):
            export_netx(net, tmp_path / "x.net")
    assert not (tmp_path / "x.net").exists()


def test_a_spike_input_network_without_delays_round_trips(tmp_path):
    """import-lava of a netx file whose input has no neuron group (spikes) and whose first dense layer has no delays
    gives a dense projection from the input, which export-lava writes back (it was taken for netx's input layer)."""
    from spikeforge.interop.netx_export import export_netx

    path = _write(tmp_path / "s.net", [{"type": "input", "shape": [3]}, _dense(np.array([[10, 0, 4], [0, 2, 8]]))])
    with h5py.File(path) as h5:
        net = from_netx(h5)
    export_netx(net, tmp_path / "back.net")
    with h5py.File(tmp_path / "back.net") as h5:
        back = from_netx(h5)
    x = (np.random.default_rng(0).random((2, 12, 3)) < 0.5).astype(np.float64)
    np.testing.assert_array_equal(simulator.run(net, x, 12).output, simulator.run(back, x, 12).output)


def test_a_conv_layer_with_a_one_by_one_output_imports(tmp_path):
    path = _write(tmp_path / "c.net", [{"type": "input", "shape": [1, 3, 3], "neuron": CUBA},
                                       {"type": "conv", "shape": [2, 1, 1], "kernelSize": [3, 3], "stride": [1, 1],
                                        "padding": [0, 0], "dilation": [1, 1], "groups": 1,
                                        "weight": np.full((2, 1, 3, 3), 8.0), "neuron": CUBA}])
    with h5py.File(path) as h5:
        net = from_netx(h5)
    assert net.populations[2].shape == (2, 1, 1) and net.projections[1].kind == "conv2d"


def test_a_pool_layer_imports_as_slayers_sum_pooling_through_its_window(tmp_path):
    """netx builds no pool layer; slayer sums each channel's window through the stored weight (x 64 in Lava's units):
    a depthwise conv. A 2x2 window of weight 8 over input spikes: the pooled neuron's current is 8·64 per input
    spike in its window, checked against the same sum by hand; a warning, at the caller's line, says netx would not
    build it."""
    pool = {"type": "pool", "shape": [2, 2, 2], "kernelSize": [2, 2], "stride": [2, 2], "padding": [0, 0],
            "dilation": [1, 1], "weight": np.full((1, 1, 2, 2), 8.0), "neuron": dict(CUBA, vThMant=100000)}
    path = _write(tmp_path / "p.net", [{"type": "input", "shape": [2, 4, 4]}, pool])
    with h5py.File(path) as h5, pytest.warns(NetxImportWarning, match="netx does not build pool layers") as seen:
        net = from_netx(h5)
    assert seen[0].filename == __file__  # the warning names the caller's line, not the importer's
    q = net.projections[0]
    assert (q.kind, q.groups, q.weight.shape, float(q.weight.max())) == ("conv2d", 2, (2, 1, 2, 2), 512.0)
    x = np.zeros((1, 3, 2, 4, 4))
    x[0, 0, 1, 2:, 2:] = 1  # four spikes into channel 1's bottom-right window, at step 0
    res = simulator.run(net, x, 3, trace=[("pool1", 7)])  # (channel 1, row 1, column 1)
    np.testing.assert_array_equal(res.traces[0, :, 0], [0, 4 * 8 * 64, 4 * 8 * 64 * 3 // 4])
