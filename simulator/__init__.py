"""spikeforge.simulator: loads a network file and runs it event-driven (numpy + numba; no torch)."""
from .encoding import ENCODINGS, Encoding, encode
from .engine import COUNTERS, Result, prepare, run
from .events import bin_events, bin_samples, load_events, save_events
from .fileformat import NetworkFileError, load_network, validate_network
from .network import CoreEdges, CoreTable, Network, Population, Projection

__all__ = ["COUNTERS", "Result", "prepare", "run", "ENCODINGS", "Encoding", "encode", "bin_events", "bin_samples",
           "load_events", "save_events", "NetworkFileError", "load_network", "validate_network",
           "CoreEdges", "CoreTable", "Network", "Population", "Projection"]
