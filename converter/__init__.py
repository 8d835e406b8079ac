"""spikeforge.converter: trained torch ANN -> spiking network (file)."""
from .activations import QCFS, ClipReLU, QCActivation
from .convert import ConversionError, convert, trace
from .spiking import SpikingNetwork
from .vit_trace import TraceError, trace_vit
from .writer import write_network

__all__ = ["QCFS", "ClipReLU", "QCActivation", "ConversionError", "convert", "trace", "SpikingNetwork",
           "TraceError", "trace_vit", "write_network"]
