"""A changelog read (the restore of a task's state) reports its progress: records read,
percent of the changelog range, rate."""

from __future__ import annotations

import logging
import re

import pytest

from evtime.connectors.kafka_changelog import KafkaChangelog
from tests.integration.kafka_helpers import create_topics

pytestmark = pytest.mark.kafka


async def test_a_long_restore_logs_records_percent_and_rate(
    kafka_bootstrap: str, unique_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    await create_topics(kafka_bootstrap, {unique_name: 1})
    changelog = KafkaChangelog(kafka_bootstrap, f"{unique_name}-changelog", progress_every_s=0)
    caplog.set_level(logging.INFO, logger="evtime.changelog")
    try:
        await changelog.ensure(unique_name)
        records = [(f"k{i}".encode(), b"v" * 100) for i in range(50_000)]
        ends = await changelog.append({0: (records, {unique_name: 1})})
        assert ends == {0: 50_000}
        read = await changelog.read(0, 10_000)
    finally:
        await changelog.close()
    assert [r.key for r in read] == [k for k, _ in records[10_000:]]
    pattern = re.compile(
        r"restoring .*-changelog\[0\]: (\d+) records read, offset (\d+) of 10000\.\.50000 "
        r"\((\d+)%\), (\d+) records/s"
    )
    progress = [m for r in caplog.records if (m := pattern.search(r.getMessage()))]
    assert len(progress) >= 2, [r.getMessage() for r in caplog.records]
    counts = [int(m[1]) for m in progress]
    percents = [int(m[3]) for m in progress]
    assert counts == sorted(counts) and counts[0] == 0 and counts[-1] > 0
    assert percents == sorted(percents) and percents[-1] < 100
    for m in progress:
        # The percent is that of the offsets read out of the range the restore covers.
        assert int(m[3]) == round(100 * (int(m[2]) - 10_000) / 40_000)
    assert int(progress[-1][4]) > 0
