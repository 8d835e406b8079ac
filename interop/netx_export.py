"""spikeforge network -> lava-dl netx HDF5 file (what slayer's `export_hdf5` writes and `lava.lib.dl.netx` builds
Lava processes from): the inverse of `netx_import` for networks in Loihi's arithmetic.

A network netx can describe is a chain: the input (0/1 spike frames), or the input entering a `cuba` population
in Loihi's arithmetic through one synapse of weight 64 per neuron (netx's input layer, fed its bias_mant); then
`cuba` populations in Loihi's arithmetic, each fed by the one before it through a dense or conv2d projection of delay
1 + d (netx's axonal delay d of every neuron; sparse projections from one source split by delay, as the importer
writes per-neuron delays, join into one dense layer) and optionally a recurrent dense projection onto itself of delay
1 (a dense_rec layer); and a readout that counts the last layer's spikes (nothing to write: netx's output is that
layer's spikes) or integrates a dense projection from it (an output layer with iDecay 4096, vDecay 0 and the largest
threshold, which Lava fires only above 2^23 - 64). Values are written in netx's units: weights, biases and θ / 64,
decays as 4096 - 4096·factor, whole numbers each, else refused naming the population.

State restarts (reset_every / reset_phase) are not part of a netx file: netx takes reset_interval as an argument of
its Network; the exporter returns them for the caller to pass (`export_netx` -> (reset_interval, reset_offset) or
None).
"""
from __future__ import annotations

import os

import numpy as np

from spikeforge.errors import UserError
from spikeforge.interop.netx_import import SCALE, SD_SCALE, check_dense_weights

__all__ = ["NetxExportError", "export_netx", "write_layers"]

MAX_THRESHOLD = (1 << 17) - 1  # the largest vThMant Lava's LIF takes (17 bits)


class NetxExportError(UserError):
    """A network netx cannot describe (names the population or projection)."""


def _whole(values, where, what, scale=SCALE):
    out = np.asarray(values, np.float64) / scale
    if not np.all(out == np.round(out)):
        bad = int(np.flatnonzero(out != np.round(out))[0])
        raise NetxExportError(f"{where}: {what} {np.asarray(values).reshape(-1)[bad]:g} is not a whole multiple of "
                              f"{scale} (netx stores whole numbers, x {scale} in Lava)")
    return out


def _scales(pop):
    """(weight scale, θ and bias scale) of a layer: Lava's LIF shifts its input and bias by 6 bits; its SigmaDelta
    adds its input unshifted and scales θ and bias by 2^12."""
    return (1, SD_SCALE) if pop.model == "sigma_delta" else (SCALE, SCALE)


def _neuron(pop, conv=False):
    """netx's neuron group of a loihi cuba population (CUBA) or a sigma_delta one (SDNN), one value per layer where
    they are all equal."""
    where = f"population {pop.name!r}"
    if pop.model == "sigma_delta":
        if np.any(pop.v_init != 0):
            raise NetxExportError(f"{where}: initial sums other than 0 (netx starts every neuron at 0)")
        if pop.payload_shift != 6 or pop.input_wrap != (24 if conv else 0) or pop.reset_every:
            raise NetxExportError(f"{where}: netx's SigmaDelta sends d >> 6 and wraps a conv layer's input (only) at "
                                  f"24 bits, with no restarts; this one: payload_shift {pop.payload_shift}, input_wrap "
                                  f"{pop.input_wrap}, reset_every {pop.reset_every}")
        theta = _whole(np.unique(pop.threshold), where, "threshold", SD_SCALE)
        if theta.size != 1:
            raise NetxExportError(f"{where}: the threshold differs between neurons; netx writes one per layer")
        return {"type": "SDNN", "activation": "relu", "vThMant": int(theta[0])}
    if pop.model != "cuba" or pop.arithmetic != "loihi":
        raise NetxExportError(f"{where}: a {pop.model!r} population{' in float arithmetic' * (pop.model == 'cuba')}; "
                              "netx describes cuba neurons in Loihi's arithmetic and sigma_delta neurons "
                              "(import-lava's networks)")
    if np.any(pop.v_init != 0):
        raise NetxExportError(f"{where}: initial membranes other than 0 (netx starts every neuron at 0)")
    if pop.spike_value != "unit":
        raise NetxExportError(f"{where}: its spikes carry θ; Lava's LIF sends 1 (spike_value 'unit')")

    def one(values, what):
        values = np.asarray(values, np.float64)
        if np.any(values != values[0]):
            raise NetxExportError(f"{where}: {what} differs between neurons; netx writes one per layer")
        return values[0]

    i_decay = 4096 - 4096 * one(pop.syn_decay, "the current decay")
    v_decay = 4096 - 4096 * one(pop.decay, "the membrane decay")
    theta = _whole(one(pop.threshold, "the threshold"), where, "threshold")
    return {"type": "CUBA", "iDecay": int(round(i_decay)), "vDecay": int(round(v_decay)), "vThMant": int(theta),
            "refDelay": 1, "gradedSpike": False}


def _bias(pop, where):
    """The layer's bias in netx units: per neuron, or per channel for a (C, H, W) layer whose channels share one."""
    b = _whole(pop.bias, where, "bias", _scales(pop)[1])
    if len(pop.shape) == 3:
        per = b.reshape(pop.shape[0], -1)
        if np.all(per == per[:, :1]):
            return per[:, 0]
        raise NetxExportError(f"{where}: a conv layer's bias differs within a channel (netx: one per channel)")
    return b


def _feed(net, pop, prev):
    """(kind, source, weight (netx units), conv geometry or None, per-neuron delays or None, recurrent weight) of a
    layer fed by `prev` (the layer before it in netx's chain)."""
    incoming = net.incoming(pop.name)
    rec = [q for q in incoming if net.recurrent(q)]
    fwd = [q for q in incoming if not net.recurrent(q)]
    if len(rec) > 1 or (rec and (rec[0].source != pop.name or rec[0].kind != "dense" or rec[0].delay != 1)):
        raise NetxExportError(f"population {pop.name!r}: netx's recurrence is one dense projection onto the layer "
                              "itself, delivered a step later")
    sources = {q.source for q in fwd}
    if sources != {prev}:
        raise NetxExportError(f"population {pop.name!r}: fed by {sorted(sources)}; a netx layer reads the one before "
                              f"it ({prev!r}) and nothing else")
    src = net.populations[net.index_of(next(iter(sources)))]
    scale = _scales(pop)[0] if pop.model != "readout" else (1 if src.model == "sigma_delta" else SCALE)

    def weight(q):
        return _whole(q.weight, f"projection {q.name!r}", "weight", scale)

    w_rec = None if not rec else weight(rec[0])
    if len(fwd) == 1 and fwd[0].kind == "conv2d":
        q = fwd[0]
        if q.delay != 1:
            raise NetxExportError(f"projection {q.name!r}: delay {q.delay}; netx's conv layers take no delay (1: "
                                  "the synapse's own step)")
        return "conv", src, weight(q), q, None, w_rec
    if len(fwd) == 1 and fwd[0].kind == "dense":
        q = fwd[0]
        if q.delay < 1 or q.delay > 63:
            raise NetxExportError(f"projection {q.name!r}: delay {q.delay}; netx's axonal delays are 0 to 62 steps "
                                  "after the synapse's own one")
        w = weight(q)
        check_dense_weights(w, f"projection {q.name!r}", NetxExportError)
        return "dense", src, w, None, (np.full(pop.size, q.delay - 1) if q.delay > 1 else None), w_rec
    if all(q.kind == "sparse" for q in fwd):  # the importer's per-neuron delays: one sparse projection per delay
        w = np.zeros((pop.size, src.size))
        delay = np.full(pop.size, -1, np.int64)
        for q in fwd:
            reached = np.unique(q.indices)
            if q.delay < 1 or q.delay > 63 or np.any(delay[reached] >= 0):
                raise NetxExportError(f"projection {q.name!r}: netx's per-neuron delays need each neuron reached at "
                                      f"one delay of 1 to 63 steps (this one: {q.delay}, or a neuron another "
                                      "projection reaches too)")
            rows = np.repeat(np.arange(src.size), np.diff(q.indptr))
            np.add.at(w, (q.indices, rows), weight(q))
            delay[reached] = q.delay - 1
        check_dense_weights(w, f"population {pop.name!r}", NetxExportError)
        return "dense", src, w, None, np.maximum(delay, 0), w_rec
    raise NetxExportError(f"population {pop.name!r}: fed by {', '.join(q.kind for q in fwd)} projections; netx "
                          "layers are dense or conv")


def export_netx(net, path):
    """Write `net` as a netx file at `path` (atomically); returns (reset_interval, reset_offset) to pass to netx's
    Network (the file cannot hold them), or None when the network restarts no state."""
    layers, restarts = [], []  # (reset_every, reset_phase) of each layer netx builds, in order
    pops = net.populations
    first = pops[1] if len(pops) > 1 else None
    if first is not None and _diagonal_from_input(net, first):
        if first.model == "sigma_delta":  # netx's Delta input layer: the sample x 2^12, its change sent
            if not (first.delta_input and np.all(net.incoming(first.name)[0].weight == SD_SCALE)
                    and not np.any(first.bias)):
                raise NetxExportError(f"population {first.name!r}: netx's input layer takes the sample x 2^12 as its "
                                      "activation (delta_input, one synapse of 4096 per neuron, no bias)")
            layers.append({"type": "input", "shape": list(first.shape), "neuron": _neuron(first)})
            restarts.append(None)  # netx counts it in its reset offsets; it takes no restarts
        else:  # netx's input layer: the sample as its bias (a diagonal of 64s from the input)
            if not (first.model == "cuba" and np.all(net.incoming(first.name)[0].weight == SCALE)
                    and not np.any(first.bias) and not np.any(first.syn_decay)):
                raise NetxExportError(f"population {first.name!r}: netx's input layer takes the sample as its bias "
                                      "(a cuba population in Loihi's arithmetic, one synapse of 64 per neuron from the "
                                      "input, no bias, no current memory)")
            layers.append({"type": "input", "shape": list(first.shape), "neuron": dict(_neuron(first), iDecay=4096)})
            restarts.append((first.reset_every, first.reset_phase))
        chain, prev = pops[2:], first.name
    else:  # spikes straight from the input
        layers.append({"type": "input", "shape": list(pops[0].shape)})
        chain, prev = pops[1:], pops[0].name
    prev_shape = layers[0]["shape"]
    for k, pop in enumerate(chain):
        where = f"population {pop.name!r}"
        if pop.model == "readout":
            if k != len(chain) - 1:
                raise NetxExportError(f"{where}: a readout before the last population")
            feeds = net.incoming(pop.name)
            if [q.source for q in feeds] != [prev]:
                raise NetxExportError(f"{where}: a netx output reads the last layer ({prev!r}) alone")
            if len(feeds) == 1 and feeds[0].kind == "identity" and feeds[0].delay == 0:
                break  # counting the last layer's spikes: netx's output is those spikes
            if len(feeds) == 1 and feeds[0].kind == "dense" and feeds[0].delay == 1:
                sigma = net.population(feeds[0].source).model == "sigma_delta"  # netx's Sigma output layer
                w = _whole(feeds[0].weight, f"projection {feeds[0].name!r}", "weight", 1 if sigma else SCALE)
                if len(prev_shape) == 3:
                    layers.append({"type": "flatten", "shape": [int(np.prod(prev_shape)), 1, 1]})
                if sigma and (np.any(pop.bias) or pop.reset_every):
                    raise NetxExportError(f"{where}: netx's Sigma output takes no bias and no restarts")
                neuron = {"type": "SDNN", "activation": "relu", "vThMant": 0, "sigma_output": True} if sigma else \
                    {"type": "CUBA", "iDecay": 4096, "vDecay": 0, "vThMant": MAX_THRESHOLD, "refDelay": 1,
                     "gradedSpike": False}
                layers.append({"type": "dense", "shape": [pop.size], "inFeatures": w.shape[1],
                               "outFeatures": w.shape[0], "weight": w, "neuron": neuron,
                               **({} if sigma else {"bias": _whole(pop.bias, where, "bias")})})
                restarts.append(None if sigma else (pop.reset_every, pop.reset_phase))
                break
            raise NetxExportError(f"{where}: a readout netx can describe counts the last layer's spikes (identity) "
                                  "or integrates one dense projection from it delivered a step later")
        neuron = _neuron(pop, conv=any(q.kind == "conv2d" for q in net.incoming(pop.name)))  # the model first
        if pop.model == "sigma_delta" and pop.delta_input:
            raise NetxExportError(f"{where}: a sigma-delta layer whose activation is its input (delta_input) is "
                                  "netx's input layer only")
        kind, src, w, conv, delay, w_rec = _feed(net, pop, prev)
        restarts.append(None if pop.model == "sigma_delta" else (pop.reset_every, pop.reset_phase))  # (none: SDNN)
        if kind == "conv":
            if len(prev_shape) != 3:
                raise NetxExportError(f"{where}: a conv layer after a flat layer")
            layers.append({"type": "conv", "shape": list(pop.shape), "inChannels": int(src.shape[0]),
                           "outChannels": int(pop.shape[0]), "kernelSize": list(w.shape[2:]),
                           "stride": list(conv.stride), "padding": list(conv.padding), "dilation": [1, 1],
                           "groups": int(conv.groups), "weight": w, "bias": _bias(pop, where), "neuron": neuron})
        else:
            if len(prev_shape) == 3 and prev_shape[1:] != [1, 1]:
                layers.append({"type": "flatten", "shape": [int(np.prod(prev_shape)), 1, 1]})
            layer = {"type": "dense" if w_rec is None else "dense_rec", "shape": [pop.size],
                     "inFeatures": int(w.shape[1]), "outFeatures": int(w.shape[0]), "weight": w,
                     "bias": _bias(pop, where), "neuron": neuron}
            if delay is not None:
                layer["delay"] = delay.astype(np.float32)
            if w_rec is not None:
                layer["weight_rec"] = w_rec
            layers.append(layer)
        prev_shape, prev = list(pop.shape), pop.name
    else:
        raise NetxExportError("the network ends without a readout")
    schedule = _schedule(restarts)
    write_layers(path, layers)
    return schedule


def _diagonal_from_input(net, first):
    """Whether `first` is fed by the input alone through one synapse per neuron, no delay: netx's input layer as
    import-lava builds it (a layer fed otherwise reads the input's spikes: a netx input without a neuron group)."""
    feeds = net.incoming(first.name)
    if len(feeds) != 1 or feeds[0].source != net.populations[0].name or feeds[0].kind != "sparse" or feeds[0].delay:
        return False
    q = feeds[0]
    return first.size == net.populations[0].size and np.array_equal(q.indices, np.arange(first.size)) and \
        np.array_equal(q.indptr, np.arange(first.size + 1))


def write_layers(path, layers):
    """Write netx layers ([{key: value}], a neuron group as a dict under "neuron") at `path`, atomically, in lava-dl's
    layout: layer/0 .. layer/n-1, the type as 10-byte ASCII of shape (1,), a neuron type as a variable-length string,
    weights, biases and delays float32, other numbers int64."""
    import h5py

    from spikeforge.simulator.atomic import atomic_output

    with atomic_output(os.fspath(path)) as tmp, h5py.File(tmp, "w") as f:
        for i, layer in enumerate(layers):
            g = f.create_group(f"layer/{i}")
            for key, value in layer.items():
                if key == "type":
                    g.create_dataset("type", (1,), "S10", [value.encode()])
                elif key == "neuron":
                    n = g.create_group("neuron")
                    for k, v in value.items():
                        n.create_dataset(k, data=v)
                else:
                    g.create_dataset(key, data=np.asarray(value, np.float32 if key in
                                                          ("weight", "weight_rec", "bias", "delay") else np.int64))
    return path


def _schedule(restarts):
    """(reset_interval, reset_offset) netx's Network gives these layers (layer k restarts at phase offset + k), or
    None when none restarts; refused when the layers' restarts follow another pattern."""
    counted = [(k, r) for k, r in enumerate(restarts) if r is not None]  # k: the layer's place in netx's count
    every = {r[0] for _, r in counted}
    if every <= {0}:
        return None
    k0, (interval, phase) = counted[0]
    offset = (phase - k0) % interval
    want = [(k, (interval, (offset + k) % interval)) for k, _ in counted]
    if 0 in every or counted != want:
        raise NetxExportError(f"the layers' state restarts (reset_every, reset_phase) {restarts} are not netx's "
                              "reset_interval pattern (one period, the phase one step later per layer)")
    return interval, offset
