"""Write `rules/driftline.rules.yml`, the Prometheus alerting rules of Driftline.

The rules are generated so that three things have one source each: the alert kinds
(`AlertKind`), their default severities and the runbook base URL (`AlertingConfig`). A new kind
without a summary here fails the generator; a stale rules file fails the tests.

    .venv/bin/python deploy/prometheus/generate_rules.py            # write the file
    .venv/bin/python deploy/prometheus/generate_rules.py --check    # exit 1 if it is stale
    .venv/bin/python deploy/prometheus/generate_rules.py --runbook-base-url https://runbooks.example.com

Two kinds of rules come out:

- one rule per alert kind, turning `driftline_alert_active{kind=...} == 1` (set by the worker
  while the core's alert fires) into an Alertmanager alert with the series' labels (kind, model,
  feature, slice, severity), `pipeline="driftline"`, a summary and a `runbook_url`;
- pipeline-health rules the core cannot raise about itself (worker down, consumer lag growing,
  dead-letter rate high, unreadable records skipped, a model's monitor failing, a state too
  large to save, labels stopped arriving) and `Watchdog`, which always fires.

Every alert carries `pipeline="driftline"`, so `DriftlineWorkerDown` can inhibit the others in
Alertmanager (see `deploy/alertmanager/alertmanager.yml`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from monitor.contracts.alert import AlertKind
from monitor.contracts.config import AlertingConfig

RULES_PATH = Path(__file__).resolve().parent / "rules" / "driftline.rules.yml"
RUNBOOK_BASE_URL = AlertingConfig().runbook_base_url
"""Where runbook pages live; the page of an alert is `<base>/<kind or alert name>`, as in the core."""
PIPELINE_LABEL = {"pipeline": "driftline"}
KIND_KEEP_FIRING_FOR = "5m"
"""A worker restart or a partition rebalance drops the series for a scrape or two; this keeps the
alert from resolving and firing again (one notification instead of three)."""

_SLICE = "{{ if $labels.slice }} (slice {{ $labels.slice }}){{ end }}"
_FEATURE = "{{ if $labels.feature }} ({{ $labels.feature }}){{ end }}"

KIND_SUMMARIES: dict[AlertKind, tuple[str, str]] = {
    AlertKind.data_quality: (
        "Model {{ $labels.model }}: bad input data on feature {{ $labels.feature }}" + _SLICE,
        "Null rate, type mismatches, out-of-range values, unseen categories or cardinality on one feature "
        "broke their bounds. Drift alerts on the same feature are inhibited while this fires.",
    ),
    AlertKind.feature_drift: (
        "Model {{ $labels.model }}: feature {{ $labels.feature }} drifted from its reference" + _SLICE,
        "A calibrated drift test or change detector on one feature crossed its threshold.",
    ),
    AlertKind.prediction_drift: (
        "Model {{ $labels.model }}: its predictions" + _FEATURE + " drifted from the reference" + _SLICE,
        "The distribution of the model's score or predicted class moved away from the reference.",
    ),
    AlertKind.multivariate_drift: (
        "Model {{ $labels.model }}: the joint distribution of its numeric features drifted" + _SLICE,
        "A detector over all numeric features together crossed its threshold, though single features may not.",
    ),
    AlertKind.performance_degradation: (
        "Model {{ $labels.model }}: measured performance degraded" + _SLICE,
        "On predictions joined with their outcomes, a calibrated change detector says errors rose above the "
        "reference's.",
    ),
    AlertKind.estimated_performance_drop: (
        "Model {{ $labels.model }}: estimated (label-free) performance dropped" + _SLICE,
        "A label-free estimate (CBPE) says performance fell before the labels arrived to confirm it.",
    ),
    AlertKind.canary_regression: (
        "Model {{ $labels.model }}: a new version is significantly worse than its baseline" + _SLICE,
        "A canary version's error is above the baseline version's by more than the margin, significantly.",
    ),
    AlertKind.slice_regression: (
        "Model {{ $labels.model }}: slice {{ $labels.slice }} performs worse than overall",
        "One slice's error is above the rest of the traffic's by more than the margin, significantly, with "
        "enough samples.",
    ),
    AlertKind.serving_degradation: (
        "Model {{ $labels.model }}: latency or request errors of a version degraded" + _SLICE,
        "p99 latency or the request error rate reported on prediction events crossed its configured bound.",
    ),
    AlertKind.labels_missing: (
        "Model {{ $labels.model }}: label coverage fell below its expected rate" + _SLICE,
        "Fewer predictions than expected received an outcome within the join TTL; performance alerts are "
        "inhibited while this fires.",
    ),
    AlertKind.attribution_drift: (
        "Model {{ $labels.model }}: what drives its predictions changed" + _SLICE,
        "The features' shares of the model's attributions (e.g. SHAP values) moved away from the reference: the "
        "model now bases its predictions on other features, whether or not its inputs changed.",
    ),
}


def alert_name(kind: AlertKind | str) -> str:
    """The Prometheus alert name of a kind: `Driftline` and the kind in CamelCase.

    >>> alert_name("feature_drift")
    'DriftlineFeatureDrift'
    """
    return "Driftline" + "".join(part.capitalize() for part in str(kind).split("_"))


def runbook_url(base: str, page: str) -> str:
    """The runbook link, built as the core builds it (`monitor.alerts.lifecycle`).

    >>> runbook_url("https://example.com/runbooks/", "feature_drift")
    'https://example.com/runbooks/feature_drift.md'
    """
    return f"{base.rstrip('/')}/{page}.md"


def kind_rule(kind: AlertKind, base: str) -> dict[str, Any]:
    summary, description = KIND_SUMMARIES[kind]
    default_severity = AlertingConfig().severity[kind].value
    return {
        "alert": alert_name(kind),
        # `max without (instance)`: the alert keeps its identity when the model moves to another
        # worker (rebalance), and two workers briefly exporting the same alert make one alert.
        "expr": f'max without (instance) (driftline_alert_active{{kind="{kind.value}"}}) == 1',
        "keep_firing_for": KIND_KEEP_FIRING_FOR,
        "labels": {
            # The worker exports the severity configured in `alerting.severity`; this is its default.
            "severity": "{{ with $labels.severity }}{{ . }}{{ else }}" + default_severity + "{{ end }}",
            **PIPELINE_LABEL,
        },
        "annotations": {
            "summary": summary,
            "description": description + " Evidence: the latest alert of this model and kind on the alerts topic; "
            "`driftline explain ALERT_ID` draws it (runbooks/README.md).",
            "runbook_url": runbook_url(base, kind.value),
        },
    }


def pipeline_rules(base: str) -> list[dict[str, Any]]:
    def rule(name: str, expr: str, for_: str, severity: str, summary: str, description: str) -> dict[str, Any]:
        return {
            "alert": name,
            "expr": expr,
            "for": for_,
            "labels": {"severity": severity, **PIPELINE_LABEL},
            "annotations": {
                "summary": summary,
                "description": description,
                "runbook_url": runbook_url(base, name),
            },
        }

    return [
        rule(
            "DriftlineWorkerDown",
            'up{job="driftline"} == 0 or absent(up{job="driftline"})',
            "2m",
            "critical",
            "Driftline worker {{ with $labels.instance }}{{ . }}{{ else }}(none discovered){{ end }} is down",
            "Prometheus cannot scrape a Driftline worker (or finds none): its models are not monitored until "
            "Kafka moves their partitions to another worker. Every other Driftline alert is inhibited meanwhile.",
        ),
        rule(
            "DriftlineConsumerLagGrowing",
            "sum by (job, topic) (driftline_consumer_lag_messages) > 1000\n"
            "and\n"
            "deriv(sum by (job, topic) (driftline_consumer_lag_messages)[15m:1m]) > 0\n",
            "15m",
            "warning",
            "Driftline is {{ $value | humanize }} messages behind on topic {{ $labels.topic }} and falling further",
            "The workers consume slower than the topic grows: alerts come late, and late events may be dropped "
            "from closed windows.",
        ),
        rule(
            "DriftlineDeadLetterRateHigh",
            "sum by (job) (rate(driftline_invalid_events_total[5m]))\n"
            "/\n"
            "(\n"
            "  sum by (job) (rate(driftline_invalid_events_total[5m]))\n"
            "  +\n"
            "  (sum by (job) (rate(driftline_events_total[5m])) or sum by (job) (rate(driftline_invalid_events_total[5m])) * 0)\n"  # noqa: E501
            ")\n"
            "> 0.05\n",
            "10m",
            "warning",
            "{{ $value | humanizePercentage }} of the events reaching Driftline are refused and dead-lettered",
            "More than 5% of input events fail validation: a producer sends a broken schema or values, and the "
            "monitor sees only the valid rest.",
        ),
        rule(
            "DriftlineUnreadableRecords",
            'sum by (job, source) (increase(driftline_invalid_events_total{reason="unreadable"}[15m])) > 0\n',
            "0m",
            "warning",
            "Driftline skipped Kafka records of {{ $labels.source }} that it could not read",
            "Records failed the Kafka client's CRC check (corrupt on the broker or written by a faulty "
            "producer). The worker skipped them and dead-lettered where each was, without their bytes, instead "
            "of stopping on them.",
        ),
        rule(
            "DriftlineModelFailing",
            "sum by (job, model) (increase(driftline_model_errors_total[10m])) > 0\n",
            "1m",
            "critical",
            "Model {{ $labels.model }}: its monitor fails on its events",
            "Driftline's core raised on this model's events (a bug; the worker logs the traceback). The model "
            "resumes from its last saved state without the events since its last checkpoint, so its drift and "
            "performance alerts may not fire.",
        ),
        rule(
            "DriftlineStateTooLarge",
            "sum by (job, table) (increase(driftline_oversize_states_total[15m])) > 0\n",
            "5m",
            "warning",
            "A Driftline state in table {{ $labels.table }} is too large to save",
            "A worker cannot write a state record (a model's monitor, or a join partition's pending predictions) "
            "because it is over the largest record it writes. It keeps running, but saves no input positions "
            "until the state fits: a restart would replay everything since the last save.",
        ),
        rule(
            "DriftlineOutcomesStopped",
            'sum by (job, model) (rate(driftline_events_total{type="outcome"}[30m])) == 0\n'
            "and\n"
            'sum by (job, model) (rate(driftline_events_total{type="prediction"}[30m])) > 0\n',
            "15m",
            "warning",
            "Model {{ $labels.model }}: no outcome (label) events for 45 minutes while predictions flow",
            "Outcomes stopped arriving for a model that had them: performance is no longer evaluated, and "
            "labels_missing and performance alerts will follow.",
        ),
        rule(
            "DriftlineLabelCoverageFalling",
            "max without (instance) (driftline_label_coverage_ratio)\n"
            "< 0.5 * max without (instance) (driftline_label_coverage_ratio offset 1d)\n",
            "30m",
            "warning",
            "Model {{ $labels.model }}: label coverage fell to {{ $value | humanizePercentage }}, "
            "under half of a day ago",
            "The share of predictions that receive their outcome halved compared with the same time yesterday. "
            "This needs no configured expected coverage (labels_missing does).",
        ),
    ]


def watchdog_rule(base: str) -> dict[str, Any]:
    return {
        "alert": "Watchdog",
        "expr": "vector(1)",
        "labels": {"severity": "none", **PIPELINE_LABEL},
        "annotations": {
            "summary": "Alerting pipeline heartbeat: always firing",
            "description": "Proves Prometheus evaluates Driftline's rules and Alertmanager delivers them. "
            "Worry when it stops arriving, not when it arrives.",
            "runbook_url": runbook_url(base, "Watchdog"),
        },
    }


def rules_document(base: str = RUNBOOK_BASE_URL) -> dict[str, Any]:
    missing = [kind.value for kind in AlertKind if kind not in KIND_SUMMARIES]
    if missing:
        raise ValueError(f"alert kinds without a summary in {Path(__file__).name}: {missing}")
    return {
        "groups": [
            {"name": "driftline-alerts", "rules": [kind_rule(kind, base) for kind in AlertKind]},
            {"name": "driftline-pipeline", "rules": pipeline_rules(base)},
            {"name": "driftline-meta", "rules": [watchdog_rule(base)]},
        ]
    }


class _Dumper(yaml.SafeDumper):
    pass


def _str_presenter(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str_presenter)

HEADER = """\
# Generated by deploy/prometheus/generate_rules.py from AlertKind and AlertingConfig; do not edit by hand.
# Change the generator and run:  .venv/bin/python deploy/prometheus/generate_rules.py
# Tested by deploy/prometheus/rules/driftline.rules.test.yml (promtool test rules) and tests/oncall/.
"""


def render(base: str = RUNBOOK_BASE_URL) -> str:
    body = yaml.dump(rules_document(base), Dumper=_Dumper, sort_keys=False, width=1000, allow_unicode=True)
    return HEADER + body


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runbook-base-url", default=RUNBOOK_BASE_URL, help="default: %(default)s")
    parser.add_argument("--out", type=Path, default=RULES_PATH)
    parser.add_argument("--check", action="store_true", help="exit 1 if the file differs instead of writing")
    args = parser.parse_args(argv)
    text = render(args.runbook_base_url)
    if args.check:
        if not args.out.is_file() or args.out.read_text() != text:
            print(f"{args.out} is stale; run {Path(__file__).name}", file=sys.stderr)
            return 1
        print(f"{args.out} is up to date")
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
