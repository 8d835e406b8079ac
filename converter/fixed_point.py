"""Fixed-point version of a converted network: integer weights, thresholds and membranes of a target's widths.

Every spiking (IF / group) or readout population t gets one scale s_t (the per-core scale of hardware, shared
by all its cores): the effective weight of a synapse is w x (what one spike of its source carries: θ_src for
IF, θ_src/τ per member for group neurons, the value itself for the analog input), and
    s_t = max |effective weight into t| / (2^(weight_bits-1) - 1),  W = round(effective weight / s_t),
    Θ_t = round(θ_t / s_t) (group: a multiple of τ, so θ/τ stays an integer), bias and v_init likewise.
Spikes then carry 1 (or the member count), the per-step input is rounded to an integer and the membrane
saturates at membrane_bits (file attribute numeric_mode = "fixed"; simulator and torch reference agree).
Scaling a population's weights, threshold, bias and initial potential together leaves its spikes unchanged,
so the only differences from the float network are the roundings and the saturation.
Identity and average-pooling projections become explicit (sparse diagonal / depthwise conv) weights first.
"""
from __future__ import annotations

import copy

import numpy as np

from spikeforge.errors import UserError
from spikeforge.simulator.network import FIXED_MODELS, Network, Projection


class FixedPointError(UserError):
    """The network has a part with no fixed-point form here; the message names it."""


def _explicit(proj, shapes):
    """identity -> sparse diagonal of ones; avgpool -> depthwise conv2d with weights 1/(kh·kw)."""
    if proj.kind == "identity":
        n = int(np.prod(shapes[proj.source]))
        return Projection(proj.name, "sparse", proj.source, proj.target, np.ones(n, np.float32),
                          indptr=np.arange(n + 1, dtype=np.int64), indices=np.arange(n, dtype=np.int32))
    if proj.kind == "avgpool":
        c = shapes[proj.source][0]
        kh, kw = proj.kernel
        w = np.full((c, 1, kh, kw), 1.0 / (kh * kw), np.float32)
        return Projection(proj.name, "conv2d", proj.source, proj.target, w, stride=tuple(proj.stride),
                          padding=tuple(proj.padding), groups=c)
    return proj


def _payload(pop, net):
    """Value one event of `pop` carries per unit of payload, per neuron (C order); a max pooling gate re-sends its
    source's events, so each of its channels carries what that channel's source neurons carry (one value per
    channel, else refused: which neuron wins is only known at run time)."""
    if pop.model == "input":
        return np.ones(pop.size)
    if pop.model == "maxpool":
        src = net.population(net.incoming(pop.name)[0].source)
        per_channel = _payload(src, net).reshape(src.shape[0], -1)
        if not np.allclose(per_channel, per_channel[:, :1]):
            raise FixedPointError(f"population {pop.name!r}: its source {src.name!r} has thresholds that vary "
                                  "within a channel; the pooled spikes would carry different values")
        return np.repeat(per_channel[:, 0], pop.size // pop.shape[0])
    theta = np.broadcast_to(np.asarray(pop.threshold, np.float64).reshape(-1), (pop.size,))
    return theta / pop.tau if pop.model == "group" else theta


def _effective(proj, src, unit):
    """The projection's weights times the source payload (float64, same layout as proj.weight)."""
    w = np.asarray(proj.weight, np.float64)
    if proj.kind == "dense":
        return w * unit[None, :]
    if proj.kind == "sparse":
        rows = np.repeat(np.arange(src.size), np.diff(proj.indptr))
        return w * unit[rows]
    # conv2d: the shared kernel can only absorb a payload that is the same over each input channel
    per_channel = unit.reshape(src.shape[0], -1)
    if not np.allclose(per_channel, per_channel[:, :1]):
        raise FixedPointError(f"projection {proj.name!r}: source {src.name!r} has thresholds that vary within a "
                              "channel; a shared conv kernel cannot absorb them")
    cin_g = w.shape[1]
    ch = per_channel[:, 0]
    out = w.copy()
    for o in range(w.shape[0]):
        g = o // (w.shape[0] // proj.groups)
        out[o] *= ch[g * cin_g:(g + 1) * cin_g][:, None, None]
    return out


def to_fixed_point(net: Network, weight_bits: int, membrane_bits: int) -> Network:
    """A copy of `net` in fixed point (see the module docstring); net itself is left unchanged."""
    weight_bits, membrane_bits = int(weight_bits), int(membrane_bits)
    if not 2 <= weight_bits <= 24:
        raise FixedPointError(f"weight_bits must be 2..24 (float32 holds such integers exactly), got {weight_bits}")
    if not 4 <= membrane_bits <= 48:
        raise FixedPointError(f"membrane_bits must be 4..48, got {membrane_bits}")
    if net.attrs.get("numeric_mode") == "fixed":
        raise FixedPointError("the network is already fixed point")
    for p in net.populations:
        if p.model not in FIXED_MODELS:
            raise FixedPointError(f"population {p.name!r}: model {p.model!r} has no fixed-point form here "
                                  f"(supported: {', '.join(FIXED_MODELS)})")
    shapes = {p.name: p.shape for p in net.populations}
    pops = {p.name: copy.deepcopy(p) for p in net.populations}
    projs = [copy.deepcopy(_explicit(q, shapes)) for q in net.projections]
    wmax = 2 ** (weight_bits - 1) - 1
    vmax = 2 ** (membrane_bits - 1) - 1
    scales = {}
    for tgt in net.populations[1:]:
        if tgt.model == "maxpool":  # no weights, no membrane: it passes integer events on
            continue
        incoming = [q for q in projs if q.target == tgt.name]
        eff = {q.name: _effective(q, net.population(q.source), _payload(net.population(q.source), net))
               for q in incoming}
        peak = max((float(np.abs(e).max()) for e in eff.values() if e.size), default=0.0)
        if peak == 0.0:
            raise FixedPointError(f"population {tgt.name!r}: all incoming weights are zero")
        s = peak / wmax
        scales[tgt.name] = s
        for q in incoming:
            q.weight = np.clip(np.rint(eff[q.name] / s), -wmax, wmax).astype(np.float32)
        p = pops[tgt.name]
        p.bias = np.rint(np.asarray(tgt.bias, np.float64) / s)
        p.v_init = np.rint(np.asarray(tgt.v_init, np.float64) / s)
        if tgt.model == "group":
            p.threshold = np.maximum(1, np.rint(np.asarray(tgt.threshold, np.float64) / (s * tgt.tau))) * tgt.tau
        elif tgt.model == "if":
            p.threshold = np.maximum(1, np.rint(np.asarray(tgt.threshold, np.float64) / s))
        if tgt.model in ("if", "group") and float(np.max(p.threshold)) > vmax:
            raise FixedPointError(f"population {tgt.name!r}: threshold {float(np.max(p.threshold)):g} does not fit "
                                  f"a {membrane_bits}-bit membrane (max {vmax}); use more membrane bits")
    attrs = dict(net.attrs, numeric_mode="fixed", weight_bits=weight_bits, membrane_bits=membrane_bits)
    out = Network([pops[p.name] for p in net.populations], projs, net.cores, net.core_edges, attrs)
    out.fixed_scales = scales  # per population: one integer unit = s_t in float current
    return out


def dequantize_error(fixed: Network, float_net: Network) -> dict:
    """Per projection: the largest |W·s_t - effective float weight| over s_t/2 (<= 1 unless clipped)."""
    shapes = {p.name: p.shape for p in float_net.populations}
    out = {}
    for q in float_net.projections:
        qf = next(p for p in fixed.projections if p.name == q.name)
        if q.kind == "maxpool":
            continue
        eff = _effective(_explicit(q, shapes), float_net.population(q.source),
                         _payload(float_net.population(q.source), float_net))
        s = fixed.fixed_scales[q.target]
        out[q.name] = float(np.abs(qf.weight.astype(np.float64) * s - eff).max() / (s / 2)) if eff.size else 0.0
    return out
