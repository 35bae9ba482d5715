"""Telemetry shared by the proxy and the buffer worker: tracing set-up and trace-context propagation,
metrics exposed as Prometheus text, and structured (JSON) logs with secrets kept out.

Depends on `config` only, so `buffer_worker` can use it without importing `proxy`.
"""
