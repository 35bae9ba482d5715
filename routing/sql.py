"""SQL-aware classification of one request: what its statements do, which tables, which tenant.

`SqlAnalyzer.analyze` parses a text once per (dialect, text) and keeps the result, or the error, in a
bounded LRU: a repeated parameterised statement costs a dictionary lookup. Transpilations hang off the
cached analysis, so they are cached with it. Everything that depends on the request's parameters (the
tenant a `$1` pins, key values) is resolved per request, after the lookup; so are the values a mirrored
write fixes once (`pin`): they live in a per-request copy and its rewrites, never in the cache.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sqlglot import exp

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
from routing.sql_volatile import Entropy, Pin, Pinner, Unpinnable
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
    volatile: bool = False  # some statement calls a value the proxy can fix once (now(), UUID(), …)
    unpinnable: Unpinnable | None = None  # the first call that changes rows and cannot be fixed once
    generated_key: tuple[str, str] | None = None  # (table, key column) the database would generate


@dataclass(frozen=True, slots=True)
class Pinned:
    """A request's statements with their computed values fixed: `parsed[i]` replaces the analysis of
    text i (None: nothing to fix in it); `pins` holds the values, by marker."""

    parsed: tuple[ParseResult | None, ...]
    pins: Mapping[str, Pin]


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

    def pin(self, request: SqlRequest, entropy: Entropy) -> Pinned:
        """`request` with every value it would compute on each side fixed once, from `entropy`."""
        pinner = Pinner(entropy)
        out: list[ParseResult | None] = []
        for analysis in request.analyses:
            parsed = analysis.parsed
            if not any(statement.facts.volatile for statement in parsed.statements):
                out.append(None)
                continue
            statements = []
            for statement in parsed.statements:
                tree = statement.tree
                if statement.facts.volatile and tree is not None:
                    single = statement.facts.key is not None and isinstance(tree, exp.Update | exp.Delete)
                    tree = pinner.pin(tree, analysis.dialect, single)
                    statement = dataclasses.replace(statement, tree=tree)
                statements.append(statement)
            out.append(dataclasses.replace(parsed, statements=tuple(statements)))
        return Pinned(tuple(out), pinner.pins)

    def transpile_pinned(
        self, parsed: ParseResult, source: str, target: str, pins: Mapping[str, Pin], *, keep_style: bool
    ) -> Transpiled:
        """A pinned statement list rewritten for `target` (its own dialect too): never cached, its
        literals belong to one request. Raises `UntranspilableError`."""
        try:
            return transpile(parsed, source, target, self.rules, pins=pins, keep_style=keep_style)
        except UntranspilableError:
            raise
        except Exception as exc:  # noqa: BLE001 - RecursionError, or a tree no rule expected
            raise UntranspilableError(
                f"cannot transpile safely from {source} to {target}: {type(exc).__name__}",
                source=source,
                target=target,
            ) from None

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
        ddl = mutates = writes = opaque = volatile = False
        tables: set[str] = set()
        tenants: set[str] = set()
        keys: list[tuple[str, tuple[object, ...]]] = []
        unpinnable: Unpinnable | None = None
        generated: tuple[str, str] | None = None
        for analysis, values in zip(analyses, params, strict=True):
            check_params(analysis.parsed, values)
            for statement in analysis.parsed.statements:
                facts = statement.facts
                ddl |= facts.kind is StatementKind.DDL
                writes |= facts.kind is StatementKind.WRITE
                mutates |= facts.mutates
                opaque |= facts.opaque
                volatile |= facts.volatile
                tables |= facts.tables
                unpinnable = unpinnable or facts.unpinnable
                generated = generated or facts.generated_key
                tenants.update(_tenant(pin, values) for pin in facts.tenants)
                if facts.key is not None and facts.key_table is not None:
                    key = tuple(_value(part, values) for part in facts.key)
                    keys.append((facts.key_table, key))
                    if generated is None and isinstance(statement.tree, exp.Insert) and None in key:
                        # MySQL generates an AUTO_INCREMENT key for a NULL sent as its value.
                        columns = self.rules.key_of(facts.key_table)
                        generated = (facts.key_table, columns[key.index(None)])
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
            volatile=volatile,
            unpinnable=unpinnable,
            generated_key=generated,
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
    assert isinstance(values, Mapping)
    assert part.name is not None
    return values[part.name]


def _tenant(pin: Term, values: Params) -> str:
    value = _value(pin, values)
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise SqlTenantError(f"the tenant column is compared with {value!r}, which is not a tenant id")
    try:
        return validate_tenant(str(value))
    except InvalidTenantError as exc:
        raise SqlTenantError(str(exc)) from None
