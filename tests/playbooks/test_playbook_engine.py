"""The decision logic without Kafka: matching, guardrails, idempotency, retries, restart."""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path

import pytest
from playbook_support import T0, FakeClock, LoopbackServer, RecordingExecutor, make_alert
from pydantic import ValidationError

from monitor.contracts.alert import AlertKind
from monitor.contracts.config import MonitorConfig, PlaybookHttp, PlaybookRule, PlaybooksConfig, TopicsConfig
from monitor.contracts.retrain import Approval, Outcome, PlaybookDecision, RetrainRequest
from monitor.playbooks.actions import ActionError, ActionExecutor, build_plan
from monitor.playbooks.audit import AuditTrail
from monitor.playbooks.engine import PlaybookEngine
from monitor.playbooks.rules import rule_matches

RETRAIN = {"name": "retrain-drift", "kinds": ["feature_drift"], "dry_run": False, "action": {"type": "retrain"}}
ROLLBACK = {
    "name": "rollback-perf",
    "kinds": ["performance_degradation"],
    "dry_run": False,
    "action": {"type": "rollback", "http": {"url": "http://models.internal/v1/{model_id}/rollback"}},
}


def engine_for(tmp_path: Path, *rules: dict, executor=None, clock=None, **settings) -> PlaybookEngine:
    config = PlaybooksConfig.model_validate({"rules": list(rules), **settings})
    clock = clock or FakeClock()
    return PlaybookEngine(
        config,
        TopicsConfig(),
        executor if executor is not None else RecordingExecutor(),
        AuditTrail(tmp_path / "audit.jsonl"),
        clock=clock,
        sleep=clock.sleep,
    )


def outcomes(decisions: list[PlaybookDecision]) -> list[tuple[str, str]]:
    return [(d.outcome.value, d.reason) for d in decisions]


def audit_lines(tmp_path: Path) -> list[PlaybookDecision]:
    return AuditTrail(tmp_path / "audit.jsonl").read()


# --- matching -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "alert", "expected"),
    [
        ({"kinds": ["feature_drift"]}, make_alert(), True),
        ({"kinds": ["prediction_drift"]}, make_alert(), False),
        ({"kinds": ["feature_drift"], "severities": ["critical"]}, make_alert(), False),
        ({"kinds": ["feature_drift"], "models": ["fraud"]}, make_alert(), True),
        ({"kinds": ["feature_drift"], "models": ["fraud-*"]}, make_alert(model_id="fraud-eu"), True),
        ({"kinds": ["feature_drift"], "models": ["fraud-*"]}, make_alert(model_id="fraud"), False),
        ({"kinds": ["feature_drift"], "models": ["churn", "fraud?"]}, make_alert(model_id="fraud2"), True),
        ({"kinds": ["feature_drift"], "enabled": False}, make_alert(), False),
    ],
)
def test_rule_matches_kind_severity_and_model(rule, alert, expected):
    rule = PlaybookRule.model_validate({"name": "r", "action": {"type": "retrain"}, **rule})
    assert rule_matches(rule, alert) is expected


def test_config_refuses_unsafe_targets_and_ambiguous_rules():
    for url in ("http://{model_id}.internal/x", "http://host{model_id}/x", "https://h/{model_id!r}", "file:///x"):
        with pytest.raises(ValidationError):
            PlaybookHttp(url=url)
    with pytest.raises(ValidationError, match="exactly one of"):
        PlaybookRule.model_validate({"name": "r", "kinds": ["feature_drift"], "action": {"type": "rollback"}})
    with pytest.raises(ValidationError, match="program has no placeholder"):
        PlaybookRule.model_validate(
            {"name": "r", "kinds": ["feature_drift"], "action": {"type": "rollback", "command": ["{model_id}"]}}
        )
    with pytest.raises(ValidationError, match="unique"):
        PlaybooksConfig.model_validate({"rules": [RETRAIN, RETRAIN]})
    assert MonitorConfig().playbooks.rules == []  # safe default: no rules, nothing happens


def test_min_firing_duration_is_judged_on_the_alerts_own_timestamps(tmp_path):
    executor = RecordingExecutor()
    engine = engine_for(tmp_path, {**RETRAIN, "min_firing_seconds": 1800}, executor=executor)
    first = engine.handle_alert(make_alert(firing_for=0))
    assert outcomes(first) == [("skipped", "firing for 0 s, rule needs 1800 s")]
    repeat = engine.handle_alert(make_alert(firing_for=3600))  # the repeat carries newer evidence
    assert [d.outcome for d in repeat] == [Outcome.started, Outcome.acted]
    assert len(executor.plans) == 1


# --- dry run and kill switches --------------------------------------------------------------


def test_rules_are_dry_run_by_default_and_record_the_exact_plan(tmp_path):
    executor = RecordingExecutor()
    engine = engine_for(tmp_path, {**RETRAIN, "dry_run": True}, executor=executor)
    [decision] = engine.handle_alert(make_alert())
    assert decision.outcome is Outcome.dry_run and executor.plans == []
    assert decision.inputs["topic"] == "retrain-requests"
    assert decision.inputs["value"]["alert"]["evidence"]["score"] == 0.31
    assert PlaybookRule.model_validate({"name": "r", "kinds": ["feature_drift"], "action": {"type": "retrain"}}).dry_run


def test_kill_switch_in_config_and_as_a_file(tmp_path):
    executor = RecordingExecutor()
    engine = engine_for(tmp_path, RETRAIN, executor=executor, dry_run=True)
    assert outcomes(engine.handle_alert(make_alert())) == [("dry_run", "kill switch: playbooks.dry_run is set")]
    switch = tmp_path / "stop"
    engine = engine_for(tmp_path / "b", RETRAIN, executor=executor, kill_switch_file=switch)
    switch.touch()
    assert engine.handle_alert(make_alert(model_id="a"))[0].reason == f"kill switch: {switch} exists"
    switch.unlink()  # no restart needed
    assert [d.outcome for d in engine.handle_alert(make_alert(model_id="b"))] == [Outcome.started, Outcome.acted]
    assert len(executor.plans) == 1


# --- idempotency, cooldown, rate limit ------------------------------------------------------


def test_a_redelivered_alert_does_not_act_twice_even_after_a_restart(tmp_path):
    executor = RecordingExecutor()
    clock = FakeClock()
    engine = engine_for(tmp_path, {**RETRAIN, "cooldown_seconds": 0}, executor=executor, clock=clock)
    alert = make_alert()
    engine.handle_alert(alert)
    assert outcomes(engine.handle_alert(alert)) == [("skipped", "already handled for this firing period")]
    clock.advance(10 * 86400)
    restarted = engine_for(tmp_path, {**RETRAIN, "cooldown_seconds": 0}, executor=executor, clock=clock)
    assert outcomes(restarted.handle_alert(alert)) == [("skipped", "already handled for this firing period")]
    assert len(executor.plans) == 1
    # a new firing period of the same fingerprint is a new alert
    later = make_alert(starts_at=T0 + timedelta(days=2))
    assert [d.outcome for d in restarted.handle_alert(later)] == [Outcome.started, Outcome.acted]


def test_a_crash_between_start_and_result_counts_as_done(tmp_path):
    engine = engine_for(tmp_path, RETRAIN)
    alert = make_alert()
    [started, _] = engine.handle_alert(alert)
    lines = (tmp_path / "audit.jsonl").read_bytes().splitlines()
    (tmp_path / "audit.jsonl").write_bytes(b"\n".join(lines[:-1]) + b'\n{"torn')  # lost the result, torn line
    restarted = engine_for(tmp_path, RETRAIN)
    assert restarted.audit.unreadable_lines == 1
    assert outcomes(restarted.handle_alert(alert)) == [("skipped", "already handled for this firing period")]


def test_cooldown_is_per_rule_and_model(tmp_path):
    clock = FakeClock()
    engine = engine_for(tmp_path, {**RETRAIN, "cooldown_seconds": 600}, clock=clock)
    engine.handle_alert(make_alert(feature="amount"))
    [skipped] = engine.handle_alert(make_alert(feature="age"))
    assert skipped.reason == "cooldown: 600 s left for model fraud"
    assert engine.handle_alert(make_alert(model_id="churn"))[-1].outcome is Outcome.acted
    clock.advance(601)
    assert engine.handle_alert(make_alert(feature="age"))[-1].outcome is Outcome.acted


def test_a_storm_of_1000_alerts_acts_no_more_than_the_rate_limit(tmp_path):
    executor = RecordingExecutor()
    clock = FakeClock()
    engine = engine_for(tmp_path, RETRAIN, executor=executor, clock=clock, rate_limit={"actions": 5, "per_seconds": 60})
    for i in range(1000):
        engine.handle_alert(make_alert(model_id=f"m{i}"))
        clock.advance(0.06)  # 1000 alerts in 60 s
    # 5 at once, then one token every 12 s (at 12, 24, 36 and 48 s; the last alert comes at 59.94 s)
    assert len(executor.plans) == 9
    assert engine.outcomes["acted"] == 9 and engine.outcomes["skipped"] == 991
    assert sum(d.reason.startswith("rate limited") for d in audit_lines(tmp_path)) == 991


# --- rollback guardrails --------------------------------------------------------------------


def test_rollback_waits_for_approval_then_acts_exactly_once(tmp_path):
    executor = RecordingExecutor()
    engine = engine_for(tmp_path, ROLLBACK, executor=executor)
    alert = make_alert("performance_degradation", feature=None)
    [waiting] = engine.handle_alert(alert)
    assert waiting.outcome is Outcome.awaiting_approval and executor.plans == []
    approval = Approval(fingerprint=alert.fingerprint, approved_by="alice").model_dump_json().encode()
    decisions = engine.handle_approval_bytes(approval)
    assert [d.outcome for d in decisions] == [Outcome.approval_recorded, Outcome.started, Outcome.acted]
    assert decisions[-1].inputs["approved_by"] == "alice"
    engine.handle_alert(alert)  # redelivered
    engine.handle_approval_bytes(approval)  # approved twice
    assert len(executor.plans) == 1
    assert executor.plans[0].url == "http://models.internal/v1/fraud/rollback"
    assert executor.plans[0].payload["to_version"] == "previous"


def test_approval_before_the_alert_for_another_period_or_expired(tmp_path):
    clock = FakeClock()
    executor = RecordingExecutor()
    engine = engine_for(tmp_path, ROLLBACK, executor=executor, clock=clock, approval_ttl_seconds=3600)
    alert = make_alert("performance_degradation", feature=None)
    other_period = Approval(fingerprint=alert.fingerprint, alert_id="x-1", approved_by="bob")
    engine.handle_approval_bytes(other_period.model_dump_json().encode())
    assert engine.handle_alert(alert)[0].outcome is Outcome.awaiting_approval
    engine.handle_alert(make_alert("performance_degradation", feature=None, status="resolved"))
    assert engine.state.pending == {}  # a resolved alert needs no rollback any more
    engine.handle_approval_bytes(
        Approval(fingerprint=alert.fingerprint, approved_by="carol").model_dump_json().encode()
    )
    clock.advance(3601)  # expired
    assert engine.handle_alert(alert)[0].outcome is Outcome.awaiting_approval
    engine.handle_approval_bytes(Approval(fingerprint=alert.fingerprint, approved_by="dan").model_dump_json().encode())
    assert len(executor.plans) == 1


def test_at_most_one_rollback_per_model_per_period_and_approval_none(tmp_path):
    clock = FakeClock()
    executor = RecordingExecutor()
    rule = {**ROLLBACK, "cooldown_seconds": 0, "action": {**ROLLBACK["action"], "approval": "none"}}
    engine = engine_for(tmp_path, rule, executor=executor, clock=clock)
    assert engine.handle_alert(make_alert("performance_degradation", feature=None))[-1].outcome is Outcome.acted
    later = make_alert("performance_degradation", feature=None, starts_at=T0 + timedelta(hours=1))
    assert engine.handle_alert(later)[0].reason.startswith("rolled back recently")
    clock.advance(86401)
    assert engine.handle_alert(later)[-1].outcome is Outcome.acted
    assert len(executor.plans) == 2


def test_pending_rollbacks_and_approvals_survive_a_restart(tmp_path):
    executor = RecordingExecutor()
    alert = make_alert("performance_degradation", feature=None)
    engine_for(tmp_path, ROLLBACK, executor=executor).handle_alert(alert)
    restarted = engine_for(tmp_path, ROLLBACK, executor=executor)
    approval = Approval(fingerprint=alert.fingerprint, approved_by="alice").model_dump_json().encode()
    assert restarted.handle_approval_bytes(approval)[-1].outcome is Outcome.acted
    again = engine_for(tmp_path, ROLLBACK, executor=executor)
    other = make_alert("performance_degradation", feature=None, starts_at=T0 + timedelta(days=3))
    assert again.state.approval_for(other, again.clock()) is not None  # the approval was restored
    assert len(executor.plans) == 1


# --- resolved, muted, silenced, invalid -----------------------------------------------------


def test_resolved_muted_and_silenced_alerts_do_nothing(tmp_path):
    executor = RecordingExecutor()
    silence = {"models": ["churn*"], "ends_at": (T0 + timedelta(hours=1)).isoformat(), "comment": "migration, bob"}
    engine = engine_for(tmp_path, {**RETRAIN, "cooldown_seconds": 0}, executor=executor, silences=[silence])
    assert outcomes(engine.handle_alert(make_alert(status="resolved", firing_for=60))) == [
        ("skipped", "resolved alert")
    ]
    cause = make_alert("data_quality", feature="amount")
    engine.handle_alert(cause)
    assert engine.handle_alert(make_alert())[0].reason == f"muted by firing alert {cause.fingerprint}"
    assert engine.handle_alert(make_alert(feature="age"))[-1].outcome is Outcome.acted  # other feature
    assert engine.handle_alert(make_alert(model_id="churn-b"))[0].reason.startswith("silenced until")
    # muting survives a restart, and ends when the cause resolves
    restarted = engine_for(tmp_path, {**RETRAIN, "cooldown_seconds": 0}, executor=executor)
    assert restarted.handle_alert(make_alert())[0].reason.startswith("muted by")
    restarted.handle_alert(make_alert("data_quality", feature="amount", status="resolved"))
    assert restarted.handle_alert(make_alert())[-1].outcome is Outcome.acted
    assert len(executor.plans) == 2


def test_invalid_alerts_are_audited_and_the_engine_goes_on(tmp_path):
    engine = engine_for(tmp_path, RETRAIN)
    for raw in (b"\xff\xfe", b"[]", b'{"kind": "feature_drift"}', b'{"kind": "unknown", "alert_id": "x"}'):
        [decision] = engine.handle_alert_bytes(raw, source="alerts/0/7")
        assert decision.outcome is Outcome.skipped and decision.reason.startswith("invalid alert: ")
    assert engine.handle_alert_bytes(make_alert().model_dump_json().encode())[-1].outcome is Outcome.acted
    assert [d.source for d in audit_lines(tmp_path)][:4] == ["alerts/0/7"] * 4


def test_no_matching_rule_is_audited(tmp_path):
    engine = engine_for(tmp_path)
    assert outcomes(engine.handle_alert(make_alert())) == [("skipped", "no matching rule")]


# --- retries --------------------------------------------------------------------------------


def test_failed_actions_retry_with_exponential_backoff_then_fail(tmp_path):
    clock = FakeClock()
    executor = RecordingExecutor(failures=99)
    retry = {"attempts": 4, "backoff_seconds": 1, "max_backoff_seconds": 3}
    engine = engine_for(tmp_path, RETRAIN, executor=executor, clock=clock, retry=retry)
    decisions = engine.handle_alert(make_alert())
    assert [d.outcome.value for d in decisions] == ["started", "retried", "retried", "retried", "failed"]
    assert clock.slept == [1, 2, 3]
    assert decisions[-1].error == "HTTP 503" and decisions[-1].attempt == 4
    assert outcomes(engine.handle_alert(make_alert())) == [("skipped", "already handled for this firing period")]


def test_a_retry_that_succeeds_and_an_error_that_is_not_retried(tmp_path):
    clock = FakeClock()
    engine = engine_for(tmp_path, RETRAIN, executor=RecordingExecutor(failures=1), clock=clock)
    assert [d.outcome.value for d in engine.handle_alert(make_alert())] == ["started", "retried", "acted"]
    permanent = RecordingExecutor(failures=9, error=ActionError("HTTP 400", retryable=False))
    engine = engine_for(tmp_path / "b", RETRAIN, executor=permanent)
    assert outcomes(engine.handle_alert(make_alert()))[-1] == ("failed", "not retryable")
    assert len(permanent.plans) == 1


# --- plans and the executor -----------------------------------------------------------------


def test_retrain_request_carries_the_alert_evidence_and_a_data_window():
    rule = PlaybookRule.model_validate({**RETRAIN, "action": {"type": "retrain", "training_window_seconds": 86400}})
    alert = make_alert(firing_for=600)
    plan = build_plan(rule, alert, TopicsConfig(), T0)
    request = RetrainRequest.model_validate(plan.payload)
    assert request.alert == alert and request.alert.evidence.score == 0.31
    assert request.data_window.end == alert.evidence.window_end
    assert request.data_window.end - request.data_window.start == timedelta(days=1)
    assert plan.topic == "retrain-requests" and plan.key == "fraud"


def test_command_template_refuses_alert_values_that_would_be_options(tmp_path):
    rule = {**ROLLBACK, "action": {"type": "rollback", "approval": "none", "command": ["true", "{model_id}"]}}
    engine = engine_for(tmp_path, rule)
    [decision] = engine.handle_alert(make_alert("performance_degradation", model_id="--kubeconfig=/evil"))
    assert decision.outcome is Outcome.failed and "refusing command argument" in decision.error


def test_executor_runs_commands_without_a_shell(tmp_path):
    out = tmp_path / "out"
    code = "import sys; open(sys.argv[1], 'w').write(sys.argv[2])"
    rule = PlaybookRule.model_validate(
        {
            **ROLLBACK,
            "action": {"type": "rollback", "command": [sys.executable, "-c", code, str(out), "{model_id}"]},
        }
    )
    plan = build_plan(rule, make_alert("performance_degradation", model_id="a; rm -rf /"), TopicsConfig(), T0)
    assert ActionExecutor().execute(plan)["returncode"] == 0
    assert out.read_text() == "a; rm -rf /"
    failing = PlaybookRule.model_validate({**ROLLBACK, "action": {"type": "rollback", "command": ["false"]}})
    with pytest.raises(ActionError) as error:
        ActionExecutor().execute(build_plan(failing, make_alert(), TopicsConfig(), T0))
    assert error.value.retryable


def test_executor_http_headers_from_environment_statuses_and_no_redirects():
    with LoopbackServer({"/fail": 503, "/bad": 400, "/moved": 302}) as server:

        def plan_for(path: str, **http):
            rule = PlaybookRule.model_validate(
                {
                    "name": "n",
                    "kinds": ["feature_drift"],
                    "action": {"type": "notify", "webhook": {"url": server.url + path, **http}},
                }
            )
            return build_plan(rule, make_alert(), TopicsConfig(), T0)

        executor = ActionExecutor(environ={"HOOK_TOKEN": "s3cret"})
        plan = plan_for("/ok/{model_id}", headers_from_env={"Authorization": "HOOK_TOKEN"}, headers={"X-Team": "ml"})
        assert executor.execute(plan)["status"] == 200
        [request] = server.requests_to("/ok/fraud")
        assert request["headers"]["Authorization"] == "s3cret" and request["headers"]["X-Team"] == "ml"
        assert request["body"]["alert"]["fingerprint"] == make_alert().fingerprint
        assert "s3cret" not in str(plan.describe())
        for path, retryable in (("/fail", True), ("/bad", False), ("/moved", False)):
            with pytest.raises(ActionError) as error:
                executor.execute(plan_for(path))
            assert error.value.retryable is retryable
        assert server.requests_to("/elsewhere") == []
        with pytest.raises(ActionError, match="HOOK_TOKEN"):
            ActionExecutor(environ={}).execute(plan_for("/ok", headers_from_env={"Authorization": "HOOK_TOKEN"}))
    with pytest.raises(ActionError) as error:  # server gone: connection refused
        executor.execute(plan)
    assert error.value.retryable


def test_every_decision_has_the_fields_the_audit_needs(tmp_path):
    engine = engine_for(tmp_path, RETRAIN)
    engine.handle_alert(make_alert())
    for line in audit_lines(tmp_path):
        assert line.alert_id and line.fingerprint and line.rule == "retrain-drift" and line.action == "retrain"
        assert line.time and line.kind is AlertKind.feature_drift and line.inputs


def test_the_example_configuration_loads_and_covers_every_kind(repo_root):
    from monitor.contracts.config import load_config

    config = load_config(repo_root / "examples" / "playbooks.yaml")
    assert {kind for rule in config.playbooks.rules for kind in rule.kinds} == set(AlertKind)
    rollbacks = [rule for rule in config.playbooks.rules if rule.action.type == "rollback"]
    assert rollbacks and all(rule.dry_run for rule in rollbacks)  # shipped dry
