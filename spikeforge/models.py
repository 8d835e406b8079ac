"""Small reference ANNs used by tests, the demo and the benchmarks."""
from __future__ import annotations

import torch
from torch import nn


class BasicBlock(nn.Module):
    """ResNet basic block: conv-BN-act-conv-BN + shortcut (identity or 1x1 conv-BN), act."""

    def __init__(self, cin, cout, stride=1, act=nn.ReLU):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.act1 = act()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        self.act2 = act()

    def forward(self, x):
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act2(out + self.shortcut(x))


class DigitsResNet(nn.Module):
    """A tiny CNN for 1x8x8 digits: conv-BN-act, two residual blocks, average pooling, linear."""

    def __init__(self, width=16, classes=10, act=nn.ReLU):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), act())
        self.block1 = BasicBlock(width, width, 1, act)
        self.block2 = BasicBlock(width, 2 * width, 2, act)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * width, classes)

    def forward(self, x):
        x = self.block2(self.block1(self.stem(x)))
        return self.fc(self.pool(x).flatten(1))


class DigitsMLP(nn.Module):
    """A 64-128-64-10 MLP with BatchNorm for flattened digits."""

    def __init__(self, hidden=128, classes=10, act=nn.ReLU):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.BatchNorm1d(hidden), act(), nn.Dropout(0.1),
                                 nn.Linear(hidden, hidden // 2), act(), nn.Linear(hidden // 2, classes))

    def forward(self, x):
        return self.net(x)


class DigitsXyloMLP(nn.Module):
    """A 16-64-32-8 MLP for the Xylo-sized digits (spikeforge.data.load_digits_xylo_split: 4x4 images, classes
    0-7): 16 inputs, 96 hidden neurons reaching at most 32 each, 8 outputs, within Xylo Audio 2's core."""

    def __init__(self, classes=8, act=nn.ReLU):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(16, 64), act(), nn.Linear(64, 32), act(),
                                 nn.Linear(32, classes))

    def forward(self, x):
        return self.net(x)


class _ViTBlock(nn.Module):
    def __init__(self, dim, heads, hidden):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x, ops, name):
        b, n, d = x.shape
        h = ops.ln(f"{name}.ln1", self.ln1, x)
        qkv = ops.linear(f"{name}.qkv_in", self.qkv, h).reshape(b, n, 3, self.heads, d // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (b, heads, n, d_head)
        scores = ops.matmul(f"{name}.qk", ops.mt(f"{name}.q", q), ops.mt(f"{name}.k", k).transpose(-1, -2))
        attn = ops.softmax(f"{name}.softmax", scores * (d // self.heads) ** -0.5)
        out = ops.matmul(f"{name}.av", ops.mt(f"{name}.attn", attn), ops.mt(f"{name}.v", v))
        x = x + ops.linear(f"{name}.proj_in", self.proj, out.transpose(1, 2).reshape(b, n, d))
        h = ops.gelu(f"{name}.gelu", ops.linear(f"{name}.fc1_in", self.fc1, ops.ln(f"{name}.ln2", self.ln2, x)))
        return x + ops.linear(f"{name}.fc2_in", self.fc2, h)


class ViT(nn.Module):
    """A small Vision Transformer: patch embedding, class token, position terms, pre-LN blocks, LN, head.

    The forward takes an `ops` object (converter.ecmt.AnnOps by default) for every operation that a spiking
    version replaces: LayerNorm, softmax, GELU, the two attention matrix products, the linear layers, and
    the points before each linear layer / matrix product where multi-threshold neurons go (ECMT, METHODS.md).
    """

    def __init__(self, channels, image, patch, dim, depth, heads, hidden, classes=10):
        super().__init__()
        tokens = (image // patch) ** 2 + 1
        self.embed = nn.Conv2d(channels, dim, patch, patch)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, tokens, dim) * 0.02)
        self.blocks = nn.ModuleList([_ViTBlock(dim, heads, hidden) for _ in range(depth)])
        self.ln = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x, ops=None):
        from spikeforge.converter.ecmt import AnnOps

        ops = ops or AnnOps()
        x = ops.embed(self.embed, x).flatten(2).transpose(1, 2)  # analog input layer: (b, patches, dim)
        x = torch.cat([self.cls.expand(len(x), -1, -1), x], 1) + self.pos
        for i, block in enumerate(self.blocks):
            x = block(x, ops, f"block{i}")
        return ops.linear("head_in", self.head, ops.ln("ln", self.ln, x[:, 0]))


class DigitsViT(ViT):
    """ViT for 1x8x8 digits: 2x2 patches (16 tokens) + class token, dim 32, 2 blocks, 4 heads, MLP 64."""

    def __init__(self, dim=32, depth=2, heads=4, hidden=64, classes=10):
        super().__init__(1, 8, 2, dim, depth, heads, hidden, classes)


class _PlainBlock(nn.Module):
    """Pre-LN transformer block in plain torch; `mha=True` uses nn.MultiheadAttention instead of hand-written heads."""

    def __init__(self, dim, heads, hidden, mha=False):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        if mha:
            self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        else:
            self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)
        self.act = nn.GELU()

    def forward(self, x):
        h = self.ln1(x)
        if hasattr(self, "attn"):
            x = x + self.attn(h, h, h, need_weights=False)[0]
        else:
            b, n, d = x.shape[0], x.shape[1], x.shape[2]
            q, k, v = self.qkv(h).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
            attn = torch.softmax(q @ k.transpose(-1, -2) * (d // self.heads) ** -0.5, dim=-1)
            x = x + self.proj((attn @ v).transpose(1, 2).reshape(b, n, d))
        return x + self.fc2(self.act(self.fc1(self.ln2(x))))


class PlainViT(nn.Module):
    """The ViT above written in plain torch (no ops interface), as a user would: the input to the torch.fx front
    end (converter.vit_trace). Same parameter names as ViT when mha=False, so either loads the other's weights."""

    def __init__(self, channels=1, image=8, patch=2, dim=32, depth=2, heads=4, hidden=64, classes=10, mha=False):
        super().__init__()
        tokens = (image // patch) ** 2 + 1
        self.embed = nn.Conv2d(channels, dim, patch, patch)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, tokens, dim) * 0.02)
        self.blocks = nn.ModuleList([_PlainBlock(dim, heads, hidden, mha) for _ in range(depth)])
        self.ln = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        x = self.embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], 1) + self.pos
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln(x[:, 0]))
