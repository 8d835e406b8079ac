"""spikeforge.simulator: loads a network file and runs it event-driven (numpy + numba; no torch)."""
from .engine import COUNTERS, Result, prepare, run
from .fileformat import NetworkFileError, load_network, validate_network
from .network import CoreEdges, CoreTable, Network, Population, Projection

__all__ = ["COUNTERS", "Result", "prepare", "run", "NetworkFileError", "load_network", "validate_network",
           "CoreEdges", "CoreTable", "Network", "Population", "Projection"]
