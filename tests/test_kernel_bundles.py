"""The engine's numba kernels take bundles (namedtuples of arrays), a handful of parameters each; the bundles have
the same numba types for every network and run option, so the kernels compile once."""
import inspect

import numba
import numpy as np
from numba.core.registry import CPUDispatcher

from spikeforge import simulator
from spikeforge.converter.mapping import one_population_per_core
from spikeforge.simulator import Network, Population, Projection
from spikeforge.simulator import kernels as K


def _net(pops, projs):
    cores, edges = one_population_per_core(pops, projs)
    net = Network(pops, projs, cores, edges, {})
    simulator.validate_network(net)
    return net


def _dense_net(rng):
    pops = [Population.make("in", "input", (6,)), Population.make("h", "if", (4,), 0.5, 0.25),
            Population.make("out", "readout", (3,))]
    projs = [Projection("a", "dense", "in", "h", rng.normal(0, 0.5, (4, 6)).astype(np.float32)),
             Projection("b", "dense", "h", "out", rng.normal(0, 0.5, (3, 4)).astype(np.float32))]
    return _net(pops, projs)


def _conv_sparse_net(rng):
    pops = [Population.make("in", "input", (2, 5, 5)), Population.make("c", "group", (3, 5, 5), 0.6, tau=3),
            Population.make("h", "if", (10,), 0.4), Population.make("out", "readout", (2,))]
    indptr = np.arange(0, 76 * 2, 2, dtype=np.int64)
    projs = [Projection("conv", "conv2d", "in", "c", rng.normal(0, 0.4, (3, 2, 3, 3)).astype(np.float32),
                        padding=(1, 1)),
             Projection("sp", "sparse", "c", "h", rng.normal(0, 0.4, 150).astype(np.float32), indptr,
                        rng.integers(0, 10, 150).astype(np.int32)),
             Projection("fc", "dense", "h", "out", rng.normal(0, 0.5, (2, 10)).astype(np.float32))]
    return _net(pops, projs)


def test_no_kernel_takes_more_than_15_parameters():
    n_params = {name: len(inspect.signature(f.py_func).parameters) for name, f in vars(K).items()
                if isinstance(f, CPUDispatcher)}
    assert len(n_params) > 20
    assert max(n_params.values()) <= 15, n_params


def test_bundle_types_do_not_depend_on_the_network_or_the_run_options():
    rng = np.random.default_rng(0)
    a, b = simulator.prepare(_dense_net(rng)), simulator.prepare(_conv_sparse_net(rng))
    for bundle in ("pops", "projs", "routing"):
        assert numba.typeof(getattr(a, bundle)) == numba.typeof(getattr(b, bundle)), bundle
    res = simulator.run(a, rng.random((3, 6)), 4)
    n_compiled = len(K.run_batch.signatures)
    res = simulator.run(b, rng.random((3, 2, 5, 5)), 4, record=("c", "h"), record_counts=True, trace=(("h", 3),),
                        record_links=True)
    assert res.total("spikes") > 0 and res.total("synops") > 0
    simulator.run(a, rng.random((2, 6)), 2, record=("h",), trace=(("h", 0),), batch_size=1)
    assert len(K.run_batch.signatures) == n_compiled
