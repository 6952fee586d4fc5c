"""A retraining system reading Driftline's alerts with plain kafka-python: no Driftline import.

The alert contract is versioned (`schema_version`, JSON Schema in `schemas/alert.json`) and
changes only additively within a major version, so a consumer checks the major version, ignores
fields it does not know, and keys its work on `alert_id` (one per firing period: repeats and
the resolution share it) to stay idempotent under at-least-once delivery.

    python examples/retraining_consumer.py --bootstrap 127.0.0.1:19092 --group retrainer

prints one JSON line per retraining decision and commits its offsets after acting.
"""

from __future__ import annotations

import argparse
import json
import sys

from kafka import KafkaConsumer

SUPPORTED_MAJOR = "1"
RETRAIN_ON = {"feature_drift", "prediction_drift", "multivariate_drift", "performance_degradation"}


def decide(alert: dict) -> dict | None:
    """A retraining request for a firing alert of a kind worth retraining on, else None."""
    if alert.get("status") != "firing" or alert.get("kind") not in RETRAIN_ON:
        return None
    evidence = alert.get("evidence", {})
    return {
        "alert_id": alert["alert_id"],
        "model_id": alert["model_id"],
        "reason": f"{alert['kind']} on {alert.get('feature') or 'the model'}",
        "score": evidence.get("score"),
        "threshold": evidence.get("threshold"),
        "train_until": evidence.get("window_end"),
        "runbook_url": alert.get("runbook_url"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", default="alerts")
    parser.add_argument("--group", default="retrainer")
    parser.add_argument("--idle-seconds", type=float, default=None, help="stop after this long without a record")
    args = parser.parse_args()
    consumer = KafkaConsumer(
        args.topic,
        bootstrap_servers=args.bootstrap,
        group_id=args.group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=int(args.idle_seconds * 1000) if args.idle_seconds else float("inf"),
        session_timeout_ms=6000,
        heartbeat_interval_ms=2000,
    )
    seen: set[str] = set()  # a real system keeps this in its own store
    try:
        for record in consumer:
            try:
                alert = json.loads(record.value)
                major = str(alert["schema_version"]).split(".")[0]
            except (ValueError, KeyError, TypeError) as error:
                where = f"{record.topic}[{record.partition}]@{record.offset}"
                print(f"skipped {where}: not an alert ({error!r})", file=sys.stderr)
                continue
            if major != SUPPORTED_MAJOR:
                print(f"skipped {alert.get('alert_id')}: schema_version {alert['schema_version']}", file=sys.stderr)
                continue
            request = decide(alert)
            if request is not None and request["alert_id"] not in seen:
                seen.add(request["alert_id"])
                print(json.dumps(request), flush=True)  # here: start the training pipeline
            consumer.commit()
    finally:
        consumer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
