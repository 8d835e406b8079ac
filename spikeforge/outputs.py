"""Output folders written as one unit: built in a temporary sibling, then swapped in.

`replace_folder(DIR)` yields a fresh temporary folder `.DIR.spikeforge-tmp-<pid>` beside DIR; when the block
succeeds the new folder takes DIR's place in one step (Linux: renameat2 RENAME_EXCHANGE, then the old report is
deleted; elsewhere: rename the old folder away, rename the new one in, delete the old one), so DIR is always the
complete old or the complete new report, and no file of an earlier report (a PNG of another T) stays beside a new
one. When the block fails, the temporary folder is removed and DIR is untouched. A run killed with SIGKILL leaves
its temporary sibling behind: the next run for the same DIR removes it (and, where the fallback was killed between
its two renames, puts the old report back first).

Only an empty folder, or one that holds exactly what a spikeforge writer made there, is replaced: each finished
folder gets a marker (`.spikeforge-outputs.json`) listing its files, and a folder holding anything the marker does
not list (a user's pictures beside a report, a mistyped --out such as `.` or a home folder) is refused rather than
deleted.
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import fnmatch
import json
import os
import shutil

from spikeforge.errors import UserError
from spikeforge.simulator.atomic import WRITE_ERRNOS, OutputWriteError, pid_alive

__all__ = ["MARKER", "REPORT_FILES", "check_replaceable", "load_run", "replace_folder", "write_marker", "write_run"]

REPORT_FILES = ("report.md", "report.json", "report.csv", "*.png")
_TMP, _OLD = ".spikeforge-tmp-", ".spikeforge-old-"
MARKER = ".spikeforge-outputs.json"  # in every folder report / demo write: the files they made there


def _paths(path):
    path = os.path.realpath(os.fspath(path))  # --out naming a link to a folder: that folder is replaced
    return os.path.dirname(path), os.path.basename(path)


def _marker(path):
    """The marker a writer leaves in its folder ({"made_by", "kind", "files"}), or None (absent or unreadable)."""
    try:
        with open(os.path.join(path, MARKER)) as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("made_by") != "spikeforge" or not isinstance(data.get("files"), list):
        return None
    return data


def check_replaceable(path, owned=REPORT_FILES, flag="--out"):
    """Refuse, before any work, an output folder that is a file, or that is not empty and not exactly a folder
    this writer made: its marker must list every file in it (a killed writer's temporaries aside)."""
    shown = os.fspath(path)
    if os.path.exists(shown) and not os.path.isdir(shown):
        raise UserError(f"{flag} {shown} is a file; the report is a folder")
    if not os.path.isdir(shown):
        return
    entries = sorted(e for e in os.listdir(shown) if not e.startswith(".spikeforge-"))  # marker, temporaries
    if not entries:
        return
    marker = _marker(shown)
    made = set(marker["files"]) if marker else set(entries) if _legacy_report(shown) else set()
    foreign = [e for e in entries if e not in made or not any(fnmatch.fnmatch(e, p) for p in owned)]
    if foreign:
        more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
        why = "that spikeforge did not write there" if marker else \
            "and no record that spikeforge made the folder (the marker .spikeforge-outputs.json)"
        raise UserError(f"{flag} {shown} holds {', '.join(map(repr, foreign[:3]))}{more} {why}; the output replaces "
                        "the folder as a whole, so give a new or empty folder")


def _legacy_report(path):
    """A report folder of spikeforge 0.2.0 (before markers): report.md and a report.json of ours."""
    try:
        with open(os.path.join(path, "report.json")) as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and "rows" in data and os.path.isfile(os.path.join(path, "report.md"))


def write_marker(folder, kind):
    """Record in `folder` (a writer's finished temporary folder) that spikeforge made every file in it."""
    files = sorted(e for e in os.listdir(folder) if e != MARKER)
    with open(os.path.join(folder, MARKER), "w") as fh:
        json.dump({"made_by": "spikeforge", "kind": kind, "files": files}, fh, indent=1)


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
        if pid > 0 and pid_alive(pid, own=False):  # (ours: from an earlier, finished call)
            continue  # another run writing the same report right now
        stale = os.path.join(parent, entry)
        if _OLD in entry and not os.path.lexists(full):
            os.rename(stale, full)  # killed between "old away" and "new in": the old report comes back
        else:
            shutil.rmtree(stale, ignore_errors=True)
    if os.path.isdir(full):
        from spikeforge.simulator.atomic import remove_stale

        remove_stale(full)


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
def replace_folder(path, owned=REPORT_FILES, flag="--out", kind="report"):
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
        write_marker(tmp, kind)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError) and exc.errno in WRITE_ERRNOS:  # a full disk: name --out, not the temporary
            raise OutputWriteError([os.fspath(path)], exc) from None
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


def write_run(path, arrays, summary):
    """simulate's pair: `path` (.npz of the arrays) and the .json beside it (the summary plus the .npz's SHA-256),
    committed together: both temporaries are written and fsynced first, the .npz is renamed into place, then the
    .json. A kill at any instant leaves the old pair, the new pair, or a new .npz beside the old .json, which
    load_run refuses (the hash does not match); the .npz alone always holds its own summary."""
    import hashlib

    import numpy as np

    from spikeforge.simulator.atomic import atomic_outputs

    json_path = os.path.splitext(os.fspath(path))[0] + ".json"
    with atomic_outputs(path, json_path, suffixes=[".npz", ".json"]) as (tmp_npz, tmp_json):
        with open(tmp_npz, "wb") as fh:
            np.savez_compressed(fh, **arrays)
        with open(tmp_npz, "rb") as fh:
            digest = hashlib.file_digest(fh, "sha256").hexdigest() if hasattr(hashlib, "file_digest") else \
                hashlib.sha256(fh.read()).hexdigest()
        with open(tmp_json, "w") as fh:
            json.dump(dict(summary, npz=os.path.basename(path), npz_sha256=digest), fh, indent=2)


def load_run(path):
    """(arrays, summary) of a `spikeforge simulate` result .npz; when its .json is beside it, the two must belong
    together (the .json's npz_sha256 is the .npz's hash), else a UserError says the pair is mixed."""
    import hashlib

    import numpy as np

    path = os.fspath(path)
    with open(path, "rb") as fh:
        digest = hashlib.sha256(fh.read()).hexdigest()
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    summary = json.loads(str(arrays.pop("summary")))
    json_path = os.path.splitext(path)[0] + ".json"
    if os.path.exists(json_path):
        with open(json_path) as fh:
            recorded = json.load(fh)
        if recorded.get("npz_sha256") != digest or recorded.get("run_id") != summary.get("run_id"):
            raise UserError(f"{json_path} does not belong to {path} (another run's summary: a run was stopped "
                            f"between writing the two); {path} holds its own summary, or run simulate again")
    return arrays, summary
