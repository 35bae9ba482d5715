"""One way to talk to a backend: a client built once from `backends.<side>` settings (base URL,
credentials, header rewrites, timeouts, pool), used by the data plane, the shadow process, the worker's
HTTP applier and REST verification alike, so that all of them send the same request the same way."""

from backends.client import Answer, BackendClient
from backends.errors import BackendFailure

__all__ = ["Answer", "BackendClient", "BackendFailure"]
