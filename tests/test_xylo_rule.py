"""Xylo Audio 2 mapping rule (spikeforge.converter.xylo): what a network uses of the chip's one core, and each
rule's refusal naming the layer and the rule."""
import numpy as np
import pytest

from spikeforge.converter.mapping import MappingError
from spikeforge.converter.xylo import check_xylo
from spikeforge.simulator.network import Network, Population, Projection


def _mlp(sizes, recurrent=None, model="lif"):
    pops = [Population.make("in", "input", (sizes[0],))]
    projs = []
    for i, n in enumerate(sizes[1:], 1):
        last = i == len(sizes) - 1
        pops.append(Population.make("out" if last else f"h{i}", "readout" if last else model, (n,), 1.0, 0.0))
        projs.append(Projection(f"w{i}", "dense", pops[i - 1].name, pops[i].name,
                                np.ones((n, sizes[i - 1]), np.float32)))
    if recurrent is not None:
        projs.append(Projection("rec", "sparse", "h1", "h1", *recurrent))
    return Network(pops, projs, None, None, {})


def test_a_keyword_spotting_size_network_fits_and_its_use_is_counted():
    """16 -> 24 -> 24 -> 8: 48 hidden neurons; an h1 neuron reaches the 24 of h2, an h2 neuron the 8 outputs."""
    assert check_xylo(_mlp([16, 24, 24, 8])) == {"inputs": 16, "hidden": 48, "outputs": 8, "fan_out": 24}


def test_recurrent_synapses_count_in_the_fan_out():
    """h1 (40) sends to h2 (30) densely and to 30 of its own neurons through a sparse recurrent projection: 60."""
    n = 40
    indptr = np.arange(0, 30 * n + 1, 30, dtype=np.int64)
    indices = np.concatenate([(np.arange(30) + i) % n for i in range(n)]).astype(np.int32)
    net = _mlp([16, n, 30, 8], recurrent=(np.ones(30 * n, np.float32), indptr, indices))
    assert check_xylo(net)["fan_out"] == 60


@pytest.mark.parametrize("sizes,problem", [
    ([17, 10, 8], "input 'in': 17 channels; Xylo takes at most 16"),
    ([16, 10, 9], "layer 'out': 9 output neurons; Xylo has 8"),
    ([16, 600, 401, 8], r"the hidden layers hold 1001 neurons \(h1 600, h2 401\); Xylo has 1000"),
    ([16, 10, 65, 8], "layer 'h1': neuron 0 reaches 65 neurons; a Xylo hidden neuron reaches at most 64"),
])
def test_each_rule_is_refused_naming_the_layer(sizes, problem):
    with pytest.raises(MappingError, match=problem):
        check_xylo(_mlp(sizes))


def test_neurons_xylo_does_not_have_are_refused():
    with pytest.raises(MappingError, match="layer 'h1': 'group' neurons; Xylo's neurons are"):
        check_xylo(_mlp([16, 10, 8], model="group"))
