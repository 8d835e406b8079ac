"""Every plot kind renders to a valid PNG, and shows what issue 22 found missing: the inspect colour scale goes
above 1.0 for over-capacity cores, the core graph has a legend, the tallest energy bar has headroom, and the
sweep's energy-vs-cores plot draws the Pareto front it lists, on whole-core ticks."""
import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")


def _is_png(path):
    import matplotlib.image

    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, path
    img = matplotlib.image.imread(path)
    assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 200 and img.std() > 0.01  # not blank


@pytest.fixture
def figures(monkeypatch):
    """The figures the plot functions save, by file name (the real save still happens)."""
    import spikeforge.inspect_cores
    import spikeforge.report
    import spikeforge.sweep

    saved = {}
    for module in (spikeforge.inspect_cores, spikeforge.report, spikeforge.sweep):
        real = module.save_figure

        def keep(fig, path, real=real, **kw):
            saved[str(path).rsplit("/", 1)[-1]] = fig
            real(fig, path, **kw)

        monkeypatch.setattr(module, "save_figure", keep)
    return saved


def test_inspect_png_shows_over_capacity_cores_and_a_legend(tiny, tmp_path, figures):
    from spikeforge.cli import main

    net, _ = tiny
    assert main(["inspect", net, "--target", "loihi", "--png", str(tmp_path / "cores.png")]) == 0
    assert main(["inspect", net, "--png", str(tmp_path / "plain.png")]) == 0
    _is_png(tmp_path / "cores.png")
    _is_png(tmp_path / "plain.png")
    heat, graph = figures["cores.png"].axes[:2]  # then the colour bar
    # the busiest core, not 1.0: h2's 2,150 lists of 300 contiguous targets, 5 entries of (10 + 9) bits + 300 x 8
    # = 2,495 bits = 39 words each: 670,800 B of 131,072 (5.12x); h holds 2,150 neurons of 1,024 (2.1x)
    assert heat.images[0].get_clim() == (0, pytest.approx(2150 * 39 * 8 / 131072, abs=1e-9))
    assert "2 cores over capacity" in heat.get_title()
    assert sorted(t.get_text() for t in heat.texts) == ["2.1x", "5.1x"]
    assert [t.get_text() for t in graph.get_legend().get_texts()] == ["in (1)", "h (1)", "h2 (1)", "out (1)"]
    assert figures["plain.png"].axes[0].images[0].get_clim()[1] == 2150  # no target: neurons per core


def test_report_plots_render_and_the_tallest_bar_has_headroom(tiny, tmp_path, figures):
    from spikeforge import hwmodels, simulator
    from spikeforge.report import evaluate, write_report

    net, data = tiny
    z = np.load(data)
    network = simulator.load_network(net)
    targets = [hwmodels.load_target(t) for t in hwmodels.available()]
    rows, runs, ann = evaluate(network, z["x"][:6], z["y"][:6], [1, 2], targets)
    write_report(tmp_path, "tiny", rows, runs, ann, network, 6)
    names = ["accuracy_vs_T.png", "spikes_per_step_T2.png"] + [f"energy_per_layer_{t.name}_T2.png" for t in targets]
    for name in names:
        _is_png(tmp_path / name)
    for t in targets:
        ax = figures[f"energy_per_layer_{t.name}_T2.png"].axes[0]
        tallest = max(p.get_y() + p.get_height() for p in ax.patches)
        assert ax.get_ylim()[1] >= 1.1 * tallest, t.name  # room above the tallest bar (and for the legend)


def test_sweep_plots_draw_the_pareto_front_they_list(tmp_path, figures):
    from spikeforge import sweep

    rows = []
    for i, (cores, energy, acc) in enumerate([(3, 5.0, 80), (4, 3.0, 85), (6, 1.0, 90), (6, 4.0, 70), (9, 2.0, 88)]):
        rows.append({"id": str(i), "T": i + 1, "status": "ok", "error": "", "accuracy": acc, "synops": 1e5,
                     "energy_uj": energy, "latency_us": 10.0 * (i + 1), "cores": cores, "seconds": 1})
    rows.append({"id": "x", "T": 9, "status": "error", "error": "ValueError: no"})
    spec = {"name": "by hand", "store": str(tmp_path), "axes": {"T": [1, 2, 3, 4, 5, 9]}}
    sweep.write_outputs(spec, rows)
    for name in ("accuracy_vs_energy.png", "accuracy_vs_latency.png", "energy_vs_cores.png"):
        _is_png(tmp_path / name)
    ax = figures["energy_vs_cores.png"].axes[0]
    front = next(line for line in ax.get_lines() if line.get_label().startswith("Pareto front"))
    # fewer cores and less energy are better: (3, 5) (4, 3) (6, 1) -- the three rows summary.md lists
    assert front.get_xdata().tolist() == [3, 4, 6] and front.get_ydata().tolist() == [5.0, 3.0, 1.0]
    assert front.get_marker() == "o" and front.get_label() == "Pareto front (3 points)"
    summary = (tmp_path / "summary.md").read_text().split("(energy_vs_cores.png)")[1]
    assert summary.count("\n| ") == 4  # header + three front rows
    ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    assert ticks and all(float(t).is_integer() for t in ticks)


def test_energy_per_layer_bars_use_the_unit_that_fits_and_leave_idle_layers_out(tmp_path, figures):
    """Bars of 700,000 nJ are drawn as 700 µJ; a layer with no dynamic energy is named under the axis, not drawn
    as an empty bar (issue 37 item 7)."""
    from types import SimpleNamespace

    from spikeforge.report import EVENT_COLORS, plot_energy_per_layer

    zero = dict.fromkeys(EVENT_COLORS, 0.0)
    cost = SimpleNamespace(layer_energy_pj={"input": dict(zero), "conv1": dict(zero, synops=7e8),
                                            "fc": dict(zero, synops=2e8, neuron_updates=1e7)})
    plot_energy_per_layer(tmp_path / "e.png", cost, "by hand")
    ax = figures["e.png"].axes[0]
    assert ax.get_ylabel() == "dynamic energy per inference (µJ)"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["conv1", "fc"]
    assert "no dynamic energy: input" in ax.get_xlabel()
    assert max(p.get_y() + p.get_height() for p in ax.patches) == pytest.approx(700.0)


def test_accuracy_vs_T_keeps_both_lines_visible_with_two_T_values(tmp_path, figures):
    """Two autoscaled axes put any two points on the same diagonal, hiding the accuracy line behind the energy
    ratio's: accuracy is drawn on 0-105 % and the ratio from 0."""
    from spikeforge.report import plot_accuracy_energy

    rows = [{"target": "loihi", "T": 2, "accuracy": 0.5, "energy_ratio": 0.1},
            {"target": "loihi", "T": 8, "accuracy": 0.9, "energy_ratio": 0.4}]
    plot_accuracy_energy(tmp_path / "a.png", rows, None, "two T")
    acc, ratio = figures["a.png"].axes
    assert acc.get_ylim() == (0, 105) and ratio.get_ylim() == (0, pytest.approx(0.52))


def test_sweep_plots_mark_ties_and_put_decades_of_energy_on_a_log_axis(tmp_path, figures):
    """Three TrueNorth points cost 100x the others; two pairs of points tie exactly: the energy axis is logarithmic
    and the front's legend and rings say how many points each ring stands for."""
    from spikeforge import sweep

    pts = [(2, 0.5, 80, "loihi"), (2, 0.5, 80, "loihi"), (4, 0.2, 85, "generic45nm"), (4, 0.2, 85, "generic45nm"),
           (8, 50.0, 70, "truenorth"), (9, 60.0, 75, "truenorth"), (12, 70.0, 72, "truenorth")]
    rows = [{"id": str(i), "target": t, "status": "ok", "error": "", "accuracy": acc, "synops": 1e5,
             "energy_uj": e, "latency_us": 10.0, "cores": c, "seconds": 1} for i, (c, e, acc, t) in enumerate(pts)]
    sweep.write_outputs({"name": "ties", "store": str(tmp_path), "axes": {"target": ["loihi"]}}, rows)
    ax = figures["energy_vs_cores.png"].axes[0]
    assert ax.get_yscale() == "log"
    front = next(line for line in ax.get_lines() if line.get_label().startswith("Pareto front"))
    assert front.get_label() == "Pareto front (4 points at 2 positions; xN: N points tie)"
    assert sorted(t.get_text() for t in ax.texts if t.get_text().startswith("x")) == ["x2", "x2"]


def test_spikes_per_step_legend_names_layers_whose_names_start_with_an_underscore(tmp_path, figures):
    """An nn.Sequential's layers trace to names like `_1`, which matplotlib leaves out of a legend (a leading
    underscore hides a label): the plot must still name every spiking layer."""
    import torch

    from spikeforge import simulator
    from spikeforge.converter import convert
    from spikeforge.report import plot_spikes_per_step

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 5), torch.nn.ReLU(),
                                torch.nn.Linear(5, 3)).eval()
    x = torch.rand(16, 6)
    net = convert(model, [x])
    spiking = [p.name for p in net.populations if p.model == "if"]
    assert spiking and all(name.startswith("_") for name in spiking), spiking
    res = simulator.run(net, x.numpy(), 4, record_counts=True)
    plot_spikes_per_step(tmp_path / "s.png", res, net, len(x), "sequential")
    legend = figures["s.png"].axes[0].get_legend()
    assert legend is not None and [t.get_text().strip() for t in legend.get_texts()] == spiking
