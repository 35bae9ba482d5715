"""`cutover worker --check`: is a worker of this host alive? A container health check.

Every worker beats into the buffer's set of live workers (`keys.workers_key`, member = worker id, score =
time of the beat in ms) every `worker.lease_ttl_s / 3`, and the fleet counts a worker as alive while its
last beat is younger than one lease TTL: the same rule decides here, for the workers whose id names this
host. A worker stuck anywhere in its loop stops beating; Redis unreachable counts as not alive (a worker
can do nothing without it).
"""

from __future__ import annotations

import os
import socket
import time
from typing import cast

import redis

from buffer_worker.keys import workers_key
from common.store_errors import REDIS_ERRORS
from config.settings import Settings


def default_worker_id() -> str:
    """`<hostname>:<pid>`: unique on a host, and in a container the host is the container."""
    return f"{socket.gethostname()}:{os.getpid()}"


def check_worker(settings: Settings, *, host: str | None = None) -> tuple[bool, str]:
    """(alive, one line saying why) for the workers of `host` (this host by default)."""
    host = host or socket.gethostname()
    ttl_s = settings.worker.lease_ttl_s
    client = redis.Redis.from_url(
        settings.redis_url.get_secret_value(), socket_timeout=2, socket_connect_timeout=2
    )
    try:
        beats = cast(
            list[tuple[bytes, float]],
            client.zrange(workers_key(settings.buffer.key_prefix), 0, -1, withscores=True),
        )
    except REDIS_ERRORS as exc:
        return False, f"Redis is unreachable ({type(exc).__name__}): no worker can be alive"
    finally:
        client.close()
    now_ms = time.time() * 1000
    ours = [(member.decode(), score) for member, score in beats if member.decode().startswith(f"{host}:")]
    if not ours:
        return False, f"no worker of host {host} is registered (key prefix {settings.buffer.key_prefix!r})"
    worker_id, last_ms = max(ours, key=lambda beat: beat[1])
    age_s = max(0.0, (now_ms - last_ms) / 1000)
    if age_s >= ttl_s:
        return False, f"worker {worker_id} last beat {age_s:.1f} s ago (over worker.lease_ttl_s, {ttl_s} s)"
    return True, f"worker {worker_id} alive: last beat {age_s:.1f} s ago"
