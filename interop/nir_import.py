"""NIR graph (PyPI `nir`) -> spikeforge network.

NIR nodes are continuous-time; they are discretized with forward Euler at step `dt` (argument, else the graph's
``dt`` metadata, else 1), the convention snnTorch and Norse use on import:

NIR node                  spikeforge population (per step)
Input                     input (the analog sample, every step)
IF(r, θ, v_reset = 0)     if: m = v + dt·r·I; spike when m > θ; v = 0 after a spike; spikes carry 1
LIF(τ, r, v_leak, θ)      lif: m = (1 - dt/τ)·v + (dt/τ)·(v_leak + r·I); same firing, reset and spikes
I(r)                      readout: integrates dt·r·I; spikeforge reports v(T) / T (NIR reads v(T): same argmax)
Output                    fed by an I node: that node is the readout; fed by anything else: a readout
                          integrating what reaches the Output (the mean over T)

Between two of those, chains of linear nodes (Affine, Linear, Conv2d, AvgPool2d, SumPool2d, Flatten, Scale)
become one projection: a single Affine / Linear stays dense, a Conv2d a conv2d, an AvgPool2d an avgpool,
a SumPool2d a depthwise conv2d of ones; longer chains are multiplied out into one sparse projection.
Delay nodes on the chain (y(t) = x(t - τ)) add round(τ/dt) steps to the projection's delay (format 1.8): one τ
for every element, a whole number of steps, and no bias flowing through them (spikeforge adds biases from the
first step), else refused naming the node.
Flatten is a C-order reshape, so both conventions in use (start_dim 0, and torch's start_dim 1 with the batch
dimension counted) read the same. Nodes written by `interop.nir_export` carry ``spikeforge_*`` metadata that
restores what NIR cannot say (subtractive reset, the >= test, initial membranes, θ-valued spikes), so a
round trip gives the same network. Anything else is refused with a `NirImportError` naming the node.

Hostile or corrupt files are refused before the work they would cause: `import_nir` first opens the file with h5py
and refuses more than `MAX_NIR_OBJECTS` HDF5 objects, external links / storage and virtual datasets (`h5safe`), more
than `MAX_NIR_BYTES` of declared data in all (the file format's SPIKEFORGE_MAX_DATASET_BYTES), more than `MAX_NODES`
nodes or `MAX_EDGES` edges, and any node whose declared shapes or weights exceed the file format's limits
(`MAX_NEURONS` values per shape, `MAX_SYNAPSES` weights) or half of this machine's memory, all from the HDF5
metadata before `nir.read` reads a byte of data. `from_nir` checks the same of graphs built in memory, bounds the
paths of linear nodes into a population (`MAX_PATHS`), and bounds the synapses a chain of linear nodes multiplies
out to before building it.

Conventions (`convention=`, `--convention`): the tools that write NIR do not all mean the NIR equations, and none
writes dt. `nir` reads the equations above. `snntorch` (snnTorch 1.0's export_to_nir): dt 1e-4 unless given, an
LIF with r = τ/dt is a Leaky that adds its input unscaled (gain exactly 1, β = 1 - dt/τ). `norse` (Norse 1.1's
to_nir): dt 1e-3 unless given; Norse writes an LIFBox's τ as dt/τ_mem_inv, so its step is
v += dt·τ_mem_inv·(v_leak - v + I) with τ_mem_inv = dt/τ, from v(0) = v_leak; an IAF adds its input unscaled
(gain 1, whatever r and dt). Scalar neuron parameters (what both write for a layer-wide β / θ) take the shape
of what arrives. Values that are legal but likely wrong (a negative r, an r that the convention's tool never
writes) warn with `NirImportWarning`, naming the node.
"""
from __future__ import annotations

import os
import warnings

import numpy as np

from spikeforge.errors import UserError, size_text
from spikeforge.simulator.fileformat import MAX_DATASET_BYTES, MAX_NEURONS, MAX_SYNAPSES
from spikeforge.simulator.geometry import conv_output_hw, synapse_matrix
from spikeforge.simulator.network import Network, Population, Projection

POPULATION_TYPES = ("Input", "IF", "LIF", "CubaLIF", "I")
NEURON_TYPES = ("IF", "LIF", "CubaLIF")
LINEAR_TYPES = ("Affine", "Linear", "Conv2d", "AvgPool2d", "SumPool2d", "Flatten", "Scale", "Delay")
NOT_SUPPORTED = {
    "LI": "a leaky integrator (non-spiking leaky readout): spikeforge's readout does not leak",
    "CubaLI": "current-based leaky integrator: no synaptic filter and no leaky readout in spikeforge",
    "Threshold": "a stateless threshold: spikeforge neurons integrate",
    "Conv1d": "1-D convolutions: spikeforge convolutions are 2-D (C, H, W)",
    "NIRGraph": "nested graphs: flatten the graph before importing it",
}


class NirImportError(UserError):
    """A NIR graph has a part spikeforge cannot represent exactly."""


class NirImportWarning(UserWarning):
    """A NIR graph imports, but a value in it is probably not what its author meant (the message names the node)."""


# what each convention's tool assumes: its dt when the graph says none, and what it was checked with
CONVENTIONS = {
    "nir": {"dt": None, "tool": "the NIR equations (nir 1.0.8)"},
    "snntorch": {"dt": 1e-4, "tool": "snnTorch 1.0.0 (snntorch.export_nir.export_to_nir)"},
    "norse": {"dt": 1e-3, "tool": "Norse 1.1.0 (norse.torch.to_nir)"},
    "sinabs": {"dt": 1.0, "tool": "sinabs 3.1.3 (sinabs.to_nir / from_nir)"},
}


def _warn(message):
    warnings.warn(message, NirImportWarning, stacklevel=3)


def _type(node) -> str:
    return type(node).__name__


def _meta(node, key, default=None):
    meta = getattr(node, "metadata", None)
    value = meta.get(key, default) if isinstance(meta, dict) else default
    return value.decode() if isinstance(value, bytes) else value


def _arr(value, name, where) -> np.ndarray:
    a = np.asarray(value, np.float64)
    if not np.all(np.isfinite(a)) and name not in ("tau", "r (LIF)", "tau_mem", "tau_syn", "r (CubaLIF)", "w_in"):
        # see _neuron and _cuba: τ = r = inf is no decay
        raise NirImportError(f"node {where!r}: {name} has non-finite values")
    return a


_BYTES_PER_VALUE = 64  # what the import holds per neuron / linear-node value (parameters, biases, index arrays)
_BYTES_PER_WEIGHT = 24  # per weight of an Affine / Linear / Conv2d: the float64 copy, a scaled copy, float32
_BYTES_PER_SYNAPSE = 48  # per synapse of a multiplied-out chain: COO / CSR index and value arrays, and a product
# Bounds on a NIR file and graph (a real network's graph has tens to hundreds of nodes):
MAX_NIR_BYTES = MAX_DATASET_BYTES  # declared (decompressed) bytes of all of a file's datasets together
MAX_NODES = 10_000  # nodes of a graph (nested graphs included)
MAX_EDGES = 100_000  # edges of a graph
MAX_PATHS = 10_000  # paths of linear nodes into one population (each becomes a projection)
MAX_SHAPE_ENTRIES = 32  # entries of a declared shape (an Input's shape, a Conv2d's input_shape, ...)
# HDF5 links (groups and datasets) of a file: counted in microseconds each before the external-data walk, which
# takes ~0.2 ms per object (a node has ten or twenty: type, parameters, metadata)
MAX_NIR_OBJECTS = 30_000


def _memory_budget():
    """Half of this machine's physical memory in bytes (None when the system does not say)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2
    except (ValueError, OSError, AttributeError):
        return None


def _check_weight(shape, where, what="weight"):
    """Refuse, before it is converted or multiplied out, a weight of more elements than the file format holds
    (MAX_SYNAPSES), more outputs (its first dimension) than a population holds, or too big for half of this
    machine's memory once converted."""
    shape = tuple(int(s) for s in shape)
    n = 1
    for d in shape:
        n *= d
    if shape and shape[0] > MAX_NEURONS:
        raise NirImportError(f"node {where!r}: {what} {shape} declares {shape[0]:,} outputs, more than the "
                             f"{MAX_NEURONS:,} a population can hold")
    if n > MAX_SYNAPSES:
        raise NirImportError(f"node {where!r}: {what} {shape} has {n:.3g} elements, more than the {MAX_SYNAPSES:,} "
                             "synapses a projection can hold")
    _check_budget(n * _BYTES_PER_WEIGHT, f"node {where!r}: {what} {shape} has {n:,} elements", "import")
    return n


def _check_budget(need, said, verb):
    """Refuse `need` bytes of work beyond half of this machine's memory; `said` names the node and the thing."""
    budget = _memory_budget()
    if budget and need > budget:
        raise NirImportError(f"{said}, about {need / 2**30:.1f} GiB to {verb}, more than half of this machine's "
                             "memory")


def _check_synapses(n, where, what):
    """Refuse a synapse matrix of `n` synapses (an upper bound) before it is built."""
    if n > MAX_SYNAPSES:
        raise NirImportError(f"node {where!r}: {what} makes up to {n:.3g} synapses, more than the "
                             f"{MAX_SYNAPSES:,} a projection can hold")
    _check_budget(n * _BYTES_PER_SYNAPSE, f"node {where!r}: {what} makes up to {n:.3g} synapses", "build")


def _check_shape(shape, where, what="shape"):
    """Refuse, before anything is allocated, a shape with a non-positive dimension or more values than a
    population can hold (the file format's limit) or than half of this machine's memory can build."""
    shape = tuple(shape)
    if any(d < 1 for d in shape):
        raise NirImportError(f"node {where!r}: {what} {shape} has a dimension < 1")
    n = 1
    for d in shape:
        n *= int(d)  # Python integers: no wrap-around
    if n > MAX_NEURONS:
        raise NirImportError(f"node {where!r}: {what} {shape} has {n:.3g} values, more than the {MAX_NEURONS:,} a "
                             "population can hold")
    _check_budget(n * _BYTES_PER_VALUE, f"node {where!r}: {what} {shape} has {n:,} values", "import")
    return shape


def _pair(v, name, where):
    a = np.asarray(v).reshape(-1)
    if a.size == 1:
        a = np.repeat(a, 2)
    if a.size != 2 or a.dtype.kind not in "iuf" or np.any(a != np.rint(a)):
        raise NirImportError(f"node {where!r}: {name} {v!r} is not one or two integers")
    return tuple(int(x) for x in a)


class _Op:
    """One linear node applied to a flat C-order vector of known input shape."""

    def __init__(self, name, node, in_shape):
        self.name, self.node, self.type, self.in_shape = name, node, _type(node), tuple(in_shape)
        t, n_in = self.type, int(np.prod(in_shape))
        where = name
        if t in ("Affine", "Linear"):
            _check_weight(np.shape(node.weight), where)
            w = _arr(node.weight, "weight", where)
            if w.ndim != 2 or w.shape[1] != n_in:
                raise NirImportError(f"node {where!r}: weight {w.shape} does not take an input of {n_in} values")
            self.weight, self.out_shape = w, (w.shape[0],)
            self.bias = _arr(node.bias, "bias", where).reshape(-1) if t == "Affine" else np.zeros(w.shape[0])
            if self.bias.size != w.shape[0]:
                raise NirImportError(f"node {where!r}: bias of {self.bias.size} values for {w.shape[0]} outputs")
        elif t == "Conv2d":
            _check_weight(np.shape(node.weight), where)
            w = _arr(node.weight, "weight", where)
            if w.ndim != 4:
                raise NirImportError(f"node {where!r}: Conv2d weight must be (C_out, C_in/groups, kh, kw), "
                                     f"got {w.shape}")
            g = int(node.groups)
            if _pair(node.dilation, "dilation", where) != (1, 1):
                raise NirImportError(f"node {where!r}: dilation {node.dilation} "
                                     "(spikeforge convolutions are not dilated)")
            self.stride = _pair(node.stride, "stride", where)
            shape3 = self._as_chw(w.shape[1] * g, node.input_shape)
            pad = node.padding
            self.crop = (False, False)  # 'same' with an even kernel: one output row / column too many to drop
            if isinstance(pad, str):
                if pad == "valid":
                    pad = (0, 0)
                elif pad == "same" and self.stride == (1, 1):
                    # torch pads k - 1 in all, (k - 1) // 2 before: an even kernel one more after. Padded k // 2 on
                    # both sides, the window of output o starts at o - k // 2, one before 'same''s: its output o is
                    # this one's o + 1 (the first row / column dropped)
                    pad = (w.shape[2] // 2, w.shape[3] // 2)
                    self.crop = (w.shape[2] % 2 == 0, w.shape[3] % 2 == 0)
                else:
                    raise NirImportError(f"node {where!r}: padding {pad!r} needs stride 1 (got {self.stride})")
            self.padding = _pair(pad, "padding", where)
            if g < 1 or w.shape[0] % g:
                raise NirImportError(f"node {where!r}: groups {g} does not divide {w.shape[0]} output channels")
            self.in_shape, self.weight, self.groups = shape3, w, g
            self.out_shape = (w.shape[0],) + tuple(
                n - c for n, c in zip(conv_output_hw(shape3[1:], w.shape[2:], self.stride, self.padding), self.crop))
            _check_shape(self.out_shape, where, "output shape")
            b = _arr(node.bias, "bias", where).reshape(-1)
            if b.size == 1:
                b = np.repeat(b, w.shape[0])
            if b.size != w.shape[0]:
                raise NirImportError(f"node {where!r}: bias of {b.size} values for {w.shape[0]} channels")
            self.bias = np.repeat(b, int(np.prod(self.out_shape[1:])))
        elif t in ("AvgPool2d", "SumPool2d"):
            if len(self.in_shape) != 3:
                raise NirImportError(f"node {where!r}: pooling needs a (C, H, W) input, got {self.in_shape}")
            self.kernel = _pair(node.kernel_size, "kernel_size", where)
            self.stride = _pair(node.stride, "stride", where)
            self.padding = _pair(node.padding, "padding", where)
            if any(2 * p > k for p, k in zip(self.padding, self.kernel)):
                raise NirImportError(f"node {where!r}: padding {self.padding} is more than half the kernel")
            c = self.in_shape[0]
            self.out_shape = (c,) + conv_output_hw(self.in_shape[1:], self.kernel, self.stride, self.padding)
            _check_shape(self.out_shape, where, "output shape")
            self.bias = np.zeros(int(np.prod(self.out_shape)))
        elif t == "Flatten":
            self.out_shape, self.bias = (n_in,), np.zeros(n_in)
        elif t == "Delay":
            d = _arr(node.delay, "delay", where).reshape(-1)
            if d.size not in (1, n_in):
                raise NirImportError(f"node {where!r}: delay of {d.size} values for an input of {n_in}")
            if np.any(d != d[0]):
                raise NirImportError(f"node {where!r}: delays that differ between elements ({d.min():g} to "
                                     f"{d.max():g}): a spikeforge projection has one delay")
            self.tau, self.steps = float(d[0]), None  # steps: set with dt (`in_steps`)
            self.out_shape, self.bias = self.in_shape, np.zeros(n_in)
        elif t == "Scale":
            s = _arr(node.scale, "scale", where).reshape(-1)
            if s.size not in (1, n_in):
                raise NirImportError(f"node {where!r}: scale of {s.size} values for an input of {n_in}")
            self.scale = np.broadcast_to(s, (n_in,)).copy()
            self.out_shape, self.bias = self.in_shape, np.zeros(n_in)
        else:
            raise NirImportError(f"node {where!r}: {t} is not a linear node")

    def _as_chw(self, channels, input_shape):
        if len(self.in_shape) == 3 and self.in_shape[0] == channels:
            return self.in_shape
        n = int(np.prod(self.in_shape))
        if input_shape is not None:
            hw = tuple(int(v) for v in np.asarray(input_shape).reshape(-1))
            if len(hw) == 2 and channels * hw[0] * hw[1] == n:
                return (channels,) + hw
        raise NirImportError(f"node {self.name!r}: Conv2d with {channels} input channels cannot read an input "
                             f"of shape {self.in_shape}")

    @property
    def n_out(self):
        return int(np.prod(self.out_shape))

    def projection(self, name, source, target):
        """This node alone as a spikeforge projection (native kind), or None when it must be multiplied out."""
        t = self.type
        if t in ("Affine", "Linear"):
            return Projection(name, "dense", source, target, self.weight.astype(np.float32))
        if t == "Conv2d" and not any(self.crop):
            return Projection(name, "conv2d", source, target, self.weight.astype(np.float32), stride=self.stride,
                              padding=self.padding, groups=self.groups)
        if t == "AvgPool2d":
            return Projection(name, "avgpool", source, target, kernel=self.kernel, stride=self.stride,
                              padding=self.padding)
        if t == "SumPool2d":
            c = self.in_shape[0]
            return Projection(name, "conv2d", source, target, np.ones((c, 1) + self.kernel, np.float32),
                              stride=self.stride, padding=self.padding, groups=c)
        if t == "Flatten":
            return Projection(name, "identity", source, target)
        return None

    def synapses(self):
        """An upper bound on the nonzeros of `matrix()`, without building it."""
        n_in = int(np.prod(self.in_shape))
        if self.type in ("Affine", "Linear"):
            return int(self.weight.size)
        if self.type in ("Flatten", "Delay", "Scale"):
            return n_in
        if self.type == "Conv2d":
            return self.n_out * int(np.prod(self.weight.shape[1:]))
        return self.n_out * self.kernel[0] * self.kernel[1]  # pooling: one input channel per output

    def matrix(self):
        """(n_out, n_in) scipy sparse matrix of the node."""
        import scipy.sparse as sp

        _check_synapses(self.synapses(), self.name, f"its {self.type} as a synapse matrix")
        n_in = int(np.prod(self.in_shape))
        if self.type in ("Affine", "Linear"):
            return sp.csr_matrix(self.weight)
        if self.type in ("Flatten", "Delay"):
            return sp.identity(n_in, format="csr")
        if self.type == "Scale":
            return sp.diags(self.scale, format="csr")
        if self.type == "Conv2d" and any(self.crop):  # the symmetric conv's matrix, its first row / column dropped
            c, h, w = self.out_shape
            full = (c, h + self.crop[0], w + self.crop[1])
            conv = Projection("m", "conv2d", "s", "t", self.weight.astype(np.float32), stride=self.stride,
                              padding=self.padding, groups=self.groups)
            keep = np.arange(int(np.prod(full))).reshape(full)[:, self.crop[0]:, self.crop[1]:].reshape(-1)
            return synapse_matrix(conv, self.in_shape, full).tocsr()[keep]
        return synapse_matrix(self.projection("m", "s", "t"), self.in_shape, self.out_shape)

    def apply(self, x):
        return self.matrix() @ x


class _Graph:
    """The NIR graph split into populations (Input, IF, LIF, I, Output-as-readout) and linear nodes."""

    def __init__(self, graph):
        import networkx as nx

        if len(graph.nodes) > MAX_NODES:
            raise NirImportError(f"the graph has {len(graph.nodes):,} nodes, more than {MAX_NODES:,}")
        if len(graph.edges) > MAX_EDGES:
            raise NirImportError(f"the graph has {len(graph.edges):,} edges, more than {MAX_EDGES:,}")
        self.nodes = dict(graph.nodes)
        self.edges = [(str(a), str(b)) for a, b in graph.edges]
        for a, b in self.edges:
            for end in (a, b):
                if end not in self.nodes:
                    raise NirImportError(f"edge {a!r} -> {b!r}: node {end!r} does not exist")
        for name, node in self.nodes.items():
            t = _type(node)
            if t in NOT_SUPPORTED:
                raise NirImportError(f"node {name!r}: {t} is not supported: {NOT_SUPPORTED[t]}")
            if t not in POPULATION_TYPES + LINEAR_TYPES + ("Output",):
                raise NirImportError(f"node {name!r}: unknown NIR node type {t}")
        g = nx.DiGraph()
        g.add_nodes_from(self.nodes)
        g.add_edges_from(self.edges)
        self.g = g
        self.order = {n: i for i, n in enumerate(self.nodes)}
        linear = g.subgraph([n for n, v in self.nodes.items() if _type(v) in LINEAR_TYPES])
        try:
            cycle = nx.find_cycle(linear)
            raise NirImportError("loop of linear nodes " + " -> ".join(a for a, _ in cycle) + f" -> {cycle[0][0]}: "
                                 "a recurrent connection must pass through a neuron (its spikes arrive a step later)")
        except nx.NetworkXNoCycle:
            pass
        inputs = [n for n, v in self.nodes.items() if _type(v) == "Input"]
        outputs = [n for n, v in self.nodes.items() if _type(v) == "Output"]
        if len(inputs) != 1 or len(outputs) != 1:
            feeds = [f"Input {n!r} -> {', '.join(map(repr, g.successors(n))) or 'nothing'}" for n in inputs]
            fed = [f"Output {n!r} <- {', '.join(map(repr, g.predecessors(n))) or 'nothing'}" for n in outputs]
            raise NirImportError(
                f"a graph needs exactly one Input and one Output node, got {len(inputs)} and {len(outputs)} ("
                + "; ".join(feeds + fed) + "). nir adds an Input for a node without incoming edges and an Output for "
                "one without outgoing edges, so an extra one usually means a missing edge between the nodes named")
        self.input, self.output = inputs[0], outputs[0]
        self.back = self._back_edges()  # the recurrent edges: what closes each cycle, seen from the Input
        self.dag = g.copy()
        self.dag.remove_edges_from(self.back)
        preds = list(g.predecessors(self.output))
        if len(preds) == 1 and _type(self.nodes[preds[0]]) == "I":
            self.readout = preds[0]
            if list(g.successors(self.readout)) != [self.output]:
                raise NirImportError(f"node {self.readout!r}: the integrator read out must feed the Output only")
        else:
            self.readout = self.output
        leads = nx.ancestors(g, self.output) | {self.output}  # one walk, not one per node
        for name, node in self.nodes.items():
            if _type(node) == "I" and name != self.readout:
                raise NirImportError(f"node {name!r}: an integrator inside the graph (spikeforge's only non-spiking "
                                     "integrator is the readout that feeds the Output)")
            if name not in (self.input, self.output, self.readout) and _type(node) != "Output" and \
                    name not in leads:
                raise NirImportError(f"node {name!r} does not lead to the Output")
        self.is_population = {n: _type(v) in ("Input",) + NEURON_TYPES or n == self.readout
                              for n, v in self.nodes.items()}
        # a neuron whose only successor is the Scale(θ) written by nir_export: spikes carry θ
        self.theta_scale = {}
        for name, node in self.nodes.items():
            succ = list(g.successors(name))
            if _type(node) in NEURON_TYPES and len(succ) == 1 and _meta(self.nodes[succ[0]], "spikeforge_role") == \
                    "spike_value" and np.array_equal(np.asarray(self.nodes[succ[0]].scale).reshape(-1),
                                                     np.asarray(node.v_threshold).reshape(-1)):
                self.theta_scale[name] = succ[0]
        self.alias = {s: n for n, s in self.theta_scale.items()}  # the Scale node stands for its neuron

    def _back_edges(self):
        """Edges into a node still on the path of a depth-first walk from the Input (then from any node not
        reached), successors in the graph's order: removing them leaves no cycle, and each recurrent loop is
        broken where it returns to the earlier node (snnTorch's RLeaky: w_rec -> lif)."""
        back, state = set(), {}  # node -> 1 on the walk's path, 2 done
        starts = [self.input] if self.input in self.nodes else []
        for start in starts + sorted(self.nodes, key=self.order.get):
            if start in state:
                continue
            state[start] = 1
            stack = [(start, iter(sorted(self.g.successors(start), key=self.order.get)))]
            while stack:
                node, it = stack[-1]
                nxt = next(it, None)
                if nxt is None:
                    state[node] = 2
                    stack.pop()
                elif state.get(nxt) == 1:
                    back.add((node, nxt))
                elif nxt not in state:
                    state[nxt] = 1
                    stack.append((nxt, iter(sorted(self.g.successors(nxt), key=self.order.get))))
        return back

    def population_order(self):
        """Population nodes in a topological order (recurrent edges aside) that keeps the graph's own order where
        it is free."""
        import networkx as nx

        if any(True for _ in self.g.predecessors(self.input)):
            raise NirImportError(f"node {self.input!r}: the Input node cannot receive edges")
        topo = nx.lexicographical_topological_sort(self.dag, key=lambda n: self.order[n])
        return [self.input] + [n for n in topo if self.is_population[n] and n != self.input]

    def paths_into(self, target):
        """Every (source population, [linear nodes, source first], recurrent) path that ends at `target`, depth
        first in the graph's order; recurrent: it crosses a recurrent edge (delivered a step later). Iterative (a
        chain of thousands of nodes is no recursion), and bounded: more than MAX_PATHS paths (diamonds of linear
        nodes multiply them) or linear nodes visited is refused naming `target`."""
        out, steps, total = [], 0, 0

        def preds(node):
            return iter(sorted(self.g.predecessors(node), key=self.order.get))

        def chain_of(link):  # link: (node, link towards the target) or None; the source-side node first
            chain = []
            while link is not None:
                chain.append(link[0])
                link = link[1]
            return chain

        def crosses_back(p, chain):
            nodes = [p] + chain + [target]
            return any((a, b) in self.back for a, b in zip(nodes, nodes[1:]))

        stack = [(preds(target), target, None)]
        while stack:
            it, node, link = stack[-1]
            p = next(it, None)
            if p is None:
                stack.pop()
                continue
            src = self.alias.get(p, p)
            if self.is_population.get(src):
                chain = chain_of(link)
                total += len(chain)
                out.append((src, chain, crosses_back(p, chain)))
                if len(out) > MAX_PATHS or total > 100 * MAX_PATHS:
                    raise NirImportError(f"node {target!r}: more than {MAX_PATHS:,} paths of linear nodes (or "
                                         f"{100 * MAX_PATHS:,} nodes along them) lead into it; spikeforge builds "
                                         "one projection per path")
            elif _type(self.nodes[p]) in LINEAR_TYPES:
                if not any(True for _ in self.g.predecessors(p)):
                    raise NirImportError(f"node {p!r} receives nothing")
                steps += 1
                if steps > 100 * MAX_PATHS:
                    raise NirImportError(f"node {target!r}: the paths of linear nodes into it pass more than "
                                         f"{100 * MAX_PATHS:,} nodes (diamonds of linear nodes multiply the paths)")
                stack.append((preds(p), p, (p, link)))
            else:
                raise NirImportError(f"edge {p!r} -> {node!r}: {_type(self.nodes[p])} cannot feed a neuron here")
        return out


def _neuron(name, node, shape, dt, readout, dt_default=False, convention="nir", looped=False):
    """Population for a population node, and g: the per-neuron factor on its input current; looped: the node has a
    recurrent input (under the snnTorch convention an IF / LIF so fed is an RLeaky, whose zero reset comes a step
    late)."""
    t, n = _type(node), int(np.prod(shape))

    def per_neuron(value, what):
        a = _arr(value, what, name).reshape(-1)
        if a.size == 1:
            a = np.repeat(a, n)
        if a.size != n:
            raise NirImportError(f"node {name!r}: {what} has {a.size} values for {n} neurons")
        return a

    if readout:
        g = dt * per_neuron(node.r, "r") if t == "I" else np.ones(n)
        return Population.make(name, "readout", shape), g, np.zeros(n)
    theta = per_neuron(node.v_threshold, "v_threshold")
    if np.any(~(theta > 0)):
        i = int(np.flatnonzero(~(theta > 0))[0])
        raise NirImportError(f"node {name!r}: v_threshold {theta[i]} at neuron {i}: v_threshold must be > 0 "
                             "(spikeforge neurons fire upwards; a threshold of 0 fires on any input)")
    reset = _meta(node, "spikeforge_reset")
    if reset is None:
        v_reset = per_neuron(node.v_reset if node.v_reset is not None else 0.0, "v_reset")
        if np.any(v_reset != 0):
            raise NirImportError(f"node {name!r}: v_reset {v_reset[v_reset != 0][0]} != 0 (spikeforge neurons "
                                 "reset to 0 or by subtracting θ)")
        reset = "zero"
    test = _meta(node, "spikeforge_threshold_test", "gt")
    v_init = np.asarray(_meta(node, "spikeforge_v_init", np.zeros(n)), np.float64).reshape(-1)
    if convention == "sinabs":
        return _sinabs(name, node, t, shape, per_neuron, theta)
    if t == "CubaLIF":
        return _cuba(name, node, shape, per_neuron, theta, reset, test, v_init, dt, convention)
    r = per_neuron(node.r, "r" if t == "IF" else "r (LIF)")
    if np.any(r == 0):
        raise NirImportError(f"node {name!r}: r = 0 at neuron {int(np.flatnonzero(r == 0)[0])}: the neuron would "
                             "ignore its input")
    if np.any(r < 0):
        _warn(f"node {name!r}: r = {r[r < 0][0]} < 0 at neuron {int(np.flatnonzero(r < 0)[0])}: its input is "
              "inverted")
    leak = np.zeros(n)
    tau = per_neuron(node.tau, "tau") if t == "LIF" else None
    if t == "LIF" and np.isinf(tau).any():
        # snnTorch writes a Leaky with β = 1 (an IF neuron) as τ = dt/(1-β) = inf and r = τ/dt = inf: dt·r/τ = 1
        v_leak = per_neuron(node.v_leak, "v_leak")
        if not (np.isinf(tau) == np.isinf(r)).all() or np.any(np.isinf(tau) & (v_leak != 0)):
            raise NirImportError(f"node {name!r}: tau = inf (no leak) needs r = inf as well (snnTorch's r = tau/dt "
                                 "for beta = 1) and v_leak = 0")
    elif not np.all(np.isfinite(r)):
        raise NirImportError(f"node {name!r}: r has non-finite values")
    if convention == "norse" and np.any(r != 1):
        _warn(f"node {name!r}: r = {r[r != 1][0]} (Norse writes r = 1 and its own import ignores r; it is applied "
              "here): was this graph written by Norse?")
    if t == "IF":
        model, decay = "if", None
        g = np.ones(n) * r if convention == "norse" else dt * r  # Norse's IAF: v += I, whatever dt
        if convention == "snntorch" and np.any(g != 1):
            i = int(np.flatnonzero(g != 1)[0])
            _warn(f"node {name!r}: an IF node under --convention snntorch integrates dt·r = {g[i]:.6g} of its input "
                  f"at neuron {i} (NIR's v += dt·r·I at dt {dt}); snnTorch exports no IF node (a beta = 1 Leaky is "
                  "an LIF with tau = inf): a graph from another tool (sinabs writes IF with r = 1, meaning v += I) "
                  "reads as it was meant with --convention nir")
    elif np.isinf(tau).all():
        model, decay, g = "if", None, np.ones(n)
    else:
        # the fraction of the way to v_leak + r·I a step goes: dt/τ (NIR, snnTorch); Norse wrote τ = dt/τ_mem_inv;
        # τ = inf (with r = inf, checked above: snnTorch's β = 1) is no leak, gain 1, next to leaky neurons or not
        inf = np.isinf(tau)
        tau_f = np.where(inf, 1.0, tau)
        step = _snap_one(np.where(inf, 0.0, dt * dt / tau_f if convention == "norse" else dt / tau_f))
        if np.any(~(step <= 1)):  # NaN included; a step of exactly 1 is β = 0 (no memory), as snnTorch's beta=0
            i = int(np.flatnonzero(~(step <= 1))[0])
            if dt_default:
                hint = (" The graph has no dt metadata (snnTorch and Norse do not write it), so dt defaulted to 1: "
                        "pass the step the model was trained with (--dt), or --convention snntorch / norse for "
                        "their defaults (snnTorch's export assumes dt = 1e-4, Norse's 1e-3)")
            elif convention == "norse":
                hint = " (Norse's step is dt·tau_mem_inv with tau_mem_inv = dt/tau: pass a smaller dt)"
            else:
                hint = " (pass a smaller dt)"
            what = f"dt·dt/tau = {step[i]:.6g} > 1" if convention == "norse" else f"tau {tau[i]} < dt {dt}"
            raise NirImportError(f"node {name!r}: {what} at neuron {i}: a forward Euler step past the leak target "
                                 f"(dt/tau above 1) overshoots it.{hint}")
        exact = _meta(node, "spikeforge_decay")
        decay = np.asarray(exact, np.float64).reshape(-1) if exact is not None else 1.0 - step
        r_f = np.where(inf, 0.0, r)
        g = dt * dt * r_f / tau_f if convention == "norse" else dt * r_f / tau_f  # r/τ first: exactly 1 when r = τ
        g = np.where(inf, 1.0, g)
        if convention == "snntorch":
            g = _snntorch_gain(name, g, "r·dt/tau", f"r = tau/dt at dt {dt}")
        leak = step * per_neuron(node.v_leak, "v_leak")
        if convention == "norse" and _meta(node, "spikeforge_v_init") is None:
            v_init = per_neuron(node.v_leak, "v_leak")  # Norse's LIFBox starts its membrane at v_leak
        model = "lif"
    if convention == "snntorch" and looped and reset == "zero" and _meta(node, "spikeforge_refractory") is None:
        # snnTorch's RLeaky (zero reset) empties its membrane the step after a spike, that step's input with it: a
        # cuba neuron without a synaptic filter (α = 0: i = I) held one step after each spike
        pop = Population.make(name, "cuba", shape, theta, v_init, 0.0, reset=reset,
                              decay=np.ones(n) if decay is None else decay, syn_decay=0.0, refractory=1,
                              spike_value="unit", threshold_test=test)
        return pop, g, leak
    pop = Population.make(name, model, shape, theta, v_init, 0.0, reset=reset, decay=decay,
                          spike_value="unit", threshold_test=test)
    return pop, g, leak


def _sinabs(name, node, t, shape, per_neuron, theta):
    """IF / LIF as sinabs 3.1's from_nir builds them: IAFSqueeze (v += I; floor(v / θ) spikes a step where v >= θ,
    each subtracted; v kept >= -θ) and LIFSqueeze (v = exp(-1/τ)·v + I, τ in steps, no input scaling: norm_input
    off; the same spikes, no floor); r is ignored (sinabs writes 1 and reads none), v_leak must be 0."""
    n = int(np.prod(shape))
    r = per_neuron(node.r, "r")
    if np.any(r != 1):
        _warn(f"node {name!r}: r = {r[r != 1][0]} is ignored under --convention sinabs (sinabs writes r = 1 and its "
              "from_nir reads none)")
    if t == "CubaLIF":
        raise NirImportError(f"node {name!r}: sinabs's from_nir builds no CubaLIF (read it with --convention nir)")
    common = dict(reset="subtract", spike_value="unit", threshold_test="ge", multi_spike=True)
    if t == "IF":
        return Population.make(name, "if", shape, theta, 0.0, 0.0, membrane_floor="-threshold", **common), \
            np.ones(n), np.zeros(n)
    tau = per_neuron(node.tau, "tau")
    if np.any(per_neuron(node.v_leak, "v_leak") != 0):
        raise NirImportError(f"node {name!r}: v_leak other than 0 (sinabs's from_nir refuses it too)")
    if np.any(~(tau > 0)):
        raise NirImportError(f"node {name!r}: tau must be > 0 (in steps, under --convention sinabs)")
    return Population.make(name, "lif", shape, theta, 0.0, 0.0, decay=np.exp(-1.0 / tau), **common), np.ones(n), \
        np.zeros(n)


def _snntorch_gain(name, g, what, how):
    """snnTorch's neurons add their input unscaled: it writes the gains so that they are 1, which float32
    parameters make 1 only to a few ulps (scaling every weight by that would move spikes): exactly 1 where within
    1e-5, and a warning naming the node where not."""
    near = np.abs(g - 1) <= 1e-5
    if not near.all():
        i = int(np.flatnonzero(~near)[0])
        _warn(f"node {name!r}: {what} = {g[i]:.6g} at neuron {i}, not 1 as snnTorch writes ({how}): was the graph "
              "written with another dt, or by another tool?")
    return np.where(near, 1.0, g)


def _snap_one(step):
    """dt/τ within float32 rounding of 1 is 1 (a factor 0): τ = dt written in float32 (snnTorch's β = 0) is a
    hair below a float64 dt."""
    return np.where(np.abs(step - 1.0) <= 1e-6, 1.0, step)


def _cuba(name, node, shape, per_neuron, theta, reset, test, v_init, dt, convention):
    """A CubaLIF node: τ_syn dI/dt = -I + w_in·x, τ_mem dv/dt = v_leak - v + r·I, forward Euler at dt with the
    current updated first: i = α·i + x, m = β·v + i (α = 1 - dt/τ_syn, β = 1 - dt/τ_mem; the gains dt·w_in/τ_syn
    and dt·r/τ_mem scale the incoming weights: g). snnTorch's Synaptic (w_in = τ_syn/dt, r = τ_mem/dt: gains 1)
    resets to zero a step late, dropping that step's input: held one step (refractory 1). Norse's LIFCell adds its
    input to i, moves v by dt·τ_mem_inv·(v_leak - v + i) with that i, then decays i: the same order, gain 1 on x."""
    n = int(np.prod(shape))
    tau_mem, tau_syn = per_neuron(node.tau_mem, "tau_mem"), per_neuron(node.tau_syn, "tau_syn")
    r, w_in = per_neuron(node.r, "r (CubaLIF)"), per_neuron(node.w_in, "w_in")
    v_leak = per_neuron(node.v_leak, "v_leak")
    if np.any(v_leak != 0):
        i = int(np.flatnonzero(v_leak != 0)[0])
        raise NirImportError(f"node {name!r}: v_leak {v_leak[i]} at neuron {i}: a CubaLIF leaking towards a value "
                             "other than 0 adds a constant to its membrane, and spikeforge's cuba neurons take their "
                             "bias into the synaptic current")
    norse = convention == "norse"
    if norse:  # Norse 1.1 writes tau = dt/tau_inv (see the module docstring) and adds its input to i unscaled
        tau_mem, tau_syn = tau_mem / dt, tau_syn / dt
        if np.any(w_in != 1):
            _warn(f"node {name!r}: w_in = {w_in[w_in != 1][0]} (Norse's LIFCell adds its input to the current "
                  "unscaled, as read here): was this graph written by Norse?")
        w_in = tau_syn / dt
    gains = []
    for tau, w, what in ((tau_mem, r, "tau_mem / r"), (tau_syn, w_in, "tau_syn / w_in")):
        inf = np.isinf(tau)
        if not (inf == np.isinf(w)).all() or np.any(~np.isfinite(w) & ~inf):
            raise NirImportError(f"node {name!r}: {what}: an infinite tau (no decay) needs an infinite gain as well "
                                 "(snnTorch's r = tau/dt for beta = 1), and only then")
        gains.append(np.where(inf, 1.0, dt * np.where(inf, 0.0, w) / np.where(inf, 1.0, tau)))
    if norse:
        gains[1] = np.ones(n)
    step_m, step_s = _snap_one(dt / tau_mem), _snap_one(dt / tau_syn)
    for step, what in ((step_m, "tau_mem"), (step_s, "tau_syn")):
        if np.any(~(step <= 1)):  # 1 is a factor 0: no memory
            i = int(np.flatnonzero(~(step <= 1))[0])
            raise NirImportError(f"node {name!r}: {what} {dt / step[i]} at neuron {i} is below dt {dt}: a forward "
                                 "Euler step with dt/tau above 1 overshoots (pass a smaller dt, or the convention "
                                 "of the tool that wrote it)")
    g = gains[0] * gains[1]
    if convention == "snntorch":
        g = _snntorch_gain(name, g, "(dt·w_in/tau_syn)·(dt·r/tau_mem)", f"w_in = tau_syn/dt, r = tau_mem/dt at dt {dt}")
    refractory = _meta(node, "spikeforge_refractory")
    if refractory is None:
        refractory = 1 if convention == "snntorch" and reset == "zero" else 0
    exact = _meta(node, "spikeforge_decay"), _meta(node, "spikeforge_syn_decay")
    decay = np.asarray(exact[0], np.float64).reshape(-1) if exact[0] is not None else 1.0 - step_m
    alpha = np.asarray(exact[1], np.float64).reshape(-1) if exact[1] is not None else 1.0 - step_s
    pop = Population.make(name, "cuba", shape, theta, v_init, 0.0, reset=reset, decay=decay, syn_decay=alpha,
                          refractory=int(refractory), spike_value="unit", threshold_test=test,
                          synapse_order=str(_meta(node, "spikeforge_synapse_order", "current_first")))
    return pop, g, np.zeros(n)


_NEURON_PARAMS = {"IF": ("r", "v_threshold", "v_reset"), "LIF": ("tau", "r", "v_leak", "v_threshold", "v_reset"),
                  "CubaLIF": ("tau_syn", "tau_mem", "r", "w_in", "v_leak", "v_threshold", "v_reset"),
                  "I": ("r",)}


def _node_shape(name, node, arriving):
    """A neuron node's layer shape: that of its per-neuron parameters, or, when every one is a scalar (a layer-wide
    β / θ, as snnTorch and Norse write them), the shape of what arrives."""
    shapes = {}
    for key in _NEURON_PARAMS[_type(node)]:
        value = getattr(node, key, None)
        a = np.asarray(value) if value is not None else None  # torch tensors too (Norse's graphs hold them)
        if a is not None and a.size > 1:
            shapes[key] = tuple(int(s) for s in a.shape)
    distinct = set(shapes.values())
    if len(distinct) > 1:
        raise NirImportError(f"node {name!r}: parameters of different shapes ("
                             + ", ".join(f"{k} {v}" for k, v in shapes.items()) + ")")
    if distinct:
        return distinct.pop()
    return tuple(arriving)


def from_nir(graph, dt: float | None = None, name: str = "", convention: str = "nir") -> Network:
    """A spikeforge `Network` (one population per core) from a `nir.NIRGraph`, read in `convention` ("nir",
    "snntorch" or "norse"); see the module docstring."""
    from spikeforge.converter.mapping import one_population_per_core
    from spikeforge.simulator.fileformat import NetworkFileError, validate_network

    if convention not in CONVENTIONS:
        raise NirImportError(f"convention {convention!r}: choose one of {', '.join(CONVENTIONS)}")
    meta_dt = _meta(graph, "dt")
    if dt is not None and meta_dt is not None and not np.isclose(float(meta_dt), dt):
        _warn(f"dt {dt} given, the graph's metadata says {meta_dt}: using {dt}")
    dt_default = dt is None and meta_dt is None and CONVENTIONS[convention]["dt"] is None  # fell back to 1
    if dt is None:
        dt = float(meta_dt) if meta_dt is not None else CONVENTIONS[convention]["dt"] or 1.0
    if not (np.isfinite(dt) and dt > 0):
        raise NirImportError(f"dt must be a positive number, got {dt}")
    G = _Graph(graph)
    order = G.population_order()
    shapes, pops, projs = {}, [], []
    in_type = getattr(G.nodes[G.input], "input_type", None)
    if not isinstance(in_type, dict) or "input" not in in_type:
        raise NirImportError(f"node {G.input!r}: an Input node needs input_type {{'input': shape}}")
    raw = np.asarray(in_type["input"]).reshape(-1)
    if raw.dtype.kind not in "iuf" or not raw.size or np.any(raw != np.rint(raw)):
        raise NirImportError(f"node {G.input!r}: input shape {in_type['input']!r} is not a list of integers")
    in_shape = tuple(int(s) for s in raw)
    if convention != "nir" and len(in_shape) in (2, 4) and in_shape[0] == 1:
        # exported from a sample with its batch dimension (snnTorch without ignore_dims=[0]): (1, N), (1, C, H, W)
        _warn(f"node {G.input!r}: input shape {in_shape} read as {in_shape[1:]} (a leading batch dimension of 1)")
        in_shape = in_shape[1:]
    in_shape = _check_shape(in_shape, G.input, "input shape")
    shapes[G.input] = in_shape
    pops.append(Population.make(G.input, "input", in_shape))
    used, suffixes = {G.input}, {}
    neurons = int(np.prod(in_shape))  # of the whole network: bounded like one population's
    budget = _memory_budget()
    node_bias = {}

    def bias_of(node_name):
        """Bias a linear node adds to everything downstream (its own plus its linear predecessors', mapped).
        Predecessors first, on an explicit stack (no recursion through long chains), each node once."""
        stack = [node_name]
        while stack:
            name = stack[-1]
            if name in node_bias:
                stack.pop()
                continue
            todo = [p for p in G.g.predecessors(name) if p in ops and p not in node_bias]
            if todo:
                stack.extend(todo)
                continue
            op = ops[name]
            incoming = np.zeros(int(np.prod(op.in_shape)))
            for p in G.g.predecessors(name):
                if p in ops:
                    incoming = incoming + node_bias[p]
            node_bias[name] = (op.apply(incoming) if np.any(incoming) else 0.0) + op.bias
            stack.pop()
        return node_bias[node_name]

    ops = {}

    def projection(name, src, tgt, chain_ops, g, tgt_shape):
        """_projection of a chain, refusing a bias that would flow through one of its Delay nodes."""
        for op in chain_ops:
            if op.type == "Delay" and np.any(np.asarray(bias_of(op.name)) != 0):
                raise NirImportError(f"node {op.name!r}: a bias flows through this Delay; spikeforge adds a "
                                     "population's bias from the first step, so it cannot arrive later")
        return _projection(name, src, tgt, chain_ops, g, shapes[src], tgt_shape)

    def chain_of(src, chain):
        shape = shapes[src]
        chain_ops = []
        for lin in chain:
            op = ops.get(lin)
            if op is None:
                op = ops[lin] = _Op(lin, G.nodes[lin], shape)
                if op.type == "Delay":
                    op.steps = _delay_steps(op, dt)
            elif int(np.prod(op.in_shape)) != int(np.prod(shape)):
                raise NirImportError(f"node {lin!r}: inputs of {np.prod(op.in_shape)} and {np.prod(shape)} "
                                     "values meet here")
            shape = op.out_shape
            chain_ops.append(op)
        return src, chain_ops, shape

    recurrent = []  # (target, source, chain): built once every population's shape is known
    gains = {}
    for tgt in order[1:]:
        paths = G.paths_into(tgt)
        recurrent += [(tgt, src, chain) for src, chain, back in paths if back]
        paths = [(src, chain) for src, chain, back in paths if not back]
        if not paths:
            raise NirImportError(f"node {tgt!r} receives nothing" + (" but its own recurrent input" if recurrent and
                                                                     recurrent[-1][0] == tgt else ""))
        built = [chain_of(src, chain) for src, chain in paths]
        node = G.nodes[tgt]
        readout = tgt == G.readout
        if _type(node) in _NEURON_PARAMS:
            shape = _node_shape(tgt, node, built[0][2])
        else:  # the Output node as readout: the shape of what reaches it
            shape = built[0][2]
        if len(shape) > 3:
            raise NirImportError(f"node {tgt!r}: shape {shape} has more than 3 dimensions")
        _check_shape(shape, tgt)
        neurons += int(np.prod(shape))
        if budget and neurons * _BYTES_PER_VALUE > budget:
            raise NirImportError(f"node {tgt!r}: with its {int(np.prod(shape)):,} neurons the network holds "
                                 f"{neurons:,}, about {neurons * _BYTES_PER_VALUE / 2**30:.1f} GiB to import, more "
                                 "than half of this machine's memory")
        for src, chain_ops, out in built:
            if int(np.prod(out)) != int(np.prod(shape)):
                raise NirImportError(f"node {tgt!r}: {np.prod(out)} values arrive from {src!r} for "
                                     f"{np.prod(shape)} neurons")
        shapes[tgt] = shape
        loop_ends = {chain[-1] for t, _, chain in recurrent if t == tgt and chain}  # their biases: below
        looped = any(t == tgt for t, _, _ in recurrent)
        pop, g, leak = _neuron(tgt, node, shape, dt, readout, dt_default, convention, looped)
        gains[tgt] = g
        bias = _meta(node, "spikeforge_bias")  # written by nir_export: exact
        if bias is None:
            bias = leak.copy()
            for p in G.g.predecessors(tgt):
                if p in ops and p not in loop_ends:
                    bias += g * np.asarray(bias_of(p)).reshape(-1)
        pop.bias = np.asarray(bias, np.float32).reshape(-1)
        pops.append(pop)
        for src, chain_ops, _ in built:
            pname = _projection_name(src, tgt, chain_ops, used, _meta(node, f"spikeforge_identity_from_{src}"),
                                     suffixes)
            projs.append(projection(pname, src, tgt, chain_ops, g, shape))
        if tgt in G.theta_scale:
            pop.spike_value = "threshold"
    pop_of = {p.name: p for p in pops}
    biased = set()
    for tgt, src, chain in recurrent:  # a step late: spikes of step t - 1 (plus the chain's Delay nodes)
        src, chain_ops, out = chain_of(src, chain)
        if int(np.prod(out)) != pop_of[tgt].size:
            raise NirImportError(f"node {tgt!r}: {np.prod(out)} values arrive from {src!r} (recurrent) for "
                                 f"{pop_of[tgt].size} neurons")
        last = chain_ops[-1].name if chain_ops else None
        if last is not None and (last, tgt) not in biased and _meta(G.nodes[tgt], "spikeforge_bias") is None:
            # the loop's bias reaches the neurons from the first step (snnTorch's RLeaky adds W·0 + b at step 0)
            biased.add((last, tgt))
            pop_of[tgt].bias = (pop_of[tgt].bias + gains[tgt] * np.asarray(bias_of(last)).reshape(-1)).astype(
                np.float32)
        pname = _projection_name(src, tgt, chain_ops, used, None, suffixes)
        proj = projection(pname, src, tgt, chain_ops, gains[tgt], shapes[tgt])
        proj.delay += 1
        projs.append(proj)
    net = Network(pops, projs, *one_population_per_core(pops, projs),
                  {"name": name or str(_meta(graph, "name", "") or "nir"), "numeric_mode": "float32",
                   "imported_from": "nir", "nir_dt": float(dt), "nir_convention": convention,
                   "mapping": "one-population-per-core"})
    try:
        validate_network(net)
    except NetworkFileError as exc:
        raise NirImportError(f"the imported network is not valid: {exc}") from None
    return net


def _delay_steps(op, dt):
    """A Delay node's τ in whole steps of dt."""
    steps = op.tau / dt
    if not (np.isfinite(steps) and steps >= 0 and abs(steps - round(steps)) <= 1e-6 * max(1.0, steps)):
        raise NirImportError(f"node {op.name!r}: delay {op.tau:g} is not a whole number of steps of dt {dt:g}")
    from spikeforge.simulator.fileformat import MAX_DELAY

    if round(steps) > MAX_DELAY:
        raise NirImportError(f"node {op.name!r}: delay of {round(steps)} steps, more than {MAX_DELAY}")
    return int(round(steps))


def _projection_name(src, tgt, chain_ops, used, identity_name=None, suffixes=None):
    one = [op for op in chain_ops if op.type not in ("Flatten", "Delay")] or \
        [op for op in chain_ops if op.type != "Delay"]  # a reshape alone names itself
    base = _meta(one[0].node, "spikeforge_projection") if len(one) == 1 else identity_name if not one else None
    base = str(base or (one[0].name if len(one) == 1 else f"{src}_to_{tgt}")).replace("/", "_")
    # the first of base, base_, base__, ... not taken; `suffixes` remembers where the last search for this base
    # ended (names are only ever added, so the shorter ones stay taken; without it thousands of projections of
    # one name would try every shorter suffix again: quadratic)
    suffixes = {} if suffixes is None else suffixes
    k = suffixes.get(base, 0)
    while base + "_" * k in used:
        k += 1
    suffixes[base] = k + 1
    name = base + "_" * k
    used.add(name)
    return name


def _projection(name, src, tgt, chain_ops, g, src_shape, tgt_shape):
    """One projection for a chain of linear nodes, scaled per target neuron by g (exact when g is 1), delayed by
    the chain's Delay nodes."""
    delay = sum(op.steps for op in chain_ops if op.type == "Delay")
    proj = _undelayed_projection(name, src, tgt, [op for op in chain_ops if op.type != "Delay"], g, src_shape,
                                 tgt_shape)
    proj.delay = delay
    return proj


def _undelayed_projection(name, src, tgt, chain_ops, g, src_shape, tgt_shape):
    """The projection of a chain without Delay nodes."""
    import scipy.sparse as sp

    weighted = [op for op in chain_ops if op.type != "Flatten"]
    ones = bool(np.all(g == 1))
    if not weighted:
        return Projection(name, "identity", src, tgt)
    if len(weighted) == 1 and weighted[0].type != "Scale":
        op = weighted[0]
        if op.type in ("Affine", "Linear"):
            w = op.weight if ones else g[:, None] * op.weight
            return Projection(name, "dense", src, tgt, w.astype(np.float32))
        c = tgt_shape[0] if len(tgt_shape) == 3 else 0
        per_channel = g.reshape(c, -1) if c else None
        p = op.projection(name, src, tgt)  # None: multiplied out below (a 'same' conv with an even kernel)
        if p is not None and (ones or (op.type == "Conv2d" and np.all(per_channel == per_channel[:, :1]))):
            if not ones:
                p.weight = (p.weight * per_channel[:, 0][:, None, None, None]).astype(np.float32)
            return p
    m = sp.identity(int(np.prod(src_shape)), format="csr")
    path = " -> ".join([src] + [op.name for op in chain_ops] + [tgt])
    for op in weighted:
        a = op.matrix()
        # nonzeros of the product, at most: Σ_j (nonzeros of column j of a) x (nonzeros of row j of m), and at
        # most every (target, source) pair; checked before scipy builds it (two small layers through a narrow
        # one make a dense product of the outer sizes)
        bound = min(float(np.dot(a.getnnz(axis=0).astype(np.float64), m.getnnz(axis=1).astype(np.float64))),
                    float(a.shape[0]) * float(m.shape[1]))
        _check_synapses(int(bound), op.name, f"the chain {path} multiplied out into one projection")
        m = a @ m
    m = (sp.diags(g) @ m).T.tocsr()  # rows per source neuron
    m.sort_indices()
    return Projection(name, "sparse", src, tgt, m.data.astype(np.float32), m.indptr.astype(np.int64),
                      m.indices.astype(np.int32))


_SHAPE_KEYS = ("shape", "input_type", "output_type", "input_shape")  # datasets that declare a shape


def _size(shape):
    n = 1
    for d in shape:
        n *= int(d)  # Python integers: no wrap-around
    return n


def _check_node_datasets(name, group):
    """The declared shapes of one node's datasets (its metadata's included), from the HDF5 metadata; shape
    declarations are read (at most MAX_SHAPE_ENTRIES values each), nothing else is."""
    import h5py

    for key, ds in group.items():
        if isinstance(ds, h5py.Group):
            if key == "metadata":
                _check_node_datasets(name, ds)
            continue  # "nodes" of a nested graph: walked by check_nir_file
        if not isinstance(ds, h5py.Dataset) or key in ("type", "edges"):
            continue
        shape = tuple(int(d) for d in (ds.shape or ()))
        n = _size(shape)
        if key == "weight":
            _check_weight(shape, name)
        elif key in _SHAPE_KEYS:
            if n > MAX_SHAPE_ENTRIES:
                raise NirImportError(f"node {name!r}: {key} declares {n:,} dimensions")
            if ds.dtype.kind not in "iuf":
                continue  # not a shape: nir.read or from_nir says so
            values = np.asarray(ds[()]).reshape(-1)
            if values.size and np.all(np.isfinite(values)) and np.all(values >= 1):
                declared = tuple(int(v) for v in values)
                _check_shape(declared, name, "input shape" if key == "shape" and
                             _node_type(group) == "Input" else key)
        elif ds.dtype.kind in "iufb" and min(shape, default=1) >= 1 and n > 1:
            _check_shape(shape, name, key)  # a per-neuron parameter: no more values than a population's


def _node_type(group):
    t = group.get("type")
    try:
        value = t[()] if t is not None and t.size == 1 else None
    except Exception:  # noqa: BLE001 - a type that does not read is nir.read's to report
        return None
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def check_nir_file(path):
    """Refuse, from its HDF5 metadata alone, a NIR file that would make `nir.read` or the import do unbounded work:
    more than MAX_NIR_OBJECTS HDF5 objects, external links / storage or virtual datasets (`ForeignDataError`,
    naming the file), more than MAX_NIR_BYTES of declared dataset bytes in all (the file format's
    SPIKEFORGE_MAX_DATASET_BYTES), more than MAX_NODES nodes or MAX_EDGES edges, or a node whose weights or
    declared shapes exceed what a projection or population holds (NirImportError naming the node; the caller
    adds the file). Returns the declared bytes."""
    import h5py

    from spikeforge.simulator.h5safe import check_self_contained

    try:
        h5 = h5py.File(path, "r")
    except OSError as exc:
        raise NirImportError(f"not a readable NIR file ({type(exc).__name__}: {' '.join(str(exc).split())})") \
            from None
    with h5:
        try:
            count = [0]

            def tally(_name):
                count[0] += 1
                return True if count[0] > MAX_NIR_OBJECTS else None  # not None: stop

            h5.id.links.visit(tally)  # names only, through hard links (no object is opened)
            if count[0] > MAX_NIR_OBJECTS:
                raise NirImportError(f"more than {MAX_NIR_OBJECTS:,} HDF5 objects (groups and datasets); a NIR graph "
                                     "spikeforge can import has far fewer")
            total = check_self_contained(h5, path)
            if total > MAX_NIR_BYTES:
                raise NirImportError(f"its datasets declare {size_text(total)} in all (decompressed), more than the "
                                     f"{size_text(MAX_NIR_BYTES)} a NIR file may hold (SPIKEFORGE_MAX_DATASET_BYTES)")
            root = h5.get("node")
            stack, nodes = [("", root)] if isinstance(root, h5py.Group) else [], 0
            while stack:
                prefix, graph = stack.pop()
                edges = graph.get("edges")
                if isinstance(edges, h5py.Dataset) and edges.shape and edges.shape[0] > MAX_EDGES:
                    raise NirImportError(f"{'graph ' + repr(prefix[:-1]) if prefix else 'the graph'} has "
                                         f"{edges.shape[0]:,} edges, more than {MAX_EDGES:,}")
                members = graph.get("nodes")
                if not isinstance(members, h5py.Group):
                    continue
                nodes += len(members)
                if nodes > MAX_NODES:
                    raise NirImportError(f"the graph has more than {MAX_NODES:,} nodes")
                # Input nodes first: a graph's declared input shape is what the rest follows from
                for key, node in sorted(members.items(), key=lambda kv: isinstance(kv[1], h5py.Group) and
                                        _node_type(kv[1]) != "Input"):
                    if isinstance(node, h5py.Group):
                        _check_node_datasets(prefix + key, node)
                        if isinstance(node.get("nodes"), h5py.Group):
                            stack.append((f"{prefix}{key}.", node))
        except UserError:
            raise
        except Exception as exc:  # noqa: BLE001 - whatever libhdf5 raises for a corrupt file
            raise NirImportError(f"not a readable NIR file ({type(exc).__name__}: {' '.join(str(exc).split())})") \
                from None
    return total


def import_nir(nir_path, out_path, dt: float | None = None, target=None, placement: str = "anneal",
               convention: str = "nir", chips: int | None = None) -> str:
    """Read a NIR file, build the network (read in `convention`: nir, snntorch or norse), optionally map it on a
    hardware target (a system of `chips` chips; None: the target's board), write it atomically."""
    import nir

    from spikeforge.converter.writer import write_network

    nir_path = os.fspath(nir_path)
    if not os.path.exists(nir_path):
        raise NirImportError(f"{nir_path}: no such file")
    try:
        check_nir_file(nir_path)  # from the HDF5 metadata, before nir.read reads (and allocates) anything
    except NirImportError as exc:
        raise NirImportError(f"{nir_path}: {exc}") from None
    try:
        graph = nir.read(nir_path, type_check=False)  # shapes are checked here, node by node
    except Exception as exc:  # the nir reader raises whatever h5py / its asserts raise
        raise NirImportError(f"{nir_path}: not a readable NIR file ({type(exc).__name__}: {exc})") from None
    try:
        net = from_nir(graph, dt, os.path.splitext(os.path.basename(nir_path))[0], convention)
    except NirImportError as exc:
        raise NirImportError(f"{nir_path}: {exc}") from None
    if target is not None:
        from spikeforge.converter.mapping import map_network
        from spikeforge.hwmodels.targets import load_target

        net = map_network(net, load_target(target) if isinstance(target, str) else target, placement, chips=chips)
    return write_network(net, out_path)
