"""The evaluator's checks, one module each, every one a model-level alert kind.

* `error_stream`: `performance_degradation`, a change detector over the joined errors;
* `cbpe_check`: `estimated_performance_drop`, CBPE's label-free accuracy per window;
* `canary_check`: `canary_regression`, each version against its baseline;
* `slice_check`: `slice_regression`, each slice value against the rest;
* `serving`: `serving_degradation`, latency p99 and request error rate per version;
* `labels_check`: `labels_missing`, label coverage of windows old enough to be final.

They share the false-alarm budget (`N_CHECKS`) and the way findings are worded
(`monitor.evaluation.evidence`); the coordinator, `ModelEvaluator`, feeds them and calls them
when a window closes. Canary and slice checks read the same loss sums (`periods`).
"""

N_CHECKS = 6
"""Checks sharing the evaluation's false-alarm budget: error stream, CBPE, canary, slices,
serving, labels."""
