"""Adapters: sources and sinks. Thin by design; the decisions live in the core."""
