"""spikeforge benchmarks: reports, accuracy-vs-T tables, throughput, sweeps."""
