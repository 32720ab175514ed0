"""Observers of the event stream: dashboard, JSON lines."""
