"""docker-compose.yml holds together: its services refer to each other, to the image and to cutover's
settings consistently. There is no Docker here, so nothing is started: the file is read as compose reads
it (YAML with merge keys) and checked against the Dockerfile, cutover's command line and settings.
tests/test_image.py runs the same commands from the image's build.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from config.loader import load_settings
from proxy.cli.main import _parser
from tests.support.dockerfile import ROOT, read_dockerfile

IMAGE = "cutover:local"
CONFIG_IN_CONTAINER = "/etc/cutover/cutover.yaml"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


def cutover_services(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in services.items() if s.get("image") == IMAGE}


def image_env() -> dict[str, str]:
    final = read_dockerfile()[-1]
    return dict(word.split("=", 1) for i in final.all("ENV") for word in i.words())


def compose_env(service: dict[str, Any]) -> dict[str, str]:
    """The service's environment as the container sees it: the image's ENV, then compose's, with
    `${VAR:?message}` given a value (compose refuses to start without one)."""
    values = {**image_env()}
    for name, value in (service.get("environment") or {}).items():
        values[name] = re.sub(r"\$\{[A-Z_]+:\?[^}]*\}", "a-token-of-sixteen-chars", str(value))
    return values


def test_the_working_set_is_there(services: dict[str, dict[str, Any]]) -> None:
    assert {"postgres", "redis", "old-service", "new-service", "proxy", "worker"} <= set(services)
    assert set(cutover_services(services)) == {"old-service", "new-service", "proxy", "worker"}
    for name, service in cutover_services(services).items():
        assert service.get("build") == ".", f"{name} is not built from this repository's Dockerfile"


def test_every_service_has_a_health_check_and_dependencies_wait_for_it(
    services: dict[str, dict[str, Any]],
) -> None:
    for name, service in services.items():
        assert service.get("healthcheck", {}).get("test"), f"{name} has no health check"
        for dependency, condition in (service.get("depends_on") or {}).items():
            assert dependency in services, f"{name} depends on unknown service {dependency}"
            assert condition == {"condition": "service_healthy"}, (name, dependency, condition)


def test_cutover_commands_and_health_checks_are_cutover_commands(services: dict[str, dict[str, Any]]) -> None:
    parser = _parser()
    checked = 0
    for name, service in cutover_services(services).items():
        args = parser.parse_args(service["command"])  # exits (SystemExit) on an unknown command
        assert hasattr(args, "run"), f"{name}: {service['command']} is not a cutover command"
        if getattr(args, "config", None) is not None:
            assert args.config == CONFIG_IN_CONTAINER
            mounts = [v.split(":")[:2] for v in service.get("volumes", [])]
            assert ["./config/compose.yaml", CONFIG_IN_CONTAINER] in mounts, f"{name} has no config mounted"
        test = service["healthcheck"]["test"]
        if test[:2] == ["CMD", "cutover"]:
            parser.parse_args(test[2:])
            checked += 1
    assert checked, "the test proved nothing: no health check runs a cutover command"
    assert services["worker"]["healthcheck"]["test"][2:4] == ["worker", "--check"]


def _probe_port(service: dict[str, Any]) -> int:
    """The port a `python -c "...urlopen('http://127.0.0.1:PORT/...')"` health check asks."""
    test = service["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"], test
    match = re.search(r"http://127\.0\.0\.1:(\d+)/", test[3])
    assert match, test
    return int(match.group(1))


def test_ports_and_addresses_agree_with_the_settings(
    services: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    proxy = services["proxy"]
    settings = load_settings(ROOT / "config" / "compose.yaml", environ=compose_env(proxy))
    assert _probe_port(proxy) == settings.admin.listen.port
    assert proxy["healthcheck"]["test"][3].count("/readyz") == 1
    published = {int(mapping.rsplit(":", 1)[-1]) for mapping in proxy["ports"]}
    assert published == {settings.listen.port, settings.admin.listen.port}
    # The backends the settings name are the compose file's demo services, on the port they listen on.
    for side in ("old", "new"):
        url = urlsplit(getattr(settings.backends, side).url.get_secret_value())
        service = services[str(url.hostname)]
        command = service["command"]
        assert command[0] == "demo-backend"
        assert command[1] == side
        assert int(command[command.index("--port") + 1]) == url.port == _probe_port(service)
        assert command[command.index("--host") + 1] == "0.0.0.0"  # reachable from the other containers
    for name in ("proxy", "worker"):
        env = compose_env(services[name])
        current = load_settings(ROOT / "config" / "compose.yaml", environ=env)
        for url in (current.postgres_url.get_secret_value(), current.redis_url.get_secret_value()):
            assert urlsplit(url).hostname in services, f"{name}: {url} names no service"
        assert name not in services[name].get("depends_on", {})
        assert {"postgres", "redis"} <= set(services[name]["depends_on"])


def test_the_spool_is_on_a_volume_owned_by_the_service_user(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    final = read_dockerfile()[-1]
    (volume_dir,) = [word for i in final.all("VOLUME") for word in i.words()]
    spool_path = image_env()["CUTOVER_BUFFER__SPOOL_PATH"]
    assert Path(spool_path).parent == Path(volume_dir)
    (user,) = [i.arguments for i in final.all("USER")]
    runs = " ".join(i.arguments for i in final.all("RUN"))
    assert f"--uid {user}" in runs
    assert f"mkdir -p {volume_dir}" in runs
    assert f"chown {user}:{user} {volume_dir}" in runs
    # RUNs before VOLUME: a named volume starts as a copy of the image's directory, ownership included.
    keywords = [i.keyword for i in final.instructions]
    assert keywords.index("RUN") < keywords.index("VOLUME")
    mounts = {v.split(":")[1]: v.split(":")[0] for v in services["proxy"]["volumes"]}
    assert mounts[volume_dir] in (compose.get("volumes") or {}), "the spool's volume is not declared"
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"bind mount {source} does not exist"
            else:
                assert source in compose["volumes"], f"volume {source} is not declared"
    assert final.all("ENTRYPOINT")[0].words() == ["cutover"]
