"""Routing: pure decisions, no I/O. Request → facts (`classify`) → plan (`decide`) → action (`resolve`)."""

from routing.classify import (
    READ_METHODS,
    InvalidTargetError,
    RequestFacts,
    RequestKind,
    check_target,
    classify,
)
from routing.decide import Action, Outcome, Plan, decide, resolve
from routing.phases import Phase, PhaseMoveError, Side, allowed_moves, check_move
from routing.tenant import TENANT_HEADER_DEFAULT, InvalidTenantError, validate_tenant

__all__ = [
    "READ_METHODS",
    "TENANT_HEADER_DEFAULT",
    "Action",
    "InvalidTargetError",
    "InvalidTenantError",
    "Outcome",
    "Phase",
    "PhaseMoveError",
    "Plan",
    "RequestFacts",
    "RequestKind",
    "Side",
    "allowed_moves",
    "check_move",
    "check_target",
    "classify",
    "decide",
    "resolve",
    "validate_tenant",
]
