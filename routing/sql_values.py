"""Values in statements: literals and parameter references, the tenant a statement pins, and the key a
single-row write addresses.

Only equalities reachable through ANDs count (`WHERE a = 1 AND (tenant_id = $1 AND …)`): a condition under
OR or NOT pins nothing. An INSERT … VALUES pins what it writes into the tenant column, row by row.

Schemas name the tenant differently per table (`w_id`, `d_w_id`, `c_w_id`, …): a column pins the tenant
when it is a tenant column of the table it belongs to. A qualified column (`d.d_w_id`) belongs to the
table its qualifier names in the enclosing query (or an outer one, for a correlated subquery); an
unqualified one to one of the tables its query reads (SQL refuses an ambiguous name, so a tenant column
of any of them is that table's). A column of a derived table or CTE, whose table cannot be known, counts
when its name is one of the default tenant columns.
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
    """The schema knowledge classification uses (names in lower case)."""

    tenant_columns: tuple[str, ...] = ("tenant_id",)  # of every table not in `table_tenant_columns`
    table_tenant_columns: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # table → columns
    primary_keys: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # table → key columns
    default_key: tuple[str, ...] = ("id",)
    # Every name that is a tenant column of some table: most columns are ruled out by one set lookup.
    tenant_names: frozenset[str] = field(init=False, compare=False)

    def __post_init__(self) -> None:
        names = set(self.tenant_columns).union(*self.table_tenant_columns.values())
        object.__setattr__(self, "tenant_names", frozenset(names))

    def key_of(self, table: str) -> tuple[str, ...]:
        return self.primary_keys.get(table, self.default_key)

    def tenant_columns_of(self, table: str | None) -> tuple[str, ...]:
        """The tenant columns of `table` (None: a table that cannot be known, which gets the defaults)."""
        if table is None:
            return self.tenant_columns
        return self.table_tenant_columns.get(table, self.tenant_columns)


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


def _equalities(conditions: list[exp.Expression]) -> Iterator[tuple[exp.Column, Term]]:
    """(column, value) for every `column = value` in the AND chains of `conditions`."""
    for condition in conditions:
        for part in conjuncts(condition):
            if not isinstance(part, exp.EQ):
                continue
            for column, value in ((part.this, part.expression), (part.expression, part.this)):
                if isinstance(column, exp.Column) and not isinstance(found := term(value), _NoTerm):
                    yield column, found
                    break


def tenant_pins(
    tree: exp.Expression, conditions: list[exp.Expression], rules: Rules, ctes: frozenset[str] = frozenset()
) -> Iterator[Term]:
    """Every value the statement gives a tenant column (`ctes`: names that are not tables)."""
    for column, value in _equalities(conditions):
        name = column.name.lower()
        if name in rules.tenant_names and any(
            name in rules.tenant_columns_of(table) for table in _tables_of(column, ctes)
        ):
            yield value
    for insert in tree.find_all(exp.Insert):
        target = insert.this.this if isinstance(insert.this, exp.Schema) else insert.this
        table = _real_table(target, ctes) if isinstance(target, exp.Table) else None
        for name in rules.tenant_columns_of(table):
            yield from _inserted(insert, name)


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


# -- which table a column belongs to ---------------------------------------------------------------------
_SCOPES = (exp.Select, exp.Update, exp.Delete)


def _real_table(table: exp.Table, ctes: frozenset[str]) -> str | None:
    name = table_name(table)
    return None if name in ctes and not table.args.get("db") else name


def _sources(scope: exp.Expression, ctes: frozenset[str]) -> dict[str, str | None]:
    """Alias (or name) → table of what `scope` reads and writes; None for a derived table, CTE or
    function. Updated rows count: `UPDATE district SET d_ytd = 0 WHERE d_w_id = 1` pins through them."""
    found: list[exp.Expression] = []
    if isinstance(scope, exp.Update | exp.Delete) and isinstance(scope.this, exp.Table):
        found.append(scope.this)
        found.extend(join.this for join in scope.this.args.get("joins") or ())
    for key in ("from_", "using"):
        value = scope.args.get(key)
        if isinstance(value, exp.From):
            found.append(value.this)
        elif isinstance(value, list):
            found.extend(value)
    found.extend(join.this for join in scope.args.get("joins") or ())
    sources: dict[str, str | None] = {}
    for source in found:
        alias = source.alias_or_name.lower()
        if alias:
            sources[alias] = _real_table(source, ctes) if isinstance(source, exp.Table) else None
    return sources


def _tables_of(column: exp.Column, ctes: frozenset[str]) -> Iterator[str | None]:
    """The tables `column` may belong to (None: one that cannot be known)."""
    qualifier = column.table.lower()
    node = column.parent
    innermost: dict[str, str | None] | None = None
    while node is not None:
        if isinstance(node, _SCOPES):
            sources = _sources(node, ctes)
            if not qualifier:
                innermost = sources
                break
            if qualifier in sources:
                yield sources[qualifier]
                return
        node = node.parent
    if innermost:
        yield from innermost.values()
    else:
        yield None  # a qualifier no enclosing query names, or a query reading no table


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
            for column, value in _equalities([where.this]):
                per_column.setdefault(column.name.lower(), []).append(value)
    else:
        return None, None
    key_columns = rules.key_of(table)
    if all(len(per_column.get(column, ())) == 1 for column in key_columns):
        return table, tuple(per_column[column][0] for column in key_columns)
    return table, None


def generated_key(tree: exp.Expression, rules: Rules) -> tuple[str, str] | None:
    """(table, key column) of an INSERT that leaves a key column to the database (omitted, DEFAULT,
    NULL, DEFAULT VALUES), which would generate it on each side. An INSERT without a column list gives
    every column, so its key too."""
    for insert in tree.find_all(exp.Insert):
        target = insert.this.this if isinstance(insert.this, exp.Schema) else insert.this
        if not isinstance(target, exp.Table):
            continue
        table = table_name(target)
        keys = rules.key_of(table)
        if insert.args.get("default"):
            return table, keys[0]
        if not isinstance(insert.this, exp.Schema):
            continue
        columns = [ident.name.lower() for ident in insert.this.expressions]
        for key in keys:
            if key not in columns:
                return table, key
        if isinstance(insert.expression, exp.Values):
            indexes = [columns.index(key) for key in keys]
            for row in insert.expression.expressions:
                cells = row.expressions if isinstance(row, exp.Tuple) else []
                for key, index in zip(keys, indexes, strict=True):
                    cell = cells[index] if index < len(cells) else None
                    default = isinstance(cell, exp.Var) and cell.name.upper() == "DEFAULT"
                    if default or isinstance(cell, exp.Null):
                        return table, key
    return None
