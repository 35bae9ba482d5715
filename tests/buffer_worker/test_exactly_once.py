"""The worker's ledger and in-doubt handling, against json-server-like backends on both sides (no
Idempotency-Key; a create with an existing id answers 500): a copy of an applied intent is skipped, and
an intent whose fate is unknown is settled from the authoritative side, never sent again."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from aiohttp import web

from buffer_worker.http_applier import HttpApplier
from buffer_worker.intent import Intent
from buffer_worker.keys import CONSUMER_GROUP, dead_letter_key, partition_of, stream_key
from buffer_worker.producer import RedisIntentProducer
from buffer_worker.redis_ledger import RedisLedger
from routing.phases import Side
from tests.buffer_worker.conftest import WorkerPool, make_settings, pending_counts, wait_until
from tests.buffer_worker.test_settle import TENANT, JsonLike
from tests.support.jsonlike_server import create_app
from tests.support.redis_keys import PARTITIONS

# Every test has its own key prefix and backends: one tenant name will do (the one JsonLike reads).
RESOURCES = {"rest": {"resources": [{"name": "items", "list_path": "/items", "create": "post"}]}}


@pytest.fixture
async def sides() -> AsyncIterator[dict[Side, JsonLike]]:
    runners: list[web.AppRunner] = []
    found: dict[Side, JsonLike] = {}
    for side in Side:
        backend = JsonLike("")
        runner = web.AppRunner(create_app(backend.seen), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        backend.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        runners.append(runner)
        found[side] = backend
    yield found
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
def producer(rclient: aioredis.Redis, prefix: str) -> RedisIntentProducer:
    return RedisIntentProducer(rclient, prefix=prefix, partitions=PARTITIONS)


def settings_for(prefix: str, sides: dict[Side, JsonLike], **worker: Any) -> Any:
    return make_settings(
        prefix, sides[Side.OLD].url, sides[Side.NEW].url, data=RESOURCES, worker={"max_attempts": 2, **worker}
    )


def create_intent(tenant: str, key: str, value: int, **overrides: Any) -> Intent:
    """A create the authoritative side (old) answered with the record's id (json-server: no Location
    on the same service), as the proxy records it."""
    values: dict[str, Any] = {
        "tenant": tenant,
        "target": Side.NEW,
        "method": "POST",
        "path": "/items",
        "query": "",
        "headers": (("content-type", "application/json"),),
        "body": orjson.dumps({"v": value}),
        "status": 201,
        "response_body": orjson.dumps({"v": value, "id": key}),
    }
    values.update(overrides)
    return Intent(**values)


async def drained(client: aioredis.Redis, prefix: str, tenant: str) -> bool:
    return (await pending_counts(client, prefix)).get(f"{tenant}|new", 0) == 0


async def dead_letters(client: aioredis.Redis, prefix: str, tenant: str) -> list[Any]:
    entries: Any = await client.xrange(dead_letter_key(prefix, partition_of(tenant, PARTITIONS)))
    return [fields[b"reason"].decode() for _id, fields in entries]


async def test_a_copy_of_an_applied_intent_is_skipped_in_its_batch_and_after_acknowledgement(
    sides: dict[Side, JsonLike],
    producer: RedisIntentProducer,
    rclient: aioredis.Redis,
    prefix: str,
    workers: WorkerPool,
) -> None:
    """The proxy's spool appends an intent again when it never learnt whether its append landed: the
    copy may sit next to the original or arrive minutes later, after the original was acknowledged."""
    tenant = TENANT
    old, new = sides[Side.OLD], sides[Side.NEW]
    await old.call("POST", "/items", {"id": "a", "v": 1})
    first = create_intent(tenant, "a", 1)
    for intent in (first, first):  # both copies in one batch
        await producer.append(intent)
    running = workers.start(settings_for(prefix, sides))
    await wait_until(lambda: drained(rclient, prefix, tenant), alive=[running])
    await producer.append(first)  # the late copy: the original is acknowledged by now
    await wait_until(lambda: drained(rclient, prefix, tenant), alive=[running])
    assert new.seen == [("POST", "/items")]  # sent once; json-server would answer the copy 500
    assert await new.record("a") == {"id": "a", "v": 1}
    assert running.worker.stats.duplicates == 2
    assert await dead_letters(rclient, prefix, tenant) == []


async def test_entries_a_dead_worker_had_read_are_settled_not_sent_again(
    sides: dict[Side, JsonLike],
    producer: RedisIntentProducer,
    rclient: aioredis.Redis,
    prefix: str,
    workers: WorkerPool,
) -> None:
    """A worker read a batch, applied its first intent and died: the new owner re-reads the batch from
    the pending list. The applied create would be answered 500 "duplicate id" if sent again, and the
    PATCH of a record deleted since would be answered 404: both are settled from the authoritative
    side instead, and the one never sent is set to the authoritative state too."""
    tenant = TENANT
    old, new = sides[Side.OLD], sides[Side.NEW]
    for key, value in (("a", 1), ("b", 2)):
        await old.call("POST", "/items", {"id": key, "v": value})
    await new.call("POST", "/items", {"id": "a", "v": 1})  # what the dead worker had sent
    await old.call("PATCH", "/items/b", {"v": 3})
    await old.call("DELETE", "/items/b")
    intents = [
        create_intent(tenant, "a", 1),
        create_intent(tenant, "b", 2),
        Intent(
            tenant=tenant,
            target=Side.NEW,
            method="PATCH",
            path="/items/b",
            query="",
            headers=(("content-type", "application/json"),),
            body=b'{"v": 3}',
            status=200,
            response_body=b'{"id": "b", "v": 3}',
        ),
    ]
    for intent in intents:
        await producer.append(intent)
    partition = partition_of(tenant, PARTITIONS)
    stream = stream_key(prefix, partition)
    await rclient.xgroup_create(stream, CONSUMER_GROUP, id="0", mkstream=True)
    delivered: Any = await rclient.xreadgroup(CONSUMER_GROUP.decode(), f"p{partition}", {stream: ">"})
    assert len(delivered[0][1]) == 3  # in the dead worker's pending list, never acknowledged
    new.seen.clear()

    running = workers.start(settings_for(prefix, sides))
    await wait_until(lambda: drained(rclient, prefix, tenant), alive=[running])
    assert [m for m, _ in new.seen if m != "GET"] == []  # a: equal; b: absent on both sides
    assert await new.record("a") == {"id": "a", "v": 1}
    assert await new.record("b") is None
    assert running.worker.stats.in_doubt == 3
    assert await dead_letters(rclient, prefix, tenant) == []


async def test_an_intent_the_ledger_says_is_being_sent_is_settled(
    sides: dict[Side, JsonLike],
    producer: RedisIntentProducer,
    rclient: aioredis.Redis,
    prefix: str,
    workers: WorkerPool,
) -> None:
    """`sending` without `applied`: an attempt may have reached the mirror (a copy of it is being read
    for the first time). Settled: the mirror holds the record already, so nothing is sent."""
    tenant = TENANT
    old, new = sides[Side.OLD], sides[Side.NEW]
    for side in (old, new):
        await side.call("POST", "/items", {"id": "a", "v": 1})
    new.seen.clear()
    intent = create_intent(tenant, "a", 1)
    ledger = RedisLedger(rclient, prefix=prefix, retention_s=3600)
    assert await ledger.check(partition_of(tenant, PARTITIONS), [intent.intent_id]) == [""]  # marked `s`
    await producer.append(intent)
    running = workers.start(settings_for(prefix, sides))
    await wait_until(lambda: drained(rclient, prefix, tenant), alive=[running])
    assert new.seen == [("GET", "/items/a")]
    assert running.worker.stats.in_doubt == 1


async def test_an_intent_older_than_the_ledger_remembers_is_settled(
    sides: dict[Side, JsonLike],
    producer: RedisIntentProducer,
    rclient: aioredis.Redis,
    prefix: str,
    workers: WorkerPool,
) -> None:
    """A copy arriving after the ledger forgot the original: stale, it must not overwrite a newer write
    of its record. Older than the retention, it is settled (to the newer state), never replayed."""
    tenant = TENANT
    old, new = sides[Side.OLD], sides[Side.NEW]
    for side in (old, new):
        await side.call("POST", "/items", {"id": "a", "v": 2})
    new.seen.clear()
    two_hours_ago = int(time.time() * 1000) - 2 * 3600 * 1000
    stale = Intent(
        tenant=tenant,
        target=Side.NEW,
        method="PUT",
        path="/items/a",
        query="",
        headers=(("content-type", "application/json"),),
        body=b'{"v": 1}',
        status=200,
        response_body=b'{"id": "a", "v": 1}',
        created_ms=two_hours_ago,
    )
    await producer.append(stale)
    running = workers.start(settings_for(prefix, sides, ledger_retention_h=1))
    await wait_until(lambda: drained(rclient, prefix, tenant), alive=[running])
    assert new.seen == [("GET", "/items/a")]
    assert await new.record("a") == {"id": "a", "v": 2}


async def test_applied_intents_are_in_the_ledger_after_acknowledgement(
    sides: dict[Side, JsonLike],
    producer: RedisIntentProducer,
    rclient: aioredis.Redis,
    prefix: str,
    workers: WorkerPool,
) -> None:
    tenant = TENANT
    await sides[Side.OLD].call("POST", "/items", {"id": "a", "v": 1})
    intent = create_intent(tenant, "a", 1)
    await producer.append(intent)
    running = workers.start(settings_for(prefix, sides))
    await wait_until(lambda: drained(rclient, prefix, tenant), alive=[running])
    ledger = RedisLedger(rclient, prefix=prefix, retention_s=24 * 3600)
    assert await ledger.check(partition_of(tenant, PARTITIONS), [intent.intent_id]) == ["a"]


def test_the_http_applier_is_the_one_with_a_ledger(prefix: str) -> None:
    """The PostgreSQL applier keeps its ledger in the mirror's transaction; only an applier that can
    settle (`resolve`) gets the worker's."""
    assert callable(getattr(HttpApplier, "resolve", None))
