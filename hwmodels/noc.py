"""Link-level model of the mesh network-on-chip: dimension-order (XY) routes and per-link packet loads.

Input: the simulator's per-step packet counts of every core-to-core flow (Result.flows with flow_src /
flow_dst, from run(..., record_links=True)) and the cores' global mesh coordinates (chips tile one grid, so a
route that leaves a chip crosses its edge like any other link). A packet from (x0, y0) to (x1, y1) first
travels along x, then along y (deadlock-free dimension-order routing as on Loihi and TrueNorth); every hop uses
one directed link, named by the router it leaves and its direction. Summed over links the loads equal the
simulator's hop counter, which tests check.

Latency of a step's traffic (hwmodels.cost): the busiest link serializes its packets, one hop time each, and
the last of them still has to finish its route: (busiest link load + longest active route - 1) x t_hop.
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


def route_matrix(flow_src, flow_dst, core_x, core_y):
    """(flows x links) 0/1 sparse matrix of the XY routes, the links' (x, y, direction), each flow's hops."""
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
    return r, links, hops


def link_loads(flows, flow_src, flow_dst, core_x, core_y, stage=None) -> LinkLoads:
    """Per-step packet loads of every link used by the flows (flows: (T, F) packets per flow and step).

    stage: optional per-core pipeline stage (cost.core_memory's "stage", on a pipelined target): a flow's packets
    of step t travel in the chip's step t + the stage of the core sending them, over T + the deepest stage steps."""
    flows = np.asarray(flows, np.int64)
    if stage is not None:
        from .cost import staggered

        stage = np.asarray(stage, np.int64)
        flows = staggered(flows, stage[np.asarray(flow_src, np.int64)], int(stage.max(initial=0)), np.int64)
    r, links, hops = route_matrix(flow_src, flow_dst, core_x, core_y)
    loads = np.asarray((r.T @ flows.T).T, np.int64).reshape(len(flows), len(links))
    active = flows > 0
    longest = np.where(active, hops[None, :], 0).max(axis=1) if flows.shape[1] else np.zeros(len(flows), np.int64)
    return LinkLoads(links, loads, longest.astype(np.int64))


def chip_link_loads(result, net, target, memory=None) -> LinkLoads:
    """Link loads of a simulator Result recorded with record_links=True, on the steps `target` runs: shifted by
    the cores' pipeline stages (cost.core_memory) when the target is pipelined."""
    if result.flows is None:
        raise ValueError("the run recorded no flows: simulate with record_links=True")
    stage = None
    if target.pipelined:
        from .cost import core_memory

        stage = (memory or core_memory(net))["stage"]
    return link_loads(result.flows, result.flow_src, result.flow_dst, net.cores.x, net.cores.y, stage=stage)
