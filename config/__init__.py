"""Settings: one immutable model built at start from YAML plus `CUTOVER_*` environment overrides."""

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
