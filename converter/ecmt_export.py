"""Write an ECMT spiking transformer (a model written against the `ops` interface of `converter.ecmt`) into a
network file: multi-threshold populations at the `mt` points, `ec` nodes for LayerNorm / softmax / GELU,
`ec_matmul` nodes (one per attention head) for the products of two spiking operands, and every linear
piece in between (linear layers, residual sums, class token and position terms, LayerNorm's affine part,
the attention scale, reshapes) folded into the projections that feed the next node.

How: the model runs once on a batch whose rows are basis vectors. Row 0 is all zeros (it gives the constant
term, i.e. the biases); the rows of each population are the unit vectors of that population's values. Every
`ops` call that starts a population reads the affine map from the earlier populations to its input off these
rows (J = rows - row 0), and hands on the unit vectors of the new population. Two passes: the first only
learns the population sizes, so the second knows how many rows to make.
"""
from __future__ import annotations

import numpy as np
import torch

from simulator.network import Network, Population, Projection

from .ecmt import AnnOps
from .mapping import one_population_per_core


class ExportError(ValueError):
    """The model calls the ops interface in a way the exporter cannot write into a file."""


class _SizeOps(AnnOps):
    """Pass 1: the ANN on one sample, listing the sizes of the populations pass 2 will create."""

    def __init__(self):
        super().__init__()
        self.sizes = []

    def mt(self, name, x):
        self.sizes += [x[0, 0].numel()] * x.shape[1] if x.dim() == 4 else [x[0].numel()]
        return x

    def ln(self, name, module, x):
        self.sizes.append(x[0].numel())
        return module(x)

    def softmax(self, name, x):
        self.sizes.append(x[0].numel())
        return torch.softmax(x, -1)

    def gelu(self, name, x):
        self.sizes.append(x[0].numel())
        return torch.nn.functional.gelu(x)

    def matmul(self, name, a, b):
        out = a @ b
        self.sizes += [out[0, 0].numel()] * out.shape[1] if out.dim() == 4 else [out[0].numel()]
        return out


class _GraphOps(AnnOps):
    """Pass 2: builds populations and projections from the basis rows (see the module docstring)."""

    def __init__(self, rows, thresholds, levels, payload):
        super().__init__()
        self.rows, self.thresholds, self.levels, self.payload = rows, thresholds, levels, payload
        self.pops, self.projs, self.ranges = [], [], []  # ranges: (population name, first row, size)
        self.next_row = 1
        self.operands = {}  # data_ptr of an mt output -> the population names of its heads

    def add_input(self, shape):
        self.pops.append(Population.make("input", "input", shape))
        return self._unit_rows("input", shape)

    def _unit_rows(self, name, shape):
        """Give population `name` the next rows of the batch: its values are the unit vectors there, 0 elsewhere."""
        n = int(np.prod(shape))
        if self.next_row + n > self.rows:
            raise ExportError(f"{name}: more populations than the first pass counted")
        self.ranges.append((name, self.next_row, n))
        basis = torch.zeros(self.rows, n, dtype=torch.float64)
        basis[self.next_row:self.next_row + n] = torch.eye(n, dtype=torch.float64)
        self.next_row += n
        return basis.reshape(self.rows, *shape)

    def _new(self, name, model, shape, value, **params):
        """Population `name` fed by the affine map read off `value` (rows, *shape); returns its unit rows."""
        name = _safe(name)
        value = value.reshape(self.rows, -1)
        n = value.shape[1]
        if int(np.prod(shape)) != n:
            raise ExportError(f"{name}: shape {shape} does not hold {n} values")
        const = value[0]
        for src, r0, size in self.ranges:
            jac = value[r0:r0 + size] - const
            scale = float(jac.abs().max()) if jac.numel() else 0.0
            if scale == 0.0:
                continue
            jac = torch.where(jac.abs() <= 1e-12 * scale, torch.zeros_like(jac), jac).T.contiguous()  # (n, size)
            self.projs.append(_projection(f"{src}_to_{name}", src, name, jac.numpy()))
        params.setdefault("bias", const.numpy())
        self.pops.append(Population.make(name, model, shape, **params))
        return self._unit_rows(name, shape)

    def _mt_pop(self, name, x, point=None):
        point = point or name  # the heads of one point share its thresholds
        if point not in self.thresholds:
            raise ExportError(f"no base thresholds for multi-threshold point {point!r}: collect them with StatsOps")
        t1, t2 = self.thresholds[point]
        return self._new(name, "multi_threshold", tuple(x.shape[1:]), x, threshold=t1, levels=self.levels,
                         threshold_neg=t2, payload=self.payload)

    def mt(self, name, x):
        if x.dim() == 4:  # (batch, heads, rows, cols): one population per head, so each is a matrix operand
            heads = [self._mt_pop(f"{name}.h{i}", x[:, i], name) for i in range(x.shape[1])]
            out = torch.stack(heads, 1)
            self.operands[out.data_ptr()] = [_safe(f"{name}.h{i}") for i in range(x.shape[1])]
            return out
        out = self._mt_pop(name, x)
        self.operands[out.data_ptr()] = [_safe(name)]
        return out

    def ln(self, name, module, x):
        out = self._new(name, "ec", tuple(x.shape[1:]), x, function="layernorm", eps=module.eps)
        if module.elementwise_affine:
            out = out * module.weight.double() + (module.bias.double() if module.bias is not None else 0.0)
        return out

    def softmax(self, name, x):
        shape = (int(np.prod(x.shape[1:-1])), x.shape[-1]) if x.dim() > 2 else tuple(x.shape[1:])
        return self._new(name, "ec", shape, x, function="softmax").reshape(x.shape)

    def gelu(self, name, x):
        return self._new(name, "ec", tuple(x.shape[1:]), x, function="gelu")

    def matmul(self, name, a, b):
        if a.dim() != b.dim() or a.dim() not in (3, 4):
            raise ExportError(f"{name}: operands of shapes {tuple(a.shape[1:])} and {tuple(b.shape[1:])}")
        names_a, names_b = self.operands.get(a.data_ptr()), self.operands.get(b.data_ptr())
        if names_a is None or names_b is None:
            raise ExportError(f"{name}: both operands of a matrix product must come straight from ops.mt "
                              "(multi-threshold neurons), possibly transposed")
        heads = a.shape[1] if a.dim() == 4 else 1
        outs = []
        for i in range(heads):
            ai, bi = (a[:, i], b[:, i]) if a.dim() == 4 else (a, b)
            node = _safe(f"{name}.h{i}" if a.dim() == 4 else name)
            self.pops.append(Population.make(node, "ec_matmul", (ai.shape[1], bi.shape[2])))
            for kind, src, op in (("matmul_a", names_a[i], ai), ("matmul_b", names_b[i], bi)):
                self.projs.append(Projection(f"{src}_to_{node}", kind, src, node, transpose=op.stride(-1) != 1))
            outs.append(self._unit_rows(node, (ai.shape[1], bi.shape[2])))
        return torch.stack(outs, 1) if a.dim() == 4 else outs[0]


def _safe(name):
    """Population names become torch module names in the reference: no dots."""
    return name.replace(".", "_")


def _projection(name, src, tgt, weight):
    """Dense when at least half the weights are nonzero, else sparse (CSR by source neuron)."""
    if np.count_nonzero(weight) >= weight.size / 2:
        return Projection(name, "dense", src, tgt, weight.astype(np.float32))
    cols = weight.T  # (source, target)
    indptr = np.concatenate([[0], np.cumsum(np.count_nonzero(cols, axis=1))]).astype(np.int64)
    rows, idx = np.nonzero(cols)
    return Projection(name, "sparse", src, tgt, cols[rows, idx].astype(np.float32), indptr=indptr,
                      indices=idx.astype(np.int32))


@torch.no_grad()
def export_ecmt(model, thresholds, input_shape, levels: int = 4, payload: str = "graded",
                name: str | None = None) -> Network:
    """The ECMT network of `model` (ops interface) as a `Network`; thresholds from `ecmt.collect_thresholds`."""
    import copy

    model = copy.deepcopy(model).double().eval()
    sizes = _SizeOps()
    out = model(torch.zeros(1, *input_shape, dtype=torch.float64), sizes)
    rows = 1 + int(np.prod(input_shape)) + sum(sizes.sizes) + out[0].numel()
    ops = _GraphOps(rows, thresholds, levels, payload)
    x = ops.add_input(tuple(input_shape))
    out = model(x, ops)
    ops._new("readout", "readout", tuple(out.shape[1:]), out)
    pops, projs = ops.pops, ops.projs
    cores, edges = one_population_per_core(pops, projs)
    attrs = {"name": name or getattr(model, "source", type(model).__name__), "numeric_mode": "float32",
             "neuron": "multi_threshold",
             "method": "ECMT", "levels": int(levels), "time_semantics": "layer-synchronous",
             "mapping": "one-population-per-core"}
    return Network(pops, projs, cores, edges, attrs)
