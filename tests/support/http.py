"""httpx clients toward the tests' own servers.

Every server a test talks to is plain HTTP on loopback, yet httpx builds an SSL context for each client it
makes, loading the CA bundle (some 30 ms of CPU, hundreds of times a run): these clients share one."""

from __future__ import annotations

import ssl
from typing import Any

import httpx

_SHARED_TLS = ssl.create_default_context()  # never used for a handshake: the URLs are http://


def loopback_client(**kwargs: Any) -> httpx.AsyncClient:
    """`httpx.AsyncClient(**kwargs)`, without an SSL context of its own."""
    return httpx.AsyncClient(verify=_SHARED_TLS, **kwargs)
