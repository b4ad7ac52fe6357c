"""The code each workflow type's commands come from, and the hash of it its histories were
recorded on (``tests/histories/_sources.json``).

A workflow's commands follow from its own module and what it imports from ``workflows/``
and ``contracts/`` (the step interpreter, the messenger, the state machines' tables, the
rule compiler). When any of those files changes, running workflows replay through the new
code: ``tests/test_replay.py`` then fails until the change is recorded, with a history of
its new path (``python -m tests.record_histories <scenario>``, which updates the hash), as
CONTRIBUTING.md ("Changing workflow code") describes. A change that issues the same
commands (a comment, a query handler, a details text) is acknowledged with
``python -m tests.record_histories --acknowledge <WorkflowType>``; the replay of every
committed history is what proves it.
"""

from __future__ import annotations

import ast
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = Path(__file__).parent / "histories" / "_sources.json"
_PACKAGES = ("workflows", "contracts")


def _module_path(module: str) -> Path | None:
    base = ROOT.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m.split(".")[0] in _PACKAGES}


def source_files(workflow_class: type) -> list[Path]:
    """The workflow's module and, transitively, what it imports from workflows/ and
    contracts/ (package ``__init__`` files aside)."""
    start = sys.modules[workflow_class.__module__].__file__
    assert start is not None
    seen: set[Path] = set()
    todo = [Path(start).resolve()]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for module in _imports(path):
            found = _module_path(module)
            if found is not None:
                todo.append(found.resolve())
    return sorted(p for p in seen if p.name != "__init__.py")


def file_hashes(workflow_class: type) -> dict[str, str]:
    return {
        str(path.relative_to(ROOT)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in source_files(workflow_class)
    }


def source_hash(hashes: dict[str, str]) -> str:
    joined = "\n".join(f"{name} {digest}" for name, digest in sorted(hashes.items()))
    return hashlib.sha256(joined.encode()).hexdigest()


def load() -> dict[str, Any]:
    return json.loads(MANIFEST.read_text()) if MANIFEST.exists() else {}


def record(workflow_type: str, workflow_class: type, history: str | None) -> None:
    """Note that ``workflow_type``'s histories now stand for today's code (a history of it
    was just recorded, or a change that issues the same commands was acknowledged)."""
    manifest = load()
    hashes = file_hashes(workflow_class)
    entry = manifest.setdefault(workflow_type, {})
    entry["sha256"] = source_hash(hashes)
    entry["files"] = hashes
    if history is not None:
        entry["last_recorded"] = history
    MANIFEST.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def changed_files(workflow_type: str, workflow_class: type) -> list[str]:
    """The source files of ``workflow_type`` that differ from what its histories were
    recorded on; empty when they match."""
    entry = load().get(workflow_type)
    now = file_hashes(workflow_class)
    if entry is None:
        return sorted(now)
    if entry.get("sha256") == source_hash(now):
        return []
    before: dict[str, str] = entry.get("files", {})
    return sorted(name for name in set(now) | set(before) if now.get(name) != before.get(name))
