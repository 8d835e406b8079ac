"""torch.fx front end for ECMT: a Vision Transformer written in plain torch becomes a model of the `ops` interface.

`trace_vit(model)` traces the module with torch.fx and checks every node once; the returned `TracedViT` has
`forward(x, ops)`, so `collect_thresholds`, `ecmt_forward`, `ann_macs` (spikeforge.converter.ecmt) and `export_ecmt`
(spikeforge.converter.ecmt_export) take it as they take a hand-written ops model. What each node becomes:

- a Conv2d or Linear whose input is still the analog image (only linear steps since the input): the analog
  input layer (`ops.embed`), as in the ECMT paper;
- any other Linear (module or `F.linear`): multi-threshold neurons on its input, then the layer (`ops.linear`);
- LayerNorm, GELU, softmax over the last dimension (modules or functions): expectation compensation;
- a matrix product of two activations (`@`, `torch.matmul`, `bmm`): multi-threshold neurons on both operands
  and the accumulating EC product; a product with a constant stays linear;
- `nn.MultiheadAttention` (batch_first, self-attention, no masks): taken apart into its in-projection, per-head
  products, softmax and out-projection;
- reshapes, indexing, concatenation, sums, means, residual additions and products with constants: run as they
  are (they are linear, so running them once per time step is exact);
- anything else that touches activations (ReLU, exp, an elementwise product of two activations, ...):
  `TraceError` naming the node, raised by `trace_vit` before any data is seen.
"""
from __future__ import annotations

import operator

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from spikeforge.errors import UserError

from .ecmt import AnnOps


class TraceError(UserError):
    """The traced model has a node that the ECMT conversion cannot express."""


class _Affine:
    """A linear layer made of given weight and bias tensors (F.linear calls, MultiheadAttention's in-projection)."""

    def __init__(self, weight, bias):
        self.weight, self.bias = weight, bias
        self.out_features, self.in_features = weight.shape

    def __call__(self, x):
        return F.linear(x, self.weight, self.bias)


class _LayerNormFn:
    """An `F.layer_norm` call in the shape `ops.ln` expects (eps, elementwise_affine, weight, bias)."""

    def __init__(self, shape, weight, bias, eps):
        self.shape, self.weight, self.bias, self.eps = tuple(shape), weight, bias, eps
        self.elementwise_affine = weight is not None

    def __call__(self, x):
        return F.layer_norm(x, self.shape, self.weight, self.bias, self.eps)


_LINEAR_FUNCTIONS = {
    operator.add, operator.sub, operator.neg, operator.pos, operator.getitem, torch.add, torch.sub, torch.neg,
    torch.cat, torch.concat, torch.stack, torch.flatten, torch.reshape, torch.transpose, torch.permute,
    torch.squeeze, torch.unsqueeze, torch.chunk, torch.split, torch.unbind, torch.mean, torch.sum, torch.t,
    torch.narrow, torch.select, F.dropout, getattr,
}
_LINEAR_METHODS = {
    "add", "sub", "neg", "reshape", "view", "flatten", "permute", "transpose", "contiguous", "expand", "expand_as",
    "unsqueeze", "squeeze", "chunk", "split", "unbind", "mean", "sum", "t", "narrow", "select", "size", "dim",
    "repeat", "type_as", "clone",
}
_SCALE_FUNCTIONS = {operator.mul, operator.truediv, torch.mul, torch.div}  # linear with one constant operand
_SCALE_METHODS = {"mul", "div"}
_MATMUL_FUNCTIONS = {operator.matmul, torch.matmul, torch.bmm}
_MATMUL_METHODS = {"matmul", "bmm"}
_SOFTMAX_FUNCTIONS = {torch.softmax, F.softmax}
_PASS_MODULES = (nn.Dropout, nn.Identity, nn.Flatten, nn.Unflatten)
# (softmax, matrix product, product with a constant, linear) targets of call_function and call_method nodes
_TABLES = {"call_function": (_SOFTMAX_FUNCTIONS, _MATMUL_FUNCTIONS, _SCALE_FUNCTIONS, _LINEAR_FUNCTIONS),
           "call_method": ({"softmax"}, _MATMUL_METHODS, _SCALE_METHODS, _LINEAR_METHODS)}
_NO_TABLES = (set(), set(), set(), set())


def trace_vit(model: nn.Module) -> "TracedViT":
    """Trace `model` (a ViT in plain torch) with torch.fx and check that every node maps onto ECMT."""
    try:
        gm = torch.fx.symbolic_trace(model)
    except Exception as exc:  # fx raises many types (TraceError, TypeError on iterating a Proxy, ...)
        raise TraceError(f"torch.fx could not trace {type(model).__name__}: {exc} (control flow must not "
                         "depend on the data)") from exc
    return TracedViT(gm, type(model).__name__)


class TracedViT(nn.Module):
    """A traced ViT with `forward(x, ops=None)`; `plan` says what each graph node becomes."""

    def __init__(self, gm: torch.fx.GraphModule, name: str = "ViT"):
        super().__init__()
        self.gm, self.source = gm, name
        self.plan = _plan(gm, name)

    def forward(self, x, ops=None):
        return _OpsInterpreter(self.gm, self.plan, ops or AnnOps()).run(x)

    def summary(self):
        """Counts of each conversion kind in the plan (e.g. {'linear': 12, 'ln': 5, ...})."""
        out = {}
        for kind in self.plan.values():
            out[kind] = out.get(kind, 0) + 1
        return out


def _plan(gm, source):
    """node name -> 'embed' | 'linear' | 'ln' | 'gelu' | 'softmax' | 'matmul' | 'mha' | 'pass', checking each."""
    live, analog, plan = set(), set(), {}
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(placeholders) < 1:
        raise TraceError(f"{source}: the traced forward takes no input")
    for extra in placeholders[1:]:
        if not extra.args:  # a defaulted argument (e.g. ops=None) is fine, a required second input is not
            raise TraceError(f"{source}: forward takes a second input {extra.name!r}; ECMT models take one image")
    image = placeholders[0]
    live.add(image.name)
    analog.add(image.name)
    for node in gm.graph.nodes:
        if node.op in ("placeholder", "get_attr", "output"):
            continue
        inputs = [a.name for a in node.all_input_nodes if a.name in live]
        where = f"{source}: node {node.name!r} ({node.op} {_target_name(node)})"
        if not inputs or _is_shape_query(node):
            plan[node.name] = "pass"  # constant computation (class token, position terms, shapes)
            continue
        live.add(node.name)
        kind = _kind(gm, node, where, live)
        if kind == "embed" and not all(i in analog for i in inputs):
            if not _is_linear_layer(gm, node):
                raise TraceError(f"{where}: a convolution after the analog input layer has no ECMT equivalent here")
            kind = "linear"
        plan[node.name] = kind
        if kind == "pass" and all(i in analog for i in inputs) or kind == "embed":
            analog.add(node.name)
    return plan


def _is_shape_query(node):
    """x.shape, x.size(), x.dim(): sizes, not activations (the sizes are fixed for a traced model)."""
    return (node.op == "call_function" and node.target is getattr and node.args[1] in ("shape", "ndim")) or \
        (node.op == "call_method" and node.target in ("size", "dim"))


def _target_name(node):
    return node.target if isinstance(node.target, str) else getattr(node.target, "__name__", str(node.target))


def _is_linear_layer(gm, node):
    return (node.op == "call_module" and isinstance(gm.get_submodule(node.target), nn.Linear)) or \
        (node.op == "call_function" and node.target is F.linear)


def _last_dim(node, dim_pos=1):
    """True when a softmax node's dim is -1 (the only softmax ECMT's EC node computes)."""
    dim = node.kwargs.get("dim", node.args[dim_pos] if len(node.args) > dim_pos else None)
    return dim == -1


def _kind(gm, node, where, live):
    if node.op == "call_module":
        mod = gm.get_submodule(node.target)
        if isinstance(mod, (nn.Conv2d, nn.Linear)):
            return "embed"  # the caller turns it into 'linear' when the input is no longer analog
        if isinstance(mod, nn.LayerNorm):
            return "ln"
        if isinstance(mod, nn.GELU):
            if mod.approximate != "none":
                raise TraceError(f"{where}: GELU(approximate={mod.approximate!r}); the EC node computes exact GELU")
            return "gelu"
        if isinstance(mod, nn.Softmax):
            if mod.dim != -1:
                raise TraceError(f"{where}: softmax over dim {mod.dim}; the EC node takes the last dimension (-1)")
            return "softmax"
        if isinstance(mod, nn.MultiheadAttention):
            _check_mha(mod, node, where)
            return "mha"
        if isinstance(mod, _PASS_MODULES):
            return "pass"
        raise TraceError(f"{where}: {type(mod).__name__} has no ECMT equivalent (ECMT converts Linear, "
                         "LayerNorm, GELU, softmax, matrix products and linear tensor operations)")
    target = node.target
    live_args = [a for a in node.args if isinstance(a, torch.fx.Node) and a.name in live]
    if node.op == "call_function":
        if target is F.linear:
            return "embed"
        if target is F.layer_norm:
            return "ln"
        if target is F.gelu:
            if node.kwargs.get("approximate", "none") != "none":
                raise TraceError(f"{where}: tanh-approximated GELU; the EC node computes exact GELU")
            return "gelu"
    softmax, matmul, scale, linear = _TABLES.get(node.op, _NO_TABLES)
    if target in softmax:
        if not _last_dim(node):
            raise TraceError(f"{where}: softmax must be over dim=-1 (the EC node's last dimension)")
        return "softmax"
    if target in matmul:
        return "matmul" if len(live_args) == 2 else "pass"
    if target in scale:
        return _scale(node, live_args, where)
    if target in linear:
        return "pass"
    raise TraceError(f"{where} is not linear in the activations and has no ECMT equivalent "
                     "(supported: Linear, LayerNorm, GELU, softmax(dim=-1), matrix products, MultiheadAttention "
                     "and linear tensor operations)")


def _scale(node, live_args, where):
    """x * c, c * x and x / c are linear; a product or quotient of two activations is not."""
    if len(live_args) > 1:
        raise TraceError(f"{where}: elementwise product/quotient of two activations is not linear; ECMT has "
                         "no node for it (matrix products of two activations are supported)")
    if node.target in (operator.truediv, torch.div, "div") and live_args and node.args[0] is not live_args[0]:
        raise TraceError(f"{where}: dividing by an activation is not linear")
    return "pass"


def _check_mha(mod, node, where):
    if not mod.batch_first:
        raise TraceError(f"{where}: MultiheadAttention needs batch_first=True (the batch must be dimension 0)")
    if not mod._qkv_same_embed_dim or mod.bias_k is not None or mod.add_zero_attn:
        raise TraceError(f"{where}: MultiheadAttention with separate kdim/vdim, bias_k/bias_v or add_zero_attn")
    args = list(node.args[:3]) + [node.kwargs.get(k) for k in ("query", "key", "value")][len(node.args):]
    if len({id(a) for a in args if a is not None}) != 1:
        raise TraceError(f"{where}: MultiheadAttention must be self-attention (query, key and value the same)")
    for mask in ("attn_mask", "key_padding_mask"):
        if node.kwargs.get(mask) is not None:
            raise TraceError(f"{where}: MultiheadAttention with {mask} is not supported")
    if node.kwargs.get("is_causal"):
        raise TraceError(f"{where}: causal MultiheadAttention is not supported")


class _OpsInterpreter(torch.fx.Interpreter):
    """Runs the graph, sending every planned node to the `ops` object."""

    def __init__(self, gm, plan, ops):
        super().__init__(gm)
        self.plan, self.ops = plan, ops

    def run_node(self, n):
        kind = self.plan.get(n.name, "pass")
        if kind == "pass":
            return super().run_node(n)
        args, kwargs = self.fetch_args_kwargs_from_env(n)
        return getattr(self, "_" + kind)(n, args, kwargs)

    def _layer(self, n, args, kwargs):
        if n.op == "call_module":
            return self.fetch_attr(n.target), args[0], n.target
        x, weight = args[0], args[1] if len(args) > 1 else kwargs["weight"]
        bias = args[2] if len(args) > 2 else kwargs.get("bias")
        return _Affine(weight, bias), x, n.name

    def _embed(self, n, args, kwargs):
        layer, x, _ = self._layer(n, args, kwargs)
        return self.ops.embed(layer, x)

    def _linear(self, n, args, kwargs):
        layer, x, name = self._layer(n, args, kwargs)
        return self.ops.linear(f"{name}_in", layer, x)

    def _ln(self, n, args, kwargs):
        if n.op == "call_module":
            return self.ops.ln(n.target, self.fetch_attr(n.target), args[0])
        full = dict(zip(("input", "normalized_shape", "weight", "bias", "eps"), args), **kwargs)
        fn = _LayerNormFn(full["normalized_shape"], full.get("weight"), full.get("bias"), full.get("eps", 1e-5))
        return self.ops.ln(n.name, fn, full["input"])

    def _gelu(self, n, args, kwargs):
        return self.ops.gelu(n.target if n.op == "call_module" else n.name, args[0])

    def _softmax(self, n, args, kwargs):
        return self.ops.softmax(n.target if n.op == "call_module" else n.name, args[0])

    def _matmul(self, n, args, kwargs):
        a, b = args[0], args[1] if len(args) > 1 else kwargs["other"]
        return self.ops.matmul(n.name, self.ops.mt(f"{n.name}.a", a), self.ops.mt(f"{n.name}.b", b))

    def _mha(self, n, args, kwargs):
        mod, name, ops = self.fetch_attr(n.target), n.target, self.ops
        x = args[0] if args else kwargs["query"]
        b, t, d = x.shape
        h = mod.num_heads
        dh = d // h
        qkv = ops.linear(f"{name}.qkv_in", _Affine(mod.in_proj_weight, mod.in_proj_bias), x)
        q, k, v = qkv.reshape(b, t, 3, h, dh).permute(2, 0, 3, 1, 4)  # each (b, heads, tokens, d_head)
        scores = ops.matmul(f"{name}.qk", ops.mt(f"{name}.q", q), ops.mt(f"{name}.k", k.transpose(-1, -2)))
        attn = ops.softmax(f"{name}.softmax", scores * dh ** -0.5)
        out = ops.matmul(f"{name}.av", ops.mt(f"{name}.attn", attn), ops.mt(f"{name}.v", v))
        out = ops.linear(f"{name}.proj_in", mod.out_proj, out.transpose(1, 2).reshape(b, t, d))
        return out, None
