"""Resources: which rules a request path gets, how resource rules add to the defaults, and the policy's
validation (a bad rule fails with its key)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from config.divergence import DivergencePolicy, DivergenceSettings, load_policy
from proxy.shadow.rules import Ruleset, merge

POLICY = DivergencePolicy.model_validate(
    {
        "defaults": {"ignore": ["$.updated_at"], "headers": ["ETag"], "numeric_tolerance": 0.5},
        "resources": [
            {"resource": "/items/{id}", "ignore": ["$.etag"], "null_equals_missing": True},
            {"resource": "/items", "name": "item list", "sets": [{"path": "$.items", "key": "id"}]},
            {"resource": "/reports/**", "numeric_tolerance": 0.0, "headers": ["Cache-Control"]},
            {"resource": "/orders/*/lines", "case_insensitive": ["$..*"]},
        ],
    }
)

MATCHED = [
    ("/items/42", "/items/{id}"),
    ("/items", "item list"),
    ("/items/", "item list"),
    ("/reports", "/reports/**"),
    ("/reports/2024/q1", "/reports/**"),
    ("/orders/7/lines", "/orders/*/lines"),
    ("/orders/7/lines/2", "/orders/*/*/*"),
    ("/items/42/history", "/items/*/*"),
    ("/", "/"),
    ("/users", "/users"),
    ("/a/b/c/d/e/f/g/h", "/a/*/*/*/*/*/**"),
]


@pytest.mark.parametrize(("path", "resource"), MATCHED)
def test_resource_of_a_path(path: str, resource: str) -> None:
    assert Ruleset(POLICY).match(path)[0] == resource


def test_resource_rules_add_to_the_defaults() -> None:
    item = merge(POLICY.defaults, POLICY.resources[0])
    assert item.ignore == ["$.updated_at", "$.etag"]
    assert item.null_equals_missing is True
    assert item.numeric_tolerance == 0.5  # not set by the resource: the default's
    assert merge(POLICY.defaults, POLICY.resources[2]).numeric_tolerance == 0.0  # set: the resource's
    assert merge(POLICY.defaults, POLICY.resources[2]).headers == ["etag", "cache-control"]


def test_unmatched_paths_get_the_defaults() -> None:
    ruleset = Ruleset(POLICY)
    assert ruleset.match("/users/1")[1] is ruleset.default
    assert ruleset.keep_headers == {"etag", "cache-control", "content-type", "content-encoding"}


@pytest.mark.parametrize(
    ("policy", "key"),
    [
        ({"defaults": {"ignore": ["updated_at"]}}, "defaults.ignore.0"),
        ({"resources": [{"resource": "items"}]}, "resources.0.resource"),
        ({"resources": [{"resource": "/items", "sets": [{"path": "$.x["}]}]}, "resources.0.sets.0.path"),
        ({"sampling": {"tenants": {"acme": 101}}}, "sampling.tenants.acme"),
        ({"sampling": {"tenants": {"bad tenant!": 5}}}, "sampling.tenants.bad tenant!.[key]"),
        ({"rollback": {"max_divergence_rate": 2}}, "rollback.max_divergence_rate"),
        ({"defaults": {"unknown": 1}}, "defaults.unknown"),
    ],
)
def test_bad_policy_names_the_key(policy: dict[str, Any], key: str) -> None:
    with pytest.raises(ValidationError) as caught:
        DivergencePolicy.model_validate(policy)
    assert key in [".".join(str(p) for p in e["loc"]) for e in caught.value.errors()]


def test_masks_need_a_key() -> None:
    with pytest.raises(ValidationError, match="mask_key"):
        DivergenceSettings.model_validate({"policy": {"defaults": {"mask": ["$.email"]}}})
    DivergenceSettings.model_validate({"policy": {"defaults": {"mask": ["$.email"]}}, "mask_key": "k" * 16})


def test_policy_file_is_read_at_start_and_on_reload(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("defaults:\n  ignore: [$.a]\n")
    settings = DivergenceSettings.model_validate({"policy_file": str(path)})
    assert settings.policy.defaults.ignore == ["$.a"]
    path.write_text("defaults:\n  ignore: [$.b]\n")
    assert load_policy(settings).defaults.ignore == ["$.b"]
    path.write_text("defaults:\n  ignore: [b]\n")
    with pytest.raises(ValidationError):
        load_policy(settings)
    path.write_text("defaults: [unclosed\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_policy(settings)


def test_policy_file_and_inline_policy_are_exclusive(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("{}\n")
    with pytest.raises(ValidationError, match="either policy or policy_file"):
        DivergenceSettings.model_validate({"policy_file": str(path), "policy": {}})
    with pytest.raises(ValidationError, match="cannot read"):
        DivergenceSettings.model_validate({"policy_file": str(tmp_path / "missing.yaml")})
