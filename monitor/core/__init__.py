"""Plain-Python monitoring state shared by detectors, evaluation and alerts; nothing here knows Kafka."""
