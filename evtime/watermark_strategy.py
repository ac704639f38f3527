"""How a source's watermarks are made (the declaration): Flink's ``WatermarkStrategy``.

Pure values; :class:`~evtime.watermarks.WatermarkTracker` applies them at run time.
"""

from __future__ import annotations

from dataclasses import dataclass

from evtime.errors import ConfigError
from evtime.time import Duration, format_millis, to_millis


def is_late(ts: int, watermark: int) -> bool:
    """Whether a record with event time ``ts`` is late for ``watermark``.

    A watermark ``W`` promises that no record with ``ts <= W`` follows, so such a
    record is late (Flink's rule). Windows add their own allowed lateness on top.

    >>> is_late(99, 99), is_late(100, 99)
    (True, False)
    """
    return ts <= watermark


@dataclass(frozen=True, slots=True)
class WatermarkStrategy:
    """How a source's watermarks are generated (Flink's ``WatermarkStrategy``).

    ``max_out_of_orderness`` is how far (ms) behind the largest timestamp seen a
    record may still arrive on time; ``idle_timeout`` (ms) is how long a
    partition may go without records before it stops holding the watermark back
    (``None``: never).

    ``advance_when_idle`` (needs ``idle_timeout``) is for live data whose event
    time follows the wall clock: a partition that is idle *and* read to its end
    (the consumer has everything it holds) then advances its watermark with the
    wall clock, to ``now - max_out_of_orderness - 1``, so windows and unmatched
    join rows still close when a partition goes quiet. While the consumer is
    behind (a backlog, a replay) the clock moves nothing, so a replay gives the
    live run's results. A record that arrives after the clock passed its time is
    late, like any late record.

    >>> WatermarkStrategy.bounded("5s", idle_timeout="1m")
    WatermarkStrategy(max_out_of_orderness=5000, idle_timeout=60000, advance_when_idle=False)
    >>> WatermarkStrategy.for_monotonous().max_out_of_orderness
    0
    >>> WatermarkStrategy.bounded("10s").with_idleness("30s").idle_timeout
    30000
    """

    max_out_of_orderness: int = 0
    idle_timeout: int | None = None
    advance_when_idle: bool = False

    def __post_init__(self) -> None:
        # The fields are ints in ms; validate them as such so a direct
        # construction cannot bypass what bounded() checks.
        to_millis(self.max_out_of_orderness, name="max_out_of_orderness")
        if not isinstance(self.max_out_of_orderness, int):
            raise ConfigError(
                f"invalid max_out_of_orderness {self.max_out_of_orderness!r}: the field holds "
                "int milliseconds; use WatermarkStrategy.bounded('5s') to pass a duration"
            )
        if self.idle_timeout is not None:
            to_millis(self.idle_timeout, name="idle_timeout", allow_zero=False)
            if not isinstance(self.idle_timeout, int):
                raise ConfigError(
                    f"invalid idle_timeout {self.idle_timeout!r}: the field holds int "
                    "milliseconds; use WatermarkStrategy.bounded(idle_timeout='1m')"
                )
        if self.advance_when_idle and self.idle_timeout is None:
            raise ConfigError(
                "advance_when_idle=True needs idle_timeout: the watermark follows the clock "
                "only after a partition has been quiet that long (e.g. idle_timeout='30s')"
            )

    @classmethod
    def bounded(
        cls,
        max_out_of_orderness: Duration = 0,
        idle_timeout: Duration | None = None,
        advance_when_idle: bool = False,
    ) -> WatermarkStrategy:
        """Watermarks that trail the largest timestamp seen by ``max_out_of_orderness``."""
        return cls(
            to_millis(max_out_of_orderness, name="max_out_of_orderness"),
            None
            if idle_timeout is None
            else to_millis(idle_timeout, name="idle_timeout", allow_zero=False),
            advance_when_idle,
        )

    @classmethod
    def for_monotonous(cls, idle_timeout: Duration | None = None) -> WatermarkStrategy:
        """Watermarks for timestamps that never decrease: ``bounded(0)``."""
        return cls.bounded(0, idle_timeout)

    def with_idleness(self, idle_timeout: Duration) -> WatermarkStrategy:
        """The same strategy with partitions going idle after ``idle_timeout``."""
        return WatermarkStrategy.bounded(
            self.max_out_of_orderness, idle_timeout, self.advance_when_idle
        )

    def __str__(self) -> str:
        idle = "never" if self.idle_timeout is None else format_millis(self.idle_timeout)
        return (
            f"bounded out-of-orderness {format_millis(self.max_out_of_orderness)}, "
            f"idle after {idle}"
            + (", then following the wall clock" if self.advance_when_idle else "")
        )
