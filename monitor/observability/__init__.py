"""Prometheus metrics and alert evidence pages."""
