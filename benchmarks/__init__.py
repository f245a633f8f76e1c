"""Benchmarks (``taskfold.benchmarks``): FLOPs and interleaved latency, folded graphs against the base.

Built in the benchmark stage; this package holds nothing yet.
"""
