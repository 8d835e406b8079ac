"""ECMT spiking ViT on CIFAR-10: train a small ViT, then ANN vs ECMT accuracy and energy ratio at each T.

    python -m benchmarks.cifar10_vit --data-dir DATA --epochs 60 --out results/

The table follows the ECMT paper's Table 1 (accuracy and energy ratio per T). Energy ratio: (MACs·4.6 +
ACs·0.9 pJ) of the spiking network over MACs·4.6 pJ of the ANN, counted by `spikeforge.converter.ecmt`.

With --engine-images N the network is also exported to a file (`spikeforge.converter.ecmt_export`, probe passes on the
GPU when there is one) and the numba engine runs N random test images at each of --engine-steps, giving its
own counts (synaptic events = ACs, MACs, spikes, packets) next to the reference's on the same images.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time
from collections import Counter

import numpy as np
import torch
import torch.nn.functional as F

from spikeforge import simulator
from spikeforge.converter import write_network
from spikeforge.converter.ecmt import ann_macs, collect_thresholds, ecmt_forward, energy_ratio
from spikeforge.converter.ecmt_export import export_ecmt
from spikeforge.models import ViT
from spikeforge.simulator.atomic import atomic_output, write_text

from .cifar10 import augment, prepare_run


def train(model, xtr, ytr, epochs, lr, batch=256, wd=0.05, log=print):
    """AdamW, linear warm-up then cosine decay, label smoothing 0.1, bf16 autocast, fresh augmentations."""
    dev = xtr.device
    model.to(dev).train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=wd)
    steps, warm = epochs * (len(xtr) // batch), 5 * (len(xtr) // batch)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    for epoch in range(epochs):
        t0 = time.time()
        perm = torch.randperm(len(xtr), device=dev)
        for i in range(len(xtr) // batch):
            idx = perm[i * batch:(i + 1) * batch]
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=dev.type == "cuda"):
                loss = F.cross_entropy(model(augment(xtr[idx])), ytr[idx], label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        if epoch % 10 == 9 or epoch == epochs - 1:
            log(f"  epoch {epoch + 1}/{epochs} loss {float(loss.detach()):.3f} ({time.time() - t0:.1f} s/epoch)")
    return model.eval()


@torch.no_grad()
def evaluate(model, x, y, T, thresholds, n, batch=500):
    """ECMT accuracy and operation counts summed over the test set."""
    correct, totals = 0, {"spikes": 0, "acs": 0, "macs": 0}
    for i in range(0, len(x), batch):
        out, counts = ecmt_forward(model, x[i:i + batch], T, thresholds, n=n)
        correct += int((out.argmax(1) == y[i:i + batch]).sum())
        for k in totals:
            totals[k] += counts[k]
    return correct / len(x), totals


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", required=True)
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--dim", type=int, default=192)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--patch", type=int, default=4)
    p.add_argument("--levels", type=int, nargs="+", default=[4], help="multi-threshold levels per sign n")
    p.add_argument("--percentile", type=float, default=99.0, help="base thresholds at the p-th / (100-p)-th")
    p.add_argument("--steps", type=int, nargs="+", default=[1, 2, 4, 6, 8, 10, 12])
    p.add_argument("--load", help="a state dict to evaluate instead of training")
    p.add_argument("--engine-images", type=int, default=0, help="run the exported file in the engine on N images")
    p.add_argument("--engine-steps", type=int, nargs="+", default=[6, 8])
    p.add_argument("--skip-reference", action="store_true", help="only the engine measurement")
    p.add_argument("--limit", type=int, help="a random N training / test images only (smoke test)")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    dev, (xtr, ytr, xte, yte) = prepare_run(args)
    model = ViT(3, 32, args.patch, args.dim, args.depth, args.heads, 2 * args.dim)
    if args.load:
        model.load_state_dict(torch.load(args.load, map_location=dev, weights_only=True))
        model.to(dev).eval()
    else:
        model = train(model, xtr, ytr, args.epochs, args.lr, log=lambda m: print(m, flush=True))
        with atomic_output(os.path.join(args.out, "vit.pt")) as tmp:
            torch.save({k: v.half().cpu() for k, v in model.state_dict().items()}, tmp)
    model.float()
    ann = sum(int((model(xte[i:i + 500]).argmax(1) == yte[i:i + 500]).sum()) for i in range(0, len(xte), 500))
    results = {"ann": ann / len(xte), "dim": args.dim, "depth": args.depth, "heads": args.heads, "patch": args.patch,
               "epochs": args.epochs, "percentile": args.percentile, "ann_macs_per_image": 0, "ecmt": {}}
    results["ann_macs_per_image"] = ann_macs(model, xte[:1])
    print(f"ANN {100 * results['ann']:.2f}% ({results['ann_macs_per_image']} MACs per image)", flush=True)
    thresholds = collect_thresholds(model, [xtr[i:i + 256] for i in range(0, 1024, 256)], p=args.percentile)
    if args.engine_images:
        # a random subset: the JPEG copy's test batch is ordered by class
        pick = torch.as_tensor(np.random.default_rng(0).permutation(len(xte))[:args.engine_images], device=xte.device)
        engine_table(model, thresholds, xte[pick], yte[pick], args, results)
    for n in args.levels if not args.skip_reference else []:
        for T in args.steps:
            acc, counts = evaluate(model, xte, yte, T, thresholds, n)
            ratio = energy_ratio(counts, results["ann_macs_per_image"] * len(xte))
            results["ecmt"][f"n{n}_T{T}"] = {"n": n, "T": T, "accuracy": acc, "energy_ratio": ratio, **counts}
            print(f"ECMT n={n} T={T}: {100 * acc:.2f}% energy ratio {ratio:.3f}", flush=True)
            write_text(os.path.join(args.out, "cifar10_vit.json"), json.dumps(results, indent=2))


def engine_table(model, thresholds, x, y, args, results):
    """Export (n = the first of --levels), write the file, run the engine; counts per image next to the
    reference's on the same images, and the energy ratio from each."""
    n = args.levels[0]
    t0 = time.time()
    net = export_ecmt(model, thresholds, (3, 32, 32), levels=n, device=x.device,
                      progress=lambda k, total, name: print(f"  export {k}/{total} {name}", flush=True)
                      if k % 10 == 0 or k == total else None)
    path = write_network(net, os.path.join(args.out, f"cifar10_vit_n{n}.h5"))
    kinds = dict(Counter(q.kind for q in net.projections))
    info = {"export_s": time.time() - t0, "populations": len(net.populations), "projections": kinds,
            "file_mb": os.path.getsize(path) / 2 ** 20, "images": len(x), "steps": {},
            "ann_accuracy": float((model(x).argmax(1) == y).float().mean())}
    print(f"exported in {info['export_s']:.0f} s: {info['populations']} populations, {kinds}, "
          f"{info['file_mb']:.1f} MB; ANN on these {len(x)} images {100 * info['ann_accuracy']:.2f}%", flush=True)
    flat = simulator.engine.prepare(path)
    ann = results["ann_macs_per_image"]
    xs = x.float().cpu().numpy()
    for T in args.engine_steps:
        t0 = time.time()
        res = simulator.run(flat, xs, T, batch_size=16)
        wall = time.time() - t0
        ref_out, ref = ecmt_forward(model, x, T, thresholds, n=n)
        eng = {"acs": res.total("synops"), "macs": res.total("macs")}
        row = {"accuracy": float((res.predictions() == y.cpu().numpy()).mean()),
               "reference_accuracy": float((ref_out.argmax(1) == y).float().mean()),
               "same_predictions": float((res.predictions() == ref_out.argmax(1).cpu().numpy()).mean()),
               "engine_energy_ratio": energy_ratio(eng, ann * len(x)),
               "reference_energy_ratio": energy_ratio(ref, ann * len(x)), "engine_wall_s": wall,
               **{f"engine_{k}_per_image": v / len(x) for k, v in res.totals().items()},
               **{f"reference_{k}_per_image": v / len(x) for k, v in ref.items()}}
        info["steps"][T] = row
        print(f"engine T={T}: {100 * row['accuracy']:.2f}% (reference {100 * row['reference_accuracy']:.2f}%, "
              f"same predictions {100 * row['same_predictions']:.1f}%), energy ratio engine "
              f"{row['engine_energy_ratio']:.3f} / reference {row['reference_energy_ratio']:.3f}, "
              f"{wall:.1f} s", flush=True)
        results["engine"] = info
        write_text(os.path.join(args.out, "cifar10_vit.json"), json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
