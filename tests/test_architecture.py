"""The layout's promises: stage folders never import job wiring, and no import cycles, even inside functions."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "filters", "schemas", "train_smoke")
STAGE_NAMED = {"DOWNLOAD", "IMAGE_FILTER"}  # stage-name constants not called *STAGE
STAGE_FOLDERS = ("read", "extract", "filter", "dedup", "images", "shards", "io", "core", "report", "export")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for package in PACKAGES for path in (ROOT / package).rglob("*.py")}


def imports_of(path: Path, known: set[str]) -> set[str]:
    """Project modules `path` imports anywhere in it (module level or inside functions)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    return found


def graph() -> dict[str, set[str]]:
    known = modules()
    edges = {name: imports_of(path, set(known)) - {name} for name, path in known.items()}
    for name in known:  # importing a.b.c runs a/__init__ and a/b/__init__ first
        parent = name.rpartition(".")[0]
        if parent in known:
            edges[name].add(parent)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in edges.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
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

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_finds_a_cycle_hidden_inside_a_function():
    edges = graph()
    assert "pipeline.jobs.build" in edges["pipeline.jobs.demo"]  # demo imports run_build inside a function
    edges["pipeline.core.stages"] = {*edges["pipeline.core.stages"], "pipeline.jobs.build"}
    assert any({"pipeline.core.stages", "pipeline.jobs.build"} <= set(component) for component in cycles(edges))


def test_no_import_cycles_even_inside_functions():
    edges = graph()
    # A package's __init__ re-exporting its own submodules is not a cycle a reader trips over.
    edges = {name: {t for t in targets if not (name.startswith(t + ".") and t in edges)}
             for name, targets in edges.items()}
    assert cycles(edges) == []


def test_stage_folders_never_import_job_wiring_or_the_cli():
    offenders = [
        f"{name} imports {target}"
        for name, targets in graph().items()
        if name.split(".")[:2][-1] in STAGE_FOLDERS and name.startswith("pipeline.")
        for target in targets
        if target.startswith(("pipeline.jobs", "pipeline.commands", "pipeline.cli"))
    ]
    assert offenders == []


def test_the_tree_shows_the_stages_in_flow_order():
    from pipeline.core.stages import STAGES

    folders = [s.folder for s in STAGES]
    for folder in ("read", "extract", "filter", "dedup", "images", "shards"):
        assert (ROOT / "pipeline" / folder / "__init__.py").exists(), folder
        assert folder in folders, f"no registered stage is owned by pipeline/{folder}"


def stage_constants() -> dict[str, str]:
    """Every module-level stage-name constant in pipeline/ (`STAGE = "dedup_url"`, `DOWNLOAD = "download"`...)."""
    found = {}
    for name, path in modules().items():
        if not name.startswith("pipeline."):
            continue
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if not (isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)):
                continue
            for target in node.targets:
                if isinstance(target, ast.Name) and (target.id.endswith("STAGE") or target.id in STAGE_NAMED):
                    found[f"{name}.{target.id}"] = node.value.value
    return found


def test_every_stage_name_in_the_code_is_registered():
    from pipeline.core.stages import BY_NAME
    from pipeline.export.writer import stage_of

    constants = stage_constants()
    assert len(constants) >= 12  # read, gate, extract, filter, dedup_*, download, image_filter, shard...
    assert {name: stage for name, stage in constants.items() if stage not in BY_NAME} == {}
    assert stage_of("mmc4") in BY_NAME and stage_of("pairs") in BY_NAME
