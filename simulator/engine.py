"""The run loop: inputs in, readout outputs, spikes and per-core counters out."""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from spikeforge.errors import size_text

from . import kernels as K
from .arrays import FlatNetwork, _inverse, counted_as, flatten
from .encoding import as_encoding
from .fileformat import load_network, validate_network
from .network import SPIKING_MODELS, Network

# Order of the counter columns in Result.counters / per_sample (dynamic ones first, as the kernels fill them).
# packets_in: packets received (on the receiving core); active_neurons: neurons with input or a bias in the step
# (a chip updates those), where neuron_updates counts every mapped neuron every step (each is accessed).
COUNTERS = ("synops", "macs", "spikes", "packets", "hops", "synapse_bytes_read", "packets_in", "active_neurons",
            "chip_packets", "chip_hops", "neuron_updates", "state_bytes_read", "state_bytes_written")


def _column(name) -> int:
    if name not in COUNTERS:
        raise ValueError(f"no counter {name!r}; the counters are {', '.join(COUNTERS)}")
    return COUNTERS.index(name)


@dataclass
class Result:
    """Outcome of a simulation run.

    output:      (B, readout size) mean readout current over T
    counters:    (T, cores, len(COUNTERS)) int64, summed over samples
    per_sample:  (B, len(COUNTERS)) int64, summed over steps and cores
    spike_counts: population name -> (B, *shape) int32 total spikes (if record_counts)
    spikes:      population name -> (B, T, *shape) int8 raster (-1: a negative spike) (for populations in record)
    traces:      (B, T, len(trace)) float64 membrane after each step, for the traced neurons
    flows:       (T, flows) int64 packets of each core-to-core flow per step, summed over samples (record_links);
                 flow k goes from core flow_src[k] to core flow_dst[k] (hwmodels.noc routes them over links)
    backend, device: what ran it ("numba", "cpu"; "torch", "cuda:0"; backend="auto" says which it chose)
    shards:      where the samples ran when split over a Dask cluster (spikeforge.cluster.run_sharded): one
                 {"samples": [start, stop], "pid", "gpu"} per shard; None when run in one process
    """

    output: np.ndarray
    counters: np.ndarray
    per_sample: np.ndarray
    T: int
    spike_counts: dict = field(default_factory=dict)
    spikes: dict = field(default_factory=dict)
    traces: np.ndarray | None = None
    core_population: np.ndarray | None = None
    flows: np.ndarray | None = None
    flow_src: np.ndarray | None = None
    flow_dst: np.ndarray | None = None
    backend: str | None = None
    device: str | None = None
    shards: list | None = None

    def counter(self, name) -> np.ndarray:
        """(T, cores) array of one counter, summed over samples."""
        return self.counters[:, :, _column(name)]

    def total(self, name) -> int:
        return int(self.counters[:, :, _column(name)].sum())

    def totals(self) -> dict:
        return {name: int(self.counters[:, :, i].sum()) for i, name in enumerate(COUNTERS)}

    def predictions(self) -> np.ndarray:
        return self.output.reshape(len(self.output), -1).argmax(1)

    def activation_sparsity(self) -> float:
        """NeuroBench's ActivationSparsity over the recorded populations (run(..., record=[...]): its spiking
        layers): the fraction of (sample, step, neuron) outputs that are zero; a neuron firing a graded event or
        several member spikes in a step is one nonzero activation."""
        if not self.spikes:
            raise ValueError("activation_sparsity reads the spike rasters: run with record=[the spiking populations]")
        zeros = sum(int((r == 0).sum()) for r in self.spikes.values())
        return zeros / sum(r.size for r in self.spikes.values())


def prepare(network) -> FlatNetwork:
    """Accept a path, a `Network` or a `FlatNetwork`; validate and flatten once."""
    if isinstance(network, FlatNetwork):
        return network
    if isinstance(network, (str, os.PathLike)):
        network = load_network(network)
    elif isinstance(network, Network):
        validate_network(network)
    else:
        raise TypeError(f"expected a path, Network or FlatNetwork, got {type(network).__name__}")
    return flatten(network)


def _check_inputs(flat, inputs, T):
    """((B, steps, input size) float64, frames): steps 1 for one input repeated every step (batch, *input shape),
    T for one frame per step (batch, T, *input shape); frames: given one frame per step (at T = 1 too: a
    (batch, 1, *input shape) array, or one that only reads as frames)."""
    x = np.asarray(inputs, dtype=np.float64)
    inp = flat.net.input
    shape = tuple(inp.shape)
    static = x.ndim >= 1 and len(x) and _same_layout(x.shape[1:], shape, inp.size)
    if x.ndim >= 2 and len(x) and x.shape[1] == T and _same_layout(x.shape[2:], shape, inp.size):
        frames = T > 1 or x.ndim == len(shape) + 2 or not static
        x = x.reshape(len(x), T, -1)
    elif static:
        frames = False
        x = x.reshape(len(x), 1, -1)
    else:
        dims = ", ".join(map(str, shape))
        same_values = (x.ndim >= 2 and x[:1].size == inp.size) or (x.ndim >= 3 and x.shape[1] == T
                                                                    and x[:1, 0].size == inp.size)
        other = " (another layout, e.g. channels last, is not reordered)" if same_values else ""
        raise ValueError(f"inputs of shape {x.shape} do not fit the input population of shape {shape} and T={T}"
                         f"{other}: expected (batch, {dims}) (the same input every step) or (batch, {T}, {dims}) (one "
                         f"frame per step), the input flattened to {inp.size} values, or with dimensions of size 1 "
                         "left out or added")
    if not np.isfinite(x.sum(axis=(1, 2))).all():  # one pass; a finite sample sums to inf only when it overflows
        bad = np.flatnonzero(~np.isfinite(x).all(axis=(1, 2)))
        if bad.size:
            raise ValueError(f"input sample {bad[0]} contains NaN or inf")
    return x, frames


def _same_layout(dims, shape, size) -> bool:
    """Whether samples of shape `dims` are the input of `shape` in its own (C) order: the same shape, flattened, or
    differing only by dimensions of size 1 ((8, 8) for (1, 8, 8)); not a permutation such as channels last."""
    dims = tuple(dims)
    return dims == shape or dims == (size,) or [d for d in dims if d != 1] == [d for d in shape if d != 1]


BACKENDS = ("numba", "torch", "auto")
ENCODED_CHUNK_BYTES = 1 << 30  # default chunks of an encoded run hold at most this many bytes of frames


def run(network, inputs, T: int, record=(), record_counts=False, trace=(), batch_size=None,
        progress=None, record_links=False, backend="numba", device=None, max_bytes=None, spikes=None,
        encoding=None, sample_offset=0, synops="all") -> Result:
    """Simulate `inputs` for T steps: (batch, *input shape), the same input every step (direct encoding), or
    (batch, T, *input shape), one frame per step (spike trains or currents; frames of 0 / 1 values are spikes, and
    their synaptic work counts as synaptic operations instead of MACs).

    spikes: None: as above; True: the inputs are spike counts (non-negative integers, e.g. binned events): a value
    n is n spikes in that step (n x weight delivered, n synaptic operations per synapse); False: analog (MACs).
    encoding: "direct", "rate", "latency" or a simulator.encoding.Encoding (seed, clip): static inputs are encoded
    into spike frames chunk by chunk (only one chunk's frames are held: at most 1 GiB with the default batch_size);
    sample_offset: the index of inputs[0] in
    a larger run (the rate encoder seeds each sample by its index, so shards of a run encode as the whole run).
    synops: "all" (default: every stored synapse an event reaches counts, zero weights included, as a chip with
    dense synapse memory reads them) or "effective" (only nonzero weights of weighted projections, NeuroBench's
    effective operations; identity and pooling connections count none); MACs and weight bytes follow the same rule.

    network: file path, Network or FlatNetwork (reuse a FlatNetwork to skip flattening).
    record: population names whose spike rasters to keep; record_counts: keep spikes per neuron;
    trace: (population name, canonical neuron index) pairs whose membrane to keep.
    batch_size: samples per chunk (default: 64 on numba; on torch as many as half the device's free memory holds).
    progress: callable(done_samples, total_samples), called after each chunk.
    record_links: count packets per core-to-core flow and step (Result.flows), for the link-level NoC model.
    backend: "numba" (the event engine, the reference semantics), "torch" (simulator.torch_backend: the same
    spikes, outputs and counters computed with tensors in float64, on `device`, default cuda when available), or
    "auto" (torch on a GPU when one is present, else numba).
    max_bytes: refuse a run whose per-step results (counters, rasters, traces, flows) would need more host memory
    than this (default: half of this machine's memory), before any work starts.
    """
    if isinstance(T, bool) or not isinstance(T, (int, np.integer)) or T < 1:
        raise ValueError(f"T must be an integer >= 1, got {T!r}")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer))
                                   or batch_size < 1):
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if isinstance(sample_offset, bool) or not isinstance(sample_offset, (int, np.integer)) or sample_offset < 0:
        raise ValueError(f"sample_offset must be an integer >= 0, got {sample_offset!r}")
    T = int(T)
    simulate, chunk_size, engine_order, ran_on = _backend(backend, device, record_links)
    flat = counted_as(prepare(network), synops)
    net = flat.net
    x, frames = _check_inputs(flat, inputs, T)
    enc = as_encoding(encoding)
    if enc is not None and not enc.spikes:
        enc = None  # direct: the input as it is
    spikes_in, repeats = _input_kind(x, spikes, enc, frames)
    if repeats:
        _check_counts_feed_synapses(flat)
    perm = flat.perms[0] if engine_order and not np.array_equal(flat.perms[0], np.arange(len(flat.perms[0]))) \
        else None
    index = {p.name: i for i, p in enumerate(net.populations)}
    rec_off, n_rec = _raster_index(net, record, index)
    tr_ptr, tr_idx, tr_order = _trace_index(flat, trace, index)
    readout = index[net.readout.name]
    routing = flat.routing  # packets are counted on their receiving cores always, per flow only with record_links
    n_flows = len(routing.flow_src) if record_links else 0
    recording = K.Recording(rec_off, tr_ptr, tr_idx, n_rec, len(tr_idx), n_flows, bool(record_counts))
    if batch_size is None:
        batch_size = chunk_size(flat, T, recording)
        if enc is not None:  # a chunk's encoded frames (float64) stay under ENCODED_CHUNK_BYTES
            batch_size = max(1, min(batch_size, ENCODED_CHUNK_BYTES // (8 * T * x.shape[2])))
    batch_size = int(batch_size)
    B = len(x)
    _check_memory(flat, T, B, min(batch_size, B), recording, max_bytes)
    nd = K.N_DYNAMIC_COUNTERS
    counters = np.zeros((T, flat.n_cores, len(COUNTERS)), np.int64)
    per_sample = np.zeros((B, len(COUNTERS)), np.int64)
    flows = np.zeros((T, n_flows), np.int64)
    outputs, counts, rasters, traces = [], [], [], []
    for start in range(0, B, batch_size):
        chunk = x[start:start + batch_size]
        if enc is not None:  # this chunk's spike frames, seeded by the samples' indices in the whole run
            chunk = enc.frames(chunk[:, 0], T, sample_offset + start)
        chunk = np.ascontiguousarray(chunk if perm is None else chunk[:, :, perm])
        out, ctr, cnt, rec, tr, fl = simulate(flat, chunk, T, readout, routing, recording, spikes_in, repeats)
        flows += fl.sum(axis=0)
        counters[:, :, :nd] += ctr.sum(axis=0)
        per_sample[start:start + len(chunk), :nd] = ctr.sum(axis=(1, 2))
        outputs.append(out)
        if record_counts:
            counts.append(cnt)
        if n_rec:
            rasters.append(rec)
        if len(tr_idx):
            traces.append(tr)
        if progress:
            progress(min(start + batch_size, B), B)
    static = flat.static_per_core  # per step, identical for every sample
    counters[:, :, nd:] = static[None, :, :] * B
    per_sample[:, nd:] = static.sum(axis=0)[None, :] * T
    output = np.concatenate(outputs)[:, _inverse(flat.perms[readout])].reshape(B, *net.readout.shape)
    result = Result(output, counters, per_sample, T, core_population=net.cores.population.copy(), backend=ran_on[0],
                    device=ran_on[1])
    if record_links:
        result.flows, result.flow_src, result.flow_dst = flows, routing.flow_src.copy(), routing.flow_dst.copy()
    if record_counts:
        allc = np.concatenate(counts)
        for i, p in enumerate(net.populations):
            if p.model in SPIKING_MODELS:
                seg = allc[:, flat.pops.off[i]:flat.pops.off[i] + p.size]
                result.spike_counts[p.name] = seg[:, _inverse(flat.perms[i])].reshape(B, *p.shape)
    if n_rec:
        allr = np.concatenate(rasters)
        for name in record:
            i = index[name]
            p = net.populations[i]
            seg = allr[:, :, rec_off[i]:rec_off[i] + p.size]
            result.spikes[name] = seg[:, :, _inverse(flat.perms[i])].reshape(B, T, *p.shape)
    if len(tr_idx):
        result.traces = np.concatenate(traces)[:, :, _inverse(tr_order)]
    return result


def _input_kind(x, spikes, enc, frames):
    """(spikes_in, repeats): whether the input's work counts as synaptic operations, and whether some input
    counts exceed 1 (repeated spikes: input events of multiplicity n)."""
    if enc is not None:
        if x.shape[1] != 1:
            raise ValueError(f"the {enc.name} encoding encodes static inputs (batch, *input shape); these inputs "
                             "already have one frame per step")
        if spikes is False:
            raise ValueError(f"spikes=False contradicts the {enc.name} encoding, whose frames are spikes")
        return True, False
    if spikes is None:  # one frame per step of 0 / 1 values: spike trains, whatever T (analog inputs: MACs)
        return frames and bool(((x == 0.0) | (x == 1.0)).all()), False
    if spikes is False:
        return False, False
    if spikes is not True:
        raise ValueError(f"spikes must be None, True or False, got {spikes!r}")
    if (x < 0).any() or not np.array_equal(x, np.floor(x)):  # (one cheap pass when all is well)
        bad = (x < 0) | (x != np.floor(x))
        b = int(np.flatnonzero(bad.any(axis=(1, 2)))[0])
        raise ValueError(f"spikes=True needs spike counts (non-negative integers), but input sample {b} has "
                         f"{float(x[b][bad[b]][0]):g}")
    return True, bool((x > 1).any())


def _check_memory(flat, T, n_samples, chunk, recording, max_bytes):
    """Refuse, before any work, a run whose step-resolved results would not fit (a ValueError with the estimate)."""
    per_step = 8 * (flat.n_cores * K.N_DYNAMIC_COUNTERS + recording.n_flows + recording.n_trace) + recording.n_rec
    need = T * (chunk * per_step + n_samples * (recording.n_rec + 8 * recording.n_trace)
                + 8 * flat.n_cores * len(COUNTERS) + 8 * recording.n_flows)
    bound = "by max_bytes"
    if max_bytes is None:
        bound = "(half of this machine's memory)"
        try:
            max_bytes = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2
        except (ValueError, OSError, AttributeError):
            return
    if need > max_bytes:
        raise ValueError(f"T={T} with {n_samples} samples ({chunk} per chunk) needs about {size_text(need)} for "
                         f"the per-step counters, rasters and traces, more than the {size_text(max_bytes)} allowed "
                         f"{bound}; lower T, the batch size or what is recorded, or raise max_bytes")


def _backend(backend, device, record_links):
    """(simulate, chunk_size, engine_order, ran_on) of a backend: simulate(flat, X, T, readout, routing,
    recording, spikes_in, counts_in) -> run_batch's arrays (X: (B, 1 or T, input size); spikes_in: the input's work
    counts as synaptic operations, not MACs; counts_in: an input value n is n spikes, events of multiplicity n);
    chunk_size(flat, T, recording) -> the default samples per chunk; engine_order: whether X comes in the engine's
    neuron order (numba) or the canonical one (torch); ran_on: (backend, device) that runs, "auto" resolved."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "auto":
        backend = "torch" if _cuda_available() else "numba"
    if backend == "numba":
        if device not in (None, "cpu"):
            raise ValueError(f"the numba backend runs on the CPU; device {device!r} needs backend='torch'")
        return (lambda flat, X, T, readout, routing, recording, spikes_in, counts_in: K.run_batch(
            X, T, flat.n_cores, readout, _input_as_counts(flat.pops) if counts_in else flat.pops,
            _input_as_spikes(flat.projs) if spikes_in else flat.projs, routing, recording),
            lambda flat, T, recording: 64, True, ("numba", "cpu"))
    try:
        import torch

        from . import torch_backend
    except ImportError as exc:
        raise ValueError(f"backend 'torch' needs torch installed ({exc})") from None
    try:
        dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        torch.empty(0, device=dev)
    except (RuntimeError, AssertionError) as exc:
        raise ValueError(f"torch device {device!r} is not usable: {str(exc).splitlines()[0]}") from None

    def simulate(flat, X, T, readout, routing, recording, spikes_in, counts_in):
        key = (str(dev), bool(record_links))
        if key not in flat.plans:
            flat.plans[key] = torch_backend.TorchPlan(flat, dev, record_links)
        return torch_backend.run_batch(flat.plans[key], X, T, readout, recording, spikes_in, counts_in)
    name = f"cuda:{torch.cuda.current_device()}" if dev.type == "cuda" and dev.index is None else str(dev)
    return (simulate, lambda flat, T, recording: torch_backend.chunk_size(flat, T, dev, recording), False,
            ("torch", name))  # name: the device it runs on, with its index


def _input_as_spikes(projs):
    """Projections with the input's work counted as synaptic operations (spike-train input)."""
    return projs._replace(mac=np.where(projs.src == 0, 0, projs.mac))


def _input_as_counts(pops):
    """Populations whose input values are spike counts: input events of multiplicity n (kernels._input_events)."""
    expand = pops.expand.copy()
    expand[0] = 1
    return pops._replace(expand=expand)


def _check_counts_feed_synapses(flat):
    """Input counts above 1 are multiplicities of synaptic work: refuse an input that feeds a node instead."""
    for q in np.flatnonzero(flat.projs.src == 0):
        kind = flat.projs.kind[q]
        if kind in (K.KIND_MM_A, K.KIND_MM_B, K.KIND_MAXPOOL):
            raise ValueError("input counts above 1 (repeated spikes) need the input to feed synapses, not a "
                             f"{'maxpool' if kind == K.KIND_MAXPOOL else 'matmul'} node")


def _cuda_available():
    """True when torch is installed and sees a GPU (without importing torch when it is absent)."""
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return torch.cuda.is_available()


def _raster_index(net, record, index):
    """Raster column of each recorded population's first neuron (-1: not recorded) and the raster width."""
    rec_off = np.full(len(net.populations), -1, np.int64)
    n_rec = 0
    for name in record:  # a max pooling gate re-sends spikes: its raster holds them (member spikes, as its source)
        if name not in index or net.populations[index[name]].model not in SPIKING_MODELS + ("maxpool",):
            raise ValueError(f"cannot record spikes of {name!r}: not a spiking population")
        rec_off[index[name]] = n_rec
        n_rec += net.populations[index[name]].size
    return rec_off, n_rec


def _trace_index(flat, trace, index):
    """Trace requests grouped by population, as the kernel records them after each population's update."""
    net = flat.net
    per_pop = [[] for _ in net.populations]
    for k, (name, neuron) in enumerate(trace):
        if name not in index:
            raise ValueError(f"cannot trace {name!r}: no such population")
        i = index[name]
        p = net.populations[i]
        if p.model == "input" or not 0 <= int(neuron) < p.size:
            raise ValueError(f"cannot trace neuron {neuron} of {name!r} (size {p.size}, model {p.model})")
        per_pop[i].append((k, flat.pops.off[i] + _inverse(flat.perms[i])[int(neuron)]))
    tr_ptr = np.zeros(len(net.populations) + 1, np.int64)
    for i, v in enumerate(per_pop):
        tr_ptr[i + 1] = tr_ptr[i] + len(v)
    tr_idx = np.array([g for v in per_pop for _, g in v], np.int64)
    order = np.array([k for v in per_pop for k, _ in v], np.int64)  # kernel column -> request index
    return tr_ptr, tr_idx, order
