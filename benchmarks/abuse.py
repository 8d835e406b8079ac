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

# the console script's way of running the command line: the current folder is not on the import path (python -c
# would put it first), and the peak resident memory is written to argv[1] at exit
WRAP = ("import sys, atexit, resource; sys.path.pop(0); rss = sys.argv.pop(1); "
        "atexit.register(lambda: open(rss, 'w').write(str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))); "
        "from spikeforge.cli import main; sys.exit(main(sys.argv[1:]))")

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
            for dp, _, files in sorted(os.walk(p)):
                for f in sorted(files):
                    with open(os.path.join(dp, f), "rb") as fh:
                        out[os.path.join(dp, f)] = fh.read()
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
        want = sorted([".spikeforge-outputs.json", "report.md", "report.json", "report.csv",
                       f"spikes_per_step_T{T}.png", f"energy_per_layer_loihi_T{T}.png"])
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

    def cli(self, *argv, timeout=300, limit_fsize=None):
        """`spikeforge ARGV` as the console script runs it (the current folder not on the import path), with its
        peak resident memory recorded (self.last_rss_mb); limit_fsize: a file-size limit (a write beyond it fails
        with EFBIG, as a full disk fails with ENOSPC)."""
        rss = os.path.join(self.root, ".rss")
        def limits():
            if limit_fsize is not None:
                import resource

                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
                resource.setrlimit(resource.RLIMIT_FSIZE, (limit_fsize, resource.RLIM_INFINITY))
        try:
            p = subprocess.run([sys.executable, "-c", WRAP, rss, *map(str, argv)], cwd=self.root,
                               capture_output=True, text=True, env=self.env, timeout=timeout, preexec_fn=limits)
        except subprocess.TimeoutExpired:
            p = subprocess.CompletedProcess(argv, -1, "", f"TIMED OUT after {timeout} s")
        try:
            with open(rss) as fh:
                self.last_rss_mb = int(fh.read()) / 1024
            os.unlink(rss)
        except (OSError, ValueError):
            self.last_rss_mb = None
        return p

    def case(self, name, argv, keep=(), absent=(), lib=None, leak=None, timeout=60, limit_fsize=None):
        """Run one case; keep: paths whose bytes must not change; absent: paths that must not appear; leak: bytes
        that no file in the folder but the secret itself may contain afterwards; timeout: seconds."""
        before = snapshot(*keep)
        t0 = time.time()
        self.last_rss_mb = None
        if lib is not None:
            p = subprocess.run([sys.executable, "-c", LIB.format(call=lib), "data.npz"], cwd=self.root,
                               capture_output=True, text=True, env=self.env, timeout=300)
        else:
            p = self.cli(*argv, timeout=timeout, limit_fsize=limit_fsize)
        err = [line for line in p.stderr.strip().splitlines() if not line.startswith("  warnings.warn")
               and "Warning:" not in line]  # (a library's warning is not our error message)
        first = err[-1] if lib is not None and err else (err[0] if err else "")
        intact = snapshot(*keep) == before and not any(os.path.exists(a) for a in absent)
        if leak is not None:  # no output may hold the bytes of a file the command was not given
            intact = intact and not any(leak in open(os.path.join(dp, f), "rb").read()
                                        for dp, _, fs in os.walk(self.root) for f in fs
                                        if not f.startswith("secret"))
        self.rows.append({"case": name, "exit": p.returncode, "message": first, "lines": len(err),
                          "traceback": "Traceback" in p.stderr, "intact": intact if keep or absent or leak else None,
                          "seconds": time.time() - t0, "rss_mb": self.last_rss_mb})

    def print_table(self, width):
        print("| case | exit | message (first line of stderr) | intact | s | peak MB |")
        print("|---|---:|---|---|---:|---:|")
        for r in self.rows:
            msg = r["message"].replace(self.root + "/", "").replace("|", "\\|")
            msg = msg if len(msg) <= width else msg[:width - 3] + "..."
            intact = "-" if r["intact"] is None else "yes" if r["intact"] else "NO"
            tb = " (TRACEBACK)" if r["traceback"] else ""
            rss = "-" if r.get("rss_mb") is None else f"{r['rss_mb']:.0f}"
            print(f"| {r['case']} | {r['exit']}{tb} | {msg} | {intact} | {r['seconds']:.1f} | {rss} |")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write-kills", type=int, default=5,
                    help="SIGKILLs of `spikeforge report` during its write phase")
    ap.add_argument("--kills", type=int, default=50, help="SIGKILLs at random instants of each of simulate, report, "
                                                          "convert and sweep (0: none)")
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
    for k in range(args.write_kills):
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
    message = (f"{whole}/{args.write_kills} folders whole ({args.write_kills - newer} the old report byte for byte, "
               f"{newer} a complete new one); the next run exits {clean.returncode}, {len(leftovers)} temporary "
               "siblings left")
    b.rows.append({"case": f"kill -9 during report write ({landed} of {args.write_kills} in the write phase)",
                   "exit": -9, "message": message, "traceback": False,
                   "intact": whole == args.write_kills and not leftovers, "seconds": time.time() - t0, "lines": 0})
    issue38_cases(b, args)
    full_disk_cases(b)
    if args.kills:
        kill_cases(b, args.kills)

    b.print_table(args.width)
    bad = [r for r in b.rows if r["traceback"] or r["intact"] is False or r["lines"] > 1]
    slow = [r for r in b.rows if r["exit"] == 2 and r["seconds"] > 10]
    kills = [r for r in b.rows if r["exit"] == -9]
    print(f"\n{len(b.rows)} cases in {time.time() - t_start:.0f} s ({len(kills)} kill rows): "
          f"{sum(r['exit'] == 2 for r in b.rows)} exit 2, {sum(r['traceback'] for r in b.rows)} tracebacks, "
          f"{sum(r['intact'] is False for r in b.rows)} with outputs not intact, "
          f"{sum(r['lines'] > 1 for r in b.rows)} with more than one line of error, {len(slow)} refusals slower "
          f"than 10 s; peak memory of a refusal {max((r['rss_mb'] or 0) for r in b.rows if r['exit'] == 2):.0f} MB")
    bad += [r for r in slow if r not in bad]
    if bad:
        print("problems: " + "; ".join(r["case"] for r in bad))
        sys.exit(1)



# --------------------------------------------------------------------------------------------- issue 38 cases

def _borrowing(root, src, dst, how, secret, key="projections/a/weight"):
    """A copy of HDF5 file src whose dataset `key` reads from elsewhere (external storage on the secret file, an
    external link or a virtual dataset over src)."""
    import h5py

    shutil.copy(os.path.join(root, src), os.path.join(root, dst))
    with h5py.File(os.path.join(root, dst), "a") as f:
        shape, dtype = f[key].shape, f[key].dtype
        del f[key]
        if how == "external storage":
            f.create_dataset(key, shape=shape, dtype=dtype,
                             external=[(os.path.join(root, secret), 0, int(np.prod(shape)) * dtype.itemsize)])
        elif how == "external link":
            f[key] = h5py.ExternalLink(os.path.join(root, src), key)
        else:
            layout = h5py.VirtualLayout(shape=shape, dtype=dtype)
            layout[:] = h5py.VirtualSource(os.path.join(root, src), key, shape=shape)
            f.create_virtual_dataset(key, layout)
    return dst


def _npz_bomb(path, n):
    """An .npz member declaring n float64 values (its data left out: a reader that trusts the header allocates)."""
    import zipfile

    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z, z.open("x.npy", "w") as fh:
        np.lib.format.write_array_header_1_0(fh, {"descr": "<f8", "fortran_order": False, "shape": (n,)})
        fh.write(b"\0" * 65536)


def issue38_cases(b, args):
    """Files that read other files, bounds on every input path, exit-2 cases, foreign files in output folders."""
    import h5py

    root = b.root
    secret = b"TOP-SECRET-" * 2048
    with open(os.path.join(root, "secret.txt"), "wb") as fh:
        fh.write(secret)
    runs = ("run.npz", "run.json")
    sim = ["simulate", "tiny.h5", "--T", "2", "--out", "run.npz"]
    x = np.load(os.path.join(root, "data.npz"))["x"]
    with h5py.File(os.path.join(root, "data.h5"), "w") as f:
        f["x"] = x
    np.savez(os.path.join(root, "ev.npz"), t=np.arange(5), address=np.arange(5))
    with h5py.File(os.path.join(root, "ev.h5"), "w") as f:
        f["t"], f["address"] = np.arange(5), np.arange(5)
    for how in ("external storage", "external link", "virtual dataset"):
        tag = how.split()[-1]
        bad = _borrowing(root, "tiny.h5", f"net-{tag}.h5", how, "secret.txt")
        for cmd in (["inspect", bad], ["export-nir", bad, f"leak-{tag}.nir"], sim[:1] + [bad] + sim[2:] + [
                "--input", "data.npz", "--x-key", "x"]):
            b.case(f"network file, {how}: {cmd[0]}", cmd, runs, absent=(f"leak-{tag}.nir",), leak=secret)
        data = _borrowing(root, "data.h5", f"data-{tag}.h5", how, "secret.txt", key="x")
        b.case(f"sample file, {how}", sim + ["--input", data], runs, leak=secret)
        ev = _borrowing(root, "ev.h5", f"ev-{tag}.h5", how, "secret.txt", key="t")
        b.case(f"event file, {how}", sim + ["--input", ev, "--events"], runs, leak=secret)
    nirbad = os.path.join(root, "good.nir")
    assert b.cli("export-nir", "tiny.h5", "good.nir").returncode == 0
    b.case("NIR file, external link", ["import-nir", _borrowing(root, "good.nir", "link.nir", "external link",
                                                                "secret.txt", key=_first_dataset(nirbad)),
                                       "imported.h5"], absent=("imported.h5",), leak=secret)
    shutil.copy(os.path.join(root, "tiny.h5"), os.path.join(root, "e300.h5"))
    with h5py.File(os.path.join(root, "e300.h5"), "a") as f:
        w = f["projections/b/weight"][()].astype(np.float64)
        del f["projections/b/weight"]
        w[0, 0] = 1e300
        f["projections/b/weight"] = w
    b.case("float64 weight 1e300 (inf in float32)", ["simulate", "e300.h5", "--input", "data.npz", "--T", "2",
                                                     "--out", "run.npz"], runs)

    # dtype zoo as samples and as event fields
    zoo = {"structured": np.zeros(12, [("a", "f4"), ("b", "i4")]), "strings": np.array(["abc"] * 12),
           "datetimes": np.array(["2020-01-01"] * 12, "datetime64[D]"), "complex": np.zeros((12, 64), complex),
           "bytes": np.array([b"ab"] * 12)}
    for name, arr in zoo.items():
        np.savez(os.path.join(root, f"zoo-{name}.npz"), x=arr)
        b.case(f"samples of dtype {name}", sim + ["--input", f"zoo-{name}.npz"], runs)
        np.savez(os.path.join(root, f"zooev-{name}.npz"), t=arr, address=np.arange(12))
        b.case(f"event field t of dtype {name}", sim + ["--input", f"zooev-{name}.npz", "--events"], runs)
    # bombs and declared sizes
    _npz_bomb(os.path.join(root, "bomb.npz"), 10**10)
    b.case(".npz zip bomb (80 GB declared) --max-memory 100M", sim + ["--input", "bomb.npz", "--max-memory", "100M"],
           runs)
    with h5py.File(os.path.join(root, "gzip-bomb.h5"), "w") as f:
        f.create_dataset("x", shape=(2**30, 1), dtype="f4", chunks=(2**20, 1), compression="gzip")
    b.case("HDF5 gzip bomb, 4 GiB of samples declared, --max-memory 1G", sim + ["--input", "gzip-bomb.h5",
                                                                               "--max-memory", "1G"], runs)
    big = _edit_copy(root, "tiny.h5", "pop-2e30.h5", lambda f: _huge_population(f, 2**30))
    b.case("inspect: a 2^30-neuron population", ["inspect", big], ())
    many = os.path.join(root, "many-pops.h5")
    _many_populations(os.path.join(root, "tiny.h5"), many, 10**5)
    b.case("inspect: 10^5 populations", ["inspect", "many-pops.h5"], ())
    far = _edit_copy(root, "tiny.h5", "far.h5", _far_cores)
    b.case("inspect --png: cores 2^24 apart on the mesh", ["inspect", far, "--png", "far.png"], ())
    np.savez(os.path.join(root, "ev-1e12.npz"), t=np.arange(3), address=np.arange(3), n_samples=np.array(10**12))
    b.case("event file declaring 10^12 samples", sim + ["--input", "ev-1e12.npz", "--events"], runs)
    np.savez(os.path.join(root, "ev-1e8.npz"), t=np.arange(3), address=np.arange(3), n_samples=np.array(10**8))
    b.case("event file declaring 10^8 samples", sim + ["--input", "ev-1e8.npz", "--events"], runs)
    b.case("--events --T 10^9", ["simulate", "tiny.h5", "--input", "ev.npz", "--events", "--T", "1000000000",
                                 "--out", "run.npz"], runs)
    b.case("--events --T 10^7 --max-memory 1G", ["simulate", "tiny.h5", "--input", "ev.npz", "--events", "--T",
                                                 "10000000", "--max-memory", "1G", "--out", "run.npz"], runs)
    np.savez(os.path.join(root, "ev-empty.npz"), t=np.zeros(0, np.int64), address=np.zeros(0, np.int64),
             label=np.zeros(2, np.int64))
    b.case("event file with no events", sim + ["--input", "ev-empty.npz", "--events", "--y-key", "label"], runs)
    np.savez(os.path.join(root, "ev3.npz"), t=np.array([0, 10, 20]), address=np.array([1, 2, 3]))
    b.case("--t0 inf", sim + ["--input", "ev3.npz", "--events", "--t0", "inf"], runs)
    b.case("--t0 1e308", sim + ["--input", "ev3.npz", "--events", "--t0", "1e308"], runs)
    b.case("--t0 100 past every event (no --dt)", sim + ["--input", "ev3.npz", "--events", "--t0", "100"], runs)
    # outputs that are inputs, folders, FIFOs, devices
    shutil.copy(os.path.join(root, "data.npz"), os.path.join(root, "in.npz"))
    b.case("--out equal to --input", ["simulate", "tiny.h5", "--input", "in.npz", "--T", "2", "--out", "in.npz"],
           ("in.npz",))
    os.mkfifo(os.path.join(root, "fifo.npz"))
    b.case("--out a FIFO", sim[:-1] + ["fifo.npz", "--input", "data.npz"], runs)
    b.rows[-1]["intact"] = b.rows[-1]["intact"] and _is_fifo(os.path.join(root, "fifo.npz"))
    b.case("--out /dev/null.npz-like device (/dev/zero)", ["export-nir", "tiny.h5", "/dev/zero"], ())
    os.mkdir(os.path.join(root, "run2.json"))
    shutil.copy(os.path.join(root, "run.npz"), os.path.join(root, "run2.npz"))
    b.case("--out run2.npz beside a folder run2.json", sim[:-1] + ["run2.npz", "--input", "data.npz"],
           ("run2.npz",))
    # exit-1 cases of the probe
    import pickle

    with open(os.path.join(root, "list.pt"), "wb") as fh:
        pickle.dump([1, 2, 3], fh)
    b.case("--weights a pickle that is no state dict", ["convert", "--model", "spikeforge.models:DigitsMLP",
                                                        "--weights", "list.pt", "--calibration", "data.npz",
                                                        "--out", "conv.h5"], absent=("conv.h5",))
    b.case("convert --calibrate cc --T 10^9", ["convert", "--model", "spikeforge.models:DigitsMLP", "--calibration",
                                               "data.npz", "--calibrate", "cc", "--T", "1000000000", "--out",
                                               "conv.h5"], absent=("conv.h5",))
    with open(os.path.join(root, "h5py.py"), "w") as fh:
        fh.write("import os\nopen('H5PY-RAN', 'w').write('the current folder was first on the path')\n")
    b.case("convert with an h5py.py in the current folder", ["convert", "--model", "spikeforge.models:DigitsMLP",
                                                            "--calibration", "data.npz", "--out", "conv.h5"],
           absent=("H5PY-RAN",))
    os.unlink(os.path.join(root, "h5py.py"))
    b.case("--workers 64 on this machine", sim + ["--input", "data.npz", "--workers", "64"], runs)
    b.case("import-nir: Affine of 10^6 x 10^6 declared", ["import-nir", _huge_affine(root), "huge2.h5"],
           absent=("huge2.h5",))

    def spec(name, text):
        with open(os.path.join(root, name), "w") as fh:
            fh.write(text)
        return name

    good = ('name = "abuse"\nstore = "store38"\n[network]\nfile = "tiny.h5"\n[data]\npath = "train.npz"\n'
            '[axes]\nT = [2]\ntarget = ["loihi"]\n')
    b.case("sweep: store = 5", ["sweep", spec("s5.toml", good.replace('"store38"', "5"))], absent=("store38",))
    with open(os.path.join(root, "mymodels.py"), "w") as fh:
        fh.write("def not_a_module():\n    return {'a': 1}\n")
    b.env["PYTHONPATH"] = root  # (the factory's module, importable as the user's installed package would be)
    b.case("sweep: model returning a dict", ["sweep", spec("sdict.toml", good.replace(
        'file = "tiny.h5"', 'model = "mymodels:not_a_module"'))], absent=("store38",))
    del b.env["PYTHONPATH"]
    # foreign files in output folders
    os.mkdir(os.path.join(root, "pictures"))
    with open(os.path.join(root, "pictures", "holiday.png"), "wb") as fh:
        fh.write(b"\x89PNG my picture")
    b.case("report --out a folder of the user's PNGs", ["report", "tiny.h5", "--data", "data.npz", "--target",
                                                       "loihi", "--T", "2", "--out", "pictures"], ("pictures",))
    b.case("demo --out a folder of the user's PNGs", ["demo", "--quick", "--out", "pictures"], ("pictures",))
    os.mkdir(os.path.join(root, "mine"))
    for name in ("summary.md", "results.csv"):
        with open(os.path.join(root, "mine", name), "w") as fh:
            fh.write("the user's own\n")
    b.case("sweep store = '.' over the user's summary.md, results.csv", ["sweep", spec(
        os.path.join("mine", "dot.toml"), good.replace('"store38"', '"."').replace('"tiny.h5"', '"../tiny.h5"')
        .replace('"train.npz"', '"../train.npz"'))], ("mine",))


def _first_dataset(path):
    import h5py

    found = []
    with h5py.File(path, "r") as f:
        f.visititems(lambda n, o: found.append(n) if isinstance(o, h5py.Dataset) and not found else None)
    return found[0]


def _is_fifo(path):
    import stat

    return stat.S_ISFIFO(os.stat(path).st_mode)


def _edit_copy(root, src, dst, edit):
    import h5py

    shutil.copy(os.path.join(root, src), os.path.join(root, dst))
    with h5py.File(os.path.join(root, dst), "a") as f:
        edit(f)
    return dst


def _huge_population(f, n):
    """Population h declared with n neurons, its datasets chunked and never written (fill values: a tiny file)."""
    g = f["populations/h"]
    g.attrs["shape"] = np.array([n], np.int64)
    for d in ("threshold", "v_init", "bias"):
        del g[d]
        g.create_dataset(d, shape=(n,), dtype="f4", chunks=(2**20,), compression="gzip")


def _far_cores(f):
    x = f["mapping/cores/x"][()]
    x[-1] = 2**24 - 1
    del f["mapping/cores/x"]
    f["mapping/cores/x"] = x


def _many_populations(src, dst, n):
    """A file whose population_order lists n populations (only the first four exist)."""
    import h5py

    with h5py.File(src, "r") as a, h5py.File(dst, "w", libver="latest") as f:  # (dense attributes: over 64 KiB)
        for key in a:
            a.copy(key, f)
        for key, value in a.attrs.items():
            f.attrs[key] = value
        order = list(a.attrs["population_order"])
        f.attrs["population_order"] = order + [f"p{i}" for i in range(n - len(order))]


def _huge_affine(root):
    import h5py
    import nir

    path = os.path.join(root, "huge-affine.nir")
    nir.write(path, nir.NIRGraph(
        nodes={"input": nir.Input(np.array([4])), "fc": nir.Affine(np.ones((3, 4)), np.zeros(3)),
               "output": nir.Output(np.array([3]))}, edges=[("input", "fc"), ("fc", "output")]))
    with h5py.File(path, "a") as f:
        for key in ("node/nodes/fc/weight", "node/nodes/fc/bias"):
            if key in f:
                shape = (10**6, 10**6) if key.endswith("weight") else (10**6,)
                del f[key]
                f.create_dataset(key, shape=shape, dtype="f8", chunks=True, compression="gzip")
    return path


# ---------------------------------------------------------------------------------------- full disk (ENOSPC)

def full_disk_cases(b):
    """Every writer onto a full file system: a small tmpfs when this process may mount one (root), else a file-size
    limit (EFBIG from the kernel instead of ENOSPC). Exit 2, one line, the old outputs intact, no temporary left."""
    root = b.root
    disk = os.path.join(root, "disk")
    os.mkdir(disk)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", disk], capture_output=True)
    how = "tmpfs of 1 MiB, filled" if mounted.returncode == 0 else "file-size limit 4 KiB (EFBIG)"
    limit = None if mounted.returncode == 0 else 4096
    try:
        for f in ("run.npz", "run.json"):
            shutil.copy(os.path.join(root, f), os.path.join(disk, f))
        with open(os.path.join(disk, "old.nir"), "wb") as fh:
            fh.write(b"old export")
        with open(os.path.join(disk, "old.h5"), "wb") as fh:
            fh.write(b"old network")
        if limit is None:  # fill the disk, leaving a few KiB
            fd = os.open(os.path.join(disk, "filler"), os.O_WRONLY | os.O_CREAT, 0o644)
            try:
                while True:
                    os.write(fd, b"\0" * 4096)
            except OSError:
                pass
            finally:
                os.close(fd)
            os.truncate(os.path.join(disk, "filler"), os.path.getsize(os.path.join(disk, "filler")) - 8192)
        keep = [os.path.join("disk", f) for f in ("run.npz", "run.json", "old.nir", "old.h5")]
        cases = [("simulate", ["simulate", "tiny.h5", "--input", "data.npz", "--x-key", "x", "--T", "4",
                               "--record-counts", "--out", "disk/run.npz"]),
                 ("export-nir", ["export-nir", "tiny.h5", "disk/old.nir"]),
                 ("convert", ["convert", "--model", "spikeforge.models:DigitsMLP", "--calibration", "data.npz",
                              "--out", "disk/old.h5"]),
                 ("import-nir", ["import-nir", "good.nir", "disk/old.h5"]),
                 ("report", ["report", "tiny.h5", "--data", "data.npz", "--target", "loihi", "--T", "2", "--out",
                             "disk/rep"])]
        for name, argv in cases:
            b.case(f"full disk ({how}): {name}", argv, keep, absent=("disk/rep",), limit_fsize=limit)
            temps = [e for e in os.listdir(disk) if "spikeforge-" in e]
            b.rows[-1]["intact"] = b.rows[-1]["intact"] and not temps
    finally:
        if mounted.returncode == 0:
            subprocess.run(["umount", disk], capture_output=True)


# ------------------------------------------------------------------------------------ kill -9 at random instants

def _temporaries(root):
    """spikeforge's temporary files and folders anywhere under root (the output markers are not temporaries)."""
    found = []
    for dp, dirs, files in os.walk(root):
        for e in dirs + files:
            if ".spikeforge-tmp-" in e or ".spikeforge-old-" in e or re_legacy(e):
                found.append(os.path.relpath(os.path.join(dp, e), root))
    return found


def re_legacy(name):
    import re

    return re.match(r"\.spikeforge-[A-Za-z0-9_]{8}\.", name) is not None


def _state_simulate(root):
    from spikeforge.outputs import load_run

    try:
        with np.load(os.path.join(root, "run.npz")) as z:
            {k: z[k] for k in z.files}
        json.load(open(os.path.join(root, "run.json")))
    except (OSError, ValueError):
        return None
    try:
        load_run(os.path.join(root, "run.npz"))
        return "pair"
    except ValueError:
        return "mixed pair (refused by load_run)"


def _state_convert(root):
    from spikeforge.simulator import load_network

    try:
        load_network(os.path.join(root, "conv.h5"))
        return "pair"
    except (OSError, ValueError):
        return None


def _state_report(root):
    return "pair" if report_whole(os.path.join(root, "rep")) is not None else None


def _state_sweep(root):
    store = os.path.join(root, "kstore")
    if not os.path.isdir(os.path.join(store, "points")):
        return "no store yet (killed before it was made)"
    try:
        for f in os.listdir(os.path.join(store, "points")):
            if not f.startswith("."):
                json.load(open(os.path.join(store, "points", f)))
        if os.path.exists(os.path.join(store, "results.csv")):
            with open(os.path.join(store, "results.csv")) as fh:
                fh.read()
    except (OSError, ValueError):
        return None
    return "pair"


def kill_cases(b, kills):
    """`kills` SIGKILLs at instants drawn uniformly over a clean run's duration, of each of simulate, report,
    convert and sweep; after each, every output must be the old or a new whole one; after the next clean run no
    temporary of any killed run may remain."""
    root = b.root
    with open(os.path.join(root, "kill.toml"), "w") as fh:
        fh.write('name = "kills"\nstore = "kstore"\n[network]\nfile = "tiny.h5"\n[data]\npath = "train.npz"\n'
                 '[axes]\nT = [2, 3, 4, 5]\ntarget = ["loihi", "generic45nm"]\n')
    commands = {
        "simulate": (["simulate", "tiny.h5", "--input", "data.npz", "--x-key", "x", "--T", "4", "--out", "run.npz"],
                     _state_simulate, ["run.npz", "run.json"]),
        "report": (["report", "tiny.h5", "--data", "data.npz", "--x-key", "x", "--y-key", "y", "--target", "loihi",
                    "--T", "2", "--out", "rep"], _state_report, ["rep"]),
        "convert": (["convert", "--model", "spikeforge.models:DigitsMLP", "--calibration", "data.npz", "--out",
                     "conv.h5"], _state_convert, ["conv.h5"]),
        "sweep": (["sweep", "kill.toml", "--workers", "1"], _state_sweep, ["kstore"]),
    }
    gen = random.Random(38)
    for name, (argv, state, outs) in commands.items():
        t0 = time.time()
        clean = b.cli(*argv)
        took = time.time() - t0
        assert clean.returncode in (0, 1), clean.stderr
        whole = old = landed = 0
        kinds = {}
        for k in range(kills):
            before = snapshot(*[os.path.join(root, o) for o in outs])
            if name == "sweep":  # a sweep resumes: start each from an empty store so there is work to kill
                shutil.rmtree(os.path.join(root, "kstore"), ignore_errors=True)
            p = subprocess.Popen([sys.executable, "-c", WRAP, os.path.join(root, ".rss"), *argv], cwd=root,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=b.env)
            time.sleep(gen.uniform(0, took))
            landed += p.poll() is None and bool(_temporaries(root))
            p.kill()
            p.wait()
            now = state(root)
            whole += now is not None
            kinds[now] = kinds.get(now, 0) + 1
            old += now is not None and snapshot(*[os.path.join(root, o) for o in outs]) == before
        left_before = len(_temporaries(root))
        again = b.cli(*argv)
        left = _temporaries(root)
        message = (f"{whole}/{kills} whole after the kill ({old} the old output byte for byte; "
                   + ", ".join(f"{v} {k}" for k, v in kinds.items() if k) + f"); {left_before} temporaries left "
                   f"by the kills, {len(left)} after the next run (exit {again.returncode})")
        b.rows.append({"case": f"kill -9 of {name} at random instants ({kills} kills over a {took:.1f} s run, "
                               f"{landed} while a temporary existed)", "exit": -9, "message": message,
                       "traceback": False, "intact": whole == kills and not left, "seconds": time.time() - t0,
                       "lines": 0, "rss_mb": None})
        print(f"{b.rows[-1]['case']}: {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
