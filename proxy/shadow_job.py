"""What the serving process hands to the shadow process for one read, and the outcomes sent back.

A job frame is `>III` (meta, request body, served body lengths) followed by the three parts; meta is
orjson. Outcomes travel back as single bytes, one per event, so the serving process can count them with
no parsing beyond a table lookup.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import orjson

from proxy.compare import Observation
from proxy.request import ProxyRequest
from routing.decide import Plan
from routing.phases import Phase, Side

FRAME_HEADER = struct.Struct(">III")

# Outcome bytes, shadow process → serving process.
EQUAL = b"="
DIVERGENT = b"!"
SHADOW_FAILED = b"x"  # divergent because the shadow side errored or timed out
INTERNAL_ERROR = b"?"  # the comparison machinery failed (logged in the shadow process)
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


def encode_job(
    plan: Plan, request: ProxyRequest, served: Observation, traceparent: str | None = None
) -> bytes:
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
            "nb": served.body is None,
            "tp": traceparent,
        }
    )
    served_body = served.body or b""
    return (
        FRAME_HEADER.pack(len(meta), len(request.body), len(served_body)) + meta + request.body + served_body
    )


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
    return ShadowJob(
        phase=Phase(meta["p"]),
        serving_side=Side(meta["sv"]),
        shadow_side=Side(meta["sh"]),
        request=request,
        served=Observation(meta["st"], served_body, error=meta["se"]),
        traceparent=meta.get("tp"),
    )
