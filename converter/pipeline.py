"""The whole conversion recipe as one library call: what `spikeforge convert` runs, for scripts and notebooks too.

    net = convert_pipeline(model, x, ConvertSettings(neuron="group", tau=4, calibrate="fc", T=4, target="loihi"))
    write_network(net, "net.h5")

Steps, each optional except conversion: Stage I QC-finetuning for T steps (needs labels y), conversion (BN fusion,
thresholds, spiking neurons), Stage II layer-wise calibration (cc | fc) for T steps, fixed point with the target's
weight and membrane bits, and mapping onto the target's cores. Every setting is checked before any work starts.
"""
from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from spikeforge.errors import UserError
from spikeforge.simulator.network import SPIKING_MODELS, Network

from .convert import convert

__all__ = ["ConvertSettings", "convert_pipeline"]

_CHOICES = {"norm": ("max", "percentile"), "neuron": ("if", "group", "multi_threshold"),
            "payload": ("graded", "expanded", "parallel"), "pooling": ("fold", "spike"),
            "calibrate": ("none", "cc", "fc"), "calib_loss": ("mse", "kl"), "placement": ("snake", "anneal")}


MAX_TUNING_T = 4096  # steps Stage I / II may tune for (an unrolled torch graph per sample)


@dataclass(frozen=True)
class ConvertSettings:
    """How a trained model becomes a network; the defaults are `spikeforge convert`'s (METHODS.md has the maths).

    norm / percentile: thresholds from the max or a percentile of the calibration activations (a clip / QCFS
    bound wins); v_init: initial membrane as a fraction of θ; neuron: "if", "group" (tau members) or
    "multi_threshold" (levels); payload: graded events or expanded / parallel synapses; pooling: fold average
    pooling into the next layer or re-encode it as spikes. T: the time steps Stage I / Stage II tune for.
    qc_epochs > 0 runs Stage I (noise probability p, Adam qc_lr); calibrate "cc" / "fc" runs Stage II on
    calib_samples samples. target (name or JSON path) maps onto its cores (placement); fixed_point quantizes to
    the target's weight and membrane bits first; ops_per_core > 0 caps each layer's neurons per core so that no
    core's synaptic operations per step (measured on up to 8 calibration samples) pass it (mapping.map_to_work;
    a UserWarning names layers it could not bring within);
    ns_per_core > 0 likewise with each core's compute time per step as the target prices it.
    """

    norm: str = "percentile"
    percentile: float = 99.99
    v_init: float = 0.5
    batch_size: int = 128
    neuron: str = "if"
    tau: int = 4
    levels: int = 4
    payload: str = "graded"
    pooling: str = "fold"
    T: int | None = None
    qc_epochs: int = 0
    p: float = 0.15
    qc_lr: float = 1e-4
    calibrate: str = "none"
    calib_samples: int = 256
    calib_epochs: int = 30
    calib_loss: str = "mse"
    calib_lr: float = 5e-4
    target: str | None = None
    placement: str = "anneal"
    fixed_point: bool = False
    name: str | None = None
    hop_delay: int = 0  # steps every projection adds (1: the chip's pipeline, one step per hop)
    chips: int = 0  # chips of the system mapped onto (0: the target's board, limits.chips)
    ops_per_core: float = 0.0  # synaptic ops per core and step the mapping cuts busy layers to (0: the chip's limits)
    ns_per_core: float = 0.0  # or nanoseconds of core compute time per step, as the target prices it (0: none)

    def __post_init__(self):
        for key, allowed in _CHOICES.items():
            if getattr(self, key) not in allowed:
                raise UserError(f"{key} must be one of {', '.join(allowed)}, got {getattr(self, key)!r}")
        if not 0 < self.percentile <= 100:
            raise UserError(f"percentile must be in (0, 100], got {self.percentile}")
        for key, least in (("batch_size", 1), ("tau", 1), ("levels", 1), ("calib_samples", 1), ("calib_epochs", 1),
                           ("qc_epochs", 0), ("hop_delay", 0), ("chips", 0)):
            _check_int(key, getattr(self, key), least)
        if self.T is not None:
            _check_int("T", self.T, 1)
            if self.T > MAX_TUNING_T:  # Stage I / II unroll T steps per sample in torch: time and memory grow with T
                raise UserError(f"T={self.T}: Stage I / II tune for at most {MAX_TUNING_T} steps (the methods' "
                                "papers use T <= 256); give a smaller T")
        if (self.qc_epochs or self.calibrate != "none") and self.T is None:
            raise UserError("Stage I (qc_epochs) and Stage II (calibrate) tune for a number of steps: give T")
        if self.fixed_point and self.target is None:
            raise UserError("fixed_point takes its weight and membrane bits from a target: give target")
        for key in ("ops_per_core", "ns_per_core"):
            budget = getattr(self, key)
            if isinstance(budget, bool) or not isinstance(budget, (int, float, np.integer, np.floating)) or \
                    not (np.isfinite(budget) and budget >= 0):
                raise UserError(f"{key} must be a finite number >= 0, got {budget!r}")
            if budget and self.target is None:
                raise UserError(f"{key} cuts the cores of a target's mapping by work: give target")
        if self.ops_per_core and self.ns_per_core:
            raise UserError("give one work budget per core: ops_per_core (synaptic ops) or ns_per_core (core time), "
                            "not both")
        if self.chips and self.target is None:
            raise UserError(f"chips={self.chips} is the size of the system a target's cores are mapped onto: give "
                            "target")
        for key in ("p", "qc_lr", "calib_lr", "v_init"):
            if not np.isfinite(getattr(self, key)) or getattr(self, key) < 0:
                raise UserError(f"{key} must be a finite number >= 0, got {getattr(self, key)!r}")

    def replace(self, **changes) -> ConvertSettings:
        """A copy with some settings changed (checked again)."""
        return dataclasses.replace(self, **changes)


def _check_int(key, value, least):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
        raise UserError(f"{key} must be an integer >= {least}, got {value!r}")


def _stage(progress, name, total):
    """A per-step callback for one stage, reporting (stage, done, total, note) to `progress`."""
    done = [0]

    def step(note=""):
        done[0] += 1
        if progress is not None:
            progress(name, done[0], total, note)
    return step


def convert_pipeline(model: torch.nn.Module, x, settings: ConvertSettings = ConvertSettings(), y=None,
                     progress=None) -> Network:
    """Stage I (optional) -> convert -> Stage II (optional) -> fixed point (optional) -> map (optional).

    model: the trained ANN (left unchanged); x: calibration samples (N, *input shape), array or tensor;
    y: integer labels of x (Stage I only); progress: callable(stage, done, total, note) after each step.
    Returns the `Network`, ready for `write_network`.
    """
    s = settings
    x = torch.as_tensor(x, dtype=torch.float32)
    if x.ndim < 2 or len(x) == 0:
        raise UserError(f"calibration samples must be shaped (N, *input shape) with N >= 1, got {tuple(x.shape)}")
    target = None
    if s.target is not None:
        from spikeforge.hwmodels.targets import load_target

        target = load_target(s.target)  # checked before hours of calibration, not after
    batches = [x[i:i + s.batch_size] for i in range(0, len(x), s.batch_size)]
    if s.qc_epochs > 0:
        model = _stage_one(model, x, y, batches, s, progress)
    step = _stage(progress, "calibration batches", len(batches))
    net = convert(model, batches, norm=s.norm, percentile=s.percentile, v_init_fraction=s.v_init, name=s.name,
                  progress=lambda i: step(), neuron=s.neuron, tau=s.tau, payload=s.payload, pooling=s.pooling,
                  levels=s.levels)
    if s.calibrate != "none":
        from .calibration import calibrate

        step = _stage(progress, f"calibrating ({s.calibrate}, T={s.T})",
                      sum(p.model in SPIKING_MODELS for p in net.populations))
        net = calibrate(net, model, x[:s.calib_samples], s.T, mode=s.calibrate, epochs=s.calib_epochs,
                        loss=s.calib_loss, lr=s.calib_lr, progress=lambda name, msg: step(f"{name}: {msg}"))
    if s.fixed_point:
        from .fixed_point import to_fixed_point

        if not target.limits.get("membrane_bits"):
            raise UserError(f"target {target.name!r} gives no limits.membrane_bits: no fixed-point mode")
        net = to_fixed_point(net, int(target.limits["weight_bits"]), int(target.limits["membrane_bits"]))
    if target is not None:
        from .mapping import MAX_WORK_ROUNDS, WorkBudgetWarning, map_network, map_to_work, split_and_measure_work

        # spiking fan-in relays take their thresholds from the calibration samples (converter/fanin.py)
        calib = x[:min(s.calib_samples, 64)].numpy()
        if s.ops_per_core or s.ns_per_core:  # pipelined and split here, once: work measured where it will be done
            unit = "ns" if s.ns_per_core else "synops"
            budget, x_work = s.ns_per_core or s.ops_per_core, x[:min(s.calib_samples, 8)].numpy()
            net, work = split_and_measure_work(net, target, x_work, s.T or 32, calibration=calib,
                                               hop_delay=s.hop_delay, unit=unit)
            net, _, over = map_to_work(net, target, x_work, s.T or 32, work, budget, unit=unit,
                                       placement=s.placement, chips=s.chips or None)
            if over:
                worst = ", ".join(f"{k} {v:.0f}" for k, v in sorted(over.items(), key=lambda kv: -kv[1])[:5])
                warnings.warn(f"work budget {budget:g} {unit} per core and step: {len(over)} layer(s) still have a "
                              f"core over it on the calibration samples after up to {MAX_WORK_ROUNDS} re-cuts "
                              f"(busiest: {worst}): their work does not divide with their neurons, or the re-cuts "
                              "ran out or would need more cores than the chips have", WorkBudgetWarning, stacklevel=2)
        else:
            net = map_network(net, target, s.placement, hop_delay=s.hop_delay, calibration=calib,
                              steps=s.T or 32, chips=s.chips or None)
    elif s.hop_delay:
        from .mapping import pipelined

        net = pipelined(net, s.hop_delay)
    return net


def _stage_one(model, x, y, batches, s, progress):
    """Stage I: replace activations by quantization-clip-floor-shift ones for T steps and fine-tune."""
    from .qc import qc_finetune, to_qc_ann

    if y is None:
        raise UserError("Stage I (qc_epochs > 0) fine-tunes on labelled data: give y, the labels of x")
    y = torch.as_tensor(y)
    if y.dtype.is_floating_point or y.dtype == torch.bool or y.ndim != 1:
        raise UserError(f"labels must be a 1-d integer array, got {y.dtype} of shape {tuple(y.shape)}")
    if len(y) != len(x):
        raise UserError(f"{len(y)} labels for {len(x)} calibration samples")
    step = _stage(progress, f"Stage I QC-finetuning (T={s.T}, p={s.p})", s.qc_epochs)
    return qc_finetune(to_qc_ann(model, s.T, s.p, batches[:8]), x, y.long(), epochs=s.qc_epochs, lr=s.qc_lr,
                       progress=lambda epoch, loss: step(f"loss {loss:.4f}"))
