"""spikeforge network -> NIR graph (PyPI `nir`, the Neuromorphic Intermediate Representation).

NIR describes continuous-time nodes; a spikeforge network is the discrete-time system dt = 1. What maps:

population / projection            NIR node(s)
input                              Input
if (decay 1) / lif                 IF / LIF (tau = dt / (1 - decay), r = tau / dt: v <- decay·v + I under Euler)
cuba                               CubaLIF (tau_syn = dt / (1 - syn_decay), w_in = tau_syn / dt, tau_mem and r as
                                   LIF's: i <- syn_decay·i + I, v <- decay·v + i; hold and order in metadata)
spikes that carry θ                a Scale(θ) node after the neuron (NIR spikes are 1)
readout                            I (integrator) -> Output (NIR's output is v(T); spikeforge reports v(T) / T)
dense / sparse                     Affine (bias = the target's bias) or Linear; Flatten first from a (C, H, W) source
conv2d                             Conv2d (bias per output channel)
avgpool                            AvgPool2d (zero padding counted, as torch's default)
identity                           a direct edge (Flatten when the shapes differ)
delay d > 0 (format 1.8)           a Delay(d·dt) node between the source and the projection's node
recurrent (format 1.12)            an edge back to the target (one step late, as NIR importers read a cycle; a
                                   longer delay adds a Delay((d - 1)·dt))

What NIR cannot say is kept in each node's metadata (``spikeforge_*`` keys: reset mode, threshold test,
initial membrane, exact bias), so `interop.nir_import` rebuilds the network exactly; another NIR reader
sees the nearest NIR network: reset to v_reset = 0 instead of subtraction, the strict test v > θ, v(0) = 0.
No NIR equivalent (refused, naming the population): group neurons (τ members sharing one membrane), signed
neurons (negative spikes), multi-threshold neurons (graded levels), EC compute nodes and EC matrix products.
"""
from __future__ import annotations

import io

import numpy as np

from spikeforge.errors import UserError
from spikeforge.simulator.atomic import write_bytes
from spikeforge.simulator.fileformat import FORMAT_VERSION, load_network, validate_network
from spikeforge.simulator.geometry import synapse_matrix
from spikeforge.simulator.network import Network

NO_NIR_EQUIVALENT = {
    "group": "group neurons (tau IF members sharing one membrane) have no NIR node",
    "signed": "signed neurons fire negative spikes, which NIR's IF / LIF cannot",
    "multi_threshold": "multi-threshold neurons send graded levels, which NIR's spikes cannot carry",
    "ec": "expectation-compensation compute nodes have no NIR node",
    "ec_matmul": "EC matrix products of two spiking operands have no NIR node",
    "maxpool": "spiking max pooling (gating by spike counts) has no NIR node",
    "sigma_delta": "sigma-delta neurons send graded changes of their activation, which NIR's spikes cannot carry",
}
MAX_DENSE_EXPORT = 2**26  # sparse projections are written as dense Affine weights up to this many entries


class NirExportError(UserError):
    """A network has a part NIR cannot express."""


def _f32(a):
    return np.ascontiguousarray(np.asarray(a, np.float32))


def _neuron_node(nir, pop):
    shape = tuple(pop.shape)
    theta = _f32(pop.threshold).reshape(shape)
    meta = {"spikeforge_model": pop.model, "spikeforge_reset": pop.reset,
            "spikeforge_threshold_test": pop.threshold_test, "spikeforge_spike_value": pop.spike_value,
            "spikeforge_v_init": _f32(pop.v_init).reshape(shape), "spikeforge_bias": _f32(pop.bias).reshape(shape)}
    zeros = np.zeros(shape, np.float32)
    if pop.model == "cuba":
        meta.update(spikeforge_decay=_f32(pop.decay).reshape(shape), spikeforge_syn_decay=_f32(pop.syn_decay).reshape(
            shape), spikeforge_refractory=int(pop.refractory), spikeforge_synapse_order=pop.synapse_order)
        with np.errstate(divide="ignore"):  # dt = 1; a factor 1 -> tau inf (and gain inf: dt·r/tau = 1)
            tau_mem = (1.0 / (1.0 - pop.decay.astype(np.float64))).reshape(shape).astype(np.float32)
            tau_syn = (1.0 / (1.0 - pop.syn_decay.astype(np.float64))).reshape(shape).astype(np.float32)
        return nir.CubaLIF(tau_syn=tau_syn, tau_mem=tau_mem, r=tau_mem, w_in=tau_syn, v_leak=zeros, v_threshold=theta,
                           v_reset=zeros, metadata=meta)
    if pop.model == "if" or (pop.model == "lif" and np.all(pop.decay == 1)):
        return nir.IF(r=np.ones(shape, np.float32), v_threshold=theta, v_reset=zeros, metadata=meta)
    meta["spikeforge_decay"] = _f32(pop.decay).reshape(shape)
    with np.errstate(divide="ignore"):
        tau = (1.0 / (1.0 - pop.decay.astype(np.float64))).reshape(shape)  # dt = 1; decay 1 -> inf
    return nir.LIF(tau=tau.astype(np.float32), r=tau.astype(np.float32), v_leak=zeros, v_threshold=theta,
                   v_reset=zeros, metadata=meta)


def _bias_carrier(net, pop):
    """Name of the projection into `pop` whose NIR node carries pop's bias (first dense / sparse / conv2d one
    that can); None when the bias is zero. Raises when a nonzero bias has no carrier."""
    if not np.any(pop.bias):
        return None
    for q in net.incoming(pop.name):
        if q.kind in ("dense", "sparse"):
            return q.name
        if q.kind == "conv2d":
            per_channel = pop.bias.reshape(pop.shape[0], -1)
            if np.all(per_channel == per_channel[:, :1]):
                return q.name
    raise NirExportError(f"population {pop.name!r}: its bias has no NIR form (NIR biases live in Affine or "
                         "Conv2d nodes, one value per output channel)")


EXPORT_CONVENTIONS = ("nir", "snntorch", "norse")
SNNTORCH_DT = 1e-4  # the step snnTorch 1.0's import_from_nir assumes (hard-coded there)
NORSE_DT = 1e-3  # Norse 1.1's from_nir default
_SNNTORCH_NO_LEAK = 1e13  # τ (x dt) of a neuron without leak: 1 - dt/τ rounds to exactly 1 in float64


def _check_snntorch(net):
    """Refuse, naming the part, what snnTorch 1.0's import_from_nir would read as another network: it builds
    Leaky / Synaptic layers with reset to zero right after a spike, one threshold per layer, the test mem > θ,
    unit spikes, a start at 0, no delays, and no integrator node (the Output reads the last layer)."""
    for pop in net.populations:
        where = f"population {pop.name!r}"
        if pop.model in ("input", "readout"):
            if pop.model == "readout" and np.any(pop.bias):
                raise NirExportError(f"{where}: a readout bias has no place in snnTorch's graph (no I node)")
            continue
        if pop.model not in ("if", "lif", "cuba"):
            raise NirExportError(f"{where}: {pop.model} neurons have no snnTorch form")
        if pop.reset != "zero" or pop.threshold_test != "gt" or pop.spike_value != "unit" or np.any(pop.v_init):
            raise NirExportError(f"{where}: snnTorch's import builds neurons that reset to 0, fire on mem > θ, send "
                                 f"1 and start at 0; this one has reset {pop.reset!r}, threshold_test "
                                 f"{pop.threshold_test!r}, spike_value {pop.spike_value!r}"
                                 + (", a nonzero v_init" if np.any(pop.v_init) else ""))
        if np.unique(pop.threshold).size != 1:
            raise NirExportError(f"{where}: snnTorch's import takes one threshold per layer, this one has "
                                 f"{np.unique(pop.threshold).size}")
        if pop.model == "cuba" and (pop.refractory or pop.synapse_order != "current_first"):
            raise NirExportError(f"{where}: snnTorch's import builds a Synaptic that resets right after a spike and "
                                 "updates its current first (refractory 0, synapse_order current_first)")
    for q in net.projections:
        extra = q.delay - (1 if net.recurrent(q) else 0)
        if extra:
            raise NirExportError(f"projection {q.name!r}: a delay of {extra} step(s): snnTorch has no Delay node")


def _check_norse(net):
    """Refuse, naming the part, what Norse 1.1's from_nir would read as another network: it builds IAF / LIFBox /
    CubaLIF cells (v_leak 0: a start at 0) that reset to 0 on v > θ and send 1; a leaky layer needs a leak (β < 1)
    and no input that is not a weighted layer (its gain is folded into the weights); no Scale, Delay, I or
    AvgPool2d node, no recurrence (Norse's from_nir builds none of them)."""
    _check_snntorch(net)  # the same neuron rules (reset, test, unit spikes, start, no delays), readout bias too
    for pop in net.populations:
        where = f"population {pop.name!r}"
        if pop.model == "cuba" and (np.any(pop.decay >= 1) or np.any(pop.syn_decay >= 1)):
            raise NirExportError(f"{where}: Norse's CubaLIF leaks (τ finite); this one has a factor of 1")
        if pop.model == "lif" and np.any(pop.decay < 1) and np.any(pop.decay == 1):
            raise NirExportError(f"{where}: neurons with and without leak in one layer (Norse: one cell kind)")
    for q in net.projections:
        tgt = net.population(q.target)
        if net.recurrent(q):
            raise NirExportError(f"projection {q.name!r}: recurrent; Norse's from_nir builds no recurrence")
        if _norse_gain(tgt) is not None and q.kind not in ("dense", "sparse", "conv2d", "avgpool"):
            raise NirExportError(f"projection {q.name!r}: a {q.kind} projection into the leaky layer {tgt.name!r} "
                                 "(Norse's LIFBox scales its input by 1 - β, folded into weights it has none of)")
        if q.kind == "conv2d" and _norse_gain(tgt) is not None:
            g = _norse_gain(tgt).reshape(tgt.shape[0], -1)
            if np.any(g != g[:, :1]):
                raise NirExportError(f"projection {q.name!r}: β differs within a channel of {tgt.name!r} (its gain "
                                     "is folded into the conv weights, one per output channel)")


def _norse_gain(pop):
    """1 / (1 - β) per neuron of a leaky LIF layer (Norse's LIFBox scales its input by 1 - β), else None."""
    if pop.model == "lif" and np.all(pop.decay < 1):
        return 1.0 / (1.0 - pop.decay.astype(np.float64))
    return None


def _norse_neuron(nir, pop):
    """IF / LIF / cuba as Norse's from_nir reads them at dt = 1e-3: IF -> IAFCell (gain 1); LIF -> LIFBoxCell,
    τ = dt/(1 - β) (input gain 1 - β, undone in the weights); cuba -> LIBox synapse (w_in = τ_syn/dt) and LIFBox
    (r = τ_mem/dt)."""
    shape = tuple(pop.shape)
    theta = _f32(pop.threshold).reshape(shape)
    zeros = np.zeros(shape, np.float32)
    dt = NORSE_DT
    if pop.model == "if" or np.all(pop.decay == 1):
        return nir.IF(r=np.ones(shape, np.float32), v_threshold=theta, v_reset=zeros)
    tau = (dt / (1.0 - pop.decay.astype(np.float64))).reshape(shape)
    if pop.model == "lif":
        return nir.LIF(tau=tau, r=np.ones(shape), v_leak=zeros, v_threshold=theta, v_reset=zeros)
    tau_syn = (dt / (1.0 - pop.syn_decay.astype(np.float64))).reshape(shape)
    return nir.CubaLIF(tau_syn=tau_syn, tau_mem=tau, r=tau / dt, w_in=tau_syn / dt, v_leak=zeros, v_threshold=theta,
                       v_reset=zeros)


def _snntorch_neuron(nir, pop):
    """IF / LIF / cuba as snnTorch's import reads them at dt = 1e-4: τ = dt/(1 - β), r = τ/dt (gain 1); no leak
    as τ = 1e13·dt; a cuba's current as τ_syn = dt/(1 - α), w_in = τ_syn/dt."""
    shape = tuple(pop.shape)
    theta = _f32(pop.threshold).reshape(shape)
    zeros = np.zeros(shape, np.float32)
    dt = SNNTORCH_DT
    decay = np.ones(pop.size) if pop.decay is None else pop.decay.astype(np.float64)
    with np.errstate(divide="ignore"):
        tau = np.where(decay == 1, _SNNTORCH_NO_LEAK * dt, dt / (1.0 - decay)).reshape(shape)
    if pop.model != "cuba":
        return nir.LIF(tau=tau, r=tau / dt, v_leak=zeros, v_threshold=theta, v_reset=zeros)
    with np.errstate(divide="ignore"):
        alpha = pop.syn_decay.astype(np.float64)
        tau_syn = np.where(alpha == 1, _SNNTORCH_NO_LEAK * dt, dt / (1.0 - alpha)).reshape(shape)
    return nir.CubaLIF(tau_syn=tau_syn, tau_mem=tau, r=tau / dt, w_in=tau_syn / dt, v_leak=zeros,
                       v_threshold=theta, v_reset=zeros)


def to_nir(net: Network, convention: str = "nir"):
    """The NIR graph of a validated network (see the module docstring for the mapping). convention "snntorch":
    the graph snnTorch 1.0's import_from_nir reads back as the same network (refused, naming the part, where it
    cannot)."""
    import nir

    validate_network(net)
    if convention not in EXPORT_CONVENTIONS:
        raise NirExportError(f"convention {convention!r}: choose one of {', '.join(EXPORT_CONVENTIONS)}")
    if net.attrs.get("numeric_mode", "float32") == "fixed":
        raise NirExportError("fixed-point networks (integer input rounding, saturating membranes) have no NIR form; "
                             "export the float network")
    snntorch = convention == "snntorch"
    norse = convention == "norse"
    if snntorch:
        _check_snntorch(net)
    if norse:
        _check_norse(net)
    peer = snntorch or norse  # no I node: the readout's inputs feed the Output
    nodes, edges = {}, []
    names = {p.name for p in net.populations}

    def unique(name):
        while name in nodes or name in names:
            name += "_"
        return name

    out_of = {}  # population -> the NIR node its downstream edges leave from
    for pop in net.populations:
        if pop.model in NO_NIR_EQUIVALENT:
            raise NirExportError(f"population {pop.name!r}: {NO_NIR_EQUIVALENT[pop.model]}")
        shape = np.array(pop.shape)
        if pop.model == "input":
            nodes[pop.name] = nir.Input(input_type={"input": shape})
            out_of[pop.name] = pop.name
        elif pop.model == "readout" and peer:  # its inputs feed the Output (snnTorch and Norse have no I node)
            nodes[pop.name] = nir.Output(output_type={"output": shape})
        elif pop.model == "readout":
            nodes[pop.name] = nir.I(r=np.ones(tuple(pop.shape), np.float32),
                                    metadata={"spikeforge_model": "readout", "spikeforge_output": "v(T) / T",
                                              "spikeforge_bias": _f32(pop.bias).reshape(tuple(pop.shape))})
            out = unique("output")  # a readout population may itself be called "output" (snnTorch / Norse imports)
            nodes[out] = nir.Output(output_type={"output": shape})
            edges.append((pop.name, out))
        else:
            nodes[pop.name] = _snntorch_neuron(nir, pop) if snntorch else _norse_neuron(nir, pop) if norse else \
                _neuron_node(nir, pop)
            out_of[pop.name] = pop.name
            if pop.spike_value == "threshold":
                scale = unique(f"{pop.name}_theta")
                nodes[scale] = nir.Scale(scale=_f32(pop.threshold).reshape(tuple(pop.shape)),
                                         metadata={"spikeforge_role": "spike_value"})
                edges.append((pop.name, scale))
                out_of[pop.name] = scale
    carriers = {p.name: _bias_carrier(net, p) for p in net.populations if p.model != "input"}
    for q in net.projections:
        src, tgt = net.population(q.source), net.population(q.target)
        bias = tgt.bias.reshape(tgt.shape) if carriers[tgt.name] == q.name else None
        start = out_of[q.source]
        steps = q.delay - 1 if net.recurrent(q) else q.delay  # a recurrent edge is one step late already
        if steps:  # y(t) = x(t - delay·dt) on the source's spikes, before the weights (no bias passes it)
            delay = unique(f"{q.name}_delay")
            nodes[delay] = nir.Delay(delay=np.full(tuple(src.shape), float(steps), np.float32))
            edges.append((start, delay))
            start = delay
        if q.kind in ("dense", "sparse"):
            if len(tgt.shape) != 1:
                raise NirExportError(f"projection {q.name!r}: a dense layer into the {len(tgt.shape)}-D population "
                                     f"{tgt.name!r} has no NIR form (Affine outputs a vector)")
            if q.kind == "sparse" and src.size * tgt.size > MAX_DENSE_EXPORT:
                raise NirExportError(f"projection {q.name!r}: NIR has no sparse node and its dense form would "
                                     f"hold {src.size * tgt.size} weights (limit {MAX_DENSE_EXPORT})")
            if len(src.shape) > 1:
                flat = unique(f"{q.name}_flatten")
                # torch-based peers apply Flatten to batched tensors: start_dim 1 counts the batch dimension
                nodes[flat] = nir.Flatten(input_type={"input": np.array(src.shape)}, start_dim=1 if norse else 0,
                                          end_dim=-1)
                edges.append((start, flat))
                start = flat
            w = q.weight if q.kind == "dense" else synapse_matrix(q, src.shape, tgt.shape).toarray()
            gain = _norse_gain(tgt) if norse else None
            if gain is not None:  # Norse's LIFBox takes (1 - β) of its input: the weights carry 1 / (1 - β)
                w = w * gain[:, None]
                bias = None if bias is None else bias * gain
            if norse and bias is None:  # Norse's from_nir reads a Linear with its dimensions swapped
                bias = np.zeros(tgt.shape)
            node = (nir.Affine(weight=_f32(w), bias=_f32(bias)) if bias is not None else nir.Linear(weight=_f32(w)))
        elif q.kind == "conv2d" or (q.kind == "avgpool" and norse):  # Norse has no AvgPool2d: its depthwise conv
            if q.kind == "avgpool":  # groups 1 (NIR's type check reads a grouped conv's input channels wrongly)
                c = src.shape[0]
                weight, groups = np.zeros((c, c) + tuple(q.kernel)), 1
                weight[np.arange(c), np.arange(c)] = 1.0 / np.prod(q.kernel)
            else:
                weight, groups = q.weight.astype(np.float64), int(q.groups)
            b = bias.reshape(tgt.shape[0], -1)[:, 0] if bias is not None else np.zeros(tgt.shape[0])
            gain = _norse_gain(tgt) if norse else None
            if gain is not None:
                per = gain.reshape(tgt.shape[0], -1)[:, 0]
                weight, b = weight * per[:, None, None, None], b * per
            node = nir.Conv2d(input_shape=tuple(src.shape[1:]), weight=_f32(weight), stride=tuple(q.stride),
                              padding=tuple(q.padding), dilation=(1, 1), groups=groups, bias=_f32(b))
        elif q.kind == "avgpool":
            node = nir.AvgPool2d(kernel_size=np.array(q.kernel), stride=np.array(q.stride),
                                 padding=np.array(q.padding), metadata={"spikeforge_count_include_pad": 1})
        elif q.kind == "identity":
            if tuple(src.shape) != tuple(tgt.shape):
                if len(tgt.shape) != 1:
                    raise NirExportError(f"projection {q.name!r}: identity from shape {src.shape} to {tgt.shape} "
                                         "needs a reshape NIR does not have (only Flatten)")
                node = nir.Flatten(input_type={"input": np.array(src.shape)}, start_dim=0, end_dim=-1)
            else:  # an edge has no metadata: the projection's name rides on its target node
                nodes[tgt.name].metadata[f"spikeforge_identity_from_{src.name}"] = q.name
                edges.append((start, tgt.name))
                continue
        else:  # matmul operands only exist with ec_matmul nodes, refused above
            raise NirExportError(f"projection {q.name!r}: kind {q.kind!r} has no NIR form")
        name = unique(q.name)
        node.metadata = {**node.metadata, "spikeforge_projection": q.name, "spikeforge_kind": q.kind}
        nodes[name] = node
        edges += [(start, name), (name, tgt.name)]
    meta = {"source": "spikeforge", "spikeforge_format_version": FORMAT_VERSION,
            "dt": SNNTORCH_DT if snntorch else NORSE_DT if norse else 1.0,
            "name": str(net.attrs.get("name", ""))}
    # a Flatten with torch's start_dim 1 (Norse's modules take batched tensors) fails NIR's shape inference on
    # unbatched types, which Norse never runs: such a graph is read with nir.read(path, type_check=False)
    batched = any(isinstance(n, nir.Flatten) and n.start_dim == 1 for n in nodes.values())
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=meta, type_check=not batched)


def export_nir(network, out_path, convention: str = "nir") -> str:
    """Write the NIR graph of a network (a `Network` or a network file path) to `out_path`, atomically."""
    import nir

    net = network if isinstance(network, Network) else load_network(network)
    graph = to_nir(net, convention)
    buf = io.BytesIO()  # built in memory: a full disk fails in plain Python I/O, never inside libhdf5
    nir.write(buf, graph)
    write_bytes(out_path, buf.getbuffer(), suffix=".nir.tmp")
    return str(out_path)
