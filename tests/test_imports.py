"""The package's imports point one way: no circle anywhere, methods never import the platform,
the platform's modules never import studies or the dashboard (the CLI, the entry point above
them all, excepted), and the dashboard loads neither Ray nor torch.

Imports are read from the source (``ast``), function-level ones included: a lazy import that
closes a circle is still a circle a reader has to untangle.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: source folder -> its package (pyproject.toml's package-dir)
PACKAGES = {"methods": "sslab.methods", "platform": "sslab.platform", "studies": "sslab.studies",
            "dashboard": "sslab.dashboard"}


def _modules() -> dict[str, Path]:
    found = {}
    for folder, package in PACKAGES.items():
        for path in (ROOT / folder).rglob("*.py"):
            parts = [p for p in path.relative_to(ROOT / folder).with_suffix("").parts if p != "__init__"]
            found[".".join([package, *parts])] = path
    return found


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that ``name`` imports, anywhere in its source."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        else:
            continue
        out |= {t for t in targets if t in known and t != name}
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, set(modules)) for name, path in modules.items()}


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return circles


def test_the_graph_is_read_from_the_source():
    graph = _graph()
    assert "sslab.platform.spec" in graph["sslab.platform.runner"]  # a module-level import
    assert "sslab.platform.runner" in graph["sslab.platform.cli"]  # a function-level one


def test_no_module_imports_itself_back():
    circles = _circles(_graph())
    assert not circles, "import circles:\n" + "\n".join(" ⇄ ".join(c) for c in circles)


def test_imports_point_one_way():
    upward = [(a, b) for a, targets in _graph().items() for b in targets
              if (a.startswith("sslab.methods") and not b.startswith("sslab.methods"))
              or (a.startswith("sslab.platform") and a != "sslab.platform.cli"
                  and b.startswith(("sslab.studies", "sslab.dashboard")))]
    assert not upward, "imports against the direction methods ← platform ← studies, dashboard:\n" + "\n".join(
        f"{a} → {b}" for a, b in upward)


def test_the_dashboard_loads_neither_ray_nor_torch():
    code = ("import sys; import sslab.dashboard.store, sslab.dashboard.charts, sslab.dashboard.selection; "
            "print(sorted(m for m in ('ray', 'torch') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"
