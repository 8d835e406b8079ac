"""Synapse memory as a chip with per-axon synapse lists encodes it (Loihi; sources in docs/LOIHI_SYNAPSE_MEMORY.md).

A core's synapse memory is words of `synapse_word_bits` bits. Every input axon points at a list of synapses
(one source neuron's synapses into the core); a list is a chain of entries of at most `synapses_per_list_entry`
synapses, each entry with a `list_entry_header_bits` header, and is rounded up to whole words:

    sparse  bits = entries * header + n * (weight bits + index bits)      (any target set)
    dense   bits = entries * (header + index bits) + n * weight bits      (contiguous targets: a start index)
    words   = ceil(bits / word bits),   entries = ceil(n / synapses per entry)

index bits = max(`min_index_bits`, ceil(log2(neurons on the core))). A dense projection's lists target
contiguous neurons (the cheaper of the two encodings); every other list uses the sparse one.

Convolutions share lists (`conv_list_sharing`): Loihi has no "kernel stored once" primitive, but input axons of
one channel and input row whose columns see the same pattern of kernel columns point at one list, each with its
own compartment offset (cxBase). A core holding a box of output rows x columns x channels stores, per input
channel, per input row touching the box and per distinct column pattern, one list of (kernel rows hitting the
box from that input row) x (kernel columns of the pattern) x (output channels of the box fed by that input
channel) synapses, laid out in interleaved destination groups as Intel's compiler does (`shared_conv_lists`);
the groups per core are limited (`cx_base_groups`, a chip bug the compiler works around). What this leaves out
(the compiler's extra word, shared-sign entry splits, per-format index widths) is listed in
docs/LOIHI_SYNAPSE_MEMORY.md.
"""
from __future__ import annotations

import functools
import math
from collections import Counter
from dataclasses import dataclass

import numpy as np

from spikeforge.simulator.geometry import projection_kernel


def uses_lists(limits) -> bool:
    """Whether the target encodes synapses as per-axon lists in words (else bits per synapse x synapses)."""
    return bool(limits.get("synapse_word_bits", 0))


def index_bits(limits, neurons) -> int:
    """Bits of a target index into a core of `neurons` neurons."""
    return max(int(limits.get("min_index_bits", 0)), math.ceil(math.log2(max(2, int(neurons)))))


def list_words(n, limits, idx_bits, contiguous=False):
    """Words of lists of n synapses each (n: int or array); 0 for an empty list."""
    n = np.asarray(n, np.int64)
    w = int(limits["weight_bits"])
    entries = -(-n // int(limits["synapses_per_list_entry"]))
    header = int(limits["list_entry_header_bits"])
    bits = entries * header + n * (w + idx_bits)
    if contiguous:
        bits = np.minimum(bits, entries * (header + idx_bits) + n * w)
    word = int(limits["synapse_word_bits"])
    return -(-bits // word)


@dataclass(frozen=True)
class SharedLists:
    """The shared lists of one convolution into one core: words, compartments as the compiler lays them out
    (interleaved destination groups, padded to the largest), and the number of destination groups."""

    words: int
    compartments: int
    groups: int


def shared_conv_lists(proj, source_shape, target_shape, box, limits) -> SharedLists:
    """Shared lists of a conv2d / avgpool projection into a core holding `box` (c0, c1, h0, h1, w0, w1) of its
    (C, H, W) target, laid out as Intel's compiler does for Loihi (module docstring; docs/LOIHI_SYNAPSE_MEMORY.md):

    - destination groups: input columns are walked left to right; a column whose first output column starts
      where the last group ended opens a new group (its columns' compartments); the core's compartments are
      interleaved by group (compartment j of group g at g + G·j), so every group takes the largest group's size;
    - a column's list pattern is its (kernel column, interleaved offset from its group base) pairs: columns at the
      same place relative to their group share lists; per input channel, pattern and input row reaching the box
      one list of (kernel rows from that row) x (kernel columns) x (output channels fed) synapses, every list of a
      pattern padded to its longest (the rows share one layout);
    - target indices are offsets from the group base divided by G (bits for the largest).

    Boxes of an ungrouped convolution that differ only in their first channel share one layout (memoized: a
    ResNet-50 layer has thousands of boxes in tens of spatial places)."""
    (kh, kw), (sh, sw), (ph, pw), cin_g, cout_g = projection_kernel(proj, source_shape, target_shape)
    c0, c1, h0, h1, w0, w1 = (int(v) for v in box)
    if cin_g == int(source_shape[0]):  # one group: every input channel feeds all c1 - c0 channels of the box
        c0, c1 = 0, c1 - c0
    kernel = tuple(int(v) for v in (kh, kw, sh, sw, ph, pw, cin_g, cout_g))
    return _shared_lists(kernel, tuple(int(v) for v in source_shape), (c0, c1, h0, h1, w0, w1),
                         tuple(sorted((k, limits.get(k, 0)) for k in _LIST_LIMITS)))


_LIST_LIMITS = ("weight_bits", "synapses_per_list_entry", "list_entry_header_bits", "synapse_word_bits",
                "min_index_bits")


@functools.lru_cache(maxsize=1 << 16)
def _shared_lists(kernel, source_shape, box, limit_items) -> SharedLists:
    """shared_conv_lists of one kernel geometry, source shape, box and list-encoding limits."""
    kh, kw, sh, sw, ph, pw, cin_g, cout_g = kernel
    limits = dict(limit_items)
    c_in, h_in, w_in = source_shape
    c0, c1, h0, h1, w0, w1 = box
    rows_box, cols_box, chans_box = h1 - h0, w1 - w0, c1 - c0
    reach = []  # per input column: [(kernel column, local output column)]
    for wi in range(w_in):
        reach.append([(n, (wi + pw - n) // sw - w0) for n in range(kw)
                      if (wi + pw - n) % sw == 0 and w0 <= (wi + pw - n) // sw < w1])
    sizes, base_of, end, base = [], [], 0, -1  # group sizes (compartments), the group base of each input column
    for wi, hits in enumerate(reach):
        if hits:
            lo, hi = rows_box * min(o for _, o in hits), rows_box * (max(o for _, o in hits) + 1)
            if lo == end:
                sizes.append(hi - lo)
                end, base = hi, base + 1
            elif wi + 1 == w_in and hi > end:
                sizes.append(hi - end)
                end = hi
        base_of.append(base)
    if end < rows_box * cols_box:  # columns no group covered (strides that skip): one more group
        sizes.append(rows_box * cols_box - end)
    g = len(sizes)
    starts = np.concatenate([[0], np.cumsum(sizes)])
    interleaved = max(sizes) * g  # compartments of one output channel as laid out

    def offset(col):  # interleaved compartment of (row 0, local column col)
        p = rows_box * col
        grp = int(np.searchsorted(starts, p, side="right") - 1)
        return grp + g * (p - int(starts[grp]))

    patterns = {}
    for wi, hits in enumerate(reach):
        if hits:
            key = tuple(sorted((n, offset(o) - base_of[wi]) for n, o in hits))
            patterns[key] = len(hits)
    top = max(i for key in patterns for _, i in key) + g * (rows_box - 1) + (chans_box - 1) * interleaved
    idx_bits = max(int(limits.get("min_index_bits", 0)), math.ceil(math.log2(top // max(1, g) + 1)))
    rows = taps_reaching(h_in, kh, sh, ph, h0, h1)
    rows = rows[rows > 0]
    fed = channels_fed(c_in, cin_g, cout_g, c0, c1)
    words = 0
    for cols in patterns.values():
        for f, n_channels in Counter(fed[fed > 0].tolist()).items():
            longest = int(list_words(rows.max(initial=0) * cols * f, limits, idx_bits)) if rows.size else 0
            words += n_channels * len(rows) * longest
    return SharedLists(words, interleaved * chans_box, g)


def channels_fed(c_in, cin_g, cout_g, c0, c1) -> np.ndarray:
    """(c_in,) output channels among c0..c1-1 each input channel feeds (grouped convolution: its group's)."""
    group = np.arange(c_in) // cin_g
    return np.clip(np.minimum((group + 1) * cout_g, c1) - np.maximum(group * cout_g, c0), 0, None)


def taps_reaching(n_in, k, stride, pad, lo, hi) -> np.ndarray:
    """(n_in,) for each input position, the kernel taps along one axis whose output position is in lo..hi-1."""
    i = np.arange(n_in)[:, None] + pad - np.arange(k)[None, :]
    out = i // stride
    return ((i % stride == 0) & (out >= lo) & (out < hi) & (i >= 0)).sum(1)
