"""Reliability of the running worker and the playbook runner on the real (embedded) broker.

* SIGKILL soak: a stream of predictions and their outcomes over 8 models (every partition of
  `predictions` carries two) is published while a `driftline worker` process is killed with
  SIGKILL at seeded random points and restarted each time. At the end the model states the
  worker wrote to its changelog have counted every prediction and every outcome exactly once,
  and no record on the way ever counted more than the stream holds. The default suite runs
  20,000 events and 3 kills, with two busy loops competing for the cores;
  `pytest -m slow tests/production/test_reliability.py` runs 200,000 events and 1,000,000
  events with a kill every 20-30 s of a worker's life.
* Broker restart: the embedded broker stopped (6 s; slow: 30 s) and started again, empty, on
  the same port, under a running worker and a running playbook runner. Neither crashes. The
  runner reconnects by itself. The worker reconnects too, but cannot count the new events:
  see `test_worker_and_playbook_runner_survive_a_broker_restart` for what is recovered and how.

Numbers measured on the 2-core development machine are in `tests/production/README.md`.
"""

from __future__ import annotations

import json
import re
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from kafka import KafkaConsumer
from reliability_support import SoakResult, Stream, StreamPublisher, join_summary, soak, spread_models
from worker_support import cpu_contention, log_tail, metrics_port, start_worker, stop_worker

from monitor.contracts.config import KafkaConfig, MonitorConfig
from monitor.contracts.retrain import Outcome, PlaybookDecision
from monitor.kafka.broker import EmbeddedBroker
from monitor.kafka.settings import consumer_settings
from monitor.kafka.topics import POSITIONS_TABLE, changelog_topic, ensure_topics
from monitor.playbooks.runner import PlaybookRunner
from monitor.stream.records import partition_for

pytestmark = pytest.mark.broker


@dataclass(frozen=True)
class SoakSize:
    events: int
    kills: int | None
    """None: kill until the whole stream is published."""
    kill_after: tuple[float, float]
    """A worker lives this long (seeded uniform, seconds) after its first state write."""
    rate: float
    """Events/s offered: under what a worker sustains between kills on 2 cores (~1,200/s)."""
    finish_timeout: float
    busy_loops: int
    """Processes competing for the cores throughout (`cpu_contention`)."""


SIZES = [
    pytest.param(SoakSize(20_000, 3, (2.0, 4.0), 1000, 90, 2), id="20k-events-3-kills"),
    pytest.param(SoakSize(200_000, None, (20.0, 30.0), 800, 300, 0), id="200k-events", marks=pytest.mark.slow),
    pytest.param(SoakSize(1_000_000, None, (20.0, 30.0), 700, 900, 0), id="1M-events", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("size", SIZES)
def test_sigkilled_worker_counts_every_prediction_and_outcome_exactly_once(tmp_path, kafka_config, size):
    """Kills land while the worker processes (each worker first writes state, then lives a
    seeded 2-4 s, or 20-30 s in the slow runs); in the short run two busy loops compete for the
    cores, the load under which the SIGKILL losses showed (see `cpu_contention`). What survives a
    kill is the changelog: the restarted worker restores each model's state and the input
    positions it covers, resumes each input at the position it saved (not faust's committed
    offset), and skips what its state already holds."""
    models = spread_models(8, kafka_config.partitions)
    assert {partition_for(m, kafka_config.partitions) for m in models} == set(range(kafka_config.partitions))
    stream = Stream(size.events // 2, tuple(models), seed=11)
    ensure_topics(kafka_config)
    with cpu_contention(size.busy_loops):
        result, counts = soak(
            tmp_path,
            kafka_config,
            stream,
            kills=size.kills,
            kill_after=size.kill_after,
            rate=size.rate,
            seed=size.events,
            finish_timeout=size.finish_timeout,
        )
    try:
        print(result.summary(stream))
        expected = stream.expected()
        found = {m: (c.predictions, c.outcomes) for m, c in sorted(counts.models.items())}
        highest = {m: (c.max_predictions, c.max_outcomes) for m, c in sorted(counts.models.items())}

        def context() -> str:  # read back from the topics only when an assertion fails
            return _context(result, stream, counts.uncounted_steps(kafka_config), join_summary(kafka_config))

        assert found == {m: (n, n) for m, n in sorted(expected.items())}, f"counted {found}\n{context()}"
        assert highest == found, f"a record counted more than the stream holds: {highest}\n{context()}"
        assert size.kills is None or len(result.kills) == size.kills
        assert len(result.kills) >= 3, context()
    finally:
        counts.close()


def _context(result: SoakResult, stream: Stream, problems: list[str], joins: list[str]) -> str:
    return "\n".join(
        [
            result.summary(stream),
            f"counted (predictions, outcomes) when each kill landed: {result.counted_at_kill}",
            "steps that counted other than what they covered:",
            *(problems or ["(none)"]),
            "join stores:",
            *joins,
        ]
    )


# -- broker restart ------------------------------------------------------------------------------

RESTART_SETTINGS = {"reference": {"warmup_events": 300}, "window": {"size_events": 200}}


def _predictions_counted(port: int) -> int:
    """`driftline_events_total{type="prediction"}` summed over models, from the worker's /metrics."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    pattern = r'^driftline_events_total\{[^}]*type="prediction"[^}]*\} ([0-9.e+]+)$'
    return int(sum(float(value) for value in re.findall(pattern, text, re.M)))


def _wait(condition: Callable[[], bool], seconds: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out after {seconds} s waiting for {what}\n{log_tail(log)}")


def _publish(kafka: KafkaConfig, stream: Stream, predictions_only: bool = True) -> None:
    publisher = StreamPublisher(kafka, [event for event in stream.encode() if not (predictions_only and event[0])])
    publisher.run()
    assert publisher.error is None and publisher.failed == 0, (publisher.error, publisher.failed)


def _drifting(kafka: KafkaConfig, model: str, count: int, shift_from: int) -> None:
    """`count` predictions of `model` whose feature `x` shifts by +3 from `shift_from` on."""
    stream = Stream(count, (model,), seed=5)
    events = []
    for is_outcome, key, value in stream.encode():
        if is_outcome:
            continue
        index = int(re.search(rb'"prediction_id":"p(\d+)"', value).group(1))
        if index >= shift_from:
            value = re.sub(rb'"x":(-?[0-9.e+-]+)', lambda m: b'"x":%r' % (float(m.group(1)) + 3.0), value)
            value = value.replace(b"'", b"")
        events.append((False, key, value))
    publisher = StreamPublisher(kafka, events)
    publisher.run()
    assert publisher.error is None and publisher.failed == 0


def _saved_prediction_positions(kafka: KafkaConfig) -> int:
    """The next offsets of the predictions partitions in the worker's last saved positions, summed."""
    consumer = KafkaConsumer(
        changelog_topic(kafka, POSITIONS_TABLE),
        **consumer_settings(kafka, group_id=None, auto_offset_reset="earliest", consumer_timeout_ms=500),
    )
    try:
        saved = {json.loads(record.key): int(record.value) for record in consumer}
    finally:
        consumer.close()
    return sum(offset for key, offset in saved.items() if key.startswith(f"{kafka.topics.predictions}:"))


class UncountedAfterAnEmptyRestart(AssertionError):
    """The known failure of the broker-restart test: the running worker did not count the
    predictions published after the broker came back empty."""


@pytest.mark.parametrize(
    "down_seconds", [pytest.param(6.0, id="6s-down"), pytest.param(30.0, id="30s-down", marks=pytest.mark.slow)]
)
@pytest.mark.xfail(
    raises=UncountedAfterAnEmptyRestart,
    strict=False,
    reason="known limitation: a running worker whose broker came back empty resumes past the end of the "
    "recreated topics and counts nothing new until their offsets pass its saved positions; restarting "
    "the worker recovers (see the docstring). Only this failure is expected: any other fails the test.",
)
def test_worker_and_playbook_runner_survive_a_broker_restart(tmp_path, down_seconds):
    """What is recovered, and how.

    The embedded broker keeps nothing across a restart: topics, messages, committed offsets and
    the worker's changelogs are gone; the test recreates the topics (`ensure_topics`) as an
    operator would. On Apache Kafka the same restart loses nothing, so none of the following
    arises there: the worker resumes from its saved positions, its state is where it was.

    * The playbook runner's kafka-python clients reconnect by themselves (or its loop rebuilds
      them); its consumer group starts over (`start_from: earliest`) on the new, empty alerts
      topic, and its idempotency keys live in its audit file, which survives. It acts on the
      first alert raised after the restart: it starts the retrain action. (Not asserted: that
      the action then succeeds. In one 6 s run the runner's producer, built before the
      restart, timed out publishing the retrain request three times, 10 s each, and the
      action was audited as failed; see tests/production/README.md.)
    * The worker process stays alive and reconnects (aiokafka logs connection errors, faust
      rejoins the group and "recovers" its tables from the empty changelogs), but it keeps the
      model states and input positions it had in memory. It resumes each input at its saved
      position (`monitor.stream.positions`), past the end of the recreated topic, and the
      embedded broker answers a fetch there with nothing (Kafka would answer "offset out of
      range", and the consumer would go back to the start, where the worker drops the messages
      below its positions as taken already). Either way the new predictions, offsets 0..99 per
      partition, are not counted: `driftline_events_total` does not grow, and the worker saves
      nothing for them. It is not lost data on Kafka, but here the new events go uncounted
      until the offsets pass the old positions. That is a known failure, not the behaviour
      wanted: the test expects the running worker to count them, and fails with
      `UncountedAfterAnEmptyRestart` (xfail), after checking everything else, when it does
      not. What an operator does meanwhile: restart the worker. A
      new process starts from the (empty) changelogs with fresh states (the warm-up starts
      again) and no saved positions or committed offsets, so it reads the new topics from their
      start: it counts the events published since the broker restart and every one after; its
      alerts reach the runner.
    """
    broker = EmbeddedBroker().start()
    worker = runner_thread = stop = None
    try:
        group = f"restart-{int(down_seconds)}"
        kafka = KafkaConfig(bootstrap_servers=broker.bootstrap_servers, profile="embedded", consumer_group=group)
        ensure_topics(kafka)
        decisions: list[PlaybookDecision] = []
        config = MonitorConfig.model_validate(
            {
                "kafka": kafka.model_dump(),
                "playbooks": {
                    "rules": [
                        {"name": "retrain", "kinds": ["feature_drift"], "dry_run": False, "action": {"type": "retrain"}}
                    ],
                    "start_from": "earliest",
                    "audit_file": str(tmp_path / "audit.jsonl"),
                    "consumer_group": f"{group}.playbooks",
                    "rate_limit": {"actions": 100},
                },
            }
        )
        runner = PlaybookRunner(config, on_decision=decisions.append)
        runner_thread, stop = runner.start()
        worker = start_worker(tmp_path, kafka, RESTART_SETTINGS, name="worker")
        log = tmp_path / "worker.log"
        port = metrics_port(log)
        models = tuple(spread_models(8, kafka.partitions))
        _publish(kafka, Stream(600, models, seed=1))  # 150 per partition: offsets 0..149
        _wait(lambda: _predictions_counted(port) == 600, 45, "600 predictions counted", log)
        # Before the broker stops, the worker's checkpoint holds them: a checkpoint write pending
        # across the empty restart makes the embedded broker create its changelog from the produce
        # request, with a record no fetch returns, and the worker then hangs in recovery
        # (tests/production/README.md). Kafka keeps its topics, so this does not arise there.
        _wait(lambda: _saved_prediction_positions(kafka) == 600, 30, "the positions of the 600 saved", log)
        _wait(runner.ready.is_set, 30, "the runner's partitions", log)

        restart_mark = len(log.read_text(errors="replace"))
        broker.stop()
        time.sleep(down_seconds)
        assert worker.poll() is None, f"worker exited while the broker was down\n{log_tail(log)}"
        assert runner_thread.is_alive()
        broker = EmbeddedBroker(port=broker.port).start()
        ensure_topics(kafka)

        _wait(
            lambda: "Worker ready" in log.read_text(errors="replace")[restart_mark:],
            60 + down_seconds,
            "the worker to rejoin its group",
            log,
        )
        # 400 new predictions, offsets 0..99 per partition: below where the worker resumes (150).
        _publish(kafka, Stream(400, models, seed=2))
        # Wanted: the running worker counts them. It reads a batch within a second and its timer
        # ticks every 2 s, so 10 s is ample; today it never does (the known failure, raised at the end).
        try:
            _wait(lambda: _predictions_counted(port) == 1000, 10, "the running worker to count the 400 new", log)
            counted_live = None
        except AssertionError:
            counted_live = _predictions_counted(port)
        assert counted_live in (None, 600), f"{counted_live} counted: neither all the new events nor none of them"
        assert worker.poll() is None, log_tail(log)
        assert "Traceback" not in log.read_text(errors="replace"), log_tail(log, 6000)

        # The operator restarts the worker: it counts the 400 and what is published from now on,
        # and its alerts reach the runner, which reconnected by itself.
        stop_worker(worker)
        worker = start_worker(tmp_path, kafka, RESTART_SETTINGS, name="worker-restarted")
        log = tmp_path / "worker-restarted.log"
        # Its group join can take two rounds on the embedded broker (5 s each, and a SyncGroup that
        # went unanswered for 9 s in one run) before faust starts and it logs its metrics port.
        port = metrics_port(log, timeout=60)
        _drifting(kafka, "drifting-model", 1200, shift_from=600)
        _wait(lambda: _predictions_counted(port) >= 1600, 45, "the restarted worker to count 400 + 1200", log)

        def attempted() -> list[PlaybookDecision]:
            return [d for d in decisions if d.model_id == "drifting-model" and d.outcome is Outcome.started]

        _wait(lambda: bool(attempted()), 60 + down_seconds, "the runner to act on the restarted worker's alert", log)
        assert attempted()[0].kind.value == "feature_drift"
        assert runner_thread.is_alive() and worker.poll() is None
        assert _predictions_counted(port) == 1600
    finally:
        if stop is not None:
            stop.set()
            runner_thread.join(timeout=40)
        if worker is not None:
            stop_worker(worker)
        broker.stop()
    if counted_live is not None:  # after everything else passed: the known failure, and only it, is xfail
        raise UncountedAfterAnEmptyRestart(
            f"the running worker counted {counted_live - 600} of the 400 predictions published after the restart"
        )
