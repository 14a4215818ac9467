"""Simulated city fleets with labelled anomalies."""
