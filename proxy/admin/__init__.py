"""The admin API (its own port): the FastAPI app, one router per resource, token and session auth,
the route guard, its single error shape, list paging, OpenAPI and offline docs, the status page,
readiness and Prometheus metrics. Phase changes go through `proxy.control.phase_moves`, the
path the automatic rollback takes too."""
