"""Output folders written as one unit: built in a temporary sibling, then swapped in.

`replace_folder(DIR)` yields a fresh temporary folder `.DIR.spikeforge-tmp-<pid>` beside DIR; when the block
succeeds the new folder takes DIR's place in one step (Linux: renameat2 RENAME_EXCHANGE, then the old report is
deleted; elsewhere: rename the old folder away, rename the new one in, delete the old one), so DIR is always the
complete old or the complete new report, and no file of an earlier report (a PNG of another T) stays beside a new
one. When the block fails, the temporary folder is removed and DIR is untouched. A run killed with SIGKILL leaves
its temporary sibling behind: the next run for the same DIR removes it (and, where the fallback was killed between
its two renames, puts the old report back first).

Only a folder that holds nothing but what the writer itself makes (`owned` patterns) is replaced: a mistyped
--out (`.`, a home folder) is refused rather than deleted.
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import fnmatch
import os
import shutil

from spikeforge.errors import UserError

__all__ = ["REPORT_FILES", "check_replaceable", "replace_folder"]

REPORT_FILES = ("report.md", "report.json", "report.csv", "*.png")
_TMP, _OLD = ".spikeforge-tmp-", ".spikeforge-old-"


def _paths(path):
    path = os.path.realpath(os.fspath(path))  # --out naming a link to a folder: that folder is replaced
    return os.path.dirname(path), os.path.basename(path)


def check_replaceable(path, owned=REPORT_FILES, flag="--out"):
    """Refuse, before any work, an output folder that is a file or holds files the writer does not make."""
    shown = os.fspath(path)
    if os.path.exists(shown) and not os.path.isdir(shown):
        raise UserError(f"{flag} {shown} is a file; the report is a folder")
    if not os.path.isdir(shown):
        return
    foreign = sorted(e for e in os.listdir(shown) if not e.startswith(".spikeforge-")  # a killed writer's temp
                     and not any(fnmatch.fnmatch(e, pattern) for pattern in owned))
    if foreign:
        more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
        raise UserError(f"{flag} {shown} holds {', '.join(map(repr, foreign[:3]))}{more}, not part of a spikeforge "
                        "report; the report replaces the folder as a whole, so give a new or empty folder")


def _alive(pid):
    if pid == os.getpid():
        return False  # ours from an earlier, finished call of this process: stale too
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale(path):
    """Remove what killed runs left for this folder: temporary siblings of dead processes (restoring the old
    report first when a run died between its two renames) and `.spikeforge-*` temporary files inside it."""
    parent, name = _paths(path)
    full = os.path.join(parent, name)
    if not os.path.isdir(parent):
        return
    left = sorted(e for e in os.listdir(parent) if e.startswith(f".{name}{_TMP}") or e.startswith(f".{name}{_OLD}"))
    for entry in left:
        try:
            pid = int(entry.rsplit("-", 1)[1])
        except ValueError:
            pid = -1
        if pid > 0 and _alive(pid):
            continue  # another run writing the same report right now
        stale = os.path.join(parent, entry)
        if _OLD in entry and not os.path.lexists(full):
            os.rename(stale, full)  # killed between "old away" and "new in": the old report comes back
        else:
            shutil.rmtree(stale, ignore_errors=True)
    if os.path.isdir(full):
        for entry in os.listdir(full):
            if entry.startswith(".spikeforge-"):
                target = os.path.join(full, entry)
                (shutil.rmtree if os.path.isdir(target) else os.unlink)(target)


def _exchange(a, b):
    """Swap two paths in one step (Linux renameat2 RENAME_EXCHANGE); False where the system cannot."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), b)


@contextlib.contextmanager
def replace_folder(path, owned=REPORT_FILES, flag="--out"):
    """Yield a temporary folder to write into; on success it replaces `path` as a whole (see the module doc)."""
    check_replaceable(path, owned, flag)
    parent, name = _paths(path)
    os.makedirs(parent, exist_ok=True)
    clean_stale(path)
    full = os.path.join(parent, name)
    tmp = os.path.join(parent, f".{name}{_TMP}{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    os.mkdir(tmp)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if not os.path.isdir(full):
        os.rename(tmp, full)
    elif _exchange(tmp, full):
        shutil.rmtree(tmp)  # now the old report
    else:
        old = os.path.join(parent, f".{name}{_OLD}{os.getpid()}")
        os.rename(full, old)
        os.rename(tmp, full)
        shutil.rmtree(old)
    with contextlib.suppress(OSError):  # make the renames durable
        fd = os.open(parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
