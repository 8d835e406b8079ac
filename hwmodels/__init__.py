"""spikeforge hardware models: target cost tables turning simulator counters into energy and latency."""
from .cost import E_AC_PJ, E_MAC_PJ, CostReport, ann_cost, core_memory, estimate, paper_energy_pj  # noqa: F401
from .targets import EVENTS, Target, TargetError, available, load_target  # noqa: F401
