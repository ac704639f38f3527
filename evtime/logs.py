"""Logs a person can read during an outage: one line when it begins, one when it ends.

A broker or a sink that goes away makes every client retry, each retry a log
line (aiokafka logs an ERROR per failed connection, evtime a WARNING per
backoff). :class:`Outage` turns that into one warning when the first attempt
fails and one when an attempt succeeds again, with the outage's duration and
the attempts in between; the attempts themselves go to DEBUG. Outages are
shared per target (``Outage.of("Kafka broker 127.0.0.1:9092")``), so several
clients waiting for one broker still give one pair of lines.

:class:`RepeatFilter`, installed by the CLI on its log handler for the
third-party loggers (aiokafka's), lets the first record of a kind through and
holds back its repeats for a while, saying how many it held back when the
next one passes.
"""

from __future__ import annotations

import logging
import time
from typing import ClassVar

log = logging.getLogger("evtime.outage")


class Outage:
    """The state of one target's outage (see the module doc)."""

    _open: ClassVar[dict[str, Outage]] = {}

    __slots__ = ("attempts", "began", "last_error", "target", "waiters")

    def __init__(self, target: str) -> None:
        self.target = target
        self.began = 0.0
        self.attempts = 0
        self.waiters = 0
        self.last_error = ""

    @classmethod
    def of(cls, target: str) -> Outage:
        """The shared outage record of ``target``."""
        outage = cls._open.get(target)
        if outage is None:
            outage = cls._open[target] = cls(target)
        return outage

    @property
    def ongoing(self) -> bool:
        return self.began > 0

    def failed(self, error: str, retrying: str = "") -> None:
        """An attempt failed; the first failure of an outage is logged as a warning."""
        self.attempts += 1
        self.last_error = error
        if not self.ongoing:
            self.began = time.monotonic()
            log.warning(
                "%s unreachable (%s)%s; retrying quietly, one line when it is back",
                self.target,
                error,
                f"; {retrying}" if retrying else "",
            )
        else:
            log.debug("%s still unreachable (%s), attempt %d", self.target, error, self.attempts)

    def recovered(self) -> None:
        """An attempt succeeded; after an outage, its end is logged with its duration."""
        if not self.ongoing:
            return
        took = time.monotonic() - self.began
        log.warning(
            "%s reachable again after %.1f s (%d failed attempts; the last: %s)",
            self.target,
            took,
            self.attempts,
            self.last_error,
        )
        self.began = 0.0
        self.attempts = 0


class RepeatFilter(logging.Filter):
    """Holds back repeats of a log record (same logger, level and message template)
    for ``hold_s`` seconds after one passed; the next one to pass says how many were
    held back."""

    def __init__(self, prefixes: tuple[str, ...] = ("aiokafka",), hold_s: float = 60.0) -> None:
        super().__init__()
        self.prefixes = prefixes
        self.hold_s = hold_s
        self._seen: dict[tuple[str, int, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING or not record.name.startswith(self.prefixes):
            return True
        key = (record.name, record.levelno, str(record.msg))
        now = time.monotonic()
        passed, held = self._seen.get(key, (0.0, 0))
        if passed and now - passed < self.hold_s:
            self._seen[key] = (passed, held + 1)
            return False
        self._seen[key] = (now, 0)
        if held:
            record.msg = f"{record.msg} (and {held} more like it in the last {self.hold_s:.0f} s)"
        return True
