"""Drift and change detectors, one module per test, registered by name (`registry`)."""
