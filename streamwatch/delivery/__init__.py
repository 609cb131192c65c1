"""Getting events to receivers that may be slow, down or gone: the persistent outbox, retry timing, the
HTTP seam and its errors, and the counters an operator watches. The receivers' own formats live in the sinks
(`streamwatch.io.webhook`, `.alertmanager`, `.influx`)."""
