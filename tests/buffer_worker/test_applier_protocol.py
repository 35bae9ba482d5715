"""The applier contract: a batch applier is recognised by its declared protocol, and a create the
PostgreSQL applier turns into a PUT keeps every field of the intent but method and path.
Pure: no server is started (about 0.01 s)."""

from __future__ import annotations

import msgspec

from buffer_worker.applier import Applier, BatchApplier
from buffer_worker.intent import Intent
from buffer_worker.pg_applier import _as_put
from buffer_worker.side_appliers import SideAppliers
from routing.phases import Side
from tests.buffer_worker.test_side_appliers import BatchRecorder, Recorder


def _intent(target: Side, intent_id: str) -> Intent:
    return Intent(
        tenant="acme",
        target=target,
        method="POST",
        path="/items",
        query="",
        headers=(("content-type", "application/json"),),
        body=b'{"name": "x"}',
        status=201,
        response_body=b'{"id": "42"}',
        response_headers=(("location", "/items/42"),),
        intent_id=intent_id,
        created_ms=1,
        traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    )


def test_the_batch_protocol_is_what_offers_apply_batch() -> None:
    assert isinstance(BatchRecorder(), BatchApplier)
    assert isinstance(Recorder(), Applier)
    assert not isinstance(Recorder(), BatchApplier)


def test_side_appliers_batch_only_toward_a_batch_applier() -> None:
    sides = SideAppliers({Side.NEW: BatchRecorder(), Side.OLD: Recorder()}, {})
    assert [sides.batchable(_intent(side, "i")) for side in (Side.NEW, Side.OLD)] == [True, False]


def test_a_create_as_put_keeps_every_field_but_method_and_path() -> None:
    create = _intent(Side.NEW, "c1")
    put = _as_put(create, "/items/42")
    assert (put.method, put.path) == ("PUT", "/items/42")
    changed = {"method", "path"}
    kept = {f: getattr(create, f) for f in create.__struct_fields__ if f not in changed}
    assert {f: getattr(put, f) for f in kept} == kept
    # The two fields a hand-written copy once dropped: the trace context and the authoritative headers.
    assert put.traceparent == create.traceparent
    assert put.response_headers == create.response_headers
    assert msgspec.structs.replace(put, method="POST", path="/items") == create
