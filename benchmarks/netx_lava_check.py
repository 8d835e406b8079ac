"""netx networks run by Lava itself vs spikeforge (issue 35): random networks in Loihi's arithmetic (conv, dense with
per-neuron axonal delays, dense_rec, state restarts), written with `export-lava`, run in Lava 0.10's bit-accurate
CPU models (fixed_pt, via netx 0.6) and in spikeforge's engine; every layer's spikes compared step by step.

    bash benchmarks/lava/setup.sh /tmp/lava310 /root/.pyenv/versions/3.10.13/bin/python3.10   # once
    python -m benchmarks.netx_lava_check --lava-python /tmp/lava310/bin/python --out benchmarks/results/netx_lava

Lava does not install on the Python spikeforge runs on (3.11): it runs in its own virtual environment through
benchmarks/lava/run_netx.py. Rows go to OUT/netx_lava.json.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from spikeforge import simulator
from spikeforge.converter.mapping import one_population_per_core
from spikeforge.interop.netx_export import export_netx
from spikeforge.interop.netx_import import _dense_projections
from spikeforge.simulator import Network, Population, Projection
from spikeforge.simulator.atomic import write_text

RUNNER = os.path.join(os.path.dirname(__file__), "lava", "run_netx.py")


def _cuba(rng, name, shape, restart, bias=True):
    """A cuba layer in Loihi's arithmetic with random netx parameters (decays in 1/4096, θ = 64·vThMant, even
    biases x 64)."""
    n = int(np.prod(shape))
    per = shape[0] if len(shape) == 3 else n
    b = rng.integers(-6, 8, per) * 2 * 64 if bias else np.zeros(per)
    if len(shape) == 3:
        b = np.repeat(b, n // shape[0])
    return Population.make(name, "cuba", shape, float(rng.integers(10, 60)) * 64, 0.0, b, reset="zero",
                           decay=(4096 - int(rng.integers(0, 4097))) / 4096,
                           syn_decay=(4096 - int(rng.integers(0, 4097))) / 4096, spike_value="unit",
                           threshold_test="gt", arithmetic="loihi", **restart)


def _weights(rng, shape, low=-40, high=60):
    return (rng.integers(low // 2, high // 2, shape) * 2 * 64).astype(np.float32)  # even netx weights, x 64


def _restart(interval, k):
    return {} if interval is None else {"reset_every": interval, "reset_phase": k % interval}


def conv_net(seed, interval):
    """bias input (2, 8, 8) -> conv 3x3 pad 1 (4, 8, 8) -> conv 3x3 stride 2 (6, 3, 3) -> dense 54 -> 20 with
    per-neuron delays 0-5 -> dense_rec 20 -> 10 -> their spike counts."""
    rng = np.random.default_rng(seed)
    pops = [Population.make("input", "input", (2, 8, 8)),
            _cuba(rng, "input0", (2, 8, 8), _restart(interval, 0), bias=False),
            _cuba(rng, "conv1", (4, 8, 8), _restart(interval, 1)),
            _cuba(rng, "conv2", (6, 3, 3), _restart(interval, 2)),
            _cuba(rng, "dense4", (20,), _restart(interval, 3)),
            _cuba(rng, "dense5", (10,), _restart(interval, 4)),
            Population.make("output", "readout", (10,), **_restart(interval, 4))]
    pops[1].syn_decay[:] = 0.0  # netx's input layer: the sample is its bias, no current memory
    w_dense = _weights(rng, (20, 54))
    delays = rng.integers(0, 6, 20)
    projs = [Projection("input0.in", "sparse", "input", "input0", np.full(128, 64, np.float32),
                        indptr=np.arange(129), indices=np.arange(128)),
             Projection("conv1", "conv2d", "input0", "conv1", _weights(rng, (4, 2, 3, 3)), padding=(1, 1), delay=1),
             Projection("conv2", "conv2d", "conv1", "conv2", _weights(rng, (6, 4, 3, 3)), stride=(2, 2), delay=1)]
    projs += _dense_projections("dense4", "conv2", "dense4", w_dense / 64, delays)  # as import-lava writes them
    projs += [Projection("dense5", "dense", "dense4", "dense5", _weights(rng, (10, 20)), delay=1),
              Projection("dense5.rec", "dense", "dense5", "dense5", _weights(rng, (10, 10), -60, 40), delay=1),
              Projection("output", "identity", "dense5", "output")]
    x = rng.integers(0, 40, (1, 2, 8, 8)).astype(np.float64)  # bias_mant
    return _net(pops, projs), x, False


def spike_net(seed, interval):
    """spikes (16,) -> dense 24 (delays 0-9) -> dense_rec 24 -> dense 12 -> an integrating output layer of 5."""
    rng = np.random.default_rng(seed)
    pops = [Population.make("input", "input", (16,)),
            _cuba(rng, "dense1", (24,), _restart(interval, 0)),
            _cuba(rng, "dense2", (24,), _restart(interval, 1)),
            _cuba(rng, "dense3", (12,), _restart(interval, 2)),
            Population.make("dense4", "readout", (5,), 0.0, 0.0, rng.integers(-4, 4, 5) * 2 * 64.0,
                            **_restart(interval, 3))]
    w1, delays = _weights(rng, (24, 16), -20, 80), rng.integers(0, 10, 24)
    projs = _dense_projections("dense1", "input", "dense1", w1 / 64, delays)
    projs += [Projection("dense2", "dense", "dense1", "dense2", _weights(rng, (24, 24)), delay=1),
              Projection("dense2.rec", "dense", "dense2", "dense2", _weights(rng, (24, 24), -50, 40), delay=1),
              Projection("dense3", "dense", "dense2", "dense3", _weights(rng, (12, 24)), delay=1),
              Projection("dense4", "dense", "dense3", "dense4", _weights(rng, (5, 12)), delay=1)]
    return _net(pops, projs), None, True


def _sd(rng, name, shape, **kw):
    """A sigma_delta layer as netx builds Lava's SigmaDelta: θ = vThMant x 2^12, bias x 2^12, payload d >> 6."""
    n = int(np.prod(shape))
    per = shape[0] if len(shape) == 3 else n
    b = rng.integers(-4, 6, per) * 2 * 4096.0
    if len(shape) == 3:
        b = np.repeat(b, n // shape[0])
    return Population.make(name, "sigma_delta", shape, float(rng.integers(0, 20)) * 4096, 0.0, b, reset="none",
                           payload_shift=6, **kw)


def sdnn_net(seed, interval):
    """a_in input (2, 8, 8) -> Delta -> conv 3x3 pad 1 (4, 8, 8) -> conv 3x3 stride 2 (6, 3, 3) -> dense 54 -> 20
    (per-neuron delays 0-3) -> dense 10 -> a Sigma output of 3 (its σ every step). No restarts (netx gives
    sigma-delta layers none)."""
    rng = np.random.default_rng(seed)
    pops = [Population.make("input", "input", (2, 8, 8)),
            Population.make("input0", "sigma_delta", (2, 8, 8), float(rng.integers(0, 3)) * 4096, reset="none",
                            delta_input=True, payload_shift=6),
            _sd(rng, "conv1", (4, 8, 8), input_wrap=24), _sd(rng, "conv2", (6, 3, 3), input_wrap=24),
            _sd(rng, "dense4", (20,)), _sd(rng, "dense5", (10,)), Population.make("dense6", "readout", (3,))]
    projs = [Projection("input0.in", "sparse", "input", "input0", np.full(128, 4096, np.float32),
                        indptr=np.arange(129), indices=np.arange(128)),
             Projection("conv1", "conv2d", "input0", "conv1", _weights(rng, (4, 2, 3, 3)) / 64, padding=(1, 1),
                        delay=1),
             Projection("conv2", "conv2d", "conv1", "conv2", _weights(rng, (6, 4, 3, 3)) / 64, stride=(2, 2),
                        delay=1)]
    projs += _dense_projections("dense4", "conv2", "dense4", _weights(rng, (20, 54)) / 64, rng.integers(0, 4, 20),
                                scale=1)
    projs += [Projection("dense5", "dense", "dense4", "dense5", _weights(rng, (10, 20)) / 64, delay=1),
              Projection("dense6", "dense", "dense5", "dense6", _weights(rng, (3, 10)) / 64, delay=1)]
    x = rng.integers(-30, 60, (1, 2, 8, 8)).astype(np.float64)
    return _net(pops, projs), x, "ain"


def _net(pops, projs):
    cores, edges = one_population_per_core(pops, projs)
    return Network(pops, projs, cores, edges, {"name": "random-netx"})


def _lava(args, path, x, T, schedule, spikes, folder, state=False):
    """Lava's outputs of every layer netx builds, (T, neurons) each in our C order (and, with state, its layers' σ
    after the last step)."""
    inp = os.path.join(folder, "x.npy")
    np.save(inp, x)
    out = os.path.join(folder, "lava.npz")
    cmd = [args.lava_python, RUNNER, path, "--input", inp, "--T", str(T), "--out", out] + ([] if state else
                                                                                         ["--no-state"])
    if schedule is not None:
        cmd += ["--reset-interval", str(schedule[0]), "--reset-offset", str(schedule[1])]
    if spikes is True:
        cmd.append("--spike-input")
    elif spikes == "ain":
        cmd.append("--ain-input")
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"Lava failed on {path}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    z = np.load(out)
    layers, sigmas = [], []
    for i in range(int(z["num_layers"])):
        a = z[f"layer{i}"]
        layers.append((a.transpose(3, 2, 1, 0) if a.ndim == 4 else a.T).reshape(T, -1))  # (x, y, c, t) -> (t, ...)
        if f"layer{i}_sigma" in z:
            sg = z[f"layer{i}_sigma"]
            sigmas.append((sg.transpose(2, 1, 0) if sg.ndim == 3 else sg).reshape(-1))
    return (layers, sigmas) if state else layers


def check_sdnn(args, name, make, seed, T):
    """A sigma-delta network: the Sigma output's σ every step and every SigmaDelta layer's σ after the last step,
    Lava's against ours (payloads are compared through what they add up to downstream)."""
    net, x, _ = make(seed, None)
    layers = [p.name for p in net.populations if p.model == "sigma_delta" and not p.delta_input]
    sizes = {p.name: p.size for p in net.populations}
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "net.net")
        export_netx(net, path)
        t0 = time.perf_counter()
        outs, sigmas = _lava(args, path, x[0], T, None, "ain", folder, state=True)
        lava_s = time.perf_counter() - t0
    out = net.populations[-1].name
    traced = [(out, i) for i in range(sizes[out])] + [(n, i) for n in layers for i in range(sizes[n])]
    res = simulator.run(net, x, T, trace=traced)
    row = {"network": name, "seed": seed, "T": T, "reset_interval": None, "layers": {}}
    ours_out = res.traces[0, :, :sizes[out]]
    row["layers"][out] = {"neurons": sizes[out], "compared": "sigma every step",
                          "mismatches": int((ours_out != outs[-1]).sum())}
    start = sizes[out]
    for n, lava_sigma in zip(layers, sigmas[1:]):  # (the Delta input layer has no σ)
        ours = res.traces[0, -1, start:start + sizes[n]]
        start += sizes[n]
        row["layers"][n] = {"neurons": sizes[n], "compared": "sigma after the last step",
                            "mismatches": int((ours != lava_sigma).sum())}
    row["lava_s"] = round(lava_s, 1)
    return row


def check(args, name, make, seed, interval, T):
    net, x, spikes = make(seed, interval)
    cubas = [p.name for p in net.populations if p.model == "cuba"]
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "net.net")
        schedule = export_netx(net, path)
        if spikes:
            x = (np.random.default_rng(seed + 100).random((1, T, net.input.size)) < 0.3).astype(np.float64)
            lava_x = x[0].T  # (inputs, T)
        else:
            lava_x = x[0]
        t0 = time.perf_counter()
        lava = _lava(args, path, lava_x, T, schedule, spikes, folder)
        lava_s = time.perf_counter() - t0
    res = simulator.run(net, x, T, record=cubas)
    ours = [res.spikes[n][0].reshape(T, -1) for n in cubas]
    row = {"network": name, "seed": seed, "T": T, "reset_interval": interval, "layers": {}}
    for n, a, b in zip(cubas, ours, lava):
        row["layers"][n] = {"neurons": int(a.shape[1]), "spikes_ours": int(a.sum()), "spikes_lava": int(b.sum()),
                            "mismatches": int((a != b).sum())}
    row["lava_layers_compared"] = min(len(cubas), len(lava))
    row["lava_s"] = round(lava_s, 1)
    return row


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lava-python", required=True, help="python of the Lava environment (benchmarks/lava/setup.sh)")
    p.add_argument("--out", required=True)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--T", type=int, default=40)
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    rows = []
    for name, make in (("conv-delays-rec", conv_net), ("spikes-delays-rec", spike_net)):
        for seed in range(args.seeds):
            for interval in (None, 12):
                row = check(args, name, make, seed, interval, args.T)
                rows.append(row)
                bad = sum(v["mismatches"] for v in row["layers"].values())
                print(f"{name} seed {seed} restart {interval}: "
                      + ", ".join(f"{k} {v['spikes_ours']}/{v['spikes_lava']}" for k, v in row["layers"].items())
                      + f" spikes (ours/Lava); {bad} mismatches; Lava {row['lava_s']} s", flush=True)
                write_text(os.path.join(args.out, "netx_lava.json"), json.dumps(rows, indent=1))
    for seed in range(args.seeds):
        row = check_sdnn(args, "sdnn-conv-delays", sdnn_net, seed, args.T)
        rows.append(row)
        print(f"sdnn-conv-delays seed {seed}: " + ", ".join(f"{k} {v['mismatches']}" for k, v in row["layers"].items())
              + f" mismatching values; Lava {row['lava_s']} s", flush=True)
        write_text(os.path.join(args.out, "netx_lava.json"), json.dumps(rows, indent=1))
    total = sum(v["mismatches"] for r in rows for v in r["layers"].values())
    print(f"{len(rows)} networks, {total} mismatching neuron-steps")
    return 0 if total == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
