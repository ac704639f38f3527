"""Outputs to their sinks: delivery, the flush a checkpoint awaits, and closing.

A plan's sinks are looked at once, when a runner is made (:class:`SinkRoutes`): which
outputs can be written inside a task's transaction (exactly-once) is known from then
on, so that delivering a batch asks no sink what it can do.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from evtime.errors import ConfigError
from evtime.io import (
    DeadLetterSink,
    Sink,
    TransactionalDeadLetterSink,
    TransactionalSink,
)
from evtime.plan import Plan
from evtime.records import DeadLetter, Output

log = logging.getLogger("evtime.sinks")


async def deliver(
    plan: Plan, outputs: dict[str, list[Output]], dead: Sequence[DeadLetter]
) -> None:
    """Hand outputs to their sinks and dead letters to the dead-letter sink."""
    for output_id, batch in outputs.items():
        sink: Sink | None = plan.sinks.get(output_id)
        if sink is None:
            raise ConfigError(f"no sink for output {output_id!r}")
        await sink.write(batch)
    if dead:
        dl: DeadLetterSink | None = plan.dead_letter
        if dl is None:
            for letter in dead:
                log.warning("dead letter (no dead-letter sink configured): %s", letter.to_dict())
        else:
            await dl.write_dead(dead)


def distinct_sinks(plan: Plan) -> list[Sink | DeadLetterSink]:
    """Every sink and the dead-letter sink, each once (a sink may serve several outputs)."""
    distinct: dict[int, Sink | DeadLetterSink] = {}
    for sink in [*plan.sinks.values(), plan.dead_letter]:
        if sink is not None:
            distinct.setdefault(id(sink), sink)
    return list(distinct.values())


async def close_sinks(plan: Plan) -> None:
    """Close every sink and the dead-letter sink once."""
    for sink in distinct_sinks(plan):
        await sink.close()


async def flush_all(plan: Plan) -> list[tuple[Sink | DeadLetterSink, float]]:
    """Flush every sink and the dead-letter sink, awaiting durability; each sink with the
    seconds its flush took."""
    took = []
    for sink in distinct_sinks(plan):
        began = time.perf_counter()
        await sink.flush()
        took.append((sink, time.perf_counter() - began))
    return took


class SinkRoutes:
    """Where each output of a plan goes, inside a task's transaction or not."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        # Sinks that write in a transaction (Kafka topics): their outputs commit with it.
        self.transactional: dict[str, TransactionalSink] = {
            output_id: sink
            for output_id, sink in plan.sinks.items()
            if isinstance(sink, TransactionalSink)
        }
        dl = plan.dead_letter
        self.transactional_dead: TransactionalDeadLetterSink | None = (
            dl if isinstance(dl, TransactionalDeadLetterSink) else None
        )

    async def write_in(
        self, producer: object, outputs: dict[str, list[Output]], dead: list[DeadLetter]
    ) -> None:
        """Exactly-once: Kafka sinks write inside the task's open transaction (``producer``),
        the others as usual."""
        transactional = self.transactional
        for output_id, batch in outputs.items():
            sink = transactional.get(output_id)
            if sink is not None:
                await sink.write_in(producer, batch)
            else:
                await self.plan.sinks[output_id].write(batch)
        dl = self.transactional_dead
        if dead and dl is not None:
            await dl.write_dead_in(producer, dead)
        elif dead:
            await deliver(self.plan, {}, dead)
