"""SynSense Xylo Audio 2 mapping rule (issue 33): the whole network on the chip's one SNN core, as rockpool's
mapper checks it.

Xylo Audio 2 (SYNS61201) takes up to 16 input channels into up to 1,000 hidden neurons (any recurrent or
feed-forward wiring among them) read out by up to 8 output neurons; a hidden neuron reaches at most 64 others
(its fan-out, the synapse memory of the core: 1,000 x 64 weights), and has at most 2 synaptic input states
(two synaptic time constants; every network file's neurons have at most one, so this holds). Hidden neurons
are (leaky) integrate-and-fire. Sources: rockpool `docs/devices/xylo-overview.ipynb` (family table: 16 inputs,
1,000 hidden, 8 outputs, max fan-out 64, 2 synaptic states), `rockpool/devices/xylo/syns61201/xylo_mapper.py`
(max_hidden_neurons 1000, max_output_neurons 8) and the "Xylo only supports up to 16 input channels" / "up to 8
output channels" design rules. The notebook's "each of the two input synapses may receive events from up to 16
pre-synaptic neurons" conflicts with the 64-fan-out table (and a third party's "fan-in of 63"); it is not
enforced here. A network that breaks a rule is refused naming the layer and the rule.
"""
from __future__ import annotations

import numpy as np

from spikeforge.simulator.geometry import synapses_per_source
from spikeforge.simulator.network import Network

from .mapping import MappingError, one_population_per_core

XYLO_AUDIO2 = {"inputs": 16, "hidden": 1000, "outputs": 8, "fan_out": 64, "synaptic_states": 2}


def check_xylo(net, spec=XYLO_AUDIO2) -> dict:
    """{"inputs", "hidden", "outputs", "fan_out"}: what the network uses of the core, or MappingError naming the
    layer and the rule it breaks. Input: the first population; outputs: the readout; hidden: every other."""
    shapes = {p.name: tuple(p.shape) for p in net.populations}
    inputs, readout = net.populations[0], net.readout
    if inputs.size > spec["inputs"]:
        raise MappingError(f"input {inputs.name!r}: {inputs.size} channels; Xylo takes at most {spec['inputs']}")
    if readout.size > spec["outputs"]:
        raise MappingError(f"layer {readout.name!r}: {readout.size} output neurons; Xylo has {spec['outputs']}")
    hidden = [p for p in net.populations[1:] if p.name != readout.name]
    n_hidden = sum(p.size for p in hidden)
    if n_hidden > spec["hidden"]:
        sizes = ", ".join(f"{p.name} {p.size}" for p in hidden)
        raise MappingError(f"the hidden layers hold {n_hidden} neurons ({sizes}); Xylo has {spec['hidden']}")
    for p in hidden:
        if p.model not in ("if", "lif"):
            raise MappingError(f"layer {p.name!r}: {p.model!r} neurons; Xylo's neurons are (leaky) integrate-and-fire")
    fan_out = {p.name: np.zeros(p.size, np.int64) for p in hidden}
    for q in net.projections:
        if q.source in fan_out:
            fan_out[q.source] += synapses_per_source(q, shapes[q.source], shapes[q.target])
    worst = 0
    for name, fan in fan_out.items():
        if fan.size and int(fan.max()) > spec["fan_out"]:
            j = int(fan.argmax())
            raise MappingError(f"layer {name!r}: neuron {j} reaches {int(fan[j])} neurons; a Xylo hidden neuron "
                               f"reaches at most {spec['fan_out']}")
        worst = max(worst, int(fan.max(initial=0)))
    return {"inputs": inputs.size, "hidden": n_hidden, "outputs": readout.size, "fan_out": worst}


def map_xylo(net: Network, name: str = "xylo") -> Network:
    """`net` on Xylo's one SNN core (every population at chip 0, x 0, y 0, one core-table row each, whole), after
    `check_xylo` (MappingError naming the layer and the rule it breaks)."""
    check_xylo(net)
    zeros = [0] * len(net.populations)
    cores, edges = one_population_per_core(net.populations, net.projections, zeros, zeros)
    return Network(net.populations, net.projections, cores, edges, dict(net.attrs, mapping=f"{name}:xylo"))
