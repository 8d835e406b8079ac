import os

import h5py
import numpy as np
import pytest
import torch

from spikeforge.converter import convert, write_network
from spikeforge.models import DigitsMLP, DigitsResNet
from spikeforge.simulator import NetworkFileError, load_network, validate_network
from spikeforge.simulator.fileformat import FORMAT_VERSION
from spikeforge.simulator.network import Projection


@pytest.fixture(scope="module")
def cnn_file(tmp_path_factory):
    torch.manual_seed(0)
    net = convert(DigitsResNet(width=4).eval(), [torch.rand(8, 1, 8, 8)], pooling="spike")
    return write_network(net, tmp_path_factory.mktemp("f") / "cnn.h5")


def _corrupt(src, dst, edit):
    import shutil

    shutil.copy(src, dst)
    with h5py.File(dst, "r+") as h5:
        edit(h5)
    return dst


def _replace(h5, name, data):
    del h5[name]
    h5.create_dataset(name, data=data)


def test_file_is_chunked_compressed_checksummed(cnn_file):
    with h5py.File(cnn_file) as h5:
        assert h5.attrs["format"] == "spikeforge-network"
        assert h5.attrs["format_version"] == FORMAT_VERSION == "1.14"
        w = h5["projections/block1_conv1/weight"]
        assert w.chunks is not None and w.compression == "gzip" and w.fletcher32


@pytest.mark.parametrize("edit, where, problem", [
    (lambda h5: h5.attrs.__setitem__("format_version", "2.0"), "/", "version 2.0 is not supported"),
    (lambda h5: h5.attrs.__setitem__("format_version", "1.99"), "/", "version 1.99 is not supported"),
    (lambda h5: h5.attrs.__setitem__("format", "something-else"), "/", "not 'spikeforge-network'"),
    (lambda h5: _replace(h5, "populations/stem_2/threshold",
                         np.r_[np.float32(np.nan), np.ones(255, np.float32)]),
     "/populations/stem_2/threshold", "non-finite value nan at index 0"),
    (lambda h5: _replace(h5, "populations/stem_2/bias", np.zeros(10, np.float32)),
     "/populations/stem_2/bias", "shape (10,) does not match"),
    (lambda h5: _replace(h5, "projections/block1_conv1/weight", np.zeros((4, 4, 5, 5), np.float32)),
     "/projections/block1_conv1", "output shape (4, 6, 6) does not match"),
    (lambda h5: _replace(h5, "mapping/cores/population", np.array([0, 1, 2, 3, 4, 5, 6, 99])),
     "/mapping/cores/population", "population index 99 at core 7 is out of range"),
    (lambda h5: _replace(h5, "mapping/core_edges/dst", np.full(len(h5["mapping/core_edges/dst"]), 50)),
     "/mapping/core_edges/dst", "core 50 at index 0 does not exist"),
    (lambda h5: h5.attrs.__setitem__("population_order", ["input", "block1_act1", "stem_2", "block1_act2",
                                                          "block2_act1", "block2_act2", "pool_spikes", "readout"]),
     "/projections/block1_conv1", "topological order"),
    (lambda h5: h5.attrs.__setitem__("population_order", ["input", "missing"]),
     "/populations/missing", "missing"),
    (lambda h5: h5["populations/stem_2"].attrs.__setitem__("model", "hodgkin-huxley"),
     "/populations/stem_2", "unknown neuron model"),
    (lambda h5: h5["populations/stem_2"].attrs.__setitem__("shape", np.array([4, -8, 8])),
     "/populations/stem_2", "positive dimensions"),
])
def test_corrupted_files_give_clear_errors(cnn_file, tmp_path, edit, where, problem):
    bad = _corrupt(cnn_file, tmp_path / "bad.h5", edit)
    with pytest.raises(NetworkFileError) as err:
        load_network(bad)
    assert err.value.where == where
    assert problem in str(err.value)
    assert str(bad) in str(err.value)


def test_sparse_index_out_of_range_is_rejected(tmp_path):
    net = convert(DigitsMLP().eval(), [torch.rand(4, 1, 8, 8)])
    # swap the first dense projection for an equivalent sparse one, then break one index
    dense = net.projections[0]
    w = dense.weight.T  # rows per source neuron
    indptr = np.arange(0, w.size + 1, w.shape[1], dtype=np.int64)
    indices = np.tile(np.arange(w.shape[1], dtype=np.int32), w.shape[0])
    net.projections[0] = Projection(dense.name, "sparse", dense.source, dense.target, w.reshape(-1).copy(),
                                    indptr, indices)
    validate_network(net)
    path = write_network(net, tmp_path / "sparse.h5")
    load_network(path)
    bad = _corrupt(path, tmp_path / "bad.h5",
                   lambda h5: h5[f"projections/{dense.name}/indices"].__setitem__(5, 128))
    with pytest.raises(NetworkFileError, match=r"index 128 at position 5 is outside the target"):
        load_network(bad)


def test_not_hdf5_and_missing_file(tmp_path):
    p = tmp_path / "junk.h5"
    p.write_bytes(b"not an hdf5 file at all")
    with pytest.raises(NetworkFileError, match="not a readable HDF5 file"):
        load_network(p)
    with pytest.raises(NetworkFileError, match="does not exist"):
        load_network(tmp_path / "nope.h5")


def test_failed_write_leaves_the_old_file_intact(cnn_file, tmp_path):
    import shutil

    target = tmp_path / "keep.h5"
    shutil.copy(cnn_file, target)
    before = target.read_bytes()
    net = load_network(cnn_file)
    net.populations[1].threshold[3] = np.nan  # invalid: refused before anything is written
    with pytest.raises(NetworkFileError):
        write_network(net, target)
    net.populations[1].threshold[3] = 1.0
    net.attrs["unstorable"] = object()  # fails half-way through writing
    with pytest.raises(TypeError):
        write_network(net, target)
    assert target.read_bytes() == before
    assert [f for f in os.listdir(tmp_path) if f.startswith(".spikeforge-")] == []


def test_a_shape_whose_int64_product_wraps_is_refused_by_its_size(cnn_file, tmp_path):
    def edit(h5):
        name = [k for k in h5["populations"]][1]
        h5["populations"][name].attrs["shape"] = np.array([2 ** 32, 2 ** 32], np.int64)

    bad = _corrupt(cnn_file, tmp_path / "wrap.h5", edit)
    with pytest.raises(NetworkFileError, match=r"18446744073709551616 neurons, more than 2147483647"):
        load_network(bad)
