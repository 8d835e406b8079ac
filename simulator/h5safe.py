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

from spikeforge.errors import UserError

__all__ = ["ForeignDataError", "check_self_contained", "open_self_contained"]


class ForeignDataError(UserError):
    """An HDF5 file that refers to data outside itself."""


def check_self_contained(h5, path, max_objects=1_000_000):
    """Raise ForeignDataError naming `path` and the object when the open file `h5` (an h5py File or Group) has an
    external link, a user-defined link, a dataset stored in external files or a virtual dataset; metadata only is
    read. Returns the total declared size of its datasets in bytes (uncompressed: what reading them all takes).
    More than `max_objects` links is refused (a file of millions of empty groups is no spikeforge input)."""
    import h5py

    problems, count, total = [], [0], [0]

    def visit(name):
        count[0] += 1
        if count[0] > max_objects:
            raise ForeignDataError(f"{path}: more than {max_objects} HDF5 objects; not a spikeforge input")
        link = h5.get(name, getlink=True)
        if isinstance(link, h5py.ExternalLink):
            problems.append(f"/{name} is an external link to {link.filename}:{link.path}")
        elif not isinstance(link, (h5py.HardLink, h5py.SoftLink)):
            problems.append(f"/{name} is a user-defined link ({type(link).__name__})")
        elif isinstance(link, h5py.HardLink):
            obj = h5.get(name)
            if isinstance(obj, h5py.Dataset):
                if obj.external:
                    problems.append(f"/{name} keeps its data in external file {obj.external[0][0]!r}")
                elif obj.is_virtual:
                    sources = obj.virtual_sources()
                    where = f" over {sources[0].file_name!r}" if sources else ""
                    problems.append(f"/{name} is a virtual dataset{where}")
                else:
                    shape = obj.shape or ()
                    total[0] += math.prod(int(s) for s in shape) * obj.dtype.itemsize
        return problems[0] if problems else None  # a non-None return stops the walk at the first problem

    h5.visit_links(visit)
    if problems:
        raise ForeignDataError(f"{path}: {problems[0]}: spikeforge reads only self-contained HDF5 files (no "
                               "external links, external storage or virtual datasets), so that a file cannot make "
                               "it read another")
    return total[0]


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
            raise UserError(f"{path}: its datasets declare {total / 2**20:.1f} MiB in all (decompressed), more than "
                            f"the memory bound {max_bytes / 2**20:.1f} MiB")
    except BaseException:
        h5.close()
        raise
    return h5
