"""The exact torch backend's convolutions: im2col GEMM equals torch's conv; sliced spike-level convolutions are exact
per slice and equal the float64 convolution to the last bits; converted CNNs take the sliced path."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_torch_ordered import KERNEL_DEVICES

from spikeforge import simulator
from spikeforge.simulator import torch_backend, torch_conv, torch_triton
from spikeforge.simulator.torch_conv import SlicedConv, conv_gemm

CASES = [  # (channels in, channels out, groups, kernel, stride, padding, size)
    (3, 8, 1, 3, 1, 1, 9),
    (3, 4, 1, 7, 2, 3, 11),
    (2, 3, 1, 3, 3, 4, 5),  # padding wider than a kernel offset sees: whole rows of zeros
    (4, 6, 2, 3, 2, 1, 8),
    (6, 6, 6, 3, 1, 0, 7),
    (5, 7, 1, (1, 3), (2, 1), (0, 2), 6),
]


def _case(rng, c, o, g, k, size, levels):
    k = (k, k) if isinstance(k, int) else k
    w = torch.as_tensor(rng.standard_normal((o, c // g, *k)).astype(np.float32))
    x = torch.as_tensor(rng.integers(0, levels + 1, (5, c, size, size)).astype(np.float64))
    return w, x


@pytest.mark.parametrize("c,o,g,k,stride,padding,size", CASES)
@pytest.mark.parametrize("sub_batches", [False, True])
@pytest.mark.parametrize("im2col", ["strided", "slices"])
def test_conv_gemm_equals_torch_conv2d(c, o, g, k, stride, padding, size, sub_batches, im2col, monkeypatch):
    monkeypatch.setattr(torch_conv, "IM2COL", im2col)
    if sub_batches:  # one sample per sub-batch
        monkeypatch.setattr(torch_conv, "UNFOLD_BYTES", 1)
    rng = np.random.default_rng(0)
    w, x = _case(rng, c, o, g, k, size, 1)
    x = x + torch.as_tensor(rng.standard_normal(x.shape))
    stride = (stride, stride) if isinstance(stride, int) else stride
    padding = (padding, padding) if isinstance(padding, int) else padding
    ref = F.conv2d(x, w.double(), stride=stride, padding=padding, groups=g)
    got = conv_gemm(x, w.double(), stride, padding, g)
    assert got.shape == ref.shape
    np.testing.assert_allclose(got.numpy(), ref.numpy(), rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("c,o,g,k,stride,padding,size", CASES)
@pytest.mark.parametrize("max_level,payload", [(1, 0.37), (4, 1.9 / 4)])
def test_sliced_conv_matches_float64_conv_to_the_last_bits(c, o, g, k, stride, padding, size, max_level, payload):
    rng = np.random.default_rng(1)
    w, x = _case(rng, c, o, g, k, size, max_level)
    stride = (stride, stride) if isinstance(stride, int) else stride
    padding = (padding, padding) if isinstance(padding, int) else padding
    w64 = w.double() * payload
    bits = SlicedConv.bits_for(w[0].numel(), max_level)
    assert bits == 11
    conv = SlicedConv(w64, stride, padding, g, max_level, bits)
    got = conv(x.reshape(5, -1).float(), x.shape[1:])
    ref = F.conv2d(x, w64, stride=stride, padding=padding, groups=g).reshape(5, -1)
    scale = float(F.conv2d(x, w64.abs(), stride=stride, padding=padding, groups=g).max())
    assert float((got - ref).abs().max()) <= 8 * np.finfo(np.float64).eps * scale
    # the slices rebuild the weights to below float64's precision
    rebuilt = sum(conv.weight.double().reshape(g, len(conv.scales), o // g, -1)[:, s] * conv.scales[s]
                  for s in range(len(conv.scales)))
    assert float((rebuilt.reshape(w64.shape) - w64).abs().max()) <= 2.0 ** -54 * float(w64.abs().max())


def test_sliced_conv_slices_are_exact_integer_sums_at_the_bound():
    """Worst case: every level at its maximum and every slice weight at +2^b: the float32 sums stay exact."""
    fan_in_channels, max_level = 64, 4
    bits = SlicedConv.bits_for(fan_in_channels * 9, max_level)
    assert 4 <= bits <= 11
    w = torch.full((2, fan_in_channels, 3, 3), 1.0 - 2.0 ** -40, dtype=torch.float64)
    conv = SlicedConv(w, (1, 1), (1, 1), 1, max_level, bits)
    x = torch.full((1, fan_in_channels, 5, 5), float(max_level))
    y = conv_gemm(x, conv.weight, (1, 1), (1, 1), 1)
    exact = F.conv2d(x.double(), conv.weight.double(), padding=1)
    assert torch.equal(y.double(), exact)
    assert float(exact.abs().max()) < 2 ** 24


def _bits(currents):
    """Float64 currents as their bit patterns, zeros as +0.0 (the GEMM path may give -0.0, the kernel and the engine
    +0.0; the sign of a zero current changes no membrane, spike or output)."""
    return (currents + 0.0).view(torch.int64)


@pytest.mark.skipif(not KERNEL_DEVICES, reason="no CUDA device and TRITON_INTERPRET unset: the kernel cannot run")
@pytest.mark.parametrize("c,o,k,stride,padding,size,batch,max_level", [
    case[:2] + case[3:] + (5, 1) for case in CASES if case[2] == 1] + [
    (16, 20, 3, 1, 1, 13, 7, 4),  # ragged tiles in positions and channels
    (64, 70, 3, 2, 1, 9, 3, 4),  # several K blocks at the slices' bound, more than one channel tile
    (8, 1, 3, 1, 1, 6, 3, 2048),  # largest levels: 5-bit slices (11, padded to 16), one output channel
    (3, 2, 1, 1, 0, 5, 2, 1),  # 1x1 kernel, K below one block
])
def test_conv_kernel_equals_the_gemm_path_bit_for_bit(c, o, k, stride, padding, size, batch, max_level,
                                                      monkeypatch):
    rng = np.random.default_rng(3)
    k = (k, k) if isinstance(k, int) else k
    stride = (stride, stride) if isinstance(stride, int) else stride
    padding = (padding, padding) if isinstance(padding, int) else padding
    w = torch.as_tensor(rng.standard_normal((o, c, *k))) * 0.37
    w[0, :c // 2] = 0.0
    x = torch.as_tensor(rng.integers(-max_level, max_level + 1, (batch, c * size * size)).astype(np.float64))
    for device in KERNEL_DEVICES:
        conv = SlicedConv(w.to(device), stride, padding, 1, max_level, SlicedConv.bits_for(w[0].numel(), max_level))
        assert conv.uses_kernel(device)
        got = conv(x.to(device), (c, size, size)).cpu()
        assert torch.equal(conv(x.to(device).half(), (c, size, size)).cpu(), got)  # the levels' dtype is free
        # launches split by samples (past int32 positions): two samples' positions per launch here
        monkeypatch.setattr(torch_triton, "INT32_POSITIONS", torch_triton.CONV_BLOCK_M + 2 * got.shape[1] // o)
        assert torch.equal(conv(x.to(device), (c, size, size)).cpu(), got)
        monkeypatch.undo()
        monkeypatch.setenv("SPIKEFORGE_TRITON", "0")
        assert not conv.uses_kernel(device)
        want = conv(x.to(device).float(), (c, size, size)).cpu()
        monkeypatch.delenv("SPIKEFORGE_TRITON")
        assert got.dtype == torch.float64 and got.shape == want.shape
        assert torch.equal(got.view(torch.int64), _bits(want)), (device, float((got - want).abs().max()))


@pytest.mark.skipif(not KERNEL_DEVICES, reason="no CUDA device and TRITON_INTERPRET unset: the kernel cannot run")
def test_conv_kernel_is_exact_at_the_slices_bound(monkeypatch):
    """Every level at its maximum and the first slice at +2^b everywhere: the float16 products' float32 sums reach
    their largest value and must stay exact, as the GEMM path's do."""
    fan_in_channels, max_level = 64, 4
    w = torch.full((20, fan_in_channels, 3, 3), 1.0 - 2.0 ** -40, dtype=torch.float64)
    w[1::2] *= -1.0
    x = torch.full((3, fan_in_channels * 25), float(max_level), dtype=torch.float64)
    for device in KERNEL_DEVICES:
        conv = SlicedConv(w.to(device), (1, 1), (1, 1), 1, max_level, SlicedConv.bits_for(fan_in_channels * 9, 4))
        assert conv.uses_kernel(device) and float(conv.weight.abs().max()) == 2.0 ** SlicedConv.bits_for(576, 4)
        got = conv(x.to(device), (fan_in_channels, 5, 5)).cpu()
        monkeypatch.setenv("SPIKEFORGE_TRITON", "0")
        assert torch.equal(got.view(torch.int64), _bits(conv(x.to(device).float(), (fan_in_channels, 5, 5)).cpu()))
        monkeypatch.delenv("SPIKEFORGE_TRITON")


def _pretend_kernel(monkeypatch, sliced_conv):
    """torch_triton as if on a GPU whose convolution kernel is `sliced_conv`; the kernel not yet checked."""
    monkeypatch.setattr(torch_triton, "available", lambda device: True)
    monkeypatch.setattr(torch_triton, "pack_slices", lambda q: None)
    monkeypatch.setattr(torch_triton, "sliced_conv", sliced_conv)
    monkeypatch.setattr(torch_conv, "_KERNEL_OK", {})


def test_a_kernel_giving_other_currents_is_not_used(monkeypatch):
    def wrong(levels, packed, scales, in_shape, out_channels, kernel, stride, padding):
        c, h, w = in_shape
        return torch.zeros(levels.shape[0], out_channels * h * w, dtype=torch.float64)

    _pretend_kernel(monkeypatch, wrong)
    conv = SlicedConv(torch.ones(4, 2, 3, 3, dtype=torch.float64), (1, 1), (1, 1), 1, 1, 11)
    with pytest.warns(RuntimeWarning, match="convolution kernel is not used on cpu: its currents differ"):
        assert not conv.uses_kernel("cpu")
    x = torch.ones(2, 2 * 16)
    assert float(conv(x, (2, 4, 4)).min()) > 0.0  # im2col + GEMM


def test_a_kernel_that_fails_to_compile_falls_back_with_a_warning(monkeypatch):
    def fails(*args):
        raise RuntimeError("out of resources: shared memory")

    _pretend_kernel(monkeypatch, fails)
    torch_conv._KERNEL_OK["cpu"] = True  # the probe passed; one layer's configuration then fails
    conv, other = (SlicedConv(torch.ones(4, 2, 3, 3, dtype=torch.float64), (1, 1), (1, 1), 1, 1, 11) for _ in "ab")
    assert conv.uses_kernel("cpu")
    with pytest.warns(RuntimeWarning, match=r"4-channel 3x3 convolution of \(2, 4, 4\) \(RuntimeError: out of res"):
        got = conv(torch.ones(2, 2 * 16), (2, 4, 4))
    assert not conv.uses_kernel("cpu") and other.uses_kernel("cpu")  # that convolution only
    assert torch.equal(got, conv(torch.ones(2, 2 * 16), (2, 4, 4)))


def test_weights_too_small_to_slice_take_the_float64_path():
    assert SlicedConv.takes(torch.zeros(3)) and SlicedConv.takes(torch.full((3,), 2.0 ** -900))
    assert not SlicedConv.takes(torch.full((3,), 2.0 ** -1030, dtype=torch.float64))


def test_fixed_point_weights_give_exact_integer_currents():
    rng = np.random.default_rng(2)
    w = torch.as_tensor(rng.integers(-127, 128, (8, 16, 3, 3)).astype(np.float64))
    x = torch.as_tensor(rng.integers(0, 2, (3, 16, 6, 6)).astype(np.float64))
    conv = SlicedConv(w, (1, 1), (1, 1), 1, 1, SlicedConv.bits_for(16 * 9, 1))
    got = conv(x.reshape(3, -1).float(), x.shape[1:])
    assert torch.equal(got, F.conv2d(x, w, padding=1).reshape(3, -1))


def test_too_large_fan_in_leaves_the_float64_path():
    assert SlicedConv.bits_for(2 ** 20, 4) == 0


def test_converted_cnn_takes_the_sliced_path_and_equals_the_engine(trained_resnet, digits):
    x = digits[0][:6].double().numpy()
    for neuron in ("if", "group"):
        from spikeforge.converter import convert

        net = convert(trained_resnet, [digits[0][:64]], neuron=neuron, tau=4)
        flat = simulator.prepare(net)
        ref = simulator.run(flat, x, 4, record_counts=True)
        got = simulator.run(flat, x, 4, record_counts=True, backend="torch", device="cpu")
        plan = flat.plans[("cpu", False)]
        kinds = [p.kind for p in plan.projs]
        sliced = [p.sliced is not None for p in plan.projs]
        assert any(sliced), (neuron, kinds)
        # convs from spiking populations are sliced; the analog input's is not
        assert all(s == (k in ("conv2d", "avgpool") and p.src != 0) for s, k, p in zip(sliced, kinds, plan.projs))
        assert np.array_equal(got.per_sample, ref.per_sample) and got.totals() == ref.totals()
        assert all(np.array_equal(got.spike_counts[k], ref.spike_counts[k]) for k in ref.spike_counts)
        np.testing.assert_allclose(got.output, ref.output, rtol=1e-9)


def test_float64_conv_choice_does_not_change_results(trained_resnet, digits, monkeypatch):
    from spikeforge.converter import convert

    x = digits[0][:4].double().numpy()
    net = convert(trained_resnet, [digits[0][:64]], neuron="if")
    monkeypatch.setattr(torch_backend, "SLICED_CONV", False)
    a = simulator.run(simulator.prepare(net), x, 3, backend="torch", device="cpu")
    monkeypatch.setattr(torch_backend, "SLICED_CONV", True)
    b = simulator.run(simulator.prepare(net), x, 3, backend="torch", device="cpu")
    assert np.array_equal(a.per_sample, b.per_sample)
    np.testing.assert_allclose(a.output, b.output, rtol=1e-9)
