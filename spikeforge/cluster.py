"""Samples sharded over a Dask cluster: the same `Result` as one process, exactly.

A run's samples are independent, so a batch splits into contiguous shards; each Dask task reads the network file
itself (nothing large travels), simulates its shard with the asked backend (a worker may hold a GPU), and the
shards' results are merged in order: outputs, per-sample counters, spike counts, rasters and traces concatenate,
per-step per-core counters and flows add up. Sweeps use the same cluster helper.

What each cluster trusts. Whoever can talk to a Dask scheduler or worker can run any code in the workers and read
the samples and results. The local cluster (`--workers N`, and a sweep without `--scheduler`) therefore listens on
127.0.0.1 only and speaks tls:// with mutual authentication under a per-run credential
(`distributed.security.Security.temporary()`: a self-signed key and certificate made in memory for this run and
handed to the worker processes when they start; distributed writes them for a moment into a private temporary
folder to load them). The scheduler, its workers (and their nannies) and our client all hold it and accept only
peers that present it, so another local user or process, which can reach 127.0.0.1 but lacks the key, is refused.
Processes of the user's own account can read our memory anyway: the local cluster trusts that account, no more.
distributed's HTTP status servers (scheduler and workers) also listen on 127.0.0.1, without the credential: they
serve read-only pages (health, metrics, worker and task status, logs, task errors) and run no code.
GPUs (`--workers N --device cuda`): one worker process per GPU, each seeing only its own device
(CUDA_VISIBLE_DEVICES set before the worker starts, so its "cuda" is that GPU): dask-cuda's LocalCUDACluster where it
is installed, else a cluster of Dask nannies each given its device in that variable; the same 127.0.0.1 / TLS rules.
A worker that dies loses only the shard it was running: the scheduler runs that shard again on a live worker (Dask
retries a task whose worker died, up to distributed.scheduler.allowed-failures times), and the merge waits for every
shard, so a report is written once, whole. Each shard's worker and device are kept (`Result.shards`).
`--scheduler ADDRESS` is a cluster the user runs: spikeforge trusts it and everyone who can reach that scheduler
(they can run code in its workers and see the samples), and passes no credential to it unless the user's Dask
configuration does (e.g. distributed.comm.tls settings, or distributed.comm.require-encryption).
"""
from __future__ import annotations

import contextlib
import logging
import os

import numpy as np

from spikeforge.errors import UserError

__all__ = ["available_cores", "check_workers", "dask_client", "merge_results", "run_sharded", "shard_bounds",
           "visible_gpus"]


def available_cores():
    """The cores this process may run on: its CPU affinity where the OS has one (a container or `taskset` may give
    fewer than the machine has), else os.cpu_count()."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS, Windows
        return os.cpu_count() or 1


def visible_gpus() -> int:
    """The CUDA devices torch sees here (0 without torch's CUDA)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def check_workers(scheduler=None, workers=None, gpus=False):
    """Refuse a bad --workers before any work: below 1, or (for a local cluster: no `scheduler`) more processes
    than the cores available, or with `gpus` (--device cuda) more than the GPUs visible (one worker per GPU). With a
    scheduler, `workers` is not used and not checked beyond >= 1."""
    if workers is not None and workers < 1:
        raise UserError(f"--workers must be >= 1, got {workers}")
    if not scheduler and workers is not None and gpus:
        n = visible_gpus()
        if workers > n:
            raise UserError(f"--workers {workers} --device cuda: one worker per GPU, and this machine shows {n} "
                            f"GPU{'s' * (n != 1)} (CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '')!r})"
                            f"; give at most {n}, or --scheduler ADDRESS for a cluster of your own")
        return
    if not scheduler and workers is not None:
        cores = available_cores()
        if workers > cores:
            raise UserError(f"--workers {workers}: this machine has {cores} core{'s' if cores != 1 else ''} "
                            f"available; give at most {cores}, or --scheduler ADDRESS for a cluster of your own")


@contextlib.contextmanager
def dask_client(scheduler=None, workers=None, devices=None):
    """A Dask client: on the scheduler at `scheduler` (an address; security from the user's Dask configuration),
    else on a local cluster of `workers` processes (default min(4, cores); at most the cores available) that listens
    on 127.0.0.1 only and admits only holders of this run's TLS credential; closed on exit.

    devices: GPU ids (strings) for a local cluster of one worker per GPU, each worker seeing only its own
    (CUDA_VISIBLE_DEVICES; `gpu_devices` gives them for --workers N)."""
    from dask.distributed import Client, LocalCluster

    if devices is None:
        check_workers(scheduler, workers)
    cluster = None
    if scheduler:
        try:
            client = Client(scheduler, timeout=30)
        except OSError as exc:
            raise UserError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from None
    else:
        from distributed.security import Security

        security = Security.temporary()  # this run's key and certificate, in memory only (needs `cryptography`)
        if devices is not None:
            cluster = _gpu_cluster(list(devices), security)
        else:
            cluster = LocalCluster(n_workers=workers or min(4, available_cores()), threads_per_worker=1,
                                   processes=True, dashboard_address=None, host="127.0.0.1", protocol="tls://",
                                   security=security)
        try:
            client = Client(cluster, security=security)
        except BaseException:
            cluster.close()
            raise
    try:
        yield client
    finally:
        levels = _quiet_shutdown(client) if cluster is not None else {}
        try:
            client.close()
            if cluster is not None:
                cluster.close()
        finally:
            for name, level in levels.items():  # the caller's logging as it was
                logging.getLogger(name).setLevel(level)


def gpu_devices(workers=None, device="cuda"):
    """The GPU ids of a local cluster of one worker per GPU: the first `workers` GPUs visible (all by default), or
    with device "cuda:K" and one worker, GPU K; as the CUDA_VISIBLE_DEVICES entries of this process (ids, or UUIDs)
    where it sets them."""
    check_workers(None, workers, gpus=True)
    n = visible_gpus()
    if n == 0:
        raise UserError("--device cuda with --workers: no CUDA device is visible here")
    listed = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    ids = listed[:n] if len(listed) >= n else [str(i) for i in range(n)]
    _, sep, index = str(device or "cuda").partition(":")
    if sep:
        if (workers or n) != 1 or not index.isdigit() or int(index) >= n:
            raise UserError(f"--device {device} with --workers {workers}: one named GPU takes --workers 1 (of the "
                            f"{n} visible); for several give --device cuda (the first N) or set CUDA_VISIBLE_DEVICES")
        return [ids[int(index)]]
    return ids[:workers or n]


def _gpu_cluster(devices, security):
    """One worker process per device, each started with CUDA_VISIBLE_DEVICES = its device (its "cuda" is that GPU
    alone): dask-cuda's LocalCUDACluster where installed, else Dask nannies given the variable."""
    common = dict(host="127.0.0.1", protocol="tls://", security=security)
    try:
        from dask_cuda import LocalCUDACluster
    except ImportError:
        from distributed import Nanny, Scheduler, SpecCluster

        workers = {f"gpu-{d}": {"cls": Nanny, "options": dict(common, nthreads=1, env={"CUDA_VISIBLE_DEVICES": d})}
                   for d in devices}
        return SpecCluster(workers=workers, scheduler={"cls": Scheduler, "options": dict(common,
                                                                                          dashboard_address=None)},
                           security=security)
    return LocalCUDACluster(CUDA_VISIBLE_DEVICES=",".join(devices), n_workers=len(devices), threads_per_worker=1,
                            dashboard_address=None, **common)


def _noisy_loggers():
    """distributed's and tornado's loggers (children may carry their own levels from dask's config)."""
    names = [n for n in logging.root.manager.loggerDict if n.split(".")[0] in ("distributed", "tornado")]
    return sorted(set(names) | {"distributed", "tornado"})


def _silence_distributed():
    for name in _noisy_loggers():
        logging.getLogger(name).setLevel(logging.CRITICAL)


def _quiet_shutdown(client):
    """Our own local cluster is going down: its workers' heartbeats may race the scheduler's close and log a
    CommClosedError traceback that says nothing about the user's run (task errors reach us through the futures).
    Silence distributed's loggers in the workers and here for the shutdown only."""
    try:
        client.run(_silence_distributed)
    except Exception:  # a worker already gone: nothing to silence there
        pass
    levels = {name: logging.getLogger(name).level for name in _noisy_loggers()}
    _silence_distributed()
    return levels


def shard_bounds(n, shards):
    """[(start, stop)] of `shards` contiguous, near-equal shards of n samples (no empty shard)."""
    shards = max(1, min(int(shards), n))
    edges = np.linspace(0, n, shards + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


def _run_shard(path, x, T, kwargs):
    """One Dask task: read the file (isolated, as the command line does) and simulate this shard; returns the
    Result and where it ran (the worker's process id and the GPU it sees, CUDA_VISIBLE_DEVICES)."""
    from spikeforge import simulator

    res = simulator.run(simulator.load_network(path, isolate=True), x, T, **kwargs)
    return res, {"pid": os.getpid(), "gpu": os.environ.get("CUDA_VISIBLE_DEVICES")}


def merge_results(parts):
    """One `Result` from the results of consecutive shards of one run (same network, T and options)."""
    from spikeforge.simulator import Result

    if not parts:
        raise ValueError("no results to merge")
    first = parts[0]
    merged = Result(np.concatenate([r.output for r in parts]), sum(r.counters for r in parts),
                    np.concatenate([r.per_sample for r in parts]), first.T, core_population=first.core_population,
                    backend=_which(r.backend for r in parts), device=_which(r.device for r in parts))
    merged.spike_counts = {k: np.concatenate([r.spike_counts[k] for r in parts]) for k in first.spike_counts}
    merged.spikes = {k: np.concatenate([r.spikes[k] for r in parts]) for k in first.spikes}
    if first.traces is not None:
        merged.traces = np.concatenate([r.traces for r in parts])
    if first.flows is not None:
        merged.flows = sum(r.flows for r in parts)
        merged.flow_src, merged.flow_dst = first.flow_src, first.flow_dst
    return merged


def _which(names):
    """What the shards ran on: one name, or the distinct names joined ("cpu, cuda:0") when workers differ."""
    names = sorted({n for n in names if n is not None})
    return ", ".join(names) if names else None


def run_sharded(path, x, T, client, shards=None, progress=None, task=None, **kwargs):
    """`simulator.run(path, x, T, **kwargs)` with the samples split over the client's workers; returns the merged
    Result, its `shards` [{"samples": [start, stop], "pid", "gpu"}] saying where each ran. path: a network file every
    worker can read; shards: default one per worker; progress(done, total); task: the shard function (default
    `_run_shard`; tests pass one that fails)."""
    from dask.distributed import as_completed

    path = os.path.abspath(os.fspath(path))
    n_workers = max(1, len(client.scheduler_info().get("workers", {})))
    bounds = shard_bounds(len(x), shards or n_workers)
    offset = kwargs.pop("sample_offset", 0)  # the rate encoder seeds each sample by its index in the whole run
    futures = {client.submit(task or _run_shard, path, np.ascontiguousarray(x[a:b]), T,
                             dict(kwargs, sample_offset=offset + a), pure=False): i
               for i, (a, b) in enumerate(bounds)}
    parts, where, done = [None] * len(bounds), [None] * len(bounds), 0
    for fut in as_completed(futures):
        i = futures[fut]
        parts[i], where[i] = fut.result()
        done += bounds[i][1] - bounds[i][0]
        if progress:
            progress(done, len(x))
    merged = merge_results(parts)
    merged.shards = [dict(w, samples=[a, b]) for w, (a, b) in zip(where, bounds)]
    return merged
