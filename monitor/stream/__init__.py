"""Driftline on Kafka: the embedded broker, client settings per broker profile, topics, and the
faust worker. Import the submodules you need; this package imports nothing heavy by itself."""
