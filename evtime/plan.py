"""The dataflow plan an :class:`~evtime.app.App` declares: sources, operators, outputs.

Pure data: the runtime turns a plan into partition tasks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evtime.errors import ConfigError
from evtime.io import DeadLetterSink, GroupSourceFactory, RepartitionSink, Sink
from evtime.operators.join import JoinSpec
from evtime.operators.process import ProcessSpec
from evtime.operators.repartition import RepartitionSpec
from evtime.operators.window import WindowSpec
from evtime.records import ErrorPolicy, Guarantee
from evtime.serde import KeySpec, TimestampSpec, ValueFormat
from evtime.watermarks import WatermarkStrategy


@dataclass(frozen=True, slots=True)
class SourceSpec:
    """A declared input: where records come from and how key and event time are read."""

    topic: str
    connector: Any
    key: KeySpec
    timestamp: TimestampSpec
    watermarks: WatermarkStrategy
    value_format: ValueFormat = ValueFormat.JSON
    origin: str | None = None
    """For the internal topic of a repartition: the source topic its records come from."""


OperatorSpec = WindowSpec | ProcessSpec | JoinSpec | RepartitionSpec


@dataclass(slots=True)
class Plan:
    """Everything an app declared."""

    app_name: str
    state_dir: Path
    checkpoint_interval: int
    policy: ErrorPolicy = ErrorPolicy.DEAD_LETTER
    batch_size: int = 2_000
    sources: dict[str, SourceSpec] = field(default_factory=dict)
    operators: list[OperatorSpec] = field(default_factory=list)
    sinks: dict[str, Sink] = field(default_factory=dict)
    repartition_sinks: dict[str, RepartitionSink] = field(default_factory=dict)
    """The sinks of :attr:`sinks` that are repartitions' internal topics, by output id."""
    dead_letter: DeadLetterSink | None = None
    guarantee: Guarantee = Guarantee.AT_LEAST_ONCE

    def group_source_factory(self) -> GroupSourceFactory:
        """The consumer-group sources' factory (Kafka), which the worker opens the group,
        the changelogs and the transactions with; ConfigError when a source is not one."""
        factories = []
        for spec in self.sources.values():
            if not isinstance(spec.connector, GroupSourceFactory):
                raise ConfigError(
                    f"source {spec.topic!r} is not a Kafka source; an app runs either on Kafka "
                    "or on local sources, not both"
                )
            factories.append(spec.connector)
        return factories[0]

    def groups(self) -> list[tuple[str, ...]]:
        """Topics that must be processed together (an operator reading several ties them).

        Every topic of a group must have the same partitions: partition ``p`` of
        each topic meets in task ``p``.
        """
        parent: dict[str, str] = {t: t for t in self.sources}

        def find(t: str) -> str:
            while parent[t] != t:
                parent[t] = parent[parent[t]]
                t = parent[t]
            return t

        for spec in self.operators:
            topics = operator_sources(spec)
            for other in topics[1:]:
                parent[find(other)] = find(topics[0])
        groups: dict[str, list[str]] = {}
        for t in self.sources:
            groups.setdefault(find(t), []).append(t)
        return [tuple(sorted(g)) for g in sorted(groups.values())]

    def operators_of(self, group: tuple[str, ...]) -> list[OperatorSpec]:
        """The operators whose inputs are in ``group``, in declaration order."""
        return [op for op in self.operators if operator_sources(op)[0] in group]

    def validate(self) -> None:
        """Raise ConfigError for a plan that cannot run."""
        if not self.operators:
            raise ConfigError(
                f"app {self.app_name!r} declares no operator; add one with @app.window or "
                "@app.process, or @app.join"
            )
        names = [op.name for op in self.operators]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError(
                f"operator names must be unique, {dupes} are declared twice; pass name=..."
            )
        repartitioned = {op.source: op for op in self.operators if isinstance(op, RepartitionSpec)}
        for op in self.operators:
            for topic in operator_sources(op):
                if topic in repartitioned and op is not repartitioned[topic]:
                    raise ConfigError(
                        f"operator {op.name!r} reads {topic!r}, which is repartitioned into "
                        f"{repartitioned[topic].topic!r}: read the source app.repartition "
                        "returned instead"
                    )
                if topic not in self.sources:
                    raise ConfigError(
                        f"operator {op.name!r} reads {topic!r}, which is not a declared source; "
                        "declare it with app.source(...)"
                    )


def operator_sources(spec: OperatorSpec) -> tuple[str, ...]:
    """The topics an operator reads (a join: both inputs' topics, once each)."""
    if isinstance(spec, JoinSpec):
        return spec.topics
    return (spec.source,)
