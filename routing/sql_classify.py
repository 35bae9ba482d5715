"""Parse SQL text with sqlglot and state what routing needs to know about each statement.

For every statement: its kind (read, write, DDL, or transaction/session control), the tables it touches
(inside CTEs, subqueries and joins; CTE names are not tables), the values it pins the tenant column to,
for a single-row write the primary-key values it addresses, and what a mirrored run would compute again
(calls the proxy can fix once, calls it cannot, keys the database would generate; see
`routing.sql_volatile`). Values are literals or references to the request's parameters (`$1`, `?`,
`%s`, `:name`), resolved later against the parameters sent.

Positional placeholders (`?`, `%s`) are numbered by their place in the text before parsing, by rewriting
each to a named marker: the parse tree does not keep source order (a CTE is attached after the query
that follows it; MySQL's `LIMIT ?, ?` puts the offset first), so numbering nodes afterwards could
misnumber them.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import sqlglot.errors
from sqlglot import exp
from sqlglot.dialects.dialect import Dialect
from sqlglot.tokenizer_core import TokenType

from routing.sql_errors import SqlLimitError, SqlSyntaxError
from routing.sql_values import (
    MARKER,
    MARKER_NAME,
    Param,
    Rules,
    Term,
    generated_key,
    single_row_key,
    table_name,
    tenant_pins,
    term,
)
from routing.sql_volatile import SEQUENCE_CALLS, Unpinnable, Volatile, calls, refusal

# Re-exported: the value types are part of what a parse returns.
__all__ = [
    "MARKER",
    "Param",
    "ParseResult",
    "Parsed",
    "Rules",
    "StatementFacts",
    "StatementKind",
    "Term",
    "dialect_of",
    "parse",
    "table_name",
    "term",
]


class StatementKind(StrEnum):
    READ = "read"
    WRITE = "write"
    DDL = "ddl"  # schema and administrative statements (and anything cutover cannot interpret)
    CONTROL = "control"  # BEGIN / COMMIT / ROLLBACK / SET: no data, no tables

    __hash__ = str.__hash__  # see routing.phases.Side


@dataclass(frozen=True, slots=True)
class StatementFacts:
    kind: StatementKind
    tables: frozenset[str] = frozenset()
    # Parsed only as an uninterpreted command (sqlglot's fallback): its tables are unknown, and its text
    # cannot be rewritten for another dialect.
    opaque: bool = False
    mutates: bool = False  # changes rows; False for locking reads (SELECT … FOR UPDATE), which are writes
    tenants: tuple[Term, ...] = ()  # every value the statement pins the tenant column to
    key_table: str | None = None
    key: tuple[Term, ...] | None = None  # primary-key values of a single-row write, when visible
    upsert: bool = False  # INSERT … ON CONFLICT / ON DUPLICATE KEY / REPLACE
    volatile: bool = False  # calls a value the proxy can fix once (now(), random(), UUID(), …)
    unpinnable: Unpinnable | None = None  # changes rows with a value that cannot be fixed once
    generated_key: tuple[str, str] | None = None  # (table, key column) an INSERT leaves to the database


@dataclass(frozen=True, slots=True)
class Parsed:
    """One statement: its facts and its tree (shared through the cache: copy before changing it)."""

    facts: StatementFacts
    tree: exp.Expression | None  # None for an opaque command
    command: str = ""  # the text of a statement sqlglot only kept as a command (EXPLAIN, SHOW, …)
    explain: str | None = None  # EXPLAIN options, when `tree` is the statement under an EXPLAIN
    replace: bool = False  # MySQL REPLACE, parsed as the INSERT it resembles


@dataclass(frozen=True, slots=True)
class ParseResult:
    statements: tuple[Parsed, ...]
    positional: int  # number of positional parameters the text refers to
    names: frozenset[str] = field(default_factory=frozenset)  # named parameters it refers to
    style: str | None = None  # how positional parameters were written: "?" or "%s" (None: $n, or none)


_DIALECTS: dict[str, Dialect] = {}


def dialect_of(name: str) -> Dialect:
    dialect = _DIALECTS.get(name)
    if dialect is None:
        dialect = _DIALECTS[name] = Dialect.get_or_raise(name)
    return dialect


def parse(text: str, dialect: str, rules: Rules, *, max_statements: int) -> ParseResult:
    """Parse `text` (one or more `;`-separated statements). Raises `SqlSyntaxError` or `SqlLimitError`."""
    numbered, positional, style = _number_placeholders(text, dialect)
    trees = _parse_trees(numbered, text, dialect)
    statements: list[Parsed] = []
    for tree in trees:
        if tree is None:
            continue  # an empty statement between semicolons
        if len(statements) == max_statements:
            raise SqlLimitError(
                f"more than {max_statements} statements in one text", code="sql_too_many_statements"
            )
        statements.append(_parsed(tree, dialect, rules))
    if not statements:
        raise SqlLimitError("the SQL text holds no statement", code="sql_empty")
    names: set[str] = set()
    for parsed in statements:
        if parsed.tree is None:
            continue
        for node in parsed.tree.find_all(exp.Placeholder, exp.Parameter):
            found = term(node)
            if isinstance(found, Param):
                if found.name is not None and not MARKER_NAME.fullmatch(found.name):
                    names.add(found.name)
                elif found.index is not None:
                    positional = max(positional, found.index + 1)
    return ParseResult(tuple(statements), positional, frozenset(names), style)


# -- parsing ---------------------------------------------------------------------------------------------
def _number_placeholders(text: str, dialect: str) -> tuple[str, int, str | None]:
    # `?` is the jsonb key-exists operator in PostgreSQL, whose drivers use `$n` or `%s`.
    question = dialect != "postgres" and "?" in text
    if not question and "%s" not in text:
        return text, 0, None
    try:
        tokens = dialect_of(dialect).tokenize(text)
    except sqlglot.errors.TokenError:
        return text, 0, None  # the parse reports it
    spans: list[tuple[int, int]] = []
    percent = False
    for i, token in enumerate(tokens):
        if question and token.token_type is TokenType.PLACEHOLDER and token.text == "?":
            spans.append((token.start, token.end + 1))
        elif token.token_type is TokenType.MOD and i + 1 < len(tokens):
            after = tokens[i + 1]
            if after.text == "s" and after.start == token.end + 1:
                spans.append((token.start, after.end + 1))
                percent = True
    if not spans:
        return text, 0, None
    parts: list[str] = []
    last = 0
    for k, (start, end) in enumerate(spans):
        parts.append(text[last:start])
        parts.append(f":{MARKER}{k}")
        last = end
    parts.append(text[last:])
    return "".join(parts), len(spans), "%s" if percent else "?"


def _parse_trees(numbered: str, original: str, dialect: str) -> list[exp.Expr | None]:
    try:
        return dialect_of(dialect).parse(numbered)
    except RecursionError:
        raise SqlSyntaxError("the statement is nested too deeply to parse", line=None, col=None) from None
    except sqlglot.errors.ParseError as exc:
        error = exc
    except sqlglot.errors.SqlglotError as exc:  # TokenError: unterminated string, bad character
        raise SqlSyntaxError(_clean(str(exc)), line=None, col=None) from None
    except Exception as exc:  # noqa: BLE001 - sqlglot is not a validator: its own failures mean unparseable
        raise SqlSyntaxError(
            f"the SQL parser could not read this text ({type(exc).__name__})", line=None, col=None
        ) from None
    if numbered is not original:
        # Report positions in the text the client sent, not in the renumbered one.
        try:
            dialect_of(dialect).parse(original)
        except sqlglot.errors.ParseError as original_error:
            error = original_error
        except Exception:  # noqa: BLE001 - any other failure: keep the first error
            pass
    raise syntax_error(error) from None


_TOKEN_REPR = re.compile(r"<Token token_type: [^,]+, text: (.*?), line: \d+, col: \d+, start: \d+.*?>")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _clean(message: str) -> str:
    return _ANSI.sub("", _TOKEN_REPR.sub(lambda m: repr(m.group(1)), message)).strip()


def syntax_error(exc: sqlglot.errors.ParseError, *, col_offset: int = 0) -> SqlSyntaxError:
    first: dict[str, Any] = exc.errors[0] if exc.errors else {}
    line, col = first.get("line"), first.get("col")
    if col is not None and line == 1:
        col += col_offset
    detail = _clean(str(first.get("description") or exc))
    highlight = first.get("highlight")
    if highlight:
        detail = f"{detail} (near {_clean(str(highlight))[:40]!r})"
    return SqlSyntaxError(detail, line=line, col=col)


# -- one statement ---------------------------------------------------------------------------------------
_EXPLAIN_OPTIONS = re.compile(
    r"\s*(?:\((?:[^()]|\([^()]*\))*\)\s*|(?:ANALY[SZ]E|VERBOSE|EXTENDED|PARTITIONS)\b\s*"
    r"|FORMAT\s*=\s*\w+\s*)*",
    re.IGNORECASE,
)
_ANALYZE_ON = re.compile(r"\bANALY[SZ]E\b(?!\s+(?:FALSE|OFF|0)\b)", re.IGNORECASE)
_CONTROL = (exp.Transaction, exp.Commit, exp.Rollback, exp.Set)
_DDL = (
    exp.Create,
    exp.Drop,
    exp.Alter,
    exp.TruncateTable,
    exp.Comment,
    exp.Grant,
    exp.Revoke,
    exp.Refresh,
    exp.Cache,
    exp.Uncache,
    exp.Analyze,
)
_MUTATING = (exp.Insert, exp.Update, exp.Delete, exp.Merge)
_READS = (exp.Query, exp.Values, exp.Describe, exp.Show)
_STATEMENTS = (exp.Query, exp.Insert, exp.Update, exp.Delete, exp.Merge, exp.Values)
_SHOW_TABLE_TARGETS = frozenset({"COLUMNS", "FIELDS", "CREATE TABLE", "INDEX", "INDEXES", "KEYS"})


def _parsed(tree: exp.Expr, dialect: str, rules: Rules) -> Parsed:
    if isinstance(tree, exp.Command):
        return _command(tree, dialect, rules)
    if not isinstance(tree, exp.Expression):  # not a node type this module knows how to read
        return Parsed(StatementFacts(StatementKind.DDL, opaque=True), None, type(tree).__name__)
    if isinstance(tree, exp.Describe) and isinstance(tree.this, _STATEMENTS):
        # MySQL's EXPLAIN [ANALYZE | FORMAT=…] <statement>
        style = str(tree.args.get("style") or "").upper()
        options = " ".join(part for part in (style, _format_option(tree)) if part)
        return _explained(_parsed(tree.this, dialect, rules), options, analyze=style == "ANALYZE")
    if isinstance(tree, exp.Alias) and isinstance(tree.this, exp.Column):
        # Statements sqlglot reads as `word alias`: START TRANSACTION, SAVEPOINT name (PostgreSQL)
        if tree.this.name.upper() in ("START", "SAVEPOINT"):
            return Parsed(StatementFacts(StatementKind.CONTROL), None, f"{tree.this.name} {tree.alias}")
    if isinstance(tree, exp.Condition | exp.Tuple | exp.Star | exp.Alias):
        # sqlglot reads a bare expression (`foo`, `1 + 1`, `f(x)`) where a statement was expected.
        shown = tree.sql()
        shown = shown if len(shown) <= 40 else shown[:40] + "…"
        raise SqlSyntaxError(f"expected a statement, found the expression {shown!r}", line=None, col=None)
    return Parsed(_facts(tree, rules, dialect), tree)


def _format_option(tree: exp.Describe) -> str:
    fmt = tree.args.get("format")
    return f"FORMAT={fmt.name}" if isinstance(fmt, exp.Expression) else ""


def _explained(inner: Parsed, options: str, *, analyze: bool) -> Parsed:
    """EXPLAIN shows a plan and runs nothing, unless ANALYZE runs the statement."""
    facts = inner.facts
    if not analyze:
        facts = StatementFacts(StatementKind.READ, facts.tables, opaque=facts.opaque, tenants=facts.tenants)
    elif facts.kind is StatementKind.CONTROL:
        facts = StatementFacts(StatementKind.READ)
    return Parsed(facts, inner.tree, inner.command, explain=options)


def _command(tree: exp.Command, dialect: str, rules: Rules) -> Parsed:
    """sqlglot's fallback for statements it does not model: keep what can be known safely."""
    name = str(tree.this).upper()
    rest = tree.expression.name if isinstance(tree.expression, exp.Literal) else ""
    text = f"{tree.this} {rest}"
    if name == "EXPLAIN":
        options = _EXPLAIN_OPTIONS.match(rest)
        prefix = options.group(0) if options else ""
        inner = _single(rest[len(prefix) :], dialect, rules, col_offset=len("EXPLAIN ") + len(prefix))
        return _explained(inner, prefix.strip(), analyze=_ANALYZE_ON.search(prefix) is not None)
    if name == "SHOW":
        return Parsed(StatementFacts(StatementKind.READ), None, text)
    if name == "REPLACE" and rest[:4].upper() == "INTO":
        inner = _single(f"INSERT {rest}", dialect, rules, col_offset=len("REPLACE") - len("INSERT"))
        if isinstance(inner.tree, exp.Insert):
            replaced = dataclasses.replace(inner.facts, mutates=True, upsert=True)
            return Parsed(replaced, inner.tree, text, replace=True)
    return Parsed(StatementFacts(StatementKind.DDL, opaque=True), None, text)


def _single(text: str, dialect: str, rules: Rules, *, col_offset: int) -> Parsed:
    try:
        trees = [tree for tree in dialect_of(dialect).parse(text) if tree is not None]
    except RecursionError:
        raise SqlSyntaxError("the statement is nested too deeply to parse", line=None, col=None) from None
    except sqlglot.errors.ParseError as exc:
        raise syntax_error(exc, col_offset=col_offset) from None
    except Exception as exc:  # noqa: BLE001 - see _parse_trees
        raise SqlSyntaxError(
            f"the SQL parser could not read this text ({type(exc).__name__})", line=None, col=None
        ) from None
    if len(trees) != 1:
        raise SqlSyntaxError("expected exactly one statement here", line=1, col=col_offset + 1)
    return _parsed(trees[0], dialect, rules)


def _facts(tree: exp.Expression, rules: Rules, dialect: str) -> StatementFacts:
    if isinstance(tree, _CONTROL):
        return StatementFacts(StatementKind.CONTROL)
    tables: list[exp.Table] = []
    cte_names: set[str] = set()
    conditions: list[exp.Expression] = []
    skip: set[int] = set()  # ids of Table nodes that name aliases, not tables
    mutates = ddl = locking = upsert = False
    for node in tree.walk():
        if isinstance(node, exp.Table):
            if id(node) not in skip and isinstance(node.this, exp.Identifier):
                tables.append(node)
        elif isinstance(node, exp.CTE):
            cte_names.add(node.alias_or_name.lower())
        elif isinstance(node, exp.Where):
            conditions.append(node.this)
        elif isinstance(node, exp.Join):
            on = node.args.get("on")
            if on is not None:
                conditions.append(on)
        elif isinstance(node, _MUTATING):
            mutates = True
            if isinstance(node, exp.Update):
                conditions.extend(node.expressions)  # `SET tenant_id = …` moves rows to that tenant
            elif isinstance(node, exp.Delete):
                skip.update(id(t) for t in node.args.get("tables") or ())  # MySQL multi-table targets
            elif isinstance(node, exp.Insert) and (node.args.get("conflict") or node.args.get("ignore")):
                upsert = True
        elif isinstance(node, exp.Lock):
            locking = True
            skip.update(id(t) for t in node.find_all(exp.Table))  # FOR UPDATE OF <alias>
        elif isinstance(node, exp.Select) and node.args.get("into") is not None:
            ddl = True  # SELECT … INTO creates a table (PostgreSQL) or writes outside the statement
        elif isinstance(node, _DDL):
            ddl = True
    names = frozenset(
        name for table in tables if (name := table_name(table)) not in cte_names or table.args.get("db")
    )
    if isinstance(tree, exp.Show):
        target = tree.args.get("target")
        if str(tree.this).upper() in _SHOW_TABLE_TARGETS and isinstance(target, exp.Identifier):
            names = frozenset({target.name.lower()})
    tenants = tuple(tenant_pins(tree, conditions, rules, frozenset(cte_names)))
    if ddl or isinstance(tree, exp.Use):
        return StatementFacts(StatementKind.DDL, names, opaque=isinstance(tree, exp.Use), tenants=tenants)
    if isinstance(tree, exp.Copy):
        into = bool(tree.args.get("kind"))  # COPY … FROM loads rows; COPY … TO reads them
        kind = StatementKind.WRITE if into else StatementKind.READ
        return StatementFacts(kind, names, mutates=into, tenants=tenants)
    found = [call for _node, call in calls(tree, dialect)]
    volatile = any(isinstance(call, Volatile) for call in found)
    # A SELECT of nextval() hands out a key from the sequence of the side that runs it: like a locking
    # read, it belongs to the side that takes writes.
    locking |= any(call.name in SEQUENCE_CALLS for call in found)
    if mutates or locking:
        key_table, key = single_row_key(tree, rules)
        unpinnable = None
        if mutates and found:
            single_row = key is not None and isinstance(tree, exp.Update | exp.Delete)
            unpinnable = refusal(tree, dialect, single_row)
        return StatementFacts(
            StatementKind.WRITE, names, mutates=mutates, tenants=tenants, key_table=key_table, key=key,
            upsert=upsert, volatile=volatile, unpinnable=unpinnable,
            generated_key=generated_key(tree, rules) if mutates else None,
        )  # fmt: skip
    if isinstance(tree, _READS):
        return StatementFacts(StatementKind.READ, names, tenants=tenants, volatile=volatile)
    return StatementFacts(StatementKind.DDL, names, tenants=tenants)  # SAVEPOINT, PRAGMA, …: not data
