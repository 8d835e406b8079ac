"""lava-dl netx HDF5 file (what slayer's `export_hdf5` writes and `lava.lib.dl.netx.hdf5.Network` runs on Loihi 2)
-> spikeforge network that computes what Lava's bit-accurate processes compute, step for step.

netx layer (layer/0 .. layer/n-1)   spikeforge
input with a neuron group           input (the samples: Lava's in_layer bias_mant, integers, (C, H, W) order) ->
                                    identity x 64 -> a cuba population in Loihi's arithmetic (the sample enters
                                    its membrane every step, as Lava's bias does)
input without one                   input (0/1 frames (N, T, *shape): spikes that reach the next layer a step later)
flatten                             nothing: a dense projection reads a (C, H, W) source in C order, as netx does
pool                                netx builds none: slayer's sum pooling through the window's weights (depthwise conv)
dense / conv                        a cuba population in Loihi's arithmetic (format 1.13) fed by a dense / conv2d
                                    projection of delay 1 (Lava's synapses deliver a step later) + the layer's axonal
                                    delay; weights and biases x 64 (Lava's 2^6 input and bias shifts), θ = vThMant x 64,
                                    β = 1 - vDecay / 4096, α = 1 - iDecay / 4096
dense_rec                           the same plus a recurrent dense projection of delay 1 (Lava's recurrent synapse)
the last layer                      spiking: a readout counting its spikes; a pure integrator (iDecay 4096,
                                    vDecay 0, as PilotNet's output), or a dense layer without a neuron group and
                                    bias (netx's default neuron, a perfect integrator of its input): the readout
                                    itself (v(T) / T; Lava reads v(T))

netx's conventions are followed where they decide the result: a conv kernel is used as written (PyTorch's
cross-correlation: netx flips it for Lava's true convolution), dense weights outside [-256, 254] are clipped
as netx clips them, a conv layer's delay is ignored (netx ignores it), graded CUBA spikes and refDelay are not
reproduced (Lava's LIF has neither). What Lava would compute differently from these equations is refused,
naming the layer: dense weights all <= 0 (netx and Lava disagree on their sign mode and the result is not a
weighted sum) or all >= 0 with some above 255, a conv layer whose input could exceed the 24-bit range Lava wraps it
in, dilation, per-channel conv delays. Layers netx itself cannot build (average, concat, convT, unpool) and
neurons other than CUBA / LOIHI and SDNN (resonate-and-fire, ALIF) are refused, naming the layer; `layers=`
imports the first layers only (netx's num_layers).

SDNN layers (Lava's sigma-delta neurons, as netx builds them with its defaults spike_exp = state_exp = 6): the input
layer is a Delta (`sigma_delta` with delta_input: the sample, x 2^12, is its activation; the samples are what Lava
sends to the input neurons' a_in), hidden layers SigmaDelta (σ += W·payloads, ReLU(σ + 2^12·bias), θ = 2^12·vThMant,
payloads d >> 6; a conv layer's input wrapped at 24 bits as Lava's conv synapse wraps it), a `sigma_output` layer the
readout (Lava's Sigma sends σ; the readout reports σ(T) / T); netx's reset_interval does not apply to them.

Hostile files: external links and storage and virtual datasets are refused (h5safe), as is more data in all
than the file format's SPIKEFORGE_MAX_DATASET_BYTES, before anything is read.
"""
from __future__ import annotations

import os
import sys
import warnings

import numpy as np

from spikeforge.errors import UserError, size_text
from spikeforge.simulator.fileformat import MAX_DATASET_BYTES
from spikeforge.simulator.geometry import conv_output_hw
from spikeforge.simulator.network import Network, Population, Projection

__all__ = ["NetxImportError", "NetxImportWarning", "from_netx", "import_netx"]

SCALE = 64  # Lava's act_shift and bias_exp: a weighted input and a bias enter the neuron shifted left by 6 bits
SD_SCALE = 4096  # netx's sigma-delta threshold and bias: x 2^(spike_exp + state_exp), 6 + 6
STATE = 2**23  # Lava's 24-bit state: the conv synapse wraps its sum into [-2^23, 2^23)
NEURON_TYPES = ("CUBA", "LOIHI")
NOT_BUILT = ("average", "concat", "convT", "unpool", "dense_comp")
DEFAULT_NEURON = {"type": "CUBA", "iDecay": 0, "vDecay": 4096, "vThMant": 1 << 17}  # netx's, for a dense layer
# without a neuron group (`1<<18-1` in netx's source is 1 << 17)


class NetxImportError(UserError):
    """A netx file spikeforge cannot import exactly (names the layer)."""


class NetxImportWarning(UserWarning):
    """A netx value that Lava ignores as spikeforge does (graded spikes, refDelay, conv delays, clipped weights)."""


def _warn(message):
    """A NetxImportWarning attributed to the first caller outside this module."""
    level, frame = 2, sys._getframe(1)
    while frame is not None and frame.f_code.co_filename == __file__:
        level, frame = level + 1, frame.f_back
    warnings.warn(message, NetxImportWarning, stacklevel=level)


def _text(value) -> str:
    value = np.asarray(value)
    if value.size == 0:
        return ""
    value = value.reshape(-1)[0] if value.shape else value[()]
    return value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)


def _flag(group, key, where) -> bool:
    """A boolean dataset of a neuron group (False when absent)."""
    if key not in group:
        return False
    value = np.asarray(_read(group, key, where)).reshape(-1)
    if value.size != 1 or value.dtype.kind not in "biuf":
        raise NetxImportError(f"{where}/{key}: must be one boolean, got {value!r}")
    return bool(value[0])


def _read(group, key, where):
    """A dataset's value as a numpy array (scalars 0-d)."""
    import h5py

    obj = group.get(key)
    if isinstance(obj, np.ndarray):  # a value the importer put in place of a dataset (a pool layer's window)
        return obj
    if not isinstance(obj, h5py.Dataset):
        raise NetxImportError(f"{where}: no dataset {key!r}")
    return np.asarray(obj[()])


def _ints(value, where, what, length=None):
    arr = np.asarray(value).reshape(-1)
    if arr.dtype.kind not in "biuf" or not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)) or \
            (length is not None and arr.size != length):
        raise NetxImportError(f"{where}: {what} must be {length or 'some'} whole number(s), got {value!r}")
    return [int(v) for v in arr]


def _neuron(layer, where):
    """The layer's neuron parameters {type, iDecay, vDecay, vThMant, bias-free}; None without a neuron group."""
    import h5py

    g = layer.get("neuron")
    if g is None:
        return None
    if not isinstance(g, h5py.Group):
        raise NetxImportError(f"{where}/neuron: not a group")
    kind = _text(_read(g, "type", f"{where}/neuron"))
    if kind == "SDNN":  # Lava's Delta / SigmaDelta / Sigma: threshold, and whether it is the output's sigma
        theta = _ints(_read(g, "vThMant", f"{where}/neuron"), f"{where}/neuron/vThMant", "vThMant")
        if any(v < 0 for v in theta):
            raise NetxImportError(f"{where}/neuron/vThMant: {theta[0]} below 0")
        if "activation" in g and _text(_read(g, "activation", f"{where}/neuron")) != "relu":
            _warn(f"{where}: activation {_text(_read(g, 'activation', where))!r} is ignored by netx (Lava's "
                  "SigmaDelta applies ReLU); imported as Lava runs it")
        output = _flag(g, "sigma_output", f"{where}/neuron")
        return {"type": "SDNN", "vThMant": np.asarray(theta, np.float64), "sigma_output": output}
    if kind not in NEURON_TYPES:
        what = {"RF_PHASE": "resonate-and-fire neurons",
                "RF_IZHIKEVICH": "resonate-and-fire neurons", "ALIF": "adaptive LIF neurons"}.get(kind, "neurons")
        raise NetxImportError(f"{where}/neuron: {kind} {what} are not imported (spikeforge imports CUBA / LOIHI "
                              "neurons, Lava's LIF, and SDNN sigma-delta neurons)")
    out = {"type": kind}
    for key in ("iDecay", "vDecay", "vThMant"):
        value = _read(g, key, f"{where}/neuron")
        vals = _ints(value, f"{where}/neuron/{key}", key)
        lo, hi = (0, 4096) if key != "vThMant" else (0, 2**17)
        if any(not lo <= v <= hi for v in vals):
            raise NetxImportError(f"{where}/neuron/{key}: {vals[0] if len(vals) == 1 else vals} outside "
                                  f"[{lo}, {hi}], what Lava's LIF takes")
        out[key] = np.asarray(vals, np.float64)
    if _flag(g, "gradedSpike", f"{where}/neuron"):
        _warn(f"{where}: gradedSpike is set, but Lava's LIF (and netx) send binary spikes; imported as Lava runs it")
    if "refDelay" in g and any(v > 1 for v in _ints(_read(g, "refDelay", f"{where}/neuron"),
                                                    f"{where}/neuron/refDelay", "refDelay")):
        _warn(f"{where}: refDelay > 1 is ignored by netx (Lava's LIF has no refractory hold); imported as Lava "
              "runs it")
    return out


def _cuba(name, shape, neuron, bias, where, **restart):
    """A cuba population in Loihi's arithmetic with the layer's decays, θ and bias (Lava's 2^6 scale applied)."""
    def per_neuron(values, what):
        return _broadcast(values, shape, where, what)

    return Population.make(name, "cuba", shape, per_neuron(neuron["vThMant"], "vThMant") * SCALE, 0.0,
                           per_neuron(bias, "bias") * SCALE, reset="zero",
                           decay=(4096 - per_neuron(neuron["vDecay"], "vDecay")) / 4096,
                           syn_decay=(4096 - per_neuron(neuron["iDecay"], "iDecay")) / 4096, spike_value="unit",
                           threshold_test="gt", arithmetic="loihi", **restart)


def _sigma_delta(name, shape, neuron, bias, where, delta_input=False, wrap=False):
    """A sigma_delta population as netx builds Lava's SigmaDelta (Delta for the input layer): θ and bias x 2^12
    (spike_exp + state_exp, netx's defaults), payloads d >> 6 (state_exp); a conv layer's input wraps at 24 bits."""
    theta = _broadcast(neuron["vThMant"], shape, where, "vThMant")
    return Population.make(name, "sigma_delta", shape, theta * SD_SCALE, 0.0, _broadcast(bias, shape, where) * SD_SCALE,
                           reset="none", delta_input=delta_input, payload_shift=6, input_wrap=24 if wrap else 0)


def _dense_weight(layer, where, n_in, n_out):
    """The dense weights as Lava's bit-accurate Dense applies them: whole numbers, clipped to [-256, 254] as netx's
    optimize_weight_bits clips them; refused where netx and Lava give other than the weighted sum."""
    w = np.asarray(_read(layer, "weight", where), np.float64)
    if "weight/real" in layer or w.dtype.kind == "c":
        raise NetxImportError(f"{where}: complex weights are not imported")
    if w.ndim == 1 and w.size % n_out == 0:
        w = w.reshape(n_out, -1)
    if w.shape != (n_out, n_in):
        raise NetxImportError(f"{where}: weight of shape {w.shape}, expected ({n_out}, {n_in}) for "
                              f"{n_in} inputs and {n_out} neurons")
    if not np.all(np.isfinite(w)):
        raise NetxImportError(f"{where}: weight holds NaN or inf")
    w = np.trunc(w)  # netx reads weights with astype(int)
    if (w.max() > 254 and w.min() < 0) or (w.min() < -256 and w.max() > 0):
        _warn(f"{where}: weights outside [-256, 254] are clipped to it, as netx clips them")
        w = np.clip(w, -256, 254)
    check_dense_weights(w, where, NetxImportError)
    return w


def check_dense_weights(w, where, error):
    """Refuse dense weights (netx units) for which netx's weight rescaling and Lava's Dense do not give the weighted
    sum: all <= 0 (the two disagree on the sign mode), or all >= 0 with some above 255 (netx shifts them by a
    negative exponent)."""
    if w.size and w.max() <= 0 and w.min() < 0:
        raise error(f"{where}: every weight is <= 0; netx and Lava's Dense then disagree on the sign mode and Lava's "
                    "result is not the weighted sum")
    if w.size and w.min() >= 0 and w.max() > 255:
        raise error(f"{where}: every weight is >= 0 and some exceed 255 ({w.max():g}); netx rescales such a layer by a "
                    "negative exponent and Lava's Dense does not give the weighted sum")


def _conv(layer, where, src_shape, shape, wraps=False):
    """(weight, stride, padding, groups) of a conv layer, checked against the shapes and Lava's 24-bit wrap."""
    w = np.asarray(_read(layer, "weight", where), np.float64)
    if w.ndim == 5 and w.shape[-1] == 1:  # older files carry a time axis of one
        w = w[..., 0]
    groups = _ints(_read(layer, "groups", where), f"{where}/groups", "groups", 1)[0] if "groups" in layer else 1
    kernel = tuple(_ints(_read(layer, "kernelSize", where), f"{where}/kernelSize", "kernelSize"))
    kernel = kernel * 2 if len(kernel) == 1 else kernel
    pair = {}
    for key, default in (("stride", 1), ("padding", 0), ("dilation", 1)):
        vals = _ints(_read(layer, key, where), f"{where}/{key}", key) if key in layer else [default]
        pair[key] = tuple(vals * 2 if len(vals) == 1 else vals)
    if pair["dilation"] != (1, 1):
        raise NetxImportError(f"{where}: dilation {pair['dilation']} (spikeforge convolutions are not dilated)")
    if any(v < 1 for v in pair["stride"] + kernel) or any(v < 0 for v in pair["padding"]):
        raise NetxImportError(f"{where}: kernel {kernel}, stride {pair['stride']} and padding {pair['padding']} must "
                              "be positive (padding >= 0)")
    c_in = src_shape[0]
    if w.ndim != 4 or w.shape[0] != shape[0] or w.shape[1] * groups != c_in or tuple(w.shape[2:]) != kernel or \
            groups < 1 or c_in % groups or shape[0] % groups:
        raise NetxImportError(f"{where}: weight of shape {w.shape} does not fit {c_in} -> {shape[0]} channels, "
                              f"kernel {kernel}, groups {groups}")
    if conv_output_hw(src_shape[1:], kernel, pair["stride"], pair["padding"]) != tuple(shape[1:]):
        raise NetxImportError(f"{where}: a {kernel} kernel with stride {pair['stride']} and padding "
                              f"{pair['padding']} on {tuple(src_shape)} does not give the layer's shape {tuple(shape)}")
    if not np.all(np.isfinite(w)):
        raise NetxImportError(f"{where}: weight holds NaN or inf")
    w = np.trunc(w)
    reach = np.abs(w).reshape(w.shape[0], -1).sum(axis=1).max()
    if reach >= STATE and not wraps:  # (a sigma-delta layer's input wraps as Lava's: input_wrap)
        raise NetxImportError(f"{where}: a neuron's summed input can reach {reach:g}, beyond the 24-bit range Lava's "
                              "conv synapse wraps it in (not imported)")
    if "delay" in layer:
        _warn(f"{where}: netx ignores a conv layer's delay; so does this import")
    return w, pair["stride"], pair["padding"], groups


def _delays(layer, where, n_out):
    """Axonal delays per neuron (netx: per output, clipped to [0, 62]); None without."""
    if "delay" not in layer:
        return None
    d = np.asarray(_read(layer, "delay", where), np.float64).reshape(-1)
    if not np.all(np.isfinite(d)):
        raise NetxImportError(f"{where}/delay: NaN or inf")
    d = np.trunc(d)
    if d.size == 1:
        d = np.full(n_out, d[0])
    if d.size != n_out:
        raise NetxImportError(f"{where}/delay: {d.size} delays for {n_out} neurons (netx's per-input delays are "
                              "not imported)")
    if d.min() < 0 or d.max() > 62:
        _warn(f"{where}/delay: delays outside [0, 62] are clipped to it, as netx clips them")
    return np.clip(d, 0, 62).astype(np.int64)


def _dense_projections(name, src, tgt, w, delays, extra=0, scale=SCALE):
    """One dense projection of delay 1 + extra + the layer's delay, or, where neurons have different delays, one
    sparse projection per delay holding the synapses of the neurons with that delay (the same events and work)."""
    if delays is None or np.all(delays == delays[0]):
        d = 0 if delays is None else int(delays[0])
        return [Projection(name, "dense", src, tgt, (w * scale).astype(np.float32), delay=1 + extra + d)]
    out = []
    for d in np.unique(delays):
        mask = np.where(delays == d, 1.0, 0.0)[:, None] * (w != 0)
        src_idx, tgt_idx = np.nonzero(mask.T)  # CSR by source
        indptr = np.concatenate([[0], np.cumsum(np.bincount(src_idx, minlength=w.shape[1]))]).astype(np.int64)
        out.append(Projection(f"{name}.delay{int(d)}", "sparse", src, tgt,
                              (w.T[src_idx, tgt_idx] * scale).astype(np.float32), indptr=indptr,
                              indices=tgt_idx.astype(np.int64), delay=1 + extra + int(d)))
    return out


def _shape(layer, where):
    shape = tuple(_ints(_read(layer, "shape", where), f"{where}/shape", "shape"))
    if not shape or any(s < 1 for s in shape) or len(shape) > 3:
        raise NetxImportError(f"{where}: shape {shape} must have 1 to 3 positive dimensions")
    return shape


def _flat(shape):
    """(C, H, W) stays; (N,), (N, 1, 1) and (1, 1, N) are N neurons."""
    if len(shape) == 3 and shape[1:] != (1, 1) and shape[:2] != (1, 1):
        return shape
    return (int(np.prod(shape)),)


def from_netx(h5, name="netx", layers=None, reset_interval=None, reset_offset=0) -> Network:
    """The network of an open netx file (an h5py File), its first `layers` layers when given.

    reset_interval / reset_offset: as netx's Network takes them (a network run on a stream of samples of
    reset_interval steps): the k-th layer netx builds (the input layer with a neuron group first) restarts its state
    at the start of every step t with t % reset_interval == (reset_offset + k) % reset_interval, as Lava's
    LIFReset does (Lava counts steps from 1 and gives each layer one step more: the same steps)."""
    import h5py

    if reset_interval is not None and (isinstance(reset_interval, bool) or not isinstance(reset_interval, int)
                                       or reset_interval < 1):
        raise NetxImportError(f"reset_interval must be a whole number of steps >= 1, got {reset_interval!r}")
    root = h5.get("layer")
    if not isinstance(root, h5py.Group) or not len(root):
        raise NetxImportError("no 'layer' group: not a netx file")
    count = len(root)
    if sorted(root.keys(), key=lambda k: (len(k), k)) != [str(i) for i in range(count)]:
        raise NetxImportError(f"layer/ holds {sorted(root.keys())[:5]}...: netx numbers layers 0 .. {count - 1}")
    if layers is not None:
        if not 1 <= layers <= count:
            raise NetxImportError(f"layers={layers}: the file has {count} layers")
        count = layers
    build = _Build(reset_interval, reset_offset)
    for i in range(count):
        layer = root[str(i)]
        where = f"layer/{i}"
        if not isinstance(layer, h5py.Group):
            raise NetxImportError(f"{where}: not a group")
        kind = _text(_read(layer, "type", where))
        shape = _shape(layer, where) if kind in ("conv", "pool") else _flat(_shape(layer, where))  # keep (C, H, W)
        if kind in NOT_BUILT:
            raise NetxImportError(f"{where}: {kind} layers are not imported (lava-dl's netx does not build them "
                                  "either); import the layers before it with --layers")
        if i == 0:
            if kind != "input":
                raise NetxImportError(f"{where}: the first layer is {kind!r}, not an input layer")
            _input_layer(build, layer, where, shape)
        elif kind == "input":
            raise NetxImportError(f"{where}: a second input layer")
        elif kind == "flatten":
            if int(np.prod(shape)) != int(np.prod(build.prev_shape)):
                raise NetxImportError(f"{where}: flatten to {shape} from {build.prev_shape}")
            build.prev_shape = shape
        elif kind in ("dense", "conv", "dense_rec", "pool"):
            _synaptic_layer(build, layer, where, kind, f"{kind}{i}", shape, last=i == count - 1)
        else:
            raise NetxImportError(f"{where}: unknown layer type {kind!r}")
    pops, projs = build.pops, build.projs
    if len(pops) == 1 or pops[-1].model != "readout":
        raise NetxImportError(f"the first {count} layer(s) hold no dense or conv layer to read out")
    from spikeforge.converter.mapping import one_population_per_core

    cores, edges = one_population_per_core(pops, projs)
    return Network(pops, projs, cores, edges, {"name": name, "source": "lava-dl netx", "mapping":
                                                "one-population-per-core", "time_semantics": "netx (one step "
                                                "per synapse)"})


class _Build:
    """What `from_netx` has built so far: populations, projections, the population the next layer reads and its
    shape, the layers counted in netx's reset offsets, and which warnings were given once."""

    def __init__(self, reset_interval, reset_offset):
        self.reset_interval, self.reset_offset = reset_interval, reset_offset
        self.pops, self.projs = [], []
        self.prev, self.prev_shape = None, None
        self.built = 0  # layers built so far (netx's reset offset grows by one per layer)
        self.warned = set()

    def restart(self) -> dict:
        """The next built layer's restart schedule (empty without reset_interval); counts the layer."""
        if self.reset_interval is None:
            return {}
        phase = (int(self.reset_offset) + self.built) % self.reset_interval
        self.built += 1
        return {"reset_every": self.reset_interval, "reset_phase": phase}

    def warn_once(self, key, message):
        if key not in self.warned:
            self.warned.add(key)
            _warn(message)

    def add(self, pop, projs, shape):
        """Append a layer's population and its incoming projections; the next layer reads it."""
        self.pops.append(pop)
        self.projs += projs
        self.prev, self.prev_shape = pop.name, shape

    def add_output(self, shape, **schedule):
        """The `output` readout summing what the last layer sends (since its restart, under a schedule)."""
        self.add(Population.make("output", "readout", shape, **schedule),
                 [Projection("output", "identity", self.prev, "output")], shape)


def _input_layer(build, layer, where, shape):
    """netx's input layer: the sample itself, or through Lava's Delta (SDNN) or its input neurons' bias (CUBA)."""
    build.add(Population.make("input", "input", shape), [], shape)
    neuron = _neuron(layer, where)
    if neuron is None:
        return
    n = int(np.prod(shape))
    one_to_one = dict(indptr=np.arange(n + 1, dtype=np.int64), indices=np.arange(n, dtype=np.int64))
    if neuron["type"] == "SDNN":  # Lava's Delta: a_in << 12, its change sent
        build.restart()  # (netx counts the layer in its reset offsets; sigma-delta layers take no restarts)
        build.add(_sigma_delta("input0", shape, neuron, 0.0, where, delta_input=True),
                  [Projection("input0.in", "sparse", "input", "input0", np.full(n, SD_SCALE, np.float32),
                              **one_to_one)], shape)
        return
    neuron = dict(neuron, iDecay=np.array([4096.0]))  # Lava feeds the sample as the neurons' bias: no current memory
    build.add(_cuba("input0", shape, neuron, 0.0, where, **build.restart()),  # one synapse of 2^6 per neuron
              [Projection("input0.in", "sparse", "input", "input0", np.full(n, SCALE, np.float32), **one_to_one)],
              shape)


def _pool_as_conv(build, layer, where, shape) -> dict:
    """slayer's sum pooling, each channel alone through the window's weights: the layer as a depthwise conv."""
    prev_shape = build.prev_shape
    if len(prev_shape) != 3 or len(shape) != 3 or shape[0] != prev_shape[0]:
        raise NetxImportError(f"{where}: a pool layer between {prev_shape} and {shape} (both (C, H, W), the "
                              "same channels)")
    build.warn_once("pool", f"{where}: lava-dl's netx does not build pool layers; imported as slayer computes them "
                            "(each channel summed through the window's weights: a depthwise convolution)")
    window = np.asarray(_read(layer, "weight", where), np.float64).reshape(-1)
    c = shape[0]
    kh, kw = _ints(_read(layer, "kernelSize", where), f"{where}/kernelSize", "kernelSize", 2)
    if window.size not in (1, kh * kw):
        raise NetxImportError(f"{where}: weight of {window.size} values for a {kh}x{kw} window")
    return dict(layer.items(), weight=np.broadcast_to(np.resize(window, kh * kw).reshape(1, 1, kh, kw),
                                                       (c, 1, kh, kw)).copy(), groups=np.asarray(c))


def _layer_projections(build, layer, where, kind, lname, shape, sdnn) -> list:
    """The projections into a dense, dense_rec or conv layer (weights scaled as Lava's neurons take them)."""
    scale = 1 if sdnn else SCALE  # Lava's SigmaDelta adds its input unshifted; its LIF shifts it left by 6
    prev, prev_shape = build.prev, build.prev_shape
    if kind == "conv":
        if len(prev_shape) != 3 or len(shape) != 3:
            raise NetxImportError(f"{where}: a conv layer between {prev_shape} and {shape} (both must be "
                                  "(C, H, W))")
        w, stride, padding, groups = _conv(layer, where, prev_shape, shape, wraps=sdnn)
        return [Projection(lname, "conv2d", prev, lname, (w * scale).astype(np.float32), kernel=tuple(w.shape[2:]),
                           stride=stride, padding=padding, groups=groups, delay=1)]
    n_in, n_out = int(np.prod(prev_shape)), int(np.prod(shape))
    w = _dense_weight(layer, where, n_in, n_out)
    projs = _dense_projections(lname, prev, lname, w, _delays(layer, where, n_out), scale=scale)
    if kind == "dense_rec":
        w_rec = np.trunc(np.asarray(_read(layer, "weight_rec", where), np.float64))
        if w_rec.shape != (n_out, n_out) or not np.all(np.isfinite(w_rec)):
            raise NetxImportError(f"{where}: weight_rec must be ({n_out}, {n_out}) finite values")
        projs.append(Projection(f"{lname}.rec", "dense", lname, lname, (w_rec * SCALE).astype(np.float32), delay=1))
    return projs


def _synaptic_layer(build, layer, where, kind, lname, shape, last):
    """A dense, conv, dense_rec or pool layer with its neurons (LIF, sigma-delta, or the integrating readout)."""
    neuron = _neuron(layer, where)
    bias = np.asarray(_read(layer, "bias", where), np.float64) if "bias" in layer else np.zeros(1)
    if not np.all(np.isfinite(bias)):
        raise NetxImportError(f"{where}/bias: NaN or inf")
    bias = np.trunc(bias)
    sdnn = neuron is not None and neuron["type"] == "SDNN"
    if sdnn and kind == "dense_rec":
        raise NetxImportError(f"{where}: dense_rec with sigma-delta neurons is not imported")
    if sdnn and build.reset_interval is not None:
        build.warn_once("sdnn reset", f"{where}: netx ignores reset_interval for sigma-delta layers; so does this "
                                      "import")
    if kind == "pool":
        layer, kind = _pool_as_conv(build, layer, where, shape), "conv"
    projs = _layer_projections(build, layer, where, kind, lname, shape, sdnn)
    if sdnn:  # netx's Sigma output layer (σ sent, no bias), else a SigmaDelta layer (a conv's input wraps)
        build.restart()  # counted in netx's reset offsets, not restarted
        sigma_output = neuron["sigma_output"]
        if sigma_output and not last:
            raise NetxImportError(f"{where}: a sigma output layer before the last layer")
        if sigma_output and np.any(bias):
            _warn(f"{where}: netx's Sigma output takes no bias; left out, as Lava runs it")
        build.add(Population.make(lname, "readout", shape) if sigma_output else
                  _sigma_delta(lname, shape, neuron, bias, where, wrap=kind == "conv"), projs, shape)
        if last and not sigma_output:  # the payloads summed
            build.add_output(shape)
        return
    readout = last and kind != "dense_rec" and _integrates(neuron, bias, where)
    schedule = build.restart()
    if readout:
        build.add(Population.make(lname, "readout", shape, 0.0, 0.0, _broadcast(bias, shape, where) * SCALE,
                                  **schedule), projs, shape)
        return
    build.add(_cuba(lname, shape, neuron or DEFAULT_NEURON, bias, where, **schedule), projs, shape)
    if last:
        build.add_output(shape, **schedule)  # counts since the layer's restart


def _broadcast(bias, shape, where="", what="bias"):
    """Per-neuron values of one per layer, one per channel of a (C, H, W) layer, or one per neuron."""
    n = int(np.prod(shape))
    bias = np.asarray(bias, np.float64).reshape(-1)
    if bias.size == 1:
        return np.full(n, bias[0])
    if bias.size == n:
        return bias
    if len(shape) == 3 and bias.size == shape[0]:
        return np.repeat(bias, n // shape[0])
    raise NetxImportError(f"{where}: {what} has {bias.size} values for a layer of shape {tuple(shape)}")


def _integrates(neuron, bias, where) -> bool:
    """Whether the last layer is a non-spiking integrator the readout computes exactly: netx's default neuron (no
    neuron group: u sums the input, v = u + bias) without a bias, or iDecay 4096 with vDecay 0 (v sums input and
    bias each step, as the readout does; Lava would fire it only above θ, the readout never)."""
    if neuron is None:
        if np.any(bias != 0):
            raise NetxImportError(f"{where}: the output layer has netx's default neuron (no neuron group) and a bias, "
                                  "whose v = sum of inputs + bias the readout cannot give (not imported)")
        return True
    if np.all(neuron["iDecay"] == 4096) and np.all(neuron["vDecay"] == 0):
        _warn(f"{where}: the output layer integrates without decay: imported as the readout, which reports v(T) / T "
              f"and never fires (Lava would fire it above θ = {int(neuron['vThMant'].min()) * SCALE:,})")
        return True
    return False


def check_netx_file(path):
    """Open `path` read-only and refuse external links / storage, virtual datasets and more declared data than
    SPIKEFORGE_MAX_DATASET_BYTES before anything is read; returns the open h5py File."""
    import h5py

    from spikeforge.simulator.h5safe import ForeignDataError, check_self_contained

    try:
        h5 = h5py.File(path, "r")
    except OSError as exc:
        raise NetxImportError(f"{path}: not a readable HDF5 file ({' '.join(str(exc).split())})") from None
    try:
        total = check_self_contained(h5, path)
    except ForeignDataError:
        h5.close()
        raise
    if total > MAX_DATASET_BYTES:
        h5.close()
        raise NetxImportError(f"{path}: its datasets declare {size_text(total)} in all, more than the "
                              f"{size_text(MAX_DATASET_BYTES)} allowed (SPIKEFORGE_MAX_DATASET_BYTES)")
    return h5


def import_netx(netx_path, out_path, layers=None, reset_interval=None, reset_offset=0, target=None,
                placement="anneal", chips=None) -> str:
    """Read a netx file, build the network (its first `layers` layers; `reset_interval` / `reset_offset` as netx's
    Network takes them, see from_netx), optionally map it on a hardware target, write it atomically; returns the
    path written."""
    from spikeforge.converter.writer import write_network

    netx_path = os.fspath(netx_path)
    if not os.path.exists(netx_path):
        raise NetxImportError(f"{netx_path}: no such file")
    with check_netx_file(netx_path) as h5:
        try:
            net = from_netx(h5, os.path.splitext(os.path.basename(netx_path))[0], layers, reset_interval,
                            reset_offset)
        except NetxImportError as exc:
            raise NetxImportError(f"{netx_path}: {exc}") from None
    if target is not None:
        from spikeforge.converter.mapping import map_network
        from spikeforge.hwmodels.targets import load_target

        net = map_network(net, load_target(target) if isinstance(target, str) else target, placement, chips=chips)
    return write_network(net, out_path)
