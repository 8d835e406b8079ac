"""`spikeforge inspect`: per-core loads of a mapped network file, and a PNG of the mesh (load heatmap) and the
core graph (edges as wide as their axons, i.e. packets per step if every source neuron fires once).

Both stay bounded on any valid file, whatever its mesh: `core_loads` is linear in cores, projections and synapses
(dense, sparse and identity projections into a population of many cores are counted for all its cores at once;
other kinds go core by core through `converter.mapping.core_load`, as the mapper itself does). `plot_cores` draws
at most MAX_GRID x MAX_GRID heatmap cells (core coordinates go up to 2^24: a mesh wider than MAX_GRID shows its
occupied columns / rows only, in order, and more occupied ones than MAX_GRID are binned, each cell showing its
busiest core), at most MAX_CORES_DRAWN core markers, the MAX_EDGES_DRAWN widest core edges, MAX_LAYERS_SHOWN
layers in colour (the rest grey) and MAX_LABELS over-capacity labels; the titles say what was left out.
"""
from __future__ import annotations

import math
import textwrap

import numpy as np

from spikeforge.converter.mapping import core_load
from spikeforge.converter.synapse_memory import index_bits, list_words, uses_lists
from spikeforge.report import legend_label
from spikeforge.simulator.atomic import save_figure
from spikeforge.simulator.network import chip_mesh_of

MAX_GRID = 256  # heatmap cells per axis
MAX_CORES_DRAWN = 20_000  # core markers in the core graph; beyond, every k-th core
MAX_EDGES_DRAWN = 5_000  # the widest core edges drawn
MAX_LAYERS_SHOWN = 40  # layers coloured and named in the legend; the others are drawn grey, as one entry
MAX_LABELS = 50  # over-capacity labels on the heatmap (the busiest cells)

_COUNTED = ("dense", "sparse", "identity")  # kinds whose per-core loads are counted for all cores at once


def _bits_per_synapse(limits):
    return limits.get("bits_per_synapse", 0) or \
        limits["weight_bits"] + max(1, math.ceil(math.log2(max(2, limits["neurons_per_core"]))))


def _tiles(starts, stops, size):
    """Whether the ranges start..stop-1 tile 0..size-1 (what the file format's validation asks)."""
    order = np.argsort(starts, kind="stable")
    s, e = starts[order], stops[order]
    return bool(s[0] == 0 and e[-1] == size and np.all(s[1:] == e[:-1]) and np.all(e > s))


def _counted_loads(incoming, by_name, starts, stops, size, limits):
    """(axons, synapse memory bits) of the cores holding starts[k]..stops[k]-1 of one population, counted for
    all its cores at once (O(cores + sources + synapses)); the same numbers as `core_load` core by core."""
    k = len(starts)
    order = np.argsort(starts, kind="stable")
    first = starts[order]

    def core_of(t):  # the core (0..k-1) holding each target neuron t
        return order[np.searchsorted(first, t, side="right") - 1]

    width = stops - starts
    memory = np.zeros(k, np.float64)
    bits = _bits_per_synapse(limits)
    lists = uses_lists(limits)
    if lists:
        idx = np.array([index_bits(limits, min(int(w), limits["neurons_per_core"])) for w in width], np.int64)
        word = limits["synapse_word_bits"]
    for q in incoming:  # in core_load's order: the float sums come out the same
        src = by_name[q.source]
        n_src = src.size
        if lists:  # one list per (source neuron, core) with synapses: words of each
            if q.kind == "dense":
                words = n_src * list_words(width, limits, idx, contiguous=True)
            elif q.kind == "identity":
                words = np.clip(np.minimum(stops, n_src) - starts, 0, None) * list_words(1, limits, idx)
            else:
                rows = np.repeat(np.arange(n_src, dtype=np.int64), np.diff(np.asarray(q.indptr, np.int64)))
                pair, count = np.unique(core_of(np.asarray(q.indices, np.int64)) * n_src + rows, return_counts=True)
                core = pair // n_src
                words = np.bincount(core, weights=list_words(count, limits, idx[core]), minlength=k)
            memory += np.asarray(words, np.int64) * word * src.weight_copies
            continue
        if q.kind == "dense":
            syn = n_src * width
        elif q.kind == "identity":
            syn = np.clip(np.minimum(stops, n_src) - starts, 0, None)
        elif k == 1:
            syn = np.array([int(q.indptr[-1] - q.indptr[0])], np.int64)
        else:
            syn = np.bincount(core_of(np.asarray(q.indices, np.int64)), minlength=k)
        memory += syn.astype(np.int64) * bits * src.weight_copies
    axons = np.zeros(k, np.int64)
    groups = {}
    for q in incoming:
        groups.setdefault(q.source, []).append(q)
    for name, qs in groups.items():
        n_src = by_name[name].size
        if any(q.kind == "dense" for q in qs):
            axons += n_src  # every source neuron reaches every neuron of every core
            continue
        if len(qs) == 1 and qs[0].kind == "identity":
            axons += np.clip(np.minimum(stops, n_src) - starts, 0, None)
            continue
        keys = []
        for q in qs:
            if q.kind == "identity":
                t = np.arange(min(size, n_src), dtype=np.int64)
                keys.append(core_of(t) * n_src + t)
                continue
            counts = np.diff(np.asarray(q.indptr, np.int64))
            if k == 1 and len(qs) == 1:
                keys = None
                axons += np.count_nonzero(counts)
                break
            rows = np.repeat(np.arange(n_src, dtype=np.int64), counts)
            cores = core_of(np.asarray(q.indices, np.int64))
            if len(qs) == 1 and rows.size:
                # indices sorted within each row (the usual CSR): the distinct (row, core) pairs are the runs
                new_row = np.ones(rows.size, bool)
                new_row[1:] = rows[1:] != rows[:-1]
                if np.all(new_row[1:] | (cores[1:] >= cores[:-1])):
                    start = new_row.copy()
                    start[1:] |= cores[1:] != cores[:-1]
                    axons += np.bincount(cores[start], minlength=k)
                    keys = None
                    break
            keys.append(cores * n_src + rows)
        if keys:
            pairs = np.unique(np.concatenate(keys))
            axons += np.bincount(pairs // n_src, minlength=k)
    return axons, memory


def core_loads(net, target=None):
    """One dict per core: population, neurons, input axons, synapse bytes, and utilization of the target's
    limits (fractions) when a target is given. Linear in cores, projections and synapses."""
    limits = target.limits if target is not None else {"weight_bits": 32, "neurons_per_core": 1024}
    c = net.cores
    n = len(c.core_id)
    pops = net.populations
    by_name = {p.name: p for p in pops}
    incoming = {}
    for q in net.projections:
        incoming.setdefault(q.target, []).append(q)
    pop_of = np.asarray(c.population, np.int64)
    starts, stops = np.asarray(c.neuron_start, np.int64), np.asarray(c.neuron_stop, np.int64)
    order = np.argsort(pop_of, kind="stable")
    bounds = np.searchsorted(pop_of[order], np.arange(len(pops) + 1))
    axons, memory_bytes = np.zeros(n, np.int64), np.zeros(n, np.float64)
    for pi, pop in enumerate(pops):
        idx = order[bounds[pi]:bounds[pi + 1]]
        if not idx.size:
            continue
        qs = incoming.get(pop.name, [])
        s, e = starts[idx], stops[idx]
        if all(q.kind in _COUNTED and (q.kind != "identity" or by_name[q.source].size == pop.size) for q in qs) \
                and not any(c.is_box(i) for i in idx) and _tiles(s, e, pop.size):
            a, bits_used = _counted_loads(qs, by_name, s, e, pop.size, limits)
            axons[idx], memory_bytes[idx] = a, bits_used / 8
        else:
            for i in idx:  # core_load indexes the network once, not per core
                load = core_load(net, pop, int(starts[i]), int(stops[i]), limits,
                                 box=tuple(int(v) for v in c.box[i]) if c.is_box(i) else None)
                axons[i], memory_bytes[i] = load.axons, load.synapse_bytes
    rows = []
    chip, x, y = c.chip.tolist(), c.x.tolist(), c.y.tolist()
    names = [p.name for p in pops]
    sizes = c.sizes().tolist()
    for i, (pi, ax, mem) in enumerate(zip(pop_of.tolist(), axons.tolist(), memory_bytes.tolist())):
        row = {"core": i, "chip": chip[i], "x": x[i], "y": y[i], "population": names[pi],
               "neurons": sizes[i], "axons": ax, "synapse_bytes": float(mem)}
        if target is not None:
            row["util_neurons"] = row["neurons"] / limits["neurons_per_core"]
            row["util_axons"] = ax / limits["axons_per_core"]
            row["util_memory"] = row["synapse_bytes"] / limits["synapse_memory_bytes_per_core"]
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


def _axis_cells(v, limit=None):
    """(cell of each core along one heatmap axis, the coordinate each cell starts at, how the axis was drawn):
    the mesh itself from 0 when it is narrower than `limit` cells (""), else its occupied coordinates only, in
    order ("compressed"), else those in `limit` bins ("binned")."""
    limit = MAX_GRID if limit is None else limit
    v = np.asarray(v, np.int64)
    if v.size == 0 or int(v.max()) < limit:
        return v, np.arange(int(v.max()) + 1 if v.size else 1), ""
    occupied, rank = np.unique(v, return_inverse=True)
    rank = rank.reshape(-1)
    if occupied.size <= limit:
        return rank, occupied, "compressed"
    cell_of_rank = np.arange(occupied.size, dtype=np.int64) * limit // occupied.size
    return cell_of_rank[rank], occupied[np.searchsorted(cell_of_rank, np.arange(limit))], "binned"


def _coordinate_axis(axis, which, starts, mode, name):
    """Ticks and label of a heatmap axis drawn by `_axis_cells`."""
    from matplotlib.ticker import MaxNLocator

    set_label = axis.set_xlabel if which == "x" else axis.set_ylabel
    ax = axis.xaxis if which == "x" else axis.yaxis
    if not mode:
        ax.set_major_locator(MaxNLocator(integer=True))
        set_label(f"{which} (mesh {name})")
        return
    at = np.unique(np.linspace(0, len(starts) - 1, min(len(starts), 6)).round().astype(int))
    ax.set_ticks(at, [str(int(starts[i])) for i in at])
    if which == "x" and len(at) > 2:
        axis.tick_params(axis="x", labelrotation=30)
    if mode == "compressed":
        set_label(f"{which} (mesh {name}: the {len(starts)} occupied ones only, in order)")
    else:
        set_label(f"{which} (mesh {name}: occupied ones in {len(starts)} bins)")


def _chip_edges(starts, per_chip) -> np.ndarray:
    """Positions (between heatmap cells) where one chip's routers end and the next chip's begin along an axis
    whose cells start at mesh coordinates `starts` (chips of `per_chip` routers along it)."""
    chip = np.asarray(starts, np.int64) // per_chip
    return np.flatnonzero(chip[1:] != chip[:-1]) + 0.5


def plot_cores(net, rows, path, title=""):
    """Left: mesh heatmap of each core's busiest limit (or neurons), over-capacity cores in reds and labelled with
    their load; right: core graph at mesh positions, one colour per layer (legend). Bounded whatever the mesh
    (see the module docstring); returns the notes on what was compressed or left out (also in the titles)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection

    n = len(rows)
    util = bool(rows) and "util_neurons" in rows[0]
    if util:
        vals = np.array([max(r["util_neurons"], r["util_axons"], r["util_memory"]) for r in rows], np.float64)
    else:
        vals = np.array([r["neurons"] for r in rows], np.float64)
    cx, x_starts, x_mode = _axis_cells(net.cores.x[:n])
    cy, y_starts, y_mode = _axis_cells(net.cores.y[:n])
    grid = np.full((len(y_starts), len(x_starts)), np.nan)
    np.fmax.at(grid, (cy, cx), vals)  # a cell holding several cores (other chips, bins) shows the busiest
    notes = []
    if x_mode or y_mode:
        span = f"{int(net.cores.x.max()) + 1} x {int(net.cores.y.max()) + 1}"
        notes.append(f"mesh of {span} drawn as its {len(x_starts)} x {len(y_starts)} "
                     + ("occupied columns / rows" if "binned" not in (x_mode, y_mode) else "binned occupied columns"
                        " / rows, each cell its busiest core"))
    fig, (a, b) = plt.subplots(1, 2, figsize=(13, 5.5), gridspec_kw={"width_ratios": [1, 1.25]})
    over = int(np.sum(vals > 1)) if util else 0
    if util:
        vmax = max(1.0, float(vals.max()) if n else 1.0)
        im = a.imshow(grid, cmap=_load_colormap(vmax), origin="upper", vmin=0, vmax=vmax)
        bar = fig.colorbar(im, ax=a, label="max utilization of a core limit (> 1: over capacity)")
        if vmax > 1:
            from matplotlib import patheffects

            bar.ax.axhline(1.0, color="k", lw=2)  # the capacity line between viridis and reds
            outline = [patheffects.withStroke(linewidth=2, foreground="k")]
            hot_y, hot_x = np.nonzero(grid > 1)
            hot = np.argsort(-grid[hot_y, hot_x], kind="stable")
            if hot.size > MAX_LABELS:
                notes.append(f"the {MAX_LABELS} busiest of {hot.size} over-capacity cells labelled")
            for i in hot[:MAX_LABELS]:
                a.text(hot_x[i], hot_y[i], f"{grid[hot_y[i], hot_x[i]]:.1f}x", ha="center", va="center",
                       fontsize=7, color="w", path_effects=outline)
    else:
        im = a.imshow(grid, cmap="viridis", origin="upper", vmin=0)
        fig.colorbar(im, ax=a, label="neurons")
    a.set_title("per-core load on the mesh" + (f" ({over} cores over capacity)" if over else ""))
    _coordinate_axis(a, "x", x_starts, x_mode, "column")
    _coordinate_axis(a, "y", y_starts, y_mode, "row")
    mesh = chip_mesh_of(net.cores, net.attrs.get("chip_mesh"))
    chip_x, chip_y = (_chip_edges(x_starts, mesh[0]), _chip_edges(y_starts, mesh[1])) if mesh else ([], [])
    for axis, flip in ((a, 1), (b, -1)):  # chip boundaries on both panels (the graph's y axis points up)
        for v in chip_x:
            axis.axvline(v, color="0.2", lw=1.2, ls="--", zorder=0)
        for v in chip_y:
            axis.axhline(flip * v, color="0.2", lw=1.2, ls="--", zorder=0)
    if mesh:
        notes.append(f"{len(np.unique(net.cores.chip))} chips of {mesh[0]} x {mesh[1]} routers (dashed: chip edges)")

    # the core graph, at the heatmap's cells (the mesh positions when the mesh is drawn whole)
    px, py = cx.astype(np.float64), -cy.astype(np.float64)
    e = net.core_edges
    src, dst, ax_w = (np.asarray(v, np.int64) for v in (e.src, e.dst, e.axons))
    keep = (src < n) & (dst < n)
    src, dst, ax_w = src[keep], dst[keep], ax_w[keep].astype(np.float64)
    graph_notes = []
    if len(ax_w):
        width = 0.3 + 3 * ax_w / max(ax_w.max(), 1.0)
        drawn = np.argsort(-ax_w, kind="stable")[:MAX_EDGES_DRAWN]
        if len(ax_w) > MAX_EDGES_DRAWN:
            graph_notes.append(f"the {MAX_EDGES_DRAWN:,} widest of {len(ax_w):,} edges")
        segments = np.stack([np.column_stack([px[src[drawn]], py[src[drawn]]]),
                             np.column_stack([px[dst[drawn]], py[dst[drawn]]])], axis=1)
        b.add_collection(LineCollection(segments, linewidths=width[drawn], colors="k", alpha=0.35, zorder=1))
    pop_of = np.asarray(net.cores.population[:n], np.int64)
    stride = max(1, math.ceil(n / MAX_CORES_DRAWN))
    size = float(np.clip(30 * 300 / max(1, math.ceil(n / stride)), 2, 30))  # smaller markers when there are many
    if stride > 1:
        graph_notes.append(f"every {stride}th of {n:,} cores")
    order = np.argsort(pop_of, kind="stable")
    bounds = np.searchsorted(pop_of[order], np.arange(len(net.populations) + 1))
    cmap = matplotlib.colormaps["tab20"]
    shown, rest, rest_cores = 0, [], 0
    for pi, pop in enumerate(net.populations):
        cores = order[bounds[pi]:bounds[pi + 1]]
        if not cores.size:
            continue
        if shown >= MAX_LAYERS_SHOWN:
            rest.append(cores)
            rest_cores += cores.size
            continue
        pick = cores[cores % stride == 0] if stride > 1 else cores
        b.scatter(px[pick], py[pick], s=size, color=cmap(pi % 20), label=legend_label(f"{pop.name} ({cores.size})"),
                  zorder=2)
        shown += 1
    if rest:
        cores = np.concatenate(rest)
        pick = cores[cores % stride == 0] if stride > 1 else cores
        b.scatter(px[pick], py[pick], s=size, color="0.6", label=f"{len(rest)} more layers ({rest_cores})", zorder=2)
        graph_notes.append(f"{len(rest):,} of {len(rest) + shown:,} layers in grey")
    b.autoscale_view()
    b.tick_params(axis="both", which="both", bottom=False, left=False, labelbottom=False, labelleft=False)
    if shown or rest:
        b.legend(title="layer (cores)", fontsize=7, title_fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0),
                 borderaxespad=0, ncol=1 if shown + bool(rest) <= 20 else 2)
    if graph_notes:
        b.set_title("core graph (colour: layer; edge width: axons)\n"
                    + textwrap.fill("drawn: " + "; ".join(graph_notes), 70), fontsize=9)
    else:
        b.set_title("core graph (colour: layer; edge width: axons)")
    b.set_aspect("equal")
    b.margins(0.08)
    if notes:
        a.set_title(a.get_title() + "\n" + textwrap.fill("; ".join(notes), 60), fontsize=9)
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return notes + graph_notes
