"""A directly trained SNN end to end (issue 21, item 4): snnTorch -> NIR -> spikeforge -> energy per target.

Data: NOT a recording. No small public event recording ships inside a pip-installable package we could find, and
data sets cannot be downloaded here, so the events are made from scikit-learn's 8x8 digits (offline) by a
DVS-style rule, as N-MNIST was made from MNIST by moving a sensor over still images:
- scene: the digit (intensity I = pixel / 16) on a dark 10x10 canvas (1-pixel border), seen by a 10x10 sensor with
  two polarity channels (channel 0 OFF, channel 1 ON: the layout of spikeforge's event binning);
- motion: the image moves along a triangle of saccades, (dx, dy) = (0, -1) -> (1, 1) -> (-1, 1) -> (0, -1) px, in T
  equal sub-pixel steps (bilinear interpolation, scipy.ndimage.shift, order 1);
- events: each pixel holds a reference log intensity L_ref = log(0.1 + I) (set at the start); at step t it emits an
  ON event when log(0.1 + I_t) - L_ref >= C, an OFF event when <= -C (C = 0.25), and then sets L_ref to the
  current level: at most one event per pixel and step, timestamp t + 0.5 (steps of 1).
Networks: 'mlp' Flatten -> Linear(200, H) -> Leaky -> Linear(H, 10) -> Leaky, and 'conv' Conv2d(2, 8, 3) -> Leaky
-> AvgPool2d(2) -> Flatten -> Linear(200, 10) -> Leaky; per-neuron learnable beta (clamped to
[0.5, 0.99] after each step), threshold 1, reset to zero (snnTorch's export writes v_reset = 0: a 'subtract' Leaky
would not be the exported network), fast-sigmoid surrogate gradient, cross-entropy on output spike counts; class =
the most output spikes (first on a tie, in torch and numpy alike). Trained on CPU.
Then: snntorch.export_nir.export_to_nir -> `spikeforge import-nir --convention snntorch` (one population per
core, and mapped on each target) -> `spikeforge simulate --input frames.npz` (the per-step 0/1 frames) and
`spikeforge simulate --events --input events.npz --dt 1 --t0 0` (the address events, binned) -> accuracy equal to
snnTorch's own evaluation, prediction and spike mismatches counted -> energy per inference per target
(spikeforge.report.evaluate on the target-mapped files: hwmodels; a mapping a target's cores cannot hold is
recorded as refused, with the reason).

    python benchmarks/direct_snn.py                  # results/direct_snn.json
    python benchmarks/direct_snn.py --quick --out /tmp/d   # the pipeline on a tiny config (the test runs this)
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

import numpy as np
import torch

TARGETS = ("loihi", "truenorth", "generic45nm")
C_THRESHOLD, EPS = 0.25, 0.1


def saccade_positions(T):
    """(T + 1, 2) (dy, dx) offsets along the triangle (0, -1) -> (1, 1) -> (-1, 1) -> (0, -1), equal steps."""
    corners = np.array([[-1.0, 0.0], [1.0, 1.0], [1.0, -1.0], [-1.0, 0.0]])  # (dy, dx)
    lengths = np.linalg.norm(np.diff(corners, axis=0), axis=1)
    s = np.linspace(0, lengths.sum(), T + 1)
    cum = np.concatenate([[0], np.cumsum(lengths)])
    seg = np.minimum(np.searchsorted(cum, s, side="right") - 1, 2)
    frac = (s - cum[seg]) / lengths[seg]
    return corners[seg] + frac[:, None] * (corners[seg + 1] - corners[seg])


def dvs_events(images, T):
    """(frames (N, T, 2, 10, 10) uint8, events: list of dicts t, x, y, p per sample) by the module's rule."""
    from scipy.ndimage import shift

    canvas = np.zeros((len(images), 10, 10))
    canvas[:, 1:9, 1:9] = images
    pos = saccade_positions(T)
    levels = np.stack([[np.log(EPS + np.clip(shift(c, p, order=1, mode="constant"), 0, 1)) for p in pos]
                       for c in canvas])  # (N, T + 1, 10, 10)
    ref = levels[:, 0].copy()
    frames = np.zeros((len(images), T, 2, 10, 10), np.uint8)
    for t in range(T):
        d = levels[:, t + 1] - ref
        on, off = d >= C_THRESHOLD, d <= -C_THRESHOLD
        frames[:, t, 1], frames[:, t, 0] = on, off
        fired = on | off
        ref[fired] = levels[:, t + 1][fired]
    events = []
    for f in frames:
        t, p, y, x = np.nonzero(f)
        events.append({"t": t + 0.5, "x": x, "y": y, "p": p})
    return frames, events


def load_data(T, n_train=None, n_test=None, seed=0):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    xtr, xte, ytr, yte = train_test_split(d.images / 16.0, d.target, test_size=0.2, random_state=seed,
                                          stratify=d.target)
    xtr, ytr, xte, yte = xtr[:n_train], ytr[:n_train], xte[:n_test], yte[:n_test]
    ftr, _ = dvs_events(xtr, T)
    fte, ev = dvs_events(xte, T)
    return ftr, ytr, fte, yte, ev


def build(model, hidden):
    """The snnTorch network: 'mlp' Flatten -> Linear(200, hidden) -> Leaky -> Linear(hidden, 10) -> Leaky, or
    'conv' Conv2d(2, 8, 3, padding 1) -> Leaky -> AvgPool2d(2) -> Flatten -> Linear(200, 10) -> Leaky. Per-neuron
    β and θ tensors: snnTorch 1.0's export_to_nir stops on scalar ones (docs/NIR.md)."""
    import snntorch as snn
    from snntorch import surrogate

    grad = surrogate.fast_sigmoid(slope=25)

    def leaky(shape, **kw):
        return snn.Leaky(beta=torch.full(shape, 0.9), threshold=torch.ones(shape), learn_beta=True, init_hidden=True,
                         reset_mechanism="zero", spike_grad=grad, **kw)
    if model == "mlp":
        net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(200, hidden), leaky((hidden,)),
                                  torch.nn.Linear(hidden, 10), leaky((10,), output=True))
        gains = {1: 2.0, 3: 5.0}
    elif model == "conv":
        net = torch.nn.Sequential(torch.nn.Conv2d(2, 8, 3, padding=1), leaky((8, 10, 10)), torch.nn.AvgPool2d(2),
                                  torch.nn.Flatten(), torch.nn.Linear(200, 10), leaky((10,), output=True))
        gains = {0: 2.0, 4: 8.0}
    else:
        raise ValueError(f"model {model!r}: mlp or conv")
    with torch.no_grad():  # sparse spikes: a larger start keeps the next layer from being silent
        for i, gain in gains.items():
            net[i].weight.mul_(gain)
    return net


def _leaky_layers(net):
    import snntorch as snn

    return {str(i): m for i, m in enumerate(net) if isinstance(m, snn.Leaky)}  # nirtorch names the nodes so


def forward(net, frames, record=False):
    """Output spike counts (B, 10); with record, also each Leaky layer's spikes per step, (B, T, *shape), by the
    name of its NIR node."""
    from snntorch import utils

    utils.reset(net)
    counts, rec, hooks = 0, {}, []
    if record:
        for name, m in _leaky_layers(net).items():
            rec[name] = []
            hooks.append(m.register_forward_hook(
                lambda mod, i, o, name=name: rec[name].append((o[0] if isinstance(o, tuple) else o).detach())))
    for t in range(frames.shape[1]):
        spk, _ = net(frames[:, t])
        counts = counts + spk
    for h in hooks:
        h.remove()
    return (counts, {k: torch.stack(v, 1).numpy() for k, v in rec.items()}) if record else counts


def train(net, frames, y, epochs, seed, batch=128, lr=5e-3, log=print):
    g = torch.Generator().manual_seed(seed)
    x, y = torch.as_tensor(frames, dtype=torch.float32), torch.as_tensor(y)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    layers = list(_leaky_layers(net).values())
    for ep in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        correct, total_loss = 0, 0.0
        for i in range(0, len(x), batch):
            idx = perm[i:i + batch]
            counts = forward(net, x[idx])
            loss = torch.nn.functional.cross_entropy(counts, y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                for m in layers:
                    m.beta.clamp_(0.5, 0.99)  # below 1: a β of 1 exports as tau = inf (an IF), in one layer with LIFs
            correct += int((counts.argmax(1) == y[idx]).sum())
            total_loss += float(loss.detach()) * len(idx)
        log(f"epoch {ep + 1}/{epochs}: loss {total_loss / len(x):.3f}, train accuracy {correct / len(x):.3f}")
    return net


def run_model(model, args, data, work):
    """Train one model, evaluate it in snnTorch, take it through NIR into spikeforge; its result dict."""
    import nir
    from snntorch.export_nir import export_to_nir

    from spikeforge import simulator
    from spikeforge.cli import main as cli
    from spikeforge.errors import UserError
    from spikeforge.interop.nir_import import import_nir
    from spikeforge.report import evaluate

    ftr, ytr, fte, yte, events = data
    torch.manual_seed(args.seed)
    t0 = time.time()
    net = train(build(model, args.hidden), ftr, ytr, args.epochs, args.seed)
    train_s = time.time() - t0

    # the framework's own evaluation, on the test events
    net.eval()
    with torch.no_grad():
        counts, theirs = forward(net, torch.as_tensor(fte, dtype=torch.float32), record=True)
    fw_pred = counts.argmax(1).numpy()
    fw_acc = float((fw_pred == yte).mean())
    print(f"{model}: snnTorch test accuracy {fw_acc:.4f}")

    # export, import, simulate with its own input spike trains through the command line
    graph = export_to_nir(net, torch.zeros(1, 2, 10, 10), ignore_dims=[0])
    nir_path, h5 = os.path.join(work, f"{model}.nir"), os.path.join(work, f"{model}.h5")
    nir.write(nir_path, graph)
    frames_path, events_path = os.path.join(work, "frames.npz"), os.path.join(work, "events.npz")

    def sh(*a):
        print("$ spikeforge " + " ".join(a))
        code = cli(list(a))
        if code:
            sys.exit(f"spikeforge {a[0]} exited {code}")
    sh("import-nir", nir_path, h5, "--convention", "snntorch")
    runs = {}
    for kind, extra in (("frames", ["--input", frames_path, "--x-key", "x", "--y-key", "y"]),
                        ("events", ["--events", "--input", events_path, "--y-key", "label", "--dt", "1", "--t0",
                                    "0"])):
        out = os.path.join(work, f"{model}_run_{kind}.npz")
        sh("simulate", h5, *extra, "--T", str(args.T), "--out", out)
        with np.load(out) as z:
            runs[kind] = {"summary": json.loads(str(z["summary"])), "pred": z["output"].reshape(len(yte), -1).argmax(1)}
    # spike by spike (the engine's rasters against snnTorch's)
    res = simulator.run(simulator.load_network(h5), fte, args.T, record=list(theirs))
    spike_mismatch = {k: int((res.spikes[k].reshape(v.shape) != v).sum()) for k, v in theirs.items()}
    spikes = {k: int(v.sum()) for k, v in theirs.items()}

    # energy per inference, the network mapped on each target
    energy = {}
    for tgt in TARGETS:
        mapped = os.path.join(work, f"{model}_{tgt}.h5")
        try:  # = spikeforge import-nir ... --convention snntorch --target tgt
            import_nir(nir_path, mapped, convention="snntorch", target=tgt)
        except UserError as exc:  # a core's limits (e.g. TrueNorth's 256 axons) the mapping cannot meet
            print(f"{model} on {tgt}: refused: {exc}")
            energy[tgt] = {"refused": str(exc).split(": ", 1)[-1]}
            continue
        mapped_net = simulator.load_network(mapped)
        rows, _, _ = evaluate(mapped_net, fte, yte, [args.T], [tgt])
        r = rows[0]
        energy[tgt] = {"accuracy": r["accuracy"], "energy_uj": r["target_energy_uj"],
                       "paper_energy_uj": r["paper_energy_uj"],  # E_AC 0.9 pJ per synop, E_MAC 4.6 pJ per MAC
                       "static_uj": r["target_static_uj"], "latency_us": r["latency_us"],
                       "cores": int(len(mapped_net.cores.population)),
                       "split": [r["layer"] for r in json.loads(mapped_net.attrs.get("fan_in_split", "[]"))]}
    totals = runs["frames"]["summary"]["totals"]
    return {
        "network": " -> ".join(type(m).__name__ for m in net), "parameters": sum(p.numel() for p in net.parameters()),
        "epochs": args.epochs, "train_s": round(train_s, 1),
        "snntorch_accuracy": fw_acc,
        "engine_accuracy_frames": runs["frames"]["summary"]["accuracy"],
        "engine_accuracy_events": runs["events"]["summary"]["accuracy"],
        "prediction_mismatches_frames": int((runs["frames"]["pred"] != fw_pred).sum()),
        "prediction_mismatches_events": int((runs["events"]["pred"] != fw_pred).sum()),
        "spike_mismatches": spike_mismatch, "spikes_compared": {k: int(v.size) for k, v in theirs.items()},
        "spikes_snntorch": spikes,
        "synops_per_inference": totals["synops"] / len(yte), "macs_per_inference": totals["macs"] / len(yte),
        "spikes_per_inference": totals["spikes"] / len(yte),
        "spikes_per_inference_by_layer": {k: v / len(yte) for k, v in spikes.items()},
        "energy_per_inference": energy,
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", choices=("mlp", "conv"), default=["mlp", "conv"])
    ap.add_argument("--T", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--hidden", type=int, default=128, help="hidden neurons of the MLP")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="tiny config: 300 train / 60 test samples, 3 epochs, T=8, "
                                                         "an MLP of 32 hidden neurons and the conv net")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"),
                    help="folder for direct_snn.json")
    ap.add_argument("--keep", action="store_true", help="keep the NIR graphs, network files, frames and events in "
                                                        "OUT/direct_snn_work (default: a temporary folder, removed)")
    args = ap.parse_args(argv)
    if args.quick:
        args.T, args.epochs, args.hidden = 8, 3, 32
    n_train, n_test = (300, 60) if args.quick else (None, None)

    import nir

    from spikeforge import simulator

    torch.set_num_threads(1)  # small networks: one thread is as fast, and the machine is shared
    os.makedirs(args.out, exist_ok=True)
    work = os.path.join(args.out, "direct_snn_work") if args.keep else tempfile.mkdtemp(prefix="direct_snn_")
    os.makedirs(work, exist_ok=True)
    t0 = time.time()
    data = load_data(args.T, n_train, n_test, args.seed)
    ftr, ytr, fte, yte, events = data
    print(f"events: {ftr.shape[0]} train / {fte.shape[0]} test samples, T={args.T}, "
          f"{fte.sum() / len(fte):.1f} events per test sample (ON {fte[:, :, 1].sum() / len(fte):.1f})")
    np.savez_compressed(os.path.join(work, "frames.npz"), x=fte, y=yte)
    simulator.save_events(os.path.join(work, "events.npz"), events, yte)
    result = {
        "data": "scikit-learn digits made into DVS-style events (synthetic saccades; see the docstring), not a "
                "recording",
        "T": args.T, "train_samples": len(ytr), "test_samples": len(yte),
        "events_per_sample": float(fte.sum() / len(fte)),
        "runs": {model: run_model(model, args, data, work) for model in args.models},
        "wall_s": None,
        "versions": {"snntorch": __import__("snntorch").__version__, "nir": nir.__version__,
                     "torch": torch.__version__},
    }
    result["wall_s"] = round(time.time() - t0, 1)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    path = os.path.join(args.out, "direct_snn.json")
    with open(path, "w") as fh:
        json.dump(result, fh, indent=2)
    print(json.dumps(result, indent=2))
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
