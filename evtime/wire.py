"""What evtime writes on the wire: the Kafka header names and marker values that the
engine and the connectors must agree on (the connectors import them from here, never
from the runtime or the operators).

Changelog records (evtime/runtime/changelog.py) carry the checkpoint they belong to
and the run that wrote them; repartition topics (evtime/operators/repartition.py)
carry each record's origin and, in marker records, each source partition's watermark.
"""

from __future__ import annotations

CHECKPOINT_HEADER = "evtime-ckpt"
"""A changelog record's checkpoint: the input offsets (JSON) of the checkpoint it belongs to."""
EPOCH_HEADER = "evtime-epoch"
"""A changelog record's epoch: the run of the task that wrote it."""

ORIGIN_HEADER = "evtime-origin"
"""A repartitioned record's source partition and offset (``p:offset``); a marker's
source partition."""
WATERMARK_HEADER = "evtime-watermark"
"""A marker's watermark (the source partition's, after the records it sent before), or
``idle``: the source partition is idle (its ``idle_timeout`` passed without records) and
holds no downstream watermark back until its next watermark."""
ORIGINS_HEADER = "evtime-origins"
"""A marker's count of source partitions."""
IDLE = -(2**63) - 1
"""The watermark a marker of an idle source partition stands for (sent as :data:`IDLE_MARK`)."""
IDLE_MARK = b"idle"
"""How :data:`IDLE` is written in a marker's :data:`WATERMARK_HEADER`."""
