"""Mapping of populations onto cores.

For now: the trivial mapping, one population per core, cores laid out row by
row on a square mesh of one chip. The core graph records, for every pair of
cores joined by a projection, the number of synapses and of axons (distinct
source neurons with at least one synapse into the destination core).
"""
from __future__ import annotations

import math

import numpy as np

from simulator.geometry import synapses_per_source
from simulator.network import CoreEdges, CoreTable


def one_population_per_core(populations, projections):
    """Return (CoreTable, CoreEdges) with core i holding population i whole."""
    n = len(populations)
    width = max(1, math.ceil(math.sqrt(n)))
    ids = np.arange(n, dtype=np.int64)
    cores = CoreTable(core_id=ids, chip=np.zeros(n, np.int64), x=ids % width, y=ids // width,
                      population=ids.copy(), neuron_start=np.zeros(n, np.int64),
                      neuron_stop=np.array([p.size for p in populations], np.int64))
    index = {p.name: i for i, p in enumerate(populations)}
    edges = {}
    for proj in projections:
        s, t = index[proj.source], index[proj.target]
        fan = synapses_per_source(proj, populations[s].shape, populations[t].shape)
        syn, ax = edges.get((s, t), (0, 0))
        # axons: distinct source neurons that reach the core; several projections between the
        # same pair share axons only if they come from the same neurons, so take the maximum.
        edges[(s, t)] = (syn + int(fan.sum()), max(ax, int(np.count_nonzero(fan))))
    keys = sorted(edges)
    core_edges = CoreEdges(src=np.array([k[0] for k in keys], np.int64), dst=np.array([k[1] for k in keys], np.int64),
                           synapses=np.array([edges[k][0] for k in keys], np.int64),
                           axons=np.array([edges[k][1] for k in keys], np.int64))
    return cores, core_edges
