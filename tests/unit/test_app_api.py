"""The decorator API and the ``evtime run`` command: declarations, their errors, loading jobs.

Declaration mistakes are :class:`ConfigError`s raised when the app is declared
(not when it runs), each saying what is wrong and what to do.
"""

from __future__ import annotations

import doctest
import textwrap
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

import evtime.app
from evtime import (
    App,
    ConfigError,
    Count,
    ErrorPolicy,
    EvtimeError,
    ProcessContext,
    Record,
    Session,
    Sliding,
    Sum,
    Tumbling,
    WindowResult,
)
from evtime.cli import load_app, main
from evtime.connectors.local import MemorySink, MemorySource


def make_app(tmp_path: Path, **kw: Any) -> App:
    return App("api", state_dir=tmp_path, dead_letter=MemorySink(), **kw)


def orders() -> MemorySource:
    return MemorySource.of(
        "orders",
        [
            {"user": "ann", "amount": 3, "ts": 1_000},
            {"user": "ann", "amount": 4, "ts": 9_000},
            {"user": "bob", "amount": 5, "ts": 12_000},
        ],
    )


# -- declaration errors --------------------------------------------------------------------


def test_an_undeclared_source_is_a_config_error_naming_it(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    with pytest.raises(ConfigError, match=r"'clicks' is not a declared source.*app\.source"):
        app.window("clicks", Tumbling("1s"), aggregate=Count())
    with pytest.raises(ConfigError, match="'clicks' is not a declared source"):
        app.process("clicks")


def test_a_source_declared_twice_is_a_config_error(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    app.source("orders", orders())
    with pytest.raises(ConfigError, match="source 'orders' is declared twice"):
        app.source("orders", orders())


def test_two_operators_with_one_name_are_a_config_error(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    src = app.source("orders", orders(), key="user", timestamp="ts")

    @app.window(src, Tumbling("10s"), aggregate=Count(), sink=MemorySink())
    def totals(r: WindowResult) -> Any:
        return r.value

    with pytest.raises(ConfigError, match=r"operator named 'totals' exists; pass name="):

        @app.process(src, sink=MemorySink())
        def totals(record: Record, ctx: ProcessContext) -> None:
            return None

    # name= resolves it
    app.window(src, Tumbling("10s"), aggregate=Count(), sink=MemorySink(), name="totals2")(totals)
    assert [op.name for op in app.plan.operators] == ["totals", "totals2"]


def shape(result: WindowResult) -> Any:
    return result.value


@pytest.mark.parametrize(
    ("declare", "setting"),
    [
        (lambda app, src: App("x", checkpoint_interval="10 parsecs"), "checkpoint_interval"),
        (lambda app, src: App("x", checkpoint_interval=0), "checkpoint_interval"),
        (
            lambda app, src: app.source("other", orders(), max_out_of_orderness="5x"),
            "max_out_of_orderness",
        ),
        (
            lambda app, src: app.source("other", orders(), max_out_of_orderness="-5s"),
            "max_out_of_orderness",
        ),
        (lambda app, src: app.source("other", orders(), idle_timeout="soon"), "idle_timeout"),
        (
            lambda app, src: app.window(
                src, Tumbling("1s"), aggregate=Count(), allowed_lateness="1 minute"
            )(shape),
            "allowed_lateness",
        ),
        (
            lambda app, src: app.window(
                src, Tumbling("1s"), aggregate=Count(), early_interval="250"
            )(shape),
            "early_interval",
        ),
        (lambda app, src: Tumbling("ten seconds"), "size"),
        (lambda app, src: Sliding("10s", "1y"), "slide"),
        (lambda app, src: Session(True), "gap"),
    ],
    ids=[
        "checkpoint_interval",
        "zero_checkpoint_interval",
        "max_out_of_orderness",
        "negative_out_of_orderness",
        "idle_timeout",
        "allowed_lateness",
        "bare_number_string",
        "tumbling",
        "sliding",
        "session",
    ],
)
def test_a_bad_duration_is_a_config_error_naming_the_setting(
    tmp_path: Path, declare: Any, setting: str
) -> None:
    app = make_app(tmp_path)
    src = app.source("orders", orders())
    with pytest.raises(ConfigError) as info:
        declare(app, src)
    message = str(info.value)
    assert setting in message, message
    assert "ms" in message or "positive" in message or "negative" in message, (
        "the message says how to write a duration"
    )


def test_an_unknown_error_policy_is_a_config_error_listing_the_choices(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"on_error='ignore'.*'dead_letter' or 'fail_fast'"):
        make_app(tmp_path, on_error="ignore")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"batch_size": 0}, "batch_size must be >= 1"),
    ],
)
def test_bad_app_settings_are_config_errors(tmp_path: Path, kwargs: Any, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        make_app(tmp_path, **kwargs)


@pytest.mark.parametrize("name", ["", "a/b"])
def test_an_app_name_must_be_a_plain_name(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigError, match="non-empty name without '/'"):
        App(name, state_dir=tmp_path)


def test_an_unknown_value_format_is_a_config_error(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    with pytest.raises(ConfigError, match=r"value_format='avro'.*'json', 'text' or 'bytes'"):
        app.source("orders", orders(), value_format="avro")


def test_an_app_without_operators_cannot_run(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    app.source("orders", orders())
    with pytest.raises(ConfigError, match=r"declares no operator.*@app\.window or @app\.process"):
        app.run()


def test_early_firing_on_session_windows_is_a_config_error(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    src = app.source("orders", orders())
    with pytest.raises(ConfigError, match="early firing is supported on tumbling and sliding"):
        app.window(src, Session("1m"), aggregate=Count(), early_every=10, name="s")(None)


def test_a_window_needs_a_name(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    src = app.source("orders", orders())
    with pytest.raises(ConfigError, match="name="):
        app.window(src, Tumbling("1s"), aggregate=Count())(None)


def test_config_errors_are_evtime_errors() -> None:
    assert issubclass(ConfigError, EvtimeError)


# -- durations ----------------------------------------------------------------------------------


@pytest.mark.parametrize("five_seconds", ["5s", "5000ms", 5_000, timedelta(seconds=5)])
def test_durations_are_accepted_as_str_int_or_timedelta(
    tmp_path: Path, five_seconds: Any
) -> None:
    app = make_app(tmp_path, checkpoint_interval=five_seconds)
    src = app.source(
        "orders", orders(), max_out_of_orderness=five_seconds, idle_timeout=five_seconds
    )
    app.window(
        src,
        Tumbling(five_seconds),
        aggregate=Count(),
        allowed_lateness=five_seconds,
        early_interval=five_seconds,
        sink=MemorySink(),
        name="w",
    )(None)
    assert app.plan.checkpoint_interval == 5_000
    strategy = app.plan.sources["orders"].watermarks
    assert strategy.max_out_of_orderness == 5_000
    assert strategy.idle_timeout == 5_000
    [spec] = app.plan.operators
    assert spec.allowed_lateness == 5_000  # type: ignore[union-attr]
    assert spec.early_interval == 5_000  # type: ignore[union-attr]
    assert spec.assigner.size == 5_000  # type: ignore[union-attr]


@pytest.mark.parametrize("five_seconds", ["5s", 5_000, timedelta(seconds=5)])
def test_every_way_of_writing_a_duration_runs_the_same(tmp_path: Path, five_seconds: Any) -> None:
    app = make_app(tmp_path)
    src = app.source("orders", orders(), key="user", timestamp="ts", max_out_of_orderness=0)
    out = MemorySink()
    app.window(src, Tumbling(five_seconds), aggregate=Sum("amount"), sink=out, name="w")(
        lambda r: (r.key, r.start, r.value)
    )
    app.run()
    assert out.values == [("ann", 0, 3), ("ann", 5_000, 4), ("bob", 10_000, 5)]


def test_on_error_accepts_the_enum_or_its_value(tmp_path: Path) -> None:
    assert make_app(tmp_path, on_error=ErrorPolicy.FAIL_FAST).plan.policy is ErrorPolicy.FAIL_FAST
    assert make_app(tmp_path, on_error="dead_letter").plan.policy is ErrorPolicy.DEAD_LETTER


# -- the decorator API -------------------------------------------------------------------------


def test_declaring_does_no_io(tmp_path: Path) -> None:
    state = tmp_path / "state"
    app = App("lazy", state_dir=state)
    src = app.source("orders", orders(), key="user", timestamp="ts")
    app.window(src, Tumbling("1s"), aggregate=Count(), sink=MemorySink(), name="w")(None)
    assert not state.exists()


def test_a_process_function_with_named_outputs_and_a_timer(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    src = app.source("orders", orders(), key="user", timestamp="ts")
    big, small, timers = MemorySink(), MemorySink(), MemorySink()

    @app.process(src, sink={"big": big, "small": small, "timers": timers})
    def route(record: Record, ctx: ProcessContext) -> None:
        ctx.emit(record.value["amount"], to="big" if record.value["amount"] > 3 else "small")
        ctx.timers.register_event_time(record.timestamp + 1)

    @route.on_timer
    def fired(timer: Any, ctx: ProcessContext) -> None:
        ctx.emit(timer.timestamp, to="timers")

    assert route.spec.on_timer is fired
    assert app.plan.operators == [route.spec], "on_timer replaced the declared spec"
    app.run()
    assert big.values == [4, 5] and small.values == [3]
    assert timers.values == [1_001, 9_001, 12_001]


def test_the_module_docstring_example_works(tmp_path: Path) -> None:
    tests = [t for t in doctest.DocTestFinder().find(evtime.app) if t.name == "evtime.app"]
    assert tests and tests[0].examples, "evtime/app.py has an example"
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in tests:
        # What pytest's doctest plugin provides, for `pytest --doctest-modules evtime/app.py`.
        test.globs["getfixture"] = lambda name: tmp_path
        runner.run(test)
    assert runner.summarize(verbose=False).failed == 0


# -- `evtime run` ---------------------------------------------------------------------------------

JOB = """
from pathlib import Path

from evtime.connectors.local import JsonLinesSink, JsonLinesSource
from evtime import App, Count, Tumbling

HERE = Path(__file__).parent
app = App("{name}", state_dir=HERE / "state", checkpoint_interval="1s")
clicks = app.source(
    "clicks", JsonLinesSource("clicks", HERE / "clicks.jsonl"), key="user", timestamp="ts"
)


@app.window(clicks, Tumbling("10s"), aggregate=Count(), sink=JsonLinesSink(HERE / "out.jsonl"))
def counts(result):
    return {{"user": result.key, "start": result.start, "n": result.value}}


not_an_app = 42
"""


def write_job(folder: Path, filename: str = "job.py", name: str = "clickjob") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rows = [
        {"user": "ann", "ts": 1_000},
        {"user": "bob", "ts": 2_000},
        {"user": "ann", "ts": 3_000},
        {"user": "ann", "ts": 15_000},
    ]
    (folder / "clicks.jsonl").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    job = folder / filename
    job.write_text(textwrap.dedent(JOB.format(name=name)))
    return job


def outputs(folder: Path) -> list[Any]:
    return [orjson.loads(line)["value"] for line in (folder / "out.jsonl").read_bytes().split()]


def test_evtime_run_runs_a_job_file(tmp_path: Path) -> None:
    job = write_job(tmp_path / "a")
    assert main(["run", f"{job}:app"]) == 0
    assert outputs(tmp_path / "a") == [
        {"user": "ann", "start": 0, "n": 2},
        {"user": "bob", "start": 0, "n": 1},
        {"user": "ann", "start": 10_000, "n": 1},
    ]
    assert (tmp_path / "a" / "state" / "clickjob" / "clicks" / "0").is_dir()
    # A second run resumes from the snapshot: the input is consumed, nothing is emitted twice.
    assert main(["run", f"{job}:app"]) == 0
    assert len(outputs(tmp_path / "a")) == 3


def test_evtime_run_defaults_to_the_app_variable_and_takes_a_state_dir(tmp_path: Path) -> None:
    job = write_job(tmp_path / "b")
    assert main(["run", str(job), "--state-dir", str(tmp_path / "elsewhere")]) == 0
    assert len(outputs(tmp_path / "b")) == 3
    assert (tmp_path / "elsewhere" / "clickjob").is_dir()
    assert not (tmp_path / "b" / "state" / "clickjob" / "clicks").exists()


def test_evtime_run_loads_the_file_it_is_given(tmp_path: Path) -> None:
    # Two job files with the same name, and one named like a module already imported: each
    # run must execute its own file, not a module found under that name.
    first = write_job(tmp_path / "one", name="first")
    second = write_job(tmp_path / "two", name="second")
    shadow = write_job(tmp_path / "three", filename="json.py", name="third")
    assert load_app(f"{first}:app").name == "first"
    assert load_app(f"{second}:app").name == "second"
    assert load_app(f"{shadow}:app").name == "third"


def test_load_app_imports_a_module_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_job(tmp_path, filename="evtime_test_job_module.py", name="bymodule")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert load_app("evtime_test_job_module:app").name == "bymodule"


@pytest.mark.parametrize(
    ("target", "match"),
    [
        ("missing/job.py:app", r"no such file missing/job\.py"),
        ("evtime_no_such_module_xyz:app", r"cannot import 'evtime_no_such_module_xyz'.*MODULE:APP"),
        ("{job}:nothing", r"has no attribute 'nothing' \(apps in it: app\); give MODULE:APP"),
        ("{job}:not_an_app", r"not_an_app is int, not an evtime App"),
    ],
    ids=["no_file", "no_module", "no_attribute", "not_an_app"],
)
def test_load_app_gives_a_clear_error_for_a_bad_target(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: str, match: str
) -> None:
    job = write_job(tmp_path, filename="badtarget_job.py")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=match):
        load_app(target.format(job=job))


def test_evtime_run_with_a_bad_target_exits_2_with_the_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", str(tmp_path / "nope.py") + ":app"]) == 2
    assert "evtime: no such file" in capsys.readouterr().err
