"""streamwatch: a streaming anomaly monitor you can trust with your pager."""

__version__ = "0.1.0"
