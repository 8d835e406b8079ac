"""Which cores a target's figures are priced on: the file's own mapping where it was made for that target and fits
it, else the network re-mapped for the target (or, with remap off, the file's cores where they fit the target's
limits); a mapping the target cannot hold is refused, naming the layer and the limit, never priced silently."""
from __future__ import annotations

import dataclasses

import numpy as np

from spikeforge.errors import UserError

__all__ = ["Fitted", "fit_targets", "mapped_for", "misfits"]


@dataclasses.dataclass(frozen=True)
class Fitted:
    """A target, the network its figures use and what that mapping is, in words (report, summary and JSON)."""
    target: object
    network: object
    mapping: str
    remapped: bool


def mapped_for(net) -> str | None:
    """The target the file's cores were placed for (its `mapping` attribute, "target:placement"), None for a file
    with one population per core or no recorded mapping."""
    text = str(net.attrs.get("mapping", ""))
    name, sep, _ = text.partition(":")
    return name if sep else None


def misfits(net, target) -> list:
    """What of the network's cores the target cannot hold, one line per layer (its worst core: the limit, what it
    needs, what a core has), plus chips holding more cores than a chip has and spikes wider than the target's;
    empty when every core fits."""
    from spikeforge.converter.mapping import MappingError, _check_payloads, chip_rule_check

    if getattr(target, "mapping", "cores") != "cores":  # Speck, Xylo: the chip's own placement rule
        check = chip_rule_check(net, target)
        return [] if check["fits"] else [f"{check['rule']} rule: {check['reason']}"]
    from spikeforge.inspect_cores import core_loads

    limits = target.limits
    worst = {}
    names = {"util_neurons": ("neurons", "neurons_per_core"), "util_axons": ("input axons", "axons_per_core"),
             "util_memory": ("synapse memory bytes", "synapse_memory_bytes_per_core")}
    for row in core_loads(net, target):
        for key, (what, limit) in names.items():
            if row[key] > 1 and row[key] > worst.get(row["population"], (0,))[0]:
                need = row["neurons"] if key == "util_neurons" else row["axons"] if key == "util_axons" else \
                    row["synapse_bytes"]
                worst[row["population"]] = (row[key], what, need, limits[limit], row["core"])
    out = [f"layer {layer!r}: core {core} needs {need:,.0f} {what}, a {target.name} core has {allowed:,.0f} "
           f"({util:.2f}x)" for layer, (util, what, need, allowed, core) in worst.items()]
    per_chip = np.bincount(np.asarray(net.cores.chip, np.int64))
    full = int(limits["cores_per_chip"])
    if per_chip.size and per_chip.max() > full:
        out.append(f"chip {int(per_chip.argmax())} holds {int(per_chip.max())} cores, a {target.name} chip has "
                   f"{full}")
    try:
        _check_payloads(net, limits)
    except MappingError as exc:
        out.append(str(exc))
    return out


def _cores_text(net) -> str:
    chips = len(np.unique(net.cores.chip))
    return f"{len(net.cores)} cores on {chips} chip{'s' * (chips != 1)}"


def fit_targets(net, targets, path="the file", remap=True, progress=None, left_out=None) -> list:
    """[Fitted] per target. The file's cores are used where the file was mapped for that target and they fit it;
    otherwise the network is re-mapped for the target (converter.mapping.map_network, anneal placement; spiking
    fan-in relays, if the target needs them, take the thresholds of the layers they feed) unless remap is False,
    in which case the file's cores are used where they fit the target and refused (UserError naming each layer
    and limit) where they do not. progress(text) is told before each re-mapping (minutes for a large network).
    left_out: a list to which (target name, reason) is added for each target that cannot hold the network, which is
    then left out instead of refused (a report over every built-in target)."""
    own = mapped_for(net)
    out = []
    for target in targets:
        try:
            out.append(_fit_one(net, target, own, path, remap, progress))
        except UserError as exc:
            if left_out is None:
                raise
            left_out.append((target.name, str(exc)))
    return out


def _fit_one(net, target, own, path, remap, progress):
    """The Fitted of one target (fit_targets); UserError where the target cannot hold the network."""
    from spikeforge.converter.mapping import MappingError, map_network

    bad = misfits(net, target)
    if not bad and own == target.name:
        return Fitted(target, net, f"the file's mapping for {target.name} ({_cores_text(net)})", False)
    made = f"mapped for {own}" if own else "not mapped for any target (one population per core)"
    if not remap:
        if bad:
            raise UserError(f"{path} is {made}, and its cores do not fit {target.name}: " + "; ".join(bad)
                            + f". Leave out --no-remap to re-map it for {target.name}, or convert the model "
                            f"with convert --target {target.name}")
        return Fitted(target, net, f"the file's cores ({made}; {_cores_text(net)}), within {target.name}'s limits",
                      False)
    if progress:
        progress(f"re-mapping {path} for {target.name}")
    try:
        mapped = map_network(net, target)
    except (MappingError, ValueError) as exc:
        raise UserError(f"{path} is {made} and cannot be re-mapped for {target.name}: {exc}. Convert the "
                        f"model with convert --target {target.name}, or leave {target.name} out") from None
    why = f"the file's own mapping does not fit it: {bad[0]}" if own == target.name else f"the file is {made}"
    return Fitted(target, mapped, f"re-mapped for {target.name} by this command ({_cores_text(mapped)}; {why})",
                  True)
