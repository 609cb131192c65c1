"""The pure core: windows, profiles, features, thresholds, alert state and the engine.

Nothing here imports torch, Kafka, an HTTP client or reads the wall clock: time, randomness and I/O are
passed in, so the same code runs offline, in the daemon and in tests.
"""
