"""The layers hold: no import cycle between the agent's packages, drivers/ knows nothing of agent/,
only the composition root knows the whole Agent, and what `make run`/`make watch` run needs nothing of tests/.

Imports are read with ``ast`` from the source (type-only imports under TYPE_CHECKING count too: a
cycle of types is still a cycle a reader has to untangle).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ALLOWED_AGENT_IMPORTERS = {"agent/app.py", "agent/cli/run.py"}  # the composition root and the `run` subcommand


def imports(path: Path, package: str) -> Iterator[tuple[str, list[str]]]:
    """(module imported, names taken from it) for every import statement of ``path``."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, []
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            yield module, [alias.name for alias in node.names]


def module_of(path: Path) -> tuple[str, str]:
    """(dotted module name, the package its relative imports start from)."""
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
        return ".".join(parts), ".".join(parts)
    return ".".join(parts), ".".join(parts[:-1])


def layer(module: str) -> str | None:
    """The node of the package graph: ``agent.<first part>`` (a subpackage or a top-level module)."""
    parts = module.split(".")
    if parts[0] != "agent" or len(parts) < 2:
        return None
    return ".".join(parts[:2])


def is_agent_module(module: str) -> bool:
    path = REPO.joinpath(*module.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def agent_graph() -> tuple[dict[str, set[str]], dict[tuple[str, str], set[str]]]:
    edges: dict[str, set[str]] = defaultdict(set)
    where: dict[tuple[str, str], set[str]] = defaultdict(set)
    for path in sorted((REPO / "agent").rglob("*.py")):
        module, package = module_of(path)
        source = layer(module)
        if source is None:
            continue
        for imported, names in imports(path, package):
            for target in [imported, *(f"{imported}.{name}" for name in names)]:
                node = layer(target)
                if node is not None and node != source and is_agent_module(target):
                    edges[source].add(node)
                    where[(source, node)].add(str(path.relative_to(REPO)))
    return edges, where


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(edges.get(node, ())):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
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


def test_the_agents_packages_import_each_other_without_a_cycle() -> None:
    edges, where = agent_graph()
    assert edges, "no imports found: the walk is broken"
    found = cycles(edges)
    detail = [f"{a} -> {b}: {sorted(where[(a, b)])}" for c in found for a in c for b in c if (a, b) in where]
    assert not found, "import cycles between packages of agent/:\n" + "\n".join(detail)


def test_the_cycle_check_sees_a_cycle_when_there_is_one() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_drivers_import_nothing_of_the_agent() -> None:
    offenders = [f"{path.relative_to(REPO)}: {module}"
                 for path in sorted((REPO / "drivers").rglob("*.py"))
                 for module, _ in imports(path, module_of(path)[1]) if module.split(".")[0] == "agent"]
    assert not offenders


def test_only_the_composition_root_and_the_run_subcommand_import_the_agent() -> None:
    importers = set()
    for path in sorted((REPO / "agent").rglob("*.py")):
        for module, names in imports(path, module_of(path)[1]):
            if module == "agent.app" or (module == "agent" and "app" in names):
                importers.add(str(path.relative_to(REPO)))
    assert importers <= ALLOWED_AGENT_IMPORTERS, importers - ALLOWED_AGENT_IMPORTERS
    assert "agent/cli/run.py" in importers, "the run subcommand starts the agent: the check looks in the wrong place"


def recipe(target: str) -> str:
    """The commands of one Makefile target (its tab-indented lines)."""
    lines = (REPO / "Makefile").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{target}:"))
    body = []
    for line in lines[start + 1:]:
        if not line.startswith("\t"):
            break
        body.append(line)
    return "\n".join(body)


def test_what_make_run_and_make_watch_run_imports_nothing_of_tests() -> None:
    run, watch = recipe("run"), recipe("watch")
    assert "-m devserver run" in run and "-m devserver.watch" in watch
    assert "tests" not in run + watch
    offenders = [f"{path.relative_to(REPO)}: {module}"
                 for path in sorted((REPO / "devserver").rglob("*.py"))
                 for module, _ in imports(path, module_of(path)[1]) if module.split(".")[0] == "tests"]
    assert not offenders
