"""The worker's topics, made ready before it joins its consumer group:

1. each repartition's internal topic created (evtime/runtime/markers.py);
2. the topics read by one task (a join) checked to be co-partitioned;
3. each topic group's changelog topic created (and opened).
"""

from __future__ import annotations

from evtime.errors import ConfigError
from evtime.io import Changelog, GroupSourceFactory
from evtime.names import changelog_topic
from evtime.plan import Plan
from evtime.runtime.markers import WatermarkMarkers


async def prepare_topics(
    plan: Plan, factory: GroupSourceFactory, markers: WatermarkMarkers
) -> dict[tuple[str, ...], Changelog]:
    """Steps 1 to 3; each topic group's changelog."""
    await markers.ensure_topics(factory)
    await check_co_partitioned(plan, factory)
    changelogs: dict[tuple[str, ...], Changelog] = {}
    for group in plan.groups():
        changelog = factory.changelog(changelog_topic(plan.app_name, group))
        await changelog.ensure(group[0])
        changelogs[group] = changelog
    return changelogs


async def check_co_partitioned(plan: Plan, factory: GroupSourceFactory) -> None:
    """Topics read by one task (a join) must have equal partition counts: the group
    assigns partition ``p`` of each to the same task, and with unequal counts records
    of one key would meet the other side's in no task."""
    for group in plan.groups():
        if len(group) < 2:
            continue
        counts = await factory.partition_counts(group)
        if len(set(counts.values())) > 1:
            found = ", ".join(f"{t!r} has {counts[t]}" for t in group)
            raise ConfigError(
                f"topics {list(group)} are joined, so they must be co-partitioned, but "
                f"their partition counts differ: {found}. Create them with equal "
                "partition counts (and the same key partitioning), or repartition one: "
                f"app.repartition(source, key=..., partitions={max(counts.values())})"
            )
