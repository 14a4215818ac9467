"""Sentinel: self-hosted security monitoring for connected city fleets."""
