"""Mapper (spikeforge.converter.mapping): partition limits, placement and hop counting on hand-made networks."""
import numpy as np
import pytest

from spikeforge import simulator
from spikeforge.converter.mapping import MappingError, fan_into_range, map_network, partition
from spikeforge.converter.placement import anneal, mesh_slots, placement_cost
from spikeforge.hwmodels import estimate, load_target
from spikeforge.hwmodels.noc import link_loads, xy_route
from spikeforge.simulator.geometry import synapses_per_source
from spikeforge.simulator.network import Network, Population, Projection


def _limits(**kw):
    base = {"neurons_per_core": 1000, "axons_per_core": 1000, "synapse_memory_bytes_per_core": 1e9,
            "weight_bits": 8, "cores_per_chip": 64, "chips": 1, "mesh_width": 0, "weight_sharing": 0,
            "bits_per_synapse": 0}
    base.update(kw)
    return base


def _net(pops, projs):
    return Network(pops, projs, None, None, {"name": "hand"})


def _dense(n_in, n_out, name="h"):
    pops = [Population.make("in", "input", (n_in,)), Population.make(name, "if", (n_out,), 1.0, 0.0)]
    return _net(pops, [Projection("w", "dense", "in", name, np.ones((n_out, n_in), np.float32))])


def test_neuron_limit_cuts_equal_contiguous_ranges():
    parts = partition(_dense(10, 100), _limits(neurons_per_core=30))
    assert [(p[0], p[1], p[2]) for p in parts] == [(0, 0, 10), (1, 0, 25), (1, 25, 50), (1, 50, 75), (1, 75, 100)]
    assert all(p[3].axons == 10 for p in parts[1:])  # every dense target core sees all 10 inputs


def test_synapse_memory_limit_by_hand():
    """100 inputs, 8-bit weights + 4 index bits (16 neurons per core) = 12 bits: 150 bytes per target neuron.
    1000 bytes hold 6 neurons; 20 neurons: 3 cores of 7 would need 1050 bytes, so 4 cores of 5 (750)."""
    parts = partition(_dense(100, 20), _limits(neurons_per_core=16, synapse_memory_bytes_per_core=1000))
    hidden = [p for p in parts if p[0] == 1]
    assert [(p[1], p[2]) for p in hidden] == [(0, 5), (5, 10), (10, 15), (15, 20)]
    assert [p[3].synapse_bytes for p in hidden] == [750.0] * 4


def test_populations_sharing_a_name_are_refused_naming_it():
    """The mapper finds a layer's inputs by its name: two layers of one name would each get both's inputs."""
    net = _dense(10, 4)
    net.populations.append(Population.make("h", "if", (4,), 1.0, 0.0))
    with pytest.raises(MappingError, match="populations share a name: 'h'"):
        map_network(net, _limits())


def test_a_neuron_over_the_axon_limit_is_named_with_the_excess():
    with pytest.raises(MappingError, match=r"layer 'h': neuron 0 alone needs axons 50 .* allows 40 \(1\.25x over\)"):
        partition(_dense(50, 10), _limits(axons_per_core=40))


def test_every_layer_over_the_axon_limit_is_named_in_one_refusal_before_any_partitioning(monkeypatch):
    """in (60) -> h1 (50, dense: 60 axons each) -> h2 (20, sparse: sources 0-44 and 47 into neuron 7, 46 axons; one
    each elsewhere) -> h3 (10, dense, 20 axons): with 40 axons per core h1 and h2 break the limit, h3 does not; the
    refusal names both (h2 by its widest neuron, 7) and comes before a single range is cut."""
    import spikeforge.converter.mapping as mapping

    pops = [Population.make("in", "input", (60,))] + [Population.make(n, "if", (k,), 1.0, 0.0)
                                                      for n, k in (("h1", 50), ("h2", 20), ("h3", 10))]
    indices = np.array([7 if i < 45 else i % 20 for i in range(50)], np.int64)
    projs = [Projection("a", "dense", "in", "h1", np.ones((50, 60), np.float32)),
             Projection("b", "sparse", "h1", "h2", np.ones(50, np.float32), indptr=np.arange(51), indices=indices),
             Projection("c", "dense", "h2", "h3", np.ones((10, 20), np.float32))]
    monkeypatch.setattr(mapping, "_range_partition", lambda *a: pytest.fail("partitioned before the check"))
    with pytest.raises(MappingError, match=r"^layer 'h1': neuron 0 alone needs axons 60 but a core allows 40 "
                                           r"\(1\.50x over\); layer 'h2': neuron 7 alone needs axons 46 but a core "
                                           r"allows 40 \(1\.15x over\) \(map_network splits such layers unless "
                                           r"split=False\)$"):
        partition(_net(pops, projs), _limits(axons_per_core=40))


def test_every_layer_whose_one_neuron_overflows_synapse_memory_is_named_before_partitioning(monkeypatch):
    """in (40) -> h1 (4) and in -> h2 (4), dense, 8-bit weights + 6 index bits (64 neurons per core) = 14 bits:
    one neuron of either layer stores 40 x 14 = 560 bits = 70 bytes, over 50 bytes by 1.40x; out (4) reads 8 axons
    = 14 bytes and fits. Both layers are named, with what would make them fit, before a range is cut (a partition
    from the last layer back would stop at h2 alone)."""
    import spikeforge.converter.mapping as mapping

    pops = [Population.make("in", "input", (40,))] + [Population.make(n, "if", (4,), 1.0, 0.0) for n in ("h1", "h2")] \
        + [Population.make("out", "readout", (4,))]
    projs = [Projection("a", "dense", "in", "h1", np.ones((4, 40), np.float32)),
             Projection("b", "dense", "in", "h2", np.ones((4, 40), np.float32)),
             Projection("c", "dense", "h1", "out", np.ones((4, 4), np.float32)),
             Projection("d", "dense", "h2", "out", np.ones((4, 4), np.float32))]
    monkeypatch.setattr(mapping, "_range_partition", lambda *a: pytest.fail("partitioned before the check"))
    with pytest.raises(MappingError, match=r"^layer 'h1': neuron 0 alone needs synapse_memory_bytes 70 but a core "
                                           r"allows 50 \(1\.40x over\); layer 'h2': neuron 0 alone needs "
                                           r"synapse_memory_bytes 70 .* \(a core stores the weights of its neurons' "
                                           r"inputs: fewer weight bits"):
        partition(_net(pops, projs), _limits(neurons_per_core=64, synapse_memory_bytes_per_core=50))


@pytest.fixture
def no_core_loads(monkeypatch):
    """Fails a test in which partition computes any core's load (fan-in): the refusal must come first."""
    import spikeforge.converter.mapping as mapping

    def no_loads(*args):
        raise AssertionError("core loads computed for a network that cannot fit")
    monkeypatch.setattr(mapping, "core_load", no_loads)


def test_too_many_cores_names_the_capacity_and_the_largest_layer(no_core_loads):
    """Neurons alone over the capacity: refused before any fan-in is computed (1 input core + 10 hidden cores)."""
    with pytest.raises(MappingError, match=r"needs at least 11 cores \(its neurons alone, 10 per core\) but the "
                                           r"target has 4 cores per chip x 2 chips = 8 \(1\.38x over; "
                                           r"largest layers h: 10.*a system of at least 3 chips holds them"):
        partition(_dense(5, 100), _limits(neurons_per_core=10, cores_per_chip=4, chips=2))


def test_caps_on_neurons_per_core_fit_without_them():
    """_dense(5, 100) fits 1 + 10 cores of 10 neurons on 3 chips of 4 (the refusal below is the caps')."""
    assert len(partition(_dense(5, 100), _limits(neurons_per_core=10, cores_per_chip=4, chips=3))) == 11


def test_caps_on_neurons_per_core_count_in_the_early_refusal_and_are_named(no_core_loads):
    """Capped at 4 neurons per core, h needs 25 cores: refused before any fan-in is computed, at least 26 cores,
    the cap named as the cause."""
    limits = _limits(neurons_per_core=10, cores_per_chip=4, chips=3)
    with pytest.raises(MappingError, match=r"needs at least 26 cores \(its neurons alone, 10 per core\) with 1 "
                                           r"layer capped below the chip's neurons per core \(h; .*largest layers "
                                           r"h: 25"):
        partition(_dense(5, 100), limits, max_neurons={"h": 4, "in": 5})  # in's cap changes nothing: not named


def test_a_larger_system_of_chips_maps_what_the_targets_board_cannot():
    """The 11 cores above on 3 chips of 4 (chips=3) instead of the board's 2: the cores fill 3 chips."""
    net = _dense(5, 100)
    limits = _limits(neurons_per_core=10, cores_per_chip=4, chips=2)
    with pytest.raises(MappingError, match="a system of at least 3 chips"):
        map_network(net, limits, "snake")
    m = map_network(net, limits, "snake", chips=3)
    assert len(m.cores) == 11 and np.bincount(m.cores.chip).tolist() == [4, 4, 3]
    with pytest.raises(ValueError, match="chips must be a whole number >= 1"):
        map_network(net, limits, chips=0)


def test_cores_over_the_capacity_by_the_axon_limit_are_counted_exactly():
    """The neurons alone fit (2 input cores + 2 hidden cores of 10 <= 4), but each hidden neuron stores 20 synapses
    of 8 + 4 bits (30 bytes) and a core holds 150 bytes, so the hidden layer needs 4 cores of 5: 6 in all, over 4."""
    with pytest.raises(MappingError, match=r"the network needs 6 cores but the target has 2 cores per chip x 2 "
                                           r"chips = 4 \(1\.50x over; largest layers h: 4, in: 2\)"):
        partition(_dense(20, 20), _limits(neurons_per_core=10, synapse_memory_bytes_per_core=20 * 12 * 5 / 8,
                                          cores_per_chip=2, chips=2))


def _conv_net(groups=1, stride=2):
    rng = np.random.default_rng(0)
    pops = [Population.make("in", "input", (4, 7, 7)), Population.make("c", "if", (6, 4, 4), 1.0, 0.0)]
    w = rng.normal(size=(6, 4 // groups, 3, 3)).astype(np.float32)
    return _net(pops, [Projection("k", "conv2d", "in", "c", w, stride=(stride, stride), padding=(1, 1),
                                  groups=groups)])


@pytest.mark.parametrize("groups, stride", [(1, 1), (1, 2), (2, 2)])
def test_conv_fan_into_a_range_equals_brute_force(groups, stride):
    """Synapses from each input pixel into a neuron range, against the connectivity read off unit inputs."""
    import torch
    import torch.nn.functional as F

    net = _conv_net(groups, stride)
    q, src, tgt = net.projections[0], net.populations[0], net.populations[1]
    tgt_shape = F.conv2d(torch.zeros(1, *src.shape), torch.zeros(6, 4 // groups, 3, 3), stride=stride,
                         padding=1, groups=groups).shape[1:]
    tgt = Population.make("c", "if", tuple(tgt_shape), 1.0, 0.0)
    eye = torch.eye(src.size).reshape(src.size, *src.shape)
    conn = F.conv2d(eye, torch.ones(6, 4 // groups, 3, 3), stride=stride, padding=1, groups=groups)
    conn = conn.reshape(src.size, -1).numpy()  # (source, target): synapse present (tap count 1)
    for a, b in ((0, tgt.size), (5, 17), (tgt.size // 2, tgt.size), (3, 4)):
        np.testing.assert_array_equal(fan_into_range(q, src.shape, tgt.shape, a, b), conn[:, a:b].sum(1))
    np.testing.assert_array_equal(synapses_per_source(q, src.shape, tgt.shape), conn.sum(1))


def test_shared_conv_kernels_cost_one_copy_per_channel_on_the_core():
    net = _conv_net(1, 2)  # (6, 4, 4) targets: 16 per channel
    shared = partition(net, _limits(weight_sharing=1, neurons_per_core=40))
    # 96 neurons -> 3 cores of 32: channels {0,1}, {2,3}, {4,5}: 2 channels x 36 taps x 8 bits = 72 bytes
    assert [p[3].synapse_bytes for p in shared if p[0] == 1] == [72.0] * 3
    explicit = partition(net, _limits(neurons_per_core=40))
    q = net.projections[0]
    bits = 8 + 6  # weight + index bits for 40 neurons per core
    assert sum(p[3].synapse_bytes for p in explicit if p[0] == 1) == \
        synapses_per_source(q, (4, 7, 7), (6, 4, 4)).sum() * bits / 8


def test_snake_slots_are_mesh_neighbours_and_chips_tile_a_grid():
    slots = mesh_slots(40, _limits(cores_per_chip=16, mesh_width=4))
    assert len(slots) == 48  # 3 chips of 16
    same_chip = slots[1:, 0] == slots[:-1, 0]
    steps = np.abs(np.diff(slots[:, 1:], axis=0)).sum(1)
    assert (steps[same_chip] == 1).all()
    assert sorted({(c, x // 4, y // 4) for c, x, y in slots}) == [(0, 0, 0), (1, 1, 0), (2, 0, 1)]


def test_annealing_puts_a_hub_in_the_middle_of_its_leaves():
    """Star: hub 0 with 4 leaves on a 3x3 mesh. The snake walk leaves them 1+2+3+3 hops away (or so); the
    optimum is 4 (hub in the centre)."""
    slots = mesh_slots(5, _limits(cores_per_chip=9, mesh_width=3))
    src, dst, w = np.zeros(4, np.int64), np.arange(1, 5), np.ones(4)
    snake = placement_cost(slots[:5, 1:], src, dst, w)
    where = anneal(slots, src, dst, w, 5, iters=4000, seed=1)
    assert len(set(where.tolist())) == 5
    assert snake > 4 and placement_cost(slots[where, 1:], src, dst, w) == 4


def test_annealing_keeps_its_running_cost_exact_and_a_seed_gives_one_placement():
    """A random graph of 40 cores with parallel and self edges on 64 slots: the cost the swap kernel keeps equals
    Σ weight x distance recomputed from the placement it returns, minus the walking order's; the placement puts
    each core on its own slot, is shorter than the walk, and is the same for the same seed."""
    rng = np.random.default_rng(3)
    slots = mesh_slots(64, _limits(cores_per_chip=64, mesh_width=8))
    src, dst = rng.integers(40, size=150), rng.integers(40, size=150)
    w = rng.integers(1, 20, size=150).astype(np.float64)
    where, gained = anneal(slots, src, dst, w, 40, iters=20_000, seed=5, with_cost=True)
    start = placement_cost(slots[:40, 1:], src, dst, w)
    assert len(set(where.tolist())) == 40 and where.max() < 64
    assert gained < 0 and placement_cost(slots[where, 1:], src, dst, w) - start == pytest.approx(gained, abs=1e-6)
    np.testing.assert_array_equal(anneal(slots, src, dst, w, 40, iters=20_000, seed=5), where)


def _hand_mapped_net():
    """in (2) -> h (4 IF, θ=1, v0=0.5) -> out (2), two neurons per core on a 2-wide mesh, snake placement."""
    pops = [Population.make("in", "input", (2,)), Population.make("h", "if", (4,), 1.0, 0.5),
            Population.make("out", "readout", (2,))]
    w1 = np.array([[1.0, 0], [0.6, 0], [0.2, 0], [1.0, 0]], np.float32)
    projs = [Projection("w1", "dense", "in", "h", w1),
             Projection("w2", "dense", "h", "out", np.ones((2, 4), np.float32))]
    return map_network(_net(pops, projs), _limits(neurons_per_core=2, cores_per_chip=4, mesh_width=2), "snake")


def test_hops_and_packets_of_a_mapped_network_by_hand():
    """in (2) -> h (4 IF, θ=1, v0=0.5) -> out (2), two neurons per core on a 2-wide mesh, snake placement:
    in (0,0), h[0:2] (1,0), h[2:4] (1,1), out (0,1). Input [1, 0] gives h currents 1, .6, .2, 1: spikes over
    4 steps 4, 2, 1, 4. Each spike is one packet to the out core: 2 hops from (1,0), 1 hop from (1,1)."""
    net = _hand_mapped_net()
    assert list(zip(net.cores.x, net.cores.y)) == [(0, 0), (1, 0), (1, 1), (0, 1)]
    assert net.core_edges.src.tolist() == [0, 0, 1, 2] and net.core_edges.dst.tolist() == [1, 2, 3, 3]
    assert net.core_edges.axons.tolist() == [2, 2, 2, 2]  # dense rows keep their zero weights
    res = simulator.run(net, np.array([[1.0, 0.0]]), 4)
    assert res.total("spikes") == 11 and res.total("packets") == 11
    assert res.total("hops") == 6 * 2 + 5 * 1
    np.testing.assert_array_equal(res.counter("hops")[:, 1], [4, 2, 4, 2])  # core 1: spikes [2,1,2,1] x 2 hops


def test_xy_routes_by_hand():
    assert xy_route(0, 0, 2, 1) == [(0, 0, 0), (1, 0, 0), (2, 0, 2)]  # east, east, north
    assert xy_route(2, 2, 0, 0) == [(2, 2, 1), (1, 2, 1), (0, 2, 3), (0, 1, 3)]  # west, west, south, south
    assert xy_route(3, 1, 3, 1) == []


def test_link_loads_and_link_latency_of_a_mapped_network_by_hand():
    """The network of the test above: core 1 at (1,0) reaches out at (0,1) over (1,0)->west, (0,0)->north;
    core 2 at (1,1) over (1,1)->west. Spikes per step: core 1 [2,1,2,1], core 2 [1,1,2,1]. (The analog input's
    routes carry nothing: its values are counted as MACs at the receiving cores.)"""
    net = _hand_mapped_net()
    res = simulator.run(net, np.array([[1.0, 0.0]]), 4, record_links=True)
    ll = link_loads(res.flows, res.flow_src, res.flow_dst, net.cores.x, net.cores.y)
    loads = {tuple(k): ll.loads[:, i].tolist() for i, k in enumerate(ll.links.tolist()) if ll.loads[:, i].any()}
    assert loads == {(1, 0, 1): [2, 1, 2, 1], (0, 0, 2): [2, 1, 2, 1], (1, 1, 1): [1, 1, 2, 1]}
    np.testing.assert_array_equal(ll.loads.sum(axis=1), res.counter("hops").sum(axis=1))
    assert ll.busiest().tolist() == [2, 1, 2, 1] and ll.longest_route.tolist() == [2, 2, 2, 2]
    assert ll.busiest_link() == (1, 0, "west", 6)
    # network time per step, Loihi (hop 5.3 ns; packets are timed on the cores sending and receiving them).
    # Without link loads: one packet's flight, the longest mean route of a core's packets (2 hops) = 10.6 ns;
    # per link, contention added: (busiest + longest - 1) x 5.3 = 15.9, 10.6, 15.9, 10.6
    loihi = load_target("loihi")
    labels = ["in", "h", "h", "out"]
    per_core = estimate(res.counters, simulator.COUNTERS, 1, loihi, labels).latency_ns_per_step
    per_link = estimate(res.counters, simulator.COUNTERS, 1, loihi, labels, links=ll).latency_ns_per_step
    np.testing.assert_allclose(per_core - per_link, [-5.3, 0, -5.3, 0], atol=1e-9)


@pytest.fixture(scope="module")
def converted_resnet(trained_resnet, digits):
    from spikeforge.converter import convert

    return convert(trained_resnet, [digits[0][:256]], norm="percentile", percentile=99.9)


def test_mapped_converted_network_gives_the_same_spikes_and_anneal_shortens_routes(converted_resnet, digits):
    """A converted DigitsResNet on Loihi limits: same output as the one-core-per-layer file, more cores, and
    annealing cuts Σ axons x hops below the snake walk; the XY link loads add up to the hop counter."""
    net = converted_resnet
    x = digits[2][:8].numpy()
    loihi = load_target("loihi")
    snake, annealed = map_network(net, loihi, "snake"), map_network(net, loihi, "anneal")
    assert len(snake.cores) > len(net.populations)
    cost = {k: placement_cost(np.stack([m.cores.x, m.cores.y], 1), m.core_edges.src, m.core_edges.dst,
                              m.core_edges.axons) for k, m in (("snake", snake), ("anneal", annealed))}
    assert cost["anneal"] < 0.9 * cost["snake"]
    base = simulator.run(net, x, 4)
    for m in (snake, annealed):
        res = simulator.run(m, x, 4, record_links=True)
        np.testing.assert_array_equal(res.output, base.output)
        assert res.total("synops") == base.total("synops") and res.total("spikes") == base.total("spikes")
        np.testing.assert_array_equal(res.flows.sum(axis=1), res.counter("packets").sum(axis=1))
        ll = link_loads(res.flows, res.flow_src, res.flow_dst, m.cores.x, m.cores.y)
        np.testing.assert_array_equal(ll.loads.sum(axis=1), res.counter("hops").sum(axis=1))


def test_a_ranges_window_fan_from_its_boxes_equals_the_transposed_convolution():
    """range_fan cuts a C-order range into at most five boxes (range_boxes tiles it exactly) and adds their product
    fans; it equals the transposed-convolution fan of the range for strides, padding, groups and pooling."""
    from spikeforge.converter.mapping import range_boxes, range_fan
    from spikeforge.simulator.network import box_indices

    for a in range(36):
        for b in range(a + 1, 37):
            boxes = range_boxes(a, b, (3, 3, 4))
            assert len(boxes) <= 5
            assert sorted(np.concatenate([box_indices(x, (3, 3, 4)) for x in boxes]).tolist()) == list(range(a, b))
    rng = np.random.default_rng(0)
    cases = [(1, 1, 3, 1), (2, 1, 3, 1), (2, 0, 3, 3), (1, 0, 1, 1), (2, 1, 4, 1)]
    projs = [(Projection("q", "conv2d", "a", "b", rng.standard_normal((6, 6 // g, k, k)).astype(np.float32),
                         stride=(s, s), padding=(p, p), groups=g), (9 + 2 * p - k) // s + 1)
             for s, p, k, g in cases]
    projs.append((Projection("p", "avgpool", "a", "b", None, kernel=(3, 3), stride=(3, 3), padding=(0, 0)), 3))
    for q, oh in projs:
        n = 6 * oh * oh
        for a, b in [(0, n), (3, 17), (5, oh * oh + 2), (oh * oh, 3 * oh * oh - 1), (1, 2), (oh * oh + 1, n)]:
            fan = range_fan(q, (6, 9, 9), (6, oh, oh), a, b)
            dense = np.zeros(6 * 81, np.int64)
            dense[fan.index] = fan.count
            np.testing.assert_array_equal(dense, fan_into_range(q, (6, 9, 9), (6, oh, oh), a, b))


def test_an_axon_bound_layer_gets_the_fewest_equal_ranges_that_fit_by_hand():
    """Neuron j reads sources 4j .. 4j+9 (a 1-d window, stride 4): n neighbouring neurons need 4(n-1) + 10 axons,
    so a core of 50 axons holds at most 11. 200 neurons in 18 equal ranges have some of 12 (too many); in 19,
    ranges of 10 or 11 fit: 19 cores, the count the search over range counts must land on."""
    n, stride, width = 200, 4, 10
    n_src = stride * (n - 1) + width
    rows = [[j for j in range(n) if stride * j <= i < stride * j + width] for i in range(n_src)]
    indptr = np.concatenate([[0], np.cumsum([len(r) for r in rows])]).astype(np.int64)
    indices = np.concatenate(rows).astype(np.int64)
    pops = [Population.make("in", "input", (n_src,)), Population.make("h", "if", (n,), 1.0, 0.0)]
    proj = Projection("w", "sparse", "in", "h", weight=np.ones(len(indices), np.float32), indptr=indptr,
                      indices=indices)
    parts = [p for p in partition(_net(pops, [proj]), _limits(axons_per_core=50)) if p[0] == 1]
    assert len(parts) == 19
    assert max(p[3].axons for p in parts) <= 50 and max(p[2] - p[1] for p in parts) == 11


def test_a_pointwise_ranges_fan_counts_each_tokens_nonzero_weights_into_the_range():
    """A token-wise map (6 tokens, 5 -> 7 features, half the weights zero): the fan of output range start..stop-1
    holds, for input (token r, feature c), the outputs o of token r in the range with w[o, c] != 0 (by brute
    force), for ranges inside one token, across tokens and the whole map."""
    from spikeforge.converter.mapping import range_fan

    rng = np.random.default_rng(0)
    w = np.where(rng.random((7, 5)) < 0.5, 0, rng.random((7, 5))).astype(np.float32)
    proj = Projection("p", "pointwise", "a", "b", weight=w)
    for start, stop in [(0, 3), (3, 17), (6, 42), (13, 14), (0, 42), (40, 42)]:
        want = np.zeros(30, np.int64)
        for t in range(start, stop):
            r, o = divmod(t, 7)
            want[r * 5:(r + 1) * 5] += w[o] != 0
        fan = range_fan(proj, (6, 5), (6, 7), start, stop)
        assert np.array_equal(fan.index, np.flatnonzero(want)) and np.array_equal(fan.count, want[want > 0])


def test_an_identity_or_sparse_ranges_fan_equals_the_dense_count_of_its_synapses():
    """range_fan's identity and sparse paths (the range's own neurons and synapses, no scan of the source) equal
    the nonzeros of fan_into_range's dense count, for ranges at both ends, inside, empty past the last stored
    target, and the whole map (a sparse range of few synapses sorts its own, one of many counts them)."""
    import scipy.sparse as sp

    from spikeforge.converter.mapping import Fan, fan_into_range, range_fan

    rng = np.random.default_rng(1)
    dense = np.where(rng.random((40, 400)) < 0.02, rng.random((40, 400)), 0.0)  # (targets, sources)
    dense[35:] = 0  # targets past the last stored index have no synapse
    csr = sp.csr_matrix(dense.T)  # stored by source: indptr over the 400 sources, indices = targets
    sparse = Projection("s", "sparse", "a", "b", weight=csr.data.astype(np.float32), indptr=csr.indptr,
                        indices=csr.indices)
    ident = Projection("i", "identity", "c", "b", None)
    cases = [(0, 40), (0, 1), (39, 40), (36, 40), (5, 17), (17, 18)] + \
        [tuple(sorted(rng.choice(41, 2, replace=False))) for _ in range(20)]
    for proj, n_src in ((sparse, 400), (ident, 40)):
        for start, stop in cases:
            want = Fan.of(fan_into_range(proj, (n_src,), (40,), start, stop))
            got = range_fan(proj, (n_src,), (40,), start, stop)
            assert np.array_equal(got.index, want.index) and np.array_equal(got.count, want.count), \
                (proj.kind, start, stop)
            assert got.index.dtype == want.index.dtype == np.int64


def test_map_to_work_recuts_layers_whose_busiest_core_passes_the_budget():
    """s (16 IF neurons, every one spiking each step) -> o (8 IF) sparsely, o_j reading 2(j + 1) of s (-> a readout
    of 2, at most 8 synaptic ops per neuron and step): o's neurons
    differ in work (2, 4, ... 16 synaptic ops per step), so caps from its mean (9) put its last neurons on a core
    over the budget; map_to_work maps it again with lower caps until every core is within it on the samples, with
    the same outputs. A budget below one neuron's own work is reported, not looped on, and a re-cut that needs
    more cores than the chip has gives back the mapping that fit."""
    import scipy.sparse as sp

    from spikeforge.converter.mapping import (
        balance_work,
        core_work,
        map_to_work,
        one_population_per_core,
        work_per_neuron,
    )

    mask = np.zeros((8, 16), bool)
    for j in range(8):
        mask[j, :2 * (j + 1)] = True
    csr = sp.csr_matrix(mask.T.astype(np.float32) * 0.1)  # by source: indptr over s, indices = o's neurons
    pops = [Population.make("in", "input", (16,)), Population.make("s", "if", (16,), 1.0, 0.0),
            Population.make("o", "if", (8,), 1.0, 0.0), Population.make("r", "readout", (2,))]
    projs = [Projection("a", "identity", "in", "s", None),
             Projection("b", "sparse", "s", "o", csr.data, indptr=csr.indptr, indices=csr.indices),
             Projection("c", "dense", "o", "r", np.ones((2, 8), np.float32))]
    net = Network(pops, projs, *one_population_per_core(pops, projs), {})
    x, T = np.full((2, 16), 1.0, np.float32), 4
    work = work_per_neuron(net, x, T)
    assert work["o"] == pytest.approx(sum(2 * (j + 1) for j in range(8)) / 8)  # 9 per neuron and step
    budget = 27.0  # balance_work: 3 neurons per core; the last core holds o_5..o_7: 12 + 14 + 16 = 42 > 27
    assert balance_work(work, budget)["o"] == 3
    limits = _limits()
    first, caps0, over0 = map_to_work(net, limits, x, T, work, budget, rounds=0)
    assert over0 == {"o": pytest.approx(42.0)} and caps0["o"] == 3
    mapped, caps, over = map_to_work(net, limits, x, T, work, budget)
    assert over == {} and caps["o"] < 3
    per = core_work(mapped, x, T)
    o_cores = np.flatnonzero(mapped.cores.population == 2)
    assert per[o_cores].max() <= budget and len(o_cores) > len(np.flatnonzero(first.cores.population == 2))
    np.testing.assert_array_equal(simulator.run(mapped, x, T).output, simulator.run(net, x, T).output)
    _, _, left = map_to_work(net, limits, x, T, work, 10.0)  # o_4 .. o_7 alone do 10, 12, 14, 16
    assert left == {"o": pytest.approx(16.0)}
    # on 6 cores the re-cut does not fit: the mapping that fit is returned, with what it leaves over
    fit, caps_fit, over_fit = map_to_work(net, _limits(cores_per_chip=6), x, T, work, budget)
    assert len(fit.cores) == 6 and caps_fit == caps0 and over_fit == over0


def test_work_per_neuron_and_the_cores_it_cuts():
    """in (4) -> h (6 IF) -> out (2, readout), dense weights 1: the analog input reaches h as MACs (no synaptic
    ops), each spike of h does one synaptic op on each of out's 2 neurons. balance_work caps a population at
    budget // work neurons per core; map_network cuts it so, the others as the chip's limits allow."""
    from spikeforge.converter.mapping import balance_work, one_population_per_core, work_per_neuron

    pops = [Population.make("in", "input", (4,)), Population.make("h", "if", (6,), 1.0, 0.0),
            Population.make("out", "readout", (2,))]
    projs = [Projection("w1", "dense", "in", "h", np.ones((6, 4), np.float32)),
             Projection("w2", "dense", "h", "out", np.ones((2, 6), np.float32))]
    net = Network(pops, projs, *one_population_per_core(pops, projs), {})
    x, T = np.array([[0.5, 0.5, 0.0, 0.0]], np.float32), 4
    res = simulator.run(net, x, T, record=["h"])
    spikes = np.count_nonzero(res.spikes["h"])
    assert spikes > 0
    work = work_per_neuron(net, x, T)
    assert work["out"] == pytest.approx(2 * spikes / (2 * T)) and work["h"] == 0  # h's input is MACs, not synops
    caps = balance_work(work, 2.0 * work["out"])
    assert caps == {"out": 2}
    # in core time on Loihi, per step: a neuron's update (6 ns) in every step the pipelined chip runs, and its
    # events spread over the T steps: h's neurons active when reached (3.7 ns), spikes (30 ns) each sent as one
    # packet to out's core (5.1 ns); out's 2 dense synaptic ops per spike of h (3.8 ns) and active neurons; the
    # packets a core receives behind a dense projection (16 ns) are left out (they do not divide)
    ns = work_per_neuron(net, x, T, "loihi")
    c = {k: res.counter(k).sum(0) for k in ("neuron_updates", "active_neurons", "synops")}
    assert res.counter("packets").sum(0)[1] == spikes and res.counter("packets_in").sum(0)[2] == spikes
    assert c["neuron_updates"][1] == 6 * T and c["neuron_updates"][2] == 2 * T
    assert ns["h"] == pytest.approx(6.0 + (3.7 * c["active_neurons"][1] + 30.0 * spikes + 5.1 * spikes) / (6 * T))
    assert ns["out"] == pytest.approx(6.0 + (3.8 * c["synops"][2] + 3.7 * c["active_neurons"][2]) / (2 * T))
    # a deep pipeline adds steps in which neurons are only updated: not more time per step
    silent = np.zeros_like(x)
    assert work_per_neuron(net, silent, T, "loihi") == pytest.approx({"in": 0.0, "h": 6.0, "out": 6.0})
    assert balance_work(ns, 3.5 * ns["h"])["h"] == 3
    # fed one to one (identity), a core's received packets shrink with its neurons: they count (16 ns each)
    pops2 = pops[:2] + [Population.make("g", "readout", (6,))]
    projs2 = projs[:1] + [Projection("hg", "identity", "h", "g")]
    net2 = Network(pops2, projs2, *one_population_per_core(pops2, projs2), {})
    res2 = simulator.run(net2, x, T)
    g = {k: res2.counter(k).sum(0)[2] for k in ("neuron_updates", "active_neurons", "synops", "packets_in")}
    assert g["packets_in"] == spikes and g["synops"] == spikes and g["neuron_updates"] == 6 * T
    assert work_per_neuron(net2, x, T, "loihi")["g"] == pytest.approx(
        6.0 + (3.8 * g["synops"] + 3.7 * g["active_neurons"] + 16.0 * g["packets_in"]) / (6 * T))
    caps = balance_work({"h": 3.0}, 7.0)
    assert caps == {"h": 2}
    m = map_network(net, _limits(), max_neurons=caps)
    h_cores = [(m.cores.neuron_start[c], m.cores.neuron_stop[c]) for c in np.flatnonzero(m.cores.population == 1)]
    assert h_cores == [(0, 2), (2, 4), (4, 6)]
    assert len(np.flatnonzero(m.cores.population == 2)) == 1
    np.testing.assert_array_equal(simulator.run(m, x, T).output, res.output)  # cut finer, the same outputs
    with pytest.raises(ValueError, match="max_neurons names no population of the network: \\['hh'\\]"):
        map_network(net, _limits(), max_neurons={"hh": 2})
    for bad in (0, 2.5, float("nan"), "3", True):
        with pytest.raises(ValueError, match="max_neurons must map populations to whole numbers >= 1"):
            map_network(net, _limits(), max_neurons={"h": bad})
    for bad in (0, float("inf"), True):
        with pytest.raises(ValueError, match="the work budget per core must be a finite number > 0"):
            balance_work(work, bad)


def test_a_fans_synapses_and_axons_by_source_core_are_the_same_counted_in_place_or_sorted():
    """core_edges sums a fan by source core in place (bincount over the run of core ids it reaches) and sorts
    only fans spread over a wide run: both give the cores reached, synapses and axons a sort gives, cores whose
    neurons have no synapse left out."""
    from spikeforge.converter.mapping import _sums_by_core

    rng = np.random.default_rng(3)
    paths = set()
    for n, span, base in [(1, 1, 0), (50, 7, 1000), (400, 3000, 5), (30, 10**6, 7), (200, 200, 69_000)]:
        owner = base + rng.integers(0, span, n)
        count = rng.integers(0, 4, n)  # some neurons with 0 synapses: their cores may be reached by none
        reached, inverse = np.unique(owner, return_inverse=True)
        syn = np.bincount(inverse, weights=count, minlength=len(reached))
        ax = np.bincount(inverse, weights=count > 0, minlength=len(reached))
        got = _sums_by_core(owner, count)
        want = (reached[syn > 0], syn[syn > 0], ax[syn > 0])
        for g, w in zip(got, want):
            assert g.dtype == np.int64 and np.array_equal(g, w)
        paths.add(int(owner.max() - owner.min()) >= 4 * n + 1024)  # the span drawn, as the function measures it
    assert paths == {True, False}  # both ways of counting ran
