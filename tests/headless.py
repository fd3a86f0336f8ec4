"""The browser the page tests drive: Debian's chromium through playwright's sync API.

Where either is missing a browser test is skipped, except in CI (`CI=true`, as `.ci/run`
sets it), where a missing browser fails the test instead of passing it off as a skip."""

from __future__ import annotations

import os
from types import ModuleType

import pytest

CHROMIUM = "/usr/bin/chromium"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def playwright_or_skip() -> ModuleType:
    """`playwright.sync_api`, with chromium at CHROMIUM; a skip (a failure under CI=true) otherwise."""
    try:
        from playwright import sync_api
    except ImportError as exc:
        _missing(f"playwright is not installed ({exc})")
    if not os.access(CHROMIUM, os.X_OK):
        _missing(f"no browser at {CHROMIUM} (scripts/setup.sh test installs Debian's chromium)")
    return sync_api


def _missing(why: str) -> None:
    if in_ci():
        pytest.fail(f"browser test cannot run in CI: {why}")
    pytest.skip(why)
