"""The import rule of DESIGN.md section 1, checked by reading imports (AST).

``config <- supervision <- actors <- programs``: a layer imports only layers
to its left. ``dspex.errors`` is a leaf every layer may import. ``testing/``,
``cli.py``, ``serve/`` and top-level private modules may import anything, and
no layer imports ``dspex.serve``. Only ``serve/`` imports the ASGI stack (the
optional ``serve`` extra).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "dspex"
LAYERS = ["config", "supervision", "actors", "programs"]
SHARED_LEAVES = {"dspex.errors", "dspex._lazy"}


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
    for leaf in ("errors.py", "_lazy.py"):
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
