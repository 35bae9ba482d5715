"""What became of one request on the data plane, as one immutable record: made once, by the executor for
what it served (or the answer it made itself after deciding), by the data plane for a request it refused
before any decision. Metrics, the health history, spans and the access log all read this record, once,
when the request ends (`proxy.dataplane.request_telemetry`)."""

from __future__ import annotations

from typing import NamedTuple

from proxy.dataplane.errors import ProxyError

REJECTED = "rejected"  # the proxy answered by itself (not ready, bad request, buffer full, ...)
PROXY = "proxy"  # who served a request no backend answered, and the side of one never sent


class RequestOutcome(NamedTuple):
    # A named tuple rather than a frozen dataclass: made for every request, and a frozen dataclass's
    # `__init__` costs several times a tuple's.
    tenant: str | None = None
    phase: str = "unknown"  # a routing.phases.Phase once the tenant's phase was read
    kind: str = "unknown"  # a routing.classify.RequestKind once the request was classified
    decision: str = REJECTED  # a routing.decide.Action value once the executor resolved one
    serving: str = PROXY  # the side the plan sent the request to first (the health series' side)
    served_by: str = PROXY  # the side that answered, or the backend that failed for a 502/504
    status: int = 0
    intent_queued: bool = False  # a mirrored write's intent was appended to the buffer
    backend_s: tuple[tuple[str, float], ...] = ()  # time to each backend's response head, by role
    # The answer cutover makes itself (a backend failure, an unsafe fallback, the buffer refusing),
    # which the data plane sends; None when a backend's answer was relayed.
    refusal: ProxyError | None = None


class ResponseAborted(ConnectionAbortedError):
    """A backend failed mid-body, after the status line went out: the server cuts the connection, and
    `outcome` is what was served until then."""

    def __init__(self, detail: str, outcome: RequestOutcome) -> None:
        super().__init__(detail)
        self.outcome = outcome


def served_by(error: ProxyError) -> str:
    """Who an error answer names in `X-Cutover-Served-By` (and in metrics): the backend that failed for
    a 502/504, else the proxy."""
    return getattr(error, "backend", PROXY)
