"""Property-based robustness check of the network-file reader (hypothesis).

Starting from a small valid network file that uses every dataset kind (conv2d, avgpool, sparse, dense,
lif, mapping tables), hypothesis generates malformed copies: wrong dtypes, wrong shapes, NaN / inf, negative
and out-of-range indices, deleted groups / datasets / attributes, attributes of the wrong type or absurd
value, datasets declaring absurd sizes (terabytes of elements, stored lazily so the file stays small),
truncated files, flipped bits (corrupt HDF5 metadata or checksummed data) and reordered populations. Each
copy must either be rejected with a `NetworkFileError` that names the file, or load into a network the
simulator then runs; no other exception, no crash, and the reader's peak Python-heap allocation stays under
`PEAK_LIMIT`. Each case runs in a worker process, because libhdf5 itself can loop forever or segfault on some
corrupt attribute messages (a single flipped bit does it), which no Python code can prevent or interrupt: a
worker that takes longer than `HANG_SECONDS` is killed and the case counted as a 'hang', a worker that dies as
a 'crash' (with its exit code and mutation), and the run goes on. Each such file is then read once more the way
the command line reads files, `load_network(isolate=True)` (a child process with a time limit), which must
turn it into a NetworkFileError.

    python tests/fuzz_reader.py --examples 3000

prints how many cases of each kind were generated and how each ended (tests/test_robustness.py runs the same
check with fewer examples).
"""
from __future__ import annotations

import argparse
import collections
import os
import shutil
import tempfile
import tracemalloc

import numpy as np
from hypothesis import strategies as st

MUTATIONS = ("dtype", "shape", "nonfinite", "bad_index", "delete", "attribute", "absurd_size", "truncate",
             "bitflip", "order")
PEAK_LIMIT = 64 * 2**20  # bytes of Python-heap (numpy included) the reader may use on these small files
HANG_SECONDS = 30  # a case taking longer than this is a hang (they take milliseconds)


def base_network():
    """input (1, 6, 6) -> conv -> if (2, 6, 6) -> avgpool -> lif (2, 3, 3) -> sparse -> if (8,) -> dense -> readout."""
    from spikeforge.converter.mapping import one_population_per_core
    from spikeforge.simulator.network import Network, Population, Projection

    rng = np.random.default_rng(0)
    pops = [Population.make("input", "input", (1, 6, 6)),
            Population.make("conv_act", "if", (2, 6, 6), 0.5, 0.25),
            Population.make("pool_act", "lif", (2, 3, 3), 0.4, 0.0, decay=0.9, spike_value="unit",
                            threshold_test="gt"),
            Population.make("fc_act", "if", (8,), 0.6, 0.3, rng.normal(0, .1, 8)),
            Population.make("readout", "readout", (3,))]
    indptr = np.arange(0, 18 * 2 + 1, 2, dtype=np.int64)
    indices = rng.integers(0, 8, 36).astype(np.int32)
    projs = [Projection("conv", "conv2d", "input", "conv_act", rng.normal(0, .5, (2, 1, 3, 3)).astype(np.float32),
                        stride=(1, 1), padding=(1, 1)),
             Projection("pool", "avgpool", "conv_act", "pool_act", kernel=(2, 2), stride=(2, 2)),
             Projection("sp", "sparse", "pool_act", "fc_act", rng.normal(.2, .3, 36).astype(np.float32), indptr,
                        indices),
             Projection("fc", "dense", "fc_act", "readout", rng.normal(0, .5, (3, 8)).astype(np.float32))]
    return Network(pops, projs, *one_population_per_core(pops, projs), {"name": "fuzz-base"})


def inventory(path):
    """Every dataset, group and (object, attribute) of a file, sorted, as the mutations' targets."""
    import h5py

    datasets, groups, attrs = [], [], []
    with h5py.File(path, "r") as h5:
        attrs += [("/", a) for a in h5.attrs]

        def visit(name, obj):
            (datasets if isinstance(obj, h5py.Dataset) else groups).append(name)
            attrs.extend((name, a) for a in obj.attrs)
        h5.visititems(visit)
    return sorted(datasets), sorted(groups), sorted(attrs)


_ATTR_VALUES = st.one_of(
    st.integers(-2**63, 2**63 - 1), st.floats(allow_nan=True, allow_infinity=True),
    # HDF5 strings are UTF-8 and end at NUL: no NUL, no lone surrogates (h5py cannot even write those)
    st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=12),
    st.lists(st.integers(-2**40, 2**40), max_size=5).map(lambda v: np.asarray(v, np.int64)),
    st.just(np.array([2**40, 2**40, 2**40], np.int64)), st.just(np.zeros(0, np.int64)),
    st.just(np.array([1.5, 2.5])), st.just(np.array(["a", "b"], dtype=object)), st.booleans())


@st.composite
def mutations(draw, datasets, groups, attrs, size):
    """One malformation of the base file, as a dict `apply` understands."""
    kind = draw(st.sampled_from(MUTATIONS))
    m = {"kind": kind}
    if kind in ("dtype", "shape", "nonfinite", "bad_index", "absurd_size"):
        m["dataset"] = draw(st.sampled_from(datasets))
    if kind == "dtype":
        m["dtype"] = draw(st.sampled_from(["int8", "uint64", "float16", "complex64", "bool", "S4", "int64",
                                           "float64"]))
    elif kind == "shape":
        m["shape"] = tuple(draw(st.lists(st.integers(0, 12), max_size=4)))
    elif kind == "nonfinite":
        m["value"] = draw(st.sampled_from([np.nan, np.inf, -np.inf, 3.4e38, -1e30, 0.0, -1.0]))
        m["position"] = draw(st.floats(0, 1, exclude_max=True))
    elif kind == "bad_index":
        m["value"] = draw(st.sampled_from([-1, -2**31, 2**31 - 1, 2**62, 7, 8, 9, 10**6]))
        m["position"] = draw(st.floats(0, 1, exclude_max=True))
        m["unsigned"] = draw(st.booleans())  # stored as uint64: -1 wraps to 2^64 - 1
    elif kind == "absurd_size":
        m["length"] = draw(st.sampled_from([2**31, 2**36, 2**40, 2**50]))
    elif kind == "delete":
        target = draw(st.sampled_from(["dataset", "group", "attribute"]))
        m["what"] = target
        m["name"] = draw(st.sampled_from({"dataset": datasets, "group": groups, "attribute": attrs}[target]))
    elif kind == "attribute":
        m["name"] = draw(st.sampled_from(attrs))
        m["value"] = draw(_ATTR_VALUES)
    elif kind == "truncate":
        m["length"] = draw(st.integers(0, size - 1))
    elif kind == "bitflip":
        m["flips"] = draw(st.lists(st.tuples(st.integers(0, size - 1), st.integers(0, 7)), min_size=1, max_size=4))
    elif kind == "order":
        m["permutation_seed"] = draw(st.integers(0, 2**16))
        m["which"] = draw(st.sampled_from(["population_order", "projection_order"]))
    return m


def apply(m, src, dst):
    """Write the malformed copy of `src` described by `m` to `dst`."""
    import h5py

    shutil.copyfile(src, dst)
    kind = m["kind"]
    if kind == "truncate":
        with open(dst, "r+b") as fh:
            fh.truncate(m["length"])
        return
    if kind == "bitflip":
        with open(dst, "r+b") as fh:
            data = bytearray(fh.read())
            for pos, bit in m["flips"]:
                data[pos] ^= 1 << bit
            fh.seek(0)
            fh.write(data)
        return
    with h5py.File(dst, "r+") as h5:
        if kind in ("dtype", "shape", "nonfinite", "bad_index", "absurd_size"):
            name = m["dataset"]
            old = h5[name][()]
            del h5[name]
            if kind == "dtype":
                new = np.resize(old, old.shape).astype(m["dtype"]) if old.size else np.zeros(old.shape, m["dtype"])
                h5.create_dataset(name, data=new)
            elif kind == "shape":
                h5.create_dataset(name, data=np.resize(old.reshape(-1), m["shape"]).astype(old.dtype)
                                  if old.size else np.zeros(m["shape"], old.dtype))
            elif kind == "absurd_size":  # declared, never written: HDF5 allocates chunks lazily
                h5.create_dataset(name, shape=(m["length"],), dtype=old.dtype, chunks=(1024,))
            else:
                flat = old.reshape(-1).copy()
                if flat.size:
                    if kind == "nonfinite" and flat.dtype.kind == "f":
                        flat[int(m["position"] * flat.size)] = m["value"]
                    elif kind == "bad_index":
                        flat = flat.astype(np.int64)
                        flat[int(m["position"] * flat.size)] = m["value"]
                        flat = flat.astype(np.uint64) if m["unsigned"] else flat
                h5.create_dataset(name, data=flat.reshape(old.shape))
        elif kind == "delete":
            if m["what"] == "attribute":
                obj, attr = m["name"]
                del h5[obj].attrs[attr]
            else:
                del h5[m["name"]]
        elif kind == "attribute":
            obj, attr = m["name"]
            h5[obj].attrs[attr] = m["value"]
        elif kind == "order":
            names = list(h5.attrs[m["which"]])
            rng = np.random.default_rng(m["permutation_seed"])
            h5.attrs[m["which"]] = [names[i] for i in rng.permutation(len(names))][:max(1, len(names) - 1)] \
                if m["permutation_seed"] % 3 == 0 else [names[i] for i in rng.permutation(len(names))]


def check(path) -> str:
    """Load a (possibly malformed) file: 'rejected' with a NetworkFileError naming it, or 'accepted' and run.

    Any other exception propagates (a robustness bug); so does a peak allocation over PEAK_LIMIT."""
    from spikeforge import simulator
    from spikeforge.simulator.fileformat import NetworkFileError

    tracemalloc.start()
    try:
        net = simulator.load_network(path)
    except NetworkFileError as exc:
        assert os.fspath(path) in str(exc), f"error does not name the file: {exc}"
        outcome = "rejected"
    else:
        outcome = "accepted"
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak < PEAK_LIMIT, f"reader peaked at {peak} bytes"
    if outcome == "accepted":
        x = np.linspace(0, 1, 2 * net.input.size).reshape(2, *net.input.shape)
        simulator.run(net, x, 3)
    return outcome


def _serve(conn):
    """Worker loop: check each path received; send back ('ok', outcome) or ('error', traceback). A float that
    cannot be cast to an integer counter is an error too: a wrapped counter is a silent wrong answer."""
    import traceback
    import warnings

    warnings.filterwarnings("error", "invalid value encountered in cast", RuntimeWarning)
    while True:
        path = conn.recv()
        try:
            conn.send(("ok", check(path)))
        except BaseException:  # noqa: B036 - everything goes back to the parent, which fails on it
            conn.send(("error", traceback.format_exc()))


class _Worker:
    """`check` in a child process, so a hang inside libhdf5 can be timed out (and the child replaced)."""

    def __init__(self):
        import multiprocessing

        self.ctx = multiprocessing.get_context("spawn")
        self.proc, self.exitcode = None, None

    def _start(self):
        self.conn, child = self.ctx.Pipe()
        self.proc = self.ctx.Process(target=_serve, args=(child,), daemon=True)
        self.proc.start()
        self.warm = False

    def check(self, path) -> str:
        if self.proc is None:
            self._start()
        self.conn.send(os.fspath(path))
        if not self.conn.poll(HANG_SECONDS if self.warm else 10 * HANG_SECONDS):  # the first case imports numba
            self.close()
            return "hang"
        try:
            status, value = self.conn.recv()
        except EOFError:  # the worker died
            self.proc.join()
            self.exitcode, self.proc = self.proc.exitcode, None
            return "crash"
        if status == "error":
            raise AssertionError(f"checking {path} raised in the worker:\n{value}")
        self.warm = True
        return value

    def close(self):
        if self.proc is not None:
            self.proc.kill()
            self.proc.join()
            self.proc = None


def fuzz(base, workdir, examples, seed=None):
    """Check `examples` generated malformations of the valid file `base` (copies written into `workdir`);
    return the tally {(mutation kind, 'rejected' | 'accepted' | 'hang' | 'crash'): count} and the incidents
    [(outcome, worker exit code or None, mutation, isolated reading's error or None)] of the hangs and crashes.
    seed None: derandomized (tests)."""
    import hypothesis
    from hypothesis import HealthCheck, given, settings

    from spikeforge.simulator.fileformat import NetworkFileError, load_network

    datasets, groups, attrs = inventory(base)
    tally, incidents = collections.Counter(), []
    worker = _Worker()

    @settings(max_examples=examples, deadline=None, database=None, derandomize=seed is None,
              suppress_health_check=list(HealthCheck))
    @given(mutations(datasets, groups, attrs, os.path.getsize(base)))
    def one(m):
        bad = os.path.join(workdir, "bad.h5")
        apply(m, base, bad)
        outcome = worker.check(bad)
        tally[(m["kind"], outcome)] += 1
        if outcome in ("hang", "crash") and all(i[2] != m for i in incidents):  # hypothesis may replay a case
            try:
                load_network(bad, isolate=True, timeout=HANG_SECONDS)
                isolated = None
            except NetworkFileError as exc:
                isolated = exc.problem
            incidents.append((outcome, worker.exitcode if outcome == "crash" else None, m, isolated))

    try:
        (one if seed is None else hypothesis.seed(seed)(one))()
    finally:
        worker.close()
    return tally, incidents


def main(argv=None):
    from spikeforge.converter.writer import write_network

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--examples", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        base = write_network(base_network(), os.path.join(tmp, "base.h5"))
        tally, incidents = fuzz(base, tmp, args.examples, args.seed)
    count = collections.Counter(outcome for (_, outcome) in tally.elements())
    clean = sum(i[3] is not None for i in incidents)
    print(f"{sum(tally.values())} malformed files generated: {count['rejected']} rejected with a NetworkFileError "
          f"naming the file, {count['accepted']} still valid and run, no other exception; {count['crash']} crashed "
          f"libhdf5 in-process and {count['hang']} hung it (> {HANG_SECONDS} s), and the isolated reader "
          f"(load_network(isolate=True), as the CLI reads) turned {clean} of those {len(incidents)} into a "
          "NetworkFileError")
    print(f"{'mutation':<14}" + "".join(f"{o:>10}" for o in ("rejected", "accepted", "hang", "crash")))
    for kind in MUTATIONS:
        print(f"{kind:<14}" + "".join(f"{tally[(kind, o)]:>10}" for o in ("rejected", "accepted", "hang", "crash")))
    print("accepted = the change left a valid file (e.g. a float64 copy of a float32 dataset), which then ran")
    for outcome, code, m, isolated in incidents:
        print(f"{outcome}{'' if code is None else f' (exit code {code})'}: {m}; isolated: {isolated}")


if __name__ == "__main__":
    main()
