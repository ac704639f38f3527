"""Every runtime option of evtime, declared once: type, default, ``EVTIME_*`` variable, help.

The package: ``model`` declares the options (a field of :class:`Settings` each) and resolves
them, ``kinds`` checks and shows their values, ``views`` shows resolved settings (the
``evtime config`` table, the start log line, docs/configuration.md).

An option is a field of :class:`Settings`; its variable is ``EVTIME_`` and the field's name
in capitals, and the options marked ``flag`` are also ``evtime run`` / ``evtime worker`` /
``evtime config`` options (``--state-dir``). :meth:`Settings.load` resolves each option from
the first place that gives it, highest first:

1. an **argument**: a value given in code to the object that uses the option
   (``app.worker(metrics_port=9100)``, ``KafkaSource(topic, bootstrap=...)``,
   ``ElasticsearchSink(index, url=...)``);
2. a **flag** on the ``evtime`` command line;
3. the **environment** (``EVTIME_*``; an empty variable counts as unset);
4. the **app**: what ``App(...)`` declares for ``state_dir``, ``checkpoint_interval`` and
   ``processing``. These are the app's own defaults, which a deployment overrides with the
   flag or the variable without editing the code (``evtime worker -p N`` gives each of its
   processes ``--state-dir <state_dir>/worker-<i>`` this way);
5. the **default** of the option.

Every value is checked as it is resolved: a bad one raises a
:class:`~evtime.errors.ConfigError` of one line naming the option and its variable
(``checkpoint_interval: EVTIME_CHECKPOINT_INTERVAL='abc' is not a duration; give e.g. 1s,
500ms``). Settings are resolved when a worker, client or command starts, never at import
time, so a variable set before that (a test's ``monkeypatch.setenv``) is seen.
``evtime.settings.model`` is the one place of evtime and its connectors that reads the
environment (the local services and the demos pass it on to the processes they start).

Options marked ``secret`` (passwords, tokens, API keys) are masked wherever settings are
shown, and so is the password of a URL (``http://user:****@host``): :func:`describe` (the
table ``evtime config APP`` prints) and :func:`summary` (the line a worker logs at start).
``python -m evtime.settings --markdown`` writes docs/configuration.md (:func:`markdown`).

Why a frozen dataclass and not pydantic-settings: the model is a few dozen scalar options
whose parsing is evtime's own (durations such as ``1s``, ports, ``inf`` seconds), and it
needs what pydantic-settings does not give as such: the app layer between the environment
and the default, the origin of every value for ``evtime config``, and one-line errors naming
the variable. A small loader does all that, with no new dependency of the worker.
"""

from evtime.settings.kinds import LOG_LEVELS, TEXT, Kind, LogFormat
from evtime.settings.model import (
    OPTIONS,
    SECTIONS,
    Option,
    Origin,
    Settings,
    child_environment,
    option,
)
from evtime.settings.views import RUNTIME_SECTIONS, describe, markdown, summary, table

__all__ = [
    "LOG_LEVELS",
    "OPTIONS",
    "RUNTIME_SECTIONS",
    "SECTIONS",
    "TEXT",
    "Kind",
    "LogFormat",
    "Option",
    "Origin",
    "Settings",
    "child_environment",
    "describe",
    "markdown",
    "option",
    "summary",
    "table",
]
