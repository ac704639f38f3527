"""``evtime describe APP``: the job as the worker will run it (DESIGN.md section 14).

Sources (topic, key, event time, watermark strategy, idleness), operators,
sinks, the consumer group, every internal topic the job creates (changelogs,
repartition topics) with its partitions and configs, the transactional ids of
an exactly-once job and the state directories. Everything comes from the plan
and evtime/names.py, the functions the worker itself names things with; the
partition counts come from the broker when it answers (``partitions`` given),
else the topic they follow is named.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

from evtime.names import changelog_topic, group_name, task_dir, transactional_id
from evtime.operators.join import JoinSpec
from evtime.operators.process import ProcessSpec
from evtime.operators.repartition import RepartitionSpec
from evtime.operators.window import WindowSpec
from evtime.plan import OperatorSpec, Plan, SourceSpec, operator_sources
from evtime.records import Guarantee
from evtime.time import format_millis

CHANGELOG_CONFIGS = {"cleanup.policy": "compact", "min.compaction.lag.ms": "3600000"}
"""The configs the worker creates changelog topics with (evtime.connectors.kafka_changelog)."""
REPARTITION_CONFIGS = {"message.timestamp.type": "LogAppendTime"}
"""The configs the worker creates repartition topics with (evtime.connectors.kafka)."""


@runtime_checkable
class Describable(Protocol):
    """A connector that says in a few words where it reads or writes."""

    def describe(self) -> str: ...


def describe_plan(plan: Plan, partitions: Mapping[str, int] | None = None) -> dict[str, Any]:
    """The job as a JSON-ready dict; ``partitions``: input topics' partition counts."""
    counts = dict(partitions or {})
    groups = plan.groups()
    internal: list[dict[str, Any]] = []
    txn_ids: list[str] = []
    tasks: list[dict[str, Any]] = []
    for group in groups:
        count = counts.get(group[0])
        internal.append(
            {
                "topic": changelog_topic(plan.app_name, group),
                "kind": "changelog",
                "partitions": count if count is not None else f"as {group[0]!r}",
                "configs": dict(CHANGELOG_CONFIGS),
                "of": list(group),
            }
        )
        pattern = transactional_id(plan.app_name, group, 0)[: -len("0")] + "<partition>"
        if plan.guarantee is Guarantee.EXACTLY_ONCE:
            if count is None:
                txn_ids.append(pattern)
            else:
                txn_ids.extend(transactional_id(plan.app_name, group, p) for p in range(count))
        tasks.append(
            {
                "topics": list(group),
                "name": group_name(group),
                "partitions": count,
                "state_dir": str(task_dir(plan.state_dir, plan.app_name, group, 0).parent)
                + "/<partition>",
            }
        )
    for op in plan.operators:
        if isinstance(op, RepartitionSpec):
            count = op.partitions or counts.get(op.source)
            internal.append(
                {
                    "topic": op.topic,
                    "kind": "repartition",
                    "partitions": count if count is not None else f"as {op.source!r}",
                    "configs": dict(REPARTITION_CONFIGS),
                    "of": [op.source],
                }
            )
    return {
        "app": plan.app_name,
        "processing": plan.guarantee.value,
        "consumer_group": plan.app_name,
        "checkpoint_interval": format_millis(plan.checkpoint_interval),
        "batch_size": plan.batch_size,
        "on_error": plan.policy.value,
        "sources": [_source(spec, counts.get(topic)) for topic, spec in plan.sources.items()],
        "operators": [_operator(op, plan) for op in plan.operators],
        "dead_letters": _connector(plan.dead_letter),
        "tasks": tasks,
        "internal_topics": internal,
        "transactional_ids": txn_ids,
    }


def _name_of(spec: Any, default: str) -> str:
    if spec is None:
        return default
    if isinstance(spec, str):
        return f"field {spec!r}"
    return f"function {getattr(spec, '__name__', type(spec).__name__)}()"


def _connector(obj: Any) -> str:
    if obj is None:
        return "none"
    if isinstance(obj, Describable):
        return obj.describe()
    return type(obj).__name__


def _source(spec: SourceSpec, partitions: int | None) -> dict[str, Any]:
    strategy = spec.watermarks
    out: dict[str, Any] = {
        "topic": spec.topic,
        "connector": _connector(spec.connector),
        "partitions": partitions,
        "key": _name_of(spec.key, "the record's key"),
        "timestamp": _name_of(spec.timestamp, "the record's timestamp"),
        "value_format": spec.value_format.value,
        "max_out_of_orderness": format_millis(strategy.max_out_of_orderness),
        "idle_timeout": (
            None if strategy.idle_timeout is None else format_millis(strategy.idle_timeout)
        ),
        "advance_when_idle": strategy.advance_when_idle,
        "watermarks": str(strategy),
    }
    if spec.origin is not None:
        out["repartitioned_from"] = spec.origin
    return out


def _outputs(plan: Plan, op_name: str, *outputs: str | None) -> dict[str, str]:
    found: dict[str, str] = {}
    for output in outputs:
        if output is None:
            continue
        output_id = output if "/" in output else f"{op_name}/{output}"
        sink = plan.sinks.get(output_id)
        found[output_id] = _connector(sink) if sink is not None else "dead letters"
    return found


def _operator(op: OperatorSpec, plan: Plan) -> dict[str, Any]:
    out: dict[str, Any] = {"name": op.name, "inputs": list(operator_sources(op))}
    if isinstance(op, WindowSpec):
        out["kind"] = "window"
        out["assigner"] = str(op.assigner)
        out["aggregate"] = repr(op.aggregate)
        out["allowed_lateness"] = format_millis(op.allowed_lateness)
        if op.early_every or op.early_interval:
            out["early_firing"] = {
                "every": op.early_every,
                "interval": None if op.early_interval is None else format_millis(
                    op.early_interval
                ),
            }
        out["outputs"] = _outputs(plan, op.name, op.output, op.late_output)
    elif isinstance(op, JoinSpec):
        out["kind"] = "join"
        out["how"] = op.how.value
        out["bounds"] = f"a.ts {_signed(op.lower)} <= b.ts <= a.ts {_signed(op.upper)}"
        out["emit_unmatched_after"] = (
            None if op.emit_unmatched_after is None else format_millis(op.emit_unmatched_after)
        )
        out["outputs"] = _outputs(plan, op.name, op.output, op.late_output)
    elif isinstance(op, ProcessSpec):
        out["kind"] = "process"
        out["timers"] = op.on_timer is not None
        out["outputs"] = _outputs(plan, op.name, *(o for _, o in op.outputs))
    else:
        out["kind"] = "repartition"
        out["topic"] = op.topic
        out["key"] = _name_of(op.key, "the record's key")
        out["partitions"] = op.partitions
    return out


def _signed(ms: int) -> str:
    return f"- {format_millis(-ms)}" if ms < 0 else f"+ {format_millis(ms)}"


def render(desc: Mapping[str, Any]) -> str:
    """The description as a person reads it."""
    lines = [
        f"app {desc['app']}: {desc['processing']}, checkpoint every "
        f"{desc['checkpoint_interval']}, batches of {desc['batch_size']}, bad records: "
        f"{desc['on_error']}",
        f"consumer group: {desc['consumer_group']}",
        "",
        "sources:",
    ]
    for s in desc["sources"]:
        parts = f"{s['partitions']} partitions, " if s["partitions"] is not None else ""
        lines.append(f"  {s['topic']} ({parts}{s['connector']})")
        lines.append(f"    key: {s['key']}; event time: {s['timestamp']}; {s['value_format']}")
        lines.append(f"    watermarks: {s['watermarks']}")
        if "repartitioned_from" in s:
            lines.append(f"    internal: {s['repartitioned_from']} re-keyed")
    lines += ["", "operators:"]
    for op in desc["operators"]:
        lines.append(f"  {op['kind']} {op['name']!r} <- {', '.join(op['inputs'])}")
        for field in ("assigner", "aggregate", "allowed_lateness", "how", "bounds",
                      "emit_unmatched_after", "early_firing", "timers", "topic", "key"):
            if op.get(field) not in (None, False, "0ms") or (field == "timers" and field in op):
                lines.append(f"    {field.replace('_', ' ')}: {op[field]}")
        for output, sink in op.get("outputs", {}).items():
            lines.append(f"    output {output} -> {sink}")
    lines += ["", f"dead letters -> {desc['dead_letters']}", "", "partition tasks:"]
    for t in desc["tasks"]:
        count = f"{t['partitions']} tasks" if t["partitions"] is not None else "one per partition"
        lines.append(f"  {t['name']}: {count}, state in {t['state_dir']}")
    lines += ["", "internal topics (created by the worker):"]
    for t in desc["internal_topics"]:
        configs = ", ".join(f"{k}={v}" for k, v in t["configs"].items())
        lines.append(f"  {t['topic']} ({t['kind']}, {t['partitions']} partitions; {configs})")
    if desc["transactional_ids"]:
        lines += ["", "transactional ids:"]
        lines += [f"  {t}" for t in desc["transactional_ids"]]
    return "\n".join(lines)
