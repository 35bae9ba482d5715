"""Repair of REST resources: each differing record is set, on the side that is not authoritative, to its
state on the authoritative one through the HTTP applier's state transfer (what the buffer worker does for
`worker.state_transfer` resources): a GET of the record at `item_path` on the authoritative side, then a
PUT of that representation to the other side, or a DELETE there when the authoritative side answers
404/410. Each transfer carries its own `Idempotency-Key`, as a mirrored write does.

No lock covers a mirror written over HTTP: a client write of the same record racing the repair can reach
the mirror before the repair's PUT of what was read just before it. The verification that follows the
repair reports such a record; running `--repair` again settles it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from urllib.parse import quote

from backfill.errors import RepairRefusedError
from backfill.repair import SIDE_UNREACHABLE, TRANSFER_FAILED, RepairResult, SkippedKey
from buffer_worker.apply_errors import ApplyError, UnreachableError
from buffer_worker.http_applier import HttpApplier
from buffer_worker.intent import Intent
from config.data import RestResource
from routing.phases import Side


async def repair_records(
    applier: HttpApplier,
    resource: RestResource,
    tenant: str,
    source: Side,
    ids: Sequence[str],
    concurrency: int,
) -> RepairResult:
    """Transfer each of `ids` from `source` to the other side. A record whose transfer fails is counted,
    skipped with the failure (the status and answer of the side that refused it), and left to the
    verification that follows."""
    if resource.item_path is None:
        raise RepairRefusedError(
            resource.name,
            "no item_path configured: repair reads each differing record at its own path on the"
            " authoritative side and writes it there on the other (e.g. item_path: /things/{key})",
        )
    prefix, _, suffix = resource.item_path.partition("{key}")
    gate = asyncio.Semaphore(concurrency)
    sent: list[str] = []
    skipped: list[SkippedKey] = []

    async def one(record_id: str) -> None:
        intent = Intent(
            tenant=tenant,
            target=source.other,
            method="PUT",
            path=prefix + quote(record_id, safe="") + suffix,
            query="",
            headers=(),
            body=b"",
            status=200,
            response_body=b"",
            intent_id=f"repair-{uuid.uuid4().hex}",
        )
        async with gate:
            try:
                sent.append(await applier.transfer_state(intent, intent.path))
            except ApplyError as exc:
                reason = SIDE_UNREACHABLE if isinstance(exc, UnreachableError) else TRANSFER_FAILED
                said = f": {exc.excerpt}" if exc.excerpt else ""
                skipped.append(SkippedKey((record_id,), reason, exc.detail + said))

    await asyncio.gather(*(one(record_id) for record_id in ids))
    skipped.sort(key=lambda item: item.key)
    return RepairResult(
        source, sent.count("PUT"), sent.count("DELETE"), failed=len(skipped), skipped=tuple(skipped)
    )
