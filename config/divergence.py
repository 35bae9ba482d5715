"""Settings of the divergence engine: how shadow answers are compared, sampled, stored and acted on.

Two parts:
- `DivergencePolicy`: comparison rules per resource, masks, sampling, noise learning, automatic rollback.
  Reloadable: it comes from `divergence.policy` in the main file, or from `divergence.policy_file`, which
  is read again on SIGHUP (see README, "Divergence engine"). A bad file at start stops the process; a bad
  file at reload is refused and the policy in force stays.
- `DivergenceSettings`: what is fixed for the life of the process (the masking key, retention, where the
  policy comes from, flush cadence).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, model_validator

from config.jsonpath import check_pattern
from routing.tenant import validate_tenant

JsonPath = Annotated[str, AfterValidator(check_pattern)]
HeaderName = Annotated[str, Field(pattern=r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$"), AfterValidator(str.lower)]
Tenant = Annotated[str, AfterValidator(validate_tenant)]
_RESOURCE = re.compile(r"^(/(\{[A-Za-z_][A-Za-z0-9_]*\}|\*|\*\*|[^/{}*]+))+$|^/$")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SetRule(_Frozen):
    """Compare the array at `path` as a set: elements matched by `key` (a member of each element), or, with
    no key, as a multiset of values (order ignored)."""

    path: JsonPath
    key: str | None = Field(default=None, min_length=1)


class CompareRules(_Frozen):
    # Paths whose differences are not reported at all (`$.updated_at`, `$.items[*].etag`).
    ignore: list[JsonPath] = Field(default_factory=list)
    sets: list[SetRule] = Field(default_factory=list)
    # Numbers are equal when |a - b| <= max(numeric_tolerance, relative_tolerance * max(|a|, |b|)).
    numeric_tolerance: float = Field(default=0.0, ge=0)
    relative_tolerance: float = Field(default=0.0, ge=0, lt=1)
    # Strings at these paths are compared case-insensitively (`$..*` for every string).
    case_insensitive: list[JsonPath] = Field(default_factory=list)
    # A member that is null on one side and absent on the other is no difference.
    null_equals_missing: bool = False
    # Response headers compared (names, case-insensitive); status is always compared.
    headers: list[HeaderName] = Field(default_factory=list)
    # Values at these paths are replaced by a keyed hash before a sample is stored (`$.email`, `$..card`).
    mask: list[JsonPath] = Field(default_factory=list)


class ResourceRules(CompareRules):
    """Rules for one resource, added to `defaults` (lists are joined; a scalar set here wins).

    `resource` is a path pattern: `{name}` or `*` match one segment, a final `**` any rest
    (`/items/{id}`, `/orders/*/lines`, `/reports/**`). The first matching resource applies."""

    resource: Annotated[str, Field(pattern=_RESOURCE.pattern)]
    name: str | None = Field(default=None, min_length=1, max_length=200)


class SamplingPolicy(_Frozen):
    # Percentage of a tenant's reads shadowed in shadow and live (0-100); tenants not listed use
    # `default_percent`, and when that is unset, `shadow.sample_rate`.
    default_percent: float | None = Field(default=None, ge=0, le=100)
    tenants: dict[Tenant, Annotated[float, Field(ge=0, le=100)]] = Field(default_factory=dict)


class NoisePolicy(_Frozen):
    # Fraction of shadowed reads that are also sent a second time to the serving side, to learn which
    # fields differ between two answers of the same side (0 disables learning).
    sample_rate: float = Field(default=0.05, ge=0, le=1)
    # Copies per resource before learned figures are trusted; until then every differing read of the
    # resource gets a copy, and a field that also differs in that read's own copy counts as noise.
    min_copies: int = Field(default=20, ge=1)
    # A field is noise when it differs between old and new at most this much more often than between
    # two copies of the serving side.
    margin: float = Field(default=0.1, ge=0, le=1)
    # Bounds of what is remembered per shadow process (beyond them, new fields count as divergent).
    max_resources: int = Field(default=1000, ge=1)
    max_fields_per_resource: int = Field(default=500, ge=1)


class RollbackPolicy(_Frozen):
    # Off unless chosen: an automatic phase change should follow thresholds an operator picked.
    enabled: bool = False
    # Tenants never rolled back automatically.
    disabled_tenants: list[Tenant] = Field(default_factory=list)
    # Sliding window over the tenant's shadow comparisons (all proxies), since its last phase change.
    window_s: float = Field(default=300, gt=0, le=86_400)
    min_samples: int = Field(default=100, ge=1)
    # Rates (0-1) above which the tenant moves back one step: divergent / answered comparisons, and
    # failed answers of the new side / comparisons.
    max_divergence_rate: float = Field(default=0.05, ge=0, le=1)
    max_new_error_rate: float = Field(default=0.05, ge=0, le=1)
    check_interval_s: float = Field(default=5.0, gt=0, le=3600)


class DivergencePolicy(_Frozen):
    defaults: CompareRules = CompareRules()
    resources: list[ResourceRules] = Field(default_factory=list)
    sampling: SamplingPolicy = SamplingPolicy()
    noise: NoisePolicy = NoisePolicy()
    rollback: RollbackPolicy = RollbackPolicy()
    # Request headers kept with a stored sample (never others: they may carry credentials).
    stored_request_headers: list[HeaderName] = Field(default_factory=lambda: ["accept", "content-type"])
    # Query parameters whose values are replaced by a keyed hash in a stored sample.
    mask_query: list[str] = Field(default_factory=list)

    def masks_anything(self) -> bool:
        return bool(self.defaults.mask or self.mask_query or any(r.mask for r in self.resources))


class RetentionSettings(_Frozen):
    # Stored divergence samples kept per tenant (the oldest go first) and their longest age.
    max_samples_per_tenant: int = Field(default=1000, ge=1)
    max_age_s: float = Field(default=7 * 86_400, gt=0)
    prune_interval_s: float = Field(default=60, gt=0)


class DivergenceSettings(_Frozen):
    policy: DivergencePolicy = DivergencePolicy()
    # A YAML file holding the policy instead (re-read on SIGHUP). Exclusive with `policy`.
    policy_file: str | None = None
    # Key of the HMAC that replaces masked values; required when anything is masked.
    mask_key: SecretStr | None = Field(default=None)
    retention: RetentionSettings = RetentionSettings()
    # How often counters are written to PostgreSQL (reports and the rollback window read them there).
    flush_interval_s: float = Field(default=1.0, gt=0, le=60)

    @model_validator(mode="before")
    @classmethod
    def _read_policy_file(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("policy_file"):
            if data.get("policy") is not None:
                raise ValueError("give either policy or policy_file, not both")
            data = {**data, "policy": read_policy_file(str(data["policy_file"]))}
        return data

    @model_validator(mode="after")
    def _mask_key_present(self) -> DivergenceSettings:
        check_mask_key(self.policy, self.mask_key)
        return self

    @property
    def hmac_key(self) -> bytes | None:
        return None if self.mask_key is None else self.mask_key.get_secret_value().encode()


def read_policy_file(path: str) -> dict[str, Any]:
    """The raw mapping in a policy file (validated by the caller); `ValueError` when unreadable."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise ValueError(f"cannot read policy file {path!r}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ValueError(f"policy file {path!r} is not valid YAML{where}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"policy file {path!r} must hold a mapping")
    return data


def load_policy(settings: DivergenceSettings) -> DivergencePolicy:
    """Read `policy_file` again (the reload); raise `ValueError` or pydantic's `ValidationError`."""
    if settings.policy_file is None:
        return settings.policy
    policy = DivergencePolicy.model_validate(read_policy_file(settings.policy_file))
    check_mask_key(policy, settings.mask_key)
    return policy


def check_mask_key(policy: DivergencePolicy, key: SecretStr | None) -> None:
    if policy.masks_anything() and (key is None or len(key.get_secret_value()) < 16):
        raise ValueError("mask paths are configured: divergence.mask_key (16+ characters) is required")
