"""The buffer worker against real Redis and real HTTP backends: ordering, crash recovery, leases,
outages, dead letters and an idempotence property."""

from __future__ import annotations

import asyncio
import gzip
import random
import uuid
from dataclasses import dataclass
from typing import Any, cast

import orjson
import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from buffer_worker.http_applier import HttpApplier
from buffer_worker.intent import Intent
from buffer_worker.keys import CONSUMER_GROUP, blocked_key, dead_letter_key, partition_of, stream_key
from buffer_worker.producer import RedisIntentProducer
from proxy.demo.backend import create_backend_app
from routing.phases import Side
from tests.buffer_worker.conftest import (
    Backend,
    BackendFactory,
    RecordingApp,
    RunningWorker,
    WorkerPool,
    delete_intent,
    make_settings,
    pending_counts,
    put_intent,
    tenants_on_distinct_partitions,
    tenants_on_same_partition,
    wait_until,
)
from tests.support.asgi import Receive, Scope, Send, read_body, respond
from tests.support.redis_keys import PARTITIONS

LEASE_TTL_S = 1.0


@dataclass
class Mirror:
    """The demo data service as the mirror (target `new`), with every request recorded."""

    backend: Backend
    recorder: RecordingApp
    app: Any

    async def dump(self) -> dict[str, Any]:
        return await self.backend.get_json("/_dump")  # type: ignore[no-any-return]

    async def items(self) -> dict[str, dict[str, Any]]:
        return (await self.dump())["items"]  # type: ignore[no-any-return]

    async def writes_applied(self) -> int:
        return int((await self.dump())["writes_applied"])

    async def control(self, **faults: Any) -> None:
        await self.backend.post_json("/_control", faults)


@pytest.fixture
async def mirror(start_backend: BackendFactory) -> Mirror:
    app = create_backend_app("new")
    recorder = RecordingApp(app)
    return Mirror(await start_backend(recorder), recorder, app)


@pytest.fixture
def producer(rclient: aioredis.Redis, prefix: str) -> RedisIntentProducer:
    return RedisIntentProducer(rclient, prefix=prefix, partitions=PARTITIONS)


def settings_for(prefix: str, mirror_url: str, **overrides: Any) -> Any:
    # `old` is never a target in these tests; it points at the mirror too so that the URL is valid
    return make_settings(prefix, mirror_url, mirror_url, **overrides)


async def drained(client: aioredis.Redis, prefix: str, tenants: list[str]) -> bool:
    counts = await pending_counts(client, prefix)
    return all(counts.get(f"{tenant}|new", 0) == 0 for tenant in tenants)


def first_occurrences(keys: list[str]) -> list[str]:
    seen: set[str] = set()
    ordered = []
    for key in keys:
        if key not in seen:
            seen.add(key)
            ordered.append(key)
    return ordered


def expected_state(intents: list[Intent]) -> dict[str, dict[str, Any]]:
    """The mirror state after applying PUT/DELETE intents once each, in order."""
    state: dict[str, dict[str, Any]] = {}
    applied: set[str] = set()
    for intent in intents:
        if intent.intent_id in applied:
            continue
        applied.add(intent.intent_id)
        key = intent.path.rsplit("/", 1)[1]
        items = state.setdefault(intent.tenant, {})
        if intent.method == "PUT":
            items[key] = {**orjson.loads(intent.body), "id": key}
        else:
            items.pop(key, None)
    return state


def assert_mirror_matches(items: dict[str, dict[str, Any]], intents: list[Intent]) -> None:
    for tenant, state in expected_state(intents).items():
        assert items.get(tenant, {}) == state, tenant


def assert_order(recorder: RecordingApp, intents: list[Intent]) -> None:
    """Per tenant, the mirror first saw the intents in append order (re-applications allowed)."""
    for tenant in {intent.tenant for intent in intents}:
        appended = first_occurrences([i.intent_id for i in intents if i.tenant == tenant])
        assert first_occurrences(recorder.keys_for(tenant)) == appended, tenant


async def stream_state(client: aioredis.Redis, prefix: str) -> tuple[list[int], list[int], list[int]]:
    """Per partition: stream length, entries delivered but unacknowledged, dead letters."""
    lengths, unacked, dead = [], [], []
    for partition in range(PARTITIONS):
        key = stream_key(prefix, partition)
        lengths.append(await client.xlen(key))
        if await client.exists(key):
            groups: Any = await client.xinfo_groups(key)
            unacked.append(sum(int(g["pending"]) for g in groups))
        else:
            unacked.append(0)
        dead.append(await client.xlen(dead_letter_key(prefix, partition)))
    return lengths, unacked, dead


# -- ordering ---------------------------------------------------------------------------------------------
async def test_intents_of_many_tenants_are_applied_in_stream_order(
    mirror: Mirror, producer: RedisIntentProducer, rclient: aioredis.Redis, prefix: str, workers: WorkerPool
) -> None:
    tenants = tenants_on_distinct_partitions(label="ord") + tenants_on_same_partition(2, label="ord")
    assert {partition_of(t, PARTITIONS) for t in tenants} == set(range(PARTITIONS))
    rng = random.Random(1234)
    intents = [put_intent(rng.choice(tenants), f"k{rng.randrange(3)}", value) for value in range(200)]

    for intent in intents[:100]:  # a backlog before the worker starts ...
        await producer.append(intent)
    running = workers.start(settings_for(prefix, mirror.backend.url))
    for intent in intents[100:]:  # ... and live traffic while it drains
        await producer.append(intent)
    await wait_until(lambda: drained(rclient, prefix, tenants), alive=[running])

    items = await mirror.items()
    for tenant in tenants:
        last: dict[str, int] = {}
        for intent in intents:
            if intent.tenant == tenant:
                last[intent.path.rsplit("/", 1)[1]] = orjson.loads(intent.body)["v"]
        assert items.get(tenant, {}) == {k: {"v": v, "id": k} for k, v in last.items()}
        # exactly once each, in append order: nothing retried, nothing reordered
        assert mirror.recorder.keys_for(tenant) == [i.intent_id for i in intents if i.tenant == tenant]
    assert await mirror.writes_applied() == 200
    assert running.worker.stats.applied == 200
    assert set((await pending_counts(rclient, prefix)).values()) == {0}
    lengths, unacked, dead = await stream_state(rclient, prefix)
    assert all(length <= 1 for length in lengths), lengths  # trimmed up to the last acknowledged entry
    assert unacked == [0] * PARTITIONS
    assert dead == [0] * PARTITIONS


# -- crash recovery ---------------------------------------------------------------------------------------
async def test_unacknowledged_entries_of_a_dead_worker_are_applied_in_order(
    mirror: Mirror, producer: RedisIntentProducer, rclient: aioredis.Redis, prefix: str, workers: WorkerPool
) -> None:
    tenants = tenants_on_same_partition(2, label="crash")
    partition = partition_of(tenants[0], PARTITIONS)
    stream = stream_key(prefix, partition)
    await rclient.xgroup_create(stream, CONSUMER_GROUP, id="0", mkstream=True)
    intents = [put_intent(tenants[i % 2], f"k{i % 3}", i) for i in range(40)]
    for intent in intents[:30]:
        await producer.append(intent)

    # the dead worker: read 20 entries as the partition's consumer, applied 10 of them, never acknowledged
    reply: Any = await rclient.xreadgroup(CONSUMER_GROUP.decode(), f"p{partition}", {stream: ">"}, count=20)
    delivered = [Intent.from_fields(fields) for _id, fields in reply[0][1]]
    assert delivered == intents[:20]
    settings = settings_for(prefix, mirror.backend.url)
    dead_applier = HttpApplier(settings)
    await dead_applier.start()
    try:
        for intent in delivered[:10]:
            await dead_applier.apply(intent)
    finally:
        await dead_applier.close()
    assert await mirror.writes_applied() == 10
    for intent in intents[30:]:
        await producer.append(intent)

    running = workers.start(settings)
    await wait_until(lambda: drained(rclient, prefix, tenants), timeout_s=4, alive=[running])

    assert_mirror_matches(await mirror.items(), intents)
    assert_order(mirror.recorder, intents)
    # the 10 re-applied intents were answered from the idempotency cache: nothing applied twice
    assert await mirror.writes_applied() == 40
    assert len(mirror.recorder.keys_for(tenants[0]) + mirror.recorder.keys_for(tenants[1])) == 50
    _lengths, unacked, dead = await stream_state(rclient, prefix)
    assert unacked == [0] * PARTITIONS
    assert dead == [0] * PARTITIONS


async def test_entries_pending_under_another_consumer_name_are_claimed_and_applied_in_order(
    mirror: Mirror, producer: RedisIntentProducer, rclient: aioredis.Redis, prefix: str, workers: WorkerPool
) -> None:
    tenant = tenants_on_same_partition(1, label="claim")[0]
    partition = partition_of(tenant, PARTITIONS)
    stream = stream_key(prefix, partition)
    await rclient.xgroup_create(stream, CONSUMER_GROUP, id="0", mkstream=True)
    intents = [put_intent(tenant, f"k{i % 3}", i) for i in range(30)]
    for intent in intents[:20]:
        await producer.append(intent)
    # someone read 20 entries under a name of their own and never acknowledged them
    await rclient.xreadgroup(CONSUMER_GROUP.decode(), "by-hand", {stream: ">"}, count=20)
    for intent in intents[20:]:
        await producer.append(intent)

    running = workers.start(settings_for(prefix, mirror.backend.url))
    await wait_until(lambda: drained(rclient, prefix, [tenant]), timeout_s=4, alive=[running])

    assert_mirror_matches(await mirror.items(), intents)
    assert_order(mirror.recorder, intents)
    _lengths, unacked, _dead = await stream_state(rclient, prefix)
    assert unacked == [0] * PARTITIONS


@pytest.mark.fault
async def test_worker_killed_mid_batch_is_taken_over_without_double_applies(
    mirror: Mirror, producer: RedisIntentProducer, rclient: aioredis.Redis, prefix: str, workers: WorkerPool
) -> None:
    tenants = tenants_on_same_partition(3, label="kill")
    intents = [put_intent(tenants[i % 3], f"k{i % 4}", i) for i in range(60)]
    # slow enough that the batch in flight cannot finish within the worker's grace period on cancellation
    await mirror.control(delay_ms=40)
    for intent in intents:
        await producer.append(intent)
    settings = settings_for(prefix, mirror.backend.url)
    first = workers.start(settings, worker_id="first")
    await wait_until(lambda: _at_least(mirror, 10), alive=[first])
    await first.kill()
    applied_before = await mirror.writes_applied()
    assert 10 <= applied_before < 60
    _lengths, unacked, _dead = await stream_state(rclient, prefix)
    assert sum(unacked) > 0  # the batch in flight was never acknowledged
    await asyncio.sleep(0.1)  # let the request the dead worker had in flight finish on the backend
    await mirror.control(delay_ms=0)

    second = workers.start(settings, worker_id="second")
    await wait_until(lambda: drained(rclient, prefix, tenants), timeout_s=4, alive=[second])

    assert_mirror_matches(await mirror.items(), intents)
    assert_order(mirror.recorder, intents)
    assert await mirror.writes_applied() == 60
    assert second.worker.stats.applied == 60  # the whole unacknowledged batch went through again
    _lengths, unacked, _dead = await stream_state(rclient, prefix)
    assert unacked == [0] * PARTITIONS
    # and the new owner goes on with new entries once the pending list is done
    later = put_intent(tenants[0], "k0", 1000)
    await producer.append(later)
    await wait_until(lambda: drained(rclient, prefix, tenants), timeout_s=4, alive=[second])
    assert (await mirror.items())[tenants[0]]["k0"] == {"v": 1000, "id": "k0"}


async def _at_least(mirror: Mirror, count: int) -> bool:
    return await mirror.writes_applied() >= count


# -- leases between workers -------------------------------------------------------------------------------
async def test_two_workers_share_partitions_exclusively_and_take_over(
    mirror: Mirror, producer: RedisIntentProducer, rclient: aioredis.Redis, prefix: str, workers: WorkerPool
) -> None:
    settings = settings_for(prefix, mirror.backend.url)
    one = workers.start(settings, worker_id="worker-one")
    two = workers.start(settings, worker_id="worker-two")
    tenants = tenants_on_distinct_partitions(label="share")
    loop = asyncio.get_running_loop()

    def check_exclusive() -> None:
        for running in (one, two):
            if not running.task.done():
                running.check_alive()
        owned_one = set(one.worker.owned_partitions) if not one.task.done() else set()
        assert not owned_one & set(two.worker.owned_partitions)

    balanced_at = None
    deadline = loop.time() + 4
    while loop.time() < deadline:
        check_exclusive()
        owned = (set(one.worker.owned_partitions), set(two.worker.owned_partitions))
        if owned[0] | owned[1] == set(range(PARTITIONS)) and len(owned[0]) == len(owned[1]) == 2:
            balanced_at = balanced_at or loop.time()
            if loop.time() - balanced_at > 1.5:  # and it stays that way
                break
        else:
            assert balanced_at is None, f"balance was lost: {owned}"
        await asyncio.sleep(0.01)
    assert balanced_at is not None, "the two workers never split the partitions 2/2"
    for partition in one.worker.owned_partitions:
        assert await one.worker._leases.owner_of(partition) == "worker-one"
    for partition in two.worker.owned_partitions:
        assert await two.worker._leases.owner_of(partition) == "worker-two"

    first_half = [put_intent(t, "k", i) for i, t in enumerate(tenants)]
    for intent in first_half:
        await producer.append(intent)
    await wait_until(lambda: drained(rclient, prefix, tenants), alive=[one, two])

    stopped_at = loop.time()
    await one.stop()
    owners = [await two.worker._leases.owner_of(p) for p in range(PARTITIONS)]
    assert set(owners) <= {None, "worker-two"}, f"a stopped worker must release its leases: {owners}"
    second_half = [put_intent(t, "k", 100 + i) for i, t in enumerate(tenants)]
    for intent in second_half:
        await producer.append(intent)
    while two.worker.owned_partitions != list(range(PARTITIONS)):
        check_exclusive()
        assert loop.time() - stopped_at < 3 * LEASE_TTL_S + 1.0, "takeover took longer than ~3 lease TTLs"
        await asyncio.sleep(0.01)
    await wait_until(lambda: drained(rclient, prefix, tenants), alive=[two])
    assert_mirror_matches(await mirror.items(), first_half + second_half)
    for p in range(PARTITIONS):
        assert await two.worker._leases.owner_of(p) == "worker-two"


# -- outages ----------------------------------------------------------------------------------------------
# `make test` holds the mirror down for 10 s (about ten retries at the 1 s cap); `make soak` for the 30 s
# the worker is specified to ride out.


@pytest.mark.slow
@pytest.mark.fault
@pytest.mark.parametrize(
    "outage_s",
    [
        pytest.param(10.0, id="10s"),
        pytest.param(30.0, id="30s", marks=[pytest.mark.soak, pytest.mark.timeout(120)]),
    ],
)
async def test_mirror_down_then_up_drops_nothing_and_keeps_order(
    mirror: Mirror,
    producer: RedisIntentProducer,
    rclient: aioredis.Redis,
    prefix: str,
    workers: WorkerPool,
    outage_s: float,
) -> None:
    tenants = tenants_on_distinct_partitions(label="down") + tenants_on_same_partition(2, label="down")
    rng = random.Random(99)
    intents = [put_intent(rng.choice(tenants), f"k{rng.randrange(3)}", i) for i in range(150)]
    # a short max_attempts proves the outage is not counted against it; retry_max_s caps the backoff so
    # the worker notices the mirror's return within a second
    running = workers.start(
        settings_for(prefix, mirror.backend.url, worker={"max_attempts": 2, "retry_max_s": 1.0})
    )
    for intent in intents[:30]:
        await producer.append(intent)
    await wait_until(lambda: drained(rclient, prefix, tenants), alive=[running])

    await mirror.backend.stop(hold_port=True)  # connections are refused from now on
    loop = asyncio.get_running_loop()
    down_at = loop.time()
    during = intents[30:]
    retries_at_half = 0
    for number, intent in enumerate(during):  # writes keep arriving all through the outage
        await producer.append(intent)
        await asyncio.sleep(max(0.0, down_at + outage_s * (number + 1) / len(during) - loop.time()))
        if number == len(during) // 2:
            retries_at_half = running.worker.stats.retries
        running.check_alive()
    assert sum((await pending_counts(rclient, prefix)).values()) == len(during)
    assert retries_at_half > 0
    assert running.worker.stats.retries > retries_at_half, "the worker stopped retrying during the outage"
    assert running.worker.stats.dead_lettered == 0

    await mirror.backend.start()  # same port, same in-memory data
    await wait_until(lambda: drained(rclient, prefix, tenants), alive=[running])

    assert_mirror_matches(await mirror.items(), intents)
    assert_order(mirror.recorder, intents)
    assert await mirror.writes_applied() == len(intents)
    assert running.worker.stats.dead_lettered == 0
    _lengths, unacked, dead = await stream_state(rclient, prefix)
    assert unacked == [0] * PARTITIONS
    assert dead == [0] * PARTITIONS


# -- dead letters -----------------------------------------------------------------------------------------
class PickyStore:
    """A tiny store: PUT /items/{id} stores the JSON body.

    A body with `"poison": true` is answered 400 (gzip-compressed, whatever the request accepts), one
    with `"flaky": true` 503.
    """

    def __init__(self) -> None:
        self.items: dict[str, dict[str, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = await read_body(receive)
        tenant = dict(scope["headers"]).get(b"x-tenant-id", b"").decode()
        document = orjson.loads(body) if body else {}
        if document.get("poison"):
            compressed = gzip.compress('{"error": "invalid", "hint": "\u00e9t\u00e9"}'.encode())
            headers = [
                (b"content-type", b"application/json; charset=utf-8"),
                (b"content-encoding", b"gzip"),
                (b"content-length", str(len(compressed)).encode()),
            ]
            await send({"type": "http.response.start", "status": 400, "headers": headers})
            await send({"type": "http.response.body", "body": compressed})
            return
        if document.get("flaky"):
            await respond(send, 503, b'{"error": "try later"}')
            return
        if scope["method"] == "PUT":
            self.items.setdefault(tenant, {})[scope["path"].rsplit("/", 1)[1]] = document
        await respond(send, 200, b"{}")


def special_intent(tenant: str, key: str, **document: Any) -> Intent:
    return Intent(
        tenant=tenant,
        target=Side.NEW,
        method="PUT",
        path=f"/items/{key}",
        query="",
        headers=(("content-type", "application/json"),),
        body=orjson.dumps(document),
        status=200,
        response_body=b"{}",
    )


async def dead_letters(client: aioredis.Redis, prefix: str, partition: int) -> list[tuple[Intent, str, str]]:
    entries: Any = await client.xrange(dead_letter_key(prefix, partition))
    return [
        (Intent.from_fields(fields), fields[b"reason"].decode(), fields[b"source_id"].decode())
        for _id, fields in entries
    ]


async def failures(client: aioredis.Redis, prefix: str, partition: int) -> list[tuple[str | None, ...]]:
    """Each dead letter's status, answer excerpt and the intent id it is parked behind, as stored."""
    entries: Any = await client.xrange(dead_letter_key(prefix, partition))
    return [
        tuple(
            fields[name].decode() if name in fields else None for name in (b"status", b"excerpt", b"behind")
        )
        for _id, fields in entries
    ]


async def test_permanent_failure_dead_letters_and_parks_only_that_tenant(
    start_backend: BackendFactory,
    producer: RedisIntentProducer,
    rclient: aioredis.Redis,
    prefix: str,
    workers: WorkerPool,
) -> None:
    store = PickyStore()
    recorder = RecordingApp(store)
    backend = await start_backend(recorder)
    bad, good = tenants_on_same_partition(2, label="dl")
    partition = partition_of(bad, PARTITIONS)
    stream = stream_key(prefix, partition)
    intents: list[Intent] = []
    for i in range(1, 6):
        intents.append(special_intent(bad, f"k{i}", v=i, poison=i == 3))
        intents.append(special_intent(good, f"k{i}", v=i))
    source_ids = [(await _append(producer, rclient, stream, intent)) for intent in intents]

    running = workers.start(settings_for(prefix, backend.url))
    await wait_until(lambda: drained(rclient, prefix, [good]), alive=[running])
    await wait_until(lambda: _count(dead_letters(rclient, prefix, partition), 3), alive=[running])

    poison = intents[4]
    assert recorder.keys_for(bad) == [i.intent_id for i in intents[:6:2]]  # A1, A2, A3 once; no retry
    assert recorder.keys_for(good) == [i.intent_id for i in intents[1::2]]
    assert store.items[bad] == {"k1": {"v": 1, "poison": False}, "k2": {"v": 2, "poison": False}}
    assert store.items[good] == {f"k{i}": {"v": i} for i in range(1, 6)}
    dead = await dead_letters(rclient, prefix, partition)
    assert [intent for intent, _r, _s in dead] == [intents[4], intents[6], intents[8]]
    # The reason names the cause; the status and the mirror's answer (its gzip undone, decoded as
    # UTF-8) are recorded apart; parked letters name the letter they wait behind by its intent id.
    assert [reason for _i, reason, _s in dead] == [
        "apply failed: new answered 400 to PUT /items/k3",
        f"parked behind {poison.intent_id}",
        f"parked behind {poison.intent_id}",
    ]
    assert await failures(rclient, prefix, partition) == [
        ("400", '{"error": "invalid", "hint": "\u00e9t\u00e9"}', None),
        (None, None, poison.intent_id),
        (None, None, poison.intent_id),
    ]
    assert [source for _i, _r, source in dead] == [source_ids[4], source_ids[6], source_ids[8]]
    assert await rclient.hgetall(blocked_key(prefix, partition)) == {bad.encode(): poison.intent_id.encode()}
    counts = await pending_counts(rclient, prefix)
    assert counts[f"{good}|new"] == 0
    assert counts[f"{bad}|new"] == 3  # not applied: the proxy must keep treating the mirror as behind

    # a later batch: the tenant stays parked, the other tenant keeps flowing
    later = [special_intent(bad, "k9", v=9), special_intent(good, "k9", v=9)]
    for intent in later:
        await producer.append(intent)
    await wait_until(lambda: drained(rclient, prefix, [good]), alive=[running])
    await wait_until(lambda: _count(dead_letters(rclient, prefix, partition), 4), alive=[running])
    assert store.items[good]["k9"] == {"v": 9}
    assert "k9" not in store.items[bad]
    assert (await dead_letters(rclient, prefix, partition))[-1][0] == later[0]
    assert running.worker.stats.parked == 3
    assert running.worker.stats.dead_lettered == 4
    _lengths, unacked, _dead = await stream_state(rclient, prefix)
    assert unacked == [0] * PARTITIONS


async def test_error_answers_are_dead_lettered_after_max_attempts(
    start_backend: BackendFactory,
    producer: RedisIntentProducer,
    rclient: aioredis.Redis,
    prefix: str,
    workers: WorkerPool,
) -> None:
    store = PickyStore()
    recorder = RecordingApp(store)
    backend = await start_backend(recorder)
    flaky, other = tenants_on_same_partition(2, label="flaky")
    partition = partition_of(flaky, PARTITIONS)
    intents = [
        special_intent(flaky, "a", v=1, flaky=True),
        special_intent(other, "a", v=1),
        special_intent(flaky, "b", v=2),
    ]
    for intent in intents:
        await producer.append(intent)
    running = workers.start(settings_for(prefix, backend.url, worker={"max_attempts": 3}))
    await wait_until(lambda: drained(rclient, prefix, [other]), alive=[running])
    await wait_until(lambda: _count(dead_letters(rclient, prefix, partition), 2), alive=[running])
    assert recorder.keys_for(flaky) == [intents[0].intent_id] * 3
    assert recorder.keys_for(other) == [intents[1].intent_id]
    dead = await dead_letters(rclient, prefix, partition)
    assert [(i, r) for i, r, _s in dead] == [
        (intents[0], "apply failed: new answered 503 to PUT /items/a"),
        (intents[2], f"parked behind {intents[0].intent_id}"),
    ]
    assert (await failures(rclient, prefix, partition))[0] == ("503", '{"error": "try later"}', None)
    assert running.worker.stats.retries == 2


class BuggyApplier:
    """Applies into a dict, except that key `bug` raises an exception no applier error class names."""

    def __init__(self) -> None:
        self.items: dict[str, Any] = {}

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def apply(self, intent: Intent) -> None:
        if intent.path.endswith("/bug"):
            raise KeyError("a bug in the applier")
        self.items[f"{intent.tenant}{intent.path}"] = orjson.loads(intent.body)


async def test_an_unexpected_exception_is_an_apply_failure_not_a_dead_worker(
    producer: RedisIntentProducer, rclient: aioredis.Redis, prefix: str, workers: WorkerPool
) -> None:
    """Whatever an applier raises, the worker lives on: the intent is retried up to max_attempts and then
    dead-lettered with what was raised, and its tenant waits behind it while the others flow."""
    bad, good = tenants_on_same_partition(2, label="bug")
    partition = partition_of(bad, PARTITIONS)
    intents = [put_intent(bad, "bug", 1), put_intent(good, "k1", 2), put_intent(bad, "k2", 3)]
    for intent in intents:
        await producer.append(intent)
    applier = BuggyApplier()
    running = workers.start(
        settings_for(prefix, "http://127.0.0.1:9", worker={"max_attempts": 2}), applier=applier
    )
    await wait_until(lambda: drained(rclient, prefix, [good]), alive=[running])
    await wait_until(lambda: _count(dead_letters(rclient, prefix, partition), 2), alive=[running])
    running.check_alive()
    dead = await dead_letters(rclient, prefix, partition)
    assert [(i, r) for i, r, _s in dead] == [
        (intents[0], "apply failed: unexpected KeyError: 'a bug in the applier'"),
        (intents[2], f"parked behind {intents[0].intent_id}"),
    ]
    assert applier.items == {f"{good}/items/k1": {"v": 2}}
    assert running.worker.stats.retries == 1


async def test_undecodable_entry_is_dead_lettered_and_the_partition_moves_on(
    mirror: Mirror, producer: RedisIntentProducer, rclient: aioredis.Redis, prefix: str, workers: WorkerPool
) -> None:
    (tenant,) = tenants_on_same_partition(1, label="junk")
    partition = partition_of(tenant, PARTITIONS)
    stream = stream_key(prefix, partition)
    await producer.append(put_intent(tenant, "k", 1))
    junk_id = cast(bytes, await rclient.xadd(stream, {b"m": b"{oops", b"b": b""})).decode()
    await producer.append(put_intent(tenant, "k", 2))
    running = workers.start(settings_for(prefix, mirror.backend.url))
    await wait_until(lambda: drained(rclient, prefix, [tenant]), alive=[running])
    assert (await mirror.items())[tenant] == {"k": {"v": 2, "id": "k"}}
    entries: Any = await rclient.xrange(dead_letter_key(prefix, partition))
    [(_id, fields)] = entries
    assert fields[b"source_id"].decode() == junk_id
    assert fields[b"reason"].startswith(b"undecodable")
    assert fields[b"m"] == b"{oops"


async def test_entry_with_non_object_metadata_does_not_kill_the_worker(
    mirror: Mirror, producer: RedisIntentProducer, rclient: aioredis.Redis, prefix: str, workers: WorkerPool
) -> None:
    (tenant,) = tenants_on_same_partition(1, label="junk")
    stream = stream_key(prefix, partition_of(tenant, PARTITIONS))
    await rclient.xadd(stream, {b"m": b"[1, 2]", b"b": b""})
    await producer.append(put_intent(tenant, "k", 1))
    running = workers.start(settings_for(prefix, mirror.backend.url))
    await wait_until(lambda: drained(rclient, prefix, [tenant]), timeout_s=5, alive=[running])
    assert (await mirror.items())[tenant] == {"k": {"v": 1, "id": "k"}}


async def _append(producer: RedisIntentProducer, client: aioredis.Redis, stream: str, intent: Intent) -> str:
    await producer.append(intent)
    entries: Any = await client.xrevrange(stream, count=1)
    return str(entries[0][0].decode())


async def _count(entries: Any, count: int) -> bool:
    return len(await entries) >= count


# -- idempotent re-application ----------------------------------------------------------------------------
async def test_redelivered_delete_of_a_missing_item_changes_nothing(
    mirror: Mirror, producer: RedisIntentProducer, rclient: aioredis.Redis, prefix: str, workers: WorkerPool
) -> None:
    (tenant,) = tenants_on_same_partition(1, label="del")
    delete = delete_intent(tenant, "k")  # k does not exist yet: the mirror answers 404, which is "applied"
    for intent in [delete, put_intent(tenant, "k", 1), delete]:  # the DELETE is delivered again, same id
        await producer.append(intent)
    running = workers.start(settings_for(prefix, mirror.backend.url))
    await wait_until(lambda: drained(rclient, prefix, [tenant]), alive=[running])
    assert (await mirror.items())[tenant] == {"k": {"v": 1, "id": "k"}}


@dataclass
class PropertyEnv:
    mirror: Mirror
    producer: RedisIntentProducer
    client: aioredis.Redis
    prefix: str
    running: RunningWorker


@pytest.fixture
async def property_env(
    mirror: Mirror, producer: RedisIntentProducer, rclient: aioredis.Redis, prefix: str, workers: WorkerPool
) -> PropertyEnv:
    running = workers.start(settings_for(prefix, mirror.backend.url))
    return PropertyEnv(mirror, producer, rclient, prefix, running)


OPS = st.lists(
    st.tuples(st.integers(0, 2), st.integers(0, 2), st.one_of(st.none(), st.integers(0, 10_000))),
    min_size=1,
    max_size=30,
)
REDELIVERIES = st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 10_000)), max_size=8)


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(ops=OPS, redeliveries=REDELIVERIES)
async def test_mirror_equals_in_order_model_and_redelivery_changes_nothing(
    property_env: PropertyEnv, ops: list[tuple[int, int, int | None]], redeliveries: list[tuple[int, int]]
) -> None:
    env = property_env
    run = uuid.uuid4().hex[:6]
    # two tenants share a partition (they interleave in one stream), the third is anywhere
    tenants = tenants_on_same_partition(2, label=f"prop{run}") + [f"prop{run}-solo"]
    intents = [
        put_intent(tenants[t], f"k{k}", value) if value is not None else delete_intent(tenants[t], f"k{k}")
        for t, k, value in ops
    ]
    # writes the mirror counts: every PUT, and the DELETEs that find their item (the others answer 404)
    existing: set[tuple[str, str]] = set()
    writes = 0
    for intent in intents:
        item = (intent.tenant, intent.path)
        if intent.method == "PUT":
            existing.add(item)
            writes += 1
        elif item in existing:
            existing.discard(item)
            writes += 1
    sequence = list(intents)
    for which, where in redeliveries:
        original = intents[which % len(intents)]
        first = sequence.index(original)
        sequence.insert(first + 1 + where % (len(sequence) - first), original)  # same Intent, same id

    writes_before = await env.mirror.writes_applied()
    for intent in sequence:
        await env.producer.append(intent)
    await wait_until(lambda: drained(env.client, env.prefix, tenants), alive=[env.running])

    items = await env.mirror.items()
    assert_mirror_matches(items, sequence)
    for tenant in tenants:
        assert items.get(tenant, {}) == expected_state(intents).get(tenant, {})
    assert_order(env.mirror.recorder, sequence)
    assert await env.mirror.writes_applied() - writes_before == writes
    _lengths, _unacked, dead = await stream_state(env.client, env.prefix)
    assert dead == [0] * PARTITIONS
