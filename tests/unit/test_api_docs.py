"""The API reference builds from the docstrings with pdoc (docs/api.py, `make docs`):
every public module imports, and no reference to an evtime name is broken."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def _api() -> ModuleType:
    spec = importlib.util.spec_from_file_location("evtime_docs_api", ROOT / "docs" / "api.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_reference_builds_without_warnings_or_broken_references(tmp_path: Path) -> None:
    problems = _api().build(tmp_path)
    assert problems == []
    pages = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.html")}
    for page in (
        "evtime.html", "evtime/app.html", "evtime/windows.html", "evtime/aggregates.html",
        "evtime/records.html", "evtime/connectors/kafka.html",
        "evtime/connectors/elasticsearch.html", "evtime/connectors/local.html",
        "evtime/settings/model.html",
    ):
        assert page in pages
    assert 'id="App.window"' in (tmp_path / "evtime/app.html").read_text()


def test_every_public_module_is_given_to_pdoc_once() -> None:
    modules = _api().public_modules()
    assert modules[0] == "evtime"
    assert len(modules) == len(set(modules))
    assert not any("._" in m or m.endswith("__main__") for m in modules)
    # Hidden from pdoc by evtime's __all__, so named: the packages and modules under it.
    assert {"evtime.app", "evtime.connectors", "evtime.settings"} <= set(modules)


def test_an_unlinked_evtime_name_is_a_broken_reference(tmp_path: Path) -> None:
    (tmp_path / "page.html").write_text(
        '<code><a href="app.html#App">evtime.app.App</a></code> <code>evtime.app.Nope</code> '
        "<code>evtime.windows.gone()</code> <code>len</code>"
    )
    assert _api().broken_references(tmp_path) == [
        "page.html: broken reference `evtime.app.Nope`",
        "page.html: broken reference `evtime.windows.gone`",
    ]
