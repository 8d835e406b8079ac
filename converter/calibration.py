"""Stage II of two-stage conversion: layer-wise calibration of a converted SNN (Wang et al.; METHODS.md).

Layer by layer in topological order, with the SNN's own spikes from the already calibrated layers as
input and the source ANN's activation â of that layer as target:
- coarse calibration (CC): v0 <- v0 + T·mean_samples(â - r), r = the layer's mean output value over T
  (closed form, no gradients; r and â in activation units, so the θ of the paper's rate form is folded in);
- fine calibration (FC): after CC, minimise the loss between r and â over the layer's incoming
  conv/dense weights and v0 by backpropagation through the T steps of that one layer only, with the
  rectangular surrogate ∂s/∂m = (1/α)·1{|m - θ_k| < α/2} (α = the firing unit), Adam, early stopping on the
  loss over all N samples (evaluated after CC and after each epoch; the best parameters are kept).
  Loss "kl" (classification): each neuron's value divided by θ is a firing probability in [0, 1] and the
  loss is the mean Bernoulli KL(â/θ || r/θ); "mse": mean squared error of the values (regression).
  Options beyond the paper: `bias` also fits each population's per-step bias; `readout` fits the readout layer
  (no neurons, linear in its sources' rates) to the ANN's outputs. Neither helped the CIFAR-10 ResNet-20
  (benchmarks/RESULTS.md); both are off by default.
Memory is O(T x largest layer x samples): only one layer's inputs are kept.
"""
from __future__ import annotations

import copy
import json

import numpy as np
import torch
import torch.nn.functional as F

from spikeforge.simulator.network import SPIKING_MODELS

from .convert import trace
from .spiking import SpikingNetwork


class _Spike(torch.autograd.Function):
    """Heaviside of (m - θ) with a rectangular surrogate gradient of width α."""

    @staticmethod
    def forward(ctx, x, alpha):
        ctx.save_for_backward(x, alpha)
        return (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        x, alpha = ctx.saved_tensors
        return grad * ((x.abs() < alpha / 2).to(grad.dtype) / alpha), None


def _layer_run(pop, theta, v0, currents):
    """Run one population's neurons over the per-step currents; return the mean output value (differentiable)."""
    tau = pop.tau if pop.model == "group" else 1
    unit = theta / tau
    v = v0.expand_as(currents[0])
    total = 0
    if pop.model == "signed":  # +θ at m >= θ, -α·θ at m < 0
        for current in currents:
            m = v + current
            pos, neg = _Spike.apply(m - theta, theta), _Spike.apply(-m, theta)
            v = m - theta * (pos - neg)
            total = total + theta * (pos - pop.negative_slope * neg)
        return total / len(currents)
    for current in currents:
        m = v + current
        count = sum(_Spike.apply(m - unit * j, unit) for j in range(1, tau + 1))
        v = m - unit * count
        total = total + unit * count
    return total / len(currents)


def _loss(kind, out, target, theta, T):
    """MSE of the values, or the mean Bernoulli KL(â/θ || r/θ) of the firing probabilities.

    Both probabilities are estimated from T steps with add-one-half smoothing, (T·q + 1/2)/(T + 1): a plain
    clamp to [ε, 1-ε] blocks the gradient exactly where the rate is 0 or 1 (most neurons at small T) and made
    fine calibration worsen every layer of a CIFAR ResNet-20 at T=2.
    """
    if kind == "mse":
        return F.mse_loss(out, target)
    p = ((target / theta) * T + 0.5) / (T + 1)
    q = ((out / theta) * T + 0.5) / (T + 1)
    return (p * (p.log() - q.log()) + (1 - p) * ((1 - p).log() - (1 - q).log())).mean()


def _ann_targets(model, x, nodes, batch_size, device):
    """The source ANN's activations at the given fx nodes, and its outputs, for all samples."""
    from .stats import _Recorder

    gm = trace(model).to(device).eval()
    out = {n: [] for n in nodes}
    outputs = []
    rec = _Recorder(gm, set(nodes), lambda name, t: out[name].append(t.detach().float()))
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            outputs.append(rec.run(x[i:i + batch_size].to(device)).float())
    return {n: torch.cat(v) for n, v in out.items()}, torch.cat(outputs)


def _inputs(snn, pop, x, T, batch_size):
    """Per-step values of pop's source populations (the SNN's own, from the layers calibrated so far)."""
    sources = sorted({pr.source for pr in snn.incoming[pop.name]})
    return _source_values(snn, x, T, pop.name, sources, batch_size)


def _source_values(snn, x, T, upto, names, batch_size):
    """Per-step output values (T, N, *shape) of populations `names`, running populations before `upto`."""
    net = snn.net
    rec = {n: [] for n in names}
    stop = net.index_of(upto)
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            xb = x[i:i + batch_size].to(device=snn.device, dtype=snn.dtype)
            b = xb.shape[0]
            xb = xb.reshape(b, *snn.shapes[net.input.name])
            for n, m in snn.neurons.items():
                m.reset_state(b)
            steps = {n: [] for n in names}
            pooled = {p.name: torch.zeros(b, *snn.shapes[snn.incoming[p.name][0].source], dtype=snn.dtype,
                                          device=snn.device) for p in net.populations[1:stop] if p.model == "maxpool"}
            for _ in range(T):
                values, levels = {net.input.name: xb}, {}
                for p in net.populations[1:stop]:
                    if p.model == "maxpool":  # spiking max pooling: gated by the source's spike counts so far
                        values[p.name] = snn._max_pool(p, pooled[p.name],
                                                       lambda pr: (values[pr.source], levels[pr.source]))
                        continue
                    current = snn.biases[p.name].expand(b, *snn.shapes[p.name])
                    for pr in snn.incoming[p.name]:
                        current = current + snn._project(pr, values[pr.source]).reshape(b, *snn.shapes[p.name])
                    neuron = snn.neurons[p.name]
                    levels[p.name] = neuron(current)
                    values[p.name] = neuron.value(levels[p.name])
                for n in names:
                    steps[n].append(values[n])
            for n in names:
                rec[n].append(torch.stack(steps[n]))
    return {n: torch.cat(v, dim=1) for n, v in rec.items()}


def _currents(snn, pop, src_vals, idx, weights, bias=None):
    """Per-step input currents of `pop` for samples idx, with (possibly trainable) weights and bias."""
    b = len(idx)
    bias = snn.biases[pop.name] if bias is None else bias
    T = next(iter(src_vals.values())).shape[0]
    out = []
    for t in range(T):
        current = bias.expand(b, *snn.shapes[pop.name])
        for pr in snn.incoming[pop.name]:
            xs = src_vals[pr.source][t, idx]
            if pr.name in weights:
                w = weights[pr.name]
                y = F.conv2d(xs, w, stride=tuple(pr.stride), padding=tuple(pr.padding), groups=pr.groups) \
                    if pr.kind == "conv2d" else F.linear(xs.reshape(b, -1), w)
            else:
                y = snn._project(pr, xs)
            current = current + y.reshape(b, *snn.shapes[pop.name])
        out.append(current)
    return out


def _fit(run, params, loss_fn, n, batch_size, epochs, lr, patience):
    """Adam over `params` (tensors with requires_grad) on mini-batches of the n samples; early stopping.

    run(idx) -> the layer's output for samples idx with the current params; loss_fn(out, idx) -> scalar.
    The loss on all n samples is evaluated before the first epoch and after each; the best parameters are
    kept, so fitting never ends above its start. Returns (start loss, best loss, epochs run).
    """
    device = params[0].device
    all_idx = torch.arange(n, device=device)

    def full_loss():
        with torch.no_grad():
            return sum(float(loss_fn(run(idx), idx)) * len(idx) for idx in all_idx.split(batch_size * 4)) / n

    def snapshot():
        return [p.detach().clone() for p in params]

    opt = torch.optim.Adam(params, lr=lr)
    best = start = full_loss()
    best_state, bad, epoch = snapshot(), 0, -1
    gen = torch.Generator(device="cpu").manual_seed(0)
    for epoch in range(epochs):
        for idx in torch.randperm(n, generator=gen).to(device).split(batch_size):
            value = loss_fn(run(idx), idx)
            opt.zero_grad()
            value.backward()
            opt.step()
        total = full_loss()
        if total < best - 1e-9:
            best, bad, best_state = total, 0, snapshot()
        else:
            bad += 1
            if bad >= patience:
                break
    with torch.no_grad():
        for p, b in zip(params, best_state):
            p.copy_(b)
    return start, best, epoch + 1


def calibrate(net, model, x, T: int, mode: str = "fc", epochs: int = 30, lr: float = 5e-4, batch_size: int = 64,
              patience: int = 4, device=None, progress=None, loss: str = "mse", bias: bool = False,
              readout: bool = False):
    """Return a calibrated copy of `net` (converted from `model`) for running with T steps.

    x: N calibration samples (tensor); mode: "cc" (coarse only) or "fc" (coarse, then fine);
    loss: "kl" or "mse" for fine calibration; bias: fine calibration also fits each population's bias
    (a per-neuron current added every step; v0 is added once); readout: after the spiking layers, fit the
    readout's incoming weights and bias to the ANN's outputs (MSE; the readout is linear in the spike rates
    of its sources, so this is the same layer-wise step for the one layer without neurons);
    progress: optional callable(layer name, message).
    """
    if mode not in ("cc", "fc"):
        raise ValueError(f"mode must be 'cc' or 'fc', got {mode!r}")
    if loss not in ("kl", "mse"):
        raise ValueError(f"loss must be 'kl' or 'mse', got {loss!r}")
    if (bias or readout) and mode != "fc":
        raise ValueError("bias and readout are options of fine calibration (mode='fc')")
    if "ann_nodes" not in net.attrs:
        raise ValueError("this network does not record its ANN nodes (convert it with this version)")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    net = copy.deepcopy(net)
    nodes = json.loads(net.attrs["ann_nodes"])
    x = torch.as_tensor(x, dtype=torch.float32)
    targets, outputs = _ann_targets(model, x, list(nodes.values()), batch_size * 4, device)
    snn = SpikingNetwork(net, dtype=torch.float32, device=device)
    unsupported = [p.name for p in net.populations if p.model in ("multi_threshold", "ec", "ec_matmul")]
    if unsupported:
        raise ValueError("calibration does not handle multi-threshold or EC populations yet "
                         f"({', '.join(unsupported)})")
    fit = dict(n=len(x), batch_size=batch_size, epochs=epochs, lr=lr, patience=patience)
    for pop in net.populations:
        if pop.model == "readout" and mode == "fc" and readout:
            msg = _calibrate_readout(snn, pop, x, T, outputs, fit)
        elif pop.model in SPIKING_MODELS:
            msg = _calibrate_population(snn, pop, x, T, targets[nodes[pop.name]], mode, loss, bias, fit, device)
        else:
            continue
        if pop.model in SPIKING_MODELS:
            pop.v_init = snn.neurons[pop.name].v_init.reshape(-1).float().cpu().numpy().astype(np.float32)
        pop.bias = snn.biases[pop.name].detach().reshape(-1).float().cpu().numpy().astype(np.float32)
        for pr in net.projections:
            if pr.target == pop.name and pr.weight is not None:
                pr.weight = snn.weights[pr.name].detach().float().cpu().numpy().astype(np.float32)
        if progress:
            progress(pop.name, msg)
    net.attrs["calibration"] = f"{mode} T={T} N={len(x)}" + (
        f" loss={loss}" + (" bias" if bias else "") + (" readout" if readout else "") if mode == "fc" else "")
    return net


def _trainable(snn, pop):
    """Clones (requires_grad) of the weights of pop's incoming conv/dense projections."""
    return {pr.name: snn.weights[pr.name].clone().requires_grad_(True)
            for pr in snn.incoming[pop.name] if pr.kind in ("conv2d", "dense")}


def _calibrate_population(snn, pop, x, T, target, mode, loss, bias, fit, device):
    """CC, then (mode "fc") FC of one spiking population; updates snn in place; returns a progress message."""
    src_vals = _inputs(snn, pop, x, T, fit["batch_size"] * 4)
    target = target.reshape(len(x), *pop.shape)
    neuron = snn.neurons[pop.name]
    theta = neuron.threshold
    with torch.no_grad():  # coarse: closed form
        r = torch.cat([_layer_run(pop, theta, neuron.v_init, _currents(snn, pop, src_vals, idx, {}))
                       for idx in torch.arange(len(x), device=device).split(fit["batch_size"] * 4)])
        before = float(F.mse_loss(r, target))
        neuron.v_init = neuron.v_init + T * (target - r).mean(0)
    msg = f"CC mse {before:.4g}"
    if mode == "fc":
        weights = _trainable(snn, pop)
        v0 = neuron.v_init.clone().requires_grad_(True)
        b = snn.biases[pop.name].clone().requires_grad_(True) if bias else snn.biases[pop.name]
        kind = "mse" if pop.model == "signed" else loss  # signed values in [-α·θ, θ] are no probabilities

        def run(idx):
            return _layer_run(pop, theta, v0, _currents(snn, pop, src_vals, idx, weights, b))

        params = list(weights.values()) + [v0] + ([b] if bias else [])
        start, best, n_epochs = _fit(run, params, lambda out, idx: _loss(kind, out, target[idx], theta, T), **fit)
        snn.weights.update({k: w.detach() for k, w in weights.items()})
        snn.biases[pop.name] = b.detach()
        neuron.v_init = v0
        msg += f", FC {kind} {start:.4g} -> {best:.4g} after {n_epochs} epochs"
    neuron.v_init = neuron.v_init.detach()
    return msg


def _calibrate_readout(snn, pop, x, T, outputs, fit):
    """Fit the readout's incoming weights and bias so its mean over T matches the ANN's outputs (MSE)."""
    src_vals = _inputs(snn, pop, x, T, fit["batch_size"] * 4)
    target = outputs.reshape(len(x), *pop.shape)
    weights = _trainable(snn, pop)
    b = snn.biases[pop.name].clone().requires_grad_(True)

    def run(idx):
        return sum(_currents(snn, pop, src_vals, idx, weights, b)) / T

    start, best, n_epochs = _fit(run, list(weights.values()) + [b], lambda out, idx: F.mse_loss(out, target[idx]),
                                 **fit)
    snn.weights.update({k: w.detach() for k, w in weights.items()})
    snn.biases[pop.name] = b.detach()
    return f"readout mse {start:.4g} -> {best:.4g} after {n_epochs} epochs"


# Stage II settings: the paper's (Adam lr 5e-4) and ours; a setting string overrides some, see parse_setting
FC_DEFAULTS = {"lr": 5e-4, "n": 1024, "epochs": 10, "bs": 64, "patience": 4, "loss": "mse", "seed": 0,
               "flip": False, "bias": False, "readout": False}


def parse_setting(text, defaults=FC_DEFAULTS):
    """A Stage II setting: `base`, or key=value / flag words joined by commas ('lr=2e-4,n=2048,flip').

    Keys: lr, n (calibration samples), epochs, bs (batch size), patience, loss (mse|kl), seed (which random
    training subset; 0 = the first n images), flip (add the mirrored images: 2n samples), bias, readout (see
    spikeforge.converter.calibration.calibrate). Returns the full settings dict; ValueError names a bad word.
    """
    out = dict(defaults)
    if text == "base":
        return out
    for word in text.split(","):
        key, _, value = word.partition("=")
        if key not in defaults:
            raise ValueError(f"setting {text!r}: unknown key {key!r} (known: {', '.join(defaults)})")
        if isinstance(defaults[key], bool):
            if value:
                raise ValueError(f"setting {text!r}: {key} is a flag, give it without a value")
            out[key] = True
        else:
            try:
                out[key] = type(defaults[key])(value)
            except ValueError:
                raise ValueError(f"setting {text!r}: {key}={value!r} is not a {type(defaults[key]).__name__}")
    return out


def calibration_samples(xtr, n, seed=0, flip=False):
    """n training images (seed 0: the first n; else a random subset), with their mirror images if flip."""
    if seed == 0:
        x = xtr[:n]
    else:
        g = torch.Generator(device="cpu").manual_seed(seed)
        x = xtr[torch.randperm(len(xtr), generator=g)[:n].to(xtr.device)]
    return torch.cat([x, x.flip(-1)]) if flip else x
