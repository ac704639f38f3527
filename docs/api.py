"""Build the API reference of evtime from its docstrings, with pdoc.

    python docs/api.py [OUT]        # default build/api; open OUT/index.html

Every public module is documented (evtime, evtime.connectors.* and the rest),
those a package's ``__all__`` hides included. The build fails (exit status 1)
on any pdoc warning (a module that cannot be imported, an annotation that does
not resolve) and on a broken reference: a fully qualified name in backticks
(```evtime.app.App```) that names nothing pdoc documents.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "evtime"
# The pattern of a reference pdoc did not turn into a link (it links those it resolves).
UNLINKED = re.compile(r"<code>(evtime(?:\.\w+)+)(?:\(\))?</code>")


def public_modules(package: str = PACKAGE) -> list[str]:
    """The modules to give pdoc: the package, and each public module pdoc would not reach
    through its parent (a package with ``__all__`` lists only what it names)."""
    root = importlib.import_module(package)
    names = [package]
    covered = {package}  # the modules pdoc documents: those named and those it reaches
    for info in pkgutil.walk_packages(root.__path__, f"{package}."):
        parent_name, _, leaf = info.name.rpartition(".")
        if any(part.startswith("_") for part in info.name.split(".")):
            continue  # private, or __main__ (importing it would run the command)
        listed = getattr(importlib.import_module(parent_name), "__all__", None)
        if not (parent_name in covered and (listed is None or leaf in listed)):
            names.append(info.name)
        covered.add(info.name)
    return names


def build(out: Path) -> list[str]:
    """Write the HTML reference to ``out``; return the problems found (none: it is good)."""
    import pdoc
    import pdoc.render

    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    pdoc.render.configure(docformat="restructuredtext", show_source=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pdoc.pdoc(*public_modules(), output_directory=out)
    # pdoc warns with UserWarning; a ResourceWarning of something collected meanwhile is
    # not about the reference.
    found = [f"pdoc: {w.message}" for w in caught if issubclass(w.category, UserWarning)]
    return found + broken_references(out)


def broken_references(out: Path) -> list[str]:
    """The references to evtime names that the pages under ``out`` leave unlinked."""
    return [
        f"{page.relative_to(out)}: broken reference `{name}`"
        for page in sorted(out.rglob("*.html"))
        for name in sorted(set(UNLINKED.findall(page.read_text())))
    ]


def main(argv: list[str]) -> int:
    out = Path(argv[0] if argv else ROOT / "build" / "api")
    problems = build(out)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print(f"{len(problems)} problems in the API reference", file=sys.stderr)
        return 1
    print(f"API reference: {out / 'index.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
