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
            row["over_capacity"] = max(row["util_neurons"], row["util_axons"], row["util_memory"]) > 1
        rows.append(row)
    return rows


def _load_colormap(vmax):
    """viridis from 0 to 1 (within a core's limits), then reds from 1 to vmax (over capacity), so a core at 2x
    looks different from a full one."""
    import matplotlib
    from matplotlib.colors import ListedColormap

    n = 256
    inside = max(2, int(round(n / vmax)))
    colors = [matplotlib.colormaps["viridis"](v) for v in np.linspace(0, 1, inside)]
    if vmax > 1:
        colors += [matplotlib.colormaps["Reds"](v) for v in np.linspace(0.45, 1, n - inside)]
    return ListedColormap(colors)


def plot_cores(net, rows, path, title=""):
    """Left: mesh heatmap of each core's busiest limit (or neurons), over-capacity cores in reds and labelled with
    their load; right: core graph at mesh positions, one colour per layer (legend)."""
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
    fig, (a, b) = plt.subplots(1, 2, figsize=(13, 5.5), gridspec_kw={"width_ratios": [1, 1.25]})
    if util:
        vmax = max(1.0, float(np.nanmax(grid)))
        im = a.imshow(grid, cmap=_load_colormap(vmax), origin="upper", vmin=0, vmax=vmax)
        bar = fig.colorbar(im, ax=a, label="max utilization of a core limit (> 1: over capacity)")
        if vmax > 1:
            from matplotlib import patheffects

            bar.ax.axhline(1.0, color="k", lw=2)  # the capacity line between viridis and reds
            outline = [patheffects.withStroke(linewidth=2, foreground="k")]
            for r in rows:
                load = grid[r["y"], r["x"]]
                if load > 1:
                    a.text(r["x"], r["y"], f"{load:.1f}x", ha="center", va="center", fontsize=7, color="w",
                           path_effects=outline)
    else:
        im = a.imshow(grid, cmap="viridis", origin="upper", vmin=0)
        fig.colorbar(im, ax=a, label="neurons")
    over = int(np.sum(grid > 1)) if util else 0
    a.set_title("per-core load on the mesh" + (f" ({over} cores over capacity)" if over else ""))
    from matplotlib.ticker import MaxNLocator

    a.xaxis.set_major_locator(MaxNLocator(integer=True))
    a.yaxis.set_major_locator(MaxNLocator(integer=True))
    a.set_xlabel("x (mesh column)")
    a.set_ylabel("y (mesh row)")
    g = net.core_graph()
    pos = {n: (float(xs[n]), -float(ys[n])) for n in g.nodes}
    axons = np.array([d["axons"] for *_, d in g.edges(data=True)], float)
    width = 0.3 + 3 * axons / axons.max() if len(axons) else []
    nx.draw_networkx_edges(g, pos, ax=b, width=width, alpha=0.35, arrows=False)
    cmap = matplotlib.colormaps["tab20"]
    for pi, pop in enumerate(net.populations):
        nodes = [n for n, d in g.nodes(data=True) if d["population"] == pi]
        if nodes:
            nx.draw_networkx_nodes(g, pos, nodelist=nodes, ax=b, node_size=30, node_color=[cmap(pi % 20)],
                                   label=f"{pop.name} ({len(nodes)})")
    b.legend(title="layer (cores)", fontsize=7, title_fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0),
             borderaxespad=0, ncol=1 if len(net.populations) <= 20 else 2)
    b.set_title("core graph (colour: layer; edge width: axons)")
    b.set_aspect("equal")
    b.margins(0.08)
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path, dpi=110, bbox_inches="tight")
    plt.close(fig)
