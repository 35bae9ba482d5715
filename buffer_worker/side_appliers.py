"""The worker's applier when the sides are applied differently: each intent goes to the applier of the side
it names (`Intent.target`), e.g. PostgreSQL toward new and HTTP toward old when old's database is MariaDB.

A batch is split by side, order kept within each side (the sides are separate stores: no write of one
can depend on the order of the other's). A side whose applier applies batches (PostgreSQL) gets its part
in one call; the others (HTTP) intent by intent. The parts are not atomic together: when one fails, the
worker retries the batch or applies it entry by entry, and what was applied already is a no-op the
second time (the PostgreSQL ledger, the HTTP replay's `Idempotency-Key`).

A side with no applier (`worker.applier` names postgres for it but `worker.postgres.<side>` is not
configured) fails its intents for good, naming the setting: they are dead-lettered, never applied
elsewhere. The admin API refuses the phase moves that would produce them (`proxy.control.phase_moves`).

An HTTP side keeps its exactly-once machinery: the dispatcher offers `resolve` and
`resolve_dead_letter` (so the worker keeps its ledger and settles intents in doubt), and says which
intents may go in a one-call batch (`batchable`): only those of a side that applies batches itself,
whose idempotence is its own (the PostgreSQL ledger). An intent toward an HTTP side must pass through
the worker's ledger, one by one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence

from buffer_worker.applier import Applier, BatchApplier
from buffer_worker.apply_errors import PermanentApplyError
from buffer_worker.copy_marks import Outcomes
from buffer_worker.intent import Intent
from routing.phases import Side


class SideAppliers:
    def __init__(self, appliers: Mapping[Side, Applier], missing: Mapping[Side, str]) -> None:
        self._appliers = dict(appliers)
        self._missing = dict(missing)  # side -> the setting its intents need
        # One applier may serve both sides (HTTP): start and close it once.
        self._distinct = list({id(a): a for a in self._appliers.values()}.values())
        # Decided once: `batchable` is asked for every intent of every batch.
        self._batching = {side for side, a in self._appliers.items() if isinstance(a, BatchApplier)}
        # The HTTP side's record of what it settled (the copies' facts), when there is one.
        self.outcomes: Outcomes | None = next(
            (o for a in self._distinct if (o := getattr(a, "outcomes", None)) is not None), None
        )

    async def start(self) -> None:
        for applier in self._distinct:
            await applier.start()

    async def close(self) -> None:
        for applier in self._distinct:
            await applier.close()

    async def apply(self, intent: Intent) -> None:
        await self._toward(intent).apply(intent)

    async def apply_batch(self, intents: Sequence[Intent]) -> None:
        by_side: dict[Side, list[Intent]] = {}
        for intent in intents:
            self._toward(intent)
            by_side.setdefault(intent.target, []).append(intent)
        for side, part in by_side.items():
            applier = self._appliers[side]
            if isinstance(applier, BatchApplier):
                await applier.apply_batch(part)
                continue
            for intent in part:
                await applier.apply(intent)

    def batchable(self, intent: Intent) -> bool:
        """Whether `intent` may be applied in a one-call batch, outside the worker's ledger."""
        return intent.target in self._batching

    async def resolve(self, intent: Intent) -> None:
        """An intent in doubt: settled from the authoritative side by an applier that can (HTTP);
        applied again by one whose applies are idempotent by themselves (PostgreSQL's ledger)."""
        applier = self._toward(intent)
        resolve: Callable[[Intent], Awaitable[None]] | None = getattr(applier, "resolve", None)
        await (resolve(intent) if resolve is not None else applier.apply(intent))

    async def resolve_dead_letter(self, intent: Intent) -> str:
        applier = self._toward(intent)
        resolve_letter: Callable[[Intent], Awaitable[str]] | None = getattr(
            applier, "resolve_dead_letter", None
        )
        if resolve_letter is None:
            raise PermanentApplyError(
                intent, f"the applier toward {intent.target} cannot resolve a dead letter by state transfer"
            )
        return await resolve_letter(intent)

    def _toward(self, intent: Intent) -> Applier:
        applier = self._appliers.get(intent.target)
        if applier is None:
            setting = self._missing.get(intent.target, f"an applier toward {intent.target}")
            raise PermanentApplyError(
                intent, f"no applier toward {intent.target}: {setting} is not configured"
            )
        return applier
