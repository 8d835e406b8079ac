"""EC nodes' exp and erf (simulator.ecmath): close to libm's, and the same bits in the engine and the Triton kernel."""
import math

import numpy as np
import pytest
import torch
from test_torch_ordered import KERNEL_DEVICES

from spikeforge.simulator import ecmath, kernels, torch_triton


def _ulps(a, b):
    """Units in the last place between two finite float64 values of the same sign."""
    return abs(int(np.float64(a).view(np.int64)) - int(np.float64(b).view(np.int64)))


def test_constants_are_the_correctly_rounded_values():
    assert ecmath.LN2_HI + ecmath.LN2_LO == math.log(2.0)
    assert ecmath.LN2_HI == float.fromhex("0x1.62e42feep-1")  # 32 leading bits: k·LN2_HI is exact
    assert (ecmath.INV_LN2, ecmath.SQRT2, ecmath.SQRT_PI) == (1 / math.log(2.0), math.sqrt(2.0), math.sqrt(math.pi))
    assert ecmath.TWO_OVER_SQRT_PI == 2 / math.sqrt(math.pi)


def test_exp_is_within_one_unit_in_the_last_place_of_libm():
    rng = np.random.default_rng(0)
    xs = np.concatenate([rng.uniform(-700, 0, 5000), rng.uniform(-3, 3, 5000), rng.uniform(-1e-6, 1e-6, 500),
                         rng.uniform(0, 709, 500), -np.arange(0, 700, 0.5)])
    assert max(_ulps(ecmath.exp(x), math.exp(x)) for x in xs) <= 1
    assert ecmath.exp(0.0) == 1.0 and ecmath.exp(-0.0) == 1.0
    assert ecmath.exp(-700.5) == 0.0 and ecmath.exp(709.5) == np.inf and ecmath.exp(-np.inf) == 0.0


def test_erf_is_odd_and_within_eight_units_in_the_last_place_of_libm():
    rng = np.random.default_rng(1)
    xs = np.concatenate([rng.uniform(0, 7, 10000), rng.uniform(0, 1e-6, 500), [2.5, np.nextafter(2.5, 0), 6.0]])
    worst = max(_ulps(ecmath.erf(x), math.erf(x)) for x in xs)
    assert worst <= 8, worst
    assert all(ecmath.erf(-x) == -ecmath.erf(x) for x in xs[:500])
    assert ecmath.erf(0.0) == 0.0 and ecmath.erf(6.0) == 1.0 and ecmath.erf(-30.0) == -1.0


def _ec_inputs(rng, b, n):
    """Running sums with ties and exact zeros, which EC nodes must decide exactly."""
    total = rng.normal(0, 3, (b, n)) * 2.0 ** rng.integers(-3, 4, (b, n))
    total[rng.random((b, n)) < 0.2] = 0.0
    total[:, 1::7] = total[:, ::7][:, :total[:, 1::7].shape[1]]  # repeated values within a group
    return total


@pytest.mark.parametrize("device", KERNEL_DEVICES or [pytest.param("cuda", marks=pytest.mark.skip(
    reason="no CUDA device with Triton and TRITON_INTERPRET unset: the kernel cannot run"))])
@pytest.mark.parametrize("func", [kernels.EC_GELU, kernels.EC_LAYERNORM, kernels.EC_SOFTMAX])
def test_the_triton_kernel_computes_ec_outputs_bit_for_bit_as_the_engine(func, device):
    assert torch_triton.ec_kernel_ok(device)  # else the backend falls back to the host, with a warning
    rng = np.random.default_rng(7 + func)
    b, group, n = (97 if device == "cuda" else 13), 65, 65 * 6  # rows over two or more 64-row tiles, ragged
    prev = rng.normal(0, 1, (b, n))
    prev_dev = torch.tensor(prev, device=device)  # a copy: the engine updates prev in place
    for t in range(4):  # several steps: prev carries over
        total = _ec_inputs(rng, b, n) * (t + 1)
        want = kernels.ec_outputs(total, prev, t, func, group, 1e-5)
        got = torch_triton.ec_outputs(torch.tensor(total, device=device), prev_dev, t, func, group, 1e-5)
        assert np.array_equal(got.cpu().numpy(), want)
        assert np.array_equal(prev_dev.cpu().numpy(), prev)
