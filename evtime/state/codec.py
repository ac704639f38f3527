"""Byte encodings of state keys and values.

Keys are encoded so that RocksDB's byte order is the natural order: integers
are stored big-endian with the sign bit flipped, so timers iterate in time
order. Values are orjson documents; an operator's own entry classes
(:class:`StateEntry`) are stored as JSON lists of their fields, so a slotted
entry encodes to the same bytes as the positional list it stands for.
"""

from __future__ import annotations

from typing import Any

import orjson

from evtime.errors import StateError

_INT_BIAS = 1 << 63

KeyObj = str | bytes | int | None
"""A record key as the engine sees it."""


def encode_int(value: int) -> bytes:
    """Eight bytes whose byte order is the integer order (int64 range)."""
    return (value + _INT_BIAS).to_bytes(8, "big")


def decode_int(data: bytes) -> int:
    """Inverse of :func:`encode_int`."""
    return int.from_bytes(data[:8], "big") - _INT_BIAS


def encode_key(key: KeyObj) -> bytes:
    """Tag a record key with its type so that it decodes back unchanged."""
    if isinstance(key, str):
        return b"s" + key.encode()
    if isinstance(key, bytes):
        return b"b" + key
    if key is None:
        return b"n"
    if isinstance(key, int) and not isinstance(key, bool):
        return b"i" + encode_int(key)
    raise StateError(
        f"unsupported record key type {type(key).__name__}: keys must be str, bytes, int "
        "or None; convert the key in the source's key= function"
    )


def decode_key(data: bytes) -> KeyObj:
    """Inverse of :func:`encode_key`."""
    tag = data[:1]
    if tag == b"s":
        return data[1:].decode()
    if tag == b"b":
        return bytes(data[1:])
    if tag == b"n":
        return None
    if tag == b"i":
        return decode_int(data[1:9])
    raise StateError(f"corrupt state key {data[:16]!r}: unknown type tag; the state dir is damaged")


class StateEntry:
    """Base of the slotted classes operators keep in a store (a session, a key's join
    rows): :func:`dumps` writes one as the JSON list :meth:`to_state` returns, and the
    operator rebuilds it from that list when it reads the key from RocksDB."""

    __slots__ = ()

    def to_state(self) -> list[Any]:
        """The stored form: the fields as a list, in their stored order."""
        raise NotImplementedError  # pragma: no cover - every entry class defines it


def _entry_state(value: Any) -> list[Any]:
    if isinstance(value, StateEntry):
        return value.to_state()
    raise TypeError(f"Type is not JSON serializable: {type(value).__name__}")


def dumps(value: Any) -> bytes:
    """Encode a state value (an accumulator, a user value, entries) as JSON bytes."""
    try:
        return orjson.dumps(value, default=_entry_state, option=orjson.OPT_NON_STR_KEYS)
    except TypeError as exc:
        raise StateError(
            f"state value of type {type(value).__name__} cannot be stored: {exc}; "
            "keep state JSON-like (dict, list, str, int, float, bool, None)"
        ) from exc


def loads(data: bytes) -> Any:
    """Decode a state value written by :func:`dumps`."""
    return orjson.loads(data)
