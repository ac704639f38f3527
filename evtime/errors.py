"""The one error hierarchy of evtime.

Every message says what went wrong and what to do about it.
"""

from __future__ import annotations


class EvtimeError(Exception):
    """Base class of every error evtime raises on purpose."""


class ConfigError(EvtimeError):
    """A setting, a duration or a declaration is invalid."""


class SerdeError(EvtimeError):
    """A record could not be decoded or encoded."""


class KeyExtractionError(SerdeError):
    """A record's key could not be extracted."""


class TimestampError(EvtimeError):
    """A record has no usable event timestamp."""


class StateError(EvtimeError):
    """The state store is missing, corrupt, or from an incompatible version."""


class ServiceError(EvtimeError):
    """A local service (Kafka, OpenSearch) could not be set up, started or reached."""


class UserCodeError(EvtimeError):
    """A user function raised; the original exception is chained."""


class DeadLetterPolicyError(EvtimeError):
    """A record went bad under the fail-fast policy, which stops the run."""


class SinkError(EvtimeError):
    """A sink could not deliver its outputs (after its retries, or for a reason retrying
    cannot fix): what was not acknowledged is replayed from the last checkpoint."""


class TransactionFailedError(EvtimeError):
    """Records of a task's transaction were not delivered (exactly-once): the transaction
    must not commit; the task goes back to its last checkpoint and redoes the interval."""
