"""The copy's claims and the worker's marks in Redis (`buffer_worker.copy_marks`): a record mirroring
wrote is the copy's to skip; a record the copy claimed makes the worker wait until it is released, or
until the claim lapses (a copy that died); only open copies are marked or counted."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
import redis.asyncio as aioredis

from buffer_worker.copy_marks import CopyClaims, CopyMarks, CopyNotOpenError, all_facts, read_facts
from buffer_worker.keys import copy_items_key, partition_of
from tests.support.redis_keys import PARTITIONS

TENANT = "acme"


def claims(
    rclient: aioredis.Redis, prefix: str, *, ttl_s: float = 30.0, resource: str = "items"
) -> CopyClaims:
    return CopyClaims(
        rclient, prefix=prefix, partitions=PARTITIONS, tenant=TENANT, resource=resource, ttl_s=ttl_s
    )


def marks(rclient: aioredis.Redis, prefix: str) -> CopyMarks:
    return CopyMarks(rclient, prefix=prefix, partitions=PARTITIONS)


PARTITION = partition_of(TENANT, PARTITIONS)


async def test_nothing_is_marked_while_no_copy_is_open(rclient: aioredis.Redis, prefix: str) -> None:
    marked = await marks(rclient, prefix).mark_once(PARTITION, [(TENANT, "items", "1")])
    assert marked.busy == []
    assert marked.open == set()
    assert marked.fresh == []
    assert await rclient.exists(copy_items_key(prefix, PARTITION, f"{TENANT}|items")) == 0
    with pytest.raises(CopyNotOpenError):
        await claims(rclient, prefix).claim(["1"])  # a copy must open before it claims


async def test_a_record_mirroring_wrote_is_skipped_by_the_copy(rclient: aioredis.Redis, prefix: str) -> None:
    copy = claims(rclient, prefix)
    await copy.open()
    marked = await marks(rclient, prefix).mark_once(
        PARTITION, [(TENANT, "items", "2"), (TENANT, "items", "2"), (TENANT, "other", "2")]
    )
    assert marked.busy == []
    assert marked.open == {f"{TENANT}|items"}
    assert marked.fresh == [0]  # the first intent of a record new may not hold: settled, not replayed
    claim = await copy.claim(["1", "2", "3"])
    assert claim.claimed == ["1", "3"]
    assert claim.skipped == ["2"]
    facts = await read_facts(
        rclient, prefix=prefix, partitions=PARTITIONS, copies=[(TENANT, "items"), (TENANT, "other")]
    )
    counts = facts[(TENANT, "items")].counts
    assert facts[(TENANT, "items")].open
    assert counts["mirrored"] == 1
    assert counts["intents"] == 2  # every intent
    assert not facts[(TENANT, "other")].open


async def test_the_worker_waits_for_a_claimed_record_until_the_copy_releases_it(
    rclient: aioredis.Redis, prefix: str
) -> None:
    copy = claims(rclient, prefix)
    await copy.open()
    claim = await copy.claim(["1", "2"])
    assert claim.claimed == ["1", "2"]
    worker = marks(rclient, prefix)
    marked = await worker.mark_once(PARTITION, [(TENANT, "items", "9"), (TENANT, "items", "2")])
    assert marked.busy == [1]
    assert marked.fresh == [0]
    await copy.release(["1", "2"], written=["2"])  # the copy wrote 2: a replay lands on what it wrote
    marked = await worker.mark_once(PARTITION, [(TENANT, "items", "2")])
    assert marked.busy == []
    assert marked.fresh == []
    again = await copy.claim(["1", "2", "9"])  # released and unmarked again; 2 and 9 are mirroring's
    assert again.claimed == ["1"]
    assert again.skipped == ["2", "9"]


async def test_a_lapsed_claim_frees_the_record_and_a_copy_renews_its_own(
    rclient: aioredis.Redis, prefix: str
) -> None:
    dead = claims(rclient, prefix, ttl_s=1.0)
    await dead.open()
    assert (await dead.claim(["1", "2"])).claimed == ["1", "2"]
    renewed = await dead.claim(["2"])  # the same run claims its own record again
    assert renewed.claimed == ["2"]
    other = claims(rclient, prefix)
    held = await other.claim(["1"])  # another (dead) run's claim holds until it lapses: not skipped
    assert held.claimed == held.skipped == []
    assert held.held == ["1"]
    assert 0 < held.held_s <= 1.0
    await asyncio.sleep(1.1)  # the subject: the dead run's 1 s claims lapse
    marked = await marks(rclient, prefix).mark_once(PARTITION, [(TENANT, "items", "1")])
    assert marked.busy == []
    assert marked.fresh == [0]
    assert (await other.claim(["1", "2"])).claimed == ["2"]  # 2 lapsed unmarked: free for the new run
    await dead.release(["1", "2"])  # the dead run's release drops nothing it no longer holds
    assert (await other.claim(["1", "2"])).claimed == ["2"]


async def test_counts_go_to_open_copies_only_and_close_keeps_them(
    rclient: aioredis.Redis, prefix: str
) -> None:
    copy = claims(rclient, prefix)
    await copy.open()
    worker = marks(rclient, prefix)
    await worker.mark_once(PARTITION, [(TENANT, "items", "1")])
    await worker.count(Counter({(TENANT, "items", "transferred"): 2, (TENANT, "closed", "transferred"): 5}))
    await copy.close()
    await worker.count(Counter({(TENANT, "items", "delete_absent"): 1}))  # closed: not counted
    assert (await worker.mark_once(PARTITION, [(TENANT, "items", "1")])).open == set()
    assert await rclient.exists(copy_items_key(prefix, PARTITION, f"{TENANT}|items")) == 0
    assert await all_facts(rclient, prefix=prefix, partitions=PARTITIONS) == {
        (TENANT, "items", "mirrored"): 1,
        (TENANT, "items", "intents"): 1,
        (TENANT, "items", "transferred"): 2,
    }
    await copy.reset()
    assert await all_facts(rclient, prefix=prefix, partitions=PARTITIONS) == {}
