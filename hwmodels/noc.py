"""Link-level model of the mesh network-on-chip: dimension-order (XY) routes and per-link packet loads.

Input: the simulator's per-step packet counts of every core-to-core flow (Result.flows with flow_src /
flow_dst, from run(..., record_links=True)) and the cores' global mesh coordinates (chips tile one grid, so a
route that leaves a chip crosses its edge like any other link). A packet from (x0, y0) to (x1, y1) first
travels along x, then along y (deadlock-free dimension-order routing as on Loihi and TrueNorth); every hop uses
one directed link, named by the router it leaves and its direction. Summed over links the loads equal the
simulator's hops + chip_hops counters, which tests check.

Chips tile the grid (network.chip_cells): a link whose ends are on two chips is a chip-to-chip link, counted
apart (the simulator's chip_hops; its hops counter holds the other links), priced and timed as the target's
chip_hops. Latency of a step's traffic (hwmodels.cost): the busiest link serializes its packets, one link time
each, and the last of them still has to finish its route: busiest link's packets x its link time + the slowest
active route's time - one hop.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

DIRECTIONS = ("east", "west", "north", "south")  # +x, -x, +y, -y


@dataclass
class LinkLoads:
    """Packets per directed link and step (summed over the simulated samples)."""

    links: np.ndarray  # (L, 3) int64: x, y of the router the link leaves, direction index into DIRECTIONS
    loads: np.ndarray  # (T, L) int64
    longest_route: np.ndarray  # (T,) hops of the longest route that carried a packet in the step
    chip_link: np.ndarray = None  # (L,) bool: the link joins two chips (None: all on one chip)
    flow_hops: np.ndarray = None  # (F, 2) int64: each flow's on-chip hops and chip-to-chip links
    active: np.ndarray = None  # (T, F) bool: the flow carried a packet in the step

    def route_ns(self, hop_ns, chip_hop_ns) -> np.ndarray:
        """(T,) time of the slowest route that carried a packet in each step, its chip-to-chip links at
        chip_hop_ns, its other hops at hop_ns."""
        if self.flow_hops is None or not len(self.flow_hops):
            return self.longest_route * hop_ns
        ns = self.flow_hops[:, 0] * hop_ns + self.flow_hops[:, 1] * chip_hop_ns
        return np.where(self.active, ns[None, :], 0.0).max(axis=1)

    def busiest_ns(self, hop_ns, chip_hop_ns) -> np.ndarray:
        """(T,) packets x time per packet of the busiest link in each step (chip-to-chip links at chip_hop_ns)."""
        if not self.loads.shape[1]:
            return np.zeros(len(self.loads))
        unit = np.full(self.loads.shape[1], float(hop_ns))
        if self.chip_link is not None:
            unit[self.chip_link] = chip_hop_ns
        return (self.loads * unit[None, :]).max(axis=1)

    def busiest(self) -> np.ndarray:
        """(T,) load of the busiest link in each step."""
        return self.loads.max(axis=1) if self.loads.shape[1] else np.zeros(len(self.loads), np.int64)

    def busiest_link(self) -> tuple:
        """(x, y, direction name, packets over all steps) of the link with the most traffic."""
        if not self.loads.shape[1]:
            return None
        k = int(self.loads.sum(axis=0).argmax())
        x, y, d = self.links[k]
        return int(x), int(y), DIRECTIONS[int(d)], int(self.loads[:, k].sum())


def xy_route(x0, y0, x1, y1) -> list:
    """Directed links (x, y, direction) of the XY route from (x0, y0) to (x1, y1)."""
    links = []
    step = 1 if x1 > x0 else -1
    for x in range(x0, x1, step):
        links.append((x, y0, 0 if step > 0 else 1))
    step = 1 if y1 > y0 else -1
    for y in range(y0, y1, step):
        links.append((x1, y, 2 if step > 0 else 3))
    return links


def crosses_chips(link, chip_mesh) -> bool:
    """Whether the directed link (x, y, direction) leaves its chip (chips of chip_mesh = (columns, rows) routers)."""
    if chip_mesh is None:
        return False
    x, y, d = link
    w, h = chip_mesh
    nx, ny = x + (1, -1, 0, 0)[d], y + (0, 0, 1, -1)[d]
    return x // w != nx // w or y // h != ny // h


def route_matrix(flow_src, flow_dst, core_x, core_y, chip_mesh=None):
    """(flows x links) 0/1 sparse matrix of the XY routes, the links' (x, y, direction), each flow's hops, and
    (with chip_mesh) which links join two chips and each flow's (on-chip hops, chip-to-chip links)."""
    index = {}
    rows, cols = [], []
    hops = np.zeros(len(flow_src), np.int64)
    for f, (s, d) in enumerate(zip(np.asarray(flow_src), np.asarray(flow_dst))):
        route = xy_route(int(core_x[s]), int(core_y[s]), int(core_x[d]), int(core_y[d]))
        hops[f] = len(route)
        for link in route:
            rows.append(f)
            cols.append(index.setdefault(link, len(index)))
    links = np.array(list(index), np.int64).reshape(-1, 3)
    r = sp.csr_matrix((np.ones(len(rows), np.int64), (rows, cols)), shape=(len(flow_src), len(index)))
    chip_link = np.array([crosses_chips(tuple(int(v) for v in link), chip_mesh) for link in links], bool)
    crossing = r @ chip_link.astype(np.int64)  # chip-to-chip links per flow
    split = np.stack([hops - crossing, crossing], axis=1)
    return r, links, hops, chip_link, split


def link_loads(flows, flow_src, flow_dst, core_x, core_y, stage=None, chip_mesh=None) -> LinkLoads:
    """Per-step packet loads of every link used by the flows (flows: (T, F) packets per flow and step); chip_mesh
    (columns, rows of one chip's routers) marks the links between chips.

    stage: optional per-core pipeline stage (cost.core_memory's "stage", on a pipelined target): a flow's packets
    of step t travel in the chip's step t + the stage of the core sending them, over T + the deepest stage steps."""
    flows = np.asarray(flows, np.int64)
    if stage is not None:
        from .cost import staggered

        stage = np.asarray(stage, np.int64)
        flows = staggered(flows, stage[np.asarray(flow_src, np.int64)], int(stage.max(initial=0)), np.int64)
    r, links, hops, chip_link, split = route_matrix(flow_src, flow_dst, core_x, core_y, chip_mesh)
    loads = np.asarray((r.T @ flows.T).T, np.int64).reshape(len(flows), len(links))
    active = flows > 0
    longest = np.where(active, hops[None, :], 0).max(axis=1) if flows.shape[1] else np.zeros(len(flows), np.int64)
    return LinkLoads(links, loads, longest.astype(np.int64), chip_link, split, active)


def chip_link_loads(result, net, target, memory=None) -> LinkLoads:
    """Link loads of a simulator Result recorded with record_links=True, on the steps `target` runs: shifted by
    the cores' pipeline stages (cost.core_memory) when the target is pipelined."""
    if result.flows is None:
        raise ValueError("the run recorded no flows: simulate with record_links=True")
    stage = None
    if target.pipelined:
        from .cost import core_memory

        stage = (memory or core_memory(net))["stage"]
    from spikeforge.simulator.network import chip_mesh_of

    return link_loads(result.flows, result.flow_src, result.flow_dst, net.cores.x, net.cores.y, stage=stage,
                      chip_mesh=chip_mesh_of(net.cores, net.attrs.get("chip_mesh")))
