"""Datasets that need no download: scikit-learn's digits (shipped with the package)."""
from __future__ import annotations

import numpy as np
import torch


def load_digits_split(test_fraction=0.25, seed=0):
    """Digits as float tensors (N, 1, 8, 8) scaled to [0, 1], split into train and test."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images / 16.0, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(d.target, dtype=torch.int64)
    perm = np.random.default_rng(seed).permutation(len(x))
    n_test = int(len(x) * test_fraction)
    test, train = perm[:n_test], perm[n_test:]
    return x[train], y[train], x[test], y[test]


def load_digits_xylo_split(test_fraction=0.25, seed=0):
    """The digits task cut to Xylo Audio 2's size (16 input channels, 8 output neurons): digits 0-7 only, each
    8x8 image averaged over 2x2 blocks to 4x4 (N, 1, 4, 4), in [0, 1]; the same split rule as load_digits_split."""
    xtr, ytr, xte, yte = load_digits_split(test_fraction, seed)
    out = []
    for x, y in ((xtr, ytr), (xte, yte)):
        keep = y < 8
        out += [torch.nn.functional.avg_pool2d(x[keep], 2), y[keep]]
    return tuple(out)


# DVS-style events from static images: a sensor one pixel taller and wider than the image watches it (top-left
# corner at the sensor's origin) make four one-pixel moves (right, down, left, up: back where it started), each
# lasting move_us microseconds. In move k a pixel whose intensity changes by d emits n = floor(|d| / threshold)
# events of polarity 1 (d > 0) or 0 (d < 0), at times k * move_us + (j + 1) * move_us / (n + 1), j < n, rounded to
# whole microseconds. No randomness: the same images give the same events. A stand-in for a recording (linear, not
# log, intensity; no noise, no refractory time), not a sensor model.
SACCADE = ((0, 0), (0, 1), (1, 1), (1, 0), (0, 0))  # (dy, dx) of the image at the start of each move, then the end


def digits_events(images, threshold=0.25, move_us=1000):
    """(samples, sensor shape): per image (N, [1,] H, W) with values in [0, 1], a dict of event fields t, x, y, p
    (int64) by the DVS-style rule above; the sensor is (H + 1, W + 1)."""
    images = np.asarray(images, dtype=np.float64)
    if images.ndim == 4 and images.shape[1] == 1:
        images = images[:, 0]
    if images.ndim != 3:
        raise ValueError(f"images must be (N, H, W) or (N, 1, H, W), got shape {images.shape}")
    if not threshold > 0 or not move_us > 0:
        raise ValueError(f"threshold and move_us must be > 0, got {threshold!r} and {move_us!r}")
    n, h, w = images.shape
    views = np.zeros((len(SACCADE), n, h + 1, w + 1))
    for k, (dy, dx) in enumerate(SACCADE):
        views[k, :, dy:dy + h, dx:dx + w] = images
    samples = []
    for i in range(n):
        fields = {"t": [], "x": [], "y": [], "p": []}
        for k in range(len(SACCADE) - 1):
            d = views[k + 1, i] - views[k, i]
            count = np.floor(np.abs(d) / threshold + 1e-9).astype(np.int64)
            ys, xs = np.nonzero(count)
            c = count[ys, xs]
            j = np.concatenate([np.arange(m) for m in c]) if len(c) else np.zeros(0, np.int64)
            reps = np.repeat(np.arange(len(c)), c)
            fields["t"].append(np.rint(k * move_us + (j + 1) * move_us / (c[reps] + 1)).astype(np.int64))
            fields["x"].append(xs[reps])
            fields["y"].append(ys[reps])
            fields["p"].append((d[ys, xs] > 0).astype(np.int64)[reps])
        samples.append({key: np.concatenate(v).astype(np.int64) for key, v in fields.items()})
    return samples, (h + 1, w + 1)
