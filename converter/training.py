"""Small, deterministic training loop for source ANNs (CPU or GPU)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def train_classifier(model, x, y, epochs=30, lr=1e-2, batch_size=64, weight_decay=5e-4, seed=0,
                     device="cpu", progress=None):
    """Train `model` on tensors (x, y) with SGD + momentum and a cosine schedule; returns the model."""
    model.to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
    steps = epochs * ((len(x) + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    return fit(model, x, y, opt, sched, epochs, batch_size, seed, device, progress)


def fit(model, x, y, opt, sched, epochs, batch_size, seed, device, progress=None):
    """Cross-entropy epochs over shuffled mini-batches with optimizer `opt` (and `sched` stepped per batch)."""
    gen = torch.Generator().manual_seed(seed)
    model.to(device).train()
    for epoch in range(epochs):
        perm = torch.randperm(len(x), generator=gen)
        total = 0.0
        for i in range(0, len(x), batch_size):
            idx = perm[i:i + batch_size]
            loss = F.cross_entropy(model(x[idx].to(device)), y[idx].to(device))
            opt.zero_grad()
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            total += float(loss.detach()) * len(idx)
        if progress:
            progress(epoch, total / len(x))
    return model.eval()


@torch.no_grad()
def accuracy(model, x, y, batch_size=512, device="cpu"):
    """Top-1 accuracy of `model` on (x, y)."""
    model.to(device).eval()
    correct = 0
    for i in range(0, len(x), batch_size):
        correct += int((model(x[i:i + batch_size].to(device)).argmax(1).cpu() == y[i:i + batch_size]).sum())
    return correct / len(x)
