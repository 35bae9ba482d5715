"""Mirrored SQL writes, as statements PostgreSQL can execute in the applier's batch transaction.

An intent of a configured SQL endpoint carries the JSON body the mirror must receive: its SQL is already
in the mirror's dialect when the proxy rewrote it, otherwise in the dialect of the intent's target side,
and is transpiled to PostgreSQL here. Each statement runs on its own with its own parameters, numbered
`$1…` (asyncpg runs one statement per call).

Transaction control in the text is honoured inside the batch's transaction rather than executed: the
statements of a `BEGIN … ROLLBACK` are dropped (the authoritative side discarded them), those of a
`BEGIN … COMMIT` kept; a statement cannot commit the batch halfway. JSON parameters are converted to the
types PostgreSQL infers for them (ISO text to timestamps, numbers to text columns, objects to jsonb):
the old side's driver accepted them as sent, and asyncpg would refuse most.
"""

from __future__ import annotations

import datetime
import decimal
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson
from sqlglot import exp

from buffer_worker.apply_errors import PermanentApplyError
from buffer_worker.intent import Intent
from config.settings import Settings
from config.sql import SqlEndpoint
from routing.phases import Side
from routing.sql import check_params
from routing.sql_body import read_body
from routing.sql_classify import Parsed, StatementKind
from routing.sql_errors import SqlError

Statement = tuple[str, tuple[Any, ...]]  # text numbered $1…, and its arguments


class SqlIntents:
    def __init__(self, settings: Settings) -> None:
        config = settings.sql
        self._endpoints: dict[tuple[str, str], SqlEndpoint] = {
            (endpoint.method, endpoint.path): endpoint for endpoint in config.endpoints
        }
        self._dialects = {
            Side.OLD: settings.backends.old.sql_dialect or "postgres",
            Side.NEW: settings.backends.new.sql_dialect or "postgres",
        }
        self._analyzer = config.analyzer()

    def matches(self, intent: Intent) -> bool:
        return bool(self._endpoints) and (intent.method, intent.path) in self._endpoints

    def statements(self, intent: Intent) -> list[Statement]:
        """The statements to execute for `intent`; raises `PermanentApplyError` if it cannot be run."""
        endpoint = self._endpoints[(intent.method, intent.path)]
        dialect = self._dialects[intent.target]
        try:
            body = read_body(intent.body, endpoint.sql_field, endpoint.params_field)
            out: list[Statement] = []
            for text, params in zip(body.texts, body.params, strict=True):
                analysis = self._analyzer.analyze(dialect, text)
                check_params(analysis.parsed, params)
                rewritten = self._analyzer.transpile(analysis, "postgres")
                parsed = analysis.parsed.statements
                out.extend(_kept(rewritten.executable, parsed, _positional(params), intent))
        except SqlError as exc:
            raise PermanentApplyError(intent, f"the mirrored SQL cannot be applied: {exc.detail}") from None
        return out


def _positional(params: object) -> Sequence[Any]:
    if params is None:
        return ()
    if isinstance(params, Mapping):
        return ()  # named parameters are refused by the transpilation above
    assert isinstance(params, Sequence)
    return params


def _kept(
    executable: Sequence[tuple[str, tuple[int, ...]]],
    parsed: Sequence[Parsed],
    params: Sequence[Any],
    intent: Intent,
) -> list[Statement]:
    kept: list[Statement] = []
    pending: list[Statement] | None = None  # statements of an open BEGIN … block
    for (text, slots), statement in zip(executable, parsed, strict=True):
        tree = statement.tree
        if statement.facts.kind is StatementKind.CONTROL:
            if isinstance(tree, exp.Rollback):
                if tree.args.get("savepoint"):
                    raise PermanentApplyError(intent, "ROLLBACK TO SAVEPOINT cannot be mirrored")
                pending = None
            elif isinstance(tree, exp.Commit):
                kept.extend(pending or ())
                pending = None
            elif isinstance(tree, exp.Transaction) or statement.command.upper().startswith("START"):
                pending = [] if pending is None else pending
            continue  # SET, SAVEPOINT and other session statements do not change rows
        (kept if pending is None else pending).append((text, tuple(params[i] for i in slots)))
    kept.extend(pending or ())  # a block the client left open was committed with its request
    return kept


# -- parameter types -------------------------------------------------------------------------------------
def _text(value: Any) -> Any:
    if isinstance(value, str) or value is None:
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return orjson.dumps(value).decode()
    return str(value)


def _integer(value: Any) -> Any:
    if isinstance(value, str):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _number(value: Any) -> Any:
    return decimal.Decimal(value) if isinstance(value, str) else value


def _float(value: Any) -> Any:
    return float(value) if isinstance(value, str | int) and not isinstance(value, bool) else value


def _boolean(value: Any) -> Any:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "t", "true", "y", "yes", "on")
    if isinstance(value, int):
        return bool(value)
    return value


def _json(value: Any) -> Any:
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def _parsed(parse: Callable[[str], Any]) -> Callable[[Any], Any]:
    return lambda value: parse(value.replace("Z", "+00:00")) if isinstance(value, str) else value


_NAIVE = _parsed(datetime.datetime.fromisoformat)


def _timestamp(value: Any) -> Any:
    parsed = _NAIVE(value)
    return parsed.replace(tzinfo=None) if isinstance(parsed, datetime.datetime) and parsed.tzinfo else parsed


def _timestamptz(value: Any) -> Any:
    parsed = _NAIVE(value)
    if isinstance(parsed, datetime.datetime) and parsed.tzinfo is None:
        return parsed.replace(tzinfo=datetime.UTC)
    return parsed


COERCE: dict[str, Callable[[Any], Any]] = {
    **dict.fromkeys(("text", "varchar", "bpchar", "name", "citext"), _text),
    **dict.fromkeys(("int2", "int4", "int8", "oid"), _integer),
    "numeric": _number,
    **dict.fromkeys(("float4", "float8"), _float),
    "bool": _boolean,
    **dict.fromkeys(("json", "jsonb"), _json),
    "timestamp": _timestamp,
    "timestamptz": _timestamptz,
    "date": _parsed(datetime.date.fromisoformat),
    "time": _parsed(datetime.time.fromisoformat),
    "uuid": lambda value: uuid.UUID(value) if isinstance(value, str) else value,
}


def coerce(args: tuple[Any, ...], type_names: Sequence[str]) -> tuple[Any, ...]:
    """`args` converted to the parameter types PostgreSQL inferred; values that do not convert stay as
    they are, so that PostgreSQL (not this function) names the problem."""
    out = []
    for value, name in zip(args, type_names, strict=True):
        convert = COERCE.get(name)
        if convert is not None and value is not None:
            try:
                value = convert(value)
            except (ValueError, TypeError, ArithmeticError):
                pass
        out.append(value)
    return tuple(out)
