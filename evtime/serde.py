"""Turning raw source records into (key, value, event time): decoders and extractors.

Pure functions, no I/O. Each extractor raises a specific error so the task can
give a dead letter its reason.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson

from evtime.errors import ConfigError, KeyExtractionError, SerdeError, TimestampError
from evtime.records import FetchedRecord, KeyObj
from evtime.time import MAX_TIMESTAMP, MIN_TIMESTAMP


class ValueFormat(enum.Enum):
    """How a source's value bytes are decoded."""

    JSON = "json"
    """orjson (the default)."""
    BYTES = "bytes"
    """Left as bytes."""
    TEXT = "text"
    """UTF-8 text."""


def decode_value(data: Any, fmt: ValueFormat) -> Any:
    """Decode ``data`` (bytes, or an already decoded object) in format ``fmt``."""
    if not isinstance(data, bytes | bytearray | memoryview):
        return data
    try:
        if fmt is ValueFormat.JSON:
            return orjson.loads(data)
        if fmt is ValueFormat.TEXT:
            return bytes(data).decode()
    except (orjson.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SerdeError(f"value is not valid {fmt.value}: {exc}") from exc
    return bytes(data)


KeySpec = str | Callable[[Any], KeyObj] | None
"""A value field name, a function of the value, or None for the source record's key."""

TimestampSpec = str | Callable[[Any], Any] | None
"""A value field name, a function of the value, or None for the source record's timestamp."""


def key_getter(spec: KeySpec) -> Callable[[Any, FetchedRecord], KeyObj]:
    """Build the key extractor for ``spec``."""
    if spec is None:
        return _record_key
    if isinstance(spec, str):
        field = spec

        def by_field(value: Any, raw: FetchedRecord) -> KeyObj:
            try:
                return _as_key(value[field])
            except (KeyError, TypeError, IndexError) as exc:
                raise KeyExtractionError(f"key field {field!r} is missing from the value") from exc

        return by_field
    if callable(spec):
        fn = spec

        def by_function(value: Any, raw: FetchedRecord) -> KeyObj:
            return _as_key(fn(value))

        return by_function
    raise ConfigError(f"key must be a field name, a function or None, not {spec!r}")


def _record_key(value: Any, raw: FetchedRecord) -> KeyObj:
    key = raw.key
    if isinstance(key, bytes | bytearray):
        try:
            return bytes(key).decode()
        except UnicodeDecodeError:
            return bytes(key)
    return _as_key(key)


def _as_key(key: Any) -> KeyObj:
    if key is None or isinstance(key, str | bytes):
        return key
    if isinstance(key, int) and not isinstance(key, bool):
        return key
    if isinstance(key, float | bool):
        return str(key)
    raise KeyExtractionError(
        f"key {key!r} has type {type(key).__name__}; keys must be str, bytes or int: "
        "give the source a key= function that returns one"
    )


def timestamp_getter(spec: TimestampSpec) -> Callable[[Any, FetchedRecord], int]:
    """Build the event-time extractor for ``spec`` (result: int ms since the epoch)."""
    if spec is None:

        def by_record(value: Any, raw: FetchedRecord) -> int:
            if raw.timestamp is None:
                raise TimestampError(
                    "the record has no timestamp; declare timestamp= (a field or function)"
                )
            return raw.timestamp

        return by_record
    if isinstance(spec, str):
        field = spec

        def by_field(value: Any, raw: FetchedRecord) -> int:
            try:
                ts = value[field]
            except (KeyError, TypeError, IndexError) as exc:
                raise TimestampError(f"timestamp field {field!r} is missing") from exc
            return ts if type(ts) is int else coerce_timestamp(ts, field)

        return by_field
    if callable(spec):
        fn = spec

        def by_function(value: Any, raw: FetchedRecord) -> int:
            ts = fn(value)
            return ts if type(ts) is int else coerce_timestamp(ts, "timestamp function")

        return by_function
    raise ConfigError(f"timestamp must be a field name, a function or None, not {spec!r}")


def coerce_timestamp(ts: Any, what: str = "timestamp") -> int:
    """Accept int/float milliseconds, a datetime, or an ISO-8601 string; else TimestampError."""
    if isinstance(ts, bool) or ts is None:
        raise TimestampError(f"{what} is {ts!r}, not a timestamp")
    if isinstance(ts, int):
        result = ts
    elif isinstance(ts, float):
        if ts != ts or ts in (float("inf"), float("-inf")):
            raise TimestampError(f"{what} is {ts!r}, not a timestamp")
        result = int(ts)
    elif isinstance(ts, datetime):
        result = _datetime_ms(ts)
    elif isinstance(ts, str):
        try:
            result = _datetime_ms(datetime.fromisoformat(ts.replace("Z", "+00:00")))
        except ValueError as exc:
            raise TimestampError(
                f"{what} {ts!r} is not ISO-8601 nor epoch milliseconds"
            ) from exc
    else:
        raise TimestampError(f"{what} has type {type(ts).__name__}; expected epoch milliseconds")
    if not MIN_TIMESTAMP < result < MAX_TIMESTAMP:
        raise TimestampError(f"{what} {ts!r} is out of range")
    return result


def _datetime_ms(dt: datetime) -> int:
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)
