"""The shape of the house (README "Layout", CONTRIBUTING "Layering"), checked on the source:
no import circles, no import that runs back up a layer, workflows that reach only
contracts, a sandbox that passes only contracts through, and modules that stay small.

Imports are read from the source (every ``import``, inside functions and ``TYPE_CHECKING``
blocks too), so a circle hidden behind a late import still counts."""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

from temporalio.worker.workflow_sandbox import SandboxRestrictions

import worker

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = (
    "activities",
    "api",
    "channels",
    "cli",
    "config",
    "contracts",
    "dashboard",
    "db",
    "embedded",
    "payments",
    "services",
    "workflows",
)
MAX_LINES = 400

# What each part may import of ours. A layer imports those below it, never above.
ALLOWED: dict[str, set[str]] = {
    "contracts": set(),
    # The command line talks HTTP to a running Sutra: nothing of ours beneath it.
    "cli": set(),
    "config": {"contracts"},
    "db": {"config", "contracts"},
    "channels": {"config", "contracts"},
    "payments": {"config", "contracts"},
    "services": {"config", "contracts", "db", "channels", "payments"},
    "workflows": {"contracts"},
    "activities": {"config", "contracts", "db", "services", "channels", "payments"},
    "api": {"config", "contracts", "db", "services", "dashboard"},
    # The dashboard sits beside the routers (api/app.py mounts it) and calls services too.
    "dashboard": {"config", "contracts", "db", "services"},
    "embedded": {"config", "contracts", "db", "services", "api", "worker"},
    "worker": {
        "activities",
        "channels",
        "config",
        "contracts",
        "db",
        "payments",
        "services",
        "workflows",
    },
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def _modules() -> dict[str, Path]:
    found = {"worker": ROOT / "worker.py"}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" not in path.parts:
                found[_module_name(path)] = path
    return found


def _resolve(name: str) -> str | None:
    modules = _modules()
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


@cache
def _imports() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    target = full if full in modules else _resolve(node.module)
                    if target:
                        targets.add(target)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if target := _resolve(alias.name):
                        targets.add(target)
        targets.discard(name)
        graph[name] = targets
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one member (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph.get(node, ())):
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

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _domain(module: str) -> str:
    """``services.journeys.rules`` → ``services.journeys``; anything else its top package."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "services" and len(parts) > 2 else parts[0]


def test_no_module_imports_itself_round_a_circle():
    assert _cycles(_imports()) == []


def test_no_domain_of_services_imports_itself_round_a_circle():
    domains: dict[str, set[str]] = {}
    for module, targets in _imports().items():
        if module.startswith("services."):
            domains.setdefault(_domain(module), set()).update(
                _domain(t)
                for t in targets
                if t.startswith("services.") and _domain(t) != _domain(module)
            )
    assert _cycles(domains) == []


def test_no_import_runs_back_up_a_layer():
    wrong = sorted(
        f"{module} imports {target}"
        for module, targets in _imports().items()
        for target in targets
        if (top := module.split(".")[0]) != (below := target.split(".")[0])
        and below not in ALLOWED[top]
    )
    assert wrong == []


def test_the_worker_passes_only_contracts_through_the_sandbox():
    ours = (
        worker._RESTRICTIONS.passthrough_modules - SandboxRestrictions.default.passthrough_modules
    )
    assert {m for m in ours if m.split(".")[0] in (*PACKAGES, "worker")} == {"contracts"}


def test_modules_stay_under_400_lines():
    long = sorted(
        f"{path.relative_to(ROOT)}: {n} lines"
        for path in _modules().values()
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    )
    assert long == []
