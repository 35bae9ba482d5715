"""Shadow comparison through the proxy: answers lifted (content-encoding undone), per-resource rules,
selected headers, only GET/HEAD shadowed, and the policy reloaded from its file."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import pytest

from proxy.shadow.runner import PolicyReloadError
from routing.phases import Phase
from tests.proxy.divergence.conftest import ScriptedPair
from tests.support.proxies import Proxy, ProxyBuilder, ProxyFactory
from tests.support.waits import wait_for

POLICY: dict[str, Any] = {
    "defaults": {"headers": ["etag"]},
    "resources": [{"resource": "/items/{id}", "ignore": ["$.served_at"]}],
    "noise": {"sample_rate": 0},  # no second reads: these tests count requests
}


def h(tenant: str) -> dict[str, str]:
    return {"X-Tenant-ID": tenant}


@pytest.fixture(scope="module")
async def shadow_proxy(shared_builder: ProxyBuilder, _scripted_pair: ScriptedPair) -> Proxy:
    return await shared_builder.start(
        {"backends": _scripted_pair.backends(), "divergence": {"policy": POLICY}, "log_level": "error"}
    )


async def read_and_compare(
    proxy: Proxy, tenant: str, path: str, method: str = "GET", headers: dict[str, str] | None = None
) -> dict[str, Any]:
    """Send one read through the proxy and wait until its comparison is counted; the counters' change."""
    before = (await proxy.stats())["shadow"]
    response = await proxy.client.request(method, path, headers={**h(tenant), **(headers or {})})
    assert response.headers["x-cutover-served-by"] == "old"
    if method == "GET":
        assert response.json() is not None  # the client got old's answer (httpx undoes its gzip)

    async def counted() -> bool:
        return bool((await proxy.stats())["shadow"]["compared"] > before["compared"])

    await wait_for(counted, timeout_s=5)
    after = (await proxy.stats())["shadow"]
    return {key: after[key] - before[key] for key in ("compared", "equal", "divergent", "noise", "failed")}


async def test_compressed_and_plain_answers_are_equal(
    shadow_proxy: Proxy, scripted: ScriptedPair, tenant: str
) -> None:
    await shadow_proxy.set_phase_direct(tenant, Phase.SHADOW)
    body = b'{"id": 1, "name": "same"}'
    json_gz = [(b"content-type", b"application/json"), (b"content-encoding", b"gzip")]
    scripted.old.set("/things/1", raw=gzip.compress(body), headers=json_gz)
    scripted.new.set("/things/1", raw=body)
    assert await read_and_compare(shadow_proxy, tenant, "/things/1", headers={"Accept-Encoding": "gzip"}) == {
        "compared": 1,
        "equal": 1,
        "divergent": 0,
        "noise": 0,
        "failed": 0,
    }


async def test_rules_apply_to_their_resource_only(
    shadow_proxy: Proxy, scripted: ScriptedPair, tenant: str
) -> None:
    await shadow_proxy.set_phase_direct(tenant, Phase.SHADOW)
    for path in ("/items/7", "/other/7"):
        scripted.old.set(path, {"id": 7, "served_at": 1.5})
        scripted.new.set(path, {"id": 7, "served_at": 2.5})
    assert (await read_and_compare(shadow_proxy, tenant, "/items/7"))["equal"] == 1
    assert (await read_and_compare(shadow_proxy, tenant, "/other/7"))["divergent"] == 1

    async def stored() -> bool:
        listed = await shadow_proxy.admin.get(f"/tenants/{tenant}/divergences")
        return len(listed.json()["divergences"]) == 1

    await wait_for(stored, timeout_s=5)
    entry = (await shadow_proxy.admin.get(f"/tenants/{tenant}/divergences")).json()["divergences"][0]
    assert entry["resource"] == "/other/*"
    assert [d["path"] for d in entry["differences"]] == ["$.served_at"]


async def test_selected_headers_are_compared(
    shadow_proxy: Proxy, scripted: ScriptedPair, tenant: str
) -> None:
    await shadow_proxy.set_phase_direct(tenant, Phase.SHADOW)
    scripted.old.set(
        "/items/9", {"id": 9}, headers=[(b"content-type", b"application/json"), (b"ETag", b'"a"')]
    )
    scripted.new.set(
        "/items/9", {"id": 9}, headers=[(b"content-type", b"application/json"), (b"etag", b'"b"')]
    )
    assert (await read_and_compare(shadow_proxy, tenant, "/items/9"))["divergent"] == 1

    async def stored() -> list[dict[str, Any]]:
        return (await shadow_proxy.admin.get(f"/tenants/{tenant}/divergences")).json()["divergences"]  # type: ignore[no-any-return]

    await wait_for(lambda: _nonempty(stored()), timeout_s=5)
    entry = (await stored())[0]
    assert entry["differences"] == [
        {"path": "headers.etag", "kind": "changed", "serving": '"a"', "shadow": '"b"', "noise": False}
    ]
    assert entry["response_headers"]["serving"]["etag"] == '"a"'


async def _nonempty(listing: Any) -> bool:
    return bool(await listing)


async def test_only_get_and_head_are_shadowed(
    shadow_proxy: Proxy, scripted: ScriptedPair, tenant: str
) -> None:
    await shadow_proxy.set_phase_direct(tenant, Phase.SHADOW)
    scripted.old.set("/items/3", {"id": 3})
    scripted.new.set("/items/3", {"id": 3})
    assert (await read_and_compare(shadow_proxy, tenant, "/items/3", "HEAD"))["equal"] == 1
    assert scripted.new.count("HEAD", "/items/3", tenant) == 1
    before = (await shadow_proxy.stats())["shadow"]
    response = await shadow_proxy.client.options("/items/3", headers=h(tenant))
    assert response.headers["x-cutover-served-by"] == "old"
    write = await shadow_proxy.client.put("/items/3", json={"id": 3}, headers=h(tenant))
    assert write.headers["x-cutover-served-by"] == "old"
    assert scripted.old.count("OPTIONS", "/items/3", tenant) == 1
    assert scripted.new.count("OPTIONS", "/items/3", tenant) == 0  # OPTIONS is a read, but never replayed
    assert scripted.new.count("PUT", "/items/3", tenant) == 0  # writes reach new only through the buffer
    after = (await shadow_proxy.stats())["shadow"]
    assert (after["compared"], after["skipped"], after["unsampled"]) == (
        before["compared"],
        before["skipped"],
        before["unsampled"],
    )


async def test_policy_file_reload(
    make_proxy: ProxyFactory, scripted: ScriptedPair, tenant: str, tmp_path: Path
) -> None:
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text("noise: {sample_rate: 0}\n")
    proxy = await make_proxy(
        {
            "backends": scripted.backends(),
            "divergence": {"policy_file": str(policy_file)},
            "log_level": "error",
        }
    )
    await proxy.set_phase_direct(tenant, Phase.SHADOW)
    scripted.old.set("/items/1", {"id": 1, "updated_at": "a"})
    scripted.new.set("/items/1", {"id": 1, "updated_at": "b"})
    assert (await read_and_compare(proxy, tenant, "/items/1"))["divergent"] == 1

    policy_file.write_text("noise: {sample_rate: 0}\ndefaults: {ignore: [$.updated_at]}\n")
    assert proxy.runtime.shadow.reload_policy() == {"policy_file": str(policy_file), "resources": 0}
    assert (await read_and_compare(proxy, tenant, "/items/1"))["equal"] == 1

    policy_file.write_text("defaults: {ignore: [updated_at]}\n")  # not a path: refused, the old one stays
    with pytest.raises(PolicyReloadError, match="defaults.ignore.0"):
        proxy.runtime.shadow.reload_policy()
    proxy.runtime.shadow.handle_sighup()  # the signal's handler logs and keeps the policy in force
    assert proxy.runtime.shadow.policy.defaults.ignore == ["$.updated_at"]
    assert (await read_and_compare(proxy, tenant, "/items/1"))["equal"] == 1
