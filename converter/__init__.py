"""spikeforge converter: trained torch ANN -> spiking network file."""
__version__ = "0.1.0"

from .activations import QCFS, ClipReLU, QCActivation  # noqa: E402,F401
from .convert import ConversionError, convert, trace  # noqa: E402,F401
from .spiking import SpikingNetwork  # noqa: E402,F401
from .writer import write_network  # noqa: E402,F401
from .vit_trace import TraceError, trace_vit  # noqa: E402,F401
