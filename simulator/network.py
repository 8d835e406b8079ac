"""In-memory form of a spikeforge network file (numpy only, no torch).

The converter builds a `Network`, the writer stores it, the reader returns one.
Neuron indices inside a population are the C-order flattening of its shape
(torch's ``flatten`` order), which is what dense and sparse projections index.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

# Neuron models of format v1. "input" injects the analog sample every step; "if" is
# integrate-and-fire; "group" is a group neuron of `tau` IF members sharing one membrane
# (Lv et al.); "signed" is an IF neuron that also fires negative spikes (for Leaky ReLU networks,
# Wang et al.); "multi_threshold" fires one of 2n power-of-two levels per step (ECMT); "ec" is a compute
# node that applies an expectation-compensated nonlinearity (ECMT); "ec_matmul" the accumulating EC product
# of two operands (ECMT); "readout" integrates without firing; "lif" is a leaky IF neuron (membrane times a
# per-neuron decay before each step's input: NIR's LIF after discretization); "maxpool" is a spiking max pooling
# gate (Rueckauer et al. 2017): each neuron passes on, unchanged, the events of the source neuron of its window
# with the most spikes so far (one maxpool projection from an if / lif / group population; no parameters); "cuba" is
# a current-based LIF neuron (NIR's CubaLIF after discretization): a synaptic current i with its own decay α feeds
# the membrane, i = α·i + I, m = β·v + i (`synapse_order` "current_first"; "membrane_first": the membrane reads
# last step's current, then the current takes this step's input), and after a spike the membrane is held at its
# reset value for `refractory` steps, ignoring its current (snnTorch's Synaptic resets to zero a step late).
# "sigma_delta" is Loihi 2's sigma-delta neuron (lava-dl netx's SDNN): it sums its input, σ += I, applies ReLU to
# σ + bias (or, `delta_input`, takes the step's input itself, as netx's input layer), and sends the change of that
# activation since its last event, carried with a residue: d = a - a_prev + r; when |d| >= θ it sends the graded
# payload floor(d / 2^payload_shift) and r = 0, else r = d; a_prev = a.
NEURON_MODELS = ("input", "if", "group", "signed", "multi_threshold", "ec", "ec_matmul", "readout", "lif",
                 "maxpool", "cuba", "sigma_delta")
# Functions of an "ec" node; layernorm and softmax normalize over the last dimension (no affine part);
# "identity" is a relay: it forwards the sum of its step's inputs (EC of the identity is the identity), so a
# value several later nodes need (a transformer's residual stream) is delivered once instead of to each of them.
EC_FUNCTIONS = ("gelu", "layernorm", "softmax", "identity")
SPIKING_MODELS = ("if", "group", "signed", "multi_threshold", "lif", "cuba", "sigma_delta")
SYNAPSE_ORDERS = ("current_first", "membrane_first")
# cuba neurons: "float" computes the equations above in floating point; "loihi" in Loihi's 24-bit integers, as Lava's
# bit-accurate LIF and lava-dl's netx files define them: i = trunc(α·i) + I_syn wrapped into (-2^23, 2^23],
# m = trunc(β·v) + i + bias saturated at ±(2^23 - 1) (trunc: toward zero; α, β multiples of 1/4096; the bias enters
# the membrane, not the current), spike when m > θ, membrane to 0 (weights, bias and θ carry Lava's 2^6 scale)
ARITHMETICS = ("float", "loihi")
MEMBRANE_FLOORS = ("none", "-threshold")
# if / lif neurons: what a spike carries downstream (θ, spikeforge's conversion convention, or 1, NIR's and most
# SNN libraries'), and the firing test (m >= θ, spikeforge's; m > θ, NIR's)
SPIKE_VALUES = ("threshold", "unit")
# numeric_mode "fixed" defines these models and projection kinds only (identity / avgpool become explicit weights)
FIXED_MODELS = ("input", "if", "group", "readout", "maxpool")
FIXED_KINDS = ("dense", "sparse", "conv2d", "maxpool")
THRESHOLD_TESTS = ("ge", "gt")
# How a target delivers a group neuron's count S: one graded event, or S member spikes (S x the synaptic work);
# a multi-threshold neuron's level: one graded event carrying the level, or one spike to one of 2n weight copies
# pre-scaled by the levels ("parallel" parameter normalization: same events, 2n x the synapse storage).
PAYLOAD_MODES = ("graded", "expanded", "parallel")
RESET_MODES = ("subtract", "zero", "none")
PROJECTION_KINDS = ("dense", "sparse", "conv2d", "avgpool", "identity", "pointwise", "matmul_a", "matmul_b",
                    "maxpool")
WINDOW_KINDS = ("conv2d", "avgpool", "maxpool")  # windowed projections between (C, H, W) populations


@dataclass
class Population:
    """A group of neurons of one model, with per-neuron parameters."""

    name: str
    model: str
    shape: tuple
    threshold: np.ndarray
    v_init: np.ndarray
    bias: np.ndarray
    reset: str = "subtract"
    tau: int = 1
    payload: str = "graded"
    negative_slope: float = 0.0  # signed neurons: a negative spike carries -negative_slope·θ
    levels: int = 1  # multi-threshold neurons: n levels per sign, θ·2^k and -θ_neg·2^k (k < n)
    threshold_neg: np.ndarray | None = None  # multi-threshold: negative base θ_neg > 0; None = positive levels only
    function: str = ""  # ec nodes: one of EC_FUNCTIONS
    eps: float = 1e-5  # ec layernorm: added to the variance
    decay: np.ndarray | None = None  # lif / cuba: membrane factor per step, in [0, 1]
    spike_value: str = "threshold"  # if / lif / cuba: a spike carries θ ("threshold") or 1 ("unit")
    threshold_test: str = "ge"  # if / lif / cuba: fire when m >= θ ("ge") or m > θ ("gt")
    syn_decay: np.ndarray | None = None  # cuba: synaptic current factor per step α, in [0, 1]
    synapse_order: str = "current_first"  # cuba: one of SYNAPSE_ORDERS
    refractory: int = 0  # cuba: steps the membrane is held at its reset value after a spike
    arithmetic: str = "float"  # cuba: one of ARITHMETICS
    # cuba / sigma_delta / readout: the state restarts (membrane to v_init, current and hold to 0, a sigma-delta
    # neuron's activation and residue to 0, a readout's sum to 0) at the
    # start of every step t with t % reset_every == reset_phase (0: never): Lava's LIFReset, which netx gives each
    # layer of a network run on a stream of samples, its phase one step later per layer
    reset_every: int = 0
    reset_phase: int = 0
    # sigma_delta: the activation is the step's input itself (netx's input layer), not ReLU(σ + bias); the payload is
    # d >> payload_shift (floor); the step's synaptic input wraps into [-2^(input_wrap - 1), 2^(input_wrap - 1))
    # (24: Lava's conv synapse; 0: no wrap)
    delta_input: bool = False
    payload_shift: int = 0
    input_wrap: int = 0
    # if / lif (sinabs's neurons): `multi_spike` fires floor(m / θ) spikes in a step where m >= θ (each subtracted, or
    # the membrane to 0), one event of that multiplicity; `membrane_floor` "-threshold" keeps v >= -θ after the reset
    multi_spike: bool = False
    membrane_floor: str = "none"

    @property
    def size(self) -> int:
        return math.prod(int(s) for s in self.shape)  # no int64 wrap-around for absurd shapes

    @property
    def weight_copies(self) -> int:
        """Copies of each outgoing weight the synapse memory holds: one per level and sign (2n, or n when
        one-sided) for multi-threshold neurons with the parallel payload, else 1."""
        if self.model == "multi_threshold" and self.payload == "parallel":
            return self.levels * (1 if self.threshold_neg is None else 2)
        return 1

    @classmethod
    def make(cls, name, model, shape, threshold=0.0, v_init=0.0, bias=0.0, reset="subtract", tau=1,
             payload="graded", negative_slope=0.0, levels=1, threshold_neg=None, function="", eps=1e-5, decay=None,
             spike_value="threshold", threshold_test="ge", syn_decay=None, synapse_order="current_first",
             refractory=0, arithmetic="float", reset_every=0, reset_phase=0, delta_input=False, payload_shift=0,
             input_wrap=0, multi_spike=False, membrane_floor="none"):
        """Build a population, broadcasting scalar parameters to every neuron."""
        shape = tuple(int(s) for s in shape)
        n = int(np.prod(shape, dtype=np.int64))

        def full(value):
            arr = np.asarray(value, dtype=np.float32).reshape(-1)
            return np.full(n, arr[0], np.float32) if arr.size == 1 else np.ascontiguousarray(arr)

        return cls(name, model, shape, full(threshold), full(v_init), full(bias), reset, int(tau), payload,
                   float(negative_slope), int(levels), None if threshold_neg is None else full(threshold_neg),
                   str(function), float(eps), None if decay is None else full(decay), spike_value, threshold_test,
                   None if syn_decay is None else full(syn_decay), str(synapse_order), int(refractory),
                   str(arithmetic), int(reset_every), int(reset_phase), bool(delta_input), int(payload_shift),
                   int(input_wrap), bool(multi_spike), str(membrane_floor))


@dataclass
class Projection:
    """Synapses from one population to another.

    kind       weight shape / extra data
    dense      weight (target.size, source.size), like torch Linear
    sparse     CSR by source neuron: indptr (source.size+1), indices, weight (nnz,)
    conv2d     weight (C_out, C_in/groups, kh, kw); stride, padding, groups
    avgpool    no weight; kernel, stride, padding (zero padding counts, as torch's default)
    identity   no weight; source and target have the same size
    pointwise  weight (d_out, d_in) applied to every row of the source read as (rows, d_in) into the same row of
               the target read as (rows, d_out): a transformer's token-wise linear map (a 1x1 convolution on
               channel-last data), stored once; the last dimensions of the two shapes are d_in and d_out
    matmul_a   no weight; the source, read as (M, K) row-major, is the left operand of an ec_matmul (M, N) target
    matmul_b   no weight; the source, read as (K, N), is its right operand (either one may be `transpose`d)
    """

    name: str
    kind: str
    source: str
    target: str
    weight: np.ndarray | None = None
    indptr: np.ndarray | None = None
    indices: np.ndarray | None = None
    kernel: tuple = (1, 1)
    stride: tuple = (1, 1)
    padding: tuple = (0, 0)
    groups: int = 1
    transpose: bool = False  # matmul_a / matmul_b: the operand is the transpose of the 2-D source
    delay: int = 0  # steps from a source event to its delivery: 0 the same step (layer-synchronous), d: step t + d
    # (a recurrent projection, onto its source or an earlier population, needs d >= 1)


@dataclass
class CoreTable:
    """Physical mapping: each core holds neurons of one population, either the contiguous range
    neuron_start..neuron_stop-1 or (format 1.9) a box of a (C, H, W) population: channels c0..c1-1 x rows h0..h1-1 x
    columns w0..w1-1 (`box` row (c0, c1, h0, h1, w0, w1); -1s: the range), as chips map convolutions; (1.14) of a
    2-D (M, N) population read as (1, M, N) (`box_shape`): a tile of an attention product node. A box core's
    neuron_start / neuron_stop are its span: its lowest canonical index and one past its highest."""

    core_id: np.ndarray
    chip: np.ndarray
    x: np.ndarray
    y: np.ndarray
    population: np.ndarray  # index into Network.populations
    neuron_start: np.ndarray
    neuron_stop: np.ndarray
    box: np.ndarray | None = None  # (cores, 6) int64, or None: every core holds its range

    COLUMNS = ("core_id", "chip", "x", "y", "population", "neuron_start", "neuron_stop")

    def __len__(self):
        return len(self.core_id)

    def slots(self) -> int:
        """Distinct (chip, x, y) positions in use: the physical cores (rows of chips whose rule puts several
        populations on one core, as Speck's pooling or Xylo's one core, share a position)."""
        return len({(int(c), int(a), int(b)) for c, a, b in zip(self.chip, self.x, self.y)})

    def has_boxes(self) -> bool:
        return self.box is not None and bool((self.box[:, 0] >= 0).any())

    def is_box(self, i) -> bool:
        return self.box is not None and int(self.box[i, 0]) >= 0

    def size(self, i) -> int:
        """Neurons on core i."""
        if self.is_box(i):
            c0, c1, h0, h1, w0, w1 = (int(v) for v in self.box[i])
            return (c1 - c0) * (h1 - h0) * (w1 - w0)
        return int(self.neuron_stop[i] - self.neuron_start[i])

    def sizes(self) -> np.ndarray:
        """(cores,) neurons on each core."""
        out = (self.neuron_stop - self.neuron_start).astype(np.int64)
        if self.box is not None:
            b = self.box.astype(np.int64)
            boxed = b[:, 0] >= 0
            out[boxed] = ((b[:, 1] - b[:, 0]) * (b[:, 3] - b[:, 2]) * (b[:, 5] - b[:, 4]))[boxed]
        return out

    def core_of(self, population, shape) -> np.ndarray:
        """(neurons,) the core holding each canonical neuron of population index `population` of `shape`."""
        owner = np.zeros(math.prod(int(v) for v in shape), np.int64)
        for i in np.flatnonzero(self.population == population):
            if self.is_box(i):
                owner[self.neurons(i, shape)] = i
            else:
                owner[int(self.neuron_start[i]):int(self.neuron_stop[i])] = i
        return owner

    def neurons(self, i, shape) -> np.ndarray:
        """Canonical (C-order) indices of core i's neurons in its population of `shape`, ascending."""
        if not self.is_box(i):
            return np.arange(int(self.neuron_start[i]), int(self.neuron_stop[i]), dtype=np.int64)
        return box_indices(self.box[i], shape)


def chip_mesh_of(cores: CoreTable, chip_mesh=None):
    """(columns, rows) of routers per chip, or None when every core is on one chip. Chips tile one mesh (their
    routers join across chip edges, as TrueNorth's and Loihi's do). Without `chip_mesh` (files before format
    1.11): the widest and tallest extent of one chip's cores."""
    chip = np.asarray(cores.chip, np.int64)
    if len(chip) == 0 or (chip == chip[0]).all():
        return None
    if chip_mesh is None:
        _, inv = np.unique(chip, return_inverse=True)
        chip_mesh = (_extent(np.asarray(cores.x, np.int64), inv), _extent(np.asarray(cores.y, np.int64), inv))
    w, h = (int(v) for v in np.asarray(chip_mesh).reshape(-1)[:2])
    if w < 1 or h < 1:
        raise ValueError(f"chip_mesh must be two positive integers, got {tuple(chip_mesh)}")
    return w, h


def chip_crossings(cores: CoreTable, chip_mesh, a, b) -> np.ndarray:
    """Chip-to-chip links the XY routes from cores a to cores b cross (arrays of core indices): |Δcx| + |Δcy|
    (chip_cells). A file before format 1.11 (no chip_mesh) whose chips do not tile the mesh as their extents
    suggest counts one crossing per route between two chips (its chips' layout is not known)."""
    try:
        cx, cy = chip_cells(cores, chip_mesh)
    except ValueError:
        if chip_mesh is not None:
            raise
        chip = np.asarray(cores.chip, np.int64)
        return (chip[a] != chip[b]).astype(np.int64)
    return np.abs(cx[a] - cx[b]) + np.abs(cy[a] - cy[b])


def chip_cells(cores: CoreTable, chip_mesh=None) -> tuple:
    """(cx, cy): each core's chip's place on the board's grid of chips: a core at mesh (x, y) is on the chip at
    (x // columns, y // rows) (chip_mesh_of), so an XY route between two cores crosses |Δcx| + |Δcy|
    chip-to-chip links. ValueError where the chips do not tile the mesh that way."""
    mesh = chip_mesh_of(cores, chip_mesh)
    if mesh is None:
        zero = np.zeros(len(cores.chip), np.int64)
        return zero, zero.copy()
    w, h = mesh
    chip = np.asarray(cores.chip, np.int64)
    cx, cy = np.asarray(cores.x, np.int64) // w, np.asarray(cores.y, np.int64) // h
    cell = cx * (int(cy.max(initial=0)) + 1) + cy
    pairs = np.unique(np.stack([chip, cell], axis=1), axis=0)
    if len(np.unique(pairs[:, 0])) != len(pairs) or len(np.unique(pairs[:, 1])) != len(pairs):
        raise ValueError(f"the cores' chips do not tile the mesh in {w} x {h} routers per chip: a chip's cores "
                         "must share one cell (x // columns, y // rows) and each chip have its own")
    return cx, cy


def _extent(v, inverse) -> int:
    """The largest max - min + 1 of v within a group (groups: `inverse` labels)."""
    lo = np.full(inverse.max() + 1, np.iinfo(np.int64).max)
    hi = np.full(inverse.max() + 1, np.iinfo(np.int64).min)
    np.minimum.at(lo, inverse, v)
    np.maximum.at(hi, inverse, v)
    return int((hi - lo).max()) + 1


def relay_layers(projections) -> dict:
    """{relay population: the layer it feeds} for a fan-in split (converter/fanin.py): a relay's ".join"
    projection leads to its layer, through the other relays of a tree of relays."""
    joins = {q.source: q.target for q in projections if q.name.endswith(".join")}
    out = {}
    for relay in joins:
        layer = relay
        while layer in joins:
            layer = joins[layer]
        out[relay] = layer
    return out


def box_shape(shape) -> tuple:
    """The (C, H, W) a box reads its population as: a (C, H, W) population's own shape, or (1, M, N) for a 2-D
    (M, N) one (format 1.14: an attention product node cut into rows x columns of products)."""
    s = tuple(int(v) for v in shape)
    return s if len(s) == 3 else (1, *s)


def box_indices(box, shape) -> np.ndarray:
    """Canonical indices of the box (c0, c1, h0, h1, w0, w1) of a (C, H, W) (or 2-D, `box_shape`) population,
    ascending."""
    c0, c1, h0, h1, w0, w1 = (int(v) for v in box)
    _, h, w = box_shape(shape)
    c = np.arange(c0, c1, dtype=np.int64)[:, None, None] * (h * w)
    r = np.arange(h0, h1, dtype=np.int64)[None, :, None] * w
    return (c + r + np.arange(w0, w1, dtype=np.int64)[None, None, :]).reshape(-1)


def box_span(box, shape) -> tuple:
    """(lowest canonical index, one past the highest) of a box: the neuron_start / neuron_stop of its core."""
    c0, c1, h0, h1, w0, w1 = (int(v) for v in box)
    _, h, w = box_shape(shape)
    return c0 * h * w + h0 * w + w0, (c1 - 1) * h * w + (h1 - 1) * w + w1


@dataclass
class CoreEdges:
    """Edges of the core graph, with synapse and axon (distinct source neuron) counts."""

    src: np.ndarray
    dst: np.ndarray
    synapses: np.ndarray
    axons: np.ndarray

    COLUMNS = ("src", "dst", "synapses", "axons")


@dataclass
class Network:
    """Populations in topological order, projections between them, and a mapping."""

    populations: list
    projections: list
    cores: CoreTable
    core_edges: CoreEdges
    attrs: dict = field(default_factory=dict)

    def population(self, name: str) -> Population:
        for pop in self.populations:
            if pop.name == name:
                return pop
        raise KeyError(f"no population named {name!r}")

    def index_of(self, name: str) -> int:
        for i, pop in enumerate(self.populations):
            if pop.name == name:
                return i
        raise KeyError(f"no population named {name!r}")

    @property
    def input(self) -> Population:
        return self.populations[0]

    @property
    def readout(self) -> Population:
        return next(p for p in self.populations if p.model == "readout")

    def incoming(self, name: str) -> list:
        return [p for p in self.projections if p.target == name]

    def recurrent(self, proj) -> bool:
        """proj feeds back: onto its own source or an earlier population (delivered `delay` >= 1 steps later)."""
        return self.index_of(proj.source) >= self.index_of(proj.target)

    def core_graph(self):
        """The core graph as a networkx DiGraph (nodes carry the cores table columns)."""
        import networkx as nx

        g = nx.DiGraph()
        for i in range(len(self.cores)):
            g.add_node(int(self.cores.core_id[i]),
                       **{c: int(getattr(self.cores, c)[i]) for c in CoreTable.COLUMNS[1:]},
                       population_name=self.populations[int(self.cores.population[i])].name)
        e = self.core_edges
        for s, d, syn, ax in zip(e.src, e.dst, e.synapses, e.axons):
            g.add_edge(int(s), int(d), synapses=int(syn), axons=int(ax))
        return g
