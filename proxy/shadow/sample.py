"""Build the stored form of a divergent read: masked bodies, masked differences marked noise or not, the
request with only the kept headers and masked query parameters. Pure."""

from __future__ import annotations

import orjson

from config.divergence import DivergencePolicy
from proxy.dataplane.request import ProxyRequest
from proxy.shadow.analysis import Analysis
from proxy.shadow.differ import Rules
from proxy.shadow.divergences import Sample
from proxy.shadow.lift import BodyKind, Lifted
from proxy.shadow.mask import Masker


def build_sample(
    *,
    phase: str,
    resource: str,
    request: ProxyRequest,
    serving_side: str,
    served: Lifted,
    shadow: Lifted,
    analysis: Analysis,
    rules: Rules,
    masker: Masker,
    policy: DivergencePolicy,
) -> Sample:
    keep = frozenset(policy.stored_request_headers)
    headers = [
        (name.decode("latin-1"), value.decode("latin-1"))
        for name, value in request.headers
        if name.decode("latin-1").lower() in keep
    ]
    differences = []
    for difference, noise in zip(analysis.comparison.differences, analysis.noise, strict=True):
        stored = masker.difference(difference, rules.mask)
        stored["noise"] = noise
        differences.append(stored)
    notes: list[str] = []
    bodies = []
    for side, lifted in (("serving", served), ("shadow", shadow)):
        body, note = _stored_body(lifted, rules, masker)
        bodies.append(body)
        if note:
            notes.append(f"{side}: {note}")
    if analysis.comparison.truncated:
        notes.append(f"only the first {len(differences)} differences are listed")
    return Sample(
        tenant=request.mirror_tenant,
        phase=phase,
        resource=resource,
        verdict=analysis.verdict.name.lower(),
        method=request.method,
        path=request.raw_path,
        query=masker.query(request.query, frozenset(policy.mask_query)),
        request_headers=headers,
        serving_side=serving_side,
        serving_status=served.status,
        shadow_status=shadow.status,
        serving_body=bodies[0],
        shadow_body=bodies[1],
        differences=differences,
        fields=list(analysis.divergent_fields),
        response_headers={"serving": served.headers, "shadow": shadow.headers},
        notes=notes,
    )


def _stored_body(lifted: Lifted, rules: Rules, masker: Masker) -> tuple[bytes | None, str | None]:
    if lifted.kind is BodyKind.JSON:
        if rules.mask.empty:
            return lifted.body, lifted.note
        return orjson.dumps(masker.document(lifted.document, rules.mask)), lifted.note
    if lifted.kind is BodyKind.BYTES:
        if rules.mask.empty:
            return lifted.body, lifted.note
        return None, "body is not JSON and masks apply to this resource: not stored"
    return None, lifted.note or (lifted.error and f"no answer: {lifted.error}") or "body not captured"
