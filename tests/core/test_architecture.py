"""The house and its rooms: which subpackage may import which, Qt only in the widgets, no
private imports across modules, no import cycles, and a reason beside every local import.

Static: every ``.py`` under ``src/napari_unet`` is parsed with :mod:`ast` and nothing is
imported. Every import statement counts wherever it stands: at module level, under
``if TYPE_CHECKING:``, in ``try``, or inside a function. Each failure lists every offending
import as ``path:line``.

The rules
---------
- Layers (``LAYERS``): a subpackage imports only itself and the layers listed for it. The
  top-level ``napari_unet/__init__.py`` may import anything (it loads the API lazily); as a
  target it counts as ``napari_unet``, which only the CLI and the widgets may import. A module
  outside every layer, or an import of a ``napari_unet`` module that does not exist, fails too.
- GUI: no module outside ``_widgets`` imports napari, Qt (qtpy, PyQt5/6, PySide2/6, superqt),
  magicgui or vispy.
- Private: no module imports another module's ``_private`` name (dunder names are public), and
  a private module or package (``napari_unet.x._y``) is imported only from inside the package
  that holds it (so ``_widgets`` may use its own ``_plan``). Third-party privates are not judged.
- Cycles: the graph of module-level imports (function-local and ``TYPE_CHECKING`` imports do
  not run at import time, so they are left out) has no cycle. A cycle's failure lists every
  import between the modules of that strongly connected set, since each one lies on a cycle.
- Local imports: an import inside a ``def`` carries a comment saying why it is local, on its
  own lines or on the line just above. Imports stacked directly under it (no blank line)
  share that comment. Linter pragmas alone (``# noqa: ...``, ``# type: ignore``) say no why.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE = "napari_unet"
SRC = REPO / "src" / PACKAGE

ROOT = PACKAGE  # the top-level package, as a layer and as a target
EVERY = {
    "common",
    "models",
    "io",
    "engine",
    "training",
    "scale",
    "samples",
    "proofread",
    "exchange",
    "cli",
    "_widgets",
    ROOT,
}
LAYERS: dict[str, set[str]] = {
    "common": set(),
    "models": {"common"},
    "io": {"common"},
    "samples": {"common"},
    "engine": {"common", "models"},
    "training": {"common", "models", "engine"},
    "scale": {"common", "models", "engine", "io"},
    "proofread": {"common", "models", "engine"},
    "exchange": {"common", "models", "engine", "samples"},
    "cli": EVERY - {"_widgets"},
    "_widgets": EVERY - {"cli"},
    ROOT: EVERY,
}
GUI = {"napari", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "superqt", "magicgui", "vispy"}
PRAGMA = re.compile(
    r"#\s*(noqa(:\s*[A-Z]+\d+(\s*,\s*[A-Z]+\d+)*)?|type:\s*ignore(\[[^\]]*\])?|pragma:\s*no\s*cover"
    r"|fmt:\s*(on|off|skip))\s*$"
)


@dataclass(frozen=True)
class Import:
    """One imported module or name: ``import a.b`` gives one, ``from a import b, c`` two."""

    file: str  # relative to the repository, for messages
    line: int
    end_line: int
    importer: str  # dotted name of the importing module
    target: str  # dotted module imported (for ``from m import x``: m.x if that is a module, else m)
    name: str | None  # for ``from m import x`` where x is not a module: x
    local: bool  # inside a function
    type_checking: bool  # under ``if TYPE_CHECKING:``
    statement: str  # the whole import statement, as written (normalised by ast.unparse)

    def where(self) -> str:
        return f"{self.file}:{self.line}"

    def what(self) -> str:
        return f"from {self.target} import {self.name}" if self.name else self.target


def _private(part: str) -> bool:
    return part.startswith("_") and not (part.startswith("__") and part.endswith("__"))


def discover(src: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` under ``src`` (the package's folder)."""
    modules = {}
    for path in sorted(src.rglob("*.py")):
        parts = [src.name, *path.relative_to(src).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


class _Collector(ast.NodeVisitor):
    def __init__(self, module: str, is_package: bool, file: str, modules: dict[str, Path]) -> None:
        self.module, self.is_package, self.file, self.modules = module, is_package, file, modules
        self.functions = 0
        self.type_checking = 0
        self.found: list[Import] = []

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.functions += 1
        self.generic_visit(node)
        self.functions -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = _function

    def visit_If(self, node: ast.If) -> None:
        if not _is_type_checking(node.test):
            self.generic_visit(node)
            return
        self.visit(node.test)
        self.type_checking += 1
        for child in node.body:
            self.visit(child)
        self.type_checking -= 1
        for child in node.orelse:
            self.visit(child)

    def _add(self, node: ast.stmt, target: str, name: str | None) -> None:
        self.found.append(
            Import(
                self.file,
                node.lineno,
                node.end_lineno or node.lineno,
                self.module,
                target,
                name,
                self.functions > 0,
                self.type_checking > 0,
                ast.unparse(node),
            )
        )

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(node, alias.name, None)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            package = self.module.split(".") if self.is_package else self.module.split(".")[:-1]
            base = package[: len(package) - (node.level - 1)]
            source = ".".join([*base, *([node.module] if node.module else [])])
        else:
            source = node.module or ""
        for alias in node.names:
            submodule = f"{source}.{alias.name}"
            if alias.name != "*" and submodule in self.modules:
                self._add(node, submodule, None)
            else:
                self._add(node, source, alias.name)


def collect(src: Path, repo: Path) -> tuple[dict[str, Path], list[Import]]:
    """Every import of every module under ``src``."""
    modules = discover(src)
    found: list[Import] = []
    for module, path in modules.items():
        collector = _Collector(module, path.name == "__init__.py", path.relative_to(repo).as_posix(), modules)
        collector.visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
        found += collector.found
    return modules, found


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ROOT


def _ours(imp: Import) -> bool:
    return imp.target == PACKAGE or imp.target.startswith(PACKAGE + ".")


def layer_violations(modules: dict[str, Path], imports: list[Import]) -> list[str]:
    bad = [
        f"{path.relative_to(REPO) if path.is_relative_to(REPO) else path}: module {m} is in no layer "
        f"(add {layer(m)!r} to LAYERS)"
        for m, path in modules.items()
        if layer(m) not in LAYERS
    ]
    for imp in imports:
        if not _ours(imp):
            continue
        if imp.target not in modules:
            bad.append(f"{imp.where()}: {imp.what()}: no such module under src/{PACKAGE}")
            continue
        src, dst = layer(imp.importer), layer(imp.target)
        if src in LAYERS and dst != src and dst not in LAYERS[src]:
            allowed = ", ".join(sorted(LAYERS[src])) or "nothing else"
            bad.append(f"{imp.where()}: {src} imports {dst} ({imp.what()}); {src} may import: {allowed}")
    return bad


def gui_violations(imports: list[Import]) -> list[str]:
    return [
        f"{imp.where()}: {imp.what()} outside _widgets"
        for imp in imports
        if layer(imp.importer) != "_widgets" and imp.target.split(".")[0] in GUI
    ]


def private_violations(modules: dict[str, Path], imports: list[Import]) -> list[str]:
    bad = []
    for imp in imports:
        if not _ours(imp):
            continue
        parts = imp.target.split(".")
        for i, part in enumerate(parts[1:], start=1):
            owner = ".".join(parts[:i])
            if _private(part) and not (imp.importer == owner or imp.importer.startswith(owner + ".")):
                bad.append(
                    f"{imp.where()}: {imp.what()}: private module {'.'.join(parts[: i + 1])} "
                    f"from outside {owner}"
                )
                break
        if imp.name and _private(imp.name):
            bad.append(f"{imp.where()}: {imp.what()}: private name {imp.name} of {imp.target}")
    return bad


def _strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's algorithm, iterative; the sets with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(component)
    return found


def cycle_violations(modules: dict[str, Path], imports: list[Import]) -> list[str]:
    graph: dict[str, set[str]] = {m: set() for m in modules}
    edges: dict[tuple[str, str], list[Import]] = defaultdict(list)
    for imp in imports:
        if imp.local or imp.type_checking or imp.target not in modules or imp.target == imp.importer:
            continue
        graph[imp.importer].add(imp.target)
        edges[imp.importer, imp.target].append(imp)
    bad = []
    for component in _strongly_connected(graph):
        bad.append(f"cycle among {', '.join(sorted(component))}:")
        for (a, b), found in sorted(edges.items()):
            if a in component and b in component:
                bad += [f"  {imp.where()}: {a} imports {imp.what()}" for imp in found]
    return bad


def _comment_lines(source: str) -> set[int]:
    """The lines that carry a comment other than a bare linter pragma."""
    return {
        token.start[0]
        for token in tokenize.generate_tokens(io.StringIO(source).readline)
        if token.type == tokenize.COMMENT and not PRAGMA.fullmatch(token.string.strip())
    }


def local_import_violations(modules: dict[str, Path], imports: list[Import]) -> list[str]:
    by_file: dict[str, list[Import]] = defaultdict(list)
    for imp in imports:
        if imp.local:
            by_file[imp.file].append(imp)
    bad = []
    for file, found in sorted(by_file.items()):
        commented = _comment_lines((REPO / file).read_text(encoding="utf-8"))
        statements = sorted({(imp.line, imp.end_line): imp for imp in found}.items())
        explained: dict[int, bool] = {}  # end line of a statement -> it carries a reason
        for (line, end), imp in statements:
            ok = any(row in commented for row in range(line - 1, end + 1)) or explained.get(line - 1, False)
            explained[end] = ok
            if not ok:
                bad.append(f"{imp.where()}: `{imp.statement}` inside a function, with no comment why")
    return bad


@pytest.fixture(scope="module")
def tree() -> tuple[dict[str, Path], list[Import]]:
    return collect(SRC, REPO)


def _report(title: str, bad: list[str]) -> str:
    return f"{title} ({sum(not b.startswith('cycle') for b in bad)}):\n" + "\n".join(bad)


def test_the_scan_sees_the_package(tree) -> None:
    modules, imports = tree
    assert {layer(m) for m in modules} >= set(LAYERS), "a layer of LAYERS has no module: the scan is blind"
    assert any(imp.local for imp in imports) and any(imp.type_checking for imp in imports)


def test_layers(tree) -> None:
    bad = layer_violations(*tree)
    assert not bad, _report("imports across layers that the layers forbid", bad)


def test_no_gui_outside_widgets(tree) -> None:
    bad = gui_violations(tree[1])
    assert not bad, _report("napari / Qt / magicgui / vispy imported outside _widgets", bad)


def test_no_private_imports_across_modules(tree) -> None:
    bad = private_violations(*tree)
    assert not bad, _report("private names or modules imported from outside their owner", bad)


def test_no_import_cycles(tree) -> None:
    bad = cycle_violations(*tree)
    assert not bad, _report("module-level import cycles", bad)


def test_local_imports_say_why(tree) -> None:
    bad = local_import_violations(*tree)
    assert not bad, _report("function-local imports without a comment saying why", bad)


# The checker itself, on a small made-up package: each rule catches what it should and no more.

FAKE = {
    "__init__.py": "def __getattr__(name):\n    import importlib\n    return importlib\n",
    "common/__init__.py": "",
    "common/util.py": "from napari_unet.engine import run\n",
    "engine/__init__.py": "",
    "engine/run.py": (
        "from typing import TYPE_CHECKING\n"
        "from . import _tiles\n"
        "from napari_unet.common.util import run as _r\n"
        "if TYPE_CHECKING:\n"
        "    from napari_unet.io.files import Reader\n"
        "def f():\n"
        "    # torch is heavy: on first use\n"
        "    import torch\n"
        "    import numpy  # noqa: F401\n"
        "\n"
        "    import qtpy  # noqa: F401\n"
        "    from napari_unet.models.net import _build  # the net only when asked\n"
        "    from napari_unet.models import (\n"
        "        net,  # loaded late: circular otherwise\n"
        "    )\n"
    ),
    "engine/_tiles.py": "",
    "io/__init__.py": "",
    "io/files.py": "from napari_unet.engine.run import f\nfrom napari_unet.engine._tiles import x\n",
    "models/__init__.py": "",
    "models/net.py": "from napari_unet.nothing import x\n",
    "extra.py": "",
}


def test_the_checker_on_a_made_up_package(tmp_path, monkeypatch) -> None:
    src = tmp_path / "src" / PACKAGE
    for name, text in FAKE.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_text(text)
    monkeypatch.setitem(globals(), "REPO", tmp_path)
    modules, imports = collect(src, tmp_path)
    run = "src/napari_unet/engine/run.py"

    assert layer_violations(modules, imports) == [
        "src/napari_unet/extra.py: module napari_unet.extra is in no layer (add 'extra' to LAYERS)",
        "src/napari_unet/common/util.py:1: common imports engine (napari_unet.engine.run); "
        "common may import: nothing else",
        f"{run}:5: engine imports io (from napari_unet.io.files import Reader); "
        "engine may import: common, models",
        "src/napari_unet/io/files.py:1: io imports engine (from napari_unet.engine.run import f); "
        "io may import: common",
        "src/napari_unet/io/files.py:2: io imports engine (from napari_unet.engine._tiles import x); "
        "io may import: common",
        "src/napari_unet/models/net.py:1: from napari_unet.nothing import x: "
        "no such module under src/napari_unet",
    ]
    assert gui_violations(imports) == [f"{run}:11: qtpy outside _widgets"]
    assert private_violations(modules, imports) == [
        f"{run}:12: from napari_unet.models.net import _build: private name _build of napari_unet.models.net",
        "src/napari_unet/io/files.py:2: from napari_unet.engine._tiles import x: "
        "private module napari_unet.engine._tiles from outside napari_unet.engine",
    ]
    # the TYPE_CHECKING import (run -> io.files) and the local ones make no cycle; this one does
    assert cycle_violations(modules, imports) == [
        "cycle among napari_unet.common.util, napari_unet.engine.run:",
        "  src/napari_unet/common/util.py:1: napari_unet.common.util imports napari_unet.engine.run",
        f"  {run}:3: napari_unet.engine.run imports from napari_unet.common.util import run",
    ]
    # torch: the comment above; numpy: stacked under torch; qtpy: a pragma alone, after a blank
    assert local_import_violations(modules, imports) == [
        "src/napari_unet/__init__.py:2: `import importlib` inside a function, with no comment why",
        f"{run}:11: `import qtpy` inside a function, with no comment why",
    ]
