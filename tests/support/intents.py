"""A mirrored write left in the buffer, as the proxy appends it after the authoritative side answered: for
tests of what verification and repair do with keys whose intents have not been applied yet."""

from __future__ import annotations

from buffer_worker.intent import Intent
from buffer_worker.producer import RedisIntentProducer
from config.settings import Settings
from routing.phases import Side


async def append_mirrored_put(settings: Settings, tenant: str, path: str, body: bytes) -> None:
    """Append a PUT of `body` to `path` toward new to the buffer `settings` name (no worker applies it)."""
    producer = RedisIntentProducer.from_url(
        settings.redis_url.get_secret_value(),
        prefix=settings.buffer.key_prefix,
        partitions=settings.buffer.partitions,
    )
    try:
        await producer.append(
            Intent(
                tenant=tenant,
                target=Side.NEW,
                method="PUT",
                path=path,
                query="",
                headers=(),
                body=body,
                status=200,
                response_body=b"",
            )
        )
    finally:
        await producer.close()
