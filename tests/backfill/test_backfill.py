"""Backfill against real PostgreSQL: SIGKILLed runs resume to the same result as an uninterrupted one,
mirrored writes racing the copy are never undone, phases and checkpoints are respected."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest

from backfill.errors import CheckpointMismatchError, DataError, PhaseRefusedError
from backfill.runner import BackfillOptions, run_backfill
from buffer_worker.intent import Intent
from buffer_worker.pg_applier import PostgresApplier
from config.settings import PostgresApplierSettings
from routing.phases import Phase, Side
from tests.backfill.conftest import (
    DataEnv,
    create_orders,
    fill_orders,
    orders_table,
    table_digest,
    unique,
)

ROWS = 200_000


def _cli_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("CUTOVER_")}


async def _copied(new: asyncpg.Connection, tenant: str, table: str) -> int:
    value = await new.fetchval(
        "SELECT coalesce(sum(rows_copied), 0) FROM cutover_backfill_checkpoint"
        " WHERE tenant = $1 AND table_name = $2",
        tenant,
        table,
    )
    return int(value)


@pytest.mark.slow
@pytest.mark.fault
async def test_sigkilled_three_times_then_resumed_equals_an_uninterrupted_run(
    data_env: DataEnv, tmp_path: Path, tenant: str
) -> None:
    old_table, killed_table, reference_table = unique("o_old"), unique("o_killed"), unique("o_ref")
    await create_orders(data_env, old_table, [killed_table, reference_table])
    await fill_orders(data_env, old_table, tenant, ROWS)
    await fill_orders(data_env, old_table, f"{tenant}-bystander", 1_000)
    await data_env.set_phase(tenant, Phase.DUAL_WRITE)
    config = data_env.config_file(tmp_path, [orders_table("orders", old_table, killed_table)])
    command = [
        sys.executable,
        "-m",
        "proxy.cli.main",
        "backfill",
        "--config",
        str(config),
        "--tenant",
        tenant,
    ]
    command += ["--chunk-rows", "5000"]
    new = await data_env.new()
    try:
        previous = 0
        for threshold in (20_000, 70_000, 120_000):
            process = await asyncio.create_subprocess_exec(
                *command, env=_cli_env(), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
            )
            while (copied := await _copied(new, tenant, "orders")) < threshold:
                assert process.returncode is None, "the backfill finished before it could be killed"
                await asyncio.sleep(0.005)
            await asyncio.sleep(random.uniform(0, 0.03))  # land anywhere inside the next chunk
            process.send_signal(signal.SIGKILL)
            await process.wait()
            assert process.returncode == -signal.SIGKILL
            # Rows and checkpoint commit together: exactly the checkpointed rows are there, no more.
            copied = await _copied(new, tenant, "orders")
            rows = await new.fetchval(f"SELECT count(*) FROM {killed_table} WHERE tenant_id = $1", tenant)
            assert rows == copied > previous
            previous = copied
        process = await asyncio.create_subprocess_exec(
            *command, env=_cli_env(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        out, err = await process.communicate()
        assert process.returncode == 0, err.decode()
        assert "resumed" in out.decode()
        assert "rows/s" in err.decode()  # plain progress lines when stderr is not a terminal
    finally:
        await new.close()

    settings = data_env.settings([orders_table("orders_ref", old_table, reference_table)])
    report = await run_backfill(settings, BackfillOptions(tenant, chunk_rows=5000))
    assert report.tables[0].rows_copied == ROWS
    assert not report.tables[0].resumed

    killed = await table_digest(data_env.new_url, killed_table, "tenant_id", tenant, "id")
    reference = await table_digest(data_env.new_url, reference_table, "tenant_id", tenant, "id")
    assert killed == reference
    assert killed[0] == ROWS
    new = await data_env.new()
    try:
        assert await new.fetchval(f"SELECT count(*) FROM {killed_table}") == ROWS  # no bystander rows
    finally:
        await new.close()


ITEMS = """CREATE TABLE {name} (tenant_id text NOT NULL, id text NOT NULL, doc jsonb NOT NULL,
PRIMARY KEY (tenant_id, id))"""


async def test_mirrored_writes_racing_the_copy_are_never_undone(data_env: DataEnv, tenant: str) -> None:
    """A client writes old (authoritative), then the PostgreSQL applier mirrors it to new, on keys in
    the chunk being copied at that moment. Afterwards both sides hold the same, latest rows."""
    table = unique("items")
    await data_env.execute(data_env.old_url, ITEMS.format(name=table))
    await data_env.execute(data_env.new_url, ITEMS.format(name=table))
    rows = 30_000
    await data_env.execute(
        data_env.old_url,
        f"INSERT INTO {table} SELECT $1, lpad(g::text, 6, '0'),"
        " jsonb_build_object('id', lpad(g::text, 6, '0'), 'v', 0, 'pad', md5(g::text))"
        " FROM generate_series(1, $2::int) AS g",
        tenant,
        rows,
    )
    await data_env.set_phase(tenant, Phase.DUAL_WRITE)
    settings = data_env.settings([{"name": "items", "old": {"table": table}, "new": {"table": table}}])
    applier = PostgresApplier(
        PostgresApplierSettings.model_validate(
            {"url": data_env.new_url, "resources": [{"path": "/items/{key}", "table": table}]}
        )
    )
    await applier.start()
    old, new = await data_env.old(), await data_env.new()
    stop = asyncio.Event()
    writes = {"put": 0, "delete": 0}

    async def client_writes() -> None:
        version = 0
        while not stop.is_set():
            last = await new.fetchval(
                "SELECT last_key FROM cutover_backfill_checkpoint WHERE tenant = $1 AND table_name = 'items'",
                tenant,
            )
            base = int(last[0]) if last else 0
            key = f"{min(base + random.randint(1, 1000), rows):06d}"  # inside the chunk in flight
            version += 1
            if version % 7 == 0:
                status = await old.execute(
                    f"DELETE FROM {table} WHERE tenant_id = $1 AND id = $2", tenant, key
                )
                intent = _intent(tenant, "DELETE", key, b"")
                writes["delete"] += 1
            else:
                body = {"id": key, "v": version}
                status = await old.execute(
                    f"UPDATE {table} SET doc = $3::jsonb WHERE tenant_id = $1 AND id = $2",
                    tenant,
                    key,
                    orjson.dumps(body).decode(),
                )
                intent = _intent(tenant, "PUT", key, orjson.dumps(body))
                writes["put"] += 1
            if status.endswith(" 0"):
                continue  # the key was deleted before: old answered 404, nothing to mirror
            await applier.apply_batch([intent])

    writer = asyncio.create_task(client_writes())
    try:
        report = await run_backfill(settings, BackfillOptions(tenant, chunk_rows=1000, rows_per_s=10_000))
    finally:
        stop.set()
        await writer
        await applier.close()
    try:
        assert report.tables[0].chunks >= 30
        assert report.tables[0].chunks_direct < report.tables[0].chunks  # some chunks met mirrored rows
        # Enough racing writes to prove something; how many fit in the copy's ~3 s depends on the machine.
        assert writes["put"] > 20, writes
        assert writes["delete"] > 2, writes
        old_rows = {
            r["id"]: r["doc"]
            for r in await old.fetch(f"SELECT id, doc FROM {table} WHERE tenant_id = $1", tenant)
        }
        new_rows = {
            r["id"]: r["doc"]
            for r in await new.fetch(f"SELECT id, doc FROM {table} WHERE tenant_id = $1", tenant)
        }
        assert len(old_rows) < rows  # some deletes happened ...
        assert new_rows.keys() == old_rows.keys()  # ... and none was undone
        differing = [k for k in old_rows if orjson.loads(old_rows[k]) != orjson.loads(new_rows[k])]
        assert differing == []
    finally:
        await old.close()
        await new.close()


def _intent(tenant: str, method: str, key: str, body: bytes) -> Intent:
    return Intent(
        tenant=tenant,
        target=Side.NEW,
        method=method,
        path=f"/items/{key}",
        query="",
        headers=(("content-type", "application/json"),),
        body=body,
        status=200,
        response_body=b"",
    )


@pytest.mark.parametrize("phase", [None, Phase.LEGACY, Phase.LIVE, Phase.COMPLETE])
async def test_refused_unless_dual_write_or_shadow(
    data_env: DataEnv, tenant: str, phase: Phase | None
) -> None:
    old_table, new_table = unique("o_old"), unique("o_new")
    await create_orders(data_env, old_table, [new_table])
    if phase is not None:
        await data_env.set_phase(tenant, phase)
    settings = data_env.settings([orders_table("orders", old_table, new_table)])
    with pytest.raises(PhaseRefusedError, match="dual_write") as caught:
        await run_backfill(settings, BackfillOptions(tenant))
    assert caught.value.phase == (phase or Phase.LEGACY).value


def upper_customer(row: dict[str, Any]) -> dict[str, Any] | None:
    """A test transform: rename and reshape columns, drop every tenth order."""
    if row["order_no"] % 10 == 0:
        return None
    return {
        "tenant_id": row["account"],
        "id": row["order_no"],
        "customer": row["customer"].upper(),
        "quantity": row["qty"] * 2,
        "price": row["price"],
        "note": None,
        "created": row["created"],
    }


async def test_transform_rows_and_version_in_checkpoint(data_env: DataEnv, tenant: str) -> None:
    old_table, new_table = unique("o_old"), unique("o_new")
    await create_orders(data_env, old_table, [new_table])
    await fill_orders(data_env, old_table, tenant, 5_000)
    await data_env.set_phase(tenant, Phase.SHADOW)
    transform = {"function": f"{__name__}.upper_customer", "version": "7"}
    settings = data_env.settings([orders_table("orders", old_table, new_table, transform=transform)])
    report = await run_backfill(settings, BackfillOptions(tenant, chunk_rows=1000))
    assert report.tables[0].transform == f"{__name__}.upper_customer@7"
    assert report.as_json()["tables"][0]["transform"] == f"{__name__}.upper_customer@7"
    new = await data_env.new()
    try:
        row = await new.fetchrow(f"SELECT * FROM {new_table} WHERE tenant_id = $1 AND id = 7", tenant)
        assert row is not None
        assert row["customer"] == "CUSTOMER-7"
        assert row["quantity"] == 14
        assert row["note"] is None
        assert await new.fetchval(f"SELECT count(*) FROM {new_table}") == 4_500
        stored = await new.fetchval(
            "SELECT DISTINCT transform FROM cutover_backfill_checkpoint WHERE tenant = $1", tenant
        )
        assert stored == f"{__name__}.upper_customer@7"
    finally:
        await new.close()
    # Another transform version must not continue this checkpoint; --restart copies again with it.
    changed = data_env.settings(
        [orders_table("orders", old_table, new_table, transform={**transform, "version": "8"})]
    )
    with pytest.raises(CheckpointMismatchError, match="upper_customer@7"):
        await run_backfill(changed, BackfillOptions(tenant))
    again = await run_backfill(changed, BackfillOptions(tenant, restart=True, chunk_rows=1000))
    assert again.tables[0].rows_copied == 4_500
    assert again.tables[0].rows_written == 0


async def test_rerun_after_completion_copies_nothing_and_parallel_ranges_cover_every_row(
    data_env: DataEnv, tenant: str
) -> None:
    old_table, serial_table, parallel_table = unique("o_old"), unique("o_serial"), unique("o_par")
    await create_orders(data_env, old_table, [serial_table, parallel_table])
    await fill_orders(data_env, old_table, tenant, 25_000)
    await data_env.set_phase(tenant, Phase.DUAL_WRITE)
    serial = data_env.settings([orders_table("serial", old_table, serial_table)])
    first = await run_backfill(serial, BackfillOptions(tenant, chunk_rows=1000))
    assert first.tables[0].rows_copied == first.tables[0].rows_written == 25_000
    assert first.tables[0].chunks_direct == first.tables[0].chunks  # an empty table: straight in
    second = await run_backfill(serial, BackfillOptions(tenant, chunk_rows=1000))
    assert second.tables[0].resumed
    assert second.tables[0].rows_copied == 0
    assert second.tables[0].total_rows_copied == 25_000
    again = await run_backfill(serial, BackfillOptions(tenant, chunk_rows=1000, restart=True))
    assert again.tables[0].rows_copied == 25_000
    assert again.tables[0].rows_written == 0
    assert again.tables[0].chunks_direct == 0  # every range holds rows: staging and upsert

    parallel = data_env.settings([orders_table("parallel", old_table, parallel_table)])
    report = await run_backfill(parallel, BackfillOptions(tenant, chunk_rows=1000, parallel=4))
    assert report.tables[0].ranges == 4
    assert report.tables[0].rows_copied == 25_000
    assert await table_digest(
        data_env.new_url, serial_table, "tenant_id", tenant, "id"
    ) == await table_digest(data_env.new_url, parallel_table, "tenant_id", tenant, "id")


async def test_setup_problems_name_the_table_and_column(data_env: DataEnv, tenant: str) -> None:
    old_table, new_table = unique("o_old"), unique("o_new")
    await create_orders(data_env, old_table, [new_table])
    await data_env.set_phase(tenant, Phase.DUAL_WRITE)
    unmapped = data_env.settings([orders_table("orders", old_table, new_table, columns={"id": "order_no"})])
    with pytest.raises(DataError, match="has no column 'quantity'.*exclude_columns"):
        await run_backfill(unmapped, BackfillOptions(tenant))
    missing = data_env.settings([orders_table("orders", "no_such_table", new_table)])
    with pytest.raises(DataError, match="'no_such_table' does not exist"):
        await run_backfill(missing, BackfillOptions(tenant))
    with pytest.raises(DataError, match="no table 'nope'"):
        await run_backfill(unmapped, BackfillOptions(tenant, tables=("nope",)))


async def test_dry_run_counts_the_rows_left_and_copies_nothing(data_env: DataEnv, tenant: str) -> None:
    old_table, new_table = unique("o_old"), unique("o_new")
    await create_orders(data_env, old_table, [new_table])
    await fill_orders(data_env, old_table, tenant, 5_000)
    settings = data_env.settings([orders_table("orders", old_table, new_table)])
    before = await run_backfill(settings, BackfillOptions(tenant, dry_run=True))  # any phase: legacy here
    assert before.dry_run
    assert before.phase == "legacy"
    assert (before.tables[0].rows_pending, before.tables[0].total_rows_copied) == (5_000, 0)
    assert (await table_digest(data_env.new_url, new_table, "tenant_id", tenant, "id"))[0] == 0
    await data_env.set_phase(tenant, Phase.DUAL_WRITE)
    await run_backfill(settings, BackfillOptions(tenant, chunk_rows=1000))
    after = await run_backfill(settings, BackfillOptions(tenant, dry_run=True))
    assert (after.tables[0].rows_pending, after.tables[0].total_rows_copied) == (0, 5_000)
    assert after.as_json()["tables"][0]["rows_pending"] == 0
