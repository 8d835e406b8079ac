"""The torch backend's ordered currents are the engine's sums bit for bit, where a matrix product is not."""
import numpy as np
import pytest
import torch

from spikeforge.simulator import torch_triton
from spikeforge.simulator.torch_ordered import OrderedDense, OrderedPointwise, OrderedSparse, source_rank

# on a GPU with Triton the sums run as kernels (torch_triton); TRITON_INTERPRET=1 runs those kernels on the CPU
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
# where torch_triton's kernels run: a GPU, or the CPU with TRITON_INTERPRET=1 (`make kernel-check`)
KERNEL_DEVICES = [d for d in DEVICES if torch_triton.available(d)]


def _wild(rng, shape, zeros=0.3):
    """Values spanning 2^-30..2^30 with both signs and some zeros: sums of them round differently by order."""
    v = rng.choice([-1.0, 1.0], shape) * 2.0 ** rng.integers(-30, 30, shape) * rng.random(shape)
    v[rng.random(shape) < zeros] = 0.0
    return v


def _engine_sum(bias, terms):
    """The engine's current: from the bias, + w·x per nonzero event, events in order (terms: [(x, w)] per target)."""
    out = []
    for b, row in zip(bias, terms):
        acc = float(b)
        for x, w in row:
            if x != 0.0:
                acc += w * x
        out.append(acc)
    return np.array(out)


@pytest.mark.parametrize("device", DEVICES)
def test_dense_sum_follows_the_engine_order_bit_for_bit(device):
    rng = np.random.default_rng(1)
    n_src, n_tgt, batch = 40, 7, 5
    perm = rng.permutation(n_src)  # engine position -> canonical source
    w, x, bias = _wild(rng, (n_tgt, n_src), 0.0), _wild(rng, (batch, n_src)), _wild(rng, n_tgt, 0.0)
    ordered = OrderedDense(torch.as_tensor(w, device=device), source_rank(perm))
    cur = torch.as_tensor(bias, device=device).expand(batch, n_tgt).clone()
    ordered.accumulate(cur, torch.as_tensor(x, device=device))
    cur = cur.cpu()
    want = np.stack([_engine_sum(bias, [[(x[b, i], w[j, i]) for i in perm] for j in range(n_tgt)])
                     for b in range(batch)])
    assert np.array_equal(cur.numpy(), want)
    assert not np.array_equal(x @ w.T + bias, want)  # the data does tell summation orders apart


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shared_order", [True, False])
def test_pointwise_sum_follows_the_engine_order_per_row(shared_order, device):
    rng = np.random.default_rng(2)
    rows, d_in, d_out, batch = 6, 24, 5, 3
    if shared_order:  # a core per channel block: every row sees its channels in one order
        chan = rng.permutation(d_in)
        perm = np.array([r * d_in + c for c in chan for r in range(rows)])
    else:
        perm = rng.permutation(rows * d_in)
    w, x = _wild(rng, (d_out, d_in), 0.0), _wild(rng, (batch, rows * d_in))
    ordered = OrderedPointwise(torch.as_tensor(w, device=device), source_rank(perm), rows)
    cur = torch.zeros(batch, rows * d_out, dtype=torch.float64, device=device)
    ordered.accumulate(cur, torch.as_tensor(x, device=device))
    cur = cur.cpu()
    for b in range(batch):
        for r in range(rows):
            seq = [e - r * d_in for e in perm if e // d_in == r]  # this row's channels in engine order
            want = _engine_sum(np.zeros(d_out), [[(x[b, r * d_in + c], w[j, c]) for c in seq]
                                                 for j in range(d_out)])
            assert np.array_equal(cur.numpy()[b, r * d_out:(r + 1) * d_out], want)


@pytest.mark.parametrize("device", DEVICES)
def test_sparse_sum_follows_the_engine_order_with_duplicates_in_file_order(device):
    rng = np.random.default_rng(3)
    n_src, n_tgt, batch, n_syn = 30, 9, 4, 120
    sources, targets = rng.integers(0, n_src, n_syn), rng.integers(0, n_tgt, n_syn)
    order = np.lexsort((targets, sources))  # a file lists synapses by source (CSR rows)
    sources, targets = sources[order], targets[order]
    weights = _wild(rng, n_syn, 0.0)
    perm = rng.permutation(n_src)
    x = _wild(rng, (batch, n_src))
    ordered = OrderedSparse(sources, targets, weights, source_rank(perm), n_tgt, device)
    cur = torch.zeros(batch, n_tgt, dtype=torch.float64, device=device)
    ordered.accumulate(cur, torch.as_tensor(x, device=device))
    cur = cur.cpu()
    for b in range(batch):
        terms = [[] for _ in range(n_tgt)]
        for i in perm:  # events in engine order, each walking its synapses in file order
            for k in np.flatnonzero(sources == i):
                terms[targets[k]].append((x[b, i], weights[k]))
        assert np.array_equal(cur.numpy()[b], _engine_sum(np.zeros(n_tgt), terms))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_division_by_a_number_is_correctly_rounded_on_the_gpu():
    """The backend's quotients (EC means S/t, group thresholds θ·j/τ) equal the engine's on a GPU, where a tensor
    divided by a Python number is a multiplication by its reciprocal."""
    from spikeforge.simulator.torch_backend import _div

    x = np.random.default_rng(0).normal(size=100_000)
    for d in (3.0, 5, 7.0, 10.0):
        got = _div(torch.as_tensor(x, device="cuda"), d).cpu().numpy()
        assert np.array_equal(got, x / d)


@pytest.mark.parametrize("device", KERNEL_DEVICES or [pytest.param("cuda", marks=pytest.mark.skip(
    reason="no CUDA device with Triton and TRITON_INTERPRET unset: the kernels cannot run"))])
def test_ordered_kernels_equal_the_term_by_term_sums_at_size(device):
    """The Triton kernels (no fused multiply-add) against the loop of separate multiply and add kernels, on blocks
    larger than one program's tile, with ragged edges."""
    rng = np.random.default_rng(5)
    n_src, n_tgt, rows, batch = 300, 97, 13, 131
    perm = rng.permutation(rows * n_src)
    cases = [(OrderedDense, (_wild(rng, (n_tgt, n_src), 0.0), source_rank(perm[perm < n_src])), n_src, n_tgt),
             (OrderedPointwise, (_wild(rng, (n_tgt, n_src), 0.0), source_rank(perm), rows), rows * n_src,
              rows * n_tgt)]
    sources, targets = rng.integers(0, n_src, 5000), rng.integers(0, n_tgt, 5000)
    sparse = OrderedSparse(sources, targets, _wild(rng, 5000, 0.0), source_rank(rng.permutation(n_src)), n_tgt,
                           device)
    sums = [(sparse, n_src, n_tgt)]
    for cls, (w, *rest), n_in, n_out in cases:
        sums.append((cls(torch.as_tensor(w, device=device), *rest), n_in, n_out))
    for ordered, n_in, n_out in sums:
        x = torch.as_tensor(_wild(rng, (batch, n_in)), device=device)
        start = torch.as_tensor(_wild(rng, (batch, n_out), 0.0), device=device)
        assert ordered.kernel
        got = start.clone()
        ordered.accumulate(got, x)
        ordered.kernel = False
        want = start.clone()
        ordered.accumulate(want, x)
        assert torch.equal(got, want), type(ordered).__name__
