"""The faust worker: Kafka messages into columnar batches (`intake`), its internal records
(`records`), input positions (`positions`) and the app (`worker`). Kafka settings, topics and
the embedded broker are in `monitor.kafka`."""
