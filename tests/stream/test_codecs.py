"""Services publish with any client and any codec: a worker counts predictions that librdkafka
(confluent-kafka) compressed with gzip, snappy, lz4 and zstd.

Without `cramjam`, aiokafka reads only gzip: a worker crashed on the first lz4, snappy or zstd
batch, and crashed again on it after every restart.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import pytest
from confluent_kafka import Producer
from worker_support import log_tail, metric, start_worker, stop_worker

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
