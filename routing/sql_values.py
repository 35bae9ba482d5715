"""Values in statements: literals and parameter references, the tenant a statement pins, and the key a
single-row write addresses.

Only equalities reachable through ANDs count (`WHERE a = 1 AND (tenant_id = $1 AND …)`): a condition under
OR or NOT pins nothing. An INSERT … VALUES pins what it writes into the tenant column, row by row.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from sqlglot import exp

MARKER = "_cvp"  # positional placeholder k becomes the named placeholder `:_cvp<k>` before parsing
MARKER_NAME = re.compile(rf"{MARKER}(\d+)")


@dataclass(frozen=True, slots=True)
class Param:
    """A reference to one request parameter: positional (0-based) or named."""

    index: int | None = None
    name: str | None = None

    def __str__(self) -> str:
        return f"${self.index + 1}" if self.index is not None else f":{self.name}"


Term = Param | str | int | float | bool | None  # a literal value, or a parameter reference


@dataclass(frozen=True, slots=True)
class Rules:
    """The schema knowledge classification uses."""

    tenant_column: str = "tenant_id"
    primary_keys: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # table → key columns
    default_key: tuple[str, ...] = ("id",)

    def key_of(self, table: str) -> tuple[str, ...]:
        return self.primary_keys.get(table, self.default_key)


def table_name(table: exp.Table) -> str:
    parts = [part.name for part in (table.args.get("catalog"), table.args.get("db"), table.this) if part]
    return ".".join(parts).lower()


# -- tenant and key values -------------------------------------------------------------------------------
class _NoTerm:
    pass


_NO_TERM = _NoTerm()


def term(node: exp.Expression | None) -> Term | _NoTerm:
    """The value of a literal or parameter node; `_NO_TERM` for anything computed."""
    if isinstance(node, exp.Cast | exp.Paren):
        return term(node.this)
    if isinstance(node, exp.Literal):
        if node.is_string:
            return str(node.this)
        try:
            return int(node.this)
        except ValueError:
            try:
                return float(node.this)
            except ValueError:
                return _NO_TERM
    if isinstance(node, exp.Neg):
        value = term(node.this)
        return -value if isinstance(value, int | float) and not isinstance(value, bool) else _NO_TERM
    if isinstance(node, exp.Boolean):
        return bool(node.this)
    if isinstance(node, exp.Null):
        return None
    if isinstance(node, exp.Placeholder):
        marker = MARKER_NAME.fullmatch(node.name) if node.name else None
        if marker is not None:
            return Param(index=int(marker.group(1)))
        return Param(name=node.name) if node.name else _NO_TERM
    if isinstance(node, exp.Parameter) and isinstance(node.this, exp.Literal) and not node.this.is_string:
        try:
            index = int(node.this.this) - 1
        except ValueError:
            return _NO_TERM
        return Param(index=index) if index >= 0 else _NO_TERM
    return _NO_TERM


def conjuncts(condition: exp.Expression) -> Iterator[exp.Expression]:
    """The operands of a chain of ANDs (a condition under OR or NOT pins nothing)."""
    if isinstance(condition, exp.And):
        yield from conjuncts(condition.this)
        yield from conjuncts(condition.expression)
    elif isinstance(condition, exp.Paren):
        yield from conjuncts(condition.this)
    else:
        yield condition


def _equalities(conditions: list[exp.Expression]) -> Iterator[tuple[str, Term]]:
    """(column name, value) for every `column = value` in the AND chains of `conditions`."""
    for condition in conditions:
        for part in conjuncts(condition):
            if not isinstance(part, exp.EQ):
                continue
            for column, value in ((part.this, part.expression), (part.expression, part.this)):
                if isinstance(column, exp.Column) and not isinstance(found := term(value), _NoTerm):
                    yield column.name.lower(), found
                    break


def tenant_pins(tree: exp.Expression, conditions: list[exp.Expression], column: str) -> Iterator[Term]:
    column = column.lower()
    for name, value in _equalities(conditions):
        if name == column:
            yield value
    for insert in tree.find_all(exp.Insert):
        yield from _inserted(insert, column)


def _inserted(insert: exp.Insert, column: str) -> Iterator[Term]:
    """The values an INSERT … VALUES gives `column`, one per row (rows computed by a query give none)."""
    schema, values = insert.this, insert.expression
    if not isinstance(schema, exp.Schema) or not isinstance(values, exp.Values):
        return
    columns = [ident.name.lower() for ident in schema.expressions]
    if column not in columns:
        return
    index = columns.index(column)
    for row in values.expressions:
        cells = row.expressions if isinstance(row, exp.Tuple) else []
        if index < len(cells) and not isinstance(found := term(cells[index]), _NoTerm):
            yield found


def single_row_key(tree: exp.Expression, rules: Rules) -> tuple[str | None, tuple[Term, ...] | None]:
    if isinstance(tree, exp.Insert):
        target = tree.this.this if isinstance(tree.this, exp.Schema) else tree.this
        if not isinstance(target, exp.Table) or not isinstance(tree.expression, exp.Values):
            return None, None
        if len(tree.expression.expressions) != 1:
            return table_name(target), None  # several rows: no single key
        table = table_name(target)
        per_column = {column: [value] for column in rules.key_of(table) for value in _inserted(tree, column)}
    elif isinstance(tree, exp.Update | exp.Delete) and isinstance(tree.this, exp.Table):
        table = table_name(tree.this)
        where = tree.args.get("where")
        per_column = {}
        if where is not None:
            for name, value in _equalities([where.this]):
                per_column.setdefault(name, []).append(value)
    else:
        return None, None
    key_columns = rules.key_of(table)
    if all(len(per_column.get(column, ())) == 1 for column in key_columns):
        return table, tuple(per_column[column][0] for column in key_columns)
    return table, None
