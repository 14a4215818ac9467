"""The Numenta Anomaly Benchmark (NAB): its scoring, reimplemented, and a runner for Sentinel.

The corpus itself is read from where it lies (``../shared/nab``); nothing of it is copied here.
"""
