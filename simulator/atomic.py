"""Atomic file output: write to a temporary file beside the target, fsync, then rename into place."""
from __future__ import annotations

import contextlib
import os
import tempfile


@contextlib.contextmanager
def atomic_output(path, suffix=".tmp"):
    """Yield a temporary path; on success it replaces `path`, on failure it is removed and `path` is untouched."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".spikeforge-", suffix=suffix, dir=directory)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; the result gets the permissions of a plain open()
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_figure(fig, path, **kwargs):
    """fig.savefig(path) through a temporary file (the format comes from path's extension)."""
    fmt = os.path.splitext(os.fspath(path))[1].lstrip(".") or None
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format=fmt, **kwargs)


def write_text(path, text):
    with atomic_output(path) as tmp:
        with open(tmp, "w") as fh:
            fh.write(text)
