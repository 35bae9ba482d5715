"""SQL-aware classification of one request: what its statements do, which tables, which tenant.

`SqlAnalyzer.analyze` parses a text once per (dialect, text) and keeps the result, or the error, in a
bounded LRU: a repeated parameterised statement costs a dictionary lookup. Transpilations hang off the
cached analysis, so they are cached with it. Everything that depends on the request's parameters (the
tenant a `$1` pins, key values) is resolved per request, after the lookup.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from routing.classify import RequestKind
from routing.sql_classify import Param, ParseResult, Rules, StatementKind, Term, parse
from routing.sql_errors import (
    SqlError,
    SqlLimitError,
    SqlParamsError,
    SqlSyntaxError,
    SqlTenantError,
    UntranspilableError,
)
from routing.sql_transpile import Transpiled, transpile
from routing.tenant import InvalidTenantError, validate_tenant

Params = Sequence[object] | Mapping[str, object] | None


@dataclass(frozen=True, slots=True)
class SqlLimits:
    max_text_chars: int = 65_536  # over all texts of one request
    max_statements: int = 32  # over all texts of one request


class Analysis:
    """One parsed text in one dialect, shared by every request that sends the same text."""

    __slots__ = ("dialect", "parsed", "_transpiled")

    def __init__(self, dialect: str, parsed: ParseResult) -> None:
        self.dialect = dialect
        self.parsed = parsed
        self._transpiled: dict[str, Transpiled | UntranspilableError] = {}


@dataclass(frozen=True, slots=True)
class SqlRequest:
    """What routing knows about the SQL of one request (all its texts together)."""

    analyses: tuple[Analysis, ...]
    kind: RequestKind  # WRITE when any statement writes, is DDL, or locks rows
    ddl: bool
    mutates: bool  # some statement changes rows (a locking read alone does not)
    tables: frozenset[str]
    opaque: bool  # some statement's tables are unknown
    tenant: str | None  # the tenant the statements pin, if any
    keys: tuple[tuple[str, tuple[object, ...]], ...] = ()  # (table, key values) of single-row writes


class SqlAnalyzer:
    def __init__(self, rules: Rules, limits: SqlLimits, *, cache_size: int = 4096) -> None:
        self.rules = rules
        self.limits = limits
        self._cached = functools.lru_cache(maxsize=cache_size)(self._analyze)

    def analyze(self, dialect: str, text: str) -> Analysis:
        """The cached analysis of `text`; raises `SqlInputError` for text that cannot be routed."""
        if len(text) > self.limits.max_text_chars:
            raise SqlLimitError(
                f"SQL text of {len(text)} characters exceeds the limit of {self.limits.max_text_chars}",
                code="sql_too_long",
            )
        result = self._cached(dialect, text)
        if isinstance(result, SqlError):
            # The cached error object is raised again: drop the traceback of its previous raise.
            raise result.with_traceback(None) from None
        return result

    def _analyze(self, dialect: str, text: str) -> Analysis | SqlError:
        if not text.strip():
            return SqlLimitError("the SQL text is empty", code="sql_empty")
        try:
            parsed = parse(text, dialect, self.rules, max_statements=self.limits.max_statements)
        except SqlError as exc:
            return exc
        except RecursionError:
            return SqlSyntaxError("the statement is nested too deeply to classify", line=None, col=None)
        except Exception as exc:  # noqa: BLE001 - a tree shape no rule expected: refuse it, never crash
            return SqlSyntaxError(
                f"the statement could not be classified ({type(exc).__name__})", line=None, col=None
            )
        return Analysis(dialect, parsed)

    def transpile(self, analysis: Analysis, target: str) -> Transpiled:
        """`analysis` rewritten for `target` (cached on it); raises `UntranspilableError`."""
        result = analysis._transpiled.get(target)
        if result is None:
            try:
                result = transpile(analysis.parsed, analysis.dialect, target, self.rules)
            except UntranspilableError as exc:
                result = exc
            except Exception as exc:  # noqa: BLE001 - RecursionError, or a tree no rule expected
                result = UntranspilableError(
                    f"cannot transpile safely from {analysis.dialect} to {target}: {type(exc).__name__}",
                    source=analysis.dialect,
                    target=target,
                )
            analysis._transpiled[target] = result
        if isinstance(result, UntranspilableError):
            raise result.with_traceback(None) from None
        return result

    def cache_info(self) -> functools._CacheInfo:
        return self._cached.cache_info()

    def request(self, dialect: str, texts: Sequence[str], params: Sequence[Params]) -> SqlRequest:
        """Analyse every text of one request (`params[i]` belongs to `texts[i]`) and combine them."""
        total = sum(len(text) for text in texts)
        if total > self.limits.max_text_chars:
            raise SqlLimitError(
                f"SQL texts of {total} characters exceed the limit of {self.limits.max_text_chars}",
                code="sql_too_long",
            )
        if not texts:
            raise SqlLimitError("the request holds no SQL statement", code="sql_empty")
        analyses = tuple(self.analyze(dialect, text) for text in texts)
        count = sum(len(analysis.parsed.statements) for analysis in analyses)
        if count > self.limits.max_statements:
            raise SqlLimitError(
                f"{count} statements exceed the limit of {self.limits.max_statements}",
                code="sql_too_many_statements",
            )
        ddl = mutates = writes = opaque = False
        tables: set[str] = set()
        tenants: set[str] = set()
        keys: list[tuple[str, tuple[object, ...]]] = []
        for analysis, values in zip(analyses, params, strict=True):
            check_params(analysis.parsed, values)
            for statement in analysis.parsed.statements:
                facts = statement.facts
                ddl |= facts.kind is StatementKind.DDL
                writes |= facts.kind is StatementKind.WRITE
                mutates |= facts.mutates
                opaque |= facts.opaque
                tables |= facts.tables
                tenants.update(_tenant(pin, values) for pin in facts.tenants)
                if facts.key is not None and facts.key_table is not None:
                    keys.append((facts.key_table, tuple(_value(part, values) for part in facts.key)))
        if len(tenants) > 1:
            raise SqlTenantError(
                f"the statements pin several tenants ({', '.join(sorted(tenants))}); "
                "send one tenant per request",
                code="sql_tenant_conflict",
            )
        return SqlRequest(
            analyses=analyses,
            kind=RequestKind.WRITE if ddl or writes else RequestKind.READ,
            ddl=ddl,
            mutates=mutates,
            tables=frozenset(tables),
            opaque=opaque,
            tenant=next(iter(tenants), None),
            keys=tuple(keys),
        )


def check_params(parsed: ParseResult, values: Params) -> None:
    if parsed.positional:
        if not isinstance(values, Sequence) or isinstance(values, str | bytes):
            raise SqlParamsError(
                f"the statement has {parsed.positional} positional parameters: params must be a list",
                code="sql_params",
            )
        if len(values) < parsed.positional:
            raise SqlParamsError(
                f"the statement refers to {parsed.positional} parameters but {len(values)} were sent",
                code="sql_params",
            )
    if parsed.names:
        if not isinstance(values, Mapping):
            raise SqlParamsError(
                "the statement has named parameters: params must be an object", code="sql_params"
            )
        missing = sorted(parsed.names - values.keys())
        if missing:
            raise SqlParamsError(f"no value for parameters {', '.join(missing)}", code="sql_params")


def _value(part: Term, values: Params) -> object:
    if not isinstance(part, Param):
        return part
    if part.index is not None:
        assert isinstance(values, Sequence)  # checked by check_params
        return values[part.index]
    assert isinstance(values, Mapping) and part.name is not None
    return values[part.name]


def _tenant(pin: Term, values: Params) -> str:
    value = _value(pin, values)
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise SqlTenantError(f"the tenant column is compared with {value!r}, which is not a tenant id")
    try:
        return validate_tenant(str(value))
    except InvalidTenantError as exc:
        raise SqlTenantError(str(exc)) from None
