"""spikeforge: ANN-to-SNN conversion and event-driven neuromorphic hardware simulation.

One import name for the whole product:

- `spikeforge.converter`  trained torch model -> spiking network (needs torch)
- `spikeforge.simulator`  network file -> spikes, outputs, exact per-core counters (numpy + numba, no torch)
- `spikeforge.hwmodels`   counters -> energy and latency on a hardware target (no torch)
- `spikeforge.interop`    NIR export / import, SANA-FE side by side
- `spikeforge.cli`, `report`, `sweep`, `demo`, `inspect_cores`: the user-facing layer

The names below are the public API. They are imported lazily (PEP 562), so `import spikeforge.simulator` does not
pull in torch through this file.
"""
from __future__ import annotations

import importlib

__version__ = "0.2.1"

_API = {
    # converter (torch)
    "convert": "spikeforge.converter",
    "convert_pipeline": "spikeforge.converter.pipeline",
    "ConvertSettings": "spikeforge.converter.pipeline",
    "ConversionError": "spikeforge.converter",
    "write_network": "spikeforge.converter",
    "SpikingNetwork": "spikeforge.converter",
    "map_network": "spikeforge.converter.mapping",
    "pipelined": "spikeforge.converter.mapping",
    "balance_work": "spikeforge.converter.mapping",
    "work_per_neuron": "spikeforge.converter.mapping",
    "split_and_measure_work": "spikeforge.converter.mapping",
    "map_to_work": "spikeforge.converter.mapping",
    "to_fixed_point": "spikeforge.converter.fixed_point",
    # simulator
    "load_network": "spikeforge.simulator",
    "validate_network": "spikeforge.simulator",
    "prepare": "spikeforge.simulator",
    "run": "spikeforge.simulator",
    "Result": "spikeforge.simulator",
    "COUNTERS": "spikeforge.simulator",
    "Network": "spikeforge.simulator",
    "Population": "spikeforge.simulator",
    "Projection": "spikeforge.simulator",
    "NetworkFileError": "spikeforge.simulator",
    "Encoding": "spikeforge.simulator",
    "encode": "spikeforge.simulator",
    "bin_events": "spikeforge.simulator",
    "bin_samples": "spikeforge.simulator",
    "load_events": "spikeforge.simulator",
    "save_events": "spikeforge.simulator",
    # hardware models
    "load_target": "spikeforge.hwmodels",
    "available_targets": "spikeforge.hwmodels",
    "estimate": "spikeforge.hwmodels",
    "Target": "spikeforge.hwmodels",
    # results of `spikeforge simulate` (the .npz and its .json, checked to belong together)
    "load_run": "spikeforge.outputs",
    # interop
    "export_nir": "spikeforge.interop.nir_export",
    "import_nir": "spikeforge.interop.nir_import",
    # errors a user can cause
    "UserError": "spikeforge.errors",
}
_RENAMED = {"available_targets": "available"}

__all__ = sorted(_API) + ["__version__"]


def __getattr__(name):
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'spikeforge' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), _RENAMED.get(name, name))
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
