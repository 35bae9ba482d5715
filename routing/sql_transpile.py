"""Rewrite parsed statements from the old side's SQL dialect to the new side's, or refuse.

sqlglot generates *something* for almost any input, and with `unsupported_level=RAISE` it raises for what
it knows it cannot express. That is not enough to call a rewrite safe: it happily emits MySQL's
`ON DUPLICATE KEY UPDATE` or `UPDATE a JOIN b` into PostgreSQL text that PostgreSQL rejects (or, worse,
runs with another meaning). So on top of sqlglot's own check, constructs with no faithful equivalent are
refused here by name, a few with an exact equivalent are rewritten (INSERT IGNORE, ON DUPLICATE KEY
UPDATE when the table's primary key is configured), functions sqlglot does not know are refused (their
name may not exist on the other side), and the result must parse in the target dialect.

Parameters: PostgreSQL takes `$n`, numbered by the original positions, so the parameter list is sent
unchanged; `?` dialects take parameters in the order they appear in the *generated* text, which may
differ from the source (`LIMIT ?, ?` vs `LIMIT … OFFSET …`), so `param_order` says which original
parameter goes in each slot. `keep_style` writes positional parameters as the client did (`%s` stays
`%s`): what the proxy regenerates for the side that speaks the client's own dialect.

Values a mirrored write fixes once (`routing.sql_volatile`) arrive as markers in the tree; each becomes
the target dialect's literal here, after the dialect's rewrites.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import sqlglot.errors
from sqlglot import exp
from sqlglot.errors import ErrorLevel

from routing.sql_classify import MARKER, Param, Parsed, ParseResult, Rules, dialect_of, table_name, term
from routing.sql_errors import UntranspilableError
from routing.sql_volatile import Pin, place

_SLOT = "_cvq"
# A slot as each dialect writes a named placeholder: `:_cvq0` (MySQL), `%(_cvq0)s` (PostgreSQL).
_SLOT_PATTERN = re.compile(rf":{_SLOT}(\d+)\b|%\({_SLOT}(\d+)\)s")
_PLAIN_EXPLAIN = frozenset({"", "ANALYZE"})


@dataclass(frozen=True, slots=True)
class Transpiled:
    statements: tuple[str, ...]  # one text per statement, in the target dialect
    param_order: tuple[int, ...] | None  # original positional parameter of each slot; None: unchanged
    # Each statement on its own, numbered from its first parameter, with the original parameter of each
    # of its slots: what a client that runs statements one by one (asyncpg) needs.
    executable: tuple[tuple[str, tuple[int, ...]], ...] = ()

    @property
    def text(self) -> str:
        return ";\n".join(self.statements)


def transpile(
    parsed: ParseResult,
    source: str,
    target: str,
    rules: Rules,
    *,
    pins: Mapping[str, Pin] | None = None,
    keep_style: bool = False,
) -> Transpiled:
    """Raises `UntranspilableError` naming the first construct that cannot be carried over."""
    if parsed.names:
        raise _refuse(
            f"named parameters ({', '.join(sorted(parsed.names))}) cannot be carried to {target}",
            source,
            target,
        )
    # "$" numbers parameters by their original position; "?" and "%s" take them in generated order.
    style = "$" if target == "postgres" else "?"
    if keep_style and source == target and parsed.style is not None:
        style = parsed.style
    texts: list[str] = []
    order: list[int] = []
    executable: list[tuple[str, tuple[int, ...]]] = []
    for statement in parsed.statements:
        text, slots, alone = _statement(statement, source, target, rules, pins or {}, style)
        texts.append(text)
        order.extend(slots)
        executable.append(alone)
    keeps_order = style == "$"
    return Transpiled(tuple(texts), None if keeps_order else tuple(order), tuple(executable))


def _refuse(detail: str, source: str, target: str) -> UntranspilableError:
    return UntranspilableError(
        f"cannot transpile safely from {source} to {target}: {detail}", source=source, target=target
    )


def _statement(
    statement: Parsed, source: str, target: str, rules: Rules, pins: Mapping[str, Pin], style: str
) -> tuple[str, list[int], tuple[str, tuple[int, ...]]]:
    same = source == target  # only parameters are renumbered (for a client that runs statements one by one)
    if statement.tree is None:
        if same and MARKER not in statement.command:
            return statement.command, [], (statement.command, ())
        verb = statement.command.split(" ", 1)[0].upper() or "this"
        raise _refuse(f"{verb} statements are passed through unparsed and have no rewrite", source, target)
    if statement.replace and not same:
        raise _refuse("REPLACE deletes and re-inserts rows; it has no faithful equivalent", source, target)
    explain = (statement.explain or "").upper()
    if not same and statement.explain is not None and explain not in _PLAIN_EXPLAIN:
        raise _refuse(f"EXPLAIN options {statement.explain!r} differ between dialects", source, target)
    tree = statement.tree.copy()
    if same:
        pass
    elif target == "postgres":
        _to_postgres(tree, source, rules)
    elif target == "mysql":
        _to_mysql(tree, source)
    if pins:
        place(tree, pins, target)
    if not same:
        _refuse_unknown_functions(tree, source, target)
    used = sorted(
        {
            ref.index
            for node in tree.find_all(exp.Placeholder, exp.Parameter)
            if isinstance(ref := term(node), Param) and ref.index is not None
        }
    )
    local = None if style != "$" or used == list(range(len(used))) else tree.copy()
    _slots(tree, style)
    text = _generate(tree, statement, source, target)
    order: list[int] = []
    if style != "$":

        def slot(match: re.Match[str]) -> str:
            order.append(int(match.group(1) or match.group(2)))
            return style

        text = _SLOT_PATTERN.sub(slot, text)
        return text, order, (text, tuple(order))
    if local is None:
        return text, order, (text, tuple(used))
    _slots(local, style, renumber={index: n for n, index in enumerate(used)})
    return text, order, (_generate(local, statement, source, target), tuple(used))


def _generate(tree: exp.Expression, statement: Parsed, source: str, target: str) -> str:
    try:
        text = tree.sql(dialect=dialect_of(target), unsupported_level=ErrorLevel.RAISE)
    except sqlglot.errors.UnsupportedError as exc:
        raise _refuse(str(exc).strip(), source, target) from None
    except RecursionError:
        raise _refuse("the statement is nested too deeply", source, target) from None
    except Exception as exc:  # noqa: BLE001 - a generator failure means: no safe rewrite
        raise _refuse(f"the generator failed ({type(exc).__name__})", source, target) from None
    if statement.explain is not None:
        text = f"EXPLAIN {statement.explain} {text}" if statement.explain else f"EXPLAIN {text}"
    _check_parses(text, source, target)
    if statement.replace and text[:6].upper() == "INSERT":
        text = "REPLACE" + text[6:]  # parsed as the INSERT it resembles; only ever generated for MySQL
    return text


def _to_postgres(tree: exp.Expression, source: str, rules: Rules) -> None:
    for node in list(tree.walk()):
        if isinstance(node, exp.Insert):
            _upsert_to_postgres(node, source, rules)
        elif isinstance(node, exp.Update | exp.Delete):
            verb = "UPDATE" if isinstance(node, exp.Update) else "DELETE"
            if isinstance(node.this, exp.Table) and node.this.args.get("joins"):
                raise _refuse(f"{verb} with JOIN (rewrite it with FROM/USING)", source, "postgres")
            if node.args.get("tables"):
                raise _refuse("multi-table DELETE", source, "postgres")
            if node.args.get("limit") or node.args.get("order"):
                raise _refuse(f"{verb} with ORDER BY or LIMIT", source, "postgres")
        elif isinstance(node, exp.Select) and node.args.get("operation_modifiers"):
            modifiers = " ".join(m.sql() for m in node.args["operation_modifiers"])
            raise _refuse(f"SELECT modifier {modifiers}", source, "postgres")
        elif isinstance(node, exp.MatchAgainst):
            raise _refuse("MATCH … AGAINST full-text search", source, "postgres")


def _upsert_to_postgres(insert: exp.Insert, source: str, rules: Rules) -> None:
    conflict = insert.args.get("conflict")
    if insert.args.get("ignore"):
        if conflict is not None:
            raise _refuse("INSERT IGNORE with ON DUPLICATE KEY UPDATE", source, "postgres")
        insert.set("ignore", False)
        insert.set("conflict", exp.OnConflict(action=exp.var("DO NOTHING")))
        return
    if not isinstance(conflict, exp.OnConflict) or not conflict.args.get("duplicate"):
        return
    target = insert.this.this if isinstance(insert.this, exp.Schema) else insert.this
    table = table_name(target) if isinstance(target, exp.Table) else ""
    keys = rules.primary_keys.get(table)
    if not keys:
        raise _refuse(
            f"ON DUPLICATE KEY UPDATE on {table or 'this table'} needs its key columns in "
            "sql.primary_keys (PostgreSQL must name the conflict target)",
            source,
            "postgres",
        )
    if isinstance(insert.expression, exp.Values) and insert.expression.args.get("alias"):
        raise _refuse("INSERT … AS <row alias> ON DUPLICATE KEY UPDATE", source, "postgres")
    assignments = [assignment.copy() for assignment in conflict.expressions]
    for assignment in assignments:
        # A bare column on the right is the existing row in MySQL; PostgreSQL finds it ambiguous
        # between the table and EXCLUDED, so name the table.
        value = assignment.expression if isinstance(assignment, exp.EQ) else None
        for column in list(value.find_all(exp.Column)) if value is not None else ():
            if not column.table:
                column.set("table", exp.to_identifier(target.name))
        for call in list(assignment.find_all(exp.Anonymous)):
            if call.name.upper() == "VALUES" and len(call.expressions) == 1:
                # VALUES(col) is the row that was proposed for insertion: PostgreSQL's EXCLUDED.col.
                column = call.expressions[0]
                call.replace(exp.column(column.name, table="EXCLUDED"))
    insert.set(
        "conflict",
        exp.OnConflict(
            conflict_keys=[exp.column(key) for key in keys],
            action=exp.var("DO UPDATE"),
            expressions=assignments,
        ),
    )


def _to_mysql(tree: exp.Expression, source: str) -> None:
    for node in tree.walk():
        if isinstance(node, exp.Lock) and node.args.get("key"):
            # FOR NO KEY UPDATE / FOR KEY SHARE do not exist in MySQL; FOR UPDATE / FOR SHARE lock more.
            node.set("key", None)
        if isinstance(node, exp.Returning):
            raise _refuse("RETURNING", source, "mysql")
        if isinstance(node, exp.OnConflict) and not node.args.get("duplicate"):
            raise _refuse("INSERT … ON CONFLICT", source, "mysql")
        if isinstance(node, exp.Merge):
            raise _refuse("MERGE", source, "mysql")
        if isinstance(node, exp.Delete) and node.args.get("using"):
            raise _refuse("DELETE … USING", source, "mysql")


# Functions sqlglot does not model but which exist with the same meaning in MySQL and PostgreSQL.
_SHARED_FUNCTIONS = frozenset({"NOW"})


def _refuse_unknown_functions(tree: exp.Expression, source: str, target: str) -> None:
    for call in tree.find_all(exp.Anonymous):
        if call.name.upper() not in _SHARED_FUNCTIONS:
            raise _refuse(f"function {call.name}() is not known to the transpiler", source, target)


def _slots(tree: exp.Expression, style: str, renumber: dict[int, int] | None = None) -> None:
    """Replace every positional parameter by the target's own form (see the module docstring)."""
    for node in list(tree.find_all(exp.Placeholder, exp.Parameter)):
        found = term(node)
        if not isinstance(found, Param) or found.index is None:
            continue
        if style == "$":
            index = found.index if renumber is None else renumber[found.index]
            node.replace(exp.Parameter(this=exp.Literal.number(index + 1)))
        else:
            node.replace(exp.Placeholder(this=f"{_SLOT}{found.index}"))


def _check_parses(text: str, source: str, target: str) -> None:
    try:
        trees = dialect_of(target).parse(text)
    except Exception as exc:  # noqa: BLE001 - any failure to read it back: not safe
        detail = f"the rewritten statement does not parse as {target} ({type(exc).__name__})"
        raise _refuse(detail, source, target) from None
    if any(isinstance(tree, exp.Command) and str(tree.this).upper() != "EXPLAIN" for tree in trees):
        raise _refuse(f"the rewritten statement is not understood as {target}", source, target)
