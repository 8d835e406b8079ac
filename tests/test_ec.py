"""ECMT building blocks (issue 6, first part): the expectation-compensation identity and MT neurons by hand."""
import pytest
import torch
import torch.nn.functional as F

from spikeforge import simulator
from spikeforge.converter.ec import ECFunction, ECMatMul, MultiThresholdNeurons


@pytest.mark.parametrize("fn", [lambda x: torch.softmax(x, -1), lambda x: F.layer_norm(x, x.shape[-1:]), F.gelu],
                         ids=["softmax", "layernorm", "gelu"])
def test_ec_running_sum_equals_T_times_F_of_the_mean_input(fn):
    torch.manual_seed(0)
    xs = torch.randn(8, 3, 5, 7, dtype=torch.float64)  # T, batch, tokens, features
    ec = ECFunction(fn)
    ec.reset_state()
    total = torch.zeros_like(xs[0])
    for T in range(1, len(xs) + 1):
        total = total + ec(xs[T - 1])
        torch.testing.assert_close(total, T * fn(xs[:T].mean(0)), rtol=1e-12, atol=1e-12)
    # a second run starts from scratch
    ec.reset_state()
    torch.testing.assert_close(ec(xs[0]), fn(xs[0]))


def test_ec_matmul_running_sum_equals_T_times_product_of_means():
    torch.manual_seed(1)
    a = (torch.rand(6, 2, 4, 5) < 0.3).double() * 0.7  # spiking operands: values on a few levels
    b = (torch.rand(6, 2, 5, 3) < 0.4).double() * -1.2
    mm = ECMatMul()
    total = torch.zeros(2, 4, 3, dtype=torch.float64)
    for T in range(1, 7):
        total = total + mm(a[T - 1], b[T - 1])
        torch.testing.assert_close(total, T * (a[:T].mean(0) @ b[:T].mean(0)), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(mm.sum_k, a[:T].sum(0) @ b[:T].sum(0))


def test_multi_threshold_neuron_picks_the_best_level_and_keeps_the_residual():
    mt = MultiThresholdNeurons(theta_pos=1.0, theta_neg=0.5, n=3)  # levels 1, 2, 4 and -0.5, -1, -2
    mt.reset_state()
    m = torch.tensor([0.0, 0.49, 0.5, 1.49, 1.5, 3.49, 3.5, 100.0, -0.25, -0.26, -0.76, -1.76, -50.0],
                     dtype=torch.float64)
    x = mt(m)
    torch.testing.assert_close(x, torch.tensor([0, 0, 1, 1, 2, 2, 4, 4, 0, -0.5, -1, -2, -2], dtype=torch.float64))
    assert mt.channel.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 0, -1, -2, -3, -3]
    torch.testing.assert_close(mt.v, m - x)
    # charge is conserved (input sum = emitted sum + membrane) and a neuron falls silent only inside
    # (-θ2/2, θ1/2), so a silent neuron's residual is below half a base threshold
    torch.manual_seed(2)
    mt = MultiThresholdNeurons(1.0, 0.5, n=4)
    mt.reset_state()
    currents = torch.rand(20, 1000, dtype=torch.float64) * 6 - 3
    sent = 0
    for c in currents:
        sent = sent + mt(c)
        silent = mt.channel == 0
        assert bool(((mt.v[silent] >= -0.25) & (mt.v[silent] < 0.5)).all())
    torch.testing.assert_close(currents.sum(0) - sent, mt.v)
    with pytest.raises(ValueError, match="n >= 1"):
        MultiThresholdNeurons(1.0, 1.0, n=0)


def test_ecmt_vit_on_digits_approaches_the_ann_by_T8(digits):
    """Measured: ANN 95.1%; ECMT (n=4, p=99%) T=1/2/4/8/12 46.5/85.1/90.9/94.0/94.9%, energy ratio
    T=1/4/8 0.10/0.51/1.09 (below 1 up to T=6)."""
    from spikeforge.converter.ecmt import ann_macs, collect_thresholds, ecmt_forward, energy_ratio
    from spikeforge.converter.training import accuracy, train_classifier
    from spikeforge.models import DigitsViT

    xtr, ytr, xte, yte = digits
    torch.manual_seed(0)
    vit = train_classifier(DigitsViT(), xtr, ytr, epochs=40, lr=0.05, seed=0)
    ann = accuracy(vit, xte, yte)
    assert ann >= 0.92
    thresholds = collect_thresholds(vit, [xtr[:512]])
    assert len(thresholds) == 2 * 8 + 1  # 8 multi-threshold points per block, one before the head
    acc, counts = {}, {}
    # the same network written to a file (multi-threshold populations, ec / ec_matmul nodes) and run by the
    # numba engine: the same predictions and multi-threshold spikes as the reference (exactly so against the
    # file's own torch reference: tests/test_ec_nodes.py)
    from spikeforge.converter.ecmt_export import export_ecmt
    flat = simulator.engine.prepare(export_ecmt(vit, thresholds, (1, 8, 8)))
    for T in (1, 8):
        out, counts[T] = ecmt_forward(vit, xte, T, thresholds, n=4)
        acc[T] = float((out.argmax(1) == yte).float().mean())
        assert counts[T]["spikes"] > 0 and counts[T]["acs"] > 0
        res = simulator.run(flat, xte.numpy(), T)  # float64 engine vs this float32 reference: rare level flips
        assert (res.predictions() == out.argmax(1).numpy()).mean() >= 0.99
        assert abs(res.total("spikes") - counts[T]["spikes"]) <= 0.005 * counts[T]["spikes"]
    # MACs (analog input convolution, EC LayerNorm / softmax / GELU) are the same every step; by hand per
    # sample and step: conv 16·32·4, per block LN 2·17·32 + softmax 4·17·17 + GELU 17·64, final LN 32
    assert counts[1]["macs"] == len(xte) * (16 * 32 * 4 + 2 * (2 * 17 * 32 + 4 * 17 * 17 + 17 * 64) + 32)
    assert counts[8]["macs"] == 8 * counts[1]["macs"]
    # the ANN's MACs by hand: per sample, input conv 16·32·4, per block qkv 17·32·96, q·kᵀ and attn·v
    # 2·4·17·17·8, proj 17·32·32, fc1 17·32·64, fc2 17·64·32, LN/softmax/GELU elements 2·17·32 + 4·17·17 + 17·64;
    # final LN 32 and head 32·10
    block = 17 * 32 * 96 + 2 * 4 * 17 * 17 * 8 + 17 * 32 * 32 + 17 * 32 * 64 + 17 * 64 * 32 \
        + 2 * 17 * 32 + 4 * 17 * 17 + 17 * 64
    assert ann_macs(vit, xte) == len(xte) * (16 * 32 * 4 + 2 * block + 32 + 32 * 10)
    ratio = {T: energy_ratio(c, ann_macs(vit, xte)) for T, c in counts.items()}
    print("ECMT ViT", ann, acc, "energy ratio", ratio)
    assert acc[8] >= ann - 0.03
    assert acc[1] < acc[8] - 0.2
    assert ratio[1] < 0.2 and ratio[8] > ratio[1]
