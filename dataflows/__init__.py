"""Bytewax wiring, Kafka sources and sinks, settings, the `jukebox` CLI and the local stack.

The only layer that imports bytewax or confluent_kafka.
"""
