"""Address-event streams binned into per-step frames, and event files.

An event stream of one sample has the fields t (timestamps, e.g. microseconds; sorted or not) and either
x, y, p (pixel column, row, polarity) or address (a flat index into the input, C order).

Binning rule (one sample, T steps):
- window: [t0, t0 + T * dt) with dt given; event k goes to step floor((t - t0) / dt); events outside the window
  are left out (counted in `dropped`). t0 default: the sample's first event; dt default: the window
  [t0, last event] cut into T equal steps, the last step closed (step min(floor(T (t - t0) / span), T - 1); every
  event from t0 on lands in a step, events before a given t0 are left out).
- layout by the input population's shape: (2, H, W): polarity is the channel (p > 0: channel 1 "on", p <= 0:
  channel 0 "off"); (1, H, W) or (H, W): both polarities summed. (t, address) streams fit any input shape.
- a frame holds counts: n events of one address in one step give the value n. The simulator treats a count as n
  spikes of that input in that step (`run(..., spikes=True)`): n x weight is delivered and n synaptic operations
  are counted per synapse (not a MAC), as n address events would cost on hardware.

Event files (.npz, or HDF5 .h5 / .hdf5 with datasets at the root): arrays t, x, y, p (or t, address) holding the
events of all samples, and `sample` (each event's sample index; absent: one sample); labels, if any, in another
array (a different name than the fields, e.g. `label`); an optional scalar `n_samples` keeps trailing samples
without events (`save_events` writes it).
"""
from __future__ import annotations

import os

import numpy as np

from spikeforge.errors import UserError, size_text

__all__ = ["bin_events", "bin_samples", "load_events", "save_events"]


def _fields(events, source):
    """{'t', 'x', 'y', 'p'} or {'t', 'address'} 1-d arrays of one length from a dict / structured array."""
    names = events.dtype.names if isinstance(events, np.ndarray) else tuple(events)
    if names is None or "t" not in names:
        raise UserError(f"{source}: no field 't' (an event stream has fields t, x, y, p or t, address)")
    keys = ("t", "address") if "address" in names else ("t", "x", "y", "p")
    missing = [k for k in keys if k not in names]
    if missing:
        raise UserError(f"{source}: no field {missing[0]!r} (an event stream has fields t, x, y, p or t, address)")
    out = {k: np.asarray(events[k]).reshape(-1) for k in keys}
    n = len(out["t"])
    for k, v in out.items():
        if len(v) != n:
            raise UserError(f"{source}: field {k!r} has {len(v)} values for {n} timestamps")
        if v.size and not np.isfinite(v.astype(np.float64)).all():
            raise UserError(f"{source}: field {k!r} has NaN or inf values")
    if n and out["t"].min() < 0:
        i = int(np.argmin(out["t"]))
        raise UserError(f"{source}: field 't' has a negative time ({out['t'][i]} at event {i})")
    return out


def _addresses(ev, shape, source):
    """Flat input index of every event, checked against the input shape."""
    size = int(np.prod(shape))
    if "address" in ev:
        a = ev["address"]
        _integral(a, "address", source)
        bad = np.flatnonzero((a < 0) | (a >= size))
        if bad.size:
            raise UserError(f"{source}: field 'address' has {a[bad[0]]} at event {bad[0]}, outside the input of "
                            f"{size} neurons (shape {tuple(shape)})")
        return a.astype(np.int64)
    if len(shape) == 3 and shape[0] in (1, 2):
        channels, h, w = shape
    elif len(shape) == 2:
        channels, (h, w) = 1, shape
    else:
        raise UserError(f"{source}: (x, y, p) events need an input of shape (2, H, W), (1, H, W) or (H, W), but it "
                        f"is {tuple(shape)}; give the events as (t, address) instead")
    for name, lim, what in (("x", w, "width"), ("y", h, "height")):
        v = ev[name]
        _integral(v, name, source)
        bad = np.flatnonzero((v < 0) | (v >= lim))
        if bad.size:
            raise UserError(f"{source}: field {name!r} has {v[bad[0]]} at event {bad[0]}, outside the input's "
                            f"{what} {lim} (input shape {tuple(shape)})")
    p = ev["p"]
    bad = np.flatnonzero(~np.isin(p, (-1, 0, 1)))
    if bad.size:
        raise UserError(f"{source}: field 'p' has {p[bad[0]]} at event {bad[0]}; polarities are 0 / 1 or -1 / 1")
    c = (p > 0).astype(np.int64) if channels == 2 else 0
    return (c * h + ev["y"].astype(np.int64)) * w + ev["x"].astype(np.int64)


def _integral(v, name, source):
    if v.size and not np.issubdtype(v.dtype, np.integer) and not (v == np.round(v)).all():
        raise UserError(f"{source}: field {name!r} must hold integers")


def bin_events(events, shape, T, dt=None, t0=None, source="events"):
    """(frames (T, *shape) float64 event counts, dropped) of one sample's events (a dict or structured array of
    t, x, y, p or t, address) by the module's binning rule; dropped: events outside the window."""
    if isinstance(T, bool) or not isinstance(T, (int, np.integer)) or T < 1:
        raise ValueError(f"T must be an integer >= 1, got {T!r}")
    if dt is not None and not dt > 0:
        raise ValueError(f"dt must be > 0, got {dt!r}")
    shape = tuple(int(s) for s in shape)
    ev = _fields(events, source)
    addr = _addresses(ev, shape, source)
    size = int(np.prod(shape))
    frames = np.zeros(T * size)
    t = ev["t"].astype(np.float64)
    if not len(t):
        return frames.reshape(T, *shape), 0
    start = float(t.min()) if t0 is None else float(t0)
    if not np.isfinite(start):
        raise ValueError(f"t0 must be finite, got {t0!r}")
    if dt is None:  # [t0, last event] in T steps; events before t0 fall outside
        span = float(t.max()) - start
        step = np.minimum(np.floor(T * (t - start) / span), T - 1) if span > 0 else np.zeros(len(t))
        step[t < start] = -1
    else:
        step = np.floor((t - start) / dt)
    keep = (step >= 0) & (step < T)
    idx = step[keep].astype(np.int64) * size + addr[keep]
    frames += np.bincount(idx, minlength=T * size)
    return frames.reshape(T, *shape), int((~keep).sum())


def bin_samples(samples, shape, T, dt=None, t0=None, source="events"):
    """(frames (B, T, *shape), dropped (B,)) of a list of per-sample event streams (see bin_events)."""
    out = np.zeros((len(samples), T, *shape))
    dropped = np.zeros(len(samples), np.int64)
    for b, ev in enumerate(samples):
        out[b], dropped[b] = bin_events(ev, shape, T, dt, t0, f"{source} (sample {b})")
    return out, dropped


# Host memory a sample takes in the list load_events returns, beyond its events: a dict of four small arrays.
SAMPLE_OVERHEAD_BYTES = 1024


def load_events(path, label_key=None, max_bytes=None):
    """(samples, labels) of an event file: samples a list of per-sample dicts of the event fields; labels the
    integer array `label_key` (None: no labels). Errors name the file and the field. max_bytes bounds what the
    file's arrays declare and what the samples will take (default: half the machine's memory), checked before the
    arrays are read and before the samples are built."""
    from .arrayfiles import default_memory_bound, read_arrays

    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(2, "No such file or directory", path)
    bound = default_memory_bound() if max_bytes is None else int(max_bytes)
    arrays = read_arrays(path, None, bound, what="array")
    names = ("t", "address") if "address" in arrays else ("t", "x", "y", "p")
    ev = _fields({k: arrays[k] for k in names if k in arrays}, path)
    n = len(ev["t"])
    sample = arrays.get("sample")
    labels = None
    if label_key is not None:
        if label_key not in arrays:
            raise UserError(f"{path}: no array {label_key!r} (has {sorted(arrays)})")
        labels = np.asarray(arrays[label_key])
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
            raise UserError(f"{path}: labels {label_key!r} must be a 1-d integer array, got {labels.dtype} of shape "
                            f"{labels.shape}")
    if sample is None:
        n_samples = 1
        sample = np.zeros(n, np.int64)
    else:
        sample = np.asarray(sample).reshape(-1)
        if len(sample) != n or not np.issubdtype(sample.dtype, np.integer) or (n and sample.min() < 0):
            raise UserError(f"{path}: field 'sample' must hold a non-negative integer sample index per event "
                            f"({n} events)")
        n_samples = int(sample.max()) + 1 if n else 0
    if "n_samples" in arrays:  # save_events records it: trailing samples without events are kept
        declared = np.asarray(arrays["n_samples"]).reshape(-1)
        if declared.size != 1 or declared.dtype.kind not in "iu" or declared[0] < 0:
            raise UserError(f"{path}: 'n_samples' must be one non-negative integer, got {arrays['n_samples']!r}")
        n_samples = max(n_samples, int(declared[0]))
    if labels is not None:
        if len(labels) < n_samples:
            raise UserError(f"{path}: {len(labels)} labels in {label_key!r} for {n_samples} samples")
        n_samples = len(labels)
    if n_samples == 0 or n == 0:
        raise UserError(f"{path}: no events")
    if n_samples * SAMPLE_OVERHEAD_BYTES > bound:
        raise UserError(f"{path}: declares {n_samples} samples, which need more than the memory bound "
                        f"{size_text(bound)} (--max-memory raises it)")
    order = np.argsort(sample, kind="stable")
    bounds = np.searchsorted(sample[order], np.arange(n_samples + 1))
    samples = [{k: v[order[a:b]] for k, v in ev.items()} for a, b in zip(bounds[:-1], bounds[1:])]
    return samples, labels


def save_events(path, samples, labels=None, label_key="label"):
    """Write per-sample event streams (dicts of t, x, y, p or t, address) to an .npz or HDF5 event file, atomically
    (the .npz name is kept as given: numpy's savez would add .npz to another name)."""
    keys = ("t", "address") if "address" in samples[0] else ("t", "x", "y", "p")
    arrays = {k: np.concatenate([np.asarray(s[k]).reshape(-1) for s in samples]) for k in keys}
    arrays["n_samples"] = np.array(len(samples))
    arrays["sample"] = np.repeat(np.arange(len(samples)), [len(np.asarray(s["t"]).reshape(-1)) for s in samples])
    if labels is not None:
        arrays[label_key] = np.asarray(labels)
    from .atomic import atomic_output, write_hdf5

    path = os.fspath(path)
    if path.endswith((".h5", ".hdf5")):
        write_hdf5(path, lambda f: [f.create_dataset(k, data=v) for k, v in arrays.items()])
    else:
        with atomic_output(path, suffix=".npz") as tmp, open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)
