"""How predictions and labels are compared: class names as text, the task decided from the events.

Producers send classes as strings, integers or booleans, and the same class may arrive as `1` in
the prediction, `True` in the label and `"1"` as a probability key. Classes are therefore compared
by a canonical name: booleans and integral numbers become `"1"`/`"0"`-style digits, the strings
`"true"`/`"false"` (any case) become `"1"`/`"0"`, every other string is kept as it is.

>>> class_name(True), class_name(1.0), class_name(2), class_name("fraud"), class_name("False")
('1', '1', '2', 'fraud', '0')
>>> infer_task(0, None), infer_task(0.73, None), infer_task("cat", None), infer_task(3.0, {"a": 0.2, "b": 0.8})
('classification', 'regression', 'classification', 'classification')
"""

from __future__ import annotations

import math
from typing import Any

from monitor.contracts.config import Task

CLASSIFICATION = "classification"
REGRESSION = "regression"
OTHER = "other"
"""Bucket for values over a cap (slice values, classes, versions); its size is counted."""


def class_name(value: Any) -> str:
    """The canonical text of a class (see the module docstring)."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    text = str(value)
    if len(text) <= 5:
        lowered = text.lower()
        if lowered == "true":
            return "1"
        if lowered == "false":
            return "0"
    return text


def is_score(value: Any) -> bool:
    """A non-integral float in [0, 1]: a positive-class score rather than a class."""
    return type(value) is float and 0.0 <= value <= 1.0 and not value.is_integer()


def infer_task(prediction: Any, probabilities: dict[str, float] | None) -> str:
    """`classification` or `regression` for `Task.auto`, from one prediction.

    Probabilities, booleans, strings and the numbers 0 and 1 mean classification (the config's
    rule for `auto`); any other number means regression."""
    if probabilities:
        return CLASSIFICATION
    if isinstance(prediction, bool | str):
        return CLASSIFICATION
    if isinstance(prediction, int | float) and not (isinstance(prediction, float) and math.isnan(prediction)):
        return CLASSIFICATION if prediction in (0, 1) else REGRESSION
    return REGRESSION


def configured_task(task: Task) -> str | None:
    """The evaluation task a configured `Task` means; None for `auto` (decided from events)."""
    if task == Task.auto:
        return None
    return REGRESSION if task == Task.regression else CLASSIFICATION


def positive_probability(probabilities: dict[str, float] | Any, positive: str) -> float:
    """The positive class's probability from a prediction's `probabilities`, NaN when it is not
    there (more than two classes, or two classes neither of which is `positive`).

    >>> positive_probability({"0": 0.3, "1": 0.7}, "1"), positive_probability({"true": 0.9}, "1")
    (0.7, 0.9)
    >>> positive_probability({"legit": 0.9}, "fraud"), positive_probability({"a": 0.5, "b": 0.5}, "1")
    (0.09999999999999998, nan)
    """
    if not probabilities or len(probabilities) > 2:
        return math.nan
    p = probabilities.get(positive)
    if p is not None:
        return float(p)
    for name, value in probabilities.items():
        if class_name(name) == positive:
            return float(value)
    if len(probabilities) == 1:
        # One class given: the positive class's probability is its complement.
        return 1.0 - float(next(iter(probabilities.values())))
    return math.nan
