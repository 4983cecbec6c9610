"""Coordinator infrastructure: settings, database, security, metrics."""
