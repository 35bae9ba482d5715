"""Fleet selection and planning (pure): stable percentage buckets, patterns, order, the plan's verdicts."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from proxy.control.fleet import (
    Selector,
    StepKind,
    TenantState,
    bucket_of,
    parse_tenant_list,
    plan,
    select,
)
from routing.phases import Phase
from routing.tenant import InvalidTenantError

FLEET = [f"tenant-{n:04d}" for n in range(2000)]


def test_bucket_is_in_range_and_the_same_in_another_process() -> None:
    names = FLEET[:20]
    here = [bucket_of(name) for name in names]
    assert all(0 <= b < 100 for b in here)
    code = f"from proxy.control.fleet import bucket_of; print([bucket_of(n) for n in {names!r}])"
    # A different PYTHONHASHSEED would change `hash()`; the bucket must not depend on it.
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == repr(here)


def test_a_larger_percentage_only_adds_tenants() -> None:
    chosen = {p: select(Selector(percent=p), FLEET) for p in (1, 10, 25, 50, 100)}
    for small, large in ((1, 10), (10, 25), (25, 50), (50, 100)):
        assert set(chosen[small]) < set(chosen[large])
    assert chosen[100] == sorted(FLEET)
    # Roughly the share asked for (binomial: 2000 * 0.1 = 200, sigma ~13).
    assert 150 < len(chosen[10]) < 250
    assert 430 < len(chosen[25]) < 570


def test_percentage_picks_the_same_tenants_whatever_else_is_known() -> None:
    everyone = set(select(Selector(percent=10), FLEET))
    half = FLEET[::2]
    assert set(select(Selector(percent=10), half)) == everyone & set(half)


def test_match_is_a_case_sensitive_shell_pattern_over_known_tenants_sorted() -> None:
    known = ["eu-b", "us-a", "eu-a", "EU-c", "eu-"]
    assert select(Selector(match="eu-*"), known) == ["eu-", "eu-a", "eu-b"]
    assert select(Selector(match="eu-?"), known) == ["eu-a", "eu-b"]
    assert select(Selector(match="[eu]s-*"), known) == ["us-a"]


def test_explicit_tenants_keep_their_order_and_need_not_be_known() -> None:
    selector = Selector(tenants=("zeta", "alpha", "new-one"))
    assert select(selector, ["alpha", "zeta"]) == ["zeta", "alpha", "new-one"]


def test_selectors_narrow_each_other() -> None:
    known = [f"eu-{n}" for n in range(300)] + [f"us-{n}" for n in range(300)]
    eu_ten = select(Selector(match="eu-*", percent=10), known)
    assert eu_ten
    assert all(t.startswith("eu-") and bucket_of(t) < 10 for t in eu_ten)
    assert eu_ten == sorted(set(select(Selector(percent=10), known)) & {t for t in known if t[:3] == "eu-"})
    listed = Selector(tenants=("us-1", "eu-1", "eu-2"), match="eu-*")
    assert select(listed, known) == ["eu-1", "eu-2"]


def test_parse_tenant_list_trims_drops_empties_and_duplicates() -> None:
    assert parse_tenant_list(" b, a,,b ,c,") == ("b", "a", "c")


@pytest.mark.parametrize("percent", [0, -5, 100.5])
def test_percent_out_of_range_is_refused(percent: float) -> None:
    with pytest.raises(ValueError, match="percent"):
        Selector(percent=percent)


def test_invalid_tenant_in_list_is_refused() -> None:
    with pytest.raises(InvalidTenantError):
        Selector(tenants=("ok", "not ok"))


def test_empty_selector_and_description() -> None:
    assert Selector().empty
    assert Selector().describe() == "(no selector)"
    described = Selector(tenants=("a", "b"), match="eu-*", percent=12.5).describe()
    assert described == "--tenants a,b --match 'eu-*' --percent 12.5"


def test_plan_marks_moves_skips_and_refusals_by_the_phase_rules() -> None:
    states = {
        "at-legacy": TenantState(Phase.LEGACY, 0),
        "at-dual": TenantState(Phase.DUAL_WRITE, 3),
        "at-shadow": TenantState(Phase.SHADOW, 5),
        "at-complete": TenantState(Phase.COMPLETE, 9),
    }
    steps = plan(
        ["at-legacy", "at-dual", "at-shadow", "unknown", "at-complete"],
        states,
        Phase.DUAL_WRITE,
        default_phase=Phase.LEGACY,
    )
    assert [(s.tenant, s.current, s.version, s.kind) for s in steps] == [
        ("at-legacy", Phase.LEGACY, 0, StepKind.MOVE),
        ("at-dual", Phase.DUAL_WRITE, 3, StepKind.ALREADY_THERE),
        ("at-shadow", Phase.SHADOW, 5, StepKind.MOVE),  # back to any earlier phase
        ("unknown", Phase.LEGACY, 0, StepKind.MOVE),  # no row: the default phase, version 0
        ("at-complete", Phase.COMPLETE, 9, StepKind.NOT_ALLOWED),  # leaving complete needs force
    ]
    forced = plan(["at-complete"], states, Phase.DUAL_WRITE, default_phase=Phase.LEGACY, force=True)
    assert forced[0].kind is StepKind.MOVE
    skip = plan(["at-legacy"], states, Phase.SHADOW, default_phase=Phase.LEGACY)
    assert skip[0].kind is StepKind.NOT_ALLOWED  # one step forward at a time
    assert skip[0].as_json() == {
        "tenant": "at-legacy",
        "from": "legacy",
        "to": "shadow",
        "version": 0,
        "plan": "not_allowed",
    }
