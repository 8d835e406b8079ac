"""CIFAR-10 conversion table: train a source ANN (GPU), convert it with every method, evaluate SNN accuracy vs T.

    python -m benchmarks.cifar10 --data-dir DATA --arch resnet20 --epochs 40 --out results/

DATA holds the standard python batches (cifar-10-batches-py/, made by ../shared/datasets/cifar10_batches.py).
Methods: IF with max normalization (ReLU ANN); QCFS (ANN trained with QCFS, IF neurons); QCFS + group
neurons (τ=4); two-stage (clip-activation ANN with trainable θ, or the ReLU ANN -> QC-ANN fine-tuned for
each T (Stage I) -> coarse + fine layer-wise calibration (Stage II)).
Results go to OUT/cifar10_<arch>.json (rewritten after every step, so an interrupted run keeps what it had)
and a Markdown table to OUT/cifar10_<arch>.md; source ANN checkpoints to OUT/<arch>_<kind>.pt.
"""
from __future__ import annotations

import argparse
import json
import os
import pickle
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from spikeforge.converter import QCFS, ClipReLU, SpikingNetwork, convert
from spikeforge.converter.calibration import FC_DEFAULTS, calibrate, calibration_samples, parse_setting
from spikeforge.converter.qc import to_qc_ann
from spikeforge.models import BasicBlock
from spikeforge.simulator.atomic import atomic_output, write_text

MEAN = torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1)
STD = torch.tensor([0.2470, 0.2435, 0.2616]).view(1, 3, 1, 1)


def load_cifar10(data_dir):
    """(x_train uint8 (50000,3,32,32), y_train, x_test, y_test) from the standard python batches."""
    root = os.path.join(data_dir, "cifar-10-batches-py")
    if not os.path.isdir(root):
        raise SystemExit(f"{root} not found: run ../shared/datasets/cifar10_batches.py {data_dir} first")

    def read(name):
        with open(os.path.join(root, name), "rb") as fh:
            d = pickle.load(fh, encoding="bytes")
        return np.asarray(d[b"data"], np.uint8).reshape(-1, 3, 32, 32), np.asarray(d[b"labels"], np.int64)

    parts = [read(f"data_batch_{i}") for i in range(1, 6)]
    xt, yt = read("test_batch")
    return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), xt, yt)


def prepare_run(args):
    """Common start of the CIFAR-10 scripts: the output folder, the device, seed 0, and the data on the device
    (args: out, data_dir, limit). Returns (device, (xtr, ytr, xte, yte))."""
    os.makedirs(args.out, exist_ok=True)
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    return dev, load_tensors(args.data_dir, dev, args.limit)


def load_tensors(data_dir, device, limit=None):
    """Normalized float images and int64 labels on `device`; with `limit`, a random subset of that many
    training and test images (not the first ones: the test batch of the JPEG copy is ordered by class)."""
    xtr, ytr, xte, yte = load_cifar10(data_dir)
    if limit:
        rng = np.random.default_rng(0)
        tr, te = rng.permutation(len(xtr))[:limit], rng.permutation(len(xte))[:limit]
        xtr, ytr, xte, yte = xtr[tr], ytr[tr], xte[te], yte[te]
    return (normalize(torch.as_tensor(xtr, device=device)), torch.as_tensor(ytr, device=device),
            normalize(torch.as_tensor(xte, device=device)), torch.as_tensor(yte, device=device))


def normalize(x_uint8):
    return (x_uint8.float() / 255.0 - MEAN.to(x_uint8.device)) / STD.to(x_uint8.device)


def augment(x, cutout=0):
    """Random 4-pixel translation (zero padded), horizontal flip and optionally a cutout square, on the GPU."""
    b = x.shape[0]
    shift = torch.randint(-4, 5, (b, 2), device=x.device).float() * (2.0 / 32)
    theta = torch.zeros(b, 2, 3, device=x.device)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, x.shape, align_corners=False)
    x = F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    flip = torch.rand(b, device=x.device) < 0.5
    x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
    if cutout:  # DeVries & Taylor 2017: zero a cutout x cutout square centred anywhere in the image
        h, w = x.shape[2:]
        cy, cx = torch.randint(0, h, (b, 1, 1), device=x.device), torch.randint(0, w, (b, 1, 1), device=x.device)
        ys, xs = torch.arange(h, device=x.device).view(1, h, 1), torch.arange(w, device=x.device).view(1, 1, w)
        y0, x0 = cy - cutout // 2, cx - cutout // 2
        hole = (ys >= y0) & (ys < y0 + cutout) & (xs >= x0) & (xs < x0 + cutout)
        x = x.masked_fill(hole.unsqueeze(1), 0.0)
    return x


class CifarResNet(nn.Module):
    """ResNet for 32x32 inputs: 3x3 conv stem, stages of basic blocks, global average pooling, linear."""

    def __init__(self, stages, act=nn.ReLU, classes=10):
        super().__init__()
        cin = stages[0][0]
        self.stem = nn.Sequential(nn.Conv2d(3, cin, 3, 1, 1, bias=False), nn.BatchNorm2d(cin), act())
        blocks = []
        for cout, stride, n in stages:
            for i in range(n):
                blocks.append(BasicBlock(cin, cout, stride if i == 0 else 1, act))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        return self.fc(self.pool(self.blocks(self.stem(x))).flatten(1))


class ResNet20(CifarResNet):
    """ResNet-20 for CIFAR (He et al. 2016): 3 stages of 3 basic blocks, 16/32/64 channels."""

    def __init__(self, act=nn.ReLU, classes=10):
        super().__init__(((16, 1, 3), (32, 2, 3), (64, 2, 3)), act, classes)


class ResNet20Wide(CifarResNet):
    """The ResNet-20 of the ANN-to-SNN conversion papers: ResNet-20's depth with 64/128/256 channels."""

    def __init__(self, act=nn.ReLU, classes=10):
        super().__init__(((64, 1, 3), (128, 2, 3), (256, 2, 3)), act, classes)


class ResNet18(CifarResNet):
    """ResNet-18 for CIFAR (3x3 stem, no max pooling): 4 stages of 2 basic blocks, 64/128/256/512 channels."""

    def __init__(self, act=nn.ReLU, classes=10):
        super().__init__(((64, 1, 2), (128, 2, 2), (256, 2, 2), (512, 2, 2)), act, classes)


class VGG16(nn.Module):
    """VGG-16 for CIFAR with average pooling (max pooling has no exact spiking equivalent)."""

    CFG = (64, 64, "P", 128, 128, "P", 256, 256, 256, "P", 512, 512, 512, "P", 512, 512, 512, "P")

    def __init__(self, act=nn.ReLU, classes=10):
        super().__init__()
        layers, cin = [], 3
        for v in self.CFG:
            if v == "P":
                layers.append(nn.AvgPool2d(2))
            else:
                layers += [nn.Conv2d(cin, v, 3, 1, 1, bias=False), nn.BatchNorm2d(v), act()]
                cin = v
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(512, 512), act(), nn.Linear(512, classes))

    def forward(self, x):
        return self.classifier(self.features(x))


ARCHS = {"resnet18": ResNet18, "resnet20": ResNet20, "resnet20w": ResNet20Wide, "vgg16": VGG16}


def _run_epochs(model, xtr, ytr, opt, sched, epochs, batch, log, every, cutout=0):
    """Cross-entropy on freshly augmented shuffled batches (bf16 autocast on the GPU); lr schedule per step."""
    model.to(xtr.device).train()
    for epoch in range(epochs):
        perm = torch.randperm(len(xtr), device=xtr.device)
        t0 = time.time()
        for i in range(len(xtr) // batch):
            idx = perm[i * batch:(i + 1) * batch]
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=xtr.device.type == "cuda"):
                loss = F.cross_entropy(model(augment(xtr[idx], cutout)), ytr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        if epoch % every == every - 1 or epoch == epochs - 1:
            log(f"  epoch {epoch + 1}/{epochs} loss {float(loss.detach()):.3f} ({time.time() - t0:.1f} s/epoch)")
    return model.eval()


def finetune(model, xtr, ytr, epochs, lr=1e-4, batch=256, log=print):
    """Stage I: Adam with cosine-decayed lr."""
    opt = torch.optim.Adam(model.to(xtr.device).parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * (len(xtr) // batch))
    return _run_epochs(model, xtr, ytr, opt, sched, epochs, batch, log, every=epochs)


def train(model, xtr, ytr, epochs, lr=0.1, batch=256, wd=5e-4, cutout=0, log=print):
    """Source ANN from scratch: SGD nesterov, one-cycle lr, weight decay on weights only."""
    model.to(xtr.device)
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    other = [p for n, p in model.named_parameters() if p.ndim <= 1]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": wd}, {"params": other, "weight_decay": 0}],
                          lr=lr, momentum=0.9, nesterov=True)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * (len(xtr) // batch),
                                                pct_start=0.15)
    model = _run_epochs(model, xtr, ytr, opt, sched, epochs, batch, log, every=5, cutout=cutout)
    with torch.no_grad():  # checkpoints are stored in float16 (the wide nets stay under 16 MB): evaluate that
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.copy_(t.half().float())
    return model


@torch.no_grad()
def ann_accuracy(model, x, y, batch=1000):
    model.eval()
    return float(sum((model(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum() for i in range(0, len(x), batch))
                 / len(x))


def snn_accuracy(net, x, y, T, device):
    snn = SpikingNetwork(net, dtype=torch.float32, device=device)
    return float((snn.predict(x, T, batch_size=1000) == y.cpu()).float().mean())


def stage_one_kind(T, p, ft_epochs):
    """Checkpoint kind of a Stage I result: saved as <arch>_<kind>.pt."""
    return f"qc_T{T}_p{p:g}_ft{ft_epochs}"


def fine_calibrate(net, qc, xtr, T, s, dev):
    """Stage II (CC + FC) of `net` with setting dict s (see parse_setting)."""
    return calibrate(net, qc, calibration_samples(xtr, s["n"], s["seed"], s["flip"]), T, mode="fc",
                     epochs=s["epochs"], lr=s["lr"], batch_size=s["bs"], patience=s["patience"], device=dev,
                     loss=s["loss"], bias=s["bias"], readout=s["readout"])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", required=True)
    p.add_argument("--arch", choices=sorted(ARCHS), default="resnet20")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--levels", type=int, default=4, help="QCFS quantization levels L")
    p.add_argument("--tau", type=int, default=4)
    p.add_argument("--steps", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    p.add_argument("--two-stage-steps", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--ft-epochs", type=int, default=3, help="Stage I fine-tuning epochs per T")
    p.add_argument("--calib-samples", type=int, default=512)
    p.add_argument("--fc-epochs", type=int, default=10, help="fine-calibration epochs per layer (early stopping)")
    p.add_argument("--methods", nargs="+", default=["if", "qcfs", "qcfs_gn", "two_stage"])
    p.add_argument("--load", help="folder with <arch>_relu.pt / <arch>_qcfs<L>.pt to reuse instead of training")
    p.add_argument("--ft-lr", type=float, default=1e-4, help="Stage I fine-tuning learning rate (Adam)")
    p.add_argument("--p", type=float, nargs="+", default=[0.15], help="Stage I quantization-noise probabilities")
    p.add_argument("--source", choices=("clip", "relu"), default="clip",
                   help="two-stage source ANN: clip activation with trainable θ (trained here), or the ReLU ANN")
    p.add_argument("--loss", choices=("mse", "kl"), default="mse", help="fine-calibration loss")
    p.add_argument("--fc-variants", nargs="+", default=["base"],
                   help="Stage II settings to run (the first is the table's + CC + FC row): 'base' (--fc-epochs, "
                        "--calib-samples, --loss, Adam lr 5e-4) or overrides such as lr=2e-4,n=2048 "
                        "(keys: " + ", ".join(FC_DEFAULTS) + ")")
    p.add_argument("--cutout", type=int, default=0, help="cutout square side for source-ANN training (0: off)")
    p.add_argument("--limit", type=int, help="use only the first N training / test images (smoke test)")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    base = dict(FC_DEFAULTS, n=args.calib_samples, epochs=args.fc_epochs, loss=args.loss)
    try:
        variants = [(v, parse_setting(v, base)) for v in args.fc_variants]
    except ValueError as e:
        p.error(str(e))
    dev, (xtr, ytr, xte, yte) = prepare_run(args)
    path = os.path.join(args.out, f"cifar10_{args.arch}.json")
    results = {"arch": args.arch, "epochs": args.epochs, "levels": args.levels, "tau": args.tau,
               "device": torch.cuda.get_device_name() if dev.type == "cuda" else "cpu", "methods": {}}

    def save():
        write_text(path, json.dumps(results, indent=2))

    def log(msg):
        print(msg, flush=True)

    calib = [xtr[i:i + 500] for i in range(0, 2000, 500)]
    if "if" in args.methods or ("two_stage" in args.methods and args.source == "relu"):
        t0 = time.time()
        relu = _load(args, "relu", ARCHS[args.arch](), dev, log) or \
            train(ARCHS[args.arch](), xtr, ytr, args.epochs, cutout=args.cutout, log=log)
        _save(relu, os.path.join(args.out, f"{args.arch}_relu.pt"))
        results["relu_ann"] = ann_accuracy(relu, xte, yte)
        results["relu_train_s"] = time.time() - t0
        log(f"ReLU ANN {100 * results['relu_ann']:.2f}%")
        save()
        if "if" in args.methods:
            net = convert(relu, calib, norm="max")
            results["methods"]["if_max"] = {str(T): snn_accuracy(net, xte, yte, T, dev) for T in args.steps}
            log(f"IF max: {results['methods']['if_max']}")
            save()
    if {"qcfs", "qcfs_gn"} & set(args.methods):
        t0 = time.time()
        q = _load(args, f"qcfs{args.levels}", ARCHS[args.arch](act=lambda: QCFS(args.levels, 8.0)), dev, log) or \
            train(ARCHS[args.arch](act=lambda: QCFS(args.levels, 8.0)), xtr, ytr, args.epochs, cutout=args.cutout,
                  log=log)
        _save(q, os.path.join(args.out, f"{args.arch}_qcfs{args.levels}.pt"))
        results["qcfs_ann"] = ann_accuracy(q, xte, yte)
        results["qcfs_train_s"] = time.time() - t0
        log(f"QCFS ANN {100 * results['qcfs_ann']:.2f}%")
        save()
        for name, neuron in (("qcfs", "if"), ("qcfs_gn", "group")):
            if name in args.methods:
                net = convert(q, calib, neuron=neuron, tau=args.tau)
                results["methods"][name] = {str(T): snn_accuracy(net, xte, yte, T, dev) for T in args.steps}
                log(f"{name}: {results['methods'][name]}")
                save()
    if "two_stage" in args.methods:
        source = relu if args.source == "relu" else None
        if source is None:
            t0 = time.time()
            clip = lambda: ClipReLU(4.0, trainable=True)  # noqa: E731
            source = _load(args, "clip", ARCHS[args.arch](act=clip), dev, log) or \
                train(ARCHS[args.arch](act=clip), xtr, ytr, args.epochs, cutout=args.cutout, log=log)
            _save(source, os.path.join(args.out, f"{args.arch}_clip.pt"))
            results["clip_ann"] = ann_accuracy(source, xte, yte)
            results["clip_train_s"] = time.time() - t0
            log(f"clip ANN {100 * results['clip_ann']:.2f}%")
        results.update(two_stage_source=args.source, two_stage_loss=args.loss, ft_epochs=args.ft_epochs)
        ts = results["methods"].setdefault("two_stage", {})
        for T in args.two_stage_steps:
            for p in args.p:
                t0 = time.time()
                qc = to_qc_ann(source, T, p=p, calibration=calib)
                kind = stage_one_kind(T, p, args.ft_epochs)  # Stage I result, reused from --load if there
                loaded = _load(args, kind, qc, dev, log, train_msg="Stage I fine-tuning")
                qc = loaded or finetune(qc, xtr, ytr, args.ft_epochs, args.ft_lr, log=log)
                _save(qc, os.path.join(args.out, f"{args.arch}_{kind}.pt"))
                row = {"p": p, "qc_ann": ann_accuracy(qc, xte, yte)}
                net = convert(qc, calib)
                row["qc_snn"] = snn_accuracy(net, xte, yte, T, dev)
                cc = calibrate(net, qc, xtr[:args.calib_samples], T, mode="cc", device=dev)
                row["cc"] = snn_accuracy(cc, xte, yte, T, dev)
                for i, (name, setting) in enumerate(variants):
                    key = "fc" if i == 0 else f"fc_{name}"
                    row[key] = snn_accuracy(fine_calibrate(net, qc, xtr, T, setting, dev), xte, yte, T, dev)
                    log(f"T={T} p={p} FC {name}: {row[key]:.4f}")
                row["fc_variant"] = variants[0][0]
                row["seconds"] = time.time() - t0
                ts[f"{T}" if len(args.p) == 1 else f"{T}_p{p}"] = row
                log(f"two-stage T={T} p={p}: {row}")
                save()
    write_table(results, os.path.join(args.out, f"cifar10_{args.arch}.md"), args.steps)
    log(open(os.path.join(args.out, f"cifar10_{args.arch}.md")).read())


def _save(model, path):
    """State dict with float tensors in float16 (what train() left the model at), so wide nets stay small."""
    with atomic_output(path) as tmp:
        torch.save({k: (v.half() if v.is_floating_point() else v).cpu() for k, v in model.state_dict().items()}, tmp)


def _load(args, kind, model, dev, log, train_msg=None):
    """The checkpoint OUT/<arch>_<kind>.pt from --load, or None (then the caller trains)."""
    path = os.path.join(args.load, f"{args.arch}_{kind}.pt") if args.load else None
    if not path or not os.path.exists(path):
        log(train_msg or f"training {args.arch} ({kind}) for {args.epochs} epochs")
        return None
    model.load_state_dict(torch.load(path, map_location=dev, weights_only=True))
    log(f"loaded {path}")
    return model.to(dev).eval()


def write_table(results, path, steps):
    head = "| method | ANN | " + " | ".join(f"T={T}" for T in steps) + " |"
    lines = [head, "|---|---:|" + "---:|" * len(steps)]
    m = results["methods"]
    rows = [("IF, max norm", results.get("relu_ann"), m.get("if_max")),
            (f"QCFS L={results['levels']}", results.get("qcfs_ann"), m.get("qcfs")),
            (f"QCFS L={results['levels']} + GN τ={results['tau']}", results.get("qcfs_ann"), m.get("qcfs_gn"))]
    ts = m.get("two_stage")
    if ts:
        src = results.get("clip_ann") if results.get("two_stage_source") == "clip" else results.get("relu_ann")
        for key, name in (("qc_ann", "QC-ANN"), ("qc_snn", "QC-SNN"), ("cc", "+ CC"), ("fc", "+ CC + FC")):
            rows.append((f"two-stage: {name}", src, {k: v[key] for k, v in ts.items()}))
    for name, ann, accs in rows:
        if accs is None:
            continue
        cells = [f"{100 * accs[str(T)]:.2f}" if str(T) in accs else "–" for T in steps]
        lines.append(f"| {name} | {100 * ann:.2f} | " + " | ".join(cells) + " |")
    write_text(path, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
