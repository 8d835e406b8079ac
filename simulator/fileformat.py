"""Reader and validator of the spikeforge network file (HDF5), format v1.

docs/FORMAT.md is the schema. Everything the engine will index is checked
here, before any kernel sees it: a bad file raises `NetworkFileError` naming
the file, the dataset and the problem.
"""
from __future__ import annotations

import math
import os

import numpy as np

from spikeforge.errors import UserError, size_text

from .geometry import conv_output_hw
from .network import (
    ARITHMETICS,
    EC_FUNCTIONS,
    FIXED_KINDS,
    FIXED_MODELS,
    MEMBRANE_FLOORS,
    NEURON_MODELS,
    PAYLOAD_MODES,
    PROJECTION_KINDS,
    RESET_MODES,
    SPIKE_VALUES,
    SPIKING_MODELS,
    SYNAPSE_ORDERS,
    THRESHOLD_TESTS,
    CoreEdges,
    CoreTable,
    Network,
    Population,
    Projection,
    box_shape,
    box_span,
    chip_cells,
)

FORMAT_NAME = "spikeforge-network"
FORMAT_VERSION = "1.14"  # 1.1: group neurons (tau, payload); 1.2: signed neurons (negative_slope);
#                        1.3: multi-threshold neurons (levels, threshold_neg, payload "parallel"), EC nodes;
#                        1.4: numeric_mode "fixed" (weight_bits, membrane_bits);
#                        1.5: lif neurons (decay), spike_value and threshold_test of if / lif neurons (NIR)
#                        1.6: pointwise projections (token-wise linear maps), ec function "identity" (relay)
#                        1.7: maxpool populations and projections (spiking max pooling)
#                        1.8: projection delays (attribute delay, steps; absent: 0)
#                        1.9: cores holding a box of a (C, H, W) population (/mapping/cores/box)
#                        1.10: identity relays of shape (C, H, W) (fan-in split partial sums), attr fan_in_split
#                        1.11: attr chip_mesh (routers per chip: chips tile the mesh, chip-to-chip hops counted)
#                        1.12: cuba neurons (decay, syn_decay, synapse_order, refractory); recurrent projections
#                              (onto the source or an earlier population, delay >= 1)
#                        1.13: cuba attribute arithmetic "loihi" (Loihi's 24-bit integer CUBA, lava-dl netx files);
#                              cuba / readout attributes reset_every, reset_phase (Lava's LIFReset); sigma_delta
#                              neurons (delta_input, payload_shift, input_wrap: Loihi 2's SDNN, netx files);
#                              if / lif attributes multi_spike, membrane_floor (sinabs's MultiSpike, min_v_mem)
#                        1.14: boxes of 2-D (M, N) populations, read as (1, M, N): ec_matmul products in tiles of
#                              rows x columns
SUPPORTED_MAJOR = 1
# Sanity bounds so a corrupt header cannot make the reader allocate unbounded memory.
MAX_NEURONS = 2**31 - 1
MAX_SYNAPSES = 2**33
MAX_DELAY = 4096  # steps; each delayed source keeps (delay + 1) steps of events per sample
MAX_DIMS = 3
MAX_COORDINATE = 2**24  # chip, x and y of a core: a mesh this large is a corrupt file, not a machine
# No single dataset may need more memory than this (override with SPIKEFORGE_MAX_DATASET_BYTES).
MAX_DATASET_BYTES = int(os.environ.get("SPIKEFORGE_MAX_DATASET_BYTES", 4 * 2**30))
MAX_POPULATIONS = 10_000  # a ViT-S/16 has a few hundred; reading one costs about a millisecond
MAX_PROJECTIONS = 50_000
FLOAT32_MAX = float(np.finfo(np.float32).max)

POP_DATASETS = ("threshold", "v_init", "bias")
MAX_LEVELS = 7  # multi-threshold levels per sign: ±2^(n-1) still fits the int8 rasters


class NetworkFileError(UserError):
    """A network file (or in-memory network) violates the format."""

    def __init__(self, where: str, problem: str, path=None):
        self.where, self.problem, self.path = where, problem, path
        names = [str(n) for n in (path, where if where not in ("", "/") else None) if n]  # (the root needs no name)
        super().__init__(": ".join(names + [problem]))


def parse_version(text: str, where="/", path=None) -> tuple:
    try:
        major, minor = (int(p) for p in str(text).split("."))
    except ValueError:
        raise NetworkFileError(where, f"format_version {text!r} is not MAJOR.MINOR", path) from None
    return major, minor


# ----------------------------------------------------------------------------- validation

def _fail(where, problem):
    raise NetworkFileError(where, problem)


def _check_array(arr, where, n, finite=True):
    if not isinstance(arr, np.ndarray) or not np.issubdtype(arr.dtype, np.floating):
        _fail(where, f"expected a float array, got {getattr(arr, 'dtype', type(arr).__name__)}")
    if arr.shape != (n,):
        _fail(where, f"shape {arr.shape} does not match the population size ({n},)")
    if finite:
        bad = np.flatnonzero(~np.isfinite(arr))
        if bad.size:
            _fail(where, f"non-finite value {arr[bad[0]]} at index {bad[0]} ({bad.size} in all)")


def _check_loihi(pop, where):
    """A cuba population in Loihi's arithmetic: the update Lava defines (current first, m > θ, membrane to 0, no
    hold), decays in 12 bits (multiples of 1/4096), integer θ, bias and initial membrane below 2^24."""
    if (pop.synapse_order, pop.threshold_test, pop.reset, pop.refractory) != ("current_first", "gt", "zero", 0):
        _fail(where, "arithmetic 'loihi' is Loihi's CUBA update: synapse_order 'current_first', threshold_test "
                     f"'gt', reset 'zero', refractory 0; got {pop.synapse_order!r}, {pop.threshold_test!r}, "
                     f"{pop.reset!r}, {pop.refractory}")
    for name in ("decay", "syn_decay"):
        steps = getattr(pop, name).astype(np.float64) * 4096
        bad = np.flatnonzero(steps != np.round(steps))
        if bad.size:
            _fail(f"{where}/{name}", f"arithmetic 'loihi' takes decay factors in 12 bits (k/4096), got "
                                     f"{getattr(pop, name)[bad[0]]:.7g} at index {bad[0]}")
    for name in ("threshold", "bias", "v_init"):
        values = getattr(pop, name).astype(np.float64)
        bad = np.flatnonzero((values != np.round(values)) | (np.abs(values) >= 2.0**24))
        if bad.size:
            _fail(f"{where}/{name}", f"arithmetic 'loihi' takes integers of magnitude below 2^24, got "
                                     f"{values[bad[0]]} at index {bad[0]}")


def _check_population(pop: Population, i: int):
    where = f"/populations/{pop.name}"
    if pop.model not in NEURON_MODELS:
        _fail(where, f"unknown neuron model {pop.model!r} (known: {', '.join(NEURON_MODELS)})")
    if pop.reset not in RESET_MODES:
        _fail(where, f"unknown reset mode {pop.reset!r} (known: {', '.join(RESET_MODES)})")
    if not 1 <= len(pop.shape) <= MAX_DIMS or any(int(s) < 1 for s in pop.shape):
        _fail(where, f"shape {pop.shape} must have 1 to {MAX_DIMS} positive dimensions")
    if pop.size > MAX_NEURONS:
        _fail(where, f"shape {pop.shape} has {pop.size} neurons, more than {MAX_NEURONS}")
    if not 1 <= int(pop.tau) <= 255 or (pop.model != "group" and pop.tau != 1):
        _fail(where, f"tau {pop.tau} must be 1 to 255 for group neurons and 1 otherwise")
    if pop.payload not in PAYLOAD_MODES:
        _fail(where, f"unknown payload mode {pop.payload!r} (known: {', '.join(PAYLOAD_MODES)})")
    if (pop.payload == "expanded" and pop.model != "group") or \
            (pop.payload == "parallel" and pop.model != "multi_threshold"):
        _fail(where, f"payload {pop.payload!r} does not apply to {pop.model!r} neurons")
    mt = pop.model == "multi_threshold"
    if not isinstance(pop.levels, (int, np.integer)) or not 1 <= int(pop.levels) <= MAX_LEVELS or \
            (not mt and pop.levels != 1):
        _fail(where, f"levels {pop.levels} must be 1 to {MAX_LEVELS} for multi-threshold neurons and 1 otherwise")
    if mt:
        if pop.reset != "subtract":
            _fail(where, f"multi-threshold neurons need reset 'subtract', got {pop.reset!r}")
        if pop.threshold_neg is not None:  # None: one-sided, positive levels only (a ReLU layer)
            _check_array(pop.threshold_neg, f"{where}/threshold_neg", pop.size)
            bad = np.flatnonzero(pop.threshold_neg <= 0)
            if bad.size:
                _fail(f"{where}/threshold_neg", f"must be > 0, got {pop.threshold_neg[bad[0]]} at index {bad[0]}")
    elif pop.threshold_neg is not None:
        _fail(f"{where}/threshold_neg", f"only multi-threshold neurons have one, not {pop.model!r}")
    if pop.model in ("lif", "cuba"):
        _check_array(pop.decay, f"{where}/decay", pop.size)
        bad = np.flatnonzero(~((pop.decay >= 0) & (pop.decay <= 1)))  # 0: no memory (snnTorch's beta = 0)
        if bad.size:
            _fail(f"{where}/decay", f"must be in [0, 1], got {pop.decay[bad[0]]} at index {bad[0]}")
    elif pop.decay is not None:
        _fail(f"{where}/decay", f"only lif and cuba neurons have one, not {pop.model!r}")
    if pop.model == "cuba":
        _check_array(pop.syn_decay, f"{where}/syn_decay", pop.size)
        bad = np.flatnonzero(~((pop.syn_decay >= 0) & (pop.syn_decay <= 1)))
        if bad.size:
            _fail(f"{where}/syn_decay", f"must be in [0, 1], got {pop.syn_decay[bad[0]]} at index {bad[0]}")
        if pop.synapse_order not in SYNAPSE_ORDERS:
            _fail(where, f"unknown synapse_order {pop.synapse_order!r} (known: {', '.join(SYNAPSE_ORDERS)})")
        if isinstance(pop.refractory, (bool, np.bool_)) or not isinstance(pop.refractory, (int, np.integer)) or \
                not 0 <= pop.refractory <= MAX_DELAY:
            _fail(where, f"refractory {pop.refractory!r} must be an integer number of steps from 0 to {MAX_DELAY}")
    elif pop.syn_decay is not None or pop.refractory != 0 or pop.synapse_order != "current_first" or \
            pop.arithmetic != "float":
        _fail(where, f"syn_decay, synapse_order, refractory and arithmetic apply to cuba neurons only, not "
                     f"{pop.model!r}")
    if pop.arithmetic not in ARITHMETICS:
        _fail(where, f"unknown arithmetic {pop.arithmetic!r} (known: {', '.join(ARITHMETICS)})")
    if pop.arithmetic == "loihi":
        _check_loihi(pop, where)
    for name in ("reset_every", "reset_phase"):
        value = getattr(pop, name)
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or not 0 <= value < 2**31:
            _fail(where, f"{name} {value!r} must be a whole number of steps from 0")
    if pop.reset_every and (pop.model not in ("cuba", "readout", "sigma_delta") or pop.reset_phase >= pop.reset_every):
        _fail(where, f"reset_every {pop.reset_every} / reset_phase {pop.reset_phase}: a state restart applies to "
                     f"cuba, sigma_delta and readout populations, at a phase below reset_every (a {pop.model!r} "
                     "population)")
    elif not pop.reset_every and pop.reset_phase:
        _fail(where, f"reset_phase {pop.reset_phase} without reset_every")
    if pop.spike_value not in SPIKE_VALUES or pop.threshold_test not in THRESHOLD_TESTS:
        _fail(where, f"spike_value {pop.spike_value!r} / threshold_test {pop.threshold_test!r} must be one of "
                     f"{', '.join(SPIKE_VALUES)} / {', '.join(THRESHOLD_TESTS)}")
    if pop.model not in ("if", "lif", "cuba") and (pop.spike_value, pop.threshold_test) != ("threshold", "ge"):
        _fail(where, f"spike_value and threshold_test apply to if, lif and cuba neurons only, not {pop.model!r}")
    if pop.model == "ec_matmul":
        if len(pop.shape) != 2:
            _fail(where, f"ec_matmul nodes have shape (M, N), got {pop.shape}")
        for name in ("v_init", "bias"):
            if np.any(np.asarray(getattr(pop, name)) != 0):
                _fail(f"{where}/{name}", f"ec_matmul nodes start from empty sums and take no bias: {name} must be 0")
    if pop.model == "ec":
        if pop.function not in EC_FUNCTIONS:
            _fail(where, f"unknown EC function {pop.function!r} (known: {', '.join(EC_FUNCTIONS)})")
        if len(pop.shape) > 2 and pop.function != "identity":
            _fail(where, f"EC nodes take shape (N,) or (tokens, features), got {pop.shape} (only an identity relay "
                         "may take (C, H, W))")
        if not (np.isfinite(pop.eps) and 0.0 < pop.eps < 1.0):
            _fail(where, f"eps {pop.eps} must be in (0, 1)")
        if np.any(np.asarray(pop.v_init) != 0):
            _fail(f"{where}/v_init", "EC nodes start from an empty input sum: v_init must be 0")
    elif pop.function:
        _fail(where, f"only EC nodes have a function, not {pop.model!r}")
    alpha = float(pop.negative_slope)
    if not (np.isfinite(alpha) and 0.0 <= alpha <= 1.0) or (pop.model != "signed" and alpha != 0.0):
        _fail(where, f"negative_slope {alpha} must be in [0, 1] for signed neurons and 0 otherwise")
    if pop.model == "signed" and pop.reset != "subtract":
        _fail(where, f"signed neurons need reset 'subtract', got {pop.reset!r}")
    if (pop.model == "input") != (i == 0):
        _fail(where, "the first population, and only it, must have model 'input'")
    for name in POP_DATASETS:
        _check_array(getattr(pop, name), f"{where}/{name}", pop.size)
    if pop.model in SPIKING_MODELS:
        sd = pop.model == "sigma_delta"  # a sigma-delta threshold may be 0: every change is sent
        bad = np.flatnonzero(pop.threshold < 0 if sd else pop.threshold <= 0)
        if bad.size:
            _fail(f"{where}/threshold", f"threshold must be {'>=' if sd else '>'} 0, got {pop.threshold[bad[0]]} at "
                                        f"index {bad[0]}")
    if pop.model == "sigma_delta":
        if isinstance(pop.payload_shift, (bool, np.bool_)) or not isinstance(pop.payload_shift, (int, np.integer)) \
                or not 0 <= pop.payload_shift <= 30 or pop.input_wrap not in (0, 24):
            _fail(where, f"payload_shift {pop.payload_shift!r} must be 0 to 30 and input_wrap {pop.input_wrap!r} 0 or "
                         "24")
    elif pop.delta_input or pop.payload_shift or pop.input_wrap:
        _fail(where, f"delta_input, payload_shift and input_wrap apply to sigma_delta neurons only, not {pop.model!r}")
    if pop.membrane_floor not in MEMBRANE_FLOORS:
        _fail(where, f"unknown membrane_floor {pop.membrane_floor!r} (known: {', '.join(MEMBRANE_FLOORS)})")
    if (pop.multi_spike or pop.membrane_floor != "none") and pop.model not in ("if", "lif"):
        _fail(where, f"multi_spike and membrane_floor apply to if and lif neurons only, not {pop.model!r}")
    if pop.multi_spike and (pop.threshold_test != "ge" or pop.reset == "none"):
        _fail(where, f"multi_spike fires floor(m / θ) spikes where m >= θ and takes them off the membrane: it needs "
                     f"threshold_test 'ge' and reset 'subtract' or 'zero', got {pop.threshold_test!r} and "
                     f"{pop.reset!r}")


def _check_projection(proj: Projection, src: Population, tgt: Population):
    where = f"/projections/{proj.name}"
    k = proj.kind
    w = proj.weight
    if isinstance(proj.delay, (bool, np.bool_)) or not isinstance(proj.delay, (int, np.integer)) or \
            not 0 <= proj.delay <= MAX_DELAY:
        _fail(where, f"delay {proj.delay!r} must be an integer number of steps from 0 to {MAX_DELAY}")
    if k in ("dense", "sparse", "conv2d", "pointwise"):
        if not isinstance(w, np.ndarray) or not np.issubdtype(w.dtype, np.floating):
            _fail(f"{where}/weight", "missing or not a float array")
        bad = np.flatnonzero(~np.isfinite(w.reshape(-1)))
        if bad.size:
            _fail(f"{where}/weight", f"non-finite weight at flat index {bad[0]}")
        if w.size and w.dtype.itemsize > 4:  # the engines compute with float32 weights: ±1e300 would become ±inf
            big = np.flatnonzero(np.abs(w.reshape(-1)) > FLOAT32_MAX)
            if big.size:
                _fail(f"{where}/weight", f"weight {w.reshape(-1)[big[0]]:g} at flat index {big[0]} does not fit the "
                                         f"float32 the simulator computes in (|w| <= {FLOAT32_MAX:.4g})")
    if k == "dense":
        if w.shape != (tgt.size, src.size):
            _fail(f"{where}/weight", f"shape {w.shape} != (target size, source size) = {(tgt.size, src.size)}")
    elif k == "sparse":
        ip, ix = proj.indptr, proj.indices
        if not isinstance(ip, np.ndarray) or not np.issubdtype(ip.dtype, np.integer) or ip.shape != (src.size + 1,):
            _fail(f"{where}/indptr", f"must be an integer array of shape ({src.size + 1},)")
        if ip[0] != 0 or np.any(np.diff(ip.astype(np.int64)) < 0):
            _fail(f"{where}/indptr", "must start at 0 and never decrease")
        nnz = int(ip[-1])
        if not isinstance(ix, np.ndarray) or not np.issubdtype(ix.dtype, np.integer) or ix.shape != (nnz,):
            _fail(f"{where}/indices", f"must be an integer array of shape ({nnz},) (indptr[-1])")
        if w.shape != (nnz,):
            _fail(f"{where}/weight", f"shape {w.shape} != ({nnz},) (indptr[-1])")
        bad = np.flatnonzero((ix < 0) | (ix >= tgt.size))
        if bad.size:
            _fail(f"{where}/indices", f"index {ix[bad[0]]} at position {bad[0]} is outside the target "
                                      f"population {tgt.name!r} of size {tgt.size}")
    elif k in ("conv2d", "avgpool", "maxpool"):
        if len(src.shape) != 3 or len(tgt.shape) != 3:
            _fail(where, f"{k} needs (C, H, W) populations, got source {src.shape} and target {tgt.shape}")
        for attr in ("stride", "padding") + (("kernel",) if k != "conv2d" else ()):
            v = getattr(proj, attr)
            if len(v) != 2 or any(int(x) < (1 if attr != "padding" else 0) for x in v):
                _fail(where, f"{attr} {tuple(v)} is invalid")
        if k == "conv2d":
            if w.ndim != 4:
                _fail(f"{where}/weight", f"expected 4 dimensions (C_out, C_in/groups, kh, kw), got {w.shape}")
            cout, cin_g, kh, kw = w.shape
            g = int(proj.groups)
            if g < 1 or src.shape[0] % g or cout % g or cin_g * g != src.shape[0]:
                _fail(where, f"groups={g} does not fit weight {w.shape} and source channels {src.shape[0]}")
            kernel = (kh, kw)
        else:
            cout, kernel = src.shape[0], tuple(proj.kernel)
        if any(2 * p > kk for p, kk in zip(proj.padding, kernel)) and k != "conv2d":
            _fail(where, f"padding {tuple(proj.padding)} is more than half the kernel {kernel}")
        out = (cout,) + conv_output_hw(src.shape[1:], kernel, proj.stride, proj.padding)
        if out != tuple(tgt.shape):
            _fail(where, f"output shape {out} does not match target {tgt.name!r} shape {tuple(tgt.shape)}")
    elif k == "pointwise":
        if w.ndim != 2:
            _fail(f"{where}/weight", f"expected 2 dimensions (d_out, d_in), got {w.shape}")
        d_out, d_in = w.shape
        if src.shape[-1] != d_in or tgt.shape[-1] != d_out or src.size // d_in != tgt.size // d_out:
            _fail(where, f"weight {w.shape} (d_out, d_in) does not map source {src.shape} onto target {tgt.shape} "
                         "row by row (last dimensions d_in and d_out, same number of rows)")
    elif k == "identity":
        if src.size != tgt.size:
            _fail(where, f"identity between sizes {src.size} and {tgt.size}")
    elif k in ("matmul_a", "matmul_b"):
        if len(src.shape) > 2 or (proj.transpose and len(src.shape) != 2):
            _fail(where, f"a matrix operand must have shape (N,) or (rows, columns) (2-D to be transposed), "
                         f"got {src.shape}")
    else:
        _fail(where, f"unknown projection kind {k!r} (known: {', '.join(PROJECTION_KINDS)})")
    if (k in ("matmul_a", "matmul_b")) != (tgt.model == "ec_matmul"):
        _fail(where, f"{k} projection into a {tgt.model!r} population (ec_matmul nodes take matmul_a and "
                     "matmul_b, and only them)")
    if (k == "maxpool") != (tgt.model == "maxpool"):
        _fail(where, f"{k} projection into a {tgt.model!r} population (maxpool populations take one maxpool "
                     "projection, and only it)")
    if k == "maxpool" and src.model not in ("if", "lif", "group"):
        _fail(where, f"max pooling of a {src.model!r} population: only if, lif and group neurons' spikes are pooled")


def _check_boxes(net: Network) -> np.ndarray:
    """(cores,) bool: which cores hold a box; each box inside its (C, H, W) population (a 2-D one read as (1, M, N)),
    non-empty, with its span as neuron_start / neuron_stop."""
    c = net.cores
    n = len(c.core_id)
    if c.box is None:
        return np.zeros(n, bool)
    b = c.box
    if not isinstance(b, np.ndarray) or not np.issubdtype(b.dtype, np.integer) or b.shape != (n, 6):
        _fail("/mapping/cores/box", f"must be an integer dataset of shape ({n}, 6)")
    boxed = b[:, 0] >= 0
    bad = np.flatnonzero(~boxed & (b != -1).any(1))
    if bad.size:
        _fail("/mapping/cores/box", f"row {bad[0]} is neither a box (all >= 0) nor -1s (the core's range)")
    for i in np.flatnonzero(boxed):
        pop = net.populations[int(c.population[i])]
        box = [int(v) for v in b[i]]
        if len(pop.shape) not in (2, 3):
            _fail("/mapping/cores/box", f"core {i} holds a box of population {pop.name!r} of shape {tuple(pop.shape)}; "
                                        "boxes are of (C, H, W) or (M, N) populations")
        if any(lo < 0 or hi <= lo or hi > size for lo, hi, size in zip(box[0::2], box[1::2], box_shape(pop.shape))):
            _fail("/mapping/cores/box", f"core {i}: box {box} is empty or outside population {pop.name!r} of shape "
                                        f"{tuple(pop.shape)}")
        if (int(c.neuron_start[i]), int(c.neuron_stop[i])) != box_span(box, pop.shape):
            _fail("/mapping/cores", f"core {i}: neuron_start / neuron_stop {int(c.neuron_start[i])}.."
                                    f"{int(c.neuron_stop[i])} are not its box's span {box_span(box, pop.shape)}")
    return boxed


def _check_cover(c, rows, pop):
    """The cores `rows` (ranges and boxes) hold every neuron of `pop` exactly once."""
    if int(c.sizes()[rows].sum()) != pop.size:
        _fail("/mapping/cores", f"the cores of population {pop.name!r} hold {int(c.sizes()[rows].sum())} neurons, "
                                f"not its {pop.size}")
    seen = np.zeros(pop.size, np.int64)
    for i in rows:
        if not c.is_box(i) and not 0 <= int(c.neuron_start[i]) < int(c.neuron_stop[i]) <= pop.size:
            _fail("/mapping/cores", f"core {i}: range {int(c.neuron_start[i])}..{int(c.neuron_stop[i])} is empty or "
                                    f"outside population {pop.name!r}")
        seen[c.neurons(i, pop.shape)] += 1
    if (seen != 1).any():
        j = int(np.flatnonzero(seen != 1)[0])
        _fail("/mapping/cores", f"neuron {j} of population {pop.name!r} is on {int(seen[j])} cores, not one")


def _check_chips(net: Network):
    """Attribute chip_mesh (format 1.11): (columns, rows) of routers per chip, positive integers; the cores' chips
    tile the mesh in those chips (network.chip_cells: inter-chip hops are counted from it). Files without it
    (before 1.11) are not held to a tiling (network.chip_crossings)."""
    mesh = net.attrs.get("chip_mesh")
    if mesh is None:
        return
    a = np.asarray(mesh)
    if a.shape != (2,) or not np.issubdtype(a.dtype, np.integer) or (a < 1).any() or (a > MAX_COORDINATE).any():
        _fail("/", f"attribute chip_mesh must be two positive integers (columns, rows per chip), got {mesh!r}")
    try:
        chip_cells(net.cores, mesh)
    except ValueError as exc:
        _fail("/mapping/cores/chip", str(exc))


def _check_mapping(net: Network):
    c = net.cores
    n = len(c.core_id)
    for col in CoreTable.COLUMNS:
        arr = getattr(c, col)
        if not isinstance(arr, np.ndarray) or not np.issubdtype(arr.dtype, np.integer) or arr.shape != (n,):
            _fail(f"/mapping/cores/{col}", f"must be an integer column of length {n}")
        if n and arr.min() < 0:
            _fail(f"/mapping/cores/{col}", f"negative value at index {int(np.argmin(arr))}")
        if n and col in ("chip", "x", "y") and arr.max() > MAX_COORDINATE:
            _fail(f"/mapping/cores/{col}", f"value {arr.max()} at index {int(np.argmax(arr))} is beyond "
                                           f"{MAX_COORDINATE}")
    if not np.array_equal(c.core_id, np.arange(n)):
        _fail("/mapping/cores/core_id", "core ids must be 0..n-1 in order")
    _check_chips(net)
    bad = np.flatnonzero(c.population >= len(net.populations))
    if bad.size:
        _fail("/mapping/cores/population", f"population index {c.population[bad[0]]} at core {bad[0]} is out of range")
    boxed = _check_boxes(net)
    by_pop = np.argsort(c.population, kind="stable")  # rows of each population, without a scan per population
    bounds = np.searchsorted(c.population[by_pop], np.arange(len(net.populations) + 1))
    for pi, pop in enumerate(net.populations):
        rows = by_pop[bounds[pi]:bounds[pi + 1]]
        if rows.size == 0:
            _fail("/mapping/cores", f"population {pop.name!r} is on no core")
        if boxed[rows].any():
            _check_cover(c, rows, pop)
            continue
        ranges = sorted(zip(c.neuron_start[rows], c.neuron_stop[rows]))
        pos = 0
        for start, stop in ranges:
            if start != pos or stop <= start or stop > pop.size:
                _fail("/mapping/cores", f"neuron ranges of population {pop.name!r} do not tile 0..{pop.size} "
                                        f"(range {start}..{stop})")
            pos = stop
        if pos != pop.size:
            _fail("/mapping/cores", f"population {pop.name!r}: neurons {pos}..{pop.size} are on no core")
    e = net.core_edges
    m = len(e.src)
    for col in CoreEdges.COLUMNS:
        arr = getattr(e, col)
        if not isinstance(arr, np.ndarray) or not np.issubdtype(arr.dtype, np.integer) or arr.shape != (m,):
            _fail(f"/mapping/core_edges/{col}", f"must be an integer column of length {m}")
        if m and arr.min() < 0:
            _fail(f"/mapping/core_edges/{col}", f"negative value at index {int(np.argmin(arr))}")
    for col in ("src", "dst"):
        bad = np.flatnonzero(getattr(e, col) >= n)
        if bad.size:
            _fail(f"/mapping/core_edges/{col}", f"core {getattr(e, col)[bad[0]]} at index {bad[0]} does not exist")


def matmul_inner(net: Network, pop: Population) -> int:
    """K of an ec_matmul node (M, N): checks it has one matmul_a source of M·K and one matmul_b source of K·N."""
    where = f"/populations/{pop.name}"
    ops = {k: [q for q in net.projections if q.target == pop.name and q.kind == k] for k in ("matmul_a", "matmul_b")}
    if len(ops["matmul_a"]) != 1 or len(ops["matmul_b"]) != 1:
        _fail(where, f"an ec_matmul node needs exactly one matmul_a and one matmul_b projection, got "
                     f"{len(ops['matmul_a'])} and {len(ops['matmul_b'])}")
    m, n = pop.shape
    size = {p.name: p.size for p in net.populations}
    a, b = size[ops["matmul_a"][0].source], size[ops["matmul_b"][0].source]
    if a % m or a // m * n != b:
        _fail(where, f"operands of sizes {a} (A) and {b} (B) do not make an ({m}, K) @ (K, {n}) product")
    return a // m


def validate_network(net: Network) -> Network:
    """Check every invariant the simulator relies on; raise NetworkFileError if one fails."""
    if not net.populations:
        _fail("/populations", "no populations")
    names = [p.name for p in net.populations]
    if len(set(names)) != len(names):
        _fail("/populations", "duplicate population names")
    for i, pop in enumerate(net.populations):
        _check_population(pop, i)
    readouts = [p.name for p in net.populations if p.model == "readout"]
    if len(readouts) != 1:
        _fail("/populations", f"expected exactly one readout population, found {len(readouts)}")
    order = {n: i for i, n in enumerate(names)}
    pnames = [p.name for p in net.projections]
    if len(set(pnames)) != len(pnames):
        _fail("/projections", "duplicate projection names")
    for proj in net.projections:
        where = f"/projections/{proj.name}"
        for end in ("source", "target"):
            if getattr(proj, end) not in order:
                _fail(where, f"{end} {getattr(proj, end)!r} is not a population")
        if order[proj.source] >= order[proj.target]:
            if proj.delay < 1:
                _fail(where, f"source {proj.source!r} does not come before target {proj.target!r} in "
                             "population_order (populations are in topological order; a recurrent projection, onto "
                             "its source or an earlier population, needs a delay of at least 1 step)")
            source = net.populations[order[proj.source]]
            if source.model not in SPIKING_MODELS or proj.kind in ("maxpool", "matmul_a", "matmul_b"):
                _fail(where, f"a recurrent projection carries spikes of if, lif, cuba, group, signed, "
                             f"multi-threshold or sigma-delta neurons through synapses: not a {proj.kind} projection "
                             f"from {source.model!r}")
        if net.populations[order[proj.target]].model == "input":
            _fail(where, "the input population cannot receive projections")
        _check_projection(proj, net.populations[order[proj.source]], net.populations[order[proj.target]])
    for pop in net.populations:
        if pop.model == "ec_matmul":
            matmul_inner(net, pop)
        if pop.model == "maxpool":
            n_in = sum(q.target == pop.name for q in net.projections)
            if n_in != 1:
                _fail(f"/populations/{pop.name}", f"a maxpool population takes exactly one projection, got {n_in}")
            if np.any(pop.bias != 0):
                _fail(f"/populations/{pop.name}/bias", "a maxpool population has no bias (must be 0)")
    _check_fixed_point(net)
    _check_mapping(net)
    return net


def _integral(a):
    a = np.asarray(a, np.float64)
    return bool(np.all(a == np.rint(a)))


def _check_fixed_point(net):
    """numeric_mode "fixed": integer weights within weight_bits, integer θ / bias / v_init within membrane_bits,
    only the models and projection kinds the fixed-point semantics define."""
    mode = net.attrs.get("numeric_mode", "float32")
    if mode in ("float32", "float64"):
        return
    if mode != "fixed":
        _fail("/", f"numeric_mode {mode!r} is not 'float32' or 'fixed'")
    bits = {}
    for key, lo, hi in (("weight_bits", 2, 24), ("membrane_bits", 4, 48)):
        value = net.attrs.get(key)
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or not lo <= value <= hi:
            _fail("/", f"numeric_mode 'fixed' needs an integer attribute {key} in {lo}..{hi}, got {value!r}")
        bits[key] = int(value)
    wmax, vmax = 2 ** (bits["weight_bits"] - 1) - 1, 2 ** (bits["membrane_bits"] - 1) - 1
    for pop in net.populations:
        where = f"/populations/{pop.name}"
        if pop.model not in FIXED_MODELS:
            _fail(where, f"model {pop.model!r} has no fixed-point form ({', '.join(FIXED_MODELS)})")
        if pop.model in ("if", "group"):
            for field in ("threshold", "bias", "v_init"):
                a = np.asarray(getattr(pop, field))
                if not _integral(a) or np.abs(a).max(initial=0) > vmax:
                    _fail(f"{where}/{field}", f"must be integers within the {bits['membrane_bits']}-bit membrane")
            if pop.model == "group" and not _integral(np.asarray(pop.threshold) / pop.tau):
                _fail(f"{where}/threshold", f"must be a multiple of tau ({pop.tau}) in fixed point")
    for proj in net.projections:
        where = f"/projections/{proj.name}"
        if proj.kind not in FIXED_KINDS:
            _fail(where, f"kind {proj.kind!r} has no fixed-point form ({', '.join(FIXED_KINDS)})")
        if proj.kind == "maxpool":  # no weights: a gate passes its source's integer events on
            continue
        if not _integral(proj.weight) or np.abs(proj.weight).max(initial=0) > wmax:
            _fail(f"{where}/weight", f"must be integers within ±{wmax} ({bits['weight_bits']}-bit weights)")


# ----------------------------------------------------------------------------- reading

def _dataset(h5, where, path, max_elems, ndim=1):
    """Read one dataset after checking it exists, has `ndim` dimensions and is not absurdly large."""
    import h5py

    obj = h5.get(where)
    if not isinstance(obj, h5py.Dataset):
        raise NetworkFileError(where, "missing dataset", path)
    if len(obj.shape or ()) != ndim:
        raise NetworkFileError(where, f"has shape {obj.shape}, expected {ndim} dimension{'s' * (ndim > 1)}", path)
    n = math.prod(int(s) for s in obj.shape) if obj.shape else 1
    if n > max_elems:
        raise NetworkFileError(where, f"has {n} elements, more than the {max_elems} its header allows", path)
    if obj.dtype.kind not in "fiu":
        raise NetworkFileError(where, f"dtype {obj.dtype} is not numeric", path)
    if n * obj.dtype.itemsize > MAX_DATASET_BYTES:
        raise NetworkFileError(where, f"needs {n * obj.dtype.itemsize} bytes, more than the limit "
                                      f"{MAX_DATASET_BYTES} (SPIKEFORGE_MAX_DATASET_BYTES)", path)
    try:
        data = obj[()]
    except OSError as exc:  # checksum or decompression failure
        raise NetworkFileError(where, f"cannot be read ({exc})", path) from None
    if data.dtype.kind == "u":  # unsigned arithmetic wraps (a decreasing indptr would look increasing): go signed
        if data.size and data.max() > np.iinfo(np.int64).max:
            raise NetworkFileError(where, f"value {data.max()} does not fit a signed 64-bit integer", path)
        data = data.astype(np.int64)
    return data


def _attr(obj, name, where, path, kind=None):
    if name not in obj.attrs:
        raise NetworkFileError(where, f"missing attribute {name!r}", path)
    value = obj.attrs[name]
    if isinstance(value, bytes):
        value = value.decode()
    if kind == "str" and not isinstance(value, str):
        raise NetworkFileError(where, f"attribute {name!r} must be a string", path)
    if kind == "ints":
        arr = np.asarray(value)
        if arr.ndim != 1 or arr.dtype.kind not in "iu":
            raise NetworkFileError(where, f"attribute {name!r} must be a list of integers, got {value!r}", path)
        value = tuple(int(v) for v in arr)
    return value


def load_network(path, validate=True, isolate=False, timeout=None, max_bytes=None) -> Network:
    """Read a network file, check it, and return the in-memory `Network`.

    isolate: read in a child process (files from untrusted sources; the CLI does). libhdf5 can segfault or loop
    forever on some corrupt metadata (a single flipped bit in an attribute message does it: tests/fuzz_reader.py
    found both), which nothing in-process can prevent; isolated, a crash or a read that takes longer than
    `timeout` seconds (default 60 s + 1 s per 20 MB of file) becomes a NetworkFileError like any other.
    max_bytes: refuse a file whose datasets declare more bytes in all (decompressed) than this, before any is read
    (default: half of this machine's memory). A file that refers to data outside itself (HDF5 external links,
    external storage, virtual datasets) is refused before any dataset is read (simulator.h5safe).
    """
    import h5py

    path = os.fspath(path)
    if not os.path.exists(path):
        raise NetworkFileError("/", "file does not exist", path)
    if isolate:
        return _load_isolated(path, validate, timeout, max_bytes)
    try:
        h5 = h5py.File(path, "r")
    except OSError as exc:
        raise NetworkFileError("/", f"not a readable HDF5 file ({exc})", path) from None
    try:
        with h5:
            _check_contained(h5, path, max_bytes)
            net = _read(h5, path)
    except NetworkFileError as exc:
        exc.path = path
        raise
    except (KeyError, ValueError, TypeError, OSError, RuntimeError, IndexError, AttributeError,
            OverflowError) as exc:  # h5py reports corrupt metadata as OSError, RuntimeError or KeyError
        raise NetworkFileError("/", f"malformed file ({type(exc).__name__}: {exc})", path) from None
    if validate:
        try:
            validate_network(net)
        except NetworkFileError as exc:
            raise NetworkFileError(exc.where, exc.problem, path) from None
    return net


def _check_contained(h5, path, max_bytes):
    """Refuse external links / storage and virtual datasets, and a file declaring more bytes than max_bytes."""
    from .arrayfiles import default_memory_bound
    from .h5safe import ForeignDataError, check_self_contained

    try:
        total = check_self_contained(h5, path)
    except ForeignDataError as exc:
        raise NetworkFileError("/", str(exc).split(": ", 1)[1], path) from None
    bound = default_memory_bound() if max_bytes is None else int(max_bytes)
    if total > bound:
        raise NetworkFileError("/", f"its datasets declare {size_text(total)} in all (decompressed), more than "
                                    f"the memory bound {size_text(bound)} (--max-memory raises it)", path)


def _isolated_main():
    """Child side of an isolated read (argv: path, validate 0/1): one pickled answer on stdout."""
    import pickle
    import sys
    import traceback

    path, validate = sys.argv[1], sys.argv[2] == "1"
    max_bytes = int(sys.argv[3]) if len(sys.argv) > 3 and sys.argv[3] != "-" else None
    try:
        answer = ("ok", load_network(path, validate, max_bytes=max_bytes))
    except NetworkFileError as exc:
        answer = ("file", (exc.where, exc.problem))
    except BaseException:  # noqa: B036 - sent to the parent, which raises it
        answer = ("error", traceback.format_exc())
    sys.stdout.buffer.write(pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL))


def _load_isolated(path, validate, timeout, max_bytes=None):
    """load_network in a fresh interpreter (not a fork of this possibly multi-threaded process, and not a
    re-import of the caller's __main__ as multiprocessing's spawn would do)."""
    import pickle
    import subprocess
    import sys

    # the child must import the same spikeforge as this process: the folder holding it goes first on its path, and
    # the child drops the current directory (-c puts it first), where a source checkout could shadow an install
    import spikeforge

    home = os.path.dirname(os.path.abspath(list(spikeforge.__path__)[0]))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([home, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    limit = 60.0 + os.path.getsize(path) / 20e6 if timeout is None else float(timeout)
    child = ("import sys; sys.path = [p for p in sys.path if p not in ('', '.')]; "
             "from spikeforge.simulator.fileformat import _isolated_main; _isolated_main()")
    cmd = [sys.executable, "-c", child, path, "1" if validate else "0", "-" if max_bytes is None else str(max_bytes)]
    try:
        done = subprocess.run(cmd, capture_output=True, timeout=limit, env=env)
    except subprocess.TimeoutExpired:
        raise NetworkFileError("/", f"reading did not finish within {limit:.0f} s: corrupt HDF5 metadata can make "
                                    "libhdf5 loop forever", path) from None
    if done.returncode != 0 or not done.stdout:
        raise NetworkFileError("/", f"the HDF5 library crashed reading this file (exit code {done.returncode}): "
                                    "corrupt HDF5 metadata", path)
    status, value = pickle.loads(done.stdout)
    if status == "file":
        raise NetworkFileError(*value, path)
    if status == "error":
        raise RuntimeError(f"{path}: reading failed in the child process:\n{value}")
    return value


def _foreign(h5, path):
    """What an HDF5 file without spikeforge's `format` attribute looks like, and how to read it."""
    keys = set(h5.keys())
    if {"node", "version"} <= keys:
        return ("it is a NIR graph file (groups 'node' and 'version'): import it with `spikeforge import-nir "
                f"{path or 'FILE'} net.h5` (see docs/NIR.md)")
    if "layer" in keys:
        return ("it looks like a lava-dl netx network (a 'layer' group): import it with `spikeforge import-lava "
                f"{path or 'FILE'} net.h5` (see docs/NETX.md)")
    return "it has no 'format' attribute (an HDF5 file written by another tool?)"


def _read(h5, path) -> Network:
    if "format" not in h5.attrs:
        raise NetworkFileError("/", "not a spikeforge network file: " + _foreign(h5, path), path)
    fmt = _attr(h5, "format", "/", path, "str")
    if fmt != FORMAT_NAME:
        raise NetworkFileError("/", f"format is {fmt!r}, not {FORMAT_NAME!r}", path)
    major, minor = parse_version(_attr(h5, "format_version", "/", path, "str"), "/", path)
    known_minor = parse_version(FORMAT_VERSION)[1]
    if major != SUPPORTED_MAJOR or minor > known_minor:
        raise NetworkFileError("/", f"format version {major}.{minor} is not supported (this reader reads "
                                    f"{SUPPORTED_MAJOR}.0 to {FORMAT_VERSION}; a newer minor version may change what "
                                    "a file means)", path)
    attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in h5.attrs.items()}
    if isinstance(attrs.get("chip_mesh"), np.ndarray):  # as map_network holds it: a list (checked when validated)
        attrs["chip_mesh"] = attrs["chip_mesh"].tolist()
    order = [str(n) for n in np.asarray(_attr(h5, "population_order", "/", path)).reshape(-1)]
    if len(order) > MAX_POPULATIONS:
        raise NetworkFileError("/", f"population_order lists {len(order)} populations, more than {MAX_POPULATIONS}",
                               path)
    pops = []
    for name in order:
        where = f"/populations/{name}"
        g = h5.get(where)
        if g is None:
            raise NetworkFileError(where, "listed in population_order but missing", path)
        shape = _attr(g, "shape", where, path, "ints")
        if not shape or any(s < 1 for s in shape) or len(shape) > MAX_DIMS:
            raise NetworkFileError(where, f"shape {shape} must have 1 to {MAX_DIMS} positive dimensions", path)
        n = math.prod(int(s) for s in shape)  # Python integers: an int64 product of [2^32, 2^32] wraps to 0
        if n > MAX_NEURONS:
            raise NetworkFileError(where, f"shape {shape} has {n} neurons, more than {MAX_NEURONS}", path)
        data = {d: _dataset(h5, f"{where}/{d}", path, n) for d in POP_DATASETS}
        tau = int(g.attrs.get("tau", 1))
        payload = _attr(g, "payload", where, path, "str") if "payload" in g.attrs else "graded"
        alpha = float(g.attrs.get("negative_slope", 0.0))
        levels = int(g.attrs.get("levels", 1))
        theta_neg = _dataset(h5, f"{where}/threshold_neg", path, n) if "threshold_neg" in g else None
        function = _attr(g, "function", where, path, "str") if "function" in g.attrs else ""
        eps = float(g.attrs.get("eps", 1e-5))
        decay = _dataset(h5, f"{where}/decay", path, n) if "decay" in g else None
        spike_value = _attr(g, "spike_value", where, path, "str") if "spike_value" in g.attrs else "threshold"
        test = _attr(g, "threshold_test", where, path, "str") if "threshold_test" in g.attrs else "ge"
        syn_decay = _dataset(h5, f"{where}/syn_decay", path, n) if "syn_decay" in g else None
        order = _attr(g, "synapse_order", where, path, "str") if "synapse_order" in g.attrs else "current_first"
        refractory = 0
        if "refractory" in g.attrs:
            value = np.asarray(g.attrs["refractory"])
            if value.ndim != 0 or value.dtype.kind not in "iu":
                raise NetworkFileError(where, f"attribute 'refractory' must be an integer, got "
                                              f"{g.attrs['refractory']!r}", path)
            refractory = int(value)
        arithmetic = _attr(g, "arithmetic", where, path, "str") if "arithmetic" in g.attrs else "float"
        restart = [0, 0]
        for k, key in enumerate(("reset_every", "reset_phase")):
            if key in g.attrs:
                value = np.asarray(g.attrs[key])
                if value.ndim != 0 or value.dtype.kind not in "iu":
                    raise NetworkFileError(where, f"attribute {key!r} must be an integer, got {g.attrs[key]!r}", path)
                restart[k] = int(value)
        multi = bool(np.asarray(g.attrs.get("multi_spike", 0)))
        floor = _attr(g, "membrane_floor", where, path, "str") if "membrane_floor" in g.attrs else "none"
        sd = [False, 0, 0]
        for k, key in enumerate(("delta_input", "payload_shift", "input_wrap")):
            if key in g.attrs:
                value = np.asarray(g.attrs[key])
                if value.ndim != 0 or value.dtype.kind not in "biu":
                    raise NetworkFileError(where, f"attribute {key!r} must be an integer, got {g.attrs[key]!r}", path)
                sd[k] = bool(value) if k == 0 else int(value)
        pops.append(Population(name, _attr(g, "model", where, path, "str"), shape, data["threshold"],
                               data["v_init"], data["bias"], _attr(g, "reset", where, path, "str"), tau, payload,
                               alpha, levels, theta_neg, function, eps, decay, spike_value, test, syn_decay, order,
                               refractory, arithmetic, *restart, *sd, multi, floor))
    sizes = {p.name: p.size for p in pops}
    projs = []
    group = h5.get("/projections")
    proj_order = np.asarray(_attr(h5, "projection_order", "/", path)).reshape(-1) if group is not None else []
    if len(proj_order) > MAX_PROJECTIONS:
        raise NetworkFileError("/", f"projection_order lists {len(proj_order)} projections, more than "
                                    f"{MAX_PROJECTIONS}", path)
    for name in proj_order:
        name = str(name)
        where = f"/projections/{name}"
        g = h5.get(where)
        if g is None:
            raise NetworkFileError(where, "listed in projection_order but missing", path)
        kind = _attr(g, "kind", where, path, "str")
        src, tgt = _attr(g, "source", where, path, "str"), _attr(g, "target", where, path, "str")
        for end, pname in (("source", src), ("target", tgt)):
            if pname not in sizes:
                raise NetworkFileError(where, f"{end} {pname!r} is not a population", path)
        p = Projection(name, kind, src, tgt)
        if "delay" in g.attrs:
            delay = np.asarray(g.attrs["delay"])
            if delay.ndim != 0 or delay.dtype.kind not in "iu":
                raise NetworkFileError(where, f"attribute 'delay' must be an integer, got {g.attrs['delay']!r}", path)
            p.delay = int(delay)
        if kind in ("conv2d", "avgpool", "maxpool"):
            p.stride = _attr(g, "stride", where, path, "ints")
            p.padding = _attr(g, "padding", where, path, "ints")
        if kind == "conv2d":
            p.groups = int(_attr(g, "groups", where, path))
            p.weight = _dataset(h5, f"{where}/weight", path, MAX_SYNAPSES, ndim=4)
        elif kind in ("avgpool", "maxpool"):
            p.kernel = _attr(g, "kernel", where, path, "ints")
        elif kind in ("matmul_a", "matmul_b"):
            p.transpose = bool(g.attrs.get("transpose", False))
        elif kind in ("dense", "pointwise"):
            p.weight = _dataset(h5, f"{where}/weight", path, sizes[src] * sizes[tgt], ndim=2)
        elif kind == "sparse":
            p.indptr = _dataset(h5, f"{where}/indptr", path, sizes[src] + 1)
            nnz = int(p.indptr[-1]) if p.indptr.ndim == 1 and p.indptr.size else 0
            nnz = min(max(nnz, 0), MAX_SYNAPSES)
            p.indices = _dataset(h5, f"{where}/indices", path, nnz)
            p.weight = _dataset(h5, f"{where}/weight", path, nnz)
        projs.append(p)
    n_cores = None
    cols = {}
    for col in CoreTable.COLUMNS:
        cols[col] = _dataset(h5, f"/mapping/cores/{col}", path, MAX_NEURONS)
        n_cores = len(cols[col]) if n_cores is None else n_cores
    if "/mapping/cores/box" in h5:
        cols["box"] = _dataset(h5, "/mapping/cores/box", path, 6 * MAX_NEURONS, ndim=2)
    ecols = {col: _dataset(h5, f"/mapping/core_edges/{col}", path, MAX_NEURONS) for col in CoreEdges.COLUMNS}
    return Network(pops, projs, CoreTable(**cols), CoreEdges(**ecols), attrs)
