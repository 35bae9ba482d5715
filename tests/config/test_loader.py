"""Loading settings from YAML plus an explicit `environ` (the real os.environ is never used)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pydantic
import pytest

from config.loader import ConfigError, load_settings
from config.settings import ListenAddress, Settings, TokenScope
from routing.phases import Phase

MINIMAL = """\
backends:
  old:
    url: http://old.internal:9000
  new:
    url: https://new.internal
"""


Writer = Callable[..., Path]


@pytest.fixture
def write(tmp_path: Path) -> Writer:
    def _write(text: str, name: str = "cutover.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return _write


def problems_of(info: pytest.ExceptionInfo[ConfigError]) -> list[str]:
    assert isinstance(info.value.problems, list)
    assert info.value.problems
    return info.value.problems


# --- the happy path -------------------------------------------------------------------------------------


def test_minimal_config_and_defaults(write: Writer) -> None:
    settings = load_settings(write(MINIMAL), environ={})
    assert isinstance(settings, Settings)
    assert settings.backends.old.url.get_secret_value() == "http://old.internal:9000"
    assert settings.backends.new.url.get_secret_value() == "https://new.internal"
    assert settings.listen == ListenAddress(host="127.0.0.1", port=8080)
    assert str(settings.listen) == "127.0.0.1:8080"
    assert settings.admin.listen == ListenAddress(host="127.0.0.1", port=8081)
    assert settings.admin.tokens == {}
    assert settings.tenant.header == "X-Tenant-ID"
    assert settings.default_phase is Phase.LEGACY
    assert settings.workers == 1
    assert settings.log_level == "info"
    assert settings.access_log is False
    assert settings.backends.old.timeout_s == 30.0
    assert settings.backends.old.headers.set == {}
    assert settings.backends.old.headers.remove == []
    assert settings.postgres_url.get_secret_value().startswith("postgresql://")
    assert settings.redis_url.get_secret_value().startswith("redis://")


def test_yaml_values_override_defaults(write: Writer) -> None:
    text = MINIMAL + (
        'listen: "0.0.0.0:9090"\n'
        "admin:\n  listen: '[::1]:9191'\n"
        "tenant:\n  header: X-Org\n"
        "default_phase: shadow\n"
        "workers: 4\n"
    )
    settings = load_settings(write(text), environ={})
    assert settings.listen == ListenAddress(host="0.0.0.0", port=9090)
    assert settings.admin.listen == ListenAddress(host="::1", port=9191)
    assert str(settings.admin.listen) == "[::1]:9191"
    assert settings.tenant.header == "X-Org"
    assert settings.default_phase is Phase.SHADOW
    assert settings.workers == 4


def test_settings_are_frozen(write: Writer) -> None:
    settings = load_settings(write(MINIMAL), environ={})
    with pytest.raises(pydantic.ValidationError):
        settings.workers = 2


# --- environment ----------------------------------------------------------------------------------------


def test_env_overrides_yaml(write: Writer) -> None:
    settings = load_settings(write(MINIMAL), environ={"CUTOVER_BACKENDS__NEW__URL": "http://override:1234"})
    assert settings.backends.new.url.get_secret_value() == "http://override:1234"
    assert settings.backends.old.url.get_secret_value() == "http://old.internal:9000"  # untouched sibling


def test_env_names_are_case_insensitive_after_prefix(write: Writer) -> None:
    settings = load_settings(write(MINIMAL), environ={"CUTOVER_Backends__New__Url": "http://mixed"})
    assert settings.backends.new.url.get_secret_value() == "http://mixed"


def test_env_values_are_yaml_scalars(write: Writer) -> None:
    settings = load_settings(
        write(MINIMAL),
        environ={
            "CUTOVER_WORKERS": "4",
            "CUTOVER_ACCESS_LOG": "true",
            "CUTOVER_BACKENDS__OLD__HEADERS__REMOVE": "[Cookie, X-Debug]",
            "CUTOVER_BACKENDS__OLD__TIMEOUT_S": "2.5",
            "CUTOVER_LISTEN": "0.0.0.0:80",
            "CUTOVER_DEFAULT_PHASE": "live",
        },
    )
    assert settings.workers == 4
    assert settings.access_log is True
    assert settings.backends.old.headers.remove == ["Cookie", "X-Debug"]
    assert settings.backends.old.timeout_s == 2.5
    assert settings.listen == ListenAddress(host="0.0.0.0", port=80)
    assert settings.default_phase is Phase.LIVE


def test_env_only_without_a_file(write: Writer) -> None:
    settings = load_settings(
        None, environ={"CUTOVER_BACKENDS__OLD__URL": "http://o", "CUTOVER_BACKENDS__NEW__URL": "http://n"}
    )
    assert settings.backends.old.url.get_secret_value() == "http://o"
    assert settings.backends.new.url.get_secret_value() == "http://n"


def test_cutover_config_env_names_the_file(write: Writer) -> None:
    path = write(MINIMAL + "workers: 3\n")
    settings = load_settings(None, environ={"CUTOVER_CONFIG": str(path)})
    assert settings.workers == 3


def test_non_setting_variables_are_ignored(write: Writer) -> None:
    settings = load_settings(
        write(MINIMAL),
        environ={
            "PATH": "/usr/bin",
            "HOME": "/root",
            "CUTOVERX": "1",
            "cutover_workers": "9",
            "CUTOVER_ADMIN_URL": "http://127.0.0.1:8081",
            "CUTOVER_ADMIN_TOKEN": "not-a-setting-0000",
            "CUTOVER_CONFIG": "/does/not/matter/when/path/is/given.yaml",
        },
    )
    assert settings.workers == 1


def test_nested_env_merges_into_yaml_map(write: Writer) -> None:
    text = MINIMAL + (
        "admin:\n"
        "  tokens:\n"
        "    ci:\n"
        "      token: ci-token-0123456789\n"
        "    ops:\n"
        "      token: ops-token-from-yaml-0000\n"
        "      scope: read\n"
    )
    settings = load_settings(write(text), environ={"CUTOVER_ADMIN__TOKENS__OPS__SCOPE": "write"})
    tokens = settings.admin.tokens
    assert set(tokens) == {"ci", "ops"}
    assert tokens["ops"].scope is TokenScope.WRITE
    assert tokens["ops"].token.get_secret_value() == "ops-token-from-yaml-0000"
    assert tokens["ci"].scope is TokenScope.READ
    assert tokens["ci"].token.get_secret_value() == "ci-token-0123456789"


def test_nested_env_creates_map_entry(write: Writer) -> None:
    text = MINIMAL + "admin:\n  tokens:\n    ci:\n      token: ci-token-0123456789\n"
    settings = load_settings(
        write(text),
        environ={
            "CUTOVER_ADMIN__TOKENS__OPS__TOKEN": "ops-token-from-env-0000",
            "CUTOVER_ADMIN__TOKENS__OPS__SCOPE": "write",
        },
    )
    assert set(settings.admin.tokens) == {"ci", "ops"}
    assert settings.admin.tokens["ops"].token.get_secret_value() == "ops-token-from-env-0000"
    assert settings.admin.tokens["ops"].scope is TokenScope.WRITE


# --- `<key>_file` secrets -------------------------------------------------------------------------------


def test_yaml_key_file(write: Writer, tmp_path: Path) -> None:
    secret = tmp_path / "ops.token"
    secret.write_text("  token-from-a-mounted-file\n\n")
    text = MINIMAL + f"admin:\n  tokens:\n    ops:\n      token_file: {secret}\n      scope: write\n"
    settings = load_settings(write(text), environ={})
    assert settings.admin.tokens["ops"].token.get_secret_value() == "token-from-a-mounted-file"
    assert settings.admin.tokens["ops"].scope is TokenScope.WRITE


def test_yaml_url_file_for_backend(write: Writer, tmp_path: Path) -> None:
    secret = tmp_path / "new.url"
    secret.write_text("https://user:pw@new.example\n")
    text = f"backends:\n  old:\n    url: http://old\n  new:\n    url_file: {secret}\n"
    settings = load_settings(write(text), environ={})
    assert settings.backends.new.url.get_secret_value() == "https://user:pw@new.example"


def test_env_key_file(write: Writer, tmp_path: Path) -> None:
    secret = tmp_path / "pg"
    secret.write_text("postgresql://app:pg-secret@db:5432/cutover\n")
    settings = load_settings(write(MINIMAL), environ={"CUTOVER_POSTGRES_URL_FILE": str(secret)})
    assert settings.postgres_url.get_secret_value() == "postgresql://app:pg-secret@db:5432/cutover"


def test_env_nested_key_file(write: Writer, tmp_path: Path) -> None:
    secret = tmp_path / "tok"
    secret.write_text("nested-env-file-token\n")
    settings = load_settings(write(MINIMAL), environ={"CUTOVER_ADMIN__TOKENS__OPS__TOKEN_FILE": str(secret)})
    assert settings.admin.tokens["ops"].token.get_secret_value() == "nested-env-file-token"


def test_unreadable_key_file(write: Writer, tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    text = MINIMAL + f"admin:\n  tokens:\n    ops:\n      token_file: {missing}\n"
    with pytest.raises(ConfigError) as info:
        load_settings(write(text), environ={})
    (problem,) = problems_of(info)
    assert problem.startswith("admin.tokens.ops.token_file: cannot read")
    assert str(missing) in problem


# --- errors ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        ("lissten: 127.0.0.1:1\n", "lissten"),
        ("admin:\n  tokenz: {}\n", "admin.tokenz"),
        ("shadow:\n  sample: 0.5\n", "shadow.sample"),
    ],
)
def test_unknown_yaml_key(write: Writer, extra: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(MINIMAL + extra), environ={})
    assert problems_of(info) == [f"{key}: unknown key"]
    assert f"{key}: unknown key" in str(info.value)


def test_unknown_nested_backend_key(write: Writer) -> None:
    text = MINIMAL.replace("    url: https://new.internal\n", "    url: https://new.internal\n    urll: x\n")
    with pytest.raises(ConfigError) as info:
        load_settings(write(text), environ={})
    assert problems_of(info) == ["backends.new.urll: unknown key"]


@pytest.mark.parametrize(
    "name", ["CUTOVER_LISTN", "CUTOVER_BACKEND__NEW__URL", "CUTOVER_", "CUTOVER_WORKERS__"]
)
def test_unknown_env_var_is_named(write: Writer, name: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(MINIMAL), environ={name: "1"})
    (problem,) = problems_of(info)
    assert problem.startswith(f"{name}: not a settings key")


def test_every_unknown_env_var_is_reported(write: Writer) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(
            write(MINIMAL), environ={"CUTOVER_FOO": "1", "CUTOVER_BAR": "2", "CUTOVER_WORKERS": "2"}
        )
    problems = problems_of(info)
    assert len(problems) == 2
    assert any(p.startswith("CUTOVER_FOO:") for p in problems)
    assert any(p.startswith("CUTOVER_BAR:") for p in problems)


def test_unknown_nested_env_key_is_refused(write: Writer) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(MINIMAL), environ={"CUTOVER_BACKENDS__NEW__URLL": "x"})
    assert problems_of(info) == ["backends.new.urll: unknown key (set by CUTOVER_BACKENDS__NEW__URLL)"]


def test_conflicting_env_vars_are_a_config_error(write: Writer) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(
            write(MINIMAL), environ={"CUTOVER_BACKENDS": "x", "CUTOVER_BACKENDS__NEW__URL": "http://n"}
        )
    assert any("CUTOVER_BACKENDS__NEW__URL" in problem for problem in problems_of(info))


def test_all_digit_env_token_stays_a_string(write: Writer) -> None:
    token = "1234567890123456789"
    settings = load_settings(
        write(MINIMAL),
        environ={"CUTOVER_ADMIN__TOKENS__OPS__TOKEN": token, "CUTOVER_ADMIN__TOKENS__OPS__SCOPE": "write"},
    )
    assert settings.admin.tokens["ops"].token.get_secret_value() == token


@pytest.mark.parametrize(
    ("side", "url"),
    [
        ("old", "ftp://old.internal"),
        ("new", "ws://new.internal"),
        ("new", "new.internal:9000"),
        ("old", "http://"),
        ("old", "http:///path"),
        ("new", "https://new.internal/?a=1"),
        ("new", "https://new.internal/#frag"),
        ("old", ""),
    ],
)
def test_bad_backend_url(write: Writer, side: str, url: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(MINIMAL), environ={f"CUTOVER_BACKENDS__{side.upper()}__URL": url})
    (problem,) = problems_of(info)
    assert problem.startswith(f"backends.{side}.url: ")


@pytest.mark.parametrize(
    ("key", "url"),
    [("POSTGRES_URL", "mysql://u@h/db"), ("REDIS_URL", "http://redis:6379")],
)
def test_bad_store_url_scheme(write: Writer, key: str, url: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(MINIMAL), environ={f"CUTOVER_{key}": url})
    (problem,) = problems_of(info)
    assert problem.startswith(f"{key.lower()}: ")


def test_missing_backends(write: Writer) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write("workers: 2\n"), environ={})
    assert problems_of(info) == ["backends: Field required"]


def test_empty_file_is_an_empty_mapping(write: Writer) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(""), environ={})
    assert problems_of(info) == ["backends: Field required"]


@pytest.mark.parametrize(
    "listen", ["localhost", "127.0.0.1", ":8080", "host:", "host:http", "host:70000", "host:-1", "host:80:x"]
)
@pytest.mark.parametrize("key", ["listen", "admin.listen"])
def test_bad_listen(write: Writer, key: str, listen: str) -> None:
    env_name = "CUTOVER_" + key.upper().replace(".", "__")
    with pytest.raises(ConfigError) as info:
        load_settings(write(MINIMAL), environ={env_name: listen})
    (problem,) = problems_of(info)
    assert problem.startswith(f"{key}: ")


@pytest.mark.parametrize(("text", "port"), [("localhost:0", 0), ("host:65535", 65535), ("[::]:8080", 8080)])
def test_listen_edges(write: Writer, text: str, port: int) -> None:
    settings = load_settings(write(MINIMAL), environ={"CUTOVER_LISTEN": text})
    assert settings.listen.port == port


@pytest.mark.parametrize("phase", ["sideways", "LIVE", "dual-write", "0"])
def test_invalid_phase(write: Writer, phase: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(MINIMAL + f"default_phase: '{phase}'\n"), environ={})
    (problem,) = problems_of(info)
    assert problem.startswith("default_phase: ")


@pytest.mark.parametrize("phase", [p.value for p in Phase])
def test_every_phase_is_a_valid_default(write: Writer, phase: str) -> None:
    settings = load_settings(write(MINIMAL + f"default_phase: {phase}\n"), environ={})
    assert settings.default_phase is Phase(phase)


def test_invalid_yaml(write: Writer) -> None:
    path = write("backends: [\n  old: {url: http://o}\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={})
    (problem,) = problems_of(info)
    assert str(path) in problem
    assert "is not valid YAML" in problem


def test_top_level_must_be_a_mapping(write: Writer) -> None:
    with pytest.raises(ConfigError, match="must hold a mapping at the top level"):
        load_settings(write("- a\n- b\n"), environ={})


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={})
    (problem,) = problems_of(info)
    assert str(path) in problem
    assert "No such file" in problem


def test_config_error_lists_every_problem(write: Writer) -> None:
    text = MINIMAL + "workers: 0\ndefault_phase: nope\nbogus: 1\n"
    with pytest.raises(ConfigError) as info:
        load_settings(write(text), environ={})
    problems = problems_of(info)
    assert len(problems) == 3
    assert {p.split(":", 1)[0] for p in problems} == {"workers", "default_phase", "bogus"}
    message = str(info.value)
    assert message.startswith("invalid configuration:\n")
    assert all(f"  - {p}" in message for p in problems)


# --- secrets never leak ---------------------------------------------------------------------------------

SECRET = "S3cr3t-Value-Xq9"


@pytest.mark.parametrize(
    ("env_name", "value"),
    [
        ("CUTOVER_BACKENDS__OLD__URL", f"ftp://user:{SECRET}@old"),
        ("CUTOVER_BACKENDS__NEW__URL", f"https://user:{SECRET}@new/?q=1"),
        ("CUTOVER_BACKENDS__NEW__URL", f"https://new/?token={SECRET}"),
        ("CUTOVER_POSTGRES_URL", f"mysql://app:{SECRET}@db/x"),
        ("CUTOVER_REDIS_URL", f"http://:{SECRET}@redis"),
        ("CUTOVER_ADMIN__TOKENS__OPS__TOKEN", SECRET[:10]),  # too short
        ("CUTOVER_ADMIN__TOKENS__OPS__TOKEN", "[" + SECRET + "]"),  # parsed as a list
    ],
)
def test_invalid_secret_not_in_error(write: Writer, env_name: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(MINIMAL), environ={env_name: value})
    problems_of(info)
    assert SECRET[:10] not in str(info.value)
    assert SECRET[:10] not in repr(info.value)


def test_invalid_secret_from_file_not_in_error(write: Writer, tmp_path: Path) -> None:
    secret = tmp_path / "pg"
    secret.write_text(f"mysql://app:{SECRET}@db/x")
    with pytest.raises(ConfigError) as info:
        load_settings(write(MINIMAL), environ={"CUTOVER_POSTGRES_URL_FILE": str(secret)})
    assert problems_of(info)[0].startswith("postgres_url: ")
    assert SECRET not in str(info.value)


def test_yaml_syntax_error_does_not_echo_secret(write: Writer) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(MINIMAL + f"postgres_url: postgresql://app:{SECRET}@db/x: oops\n"), environ={})
    assert "is not valid YAML" in str(info.value)
    assert SECRET not in str(info.value)


def test_secrets_not_in_repr_or_str(write: Writer, tmp_path: Path) -> None:
    token_file = tmp_path / "tok"
    token_file.write_text(f"file-{SECRET}\n")
    text = (
        "backends:\n"
        f"  old:\n    url: http://olduser:old-{SECRET}@old\n"
        f"  new:\n    url: https://newuser:new-{SECRET}@new\n"
        f"postgres_url: postgresql://app:pg-{SECRET}@db/x\n"
        "admin:\n  tokens:\n"
        f"    ops:\n      token_file: {token_file}\n"
        f"    ci:\n      token: yaml-{SECRET}\n"
    )
    settings = load_settings(write(text), environ={"CUTOVER_REDIS_URL": f"redis://:redis-{SECRET}@r:6379/0"})
    # the secrets were loaded...
    assert settings.backends.old.url.get_secret_value() == f"http://olduser:old-{SECRET}@old"
    assert settings.admin.tokens["ops"].token.get_secret_value() == f"file-{SECRET}"
    assert settings.redis_url.get_secret_value() == f"redis://:redis-{SECRET}@r:6379/0"
    # ...and never print
    for rendered in (repr(settings), str(settings), repr(settings.admin), str(settings.backends)):
        assert SECRET not in rendered
        assert "**********" in rendered
