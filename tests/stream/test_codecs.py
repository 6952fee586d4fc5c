"""Services publish with any client and any codec: a worker counts predictions that librdkafka
(confluent-kafka) compressed with gzip, snappy, lz4 and zstd, and goes on past a record that no
client can read.

Without `cramjam`, aiokafka reads only gzip: a worker crashed on the first lz4, snappy or zstd
batch, and crashed again on it after every restart. A record batch failing its CRC check did
the same.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import pytest
from confluent_kafka import Producer
from kafka import KafkaConsumer, KafkaProducer
from kafka.record import default_records
from worker_support import log_tail, metric, start_worker, stop_worker

from monitor.contracts.deadletter import DeadLetter
from monitor.kafka.settings import consumer_settings, producer_settings
from monitor.kafka.topics import ensure_topics

pytestmark = pytest.mark.broker

CODECS = ("gzip", "snappy", "lz4", "zstd")
PER_CODEC = 300


def test_a_worker_counts_predictions_in_every_codec_librdkafka_writes(tmp_path, kafka_config):
    ensure_topics(kafka_config)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for c, codec in enumerate(CODECS):
        producer = Producer({"bootstrap.servers": kafka_config.bootstrap_servers, "compression.type": codec,
                             "linger.ms": 20, "batch.num.messages": 100})  # fmt: skip
        for i in range(PER_CODEC):
            n = c * PER_CODEC + i
            event = {"model_id": f"m-{codec}", "prediction_id": f"p{n}", "features": {"x": n % 7, "c": codec},
                     "prediction": 0.5, "timestamp": (start + timedelta(seconds=n)).isoformat()}  # fmt: skip
            producer.produce(kafka_config.topics.predictions, key=event["model_id"], value=json.dumps(event))
        assert producer.flush(15) == 0, f"{codec}: records left undelivered"
    worker = start_worker(tmp_path, kafka_config, {"reference": {"warmup_events": 100}})
    log = tmp_path / "worker.log"
    samples = {codec: f'driftline_events_total{{model="m-{codec}",type="prediction"}}' for codec in CODECS}
    try:
        deadline = time.monotonic() + 90
        counted = dict.fromkeys(CODECS, 0.0)
        while time.monotonic() < deadline and worker.poll() is None:
            counted = {codec: metric(log, sample) for codec, sample in samples.items()}
            if all(value == PER_CODEC for value in counted.values()):
                break
            time.sleep(0.5)
        assert worker.poll() is None, log_tail(log)
        assert counted == dict.fromkeys(CODECS, PER_CODEC), log_tail(log)
    finally:
        stop_worker(worker)


def _prediction(n: int) -> bytes:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    event = {"model_id": "m", "prediction_id": f"p{n}", "features": {"x": n % 7}, "prediction": 0.5,
             "timestamp": (start + timedelta(seconds=n)).isoformat()}  # fmt: skip
    return json.dumps(event).encode()


def _send_corrupt(producer: KafkaProducer, topic: str, value: bytes) -> int:
    """Send `value` in a record batch whose bytes no longer match its CRC (the broker keeps it
    as written); returns its offset."""
    build = default_records.DefaultRecordBatchBuilder.build

    def corrupt(self):
        batch = build(self)
        batch[-3] ^= 0x55  # a byte of the record's value, after the CRC was computed
        return batch

    default_records.DefaultRecordBatchBuilder.build = corrupt
    try:
        return producer.send(topic, key=b"m", value=value).get(timeout=10).offset
    finally:
        default_records.DefaultRecordBatchBuilder.build = build


def test_a_record_that_fails_its_crc_is_skipped_and_dead_lettered_and_the_worker_goes_on(tmp_path, kafka_config):
    ensure_topics(kafka_config)
    topic = kafka_config.topics.predictions
    producer = KafkaProducer(**producer_settings(kafka_config, linger_ms=0))
    for n in range(50):
        producer.send(topic, key=b"m", value=_prediction(n)).get(timeout=10)
    corrupt_at = _send_corrupt(producer, topic, _prediction(50))
    for n in range(51, 101):
        producer.send(topic, key=b"m", value=_prediction(n)).get(timeout=10)
    producer.close()
    worker = start_worker(tmp_path, kafka_config, {"reference": {"warmup_events": 20}})
    log = tmp_path / "worker.log"
    counted = 'driftline_events_total{model="m",type="prediction"}'
    unreadable = f'driftline_invalid_events_total{{reason="unreadable",source="{topic}"}}'
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and worker.poll() is None:
            if metric(log, counted) == 100 and metric(log, unreadable) == 1:
                break
            time.sleep(0.5)
        assert worker.poll() is None, log_tail(log)
        assert (metric(log, counted), metric(log, unreadable)) == (100, 1), log_tail(log)
        consumer = KafkaConsumer(
            kafka_config.topics.dead_letter,
            **consumer_settings(kafka_config, group_id=None, auto_offset_reset="earliest", consumer_timeout_ms=2000),
        )
        letters = [DeadLetter.model_validate_json(record.value) for record in consumer]
        consumer.close()
        assert [(letter.reason.value, letter.source.offset, letter.original()) for letter in letters] == [
            ("unreadable", corrupt_at, b"")
        ]
        assert "cannot be read" in letters[0].error
    finally:
        stop_worker(worker)
