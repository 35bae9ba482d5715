"""Noise learning: a field that differs between two answers of the same side as often as between old and
new is noise; a real change is not. Unit tests of the learner, then the same through the proxy."""

from __future__ import annotations

import itertools
import time
from typing import Any

import orjson
import pytest

from config.divergence import CompareRules, NoisePolicy
from proxy.shadow.analysis import analyse
from proxy.shadow.job import Verdict
from proxy.shadow.lift import lift
from proxy.shadow.noise import NoiseLearner
from proxy.shadow.rules import compile_rules
from routing.phases import Phase, Side
from tests.proxy.divergence.conftest import Answer, ScriptedPair
from tests.support.proxies import Proxy, ProxyFactory
from tests.support.waits import wait_for

RULES = compile_rules(CompareRules())
clock = itertools.count(1_700_000_000)


def doc(name: str, stamp: bool = True) -> Any:
    body: dict[str, Any] = {"id": 1, "name": name}
    if stamp:
        body["served_at"] = next(clock)  # every answer, of either side, carries a new timestamp
    return lift(200, orjson.dumps(body), ())


def read(learner: NoiseLearner, old_name: str, new_name: str, *, copy: bool) -> Any:
    return analyse(
        resource="/items/*",
        serving_side=Side.OLD,
        served=doc(old_name),
        shadow=doc(new_name),
        copy=doc(old_name) if copy else None,
        rules=RULES,
        learner=learner,
    )


def test_timestamp_is_learned_as_noise_and_a_real_change_is_not() -> None:
    draws = itertools.cycle([0.9, 0.1, 0.9, 0.9])  # after warming up, a copy for one read in four
    learner = NoiseLearner(NoisePolicy(sample_rate=0.2, min_copies=5, margin=0.1), rng=draws.__next__)
    copies = 0
    for _ in range(40):
        copy = learner.wants_copy("/items/*")
        copies += copy
        result = read(learner, "alpha", "beta", copy=copy)
        assert result.verdict is Verdict.DIVERGENT  # $.name differs: always a divergence
        assert result.divergent_fields == ("$.name",)
        assert result.noise_fields == ("$.served_at",)  # shown as noise, not dropped
    assert copies == 5 + 9  # every read while warming up (5), then one in four of the other 35
    assert learner.describe("/items/*", "$.served_at").noise
    assert not learner.describe("/items/*", "$.name").noise
    # Only the timestamp differs: the read is noise, not a divergence.
    only_noise = read(learner, "same", "same", copy=False)
    assert only_noise.verdict is Verdict.NOISE
    assert [d.path_text for d in only_noise.comparison.differences] == ["$.served_at"]


def test_before_enough_copies_a_field_is_noise_only_if_it_differed_in_this_reads_copy() -> None:
    learner = NoiseLearner(NoisePolicy(sample_rate=0.2, min_copies=50))
    with_copy = read(learner, "a", "b", copy=True)
    assert (with_copy.divergent_fields, with_copy.noise_fields) == (("$.name",), ("$.served_at",))
    without_copy = read(learner, "a", "b", copy=False)
    assert without_copy.divergent_fields == ("$.name", "$.served_at")  # no evidence yet: divergent


def test_a_field_that_flips_more_between_sides_than_within_one_is_divergent() -> None:
    learner = NoiseLearner(NoisePolicy(sample_rate=1, min_copies=10, margin=0.1))
    for n in range(100):
        learner.observe_copy("/r", ["$.flaky"] if n % 3 == 0 else [])  # 33 % within the serving side
        learner.observe_primary("/r", ["$.flaky"] if n % 10 < 9 else [])  # 90 % between old and new
    assert not learner.describe("/r", "$.flaky").noise
    assert not learner.is_noise("/r", "$.flaky", frozenset({"$.flaky"}))  # learned figures win over one copy
    within_margin = NoiseLearner(NoisePolicy(sample_rate=1, min_copies=10, margin=0.1))
    for n in range(100):
        within_margin.observe_copy("/r", ["$.flaky"] if n % 3 == 0 else [])  # 34 %
        within_margin.observe_primary("/r", ["$.flaky"] if n % 100 < 40 else [])  # 40 %
    assert within_margin.describe("/r", "$.flaky").noise


@pytest.mark.parametrize(
    ("sample_rate", "copies", "draw", "expected"),
    [
        (0.0, 0, 0.0, False),  # learning off
        (0.1, 0, 0.99, True),  # warming up: every read
        (0.1, 20, 0.99, False),  # warmed up: sampled
        (0.1, 20, 0.05, True),
    ],
)
def test_when_a_copy_is_wanted(sample_rate: float, copies: int, draw: float, expected: bool) -> None:
    learner = NoiseLearner(NoisePolicy(sample_rate=sample_rate, min_copies=20), rng=lambda: draw)
    for _ in range(copies):
        learner.observe_copy("/r", [])
    assert learner.wants_copy("/r") is expected


def test_learner_is_bounded() -> None:
    learner = NoiseLearner(NoisePolicy(max_resources=2, max_fields_per_resource=3, min_copies=1))
    for resource in ("/a", "/b", "/c"):
        learner.observe_copy(resource, [f"$.f{i}" for i in range(10)])
    assert learner.describe("/c", "$.f0").copies == 0  # a third resource is not tracked
    assert sum(learner.describe("/a", f"$.f{i}").copy_rate > 0 for i in range(10)) == 3


async def test_timestamp_learned_as_noise_through_the_proxy(
    make_proxy: ProxyFactory, scripted: ScriptedPair, tenant: str
) -> None:
    proxy: Proxy = await make_proxy(
        {
            "backends": scripted.backends(),
            "divergence": {
                "policy": {"noise": {"sample_rate": 0.5, "min_copies": 5}},
                "flush_interval_s": 0.2,
            },
            "log_level": "error",
        }
    )
    await proxy.set_phase_direct(tenant, Phase.SHADOW)

    def stamped(**fields: Any) -> Any:
        return lambda: Answer(body=orjson.dumps({**fields, "served_at": time.time()}))

    scripted.old.answers["/items/1"] = stamped(id=1, name="alpha")
    scripted.new.answers["/items/1"] = stamped(id=1, name="beta")  # a real change, plus the timestamp
    scripted.old.answers["/orders/1"] = stamped(id=1)
    scripted.new.answers["/orders/1"] = stamped(id=1)  # only the timestamp differs
    before = (await proxy.stats())["shadow"]
    for _ in range(25):
        for path in ("/items/1", "/orders/1"):
            assert (await proxy.client.get(path, headers={"X-Tenant-ID": tenant})).status_code == 200

    async def compared() -> bool:
        return bool((await proxy.stats())["shadow"]["compared"] - before["compared"] == 50)

    await wait_for(compared, timeout_s=10)
    after = (await proxy.stats())["shadow"]
    assert after["divergent"] - before["divergent"] == 25  # every /items/1 read: $.name
    assert after["noise"] - before["noise"] == 25  # every /orders/1 read: $.served_at only
    assert scripted.old.count("GET", "/items/1", tenant) > 25  # copies were sent to the serving side

    async def fields() -> dict[tuple[str, str], tuple[int, int]]:
        rows = await proxy.runtime.pool.fetch(
            "SELECT resource, field, divergent, noise FROM cutover_shadow_field WHERE tenant = $1", tenant
        )
        return {(r["resource"], r["field"]): (r["divergent"], r["noise"]) for r in rows}

    async def flushed() -> bool:
        return sum(n for _d, n in (await fields()).values()) == 50

    await wait_for(flushed, timeout_s=5)
    assert await fields() == {
        ("/items/*", "$.name"): (25, 0),
        ("/items/*", "$.served_at"): (0, 25),
        ("/orders/*", "$.served_at"): (0, 25),
    }
    stored = (await proxy.admin.get(f"/tenants/{tenant}/divergences", params={"limit": 100})).json()
    assert {d["resource"] for d in stored["divergences"]} == {"/items/*"}  # noise-only reads are not stored
    noise_flags = {d["path"]: d["noise"] for d in stored["divergences"][0]["differences"]}
    assert noise_flags == {"$.name": False, "$.served_at": True}
