"""ANN -> SNN conversion: trace with torch.fx, fuse BatchNorm, set thresholds, build a Network.

The traced graph is walked once. Every fx node gets a symbolic value:
- `_Spikes`: the output of a population (a spiking layer, or the analog input);
- `_Current`: a weighted sum of projections from populations plus a bias, i.e.
  what a population integrates. BatchNorm scales a current; `add` merges two.
An activation turns a current into an IF population; the model output becomes
the non-spiking readout population.
"""
from __future__ import annotations

import dataclasses
import json
import operator
from dataclasses import dataclass

import numpy as np
import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from spikeforge.errors import UserError
from spikeforge.simulator.network import Network, Population, Projection

from .activations import QCFS, ClipReLU, QCActivation
from .mapping import one_population_per_core
from .stats import collect


class ConversionError(UserError):
    """The model cannot be converted; the message names the fx nodes at fault."""


class _Tracer(torch.fx.Tracer):
    def is_leaf_module(self, m, qualname):
        return isinstance(m, (QCFS, ClipReLU, QCActivation)) or super().is_leaf_module(m, qualname)


def trace(model: nn.Module) -> torch.fx.GraphModule:
    """Symbolically trace `model` (QCFS and ClipReLU stay leaf modules)."""
    try:
        graph = _Tracer().trace(model)
    except Exception as exc:  # fx raises many types for data-dependent control flow
        raise ConversionError(f"torch.fx could not trace {type(model).__name__}: {exc}") from exc
    return torch.fx.GraphModule(model, graph)


# ----------------------------------------------------------------------------- symbolic values

@dataclass
class _Spikes:
    pop: str
    shape: tuple  # as seen by consumers (a flatten changes this, not the population)


@dataclass
class _Term:
    source: str
    kind: str  # dense | conv2d | avgpool | identity | sparse
    weight: torch.Tensor | None = None
    kernel: tuple = (1, 1)
    stride: tuple = (1, 1)
    padding: tuple = (0, 0)
    groups: int = 1
    label: str = ""


@dataclass
class _Current:
    terms: list
    bias: torch.Tensor  # one value per channel (3D) or per neuron (1D)
    shape: tuple
    nonneg: bool = False  # pooling / identity of spikes only: can be re-encoded by an IF population
    origin: str = ""  # fx node whose ANN output this current equals (for its threshold statistics)
    pooled: bool = False  # exactly one average pooling of spikes: a following synaptic layer can absorb it


def _pool_adjoint(w, src_shape, kernel, stride, padding):
    """Weights over a pooled map (..., C, oh, ow) -> weights over the map before pooling (..., C, H, W).

    Average pooling (count_include_pad) is a depthwise convolution with kernel 1/(kh*kw); a linear map W
    applied after it is W∘P, whose weights are P's adjoint (a transposed convolution) applied to W's rows.
    """
    c, h, wd = src_shape
    oh, ow = w.shape[-2:]
    rows = w.reshape(-1, 1, oh, ow)
    box = torch.full((1, 1) + tuple(kernel), 1.0 / (kernel[0] * kernel[1]), dtype=w.dtype)
    extra = (h - ((oh - 1) * stride[0] - 2 * padding[0] + kernel[0]),
             wd - ((ow - 1) * stride[1] - 2 * padding[1] + kernel[1]))
    out = F.conv_transpose2d(rows, box, stride=stride, padding=padding, output_padding=extra)
    return out.reshape(w.shape[:-3] + (c, h, wd))


class _Size:
    """Result of x.size(...) during tracing; only used to spell a flatten as view(B, -1)."""


_ACTIVATION_MODULES = (nn.ReLU, nn.ReLU6, nn.Hardtanh, nn.LeakyReLU, ClipReLU, QCFS, QCActivation)
_PASS_MODULES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Identity)
_SUPPORTED_MODULES = _ACTIVATION_MODULES + _PASS_MODULES + (
    nn.Linear, nn.Conv2d, nn.BatchNorm1d, nn.BatchNorm2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.Flatten, nn.MaxPool2d)
_ADD = (operator.add, torch.add, operator.iadd)
_RELU_FN = (F.relu, torch.relu)
_FLATTEN_FN = (torch.flatten,)
_SUPPORTED_FUNCTIONS = _ADD + _RELU_FN + _FLATTEN_FN + (F.dropout, F.avg_pool2d, F.adaptive_avg_pool2d, F.leaky_relu,
                                                        F.max_pool2d)
_SUPPORTED_METHODS = ("add", "relu", "flatten", "view", "reshape", "size")
_DATA_THRESHOLD_KINDS = ("if", "signed")  # builder populations whose θ comes from the ANN's activations


def _pair(v):
    return (int(v), int(v)) if isinstance(v, int) else tuple(int(x) for x in v)


def check_supported(gm: torch.fx.GraphModule):
    """Raise one ConversionError listing every unsupported node with its fx name (one line; the getitem / getattr
    nodes that only unpack an unsupported node's output, e.g. an LSTM's (output, state), are not listed)."""
    modules = dict(gm.named_modules())
    bad, flagged = [], set()
    for n in gm.graph.nodes:
        listed = len(bad)
        if n.op == "call_function" and n.target in (operator.getitem, getattr) and \
                any(a.name in flagged for a in n.all_input_nodes):
            flagged.add(n.name)  # unpacks an unsupported node's output: that node is already named
            continue
        if n.op == "call_module":
            m = modules[n.target]
            if not isinstance(m, _SUPPORTED_MODULES):
                bad.append(f"{n.name} ({type(m).__name__})")
            elif isinstance(m, nn.Conv2d) and (_pair(m.dilation) != (1, 1) or m.padding_mode != "zeros"):
                bad.append(f"{n.name} (Conv2d with dilation {m.dilation} / padding_mode {m.padding_mode!r})")
            elif isinstance(m, nn.AvgPool2d) and (m.ceil_mode or m.divisor_override
                                                  or (not m.count_include_pad and _pair(m.padding) != (0, 0))):
                bad.append(f"{n.name} (AvgPool2d with ceil_mode, divisor_override or count_include_pad=False)")
            elif isinstance(m, nn.MaxPool2d) and (m.ceil_mode or m.return_indices or _pair(m.dilation) != (1, 1)):
                bad.append(f"{n.name} (MaxPool2d with ceil_mode, return_indices or dilation)")
            elif isinstance(m, nn.Hardtanh) and not isinstance(m, nn.ReLU6) and m.min_val != 0.0:
                bad.append(f"{n.name} (Hardtanh with min_val {m.min_val} != 0)")
            elif isinstance(m, nn.LeakyReLU) and not 0.0 <= m.negative_slope <= 1.0:
                bad.append(f"{n.name} (LeakyReLU with negative_slope {m.negative_slope} outside [0, 1])")
            elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) and m.running_mean is None:
                bad.append(f"{n.name} (BatchNorm without running statistics)")
        elif n.op == "call_function" and n.target not in _SUPPORTED_FUNCTIONS:
            bad.append(f"{n.name} (function {getattr(n.target, '__name__', n.target)})")
        elif n.op == "call_method" and n.target not in _SUPPORTED_METHODS:
            bad.append(f"{n.name} (method .{n.target}())")
        elif n.op == "get_attr":
            bad.append(f"{n.name} (tensor attribute {n.target} used directly)")
        if len(bad) > listed:
            flagged.add(n.name)
    placeholders = [n.name for n in gm.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        bad.append(f"inputs {placeholders} (exactly one input tensor is supported)")
    if bad:
        raise ConversionError("unsupported operations in the model: " + "; ".join(bad))


# ----------------------------------------------------------------------------- the walk

class _Builder:
    """Walks the fx graph and accumulates populations and projections."""

    def __init__(self, gm, input_shape, v_init_fraction, fold_pooling=True):
        self.gm = gm
        self.fold_pooling = fold_pooling
        self.modules = dict(gm.named_modules())
        self.input_shape = tuple(input_shape)
        self.v_init_fraction = v_init_fraction
        self.pops = []  # dicts: name, shape, kind, node, current, act (module or None)
        self.signed = {}  # population name -> Leaky ReLU slope of its signed neurons
        self.shapes = {}
        self.reencoded = {}  # id(pooled current) -> (that current, its spikes): one population for all consumers

    # -- helpers
    def fail(self, node, why):
        raise ConversionError(f"node {node.name!r} ({node.op} {getattr(node.target, '__name__', node.target)}): {why}")

    def new_population(self, name, shape, current, node_name, act=None, model="if"):
        self.pops.append(dict(name=name, shape=tuple(shape), current=current, node=node_name, act=act, model=model))
        self.shapes[name] = tuple(shape)
        return _Spikes(name, tuple(shape))

    def as_spikes(self, node, v):
        """A value that feeds synapses must be spikes; re-encode a non-negative pooled current, once however many
        layers read it."""
        if isinstance(v, _Spikes):
            return v
        if isinstance(v, _Current) and v.nonneg and not torch.any(v.bias != 0):
            hit = self.reencoded.get(id(v))
            if hit is None or hit[0] is not v:  # a pooled value read by two layers (a block and its shortcut)
                hit = self.reencoded[id(v)] = (v, self.new_population(v.origin + "_spikes", v.shape, v, v.origin))
            return hit[1]
        self.fail(node, "its input is a linear combination without an activation in between "
                        "(add a ReLU, or fold the two linear layers into one)")

    def as_current(self, node, v):
        if isinstance(v, _Current):
            return v
        if v.pop == "input":
            self.fail(node, "the analog input cannot be added or normalized without a synaptic layer")
        c = v.shape[0]
        return _Current([_Term(v.pop, "identity", label=f"{node.name}_from_{v.pop}")],
                        torch.zeros(c, dtype=torch.float64), v.shape, nonneg=True, origin=node.name)

    # -- per op
    def linear(self, node, m, v):
        n_in = int(np.prod(v.shape))
        if n_in != m.in_features:
            self.fail(node, f"input has {n_in} features, layer expects {m.in_features}")
        b = m.bias.detach().cpu().double() if m.bias is not None else torch.zeros(m.out_features, dtype=torch.float64)
        w = m.weight.detach().cpu().double().clone()
        if self.foldable(v):  # pooling then Linear is one dense map from the spikes before pooling
            t = v.terms[0]
            src = self.shapes[t.source]
            pooled = (src[0], (src[1] + 2 * t.padding[0] - t.kernel[0]) // t.stride[0] + 1,
                      (src[2] + 2 * t.padding[1] - t.kernel[1]) // t.stride[1] + 1)
            w = _pool_adjoint(w.reshape((-1,) + pooled), src, t.kernel, t.stride, t.padding).reshape(len(w), -1)
            return _Current([_Term(t.source, "dense", w, label=node.name)], b.clone(), (m.out_features,))
        v = self.as_spikes(node, v)
        return _Current([_Term(v.pop, "dense", w, label=node.name)], b.clone(), (m.out_features,))

    def foldable(self, v, conv=False):
        """Can the synaptic layer consuming `v` absorb its average pooling (no re-encoding population)?

        Always exact for a Linear; for a Conv2d only with non-overlapping windows that tile the map
        (kernel == stride, no padding), so that the convolution's zero padding stays outside the map.
        """
        if not (self.fold_pooling and isinstance(v, _Current) and v.pooled):
            return False
        if not conv:
            return True
        t = v.terms[0]
        src = self.shapes[t.source]
        return (t.kernel == t.stride and t.padding == (0, 0) and src[1] % t.stride[0] == 0
                and src[2] % t.stride[1] == 0)

    def conv(self, node, m, v):
        folded = self.foldable(v, conv=True)
        pool = v.terms[0] if folded else None
        if not folded:
            v = self.as_spikes(node, v)
        if len(v.shape) != 3 or v.shape[0] != m.in_channels:
            self.fail(node, f"input shape {v.shape} does not fit Conv2d({m.in_channels}, ...)")
        k, s = _pair(m.kernel_size), _pair(m.stride)
        if isinstance(m.padding, str):
            if m.padding == "valid":
                p = (0, 0)
            elif all(kk % 2 == 1 for kk in k) and s == (1, 1):
                p = (k[0] // 2, k[1] // 2)
            else:
                self.fail(node, "padding='same' is only supported for odd kernels with stride 1")
        else:
            p = _pair(m.padding)
        h, w = v.shape[1:]
        out = (m.out_channels, (h + 2 * p[0] - k[0]) // s[0] + 1, (w + 2 * p[1] - k[1]) // s[1] + 1)
        b = m.bias.detach().cpu().double() if m.bias is not None else torch.zeros(m.out_channels, dtype=torch.float64)
        w = m.weight.detach().cpu().double().clone()
        if folded:  # pool (k = stride = r) then conv = one conv on the unpooled map: kernel x r, stride x r
            r = pool.stride
            w = w.repeat_interleave(r[0], 2).repeat_interleave(r[1], 3) / (r[0] * r[1])
            k, s, p = (k[0] * r[0], k[1] * r[1]), (s[0] * r[0], s[1] * r[1]), (p[0] * r[0], p[1] * r[1])
            return _Current([_Term(pool.source, "conv2d", w, k, s, p, m.groups, node.name)], b.clone(), out)
        return _Current([_Term(v.pop, "conv2d", w, k, s, p, m.groups, node.name)], b.clone(), out)

    def pool(self, node, v, kernel, stride, padding):
        if isinstance(v, _Current):
            self.fail(node, "average pooling must follow an activation (pooling a linear layer's output "
                            "before its activation is not supported)")
        if v.pop == "input" or len(v.shape) != 3:
            self.fail(node, f"average pooling needs a spiking (C, H, W) input, got {v.shape} from {v.pop!r}")
        c, h, w = v.shape
        out = (c, (h + 2 * padding[0] - kernel[0]) // stride[0] + 1, (w + 2 * padding[1] - kernel[1]) // stride[1] + 1)
        return _Current([_Term(v.pop, "avgpool", None, kernel, stride, padding, 1, node.name)],
                        torch.zeros(c, dtype=torch.float64), out, nonneg=True, origin=node.name, pooled=True)

    def max_pool(self, node, v, kernel, stride, padding):
        """Spiking max pooling (Rueckauer et al. 2017): a maxpool population whose neurons pass on the spikes of
        the neuron of their window with the most spikes so far."""
        if isinstance(v, _Current):
            self.fail(node, "max pooling must follow an activation: move it after the ReLU (max pooling commutes "
                            "with ReLU)")
        if v.pop == "input" or len(v.shape) != 3:
            self.fail(node, f"max pooling needs a spiking (C, H, W) input, got {v.shape} from {v.pop!r}")
        if v.pop in self.signed or any(p["name"] == v.pop and p["model"] == "maxpool" for p in self.pops):
            self.fail(node, f"max pooling of {v.pop!r}: only IF / group neurons' spikes are pooled (not signed "
                            "neurons, not another max pooling)")
        if any(2 * p > k for p, k in zip(padding, kernel)):
            self.fail(node, f"padding {padding} is more than half the kernel {kernel}")
        c, h, w = v.shape
        out = (c, (h + 2 * padding[0] - kernel[0]) // stride[0] + 1, (w + 2 * padding[1] - kernel[1]) // stride[1] + 1)
        current = _Current([_Term(v.pop, "maxpool", None, kernel, stride, padding, 1, node.name)],
                           torch.zeros(c, dtype=torch.float64), out)
        return self.new_population(node.name, out, current, node.name, model="maxpool")

    def adaptive_pool(self, node, v, size):
        if isinstance(v, _Current) or len(v.shape) != 3:
            self.fail(node, "adaptive average pooling must follow an activation on a (C, H, W) tensor")
        oh, ow = _pair(size) if size is not None else v.shape[1:]
        h, w = v.shape[1:]
        if h % oh or w % ow:
            self.fail(node, f"adaptive pooling {h}x{w} -> {oh}x{ow} is not a uniform window")
        return self.pool(node, v, (h // oh, w // ow), (h // oh, w // ow), (0, 0))

    def batchnorm(self, node, m, v):
        if not isinstance(v, _Current) or any(t.kind == "identity" and len(v.shape) == 1 for t in v.terms):
            self.fail(node, "BatchNorm is fused only into a preceding Linear/Conv2d/pooling/add")
        scale = (m.weight.detach().cpu().double() if m.affine else torch.ones(m.num_features, dtype=torch.float64))
        scale = scale / torch.sqrt(m.running_var.cpu().double() + m.eps)
        shift = (m.bias.detach().cpu().double() if m.affine else 0.0) - m.running_mean.cpu().double() * scale
        if scale.numel() != v.shape[0]:
            self.fail(node, f"BatchNorm over {scale.numel()} channels after a layer with {v.shape[0]}")
        terms = []
        for t in v.terms:
            if t.kind in ("dense", "conv2d"):
                shape = (-1,) + (1,) * (t.weight.dim() - 1)
                terms.append(_Term(t.source, t.kind, t.weight * scale.view(shape), t.kernel, t.stride, t.padding,
                                   t.groups, t.label))
            else:  # pooling or identity of spikes, scaled per channel: a depthwise convolution
                c = v.shape[0]
                kh, kw = t.kernel
                weight = (scale / (kh * kw)).view(c, 1, 1, 1).expand(c, 1, kh, kw).clone()
                terms.append(_Term(t.source, "conv2d", weight, t.kernel, t.stride, t.padding, c, t.label))
        return _Current(terms, v.bias * scale + shift, v.shape)

    def add(self, node, a, b):
        a, b = self.as_current(node, a), self.as_current(node, b)
        if a.shape != b.shape:
            self.fail(node, f"adding shapes {a.shape} and {b.shape}")
        return _Current(a.terms + b.terms, a.bias + b.bias, a.shape, a.nonneg and b.nonneg, node.name)

    def activation(self, node, m, v, negative_slope=None):
        """A spiking population for ReLU-like activations; a signed one for Leaky ReLU."""
        if negative_slope is None and isinstance(m, nn.LeakyReLU):
            negative_slope = m.negative_slope
        elif negative_slope is None and isinstance(m, QCActivation) and m.negative_slope:
            negative_slope = m.negative_slope
        if isinstance(v, _Spikes):
            if v.pop == "input":
                self.fail(node, "an activation directly on the analog input is not supported")
            if (m is None or isinstance(m, nn.ReLU)) and negative_slope is None and v.pop not in self.signed:
                return v  # ReLU of non-negative spikes is the identity
            v = self.as_current(node, v)
        if negative_slope is not None:
            if not 0.0 <= float(negative_slope) <= 1.0:
                self.fail(node, f"Leaky ReLU slope {negative_slope} must be in [0, 1]")
            self.signed[node.name] = float(negative_slope)
            return self.new_population(node.name, v.shape, v, node.name, act=m, model="signed")
        return self.new_population(node.name, v.shape, v, node.name, act=m)

    def flatten(self, node, v, start_dim=1):
        if start_dim != 1:
            self.fail(node, f"flatten must start at dim 1 (got {start_dim})")
        if self.foldable(v) and all(u.op == "call_module" and isinstance(self.modules[u.target], nn.Linear)
                                    for u in node.users):
            return dataclasses.replace(v, shape=(int(np.prod(v.shape)),))  # the Linear after it absorbs the pool
        v = self.as_spikes(node, v)
        return _Spikes(v.pop, (int(np.prod(v.shape)),))

    # -- the walk
    def run(self):
        env = {}
        out_value = None
        for n in self.gm.graph.nodes:
            args = [env[a.name] if isinstance(a, torch.fx.Node) else a for a in n.args]
            kwargs = {k: env[a.name] if isinstance(a, torch.fx.Node) else a for k, a in n.kwargs.items()}
            if n.op == "placeholder":
                self.new_population("input", self.input_shape, None, n.name, model="input")
                env[n.name] = _Spikes("input", self.input_shape)
            elif n.op == "call_module":
                env[n.name] = self.module(n, self.modules[n.target], args[0])
            elif n.op == "call_function":
                env[n.name] = self.function(n, n.target, args, kwargs)
            elif n.op == "call_method":
                env[n.name] = self.method(n, n.target, args, kwargs)
            elif n.op == "output":
                out_value = args[0]
        if isinstance(out_value, (tuple, list)) or out_value is None:
            raise ConversionError("the model must return a single tensor")
        if isinstance(out_value, _Spikes):
            out_value = _Current([_Term(out_value.pop, "identity", label="readout_from_" + out_value.pop)],
                                 torch.zeros(out_value.shape[0], dtype=torch.float64), out_value.shape)
        self.new_population("readout", out_value.shape, out_value, "output", model="readout")
        return self.pops

    def module(self, n, m, v):
        if isinstance(m, _PASS_MODULES):
            return v
        if isinstance(m, nn.Linear):
            return self.linear(n, m, v)
        if isinstance(m, nn.Conv2d):
            return self.conv(n, m, v)
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            return self.batchnorm(n, m, v)
        if isinstance(m, _ACTIVATION_MODULES):
            return self.activation(n, m, v)
        if isinstance(m, nn.AvgPool2d):
            k = _pair(m.kernel_size)
            return self.pool(n, v, k, _pair(m.stride if m.stride is not None else k), _pair(m.padding))
        if isinstance(m, nn.AdaptiveAvgPool2d):
            return self.adaptive_pool(n, v, m.output_size)
        if isinstance(m, nn.MaxPool2d):
            k = _pair(m.kernel_size)
            return self.max_pool(n, v, k, _pair(m.stride if m.stride is not None else k), _pair(m.padding))
        if isinstance(m, nn.Flatten):
            return self.flatten(n, v, m.start_dim)
        self.fail(n, "unsupported module")

    def function(self, n, fn, args, kwargs):
        if fn in _ADD:
            if len(args) != 2 or kwargs.get("alpha", 1) != 1:
                self.fail(n, "only a + b of two tensors is supported")
            if not all(isinstance(a, (_Spikes, _Current)) for a in args):
                self.fail(n, "adding a constant is not supported")
            return self.add(n, *args)
        if fn in _RELU_FN:
            return self.activation(n, None, args[0])
        if fn is F.leaky_relu:
            slope = args[1] if len(args) > 1 else kwargs.get("negative_slope", 0.01)
            return self.activation(n, None, args[0], negative_slope=float(slope))
        if fn in _FLATTEN_FN:
            return self.flatten(n, args[0], args[1] if len(args) > 1 else kwargs.get("start_dim", 0))
        if fn is F.dropout:
            return args[0]
        if fn is F.avg_pool2d:
            k = _pair(args[1] if len(args) > 1 else kwargs["kernel_size"])
            s = args[2] if len(args) > 2 else kwargs.get("stride")
            p = args[3] if len(args) > 3 else kwargs.get("padding", 0)
            return self.pool(n, args[0], k, _pair(s) if s else k, _pair(p))
        if fn is F.adaptive_avg_pool2d:
            return self.adaptive_pool(n, args[0], args[1] if len(args) > 1 else kwargs["output_size"])
        if fn is F.max_pool2d:
            k = _pair(args[1] if len(args) > 1 else kwargs["kernel_size"])
            s = args[2] if len(args) > 2 else kwargs.get("stride")
            p = args[3] if len(args) > 3 else kwargs.get("padding", 0)
            if (args[4] if len(args) > 4 else kwargs.get("dilation", 1)) not in (1, (1, 1)) or \
                    kwargs.get("ceil_mode") or kwargs.get("return_indices"):
                self.fail(n, "max pooling with dilation, ceil_mode or return_indices is not supported")
            return self.max_pool(n, args[0], k, _pair(s) if s else k, _pair(p))
        self.fail(n, "unsupported function")

    def method(self, n, name, args, kwargs):
        if name == "size":
            return _Size()
        if name == "relu":
            return self.activation(n, None, args[0])
        if name == "add":
            return self.add(n, args[0], args[1])
        if name == "flatten":
            return self.flatten(n, args[0], args[1] if len(args) > 1 else kwargs.get("start_dim", 0))
        if name in ("view", "reshape"):
            dims = args[1:] if len(args) > 2 or not isinstance(args[1], (tuple, list)) else args[1]
            if len(dims) == 2 and (isinstance(dims[0], _Size) or dims[0] == -1 or isinstance(dims[0], int)) \
                    and dims[1] == -1:
                return self.flatten(n, args[0], 1)
            self.fail(n, f"only view/reshape(batch, -1) is supported, got {dims}")
        self.fail(n, "unsupported method")


# ----------------------------------------------------------------------------- thresholds

def _threshold(pop, stats, norm, percentile):
    """θ of a population: from its QCFS/clip bound, else from data (max or percentile)."""
    act = pop["act"]
    if isinstance(act, (QCFS, QCActivation)):
        return float(act.threshold.detach())
    if isinstance(act, ClipReLU):
        return float(torch.as_tensor(act.threshold).detach())
    if isinstance(act, nn.Hardtanh):  # ReLU6 included
        return float(act.max_val)
    if norm == "max":
        value = stats.max.get(pop["node"], 0.0)
    else:
        value = stats.percentile(pop["node"], percentile)
    if not np.isfinite(value) or value <= 0:
        raise ConversionError(f"population {pop['name']!r}: no positive activation on the calibration data "
                              f"(node {pop['node']!r}); cannot set a threshold")
    return float(value)


def _expand_bias(bias, shape):
    if len(shape) == 3 and bias.numel() == shape[0]:
        return bias.view(-1, 1, 1).expand(shape).reshape(-1)
    return bias.reshape(-1)


def _unique(name, used):
    base, k = name, 1
    while name in used:
        k += 1
        name = f"{base}_{k}"
    used.add(name)
    return name


CALIBRATION_BATCH = 128  # samples per batch when the calibration data come as one array (as convert_pipeline's)


def _calibration_batches(calibration) -> list:
    """The calibration data as a list of float tensors (batch, *input shape): one tensor or array of samples (split
    into CALIBRATION_BATCH-sample batches), or an iterable of batches, where a batch may be an (inputs, labels, ...)
    tuple or list, as data loaders yield (the inputs are taken). Anything else is refused naming the batch."""
    if isinstance(calibration, (torch.Tensor, np.ndarray)):
        x = torch.as_tensor(calibration)
        if x.ndim < 2 or not len(x):
            raise ConversionError(f"calibration samples must be shaped (N, *input shape) with N >= 1, got "
                                  f"{tuple(x.shape)}")
        return list(torch.split(x, CALIBRATION_BATCH))
    try:
        items = iter(calibration)
    except TypeError:
        raise ConversionError(f"calibration must be a tensor or array of samples (N, *input shape) or an iterable "
                              f"of batches, got {type(calibration).__name__}") from None
    batches = []
    for i, batch in enumerate(items):
        if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], (torch.Tensor, np.ndarray)):
            batch = batch[0]  # (inputs, labels) from a data loader
        if not isinstance(batch, (torch.Tensor, np.ndarray)):
            raise ConversionError(f"calibration batch {i} is a {type(batch).__name__}, not a tensor or array of "
                                  "samples (batch, *input shape)")
        batch = torch.as_tensor(batch)
        if batch.ndim < 2 or batch.dtype == torch.bool or batch.is_complex():
            raise ConversionError(f"calibration batch {i} must be real samples (batch, *input shape), got "
                                  f"{batch.dtype} {tuple(batch.shape)} (pass one tensor of samples, or a list of "
                                  "batches)")
        if batches and batch.shape[1:] != batches[0].shape[1:]:
            raise ConversionError(f"calibration batch {i} has samples of shape {tuple(batch.shape[1:])}, batch 0 "
                                  f"{tuple(batches[0].shape[1:])}")
        batches.append(batch)
    if not batches:
        raise ConversionError("no calibration batches given")
    return batches


def convert(model: nn.Module, calibration, norm: str = "max", percentile: float = 99.99,
            v_init_fraction: float = 0.5, name: str | None = None, progress=None, neuron: str = "if",
            tau: int = 4, payload: str = "graded", pooling: str = "fold", levels: int = 4) -> Network:
    """Convert a trained ANN into a `Network` of spiking neurons with soft reset.

    calibration: the samples for data-based thresholds: a tensor or array (N, *input shape), or an iterable of
    batches (tensors, or (inputs, labels) pairs as a DataLoader yields);
    norm: "max" (the default here) or "percentile" (`percentile` of the positive activations; the command line
    and ConvertSettings default to percentile 99.99, which is robust to outliers);
    neuron: "if", "group" (τ members, Lv et al.) or "multi_threshold" (ECMT:
    `levels` n, positive levels only since the layers are ReLU, base threshold θ = data threshold / 2^(n-1) so
    the top level is the data threshold, v0 = 0 since the levels already round; payload "graded" or "parallel");
    v_init_fraction: v[0] = fraction x the firing unit (θ for IF, θ/τ for group neurons);
    pooling: "fold" (default) merges an average pooling into the Linear/Conv2d after it, so pooled spikes
    reach that layer exactly as the ANN's pooled activations do (a convolution after non-overlapping pooling
    becomes a strided convolution with an r-times larger kernel); "spike" re-encodes every pooled map with an
    IF population (fewer synaptic events, one more quantization).
    """
    if pooling not in ("fold", "spike"):
        raise ValueError(f"pooling must be 'fold' or 'spike', got {pooling!r}")
    if norm not in ("max", "percentile"):
        raise ValueError(f"norm must be 'max' or 'percentile', got {norm!r}")
    if neuron not in ("if", "group", "multi_threshold"):
        raise ValueError(f"neuron must be 'if', 'group' or 'multi_threshold', got {neuron!r}")
    batches = _calibration_batches(calibration)
    dtype = next((t.dtype for t in model.parameters() if t.is_floating_point()), torch.get_default_dtype())
    batches = [b.to(dtype) for b in batches]  # e.g. float64 or uint8 arrays for a float32 model
    was_training = model.training
    model.eval()
    try:
        gm = trace(model)
        check_supported(gm)
        builder = _Builder(gm, batches[0].shape[1:], v_init_fraction, pooling == "fold")
        pops, signed = builder.run(), builder.signed
        data_nodes = [p["node"] for p in pops if p["model"] in _DATA_THRESHOLD_KINDS]
        stats = collect(gm, batches, data_nodes, progress)
    finally:
        model.train(was_training)

    populations, projections, used = [], [], set()
    for p in pops:
        n = int(np.prod(p["shape"]))
        if p["model"] == "input":
            populations.append(Population.make("input", "input", p["shape"]))
            continue
        cur = p["current"]
        bias = _expand_bias(cur.bias, p["shape"]).numpy()
        if p["model"] == "if" and neuron == "multi_threshold":
            base = _threshold(p, stats, norm, percentile) / 2 ** (levels - 1)
            populations.append(Population.make(p["name"], neuron, p["shape"], base, 0.0, bias, payload=payload,
                                               levels=levels))
        elif p["model"] == "if":
            theta = _threshold(p, stats, norm, percentile)
            k = tau if neuron == "group" else 1
            populations.append(Population.make(p["name"], neuron, p["shape"], theta, theta / k * v_init_fraction, bias,
                                               tau=k, payload=payload))
        elif p["model"] == "maxpool":
            if neuron == "multi_threshold":
                raise ConversionError(f"node {p['node']!r}: max pooling of multi-threshold neurons is not supported "
                                      "(pool IF or group neurons)")
            populations.append(Population.make(p["name"], "maxpool", p["shape"], 1.0, 0.0, 0.0))
        elif p["model"] == "signed":  # Leaky ReLU: signed IF neurons whatever `neuron` says
            theta = _threshold(p, stats, norm, percentile)
            populations.append(Population.make(p["name"], "signed", p["shape"], theta, theta * v_init_fraction, bias,
                                               negative_slope=signed[p["name"]]))
        else:
            populations.append(Population.make(p["name"], "readout", p["shape"], 0.0, 0.0, bias))
        for t in cur.terms:
            w = None if t.weight is None else t.weight.numpy().astype(np.float32)
            projections.append(Projection(_unique(t.label or f"{t.source}_to_{p['name']}", used), t.kind, t.source,
                                          p["name"], w, kernel=t.kernel, stride=t.stride, padding=t.padding,
                                          groups=t.groups))
        assert n == populations[-1].size
    cores, edges = one_population_per_core(populations, projections)
    attrs = {"name": name or type(model).__name__, "numeric_mode": "float32", "normalization": norm,
             "percentile": float(percentile), "v_init_fraction": float(v_init_fraction),
             "time_semantics": "layer-synchronous", "mapping": "one-population-per-core", "neuron": neuron,
             "pooling": pooling,
             # which ANN (fx) node each spiking population stands for: calibration compares with it
             "ann_nodes": json.dumps({p["name"]: p["node"] for p in pops if p["model"] in _DATA_THRESHOLD_KINDS})}
    return Network(populations, projections, cores, edges, attrs)
