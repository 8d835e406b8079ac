"""Small reference ANNs used by tests, the demo and the benchmarks."""
from __future__ import annotations

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
