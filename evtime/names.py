"""Every internal name, made in one place (DESIGN.md section 13).

A job's internal Kafka topics (changelogs, repartition topics), its transactional
ids, its state directories and its metric labels are all derived here from the
app name and the topic group. Kafka accepts topic names of at most 249
characters from ``[a-zA-Z0-9._-]``; transactional ids and group ids are sent as
they are, but they are built from the same parts, so they obey the same rule.

Names derived from user code (a key function's ``__name__`` such as
``<lambda>``) are made legal; names the user chose (the app name, an explicit
``name=``, a topic) are checked, and an illegal one is a ConfigError that says
what to change: renaming it silently would move the job's state.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from evtime.errors import ConfigError

MAX_TOPIC_LENGTH = 249
"""Kafka's limit on a topic name's length."""

_LEGAL = re.compile(r"[a-zA-Z0-9._-]+")
_ILLEGAL_CHARS = re.compile(r"[^a-zA-Z0-9._-]+")

TopicGroup = tuple[str, ...]


def legal_part(text: str) -> str:
    """``text`` with every run of characters Kafka refuses replaced by one ``_``
    (for parts derived from code, such as a key function's name)."""
    return _ILLEGAL_CHARS.sub("_", text).strip("_") or "x"


def group_name(group: TopicGroup) -> str:
    """A topic group's name: its topic alone, or its topics joined by ``-``
    (sorted, as :meth:`~evtime.plan.Plan.groups` gives them)."""
    return "-".join(group)


def changelog_topic(app: str, group: TopicGroup) -> str:
    """The compacted changelog topic of a topic group's state."""
    return f"{app}-{group_name(group)}-changelog"


def repartition_topic(app: str, operator: str) -> str:
    """The internal topic a repartition operator writes to."""
    return f"{app}-{operator}-repartition"


def transactional_id(app: str, group: TopicGroup, partition: int) -> str:
    """A task's stable transactional id: starting it fences the task's previous owner."""
    return f"{app}-{group_name(group)}-{partition}"


def task_dir(state_dir: Path, app: str, group: TopicGroup, partition: int) -> Path:
    """A task's RocksDB directory: ``state_dir/<app>/<topic-group>/<partition>``."""
    return state_dir / app / group_name(group) / str(partition)


def check_topic_name(name: str, what: str, fix: str) -> None:
    """Raise ConfigError unless ``name`` is a legal Kafka topic name; ``what`` says
    which name it is, ``fix`` what to change."""
    if len(name) > MAX_TOPIC_LENGTH:
        raise ConfigError(
            f"{what} {name!r} is {len(name)} characters long; Kafka allows at most "
            f"{MAX_TOPIC_LENGTH}: {fix}"
        )
    if not _LEGAL.fullmatch(name) or name in (".", ".."):
        bad = "".join(sorted({ch for ch in name if not _LEGAL.fullmatch(ch)}))
        raise ConfigError(
            f"{what} {name!r} is not a legal Kafka name (characters {bad!r} are not among "
            f"[a-zA-Z0-9._-]): {fix}"
        )


def check_internal_names(
    app: str,
    groups: Iterable[TopicGroup],
    repartition_operators: Iterable[str] = (),
) -> None:
    """Check every internal name a job on Kafka creates, before it creates any.

    Transactional ids and state directories are made of the same parts as the
    changelog topics, so checking these covers them. Topic groups whose names
    coincide (a group of ``a`` and ``b``, and a topic ``a-b``) would share a
    changelog and a state directory: refused too.
    """
    check_topic_name(app, "app name", "rename the app (App(name=...))")
    seen: dict[str, TopicGroup] = {}
    for group in groups:
        name = group_name(group)
        if name in seen and seen[name] != group:
            raise ConfigError(
                f"topic groups {list(seen[name])} and {list(group)} both get the internal "
                f"name {name!r}; rename one of the topics"
            )
        seen[name] = group
        check_topic_name(
            changelog_topic(app, group),
            "changelog topic",
            "shorten the app name or the topic names",
        )
    for operator in repartition_operators:
        check_topic_name(
            repartition_topic(app, operator),
            "repartition topic",
            "pass a shorter name= of legal characters to app.repartition",
        )
