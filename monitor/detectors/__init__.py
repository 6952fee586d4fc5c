"""Drift and change detectors, one module per test, registered by name (`registry`).

Importing this package registers every detector, so `registry.create("cusum")` works.
"""

from monitor.detectors import bernoulli_cusum  # noqa: F401
