"""Atomic file output: write to a temporary file beside the target, fsync, then rename into place.

Temporary files are named `.spikeforge-tmp-<host>-<pid>-<random><suffix>` (host: 8 hex digits of a hash of the
host name), so that a later run can tell its own kind's leftovers from anything else: before its first write into
a folder, a process removes the temporaries of killed runs there (`remove_stale`): those of this host whose process
is gone, and those of other hosts (a shared file system) older than a day. Nothing else is ever removed.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import secrets
import socket
import time

__all__ = ["OutputWriteError", "atomic_output", "atomic_outputs", "check_output_path", "remove_stale", "save_figure",
           "write_bytes", "write_hdf5", "write_text"]

_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]
_NAME = re.compile(r"\.spikeforge-tmp-([0-9a-f]{8})-(\d+)-[0-9a-f]{12}\.")
_LEGACY = re.compile(r"\.spikeforge-[A-Za-z0-9_]{8}\.(tmp|npz|h5\.tmp|nir\.tmp)$")  # mkstemp names before 0.2.1
_FOREIGN_AGE_S = 24 * 3600
_LEGACY_AGE_S = 3600
_cleaned: set = set()


def pid_alive(pid: int, own=True) -> bool:
    """Whether process `pid` of this host runs (own: what to answer for this process's own pid)."""
    if pid == os.getpid():
        return own
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale(directory) -> list:
    """Remove the temporary files that killed spikeforge runs left in `directory` (see the module doc); returns
    their names. Safe to call any time: a live writer's temporary is kept."""
    directory = os.fspath(directory) or "."
    removed = []
    try:
        entries = os.listdir(directory)
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        m = _NAME.match(entry)
        legacy = m is None and _LEGACY.match(entry)
        if m is None and not legacy:
            continue
        full = os.path.join(directory, entry)
        try:
            st = os.lstat(full)
        except OSError:
            continue
        if not os.path.isfile(full) or os.path.islink(full):
            continue
        age = now - st.st_mtime
        if legacy:
            stale = age > _LEGACY_AGE_S
        elif m.group(1) == _HOST:
            stale = not pid_alive(int(m.group(2)))
        else:
            stale = age > _FOREIGN_AGE_S
        if stale:
            with contextlib.suppress(OSError):
                os.unlink(full)
                removed.append(entry)
    return removed


def temporary_name(directory, suffix=".tmp") -> str:
    """A fresh temporary path in `directory` named as the module doc says (the file is created, empty)."""
    for _ in range(100):
        path = os.path.join(directory, f".spikeforge-tmp-{_HOST}-{os.getpid()}-{secrets.token_hex(6)}{suffix}")
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)  # the umask applies, as for open()
        except FileExistsError:
            continue
        os.close(fd)
        return path
    raise FileExistsError(errno.EEXIST, "no free temporary name", directory)


def check_output_path(path, flag="--out"):
    """Refuse an output path that is not a regular file to be replaced: a folder, a FIFO, a device, a socket."""
    from spikeforge.errors import UserError

    path = os.fspath(path)
    if os.path.lexists(path):
        if os.path.isdir(path):
            raise UserError(f"{flag} {path} is a folder, not a file to write")
        if os.path.exists(path) and not os.path.isfile(path):
            raise UserError(f"{flag} {path} is not a regular file (a FIFO, device or socket); spikeforge writes "
                            "only regular files")
    return path


# write failures that are the disk's or the system's, not a bug: reported in one line naming the output
WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO, errno.EACCES, errno.EPERM}


class OutputWriteError(OSError):
    """Writing an output failed (a full disk, a quota, a read-only file system); the old output is intact."""

    def __init__(self, paths, exc):
        reason = "no space left on the device" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc)).lower()
        names = " and ".join(os.path.basename(p) for p in paths)
        super().__init__(exc.errno, f"{reason} while writing {' and '.join(paths)}; the previous {names} (if any) "
                                    f"{'is' if len(paths) == 1 else 'are'} unchanged")
        self.output = paths[0]

    def __str__(self):
        return self.strerror


@contextlib.contextmanager
def atomic_outputs(*paths, suffixes=None):
    """Several outputs committed together: yields one temporary path per output; when the block succeeds every
    temporary is fsynced, then they are renamed into place in the given order (make the last one the record that
    names the others' content: a kill between two renames leaves a pair that a reader can tell apart). When the
    block fails every temporary is removed and no output is touched. Each path must be a regular file or not exist
    (a folder, FIFO or device is refused, never replaced)."""
    paths = [check_output_path(p, "output") for p in paths]
    suffixes = suffixes or [".tmp"] * len(paths)
    temps = []
    try:
        for path, suffix in zip(paths, suffixes):
            directory = os.path.dirname(os.path.abspath(path))
            if directory not in _cleaned:
                _cleaned.add(directory)
                remove_stale(directory)
            temps.append(temporary_name(directory, suffix))
        yield temps[0] if len(temps) == 1 else list(temps)
        for tmp in temps:
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        for tmp, path in zip(temps, paths):
            os.replace(tmp, path)
        for directory in {os.path.dirname(os.path.abspath(p)) for p in paths}:  # make the renames durable
            with contextlib.suppress(OSError):
                fd = os.open(directory, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
    except BaseException as exc:
        for tmp in temps:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        if isinstance(exc, OSError) and not isinstance(exc, OutputWriteError) and exc.errno in WRITE_ERRNOS:
            raise OutputWriteError(paths, exc) from None
        raise


def atomic_output(path, suffix=".tmp"):
    """Yield a temporary path; on success it replaces `path`, on failure it is removed and `path` is untouched
    (a write error of the disk becomes an OutputWriteError naming `path`)."""
    return atomic_outputs(path, suffixes=[suffix])


def write_bytes(path, data, suffix=".tmp"):
    """Write bytes (or a buffer) to `path` atomically."""
    with atomic_output(path, suffix) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)


def write_hdf5(path, fill, suffix=".h5.tmp"):
    """Build an HDF5 file in memory with fill(h5py.File), then write its bytes to `path` atomically: a full disk
    or any write error then happens in plain Python I/O, never inside libhdf5 (which, failing to flush an open
    dataset on a full disk, crashed the process)."""
    import io

    import h5py

    buf = io.BytesIO()
    with h5py.File(buf, "w") as h5:
        fill(h5)
    write_bytes(path, buf.getbuffer(), suffix)
    return os.fspath(path)


def save_figure(fig, path, **kwargs):
    """fig.savefig(path) through a temporary file (the format comes from path's extension)."""
    fmt = os.path.splitext(os.fspath(path))[1].lstrip(".") or None
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format=fmt, **kwargs)


def write_text(path, text):
    with atomic_output(path) as tmp:
        with open(tmp, "w") as fh:
            fh.write(text)
