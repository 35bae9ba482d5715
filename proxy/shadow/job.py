"""What the serving process hands to the shadow process, and the outcomes sent back.

Frames, serving → shadow: `>BIII` (kind, three lengths) then the parts.
- `J` job: meta (orjson), request body, served body. One per shadowed read.
- `P` policy: the divergence policy in force (JSON), sent on connect and after every reload.
- `K` skips: `[[tenant, resource, count], ...]`, reads that were not shadowed for lack of budget.

Outcomes travel back as single bytes, one per event, so the serving process can count them with no
parsing beyond a table lookup. A job's completion byte carries its verdict and the backend the shadow read
went to (`completion(verdict, side)`), which gives back that backend's in-flight slot.
"""

from __future__ import annotations

import struct
from collections.abc import Collection
from dataclasses import dataclass
from enum import IntEnum

import orjson

from proxy.dataplane.request import ProxyRequest
from proxy.shadow.compare import Observation
from routing.decide import Plan
from routing.phases import Phase, Side

FRAME_HEADER = struct.Struct(">BIII")
JOB, POLICY, SKIPS = b"J"[0], b"P"[0], b"K"[0]


class Verdict(IntEnum):
    EQUAL = 0x10
    NOISE = 0x20  # differences, all in fields learned (or configured) as noise
    DIVERGENT = 0x30
    FAILED = 0x40  # a side errored or timed out: no comparison of content
    INTERNAL = 0x50  # the comparison machinery failed (logged in the shadow process)


_SIDES = (Side.OLD, Side.NEW)


def completion(verdict: Verdict, side: Side) -> bytes:
    return bytes((verdict + _SIDES.index(side),))


def parse_completion(code: int) -> tuple[Verdict, Side] | None:
    base, side = code & 0xF0, code & 0x0F
    if base in Verdict._value2member_map_ and side < len(_SIDES):
        return Verdict(base), _SIDES[side]
    return None


STORED = b"S"  # one divergence sample stored
DROPPED = b"D"  # one divergence sample dropped (queue full or store unavailable)


@dataclass(frozen=True, slots=True)
class ShadowJob:
    phase: Phase
    serving_side: Side
    shadow_side: Side
    request: ProxyRequest
    served: Observation
    traceparent: str | None = None  # the request's span, which the shadow call links to
    copy_allowed: bool = True  # may a copy of the read go to the serving side (same body there)?


def encode_job(
    plan: Plan,
    request: ProxyRequest,
    served: Observation,
    keep_headers: Collection[bytes],
    traceparent: str | None = None,
    *,
    copy_allowed: bool = True,
) -> bytes:
    """`keep_headers`: lower-case names of the served headers the shadow process needs (the rest stay);
    `traceparent`: the request's span, which the shadow call links to; `copy_allowed`: `request` is also
    what the serving side gets, so the noise learner may send it a copy."""
    assert plan.shadow is not None
    meta = orjson.dumps(
        {
            "p": plan.phase.value,
            "sv": plan.serving.value,
            "sh": plan.shadow.value,
            "m": request.method,
            "u": request.raw_path,
            "q": request.query,
            "h": [(name.decode("latin-1"), value.decode("latin-1")) for name, value in request.headers],
            "c": request.client_host,
            "s": request.scheme,
            "t": request.tenant,
            "st": served.status,
            "se": served.error,
            "rh": [
                (name.decode("latin-1"), value.decode("latin-1"))
                for name, value in served.headers
                if name.lower() in keep_headers
            ],
            "nb": served.body is None,
            "tp": traceparent,
            "cp": copy_allowed,
        }
    )
    served_body = served.body or b""
    return (
        FRAME_HEADER.pack(JOB, len(meta), len(request.body), len(served_body))
        + meta
        + request.body
        + served_body
    )


def encode_control(kind: int, payload: bytes) -> bytes:
    return FRAME_HEADER.pack(kind, len(payload), 0, 0) + payload


def decode_job(payload: bytes, meta_len: int, body_len: int) -> ShadowJob:
    meta = orjson.loads(payload[:meta_len])
    body = payload[meta_len : meta_len + body_len]
    served_body = None if meta["nb"] else payload[meta_len + body_len :]
    request = ProxyRequest(
        method=meta["m"],
        raw_path=meta["u"],
        query=meta["q"],
        headers=[(name.encode("latin-1"), value.encode("latin-1")) for name, value in meta["h"]],
        body=body,
        tenant=meta["t"],
        client_host=meta["c"],
        scheme=meta["s"],
    )
    served_headers = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in meta["rh"]]
    return ShadowJob(
        phase=Phase(meta["p"]),
        serving_side=Side(meta["sv"]),
        shadow_side=Side(meta["sh"]),
        request=request,
        served=Observation(meta["st"], served_body, error=meta["se"], headers=served_headers),
        traceparent=meta.get("tp"),
        copy_allowed=meta["cp"],
    )
