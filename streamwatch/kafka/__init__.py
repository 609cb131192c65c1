"""Kafka adapters: clients and their settings, topics, record formats, the state changelog, the models topic.

Thin by design: the daemon (`streamwatch.service.kafka_daemon`) owns the loop; everything that knows
kafka-python lives here, so the core never imports it.
"""
