"""Alerts: the book of active alerts and the sinks they are sent to."""
