"""The convert pipeline as a library call (spikeforge.converter.pipeline): it runs exactly the steps its settings
name, checks every setting before any work, and is what `spikeforge convert` runs."""
import numpy as np
import pytest

import spikeforge as sf
from spikeforge.converter import convert
from spikeforge.converter.calibration import calibrate
from spikeforge.converter.fixed_point import to_fixed_point
from spikeforge.converter.mapping import map_network
from spikeforge.converter.pipeline import ConvertSettings, convert_pipeline
from spikeforge.errors import UserError
from spikeforge.hwmodels import TargetError, load_target


def _same_network(a, b):
    assert [p.name for p in a.populations] == [p.name for p in b.populations]
    for p, q in zip(a.populations, b.populations):
        assert p.model == q.model
        assert np.array_equal(p.threshold, q.threshold) and np.array_equal(p.v_init, q.v_init)
    for p, q in zip(a.projections, b.projections):
        assert (p.kind, p.source, p.target) == (q.kind, q.source, q.target)
        assert (p.weight is None and q.weight is None) or np.array_equal(p.weight, q.weight)
    for col in ("core_id", "chip", "x", "y", "population", "neuron_start", "neuron_stop"):
        assert np.array_equal(getattr(a.cores, col), getattr(b.cores, col)), col


def test_pipeline_equals_the_steps_it_names(trained_mlp, digits):
    x = digits[0][:256]
    settings = ConvertSettings(norm="max", calibrate="cc", T=4, calib_samples=64, target="loihi", fixed_point=True,
                               placement="snake")
    stages = []
    net = convert_pipeline(trained_mlp, x.numpy(), settings, progress=lambda stage, done, total, note:
                           stages.append((stage, done, total)))
    loihi = load_target("loihi")
    by_hand = convert(trained_mlp, [x[:128], x[128:]], norm="max")
    by_hand = calibrate(by_hand, trained_mlp, x[:64], 4, mode="cc")
    by_hand = map_network(to_fixed_point(by_hand, 8, 24), loihi, "snake")
    _same_network(net, by_hand)
    assert net.attrs["calibration"] == "cc T=4 N=64"
    assert ("calibration batches", 2, 2) in stages
    assert ("calibrating (cc, T=4)", 2, 2) in stages  # two spiking layers in the MLP
    assert (net.attrs["numeric_mode"], net.attrs["weight_bits"], net.attrs["membrane_bits"]) == ("fixed", 8, 24)


def test_pipeline_defaults_are_plain_conversion(trained_mlp, digits):
    x = digits[0][:200]
    _same_network(convert_pipeline(trained_mlp, x), convert(trained_mlp, [x[:128], x[128:]], norm="percentile",
                                                            percentile=99.99))


@pytest.mark.parametrize("changes, words", [
    ({"neuron": "lif"}, "neuron must be one of if, group, multi_threshold"),
    ({"calibrate": "fc"}, "give T"),
    ({"qc_epochs": 2}, "give T"),
    ({"fixed_point": True}, "give target"),
    ({"chips": 4}, "chips=4 is the size of the system"),
    ({"chips": -1, "target": "loihi"}, "chips must be an integer >= 0"),
    ({"tau": 0}, "tau must be an integer >= 1"),
    ({"T": 2.5}, "T must be an integer >= 1"),
    ({"percentile": 101.0}, "percentile must be in (0, 100]"),
    ({"calib_lr": float("nan")}, "calib_lr must be a finite number"),
])
def test_bad_settings_are_named_before_any_work(changes, words):
    with pytest.raises(UserError, match=words.replace("(", r"\(").replace(")", r"\)")):
        ConvertSettings(**changes)


def test_unknown_target_and_missing_labels_fail_before_conversion(trained_mlp, digits):
    x = digits[0][:64]
    calls = []
    with pytest.raises(TargetError, match="unknown target 'lohi'"):
        convert_pipeline(trained_mlp, x, ConvertSettings(target="lohi"), progress=lambda *a: calls.append(a))
    with pytest.raises(UserError, match="give y, the labels of x"):
        convert_pipeline(trained_mlp, x, ConvertSettings(qc_epochs=1, T=2), progress=lambda *a: calls.append(a))
    with pytest.raises(UserError, match="labels must be a 1-d integer array"):
        convert_pipeline(trained_mlp, x, ConvertSettings(qc_epochs=1, T=2), y=np.zeros(64) + 0.5)
    assert calls == []
    assert sf.ConvertSettings is ConvertSettings and sf.convert_pipeline is convert_pipeline


def test_ops_per_core_caps_a_split_layers_relays_measured_after_the_split():
    """A readout of 4,500 inputs is split on Loihi (4,096 axons per core) into partial-sum relays: the work is
    measured on the split network, so the relays (which do the partial sums) are cut by the budget: on the
    calibration samples each relay core's mean synaptic operations per step stay within it."""
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(10, 4500), torch.nn.ReLU(), torch.nn.Linear(4500, 8)).eval()
    x = torch.rand(8, 10)
    plain = convert_pipeline(model, x, ConvertSettings(norm="max", target="loihi", T=4))
    busy = convert_pipeline(model, x, ConvertSettings(norm="max", target="loihi", T=4, ops_per_core=1000))
    relays = [p.name for p in busy.populations if p.name.endswith(".part")]
    assert relays, [p.name for p in busy.populations]

    def cores_and_busiest(net):
        res = sf.run(net, x.numpy(), 4)
        per_sample = res.counter("synops") / len(x)
        idx = [p.name for p in net.populations].index(relays[0])
        mine = np.flatnonzero(net.cores.population == idx)
        return len(mine), per_sample[:, mine].mean(0).max()

    (n0, most0), (n1, most1) = cores_and_busiest(plain), cores_and_busiest(busy)
    assert most0 > 1000 >= most1 and n1 > n0, (n0, most0, n1, most1)
    np.testing.assert_array_equal(sf.run(plain, x.numpy(), 4).output, sf.run(busy, x.numpy(), 4).output)
    with pytest.raises(UserError, match="a work budget per core applies to targets placed on cores; 'speck'"):
        convert_pipeline(model, x, ConvertSettings(norm="max", target="speck", ops_per_core=1000))
    for key in ("ops_per_core", "ns_per_core"):
        for bad in (True, "a", float("inf"), -1.0):
            with pytest.raises(UserError, match=f"{key} must be a finite number >= 0"):
                ConvertSettings(target="loihi", **{key: bad})
        with pytest.raises(UserError, match=f"{key} cuts the cores of a target's mapping by work: give target"):
            ConvertSettings(**{key: 10})
    with pytest.raises(UserError, match="give one work budget per core: ops_per_core .* or ns_per_core"):
        ConvertSettings(target="loihi", ops_per_core=10, ns_per_core=10)


def test_ns_per_core_caps_each_cores_compute_time_as_the_target_prices_it():
    """The split readout above, cut by core time instead: cut by ns_per_core at half the uncut relays' busiest core
    time per step (hwmodels.estimate's per-core compute time, less the packets it receives: those do not shrink
    with its neurons), the relays take more cores, every one of which computes within the budget on the
    calibration samples (mapping.map_to_work re-cuts a layer whose busiest core passes it); the outputs stay the
    same."""
    import torch

    from spikeforge.hwmodels import estimate, load_target

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(10, 4500), torch.nn.ReLU(), torch.nn.Linear(4500, 8)).eval()
    x = torch.rand(8, 10)
    T, loihi = 4, load_target("loihi")

    def relay_cores_ns(net):
        res = sf.run(net, x.numpy(), T)
        names = list(sf.COUNTERS)
        received = res.counters[:, :, names.index("packets_in")].sum(0) / len(x)
        assert received.max() > 0
        rep = estimate(res.counters, sf.COUNTERS, len(x), loihi, network=net)
        # per step: the updates of every chip step once (rep.steps of them), the events over the T steps
        updates = res.counters[:, :, names.index("neuron_updates")].sum(0) / (len(x) * T) * \
            loihi.time_ns["neuron_updates"]
        ns = (rep.core_compute_ns - received * loihi.time_ns["packets_in"] - updates * rep.steps) / T + updates
        relay = [i for i, p in enumerate(net.populations) if p.name.endswith(".part")]
        mine = np.flatnonzero(np.isin(net.cores.population, relay))
        return len(mine), ns[mine].max(), ns[mine].mean(), res.output

    n0, most0, _, out0 = relay_cores_ns(convert_pipeline(model, x, ConvertSettings(norm="max", target="loihi",
                                                                                  T=T)))
    budget = most0 / 2
    n1, most1, mean1, out1 = relay_cores_ns(convert_pipeline(
        model, x, ConvertSettings(norm="max", target="loihi", T=T, ns_per_core=budget)))
    assert mean1 <= most1 <= budget < most0 and n1 > n0, (n0, most0, n1, most1, mean1)
    np.testing.assert_array_equal(out0, out1)
    with pytest.raises(UserError, match="target 'truenorth' prices no core time"):
        convert_pipeline(model, x, ConvertSettings(norm="max", target="truenorth", T=T, ns_per_core=1000))
