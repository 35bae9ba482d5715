"""Verification for backends without database access: page through a list endpoint on both sides
(`data.rest.resources`, with the copy's lister: `backfill.rest_pages`, every paging style) with the
tenant's header, and compare the records by id.

Each side is paged with its backend's URL, credentials and header rewrites, exactly as the proxy sends
requests there. Fields listed in `ignore_fields` (timestamps of serving and the like) are left out of the
comparison. Records whose ids have intents still pending in the buffer (writes to the record's path:
`item_path`, else `<list_path>/<id>`) are compared again, from freshly read pages, once the buffer has
applied them. With a repair source, the differing records are transferred from it (`backfill.rest_repair`)
and the resource is verified again.

Records are equal when their bodies read alike to a client (`same`): Python's `==` would take `true` for
`1`, `1` for `1.0` and `-0.0` for `0.0`, so values of different JSON types differ, and numbers with a
fraction or an exponent are parsed as Decimal and compared by their digits and scale (`1.0` ≠ `1.00`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import replace
from decimal import Decimal
from typing import Any

from backends.client import BackendClient
from backfill.errors import RepairRefusedError
from backfill.pending import PendingIntents, PendingSnapshot
from backfill.repair import RepairResult, SkippedKey, left_to_verification, refused_json
from backfill.report import KINDS, TableReport
from backfill.rest_pages import RestLister
from backfill.rest_repair import repair_records
from buffer_worker.http_applier import HttpApplier
from config.data import DataTable, RestResource, TableSide
from config.settings import Settings
from routing.phases import Side

Record = dict[str, Any]


class RestSide:
    def __init__(self, label: str, client: BackendClient, settings: Settings, tenant: str) -> None:
        self.label = label
        self._client = client
        self._tenant_header = settings.tenant.header
        self._tenant = tenant
        self._timeout_s = settings.data.rest.timeout_s

    async def records(self, resource: RestResource) -> tuple[dict[str, Record], int, int]:
        """Every record by id, the number of pages read, and records without an id."""
        lister = RestLister(
            self._client,
            resource,
            tenant=self._tenant,
            tenant_header=self._tenant_header,
            timeout_s=self._timeout_s,
            label=self.label,
        )
        found: dict[str, Record] = {}
        without_id = 0
        pages = 0
        async for page in lister.pages():
            pages += 1
            for item in page.items:
                if not isinstance(item, dict) or item.get(resource.id_field) is None:
                    without_id += 1
                    continue
                found[str(item[resource.id_field])] = {
                    k: v for k, v in item.items() if k not in resource.ignore_fields
                }
        return found, pages, without_id


def compare(old: dict[str, Record], new: dict[str, Record]) -> dict[str, str]:
    found: dict[str, str] = {}
    for key, record in old.items():
        other = new.get(key)
        if other is None:
            found[key] = "missing_on_new"
        elif not same(record, other):
            found[key] = "different"
    for key in new.keys() - old.keys():
        found[key] = "missing_on_old"
    return found


def same(a: Any, b: Any) -> bool:
    """Whether two parsed JSON values read alike: same JSON types throughout, equal strings, integers
    and booleans, and numbers with a fraction (Decimal) of the same text."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(value, b[key]) for key, value in a.items())
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, Decimal):
        return str(a) == str(b)
    return bool(a == b)


def shown(value: Any) -> Any:
    """A parsed value as a report shows it (JSON numbers, not Decimal)."""
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, dict):
        return {key: shown(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shown(item) for item in value]
    return value


def _sample_values(a: Any, b: Any) -> dict[str, Any]:
    """A differing field's two values; as text where the shown numbers look alike (1.0 and 1.00)."""
    old, new = shown(a), shown(b)
    if old == new and type(old) is type(new):
        return {"old": _text(a), "new": _text(b)}
    return {"old": old, "new": new}


def _text(value: Any) -> str:
    return json.dumps(value, default=str, sort_keys=True) if isinstance(value, dict | list) else str(value)


def _as_table(resource: RestResource) -> DataTable:
    """The resource as `PendingSnapshot.covers` understands it: writes to its record path."""
    side = TableSide(table=resource.name)
    return DataTable(name=resource.name, old=side, new=side, path=resource.record_path)


async def verify_resources(
    settings: Settings,
    resources: list[RestResource],
    tenant: str,
    pending: PendingIntents,
    source: Side | None = None,
) -> list[TableReport]:
    """Verify `resources`; with a `source`, repair what differs from it and verify again."""
    rest = settings.data.rest
    gate = asyncio.Semaphore(rest.concurrency)
    async with contextlib.AsyncExitStack() as stack:
        clients = {}
        for side in Side:
            client = BackendClient.of(settings, side)
            await client.start()
            stack.push_async_callback(client.close)
            clients[side] = client
        old = RestSide("old", clients[Side.OLD], settings, tenant)
        new = RestSide("new", clients[Side.NEW], settings, tenant)
        applier: HttpApplier | None = None
        if source is not None:
            applier = HttpApplier(settings)
            await applier.start()
            stack.push_async_callback(applier.close)

        max_keys = settings.data.verify.max_keys

        async def one(resource: RestResource) -> TableReport:
            async with gate:
                report, differing, left = await _verify_resource(
                    settings, resource, tenant, old, new, pending
                )
                if applier is None or source is None:
                    return report
                if not differing:
                    if left:  # nothing to repair, but say what was left out and why
                        skipped = RepairResult(source, 0, 0, skipped=tuple(left))
                        report.repair = skipped.as_json(0, report.counts, max_keys=max_keys)
                    return report
                try:
                    result = await repair_records(
                        applier, resource, tenant, source, differing, rest.concurrency
                    )
                except RepairRefusedError as exc:
                    report.repair = refused_json(source, len(differing), exc.detail)
                    return report
                after, _, _ = await _verify_resource(settings, resource, tenant, old, new, pending)
                result = replace(result, skipped=(*left, *result.skipped))
                after.repair = result.as_json(len(differing), report.counts, max_keys=max_keys)
                after.warnings = report.warnings + after.warnings
                return after

        return list(await asyncio.gather(*(one(r) for r in resources)))


async def _verify_resource(
    settings: Settings,
    resource: RestResource,
    tenant: str,
    old: RestSide,
    new: RestSide,
    pending: PendingIntents,
) -> tuple[TableReport, list[str], list[SkippedKey]]:
    """The resource's report, the ids it reports as differing (unsettled ones left out), and the ids
    that differed but are not reported as such (still pending, or equal when compared again)."""
    verify = settings.data.verify
    started = time.monotonic()
    report = TableReport(resource.name, kind="rest")
    (old_records, old_pages, old_bad), (new_records, new_pages, new_bad) = await asyncio.gather(
        old.records(resource), new.records(resource)
    )
    report.ranges = max(old_pages, new_pages)
    found = compare(old_records, new_records)
    first_found = set(found)
    table = _as_table(resource)
    snapshot: PendingSnapshot | None = None
    deferred: set[str] = set()
    if found:
        snapshot = await pending.snapshot(tenant)
        if snapshot.error:
            report.warnings.append(f"{snapshot.error}: differences were not checked against pending intents")
        deferred = {key for key in found if snapshot.covers(table, (key,))}
    for _ in range(verify.recheck_rounds):
        if not deferred or snapshot is None:
            break
        if not await pending.wait_drained(snapshot, verify.drain_timeout_s):
            report.warnings.append(f"the buffer did not drain within {verify.drain_timeout_s} s")
        snapshot = await pending.snapshot(tenant)
        report.rechecked += len(deferred)
        (old_records, _, old_bad), (new_records, _, new_bad) = await asyncio.gather(
            old.records(resource), new.records(resource)
        )
        found = compare(old_records, new_records)
        deferred = {key for key in found if snapshot.covers(table, (key,))}
    report.rows_old, report.rows_new = len(old_records), len(new_records)
    report.ranges_mismatched = 1 if found else 0
    for key in sorted(found):
        report.add("unsettled" if key in deferred else found[key], (key,), verify.max_keys)
    if old_bad or new_bad:
        report.warnings.append(f"records without {resource.id_field!r} skipped: old {old_bad}, new {new_bad}")
    reported = sorted((k for k in found if k not in deferred), key=lambda k: (KINDS.index(found[k]), k))
    for key in reported[: verify.sample_diffs]:
        a, b = old_records.get(key), new_records.get(key)
        fields = sorted(set(a or {}) | set(b or {}))
        if a is None or b is None:
            columns = {
                f: {
                    "old": None if a is None else shown(a.get(f)),
                    "new": None if b is None else shown(b.get(f)),
                }
                for f in fields
            }
        else:
            columns = {
                f: _sample_values(a.get(f), b.get(f))
                for f in fields
                if f not in a or f not in b or not same(a[f], b[f])
            }
        report.samples.append({"key": [key], "kind": found[key], "columns": columns})
    report.seconds = time.monotonic() - started
    left = left_to_verification(((key,) for key in deferred), ((key,) for key in first_found - set(found)))
    return report, sorted(reported), left
