"""What the worker asks of an applier: `Applier` applies one intent at a time; a `BatchApplier` also
applies a whole batch in one call, atomically and in order (`PostgresApplier`: one transaction), which the
worker prefers when a batch allows (`Worker._apply_whole_batch`).

Other abilities are optional and found by name: `resolve(intent)` (`HttpApplier`) applies an intent whose
fate is in doubt without sending it twice, and gives the worker its ledger of applied intent ids and its
in-doubt handling; `batchable(intent)` (`SideAppliers`) says which intents may skip that ledger in a
one-call batch; `outcomes` (`copy_marks.Outcomes`) counts what was settled in the facts of open copies.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from buffer_worker.intent import Intent


@runtime_checkable
class Applier(Protocol):
    async def start(self) -> None: ...
    async def apply(self, intent: Intent) -> None: ...
    async def close(self) -> None: ...


@runtime_checkable
class BatchApplier(Applier, Protocol):
    async def apply_batch(self, intents: Sequence[Intent]) -> None: ...
