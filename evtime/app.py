"""The decorator API: declare sources and operators, then run.

>>> from evtime import App, Tumbling, Sum
>>> from connectors.local import MemorySource, MemorySink
>>> app = App("orders", state_dir=getfixture("tmp_path"))
>>> orders = app.source("orders", MemorySource.of("orders", [
...     {"user": "ann", "amount": 3, "ts": 1_000},
...     {"user": "ann", "amount": 4, "ts": 9_000},
...     {"user": "bob", "amount": 5, "ts": 12_000},
... ]), key="user", timestamp="ts", max_out_of_orderness="5s")
>>> out = MemorySink()
>>> @app.window(orders, Tumbling("10s"), aggregate=Sum("amount"), sink=out)
... def totals(result):
...     return {"user": result.key, "start": result.start, "total": result.value}
>>> app.run()
>>> out.values
[{'user': 'ann', 'start': 0, 'total': 7}, {'user': 'bob', 'start': 10000, 'total': 5}]

An app does no I/O until :meth:`App.run`; it only builds a :class:`~evtime.plan.Plan`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from evtime.aggregates import Aggregate
from evtime.errors import ConfigError
from evtime.io import DeadLetterSink, Sink
from evtime.operators.process import ProcessContext, ProcessSpec, Timer
from evtime.operators.window import WindowSpec
from evtime.plan import Plan, SourceSpec
from evtime.records import ErrorPolicy, Guarantee, Record, WindowResult
from evtime.serde import KeySpec, TimestampSpec, ValueFormat
from evtime.time import Clock, Duration, to_millis
from evtime.watermarks import WatermarkStrategy
from evtime.windows import WindowAssigner

F = TypeVar("F", bound=Callable[..., Any])


class SourceRef:
    """A declared source, as passed to operator decorators."""

    def __init__(self, spec: SourceSpec) -> None:
        self.spec = spec

    @property
    def topic(self) -> str:
        return self.spec.topic

    def __repr__(self) -> str:
        return f"SourceRef({self.topic!r})"


class ProcessFunction:
    """A declared keyed process function; use ``@fn.on_timer`` to add its timer callback."""

    def __init__(self, app: App, spec: ProcessSpec) -> None:
        self._app = app
        self.spec = spec

    def __call__(self, record: Record, ctx: ProcessContext) -> Any:
        return self.spec.fn(record, ctx)

    def on_timer(
        self, fn: Callable[[Timer, ProcessContext], Any]
    ) -> Callable[[Timer, ProcessContext], Any]:
        """Register ``fn(timer, ctx)``, called when a timer of this function fires."""
        self._app._replace_operator(self.spec, _with_timer(self.spec, fn))
        self.spec = _with_timer(self.spec, fn)
        return fn


def _with_timer(spec: ProcessSpec, fn: Callable[[Timer, ProcessContext], Any]) -> ProcessSpec:
    return ProcessSpec(spec.name, spec.source, spec.fn, fn, spec.outputs)


class App:
    """An evtime application: sources, operators and sinks, run by :meth:`run`.

    ``state_dir`` holds one RocksDB database per partition task;
    ``checkpoint_interval`` is how often state and offsets are snapshotted
    together; ``on_error`` decides what a bad record does (dead-letter output
    by default, or ``ErrorPolicy.FAIL_FAST``); ``dead_letter`` is where bad and
    late records go (default: ``<state_dir>/<app>/dead-letters.jsonl``);
    ``processing`` is ``"at_least_once"`` (default) or ``"exactly_once"`` (Kafka
    transactions; applies when the app runs on Kafka).
    """

    def __init__(
        self,
        name: str,
        *,
        state_dir: str | Path = "./state",
        checkpoint_interval: Duration = "1s",
        on_error: ErrorPolicy | str = ErrorPolicy.DEAD_LETTER,
        dead_letter: DeadLetterSink | None = None,
        batch_size: int = 2_000,
        clock: Clock | None = None,
        processing: Guarantee | str = Guarantee.AT_LEAST_ONCE,
    ) -> None:
        if not name or "/" in name:
            raise ConfigError(f"app name {name!r} must be a non-empty name without '/'")
        if batch_size < 1:
            raise ConfigError("batch_size must be >= 1")
        try:
            policy = ErrorPolicy(on_error) if isinstance(on_error, str) else on_error
        except ValueError:
            raise ConfigError(
                f"on_error={on_error!r}: use 'dead_letter' or 'fail_fast'"
            ) from None
        try:
            guarantee = Guarantee(processing) if isinstance(processing, str) else processing
        except ValueError:
            raise ConfigError(
                f"processing={processing!r}: use 'at_least_once' or 'exactly_once'"
            ) from None
        self.name = name
        self.clock = clock
        self.plan = Plan(
            name,
            Path(state_dir),
            to_millis(checkpoint_interval, name="checkpoint_interval", allow_zero=False),
            policy,
            batch_size,
        )
        if dead_letter is None:
            from connectors.local import JsonLinesSink

            dead_letter = JsonLinesSink(Path(state_dir) / name / "dead-letters.jsonl")
        self.plan.dead_letter = dead_letter
        self.plan.guarantee = guarantee

    # -- declarations -------------------------------------------------------------
    def source(
        self,
        topic: str,
        connector: Any,
        *,
        key: KeySpec = None,
        timestamp: TimestampSpec = None,
        max_out_of_orderness: Duration = 0,
        idle_timeout: Duration | None = None,
        value_format: ValueFormat | str = ValueFormat.JSON,
    ) -> SourceRef:
        """Declare an input topic.

        ``key``: a value field, a function of the value, or None for the
        record's own key. ``timestamp``: a value field (epoch ms, or ISO-8601),
        a function, or None for the record's timestamp. ``max_out_of_orderness``
        bounds the disorder the watermark waits for; ``idle_timeout`` lets an
        idle partition stop holding the watermark back.
        """
        if topic in self.plan.sources:
            raise ConfigError(f"source {topic!r} is declared twice")
        try:
            fmt = ValueFormat(value_format) if isinstance(value_format, str) else value_format
        except ValueError:
            raise ConfigError(
                f"value_format={value_format!r}: use 'json', 'text' or 'bytes'"
            ) from None
        spec = SourceSpec(
            topic,
            connector,
            key,
            timestamp,
            WatermarkStrategy.bounded(max_out_of_orderness, idle_timeout),
            fmt,
        )
        self.plan.sources[topic] = spec
        return SourceRef(spec)

    def window(
        self,
        source: SourceRef | str,
        assigner: WindowAssigner,
        *,
        aggregate: Aggregate[Any, Any],
        sink: Sink | None = None,
        allowed_lateness: Duration = 0,
        late: Sink | None = None,
        early_every: int | None = None,
        early_interval: Duration | None = None,
        name: str | None = None,
    ) -> Callable[[F], F]:
        """Declare a keyed window aggregation; decorate the function that shapes each result.

        The decorated ``fn(result: WindowResult)`` returns the value sent to
        ``sink`` (or None to send nothing). Results are emitted when the
        watermark passes the window's end; with ``allowed_lateness`` a late
        record re-emits its window as an update; later records go to ``late``
        (or the dead-letter output). ``early_every`` / ``early_interval`` emit
        provisional results every N records / every interval of wall-clock time.
        """
        topic = self._topic(source)

        def register(fn: F | None) -> F:
            op_name = name or (fn.__name__ if fn is not None else None)
            if not op_name:
                raise ConfigError("give the window a name= or decorate a named function")
            output_id = f"{op_name}/main"
            late_id = f"{op_name}/late" if late is not None else None
            spec = WindowSpec(
                op_name,
                topic,
                assigner,
                aggregate,
                to_millis(allowed_lateness, name="allowed_lateness"),
                early_every,
                None
                if early_interval is None
                else to_millis(early_interval, name="early_interval", allow_zero=False),
                _result_fn(fn),
                output_id,
                late_id,
            )
            self._add(spec)
            self.plan.sinks[output_id] = sink if sink is not None else _stdout()
            if late is not None and late_id is not None:
                self.plan.sinks[late_id] = late
            return fn  # type: ignore[return-value]

        return register

    def process(
        self,
        source: SourceRef | str,
        *,
        sink: Sink | Mapping[str, Sink] | None = None,
        name: str | None = None,
    ) -> Callable[[Callable[[Record, ProcessContext], Any]], ProcessFunction]:
        """Declare a keyed process function ``fn(record, ctx)``.

        ``sink`` is one sink (output "main") or a mapping of output names to
        sinks, addressed by ``ctx.emit(value, to=name)``.
        """
        topic = self._topic(source)

        def register(fn: Callable[[Record, ProcessContext], Any]) -> ProcessFunction:
            op_name = name or fn.__name__
            sinks: Mapping[str, Sink]
            if sink is None:
                sinks = {"main": _stdout()}
            elif isinstance(sink, Mapping):
                sinks = sink
            else:
                sinks = {"main": sink}
            outputs = tuple((out, f"{op_name}/{out}") for out in sinks)
            spec = ProcessSpec(op_name, topic, fn, None, outputs)
            self._add(spec)
            for out, out_id in outputs:
                self.plan.sinks[out_id] = sinks[out]
            return ProcessFunction(self, spec)

        return register

    def _topic(self, source: SourceRef | str) -> str:
        topic = source.topic if isinstance(source, SourceRef) else source
        if topic not in self.plan.sources:
            raise ConfigError(
                f"{topic!r} is not a declared source; declare it first with app.source(...)"
            )
        return topic

    def _add(self, spec: WindowSpec | ProcessSpec) -> None:
        if any(op.name == spec.name for op in self.plan.operators):
            raise ConfigError(f"an operator named {spec.name!r} exists; pass name=...")
        self.plan.operators.append(spec)

    def _replace_operator(self, old: ProcessSpec, new: ProcessSpec) -> None:
        ops = self.plan.operators
        ops[ops.index(old)] = new

    # -- running --------------------------------------------------------------------
    def runner(self) -> Any:
        """A :class:`~evtime.runtime.local.LocalRunner` for stepping the app (tests, notebooks)."""
        from evtime.runtime.local import LocalRunner

        return LocalRunner(self.plan, clock=self.clock)

    def worker(self, **options: Any) -> Any:
        """A :class:`~evtime.runtime.worker.Worker` running the app on its Kafka topics."""
        from evtime.runtime.worker import Worker

        return Worker(self.plan, clock=self.clock, **options)

    @property
    def on_kafka(self) -> bool:
        """Whether the app's sources are consumer-group (Kafka) sources."""
        from evtime.io import GroupSourceFactory

        return any(isinstance(s.connector, GroupSourceFactory) for s in self.plan.sources.values())

    async def run_async(self) -> None:
        """Run: on Kafka until stopped (SIGTERM / SIGINT); on local sources until every
        bounded source is exhausted. Either way the last act is a checkpoint."""
        if self.on_kafka:
            await self.worker().run()
        else:
            await self.runner().run()

    def run(self) -> None:
        """Blocking :meth:`run_async`."""
        asyncio.run(self.run_async())


def _result_fn(fn: Callable[..., Any] | None) -> Callable[[WindowResult], Any] | None:
    return fn


def _stdout() -> Sink:
    from connectors.local import StdoutSink

    return StdoutSink()
