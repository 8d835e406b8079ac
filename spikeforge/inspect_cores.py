"""`spikeforge inspect`: per-core loads of a mapped network file, and a PNG of the mesh (load heatmap) and the
core graph (edges as wide as their axons, i.e. packets per step if every source neuron fires once)."""
from __future__ import annotations

import numpy as np

from spikeforge.converter.mapping import core_load
from spikeforge.simulator.atomic import save_figure


def core_loads(net, target=None):
    """One dict per core: population, neurons, input axons, synapse bytes, and utilization of the target's
    limits (fractions) when a target is given."""
    limits = target.limits if target is not None else {"weight_bits": 32, "neurons_per_core": 1024}
    rows = []
    c = net.cores
    for i in range(len(c.core_id)):
        pop = net.populations[int(c.population[i])]
        load = core_load(net, pop, int(c.neuron_start[i]), int(c.neuron_stop[i]), limits)
        row = {"core": i, "chip": int(c.chip[i]), "x": int(c.x[i]), "y": int(c.y[i]), "population": pop.name,
               "neurons": load.neurons, "axons": load.axons, "synapse_bytes": float(load.synapse_bytes)}
        if target is not None:
            row["util_neurons"] = load.neurons / limits["neurons_per_core"]
            row["util_axons"] = load.axons / limits["axons_per_core"]
            row["util_memory"] = load.synapse_bytes / limits["synapse_memory_bytes_per_core"]
        rows.append(row)
    return rows


def plot_cores(net, rows, path, title=""):
    """Left: mesh heatmap of each core's busiest limit (or neurons); right: core graph at mesh positions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import networkx as nx

    xs, ys = net.cores.x, net.cores.y
    w, h = int(xs.max()) + 1, int(ys.max()) + 1
    grid = np.full((h, w), np.nan)
    util = "util_neurons" in rows[0]
    for r in rows:
        grid[r["y"], r["x"]] = max(r["util_neurons"], r["util_axons"], r["util_memory"]) if util else r["neurons"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 5.5))
    im = a.imshow(grid, cmap="viridis", origin="upper", vmin=0, vmax=1 if util else None)
    fig.colorbar(im, ax=a, label="max utilization of a core limit" if util else "neurons")
    a.set_title("per-core load on the mesh")
    a.set_xlabel("x")
    a.set_ylabel("y")
    g = net.core_graph()
    pos = {n: (float(xs[n]), -float(ys[n])) for n in g.nodes}
    pops = [d["population"] for _, d in g.nodes(data=True)]
    axons = np.array([d["axons"] for *_, d in g.edges(data=True)], float)
    width = 0.3 + 3 * axons / axons.max() if len(axons) else []
    nx.draw_networkx_edges(g, pos, ax=b, width=width, alpha=0.35, arrows=False)
    nx.draw_networkx_nodes(g, pos, ax=b, node_size=30, node_color=pops, cmap="tab20")
    b.set_title("core graph (colour: layer; width: axons)")
    b.set_aspect("equal")
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    plt.close(fig)
