"""Join store: every policy with its counter, expiry by event time, memory-bounded interning, state."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime

import pytest

from monitor.contracts.config import MonitorConfig
from monitor.contracts.events import OutcomeEvent, PredictionEvent
from monitor.evaluation.join import JoinedOutcome, JoinStore

HOUR = 3600.0


def store(**settings) -> JoinStore:
    return JoinStore(ttl_seconds=10 * HOUR, early_ttl_seconds=HOUR, **settings)


def test_outcome_joins_its_prediction_with_the_compact_record():
    s = store()
    assert (
        s.add_prediction_fields("p1", "fraud", "v2", 1000.0, "fraud", {"fraud": 0.7, "legit": 0.3}, {"country": "DE"})
        is None
    )
    assert s.pending == 1
    joined = s.add_outcome_fields("p1", "legit", 1500.0)
    assert (joined.prediction, joined.slices, joined.label) == ("fraud", (("country", "DE"),), "legit")
    assert math.isnan(joined.probability)  # the positive class is 1 by default: not among these
    assert (joined.model_id, joined.model_version, joined.prediction_time, joined.outcome_time) == (
        "fraud",
        "v2",
        1000.0,
        1500.0,
    )
    assert joined.label_delay == 500.0
    assert s.pending == 0
    counts = s.counters("fraud")
    assert (counts["predictions"], counts["outcomes"], counts["joined"]) == (1, 1, 1)


def test_prediction_values_come_back_with_their_type():
    s = store()
    values = [1, True, 0.25, "cat", 7, False, 3.5e9]
    for i, value in enumerate(values):
        s.add_prediction_fields(f"p{i}", "m", "v", 1000.0 + i, value)
    back = [s.add_outcome_fields(f"p{i}", 0, 2000.0).prediction for i in range(len(values))]
    assert back == values
    assert [type(v) for v in back] == [type(v) for v in values]


def test_positive_class_probability_follows_the_model_config():
    config = MonitorConfig.model_validate({"models": [{"model_id": "fraud", "positive_class": "fraud"}]})
    s = JoinStore.from_config(config)
    s.add_prediction_fields("a", "fraud", "v", 1000.0, "fraud", {"fraud": 0.9, "legit": 0.1})
    s.add_prediction_fields("b", "other", "v", 1000.0, 1, {"0": 0.2, "1": 0.8})
    s.add_prediction_fields("c", "other", "v", 1000.0, 1, {"no": 0.2, "yes": 0.8})  # no positive class "1"
    assert s.add_outcome_fields("a", "fraud", 1001.0).probability == 0.9
    assert s.add_outcome_fields("b", 1, 1001.0).probability == 0.8
    assert math.isnan(s.add_outcome_fields("c", 1, 1001.0).probability)
    assert s.counters("other")["probabilities_without_positive_class"] == 1


def test_multiclass_probabilities_are_kept_compactly_and_come_back():
    s = store()
    probs = {"a": 0.5, "b": 0.25, "c": 0.25}
    s.add_prediction_fields("p", "m", "v", 1000.0, "a", probs)
    joined = s.add_outcome_fields("p", "b", 1001.0)
    assert joined.probabilities == probs
    assert math.isnan(joined.probability)


def test_outcome_before_prediction_is_held_then_joined():
    s = store()
    assert s.add_outcome_fields("p1", 1, 1000.0, model_id="m") is None
    assert s.counters()["early_outcomes"] == 1
    joined = s.add_prediction_fields("p1", "m", "v", 990.0, 1)
    assert joined is not None and joined.label == 1 and joined.label_delay == 10.0
    counts = s.counters("m")
    assert (counts["early_outcomes_joined"], counts["joined"]) == (1, 1)
    assert s.pending == 0


def test_early_outcome_expires_after_its_own_ttl_as_unmatched():
    s = store()
    s.add_outcome_fields("ghost", 1, 1000.0)  # no model named: counted under "unknown"
    s.advance(1000.0 + 1.2 * HOUR)
    assert s.counters("unknown")["early_outcomes_unmatched"] == 1
    assert s.add_prediction_fields("ghost", "m", "v", 1000.0 + 1.3 * HOUR, 1) is None  # stored, not joined
    assert s.pending == 1


def test_early_outcomes_wait_for_the_predictions_event_time_not_the_outcomes():
    """In streaming the outcomes' path can run hours of event time ahead of the predictions'
    (labels are stamped later): held outcomes must not expire on the outcomes' own clock."""
    s = store()
    for i in range(100):  # outcomes stamped 6 h after predictions that have not arrived yet
        assert s.add_outcome_fields(f"p{i}", 1, 1000.0 + 6 * HOUR + i * 60, model_id="m") is None
    for i in range(100):
        assert s.add_prediction_fields(f"p{i}", "m", "v", 1000.0 + i * 60, 1) is not None
    counts = s.counters("m")
    assert (counts["early_outcomes_joined"], counts["early_outcomes_unmatched"]) == (100, 0)
    s.add_outcome_fields("never", 1, 1000.0 + 7 * HOUR, model_id="m")
    s.add_prediction_fields("later", "m", "v", 1000.0 + 8.2 * HOUR, 1)  # predictions passed it by the TTL
    assert s.counters("m")["early_outcomes_unmatched"] == 1


def test_early_outcomes_wait_for_the_slowest_models_predictions():
    """One model's partitions can run hours of event time ahead of another's: an outcome held for
    a slow model's prediction must not expire on the fast model's clock."""
    s = store()
    s.add_prediction_fields("fast-0", "fast", "v", 1000.0, 1)
    s.add_prediction_fields("slow-0", "slow", "v", 1000.0, 1)
    assert s.add_outcome_fields("slow-1", 1, 1000.0 + 6 * HOUR + 60, model_id="slow") is None  # early
    s.add_prediction_fields("fast-1", "fast", "v", 1000.0 + 9 * HOUR, 1)  # the fast model is far ahead
    assert s.add_prediction_fields("slow-1", "slow", "v", 1000.0 + 60, 1) is not None
    assert s.counters("slow")["early_outcomes_unmatched"] == 0


def test_early_outcomes_wait_for_a_model_whose_predictions_have_not_started():
    """The demo on Kafka: a model's outcomes reached the join before any of its predictions, while
    other models' predictions ran hours ahead; they expired unmatched."""
    s = store()
    assert s.add_outcome_fields("late-0", 1, 1000.0 + 6 * HOUR, model_id="late") is None
    s.add_prediction_fields("other-0", "other", "v", 1000.0 + 9 * HOUR, 1)
    assert s.add_prediction_fields("late-0", "late", "v", 1000.0, 1) is not None
    assert s.counters("late")["early_outcomes_unmatched"] == 0


def test_duplicate_outcome_first_wins_pending_held_and_joined():
    s = store()
    s.add_prediction_fields("p", "m", "v", 1000.0, 1)
    first = s.add_outcome_fields("p", 1, 1100.0)
    assert first.label == 1
    assert s.add_outcome_fields("p", 0, 1200.0) is None  # after the join: remembered
    s.add_outcome_fields("q", 1, 1300.0, model_id="m")
    assert s.add_outcome_fields("q", 0, 1301.0, model_id="m") is None  # both early
    assert s.add_prediction_fields("q", "m", "v", 1290.0, 1).label == 1  # the first held label
    assert s.counters("m")["duplicate_outcomes"] == 2


def test_duplicate_prediction_id_first_wins_pending_and_after_join():
    s = store()
    s.add_prediction_fields("p", "m", "v1", 1000.0, 1)
    s.add_prediction_fields("p", "m", "v2", 1001.0, 0)
    assert s.pending == 1
    joined = s.add_outcome_fields("p", 1, 1100.0)
    assert (joined.model_version, joined.prediction) == ("v1", 1)
    s.add_prediction_fields("p", "m", "v3", 1200.0, 0)  # id reused after the join
    assert s.pending == 0
    assert s.counters("m")["duplicate_predictions"] == 2


def test_prediction_never_labelled_expires_by_event_time():
    s = store()
    s.add_prediction_fields("old", "m", "v", 1000.0, 1)
    s.add_prediction_fields("young", "m", "v", 1000.0 + 5 * HOUR, 1)
    s.advance(1000.0 + 9 * HOUR)
    assert s.pending == 2  # nothing is due yet
    s.advance(1000.0 + 10.5 * HOUR)  # past the TTL plus one bucket (10 h / 64)
    assert s.pending == 1 and s.counters("m")["expired"] == 1
    assert s.label_coverage("m") == 0.0
    # The outcome of the expired prediction is recognised as late, not as an early outcome.
    assert s.add_outcome_fields("old", 1, 1000.0 + 10.6 * HOUR) is None
    assert s.counters("m")["outcomes_after_expiry"] == 1 and s.counters()["early_outcomes"] == 0


def test_outcome_more_than_ttl_after_its_prediction_is_refused_before_the_bucket_expires():
    s = store()
    s.add_prediction_fields("p", "m", "v", 1000.0, 1)
    assert s.add_outcome_fields("p", 1, 1000.0 + 10 * HOUR + 1) is None
    counts = s.counters("m")
    assert (counts["outcomes_after_expiry"], counts["expired"], counts["joined"]) == (1, 1, 0)
    assert s.pending == 0


def test_outcome_stamped_before_its_prediction_counts_zero_delay():
    s = store()
    s.add_prediction_fields("p", "m", "v", 1000.0, 1)
    assert s.add_outcome_fields("p", 1, 900.0).label_delay == 0.0
    assert s.counters("m")["negative_delays"] == 1


def test_slots_are_reused_and_expiry_skips_joined_slots():
    s = store()
    for i in range(100):
        s.add_prediction_fields(f"a{i}", "m", "v", 1000.0 + i, 1)
    for i in range(100):
        s.add_outcome_fields(f"a{i}", 1, 1200.0)
    for i in range(100):  # these reuse the freed slots; the old queue entries must not expire them
        s.add_prediction_fields(f"b{i}", "m", "v", 1000.0 + 5 * HOUR + i, 1)
    s.advance(1000.0 + 10.5 * HOUR)
    assert s.pending == 100 and s.counters("m")["expired"] == 0
    s.advance(1000.0 + 15.5 * HOUR)
    assert s.pending == 0 and s.counters("m")["expired"] == 100
    assert len(s._pid) == 100  # no growth beyond the peak


def test_capacity_refuses_new_predictions_and_counts_them():
    s = store(max_pending=3)
    for i in range(5):
        s.add_prediction_fields(f"p{i}", "m", "v", 1000.0 + i, 1)
    assert s.pending == 3 and s.counters("m")["predictions_over_capacity"] == 2
    assert s.add_outcome_fields("p4", 1, 1100.0) is None  # never stored: held as early


def test_early_outcomes_are_capped():
    s = store(max_early_outcomes=2)
    for i in range(4):
        s.add_outcome_fields(f"x{i}", 1, 1000.0, model_id="m")
    assert s.counters("m")["early_outcomes"] == 2 and s.counters("m")["early_outcomes_over_capacity"] == 2


def test_slice_values_over_the_cap_become_other_and_unconfigured_slices_are_dropped():
    s = JoinStore(max_slice_values=2, slice_names={"m": ["country"]})
    for i, country in enumerate(["DE", "FR", "IT", "ES", "DE"]):
        s.add_prediction_fields(f"p{i}", "m", "v", 1000.0 + i, 1, slices={"country": country, "device": "ios"})
    slices = [s.add_outcome_fields(f"p{i}", 1, 1100.0).slices for i in range(5)]
    assert slices == [(("country", v),) for v in ["DE", "FR", "other", "other", "DE"]]
    assert s.counters("m")["slice_values_over_cap"] == 2


def test_label_delay_quantiles_and_coverage_per_model():
    s = store()
    for i in range(1000):
        s.add_prediction_fields(f"p{i}", "m", "v", 1000.0 + i, 1)
    for i in range(800):
        s.add_outcome_fields(f"p{i}", 1, 1000.0 + i + 10.0 * (1 + i % 100))
    s.advance(1000.0 + 11 * HOUR)
    quantiles = s.label_delay_quantiles("m")
    assert quantiles["p50"] == pytest.approx(505, abs=20) and quantiles["p99"] == pytest.approx(1000, abs=25)
    assert s.label_coverage("m") == 0.8
    report = s.metrics()["m"]
    assert report["pending"] == 0 and report["expired"] == 200 and report["label_coverage"] == 0.8


def test_events_in_and_joined_record_round_trips_as_json():
    s = JoinStore()  # default TTL: 7 days
    event = PredictionEvent(
        model_id="m", prediction_id="p", timestamp=datetime(2024, 1, 1, tzinfo=UTC), features={"x": 1.0},
        prediction=1, probabilities={"0": 0.25, "1": 0.75}, slices={"country": "DE"},
    )  # fmt: skip
    s.add_prediction(event)
    joined = s.add_outcome(OutcomeEvent(prediction_id="p", label=True, timestamp=datetime(2024, 1, 2, tzinfo=UTC)))
    assert joined.label_delay == 86400.0 and joined.probability == 0.75
    assert JoinedOutcome.from_dict(json.loads(json.dumps(joined.to_dict()))) == joined


def test_state_round_trip_resumes_every_policy():
    s = store()
    s.add_prediction_fields("p1", "m", "v", 1000.0, 1, {"0": 0.4, "1": 0.6}, {"c": "DE"})
    s.add_prediction_fields("p2", "m", "v", 1001.0, "x", {"x": 0.5, "y": 0.3, "z": 0.2})
    s.add_prediction_fields("p3", "m", "v", 1002.0, 0)
    s.add_outcome_fields("p3", 0, 1003.0)  # joined: a duplicate must still be recognised
    s.add_outcome_fields("early", 1, 1004.0, model_id="m")
    state = json.loads(json.dumps(s.to_state(), allow_nan=False))
    r = JoinStore.from_state(state, ttl_seconds=10 * HOUR, early_ttl_seconds=HOUR)
    assert r.pending == 2 and r.counters() == s.counters()
    assert r.add_outcome_fields("p3", 1, 1010.0) is None and r.counters("m")["duplicate_outcomes"] == 1
    assert r.add_outcome_fields("p1", 1, 1010.0).probability == 0.6
    assert r.add_outcome_fields("p2", "y", 1010.0).probabilities == {
        "x": 0.5,
        "y": pytest.approx(0.3),
        "z": pytest.approx(0.2),
    }
    assert r.add_prediction_fields("early", "m", "v", 1000.0, 1).label == 1
    r.advance(1000.0 + 11 * HOUR)
    assert r.pending == 0


def test_bad_settings_fail_in_the_constructor():
    with pytest.raises(ValueError, match="ttl_seconds"):
        JoinStore(ttl_seconds=0)


@pytest.mark.parametrize("seed", range(8))
def test_a_batch_of_predictions_leaves_the_state_one_at_a_time_leaves(seed):
    """`add_batch` stores a batch of predictions at once when each simply waits; against one
    `add_prediction_fields` / `add_outcome_fields` each, in input order, over batches with
    duplicates, held outcomes, new and known keys and slices, string, bool and integer classes,
    two- and three-class probabilities, and time moving past the TTL: the same joins and the same
    state, byte for byte."""
    import numpy as np

    from monitor.contracts.batch import OutcomeBatch, PredictionBatch

    rng = np.random.default_rng(seed)
    settings = {"ttl_seconds": 600, "early_ttl_seconds": 60, "max_pending": 5_000}
    bulk, alone = JoinStore(**settings), JoinStore(**settings)
    t, next_id, used_bulk = 1.7e9, 0, 0
    for _ in range(40):
        n = int(rng.integers(1, 300))
        duplicates, multiclass = rng.random() < 0.3, rng.random() < 0.3  # either needs the per-event rules
        events, offsets = [], []
        for _ in range(n):
            t += float(rng.exponential(0.6))
            if duplicates and rng.random() < 0.05 and next_id:
                pid = f"p{int(rng.integers(0, next_id))}"  # a duplicate, or one an outcome waits for
            else:
                pid, next_id = f"p{next_id}", next_id + 1
            p = float(rng.random())
            prediction = [p, int(p > 0.5), bool(p > 0.5), "yes" if p > 0.5 else "no"][int(rng.integers(0, 4))]
            probabilities = [None, {"0": 1 - p, "1": p}, {"a": p / 2, "b": p / 2, "c": 1 - p}][
                int(rng.integers(0, 3 if multiclass else 2))
            ]
            slices = None if rng.random() < 0.7 else {"country": str(rng.choice(["DE", "FR", "US"]))}
            fields = {"model_id": f"m{int(rng.integers(0, 2))}", "prediction_id": pid, "features": {},
                      "timestamp": datetime.fromtimestamp(t, UTC), "prediction": prediction, "slices": slices,
                      "probabilities": probabilities if rng.random() < 0.9 else None}  # fmt: skip
            events.append(PredictionEvent(**fields))
            offsets.append(len(offsets))
        outcome_events = [
            OutcomeEvent(prediction_id=f"p{int(rng.integers(0, next_id + 20))}", label=int(rng.integers(0, 2)),
                         timestamp=datetime.fromtimestamp(t + float(rng.exponential(30)), UTC))
            for _ in range(int(rng.integers(0, 40)))
        ]  # fmt: skip
        predictions = PredictionBatch.from_events(events, offsets)
        outcomes = OutcomeBatch.from_events(outcome_events, range(n, n + len(outcome_events)))
        pending = bulk.pending
        joined_bulk = bulk.add_batch(predictions, OutcomeBatch.empty())
        used_bulk += joined_bulk == [] and bulk.pending == pending + n and n >= 16
        joined_alone = [bulk_row for e in events if (bulk_row := alone.add_prediction(e)) is not None]
        assert [record.to_dict() for _, record in joined_bulk] == [r.to_dict() for r in joined_alone]
        joined_bulk = bulk.add_batch(PredictionBatch.empty(), outcomes)
        joined_alone = [r for e in outcome_events if (r := alone.add_outcome(e)) is not None]
        assert [record.to_dict() for _, record in joined_bulk] == [r.to_dict() for r in joined_alone]
        assert json.dumps(bulk.to_state(), sort_keys=True) == json.dumps(alone.to_state(), sort_keys=True)
        assert bulk.counters() == alone.counters()
    assert used_bulk >= 3  # the batch path was taken, not only the per-event one
