"""``evtime state reset``: make an app start over from a point of its input.

What Kafka Streams' application reset tool does, for an evtime app:

1. Compute the new offset of every input partition: its beginning
   (``earliest``), its end (``latest``), or the first record at or after a time
   (offsets-for-times; a partition with none after it goes to its end).
2. Check that the app's consumer group has no member (no worker of the app
   runs): with one, nothing has changed and the reset stops, naming them. A
   worker stopped a moment ago may still be a member (a static member stays
   until its session times out): the reset waits up to ``wait_s`` for the
   group to empty before it gives up. Then commit the new offsets.
3. Delete the app's internal topics (changelogs, repartition topics): the
   worker creates them again, empty. The group's offsets of a deleted topic go
   with it.
4. Remove the local state directories given.

``dry_run`` prints each step and changes nothing (it checks the group too).
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaError
from aiokafka.protocol.admin import DescribeGroupsRequest_v1, DescribeGroupsRequest_v2

from evtime.errors import ConfigError, EvtimeError


class GroupActiveError(EvtimeError):
    """The app's consumer group has members: a worker of the app still runs."""


@dataclass(frozen=True, slots=True)
class ResetTarget:
    """Where the input starts again: ``earliest``, ``latest`` or a time (ms since the epoch)."""

    kind: str
    at_ms: int | None = None

    @classmethod
    def parse(cls, text: str) -> ResetTarget:
        """``earliest``, ``latest`` or an ISO-8601 time (without a zone: UTC)."""
        if text in ("earliest", "latest"):
            return cls(text)
        try:
            when = datetime.fromisoformat(text)
        except ValueError:
            raise ConfigError(
                f"--to {text!r}: give earliest, latest or an ISO time such as "
                "2026-12-01T08:00:00Z"
            ) from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return cls("time", int(when.timestamp() * 1000))

    def __str__(self) -> str:
        if self.at_ms is None:
            return self.kind
        return datetime.fromtimestamp(self.at_ms / 1000, UTC).isoformat()


@dataclass(frozen=True, slots=True)
class ResetJob:
    """What one app owns: its group, input topics, internal topics and state directories."""

    group: str
    inputs: Sequence[str]
    internal: Sequence[str]
    state_dirs: Sequence[Path]


async def reset_app(
    client: Mapping[str, object],
    job: ResetJob,
    target: ResetTarget,
    *,
    dry_run: bool = False,
    wait_s: float = 30.0,
    say: Callable[[str], None] = print,
) -> None:
    """Run the reset (see the module doc); ``client``: the aiokafka connection kwargs."""
    mode = "would " if dry_run else ""
    admin = AIOKafkaAdminClient(**client)
    consumer = AIOKafkaConsumer(**client, group_id=job.group, enable_auto_commit=False)
    await admin.start()
    try:
        await consumer.start()
        existing = set(await admin.list_topics())
        missing = [t for t in job.inputs if t not in existing]
        if missing:
            raise ConfigError(f"input topics {missing} do not exist; nothing to reset to")
        partitions = [
            TopicPartition(d["topic"], p["partition"])
            for d in await admin.describe_topics(list(job.inputs))
            for p in sorted(d["partitions"], key=lambda p: p["partition"])
        ]
        offsets = await _targets(consumer, partitions, target)
        committed = await admin.list_consumer_group_offsets(job.group)
        say(f"1. {mode}move group {job.group!r} to {target}:")
        for tp in partitions:
            before = committed.get(tp)
            was = "none" if before is None else str(before.offset)
            say(f"   {tp.topic}[{tp.partition}]: {was} -> {offsets[tp]}")
        await _wait_until_empty(client, admin, job.group, wait_s, say)
        if not dry_run:
            consumer.assign(partitions)
            await consumer.commit(offsets)
        deleting = [t for t in job.internal if t in existing]
        say(f"2. {mode}delete internal topics: {', '.join(deleting) or 'none exist'}")
        if deleting and not dry_run:
            await admin.delete_topics(deleting)
        dirs = [d for d in job.state_dirs if d.exists()]
        say(f"3. {mode}remove local state: {', '.join(map(str, dirs)) or 'none here'}")
        if not dry_run:
            for d in dirs:
                shutil.rmtree(d)
        say("dry run: nothing changed" if dry_run else "reset done: the next run starts there")
    finally:
        await consumer.stop()
        await admin.close()


async def _targets(
    consumer: AIOKafkaConsumer, partitions: list[TopicPartition], target: ResetTarget
) -> dict[TopicPartition, int]:
    if target.kind == "earliest":
        found: dict[TopicPartition, int] = await consumer.beginning_offsets(partitions)
        return found
    ends: dict[TopicPartition, int] = await consumer.end_offsets(partitions)
    if target.kind == "latest":
        return ends
    at = await consumer.offsets_for_times({tp: target.at_ms for tp in partitions})
    return {tp: ends[tp] if at.get(tp) is None else at[tp].offset for tp in partitions}


class _DescribeGroups:
    """A DescribeGroups request of version 2 at most: aiokafka's own v3 reads the response
    with the v2 layout. (aiokafka's connections call ``prepare`` with the versions the
    broker supports.)"""

    API_KEY = 15

    def __init__(self, groups: list[str]) -> None:
        self._groups = groups

    def prepare(self, versions: dict[int, tuple[int, int]]) -> object:
        low, high = versions.get(self.API_KEY, (0, 0))
        if high >= 2 >= low:
            return DescribeGroupsRequest_v2(self._groups)
        return DescribeGroupsRequest_v1(self._groups)


async def _members(
    client: Mapping[str, object], admin: AIOKafkaAdminClient, group: str
) -> list[str]:
    """The group's members, as ``client id (host)``."""
    node = await admin.find_coordinator(group)
    kafka = AIOKafkaClient(**client)
    await kafka.bootstrap()
    try:
        response = await kafka.send(node, _DescribeGroups([group]))
    finally:
        await kafka.close()
    ((error, _, _, _, _, members),) = response.groups
    if error:
        raise KafkaError(f"describing consumer group {group!r} failed with error code {error}")
    return [f"{m[1]} ({m[2].lstrip('/')})" for m in members]


async def _wait_until_empty(
    client: Mapping[str, object],
    admin: AIOKafkaAdminClient,
    group: str,
    wait_s: float,
    say: Callable[[str], None],
) -> None:
    deadline = time.monotonic() + wait_s
    members = await _members(client, admin, group)
    if members:
        say(
            f"   the group has members ({len(members)}); waiting up to {wait_s:.0f} s for them "
            "to leave (a stopped worker stays a member until its session times out)"
        )
    while members and time.monotonic() < deadline:
        await asyncio.sleep(1.0)
        members = await _members(client, admin, group)
    if members:
        raise GroupActiveError(
            f"consumer group {group!r} still has members after {wait_s:.0f} s "
            f"({', '.join(members[:5])}): stop every worker of the app first; nothing was "
            "changed"
        )
