"""ARCHITECTURE.md stays true: it names every module, and the library never imports the CLI."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Where each folder of the repository is installed inside the package (pyproject's package-dir).
FOLDERS = {"imgnet_build": "", "cli": "cli/", "schemas": "schemas/"}


def modules() -> list[str]:
    """Every Python module of the package, as ARCHITECTURE.md names it (a path inside imgnet_build/)."""
    found = []
    for folder, prefix in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            relative = path.relative_to(ROOT / folder).as_posix()
            if "migrations/versions/" in relative:
                continue  # named as a folder: one file per schema change
            if path.name == "__init__.py" and not path.read_text().strip():
                continue  # an empty package marker
            found.append(prefix + relative)
    return found


def test_architecture_names_every_module():
    text = (ROOT / "ARCHITECTURE.md").read_text()
    named = set(re.findall(r"`([\w/.]+\.py)`", text))
    missing = [module for module in modules() if module not in named]
    assert not missing, f"add a line for each to ARCHITECTURE.md: {missing}"
    gone = sorted(name for name in named if name not in modules())
    assert not gone, f"ARCHITECTURE.md names modules that no longer exist: {gone}"


def test_the_library_does_not_import_the_cli():
    offenders = []
    for path in sorted((ROOT / "imgnet_build").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else \
                [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            if any(name == "imgnet_build.cli" or name.startswith("imgnet_build.cli.") for name in names):
                offenders.append(path.relative_to(ROOT).as_posix())
    assert not offenders, offenders
