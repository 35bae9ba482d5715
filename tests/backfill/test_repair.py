"""`verify --repair` once new is authoritative (live, rampdown), against real PostgreSQL: the keys
corrupted on old are copied back from new through the column mapping, new is left untouched, a table
with a transform is refused by name while the others are repaired, a mirrored write racing the repair is
not undone, and `complete` refuses."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from backfill.errors import PhaseRefusedError
from backfill.report import render
from backfill.runner import BackfillOptions, run_backfill
from backfill.verify_run import VerifyOptions, run_verify
from buffer_worker.mirror_lock import applier_locks_sql
from config.settings import Settings
from proxy.cli.main import main
from proxy.cli.support import format_table
from routing.phases import Phase
from tests.backfill.conftest import (
    DataEnv,
    create_orders,
    fill_orders,
    orders_table,
    table_digest,
    unique,
)
from tests.backfill.test_verify import _keys, _stored
from tests.support.postgres import wait_for_lock_waiter

ROWS = 20_000


async def _live_orders(data_env: DataEnv, tenant: str, rows: int, phase: Phase = Phase.LIVE) -> Any:
    """Orders copied old → new in shadow, verified equal, then the tenant moved to `phase`."""
    old_table, new_table = unique("r_old"), unique("r_new")
    await create_orders(data_env, old_table, [new_table])
    await fill_orders(data_env, old_table, tenant, rows)
    await fill_orders(data_env, old_table, f"{tenant}-other", 300)
    await data_env.set_phase(tenant, Phase.SHADOW)
    settings = data_env.settings([orders_table("orders", old_table, new_table)])
    await run_backfill(settings, BackfillOptions(tenant, chunk_rows=5_000))
    assert (await run_verify(settings, VerifyOptions(tenant, store=False))).passed
    await data_env.set_phase(tenant, phase)
    return settings, old_table, new_table


async def test_in_live_repair_copies_the_corrupted_old_keys_back_from_new(
    data_env: DataEnv, tenant: str
) -> None:
    settings, old_table, new_table = await _live_orders(data_env, tenant, ROWS)
    new_before = await table_digest(data_env.new_url, new_table, "tenant_id", tenant, "id")
    other_before = await table_digest(data_env.old_url, old_table, "account", f"{tenant}-other", "order_no")
    deleted = [1, 9_999, ROWS]  # gone from old: missing on old, inserted back
    altered = {2: "qty = qty + 1", 5_000: "price = price + 0.01", 15_001: "note = 'changed'"}
    altered[17_000] = "created = created + interval '1 microsecond'"
    added = [0, ROWS + 1, 50_000]  # only on old: missing on new, deleted from old
    old = await data_env.old()
    try:
        await old.execute(
            f"DELETE FROM {old_table} WHERE account = $1 AND order_no = ANY($2::bigint[])", tenant, deleted
        )
        for key, change in altered.items():
            update = f"UPDATE {old_table} SET {change} WHERE account = $1 AND order_no = $2"
            await old.execute(update, tenant, key)
        for key in added:
            insert = f"INSERT INTO {old_table} VALUES ($1, $2, 'ghost', 1, 1.00, 'x', now())"
            await old.execute(insert, tenant, key)
    finally:
        await old.close()

    found = (await run_verify(settings, VerifyOptions(tenant, store=False))).tables[0]
    assert _keys(found.keys["missing_on_old"]) == set(deleted)
    assert _keys(found.keys["missing_on_new"]) == set(added)
    assert _keys(found.keys["different"]) == set(altered)

    run = await run_verify(settings, VerifyOptions(tenant, repair=True))
    report = run.tables[0]
    assert run.passed, report.as_json()
    assert report.repair is not None
    assert report.repair["from"] == "new"
    assert report.repair["keys"] == 3 + 4 + 3
    assert report.repair["copied"] == 3 + 4
    assert report.repair["deleted"] == 3
    assert report.repair["before"]["missing_on_old"] == 3
    assert report.rows_old == report.rows_new == ROWS
    assert "orders: repaired from new: 7 copied, 3 deleted" in render(run.as_json(), format_table)
    stored = await _stored(data_env, run.report_ids["orders"])
    assert stored["passed"] is True
    assert stored["report"]["repair"]["from"] == "new"
    # The authoritative side and the other tenant's rows on old are untouched.
    assert await table_digest(data_env.new_url, new_table, "tenant_id", tenant, "id") == new_before
    assert (
        await table_digest(data_env.old_url, old_table, "account", f"{tenant}-other", "order_no")
        == other_before
    )
    assert (await run_verify(settings, VerifyOptions(tenant, store=False))).passed


PEOPLE_OLD = """CREATE TABLE {name} (
    acct text NOT NULL, pid integer NOT NULL, full_name varchar(60) NOT NULL, age smallint, prefs json,
    origin text NOT NULL DEFAULT 'legacy', PRIMARY KEY (acct, pid))"""
PEOPLE_NEW = """CREATE TABLE {name} (
    tenant_id text NOT NULL, id bigint NOT NULL, name text NOT NULL, age integer, prefs json,
    PRIMARY KEY (tenant_id, id))"""


async def test_a_column_mapped_table_with_other_types_is_repaired_back_through_the_mapping(
    data_env: DataEnv, tenant: str
) -> None:
    old_table, new_table = unique("people_old"), unique("people_new")
    await data_env.execute(data_env.old_url, PEOPLE_OLD.format(name=old_table))
    await data_env.execute(data_env.new_url, PEOPLE_NEW.format(name=new_table))
    await data_env.execute(
        data_env.old_url,
        f"INSERT INTO {old_table} (acct, pid, full_name, age, prefs) SELECT $1, g, 'person ' || g, g % 90,"
        " json_build_object('lang', 'en', 'n', g) FROM generate_series(1, 3000) AS g",
        tenant,
    )
    config = {
        "name": "people",
        "old": {"table": old_table, "tenant_column": "acct"},
        "new": {"table": new_table},
        "columns": {"id": "pid", "name": "full_name"},
    }
    settings = data_env.settings([config], verify={"range_rows": 500, "leaf_rows": 100})
    await data_env.set_phase(tenant, Phase.DUAL_WRITE)
    await run_backfill(settings, BackfillOptions(tenant, chunk_rows=1000))
    await data_env.set_phase(tenant, Phase.LIVE)
    # Old drifts: a renamed person (whose old-only column was also set), an age, a json document with the
    # same value but other text, a row gone, a row old alone has.
    await data_env.execute(
        data_env.old_url,
        f"UPDATE {old_table} SET full_name = 'someone else', origin = 'import' WHERE pid = 10",
    )
    await data_env.execute(data_env.old_url, f"UPDATE {old_table} SET age = NULL WHERE pid = 11")
    await data_env.execute(
        data_env.old_url, f"""UPDATE {old_table} SET prefs = '{{"lang": "en", "n": 12}}' WHERE pid = 12"""
    )
    await data_env.execute(data_env.old_url, f"DELETE FROM {old_table} WHERE pid = 2999")
    await data_env.execute(
        data_env.old_url, f"INSERT INTO {old_table} VALUES ($1, 4000, 'late', 1, '{{}}', 'x')", tenant
    )

    run = await run_verify(settings, VerifyOptions(tenant, repair=True))
    report = run.tables[0]
    assert run.passed, report.as_json()
    assert report.repair is not None
    assert report.repair["from"] == "new"
    assert report.repair["before"] == {
        "missing_on_new": 1,
        "missing_on_old": 1,
        "different": 3,
        "unsettled": 0,
    }
    assert report.repair["copied"] == 4
    assert report.repair["deleted"] == 1
    old = await data_env.old()
    try:
        rows = {
            r["pid"]: r
            for r in await old.fetch(
                f"SELECT pid, full_name, age, prefs::text AS prefs, origin FROM {old_table}"
                " WHERE acct = $1 AND pid IN (10, 11, 12, 2999, 4000)",
                tenant,
            )
        }
    finally:
        await old.close()
    assert rows.keys() == {10, 11, 12, 2999}
    assert rows[10]["full_name"] == "person 10"
    assert rows[10]["origin"] == "import"
    assert rows[11]["age"] == 11
    assert rows[12]["prefs"] == '{"lang" : "en", "n" : 12}'  # new's text, not just an equal value
    assert rows[2999]["full_name"] == "person 2999"
    assert rows[2999]["origin"] == "legacy"


async def test_a_table_with_a_transform_is_refused_by_name_and_the_others_are_repaired(
    data_env: DataEnv, tenant: str
) -> None:
    regions, orders_old, orders_new = unique("regions"), unique("r_old"), unique("r_new")
    ddl = f"CREATE TABLE {regions} (tenant_id text, region text, n integer, label text,"
    ddl += " PRIMARY KEY (tenant_id, region, n))"
    await data_env.execute(data_env.old_url, ddl)
    await data_env.execute(data_env.new_url, ddl)
    await data_env.execute(
        data_env.old_url,
        f"INSERT INTO {regions} SELECT $1, r, n, r || n FROM unnest(ARRAY['eu', 'us']) AS r,"
        " generate_series(1, 1000) AS n",
        tenant,
    )
    await create_orders(data_env, orders_old, [orders_new])
    await fill_orders(data_env, orders_old, tenant, 2_000)
    transform = {"function": f"{__name__}.shout", "version": "3"}
    tables = [
        {
            "name": "regions",
            "old": {"table": regions},
            "new": {"table": regions},
            "key": ["region", "n"],
            "transform": transform,
        },
        orders_table("orders", orders_old, orders_new),
    ]
    settings = data_env.settings(tables)
    await data_env.set_phase(tenant, Phase.SHADOW)
    await run_backfill(settings, BackfillOptions(tenant, chunk_rows=1000))
    await data_env.set_phase(tenant, Phase.LIVE)
    await data_env.execute(data_env.old_url, f"UPDATE {regions} SET label = 'x' WHERE n = 7 AND region='us'")
    await data_env.execute(data_env.old_url, f"DELETE FROM {orders_old} WHERE order_no = 44")
    regions_before = await table_digest(data_env.old_url, regions, "tenant_id", tenant, "region, n")

    run = await run_verify(settings, VerifyOptions(tenant, repair=True))
    by_name = {t.table: t for t in run.tables}
    refused, repaired = by_name["regions"], by_name["orders"]
    assert not run.passed
    assert refused.keys["different"] == [["us", "7"]]
    assert refused.repair is not None
    assert refused.repair["from"] == "new"
    assert "transform" in refused.repair["refused"]
    assert f"{__name__}.shout" in refused.repair["refused"]
    assert "copied" not in refused.repair
    assert repaired.passed
    assert repaired.repair is not None
    assert repaired.repair["copied"] == 1
    text = render(run.as_json(), format_table)
    assert "regions: not repaired from new: its transform" in text
    assert "orders: repaired from new: 1 copied, 0 deleted" in text
    assert await table_digest(data_env.old_url, regions, "tenant_id", tenant, "region, n") == regions_before


def shout(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "label": row["label"].upper()}


async def test_a_mirrored_write_racing_the_repair_is_not_undone(data_env: DataEnv, tenant: str) -> None:
    """The repair waits for the applier's lock on old (the mirror from live on) and reads new only then:
    the row it writes is the one the racing write left, not the one verification saw."""
    settings, old_table, new_table = await _live_orders(data_env, tenant, 3_000, Phase.RAMPDOWN)
    await data_env.execute(data_env.old_url, f"UPDATE {old_table} SET qty = -1 WHERE order_no = 5")
    applier = await data_env.old()  # plays the PostgreSQL applier applying a batch to old
    try:
        batch = applier.transaction()
        await batch.start()
        await applier.execute(applier_locks_sql([tenant]))
        repair = asyncio.create_task(run_verify(settings, VerifyOptions(tenant, repair=True)))
        await wait_for_lock_waiter(
            data_env.old_url, repair, "the repair did not wait for the mirror lock on old"
        )
        # A client write acknowledged by new, whose mirrored apply to old commits while the repair waits.
        await data_env.execute(data_env.new_url, f"UPDATE {new_table} SET quantity = 999 WHERE id = 5")
        await applier.execute(f"UPDATE {old_table} SET qty = 999 WHERE account = $1 AND order_no = 5", tenant)
        await batch.commit()
    finally:
        await applier.close()
    run = await repair
    assert run.passed, run.tables[0].as_json()
    # Old already holds what new holds once the lock is granted: nothing left to copy.
    assert run.tables[0].repair is not None
    assert run.tables[0].repair["copied"] == 0
    old = await data_env.old()
    try:
        qty = await old.fetchval(f"SELECT qty FROM {old_table} WHERE account = $1 AND order_no = 5", tenant)
    finally:
        await old.close()
    assert qty == 999


async def test_repair_is_refused_in_complete_and_backfill_stays_refused_in_live(
    data_env: DataEnv, tenant: str
) -> None:
    old_table, new_table = unique("r_old"), unique("r_new")
    await create_orders(data_env, old_table, [new_table])
    settings: Settings = data_env.settings([orders_table("orders", old_table, new_table)])
    await data_env.set_phase(tenant, Phase.COMPLETE)
    with pytest.raises(PhaseRefusedError, match="complete: old no longer receives writes.*rampdown"):
        await run_verify(settings, VerifyOptions(tenant, repair=True))
    assert (await run_verify(settings, VerifyOptions(tenant, store=False))).passed  # empty = equal
    await data_env.set_phase(tenant, Phase.LIVE)
    with pytest.raises(PhaseRefusedError, match="live: new has taken writes first"):
        await run_backfill(settings, BackfillOptions(tenant))


async def test_the_cli_repairs_from_new_in_rampdown_and_refuses_in_complete(
    data_env: DataEnv, tenant: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, old_table, new_table = await _live_orders(data_env, tenant, 2_000, Phase.RAMPDOWN)
    config = data_env.config_file(tmp_path, [orders_table("orders", old_table, new_table)])
    await data_env.execute(data_env.old_url, f"DELETE FROM {old_table} WHERE order_no = 1000")
    cli = ["verify", "--config", str(config), "--tenant", tenant, "--repair"]
    capsys.readouterr()
    assert await asyncio.to_thread(main, cli) == 0
    out = capsys.readouterr().out
    assert "orders: repaired from new: 1 copied, 0 deleted" in out
    assert "PASSED" in out
    await data_env.set_phase(tenant, Phase.COMPLETE)
    assert await asyncio.to_thread(main, cli) == 1
    assert "complete: old no longer receives writes" in capsys.readouterr().err
