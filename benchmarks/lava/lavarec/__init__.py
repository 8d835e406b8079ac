"""Fast file-backed recorders for Lava (see fast_sink.py)."""
