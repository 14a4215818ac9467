"""Benchmarks that run Sentinel's pure detectors on public corpora."""
