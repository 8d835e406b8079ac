"""Samples sharded over a Dask cluster (spikeforge.cluster) and the torch backend from the command line: merged
results equal one process's exactly."""
import gc
import json
import time

import numpy as np
import pytest
import torch

from spikeforge import simulator
from spikeforge.cli import main
from spikeforge.cluster import available_cores, check_workers, dask_client, merge_results, run_sharded, shard_bounds
from spikeforge.converter import convert, write_network
from spikeforge.converter.mapping import map_network
from spikeforge.errors import UserError
from spikeforge.hwmodels import load_target


@pytest.fixture(scope="module")
def mapped_file(tmp_path_factory, trained_mlp, digits):
    """The digits MLP as group neurons on Loihi cores of 32 neurons (several cores per layer, flows between)."""
    import dataclasses

    xtr = digits[0]
    loihi = load_target("loihi")
    small = dataclasses.replace(loihi, limits=dict(loihi.limits, neurons_per_core=32))
    net = map_network(convert(trained_mlp, [xtr[:256]], neuron="group", tau=3), small, "snake")
    return write_network(net, tmp_path_factory.mktemp("cluster") / "mlp.h5")


def test_shard_bounds_cover_every_sample_once():
    for n, k in ((10, 3), (3, 8), (1, 1), (100, 7)):
        b = shard_bounds(n, k)
        assert b[0][0] == 0 and b[-1][1] == n and all(a < z for a, z in b)
        assert all(b[i][1] == b[i + 1][0] for i in range(len(b) - 1)) and len(b) == min(n, k)


def _same(a, b):
    assert np.array_equal(a.output, b.output)
    assert np.array_equal(a.counters, b.counters) and np.array_equal(a.per_sample, b.per_sample)
    assert a.spike_counts.keys() == b.spike_counts.keys()
    assert all(np.array_equal(a.spike_counts[k], b.spike_counts[k]) for k in a.spike_counts)
    assert all(np.array_equal(a.spikes[k], b.spikes[k]) for k in a.spikes)
    assert np.array_equal(a.traces, b.traces) and np.array_equal(a.flows, b.flows)


def test_merged_shards_equal_one_run(mapped_file, digits):
    x = digits[2][:30].numpy()
    options = dict(record=["net_3"], record_counts=True, trace=[("net_6", 3)], record_links=True)
    whole = simulator.run(mapped_file, x, 5, **options)
    parts = [simulator.run(mapped_file, x[a:b], 5, **options) for a, b in shard_bounds(len(x), 4)]
    _same(merge_results(parts), whole)


def test_run_sharded_on_a_local_dask_cluster_equals_one_process(mapped_file, digits):
    x = digits[2][:40].numpy()
    whole = simulator.run(mapped_file, x, 4, record_counts=True, record_links=True)
    seen = []
    with dask_client(workers=2) as client:
        sharded = run_sharded(mapped_file, x, 4, client, shards=3, progress=lambda d, n: seen.append((d, n)),
                              record_counts=True, record_links=True)
    _same(sharded, whole)
    assert seen[-1] == (40, 40) and len(seen) == 3


def test_a_rate_encoded_run_sharded_on_dask_equals_one_process(mapped_file, digits):
    """Each shard encodes its own samples, seeded by their index in the whole run (sample_offset)."""
    from spikeforge.simulator import Encoding

    x = digits[2][:30].numpy() / 2 + 0.25
    enc = Encoding("rate", seed=3)
    whole = simulator.run(mapped_file, x, 6, record_counts=True, encoding=enc)
    with dask_client(workers=2) as client:
        sharded = run_sharded(mapped_file, x, 6, client, shards=3, record_counts=True, encoding=enc)
    _same(sharded, whole)
    other = simulator.run(mapped_file, x, 6, encoding=Encoding("rate", seed=4))
    assert not np.array_equal(other.per_sample, whole.per_sample)  # the seed matters: the check can fail


def test_simulate_on_the_torch_backend_and_on_dask_writes_the_same_results(mapped_file, digits, tmp_path):
    x, y = digits[2][:24].numpy(), digits[3][:24].numpy()
    np.savez(tmp_path / "test.npz", x=x, y=y)
    common = ["simulate", str(mapped_file), "--input", str(tmp_path / "test.npz"), "--x-key", "x", "--y-key", "y",
              "--T", "4", "--record-counts"]
    runs = {"numba": [], "torch": ["--backend", "torch", "--device", "cpu"], "dask": ["--workers", "2"]}
    out = {}
    for name, extra in runs.items():
        assert main(common + ["--out", str(tmp_path / f"{name}.npz")] + extra) == 0
        out[name] = (dict(np.load(tmp_path / f"{name}.npz")), json.loads((tmp_path / f"{name}.json").read_text()))
    for name in ("torch", "dask"):
        arrays, summary = out[name]
        for key, value in out["numba"][0].items():
            if key == "summary":  # run id, wall time and backend differ
                continue
            if key == "output":
                np.testing.assert_allclose(arrays[key], value, rtol=1e-9)
            else:
                assert np.array_equal(arrays[key], value), (name, key)
        assert summary["totals"] == out["numba"][1]["totals"]
        assert summary["accuracy"] == out["numba"][1]["accuracy"]
    ran = {name: (out[name][1]["backend"], out[name][1]["device"]) for name in runs}
    assert ran == {"numba": ("numba", "cpu"), "torch": ("torch", "cpu"), "dask": ("numba", "cpu")}


def test_backend_auto_records_the_backend_it_chose(mapped_file, digits, tmp_path):
    """--backend auto takes torch on a GPU, numba otherwise; the summary says which ran, not 'auto'."""
    np.savez(tmp_path / "test.npz", x=digits[2][:4].numpy())
    assert main(["simulate", str(mapped_file), "--input", str(tmp_path / "test.npz"), "--T", "2", "--backend", "auto",
                 "--out", str(tmp_path / "auto.npz")]) == 0
    summary = json.loads((tmp_path / "auto.json").read_text())
    assert (summary["backend"], summary["device"]) == (("torch", "cuda:0") if torch.cuda.is_available()
                                                       else ("numba", "cpu"))


def test_bad_backend_and_device_are_named(mapped_file, digits, tmp_path, capsys):
    x = digits[2][:2].numpy()
    with pytest.raises(ValueError, match="backend must be one of numba, torch, auto, got 'jax'"):
        simulator.run(mapped_file, x, 2, backend="jax")
    with pytest.raises(ValueError, match="the numba backend runs on the CPU"):
        simulator.run(mapped_file, x, 2, device="cuda")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="torch device 'cuda:7' is not usable"):
            simulator.run(mapped_file, x, 2, backend="torch", device="cuda:7")
    np.save(tmp_path / "x.npy", x)
    assert main(["simulate", str(mapped_file), "--input", str(tmp_path / "x.npy"), "--T", "2", "--out",
                 str(tmp_path / "r.npz"), "--workers", "0"]) == 2
    assert "--workers must be >= 1" in capsys.readouterr().err


def test_torch_backend_in_chunks_equals_one_chunk_and_sizes_chunks_by_memory(mapped_file, digits):
    from spikeforge.simulator import kernels as K
    from spikeforge.simulator.torch_backend import chunk_size

    x = digits[2][:20].numpy()
    seen = []
    chunked = simulator.run(mapped_file, x, 3, backend="torch", device="cpu", batch_size=7, record_counts=True,
                            progress=lambda d, n: seen.append(d))
    assert seen == [7, 14, 20]
    whole = simulator.run(mapped_file, x, 3, record_counts=True)
    assert np.array_equal(chunked.counters, whole.counters)
    assert all(np.array_equal(chunked.spike_counts[k], v) for k, v in whole.spike_counts.items())
    flat = simulator.prepare(mapped_file)
    n = int(flat.pops.theta.shape[0])
    rec = K.Recording(np.full(len(flat.net.populations), -1), np.zeros(len(flat.net.populations) + 1, np.int64),
                      np.zeros(0, np.int64), 0, 0, 0, False)
    per_sample = 8 * (16 * n + 10 * flat.n_cores * K.N_DYNAMIC_COUNTERS)
    assert chunk_size(flat, 10, "cpu", rec, budget=5 * per_sample + 1) == 5
    assert chunk_size(flat, 10, "cpu", rec, budget=1) == 1
    from spikeforge.converter.mapping import pipelined

    piped = simulator.prepare(pipelined(flat.net, 2))  # keeps 2 steps of outputs: 6 more values per neuron
    per_piped = 8 * (22 * n + 10 * flat.n_cores * K.N_DYNAMIC_COUNTERS)
    assert chunk_size(piped, 10, "cpu", rec, budget=5 * per_piped + 1) == 5
    assert chunk_size(piped, 10, "cpu", rec, budget=5 * per_sample + 1) < 5  # fewer samples than undelayed


@pytest.fixture(scope="module")
def local_client():
    """One local cluster (one worker) shared by the security tests below, the module's last (it lives until the
    module ends): starting one takes about a second."""
    with dask_client(workers=1) as client:
        yield client


def _refused(address, **kwargs):
    """What connecting a Client that lacks our credential to `address` raised (it must fail, and fast)."""
    from dask.distributed import Client

    t0 = time.monotonic()
    with pytest.raises((OSError, TypeError)) as err:  # no TLS context, reset by the TLS listener, or unknown CA
        Client(address, timeout=3, **kwargs).close()
    assert time.monotonic() - t0 < 10
    # the failed Client sits in a reference cycle; its __del__ takes a class-wide lock of distributed's LoopRunner,
    # and run by the garbage collector inside the next Client's start it would deadlock: collect it here
    gc.collect()
    return err.value


def test_the_local_cluster_listens_on_loopback_only_over_tls(local_client):
    """Scheduler, workers and their nannies: tls:// on 127.0.0.1, never a wildcard or outside interface."""
    info = local_client.scheduler_info()
    assert local_client.scheduler.address.startswith("tls://127.0.0.1:")
    assert info["address"].startswith("tls://127.0.0.1:")
    assert len(info["workers"]) == 1
    for address, worker in info["workers"].items():
        assert address.startswith("tls://127.0.0.1:") and worker["nanny"].startswith("tls://127.0.0.1:")
    assert local_client.security.require_encryption and local_client.security.tls_client_cert


def test_a_client_without_the_runs_credential_is_refused_while_ours_runs_a_task(local_client):
    """Another local process can reach 127.0.0.1 but lacks this run's key: a plain client (no security, on the tls://
    address or on the bare port as tcp://) and a client with a TLS credential of its own all fail to connect, to the
    scheduler and to a worker; our client runs a task."""
    from distributed.security import Security

    address = local_client.scheduler.address
    worker = next(iter(local_client.scheduler_info()["workers"]))
    _refused(address)
    _refused(address.replace("tls://", "tcp://"))
    assert "certificate" in str(_refused(address, security=Security.temporary()))
    _refused(worker)
    _refused(worker.replace("tls://", "tcp://"))
    assert local_client.submit(lambda v: v + 1, 41).result(timeout=30) == 42
    clients = local_client.run_on_scheduler(lambda dask_scheduler: sorted(dask_scheduler.clients))
    assert [c for c in clients if c != "fire-and-forget"] == [local_client.id]  # no other client got in


def test_workers_beyond_the_available_cores_are_refused_naming_workers_and_cores(monkeypatch):
    cores = available_cores()
    with pytest.raises(UserError, match=rf"^--workers 10000: this machine has {cores} cores? available; give at most "
                                        rf"{cores}, or --scheduler ADDRESS"):
        with dask_client(workers=10**4):
            pass
    check_workers(None, cores)  # as many as the cores: fine
    check_workers("tcp://10.0.0.1:8786", 10**4)  # a scheduler of the user's: workers is not used, not checked
    with pytest.raises(UserError, match="--workers must be >= 1, got 0"):
        check_workers("tcp://10.0.0.1:8786", 0)
    monkeypatch.delattr("os.sched_getaffinity", raising=False)  # macOS, Windows: the CPU count
    monkeypatch.setattr("os.cpu_count", lambda: 3)
    assert available_cores() == 3
    with pytest.raises(UserError, match="^--workers 4: this machine has 3 cores available; give at most 3,"):
        check_workers(None, 4)
