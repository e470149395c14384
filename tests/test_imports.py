"""The package's imports point one way, wing by wing, and no module imports itself back.

The wings and what each may import (besides itself):

    methods    pure PyTorch: nothing of sslab
    data       the datasets wing (naming, sources, decoding, cache, subsets): methods, for the
               views' ``Normalization`` that each split's pixel statistics fill
    results    the results wing (store, metric names, summary, trial rows): nothing of sslab
    plan       what to run (a study's declaration, trial specifications, profiles, cost): methods, results
    evaluation measures of a frozen representation (kNN, probes, invariance, label-free), torch only:
               methods, results (metric names), plan (a profile's evaluation sizes)
    engine     the Ray glue (placement, runner, trial, Tune callbacks, Train loop): all of the above
    export     a finished trial's backbone as one file and back (``sslab export``, ``sslab.load_backbone``):
               methods (the backbone), data (a dataset's statistics for an old store), results (the
               store it reads), plan; not engine: it reads checkpoints as files, with no Ray
    reports    what ``sslab report`` and ``sslab status`` print from a results store: results only
    cli        the entry point: all of the above, and the studies package to find study scripts
    studies    the study scripts: plan, and cli for their ``__main__``
    dashboard  reads a results store: results only
    sslab      the package itself: export, for its lazy ``sslab.load_backbone``

Imports are read from the source (``ast``), function-level ones included: a lazy import that
closes a circle is still a circle a reader has to untangle.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: package -> its source folder (pyproject.toml's package-dir)
PACKAGES = {"sslab": ROOT / "src" / "sslab", "sslab.studies": ROOT / "studies"}
LOWER = {"methods": set(), "data": {"methods"}, "results": set(), "plan": {"methods", "results"}}
LOWER["evaluation"] = {"methods", "results", "plan"}
#: a trial's training state on storage (sslab/checkpoints.py): written by the engine, read by the export
LOWER["checkpoints"] = {"results"}
LOWER["engine"] = {"methods", "data", "results", "plan", "evaluation", "checkpoints"}
LOWER["export"] = {"methods", "data", "results", "plan", "checkpoints"}
LOWER["reports"] = {"results"}
LOWER["cli"] = LOWER["engine"] | {"engine", "studies", "export", "reports"}
LOWER["studies"] = {"plan", "cli"}
LOWER["dashboard"] = {"results"}
LOWER["sslab"] = {"export"}  # the package's lazy ``load_backbone`` (sslab/__init__.py)


def wing(module: str) -> str:
    return module.split(".")[1] if "." in module else "sslab"


def _modules() -> dict[str, Path]:
    found = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = [p for p in path.relative_to(folder).with_suffix("").parts if p != "__init__"]
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
            submodules = [f"{base}.{alias.name}" for alias in node.names]
            # `from sslab import methods` imports sslab.methods; `from x.y import name`, x.y itself
            targets = [t for t in submodules if t in known] or [base]
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
    assert "sslab.plan.spec" in graph["sslab.engine.runner"]  # a module-level import
    assert "sslab.engine.runner" in graph["sslab.cli"]  # a function-level one


def test_no_module_imports_itself_back():
    circles = _circles(_graph())
    assert not circles, "import circles:\n" + "\n".join(" ⇄ ".join(c) for c in circles)


def test_every_module_belongs_to_a_wing():
    assert {wing(m) for m in _graph()} == {"sslab", *LOWER}


def test_imports_point_one_way():
    graph = _graph()
    against = [(a, b) for a, targets in graph.items() for b in targets
               if wing(b) != wing(a) and wing(b) not in LOWER.get(wing(a), set())]
    assert not against, "imports against the wings' direction:\n" + "\n".join(f"{a} → {b}" for a, b in against)


def test_the_cli_finds_studies_without_importing_one():
    """The CLI imports the studies package (to list it) but no study: a study imports the CLI."""
    assert {b for b in _graph()["sslab.cli"] if wing(b) == "studies"} == {"sslab.studies"}
    assert not (ROOT / "studies" / "__init__.py").read_text().count("import ")


def test_the_dashboard_loads_neither_ray_nor_torch():
    code = ("import sys; import sslab.dashboard.store, sslab.dashboard.charts, sslab.dashboard.selection; "
            "print(sorted(m for m in ('ray', 'torch') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"
