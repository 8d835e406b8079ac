"""Multi-chip systems (issue 34): chips tile the mesh, hops between chips are counted and priced apart, placement
keeps connected cores on one chip (converter.placement)."""
import numpy as np
import pytest

from spikeforge import simulator
from spikeforge.converter.mapping import map_network
from spikeforge.converter.placement import kl_chips, place
from spikeforge.hwmodels import estimate, load_target
from spikeforge.hwmodels.noc import link_loads
from spikeforge.simulator.network import Network, Population, Projection, chip_cells


def _limits(**kw):
    base = {"neurons_per_core": 2, "axons_per_core": 1000, "synapse_memory_bytes_per_core": 1e9,
            "weight_bits": 8, "cores_per_chip": 2, "chips": 4, "mesh_width": 1, "weight_sharing": 0,
            "bits_per_synapse": 0}
    base.update(kw)
    return base


def _two_chip_net():
    """in (2) -> h (4 IF, θ=1, v0=0.5) -> out (2); two neurons per core, two cores per chip of 1 x 2 routers:
    in and h[0:2] on chip 0, h[2:4] and out on chip 1, the chips side by side (snake placement)."""
    from spikeforge.converter.mapping import one_population_per_core

    pops = [Population.make("in", "input", (2,)), Population.make("h", "if", (4,), 1.0, 0.5),
            Population.make("out", "readout", (2,))]
    w1 = np.array([[1.0, 0], [0.6, 0], [0.2, 0], [1.0, 0]], np.float32)
    projs = [Projection("w1", "dense", "in", "h", w1),
             Projection("w2", "dense", "h", "out", np.ones((2, 4), np.float32))]
    cores, edges = one_population_per_core(pops, projs)
    return map_network(Network(pops, projs, cores, edges), _limits(), "snake")


def test_hops_between_chips_are_counted_apart_by_hand():
    """Cores: in (0,0) and h[0:2] (0,1) on chip 0; h[2:4] (1,0) and out (1,1) on chip 1. h's currents 1, .6, .2,
    1 fire 4, 2, 1, 4 times in 4 steps; every spike is one packet to out. From h[0:2] (6 spikes): x 0 -> 1 crosses
    the chip edge (a chip hop), then y stays at 1: 0 hops on a chip. From h[2:4] (5 spikes): one hop on chip 1."""
    net = _two_chip_net()
    assert net.attrs["chip_mesh"] == [1, 2]
    assert list(zip(net.cores.chip, net.cores.x, net.cores.y)) == [(0, 0, 0), (0, 0, 1), (1, 1, 0), (1, 1, 1)]
    res = simulator.run(net, np.array([[1.0, 0.0]]), 4, record_links=True)
    assert res.total("packets") == 11
    assert (res.total("hops"), res.total("chip_packets"), res.total("chip_hops")) == (5, 6, 6)
    np.testing.assert_array_equal(res.counter("chip_hops")[:, 1], [2, 1, 2, 1])  # core 1's spikes per step
    ll = link_loads(res.flows, res.flow_src, res.flow_dst, net.cores.x, net.cores.y, chip_mesh=(1, 2))
    links = {tuple(k): (bool(c), int(ll.loads[:, i].sum())) for i, (k, c) in
             enumerate(zip(ll.links.tolist(), ll.chip_link)) if ll.loads[:, i].any()}
    assert links == {(0, 1, 0): (True, 6), (1, 0, 2): (False, 5)}  # (0,1) east to chip 1; (1,0) north on chip 1
    np.testing.assert_array_equal(ll.loads.sum(axis=1), (res.counter("hops") + res.counter("chip_hops")).sum(1))


def test_chip_hops_are_priced_with_the_targets_chip_link_figure():
    """TrueNorth prices a chip-to-chip crossing at 728 pJ (Merolla 2014 S5: 26 pJ/bit, 32- / 24-bit packets) and
    an on-chip hop at 0: the 6 crossings of the network above cost 6 x 728 pJ; Loihi has no published figure and
    prices them as on-chip hops (3.5 pJ each, 11 in all)."""
    net = _two_chip_net()
    res = simulator.run(net, np.array([[1.0, 0.0]]), 4)
    labels = [net.populations[int(i)].name for i in net.cores.population]
    tn = estimate(res.counters, simulator.COUNTERS, 1, load_target("truenorth"), labels)
    assert tn.dynamic_pj["chip_hops"] == pytest.approx(6 * 728.0) and tn.dynamic_pj["hops"] == 0
    loihi = load_target("loihi")
    assert "not published" in loihi.sources["energy_pj.chip_hops"]
    lo = estimate(res.counters, simulator.COUNTERS, 1, loihi, labels)
    assert lo.dynamic_pj["hops"] + lo.dynamic_pj["chip_hops"] == pytest.approx(11 * 3.5)


def test_multi_chip_barrier_interpolates_between_measured_points():
    """Loihi: one chip's barrier from the tile table (1.8 µs at 29+ tiles); Frady 2020's measured 14.3 µs at 256
    chips and 16.2 µs at 768; between one chip and 256, linear in log2(chips): 64 chips = 1.8 + 6/8 x 12.5."""
    loihi = load_target("loihi")
    assert loihi.barrier_ns(128, 32) == 1800.0
    assert loihi.barrier_ns(256 * 128, 32, chips=256) == pytest.approx(14300.0)
    assert loihi.barrier_ns(768 * 128, 32, chips=768) == pytest.approx(16200.0)
    assert loihi.barrier_ns(64 * 128, 32, chips=64) == pytest.approx(1800.0 + 0.75 * 12500.0)


def test_kernighan_lin_recut_lowers_the_axons_between_chips():
    """8 cores, 4 per chip; heavy edges i <-> i + 4 (10 axons), a light chain i -> i + 1 (1 axon). Filling chips in
    order cuts every heavy edge (40 + 1); the re-cut puts each heavy pair on one chip."""
    src = np.array([0, 1, 2, 3] + list(range(7)))
    dst = np.array([4, 5, 6, 7] + list(range(1, 8)))
    w = np.array([10.0] * 4 + [1.0] * 7)
    start = np.arange(8) // 4

    def cut(chip):
        return float(w[chip[src] != chip[dst]].sum())

    chip = kl_chips(start, src, dst, w)
    assert cut(start) == 41 and cut(chip) < 10
    assert np.bincount(chip).tolist() == [4, 4]
    # chips of unequal sizes keep their sizes: a chain 0-1-2 | 3-4 whose heavy edge 2-3 crosses moves core 2
    uneven = kl_chips(np.array([0, 0, 0, 1, 1]), np.array([0, 1, 2, 3]), np.array([1, 2, 3, 4]),
                      np.array([1.0, 1.0, 5.0, 1.0]))
    assert np.bincount(uneven).tolist() == [3, 2] and uneven[2] == uneven[3]
    chips, x, y = place(8, src, dst, w, _limits(cores_per_chip=4, mesh_width=2), "anneal")
    assert np.bincount(chips).tolist() == [4, 4] and cut(chips) < 10
    cx, cy = x // 2, y // 2  # each chip's cores share its 2 x 2 cell, and the two chips have their own
    assert len({(int(c), int(a), int(b)) for c, a, b in zip(chips, cx, cy)}) == 2
    assert len({(int(a), int(b)) for a, b in zip(x, y)}) == 8


def test_a_file_whose_chips_do_not_tile_the_mesh_is_refused(tmp_path):
    import h5py

    from spikeforge.converter.writer import write_network

    path = str(tmp_path / "bad.h5")
    write_network(_two_chip_net(), path)
    with h5py.File(path, "r+") as h5:
        h5["mapping/cores/x"][...] = [0, 1, 0, 1]  # chip 1's cores inside chip 0's cell
    with pytest.raises(simulator.NetworkFileError, match="/mapping/cores/chip.*do not tile the mesh"):
        simulator.load_network(path)
    with h5py.File(path, "r+") as h5:
        h5.attrs["chip_mesh"] = [0, 2]
    with pytest.raises(simulator.NetworkFileError, match="chip_mesh must be two positive integers"):
        simulator.load_network(path)
    # a file before format 1.11 (no chip_mesh) is not held to a tiling: one chip-to-chip link per packet between
    # two chips (h[0:2] at (1,1) on chip 0 -> out at (1,1) on chip 1: 6 spikes, the crossing and no other hop;
    # h[2:4] at (0,0) on chip 1 -> out: 2 hops on the chip for each of its 5 spikes)
    with h5py.File(path, "r+") as h5:
        del h5.attrs["chip_mesh"]
    res = simulator.run(simulator.load_network(path), np.array([[1.0, 0.0]]), 4)
    assert (res.total("chip_packets"), res.total("chip_hops"), res.total("hops")) == (6, 6, 10)


def test_chip_cells_of_a_file_without_chip_mesh_come_from_the_chips_extent():
    net = _two_chip_net()
    cx, cy = chip_cells(net.cores)  # no chip_mesh: each chip spans 1 x 2 routers
    assert cx.tolist() == [0, 0, 1, 1] and cy.tolist() == [0, 0, 0, 0]


def test_a_converted_network_over_several_chips_counts_every_packet_that_leaves_its_chip(converted_resnet,
                                                                                         digits):
    """The digits ResNet on Loihi cut to 8 cores per chip: same output as on one chip; chip_packets equals the
    recorded flows whose ends are on two chips, and annealing (Kernighan-Lin chips) sends fewer of them than
    filling chips in layer order."""
    import dataclasses

    x = digits[2][:4].numpy()
    loihi = load_target("loihi")
    small = dataclasses.replace(loihi, limits=dict(loihi.limits, cores_per_chip=8, mesh_width=4, chips=64))
    base = simulator.run(map_network(converted_resnet, loihi, "snake"), x, 4)
    crossing = {}
    for placement in ("snake", "anneal"):
        m = map_network(converted_resnet, small, placement)
        assert len(np.unique(m.cores.chip)) > 1
        res = simulator.run(m, x, 4, record_links=True)
        np.testing.assert_array_equal(res.output, base.output)
        other = m.cores.chip[res.flow_src] != m.cores.chip[res.flow_dst]
        assert res.total("chip_packets") == int(res.flows[:, other].sum()) > 0
        crossing[placement] = res.total("chip_packets")
    assert crossing["anneal"] < crossing["snake"]


@pytest.fixture(scope="module")
def converted_resnet(trained_resnet, digits):
    from spikeforge.converter import convert

    return convert(trained_resnet, [digits[0][:256]], norm="percentile", percentile=99.9)


def test_unique_ints_sorts_and_drops_repeats_as_np_unique_does():
    """The routing's (source neuron, destination core) keys are made unique by sorting (numpy's hashed unique took
    minutes on a 69,037-core mapping): the same array as np.unique, also for none, one and negative keys."""
    from spikeforge.simulator.arrays import unique_ints

    rng = np.random.default_rng(0)
    keys = rng.integers(-(1 << 40), 1 << 40, 5000)
    keys = np.concatenate([keys, keys[:1500], rng.integers(0, 50, 2000)])
    for a in (keys, keys[:1], keys[:0], np.repeat(keys[:3], 4)):
        out = unique_ints(a)
        assert out.dtype == a.dtype and np.array_equal(out, np.unique(a))


def test_routing_tables_built_in_small_passes_equal_one_pass(converted_resnet, monkeypatch):
    """The packets' (source neuron, destination core) keys are walked in passes of PACKET_CHUNK (a whole-array pass
    needed 16.7 GB for a ResNet-34 mapping): passes of 7 keys, which cut sources' packets and flows apart, give the
    same per-neuron packets, hops, chip packets, chip hops and flows, array for array, as one pass."""
    import dataclasses

    from spikeforge.simulator import arrays, engine

    loihi = load_target("loihi")
    small = dataclasses.replace(loihi, limits=dict(loihi.limits, cores_per_chip=8, mesh_width=4, chips=64))
    m = map_network(converted_resnet, small, "anneal")
    whole = engine.prepare(m).routing
    assert whole.n_chip_packets.sum() > 0 and len(whole.fl_id) > 7 * 10
    monkeypatch.setattr(arrays, "PACKET_CHUNK", 7)
    parts = engine.prepare(m).routing
    for name, value in whole._asdict().items():
        np.testing.assert_array_equal(getattr(parts, name), value, err_msg=name)
        assert getattr(parts, name).dtype == value.dtype, name
