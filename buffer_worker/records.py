"""Which record an intent writes, from the resource model (`data.rest.resources`). Pure: no I/O.

A resource names its collection (`list_path`), one record's path (`item_path`, by default
`<list_path>/{key}`), the field holding a record's id (`id_field`) and how a record with a given id is
created on a backend (`create`: `put` to the record's path, `post` to the collection with the id in the
body, or a method and path of its own). An intent writes a record when its path is a record path (PUT,
PATCH, DELETE, ...), or when it is a POST to the collection whose record is named by the authoritative
side's answer (a `Location` on the same service, or the answer's id field) or by the request body's id
field.

Paths listed in `worker.state_transfer` keep their meaning: a resource whose record path is listed there
has every write settled by state transfer, and a listed path that no resource describes is a record of
its own (created by `put`, as before resources existed).

Knowing the record is what lets the HTTP applier settle an intent in doubt: read the record on both sides
and set the mirror to the authoritative state. A write no resource describes can only be replayed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

import orjson

from buffer_worker.intent import Intent
from config.data import RestResource, path_key_pattern
from config.settings import Settings
from routing.phases import Side


@dataclass(frozen=True, slots=True)
class Record:
    """One record on a backend, as the applier reads and writes it."""

    resource: str  # the resource's name ("" for a bare `worker.state_transfer` path)
    key: str  # the id as it appears in the path (one percent-encoded segment)
    path: str  # the record's path
    id_field: str
    create: tuple[str, str]  # the method and path that create it with its id (a POST carries the id)
    state_transfer: bool  # every write to it is applied by state transfer, never replayed
    ignore_fields: tuple[str, ...] = ()  # differ by nature between the sides; not compared


@dataclass(frozen=True, slots=True)
class _Resource:
    settings: RestResource
    pattern: re.Pattern[str]  # the record path, with a `key` group
    prefix: str
    suffix: str
    state_transfer: bool

    def record(self, key: str) -> Record:
        return Record(
            resource=self.settings.name,
            key=key,
            path=self.prefix + key + self.suffix,
            id_field=self.settings.id_field,
            create=self.settings.create_call(key),
            state_transfer=self.state_transfer,
            ignore_fields=tuple(self.settings.ignore_fields),
        )


class RecordMap:
    """Maps intents to the records they write, for one set of settings."""

    def __init__(self, settings: Settings) -> None:
        listed = {_shape(path): path for path in settings.worker.state_transfer}
        self._resources: list[_Resource] = []
        for resource in settings.data.rest.resources:
            record_path = resource.record_path
            prefix, _, suffix = record_path.partition("{key}")
            self._resources.append(
                _Resource(
                    resource,
                    path_key_pattern(record_path),
                    prefix,
                    suffix,
                    state_transfer=listed.pop(_shape(record_path), None) is not None,
                )
            )
        # `worker.state_transfer` paths no resource describes: records of their own, as before.
        self._bare = [_segments(path) for path in listed.values()]
        self._base_paths = {
            side: urlsplit(getattr(settings.backends, side.value).url.get_secret_value()).path.rstrip("/")
            for side in Side
        }
        self._default_id_field = settings.worker.id_field

    def of(self, intent: Intent) -> Record | None:
        """The record `intent` writes; None when no resource describes it (it can only be replayed)."""
        path = intent.path
        for resource in self._resources:
            found = resource.pattern.match(path)
            if found:
                return resource.record(found["key"])
        for resource in self._resources:
            if intent.method == "POST" and path.rstrip("/") == resource.settings.collection_path.rstrip("/"):
                key = self._created_key(intent, resource)
                return None if key is None else resource.record(key)
        if any(pattern.fullmatch(path) for pattern in self._bare):
            return Record("", path, path, self._default_id_field, ("PUT", path), state_transfer=True)
        return None

    def for_resolution(self, intent: Intent) -> Record | None:
        """The record an operator's resolution sets from the authoritative side: the mapped record, or for
        a write to a path no resource describes (other than a create), that path itself. None when the
        record cannot be named (a create no resource describes): it cannot be resolved by state transfer."""
        record = self.of(intent)
        if record is not None or intent.method == "POST":
            return record
        path = intent.path
        return Record("", path, path, self._default_id_field, ("PUT", path), state_transfer=True)

    def created_location(self, intent: Intent) -> str | None:
        """The path (as clients see it) of the record a create made, from the authoritative side's
        `Location`, when that names a resource on the same service; else None."""
        for name, value in intent.response_headers:
            if name.lower() == "location":
                location = urlsplit(value)
                # Only a location on the same service names the created resource. It is in the
                # authoritative backend's URL space: strip that backend's base path to get the path as
                # clients (and so the mirror's base URL) see it.
                if location.path.startswith("/") and not location.netloc:
                    base = self._base_paths[intent.target.other]
                    path = location.path
                    if base and (path == base or path.startswith(base + "/")):
                        path = path[len(base) :] or "/"
                    return path
        return None

    def _created_key(self, intent: Intent, resource: _Resource) -> str | None:
        if not 200 <= intent.status < 300:
            return None
        location = self.created_location(intent)
        if location is not None:
            found = resource.pattern.match(location)
            if found:
                return found["key"]
        for document in (intent.response_body, intent.body):
            value = json_field(document, resource.settings.id_field)
            if isinstance(value, str | int) and not isinstance(value, bool) and str(value):
                return quote(str(value), safe="")
        return None


def json_object(body: bytes) -> dict[str, object] | None:
    try:
        value = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def json_field(body: bytes, field: str) -> object | None:
    document = json_object(body)
    return None if document is None else document.get(field)


def _shape(path: str) -> str:
    """A path pattern with its placeholders' names dropped: `/items/{id}` and `/items/{key}` are one."""
    return re.sub(r"\{[^/{}]*\}", "{}", path)


def _segments(path: str) -> re.Pattern[str]:
    """`/items/{key}` → a regex where each `{…}` is one path segment."""
    parts = re.split(r"\{[^/{}]+\}", path)
    return re.compile("[^/]+".join(re.escape(part) for part in parts))
