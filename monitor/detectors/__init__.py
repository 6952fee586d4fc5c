"""Drift and change detectors, one module per test, registered by name (`registry`).

Importing this package registers every detector, so `registry.create("cusum")` works.

| name | shape | data | what it watches |
|---|---|---|---|
| `bernoulli_cusum` | sequential | error | a rise of the error rate |
| `cusum` | sequential | numeric | mean shifts either way, spread increases |
| `category_cusum` | sequential | categorical | category shares, rare and unseen values |
| `multinomial_scan` | sequential | categorical | all category shares at once, every window length (GLR scan) |
| `adwin`, `page_hinkley` | sequential | numeric | river's detectors (not budget-calibrated) |
| `ks`, `psi`, `wasserstein` | window | numeric | the distribution against the reference |
| `chi_square`, `jensen_shannon` | window | categorical | category shares against the reference |
| `unseen_share` | window | categorical | share of values the reference never showed |
| `pca_reconstruction` | window | multivariate | how numeric features move together |
"""

from monitor.detectors import (  # noqa: F401  (each module registers its detector)
    adwin,
    bernoulli_cusum,
    category_cusum,
    chi_square,
    cusum,
    jensen_shannon,
    ks,
    multinomial_scan,
    page_hinkley,
    pca_reconstruction,
    psi,
    unseen_share,
    wasserstein,
)
