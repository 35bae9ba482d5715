"""The standard OpenTelemetry environment variables, read once at start into `telemetry.*` settings keys.

SREs configure tracing the same way for every service (an operator injecting `OTEL_EXPORTER_OTLP_ENDPOINT`
and `OTEL_SERVICE_NAME`, a `OTEL_TRACES_SAMPLER` set fleet-wide), so cutover honours those variables;
but only here, turned into settings keys, so the settings model stays the one source of configuration
and every process (the shadow process, workers) sees the same values.

    OTEL_SDK_DISABLED=true                        telemetry.tracing = false, whatever else is set
    OTEL_SERVICE_NAME                             telemetry.service_name
    OTEL_RESOURCE_ATTRIBUTES  k=v,k2=v2           telemetry.resource_attributes (a `service.name` in it
                                                  is the service name when OTEL_SERVICE_NAME is unset)
    OTEL_EXPORTER_OTLP_ENDPOINT                   telemetry.otlp_endpoint (spans to <endpoint>/v1/traces)
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT            telemetry.otlp_traces_endpoint (used as given)
    OTEL_EXPORTER_OTLP_[TRACES_]HEADERS k=v,...   telemetry.otlp_headers (the traces variable per key)
    OTEL_EXPORTER_OTLP_[TRACES_]TIMEOUT  ms       telemetry.otlp_timeout_s
    OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL          only http/protobuf (cutover exports OTLP over HTTP)
    OTEL_TRACES_SAMPLER, OTEL_TRACES_SAMPLER_ARG  telemetry.trace_sampler, telemetry.trace_sample_rate
    OTEL_TRACES_EXPORTER  otlp | console | none   telemetry.exporter
    OTEL_BSP_SCHEDULE_DELAY  ms                   telemetry.otlp_export_delay_ms

Precedence (later wins): model defaults < YAML file < OTEL_* < CUTOVER_TELEMETRY__*. The environment
beats the file as everywhere in cutover, and cutover's own, more specific names beat the generic ones.
`OTEL_SDK_DISABLED=true` is the exception: it turns tracing off over everything (the OpenTelemetry SDK
itself refuses to make spans then). An empty variable counts as unset, as the specification says.
Values are checked here for their syntax and by the model for their meaning; a problem names the
variable.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

_PROTOCOL = "http/protobuf"
# Plain renames: variable → key under `telemetry`.
_RENAMES = {
    "OTEL_SERVICE_NAME": "service_name",
    "OTEL_EXPORTER_OTLP_ENDPOINT": "otlp_endpoint",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "otlp_traces_endpoint",
    "OTEL_TRACES_SAMPLER": "trace_sampler",
    "OTEL_TRACES_SAMPLER_ARG": "trace_sample_rate",
    "OTEL_BSP_SCHEDULE_DELAY": "otlp_export_delay_ms",
}


class OtelEnvironment:
    """What the `OTEL_*` variables of one environment say, as a settings overlay."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.problems: list[str] = []
        # Dotted settings key → the variable that set it (so validation errors can name the variable).
        self.sources: dict[str, str] = {}
        self.telemetry: dict[str, Any] = {}
        self.sdk_disabled = False
        values = {name: value.strip() for name, value in env.items() if name.startswith("OTEL_")}
        values = {name: value for name, value in values.items() if value}  # empty: unset
        self._read(values)

    @property
    def overlay(self) -> dict[str, Any]:
        return {"telemetry": self.telemetry} if self.telemetry else {}

    def _set(self, key: str, value: Any, variable: str) -> None:
        self.telemetry[key] = value
        self.sources[f"telemetry.{key}"] = variable

    def _read(self, values: dict[str, str]) -> None:
        disabled = values.get("OTEL_SDK_DISABLED")
        if disabled is not None:
            if disabled.lower() not in ("true", "false"):
                self.problems.append("OTEL_SDK_DISABLED: must be true or false")
            self.sdk_disabled = disabled.lower() == "true"
        for variable, key in _RENAMES.items():
            if variable in values:
                self._set(key, values[variable], variable)
        attributes = self._pairs(values, "OTEL_RESOURCE_ATTRIBUTES")
        if attributes:
            service = attributes.pop("service.name", None)
            if service is not None and "OTEL_SERVICE_NAME" not in values:
                self._set("service_name", service, "OTEL_RESOURCE_ATTRIBUTES")
            if attributes:
                self._set("resource_attributes", attributes, "OTEL_RESOURCE_ATTRIBUTES")
        headers = self._pairs(values, "OTEL_EXPORTER_OTLP_HEADERS")
        headers.update(self._pairs(values, "OTEL_EXPORTER_OTLP_TRACES_HEADERS"))
        if headers:
            variable = "OTEL_EXPORTER_OTLP_TRACES_HEADERS"
            if variable not in values:
                variable = "OTEL_EXPORTER_OTLP_HEADERS"
            self._set("otlp_headers", headers, variable)
        for variable in ("OTEL_EXPORTER_OTLP_TIMEOUT", "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT"):
            if variable in values:
                try:
                    self._set("otlp_timeout_s", float(values[variable]) / 1000, variable)
                except ValueError:
                    self.problems.append(f"{variable}: must be a number of milliseconds")
        for variable in ("OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"):
            if variable in values and values[variable] != _PROTOCOL:
                self.problems.append(
                    f"{variable}: cutover exports OTLP as {_PROTOCOL} only (got {values[variable]!r})"
                )
        exporters = values.get("OTEL_TRACES_EXPORTER")
        if exporters is not None:
            names = sorted({name.strip() for name in exporters.split(",") if name.strip()})
            if len(names) != 1:
                self.problems.append("OTEL_TRACES_EXPORTER: name one exporter (otlp, console or none)")
            else:
                self._set("exporter", names[0], "OTEL_TRACES_EXPORTER")

    def _pairs(self, values: dict[str, str], variable: str) -> dict[str, str]:
        """`key=value,key2=value2` with percent-encoded values (the W3C Baggage format the specification
        names for OTEL_RESOURCE_ATTRIBUTES and the OTLP headers)."""
        text = values.get(variable)
        if text is None:
            return {}
        pairs: dict[str, str] = {}
        for item in text.split(","):
            if not item.strip():
                continue
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                # The item itself is not echoed: header values are often credentials.
                self.problems.append(f"{variable}: every item must be key=value")
                return {}
            pairs[unquote(key.strip())] = unquote(value.strip())
        return pairs
