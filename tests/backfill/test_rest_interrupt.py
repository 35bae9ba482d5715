"""An interrupted REST copy (Ctrl-C: `asyncio.Runner` cancels the main task) stops and leaves a
checkpoint a rerun resumes from, even when a call on the way swallows the cancellation."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from backfill import rest_checkpoint
from backfill.rest_pages import Page
from backfill.runner import BackfillOptions, run_backfill
from routing.phases import Phase, Side
from tests.backfill.conftest import DataEnv
from tests.backfill.rest_sides import json_sides, rest_settings


async def test_a_cancellation_arriving_while_the_copy_runs_stops_it_resumably(
    data_env: DataEnv, prefix: str, tenant: str
) -> None:
    async with json_sides() as sides:
        old, new = sides[Side.OLD], sides[Side.NEW]
        old.seed(tenant, 200)  # four pages of 50
        await data_env.set_phase(tenant, Phase.DUAL_WRITE)
        settings = rest_settings(data_env, sides, prefix)
        listed = 0

        async def interrupt(stage: str, page: Page) -> None:
            nonlocal listed
            if stage == "listed":
                listed += 1
                if listed == 2:
                    # As Ctrl-C does when it lands while the copy's task runs: the task is cancelled,
                    # and the cancellation is delivered where it next waits, here in the Redis claim of
                    # the page (on Python 3.11, redis-py's asyncio.wait_for then swallows it).
                    task = asyncio.current_task()
                    assert task is not None
                    task.cancel()

        copy = asyncio.create_task(run_backfill(settings, BackfillOptions(tenant), hook=interrupt))
        with pytest.raises(asyncio.CancelledError):
            await copy
        conn = await asyncpg.connect(data_env.control_url)
        try:
            state = await rest_checkpoint.load(conn, tenant, "items")
        finally:
            await conn.close()
        assert state is not None
        assert not state.done
        assert state.items_copied < 200

        report = await run_backfill(settings, BackfillOptions(tenant))
        run = report.resources[0]
        assert (run.run, run.done, run.total_items_copied) == ("resumed", True, 200)
        assert new.records(tenant) == old.records(tenant)
