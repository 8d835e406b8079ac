"""Placement of a mapping's cores on chips and on each chip's mesh (map_network's second step).

Chips tile one mesh of routers (their links join across chip edges, as TrueNorth's and Loihi's do), each chip
`chip_mesh(limits)` = (columns, rows) routers; the simulator counts a hop between two chips apart from one on a
chip (simulator.network.chip_cells), and targets price it apart (energy_pj / time_ns "chip_hops"). Placement is
therefore two-level, as the costs are:

1. Which chip holds a core: on one chip, all of them. Otherwise the cores fill chips in layer order (consecutive
   layers share a chip), and with "anneal" the pairs of chips that exchange axons are re-cut by Kernighan-Lin
   bisection (networkx), heaviest pair first (at most KL_PAIRS_PER_CHIP x chips pairs and KL_EDGES edges in
   all), so the axons crossing between chips shrink; a bisection swaps cores, so every chip keeps its size.
2. Where the chips sit on the board: a boustrophedon walk over a square grid of chips (consecutive chips are
   neighbours), with "anneal" annealed by the axons between chips.
3. Where a core sits on its chip: a boustrophedon walk of the chip's mesh, with "anneal" annealed by the axons
   between the chip's own cores (Σ axons x Manhattan distance; traffic to other chips does not pull a core
   towards the chip edge).
The edge weights are axons per core edge (one packet per source neuron that fires) or measured packets.
"""
from __future__ import annotations

import math
from collections import namedtuple

import numpy as np
from numba import njit

ANNEAL_ITERS = 200_000  # swaps tried over the whole mapping (at most 200 per core)
KL_PAIRS_PER_CHIP = 4  # chip pairs re-cut by Kernighan-Lin: at most this many times the chips in use
KL_EDGES = 1_000_000  # and at most this many edges handed to the bisections over the whole mapping
KL_PASSES = 2  # swap passes per bisection (networkx's default 10 gained little more on ResNet-50)


def chip_mesh(limits) -> tuple:
    """(columns, rows) of one chip's mesh: mesh_width columns (0: the square root of cores_per_chip, rounded up)."""
    per_chip = int(limits["cores_per_chip"])
    width = int(limits.get("mesh_width", 0)) or math.ceil(math.sqrt(per_chip))
    return width, math.ceil(per_chip / width)


def mesh_slots(n_cores, limits):
    """(chip, x, y) of every slot in walking order: a boustrophedon path per chip, chips on a square grid."""
    per_chip = int(limits["cores_per_chip"])
    width, height = chip_mesh(limits)
    chips = max(1, math.ceil(n_cores / per_chip))
    grid = math.ceil(math.sqrt(chips))
    slots = []
    for chip in range(chips):
        cx, cy = (chip % grid) * width, (chip // grid) * height
        slots.extend((chip, cx + x, cy + y) for x, y in _walk(per_chip, width))
    return np.array(slots, np.int64)


def _walk(n, width):
    """(x, y) of n slots along a boustrophedon path over rows of `width`."""
    out = []
    for i in range(n):
        row, col = divmod(i, width)
        out.append((col if row % 2 == 0 else width - 1 - col, row))
    return out


def placement_cost(pos, src, dst, weight):
    """Σ weight x Manhattan distance between the slots of the edge ends (pos: (cores, 2) x, y)."""
    return float((weight * np.abs(pos[src] - pos[dst]).sum(axis=1)).sum())


def place(n_cores, src, dst, weight, limits, placement="anneal", seed=0) -> tuple:
    """(chip, x, y) arrays of n_cores cores (in layer order) joined by edges src -> dst of `weight`."""
    per_chip = int(limits["cores_per_chip"])
    width, height = chip_mesh(limits)
    if n_cores <= per_chip:
        slots = mesh_slots(n_cores, limits)
        where = anneal(slots, src, dst, weight, n_cores, seed=seed) if placement == "anneal" else \
            np.arange(n_cores)
        return slots[where, 0], slots[where, 1], slots[where, 2]
    chip = np.arange(n_cores) // per_chip
    if placement == "anneal":
        chip = kl_chips(chip, src, dst, weight, seed)
    n_chips = int(chip.max()) + 1
    grid = math.ceil(math.sqrt(n_chips))
    cells = np.array([(0, x, y) for x, y in _walk(grid * grid, grid)], np.int64)
    at = np.arange(n_chips)  # chip -> cell
    weight = np.asarray(weight, np.float64)
    if placement == "anneal":
        cs, cd = chip[src], chip[dst]
        keep = cs != cd
        key, inverse = np.unique(cs[keep] * n_chips + cd[keep], return_inverse=True)  # one edge per chip pair
        at = anneal(cells, key // n_chips, key % n_chips, np.bincount(inverse, weights=weight[keep]), n_chips,
                    seed=seed)
    x, y = np.zeros(n_cores, np.int64), np.zeros(n_cores, np.int64)
    budget = min(ANNEAL_ITERS, 200 * n_cores)
    slots = np.array([(0, sx, sy) for sx, sy in _walk(per_chip, width)], np.int64)
    local = np.zeros(n_cores, np.int64)  # a core's index among its chip's cores (in layer order)
    inside = np.flatnonzero(chip[src] == chip[dst])
    inside = inside[np.argsort(chip[src[inside]], kind="stable")]  # each chip's own edges, chip by chip
    bounds = np.searchsorted(chip[src[inside]], np.arange(n_chips + 1))
    for k in range(n_chips):
        members = np.flatnonzero(chip == k)
        local[members] = np.arange(len(members))
        where = np.arange(len(members))
        if placement == "anneal" and len(members) > 1:
            e = inside[bounds[k]:bounds[k + 1]]
            where = anneal(slots, local[src[e]], local[dst[e]], weight[e], len(members),
                           iters=max(1, budget * len(members) // n_cores), seed=seed)
        x[members] = cells[at[k], 1] * width + slots[where, 1]
        y[members] = cells[at[k], 2] * height + slots[where, 2]
    return chip, x, y


def kl_chips(chip, src, dst, weight, seed=0, budget=None):
    """chip (core -> chip) with each pair of chips re-cut by Kernighan-Lin bisection (networkx, sizes kept) where
    that lowers the axons between them; pairs by the axons between them, heaviest first, at most
    KL_PAIRS_PER_CHIP per chip, until the bisections have been handed `budget` edges (KL_EDGES: a bound on the
    work, so a 70,000-core mapping re-cuts its heaviest pairs in seconds; deterministic)."""
    import networkx as nx

    chip = np.array(chip, np.int64)
    budget = KL_EDGES if budget is None else budget
    n = len(chip)
    keep = src != dst
    lo, hi = np.minimum(src[keep], dst[keep]), np.maximum(src[keep], dst[keep])
    key, inverse = np.unique(lo * n + hi, return_inverse=True)  # undirected, weights summed
    u, v = key // n, key % n
    w = np.bincount(inverse, weights=np.asarray(weight, np.float64)[keep], minlength=len(key))
    order = np.argsort(u, kind="stable")  # edges by their lower end: a core's edges to higher cores
    ptr = np.searchsorted(u[order], np.arange(n + 1))
    n_chips = int(chip.max()) + 1
    cut = chip[u] != chip[v]
    pair = np.minimum(chip[u], chip[v]) * n_chips + np.maximum(chip[u], chip[v])
    keys, inv = np.unique(pair[cut], return_inverse=True)
    heavy = np.bincount(inv, weights=w[cut], minlength=len(keys))
    spent = 0
    for k in keys[np.argsort(-heavy, kind="stable")][:KL_PAIRS_PER_CHIP * n_chips]:
        a, b = int(k // n_chips), int(k % n_chips)
        members = np.flatnonzero((chip == a) | (chip == b))
        rows = [order[ptr[m]:ptr[m + 1]] for m in members]
        e = np.concatenate(rows) if rows else np.zeros(0, np.int64)
        e = e[(chip[v[e]] == a) | (chip[v[e]] == b)]  # edges with both ends on the pair
        spent += len(e)
        if spent > budget:
            break
        graph = nx.Graph()
        graph.add_nodes_from(members.tolist())
        graph.add_weighted_edges_from(zip(u[e].tolist(), v[e].tolist(), w[e].tolist()))
        on_a, on_b = set(np.flatnonzero(chip == a).tolist()), set(np.flatnonzero(chip == b).tolist())
        p, q = nx.algorithms.community.kernighan_lin_bisection(graph, partition=(on_a, on_b), max_iter=KL_PASSES,
                                                               weight="weight", seed=seed)
        # the halves come back in either order (networkx versions differ): chip a keeps its size and, between
        # two halves of its size, the one holding more of its cores
        side_a = p if len(p) == len(on_a) and (len(q) != len(on_a) or len(p & on_a) >= len(q & on_a)) else q
        trial = chip.copy()
        trial[members] = b
        trial[sorted(side_a)] = a
        if w[e][trial[u[e]] != trial[v[e]]].sum() < w[e][chip[u[e]] != chip[v[e]]].sum():
            chip = trial
    return chip


def anneal(slots, src, dst, weight, n_cores, iters=None, seed=0, with_cost=False):
    """Assignment core -> slot index by simulated annealing of swaps, starting from the walking order: a core and a
    random slot (empty or another core's) trade places when that shortens Σ weight x Manhattan distance, or
    uphill with the Metropolis probability under a temperature falling linearly to 0; the best assignment seen is
    kept. The swaps run in a numba kernel (`_swaps`) on draws made here, so a seed gives one placement. With
    with_cost: (assignment, its cost minus the walking order's)."""
    rng = np.random.default_rng(seed)
    n_slots = len(slots)
    xy = np.ascontiguousarray(slots[:, 1:], np.int64)
    where = np.arange(n_cores, dtype=np.int64)  # core -> slot
    occupant = np.full(n_slots, -1, np.int64)
    occupant[:n_cores] = np.arange(n_cores)
    # undirected adjacency (CSR) with summed weights
    src, dst = np.asarray(src, np.int64), np.asarray(dst, np.int64)
    keep = src != dst
    u = np.concatenate([src[keep], dst[keep]])
    v = np.concatenate([dst[keep], src[keep]])
    w = np.concatenate([np.asarray(weight)[keep], np.asarray(weight)[keep]]).astype(np.float64)
    order = np.argsort(u, kind="stable")
    u, v, w = u[order], v[order], w[order]
    if len(u) == 0 or n_cores < 2:
        return (where, 0.0) if with_cost else where
    graph = Adjacency(np.searchsorted(u, np.arange(n_cores + 1)).astype(np.int64), v, w)
    iters = iters or min(200_000, 200 * n_cores)
    span = min(n_slots, max(2 * n_cores, n_cores + 16))  # empty slots near the used ones are candidates too
    draws = Draws(rng.integers(n_cores, size=iters), rng.integers(span, size=iters), rng.random(iters))
    temp0 = 0.5 * float(w.mean())  # accept early uphill moves of about half an average edge x one hop
    best_where, best = _swaps(graph, xy, where, occupant, draws, temp0)
    return (best_where, best) if with_cost else best_where


Adjacency = namedtuple("Adjacency", "ptr nb wt")  # CSR: core c's neighbours nb[ptr[c]:ptr[c + 1]], weights wt
Draws = namedtuple("Draws", "core slot coin")  # per swap tried: the core, the slot, a uniform for uphill moves


@njit(cache=True)
def _moved(graph, xy, where, core, slot, skip):
    """Change of Σ weight x distance over core's edges (but the one to `skip`) when core moves to `slot`."""
    total = 0.0
    cx, cy = xy[where[core], 0], xy[where[core], 1]
    sx, sy = xy[slot, 0], xy[slot, 1]
    for e in range(graph.ptr[core], graph.ptr[core + 1]):
        nb = graph.nb[e]
        if nb == skip:
            continue
        px, py = xy[where[nb], 0], xy[where[nb], 1]
        total += graph.wt[e] * ((abs(px - sx) + abs(py - sy)) - (abs(px - cx) + abs(py - cy)))
    return total


@njit(cache=True)
def _swaps(graph, xy, where, occupant, draws, temp0):
    """anneal's loop: (best assignment, its cost relative to the start); `where` and `occupant` are updated."""
    iters = len(draws.core)
    cost = 0.0
    best = 0.0
    best_where = where.copy()
    for it in range(iters):
        temp = temp0 * (1.0 - it / iters) + 1e-9
        i = draws.core[it]
        s = draws.slot[it]
        j = occupant[s]
        if j == i:
            continue
        si = where[i]
        delta = _moved(graph, xy, where, i, s, j)
        if j >= 0:
            delta += _moved(graph, xy, where, j, si, i)
        if delta <= 0 or draws.coin[it] < math.exp(-delta / temp):
            where[i] = s
            occupant[s] = i
            occupant[si] = j
            if j >= 0:
                where[j] = si
            cost += delta
            if cost < best - 1e-9:
                best = cost
                best_where[:] = where
    return best_where, best
