"""Build `Settings` from one YAML file plus `CUTOVER_*` environment overrides.

Order of precedence (later wins): model defaults < YAML file < environment. Within the environment,
the standard `OTEL_*` variables (`config.otel_env`) come before `CUTOVER_TELEMETRY__*`.
- `CUTOVER_BACKENDS__NEW__URL=...` sets `backends.new.url` (`__` nests, names are case-insensitive).
- Any key may instead be given as `<key>_file: PATH` (or `CUTOVER_<KEY>_FILE`); the file's content,
  stripped, becomes the value. This is how secrets come from mounted files.
Environment values are strings (the model converts `CUTOVER_WORKERS=4` to an int); a value written as a
flow collection, `[Cookie]` or `{a: b}`, is parsed as YAML so lists and maps can be given too.

The environment overlay is a small function rather than pydantic-settings: it must report an unknown
`CUTOVER_*` variable by name (a typo must not pass silently) and it must merge into YAML-loaded maps such
as `admin.tokens`, which pydantic-settings' nested-env handling does not do with a frozen model tree.

PyYAML, pydantic and the settings model are imported by the functions that use them: every `cutover`
command imports this module for `ConfigError`, most never load a configuration, and the model alone
takes a tenth of a second to build.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from config.settings import Settings

ENV_PREFIX = "CUTOVER_"
# Environment variables with the prefix that are not settings keys.
_NOT_KEYS = frozenset({"CUTOVER_CONFIG", "CUTOVER_ADMIN_URL", "CUTOVER_ADMIN_TOKEN"})
_FILE_SUFFIX = "_file"


class ConfigError(Exception):
    """The configuration cannot be used; `problems` names each bad key and what is wrong with it."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid configuration:\n" + "\n".join(f"  - {p}" for p in problems))


def load_settings(
    path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Load, merge and validate; raise `ConfigError` naming every bad key."""
    from pydantic import ValidationError

    from config.otel_env import OtelEnvironment
    from config.settings import Settings

    env = os.environ if environ is None else environ
    if path is None:
        path = env.get("CUTOVER_CONFIG") or None
    raw: dict[str, Any] = _read_yaml(Path(path)) if path is not None else {}
    otel = OtelEnvironment(env)
    if otel.problems:
        raise ConfigError(otel.problems)
    _merge(raw, otel.overlay)
    overlay, sources = _environment_overlay(env)
    _merge(raw, overlay)
    sources = {**otel.sources, **sources}
    if otel.sdk_disabled:
        telemetry = raw.get("telemetry")
        raw["telemetry"] = {**(telemetry if isinstance(telemetry, dict) else {}), "tracing": False}
        sources["telemetry.tracing"] = "OTEL_SDK_DISABLED"
    raw = _resolve_files(raw, prefix="")
    try:
        return Settings.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError([_describe(error, sources) for error in exc.errors()]) from None


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError([f"config file {str(path)!r}: {exc.strerror}"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        # Only the problem and its position: PyYAML's own message quotes the line, which may hold a secret.
        problem = getattr(exc, "problem", None) or "syntax error"
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigError([f"config file {str(path)!r} is not valid YAML{where}: {problem}"]) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError([f"config file {str(path)!r} must hold a mapping at the top level"])
    return data


def _environment_overlay(env: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """The overlay, and which variable set each dotted key (so errors can name the variable)."""
    from config.settings import Settings

    overlay: dict[str, Any] = {}
    sources: dict[str, str] = {}
    known = set(Settings.model_fields)
    problems: list[str] = []
    for name in sorted(env):
        if not name.startswith(ENV_PREFIX) or name in _NOT_KEYS:
            continue
        path = [part.lower() for part in name[len(ENV_PREFIX) :].split("__")]
        if not all(path) or path[0].removesuffix(_FILE_SUFFIX) not in known:
            problems.append(f"{name}: not a settings key (expected CUTOVER_<KEY>[__<SUBKEY>...])")
            continue
        node = overlay
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                problems.append(
                    f"{name}: conflicts with another variable that sets {part!r} to a single value"
                )
                break
            node = child
        else:
            if isinstance(node.get(path[-1]), dict):
                problems.append(f"{name}: conflicts with variables that set keys below it")
                continue
            node[path[-1]] = _parse_env_value(env[name])
            sources[".".join(path)] = name
    if problems:
        raise ConfigError(problems)
    return overlay, sources


def _parse_env_value(value: str) -> Any:
    import yaml

    stripped = value.strip()
    if stripped[:1] in ("[", "{"):
        try:
            return yaml.safe_load(stripped)
        except yaml.YAMLError:
            return value
    return value


def _merge(base: dict[str, Any], overlay: dict[str, Any]) -> None:
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


def _resolve_files(node: dict[str, Any], prefix: str) -> dict[str, Any]:
    """Replace every `<key>_file: PATH` by `<key>: <content of PATH>`."""
    resolved: dict[str, Any] = {}
    for key, value in node.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            resolved[key] = _resolve_files(value, dotted + ".")
        elif isinstance(key, str) and key.endswith(_FILE_SUFFIX) and isinstance(value, str):
            target = key[: -len(_FILE_SUFFIX)]
            try:
                resolved[target] = Path(value).read_text().strip()
            except OSError as exc:
                raise ConfigError([f"{dotted}: cannot read {value!r}: {exc.strerror}"]) from None
        else:
            resolved[key] = value
    return resolved


def _describe(error: Mapping[str, Any], sources: Mapping[str, str]) -> str:
    key = ".".join(str(part) for part in error["loc"]) or "(top level)"
    message = str(error["msg"])
    if error["type"] == "extra_forbidden":
        message = "unknown key"
    origin = next(
        (f" (set by {var})" for path, var in sources.items() if key == path or key.startswith(path + ".")), ""
    )
    # Never echo the offending input: it may be a secret.
    return f"{key}: {message}{origin}"
