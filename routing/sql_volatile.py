"""Values the database would compute (time, random numbers, UUIDs): found in a statement, fixed once.

A mirrored write runs twice, on the authoritative side and later on the mirror. `now()` there would be
the time of the replay, `gen_random_uuid()` another UUID. So in phases that mirror writes the proxy
evaluates such calls itself, once, and both sides receive the same literals:

- time (`now()`, `CURRENT_TIMESTAMP`, `LOCALTIMESTAMP`, `CURRENT_DATE`, `CURRENT_TIME`, PostgreSQL's
  `clock_timestamp()` / `statement_timestamp()` / `transaction_timestamp()`, MySQL's `NOW()`,
  `SYSDATE()`, `UTC_TIMESTAMP()`, `CURDATE()`, `CURTIME()`, `UNIX_TIMESTAMP()`): one clock reading per
  request, each call cut to its precision (PostgreSQL's default is microseconds, MySQL's whole seconds);
- `random()` / `RAND()` and `gen_random_uuid()` / `uuid_generate_v4()` / `UUID()`: one value per call,
  where the call is evaluated once (a VALUES row, an UPDATE or DELETE of one row by its key, a SELECT
  without FROM). Evaluated once per row, one literal would give every row the same value: refused.

What depends on the database's own state cannot be fixed by the proxy (sequences, the last insert id,
the session's user or connection): a statement that changes rows with such a call is refused while
writes are mirrored (`Unpinnable`).

Each fixed call becomes a marker (`Placeholder(_cvv<k>)`) in a per-request copy of the tree: the cached
analysis is never changed. The rewrite for each side (`routing.sql_transpile`) replaces the markers by
`literal(pin, dialect)`, a literal that dialect reads back as the same value, assuming sessions in UTC
(PostgreSQL `TimeZone = 'UTC'`, MySQL `time_zone = '+00:00'`), where a timestamp without zone means UTC.
"""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum

from sqlglot import exp

PIN_MARKER = "_cvv"  # a fixed call k becomes the placeholder `_cvv<k>` until each side's literal replaces it


class PinKind(StrEnum):
    TIMESTAMP_TZ = "timestamp with time zone"  # PostgreSQL's now(): an instant
    TIMESTAMP = "timestamp"  # MySQL's NOW(), LOCALTIMESTAMP: the wall clock (UTC, by assumption)
    DATE = "date"
    TIME_TZ = "time with time zone"
    TIME = "time"
    EPOCH = "epoch seconds"
    RANDOM = "random"
    UUID = "uuid"  # PostgreSQL's uuid type
    UUID_TEXT = "uuid text"  # MySQL's UUID() returns its text


# A new value at every evaluation (time is the same for a whole statement).
_ONCE_PER_ROW = frozenset({PinKind.RANDOM, PinKind.UUID, PinKind.UUID_TEXT})


@dataclass(frozen=True, slots=True)
class Volatile:
    """A call the proxy can evaluate."""

    name: str
    kind: PinKind
    digits: int = 6  # fractional-second digits (time kinds)


@dataclass(frozen=True, slots=True)
class Unpinnable:
    """A call whose value the proxy cannot fix: the reason names why."""

    name: str
    reason: str


_STATE = "its value comes from the database's own state, which differs between the two sides"
_SESSION = "its value is the database session's, which differs between the two sides"
_UNPINNABLE: dict[str, str] = {
    **dict.fromkeys(("NEXTVAL", "SETVAL", "CURRVAL", "LASTVAL", "LAST_INSERT_ID", "UUID_SHORT"), _STATE),
    **dict.fromkeys(("TXID_CURRENT", "PG_CURRENT_XACT_ID", "ROW_COUNT", "FOUND_ROWS"), _STATE),
    **dict.fromkeys(("CONNECTION_ID", "PG_BACKEND_PID", "USER", "SYSTEM_USER", "INET_CLIENT_ADDR"), _SESSION),
    **dict.fromkeys(
        ("RANDOM_BYTES", "GEN_RANDOM_BYTES", "RANDOM_NORMAL", "SETSEED", "TIMEOFDAY", "UUID_GENERATE_V1"),
        "the proxy does not evaluate it",
    ),
    **dict.fromkeys(("UUID_GENERATE_V1MC", "UUIDV7", "UUID_GENERATE_V7"), "the proxy does not evaluate it"),
}
_UNPINNABLE_NODES: dict[type[exp.Expr], tuple[str, str]] = {
    exp.CurrentUser: ("CURRENT_USER", _SESSION),
    exp.SessionUser: ("SESSION_USER", _SESSION),
    exp.CurrentSchema: ("CURRENT_SCHEMA", _SESSION),
    exp.CurrentDatabase: ("CURRENT_DATABASE", _SESSION),
    exp.CurrentVersion: ("VERSION", _SESSION),
}
# Functions that advance a sequence: a SELECT of them is no plain read (it must reach the side whose
# sequence hands out keys, see `routing.sql_classify`).
SEQUENCE_CALLS = frozenset({"NEXTVAL", "SETVAL"})
_NAMED_TIME = {
    "NOW": PinKind.TIMESTAMP,  # PostgreSQL's now() parses as CURRENT_TIMESTAMP; this is MySQL's NOW()
    "SYSDATE": PinKind.TIMESTAMP,
    "CLOCK_TIMESTAMP": PinKind.TIMESTAMP_TZ,
    "STATEMENT_TIMESTAMP": PinKind.TIMESTAMP_TZ,
    "TRANSACTION_TIMESTAMP": PinKind.TIMESTAMP_TZ,
}
_NAMED_UUID = frozenset({"UUID_GENERATE_V4", "UUIDV4"})


def classify_call(node: exp.Expr, dialect: str) -> Volatile | Unpinnable | None:
    """What `node` is, if it is a call whose value the database computes at each run."""
    mysql = dialect == "mysql"
    if isinstance(node, exp.Anonymous):
        name = node.name.upper()
        if name in _NAMED_TIME:
            kind = _NAMED_TIME[name]
            digits = 0 if mysql else 6
            return _timed(name, kind, node.expressions[0] if node.expressions else None, digits)
        if name in _NAMED_UUID and not node.expressions:
            return Volatile(name, PinKind.UUID_TEXT if mysql else PinKind.UUID)
        if name == "UNIX_TIMESTAMP" and not node.expressions:
            return Volatile(name, PinKind.EPOCH)
        reason = _UNPINNABLE.get(name)
        return None if reason is None else Unpinnable(name, reason)
    if isinstance(node, exp.CurrentTimestamp | exp.UtcTimestamp | exp.Localtimestamp):
        zoned = isinstance(node, exp.CurrentTimestamp) and not mysql
        kind = PinKind.TIMESTAMP_TZ if zoned else PinKind.TIMESTAMP
        return _timed(_sql_name(node), kind, node.this, 0 if mysql else 6)
    if isinstance(node, exp.CurrentDate | exp.UtcDate):
        return Volatile(_sql_name(node), PinKind.DATE)
    if isinstance(node, exp.CurrentTime | exp.UtcTime | exp.Localtime):
        zoned = isinstance(node, exp.CurrentTime) and not mysql
        kind = PinKind.TIME_TZ if zoned else PinKind.TIME
        return _timed(_sql_name(node), kind, node.this, 0 if mysql else 6)
    if isinstance(node, exp.Rand):
        name = "RAND" if mysql else "RANDOM"
        if node.this is not None:
            return Unpinnable(name, "a seeded generator cannot be reproduced on the other side")
        return Volatile(name, PinKind.RANDOM)
    if isinstance(node, exp.Uuid):
        if mysql:
            return Volatile("UUID", PinKind.UUID_TEXT)
        return Volatile("GEN_RANDOM_UUID", PinKind.UUID)
    found = _UNPINNABLE_NODES.get(type(node))
    return None if found is None else Unpinnable(*found)


_SQL_NAMES: dict[type[exp.Expr], str] = {
    exp.CurrentTimestamp: "CURRENT_TIMESTAMP",
    exp.UtcTimestamp: "UTC_TIMESTAMP",
    exp.Localtimestamp: "LOCALTIMESTAMP",
    exp.CurrentDate: "CURRENT_DATE",
    exp.UtcDate: "UTC_DATE",
    exp.CurrentTime: "CURRENT_TIME",
    exp.UtcTime: "UTC_TIME",
    exp.Localtime: "LOCALTIME",
}


def _sql_name(node: exp.Expr) -> str:
    return _SQL_NAMES[type(node)]


def _timed(name: str, kind: PinKind, precision: object, default: int) -> Volatile | Unpinnable:
    if precision is None:
        return Volatile(name, kind, default)
    if isinstance(precision, exp.Literal) and not precision.is_string and precision.this.isdigit():
        return Volatile(name, kind, min(int(precision.this), 6))
    return Unpinnable(name, "its precision is not a constant")


def calls(tree: exp.Expr, dialect: str) -> Iterator[tuple[exp.Expr, Volatile | Unpinnable]]:
    for node in tree.walk():
        found = classify_call(node, dialect)
        if found is not None:
            yield node, found


def evaluated_per_row(node: exp.Expr, root: exp.Expr, single_row: bool) -> bool:
    """Whether `node` may be evaluated more than once by one run of the statement `root`. `single_row`:
    `root` is an UPDATE or DELETE of one row, by its whole key."""
    child, parent = node, node.parent
    while parent is not None:
        if isinstance(parent, exp.Select) and parent.args.get("from_") is not None:
            return True
        if isinstance(parent, exp.Update | exp.Delete):
            return not (single_row and parent is root)
        if isinstance(parent, exp.Merge):
            return True
        if isinstance(parent, exp.Insert) and isinstance(child, exp.OnConflict):
            rows = parent.expression
            return not isinstance(rows, exp.Values) or len(rows.expressions) != 1
        child, parent = parent, parent.parent
    return False


def refusal(tree: exp.Expression, dialect: str, single_row: bool) -> Unpinnable | None:
    """Why a statement that changes rows cannot be mirrored with the same values, if it cannot."""
    for node, call in calls(tree, dialect):
        if isinstance(call, Unpinnable):
            return call
        if call.kind in _ONCE_PER_ROW and evaluated_per_row(node, tree, single_row):
            reason = "it is evaluated once per row: one value for every row changes the meaning"
            return Unpinnable(call.name, reason)
    return None


# -- pinning, per request --------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Entropy:
    """Where pinned values come from: passed in, so that tests can fix them."""

    now: Callable[[], datetime.datetime]  # aware, any zone
    random: Callable[[], float]  # in [0, 1)
    uuid4: Callable[[], uuid.UUID]


@dataclass(frozen=True, slots=True)
class Pin:
    kind: PinKind
    value: datetime.datetime | float | int | uuid.UUID
    digits: int = 6


class Pinner:
    """Fixes the calls of one request: one clock reading for all of them, a value per random call."""

    def __init__(self, entropy: Entropy) -> None:
        self._entropy = entropy
        self._at: datetime.datetime | None = None
        self.pins: dict[str, Pin] = {}

    def pin(self, tree: exp.Expression, dialect: str, single_row: bool) -> exp.Expression:
        """A copy of `tree` with every call it can fix replaced by a marker (see `self.pins`). Calls
        evaluated per row are left alone: statements that change rows with them were refused before."""
        tree = tree.copy()
        for node, call in list(calls(tree, dialect)):
            if not isinstance(call, Volatile):
                continue
            if call.kind in _ONCE_PER_ROW and evaluated_per_row(node, tree, single_row):
                continue
            marker = f"{PIN_MARKER}{len(self.pins)}"
            self.pins[marker] = self._value(call)
            node.replace(exp.Placeholder(this=marker))
        return tree

    def _value(self, call: Volatile) -> Pin:
        if call.kind is PinKind.RANDOM:
            return Pin(call.kind, self._entropy.random())
        if call.kind in (PinKind.UUID, PinKind.UUID_TEXT):
            return Pin(call.kind, self._entropy.uuid4())
        if self._at is None:
            self._at = self._entropy.now().astimezone(datetime.UTC)
        if call.kind is PinKind.EPOCH:
            return Pin(call.kind, int(self._at.timestamp()))
        return Pin(call.kind, _truncated(self._at, call.digits), call.digits)


def _truncated(at: datetime.datetime, digits: int) -> datetime.datetime:
    step = 10 ** (6 - digits)
    return at.replace(microsecond=at.microsecond - at.microsecond % step)


# -- literals --------------------------------------------------------------------------------------------
def _clock(at: datetime.datetime, digits: int, with_date: bool, with_time: bool) -> str:
    fmt = " ".join(part for part, wanted in (("%Y-%m-%d", with_date), ("%H:%M:%S", with_time)) if wanted)
    text = at.strftime(fmt)
    if with_time and digits:
        text += f".{at.microsecond:06d}"[: digits + 1]
    return text


def _cast(text: str, to: str, dialect: str) -> exp.Expression:
    return exp.Cast(this=exp.Literal.string(text), to=exp.DataType.build(to, dialect=dialect))


def _precise(name: str, digits: int) -> str:
    return f"{name}({digits})" if digits else name


def literal(pin: Pin, dialect: str) -> exp.Expression:
    """`pin` as a literal `dialect` reads back as the same value (sessions in UTC)."""
    value, kind, mysql = pin.value, pin.kind, dialect == "mysql"
    if kind is PinKind.RANDOM:
        assert isinstance(value, float)
        shown = repr(value)
        if mysql:
            # An exponent makes it a DOUBLE literal in MySQL (a plain decimal would be DECIMAL).
            return exp.Literal.number(shown if "e" in shown else shown + "e0")
        return _cast(shown, "DOUBLE PRECISION", dialect)
    if kind in (PinKind.UUID, PinKind.UUID_TEXT):
        text = str(value)
        # MySQL has no uuid type; a plain string adapts to its context in PostgreSQL, as UUID()'s text.
        typed = kind is PinKind.UUID and not mysql
        return _cast(text, "UUID", dialect) if typed else exp.Literal.string(text)
    if kind is PinKind.EPOCH:
        return exp.Literal.number(str(value))
    assert isinstance(value, datetime.datetime)
    if kind is PinKind.DATE:
        return _cast(_clock(value, 0, True, False), "DATE", dialect)
    timed = kind in (PinKind.TIME, PinKind.TIME_TZ)
    text = _clock(value, pin.digits, not timed, True)
    if mysql:
        return _cast(text, _precise("TIME" if timed else "DATETIME", pin.digits), dialect)
    if kind is PinKind.TIMESTAMP_TZ:
        return _cast(text + "+00:00", "TIMESTAMPTZ", dialect)
    if kind is PinKind.TIME_TZ:
        return _cast(text + "+00:00", "TIMETZ", dialect)
    return _cast(text, _precise("TIME" if timed else "TIMESTAMP", pin.digits), dialect)


def place(tree: exp.Expression, pins: Mapping[str, Pin], dialect: str) -> None:
    """Replace the markers of `tree` by the literals of `dialect` (in place: `tree` is a copy)."""
    for node in list(tree.find_all(exp.Placeholder)):
        pin = pins.get(node.name)
        if pin is not None:
            node.replace(literal(pin, dialect))
