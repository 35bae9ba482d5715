"""The PostgreSQL applier's settings: one database per side, the shape from before sides, the applier per
side, what each side lacks, and the check that the applier and the backfill lock in one database."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from config.pg_applier import PostgresApplierSettings, same_database
from config.settings import Settings
from routing.phases import Side

RESOURCES = [{"path": "/items/{key}", "table": "items"}]
NEW_DB = "postgresql://app@db-new:5432/app"
OLD_DB = "postgresql://app@db-old:5432/app"


def settings(worker: dict[str, Any], **extra: Any) -> Settings:
    backends = {"old": {"url": "http://old"}, "new": {"url": "http://new"}}
    return Settings.model_validate({"backends": backends, "worker": worker, **extra})


def test_the_shape_before_sides_is_the_new_side() -> None:
    loaded = PostgresApplierSettings.model_validate({"url": NEW_DB, "resources": RESOURCES})
    assert loaded.new is not None
    assert loaded.old is None
    assert loaded.new.url.get_secret_value() == NEW_DB
    assert loaded.state_transfer  # on by default
    worker = settings({"applier": "postgres", "postgres": {"url": NEW_DB, "resources": RESOURCES}}).worker
    assert worker.missing_for(Side.NEW) is None
    assert worker.missing_for(Side.OLD) == "worker.postgres.old"


def test_both_sides_and_what_each_lacks() -> None:
    both = {"new": {"url": NEW_DB, "resources": RESOURCES}, "old": {"url": OLD_DB, "resources": RESOURCES}}
    worker = settings({"applier": "postgres", "postgres": both}).worker
    assert [worker.missing_for(side) for side in Side] == [None, None]
    only_old = settings({"applier": "postgres", "postgres": {"old": both["old"]}}).worker
    assert only_old.missing_for(Side.NEW) == "worker.postgres.new"
    assert only_old.missing_for(Side.OLD) is None


def test_an_applier_per_side() -> None:
    worker = settings(
        {
            "applier": {"new": "postgres", "old": "http"},
            "postgres": {"new": {"url": NEW_DB, "resources": RESOURCES}},
        }
    ).worker
    assert (worker.applier_toward(Side.NEW), worker.applier_toward(Side.OLD)) == ("postgres", "http")
    assert [worker.missing_for(side) for side in Side] == [None, None]  # HTTP needs only backends.old
    assert settings({}).worker.missing_for(Side.OLD) is None


@pytest.mark.parametrize(
    ("worker", "problem"),
    [
        ({"applier": "postgres"}, "needs worker.postgres"),
        ({"applier": {"new": "postgres"}}, "needs worker.postgres"),
        ({"applier": {"new": "mysql"}}, "applier"),
        ({"applier": "mysql"}, "must be http or postgres, or one per side"),
        ({"applier": "postgres", "postgres": {}}, "worker.postgres.new and/or worker.postgres.old"),
        (
            {"applier": "postgres", "postgres": {"url": NEW_DB, "resources": RESOURCES, "new": {}}},
            "not url and resources beside it",
        ),
        (
            {"applier": "postgres", "postgres": {"new": {"url": "mysql://h/db", "resources": RESOURCES}}},
            "postgresql",
        ),
        ({"applier": "postgres", "postgres": {"new": {"url": NEW_DB, "resources": RESOURCES * 2}}}, "unique"),
        (
            {
                "applier": "postgres",
                "postgres": {
                    "new": {
                        "url": NEW_DB,
                        "resources": [*RESOURCES, {"path": "/orders/{key}", "table": "orders"}],
                    },
                    "old": {"url": OLD_DB, "resources": RESOURCES},
                },
            },
            "worker.postgres.old maps no resource for /orders/{key}",
        ),
    ],
)
def test_refused(worker: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        settings(worker)


def test_without_state_transfer_the_sides_may_map_different_paths() -> None:
    postgres = {
        "new": {"url": NEW_DB, "resources": [{"path": "/orders/{key}", "table": "orders"}]},
        "old": {"url": OLD_DB, "resources": RESOURCES},
        "state_transfer": False,
    }
    assert settings({"applier": "postgres", "postgres": postgres}).worker.postgres is not None


@pytest.mark.parametrize(
    ("first", "second", "same"),
    [
        ("postgresql://a@db:5432/app", "postgresql://b:secret@db/app", True),  # users and default port aside
        ("postgresql://a@localhost/app", "postgres://a@127.0.0.1:5432/app?sslmode=disable", True),
        ("postgresql://app@db/", "postgresql://app@db/app", True),  # libpq: the user's name by default
        ("postgresql://a@db/app", "postgresql://a@db/app2", False),
        ("postgresql://a@db/app", "postgresql://a@db2/app", False),
        ("postgresql://a@db:5433/app", "postgresql://a@db/app", False),
    ],
)
def test_same_database(first: str, second: str, same: bool) -> None:
    assert same_database(first, second) is same


def test_the_applier_and_the_backfill_must_lock_in_one_database() -> None:
    both = {"new": {"url": NEW_DB, "resources": RESOURCES}, "old": {"url": OLD_DB, "resources": RESOURCES}}
    data = {"old": {"postgres_url": OLD_DB}, "new": {"postgres_url": NEW_DB.replace("app@", "backfill@")}}
    assert settings({"applier": "postgres", "postgres": both}, data=data).data.new is not None
    for side, url in (("new", "postgresql://app@elsewhere/app"), ("old", "postgresql://app@db-old/other")):
        wrong = {**data, side: {"postgres_url": url}}
        with pytest.raises(ValidationError, match=f"worker.postgres.{side}.url and data.{side}.postgres_url"):
            settings({"applier": "postgres", "postgres": both}, data=wrong)
    # A side applied over HTTP takes no lock: its database is not compared.
    mixed = {"applier": {"new": "postgres", "old": "http"}, "postgres": both}
    assert settings(mixed, data={**data, "old": {"postgres_url": "postgresql://x@y/z"}}).data.old is not None
