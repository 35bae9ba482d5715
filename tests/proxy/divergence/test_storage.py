"""Stored samples: masked before storage (the stored row never holds a raw masked value), and retention
bounded by count per tenant and by age."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import orjson
import pytest

from config.divergence import CompareRules, DivergencePolicy, RetentionSettings
from proxy.dataplane.request import ProxyRequest
from proxy.shadow.analysis import analyse
from proxy.shadow.divergences import DivergenceRecorder, Sample, insert_samples, prune, prune_older_than
from proxy.shadow.lift import lift
from proxy.shadow.mask import Masker
from proxy.shadow.noise import NoiseLearner
from proxy.shadow.paths import PathMatcher
from proxy.shadow.rules import compile_rules
from proxy.shadow.sample import build_sample
from routing.phases import Phase, Side
from tests.proxy.divergence.conftest import ScriptedPair
from tests.support.proxies import Proxy, ProxyFactory
from tests.support.waits import wait_for

KEY = b"0123456789abcdef-test-key"
masker = Masker(KEY)


def masks(*paths: str) -> PathMatcher:
    return PathMatcher((p, "mask", True) for p in paths)


def test_hash_is_keyed_deterministic_and_type_aware() -> None:
    assert masker.hash("a@x.io") == masker.hash("a@x.io")
    assert masker.hash("a@x.io") != masker.hash("b@x.io")
    assert masker.hash("1") != masker.hash(1)
    assert masker.hash({"a": 1, "b": 2}) == masker.hash({"b": 2, "a": 1})
    assert Masker(b"another-key-0123456").hash("a@x.io") != masker.hash("a@x.io")
    assert masker.hash("a@x.io").startswith("hmac:")


MASKED_DOCS: list[tuple[tuple[str, ...], Any, Any]] = [
    (("$.email",), {"email": "a@x", "name": "n"}, {"email": masker.hash("a@x"), "name": "n"}),
    (
        ("$.card",),
        {"card": {"number": "4111", "exp": "12/30"}},
        {"card": masker.hash({"number": "4111", "exp": "12/30"})},
    ),
    (
        ("$.card.number",),
        {"card": {"number": "4111", "exp": "1"}},
        {"card": {"number": masker.hash("4111"), "exp": "1"}},
    ),
    (
        ("$..email",),
        {"a": [{"email": "e1"}], "email": "e2"},
        {"a": [{"email": masker.hash("e1")}], "email": masker.hash("e2")},
    ),
    (
        ("$.users[*].ssn",),
        {"users": [{"ssn": 1}, {"ssn": 2}]},
        {"users": [{"ssn": masker.hash(1)}, {"ssn": masker.hash(2)}]},
    ),
    (("$.missing",), {"a": 1}, {"a": 1}),
    ((), {"email": "a"}, {"email": "a"}),
]


@pytest.mark.parametrize(("paths", "document", "expected"), MASKED_DOCS)
def test_mask_document(paths: tuple[str, ...], document: Any, expected: Any) -> None:
    assert masker.document(document, masks(*paths)) == expected


def test_mask_query_parameters() -> None:
    query = masker.query("token=s3cret&page=2&token=other", frozenset({"token"}))
    assert "s3cret" not in query
    assert "other" not in query
    assert "page=2" in query
    assert masker.query("page=2", frozenset({"token"})) == "page=2"


RAW_SECRETS = ["alice@example.com", "bob@example.com", "4111111111111111", "4000000000000002", "s3cr3t-token"]
OLD_DOC = {
    "id": 1,
    "email": "alice@example.com",
    "card": {"number": "4111111111111111", "brand": "visa"},
    "n": 1,
}
NEW_DOC = {
    "id": 1,
    "email": "bob@example.com",
    "card": {"number": "4000000000000002", "brand": "visa"},
    "n": 2,
}
POLICY = DivergencePolicy.model_validate(
    {"defaults": {"mask": ["$.email", "$.card.number"]}, "mask_query": ["token"], "noise": {"sample_rate": 0}}
)


async def stored_text(pool: asyncpg.Pool, tenant: str) -> list[bytes]:
    """Every column of every stored row of `tenant`, as bytes (bytea as is, the rest as text)."""
    rows = await pool.fetch("SELECT * FROM cutover_divergence WHERE tenant = $1", tenant)
    out = []
    for row in rows:
        for value in row.values():
            out.append(value if isinstance(value, bytes) else str(value).encode())
    return out


def sample_for(tenant: str) -> Sample:
    rules = compile_rules(CompareRules.model_validate(POLICY.defaults.model_dump()))
    served, shadow = lift(200, orjson.dumps(OLD_DOC), ()), lift(200, orjson.dumps(NEW_DOC), ())
    analysis = analyse(
        resource="/users/*",
        serving_side=Side.OLD,
        served=served,
        shadow=shadow,
        copy=None,
        rules=rules,
        learner=NoiseLearner(POLICY.noise),
    )
    request = ProxyRequest(
        method="GET",
        raw_path="/users/1",
        query="token=s3cr3t-token&view=full",
        headers=[(b"authorization", b"Bearer s3cr3t-token"), (b"accept", b"application/json")],
        body=b"",
        tenant=tenant,
        client_host="127.0.0.1",
        scheme="http",
    )
    return build_sample(
        phase="shadow",
        resource="/users/*",
        request=request,
        serving_side="old",
        served=served,
        shadow=shadow,
        analysis=analysis,
        rules=rules,
        masker=masker,
        policy=POLICY,
    )


async def test_stored_row_never_contains_a_masked_value(pg_pool: asyncpg.Pool, tenant: str) -> None:
    sample = sample_for(tenant)
    await insert_samples(pg_pool, [sample])
    columns = await stored_text(pg_pool, tenant)
    assert columns, "nothing stored"
    for secret in RAW_SECRETS:
        assert not any(secret.encode() in column for column in columns), secret
    # ...while the reviewer still sees where the sides differ, and that they do.
    by_path = {d["path"]: d for d in sample.differences}
    assert set(by_path) == {"$.email", "$.card.number", "$.n"}
    for path in ("$.email", "$.card.number"):
        assert by_path[path]["serving"].startswith("hmac:")
        assert by_path[path]["serving"] != by_path[path]["shadow"]
    assert (by_path["$.n"]["serving"], by_path["$.n"]["shadow"]) == (1, 2)  # not masked: shown
    assert sample.request_headers == [("accept", "application/json")]  # authorization never kept
    stored = orjson.loads(sample.serving_body or b"")
    assert stored["card"] == {"number": masker.hash("4111111111111111"), "brand": "visa"}


async def test_masks_apply_through_the_proxy(
    make_proxy: ProxyFactory, scripted: ScriptedPair, tenant: str
) -> None:
    proxy: Proxy = await make_proxy(
        {
            "backends": scripted.backends(),
            "divergence": {"policy": POLICY.model_dump(), "mask_key": KEY.decode()},
            "log_level": "error",
        }
    )
    await proxy.set_phase_direct(tenant, Phase.SHADOW)
    scripted.old.set("/users/1", OLD_DOC)
    scripted.new.set("/users/1", NEW_DOC)
    response = await proxy.client.get(
        "/users/1?token=s3cr3t-token", headers={"X-Tenant-ID": tenant, "Authorization": "Bearer s3cr3t-token"}
    )
    assert response.json()["email"] == "alice@example.com"  # the client sees its data unmasked

    async def stored() -> bool:
        listed = await proxy.admin.get(f"/tenants/{tenant}/divergences")
        return len(listed.json()["divergences"]) == 1

    await wait_for(stored, timeout_s=5)
    columns = await stored_text(proxy.runtime.pool, tenant)
    for secret in RAW_SECRETS:
        assert not any(secret.encode() in column for column in columns), secret
    entry = (await proxy.admin.get(f"/tenants/{tenant}/divergences")).json()["divergences"][0]
    assert sorted(entry["fields"]) == ["$.card.number", "$.email", "$.n"]


def sample(tenant: str, n: int) -> Sample:
    return Sample(
        tenant=tenant,
        phase="shadow",
        resource="/r",
        verdict="divergent",
        method="GET",
        path=f"/r/{n}",
        query="",
        request_headers=[],
        serving_side="old",
        serving_status=200,
        shadow_status=200,
        serving_body=b"{}",
        shadow_body=b"{}",
        differences=[],
        fields=[],
    )


async def paths_of(pool: asyncpg.Pool, tenant: str) -> list[str]:
    rows = await pool.fetch("SELECT path FROM cutover_divergence WHERE tenant = $1 ORDER BY id", tenant)
    return [row["path"] for row in rows]


async def test_retention_keeps_the_newest_per_tenant(pg_pool: asyncpg.Pool, tenant: str) -> None:
    other = tenant + "-other"
    await insert_samples(
        pg_pool, [sample(tenant, n) for n in range(5)] + [sample(other, n) for n in range(2)]
    )
    assert await prune(pg_pool, {tenant, other}, keep=3) == 2
    assert await paths_of(pg_pool, tenant) == ["/r/2", "/r/3", "/r/4"]
    assert await paths_of(pg_pool, other) == ["/r/0", "/r/1"]


async def test_retention_by_age(pg_pool: asyncpg.Pool, tenant: str) -> None:
    await insert_samples(pg_pool, [sample(tenant, n) for n in range(3)])
    await pg_pool.execute(
        "UPDATE cutover_divergence SET at = now() - interval '2 days' WHERE tenant = $1 AND path <> '/r/2'",
        tenant,
    )
    assert await prune_older_than(pg_pool, 86_400) >= 2
    assert await paths_of(pg_pool, tenant) == ["/r/2"]


async def test_recorder_applies_retention_as_it_writes(pg_pool: asyncpg.Pool, tenant: str) -> None:
    outcomes = {"stored": 0, "dropped": 0}
    recorder = DivergenceRecorder(
        pg_pool,
        queue_size=100,
        retention=RetentionSettings(max_samples_per_tenant=2, max_age_s=3600, prune_interval_s=60),
        on_stored=lambda n: outcomes.__setitem__("stored", outcomes["stored"] + n),
        on_dropped=lambda n: outcomes.__setitem__("dropped", outcomes["dropped"] + n),
    )
    recorder.start()
    try:
        for n in range(6):
            recorder.submit(sample(tenant, n))
            await asyncio.sleep(0.01)

        async def written() -> bool:
            return outcomes["stored"] == 6

        await wait_for(written, timeout_s=5)
    finally:
        await recorder.stop()
    assert await paths_of(pg_pool, tenant) == ["/r/4", "/r/5"]
    assert outcomes["dropped"] == 0
