"""HDF5 files that read only themselves: refuse external links, external raw storage and virtual datasets.

HDF5 lets a file borrow data from elsewhere: an external link points at an object in another file, a dataset with
external storage keeps its raw bytes in any other file (a text file, a FIFO, a device), and a virtual dataset maps
its elements onto datasets of other files (a missing source silently reads as fill values). A network, event or data
file that does any of these would make spikeforge read (and copy into its outputs) a file the user never gave it.
`check_self_contained` walks every link of an open file before any dataset is read and refuses the first such
object by name. User-defined link classes are refused too; soft links stay (they name objects of the same file).
"""
from __future__ import annotations

import math

from spikeforge.errors import UserError, size_text

__all__ = ["ForeignDataError", "check_self_contained", "open_self_contained"]


class ForeignDataError(UserError):
    """An HDF5 file that refers to data outside itself."""


def check_self_contained(h5, path, max_objects=200_000):
    """Raise ForeignDataError naming `path` and the object when the open file `h5` (an h5py File or Group) has an
    external link, a user-defined link, a dataset stored in external files or a virtual dataset; metadata only is
    read (through h5py's low-level API: about 30 µs an object). Returns the total declared size of its datasets in
    bytes (uncompressed: what reading them all takes). More than `max_objects` links is refused after a quick count
    (a file of millions of empty groups is no spikeforge input)."""
    import h5py

    names = []

    def count(name):
        names.append(name)
        return True if len(names) > max_objects else None  # (a non-None return stops the visit)

    h5.id.links.visit(count)
    if len(names) > max_objects:
        raise ForeignDataError(f"{path}: more than {max_objects} HDF5 objects; not a spikeforge input")
    total = 0
    for raw in names:
        name = raw.decode("utf-8", "replace")
        kind = h5.id.links.get_info(raw).type
        if kind == h5py.h5l.TYPE_SOFT:
            continue
        if kind != h5py.h5l.TYPE_HARD:
            link = h5.get(name, getlink=True)
            what = (f"is an external link to {link.filename}:{link.path}" if isinstance(link, h5py.ExternalLink)
                    else f"is a user-defined link (type {kind})")
            _refuse(path, name, what)
        if h5py.h5o.get_info(h5.id, raw).type != h5py.h5o.TYPE_DATASET:
            continue
        dset = h5py.h5d.open(h5.id, raw)
        plist = dset.get_create_plist()
        if plist.get_external_count():
            _refuse(path, name, f"keeps its data in external file {plist.get_external(0)[0].decode()!r}")
        if plist.get_layout() == h5py.h5d.VIRTUAL:
            sources = h5[name].virtual_sources()
            _refuse(path, name, "is a virtual dataset" + (f" over {sources[0].file_name!r}" if sources else ""))
        space = dset.get_space()
        n = math.prod(int(d) for d in space.get_simple_extent_dims()) if space.get_simple_extent_ndims() else 1
        total += n * dset.get_type().get_size()
    return total


def _refuse(path, name, what):
    raise ForeignDataError(f"{path}: /{name} {what}: spikeforge reads only self-contained HDF5 files (no external "
                           "links, external storage or virtual datasets), so that a file cannot make it read another")


def open_self_contained(path, max_bytes=None, what="HDF5 file"):
    """h5py.File(path, 'r') after check_self_contained; max_bytes: refuse a file whose datasets declare more bytes
    in all (decompressed) than this, before any is read. A UserError names the file for anything unreadable."""
    import h5py

    try:
        h5 = h5py.File(path, "r")
    except OSError as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise UserError(f"{path}: not a readable {what} ({' '.join(str(exc).split())})") from None
    try:
        total = check_self_contained(h5, path)
        if max_bytes is not None and total > max_bytes:
            raise UserError(f"{path}: its datasets declare {size_text(total)} in all (decompressed), more than "
                            f"the memory bound {size_text(max_bytes)}")
    except BaseException:
        h5.close()
        raise
    return h5
