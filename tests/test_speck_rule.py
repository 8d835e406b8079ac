"""Speck / DYNAP-CNN mapping rule (spikeforge.converter.speck): sinabs' memory formulas by hand, one layer per
core matched onto cores whose memories hold it, and each rule's refusal naming the layer and the limit."""
import numpy as np
import pytest

from spikeforge.converter.mapping import MappingError
from spikeforge.converter.speck import SPECK, assign_cores, layer_memory, speck_layers
from spikeforge.simulator.network import Network, Population, Projection


def _chain(in_shape, layers, extra=()):
    """input -> conv layers (channels, kernel, stride, padding) -> optional dense readout."""
    pops, projs, shape, prev = [Population.make("in", "input", in_shape)], [], in_shape, "in"
    for i, (c, k, s, p) in enumerate(layers):
        h = (shape[1] + 2 * p - k) // s + 1
        w = (shape[2] + 2 * p - k) // s + 1
        pops.append(Population.make(f"l{i}", "if", (c, h, w), 1.0, 0.0))
        projs.append(Projection(f"w{i}", "conv2d", prev, f"l{i}", np.ones((c, shape[0], k, k), np.float32),
                                kernel=(k, k), stride=(s, s), padding=(p, p)))
        shape, prev = (c, h, w), f"l{i}"
    for name, n in extra:
        pops.append(Population.make(name, "readout", (n,)))
        projs.append(Projection(f"d_{name}", "dense", prev, name, np.ones((n, int(np.prod(shape))), np.float32)))
        prev = name
    return Network(pops, projs, None, None, {})


def test_memories_follow_sinabs_formulas_by_hand():
    """sinabs' worked example: 16 -> 32 channels, 3x3 (rounded to 4x4): K = 16 x 4 x 4 x 32 = 8 Ki; a 64x64x32
    output: N = 32 x 64 x 64 = 128 Ki. A 30x30 map rounds each side to 32 (3 x 32 x 32 = 3,072); a dense layer of
    10 on a 32 x 6 x 6 input is a 6x6 convolution: K = 32 x 64 x 16 = 32,768, N = 10."""
    net = _chain((16, 66, 66), [(32, 3, 1, 0)])
    assert layer_memory(net, net.populations[1]) == (8192, 131072)
    net = _chain((1, 32, 32), [(3, 3, 1, 0), (32, 10, 4, 0)], extra=[("out", 10)])
    assert layer_memory(net, net.populations[1]) == (1 * 16 * 4, 3 * 32 * 32)
    assert net.populations[2].shape == (32, 6, 6)
    assert layer_memory(net, net.populations[3]) == (32 * 64 * 16, 10)


def test_a_layer_larger_than_every_core_is_refused_naming_it_and_the_memory():
    net = _chain((16, 66, 66), [(32, 3, 1, 0)])
    with pytest.raises(MappingError, match=r"layer 'l0': neuron memory 131072 entries, the largest Speck core that "
                                           r"holds its kernel has 65536"):
        assign_cores(speck_layers(net))


def test_layers_are_matched_onto_the_cores_that_hold_them():
    """l0 needs a 64 Ki neuron memory (cores 0-2), l1 a 32 Ki kernel memory (cores 3-6), l2 a 64 Ki kernel memory
    (cores 5, 6): every layer gets a core that holds it, each core one layer."""
    net = _chain((16, 66, 66), [(16, 3, 1, 0), (64, 5, 4, 0), (64, 3, 1, 1)])
    layers = speck_layers(net)
    assert [(lay.kernel_memory, lay.neuron_memory) for lay in layers] == \
        [(16 * 16 * 16, 16 * 64 * 64), (16 * 32 * 64, 64 * 16 * 16), (64 * 16 * 64, 64 * 16 * 16)]
    cores = assign_cores(layers)
    assert cores["l0"] in (0, 1, 2) and cores["l1"] in (3, 4, 5, 6) and cores["l2"] in (5, 6)
    assert len(set(cores.values())) == 3
    for lay in layers:
        assert SPECK["kernel_memory"][cores[lay.name]] >= lay.kernel_memory
        assert SPECK["neuron_memory"][cores[lay.name]] >= lay.neuron_memory


def test_more_large_layers_than_large_cores_are_refused():
    """Three layers of 64 Ki kernel entries (64 -> 64 channels, 4x4) on small maps: only cores 5 and 6 hold one."""
    net = _chain((64, 8, 8), [(64, 4, 1, 2)] * 3)
    assert all(lay.kernel_memory == 65536 for lay in speck_layers(net))
    with pytest.raises(MappingError, match=r"no Speck core is left for layer\(s\) 'l\d'"):
        assign_cores(speck_layers(net))


def test_ten_layers_are_refused_naming_the_nine_cores():
    net = _chain((2, 40, 40), [(2, 3, 1, 1)] * 10)
    with pytest.raises(MappingError, match="has 10 layers; a Speck chip has 9 cores"):
        assign_cores(speck_layers(net))


def test_a_layer_with_three_destinations_is_refused():
    net = _chain((2, 8, 8), [(4, 3, 1, 1)])
    for name in ("a", "b", "c"):
        net.populations.append(Population.make(name, "if", (4, 8, 8), 1.0, 0.0))
        net.projections.append(Projection(f"to_{name}", "identity", "l0", name))
    with pytest.raises(MappingError, match=r"layer 'l0' sends to 3 layers \(a, b, c\); a Speck core has at most 2"):
        speck_layers(net)


@pytest.mark.parametrize("layer,problem", [
    ((4, 3, 3, 0), r"layer 'l0': stride \(3, 3\), a Speck core strides by 1, 2, 4, 8"),
    ((4, 17, 1, 0), "layer 'l0': kernel 17x17, a Speck core takes at most 16x16"),
    ((4, 3, 1, 8), r"layer 'l0': padding \(8, 8\), a Speck core pads at most 7"),
    ((1025, 1, 1, 0), "layer 'l0': 1025 channels, a Speck core has at most 1024"),
])
def test_feature_limits_are_refused_naming_the_layer(layer, problem):
    net = _chain((2, 40, 40), [layer])
    with pytest.raises(MappingError, match=problem):
        speck_layers(net)


@pytest.mark.parametrize("in_shape,layer,problem", [
    ((2, 130, 40), (4, 3, 4, 1), "layer 'l0': input map 130x40; a Speck core takes at most 128x128"),
    ((2, 70, 40), (4, 3, 1, 1), "layer 'l0': output map 70x40; a Speck core's output map is at most 64x64"),
])
def test_map_sizes_beyond_a_cores_input_and_output_are_refused(in_shape, layer, problem):
    with pytest.raises(MappingError, match=problem):
        speck_layers(_chain(in_shape, [layer]))


def test_maps_at_the_cores_limits_fit():
    """128x128 in, 64x64 out (stride 2): both at the limit."""
    assert speck_layers(_chain((2, 128, 128), [(4, 2, 2, 0)]))[0].neuron_memory == 4 * 64 * 64


def test_a_projection_kind_without_a_speck_core_is_refused():
    pops = [Population.make("in", "input", (4, 3)), Population.make("t", "if", (4, 5), 1.0, 0.0)]
    net = Network(pops, [Projection("p", "pointwise", "in", "t", np.ones((5, 3), np.float32))], None, None, {})
    with pytest.raises(MappingError, match="layer 't': a pointwise projection has no Speck equivalent"):
        speck_layers(net)


def _yao(in_shape=(2, 32, 32), pool=4):
    """Yao et al. 2024 (Nat. Commun. 15:4464, Table 1): Input-32C3S1-32C3S2-32C3S1-AP4-32FC-Output, here on a
    2 x 32 x 32 event input (the input size of the Speck runs is not published) with 11 classes."""
    net = _chain(in_shape, [(32, 3, 1, 1), (32, 3, 2, 1), (32, 3, 1, 1)])
    side = net.populations[-1].shape[1] // pool
    net.populations.append(Population.make("ap", "if", (32, side, side), 1.0, 0.0))
    net.projections.append(Projection("pool", "avgpool", "l2", "ap", None, kernel=(pool, pool), stride=(pool, pool)))
    for name, n, src in (("fc", 32, "ap"), ("out", 11, "fc")):
        size = int(np.prod(next(p.shape for p in net.populations if p.name == src)))
        net.populations.append(Population.make(name, "if" if name == "fc" else "readout", (n,), 1.0, 0.0))
        net.projections.append(Projection(f"d_{name}", "dense", src, name, np.ones((n, size), np.float32)))
    return net


def test_yao_2024_gesture_network_takes_five_cores_with_its_pooling_on_the_third():
    """ "only five SNN cores are utilized": the 4x4 average pooling is the third core's sum pooling, so l2 sends to
    fc; fc's kernel is then 32 x 16 x 32 (a 4x4 map), not 32 x 256 x 32."""
    layers = speck_layers(_yao())
    assert [lay.name for lay in layers] == ["l0", "l1", "l2", "fc", "out"]
    assert layers[2].destinations == ("fc",) and layers[3].kernel_memory == 32 * 16 * 32
    cores = assign_cores(layers)
    assert len(cores) == 5 == len(set(cores.values()))


def test_a_pooling_the_cores_cannot_do_is_refused():
    net = _yao(in_shape=(2, 24, 24), pool=3)
    with pytest.raises(MappingError, match=r"layer 'ap': pooling 3x3 stride \(3, 3\); a Speck core sum-pools "
                                           r"1x1, 2x2, 4x4"):
        speck_layers(net)
