#!/usr/bin/env python3
"""CPU cost of building and decoding one update intent: msgspec (what `buffer_worker.intent` uses) against
the frozen dataclass and orjson decode it replaced, in one process, interleaved rounds.

The proxy builds an intent per mirrored write and the worker decodes one per stream entry, so both are
per-write costs. The reference here is the previous implementation, kept in this file only:

    construct   `Intent(...)` with an id and a time generated (as the proxy does)
    decode      the stream entry's fields → `Intent` (as the worker does), validation included

    .venv/bin/python benchmarks/micro_intent.py --write BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import statistics
import sys
import time
import timeit
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import orjson
from harness import shown_path, write_section  # this folder's harness (scripts run from here)

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from buffer_worker.intent import Intent  # noqa: E402
from routing.phases import Side  # noqa: E402

MARK_START = "<!-- bench_intent_micro:start -->"
MARK_END = "<!-- bench_intent_micro:end -->"
BODY = orjson.dumps({"id": "k1", "tenant": "t01", "seq": 1, "name": "bench item", "pad": "x" * 120})


@dataclass(frozen=True, slots=True)
class DataclassIntent:
    """The previous intent type: a frozen, slotted dataclass, metadata decoded with orjson."""

    tenant: str
    target: Side
    method: str
    path: str
    query: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    status: int
    response_body: bytes
    response_headers: tuple[tuple[str, str], ...] = ()
    intent_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    created_ms: int = field(default_factory=lambda: time.time_ns() // 1_000_000)
    traceparent: str | None = None

    @classmethod
    def from_fields(cls, fields: dict[bytes, bytes]) -> DataclassIntent:
        meta = orjson.loads(fields[b"m"])
        if not isinstance(meta, dict) or meta.get("v") != 1:
            raise ValueError("bad intent")
        return cls(
            tenant=meta["t"],
            target=Side(meta["to"]),
            method=meta["m"],
            path=meta["p"],
            query=meta["q"],
            headers=tuple((k, v) for k, v in meta["h"]),
            body=fields.get(b"b", b""),
            status=int(meta["s"]),
            response_body=fields.get(b"r", b""),
            response_headers=tuple((k, v) for k, v in meta.get("rh", ())),
            intent_id=meta["id"],
            created_ms=int(meta["c"]),
            traceparent=meta.get("tp"),
        )


def construct(kind: type[Intent] | type[DataclassIntent]) -> Callable[[], Any]:
    def build() -> Any:
        return kind(
            tenant="t01",
            target=Side.NEW,
            method="PUT",
            path="/items/k1",
            query="",
            headers=(("content-type", "application/json"),),
            body=BODY,
            status=200,
            response_body=b"{}",
        )

    return build


def decode(kind: type[Intent] | type[DataclassIntent], fields: dict[bytes, bytes]) -> Callable[[], Any]:
    return lambda: kind.from_fields(fields)


def per_call_us(fn: Callable[[], Any], number: int) -> float:
    return min(timeit.repeat(fn, number=number, repeat=3)) / number * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--number", type=int, default=20_000, help="calls per timing")
    parser.add_argument("--write", type=Path, help="Markdown file to put the section into")
    args = parser.parse_args()
    fields = construct(Intent)().to_fields()
    assert DataclassIntent.from_fields(fields).intent_id == Intent.from_fields(fields).intent_id
    cases = {
        ("construct", "msgspec"): construct(Intent),
        ("construct", "dataclass"): construct(DataclassIntent),
        ("decode", "msgspec"): decode(Intent, fields),
        ("decode", "dataclass"): decode(DataclassIntent, fields),
    }
    results: dict[tuple[str, str], list[float]] = {case: [] for case in cases}
    for _ in range(args.rounds):
        for case, fn in cases.items():
            results[case].append(per_call_us(fn, args.number))
    med = {case: statistics.median(values) for case, values in results.items()}
    lines = [
        MARK_START,
        "## Intent codec (`benchmarks/micro_intent.py`)",
        "",
        "- command: `.venv/bin/python benchmarks/micro_intent.py --write BENCHMARKS.md`",
        f"- date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC",
        f"- machine: {platform.machine()}, Python {platform.python_version()}"
        f" (`{shown_path(sys.executable)}`);"
        f" msgspec {metadata.version('msgspec')}, orjson {metadata.version('orjson')}",
        f"- {args.rounds} interleaved rounds, each the best of 3 × {args.number:,} calls;"
        " medians over rounds",
        "",
        "| per intent | msgspec struct (in use) | frozen dataclass + orjson (before) | ratio |",
        "|---|---|---|---|",
    ]
    for what in ("construct", "decode"):
        new, old = med[(what, "msgspec")], med[(what, "dataclass")]
        lines.append(f"| {what} | {new:.2f} µs | {old:.2f} µs | {old / new:.1f}× |")
    lines += [
        "",
        "Both run per mirrored write: the proxy constructs (id and time generated: `os.urandom` hex now,"
        " `uuid4().hex` before), the worker decodes (types checked by the msgspec decoder; the"
        " dataclass path checked only the version and what `int()`/`Side()` reject).",
        MARK_END,
    ]
    section = "\n".join(lines) + "\n"
    print(section)
    if args.write is not None:
        write_section(args.write, section, MARK_START, MARK_END)
    return 0


if __name__ == "__main__":
    sys.exit(main())
