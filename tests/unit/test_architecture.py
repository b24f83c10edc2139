"""The package tree's rules, checked on the source: imports run one way, from the entry points
down to the core; no cycles; no import hidden in a function; tooling stays out of the runtime."""

from __future__ import annotations

import ast
import graphlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BACKEND = ROOT / "backend"

# Lower layers never import higher ones. Within a layer, packages may import each other
# only in the directions listed in SIDEWAYS.
LAYERS = {
    "core": 0,  # config, errors, files, events, layout, project_params, audit, logs
    "models": 1,
    "labelstudio": 1,
    "analytics": 1,  # what annotators did to pre-annotations, its cost, and the ledger
    "encoder": 1,  # the self-supervised image encoder learned from a project's own images
    "services": 2,  # the composition root: builds models and Label Studio services
    "training": 3,
    "ranking": 3,
    "jobs": 4,
    "serving": 4,
    "entry": 5,  # cli, wsgi
}
SIDEWAYS = {("labelstudio", "models"), ("serving", "jobs"), ("analytics", "labelstudio")}
# format turns Boxes into regions; the app starts the background trainer; the analytics read
# annotations' regions
ENTRY_POINTS = {"cli", "wsgi"}
# Function-level imports allowed, and why.
LAZY = {
    ("backend/models/detector.py", "backend.models.scoring_predictor"): "it subclasses an "
    "ultralytics predictor, and ultralytics reads its settings on import: after "
    "prepare_ultralytics",
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _group(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 2 and parts[1] in ENTRY_POINTS:
        return "entry"
    if len(parts) == 2 and parts[1] == "services":
        return "services"
    if len(parts) >= 3 or (len(parts) == 2 and (BACKEND / parts[1]).is_dir()):
        return parts[1]
    return "core"


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(imported backend module, whether the import sits inside a function)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: list[tuple[str, bool]] = []
    nested: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            nested.update(id(n) for n in ast.walk(node) if n is not node)
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        for name in names:
            if name.split(".")[0] in ("backend", "devkit", "benchmarks", "tests"):
                found.append((name, id(node) in nested))
    return found


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in BACKEND.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for imported, _ in _imports(path):
            while imported not in modules and "." in imported:
                imported = imported.rsplit(".", 1)[0]  # `from pkg.mod import name`
            if imported in modules and imported != name and not name.startswith(imported + "."):
                graph[name].add(imported)
    return graph


def test_backend_imports_have_no_cycle() -> None:
    graph = {m: {d for d in deps if d != "backend"} for m, deps in _graph().items()}
    try:
        tuple(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as exc:
        pytest.fail(f"import cycle: {' -> '.join(exc.args[1])}")


def test_imports_run_down_the_layers() -> None:
    wrong = []
    for module, deps in _graph().items():
        for dep in deps:
            if dep == "backend":
                continue
            a, b = _group(module), _group(dep)
            if a == b or (a, b) in SIDEWAYS:
                continue
            if LAYERS[a] <= LAYERS[b]:
                wrong.append(f"{module} ({a}) imports {dep} ({b})")
    assert not wrong, "\n".join(sorted(wrong))


def _allowed_lazy(path: Path, name: str) -> bool:
    where = str(path.relative_to(ROOT))
    return any(
        where == lazy_path and (name == module or name.startswith(module + "."))
        for lazy_path, module in LAZY
    )


def test_no_backend_import_hides_in_a_function() -> None:
    hidden = [
        f"{path.relative_to(ROOT)} imports {name} inside a function"
        for path in BACKEND.rglob("*.py")
        for name, in_function in _imports(path)
        if in_function and not _allowed_lazy(path, name)
    ]
    assert not hidden, "\n".join(hidden)


def test_the_runtime_never_imports_tooling() -> None:
    """devkit/ (demo, Label Studio harness, generators), benchmarks/ and tests/ are not in
    the wheel: nothing under backend/ may import them."""
    tooling = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in BACKEND.rglob("*.py")
        for name, _ in _imports(path)
        if not name.startswith("backend")
    ]
    assert not tooling, "\n".join(tooling)


@pytest.mark.parametrize(
    "code",
    [
        "import backend.wsgi",
        "import backend.cli",  # what `ls-active-yolo serve --help` imports
    ],
)
def test_entry_points_load_no_tooling_module(code: str, tmp_path: Path) -> None:
    probe = (
        f"{code}; import sys; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('devkit', 'benchmarks', 'tests')))"
    )
    env = {**os.environ, "MODEL_DIR": str(tmp_path), "TRAINING": "0", "PYTHONPATH": str(ROOT)}
    answer = subprocess.run(
        [sys.executable, "-c", probe], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert answer.returncode == 0, answer.stderr[-2000:]
    assert answer.stdout.strip().splitlines()[-1] == "[]"


def test_modules_stay_small() -> None:
    """A module over 600 lines holds two concerns: split it (none is exempt today)."""
    large = [
        f"{path.relative_to(ROOT)}: {n} lines"
        for path in [*BACKEND.rglob("*.py"), *(ROOT / "strategies").rglob("*.py")]
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > 600
    ]
    assert not large, "\n".join(large)
