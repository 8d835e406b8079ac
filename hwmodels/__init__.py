"""spikeforge hardware models: target cost tables turning simulator counters into energy and latency."""
