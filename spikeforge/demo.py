"""`spikeforge demo`: digits CNN -> SNN file -> simulation for several T -> report on every target (no download)."""
from __future__ import annotations

import os
import time

import torch


def run_demo(out_dir="spikeforge-demo", epochs=20, steps=(1, 2, 4, 8, 16, 32), seed=0, test_samples=None):
    """Train, convert, simulate every T, and report on every built-in target; returns the report rows.

    test_samples: evaluate only the first N test digits (default: all 360).
    out_dir is written as one unit (spikeforge.outputs.replace_folder): built in a temporary sibling and swapped in
    at the end, so an interrupted demo leaves the previous one whole; a folder holding other files is refused.
    """
    from spikeforge.outputs import REPORT_FILES, replace_folder

    with replace_folder(out_dir, REPORT_FILES + ("digits-resnet.h5",), kind="demo") as tmp:
        rows, table, ann = _demo(tmp, os.path.join(out_dir, "digits-resnet.h5"), epochs, steps, seed, test_samples)
    print(f"\nANN accuracy {100 * ann:.2f}%\n{table}\n\nreport: {os.path.join(os.path.normpath(out_dir), 'report.md')}")
    return rows


def _demo(out_dir, shown_path, epochs, steps, seed, test_samples):
    from tqdm import tqdm

    from spikeforge import hwmodels
    from spikeforge.converter import convert, write_network
    from spikeforge.converter.training import accuracy, train_classifier
    from spikeforge.data import load_digits_split
    from spikeforge.models import DigitsResNet
    from spikeforge.report import evaluate_mapped, write_report
    from spikeforge.simulator import load_network

    torch.manual_seed(seed)
    xtr, ytr, xte, yte = load_digits_split(seed=seed)
    if test_samples is not None:
        xte, yte = xte[:test_samples], yte[:test_samples]
    t0 = time.time()
    print(f"[1/4] training DigitsResNet on {len(xtr)} scikit-learn digits for {epochs} epochs ...")
    bar = tqdm(total=epochs, desc="epochs", disable=None)
    model = train_classifier(DigitsResNet(), xtr, ytr, epochs=epochs, lr=0.05, seed=seed,
                             progress=lambda e, loss: (bar.update(1), bar.set_postfix(loss=f"{loss:.3f}")))
    bar.close()
    ann = accuracy(model, xte, yte)
    print(f"      ANN test accuracy {100 * ann:.2f}% ({time.time() - t0:.1f} s)")
    print("[2/4] converting (BN fusion, 99.9th-percentile thresholds, IF neurons, one population per core) ...")
    net = convert(model, [xtr[:512]], norm="percentile", percentile=99.9, name="digits-resnet")
    path = write_network(net, os.path.join(out_dir, "digits-resnet.h5"))
    net = load_network(path)
    print(f"      wrote {shown_path}: {len(net.populations)} populations, {len(net.projections)} projections, "
          f"{len(net.cores)} cores")
    print("      mapping it onto each built-in target by the target's own rule:")
    left_out = []
    fits = _fitting_targets(net, [hwmodels.load_target(t) for t in hwmodels.available()], left_out)
    print(f"[3/4] simulating {len(xte)} test digits for T in {list(steps)} on each target's mapping ...")
    bar = tqdm(total=len(xte) * len(steps) * len(fits), desc="samples x T x targets", disable=None)
    rows, runs, ann_cost, mappings = evaluate_mapped(fits, xte.numpy(), yte.numpy(), list(steps), bar.update)
    bar.close()
    print(f"[4/4] writing the report for {', '.join(f.target.name for f in fits)} ...")
    table = write_report(out_dir, "digits-resnet", rows, runs, ann_cost, net, len(xte), ann_acc=ann,
                         encoding="direct", mappings=mappings, left_out=left_out)
    return rows, table, ann


def _fitting_targets(net, targets, left_out):
    """[spikeforge.fit.Fitted] of the targets the network maps onto (each by its own rule), each with its mapped
    network (what its figures are priced on), printing its cores there or why it does not fit (and adding that
    to left_out as (target name, why))."""
    from spikeforge.converter.mapping import NO_SPLIT, MappingError, map_network
    from spikeforge.fit import Fitted

    fits = []
    for t in targets:
        try:  # the report prices the network as converted: a target it fits only once split is left out
            placed = map_network(net, t, placement="snake", split=False)
        except MappingError as exc:
            why = str(exc).replace(NO_SPLIT, "")
            if NO_SPLIT in str(exc):
                why += (f"; it fits once these layers are split into partial sums (spikeforge convert --target "
                        f"{t.name}), but this report prices the network as converted")
            print(f"      {t.name}: does not fit, left out of the report: {why}")
            left_out.append((t.name, why))
            continue
        print(f"      {t.name}: fits on {placed.cores.slots()} cores (mapping rule: {t.mapping})")
        fits.append(Fitted(t, placed, f"mapped for {t.name} by the demo ({placed.cores.slots()} cores, "
                                      f"{t.mapping} rule{', snake placement' * (t.mapping == 'cores')})", True))
    return fits
