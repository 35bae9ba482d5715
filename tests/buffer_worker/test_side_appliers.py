"""Each intent goes to the applier of the side it names; a side without one fails its intents for good."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from buffer_worker.apply_errors import PermanentApplyError
from buffer_worker.intent import Intent
from buffer_worker.side_appliers import SideAppliers
from routing.phases import Side


@dataclass
class Recorder:
    """An applier that records what it was given (`batches`: None for an applier without apply_batch)."""

    applied: list[str] = field(default_factory=list)
    started: int = 0
    closed: int = 0

    async def start(self) -> None:
        self.started += 1

    async def close(self) -> None:
        self.closed += 1

    async def apply(self, intent: Intent) -> None:
        self.applied.append(intent.path)


@dataclass
class BatchRecorder(Recorder):
    batches: list[list[str]] = field(default_factory=list)

    async def apply_batch(self, intents: Sequence[Intent]) -> None:
        self.batches.append([intent.path for intent in intents])


def intent(target: Side, path: str) -> Intent:
    return Intent(
        tenant="acme",
        target=target,
        method="PUT",
        path=path,
        query="",
        headers=(),
        body=b"{}",
        status=200,
        response_body=b"{}",
    )


async def test_a_batch_is_split_by_side_in_order() -> None:
    toward_new, toward_old = BatchRecorder(), Recorder()
    appliers = SideAppliers({Side.NEW: toward_new, Side.OLD: toward_old}, {})
    await appliers.start()
    batch = [
        intent(Side.NEW, "/n1"),
        intent(Side.OLD, "/o1"),
        intent(Side.NEW, "/n2"),
        intent(Side.OLD, "/o2"),
    ]
    await appliers.apply_batch(batch)
    await appliers.apply(intent(Side.OLD, "/o3"))
    await appliers.close()
    assert toward_new.batches == [["/n1", "/n2"]]
    assert toward_old.applied == ["/o1", "/o2", "/o3"]
    assert (toward_new.started, toward_new.closed, toward_old.started, toward_old.closed) == (1, 1, 1, 1)


async def test_one_applier_for_both_sides_starts_once() -> None:
    both = Recorder()
    appliers = SideAppliers({Side.NEW: both, Side.OLD: both}, {})
    await appliers.start()
    await appliers.close()
    assert (both.started, both.closed) == (1, 1)


async def test_a_side_without_an_applier_fails_its_intents_for_good_naming_the_setting() -> None:
    toward_new = BatchRecorder()
    appliers = SideAppliers({Side.NEW: toward_new}, {Side.OLD: "worker.postgres.old"})
    with pytest.raises(
        PermanentApplyError, match="no applier toward old: worker.postgres.old is not configured"
    ):
        await appliers.apply_batch([intent(Side.NEW, "/n1"), intent(Side.OLD, "/o1")])
    assert toward_new.batches == []  # refused before anything of the batch was applied
    with pytest.raises(PermanentApplyError, match="worker.postgres.old"):
        await appliers.apply(intent(Side.OLD, "/o1"))
    await appliers.apply(intent(Side.NEW, "/n1"))
    assert toward_new.applied == ["/n1"]


@dataclass
class SettlingRecorder(Recorder):
    """An HTTP-like applier: settles intents in doubt and resolves dead letters."""

    resolved: list[str] = field(default_factory=list)

    async def resolve(self, intent: Intent) -> None:
        self.resolved.append(intent.path)

    async def resolve_dead_letter(self, intent: Intent) -> str:
        self.resolved.append(intent.path)
        return "PUT"


async def test_an_http_side_keeps_its_exactly_once_machinery() -> None:
    """PostgreSQL toward new, HTTP toward old: the worker must keep its ledger and settle old's intents in
    doubt (it does when the applier offers `resolve`), and never batch them past the ledger."""
    toward_new, toward_old = BatchRecorder(), SettlingRecorder()
    appliers = SideAppliers({Side.NEW: toward_new, Side.OLD: toward_old}, {})
    assert appliers.batchable(intent(Side.NEW, "/items/1"))
    assert not appliers.batchable(intent(Side.OLD, "/items/1"))
    await appliers.resolve(intent(Side.OLD, "/items/2"))
    await appliers.resolve(intent(Side.NEW, "/items/3"))  # idempotent by itself: applied again
    assert toward_old.resolved == ["/items/2"]
    assert toward_old.applied == []
    assert toward_new.applied == ["/items/3"]
    assert await appliers.resolve_dead_letter(intent(Side.OLD, "/items/4")) == "PUT"
    with pytest.raises(PermanentApplyError, match="cannot resolve a dead letter"):
        await appliers.resolve_dead_letter(intent(Side.NEW, "/items/5"))
