"""Packaging and documentation facts that drift unless checked (issue 10, item 14)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from imgnet_build.dedup import MAX_THRESHOLD

ROOT = Path(__file__).parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_license_and_the_setuptools_that_reads_it():
    assert PYPROJECT["project"]["license"] == "MIT" and (ROOT / "LICENSE").read_text().startswith("MIT License")
    assert "setuptools>=77" in PYPROJECT["build-system"]["requires"][0]  # SPDX license strings


def test_boto3_is_an_extra_and_the_core_runs_without_it(tmp_path):
    assert not any(dep.startswith("boto3") for dep in PYPROJECT["project"]["dependencies"])
    assert {"s3", "mturk"} <= set(PYPROJECT["project"]["optional-dependencies"])
    script = f"""
import sys
sys.modules["boto3"] = sys.modules["botocore"] = None  # as if not installed
from imgnet_build.errors import BadInput
from imgnet_build.workspace import Workspace
ws = Workspace.init({str(tmp_path / "ws")!r})
print(ws.status()["candidates"]["ok"])
try:
    Workspace.init({str(tmp_path / "s3")!r}, blobs="s3://bucket/x")
except BadInput as exc:
    print(exc)
"""
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert run.stdout == "0\nan s3:// blob store needs boto3: pip install 'imgnet-build[s3]'\n", run.stderr


def test_schemas_have_no_made_up_domains_and_agree_with_the_cli():
    for path in (ROOT / "schemas").glob("*.json"):
        assert not json.loads(path.read_text())["$id"].startswith("http"), path.name
    clusters = json.loads((ROOT / "schemas" / "clusters.schema.json").read_text())
    assert clusters["properties"]["threshold"]["maximum"] == MAX_THRESHOLD


def test_the_readme_names_files_that_exist():
    text = (ROOT / "README.md").read_text()
    named = set(re.findall(r"`((?:[\w.-]+/)+[\w.-]+\.(?:py|sh|json|toml|md|txt|j2))`", text))
    named |= set(re.findall(r"`([A-Z]+\.md)`", text))
    assert named and sorted(name for name in named if not (ROOT / name).exists()) == []
