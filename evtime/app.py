"""The decorator API: declare sources and operators, then run.

>>> from evtime import App, Tumbling, Sum
>>> from evtime.connectors.local import MemorySource, MemorySink
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
from evtime.io import DeadLetterSink, RepartitionFactory, Sink
from evtime.names import legal_part, repartition_topic
from evtime.operators.join import JoinInput, JoinSpec, JoinType
from evtime.operators.process import ProcessContext, ProcessSpec, Timer
from evtime.operators.repartition import RepartitionSpec
from evtime.operators.window import WindowSpec
from evtime.plan import Plan, SourceSpec
from evtime.records import ErrorPolicy, Guarantee, Record, WindowResult
from evtime.serde import KeySpec, TimestampSpec, ValueFormat
from evtime.time import Clock, Duration, to_millis
from evtime.watermarks import WatermarkStrategy
from evtime.windows import WindowAssigner

F = TypeVar("F", bound=Callable[..., Any])


class SourceRef:
    """A declared source, as passed to operator decorators.

    ``source.where(predicate)`` is the same source filtered by a predicate of
    the record's value: a join input (two event types of one topic).
    """

    def __init__(self, spec: SourceSpec, predicate: Callable[[Any], Any] | None = None) -> None:
        self.spec = spec
        self.predicate = predicate

    @property
    def topic(self) -> str:
        return self.spec.topic

    def where(self, predicate: Callable[[Any], Any]) -> SourceRef:
        """The records of this source whose value satisfies ``predicate`` (a join input).

        ``events.where(lambda v: v["type"] == "A")``. Filters chain (both must hold).
        A predicate that raises sends the record to the dead-letter output.
        """
        if not callable(predicate):
            raise ConfigError(f"where() takes a function of the value, not {predicate!r}")
        first = self.predicate
        if first is None:
            return SourceRef(self.spec, predicate)
        return SourceRef(self.spec, lambda value: first(value) and predicate(value))

    def __repr__(self) -> str:
        if self.predicate is not None:
            return f"SourceRef({self.topic!r}).where(...)"
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
        self._default_dead_letter = dead_letter is None
        self.plan.dead_letter = dead_letter or self._dead_letter_file()
        self.plan.guarantee = guarantee

    def _dead_letter_file(self) -> DeadLetterSink:
        from evtime.connectors.local import JsonLinesSink

        return JsonLinesSink(self.plan.state_dir / self.name / "dead-letters.jsonl")

    def use_state_dir(self, state_dir: str | Path) -> None:
        """Move the app's state to ``state_dir`` (``--state-dir``, ``EVTIME_STATE_DIR``),
        with the default dead-letter file, which lives in it."""
        self.plan.state_dir = Path(state_dir)
        if self._default_dead_letter:
            self.plan.dead_letter = self._dead_letter_file()

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
        advance_when_idle: bool = False,
        value_format: ValueFormat | str = ValueFormat.JSON,
    ) -> SourceRef:
        """Declare an input topic.

        ``key``: a value field, a function of the value, or None for the
        record's own key. ``timestamp``: a value field (epoch ms, or ISO-8601),
        a function, or None for the record's timestamp. ``max_out_of_orderness``
        bounds the disorder the watermark waits for; ``idle_timeout`` lets an
        idle partition stop holding the watermark back. ``advance_when_idle``
        (with ``idle_timeout``, for live data whose event time follows the wall
        clock): a partition quiet for ``idle_timeout`` and read to its end moves
        its watermark with the wall clock, so windows and unmatched join rows
        close even when no record comes; a record older than that is late. While
        the consumer is behind, the clock moves nothing (a replay gives the same
        results); see :class:`~evtime.watermarks.WatermarkStrategy`.
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
            WatermarkStrategy.bounded(max_out_of_orderness, idle_timeout, advance_when_idle),
            fmt,
        )
        self.plan.sources[topic] = spec
        return SourceRef(spec)

    def repartition(
        self,
        source: SourceRef | str,
        key: KeySpec,
        *,
        name: str | None = None,
        partitions: int | None = None,
    ) -> SourceRef:
        """Re-key a Kafka source through an internal topic partitioned by ``key``.

        State is kept per partition, so a keyed operator needs its input partitioned by its
        key. When a topic is not (records produced without that key), ``repartition`` sends
        its records, as they are, to ``<app>-<name>-repartition`` (created with
        ``partitions``, default the source's count), keyed by ``key`` (a value field or a
        function of the value); the returned source reads that topic with the source's
        timestamp and watermark settings. Watermarks cross the topic: downstream, it is the
        minimum of the source partitions' watermarks. A record sent twice (a restart
        resends what the last checkpoint did not cover) is processed once. The source
        itself then feeds only the repartition.
        """
        topic = self._topic(source)
        spec = self.plan.sources[topic]
        connector = spec.connector
        if not isinstance(connector, RepartitionFactory):
            raise ConfigError(
                f"repartition needs a Kafka source; {topic!r} reads {type(connector).__name__} "
                "(partition a local source's records by key when writing them instead)"
            )
        ops = self.plan.operators
        if any(isinstance(op, RepartitionSpec) and op.source == topic for op in ops):
            raise ConfigError(
                f"{topic!r} is repartitioned already: a source is repartitioned once (its "
                "records are decoded with the repartition's key)"
            )
        if key is None:
            raise ConfigError("repartition needs a key: a value field or a function of the value")
        if spec.timestamp is None:
            raise ConfigError(
                f"repartition of {topic!r} needs the event time in the value: declare the "
                "source with timestamp= a field or a function (the internal topic's record "
                "timestamps are the times records were written)"
            )
        if partitions is not None and partitions < 1:
            raise ConfigError(f"partitions={partitions}: give at least 1 (or None: the source's)")
        key_name = key if isinstance(key, str) else getattr(key, "__name__", "key")
        op_name = name or f"{topic}-by-{legal_part(key_name)}"
        internal = repartition_topic(self.plan.app_name, op_name)
        if internal in self.plan.sources:
            raise ConfigError(f"{topic!r} is repartitioned twice as {op_name!r}; pass name=...")
        output = f"{op_name}/main"
        self._add(RepartitionSpec(op_name, topic, internal, key, partitions, output))
        # The source is decoded with the new key (a record without one is a dead letter).
        self.plan.sources[topic] = SourceSpec(
            topic, connector, key, spec.timestamp, spec.watermarks, spec.value_format
        )
        sink = self.plan.repartition_sinks[output] = connector.repartition_sink(internal)
        self.plan.sinks[output] = sink
        downstream = SourceSpec(
            internal,
            connector.internal_source(internal),
            key,
            spec.timestamp,
            spec.watermarks,
            spec.value_format,
            origin=topic,
        )
        self.plan.sources[internal] = downstream
        return SourceRef(downstream)

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
            op_name, output_id, late_id = _outputs_of("window", name, fn, late)
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
            self._attach(output_id, sink, late_id, late)
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

    def join(
        self,
        left: SourceRef | str,
        right: SourceRef | str,
        *,
        within: Duration | None = None,
        lower: Duration | None = None,
        upper: Duration | None = None,
        how: JoinType | str = JoinType.INNER,
        emit_unmatched_after: Duration | None = None,
        sink: Sink | None = None,
        late: Sink | None = None,
        name: str | None = None,
    ) -> Callable[[F], F]:
        """Declare an interval join; decorate the function that shapes each ``JoinResult``.

        A left row ``a`` joins a right row ``b`` of the same key when
        ``a.ts + lower <= b.ts <= a.ts + upper``; ``within=d`` means
        ``lower=-d, upper=d``. Every matching pair is emitted once, as soon as
        the second row arrives. ``how``: ``"inner"``, ``"left"``, ``"right"`` or
        ``"outer"`` (full): rows of an outer side that never matched are emitted
        alone once the watermark passes the last point where they could match,
        or as a partial row at ``ts + emit_unmatched_after``, which the first
        later match replaces (an UPDATE with the same id). A row's state is
        dropped when it can no longer match; rows arriving at or behind the
        watermark go to ``late`` (or the dead-letter output).

        The inputs are two co-partitioned sources (same key, same partitions),
        or two event types of one source, split by ``where``:

        >>> from evtime.connectors.local import MemorySource, MemorySink
        >>> app = App("pairs", state_dir=getfixture("tmp_path"))
        >>> events = app.source("events", MemorySource.of("events", [
        ...     {"type": "A", "id": "k1", "ts": 0},
        ...     {"type": "B", "id": "k1", "ts": 600_000},
        ...     {"type": "A", "id": "k2", "ts": 700_000},
        ... ]), key="id", timestamp="ts")
        >>> out = MemorySink()
        >>> @app.join(events.where(lambda v: v["type"] == "A"),
        ...           events.where(lambda v: v["type"] == "B"),
        ...           within="6h", how="left", emit_unmatched_after="15m", sink=out)
        ... def pairs(r):
        ...     return {"id": r.key, "status": r.kind.value, "b_ts": r.right_ts}
        >>> app.run()
        >>> for value in out.values:
        ...     print(value)
        {'id': 'k1', 'status': 'joined', 'b_ts': 600000}
        {'id': 'k2', 'status': 'unmatched', 'b_ts': None}

        The decorated ``fn(result: JoinResult)`` returns the value sent to ``sink``
        (None sends nothing); the output's id is ``result.id``. Joined values are
        kept in state as JSON: the sources must be JSON or text.
        """
        left_topic = self._topic(left, allow_where=True)
        right_topic = self._topic(right, allow_where=True)
        for topic in {left_topic, right_topic}:
            if self.plan.sources[topic].value_format is ValueFormat.BYTES:
                raise ConfigError(
                    f"join input {topic!r} has value_format='bytes'; joined rows are kept in "
                    "state as JSON: declare the source as 'json' or 'text'"
                )
        if within is not None:
            if lower is not None or upper is not None:
                raise ConfigError(
                    "give the join either within= (symmetric) or lower= and upper=, not both"
                )
            bound = to_millis(within, name="within")
            lo, hi = -bound, bound
        elif lower is not None and upper is not None:
            lo = to_millis(lower, name="lower", allow_negative=True)
            hi = to_millis(upper, name="upper", allow_negative=True)
        else:
            raise ConfigError(
                "the join needs its bounds: within='6h', or lower= and upper= "
                "(a.ts + lower <= b.ts <= a.ts + upper)"
            )
        try:
            kind = JoinType(how) if isinstance(how, str) else how
        except ValueError:
            raise ConfigError(
                f"how={how!r}: use 'inner', 'left', 'right' or 'outer'"
            ) from None
        after = (
            None
            if emit_unmatched_after is None
            else to_millis(emit_unmatched_after, name="emit_unmatched_after")
        )

        def register(fn: F | None) -> F:
            op_name, output_id, late_id = _outputs_of("join", name, fn, late)
            spec = JoinSpec(
                op_name,
                JoinInput(left_topic, _predicate(left)),
                JoinInput(right_topic, _predicate(right)),
                lo,
                hi,
                kind,
                after,
                fn,
                output_id,
                late_id,
            )
            self._add(spec)
            self._attach(output_id, sink, late_id, late)
            return fn  # type: ignore[return-value]

        return register

    def _topic(self, source: SourceRef | str, *, allow_where: bool = False) -> str:
        if isinstance(source, SourceRef) and source.predicate is not None and not allow_where:
            raise ConfigError(
                f"{source!r}: where() filters join inputs only; a window or process "
                "function reads the whole topic (filter in its function instead)"
            )
        topic = source.topic if isinstance(source, SourceRef) else source
        if topic not in self.plan.sources:
            raise ConfigError(
                f"{topic!r} is not a declared source; declare it first with app.source(...)"
            )
        return topic

    def _attach(
        self, output_id: str, sink: Sink | None, late_id: str | None, late: Sink | None
    ) -> None:
        """Route an operator's main output (default: stdout) and late output to sinks."""
        self.plan.sinks[output_id] = sink if sink is not None else _stdout()
        if late is not None and late_id is not None:
            self.plan.sinks[late_id] = late

    def _add(self, spec: WindowSpec | ProcessSpec | JoinSpec | RepartitionSpec) -> None:
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


def _outputs_of(
    kind: str, name: str | None, fn: Callable[..., Any] | None, late: Sink | None
) -> tuple[str, str, str | None]:
    """An operator's name, main output id and late output id (None without a late sink)."""
    op_name = name or (fn.__name__ if fn is not None else None)
    if not op_name:
        raise ConfigError(f"give the {kind} a name= or decorate a named function")
    return op_name, f"{op_name}/main", f"{op_name}/late" if late is not None else None


def _result_fn(fn: Callable[..., Any] | None) -> Callable[[WindowResult], Any] | None:
    return fn


def _predicate(source: SourceRef | str) -> Callable[[Any], Any] | None:
    return source.predicate if isinstance(source, SourceRef) else None


def _stdout() -> Sink:
    from evtime.connectors.local import StdoutSink

    return StdoutSink()
