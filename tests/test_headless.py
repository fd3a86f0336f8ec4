"""The browser tests cannot pass off a missing browser as a skip in CI."""

from __future__ import annotations

import headless
import pytest


def test_a_missing_browser_fails_under_ci_and_skips_elsewhere(monkeypatch):
    """Before: `pytest.importorskip("playwright.sync_api")` skipped the browser tests even in CI."""
    monkeypatch.setattr(headless, "CHROMIUM", "/nonexistent/chromium")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="browser test cannot run in CI: no browser at /nonexistent"):
        headless.playwright_or_skip()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="no browser at /nonexistent/chromium"):
        headless.playwright_or_skip()
