"""Build `Settings` from one YAML file plus `CUTOVER_*` environment overrides.

Order of precedence (later wins): model defaults < YAML file < environment.
- `CUTOVER_BACKENDS__NEW__URL=...` sets `backends.new.url` (`__` nests, names are case-insensitive).
- Any key may instead be given as `<key>_file: PATH` (or `CUTOVER_<KEY>_FILE`); the file's content,
  stripped, becomes the value. This is how secrets come from mounted files.
Environment values are parsed as YAML scalars/flow collections, so `CUTOVER_WORKERS=4` is an int and
`CUTOVER_BACKENDS__OLD__HEADERS__REMOVE=[Cookie]` a list.

The environment overlay is a small function rather than pydantic-settings: it must report an unknown
`CUTOVER_*` variable by name (a typo must not pass silently) and it must merge into YAML-loaded maps such
as `admin.tokens`, which pydantic-settings' nested-env handling does not do with a frozen model tree.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

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
    env = os.environ if environ is None else environ
    if path is None:
        path = env.get("CUTOVER_CONFIG") or None
    raw: dict[str, Any] = _read_yaml(Path(path)) if path is not None else {}
    _merge(raw, _environment_overlay(env))
    raw = _resolve_files(raw, prefix="")
    try:
        return Settings.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError([_describe(error) for error in exc.errors()]) from None


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError([f"config file {str(path)!r}: {exc.strerror}"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError([f"config file {str(path)!r} is not valid YAML: {exc}"]) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError([f"config file {str(path)!r} must hold a mapping at the top level"])
    return data


def _environment_overlay(env: Mapping[str, str]) -> dict[str, Any]:
    overlay: dict[str, Any] = {}
    known = set(Settings.model_fields)
    problems: list[str] = []
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX) or name in _NOT_KEYS:
            continue
        path = [part.lower() for part in name[len(ENV_PREFIX) :].split("__")]
        top = path[0].removesuffix(_FILE_SUFFIX)
        if not all(path) or top not in known:
            problems.append(f"{name}: not a settings key (expected CUTOVER_<KEY>[__<SUBKEY>...])")
            continue
        node = overlay
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = _parse_env_value(value)
    if problems:
        raise ConfigError(problems)
    return overlay


def _parse_env_value(value: str) -> Any:
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError:
        return value
    # Keep strings that YAML would turn into mappings by accident (`a: b`) or into None (`""`).
    return value if parsed is None or isinstance(parsed, dict) else parsed


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


def _describe(error: Mapping[str, Any]) -> str:
    key = ".".join(str(part) for part in error["loc"]) or "(top level)"
    message = str(error["msg"])
    if error["type"] == "extra_forbidden":
        message = "unknown key"
    # Never echo the offending input: it may be a secret.
    return f"{key}: {message}"
