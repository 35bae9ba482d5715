"""The admin API over real HTTP: authentication and scopes, phase moves, versions, audit, health, secrets."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest

from routing.phases import Phase
from tests.support.proxies import MemorySink, Proxy, ProxyFactory, Tokens, raw_request
from tests.support.servers import free_port


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def put_phase(phase: str, reason: str = "because", **extra: Any) -> dict[str, Any]:
    return {"phase": phase, "reason": reason, **extra}


PROTECTED: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", "/tenants", None),
    ("GET", "/tenants/t1", None),
    ("GET", "/stats", None),
    ("GET", "/audit", None),
    ("GET", "/tenants/t1/divergences", None),
    ("PUT", "/tenants/t1/phase", put_phase("dual_write")),
]


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer not-a-valid-token-at-all", "Basic b3BzOnNlY3JldA==", "Bearer", "Token abcdefabcdefabcdef"],
)
async def test_missing_or_wrong_token_is_401(proxy: Proxy, authorization: str | None) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    for method, path, body in PROTECTED:
        response = await proxy.anon_admin.request(method, path, json=body, headers=headers)
        assert response.status_code == 401, (method, path)
        assert response.headers["content-type"] == "application/json"
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json()["error"] == "unauthorized"
        assert "detail" in response.json()
    # The refused PUT changed nothing.
    assert (await proxy.admin.get("/tenants/t1")).json()["version"] == 0


async def test_token_prefix_or_suffix_is_not_accepted(proxy: Proxy, tokens: Tokens) -> None:
    for presented in (tokens.write[:-1], tokens.write + "x", tokens.write.upper()):
        response = await proxy.anon_admin.get("/stats", headers=bearer(presented))
        assert response.status_code == 401


async def test_read_token_can_read_but_not_write(proxy: Proxy, tokens: Tokens, tenant: str) -> None:
    read = await proxy.anon_admin.get(f"/tenants/{tenant}", headers=bearer(tokens.read))
    assert read.status_code == 200
    assert read.json() == {
        "tenant": tenant,
        "phase": "legacy",
        "version": 0,
        "updated_at": None,
        "updated_by": None,
    }
    response = await proxy.anon_admin.put(
        f"/tenants/{tenant}/phase", json=put_phase("dual_write"), headers=bearer(tokens.read)
    )
    assert response.status_code == 403
    assert response.json()["error"] == "forbidden"
    assert tokens.read_name in response.json()["detail"]
    # Nothing changed and nothing was audited.
    assert (await proxy.admin.get(f"/tenants/{tenant}")).json()["version"] == 0
    assert (await proxy.admin.get("/audit", params={"tenant": tenant})).json()["entries"] == []


async def test_phase_change_is_versioned_audited_and_applied(
    proxy: Proxy, tokens: Tokens, tenant: str
) -> None:
    response = await proxy.admin.put(
        f"/tenants/{tenant}/phase", json=put_phase("dual_write", "start mirroring", expected_version=0)
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["tenant"], body["phase"], body["version"], body["updated_by"]) == (
        tenant,
        "dual_write",
        1,
        tokens.write_name,
    )
    assert body["updated_at"] is not None
    assert proxy.runtime.cache.phase_of(tenant) is Phase.DUAL_WRITE
    data = await proxy.client.get("/items", headers={"X-Tenant-ID": tenant})
    assert data.headers["x-cutover-phase"] == "dual_write"

    listed = await proxy.admin.get("/tenants")
    assert listed.status_code == 200
    assert listed.json()["default_phase"] == "legacy"
    assert {"tenant": tenant, "phase": "dual_write", "version": 1} in [
        {k: row[k] for k in ("tenant", "phase", "version")} for row in listed.json()["tenants"]
    ]


async def test_disallowed_move_is_422_listing_allowed_moves(proxy: Proxy, tenant: str) -> None:
    skip = await proxy.admin.put(f"/tenants/{tenant}/phase", json=put_phase("live"))
    assert skip.status_code == 422
    body = skip.json()
    assert body["error"] == "phase_move_not_allowed"
    assert body["current"] == "legacy"
    assert body["allowed"] == ["dual_write"]

    await proxy.set_phase_api(tenant, Phase.SHADOW)
    same = await proxy.admin.put(f"/tenants/{tenant}/phase", json=put_phase("shadow"))
    assert same.status_code == 422
    assert same.json()["current"] == "shadow"
    assert same.json()["allowed"] == ["legacy", "dual_write", "live"]
    jump = await proxy.admin.put(f"/tenants/{tenant}/phase", json=put_phase("complete"))
    assert jump.status_code == 422
    # Refused moves change nothing and write no audit row.
    state = (await proxy.admin.get(f"/tenants/{tenant}")).json()
    assert (state["phase"], state["version"]) == ("shadow", 2)
    assert len((await proxy.admin.get("/audit", params={"tenant": tenant})).json()["entries"]) == 2


async def test_rollback_to_any_earlier_phase_is_allowed(proxy: Proxy, tenant: str) -> None:
    await proxy.set_phase_api(tenant, Phase.LIVE)
    back = await proxy.admin.put(f"/tenants/{tenant}/phase", json=put_phase("legacy", "roll back"))
    assert back.status_code == 200
    assert back.json()["phase"] == "legacy"
    assert back.json()["version"] == 4


async def test_invalid_request_bodies_are_422(proxy: Proxy, tenant: str) -> None:
    for body in (
        {"phase": "nope", "reason": "x"},
        {"phase": "dual_write"},
        {"phase": "dual_write", "reason": ""},
        {"phase": "dual_write", "reason": "x", "expected_version": -1},
    ):
        response = await proxy.admin.put(f"/tenants/{tenant}/phase", json=body)
        assert response.status_code == 422, body
        assert response.json()["error"] == "invalid_request"
        assert response.json()["problems"]
    bad_tenant = await proxy.admin.put("/tenants/bad%20tenant/phase", json=put_phase("dual_write"))
    assert bad_tenant.status_code == 400
    assert bad_tenant.json()["error"] == "invalid_tenant"
    assert (await proxy.admin.get("/audit", params={"tenant": "bad tenant"})).status_code == 400


async def test_expected_version_mismatch_is_409(proxy: Proxy, tenant: str) -> None:
    await proxy.set_phase_api(tenant, Phase.DUAL_WRITE)
    stale = await proxy.admin.put(f"/tenants/{tenant}/phase", json=put_phase("shadow", expected_version=0))
    assert stale.status_code == 409
    assert stale.json()["error"] == "version_conflict"
    assert stale.json()["current_version"] == 1
    state = (await proxy.admin.get(f"/tenants/{tenant}")).json()
    assert (state["phase"], state["version"]) == ("dual_write", 1)
    fresh = await proxy.admin.put(f"/tenants/{tenant}/phase", json=put_phase("shadow", expected_version=1))
    assert fresh.status_code == 200
    assert fresh.json()["version"] == 2


async def test_leaving_complete_needs_force(proxy: Proxy, tenant: str) -> None:
    await proxy.set_phase_api(tenant, Phase.COMPLETE)
    refused = await proxy.admin.put(f"/tenants/{tenant}/phase", json=put_phase("rampdown", "oops"))
    assert refused.status_code == 422
    assert refused.json()["current"] == "complete"
    assert "force" in refused.json()["detail"]
    assert refused.json()["allowed"] == ["legacy", "dual_write", "shadow", "live", "rampdown"]

    forced = await proxy.admin.put(
        f"/tenants/{tenant}/phase", json=put_phase("rampdown", "new side broke", force=True)
    )
    assert forced.status_code == 200
    assert forced.json()["phase"] == "rampdown"
    latest = (await proxy.admin.get("/audit", params={"tenant": tenant, "limit": 1})).json()["entries"]
    assert len(latest) == 1
    assert (latest[0]["from"], latest[0]["to"], latest[0]["forced"], latest[0]["reason"]) == (
        "complete",
        "rampdown",
        True,
        "new side broke",
    )


async def test_every_change_writes_an_audit_row(proxy: Proxy, tokens: Tokens, tenant: str) -> None:
    other = tenant + "-other"
    await proxy.set_phase_api(other, Phase.DUAL_WRITE, reason="unrelated")
    moves = [("legacy", "dual_write"), ("dual_write", "shadow"), ("shadow", "live"), ("live", "dual_write")]
    for number, (_, to) in enumerate(moves, start=1):
        response = await proxy.admin.put(f"/tenants/{tenant}/phase", json=put_phase(to, f"step {number}"))
        assert response.status_code == 200, response.text

    response = await proxy.anon_admin.get("/audit", params={"tenant": tenant}, headers=bearer(tokens.read))
    assert response.status_code == 200
    entries = response.json()["entries"]
    assert len(entries) == len(moves)
    assert [(e["from"], e["to"]) for e in entries] == list(reversed(moves))  # newest first
    assert [e["version"] for e in entries] == [4, 3, 2, 1]
    assert [e["reason"] for e in entries] == ["step 4", "step 3", "step 2", "step 1"]
    assert {e["actor"] for e in entries} == {tokens.write_name}
    assert {e["tenant"] for e in entries} == {tenant}
    assert all(e["forced"] is False and e["at"] for e in entries)
    everything = (await proxy.admin.get("/audit", params={"limit": 1000})).json()["entries"]
    assert {e["tenant"] for e in everything} >= {tenant, other}


async def test_health_and_readiness(proxy: Proxy) -> None:
    health = await proxy.anon_admin.get("/healthz")
    assert health.status_code == 200
    assert health.json() == {"status": "ok"}
    ready = await proxy.anon_admin.get("/readyz")
    assert ready.status_code == 200
    body = ready.json()
    assert body["status"] == "ready"
    assert body["phases_loaded"] is True
    assert body["phase_store_connected"] is True
    assert body["phase_cache_stale_s"] == 0.0
    assert body["phase_store_error"] is None


async def test_secrets_never_appear_in_admin_responses(
    make_proxy: ProxyFactory, pg_url: str, tokens: Tokens, tenant: str
) -> None:
    backend_password = "bk-pass-6b1f0c9e"
    pg_password = "pg-pass-93aa71d2"
    redis_password = "redis-pass-0c4e2f"
    old_url = f"http://svc-user:{backend_password}@127.0.0.1:{free_port()}"
    proxy = await make_proxy(
        {
            "backends": {"old": {"url": old_url}},
            # trust authentication ignores the password; Redis with a passwordless default user accepts any
            "postgres_url": pg_url.replace("postgres@", f"postgres:{pg_password}@"),
            "redis_url": f"redis://:{redis_password}@127.0.0.1:6379/0",
        },
        sink=MemorySink(),
    )
    secrets = [tokens.write, tokens.read, backend_password, pg_password, redis_password]
    await proxy.set_phase_api(tenant, Phase.DUAL_WRITE, reason="secrets check")
    # Exercise an error path that names the (credentialed) backend.
    failed = await proxy.client.get("/items", headers={"X-Tenant-ID": tenant})
    assert failed.status_code == 502
    assert failed.json()["backend"] == "old"

    responses: list[httpx.Response] = [failed]
    for path in (
        "/tenants",
        f"/tenants/{tenant}",
        "/readyz",
        "/healthz",
        "/stats",
        "/openapi.json",
        "/docs",
        f"/audit?tenant={tenant}",
        f"/tenants/{tenant}/divergences",
        f"/tenants/{tenant}/health",
    ):
        response = await proxy.admin.get(path)
        assert response.status_code == 200, (path, response.text)
        responses.append(response)
    for path in ("/buffer", f"/buffer/dead-letters?tenant={tenant}"):  # any status will do
        responses.append(await proxy.admin.get(path))
    responses.append(await proxy.admin.put(f"/tenants/{tenant}/phase", json=put_phase("complete")))  # 422
    responses.append(await proxy.anon_admin.put(f"/tenants/{tenant}/phase", json=put_phase("shadow")))  # 401
    responses.append(
        await proxy.anon_admin.put(
            f"/tenants/{tenant}/phase", json=put_phase("shadow"), headers=bearer(tokens.read)
        )
    )  # 403
    responses.append(await proxy.anon_admin.get("/stats", headers=bearer(tokens.write + "x")))  # 401
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(200) >= 9
    assert {401, 403, 422, 502} <= set(statuses)
    for response in responses:
        text = response.text + " ".join(f"{k}: {v}" for k, v in response.headers.items())
        for secret in secrets:
            assert secret not in text, f"{response.request.url.path} exposed a secret"


async def test_a_move_whose_mirror_side_has_no_applier_is_422_naming_the_setting(
    make_proxy: ProxyFactory, tenant: str
) -> None:
    """The PostgreSQL applier configured toward new only (the shape from before sides): the phases that
    mirror to old are refused, force or not, instead of their intents being written into new."""
    resources = [{"path": "/items/{key}", "table": "items"}]
    proxy = await make_proxy(
        {
            "worker": {
                "applier": "postgres",
                "postgres": {"url": "postgresql://x@db/new", "resources": resources},
            }
        }
    )
    await proxy.set_phase_api(tenant, Phase.SHADOW)  # mirrors to new: applied
    for force in (False, True):
        response = await proxy.admin.put(f"/tenants/{tenant}/phase", json=put_phase("live", force=force))
        assert response.status_code == 422, response.text
        body = response.json()
        assert (body["error"], body["setting"], body["side"]) == (
            "applier_not_configured",
            "worker.postgres.old",
            "old",
        )
        assert "worker.postgres.old" in body["detail"]
        assert "live" in body["detail"]
    assert (await proxy.admin.get(f"/tenants/{tenant}")).json()["phase"] == "shadow"
    # Moves that mirror to new, or to nothing, are untouched; a refused move stays refused as such first.
    response = await proxy.admin.put(f"/tenants/{tenant}/phase", json=put_phase("complete"))
    assert (response.status_code, response.json()["error"]) == (422, "phase_move_not_allowed")
    assert (await proxy.admin.put(f"/tenants/{tenant}/phase", json=put_phase("legacy"))).status_code == 200


# -- refusing before reading ------------------------------------------------------------------------------
def raw_admin(proxy: Proxy, method: str, target: str, body: bytes = b"", token: str | None = None) -> bytes:
    """A request as bytes, exactly as given: no client tidies the target, the body or the headers."""
    head = f"{method} {target} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n"
    if token is not None:
        head += f"Authorization: Bearer {token}\r\n"
    if body:
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


async def send_raw(proxy: Proxy, request: bytes) -> tuple[int, dict[str, Any]]:
    status, _headers, body = await raw_request(proxy.admin_server.port, request)
    return status, orjson.loads(body)


async def test_malformed_body_is_refused_by_token_before_it_is_parsed(proxy: Proxy, tenant: str) -> None:
    target = f"/tenants/{tenant}/phase"
    for token, status, code in (
        (None, 401, "unauthorized"),
        ("not-a-token", 401, "unauthorized"),
        (proxy.tokens.read, 403, "forbidden"),
        (proxy.tokens.write, 422, "invalid_request"),  # only a writer learns that the body is malformed
    ):
        answer = await send_raw(proxy, raw_admin(proxy, "PUT", target, b'{"phase": "dual_wr', token))
        assert answer[0] == status, (token, answer)
        assert answer[1]["error"] == code
        assert answer[1]["detail"]
    assert (await proxy.admin.get(f"/tenants/{tenant}")).json()["version"] == 0


async def test_every_route_that_needs_a_token_refuses_before_reading(proxy: Proxy) -> None:
    """Whatever the route and whatever it would parse, a request without a token is 401, and a read
    token on a route that changes something 403, with a body that would not parse."""
    document = (await proxy.admin.get("/openapi.json")).json()
    checked = 0
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            if not operation.get("security"):
                continue
            target = (
                path.replace("{tenant}", "t1").replace("{divergence_id}", "1").replace("{report_id}", "1")
            )
            request = raw_admin(proxy, method.upper(), target + "?limit=oops", b"{not json")
            status, body = await send_raw(proxy, request)
            assert (status, body["error"]) == (401, "unauthorized"), (method, path, body)
            if "403" in operation["responses"]:
                read = raw_admin(proxy, method.upper(), target, b"{not json", proxy.tokens.read)
                status, body = await send_raw(proxy, read)
                assert (status, body["error"]) == (403, "forbidden"), (method, path, body)
            checked += 1
    assert checked >= 15, "too few routes were checked: the test proved nothing"


async def test_nul_in_text_bound_for_postgres_is_422(proxy: Proxy, tenant: str) -> None:
    body = b'{"phase": "dual_write", "reason": "start\\u0000mirroring"}'  # JSON's escape: a real NUL
    status, answer = await send_raw(
        proxy, raw_admin(proxy, "PUT", f"/tenants/{tenant}/phase", body, proxy.tokens.write)
    )
    assert status == 422, answer
    assert answer["error"] == "invalid_request"
    assert [p["field"] for p in answer["problems"]] == ["reason"]
    assert "NUL" in answer["problems"][0]["problem"]
    target = f"/tenants/{tenant}/verify-reports?table=orders%00"
    status, answer = await send_raw(proxy, raw_admin(proxy, "GET", target, token=proxy.tokens.read))
    assert status == 422, answer
    assert answer["problems"][0]["field"] == "query.table", answer
    assert (await proxy.admin.get(f"/tenants/{tenant}")).json()["version"] == 0


@pytest.mark.parametrize("bad_id", [str(2**63), str(2**64 + 5), "-1", "0", "-" + str(2**63 + 1)])
async def test_ids_no_row_can_have_are_404(proxy: Proxy, tenant: str, bad_id: str) -> None:
    for target in (f"/tenants/{tenant}/divergences/{bad_id}", f"/verify-reports/{bad_id}"):
        status, answer = await send_raw(proxy, raw_admin(proxy, "GET", target, token=proxy.tokens.read))
        assert (status, answer["error"]) == (404, "not_found"), (target, answer)


async def test_page_cursors_out_of_column_range_are_422(proxy: Proxy, tenant: str) -> None:
    for target in (f"/audit?after={2**63}", f"/tenants/{tenant}/divergences?after=-1", "/audit?after=0"):
        status, answer = await send_raw(proxy, raw_admin(proxy, "GET", target, token=proxy.tokens.read))
        assert (status, answer["error"]) == (422, "invalid_request"), (target, answer)
    status, answer = await send_raw(
        proxy, raw_admin(proxy, "GET", f"/buffer/dead-letters?after={2**64}-0:1", token=proxy.tokens.read)
    )
    assert status == 422, answer  # Redis could not take it: refused before it is asked


@pytest.mark.parametrize("dots", ["..", ".", "%2E%2E", "%2e", ".%2E"])
async def test_dot_segments_are_not_tenant_ids(proxy: Proxy, dots: str) -> None:
    write = proxy.tokens.write
    for method, target, body in (
        ("GET", f"/tenants/{dots}", b""),
        ("PUT", f"/tenants/{dots}/phase", b'{"phase": "dual_write", "reason": "x"}'),
        ("GET", f"/audit?tenant={dots}", b""),
        ("GET", f"/tenants?after={dots}", b""),
    ):
        status, answer = await send_raw(proxy, raw_admin(proxy, method, target, body, write))
        assert (status, answer["error"]) == (400, "invalid_tenant"), (target, answer)
    listed = await proxy.admin.get("/tenants", params={"limit": 5000})
    assert {".", ".."}.isdisjoint(row["tenant"] for row in listed.json()["tenants"])


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"force": "yes"}, "force"),
        ({"force": 1}, "force"),
        ({"force": "true"}, "force"),
        ({"expected_version": 1.0}, "expected_version"),
        ({"expected_version": "0"}, "expected_version"),
        ({"expected_version": 2**63}, "expected_version"),
        ({"froce": True}, "froce"),
        ({"reason": 5}, "reason"),
    ],
)
async def test_phase_change_fields_are_strict(
    proxy: Proxy, tenant: str, extra: dict[str, Any], field: str
) -> None:
    response = await proxy.admin.put(f"/tenants/{tenant}/phase", json={**put_phase("dual_write"), **extra})
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "invalid_request"
    assert field in [p["field"] for p in response.json()["problems"]]
    assert (await proxy.admin.get(f"/tenants/{tenant}")).json()["version"] == 0


async def test_routing_errors_have_the_error_shape(proxy: Proxy) -> None:
    missing = await proxy.admin.get("/no-such-route")
    assert missing.status_code == 404
    assert missing.json()["error"] == "not_found"
    wrong_method = await proxy.admin.delete("/stats")
    assert wrong_method.status_code == 405
    assert wrong_method.json()["error"] == "method_not_allowed"
    assert "GET" in wrong_method.headers["allow"]
