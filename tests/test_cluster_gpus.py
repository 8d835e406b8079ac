"""One Dask worker per GPU (issue 36): the cluster of nannies that each start their worker with its own
CUDA_VISIBLE_DEVICES, the shards spread over them, a dying worker's shard run again, and the command line's checks.
These run on the CPU (the workers simulate with the numba engine; what is checked is which device each worker is
given and that the merged result equals one process's, exactly); the GPU run itself is a device-tool benchmark."""
import os

import numpy as np
import pytest

from spikeforge import simulator
from spikeforge.cli import main
from spikeforge.cluster import dask_client, gpu_devices, merge_results, run_sharded
from spikeforge.converter import convert, write_network
from spikeforge.errors import UserError


@pytest.fixture(scope="module")
def mlp_file(tmp_path_factory, trained_mlp, digits):
    return write_network(convert(trained_mlp, [digits[0][:256]]), tmp_path_factory.mktemp("gpus") / "mlp.h5")


def _same(a, b):
    assert np.array_equal(a.output, b.output)
    assert np.array_equal(a.counters, b.counters) and np.array_equal(a.per_sample, b.per_sample)
    assert all(np.array_equal(a.spike_counts[k], b.spike_counts[k]) for k in a.spike_counts)


def test_each_worker_of_a_gpu_cluster_sees_only_its_own_device_and_the_merge_is_exact(mlp_file, digits):
    """Devices "3" and "5": two worker processes, each started with CUDA_VISIBLE_DEVICES set to its device; four
    shards spread over both (each shard says where it ran); merged result == one process, counter for counter."""
    x = digits[2][:40].numpy()
    whole = simulator.run(mlp_file, x, 4, record_counts=True)
    with dask_client(devices=["3", "5"]) as client:
        seen = client.run(lambda: os.environ.get("CUDA_VISIBLE_DEVICES"))
        sharded = run_sharded(mlp_file, x, 4, client, shards=4, record_counts=True)
    assert sorted(seen.values()) == ["3", "5"]
    _same(sharded, whole)
    assert [s["samples"] for s in sharded.shards] == [[0, 10], [10, 20], [20, 30], [30, 40]]
    assert {s["gpu"] for s in sharded.shards} == {"3", "5"} and len({s["pid"] for s in sharded.shards}) == 2


def _die_once(path, x, T, kwargs):
    """A shard task whose first run kills its worker process (a marker file says it happened)."""
    from spikeforge.cluster import _run_shard

    marker = os.environ.get("SPIKEFORGE_TEST_MARKER") or kwargs.pop("_marker")
    if not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(1)
    kwargs = {k: v for k, v in kwargs.items() if k != "_marker"}
    return _run_shard(path, x, T, kwargs)


def test_a_worker_that_dies_loses_only_its_shard_which_runs_again(mlp_file, digits, tmp_path):
    """The first shard to start kills its worker; the nanny restarts it and the scheduler runs that shard again:
    the merged result is whole and equal to one process's."""
    import cloudpickle

    cloudpickle.register_pickle_by_value(__import__(__name__))  # the workers cannot import this test module
    x = digits[2][:24].numpy()
    whole = simulator.run(mlp_file, x, 3)
    with dask_client(devices=["0", "1"]) as client:
        sharded = run_sharded(mlp_file, x, 3, client, shards=2, task=_die_once, _marker=str(tmp_path / "died"))
    assert (tmp_path / "died").exists()
    _same(sharded, whole)


def test_gpu_workers_are_checked_before_any_work(monkeypatch, mlp_file, tmp_path, capsys):
    import spikeforge.cluster

    monkeypatch.setattr(spikeforge.cluster, "visible_gpus", lambda: 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6")
    assert gpu_devices() == ["4", "6"] and gpu_devices(1) == ["4"]
    assert gpu_devices(1, "cuda:1") == ["6"]  # a named GPU: that one (it was the first, whatever the index)
    with pytest.raises(UserError, match=r"--device cuda:1 with --workers 2: one named GPU takes --workers 1"):
        gpu_devices(2, "cuda:1")
    with pytest.raises(UserError, match=r"--workers 3 --device cuda: one worker per GPU, and this machine shows 2 "
                                        r"GPUs \(CUDA_VISIBLE_DEVICES='4,6'\); give at most 2"):
        gpu_devices(3)
    np.save(tmp_path / "x.npy", np.zeros((2, 64)))
    assert main(["simulate", str(mlp_file), "--input", str(tmp_path / "x.npy"), "--T", "2", "--out",
                 str(tmp_path / "r.npz"), "--workers", "3", "--device", "cuda", "--backend", "torch"]) == 2
    assert "one worker per GPU, and this machine shows 2 GPUs" in capsys.readouterr().err
    assert main(["simulate", str(mlp_file), "--input", str(tmp_path / "x.npy"), "--T", "2", "--out",
                 str(tmp_path / "r.npz"), "--workers", "2", "--device", "cuda"]) == 2
    assert "--device cuda runs on the torch backend" in capsys.readouterr().err
    monkeypatch.setattr(spikeforge.cluster, "visible_gpus", lambda: 0)
    with pytest.raises(UserError, match="no CUDA device is visible here"):
        gpu_devices()


@pytest.fixture(scope="module")
def resnet_file(tmp_path_factory, trained_resnet, digits):
    return write_network(convert(trained_resnet, [digits[0][:256]]), tmp_path_factory.mktemp("gpus") / "resnet.h5")


@pytest.mark.parametrize("network", ["mlp_file", "resnet_file"])
def test_library_products_see_blocks_of_one_size_so_a_samples_current_does_not_depend_on_its_chunk(
        monkeypatch, request, network, digits):
    """Every float64 conv / GEMM / sparse product is called on LIBRARY_ROWS samples of the device (16 on a CPU; the
    last block padded with zeros): the library then picks one algorithm, one summation order, whatever the chunk
    or shard size. A dense MLP and a conv ResNet (its analog input through a float64 conv): every call sees 16
    rows, chunks of 48, 16 and 5 samples and 4 shards give the same bits, and the same spikes and counters as the
    unblocked run."""
    from spikeforge.simulator import torch_backend

    path, x = request.getfixturevalue(network), digits[2][:48]
    monkeypatch.setattr(torch_backend, "LIBRARY_ROWS", {})
    plain = simulator.run(path, x, 6, backend="torch", batch_size=48)
    monkeypatch.setattr(torch_backend, "LIBRARY_ROWS", {"cpu": 16})
    seen = []
    library = torch_backend._Proj._library_current

    def spy(self, v):
        seen.append(v.shape[0])
        return library(self, v)

    monkeypatch.setattr(torch_backend._Proj, "_library_current", spy)
    runs = [simulator.run(path, x, 6, backend="torch", batch_size=b, record_counts=True) for b in (48, 16, 5)]
    runs.append(merge_results([simulator.run(path, x[a:a + 12], 6, backend="torch", record_counts=True)
                               for a in range(0, 48, 12)]))
    assert seen and set(seen) == {16}
    for r in runs[1:]:
        _same(runs[0], r)
    assert np.array_equal(runs[0].counters, plain.counters) and np.array_equal(runs[0].per_sample, plain.per_sample)
    np.testing.assert_allclose(runs[0].output, plain.output, rtol=1e-12, atol=1e-12)


def test_fixed_row_blocks_pad_the_last_block_and_return_each_rows_result():
    import torch

    from spikeforge.simulator.torch_backend import in_fixed_rows

    calls = []
    x = torch.arange(21 * 3, dtype=torch.float64).reshape(21, 3)

    def fn(v):
        calls.append(tuple(v.shape))
        return v * 2 + 1

    assert torch.equal(in_fixed_rows(fn, x, 8), x * 2 + 1)
    assert calls == [(8, 3)] * 3
    calls.clear()
    assert torch.equal(in_fixed_rows(fn, x[:8], 8), x[:8] * 2 + 1) and calls == [(8, 3)]
