"""The admin API's OpenAPI document says what the API answers: schemathesis, run against the live API
with a write token, finds no server error, no undocumented status code and no response outside its
schema, on every operation the document lists.

Deterministic (fixed seed, derandomized generation) and bounded: a few examples per operation and
phase (examples, coverage, fuzzing; the stateful phase is left out), some 600 requests in all.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest
import schemathesis
from schemathesis.engine import Status, events, from_schema

from tests.support.proxies import Proxy

pytestmark = pytest.mark.slow

# Operations whose schema-valid requests may be refused by a rule (a phase move the rules forbid, a
# policy file that is not set): for them a documented 422 is an answer, not a rejected request.
RULE_REFUSALS = ["PUT /tenants/{tenant}/phase", "POST /divergence/reload"]


@dataclass
class FuzzRun:
    operations: set[str] = field(default_factory=set)
    requests: int = 0
    failures: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def fuzz(base_url: str, token: str, *, examples: int) -> FuzzRun:
    config = schemathesis.Config.from_dict(
        {
            "seed": 20240611,
            "headers": {"Authorization": f"Bearer {token}"},
            "generation": {"max-examples": examples, "deterministic": True},
            "phases": {"stateful": {"enabled": False}},
            "request-timeout": 20,
            "operations": [
                {
                    "include-name": RULE_REFUSALS,
                    "checks": {
                        "positive_data_acceptance": {
                            "expected-statuses": ["2xx", "401", "403", "404", "409", "422"]
                        }
                    },
                }
            ],
        }
    )
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json", config=config)
    run = FuzzRun()
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            run.operations.add(event.recorder.label)
            run.requests += len(event.recorder.interactions)
            for case_id, checks in event.recorder.checks.items():
                for check in checks:
                    if check.status == Status.FAILURE:
                        info = check.failure_info
                        title = info.failure.title if info is not None else "?"
                        run.failures.append(f"{event.recorder.label}: {check.name}: {title} ({case_id})")
        elif isinstance(event, events.NonFatalError | events.FatalError):
            run.errors.append(repr(event)[:500])
        elif isinstance(event, events.EngineFinished):
            run.failures.extend(f"after run: {failure.title}" for failure in event.failures)
    return run


async def test_schema_fuzzer_finds_nothing(proxy: Proxy) -> None:
    listed = (await proxy.admin.get("/openapi.json")).json()
    operations = {f"{method.upper()} {path}" for path, ops in listed["paths"].items() for method in ops}
    # The fuzzer's HTTP client is synchronous and the API is served by this event loop: run it aside.
    run = await asyncio.to_thread(fuzz, proxy.admin_server.url, proxy.tokens.write, examples=8)
    assert run.errors == []
    assert sorted(set(run.failures)) == []
    assert run.operations == operations, "every documented operation is fuzzed"
    assert run.requests >= 300, "the fuzzer sent too few requests: the test proved nothing"
