"""torch.fx front end for ECMT (spikeforge.converter.vit_trace): a ViT in plain torch, traced, behaves exactly like the
same network written against the ops interface, exports to a file the engine runs, and bad nodes are named."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from spikeforge import simulator
from spikeforge.converter import write_network
from spikeforge.converter.ecmt import ann_macs, collect_thresholds, ecmt_forward
from spikeforge.converter.ecmt_export import export_ecmt
from spikeforge.converter.vit_trace import TraceError, trace_vit
from spikeforge.models import DigitsViT, PlainViT


def _pair():
    torch.manual_seed(0)
    ref = DigitsViT().eval()
    plain = PlainViT().eval()
    plain.load_state_dict(ref.state_dict())
    return ref, plain


def _mha_copy(plain):
    """The same weights in a PlainViT built on nn.MultiheadAttention."""
    m = PlainViT(mha=True).eval()
    state = {}
    for k, v in plain.state_dict().items():
        k = k.replace(".qkv.weight", ".attn.in_proj_weight").replace(".qkv.bias", ".attn.in_proj_bias")
        state[k.replace(".proj.", ".attn.out_proj.")] = v
    m.load_state_dict(state)
    return m


def test_traced_plain_vit_equals_the_ops_written_vit_step_for_step():
    ref, plain = _pair()
    traced = trace_vit(plain)
    assert traced.summary() == {"embed": 1, "linear": 9, "ln": 5, "gelu": 2, "softmax": 2, "matmul": 4,
                                "pass": traced.summary()["pass"]}
    x = torch.rand(7, 1, 8, 8) * 16
    assert torch.equal(traced(x), plain(x))
    th_ref, th = collect_thresholds(ref, [x]), collect_thresholds(traced, [x])
    assert len(th) == len(th_ref) == 17
    # the same multi-threshold points, under fx names: same sorted threshold values
    assert sorted(th.values()) == sorted(th_ref.values())
    assert ann_macs(traced, x) == ann_macs(ref, x)
    for T in (1, 4):
        out_ref, counts_ref = ecmt_forward(ref, x, T, th_ref)
        out, counts = ecmt_forward(traced, x, T, th)
        assert torch.equal(out, out_ref)
        assert counts == counts_ref


def test_multihead_attention_is_taken_apart_into_the_same_spiking_network():
    ref, plain = _pair()
    mha = _mha_copy(plain)
    traced = trace_vit(mha)
    assert traced.summary()["mha"] == 2
    x = torch.rand(5, 1, 8, 8) * 16
    torch.testing.assert_close(traced(x), mha(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(mha(x), plain(x), rtol=1e-5, atol=1e-5)
    th = collect_thresholds(traced, [x])
    assert len(th) == 17
    out, counts = ecmt_forward(traced, x, 4, th)
    out_plain, counts_plain = ecmt_forward(trace_vit(plain), x, 4, collect_thresholds(trace_vit(plain), [x]))
    torch.testing.assert_close(out, out_plain, rtol=1e-5, atol=1e-5)
    assert counts["macs"] == counts_plain["macs"]


def test_traced_vit_exports_to_a_file_the_engine_runs_like_the_reference(tmp_path):
    _, plain = _pair()
    traced = trace_vit(_mha_copy(plain))
    x = torch.rand(6, 1, 8, 8) * 16
    th = collect_thresholds(traced, [x])
    net = export_ecmt(traced, th, (1, 8, 8))
    assert net.attrs["name"] == "PlainViT"
    models = [p.model for p in net.populations]
    functions = [p.function for p in net.populations if p.model == "ec"]
    assert models.count("ec_matmul") == 2 * 2 * 4
    assert [functions.count(f) for f in ("layernorm", "softmax", "gelu", "identity")] == [5, 8, 2, 3]
    write_network(net, tmp_path / "vit.h5")
    res = simulator.run(tmp_path / "vit.h5", x.numpy(), 3)
    ref, _ = ecmt_forward(traced.double(), x.double(), 3, th)
    np.testing.assert_allclose(res.output, ref.numpy(), rtol=1e-5, atol=1e-6)


class _LinearPatches(nn.Module):
    """Patches cut with reshape/permute and embedded by a Linear: the Linear is the analog input layer."""

    def __init__(self):
        super().__init__()
        self.embed, self.ln, self.fc, self.head = nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 8), nn.Linear(8, 3)

    def forward(self, x):
        b, c, height, width = x.shape  # fx records the unpacking as getattr/getitem: sizes, not activations
        p = x.reshape(b, height // 2, 2, width // 2, 2).permute(0, 1, 3, 2, 4).reshape(b, 16, 4 * c)
        h = self.embed(p)
        h = h + self.fc(F.gelu(self.ln(h)))
        return self.head(F.layer_norm(h.mean(1), (8,)))


def test_linear_patch_embedding_is_the_analog_input_layer():
    torch.manual_seed(0)
    model = _LinearPatches().eval()
    traced = trace_vit(model)
    assert traced.plan["embed"] == "embed" and traced.plan["fc"] == "linear" and traced.plan["head"] == "linear"
    assert traced.plan["layer_norm"] == "ln"
    x = torch.rand(3, 1, 8, 8)
    assert torch.equal(traced(x), model(x))
    # by hand: embed 16·8·4, LN 16·8, GELU 16·8, fc 16·8·8, final LN 8, head 8·3 (per sample)
    assert ann_macs(traced, x) == 3 * (16 * 8 * 4 + 16 * 8 + 16 * 8 + 16 * 8 * 8 + 8 + 8 * 3)
    th = collect_thresholds(traced, [x])
    assert sorted(th) == ["fc_in", "head_in"]
    # exported: the final LN reads the mean over tokens (not token-wise): full probes of the tokens, a dense map
    net = export_ecmt(traced, th, (1, 8, 8))
    assert sorted((q.source, q.kind) for q in net.incoming("layer_norm")) == [("fc_in", "dense"), ("input", "dense")]
    assert [q.kind for q in net.incoming("head_in")] == ["identity"]
    res = simulator.run(net, x.numpy(), 4)
    ref, _ = ecmt_forward(traced.double(), x.double(), 4, th)
    np.testing.assert_allclose(res.output, ref.numpy(), rtol=1e-5, atol=1e-6)


class _Net(nn.Module):
    def __init__(self, forward, **modules):
        super().__init__()
        self.fn = forward
        for k, v in modules.items():
            setattr(self, k, v)

    def forward(self, x):
        return self.fn(self, x)


def _conv_then_conv(s, x):
    return s.c2(F.gelu(s.c1(x)))


def _branch(s, x):
    return s.l(x) if x.sum() > 0 else x


@pytest.mark.parametrize("forward, modules, problem", [
    (lambda s, x: torch.relu(s.l(x)), {"l": nn.Linear(4, 4)}, r"node 'relu'.*not linear"),
    (lambda s, x: s.l(x) * s.l(x), {"l": nn.Linear(4, 4)}, "elementwise product"),
    (lambda s, x: 1.0 / s.l(x), {"l": nn.Linear(4, 4)}, "dividing by an activation"),
    (lambda s, x: torch.softmax(s.l(x), dim=1), {"l": nn.Linear(4, 4)}, "dim=-1"),
    (lambda s, x: s.a(s.l(x)), {"l": nn.Linear(4, 4), "a": nn.GELU("tanh")}, "approximate='tanh'"),
    (lambda s, x: s.a(s.l(x)), {"l": nn.Linear(4, 4), "a": nn.ReLU()}, "ReLU has no ECMT equivalent"),
    (lambda s, x: s.m(x, x, x)[0], {"m": nn.MultiheadAttention(4, 2)}, "batch_first=True"),
    (lambda s, x: s.m(x, s.l(x), x)[0], {"m": nn.MultiheadAttention(4, 2, batch_first=True),
                                          "l": nn.Linear(4, 4)}, "self-attention"),
    (_conv_then_conv, {"c1": nn.Conv2d(1, 2, 2), "c2": nn.Conv2d(2, 2, 2)}, "convolution after the analog input"),
    (_branch, {"l": nn.Linear(4, 4)}, "could not trace"),
], ids=["relu", "product", "divide", "softmax-dim", "gelu-tanh", "relu-module", "mha-batch-second", "cross-attn",
        "conv-conv", "data-dependent-branch"])
def test_unconvertible_nodes_are_named(forward, modules, problem):
    with pytest.raises(TraceError, match=problem):
        trace_vit(_Net(forward, **modules))
