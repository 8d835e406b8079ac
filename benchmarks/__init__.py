"""Experiment and measurement scripts (CIFAR-10 tables, throughput, SANA-FE comparison, plots); not installed."""
__all__ = []
