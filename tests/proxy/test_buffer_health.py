"""Never half-applied: a mirroring write is refused *before* it is forwarded when neither Redis nor the
spool can take its intent, readiness says so, and a proxy whose spool is unusable does not start.

Making the spool unwritable as root: permission bits do not stop root, so the spool's directory is
swapped for a regular file while the proxy runs. Every open or create under it then fails (ENOTDIR) for
any user, on any file system, with no capability needed and nothing left behind that a clean-up could
not remove (an immutable attribute or a read-only mount would need both).
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from proxy import server as proxy_server
from proxy.cli.main import main
from routing.phases import Phase
from tests.support.demo_backends import DemoBackend
from tests.support.postgres import PG_ADMIN_DSN
from tests.support.proxies import Proxy, ProxyFactory
from tests.support.redis_keys import REDIS_URL
from tests.support.servers import free_port
from tests.support.spool_dirs import break_directory, repair_directory
from tests.support.waits import wait_for


def h(tenant: str) -> dict[str, str]:
    return {"X-Tenant-ID": tenant}


async def readiness(proxy: Proxy) -> tuple[int, dict[str, Any]]:
    response = await proxy.anon_admin.get("/readyz")
    return response.status_code, response.json()


async def settled(proxy: Proxy, wanted: dict[str, Any], *, timeout_s: float = 5.0) -> bool:
    """Wait until /readyz's buffer section shows `wanted` (the health check runs in the background);
    False if it never does: the assertions that follow say what was wrong."""

    async def shows() -> bool:
        _, body = await readiness(proxy)
        buffer = body.get("buffer", {})
        return all(buffer.get(key) == value for key, value in wanted.items())

    try:
        await wait_for(shows, timeout_s=timeout_s)
    except AssertionError:
        return False
    return True


async def test_redis_down_and_spool_broken_refuses_the_write_before_it_reaches_old(
    make_proxy: ProxyFactory, old: DemoBackend, new: DemoBackend, tmp_path: Path
) -> None:
    directory = tmp_path / "spool"
    directory.mkdir()
    proxy = await make_proxy(
        {
            "redis_url": f"redis://127.0.0.1:{free_port()}/0",
            "buffer": {"spool_path": str(directory / "intents.spool")},
        },
    )
    tenant = f"hole-{uuid.uuid4().hex[:8]}"
    await proxy.set_phase_api(tenant, Phase.DUAL_WRITE)
    # Redis down, spool fine: the proxy serves writes from its spool, and says it is degraded.
    await settled(proxy, {"redis_reachable": False, "spool_writable": True})
    status, body = await readiness(proxy)
    assert status == 200, body
    assert body["status"] == "degraded", body

    break_directory(directory)
    await settled(proxy, {"spool_writable": False})
    response = await proxy.client.put("/items/k1", json={"v": 1}, headers=h(tenant))
    assert response.status_code == 503, (response.status_code, response.text)
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-cutover-served-by"] == "proxy"
    assert "retry-after" in response.headers
    error = response.json()
    assert error["error"] == "buffer_unavailable"
    assert error["tenant"] == tenant
    assert "not sent to old" in error["detail"]
    assert old.recorder.requests_for(tenant) == []
    assert await old.items_of(tenant) == {}
    assert new.recorder.requests_for(tenant) == []
    status, body = await readiness(proxy)
    assert status == 503, body
    assert body["status"] == "not_ready", body
    assert body["buffer"]["accepting"] is False
    assert body["buffer_refusal"]["error"] == "buffer_unavailable"
    assert str(directory) in body["buffer"]["spool_problem"]
    # Reads are not affected.
    assert (await proxy.client.get("/items", headers=h(tenant))).status_code == 200

    # The spool takes writes again: so does the proxy, spooling them while Redis stays away.
    repair_directory(directory)
    assert await settled(proxy, {"spool_writable": True, "accepting": True})
    status, body = await readiness(proxy)
    assert status == 200, body
    assert body["status"] == "degraded", body
    response = await proxy.client.put("/items/k1", json={"v": 2}, headers=h(tenant))
    assert response.status_code == 200, response.text
    assert proxy.runtime.sink.status()["spooled"] == 1
    assert await old.items_of(tenant) == {"k1": {"id": "k1", "v": 2}}


async def test_spool_broken_while_redis_is_up_is_degraded_not_refused(
    make_proxy: ProxyFactory, old: DemoBackend, tmp_path: Path
) -> None:
    directory = tmp_path / "spool"
    directory.mkdir()
    proxy = await make_proxy(
        {"buffer": {"spool_path": str(directory / "intents.spool"), "spool_check_interval_s": 0.1}},
    )
    tenant = f"up-{uuid.uuid4().hex[:8]}"
    await proxy.set_phase_api(tenant, Phase.DUAL_WRITE)
    assert await settled(proxy, {"redis_reachable": True, "spool_writable": True})
    status, body = await readiness(proxy)
    assert status == 200, body
    assert body["status"] == "ready", body

    break_directory(directory)
    await settled(proxy, {"spool_writable": False})
    status, body = await readiness(proxy)
    assert status == 200, body
    assert body["status"] == "degraded", body
    assert body["buffer"]["accepting"] is True
    assert body["buffer_refusal"] is None
    response = await proxy.client.put("/items/k1", json={"v": 1}, headers=h(tenant))
    assert response.status_code == 200, response.text
    assert await old.items_of(tenant) == {"k1": {"id": "k1", "v": 1}}
    assert proxy.runtime.sink.status()["spooled"] == 0  # it went to Redis


# -- start-up ---------------------------------------------------------------------------------------------
def _config(tmp_path: Path, spool_path: Path, *, workers: int = 1) -> Path:
    config = tmp_path / "cutover.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "backends": {"old": {"url": "http://127.0.0.1:9"}, "new": {"url": "http://127.0.0.1:9"}},
                "postgres_url": PG_ADMIN_DSN,
                "redis_url": REDIS_URL,
                "listen": f"127.0.0.1:{free_port()}",
                "admin": {"listen": f"127.0.0.1:{free_port()}"},
                "buffer": {"spool_path": str(spool_path)},
                "workers": workers,
            }
        )
    )
    return config


def test_serve_refuses_to_start_with_a_missing_spool_directory(tmp_path: Path) -> None:
    spool_path = tmp_path / "absent" / "intents.spool"
    result = subprocess.run(
        [sys.executable, "-m", "proxy.cli.main", "serve", "--config", str(_config(tmp_path, spool_path))],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert result.stdout == ""
    assert result.stderr == (
        f"cutover: spool {spool_path}.0 is not usable: directory {tmp_path / 'absent'} does not exist"
        " (buffer.spool_path)\n"
    )


def _parent_is_a_file(tmp_path: Path) -> tuple[Path, str]:
    (tmp_path / "plain").write_text("")
    return (
        tmp_path / "plain" / "intents.spool",
        f"spool {tmp_path / 'plain' / 'intents.spool.0'} is not \
usable: {tmp_path / 'plain'} is not a directory",
    )


def _second_process_spool_is_a_directory(tmp_path: Path) -> tuple[Path, str]:
    (tmp_path / "intents.spool.1").mkdir()  # each process has its own spool: all are checked
    return (
        tmp_path / "intents.spool",
        f"spool {tmp_path / 'intents.spool.1'} is not usable: \
{tmp_path / 'intents.spool.1'} is not a regular file",
    )


@pytest.mark.parametrize("case", [_parent_is_a_file, _second_process_spool_is_a_directory])
def test_serve_names_the_spool_and_its_problem(
    tmp_path: Path, case: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same refusal in process (the check runs before anything starts): cheaper than a subprocess."""

    def started(*_args: Any, **_kwargs: Any) -> None:
        raise AssertionError("serve went past the spool check")

    monkeypatch.setattr(proxy_server, "configure_logging", started)  # the first thing serve does after it
    spool_path, message = case(tmp_path)
    assert main(["serve", "--config", str(_config(tmp_path, spool_path, workers=2))]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"cutover: {message} (buffer.spool_path)\n"
