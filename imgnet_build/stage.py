"""The one shape of every stage: what it is told while it runs, and what it gives back.

    result = stage(workspace, settings, *, progress=None)
    result.as_dict()   # the JSON document `--json` prints
    result.summary()   # the text the CLI prints without --json

`imgnet_build/__init__.py` exports the stages; tests/test_library_api.py holds each to this shape.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

__all__ = ["Progress", "Say", "Result", "Document"]


class Progress(Protocol):
    """Told how far a stage has come: `done` of `total` (images hashed, downloads, categories planned)."""

    def __call__(self, done: int, total: int, /) -> None: ...


Say = Callable[[str], None]  # takes one line per step, as a stage that narrates (label run, the demo) finishes it


@runtime_checkable
class Result(Protocol):
    """What every stage returns: it prints itself the two ways the CLI prints it."""

    def as_dict(self) -> Any:
        """The JSON document of `--json` (a dict; a list of documents for the listing views)."""
        ...

    def summary(self) -> str:
        """The text the CLI prints: one line for a stage that writes, the table for a view."""
        ...


class Document:
    """A result read as its document too (`result["accepted"]`), as the plain dicts it replaced were."""

    def as_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def __getitem__(self, key: str) -> Any:
        return self.as_dict()[key]
