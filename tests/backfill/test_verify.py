"""Verification against real PostgreSQL and Redis: exactly the corrupted keys are found among 200k rows,
repair fixes them, and keys whose mirrored writes are still in the buffer are re-checked, not reported."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import orjson
import pytest

from backfill.pending import PendingIntents, PendingSnapshot
from backfill.report import render
from backfill.runner import BackfillOptions, run_backfill
from backfill.verify_run import VerifyOptions, run_verify
from buffer_worker.pg_applier import PostgresApplier
from buffer_worker.worker import Worker
from config.settings import Settings
from proxy.cli.support import format_table
from routing.phases import Phase
from tests.backfill.conftest import DataEnv, create_orders, fill_orders, orders_table, unique
from tests.support.intents import append_mirrored_put

ROWS = 200_000


async def test_finds_exactly_the_corrupted_keys_among_200k_and_repair_fixes_them(
    data_env: DataEnv, tenant: str
) -> None:
    old_table, new_table = unique("v_old"), unique("v_new")
    await create_orders(data_env, old_table, [new_table])
    await fill_orders(data_env, old_table, tenant, ROWS)
    await fill_orders(data_env, old_table, f"{tenant}-other", 500)
    await data_env.set_phase(tenant, Phase.SHADOW)
    settings = data_env.settings([orders_table("orders", old_table, new_table)])
    await run_backfill(settings, BackfillOptions(tenant, chunk_rows=20_000))
    clean = await run_verify(settings, VerifyOptions(tenant))
    assert clean.passed
    assert clean.tables[0].rows_old == clean.tables[0].rows_new == ROWS

    deleted = [1, 2, 77_777, 200_000]  # the first keys, one in the middle, the last
    altered = {3: "quantity = quantity + 1", 100_000: "price = price + 0.01", 150_001: "note = 'changed'"}
    altered[150_002] = "created = created + interval '1 microsecond'"
    added_on_new = [0, 123_456_789, -5]  # below the first key, beyond the last
    added_on_old = [200_001, 300_000]
    new = await data_env.new()
    old = await data_env.old()
    try:
        await new.execute(
            f"DELETE FROM {new_table} WHERE tenant_id = $1 AND id = ANY($2::bigint[])", tenant, deleted
        )
        for key, change in altered.items():
            await new.execute(
                f"UPDATE {new_table} SET {change} WHERE tenant_id = $1 AND id = $2", tenant, key
            )
        for key in added_on_new:
            await new.execute(
                f"INSERT INTO {new_table} SELECT tenant_id, $2, customer, quantity, price, note, created"
                f" FROM {new_table} WHERE tenant_id = $1 AND id = 10",
                tenant,
                key,
            )
        for key in added_on_old:
            await old.execute(
                f"INSERT INTO {old_table} VALUES ($1, $2, 'late', 1, 1.00, 'x', now())", tenant, key
            )
    finally:
        await new.close()
        await old.close()

    run = await run_verify(settings, VerifyOptions(tenant))
    report = run.tables[0]
    assert not run.passed
    assert _keys(report.keys["missing_on_new"]) == set(deleted) | set(added_on_old)
    assert _keys(report.keys["missing_on_old"]) == set(added_on_new)
    assert _keys(report.keys["different"]) == set(altered)
    assert report.counts == {"missing_on_new": 6, "missing_on_old": 3, "different": 4, "unsettled": 0}
    assert report.rows_old == ROWS + 2
    assert report.rows_new == ROWS - 4 + 3
    samples = {int(s["key"][0]): s for s in report.samples}
    assert set(samples[3]["columns"]) == {"quantity"}
    assert samples[3]["columns"]["quantity"] == {"old": 3, "new": 4}
    assert set(samples[150_002]["columns"]) == {"created"}
    assert samples[1]["kind"] == "missing_on_new"
    assert samples[1]["columns"]["customer"]["new"] is None
    assert report.sums["quantity"]["old"] != report.sums["quantity"]["new"]
    text = render(run.as_json(), format_table)
    assert "FAIL" in text
    assert "quantity: 3 -> 4" in text
    stored = await _stored(data_env, run.report_ids["orders"])
    assert stored["passed"] is False
    assert stored["report"]["counts"]["different"] == 4

    repaired = await run_verify(settings, VerifyOptions(tenant, repair=True))
    result = repaired.tables[0]
    assert repaired.passed, result.as_json()
    assert result.repair is not None
    assert result.repair["copied"] == 6 + 4
    assert result.repair["deleted"] == 3
    assert result.repair["before"]["different"] == 4
    assert (await run_verify(settings, VerifyOptions(tenant, store=False))).passed


def _keys(keys: list[list[str]]) -> set[int]:
    return {int(k[0]) for k in keys}


async def _stored(env: DataEnv, report_id: int) -> dict[str, Any]:
    conn = await asyncpg.connect(env.control_url)
    try:
        row = await conn.fetchrow("SELECT passed, report FROM cutover_verify_report WHERE id = $1", report_id)
        assert row is not None
        return {"passed": row["passed"], "report": orjson.loads(row["report"])}
    finally:
        await conn.close()


async def test_composite_keys_and_a_transform(data_env: DataEnv, tenant: str) -> None:
    table = unique("regions")
    ddl = (
        f"CREATE TABLE {table} (tenant_id text, region text, n integer, amount double precision, label text,"
    )
    ddl += " PRIMARY KEY (tenant_id, region, n))"
    await data_env.execute(data_env.old_url, ddl)
    await data_env.execute(data_env.new_url, ddl)
    await data_env.execute(
        data_env.old_url,
        f"INSERT INTO {table} SELECT $1, r, n, n * 0.1, r || n FROM unnest(ARRAY['eu', 'us', 'ap']) AS r,"
        " generate_series(1, 3000) AS n",
        tenant,
    )
    await data_env.set_phase(tenant, Phase.DUAL_WRITE)
    transform = {"function": f"{__name__}.shout", "version": "1"}
    config = {"name": "regions", "old": {"table": table}, "new": {"table": table}, "key": ["region", "n"]}
    settings = data_env.settings(
        [{**config, "transform": transform}], verify={"range_rows": 500, "leaf_rows": 50}
    )
    await run_backfill(settings, BackfillOptions(tenant, chunk_rows=1000))
    assert (await run_verify(settings, VerifyOptions(tenant))).passed
    await data_env.execute(
        data_env.new_url, f"UPDATE {table} SET amount = amount + 1 WHERE region = 'us' AND n = 1500"
    )
    await data_env.execute(data_env.new_url, f"DELETE FROM {table} WHERE region = 'eu' AND n = 3000")
    run = await run_verify(settings, VerifyOptions(tenant))
    report = run.tables[0]
    assert report.keys["different"] == [["us", "1500"]]
    assert report.keys["missing_on_new"] == [["eu", "3000"]]
    assert report.transform == f"{__name__}.shout@1"
    assert (await run_verify(settings, VerifyOptions(tenant, repair=True))).passed
    # Without the transform the label column differs on every row.
    plain = data_env.settings([config], verify={"range_rows": 500, "leaf_rows": 50, "max_keys": 5})
    report = (await run_verify(plain, VerifyOptions(tenant, store=False))).tables[0]
    assert report.counts["different"] == 9000
    assert len(report.keys["different"]) == 5


def shout(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "label": row["label"].upper()}


ITEMS = """CREATE TABLE {name} (tenant_id text NOT NULL, id text NOT NULL, doc jsonb NOT NULL,
PRIMARY KEY (tenant_id, id))"""


async def _items_setup(
    data_env: DataEnv, tenant: str, prefix: str, verify: dict[str, float] | None = None
) -> tuple[Settings, str]:
    table = unique("items")
    for url in (data_env.old_url, data_env.new_url):
        await data_env.execute(url, ITEMS.format(name=table))
        await data_env.execute(
            url,
            f"INSERT INTO {table} SELECT $1, 'k' || g, jsonb_build_object('id', 'k' || g, 'v', 0)"
            " FROM generate_series(1, 5000) AS g",
            tenant,
        )
    await data_env.set_phase(tenant, Phase.DUAL_WRITE)
    raw = data_env.raw_settings(
        [{"name": "items", "old": {"table": table}, "new": {"table": table}, "path": "/items/{key}"}],
        verify=verify or {"drain_timeout_s": 1.5, "recheck_rounds": 2},
    )
    raw["buffer"] = {"key_prefix": prefix, "partitions": 4}
    raw["worker"] = {
        "applier": "postgres",
        "batch_size": 50,
        "block_ms": 50,
        "postgres": {"url": data_env.new_url, "resources": [{"path": "/items/{key}", "table": table}]},
    }
    return Settings.model_validate(raw), table


async def _write_old_and_buffer(
    data_env: DataEnv, settings: Settings, table: str, tenant: str, key: str
) -> None:
    """A client write: applied on old (authoritative), its intent appended to the buffer, not applied."""
    body = {"id": key, "v": 1}
    await data_env.execute(
        data_env.old_url,
        f"UPDATE {table} SET doc = $3::jsonb WHERE tenant_id = $1 AND id = $2",
        tenant,
        key,
        orjson.dumps(body).decode(),
    )
    await append_mirrored_put(settings, tenant, f"/items/{key}", orjson.dumps(body))


async def test_keys_with_pending_intents_are_rechecked_after_the_buffer_drains(
    data_env: DataEnv, tenant: str, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, table = await _items_setup(data_env, tenant, prefix)
    await _write_old_and_buffer(data_env, settings, table, tenant, "k42")
    await data_env.execute(
        data_env.new_url, f"UPDATE {table} SET doc = '{{}}' WHERE id = 'k7' AND tenant_id = $1", tenant
    )
    waiting = asyncio.Event()
    wait_drained = PendingIntents.wait_drained

    async def spied(self: PendingIntents, snapshot: PendingSnapshot, timeout_s: float) -> bool:
        waiting.set()
        return await wait_drained(self, snapshot, timeout_s)

    monkeypatch.setattr(PendingIntents, "wait_drained", spied)
    verify = asyncio.create_task(run_verify(settings, VerifyOptions(tenant)))
    # Verification finds k42 different and waits for the buffer; only then is the worker started.
    await asyncio.wait_for(waiting.wait(), 10)
    assert not verify.done()
    stop = asyncio.Event()
    worker = Worker(settings, PostgresApplier(settings.worker.postgres))  # type: ignore[arg-type]
    running = asyncio.create_task(worker.run(stop))
    try:
        report = (await verify).tables[0]
    finally:
        stop.set()
        await running
    assert report.keys["different"] == [["k7"]]  # corrupted, no intent: reported
    assert report.counts["unsettled"] == 0  # k42 converged once its intent was applied
    assert report.rechecked >= 1


async def test_keys_whose_intents_never_drain_are_unsettled_not_different(
    data_env: DataEnv, tenant: str, prefix: str
) -> None:
    # Nothing applies the intent (no worker runs): every round's wait runs out, however long it is.
    never = {"drain_timeout_s": 0.2, "recheck_rounds": 2}
    settings, table = await _items_setup(data_env, tenant, prefix, verify=never)
    await _write_old_and_buffer(data_env, settings, table, tenant, "k9")
    run = await run_verify(settings, VerifyOptions(tenant, store=False))
    report = run.tables[0]
    assert not run.passed
    assert report.keys["unsettled"] == [["k9"]]
    assert report.counts["different"] == 0
    assert any("did not drain" in warning for warning in report.warnings)


async def test_types_without_a_hash_function_are_compared_by_their_text(
    data_env: DataEnv, tenant: str
) -> None:
    table = unique("notes")
    ddl = f"CREATE TABLE {table} (tenant_id text, id integer, body json, at timestamptz,"
    ddl += " PRIMARY KEY (tenant_id, id))"
    await data_env.execute(data_env.old_url, ddl)
    await data_env.execute(data_env.new_url, ddl)
    fill = f"INSERT INTO {table} SELECT $1, g, json_build_object('n', g), now()"
    fill += " FROM generate_series(1, 3000) AS g"
    await data_env.execute(data_env.old_url, fill, tenant)
    await data_env.set_phase(tenant, Phase.DUAL_WRITE)
    settings = data_env.settings([{"name": "notes", "old": {"table": table}, "new": {"table": table}}])
    await run_backfill(settings, BackfillOptions(tenant, chunk_rows=1000))
    assert (await run_verify(settings, VerifyOptions(tenant, store=False))).passed
    await data_env.execute(data_env.new_url, f"""UPDATE {table} SET body = '{{"n": 2999}}' WHERE id = 2999""")
    report = (await run_verify(settings, VerifyOptions(tenant, store=False))).tables[0]
    assert report.keys["different"] == [["2999"]]  # json text `{"n" : 2999}` is not `{"n": 2999}`


async def test_a_repair_names_the_keys_it_left_to_the_buffer(
    data_env: DataEnv, tenant: str, prefix: str
) -> None:
    fast = {"drain_timeout_s": 0.2, "recheck_rounds": 1}
    settings, table = await _items_setup(data_env, tenant, prefix, verify=fast)
    await _write_old_and_buffer(data_env, settings, table, tenant, "k9")  # never applied: no worker runs
    await data_env.execute(
        data_env.new_url, f"UPDATE {table} SET doc = '{{}}' WHERE id = 'k7' AND tenant_id = $1", tenant
    )
    run = await run_verify(settings, VerifyOptions(tenant, repair=True, store=False))
    report = run.tables[0]
    assert report.repair is not None
    assert report.repair["copied"] == 1
    [skipped] = report.repair["skipped"]
    assert (skipped["key"], skipped["reason"]) == (["k9"], "pending_intents")
    assert report.keys["unsettled"] == [["k9"]]
    text = render(run.as_json(), format_table)
    assert "items: not repaired (pending intents): k9: intents for it were still pending" in text
