"""spikeforge simulator: loads a network file and runs it event-driven (numpy + numba)."""
from .fileformat import NetworkFileError, load_network, validate_network  # noqa: F401
from .network import CoreEdges, CoreTable, Network, Population, Projection  # noqa: F401
from .engine import COUNTERS, Result, prepare, run  # noqa: F401,E402
