"""Settings: one immutable model built at start from YAML plus `CUTOVER_*` environment overrides.

The names below are loaded on first use: importing a `config` module (the CLI's limits, say) must not
build the whole settings model, which costs a command line tenths of a second before its first query."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from config.loader import ConfigError, load_settings
    from config.settings import (
        AdminSettings,
        AdminToken,
        BackendSettings,
        BufferSettings,
        HeaderRewrite,
        ListenAddress,
        Settings,
        ShadowSettings,
        TokenScope,
    )

_HOMES = {
    "ConfigError": "config.loader",
    "load_settings": "config.loader",
    **dict.fromkeys(
        (
            "AdminSettings",
            "AdminToken",
            "BackendSettings",
            "BufferSettings",
            "HeaderRewrite",
            "ListenAddress",
            "Settings",
            "ShadowSettings",
            "TokenScope",
        ),
        "config.settings",
    ),
}

__all__ = [
    "AdminSettings",
    "AdminToken",
    "BackendSettings",
    "BufferSettings",
    "ConfigError",
    "HeaderRewrite",
    "ListenAddress",
    "Settings",
    "ShadowSettings",
    "TokenScope",
    "load_settings",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'config' has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
