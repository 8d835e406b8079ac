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
Network: Flatten -> Linear(200, H) -> Leaky -> Linear(H, 10) -> Leaky, per-neuron learnable beta (clamped to
[0.5, 0.99] after each step), threshold 1, reset to zero (snnTorch's export writes v_reset = 0: a 'subtract' Leaky
would not be the exported network), fast-sigmoid surrogate gradient, cross-entropy on output spike counts; class =
the most output spikes (first on a tie, in torch and numpy alike). Trained on CPU.
Then: snntorch.export_nir.export_to_nir -> `spikeforge import-nir --convention snntorch` (one population per
core, and mapped on each target) -> `spikeforge simulate --input frames.npz` (the per-step 0/1 frames) and
`spikeforge simulate --events --input events.npz --dt 1 --t0 0` (the address events, binned) -> accuracy equal to
snnTorch's own evaluation, prediction and spike mismatches counted -> energy per inference per target
(spikeforge.report.evaluate on the target-mapped files: hwmodels).

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


def build(hidden):
    import snntorch as snn
    from snntorch import surrogate

    grad = surrogate.fast_sigmoid(slope=25)

    def leaky(n, **kw):
        return snn.Leaky(beta=torch.full((n,), 0.9), threshold=torch.ones(n), learn_beta=True, init_hidden=True,
                         reset_mechanism="zero", spike_grad=grad, **kw)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(200, hidden), leaky(hidden),
                              torch.nn.Linear(hidden, 10), leaky(10, output=True))
    with torch.no_grad():  # sparse hidden spikes: a larger start keeps the output layer from being silent
        net[1].weight.mul_(2.0)
        net[3].weight.mul_(5.0)
    return net


def forward(net, frames, record=False):
    """Output spike counts (B, 10); with record, the spikes of both Leaky layers per step, (B, T, n)."""
    from snntorch import utils

    utils.reset(net)
    counts, hidden, out = 0, [], []
    h = net[2].register_forward_hook(lambda m, i, o: hidden.append(o.detach())) if record else None
    for t in range(frames.shape[1]):
        spk, _ = net(frames[:, t])
        counts = counts + spk
        if record:
            out.append(spk.detach())
    if h is not None:
        h.remove()
        return counts, {"2": torch.stack(hidden, 1).numpy(), "4": torch.stack(out, 1).numpy()}
    return counts


def train(net, frames, y, epochs, seed, batch=128, lr=5e-3, log=print):
    g = torch.Generator().manual_seed(seed)
    x, y = torch.as_tensor(frames, dtype=torch.float32), torch.as_tensor(y)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
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
                for m in (net[2], net[4]):
                    m.beta.clamp_(0.5, 0.99)
            correct += int((counts.argmax(1) == y[idx]).sum())
            total_loss += float(loss.detach()) * len(idx)
        log(f"epoch {ep + 1}/{epochs}: loss {total_loss / len(x):.3f}, train accuracy {correct / len(x):.3f}")
    return net


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--T", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="tiny config: 300 train / 60 test samples, 3 epochs, T=8")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"),
                    help="folder for direct_snn.json")
    ap.add_argument("--keep", action="store_true", help="keep the NIR graph, network files, frames and events in "
                                                        "OUT/direct_snn_work (default: a temporary folder, removed)")
    args = ap.parse_args(argv)
    if args.quick:
        args.T, args.epochs, args.hidden = 8, 3, 32
    n_train, n_test = (300, 60) if args.quick else (None, None)

    import nir
    from snntorch.export_nir import export_to_nir

    from spikeforge import simulator
    from spikeforge.cli import main as cli
    from spikeforge.report import evaluate

    torch.manual_seed(args.seed)
    torch.set_num_threads(1)  # a small network: one thread is as fast, and the machine is shared
    os.makedirs(args.out, exist_ok=True)
    work = os.path.join(args.out, "direct_snn_work") if args.keep else tempfile.mkdtemp(prefix="direct_snn_")
    t0 = time.time()
    ftr, ytr, fte, yte, events = load_data(args.T, n_train, n_test, args.seed)
    print(f"events: {ftr.shape[0]} train / {fte.shape[0]} test samples, T={args.T}, "
          f"{fte.sum() / len(fte):.1f} events per test sample (ON {fte[:, :, 1].sum() / len(fte):.1f})")
    net = train(build(args.hidden), ftr, ytr, args.epochs, args.seed)
    train_s = time.time() - t0

    # the framework's own evaluation, on the test events
    net.eval()
    with torch.no_grad():
        counts, theirs = forward(net, torch.as_tensor(fte, dtype=torch.float32), record=True)
    fw_pred = counts.argmax(1).numpy()
    fw_acc = float((fw_pred == yte).mean())
    print(f"snnTorch: test accuracy {fw_acc:.4f}")

    # export, import, simulate with its own input spike trains through the command line
    graph = export_to_nir(net, torch.zeros(1, 2, 10, 10), ignore_dims=[0])
    nir_path, h5 = os.path.join(work, "direct.nir"), os.path.join(work, "direct.h5")
    nir.write(nir_path, graph)
    frames_path, events_path = os.path.join(work, "frames.npz"), os.path.join(work, "events.npz")
    np.savez_compressed(frames_path, x=fte, y=yte)
    simulator.save_events(events_path, events, yte)

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
        out = os.path.join(work, f"run_{kind}.npz")
        sh("simulate", h5, *extra, "--T", str(args.T), "--out", out)
        with np.load(out) as z:
            runs[kind] = {"summary": json.loads(str(z["summary"])), "pred": z["output"].reshape(len(yte), -1).argmax(1)}
    # spike by spike (the engine's rasters against snnTorch's)
    ours = simulator.load_network(h5)
    res = simulator.run(ours, fte, args.T, record=["2", "4"])
    spike_mismatch = {k: int((res.spikes[k].reshape(v.shape) != v).sum()) for k, v in theirs.items()}
    spikes = {k: int(v.sum()) for k, v in theirs.items()}

    # energy per inference, the network mapped on each target
    energy = {}
    for tgt in TARGETS:
        mapped = os.path.join(work, f"direct_{tgt}.h5")
        sh("import-nir", nir_path, mapped, "--convention", "snntorch", "--target", tgt)
        rows, _, _ = evaluate(simulator.load_network(mapped), fte, yte, [args.T], [tgt])
        r = rows[0]
        energy[tgt] = {"accuracy": r["accuracy"], "energy_uj": r["target_energy_uj"],
                       "paper_energy_uj": r["paper_energy_uj"],  # E_AC 0.9 pJ per synop, E_MAC 4.6 pJ per MAC
                       "static_uj": r["target_static_uj"], "latency_us": r["latency_us"],
                       "cores": int(len(simulator.load_network(mapped).cores.population))}
    totals = runs["frames"]["summary"]["totals"]
    result = {
        "data": "scikit-learn digits made into DVS-style events (synthetic saccades; see the docstring), not a "
                "recording",
        "T": args.T, "epochs": args.epochs, "hidden": args.hidden, "train_samples": len(ytr),
        "test_samples": len(yte), "train_s": round(train_s, 1),
        "events_per_sample": float(fte.sum() / len(fte)),
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
        "versions": {"snntorch": __import__("snntorch").__version__, "nir": nir.__version__,
                     "torch": torch.__version__},
    }
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
