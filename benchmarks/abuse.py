"""Replays the bad-input and kill -9 cases of issue 22 against the command line and prints a table.

    python -m benchmarks.abuse [--kills 5] [--width 110]

Every case runs `python -m spikeforge.cli ...` in a subprocess, in a temporary folder that already holds the
outputs of a good run (simulate's run.npz + run.json, a report folder), and records the exit code, the first line
of what it printed to stderr, whether there was a traceback, and whether the earlier outputs are intact (byte for
byte; for the kill case: the report folder is the whole old report or a whole new one). Library cases call
`spikeforge.simulator.run` the same way in a subprocess. A tiny untrained network (64 -> 200 -> 300 -> 10) keeps
the whole run under a minute or two on two cores.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time

import numpy as np

LIB = textwrap.dedent("""
    import sys
    import numpy as np
    from spikeforge import simulator
    x = np.load(sys.argv[1])["x"][:4]
    try:
        {call}
    except ValueError as exc:
        print(f"{{type(exc).__name__}}: {{exc}}", file=sys.stderr)
        sys.exit(2)
""")


def tiny_network(path, hidden=200):
    """64 -> hidden IF -> 300 IF -> 10 readout, one core per layer, random weights."""
    from spikeforge.converter import write_network
    from spikeforge.converter.mapping import one_population_per_core
    from spikeforge.simulator.network import Network, Population, Projection

    rng = np.random.default_rng(0)
    pops = [Population.make("in", "input", (64,)), Population.make("h", "if", (hidden,), 1.0, 0.5),
            Population.make("h2", "if", (300,), 1.0, 0.5), Population.make("out", "readout", (10,))]
    projs = [Projection("a", "dense", "in", "h", (rng.normal(size=(hidden, 64)) * 0.3).astype(np.float32)),
             Projection("b", "dense", "h", "h2", (rng.normal(size=(300, hidden)) * 0.1).astype(np.float32)),
             Projection("c", "dense", "h2", "out", (rng.normal(size=(10, 300)) * 0.1).astype(np.float32))]
    return write_network(Network(pops, projs, *one_population_per_core(pops, projs), {"name": "tiny"}), path)


def snapshot(*paths):
    """{file: bytes} of files and of the files inside folders (missing paths map to None)."""
    out = {}
    for p in paths:
        if os.path.isdir(p):
            for f in sorted(os.listdir(p)):
                with open(os.path.join(p, f), "rb") as fh:
                    out[os.path.join(p, f)] = fh.read()
        elif os.path.exists(p):
            with open(p, "rb") as fh:
                out[p] = fh.read()
        else:
            out[p] = None
    return out


def report_whole(folder):
    """The report's name when the folder is one complete report (its generation's files, nothing else), else None."""
    try:
        meta = json.load(open(os.path.join(folder, "report.json")))
        T = meta["rows"][0]["T"]
        files = sorted(os.listdir(folder))
        want = sorted(["report.md", "report.json", "report.csv", f"spikes_per_step_T{T}.png",
                       f"energy_per_layer_loihi_T{T}.png"])
        with open(os.path.join(folder, "report.md")) as fh:
            ok = files == want and f"# spikeforge report: {meta['name']}" in fh.read()
        for f in files:
            if f.endswith(".png"):
                import matplotlib.image

                matplotlib.image.imread(os.path.join(folder, f))
        return (meta["name"], T) if ok else None
    except (OSError, ValueError, KeyError, IndexError):
        return None


class Bench:
    def __init__(self, root):
        self.root, self.rows = root, []
        self.env = dict(os.environ, PYTHONWARNINGS="ignore", TQDM_DISABLE="1")

    def cli(self, *argv, timeout=300):
        return subprocess.run([sys.executable, "-m", "spikeforge.cli", *map(str, argv)], cwd=self.root,
                              capture_output=True, text=True, env=self.env, timeout=timeout)

    def case(self, name, argv, keep=(), absent=(), lib=None):
        """Run one case; keep: paths whose bytes must not change; absent: paths that must not appear."""
        before = snapshot(*keep)
        t0 = time.time()
        if lib is not None:
            p = subprocess.run([sys.executable, "-c", LIB.format(call=lib), "data.npz"], cwd=self.root,
                               capture_output=True, text=True, env=self.env, timeout=300)
        else:
            p = self.cli(*argv)
        err = p.stderr.strip().splitlines()
        first = err[-1] if lib is not None and err else (err[0] if err else "")
        intact = snapshot(*keep) == before and not any(os.path.exists(a) for a in absent)
        self.rows.append({"case": name, "exit": p.returncode, "message": first, "lines": len(err),
                          "traceback": "Traceback" in p.stderr, "intact": intact if keep or absent else None,
                          "seconds": time.time() - t0})

    def print_table(self, width):
        print("| case | exit | message (first line of stderr) | intact |")
        print("|---|---:|---|---|")
        for r in self.rows:
            msg = r["message"].replace(self.root + "/", "").replace("|", "\\|")
            msg = msg if len(msg) <= width else msg[:width - 3] + "..."
            intact = "-" if r["intact"] is None else "yes" if r["intact"] else "NO"
            tb = " (TRACEBACK)" if r["traceback"] else ""
            print(f"| {r['case']} | {r['exit']}{tb} | {msg} | {intact} |")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=5, help="SIGKILLs of `spikeforge report` during its write phase")
    ap.add_argument("--width", type=int, default=110, help="message column width")
    args = ap.parse_args(argv)
    t_start = time.time()
    with tempfile.TemporaryDirectory(prefix="spikeforge-abuse-") as root:
        run_cases(Bench(root), args, t_start)


def run_cases(b, args, t_start):
    root = b.root
    tiny_network(os.path.join(root, "tiny.h5"))
    rng = np.random.default_rng(1)
    x, y = rng.random((12, 64)).astype(np.float32), rng.integers(0, 10, 12)
    np.savez(os.path.join(root, "data.npz"), x=x, y=y)
    np.save(os.path.join(root, "x.npy"), x)
    np.savez(os.path.join(root, "short.npz"), x=x, y=y[:7])
    np.savez(os.path.join(root, "strings.npz"), x=x, y=np.array([str(v) for v in y]))
    np.savez(os.path.join(root, "train.npz"), x_train=x, y_train=y, x_test=x, y_test=y)
    with open(os.path.join(root, "garbage.npz"), "wb") as fh:
        fh.write(b"PK\x03\x04 this is not a zip archive")
    with open(os.path.join(root, "notes.txt"), "w") as fh:
        fh.write("a file, not a folder\n")
    sim = ["simulate", "tiny.h5", "--T", "4", "--out", "run.npz"]
    assert b.cli(*sim, "--input", "data.npz", "--x-key", "x", "--y-key", "y").returncode == 0
    rep = ["report", "tiny.h5", "--data", "data.npz", "--x-key", "x", "--y-key", "y", "--target", "loihi",
           "--out", "rep"]
    assert b.cli(*rep, "--T", "4").returncode == 0
    runs, report = ("run.npz", "run.json"), ("rep",)

    b.case("labels of another length", sim + ["--input", "short.npz", "--x-key", "x", "--y-key", "y"], runs)
    b.case("--y-key with an .npy input", sim + ["--input", "x.npy", "--y-key", "y"], runs)
    b.case("--x-key with an .npy input", sim + ["--input", "x.npy", "--x-key", "x"], runs)
    b.case("string labels", sim + ["--input", "strings.npz", "--x-key", "x", "--y-key", "y"], runs)
    b.case("garbage .npz", sim + ["--input", "garbage.npz"], runs)
    b.case("missing .npz key", sim + ["--input", "data.npz", "--x-key", "images"], runs)
    b.case("missing input file", sim + ["--input", "nope.npz"], runs)
    b.case("--T 10000000 (--max-memory 1G)", ["simulate", "tiny.h5", "--input", "data.npz", "--x-key", "x",
                                              "--T", "10000000", "--max-memory", "1G", "--out", "run.npz"], runs)
    b.case("--T 1000000000 (default bound)", ["simulate", "tiny.h5", "--input", "data.npz", "--x-key", "x",
                                              "--T", "1000000000", "--out", "run.npz"], runs)
    b.case("--backend nope", sim + ["--input", "data.npz", "--backend", "nope"], runs)
    b.case("report --out naming a file", rep[:-1] + ["notes.txt", "--T", "2"], ("notes.txt",))
    b.case("report --limit 0", rep + ["--T", "2", "--limit", "0"], report)
    b.case("report --T 1000000000", rep + ["--T", "1000000000"], report)

    def spec(name, text):
        with open(os.path.join(root, name), "w") as fh:
            fh.write(text)
        return name

    good = ('name = "abuse"\nstore = "store"\n[network]\nfile = "tiny.h5"\n[data]\npath = "train.npz"\n'
            '[axes]\nT = [2]\ntarget = ["loihi"]\n')
    for label, old, new in [("sweep: misspelled model", 'file = "tiny.h5"', 'model = "spikeforge.models:DigitsMPL"'),
                            ("sweep: unknown target", '["loihi"]', '["lohi"]'),
                            ("sweep: unknown key epocs = 2", "[network]\n", "[network]\nepocs = 2\n"),
                            ("sweep: TOML syntax error", 'name = "abuse"', 'name = "abuse')]:
        b.case(label, ["sweep", spec("bad.toml", good.replace(old, new)), "--workers", "1"], absent=("store",))
    b.case("sweep: 1 of 2 points fails", ["sweep", spec("fails.toml", good.replace(
        'target = ["loihi"]', 'target = ["loihi"]\n"limits.axons_per_core" = [8, 4096]')), "--workers", "1"],
        absent=())
    b.rows[-1]["intact"] = os.path.exists(os.path.join(root, "store", "results.csv"))  # written, then exit 1

    import nir

    shape = np.array([10**6] * 3)
    nir.write(os.path.join(root, "huge.nir"), nir.NIRGraph(
        nodes={"input": nir.Input(input_type={"input": shape}),
               "flat": nir.Flatten(input_type={"input": shape}, start_dim=0),
               "output": nir.Output(output_type={"output": np.array([10**18])})},
        edges=[("input", "flat"), ("flat", "output")], type_check=False))
    b.case("NIR Input 10^6 x 10^6 x 10^6", ["import-nir", "huge.nir", "huge.h5"], absent=("huge.h5",))
    nodes = {"input": nir.Input(np.array([4])), "fc1": nir.Affine(np.ones((3, 4)), np.zeros(3)),
             "lif": nir.LIF(tau=np.full(3, 0.01), r=np.ones(3), v_leak=np.zeros(3), v_threshold=np.ones(3)),
             "fc2": nir.Affine(np.ones((2, 3)), np.zeros(2)), "output": nir.Output(np.array([2]))}
    nir.write(os.path.join(root, "dropped.nir"), nir.NIRGraph(nodes, [("input", "fc1"), ("lif", "fc2"),
                                                                        ("fc2", "output")]))
    b.case("NIR graph with a dropped edge fc1 -> lif", ["import-nir", "dropped.nir", "dropped.h5", "--dt", "1e-4"],
           absent=("dropped.h5",))
    import h5py

    shutil.copy(os.path.join(root, "tiny.h5"), os.path.join(root, "wrapped.h5"))
    with h5py.File(os.path.join(root, "wrapped.h5"), "r+") as h5:
        h5["populations"][list(h5["populations"])[1]].attrs["shape"] = np.array([2 ** 32, 2 ** 32], np.int64)
    b.case("file whose shape product wraps int64", ["simulate", "wrapped.h5", "--input", "data.npz", "--x-key", "x",
                                                    "--T", "2", "--out", "runs/run.npz"], runs)
    b.case("library: run(batch_size=0)", None, lib='simulator.run("tiny.h5", x, 2, batch_size=0)')
    b.case("library: run(T=2.7)", None, lib='simulator.run("tiny.h5", x, 2.7)')
    b.case("library: Result.counter('nope')", None, lib='simulator.run("tiny.h5", x, 2).counter("nope")')

    # kill -9 while `spikeforge report` writes: poll for its temporary sibling folder, then SIGKILL
    whole, landed, newer, t0 = 0, 0, 0, time.time()
    gen = random.Random(0)
    previous = report_whole(os.path.join(root, "rep"))
    before = snapshot(os.path.join(root, "rep"))
    for k in range(args.kills):
        p = subprocess.Popen([sys.executable, "-m", "spikeforge.cli", *rep, "--T", str(2 + k % 2)], cwd=root,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=b.env)
        deadline = time.time() + 60
        while p.poll() is None and time.time() < deadline and \
                not any(f.startswith(".rep.spikeforge-tmp-") for f in os.listdir(root)):
            time.sleep(0.002)
        time.sleep(gen.uniform(0, 0.4))
        landed += p.poll() is None
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        now = report_whole(os.path.join(root, "rep"))
        after = snapshot(os.path.join(root, "rep"))
        ok = now is not None and (now != previous or after == before)  # a new whole report, or the old, bytewise
        whole += ok
        newer += ok and now != previous
        previous, before = now, after
    clean = b.cli(*rep, "--T", "4")
    leftovers = [f for f in os.listdir(root) if f.startswith(".rep.spikeforge-")]
    message = (f"{whole}/{args.kills} folders whole ({args.kills - newer} the old report byte for byte, {newer} a "
               f"complete new one); the next run exits {clean.returncode}, {len(leftovers)} temporary siblings left")
    b.rows.append({"case": f"kill -9 during report write ({landed} of {args.kills} in the write phase)",
                   "exit": -9, "message": message, "traceback": False, "intact": whole == args.kills and not leftovers,
                   "seconds": time.time() - t0, "lines": 0})

    b.print_table(args.width)
    bad = [r for r in b.rows if r["traceback"] or r["intact"] is False or r["lines"] > 1]
    print(f"\n{len(b.rows)} cases in {time.time() - t_start:.0f} s: "
          f"{sum(r['exit'] == 2 for r in b.rows)} exit 2, {sum(r['traceback'] for r in b.rows)} tracebacks, "
          f"{sum(r['intact'] is False for r in b.rows)} with outputs not intact, "
          f"{sum(r['lines'] > 1 for r in b.rows)} with more than one line of error")
    if bad:
        print("problems: " + "; ".join(r["case"] for r in bad))
        sys.exit(1)


if __name__ == "__main__":
    main()
