"""spikeforge.hwmodels: hardware targets as data; simulator counters -> energy and latency (no torch)."""
from .cost import E_AC_PJ, E_MAC_PJ, CostReport, ann_cost, core_memory, estimate, paper_energy_pj
from .targets import EVENTS, Target, TargetError, available, load_target
from .validation import band_short, band_text, bands, validation_band

__all__ = ["E_AC_PJ", "E_MAC_PJ", "CostReport", "ann_cost", "core_memory", "estimate", "paper_energy_pj",
           "EVENTS", "Target", "TargetError", "available", "load_target", "band_short", "band_text", "bands",
           "validation_band"]
