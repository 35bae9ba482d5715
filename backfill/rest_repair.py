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
from backfill.repair import RepairResult
from buffer_worker.apply_errors import ApplyError
from buffer_worker.http_applier import HttpApplier
from buffer_worker.intent import Intent
from config.data import RestResource
from routing.phases import Side

_ERRORS_SHOWN = 5


async def repair_records(
    applier: HttpApplier,
    resource: RestResource,
    tenant: str,
    source: Side,
    ids: Sequence[str],
    concurrency: int,
) -> tuple[RepairResult, list[str]]:
    """Transfer each of `ids` from `source` to the other side; the result, and the first errors (a record
    that fails is counted and left to the verification that follows)."""
    if resource.item_path is None:
        raise RepairRefusedError(
            resource.name,
            "no item_path configured: repair reads each differing record at its own path on the"
            " authoritative side and writes it there on the other (e.g. item_path: /things/{key})",
        )
    prefix, _, suffix = resource.item_path.partition("{key}")
    gate = asyncio.Semaphore(concurrency)
    sent: list[str] = []
    errors: list[str] = []

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
                errors.append(f"record {record_id}: {exc.detail}")

    await asyncio.gather(*(one(record_id) for record_id in ids))
    result = RepairResult(source, sent.count("PUT"), sent.count("DELETE"), failed=len(errors))
    shown = errors[:_ERRORS_SHOWN]
    if len(errors) > len(shown):
        shown.append(f"... and {len(errors) - len(shown)} more records not repaired")
    return result, shown
