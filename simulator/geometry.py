"""Shapes and synapse counts implied by projection parameters (numpy only)."""
from __future__ import annotations

import numpy as np


def conv_output_hw(in_hw, kernel, stride, padding):
    """Output (H, W) of a 2D convolution / pooling window without dilation."""
    return tuple((in_hw[d] + 2 * padding[d] - kernel[d]) // stride[d] + 1 for d in range(2))


def conv_taps_per_input(in_len, out_len, k, stride, pad):
    """For each input coordinate along one axis: how many (output, tap) pairs reach it."""
    counts = np.zeros(in_len, np.int64)
    for o in range(out_len):
        for t in range(k):
            i = o * stride - pad + t
            if 0 <= i < in_len:
                counts[i] += 1
    return counts


def conv_taps_per_output(in_len, out_len, k, stride, pad):
    """For each output coordinate along one axis: how many kernel taps fall inside the input."""
    o = np.arange(out_len)[:, None] * stride - pad + np.arange(k)[None, :]
    return ((o >= 0) & (o < in_len)).sum(axis=1).astype(np.int64)


def projection_kernel(proj, source_shape, target_shape):
    """(kernel, stride, padding, channels-in-per-group, channels-out-per-group) of a windowed projection."""
    if proj.kind == "conv2d":
        cout, cin_g, kh, kw = proj.weight.shape
        return (kh, kw), tuple(proj.stride), tuple(proj.padding), cin_g, cout // proj.groups
    # avgpool / maxpool are depthwise windows: one input channel feeds the same output channel
    return tuple(proj.kernel), tuple(proj.stride), tuple(proj.padding), 1, 1


def synapses_per_source(proj, source_shape, target_shape) -> np.ndarray:
    """Number of synapses (fan-out) of every source neuron, in C-order source indexing."""
    n_src = int(np.prod(source_shape))
    n_tgt = int(np.prod(target_shape))
    if proj.kind == "dense":
        return np.full(n_src, n_tgt, np.int64)
    if proj.kind == "sparse":
        return np.diff(proj.indptr).astype(np.int64)
    if proj.kind == "identity":
        return np.ones(n_src, np.int64)
    if proj.kind == "pointwise":  # input channel c of every row reaches the nonzero weights of column c
        return np.tile(np.count_nonzero(proj.weight, axis=0).astype(np.int64), n_src // proj.weight.shape[1])
    if proj.kind == "matmul_a":  # each element of A multiplies one row of B (N products); B's side adds none
        return np.full(n_src, target_shape[-1], np.int64)
    if proj.kind == "matmul_b":
        return np.zeros(n_src, np.int64)
    (kh, kw), (sh, sw), (ph, pw), _, cout_g = projection_kernel(proj, source_shape, target_shape)
    c, h, w = source_shape
    _, oh, ow = target_shape
    ty = conv_taps_per_input(h, oh, kh, sh, ph)
    tx = conv_taps_per_input(w, ow, kw, sw, pw)
    per_pos = np.outer(ty, tx).reshape(-1) * cout_g
    return np.tile(per_pos, c)


def synapse_count(proj, source_shape, target_shape) -> int:
    return int(synapses_per_source(proj, source_shape, target_shape).sum())


def explicit_synapses(proj, source_shape, target_shape):
    """Every synapse of a dense / sparse / identity / pointwise / conv2d / avgpool projection as
    (source, target, weight)
    arrays in C-order neuron indexing, for exporters to formats without shared kernels (SANA-FE, NIR)."""
    n_src = int(np.prod(source_shape))
    n_tgt = int(np.prod(target_shape))
    if proj.kind == "dense":
        t, s = np.meshgrid(np.arange(n_tgt), np.arange(n_src), indexing="ij")
        return s.reshape(-1), t.reshape(-1), np.asarray(proj.weight, np.float64).reshape(-1)
    if proj.kind == "sparse":
        s = np.repeat(np.arange(n_src), np.diff(proj.indptr))
        return s, np.asarray(proj.indices, np.int64), np.asarray(proj.weight, np.float64)
    if proj.kind == "identity":
        return np.arange(n_src), np.arange(n_src), np.ones(n_src)
    if proj.kind == "pointwise":  # the nonzero weights, repeated for every row
        w = np.asarray(proj.weight, np.float64)
        d_out, d_in = w.shape
        o, c = np.nonzero(w)
        rows = np.arange(n_src // d_in)[:, None]
        return ((rows * d_in + c).reshape(-1), (rows * d_out + o).reshape(-1),
                np.tile(w[o, c], len(rows)))
    if proj.kind not in ("conv2d", "avgpool"):
        raise ValueError(f"projection {proj.name!r}: kind {proj.kind!r} has no synapse list")
    (kh, kw), (sh, sw), (ph, pw), cin_g, cout_g = projection_kernel(proj, source_shape, target_shape)
    cin, h, w = source_shape
    cout, ho, wo = target_shape
    if proj.kind == "conv2d":
        kernel = np.asarray(proj.weight, np.float64)
    else:
        kernel = np.full((cout, 1, kh, kw), 1.0 / (kh * kw))
    o, ci, ky, kx, oy, ox = np.meshgrid(np.arange(cout), np.arange(cin_g), np.arange(kh), np.arange(kw),
                                        np.arange(ho), np.arange(wo), indexing="ij")
    y = oy * sh - ph + ky
    x = ox * sw - pw + kx
    ok = (y >= 0) & (y < h) & (x >= 0) & (x < w)
    c = (o // cout_g) * cin_g + ci
    src = (c * h + y) * w + x
    tgt = (o * ho + oy) * wo + ox
    return src[ok].astype(np.int64), tgt[ok].astype(np.int64), kernel[o, ci, ky, kx][ok]


def synapse_matrix(proj, source_shape, target_shape):
    """The projection as a scipy.sparse CSR matrix (target size, source size), repeated synapses summed: for
    exporters that need one linear map (NIR) and for composing chains of linear layers."""
    import scipy.sparse as sp

    s, t, w = explicit_synapses(proj, source_shape, target_shape)
    shape = (int(np.prod(target_shape)), int(np.prod(source_shape)))
    return sp.csr_matrix((w, (t, s)), shape=shape)


def sparse_projection(name, source, target, matrix):
    """A `sparse` projection (CSR by source neuron, zeros dropped) holding a scipy matrix (target, source)."""
    from .network import Projection

    cols = matrix.T.tocsr()
    cols.eliminate_zeros()
    cols.sort_indices()
    return Projection(name, "sparse", source, target, cols.data.astype(np.float32),
                      indptr=cols.indptr.astype(np.int64), indices=cols.indices.astype(np.int32))
