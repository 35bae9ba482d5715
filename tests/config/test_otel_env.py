"""The standard `OTEL_*` variables, read into `telemetry.*` when settings are loaded (`config.otel_env`),
with their precedence against the YAML file and `CUTOVER_TELEMETRY__*`."""

from __future__ import annotations

from pathlib import Path

import pytest

from config.loader import ConfigError, load_settings
from config.settings import Settings
from telemetry.tracing import build_tracer_provider

MINIMAL = """\
backends:
  old: {url: "http://old.internal"}
  new: {url: "http://new.internal"}
"""


def load(tmp_path: Path, environ: dict[str, str], yaml_telemetry: str = "") -> Settings:
    path = tmp_path / "cutover.yaml"
    path.write_text(MINIMAL + (f"telemetry:\n{yaml_telemetry}" if yaml_telemetry else ""))
    return load_settings(path, environ=environ)


def problems(tmp_path: Path, environ: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, environ)
    return "\n".join(info.value.problems)


def test_no_otel_variables_change_nothing(tmp_path: Path) -> None:
    telemetry = load(tmp_path, {}).telemetry
    assert telemetry.tracing_enabled is False
    assert telemetry.span_exporter == "none"
    assert telemetry.trace_sampler == "parentbased_traceidratio"
    assert telemetry.service_name == "cutover"


def test_each_variable_lands_in_its_settings_key(tmp_path: Path) -> None:
    telemetry = load(
        tmp_path,
        {
            "OTEL_SERVICE_NAME": "cutover-eu1",
            "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=prod, team=data%20platform",
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/",
            "OTEL_EXPORTER_OTLP_HEADERS": "x-api-key=k%3D1,x-org=acme",
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "x-org=other",
            "OTEL_EXPORTER_OTLP_TIMEOUT": "2500",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_TRACES_SAMPLER": "traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": "0.25",
            "OTEL_BSP_SCHEDULE_DELAY": "200",
            "OTEL_PYTHON_SOMETHING": "ignored",
        },
    ).telemetry
    assert telemetry.service_name == "cutover-eu1"
    assert telemetry.resource_attributes == {"deployment.environment": "prod", "team": "data platform"}
    assert telemetry.otlp_endpoint == "http://collector:4318"
    assert telemetry.otlp_traces_url == "http://collector:4318/v1/traces"
    assert {k: v.get_secret_value() for k, v in telemetry.otlp_headers.items()} == {
        "x-api-key": "k=1",
        "x-org": "other",  # the traces variable wins per key
    }
    assert telemetry.otlp_timeout_s == 2.5
    assert telemetry.trace_sampler == "traceidratio"
    assert telemetry.trace_sample_rate == 0.25
    assert telemetry.follows_parent is False
    assert telemetry.root_sample_rate == 0.25
    assert telemetry.otlp_export_delay_ms == 200
    assert telemetry.span_exporter == "otlp"
    assert telemetry.tracing_enabled


def test_the_traces_endpoint_is_used_as_given_and_the_resource_carries_the_attributes(
    tmp_path: Path,
) -> None:
    settings = load(
        tmp_path,
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://traces.example/otlp/spans",
            "OTEL_RESOURCE_ATTRIBUTES": "service.name=from-attributes,k8s.pod.name=p-1",
        },
    )
    assert settings.telemetry.otlp_traces_url == "https://traces.example/otlp/spans"
    # service.name in the attributes names the service when OTEL_SERVICE_NAME is unset.
    assert settings.telemetry.service_name == "from-attributes"
    provider = build_tracer_provider(settings.telemetry, component="worker")
    assert provider is not None
    try:
        resource = dict(provider.resource.attributes)
        assert resource["service.name"] == "from-attributes"
        assert resource["k8s.pod.name"] == "p-1"
        assert resource["cutover.component"] == "worker"
        assert resource["service.version"]
    finally:
        provider.shutdown()


def test_otel_service_name_beats_service_name_in_the_attributes(tmp_path: Path) -> None:
    telemetry = load(
        tmp_path, {"OTEL_SERVICE_NAME": "named", "OTEL_RESOURCE_ATTRIBUTES": "service.name=other"}
    ).telemetry
    assert telemetry.service_name == "named"
    assert "service.name" not in telemetry.resource_attributes


@pytest.mark.parametrize(
    ("exporter", "expected", "enabled"), [("console", "console", True), ("none", "none", False)]
)
def test_the_traces_exporter(tmp_path: Path, exporter: str, expected: str, enabled: bool) -> None:
    environ = {"OTEL_TRACES_EXPORTER": exporter, "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}
    telemetry = load(tmp_path, environ).telemetry
    assert telemetry.span_exporter == expected
    assert telemetry.tracing_enabled is enabled


def test_otlp_without_an_endpoint_goes_to_the_default_collector(tmp_path: Path) -> None:
    telemetry = load(tmp_path, {"OTEL_TRACES_EXPORTER": "otlp"}).telemetry
    assert telemetry.tracing_enabled
    assert telemetry.otlp_traces_url == "http://localhost:4318/v1/traces"


def test_precedence_yaml_then_otel_then_cutover_variables(tmp_path: Path) -> None:
    yaml = "  service_name: from-yaml\n  trace_sample_rate: 0.5\n  otlp_endpoint: http://yaml:4318\n"
    telemetry = load(
        tmp_path,
        {
            "OTEL_SERVICE_NAME": "from-otel",
            "OTEL_TRACES_SAMPLER_ARG": "0.2",
            "CUTOVER_TELEMETRY__TRACE_SAMPLE_RATE": "0.1",
        },
        yaml,
    ).telemetry
    assert telemetry.service_name == "from-otel"  # OTEL_* over the file
    assert telemetry.trace_sample_rate == 0.1  # CUTOVER_TELEMETRY__* over OTEL_*
    assert telemetry.otlp_endpoint == "http://yaml:4318"  # the file where no variable says otherwise


def test_sdk_disabled_turns_tracing_off_over_everything(tmp_path: Path) -> None:
    environ = {
        "OTEL_SDK_DISABLED": "TRUE",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318",
        "CUTOVER_TELEMETRY__TRACING": "true",
    }
    telemetry = load(tmp_path, environ, "  tracing: true\n").telemetry
    assert telemetry.tracing_enabled is False
    assert build_tracer_provider(telemetry, component="proxy") is None
    assert load(
        tmp_path, {"OTEL_SDK_DISABLED": "false", "OTEL_TRACES_EXPORTER": "console"}
    ).telemetry.tracing_enabled


def test_empty_variables_count_as_unset(tmp_path: Path) -> None:
    telemetry = load(tmp_path, {"OTEL_SERVICE_NAME": "", "OTEL_TRACES_SAMPLER": "  "}).telemetry
    assert telemetry.service_name == "cutover"
    assert telemetry.trace_sampler == "parentbased_traceidratio"


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"OTEL_TRACES_SAMPLER": "jaeger_remote"}, "OTEL_TRACES_SAMPLER"),
        ({"OTEL_TRACES_SAMPLER_ARG": "1.5"}, "OTEL_TRACES_SAMPLER_ARG"),
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER"),
        ({"OTEL_TRACES_EXPORTER": "otlp,console"}, "OTEL_TRACES_EXPORTER"),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "OTEL_EXPORTER_OTLP_PROTOCOL"),
        ({"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/json"}, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318"}, "OTEL_EXPORTER_OTLP_ENDPOINT"),
        ({"OTEL_EXPORTER_OTLP_TIMEOUT": "soon"}, "OTEL_EXPORTER_OTLP_TIMEOUT"),
        ({"OTEL_SDK_DISABLED": "yes"}, "OTEL_SDK_DISABLED"),
        ({"OTEL_RESOURCE_ATTRIBUTES": "novalue"}, "OTEL_RESOURCE_ATTRIBUTES"),
    ],
)
def test_a_bad_value_fails_at_start_naming_its_variable(
    tmp_path: Path, environ: dict[str, str], named: str
) -> None:
    assert named in problems(tmp_path, environ)


def test_a_malformed_header_list_is_refused_without_echoing_it(tmp_path: Path) -> None:
    text = problems(tmp_path, {"OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer s3cr3t-value,garbage"})
    assert "OTEL_EXPORTER_OTLP_HEADERS" in text
    assert "s3cr3t" not in text
