"""The `spikeforge` command line."""
from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import math
import os
import re
import sys
import tempfile
import time
import traceback
import uuid

from spikeforge import __version__
from spikeforge.errors import UserError, size_text

EXAMPLES = {
    "demo": "spikeforge demo --out spikeforge-demo",
    "convert": "spikeforge convert --model spikeforge.models:DigitsResNet --weights resnet.pt "
               "--calibration calib.npz --out net.h5 --norm percentile --percentile 99.99",
    "inspect": "spikeforge inspect net.h5 --target loihi --png cores.png",
    "report": "spikeforge report net.h5 --data test.npz --x-key x --y-key y --T 1 2 4 8 "
              "--target loihi --target generic45nm --out report/",
    "simulate": "spikeforge simulate net.h5 --input test.npz --x-key x --y-key y --T 8 --out run.npz",
    "sweep": "spikeforge sweep --example > sweep.toml && spikeforge sweep sweep.toml --workers 2   "
             "# or --scheduler tcp://host:8786\n\nexit status: 0 every point ran, 1 some points failed (the count is "
             "printed; their errors are in summary.md), 2 the spec was refused before anything ran",
    "export-nir": "spikeforge export-nir net.h5 net.nir",
    "import-nir": "spikeforge import-nir snntorch_model.nir net.h5 --convention snntorch --target loihi",
    "import-lava": "spikeforge import-lava pilotnet.net net.h5 --reset-interval 16 --target loihi2",
    "export-lava": "spikeforge export-lava net.h5 pilotnet.net",
}


class _Parser(argparse.ArgumentParser):
    """argparse with the command line's one error format: `spikeforge <cmd>: error: ...` on one line, exit 2
    (argparse prints its usage block first; --help still shows it)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)\n")


def _size(text):
    """A byte count such as 64G, 512M, 1.5T or 1000000 (binary units: 1K = 1024 bytes)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*", text, re.IGNORECASE)
    if not m or float(m.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size (give e.g. 64G, 512M or a number of bytes)")
    return int(float(m.group(1)) * 1024 ** " KMGT".index(m.group(2).upper() or " "))


def _parser():
    p = _Parser(prog="spikeforge", description="ANN-to-SNN conversion and event-driven "
                                "neuromorphic hardware simulation.")
    p.add_argument("--version", action="version", version=f"spikeforge {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    def add(name, help_text):
        cmd = sub.add_parser(name, help=help_text, description=help_text, epilog=f"example:\n  {EXAMPLES[name]}",
                             formatter_class=argparse.RawDescriptionHelpFormatter)
        cmd.add_argument("--debug", action="store_true", help="show the full traceback of an unexpected error")
        return cmd

    d = add("demo", "Train a small CNN on scikit-learn digits, convert it, and evaluate the SNN for several T.")
    d.add_argument("--out", default="spikeforge-demo", help="output folder (default: %(default)s)")
    d.add_argument("--epochs", type=int, help="training epochs (default: 20; 3 with --quick)")
    d.add_argument("--T", type=int, nargs="+", help="time steps to evaluate (default: 1 2 4 8 16 32; 2 8 with "
                                                   "--quick)")
    d.add_argument("--quick", action="store_true",
                   help="a smoke run: 3 training epochs, T in 2 8, 120 test digits (seconds; for CI and a first look); "
                        "an explicit --epochs or --T is honoured")

    c = add("convert", "Convert a trained torch model into a network file.")
    c.add_argument("--model", required=True, help="MODULE:CALLABLE returning the torch.nn.Module")
    c.add_argument("--weights", help="state_dict saved with torch.save (loaded with weights_only=True)")
    c.add_argument("--calibration", required=True, help=".npy or .npz (first array, or --key) of input samples")
    c.add_argument("--key", help="array name inside the .npz")
    c.add_argument("--out", required=True, help="network file to write (HDF5)")
    c.add_argument("--norm", choices=("max", "percentile"), default="percentile",
                   help="thresholds from the max or a percentile of each layer's calibration activations (default: "
                        "%(default)s; a clip / QCFS activation's bound is used where the model has one)")
    c.add_argument("--percentile", type=float, default=99.99, help="with --norm percentile (default: %(default)s)")
    c.add_argument("--v-init", type=float, default=0.5, help="initial potential as a fraction of θ")
    c.add_argument("--batch-size", type=_number(int, 1, False), default=128)
    c.add_argument("--neuron", choices=("if", "group", "multi_threshold"), default="if",
                   help="IF, group neurons of --tau members, or multi-threshold neurons of --levels levels")
    c.add_argument("--levels", type=int, default=4, help="levels per multi-threshold neuron (default: %(default)s)")
    c.add_argument("--tau", type=_number(int, 1, False), default=4,
                   help="members per group neuron (default: %(default)s)")
    c.add_argument("--payload", choices=("graded", "expanded", "parallel"), default="graded",
                   help="group neuron events: one graded event or S member spikes (expanded); multi-threshold "
                        "levels: graded events or 2n weight copies (parallel)")
    c.add_argument("--calibrate", choices=("none", "cc", "fc"), default="none",
                   help="two-stage Stage II: coarse (cc) or coarse + fine (fc) layer-wise calibration for --T")
    c.add_argument("--T", type=_number(int, 1, False),
                   help="time steps the network is calibrated for (with --calibrate)")
    c.add_argument("--calib-samples", type=int, default=256, help="samples used by --calibrate")
    c.add_argument("--epochs", type=int, default=30, help="fine-calibration epochs per layer (early stopping)")
    c.add_argument("--loss", choices=("mse", "kl"), default="mse", help="fine-calibration loss")
    c.add_argument("--calib-lr", type=float, default=5e-4,
                   help="fine-calibration learning rate (Adam; default the paper's; 2e-4 was better on a CIFAR-10 "
                        "ResNet-20 at T=2, see benchmarks/RESULTS.md)")
    c.add_argument("--pooling", choices=("fold", "spike"), default="fold",
                   help="fold average pooling into the next layer (exact), or re-encode pooled maps as spikes")
    c.add_argument("--qc-epochs", type=int, default=0,
                   help="two-stage Stage I: QC-finetune the model for --T this many epochs first (needs --y-key)")
    c.add_argument("--p", type=float, default=0.15, help="Stage I quantization-noise probability")
    c.add_argument("--qc-lr", type=float, default=1e-4, help="Stage I learning rate (Adam)")
    c.add_argument("--y-key", help="integer labels inside the --calibration .npz (for --qc-epochs)")
    c.add_argument("--target", help="map onto the cores of this target (loihi, loihi2, speck, truenorth, xylo, "
                                    "generic45nm or a JSON file), by its rule, instead of one core per layer")
    c.add_argument("--placement", choices=("snake", "anneal"), default="anneal",
                   help="core placement on the mesh with --target (default: %(default)s)")
    c.add_argument("--chips", type=_number(int, 0, False), default=0, metavar="N",
                   help="with --target: map onto a system of N chips (default, or 0: the target's board, e.g. "
                        "Loihi's 32; Pohoiki Springs has 768)")
    c.add_argument("--ops-per-core", type=_number(float, 0, False), default=0, metavar="OPS",
                   help="with --target: cut busy layers finer so that no core's synaptic operations per step "
                        "(measured on the calibration samples, checked core by core after mapping) pass OPS: "
                        "shorter chip steps for more cores "
                        "(benchmarks/RESULTS.md, 'Cores cut by work'; default 0: the chip's limits only)")
    c.add_argument("--ns-per-core", type=_number(float, 0, False), default=0, metavar="NS",
                   help="with --target: the same with each core's compute time per step as the target prices it "
                        "(synaptic ops, MACs, neuron updates, active neurons, spikes, packets), in nanoseconds; "
                        "not with --ops-per-core")
    c.add_argument("--fixed-point", action="store_true",
                   help="quantize weights and membranes to the --target's bits before mapping")
    c.add_argument("--hop-delay", type=_number(int, 0, False), default=0, metavar="STEPS",
                   help="steps every projection takes (1: a chip's pipeline, as Loihi and SANA-FE: a population sees "
                        "its sources' spikes of the previous step; default 0: layer-synchronous)")

    s = add("simulate", "Run a network file event-driven on input samples; write outputs and counters.")
    s.add_argument("file")
    s.add_argument("--input", required=True, help=".npy, .npz or .h5 with samples shaped (N, *input shape) or "
                                                  "frames (N, T, *input shape); with --events an event file")
    s.add_argument("--x-key", help="array of samples inside the .npz (default: the first)")
    s.add_argument("--y-key", help="array of integer labels inside the .npz (to report accuracy)")
    s.add_argument("--T", type=_number(int, 1, False), required=True, help="time steps")
    s.add_argument("--batch-size", type=_number(int, 1, False),
                   help="samples per chunk (default: 64 on numba, sized to the device's memory on torch)")
    s.add_argument("--record-counts", action="store_true", help="also store spike counts per neuron")
    s.add_argument("--out", required=True, help="result .npz (a .json summary is written beside it)")
    _input_options(s, "--input")
    _execution_options(s)

    r = add("report", "Simulate a network file for several T and write an energy / SOP / latency report "
                      "(Markdown, JSON, CSV, PNG) for one or more hardware targets.")
    r.add_argument("file")
    r.add_argument("--data", required=True, help=".npy, .npz or .h5 with samples (and labels); with --events an "
                                                 "event file")
    r.add_argument("--x-key", help="samples inside the .npz (default: the first array)")
    r.add_argument("--y-key", help="integer labels inside the .npz (for accuracy)")
    r.add_argument("--T", type=_number(int, 1, False), nargs="+", required=True, help="time steps to evaluate")
    r.add_argument("--target", action="append", help="loihi, loihi2, speck, truenorth, xylo, generic45nm or a "
                                                     "target JSON file (repeatable; default: all built-in targets)")
    r.add_argument("--out", required=True, help="output folder")
    r.add_argument("--limit", type=int, help="use only the first N samples")
    _input_options(r, "--data")
    _execution_options(r)
    r.add_argument("--fixed-point", action="store_true",
                   help="also run each target's fixed-point version (its weight and membrane bits) and report "
                        "the accuracy loss against float")
    r.add_argument("--voltage", action="append", metavar="TARGET=VOLTS",
                   help="price TARGET at this supply voltage, within the range its file publishes (e.g. "
                        "truenorth=0.75; repeatable; default: the voltage its constants hold at)")
    r.add_argument("--host-step-us", type=float, metavar="US",
                   help="a host that paces the chip: no time step is shorter than US microseconds (static power "
                        "runs that long too)")
    r.add_argument("--no-remap", action="store_true",
                   help="price the file's own cores on every target, refusing a target they do not fit (default: "
                        "a target the file was not mapped for gets the network re-mapped for it)")

    i = add("inspect", "Validate a network file and summarize its populations, projections and cores.")
    i.add_argument("file")
    i.add_argument("--json", action="store_true", help="print the summary as JSON")
    i.add_argument("--target", help="target whose limits the per-core utilization is measured against")
    i.add_argument("--png", help="write the mesh load heatmap and the core graph to this PNG")
    _memory_option(i)

    w = add("sweep", "Run a design-space sweep spec (TOML) on Dask; resumable, one stored row per point.")
    w.add_argument("spec", nargs="?", help="sweep spec (TOML; --example prints a commented one)")
    w.add_argument("--example", action="store_true", help="print an example spec (a digits MLP on six targets) "
                                                          "and exit")
    w.add_argument("--scheduler", help="address of a running Dask scheduler (default: a local cluster)")
    w.add_argument("--workers", type=int, help="local cluster worker processes (default: min(4, cores))")
    w.add_argument("--retry-errors", action="store_true", help="run the points that failed before again")
    w.add_argument("--backend", choices=("numba", "torch", "auto"), default="numba",
                   help="how each point simulates (see simulate --backend); results are the same")
    w.add_argument("--device", help="torch device of --backend torch on the workers")

    from spikeforge.interop.nir_export import NO_NIR_EQUIVALENT

    e = add("export-nir", "Write a network file as a NIR graph (Neuromorphic Intermediate Representation). "
                          "What NIR cannot express rides in node metadata; populations of these models have no NIR "
                          "node and are refused: " + ", ".join(NO_NIR_EQUIVALENT) + ".")
    e.add_argument("file", help="spikeforge network file (HDF5)")
    e.add_argument("out", help="NIR file to write")
    e.add_argument("--convention", choices=("nir", "snntorch", "norse"), default="nir",
                   help="nir: the NIR equations at dt = 1, spikeforge's semantics in metadata (default); snntorch: "
                        "the graph snnTorch 1.0's import_from_nir reads as the same network (dt = 1e-4); norse: the "
                        "graph Norse 1.1's from_nir reads as the same network (dt = 1e-3); refused, naming the part, "
                        "where the peer cannot hold it")
    _memory_option(e)
    x = add("export-lava", "Write a network in Loihi's arithmetic (what import-lava builds) as a lava-dl netx file "
                           "(docs/NETX.md); prints the reset_interval / reset_offset to give netx's Network, which "
                           "the file cannot hold.")
    x.add_argument("file", help="spikeforge network file (HDF5)")
    x.add_argument("out", help="netx file to write")
    _memory_option(x)
    m = add("import-nir", "Build a network file from a NIR graph (Input, Affine, Linear, Conv2d, AvgPool2d, "
                          "SumPool2d, Flatten, Scale, Delay, IF, LIF, CubaLIF, I, Output; recurrent cycles), "
                          "discretized with forward Euler at --dt.")
    m.add_argument("nir_file", help="NIR graph file (HDF5, as nir.write writes it)")
    m.add_argument("out", help="network file to write")
    m.add_argument("--dt", type=float, help="time step in the graph's time unit (default: the graph's dt "
                                            "metadata, else the convention's: nir 1, snntorch 1e-4, norse 1e-3)")
    m.add_argument("--convention", choices=("nir", "snntorch", "norse", "sinabs"), default="nir",
                   help="how the tool that wrote the graph means its parameters (docs/NIR.md): nir = the NIR "
                        "equations; snntorch = snnTorch's export_to_nir (dt 1e-4, Leaky input gain 1); norse = "
                        "Norse's to_nir (dt 1e-3, tau written as dt/tau_mem_inv, IAF input gain 1); sinabs = as "
                        "sinabs's from_nir builds its layers (several spikes a step, subtractive reset, IF membranes "
                        "kept >= -threshold, LIF decay exp(-1/tau))")
    _import_mapping_options(m)
    n = add("import-lava", "Build a network file from a lava-dl netx file (input, dense, conv, pool, flatten, "
                           "dense_rec layers; CUBA / LOIHI and SDNN sigma-delta neurons; axonal delays) that "
                           "computes what Lava's bit-accurate processes compute (docs/NETX.md). Its samples are what "
                           "Lava takes: the input layer's bias_mant integers (CUBA), its a_in integers (SDNN), or 0/1 "
                           "spike frames (an input layer without neurons).")
    n.add_argument("netx_file", help="netx network file (HDF5, as lava-dl's export_hdf5 writes it)")
    n.add_argument("out", help="network file to write")
    n.add_argument("--layers", type=_number(int, 0, True), metavar="N",
                   help="import the first N layers only (netx's num_layers; e.g. to leave out an average layer)")
    n.add_argument("--reset-interval", type=_number(int, 0, True), metavar="STEPS",
                   help="as netx's Network(reset_interval=...): each layer's state restarts every STEPS steps, one "
                        "step later per layer (a stream of samples of STEPS steps)")
    n.add_argument("--reset-offset", type=_number(int, 0, False), default=0, metavar="K",
                   help="netx's reset_offset (with --reset-interval; default 0)")
    _import_mapping_options(n)
    return p


def _import_mapping_options(cmd):
    """--target / --placement / --chips of an importer (import-nir, import-lava)."""
    cmd.add_argument("--target", help="map onto the cores of this target instead of one core per population")
    cmd.add_argument("--placement", choices=("snake", "anneal"), default="anneal")
    cmd.add_argument("--chips", type=_number(int, 0, False), default=0, metavar="N",
                     help="with --target: map onto a system of N chips (default, or 0: the target's board)")


def _number(kind, low, strict):
    """An argparse type: a `kind` number > low (strict) or >= low."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not math.isfinite(value) or not (value > low if strict else value >= low):
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'} "
                                             f"{'>' if strict else '>='} {low}")
        return value
    return parse


def _input_options(cmd, flag):
    """--encoding / --seed / --clip (static samples) and --events / --dt / --t0 (event files): how the samples of
    `flag` enter the network (README, "Encodings and event input")."""
    cmd.add_argument("--encoding", choices=("direct", "rate", "latency"), default="direct",
                     help="static samples: the analog value every step (direct, MACs), Bernoulli spikes with "
                          "p = value each step (rate), or one spike at step round((1 - value)(T - 1)) (latency); "
                          "rate and latency need values in [0, 1] (default: %(default)s)")
    cmd.add_argument("--seed", type=_number(int, 0, False),
                     help="seed of --encoding rate: sample i draws from numpy's default_rng([seed, i]) (default: 0)")
    cmd.add_argument("--clip", action="store_true", help="clip values to [0, 1] for --encoding rate / latency "
                                                        "instead of refusing values outside")
    cmd.add_argument("--events", action="store_true",
                     help=f"{flag} is an event file (.npz or .h5: arrays t, x, y, p or t, address, and sample, each "
                          "event's sample index; --y-key names the labels), binned into T steps; counts are spikes")
    cmd.add_argument("--dt", type=_number(float, 0, True),
                     help="with --events: step length in the events' time unit (e.g. 1000 for 1 ms steps of "
                          "microsecond timestamps); the window is [t0, t0 + T * dt) (default: each sample's events "
                          "[first, last] cut into T steps)")
    cmd.add_argument("--t0", type=_number(float, 0, False),
                     help="with --events: start of the window (default: each sample's first event)")


def _execution_options(cmd):
    """--backend / --device / --workers / --scheduler: where and how the samples are simulated."""
    cmd.add_argument("--backend", choices=("numba", "torch", "auto"), default="numba",
                     help="numba event engine (the reference), the exact torch backend (same spikes and counters, "
                          "float64 on any torch device), or auto: torch on a GPU when there is one, else numba")
    cmd.add_argument("--device", help="torch device of --backend torch (cpu, cuda, cuda:1; default: cuda if "
                                      "available, else cpu)")
    cmd.add_argument("--synops", choices=("all", "effective"), default="all",
                     help="synaptic operations counted: all (every stored synapse an event reaches, zero weights "
                          "included, as a chip with dense synapse memory reads them) or effective (nonzero weights of "
                          "weighted connections only, NeuroBench's effective ACs / MACs; default: all)")
    cmd.add_argument("--workers", type=int, help="split the samples over a local Dask cluster of N processes (with "
                                                 "--device cuda: N GPUs, one worker process each)")
    cmd.add_argument("--scheduler", help="split the samples over the Dask cluster at this scheduler address")
    _memory_option(cmd)


def _memory_option(cmd):
    cmd.add_argument("--max-memory", type=_size, metavar="SIZE",
                     help="refuse (before any work) input files and runs that need more host memory than this: "
                          "what the files' arrays declare (decompressed) and the per-step results, e.g. 64G or 512M "
                          "(default: half of this machine's memory)")


@contextlib.contextmanager
def _runner(args, path, network):
    """A callable(x, T, progress, **run options) -> Result for the chosen backend, in-process or on Dask."""
    from spikeforge import simulator

    options = {"backend": args.backend, "device": args.device, "max_bytes": args.max_memory, "synops": args.synops}
    if args.workers is not None and args.scheduler is not None:
        raise UserError("give --workers (a local cluster) or --scheduler (a running one), not both")
    if args.workers is None and args.scheduler is None:
        flat = simulator.prepare(network)
        yield lambda x, T, progress=None, **kw: simulator.run(flat, x, T, progress=progress, **options, **kw)
        return
    from spikeforge.cluster import dask_client, gpu_devices, run_sharded

    gpus = args.scheduler is None and str(args.device or "").startswith("cuda")  # one local worker per GPU
    if gpus:
        options["device"] = "cuda"  # each worker sees its own GPU alone, as cuda:0
    with dask_client(args.scheduler, args.workers, devices=gpu_devices(args.workers, args.device) if gpus
                     else None) as client:
        yield lambda x, T, progress=None, **kw: run_sharded(path, x, T, client, progress=progress, **options, **kw)


class _Inputs:
    """The samples of --input / --data and how they enter the network: x (static samples, frames, or a list of
    event streams), y (labels or None), text (the encoding, as the summary and the report say it), dropped
    ({T: events outside the window}), and feed(runner, net) -> a runner that takes x (encodes or bins it for net's
    input; a UserError naming the option when x does not fit it)."""

    def __init__(self, x, y, text, feed):
        self.x, self.y, self.text, self.dropped = x, y, text, {}
        self._feed = feed

    def feed(self, runner, net):
        if self.y is not None and len(self.y):  # labels the readout cannot give would only lower the accuracy
            import numpy as np

            classes = int(np.prod(net.readout.shape))
            low, high = int(np.min(self.y)), int(np.max(self.y))
            if low < 0 or high >= classes:
                raise UserError(f"the labels (--y-key) run from {low} to {high}, but the network's readout has "
                                f"{classes} outputs: labels must be class indices 0 .. {classes - 1}")
        run = self._feed(self, runner, tuple(net.input.shape)) if self._feed else runner
        depth = _input_delay(net)
        if not depth:
            return run

        def noted(x, T, progress=None, **kw):
            if 2 * depth >= T:
                print(f"note: T={T}: the input reaches the readout only after {depth} steps (the projections' "
                      "delays, e.g. --hop-delay), so most of the steps carry no output; give a larger T",
                      file=sys.stderr)
            return run(x, T, progress, **kw)
        return noted


def _input_delay(net) -> int:
    """Steps before anything the input sends can reach the readout: the smallest sum of delays over the paths
    (populations are in topological order)."""
    first = {net.input.name: 0}
    for p in net.populations[1:]:
        arrivals = [first[q.source] + int(q.delay) for q in net.incoming(p.name) if q.source in first]
        if arrivals:
            first[p.name] = min(arrivals)
    return first.get(net.readout.name, 0)


def _inputs(args, path, flag, limit=None):
    """_Inputs of `path` (the --input / --data file) by --encoding / --seed / --clip or --events / --dt / --t0;
    misplaced or bad options are refused naming them."""
    import numpy as np

    from spikeforge.simulator import Encoding, bin_samples, load_events

    if args.events:
        for opt, given in (("--x-key", args.x_key), ("--encoding", args.encoding != "direct"), ("--seed", args.seed),
                           ("--clip", args.clip)):
            if given:
                raise UserError(f"{opt} does not apply to --events (an event file's samples are its events, binned "
                                "into spike counts)")
        if limit is not None and limit < 1:
            raise UserError(f"--limit must be >= 1, got {limit}")
        samples, y = load_events(_existing(path), args.y_key, max_bytes=args.max_memory)
        if limit is not None:
            samples, y = samples[:limit], (y[:limit] if y is not None else None)
        text = ("events, " + (f"steps of {args.dt:g}" if args.dt else "each sample's span / T per step")
                + (f" from t0 = {args.t0:g}" if args.t0 is not None else " from each sample's first event"))

        def binned(inputs, runner, shape):
            def run(x, T, progress=None, **kw):
                from spikeforge.simulator.arrayfiles import default_memory_bound

                need = 8 * len(x) * T * int(np.prod(shape))
                bound = args.max_memory or default_memory_bound()
                if need > bound:
                    raise UserError(f"T={T}: binning {len(x)} event samples into {T} steps of {int(np.prod(shape))} "
                                    f"inputs needs {size_text(need)}, more than the memory bound "
                                    f"{size_text(bound)}; lower --T (or --limit), or raise --max-memory")
                frames, dropped = bin_samples(x, shape, T, args.dt, args.t0, source=path)
                inputs.dropped[T] = int(dropped.sum())
                if dropped.sum() and not frames.any():
                    raise UserError(f"{path}: T={T}: all {int(dropped.sum())} events fall outside the window [t0, t0 "
                                    "+ T * dt): no sample has any input (check --t0 and --dt against the events' "
                                    "times)")
                if dropped.sum():
                    print(f"note: T={T}: {int(dropped.sum())} events fall outside the window [t0, t0 + T * dt) and "
                          "were left out", file=sys.stderr)
                return runner(frames, T, progress, spikes=True, **kw)
            return run
        return _Inputs(samples, y, text, binned)
    for opt, given in (("--dt", args.dt is not None), ("--t0", args.t0 is not None)):
        if given:
            raise UserError(f"{opt} applies to --events only")
    fields = _event_fields(path) if args.x_key is None else ()
    if fields:
        raise UserError(f"{flag} {path} holds event fields ({', '.join(fields)}): add --events to bin them into "
                        "steps (or --x-key to read one array as samples)")
    x, y = _samples_and_labels(path, args.x_key, args.y_key, limit, max_bytes=args.max_memory)
    if args.encoding == "direct":
        for opt, given, which in (("--seed", args.seed is not None, "rate"), ("--clip", args.clip, "rate / latency")):
            if given:
                raise UserError(f"{opt} applies to --encoding {which}, not direct")
        def direct(inputs, runner, shape):
            if x.ndim == len(shape) + 2:  # (N, T, *input shape): the file's own frames, one per step
                inputs.text = "per-step frames from the file"
            return runner
        return _Inputs(x, y, "direct", direct)
    if args.seed is not None and args.encoding != "rate":
        raise UserError(f"--seed applies to --encoding rate, not {args.encoding} (which draws nothing)")
    enc = Encoding(args.encoding, args.seed or 0, args.clip)
    flat = x.reshape(len(x), -1)
    if not args.clip:
        bad = np.flatnonzero((flat < 0).any(1) | (flat > 1).any(1))
        if bad.size:
            raise UserError(f"--encoding {args.encoding} needs {flag} values in [0, 1], but sample {bad[0]} has "
                            f"values in [{flat[bad[0]].min():.4g}, {flat[bad[0]].max():.4g}] (rescale them, or "
                            "--clip to clip them to [0, 1])")

    def encoded(inputs, runner, shape):
        if flat.shape[1] != int(np.prod(shape)):
            raise UserError(f"--encoding {args.encoding} encodes static samples (N, {', '.join(map(str, shape))}), "
                            f"but {flag} {path} holds an array of shape {x.shape}")

        def run(x, T, progress=None, **kw):  # encoded chunk by chunk (on Dask, by each shard: it knows its offset)
            return runner(x, T, progress, encoding=enc, **kw)
        return run
    return _Inputs(x, y, str(enc), encoded)


def _event_fields(path):
    """The event fields (t, x, y, p or t, address) of an .npz / HDF5 file that holds them, else ()."""
    from spikeforge.simulator.arrayfiles import list_arrays

    try:
        names = set(list_arrays(path))
    except (UserError, OSError):
        return ()  # the sample reader says what is wrong with the file
    for fields in (("t", "x", "y", "p"), ("t", "address")):
        if names >= set(fields):
            return fields
    return ()


def _samples_and_labels(path, x_key, y_key, limit=None, x_flag="--x-key", max_bytes=None):
    """Samples and (optional) integer labels of the same length from a .npy / .npz; --limit keeps the first N."""
    import numpy as np

    if limit is not None and limit < 1:
        raise UserError(f"--limit must be >= 1, got {limit}")
    x = _load_array(path, x_key, x_flag, max_bytes)
    y = _load_array(path, y_key, "--y-key", max_bytes) if y_key else None
    if x.ndim < 1 or len(x) == 0:
        raise UserError(f"{path}: no samples in {x_key or 'the first array'} (shape {x.shape})")
    if y is not None:
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
            raise UserError(f"{path}: labels {y_key!r} must be a 1-d integer array, got {y.dtype} of shape {y.shape}")
        if len(y) != len(x):
            raise UserError(f"{path}: {len(y)} labels in {y_key!r} for {len(x)} samples")
    if limit is not None:
        x, y = x[:limit], (y[:limit] if y is not None else None)
    return x, y


def _load_model(spec, weights):
    import torch

    if ":" not in spec:
        raise UserError(f"--model must be MODULE:CALLABLE, got {spec!r}")
    mod, attr = spec.split(":", 1)
    if os.getcwd() not in sys.path:  # last: a file in the current folder (an h5py.py) never shadows a package
        sys.path.append(os.getcwd())
    if not mod or mod.endswith(".py") or "/" in mod or os.sep in mod:
        raise UserError(f"--model {spec}: give a module name, not a file (e.g. mymodels:resnet20 for "
                        "./mymodels.py, importable from the current folder)")
    try:
        factory = getattr(importlib.import_module(mod), attr)
    except ModuleNotFoundError as exc:
        raise UserError(f"--model {spec}: {exc}: the module must be importable, from the installed packages or, "
                        f"after them, as {mod.replace('.', os.sep)}.py in the current folder ({os.getcwd()})") from None
    except (ImportError, AttributeError, TypeError) as exc:
        raise UserError(f"--model {spec}: {exc}") from None
    if not callable(factory):
        raise UserError(f"--model {spec}: {attr} is a {type(factory).__name__}, not a function or class that "
                        "returns the model")
    try:
        model = factory()
    except Exception as exc:  # noqa: BLE001 - the user's code: say whose error it is
        raise UserError(f"--model {spec}: calling {attr}() raised {type(exc).__name__}: "
                        f"{' '.join(str(exc).split())[:300]}") from None
    if not isinstance(model, torch.nn.Module):
        raise UserError(f"--model {spec}: {attr}() returned a {type(model).__name__}, not a torch.nn.Module")
    if weights:
        try:  # weights_only: a checkpoint is data, never code (a pickled object could run anything on load)
            state = torch.load(weights, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise
        except Exception as exc:  # noqa: BLE001 - whatever torch raises on a pickle it refuses is the file's fault
            reason = re.sub(r"\x1b\[[0-9;]*m", "", str(exc).strip().splitlines()[0]) if str(exc).strip() else ""
            if not re.search(r"[A-Za-z]{3}", reason):  # a bare key or number (pickle's reader) says nothing
                reason = f"its bytes do not read as one ({type(exc).__name__} {reason})".replace(" )", ")")
            raise UserError(f"--weights {weights}: not a weights-only torch checkpoint (a state_dict of tensors)"
                            + (f": {reason[:200]}" if reason else "")) from None
        if not isinstance(state, dict):
            raise UserError(f"--weights {weights}: holds a {type(state).__name__}, not a state_dict")
        try:
            model.load_state_dict(state)
        except (RuntimeError, TypeError, AttributeError) as exc:
            raise UserError(f"--weights {weights} do not fit --model {spec}: "
                            f"{' '.join(str(exc).split())[:300]}") from None
    return model


def _load_array(path, key, flag="--x-key", max_bytes=None):
    """An array from a .npy file, or the array `key` (default: the first) of a .npz file or of an HDF5 file's root
    datasets (.h5 / .hdf5); flag: the option that named the key (a key given for a .npy file, which holds one
    array, is refused rather than ignored). Numbers only, within max_bytes (default: half the memory), checked from
    the file's headers before anything is read."""
    from spikeforge.simulator.arrayfiles import list_arrays, read_arrays

    names = list_arrays(_existing(path))
    if names == [None] and key is not None:
        raise UserError(f"{path}: a .npy file holds one array, so {flag} {key} cannot pick one (give an .npz with "
                        f"named arrays, or leave out {flag})")
    if not names:
        raise UserError(f"{path}: no arrays in it")
    name = names[0] if key is None else key
    if name not in names:
        raise UserError(f"{path}: no array {name!r} (has {names})")
    return read_arrays(path, [name], max_bytes)[name]


def _existing(path):
    """path, or the command line's `<path>: no such file` (before the isolated reader says it its own way)."""
    if not os.path.exists(path):
        raise FileNotFoundError(2, "No such file or directory", path)
    return path


class _Bars:
    """tqdm bars for a library call's progress(stage, done, total, note): one bar per stage."""

    def __init__(self):
        self.bars = {}

    def __call__(self, stage, done, total, note=""):
        from tqdm import tqdm

        bar = self.bars.get(stage)
        if bar is None:
            for old in self.bars.values():
                old.close()
            bar = self.bars[stage] = tqdm(total=total, desc=stage, disable=None)
        bar.update(done - bar.n)
        if note:
            bar.set_postfix_str(note)

    def close(self):
        for bar in self.bars.values():
            bar.close()


def cmd_convert(args):
    import warnings

    import numpy as np

    from spikeforge.converter import write_network
    from spikeforge.converter.mapping import WorkBudgetWarning
    from spikeforge.converter.pipeline import ConvertSettings, convert_pipeline

    if args.qc_epochs and not args.y_key:
        raise UserError("--qc-epochs needs --y-key (integer labels of the --calibration samples)")
    tuned = args.qc_epochs or args.calibrate != "none"
    if tuned and args.T is None:  # (ConvertSettings says the same in its own parameter names)
        raise UserError("--qc-epochs and --calibrate tune the network for a number of steps: give --T")
    if args.T is not None and not tuned:
        raise UserError("--T is the number of steps --calibrate or --qc-epochs tune for; without them it does "
                        "nothing (simulate and report take their own --T)")
    if args.fixed_point and not args.target:
        raise UserError("--fixed-point takes its weight and membrane bits from a target: give --target")
    for flag, budget in (("--ops-per-core", args.ops_per_core), ("--ns-per-core", args.ns_per_core)):
        if budget and not args.target:
            raise UserError(f"{flag} cuts the cores of a --target's mapping by work: give --target")
    if args.ops_per_core and args.ns_per_core:
        raise UserError("give one work budget per core: --ops-per-core or --ns-per-core, not both")
    _check_outputs([args.out], "--out", [args.calibration, args.weights])
    settings = ConvertSettings(
        norm=args.norm, percentile=args.percentile, v_init=args.v_init, batch_size=args.batch_size,
        neuron=args.neuron, tau=args.tau, levels=args.levels, payload=args.payload, pooling=args.pooling, T=args.T,
        qc_epochs=args.qc_epochs, p=args.p, qc_lr=args.qc_lr, calibrate=args.calibrate,
        calib_samples=args.calib_samples, calib_epochs=args.epochs, calib_loss=args.loss, calib_lr=args.calib_lr,
        target=args.target, placement=args.placement, fixed_point=args.fixed_point, hop_delay=args.hop_delay,
        chips=args.chips, ops_per_core=args.ops_per_core, ns_per_core=args.ns_per_core)
    model = _load_model(args.model, args.weights)
    x, y = _samples_and_labels(args.calibration, args.key, args.y_key, x_flag="--key")
    which = f"array {args.key!r}" if args.key else "first array (--key names another)"
    if x.ndim < 2 or not len(x) or x.dtype.kind not in "biuf":
        raise UserError(f"--calibration {args.calibration}: its {which} holds {x.dtype} of shape {x.shape}, not "
                        "samples (N, *input shape)")
    finite = np.isfinite(x.reshape(len(x), -1)).all(axis=1)
    if not finite.all():
        raise UserError(f"--calibration {args.calibration}: sample {int(np.argmin(finite))} of its {which} "
                        "contains NaN or inf")
    bars, caught = _Bars(), []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.filterwarnings("always", category=WorkBudgetWarning)
            net = convert_pipeline(model, x, settings, y=y, progress=bars)
    finally:
        bars.close()
        for w in caught:  # the work budget's note as a note, any other warning as it was raised
            if issubclass(w.category, WorkBudgetWarning):
                print(f"spikeforge convert: note: {w.message}", file=sys.stderr)
            else:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    write_network(net, args.out)
    print(f"wrote {args.out}: {len(net.populations)} populations, {len(net.projections)} projections, "
          f"{len(net.cores)} cores")
    if not args.weights:
        print(f"spikeforge convert: note: no --weights: the model's weights are those {args.model.split(':')[1]}() "
              "gave it", file=sys.stderr)


def summarize(net):
    from spikeforge.simulator.geometry import synapse_count

    shapes = {p.name: p.shape for p in net.populations}
    return {
        "attrs": {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in net.attrs.items()
                  if k not in ("population_order", "projection_order")},
        "populations": [{"name": p.name, "model": p.model, "shape": list(p.shape), "neurons": p.size,
                         "threshold_mean": float(p.threshold.mean())} for p in net.populations],
        "projections": [{"name": q.name, "kind": q.kind, "source": q.source, "target": q.target,
                         "synapses": synapse_count(q, shapes[q.source], shapes[q.target]), "delay": int(q.delay),
                         "recurrent": net.recurrent(q)} for q in net.projections],
        "cores": len(net.cores),
    }


def cmd_inspect(args):
    from spikeforge import hwmodels
    from spikeforge.fit import mapped_for
    from spikeforge.hwmodels.targets import load_target
    from spikeforge.inspect_cores import core_loads, plot_cores
    from spikeforge.simulator import load_network

    if args.png:
        if not str(args.png).lower().endswith(".png"):
            raise UserError(f"--png {args.png}: the image is written as PNG; give a name ending in .png")
        _check_outputs([args.png], "--png", [args.file])
    net = load_network(_existing(args.file), isolate=True, max_bytes=args.max_memory)
    s = summarize(net)
    own = mapped_for(net)
    if args.target:
        target = load_target(args.target)
        s["weights_sized_as"] = f"{target.name}'s {int(target.limits['weight_bits'])}-bit weights (--target)"
    elif own in hwmodels.available():  # measured against the chip the file was mapped for, said so
        target = load_target(own)
        s["weights_sized_as"] = (f"{own}'s {int(target.limits['weight_bits'])}-bit weights (the target the file was "
                                 "mapped for; --target measures against another)")
    else:
        target = None
        s["weights_sized_as"] = ("32-bit weights (no target given or recorded in the file; --target sizes them "
                                 "as a chip stores them)")
    own_rule = target is not None and target.mapping != "cores"
    # a chip with its own placement rule (Speck, Xylo) is checked by that rule, not by per-core limits
    if own_rule:
        s["weights_sized_as"] = f"32-bit weights ({target.name} is checked by its own placement rule below)"
    s["core_loads"] = core_loads(net, None if own_rule else target)
    if own_rule:
        from spikeforge.converter.mapping import chip_rule_check

        s["chip_rule"] = chip_rule_check(net, target)
    if args.png:
        plot_cores(net, s["core_loads"], args.png, f"{args.file}: {len(net.cores)} cores, mapping "
                                                    f"{net.attrs.get('mapping', 'not recorded in the file')}")
    if args.json:
        print(json.dumps(s, indent=2, default=str))
        return
    print(f"{args.file}: valid, format {s['attrs'].get('format_version')}, {s['cores']} cores")
    print(f"{'population':24} {'model':15} {'shape':>14} {'neurons':>9} {'θ mean':>9}")
    for p in s["populations"]:
        print(f"{p['name']:24} {p['model']:15} {str(tuple(p['shape'])):>14} {p['neurons']:>9} "
              f"{p['threshold_mean']:>9.4f}")
    print(f"\n{'projection':24} {'kind':9} {'source -> target':40} {'synapses':>10}")
    for q in s["projections"]:
        tags = (["recurrent"] if q["recurrent"] else []) + ([f"delay {q['delay']}"] if q["delay"] else [])
        late = f" ({', '.join(tags)})" if tags else ""
        print(f"{q['name']:24} {q['kind']:9} {q['source'] + ' -> ' + q['target']:40} {q['synapses']:>10}{late}")
    _print_cores(s["core_loads"], net, args, s["weights_sized_as"], target and target.name)
    if "chip_rule" in s:
        _print_chip_rule(s["chip_rule"], target.name)


def _print_chip_rule(check, target):
    """What the target's own rule says of the network: the layers' memories against their cores, or why not."""
    if not check["fits"]:
        print(f"\ndoes not fit {target} ({check['rule']} rule): {check['reason']}")
        return
    print(f"\nfits {target} ({check['rule']} rule):")
    for row in check["layers"]:
        print("  " + ", ".join(f"{k} {v}" for k, v in row.items()))


def _print_cores(rows, net, args, sized_as, against=None):
    """Per-layer core summary (cores, mesh extent, mean / max utilization) and the edges' hop statistics."""
    print(f"\n{len(rows)} cores on {len(set(r['chip'] for r in rows))} chip(s), mapping "
          f"{net.attrs.get('mapping', 'not recorded in the file')}; {len(net.core_edges.src)} core edges; synapse "
          f"memory (syn KB, 1 KB = 1,024 bytes) at {sized_as}")
    util = "util_neurons" in rows[0]
    head = f"{'layer':24} {'cores':>5} {'neurons':>8} {'axons max':>9} {'syn KB max':>10}"
    print(head + (f" {'util max (n/a/mem)':>20}" if util else ""))
    by = {}
    for r in rows:
        by.setdefault(r["population"], []).append(r)
    for name, rs in by.items():
        line = (f"{name:24} {len(rs):>5} {sum(r['neurons'] for r in rs):>8} {max(r['axons'] for r in rs):>9} "
                f"{max(r['synapse_bytes'] for r in rs) / 1024:>10.1f}")
        if util:
            peaks = {k: max(r[k] for r in rs) for k in ("util_neurons", "util_axons", "util_memory")}
            line += " " + "/".join(f"{v:.2f}" for v in peaks.values()).rjust(20)
            over = [f"{k[5:]} {v:.2f}x" for k, v in peaks.items() if v > 1]
            if over:
                line += "  over capacity (" + ", ".join(over) + ")"
        print(line)
    if util:
        over = sum(max(r["util_neurons"], r["util_axons"], r["util_memory"]) > 1 for r in rows)
        if over:
            print(f"{over} of {len(rows)} cores over capacity for {against} (a utilization above 1.00: that "
                  "core does not fit the target; map the file for it with convert --target)")
    e = net.core_edges
    if len(e.src):
        hops = abs(net.cores.x[e.src] - net.cores.x[e.dst]) + abs(net.cores.y[e.src] - net.cores.y[e.dst])
        print(f"axon-weighted mean hops {float((hops * e.axons).sum() / max(1, e.axons.sum())):.2f}, "
              f"longest edge {int(hops.max())} hops")
    if args.png:
        print(f"wrote {args.png}")


def cmd_simulate(args):
    import numpy as np
    from tqdm import tqdm

    from spikeforge import simulator
    from spikeforge.outputs import write_run

    if not args.out.endswith(".npz"):  # (the summary goes beside it as .json)
        raise UserError(f"--out {args.out}: the results are a .npz file; give a name ending in .npz")
    json_out = os.path.splitext(args.out)[0] + ".json"
    _check_outputs([args.out, json_out], "--out", [args.file, args.input])
    _check_workers(args)
    inputs = _inputs(args, args.input, "--input")
    x, y = inputs.x, inputs.y
    net = simulator.load_network(_existing(args.file), isolate=True, max_bytes=args.max_memory)
    with _runner(args, args.file, net) as runner:
        run = inputs.feed(runner, net)
        bar = tqdm(total=len(x), desc=f"simulating T={args.T}", unit="sample", disable=None)
        t0 = time.time()
        res = run(x, args.T, lambda done, total: bar.update(done - bar.n), record_counts=args.record_counts,
                  batch_size=args.batch_size)
        wall = time.time() - t0
        bar.close()
    # everything is computed before anything is written; both files carry the same run id (the .npz also holds the
    # summary), and the .json, renamed into place last, records the .npz's SHA-256: a run killed between the two
    # renames leaves a new .npz beside an old .json, which spikeforge.load_run refuses as a mismatched pair
    summary = {"run_id": uuid.uuid4().hex, "file": args.file, "samples": len(x), "T": args.T,
               "backend": res.backend, "device": res.device, "encoding": inputs.text, "wall_s": wall,
               "mapping": str(net.attrs.get("mapping", "not recorded in the file")),
               "synops": args.synops, "totals": res.totals(),
               **({"shards": res.shards} if res.shards else {}),
               "per_sample_mean": dict(zip(simulator.COUNTERS, res.per_sample.mean(0).tolist()))}
    if args.events:
        summary["events_left_out"] = inputs.dropped.get(args.T, 0)
    if y is not None:
        summary["accuracy"] = float((res.predictions() == np.asarray(y)).mean())
    arrays = {"output": res.output, "counters": res.counters, "per_sample": res.per_sample,
              "counter_names": np.array(simulator.COUNTERS), "core_population": res.core_population,
              "summary": np.array(json.dumps(summary))}
    arrays.update({f"spike_counts/{k}": v for k, v in res.spike_counts.items()})
    write_run(args.out, arrays, summary)
    print(json.dumps(summary, indent=2))


def _check_workers(args):
    """--workers / --scheduler, before any work: not both; --workers within the cores of a local cluster, or with
    --device cuda within its GPUs (one worker each)."""
    from spikeforge.cluster import check_workers

    if args.workers is not None and args.scheduler is not None:
        raise UserError("give --workers (a local cluster) or --scheduler (a running one), not both")
    gpus = str(getattr(args, "device", None) or "").startswith("cuda")
    if gpus and args.workers is not None and getattr(args, "backend", "numba") == "numba":
        raise UserError("--device cuda runs on the torch backend: give --backend torch (or auto)")
    check_workers(args.scheduler, args.workers, gpus=gpus)


def _check_outputs(outs, flag, inputs):
    """Refuse, before any work, outputs that are folders, FIFOs or devices, or that are one of the inputs."""
    from spikeforge.simulator.atomic import check_output_path

    for out in outs:
        check_output_path(out, flag)
        for given in inputs:
            if given and os.path.exists(out) and os.path.exists(given) and os.path.samefile(out, given):
                raise UserError(f"{flag} {out} is the input {given}; writing it would destroy the input: give "
                                "another name")


def _pricing(args, targets) -> dict:
    """{target name: estimate's keyword options} from --voltage TARGET=VOLTS and --host-step-us, checked before any
    work (a target that is not reported, publishes no voltage range, or a voltage outside it: refused)."""
    names = {t.name: t for t in targets}
    out = {name: {} for name in names}
    for item in args.voltage or ():
        name, sep, volts = item.partition("=")
        try:
            value = float(volts)
        except ValueError:
            value = None
        if not sep or value is None or not math.isfinite(value):
            raise UserError(f"--voltage {item!r}: give TARGET=VOLTS, e.g. truenorth=0.75")
        if name not in names:
            raise UserError(f"--voltage {item!r}: {name!r} is not one of the targets reported ({', '.join(names)})")
        names[name].voltage_scale(value)  # a target without a supply range, or a voltage outside it: TargetError
        out[name]["voltage"] = value
    if args.host_step_us is not None:
        if not math.isfinite(args.host_step_us) or args.host_step_us < 0:
            raise UserError(f"--host-step-us must be a finite number >= 0, got {args.host_step_us}")
        for options in out.values():
            options["host_step_ns"] = args.host_step_us * 1e3
    return out


def cmd_report(args):
    from tqdm import tqdm

    from spikeforge import hwmodels, simulator
    from spikeforge.fit import fit_targets
    from spikeforge.outputs import check_replaceable, replace_folder
    from spikeforge.report import evaluate_mapped, write_report
    from spikeforge.simulator import load_network

    check_replaceable(args.out)  # before any work: a file, or a folder of other things, is refused
    _check_workers(args)
    inputs = _inputs(args, args.data, "--data", args.limit)
    x, y = inputs.x, inputs.y
    targets = [hwmodels.load_target(t) for t in (args.target or hwmodels.available())]
    pricing = _pricing(args, targets)
    net = load_network(_existing(args.file), isolate=True, max_bytes=args.max_memory)
    left_out = None if args.target else []  # every built-in target: those that cannot hold it are left out, said
    fits = fit_targets(net, targets, args.file, remap=not args.no_remap,  # (progress on a terminal, as tqdm's)
                       progress=(lambda text: print(f"spikeforge report: {text} ...", file=sys.stderr))
                       if sys.stderr.isatty() else None, left_out=left_out)
    if not fits:
        raise UserError(f"{args.file} fits none of the built-in targets: "
                        + "; ".join(f"{name}: {why}" for name, why in left_out))
    targets = [f.target for f in fits]
    bar = tqdm(total=len(x) * len(args.T) * len({id(f.network) for f in fits}),
               desc="simulating (samples x T x mappings)", disable=None)
    with tempfile.TemporaryDirectory() as scratch:
        @contextlib.contextmanager
        def runner_for(group_net, group, i):
            path = args.file
            if group[0].remapped and (args.workers is not None or args.scheduler is not None):
                from spikeforge.converter import write_network

                path = os.path.join(scratch, f"remapped{i}.h5")  # Dask workers load the network from a file
                write_network(group_net, path)
            with _runner(args, path, group_net) as runner:
                yield inputs.feed(runner, group_net)

        rows, runs, ann, mappings = evaluate_mapped(fits, x, y, args.T, bar.update, runner_for, pricing)
    bar.close()
    fixed = None
    if args.fixed_point:
        from spikeforge.report import fixed_point_rows, fixed_point_table

        fbar = tqdm(total=len(x) * len(args.T) * len(targets), desc="fixed point (samples x T x targets)",
                    disable=None)
        def run_fixed(fixed_net, samples, T):  # in this process, the samples encoded / binned as for the float runs
            flat = simulator.prepare(fixed_net)

            def direct(xs, steps, progress=None, **kw):
                return simulator.run(flat, xs, steps, progress=progress, max_bytes=args.max_memory,
                                     synops=args.synops, **kw)
            return inputs.feed(direct, fixed_net)(samples, T)

        fixed = fixed_point_rows(net, x, y, runs, targets, fbar.update, max_bytes=args.max_memory, run=run_fixed)
        fbar.close()
        print("\nFixed point (weights, thresholds and membranes in the target's integer widths):")
        print(fixed_point_table(fixed))
    name = str(net.attrs.get("name", os.path.basename(args.file)))
    with replace_folder(args.out) as tmp:  # built beside --out, then swapped in as a whole
        table = write_report(tmp, name, rows, runs, ann, mappings[0][0], len(x), fixed_rows=fixed,
                             encoding=inputs.text, synops=args.synops, mappings=mappings, left_out=left_out)
    print(table)
    print("\nmapping priced:\n" + "\n".join(f"{f.target.name}: {f.mapping}" for f in fits))
    for name_, why in left_out or ():
        print(f"left out: {name_}: {why}")
    print(f"report written to {os.path.join(os.path.normpath(args.out), 'report.md')}")


def cmd_demo(args):
    from spikeforge.demo import run_demo

    # --quick sets smaller defaults; an --epochs or --T given with it is honoured, not silently replaced
    epochs = args.epochs if args.epochs is not None else 3 if args.quick else 20
    steps = args.T if args.T is not None else [2, 8] if args.quick else [1, 2, 4, 8, 16, 32]
    if epochs < 1 or min(steps) < 1:
        raise UserError(f"--epochs and every --T must be >= 1, got --epochs {epochs} --T {' '.join(map(str, steps))}")
    run_demo(args.out, epochs=epochs, steps=steps, test_samples=120 if args.quick else None)


def cmd_sweep(args):
    from spikeforge import sweep

    if args.example:
        from importlib import resources

        print(resources.files("spikeforge").joinpath("examples/sweep_digits.toml").read_text(encoding="utf-8"), end="")
        return
    if args.spec is None:
        raise UserError("give a sweep spec file (spikeforge sweep --example prints one)")
    _check_workers(args)

    spec = sweep.load_spec(args.spec)
    spec["execution"] = {"backend": args.backend, "device": args.device}  # how each point simulates
    rows = sweep.run_sweep(spec, args.scheduler, args.workers, args.retry_errors)
    bad = sum(r["status"] != "ok" for r in rows)
    plots = [p for p in sweep.PLOTS if os.path.exists(os.path.join(spec["store"], p))]
    print(f"{len(rows)} points ({bad} failed): {os.path.join(spec['store'], 'results.csv')}, summary.md"
          + (f" and the Pareto plots {', '.join(plots)}" if plots else " (no plots: no point succeeded)"))
    if bad:  # the sweep ran, but not every point: exit 1 (2 is a spec refused before anything ran)
        print(f"spikeforge sweep: {bad} of {len(rows)} points failed (their errors are in "
              f"{os.path.join(spec['store'], 'summary.md')}; --retry-errors runs them again)", file=sys.stderr)
        return 1


def cmd_export_nir(args):
    from spikeforge.interop.nir_export import export_nir
    from spikeforge.simulator import load_network

    _check_outputs([args.out], "out", [args.file])
    export_nir(load_network(_existing(args.file), isolate=True, max_bytes=args.max_memory), args.out,
               args.convention)
    print(f"wrote {args.out}")


def cmd_export_lava(args):
    from spikeforge.interop.netx_export import export_netx
    from spikeforge.simulator import load_network

    _check_outputs([args.out], "out", [args.file])
    schedule = export_netx(load_network(_existing(args.file), isolate=True, max_bytes=args.max_memory), args.out)
    print(f"wrote {args.out}" + ("" if schedule is None else
                                 f"; run it with netx.hdf5.Network(net_config={args.out!r}, reset_interval="
                                 f"{schedule[0]}, reset_offset={schedule[1]}): the file cannot hold them"))


def _run_import(args, source, warning, build):
    """An importer's common part: --chips needs --target, the output checked against the input, build() run with
    the importer's own warnings printed (another library's warning is not the file's); returns the network read
    back from --out."""
    import warnings

    from spikeforge.simulator import load_network

    if args.chips and not args.target:
        raise UserError("--chips is the size of the system the --target's cores are mapped onto: give --target")
    _check_outputs([args.out], "out", [source])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", warning)
        build()
    for w in caught:
        if issubclass(w.category, warning):
            print(f"spikeforge {args.command}: warning: {w.message}", file=sys.stderr)
    return load_network(args.out)


def cmd_import_nir(args):
    from spikeforge.interop.nir_import import NirImportWarning, import_nir

    net = _run_import(args, args.nir_file, NirImportWarning, lambda: import_nir(
        args.nir_file, args.out, dt=args.dt, target=args.target, placement=args.placement,
        convention=args.convention, chips=args.chips or None))
    recurrent = sum(net.recurrent(q) for q in net.projections)
    print(f"wrote {args.out}: {len(net.populations)} populations, {len(net.projections)} projections"
          + (f" ({recurrent} recurrent)" if recurrent else "") + f", {len(net.cores)} cores")


def cmd_import_lava(args):
    from spikeforge.interop.netx_import import NetxImportWarning, import_netx

    if args.reset_offset and not args.reset_interval:
        raise UserError("--reset-offset is the phase of --reset-interval: give --reset-interval")
    net = _run_import(args, args.netx_file, NetxImportWarning, lambda: import_netx(
        args.netx_file, args.out, layers=args.layers, reset_interval=args.reset_interval,
        reset_offset=args.reset_offset, target=args.target, placement=args.placement, chips=args.chips or None))
    shape = tuple(net.input.shape)
    first = net.populations[1]
    feed = (f"the integers Lava sends to the input layer's a_in, shaped {shape} (Lava's (x, y, c) transposed)"
            if first.name == "input0" and first.model == "sigma_delta" else
            f"the input layer's bias_mant integers, shaped {shape} (Lava's (x, y, c) transposed)"
            if first.name == "input0" else f"0/1 spike frames (N, T, *{shape})")
    print(f"wrote {args.out}: {len(net.populations)} populations, {len(net.projections)} projections, "
          f"{len(net.cores)} cores; its samples: {feed}")


def main(argv=None):
    """Run one subcommand; user mistakes exit 2 with `spikeforge <cmd>: error: ...`, anything else exits 1 with
    one line (the traceback with --debug)."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # a bad argument (one line, exit 2), --help or --version: the code, not an exit
        return exc.code
    t0 = time.time()
    try:
        code = COMMANDS[args.command](args) or 0
    except BrokenPipeError:  # the output went to a pipe that closed early (`| head`): nothing more to say
        sys.stdout = open(os.devnull, "w")
        return 0
    except (ValueError, OSError) as exc:  # UserError (every error type of ours), missing / unreadable files
        if args.debug:  # the traceback too, and still the user error's exit code
            traceback.print_exc()
        print(f"spikeforge {args.command}: error: {_user_message(exc, args)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"spikeforge {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug of ours: say so in one line, keep the traceback for --debug
        if args.debug:
            traceback.print_exc()
        hint = "" if args.debug else " (run again with --debug for the traceback)"
        print(f"spikeforge {args.command}: internal error: {type(exc).__name__}: {_one_line(exc)}{hint}",
              file=sys.stderr)
        return 1
    if args.command == "demo":
        print(f"done in {time.time() - t0:.1f} s")
    return code


def _user_message(exc, args):
    """One line for a user error: a file error names the user's path (never a temporary file's), and the memory
    bound of simulator.run is named by its command-line flag."""
    if isinstance(exc, OSError) and exc.filename is not None:
        path = os.fspath(exc.filename)
        if os.path.basename(path).startswith(".") and "spikeforge-" in os.path.basename(path):
            # a temporary file or folder beside the output: the user knows the output's name, not this one
            out = getattr(args, "out", None)
            return f"{out or os.path.dirname(path) or '.'}: cannot write it ({exc.strerror or type(exc).__name__})"
        if isinstance(exc, FileNotFoundError):
            return f"{path}: no such file"
        return f"{path}: {exc.strerror or type(exc).__name__}"
    text = _one_line(exc)
    if text.endswith("or raise max_bytes") and hasattr(args, "max_memory"):
        if args.max_memory is not None:
            text = text.replace("allowed by max_bytes", "allowed by --max-memory")
        text = text[:-len("max_bytes")] + "--max-memory (e.g. --max-memory 64G)"
    return text


def _one_line(exc):
    text = str(exc).strip() or type(exc).__name__
    return text if isinstance(exc, UserError) else " ".join(text.split())


COMMANDS = {"demo": cmd_demo, "convert": cmd_convert, "inspect": cmd_inspect, "simulate": cmd_simulate,
            "report": cmd_report, "sweep": cmd_sweep, "export-nir": cmd_export_nir, "import-nir": cmd_import_nir,
            "import-lava": cmd_import_lava, "export-lava": cmd_export_lava}


if __name__ == "__main__":
    sys.exit(main())
