"""The import rules of DESIGN.md section 1, checked by reading imports (AST).

``config <- supervision <- actors <- programs``: a layer imports only layers
to its left. ``dspex.errors`` is a leaf every layer may import. ``testing/``,
``cli.py``, ``serve/`` and top-level private modules may import anything, and
no layer imports ``dspex.serve``. Only ``serve/`` imports the ASGI stack (the
optional ``serve`` extra).

And no module imports itself back through others: the module import graph
(every import, including those inside functions and under ``TYPE_CHECKING``)
has no cycle.
"""

from __future__ import annotations

import ast
import itertools
import os
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "dspex"
LAYERS = ["config", "supervision", "actors", "programs"]
SHARED_LEAVES = {"dspex.errors", "dspex._lazy", "dspex._record"}


def _layer_of(module: str) -> str | None:
    parts = module.split(".")
    if len(parts) >= 2 and parts[0] == "dspex" and parts[1] in LAYERS:
        return parts[1]
    return None


def _module_name(path: Path, root: Path = PACKAGE.parent) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, root: Path = PACKAGE.parent) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    module = _module_name(path, root)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append((node.lineno, target))
            if target == "dspex":  # `from dspex import x` names submodules too
                found.extend((node.lineno, f"dspex.{a.name}") for a in node.names)
    return found


def layer_violations(package: Path = PACKAGE) -> list[str]:
    problems: list[str] = []
    for path in sorted(package.rglob("*.py")):
        own = _layer_of(_module_name(path, package.parent))
        if own is None:
            continue
        allowed = set(LAYERS[: LAYERS.index(own) + 1])
        for lineno, target in _imports(path, package.parent):
            if not (target == "dspex" or target.startswith("dspex.")):
                continue
            if target in SHARED_LEAVES:
                continue
            target_layer = _layer_of(target)
            if target == "dspex" or target_layer is None or target_layer not in allowed:
                problems.append(
                    f"{path.relative_to(package.parent)}:{lineno} ({own}) imports {target}"
                )
    return problems


def test_layers_import_only_to_their_left() -> None:
    assert layer_violations() == []


def test_checker_catches_a_violation(tmp_path: Path) -> None:
    # The rule must be able to fail: a config module importing actors is caught.
    # The probe lives in a scratch package, never in the source tree.
    (tmp_path / "dspex" / "config").mkdir(parents=True)
    bad = tmp_path / "dspex" / "config" / "_layer_probe_tmp.py"
    bad.write_text("from dspex.actors import LMRequest\nfrom ..programs import x\n")
    problems = layer_violations(tmp_path / "dspex")
    assert any("_layer_probe_tmp.py:1" in p and "dspex.actors" in p for p in problems)
    assert any("_layer_probe_tmp.py:2" in p and "dspex.programs" in p for p in problems)


def test_shared_leaves_import_nothing_from_dspex() -> None:
    for leaf in ("errors.py", "_lazy.py", "_record.py"):
        targets = [t for _, t in _imports(PACKAGE / leaf)]
        assert not [t for t in targets if t.startswith("dspex")], leaf


SERVE_ONLY = ("starlette", "uvicorn", "prometheus_client")


def serve_stack_imports(package: Path = PACKAGE) -> list[str]:
    """Imports of the ASGI stack (the ``serve`` extra) outside ``dspex/serve/``."""
    problems = []
    for path in sorted(package.rglob("*.py")):
        if path.relative_to(package).parts[0] == "serve":
            continue
        for lineno, target in _imports(path, package.parent):
            if target.split(".")[0] in SERVE_ONLY:
                problems.append(f"{path.relative_to(package.parent)}:{lineno} imports {target}")
    return problems


def test_only_dspex_serve_imports_the_asgi_stack() -> None:
    # The serve extra is optional: the rest of dspex must work without it.
    assert serve_stack_imports() == []


def test_serve_stack_checker_catches_an_import(tmp_path: Path) -> None:
    (tmp_path / "dspex" / "actors").mkdir(parents=True)
    (tmp_path / "dspex" / "actors" / "_probe.py").write_text("import starlette.routing\n")
    (tmp_path / "dspex" / "serve").mkdir()
    (tmp_path / "dspex" / "serve" / "_ok.py").write_text("import uvicorn\n")
    assert serve_stack_imports(tmp_path / "dspex") == [
        "dspex/actors/_probe.py:1 imports starlette.routing"
    ]


def test_no_layer_imports_dspex_serve(tmp_path: Path) -> None:
    # dspex.serve sits on top like cli.py: a layer importing it is a violation.
    (tmp_path / "dspex" / "programs").mkdir(parents=True)
    (tmp_path / "dspex" / "programs" / "_probe.py").write_text("from dspex.serve import app\n")
    assert layer_violations(tmp_path / "dspex") == [
        "dspex/programs/_probe.py:1 (programs) imports dspex.serve"
    ]


# -- no import cycles -------------------------------------------------------------------

Graph = dict[str, dict[str, int]]  # module -> {imported module: first line importing it}


def import_graph(package: Path = PACKAGE) -> Graph:
    """Every dspex module and the dspex modules it imports, wherever the import sits.

    ``from pkg import name`` points at the submodule ``pkg.name`` when there is
    one, else at ``pkg`` (its ``__init__``). Importing ``a.b.c`` also runs the
    ``__init__`` of ``a`` and ``a.b``; those implied edges are left out, since
    every package's ``__init__`` imports its own modules and each would be a cycle.
    """
    root = package.parent
    modules = {_module_name(path, root): path for path in package.rglob("*.py")}
    graph: Graph = {name: {} for name in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        package_name = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package_name.split(".")
                    base = base[: len(base) - (node.level - 1)]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                targets = [
                    f"{source}.{alias.name}" if f"{source}.{alias.name}" in modules else source
                    for alias in node.names
                ]
            for target in targets:
                if target in modules and target != name:
                    seen = graph[name].get(target, node.lineno)
                    graph[name][target] = min(seen, node.lineno)
    return graph


def _components(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            advanced = False
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                    advanced = True
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def _a_cycle(graph: Graph, members: list[str]) -> list[str]:
    """One concrete cycle through the first of ``members`` (breadth-first, shortest)."""
    inside = set(members)
    start = members[0]
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for nxt in sorted(graph[node]):
                if nxt not in inside:
                    continue
                if nxt == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(came_from[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if nxt not in came_from:
                    came_from[nxt] = node
                    following.append(nxt)
        frontier = following
    return members  # unreachable for a strongly connected component


def import_cycles(package: Path = PACKAGE) -> list[str]:
    """Each import cycle as ``a:LINE -> b:LINE -> ... -> a`` (LINE: where the next is imported)."""
    graph = import_graph(package)
    cycles = []
    for members in _components(graph):
        path = _a_cycle(graph, members)
        steps = [f"{a}:{graph[a][b]}" for a, b in itertools.pairwise(path)]
        text = " -> ".join([*steps, path[-1]])
        if len(members) > len(path) - 1:
            text += f"  (one of the cycles among {len(members)} modules: {', '.join(members)})"
        cycles.append(text)
    return cycles


def test_no_import_cycles() -> None:
    cycles = import_cycles()
    assert cycles == [], "import cycles:\n" + "\n".join(cycles)


def test_cycle_checker_catches_cycles_through_functions_and_type_checking(
    tmp_path: Path,
) -> None:
    # The rule must be able to fail: a function-level import and a TYPE_CHECKING
    # import each close a cycle. The probes live in a scratch package.
    pkg = tmp_path / "dspex" / "programs"
    pkg.mkdir(parents=True)
    (tmp_path / "dspex" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "_a.py").write_text("from dspex.programs._b import B\n")
    (pkg / "_b.py").write_text("def f():\n    from . import _a\n")
    (pkg / "_c.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ._d import D\n"
    )
    (pkg / "_d.py").write_text("import dspex.programs._c\n")
    (pkg / "_e.py").write_text("from dspex.programs import _a\n")  # imports, no cycle
    cycles = import_cycles(tmp_path / "dspex")
    assert len(cycles) == 2, cycles
    assert any(
        c.startswith("dspex.programs._a:1 -> dspex.programs._b:2 -> dspex.programs._a")
        for c in cycles
    )
    assert any(
        c.startswith("dspex.programs._c:3 -> dspex.programs._d:1 -> dspex.programs._c")
        for c in cycles
    )


# -- no wiring at import time -------------------------------------------------------------

_HOOKS_PROBE = """
import sys
import dspex.actors._lm._model as model
import dspex.actors._telemetry_emitter as emitter
import dspex.programs
import dspex

def installed():
    return model._scoped_params is not None, emitter._history_off is not None

assert installed() == (False, False), f"importing installed hooks: {installed()}"
if sys.argv[1] == "start":
    rt = dspex.start()
else:  # a DSPy-style script: the default runtime starts under the first program call
    from dspex.testing import DummyLM
    dspex.settings.configure(lm=DummyLM([{"answer": "4"}]))
    assert dspex.Predict("question -> answer")(question="2+2?").answer == "4"
assert installed() == (True, True), f"hooks after a runtime started: {installed()}"
with dspex.context(temperature=0.3, max_tokens=9, disable_history=True):
    assert model._scoped_params() == {"temperature": 0.3, "max_tokens": 9}
    assert emitter._history_off() is True
assert model._scoped_params() is None and emitter._history_off() is False
print("ok")
"""


@pytest.mark.parametrize("how", ["start", "default"])
def test_importing_installs_no_hooks_and_a_started_runtime_has_them(
    tmp_path: Path, how: str
) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": str(PACKAGE.parent),
        "DSPEX_CACHE__DIR": str(tmp_path),
    }
    done = subprocess.run(
        [sys.executable, "-c", _HOOKS_PROBE, how],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
