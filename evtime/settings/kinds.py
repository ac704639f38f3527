"""Kinds of option values: how a given value is checked (a ValueError saying what is wrong)
and how a value is shown to people."""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from evtime.errors import ConfigError
from evtime.records import Guarantee
from evtime.time import format_millis, to_millis


class LogFormat(enum.Enum):
    """How log lines are written."""

    TEXT = "text"
    JSON = "json"


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


@dataclass(frozen=True, slots=True)
class Kind:
    """A type of option: its name in the docs, how a given value is checked, how it is shown."""

    name: str
    parse: Callable[[Any], Any]
    show: Callable[[Any], str] = str


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("is not text")
    return value


def _port(lowest: int) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        text = str(value).strip()
        if isinstance(value, bool) or not text.isdigit() or not lowest <= int(text) <= 65535:
            raise ValueError(f"is not a TCP port; give a number in {lowest}..65535")
        return int(text)

    return parse


def _duration(value: Any) -> int:
    try:
        return to_millis(value, allow_zero=False)
    except ConfigError:
        raise ValueError("is not a duration; give e.g. 1s, 500ms") from None


def _seconds(allow_inf: bool) -> Callable[[Any], float]:
    def parse(value: Any) -> float:
        try:
            seconds = float(value)
        except (TypeError, ValueError):
            seconds = math.nan
        if isinstance(value, bool) or not seconds > 0 or (math.isinf(seconds) and not allow_inf):
            hint = "a positive number of seconds" + (", or inf" if allow_inf else "")
            raise ValueError(f"is not {hint}")
        return seconds

    return parse


def _positive_int(value: Any) -> int:
    text = str(value).strip()
    if isinstance(value, bool) or not text.isdigit() or int(text) <= 0:
        raise ValueError("is not a positive whole number")
    return int(text)


def _choice(enum_type: type[enum.Enum]) -> Callable[[Any], Any]:
    def parse(value: Any) -> Any:
        if isinstance(value, enum_type):
            return value
        try:
            return enum_type(str(value).strip().lower())
        except ValueError:
            allowed = ", ".join(str(member.value) for member in enum_type)
            raise ValueError(f"is not one of {allowed}") from None

    return parse


def _one_of(*choices: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        text = str(value).strip().upper()
        if text not in choices:
            raise ValueError(f"is not one of {', '.join(choices)}")
        return text

    return parse


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text not in ("true", "false", "1", "0", "yes", "no"):
        raise ValueError("is not true or false")
    return text in ("true", "1", "yes")


def _log_level(value: Any) -> str:
    level = str(value).strip().upper()
    if level not in LOG_LEVELS:
        raise ValueError(f"is not a log level; give one of {', '.join(LOG_LEVELS)}")
    return level


def _heap(value: Any) -> str:
    text = str(value).strip()
    if not re.fullmatch(r"\d+[kmgKMG]?", text):
        raise ValueError("is not a JVM heap size; give e.g. 512m or 1g")
    return text


_SIZE_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def _size(value: Any) -> int:
    """A number of bytes: a whole number, or one followed by KB, MB, GB or TB (powers of
    1024; ``256MB``, ``1g``, ``512MiB``)."""
    text = "" if isinstance(value, bool) else str(value).strip().upper()
    match = re.fullmatch(r"(\d+)\s*(?:([KMGT])(?:I?B)?|B)?", text)
    if match is None or int(match[1]) <= 0:
        raise ValueError("is not a size; give e.g. 256MB or 1GB")
    return int(match[1]) * _SIZE_UNITS[match[2] or ""]


def _show_size(size: int) -> str:
    for unit in ("TB", "GB", "MB", "KB"):
        scale = _SIZE_UNITS[unit[0]]
        if size % scale == 0:
            return f"{size // scale}{unit}"
    return str(size)


def _show_url(url: str) -> str:
    """``url`` with the password of its user part masked."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:****@{host}"))


TEXT = Kind("text", _text)
URL = Kind("URL", _text, _show_url)
PATH = Kind("path", lambda value: Path(value).expanduser())
PORT = Kind("port", _port(1))
PORT_OR_ZERO = Kind("port (0: any free one)", _port(0))
DURATION = Kind("duration", _duration, format_millis)
SECONDS = Kind("seconds", _seconds(allow_inf=False), lambda value: f"{value:g}")
SECONDS_OR_INF = Kind("seconds or inf", _seconds(allow_inf=True), lambda value: f"{value:g}")
MILLISECONDS = Kind("milliseconds", _positive_int)
GUARANTEE = Kind("at_least_once | exactly_once", _choice(Guarantee), lambda g: g.value)
LOG_LEVEL = Kind(" | ".join(LOG_LEVELS), _log_level)
LOG_FORMAT = Kind("text | json", _choice(LogFormat), lambda f: f.value)
HEAP = Kind("JVM heap size", _heap)
SIZE = Kind("size (256MB, 1GB)", _size, _show_size)
BOOL = Kind("true | false", _bool, lambda value: str(value).lower())
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER")
SECURITY_PROTOCOL = Kind(" | ".join(SECURITY_PROTOCOLS), _one_of(*SECURITY_PROTOCOLS))
SASL_MECHANISM = Kind(" | ".join(SASL_MECHANISMS), _one_of(*SASL_MECHANISMS))
FILE = Kind("file", _text)
