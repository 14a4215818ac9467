"""Pure anomaly detectors: no I/O, no wall clock; time comes from the records."""
