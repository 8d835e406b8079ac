"""Fan-in splitting (issue 34): map networks onto Loihi, Loihi 2 and TrueNorth with and without splitting; cores,
chips, the layers split and into how many parts, mapping time; for trained networks, what the split costs against
an unsplit hypothetical (the same target with just enough input axons per core that nothing needs a split):
accuracy, packets, synaptic operations, energy and latency per image.

    python -m benchmarks.fanin_split --out benchmarks/results/fanin_split [--data-dir DATA] [--images 100]
        [--nets cifar-resnet20,cifar-vgg16,cifar-vit,resnet34,resnet50,vit-s16] [--targets loihi,loihi2,truenorth]
        [--chips N] [--price N] [--keep DIR] [--backend torch --device cuda]

A network that needs more chips than the target's board is mapped onto a system of --chips chips (default 4096:
as many as it needs; the rows give the chips it uses); vit-s16 (ECMT export, depth 12) is slow to export on a
CPU.

Structure-only networks (random weights: the mapping does not depend on values) are mapped only; cifar-resnet20
and cifar-vit use the trained checkpoints benchmarks/checkpoints/resnet20_relu.pt and cifar10_vit.pt (the ViT
exported with ECMT, n = 4 levels, as benchmarks/cifar10_vit.py does) and, with --data-dir (the CIFAR-10 python
batches), are simulated on --images test images. --price N simulates and prices the untrained networks too, on N
random images (uniform in [0, 1], seed 0, the distribution their max-norm thresholds came from): energy and latency
of random-weight activity, no accuracy. --keep DIR writes each converted and mapped network to DIR and loads it
from there on a later run (the ViT-S/16 export and the large mappings take minutes; a device call has ten).
Rows go to OUT/fanin_split.json (rewritten after each row).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import time

import numpy as np
import torch
from torch import nn

from spikeforge import simulator
from spikeforge.converter import convert, write_network
from spikeforge.converter.fanin import neuron_axons
from spikeforge.converter.mapping import MappingError, _check_fan_in, _widest_neuron, map_network
from spikeforge.hwmodels import core_memory, estimate
from spikeforge.hwmodels.targets import load_target
from spikeforge.simulator.atomic import write_text

CKPT = os.path.join(os.path.dirname(__file__), "checkpoints")


class Bottleneck(nn.Module):
    """ResNet-50's block: 1x1 reduce, 3x3 (stride), 1x1 expand (x4), projection shortcut when the shape changes."""

    def __init__(self, cin, width, stride):
        super().__init__()
        cout = 4 * width
        self.body = nn.Sequential(nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
                                  nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
                                  nn.Conv2d(width, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.short = nn.Sequential() if stride == 1 and cin == cout else \
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        self.act = nn.ReLU()

    def forward(self, x):
        return self.act(self.body(x) + self.short(x))


class ResNet50(nn.Module):
    """ResNet-50 for 224x224 inputs: 7x7/2 stem, 3x3/2 average pooling, [3, 4, 6, 3] bottlenecks, 1000 classes."""

    def __init__(self):
        super().__init__()
        layers, cin = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.AvgPool2d(3, 2, 1)], 64
        for width, n, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
            for i in range(n):
                layers.append(Bottleneck(cin, width, stride if i == 0 else 1))
                cin = 4 * width
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, 1000))

    def forward(self, x):
        return self.head(self.features(x))


def _network(name):
    """(converted network, trained) for a network name."""
    torch.manual_seed(0)
    if name == "cifar-resnet20":
        from .cifar10 import ResNet20

        model = ResNet20().eval()
        path = os.path.join(CKPT, "resnet20_relu.pt")
        trained = os.path.exists(path)
        if trained:
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return model, (3, 32, 32), trained
    if name == "cifar-vgg16":
        from .cifar10 import VGG16

        return VGG16().eval(), (3, 32, 32), False
    if name == "resnet34":
        from .imagenet_scale import ResNet34

        return ResNet34().eval(), (3, 224, 224), False
    if name == "resnet50":
        return ResNet50().eval(), (3, 224, 224), False
    if name == "vit-s16":
        return None, (3, 224, 224), False
    if name == "cifar-vit":
        from spikeforge.models import ViT

        model = ViT(3, 32, 4, 192, 4, 4, 384).eval()  # benchmarks/cifar10_vit.py's defaults
        path = os.path.join(CKPT, "cifar10_vit.pt")
        trained = os.path.exists(path)
        if trained:
            model.load_state_dict({k: v.float() for k, v in torch.load(path, map_location="cpu",
                                                                       weights_only=True).items()})
        return model, (3, 32, 32), trained
    raise SystemExit(f"unknown network {name!r}")


def _vit_s16(device=None):
    """ViT-S/16 at 224 (random weights) exported with ECMT as benchmarks/imagenet_scale.py does (on `device`)."""
    from spikeforge.converter.ecmt import collect_thresholds
    from spikeforge.converter.ecmt_export import export_ecmt
    from spikeforge.models import ViT

    torch.manual_seed(0)
    model = ViT(3, 224, 16, 384, 12, 6, 1536, classes=1000).eval()
    calib = torch.randn(8, 3, 224, 224)
    thresholds = collect_thresholds(model, [calib], p=99.0)
    return export_ecmt(model.to(device or "cpu"), thresholds, (3, 224, 224), levels=4, name="vit-s16-224-random",
                       device=device or "cpu")


def _cifar_vit(model, calib, device=None):
    """The CIFAR-10 ViT exported with ECMT as benchmarks/cifar10_vit.py does (n = 4 levels, thresholds at the
    99th percentile of the calibration images)."""
    from spikeforge.converter.ecmt import collect_thresholds
    from spikeforge.converter.ecmt_export import export_ecmt

    thresholds = collect_thresholds(model, [calib[i:i + 64] for i in range(0, len(calib), 64)], p=99.0)
    return export_ecmt(model.to(device or "cpu"), thresholds, (3, 32, 32), levels=4, name="cifar10-vit",
                       device=device or "cpu")


_RELAY = re.compile(r"\.part\d*$")  # the names split_fan_in gives relay populations: L.part, L.part2, ...


def _widest(net):
    """The most input axons any neuron of the network needs (each layer's widest neuron)."""
    return max(sum(neuron_axons(net, p, _widest_neuron(net, p)).values()) for p in net.populations
               if net.incoming(p.name))


def _mapped_row(name, tname, net, row_out, calibration=None, steps=32, chips=4096):
    target = load_target(tname)
    row = {"network": name, "target": tname}
    try:
        _check_fan_in(net, target.limits)
        row["unsplit"] = "fits"
    except MappingError as exc:
        row["unsplit"] = str(exc)[:300]
    t0 = time.perf_counter()
    try:
        m = map_network(net, target, calibration=calibration, steps=steps,
                        chips=max(chips, int(target.limits["chips"])))
    except MappingError as exc:
        row.update(map_s=round(time.perf_counter() - t0, 2), refused=str(exc)[:400])
        row_out(row)
        return row, None
    row["map_s"] = round(time.perf_counter() - t0, 2)
    row_out(_describe(row, m, target))
    return row, m


def _describe(row, m, target):
    """The row with what the mapping made: cores, chips, the layers split and their relays."""
    splits = json.loads(m.attrs.get("fan_in_split", "[]"))
    relays = sum(p.size for p in m.populations if _RELAY.search(p.name))
    row.update(placement="anneal", board_chips=int(target.limits["chips"]),
               cores=m.cores.slots(), chips=int(len(np.unique(m.cores.chip))),
               split_layers=len(splits), splits=[f"{s['layer']}: {s['projection']} in {s['parts']} "
                                                 f"({s['axons_before']} -> {s['relay_axons']} + {s['soma_axons']})"
                                                 for s in splits],
               relay_neurons=int(relays), neurons=int(sum(p.size for p in m.populations)),
               cores_by_model=_cores_by_model(m))
    return row


def _cores_by_model(m) -> dict:
    """{neuron model (ec nodes by function): cores}, most first: where a mapping's cores go."""
    kind = [p.function if p.model == "ec" and p.function else p.model for p in m.populations]
    counts = {}
    for pi in m.cores.population.tolist():
        counts[kind[pi]] = counts.get(kind[pi], 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def _cost(m, target, x, y, steps, backend="numba", device=None):
    # per sample the torch backend holds (T, cores, counters) float64 counters twice: at most ~8 GB of them
    batch = max(1, min(256, int(8e9 // (steps * len(m.cores) * len(simulator.COUNTERS) * 8 * 2))))
    t0 = time.perf_counter()
    res = simulator.run(m, x, steps, backend=backend, device=device, batch_size=batch)
    labels = [m.populations[int(i)].name for i in m.cores.population]
    rep = estimate(res.counters, simulator.COUNTERS, len(x), target, labels, core_memory(m))
    n = len(x)
    relay = np.array([bool(_RELAY.search(label)) for label in labels])  # the split's relay cores
    relays = {"cores": int(relay.sum()),
              **{k: float(res.counter(k)[:, relay].sum()) / n for k in ("synops", "packets", "chip_packets")},
              "dynamic_uj": sum(sum(rep.layer_energy_pj[k].values()) for k in set(np.array(labels)[relay])) / 1e6,
              "static_uj": rep.static_core_pj * relay.sum() / max(1, len(labels)) / 1e6}
    return {"accuracy": None if y is None else float((res.predictions() == y).mean() * 100),
            "relays": relays,
            "packets": res.total("packets") / n,
            "chip_packets": res.total("chip_packets") / n, "chip_hops": res.total("chip_hops") / n,
            "synops": res.total("synops") / n, "neuron_updates": res.total("neuron_updates") / n,
            "energy_uj": rep.energy_pj / 1e6, "static_uj": rep.static_pj / 1e6,
            "chip_links_uj": (rep.dynamic_pj["chip_hops"] + rep.dynamic_pj["chip_packets"]) / 1e6,
            "latency_us": rep.latency_ns / 1e3, "steps": rep.steps, "cores": m.cores.slots(),
            "latency_parts_us": {k: v / 1e3 for k, v in rep.latency_parts_ns.items()},
            "slowest_core_layers_us": {k: v / 1e3 for k, v in list(rep.bounding_layers_ns.items())[:5]},
            "chips": int(len(np.unique(m.cores.chip))), "simulate_s": round(time.perf_counter() - t0, 1)}
    # estimate's figures are per inference already


def _unsplit_target(target, widest, outputs=False):
    """The target with enough input axons per core for the widest neuron, and its synapse memory grown in
    proportion (a neuron with more inputs stores more weights): the chip on which nothing needs a split. outputs:
    its output axon entries (Loihi's) grown in proportion as well (the layers feeding the wider cores are otherwise
    cut finer to send to them)."""
    axons = int(target.limits["axons_per_core"])
    grow = max(1.0, widest / axons)
    limits = dict(target.limits, axons_per_core=max(widest, axons))
    for key in ("synapse_memory_bytes_per_core",) + (("output_axons_per_core",) if outputs else ()):
        if limits.get(key):
            limits[key] = float(np.ceil(limits[key] * grow))
    return dataclasses.replace(target, limits=limits)


def _kept(keep, name, make):
    """make(), or the network an earlier run wrote to keep/name.h5 (written there when `keep` is set)."""
    path = keep and os.path.join(keep, f"{name}.h5")
    if path and os.path.exists(path):
        t0 = time.perf_counter()
        net = simulator.load_network(path)
        print(f"{name}: loaded {path} in {time.perf_counter() - t0:.1f} s", flush=True)
        return net, True
    net = make()
    if path and net is not None:
        os.makedirs(keep, exist_ok=True)
        write_network(net, path)
    return net, False


def _inputs(name, shape, trained, args):
    """(calibration, images, labels): CIFAR-10 for the trained network with --data-dir, random images for the
    untrained ones with --price (labels None), no images otherwise."""
    if trained and args.data_dir:
        from .cifar10 import load_tensors

        # a random subset (seed 0) of the test set: the JPEG copy's test batch is ordered by class
        xtr, _, xte, yte = load_tensors(args.data_dir, "cpu", max(args.images, 256))
        return xtr[:256], xte[:args.images].numpy(), yte[:args.images].numpy()
    g = torch.Generator().manual_seed(0)
    calib = torch.rand(8, *shape, generator=g)
    if trained or not args.price:
        return calib, None, None
    return calib, torch.rand(args.price, *shape, generator=g).numpy(), None


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--nets", default="cifar-resnet20,cifar-vgg16,resnet34,resnet50")
    p.add_argument("--targets", default="loihi,loihi2,truenorth")
    p.add_argument("--data-dir")
    p.add_argument("--images", type=int, default=100)
    p.add_argument("--price", type=int, default=0, help="random images to price untrained networks on")
    p.add_argument("--T", type=int, default=32)
    p.add_argument("--chips", type=int, default=4096, help="chips of the system (default: as many as needed)")
    p.add_argument("--backend", default="numba", help="simulator backend of the priced runs (numba, torch)")
    p.add_argument("--device", help="torch backend device (cuda on the GPU machine)")
    p.add_argument("--no-hypothetical", action="store_true",
                   help="price the split mapping only (the unsplit hypothetical is mapped and simulated again)")
    p.add_argument("--hypothetical-only", action="store_true",
                   help="map and price the unsplit hypothetical only (the split row measured by an earlier run)")
    p.add_argument("--hypothetical-outputs", action="store_true",
                   help="grow the unsplit hypothetical's output axon entries too (Loihi), not only its input axons")
    p.add_argument("--keep", help="folder to keep converted and mapped networks in (and load them from)")
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    if args.keep:
        os.makedirs(args.keep, exist_ok=True)
    rows = []

    def row_out(row):
        rows.append(row)
        print(json.dumps(row), flush=True)
        write_text(os.path.join(args.out, "fanin_split.json"), json.dumps(rows, indent=1))

    for name in args.nets.split(","):
        model, shape, trained = _network(name)
        t0 = time.perf_counter()
        calib, x, y = _inputs(name, shape, trained, args)
        if name == "vit-s16":
            make = lambda: _vit_s16(args.device)  # noqa: E731
        elif name == "cifar-vit":
            make = lambda: _cifar_vit(model, calib, args.device)  # noqa: E731
        else:
            make = lambda: convert(model, [calib], norm="percentile" if trained else "max",  # noqa: E731
                                   percentile=99.99)
        net, _ = _kept(args.keep, name, make)
        widest = _widest(net)
        print(f"{name}: converted in {time.perf_counter() - t0:.1f} s, widest neuron {widest} axons", flush=True)
        for tname in args.targets.split(","):
            if shape[1] > 32 and tname == "truenorth":
                continue  # ImageNet-size networks: Loihi only (issue 34)
            target = load_target(tname)
            chips = max(args.chips, int(target.limits["chips"]))
            cal = None if x is None else calib[:64].numpy()
            run = dict(backend=args.backend, device=args.device)
            row = {"network": name, "target": tname, "images": None if x is None else len(x), "T": args.T,
                   "backend": args.backend, "device": args.device, "trained": trained}
            if not args.hypothetical_only:
                m, loaded = _kept(args.keep, f"{name}-{tname}", lambda: _mapped_row(
                    name, tname, net, row_out, cal, args.T, args.chips)[1])
                if loaded:
                    row_out(_describe({"network": name, "target": tname, "loaded": True}, m, target))
                if m is None or x is None:
                    continue
                row["split"] = _cost(m, target, x, y, args.T, **run)
                row_out(row)  # kept if the hypothetical below does not finish (a device call has ten minutes)
            if args.no_hypothetical or x is None:
                continue
            wide = _unsplit_target(target, widest, args.hypothetical_outputs)
            t1 = time.perf_counter()
            hypo, _ = _kept(args.keep, f"{name}-{tname}-unsplit{'-outputs' if args.hypothetical_outputs else ''}",
                            lambda: map_network(net, wide, split=False, chips=chips))
            print(f"{name} on {tname}: unsplit hypothetical mapped in {time.perf_counter() - t1:.1f} s", flush=True)
            hypo_cost = _cost(hypo, target, x, y, args.T, **run)
            if "split" in row:
                rows.pop()  # the split row, written again with the hypothetical beside it
            row_out(dict(row, unsplit_hypothetical=hypo_cost,
                         axons_hypothetical=wide.limits["axons_per_core"],
                         output_axons_hypothetical=wide.limits.get("output_axons_per_core")))


if __name__ == "__main__":
    main()
