"""Datastream-format change records: the one parser and writer of the landing format.

A change record is one JSON object per line (see docs/data-model.md). Delivery is at-least-once,
so a change's identity is its source object plus its sort keys (source timestamp and log
position), not its `uuid`, which a re-read assigns afresh.
"""

from __future__ import annotations

import json
import uuid as uuid_lib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

ChangeType = Literal["INSERT", "UPDATE-INSERT", "UPDATE-DELETE", "DELETE"]
CHANGE_TYPES: frozenset[str] = frozenset({"INSERT", "UPDATE-INSERT", "UPDATE-DELETE", "DELETE", "UPDATE"})
ColumnType = Literal["str", "int", "ts"]

DATABASE = "newsapp"


@dataclass(frozen=True)
class SourceTable:
    """Schema of one table that the change stream covers."""

    name: str
    primary_keys: tuple[str, ...]
    columns: dict[str, ColumnType]
    nullable: frozenset[str] = frozenset()

    @property
    def object_name(self) -> str:
        return f"{DATABASE}_{self.name}"


SOURCE_TABLES: dict[str, SourceTable] = {
    table.name: table
    for table in (
        SourceTable(
            name="articles",
            primary_keys=("article_id",),
            columns={
                "article_id": "str",
                "title": "str",
                "body": "str",
                "category": "str",
                "subcategory": "str",
                "status": "str",
                "published_at": "ts",
                "updated_at": "ts",
                "url": "str",
            },
            nullable=frozenset({"url"}),  # where the article lives on the web, if the source has it
        ),
        SourceTable(
            name="user_article_views",
            primary_keys=("user_id", "article_id"),
            columns={
                "user_id": "str",
                "article_id": "str",
                "view_count": "int",
                "first_viewed_at": "ts",
                "last_viewed_at": "ts",
                "last_impression_id": "str",
            },
            nullable=frozenset({"last_impression_id"}),
        ),
        SourceTable(
            name="impressions",
            primary_keys=("impression_id", "position"),
            columns={
                "impression_id": "str",
                "user_id": "str",
                "article_id": "str",
                "position": "int",
                "shown_at": "ts",
            },
        ),
    )
}


class MalformedChangeRecord(ValueError):
    """A landing line that cannot be stored as a change; the message is the quarantine reason."""


def format_ts(moment: datetime) -> str:
    """ISO 8601 UTC with milliseconds and `Z`, the landing format's timestamp."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_ts(text: Any) -> datetime:
    """Parse a landing timestamp into an aware UTC datetime; raises ValueError if it is not one."""
    if not isinstance(text, str):
        raise ValueError(f"expected an ISO 8601 timestamp string, got {type(text).__name__}")
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(f"timestamp {text!r} has no time zone")
    return moment.astimezone(UTC)


@dataclass(frozen=True)
class ChangeRecord:
    """One change of one row, as Datastream delivers it."""

    table: str
    change_type: str
    payload: dict[str, Any]
    source_timestamp: datetime
    read_timestamp: datetime
    log_file: str | None = None
    log_position: int | None = None
    lsn: str | None = None
    uuid: str = field(default_factory=lambda: str(uuid_lib.uuid4()))
    read_method: str = "mysql-cdc-binlog"
    stream_name: str = "newsapp-stream"

    @property
    def is_deleted(self) -> bool:
        return self.change_type == "DELETE"

    @property
    def object_name(self) -> str:
        return SOURCE_TABLES[self.table].object_name

    @property
    def sort_keys(self) -> list[Any]:
        position: list[Any] = [self.lsn] if self.lsn is not None else [self.log_file, self.log_position]
        return [format_ts(self.source_timestamp), *position]

    @property
    def change_key(self) -> str:
        return change_key(self.object_name, self.sort_keys, self.change_type)

    def to_json(self) -> dict[str, Any]:
        table = SOURCE_TABLES[self.table]
        source_metadata: dict[str, Any] = {
            "table": self.table,
            "database": DATABASE,
            "primary_keys": list(table.primary_keys),
            "change_type": self.change_type,
            "is_deleted": self.is_deleted,
        }
        if self.lsn is not None:
            source_metadata["lsn"] = self.lsn
        else:
            source_metadata["log_file"] = self.log_file
            source_metadata["log_position"] = self.log_position
        return {
            "uuid": self.uuid,
            "read_timestamp": format_ts(self.read_timestamp),
            "source_timestamp": format_ts(self.source_timestamp),
            "object": self.object_name,
            "read_method": self.read_method,
            "stream_name": self.stream_name,
            "schema_key": f"{self.object_name}-v1",
            "sort_keys": self.sort_keys,
            "source_metadata": source_metadata,
            "payload": {name: _payload_json_value(self.payload.get(name)) for name in table.columns},
        }

    def to_json_line(self) -> str:
        return json.dumps(self.to_json(), separators=(",", ":"), ensure_ascii=False)


def change_key(object_name: str, sort_keys: list[Any], change_type: str) -> str:
    """Identity of a change across re-deliveries: the object, its sort keys and its change type.

    The change type is part of it because MySQL sources emit an update's UPDATE-DELETE (row before)
    and UPDATE-INSERT (row after) at the same log position.
    """
    position = "|".join("" if key is None else str(key) for key in sort_keys)
    return f"{object_name}|{position}|{change_type}"


def _payload_json_value(value: Any) -> Any:
    return format_ts(value) if isinstance(value, datetime) else value


def _typed(table: SourceTable, name: str, value: Any) -> Any:
    if value is None:
        if name in table.nullable:
            return None
        raise MalformedChangeRecord(f"payload.{name} is null")
    kind = table.columns[name]
    if kind == "str":
        if not isinstance(value, str):
            raise MalformedChangeRecord(f"payload.{name} must be a string")
        return value
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise MalformedChangeRecord(f"payload.{name} must be an integer")
        return value
    try:
        return parse_ts(value)
    except ValueError as error:
        raise MalformedChangeRecord(f"payload.{name}: {error}") from error


def _require(mapping: dict[str, Any], key: str, where: str = "") -> Any:
    if key not in mapping:
        raise MalformedChangeRecord(f"missing field {where}{key}")
    return mapping[key]


def load_change_document(line: str | bytes) -> dict[str, Any]:
    """The JSON object of one landing line; raises MalformedChangeRecord if it is not one."""
    try:
        document = orjson.loads(line)
    except orjson.JSONDecodeError as error:
        raise MalformedChangeRecord(f"invalid JSON: {error}") from error
    if not isinstance(document, dict):
        raise MalformedChangeRecord("a change record must be a JSON object")
    return document


def parse_change_line(line: str | bytes) -> ChangeRecord:
    """Parse and validate one landing line; raises MalformedChangeRecord with the reason."""
    return parse_change_document(load_change_document(line))


def parse_change_document(document: dict[str, Any]) -> ChangeRecord:
    """Validate a landing line's JSON object into a change record."""
    metadata = _require(document, "source_metadata")
    payload = _require(document, "payload")
    if not isinstance(metadata, dict) or not isinstance(payload, dict):
        raise MalformedChangeRecord("source_metadata and payload must be JSON objects")

    table_name = _require(metadata, "table", "source_metadata.")
    table = SOURCE_TABLES.get(table_name)
    if table is None:
        raise MalformedChangeRecord(f"unknown source table {table_name!r}")
    change_type = _require(metadata, "change_type", "source_metadata.")
    if change_type not in CHANGE_TYPES:
        raise MalformedChangeRecord(f"unknown change_type {change_type!r}")
    if change_type == "UPDATE":  # PostgreSQL sources report the row after the update as UPDATE
        change_type = "UPDATE-INSERT"
    record_uuid = _require(document, "uuid")
    if not isinstance(record_uuid, str) or not record_uuid:
        raise MalformedChangeRecord("uuid must be a non-empty string")

    try:
        source_timestamp = parse_ts(_require(document, "source_timestamp"))
        read_timestamp = parse_ts(_require(document, "read_timestamp"))
    except ValueError as error:
        raise MalformedChangeRecord(str(error)) from error

    lsn = metadata.get("lsn")
    log_file = metadata.get("log_file")
    log_position = metadata.get("log_position")
    if lsn is None and (log_file is None or log_position is None):
        raise MalformedChangeRecord("source_metadata needs lsn or log_file and log_position")
    if log_position is not None and (isinstance(log_position, bool) or not isinstance(log_position, int)):
        raise MalformedChangeRecord("source_metadata.log_position must be an integer")

    typed_payload = {name: _typed(table, name, payload.get(name)) for name in table.columns}
    return ChangeRecord(
        table=table.name,
        change_type=change_type,
        payload=typed_payload,
        source_timestamp=source_timestamp,
        read_timestamp=read_timestamp,
        log_file=log_file,
        log_position=log_position,
        lsn=None if lsn is None else str(lsn),
        uuid=record_uuid,
        read_method=str(document.get("read_method", "")),
        stream_name=str(document.get("stream_name", "")),
    )
