"""Write an ECMT spiking transformer (a model written against the `ops` interface of `spikeforge.converter.ecmt`) into a
network file: multi-threshold populations at the `mt` points (one per attention head where the value has
heads), `ec` nodes for LayerNorm / softmax / GELU, `ec_matmul` nodes (one per head) for the products of two
spiking operands, and every linear piece in between (linear layers, residual sums, class token and position
terms, LayerNorm's affine part, the attention scale, reshapes) folded into the projections that feed the
next node.

How: the maps between nodes are affine, so they are read off probe passes, one per source population, in
which the source outputs chosen probe rows, every other population outputs 0, and row 0 (all zeros) gives
the constant terms. A transformer's maps act on every token alike, so a source viewed as (tokens n, channels
d) is probed with d rows "channel c in every token", n rows "one random vector in token t only" and two
random rows: n + d + 2 rows instead of n·d. A map that acts on each token alike is written once as a
`pointwise` projection (d_out, d_in); any other (the image into the patch embedding, a class-token selection)
gets a full probe of just the source tokens that reach it, in chunks, and becomes a dense or sparse
projection. Every decoded map is checked against the random rows.

At ImageNet size (ViT-S/16: 197 tokens x 384 channels, a 150,528-value image): probe rows go through the model
chunk_rows at a time; responses stay on the probe's device, where they are decoded (a pointwise W) or made sparse,
and only those results reach the host; targets whose responses to the random rows agree to rounding (every
LayerNorm on the residual stream reads the same image map) share one full probe; a full probe's pass stops after
the last node it needs.

Relays: the residual stream of a transformer is read by every later LayerNorm; folded, the input image and
every branch's spikes would be delivered to each of them. A node whose input equals an earlier node's input
plus a few terms reads that earlier input from a relay (an `ec` identity node: it forwards its step's input)
plus the difference, when that needs fewer synapses; so the stream is carried once, as on hardware.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import torch

from spikeforge.errors import UserError
from spikeforge.simulator.geometry import sparse_projection
from spikeforge.simulator.network import Network, Population, Projection

from .convert import _pair
from .ecmt import AnnOps
from .mapping import one_population_per_core

CHUNK_ROWS = 1024  # probe rows per pass (memory: rows x the model's largest activation); export_ecmt(chunk_rows=)
SAME_MAP = 1e-10  # responses to the random rows this close (relative) are one map read twice


class ExportError(UserError):
    """The model calls the ops interface in a way the exporter cannot write into a file."""


@dataclass
class _Node:
    """A population the model creates through an ops call, in call order."""

    name: str
    model: str
    shape: tuple
    params: dict
    transposed: bool = False  # an mt population stored as (rows, cols) whose model value is its transpose
    terms: dict = field(default_factory=dict)  # source name -> ("pointwise", W) | ("matrix", csr)
    const: np.ndarray | None = None
    patch: tuple | None = None  # the input: (rows, columns) of the patches its embedding reads (_patch_probe)


def _safe(name):
    """Population names become torch module names in the reference: no dots."""
    return name.replace(".", "_")


def _rows_view(shape, is_input=False):
    """(tokens, channels) a population is probed as: the last dimension is the channel, 1-D and the input whole."""
    size = int(np.prod(shape))
    if is_input or len(shape) < 2:
        return 1, size
    return size // shape[-1], shape[-1]


def _is_transposed(x):
    """x (batch, ..., a, b) is a transposed view of a contiguous (..., b, a) tensor."""
    return x.dim() >= 3 and x.shape[-1] > 1 and x.shape[-2] > 1 and x.stride(-2) == 1 and x.stride(-1) != 1


class _PassDone(Exception):
    """Ends a probe pass early: the nodes after the last one it needs do not matter to it."""


class _ProbeOps(AnnOps):
    """One pass: population `source` outputs `rows` (rows, size), all others 0; row 0 of the batch is zeros.

    The first pass (source None, one row) lists the nodes; later passes hand each node's input to `on_input`.
    """

    def __init__(self, nodes, source, rows, thresholds, levels, payload, on_input, n_rows, last=None):
        super().__init__()
        self.nodes, self.source, self.rows = nodes, source, rows
        self.thresholds, self.levels, self.payload = thresholds, levels, payload
        self.on_input, self.n_rows, self.last = on_input, n_rows, last
        self.listing = source is None and not nodes
        self.position = 0
        self.operands = {}  # data_ptr of an mt output -> [(population name, stored transposed)] per head
        self.leaves = None  # a tracing pass (_last_targets): id(tensor) -> (tensor, the node whose output it is)

    def _output(self, node, shape):
        """The node's output in this pass: the probe rows if it is the source, else zeros (in a tracing pass, zeros
        that autograd follows: `leaves` maps each to its node)."""
        if node.name != self.source:
            out = torch.zeros(self.n_rows, *shape, dtype=torch.float64, device=self._device)
            if self.leaves is not None:
                self.leaves[id(out.requires_grad_())] = (out, node.name)
            return out
        out = torch.zeros(self.n_rows, node_size(node), dtype=torch.float64, device=self._device)
        out[1:] = self.rows
        out = out.reshape(self.n_rows, *node.shape)
        return out.transpose(-1, -2).contiguous() if node.transposed else out

    def add_input(self, shape, device):
        self._device = device
        node = self._node("input", "input", tuple(shape), None, {})
        return self._output(node, tuple(shape))

    def _node(self, name, model, shape, x, params, transposed=False):
        name = _safe(name)
        if self.listing:
            node = _Node(name, model, shape, params, transposed)
            self.nodes.append(node)
        else:
            if self.position >= len(self.nodes) or self.nodes[self.position].name != name:
                raise ExportError(f"{name}: the model called the ops interface differently in a later pass "
                                  "(its forward must not depend on the data)")
            node = self.nodes[self.position]
        self.position += 1
        if x is not None and self.on_input is not None:
            value = x.transpose(-1, -2) if transposed else x
            self.on_input(node, value.reshape(self.n_rows, -1))
        if self.last is not None and self.position > self.last:
            raise _PassDone  # every node this pass is for has been seen
        return node

    def _zero(self, x):
        """x is the output of populations other than this pass's source: zeros in every row."""
        names = self.operands.get(x.data_ptr())
        return self.source is not None and names is not None and all(n != self.source for n, _ in names)

    def embed(self, layer, x):
        if self.listing and isinstance(layer, torch.nn.Conv2d) and not isinstance(layer.padding, str) and \
                _pair(layer.kernel_size) == _pair(layer.stride) and _pair(layer.padding) == (0, 0) and \
                _pair(layer.dilation) == (1, 1):
            self.nodes[0].patch = _pair(layer.kernel_size)  # a patch embedding: _Exporter._patch_probe
        if self.source == "input" or self.listing:
            return super().embed(layer, x)
        return _row0(layer, x)  # the input is not probed: every row is row 0's

    def linear(self, name, layer, x):
        x = self.mt(name, x)
        return _row0(layer, x) if self._zero(x) else layer(x)

    def _mt_pop(self, name, x, point):
        if point not in self.thresholds:
            raise ExportError(f"no base thresholds for multi-threshold point {point!r}: collect them with StatsOps")
        t1, t2 = self.thresholds[point]
        transposed = _is_transposed(x)  # stored untransposed, read by the product as its transpose
        shape = tuple(x.shape[1:-2]) + (x.shape[-1], x.shape[-2]) if transposed else tuple(x.shape[1:])
        node = self._node(name, "multi_threshold", shape, x, dict(threshold=t1, levels=self.levels,
                                                                  threshold_neg=t2, payload=self.payload),
                          transposed)
        return node, self._output(node, tuple(x.shape[1:]))

    def mt(self, name, x):
        if x.dim() == 4:  # (batch, heads, rows, cols): one population per head, so each is a matrix operand
            heads = [self._mt_pop(f"{name}.h{i}", x[:, i], name) for i in range(x.shape[1])]
            out = torch.stack([h[1] for h in heads], 1)
            self.operands[out.data_ptr()] = [(h[0].name, h[0].transposed) for h in heads]
            return out
        node, out = self._mt_pop(name, x, name)
        self.operands[out.data_ptr()] = [(node.name, node.transposed)]
        return out

    def _ec(self, name, x, function, **params):
        if x.dim() == 4:  # (batch, heads, rows, cols): one node per head
            return torch.stack([self._ec(f"{name}.h{i}", x[:, i], function, **params) for i in range(x.shape[1])], 1)
        node = self._node(name, "ec", tuple(x.shape[1:]), x, dict(function=function, **params))
        return self._output(node, tuple(x.shape[1:]))

    def ln(self, name, module, x):
        out = self._ec(name, x, "layernorm", eps=module.eps)
        if module.elementwise_affine:
            out = out * module.weight.double() + (module.bias.double() if module.bias is not None else 0.0)
        return out

    def softmax(self, name, x):
        return self._ec(name, x, "softmax")

    def gelu(self, name, x):
        return self._ec(name, x, "gelu")

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
            operands = {"matmul_a": (names_a[i], ai), "matmul_b": (names_b[i], bi)}
            node = self._node(f"{name}.h{i}" if a.dim() == 4 else name, "ec_matmul", (ai.shape[1], bi.shape[2]),
                              None, {"operands": {k: (src, stored ^ (op.stride(-1) != 1))
                                                  for k, ((src, stored), op) in operands.items()}})
            outs.append(self._output(node, node.shape))
        return torch.stack(outs, 1) if a.dim() == 4 else outs[0]


def node_size(node):
    return int(np.prod(node.shape))


class _Exporter:
    """Runs the probe passes and decodes the affine maps between nodes (see the module docstring)."""

    def __init__(self, model, thresholds, input_shape, levels, payload, device, progress, chunk_rows=CHUNK_ROWS):
        self.chunk_rows = int(chunk_rows)
        self.model, self.thresholds, self.input_shape = model, thresholds, tuple(input_shape)
        self.levels, self.payload, self.device, self.progress = levels, payload, device, progress
        self.nodes = []
        self._pass(None, torch.zeros(0, 1), None)  # lists the nodes
        self.order = {n.name: i for i, n in enumerate(self.nodes)}
        self.last = self._last_targets()
        self.rng = np.random.default_rng(0)

    def _pass(self, source, rows, on_input, last=None, leaves=None):
        """One forward in which `source` outputs `rows`; last: stop after the node of this index; leaves: a dict
        to trace the pass in (_ProbeOps.leaves)."""
        ops = _ProbeOps(self.nodes, source, rows, self.thresholds, self.levels, self.payload, on_input,
                        rows.shape[0] + 1, last)
        ops.leaves = leaves
        x = ops.add_input(self.input_shape, self.device)
        try:
            out = self.model(x, ops)
            if ops.listing or ops.position < len(self.nodes):
                ops._node("readout", "readout", tuple(out.shape[1:]), out, {})
        except _PassDone:
            pass
        return ops

    def _last_targets(self):
        """For each node, the index of the last node whose input reads its output directly (its own index when none
        does): a probe of it can stop there. Found in one pass by following autograd from each node's input back to
        the node outputs it was computed from; {} (no early stop) if the model's forward cannot be traced so."""
        graph, leaves = {}, {}  # node name -> names of the nodes its input was computed from; the traced outputs

        def record(node, value):
            graph[node.name] = _direct_inputs(value, leaves)

        try:
            with torch.enable_grad():
                self._pass(None, torch.zeros(0, 1), record, leaves=leaves)
        except RuntimeError:  # an in-place operation on a traced output, say: probe every node to the end
            return {}
        last = {n.name: i for i, n in enumerate(self.nodes)}
        for target, sources in graph.items():
            for name in sources:
                last[name] = max(last[name], self.order[target])
        return last

    def run(self):
        sources = [n for n in self.nodes if n.model != "readout"]
        for k, src in enumerate(sources):
            self._probe(src)
            if self.progress:
                self.progress(k + 1, len(sources), src.name)
        return self.nodes

    def _probe(self, src):
        """Structured probe of one source (in passes of at most chunk_rows rows), then full probes of the tokens
        that reach non-token-wise targets."""
        n, d = _rows_view(src.shape, src.model == "input")
        g = self.rng.normal(0, 1, d)
        verify = self.rng.normal(0, 1, (2, n * d))
        rows = _ProbeRows(n, d, g, verify, self.device)
        g_t = torch.as_tensor(g, dtype=torch.float64, device=self.device)
        seen = {}  # target name -> _Response (targets that responded)
        for r0 in range(0, rows.count, self.chunk_rows):
            r1 = min(r0 + self.chunk_rows, rows.count)

            def record(node, value):
                if self.order[node.name] <= self.order[src.name]:
                    return
                if node.const is None:
                    node.const = value[0].cpu().numpy()
                resp = value[1:] - value[:1]
                if node.name in seen or bool((resp != 0).any()):
                    if node.name not in seen:
                        seen[node.name] = _Response(rows, node.shape, g_t)
                    seen[node.name].add(r0, resp)

            self._pass(src.name, rows.block(r0, r1), record, self.last.get(src.name))
        full = {}  # target name -> (source tokens its full probe needs, its response to the random rows)
        for name, response in seen.items():
            node = self.nodes[self.order[name]]
            if n == 1:
                full[name] = (np.zeros(1, np.int64), response.verify)
                continue
            term = response.pointwise()
            if term is not None and _matches(("pointwise", term), response.verify, verify):
                node.terms[src.name] = ("pointwise", term)
                continue
            full[name] = (response.tokens(), response.verify)
        if full:
            self._full_probes(src, n, d, full, verify)

    def _patch_probe(self, src, full, verify):
        """The input's map into the targets in `full` when the model embeds it by patches (a Conv2d with kernel ==
        stride): two passes instead of one unit row per input value (150,528 at 224 x 224). Rows "random values on
        patch p" find the patch each target value reads; rows "1 at offset o of every patch" then give each target
        value's weight from offset o of its patch. A target value that reads two patches, or a map that does not
        reproduce the random rows, is left to the full probe; returns the targets left to it."""
        (kh, kw) = src.patch
        if len(src.shape) != 3 or src.shape[1] % kh or src.shape[2] % kw:
            return full
        c, h, w = src.shape
        cols = np.arange(c * h * w).reshape(c, h // kh, kh, w // kw, kw)
        by_offset = cols.transpose(0, 2, 4, 1, 3).reshape(c * kh * kw, -1)  # (offsets, patches) -> input index
        n_off, n_patch = by_offset.shape
        last = max(self.order[name] for name in full)
        patch_rows = torch.zeros(n_patch, c * h * w, dtype=torch.float64, device=self.device)
        mark = torch.as_tensor(by_offset.T, device=self.device)  # (patches, offsets)
        patch_rows.scatter_(1, mark, torch.as_tensor(self.rng.normal(0, 1, (n_patch, n_off)), device=self.device))
        owner = {}

        def reach(node, value):
            if node.name in full:
                resp = (value[1:] - value[:1]).abs()
                hit = resp > 1e-12 * max(float(resp.max()), 1e-300)
                owner[node.name] = (hit.sum(0).cpu().numpy(), hit.to(torch.float64).argmax(0).cpu().numpy())

        self._pass(src.name, patch_rows, reach, last)
        del patch_rows
        triples = {name: [] for name in full}
        for o0 in range(0, n_off, self.chunk_rows):
            o1 = min(o0 + self.chunk_rows, n_off)
            rows = torch.zeros(o1 - o0, c * h * w, dtype=torch.float64, device=self.device)
            rows.scatter_(1, torch.as_tensor(by_offset[o0:o1], device=self.device), 1.0)

            def record(node, value):
                if node.name in full:
                    r, t, v = _sparse_triples(value[1:] - value[:1])
                    triples[node.name].append((r + o0, t, v))

            self._pass(src.name, rows, record, last)
        left = {}
        for name, (tokens, resp_verify) in full.items():
            count, patch = owner.get(name, (None, None))
            node = self.nodes[self.order[name]]
            if count is None or (count > 1).any():
                left[name] = (tokens, resp_verify)
                continue
            o, t, v = (np.concatenate(parts) for parts in zip(*triples[name]))
            keep = count[t] == 1  # a value that reads no patch has no weight (its response here is rounding)
            o, t, v = o[keep], t[keep], v[keep]
            term = ("matrix", sp.csr_matrix((v, (t, by_offset[o, patch[t]])), shape=(node_size(node), c * h * w)))
            if _matches(term, resp_verify, verify):
                node.terms[src.name] = term
            else:
                left[name] = (tokens, resp_verify)
        return left

    def _full_probes(self, src, n, d, full, verify):
        """Full probes of the targets in `full`; targets whose responses to the random rows agree (to float64
        rounding: a constant term added on the way rounds differently) with an earlier one's, on the same tokens,
        share its probe and its map, which must reproduce their own responses as every map must."""
        groups = []  # [leader name, [names]]
        for name, (tokens, resp) in full.items():
            for leader, members in groups:
                tokens_l, resp_l = full[leader]
                if resp_l.shape == resp.shape and np.array_equal(tokens_l, tokens) and \
                        np.abs(resp_l - resp).max() <= SAME_MAP * max(np.abs(resp_l).max(), np.abs(resp).max()):
                    members.append(name)
                    break
            else:
                groups.append((name, [name]))
        leaders = {leader: full[leader] for leader, _ in groups}
        if src.patch is not None:  # the input of a patch embedding: two passes may read the leaders' maps
            leaders = self._patch_probe(src, leaders, verify)
        if leaders:
            self._full_probe(src, n, d, leaders, verify)
        for leader, members in groups:
            term = self.nodes[self.order[leader]].terms[src.name]
            for name in members[1:]:
                if not _matches(term, full[name][1], verify):
                    raise ExportError(f"{name}: the map read for {leader} does not reproduce its responses to "
                                      f"random inputs from {src.name}")
                self.nodes[self.order[name]].terms[src.name] = term

    def _full_probe(self, src, n, d, full, verify):
        """Unit rows for the needed tokens' channels, chunk_rows at a time; columns of the other tokens are 0.
        Each chunk's responses are made sparse on the device; the pass stops after the last target."""
        tokens = np.unique(np.concatenate([t for t, _ in full.values()]))
        columns = (tokens[:, None] * d + np.arange(d)[None, :]).reshape(-1)
        triples = {name: [] for name in full}  # target name -> [(target index, source column, value)] per chunk
        last = max(self.order[name] for name in full)
        for c0 in range(0, len(columns), self.chunk_rows):
            chunk = columns[c0:c0 + self.chunk_rows]
            rows = torch.zeros(len(chunk), n * d, dtype=torch.float64, device=self.device)
            rows[torch.arange(len(chunk)), torch.as_tensor(chunk, device=self.device)] = 1.0

            def record(node, value):
                if node.name in full:
                    r, t, v = _sparse_triples(value[1:] - value[:1])  # (probe row, target index, value)
                    triples[node.name].append((t, chunk[r], v))

            self._pass(src.name, rows, record, last)
        for name, (_, resp_verify) in full.items():
            node = self.nodes[self.order[name]]
            t, c, v = (np.concatenate(parts) for parts in zip(*triples[name]))
            term = ("matrix", sp.csr_matrix((v, (t, c)), shape=(node_size(node), n * d)))
            if not _matches(term, resp_verify, verify):
                raise ExportError(f"{node.name}: its input is not an affine function of {src.name} (the map read "
                                  "off the probe rows does not reproduce random inputs)")
            node.terms[src.name] = term


def _row0(layer, x):
    """layer(x) for an x whose rows all equal row 0 (zeros in a probe pass): row 0's output (the bias) repeated,
    without the product over every row."""
    out = layer(x[:1])
    return out.expand(len(x), *out.shape[1:]).contiguous()


def _direct_inputs(x, leaves):
    """The nodes whose outputs x was computed from (tensors in `leaves`), found by walking x's autograd graph."""
    found, seen = set(), set()
    stack = [x.grad_fn] if x.grad_fn is not None else []
    if id(x) in leaves:
        found.add(leaves[id(x)][1])
    while stack:
        fn = stack.pop()
        for nxt, _ in fn.next_functions:
            if nxt is None or nxt in seen:
                continue
            seen.add(nxt)
            variable = getattr(nxt, "variable", None)  # an AccumulateGrad: a leaf
            if variable is not None:
                if id(variable) in leaves:
                    found.add(leaves[id(variable)][1])
            else:
                stack.append(nxt)
    return found


class _ProbeRows:
    """The structured probe's rows, made a block at a time on the device (all of them: up to (d + n) x n·d values,
    GiBs for a 197 x 1536 source): d rows "channel c in every token", n rows "g in token t only" (n > 1), then the
    two random rows."""

    def __init__(self, n, d, g, verify, device):
        self.n, self.d, self.device = n, d, device
        self.g = torch.as_tensor(g, dtype=torch.float64, device=device)
        self.verify = torch.as_tensor(verify, dtype=torch.float64, device=device)
        self.structured = d + n if n > 1 else 0
        self.count = self.structured + 2

    def block(self, r0, r1):
        """Probe rows r0 .. r1 as a (r1 - r0, n·d) tensor."""
        n, d, structured = self.n, self.d, self.structured
        out = torch.zeros(r1 - r0, n, d, dtype=torch.float64, device=self.device)
        def span(lo, hi):
            return torch.arange(lo, max(lo, hi), device=self.device)

        chan = span(r0, min(r1, d if structured else 0))
        out[chan - r0, :, chan] = 1.0  # channel c in every token
        tok = span(max(r0, d), min(r1, structured))
        out[tok - r0, tok - d] = self.g  # g in token t only
        a = max(r0, structured)
        if r1 > a:  # the random rows
            out[a - r0:] = self.verify[a - structured:r1 - structured].reshape(-1, n, d)
        return out.reshape(r1 - r0, n * d)


class _Response:
    """One target's response to a source's structured probe, gathered block by block: the candidate pointwise W
    (channel rows, token 0), how far the channel and token rows depart from W, each token's largest response, the
    random rows' responses; the decisions (pointwise or which tokens to probe fully) are taken once all rows are in,
    against the largest magnitudes over all of them."""

    def __init__(self, rows, target_shape, g):
        self.rows, self.g = rows, g
        n_x, self.d_x = _rows_view(target_shape)
        self.candidate = rows.n > 1 and n_x == rows.n
        size = int(np.prod(target_shape))
        device = g.device
        self.w = torch.zeros(rows.d, self.d_x, dtype=torch.float64, device=device) if self.candidate else None
        self.wg = None
        self.reach = torch.zeros(rows.n, dtype=torch.float64, device=device)
        self.scale = self.chan_scale = self.chan_off = self.tok_off = 0.0
        self.verify = np.zeros((2, size))

    def add(self, r0, resp):
        """resp: the responses to probe rows r0 .. r0 + len(resp)."""
        rows, n, d = self.rows, self.rows.n, self.rows.d
        self.scale = max(self.scale, float(resp.abs().max()))
        r1 = r0 + len(resp)
        a, b = max(r0, 0), min(r1, d if rows.structured else 0)
        if b > a:  # channel rows a .. b
            chan = resp[a - r0:b - r0]
            self.chan_scale = max(self.chan_scale, float(chan.abs().max()))
            if self.candidate:
                chan = chan.reshape(b - a, n, self.d_x)
                self.w[a:b] = chan[:, 0, :]
                self.chan_off = max(self.chan_off, float((chan - chan[:, :1, :]).abs().max()))
        a, b = max(r0, d), min(r1, rows.structured)
        if b > a:  # token rows: g in token a - d .. b - d
            tok = resp[a - r0:b - r0]
            self.reach[a - d:b - d] = tok.abs().amax(1)
            if self.candidate:
                if self.wg is None:  # every channel row came before the first token row
                    self.wg = self.w.T @ self.g
                off = tok.reshape(b - a, n, self.d_x).clone()
                off[torch.arange(b - a), torch.arange(a - d, b - d)] -= self.wg  # W g belongs in token t only
                self.tok_off = max(self.tok_off, float(off.abs().max()))
        a = max(r0, rows.structured)
        if r1 > a:
            self.verify[a - rows.structured:r1 - rows.structured] = resp[a - r0:].cpu().numpy()

    def pointwise(self):
        """W (d_out, d) as numpy when the channel rows show the same map in every target token and the token rows
        confirm it, else None."""
        if not self.candidate:
            return None
        scale = max(self.chan_scale, 1e-300)
        if self.chan_off > 1e-9 * scale:
            return None
        wg = self.wg if self.wg is not None else self.w.T @ self.g  # None: no token row responded
        if self.tok_off > 1e-9 * max(float(wg.abs().max()), scale):
            return None
        w = self.w.T.cpu().numpy().copy()
        w[np.abs(w) <= 1e-12 * scale] = 0.0
        return w

    def tokens(self):
        """The source tokens whose rows reach this target (for its full probe)."""
        scale = max(self.scale, 1e-300)
        return np.flatnonzero((self.reach > 1e-12 * scale).cpu().numpy())


def _sparse_triples(resp, rel=1e-12):
    """(probe rows, target indices, values) of a (rows, targets) response tensor, entries at or below rel x its
    largest magnitude dropped (float64 probe noise); found on the tensor's device, numpy arrays out."""
    scale = resp.abs().max() if resp.numel() else 0.0
    r, t = torch.nonzero(resp.abs() > rel * scale, as_tuple=True)
    return r.cpu().numpy(), t.cpu().numpy(), resp[r, t].cpu().numpy()


def _apply(term, x):
    """The term's map applied to rows x (rows, size_S)."""
    kind, w = term
    if kind == "pointwise":
        return (x.reshape(len(x), -1, w.shape[1]) @ w.T).reshape(len(x), -1)
    return (w @ x.T).T


def _matches(term, resp_verify, verify):
    """The decoded map reproduces the responses to the random rows."""
    got = _apply(term, verify)
    return np.abs(got - resp_verify).max() <= 1e-8 * max(np.abs(resp_verify).max(), 1.0)


# ------------------------------------------------------------------------------------------------ relays
def _synapses(terms, shapes):
    """Synapses the terms need: a pointwise map once per source row, a matrix its nonzeros."""
    return sum(_rows_view(shapes[s])[0] * np.count_nonzero(w) if kind == "pointwise" else w.nnz
               for s, (kind, w) in terms.items())


def _difference(a, b):
    """terms a - b (per source), dropping maps that cancel; None when a pointwise and a matrix term meet."""
    out = {}
    for src in set(a) | set(b):
        ta, tb = a.get(src), b.get(src)
        if ta is None or tb is None:
            kind, w = ta or tb
            out[src] = (kind, w if ta is not None else -w)
            continue
        if ta[0] != tb[0] or ta[1].shape != tb[1].shape:
            return None
        if ta[1] is tb[1]:  # one map shared by both (a shared full probe): it cancels
            continue
        diff = ta[1] - tb[1]
        scale = max(abs(ta[1]).max(), abs(tb[1]).max())
        if ta[0] == "pointwise":
            diff[np.abs(diff) <= 1e-9 * scale] = 0.0
            if np.count_nonzero(diff):
                out[src] = ("pointwise", diff)
        else:
            diff = diff.tocsr()
            diff.data[np.abs(diff.data) <= 1e-9 * scale] = 0.0
            diff.eliminate_zeros()
            if diff.nnz:
                out[src] = ("matrix", diff)
    return out


def _place_relays(nodes):
    """Rewrite inputs as (relay of an earlier node's input) + difference where that saves synapses.

    Returns {node name: relay name} for the nodes whose input a relay carries.
    """
    shapes = {n.name: n.shape for n in nodes}
    original = {n.name: (dict(n.terms), n.const) for n in nodes}
    relayed = {}
    for i, x in enumerate(nodes):
        terms_x, const_x = original[x.name]
        if x.model in ("input", "ec_matmul") or len(terms_x) < 2:
            continue
        cost = _synapses(terms_x, shapes)
        best = None
        for y in nodes[:i]:
            terms_y, const_y = original[y.name]
            if y.shape != x.shape or y.model in ("input", "ec_matmul") or not terms_y:
                continue
            delta = _difference(terms_x, terms_y)
            if delta is None:
                continue
            c = node_size(x) + _synapses(delta, shapes)
            if c < cost and (best is None or c < best[0]):
                best = (c, y, delta, const_y)
        if best is not None:
            _, y, delta, const_y = best
            relay = f"{y.name}_relay"
            relayed[y.name] = relay
            x.terms = dict(delta)
            x.terms[relay] = ("identity", None)
            x.const = const_x - const_y
    return relayed


# --------------------------------------------------------------------------------------------- writing
def _is_identity(w):
    """w (dense or scipy) is a square identity matrix."""
    return w.shape[0] == w.shape[1] and (sp.csr_matrix(w) != sp.identity(w.shape[0], format="csr")).nnz == 0


def _projection(name, src, tgt, term):
    """identity, pointwise (token-wise terms come only from sources of several rows), else dense when at least
    half the weights are nonzero, else sparse."""
    kind, w = term
    if kind == "identity" or _is_identity(w):
        return Projection(name, "identity", src, tgt)
    if kind == "pointwise":
        return Projection(name, "pointwise", src, tgt, w.astype(np.float32))
    w = sp.csr_matrix(w)
    if w.nnz >= w.shape[0] * w.shape[1] / 2:
        return Projection(name, "dense", src, tgt, w.toarray().astype(np.float32))
    return sparse_projection(name, src, tgt, w)


def _populations(nodes, relayed):
    pops, projs = [], []
    for node in nodes:
        if node.name in relayed:
            relay = relayed[node.name]
            pops.append(Population.make(relay, "ec", node.shape, bias=node.const.astype(np.float32),
                                        function="identity"))
            projs += [_projection(f"{s}_to_{relay}", s, relay, t) for s, t in node.terms.items()]
            terms, const = {relay: ("identity", None)}, np.zeros(node_size(node))
        else:
            terms, const = node.terms, node.const
        params = dict(node.params)
        operands = params.pop("operands", None)
        if node.model not in ("input", "ec_matmul"):
            params["bias"] = np.zeros(node_size(node)) if const is None else const.astype(np.float32)
        pops.append(Population.make(node.name, node.model, node.shape, **params))
        if operands:
            projs += [Projection(f"{src}_to_{node.name}", kind, src, node.name, transpose=bool(tr))
                      for kind, (src, tr) in operands.items()]
        projs += [_projection(f"{s}_to_{node.name}", s, node.name, t) for s, t in terms.items()]
    return pops, projs


@torch.no_grad()
def export_ecmt(model, thresholds, input_shape, levels: int = 4, payload: str = "graded",
                name: str | None = None, relays: bool = True, device=None, progress=None,
                chunk_rows: int = CHUNK_ROWS) -> Network:
    """The ECMT network of `model` (ops interface) as a `Network`; thresholds from `ecmt.collect_thresholds`.

    relays: carry shared inputs (the residual stream) through relay nodes; device: where the probe passes run
    (a GPU speeds up large models); progress(done, total, source name) after each source's probes; chunk_rows:
    probe rows per forward pass (memory: chunk_rows x the model's largest activation, float64).
    """
    model = copy.deepcopy(model).double().eval()
    if device is not None:
        model = model.to(device)
    exporter = _Exporter(model, thresholds, input_shape, levels, payload, device, progress, chunk_rows)
    nodes = exporter.run()
    relayed = _place_relays(nodes) if relays else {}
    pops, projs = _populations(nodes, relayed)
    cores, edges = one_population_per_core(pops, projs)
    attrs = {"name": name or getattr(model, "source", type(model).__name__), "numeric_mode": "float32",
             "neuron": "multi_threshold", "method": "ECMT", "levels": int(levels),
             "time_semantics": "layer-synchronous", "mapping": "one-population-per-core"}
    return Network(pops, projs, cores, edges, attrs)
