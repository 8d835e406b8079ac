"""Atomic writer of the spikeforge network file (HDF5, format v1; schema in docs/FORMAT.md)."""
from __future__ import annotations

import os

import numpy as np

from spikeforge.simulator.atomic import write_hdf5
from spikeforge.simulator.fileformat import FORMAT_NAME, FORMAT_VERSION, POP_DATASETS, validate_network
from spikeforge.simulator.network import CoreEdges, CoreTable, Network


def _put(group, name, data):
    """Store an array chunked, compressed and checksummed (empty arrays cannot be chunked)."""
    data = np.ascontiguousarray(data)
    if data.size == 0:
        return group.create_dataset(name, data=data)
    return group.create_dataset(name, data=data, chunks=True, compression="gzip", compression_opts=4,
                                shuffle=True, fletcher32=True)


def write_network(net: Network, path, attrs: dict | None = None) -> str:
    """Validate `net` and write it to `path` atomically (temporary file, fsync, rename).

    If anything fails, the file previously at `path` is left untouched.
    """
    from spikeforge import __version__

    validate_network(net)
    path = os.fspath(path)
    write_hdf5(path, lambda h5: _fill(h5, net, attrs, __version__))
    return path


def _fill(h5, net, attrs, version):
    """The network's groups, datasets and attributes, into an open (in-memory) HDF5 file."""
    h5.attrs["format"] = FORMAT_NAME
    h5.attrs["format_version"] = FORMAT_VERSION
    h5.attrs["created_by"] = f"spikeforge {version}"
    for key, value in {**net.attrs, **(attrs or {})}.items():
        if key not in ("format", "format_version", "created_by", "population_order", "projection_order"):
            h5.attrs[key] = value
    h5.attrs["population_order"] = [p.name for p in net.populations]
    h5.attrs["projection_order"] = [p.name for p in net.projections]
    pops = h5.create_group("populations")
    for pop in net.populations:
        g = pops.create_group(pop.name)
        g.attrs["model"] = pop.model
        g.attrs["shape"] = np.asarray(pop.shape, np.int64)
        g.attrs["reset"] = pop.reset
        g.attrs["tau"] = int(pop.tau)
        g.attrs["payload"] = pop.payload
        g.attrs["negative_slope"] = float(pop.negative_slope)
        g.attrs["levels"] = int(pop.levels)
        if pop.model == "ec":
            g.attrs["function"], g.attrs["eps"] = pop.function, float(pop.eps)
        if pop.threshold_neg is not None:
            _put(g, "threshold_neg", pop.threshold_neg.astype(np.float32))
        if pop.decay is not None:
            _put(g, "decay", pop.decay.astype(np.float32))
        if pop.syn_decay is not None:
            _put(g, "syn_decay", pop.syn_decay.astype(np.float32))
        if pop.model == "cuba":
            g.attrs["synapse_order"], g.attrs["refractory"] = pop.synapse_order, int(pop.refractory)
            if pop.arithmetic != "float":
                g.attrs["arithmetic"] = pop.arithmetic
        if pop.reset_every:
            g.attrs["reset_every"], g.attrs["reset_phase"] = int(pop.reset_every), int(pop.reset_phase)
        if pop.multi_spike or pop.membrane_floor != "none":
            g.attrs["multi_spike"], g.attrs["membrane_floor"] = int(pop.multi_spike), pop.membrane_floor
        if pop.model == "sigma_delta":
            g.attrs["delta_input"], g.attrs["payload_shift"] = int(pop.delta_input), int(pop.payload_shift)
            g.attrs["input_wrap"] = int(pop.input_wrap)
        if (pop.spike_value, pop.threshold_test) != ("threshold", "ge"):
            g.attrs["spike_value"], g.attrs["threshold_test"] = pop.spike_value, pop.threshold_test
        for name in POP_DATASETS:
            _put(g, name, getattr(pop, name).astype(np.float32))
    projs = h5.create_group("projections")
    for proj in net.projections:
        g = projs.create_group(proj.name)
        g.attrs["kind"], g.attrs["source"], g.attrs["target"] = proj.kind, proj.source, proj.target
        if proj.delay:
            g.attrs["delay"] = int(proj.delay)
        if proj.kind in ("conv2d", "avgpool", "maxpool"):
            g.attrs["stride"] = np.asarray(proj.stride, np.int64)
            g.attrs["padding"] = np.asarray(proj.padding, np.int64)
        if proj.kind == "conv2d":
            g.attrs["groups"] = int(proj.groups)
        if proj.kind in ("matmul_a", "matmul_b"):
            g.attrs["transpose"] = bool(proj.transpose)
        if proj.kind in ("avgpool", "maxpool"):
            g.attrs["kernel"] = np.asarray(proj.kernel, np.int64)
        if proj.kind == "sparse":
            _put(g, "indptr", proj.indptr.astype(np.int64))
            _put(g, "indices", proj.indices.astype(np.int32))
        if proj.weight is not None:
            _put(g, "weight", proj.weight.astype(np.float32))
    mapping = h5.create_group("mapping")
    for table, cls in (("cores", CoreTable), ("core_edges", CoreEdges)):
        g = mapping.create_group(table)
        for col in cls.COLUMNS:
            _put(g, col, getattr(getattr(net, table), col).astype(np.int64))
        if table == "cores" and net.cores.has_boxes():
            _put(g, "box", np.asarray(net.cores.box, np.int64))
