"""User array files (.npy, .npz, HDF5 root datasets) read within a memory bound, numbers only.

Samples, labels, calibration sets and event files arrive as arrays in files the user (or someone else) wrote.
Before any array is read, its declared dtype and shape come from the file's header (the .npy header of a .npz
member, the HDF5 dataset's metadata), so that a structured, string, object or datetime array is refused naming the
file and the array, and an array that would decompress to more than the bound (a zip or gzip bomb, a header
declaring 10^12 elements) is refused before a byte of it is decompressed. HDF5 files must be self-contained
(simulator.h5safe: no external links, external storage or virtual datasets).
"""
from __future__ import annotations

import math
import os
import zipfile

import numpy as np

from spikeforge.errors import UserError, size_text

from .h5safe import open_self_contained

__all__ = ["default_memory_bound", "list_arrays", "read_arrays"]

NUMERIC_KINDS = "biuf"  # bool, signed, unsigned, float


def default_memory_bound() -> int:
    """Half of this machine's physical memory (the bound simulate / report apply without --max-memory)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2
    except (AttributeError, ValueError, OSError):
        return 8 * 2**30


def _is_hdf5(path) -> bool:
    return str(path).endswith((".h5", ".hdf5"))


def _npy_header(fh):
    """(shape, dtype) from an open .npy stream, without reading its data."""
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
    else:
        shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
    return shape, dtype


def _headers(path):
    """{name: (shape, dtype)} of every array in the file, from headers only."""
    if _is_hdf5(path):
        import h5py

        with open_self_contained(path) as h5:
            return {k: (h5[k].shape or (), h5[k].dtype) for k in sorted(h5) if isinstance(h5.get(k), h5py.Dataset)}
    try:
        if zipfile.is_zipfile(path):
            out = {}
            with zipfile.ZipFile(path) as z:
                for info in z.infolist():
                    if not info.filename.endswith(".npy"):
                        continue
                    with z.open(info) as fh:
                        out[info.filename[:-4]] = _npy_header(fh)
            return out
        with open(path, "rb") as fh:
            return {None: _npy_header(fh)}
    except (ValueError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise UserError(f"{path}: not a .npy / .npz file of plain numeric arrays ({' '.join(str(exc).split())[:120]})"
                        ) from None


def list_arrays(path) -> list:
    """Names of the arrays in a .npz / HDF5 file ([None] for a .npy file), in the file's order."""
    return list(_headers(os.fspath(path)))


def read_arrays(path, names=None, max_bytes=None, what="array") -> dict:
    """{name: array} of the arrays `names` (default: all) of a .npy (name None), .npz or HDF5 file, each checked
    numeric and all together no larger than max_bytes (default: default_memory_bound()) before any is read."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(2, "No such file or directory", path)
    if os.path.isdir(path):
        raise UserError(f"{path}: a folder, not a file of arrays")
    headers = _headers(path)
    names = list(headers) if names is None else list(names)
    for name in names:
        if name not in headers:
            raise UserError(f"{path}: no {what} {name!r} (has {[n for n in headers if n is not None]})")
    bound = default_memory_bound() if max_bytes is None else int(max_bytes)
    total = 0
    for name in names:
        shape, dtype = headers[name]
        label = f"{path}: {what} {name!r}" if name is not None else f"{path}"
        if dtype.kind not in NUMERIC_KINDS or dtype.fields is not None or dtype.subdtype is not None:
            raise UserError(f"{label} holds {dtype} values, not plain numbers (bool, integer or float)")
        total += math.prod(int(s) for s in shape) * dtype.itemsize
    if total > bound:
        raise UserError(f"{path}: the arrays read from it declare {size_text(total)}, more than the memory bound "
                        f"{size_text(bound)} (--max-memory raises it)")
    if _is_hdf5(path):
        with open_self_contained(path) as h5:
            try:
                return {n: h5[n][()] for n in names}
            except OSError as exc:
                raise UserError(f"{path}: cannot be read ({' '.join(str(exc).split())[:200]})") from None
    try:
        data = np.load(path, allow_pickle=False)
        if isinstance(data, np.lib.npyio.NpzFile):
            with data:
                return {n: data[n] for n in names}
        return {None: data}
    except (ValueError, EOFError, zipfile.BadZipFile, OSError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise UserError(f"{path}: cannot be read ({' '.join(str(exc).split())[:200]})") from None
