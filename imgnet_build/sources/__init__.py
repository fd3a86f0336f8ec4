"""Candidate sources: one small class each behind the `Source` protocol, found by name in `REGISTRY`.

A source SPEC is `name` or `name:argument` (`urls:candidates.csv`, `dir:photos/`, `wikimedia`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

from imgnet_build.errors import UnknownSource
from imgnet_build.registry import Registry

__all__ = ["Proposal", "CategoryQueries", "Source", "REGISTRY", "register", "open_source"]


@dataclasses.dataclass(frozen=True)
class CategoryQueries:
    """What a search source needs to know about one category."""

    wnid: str
    queries: tuple[tuple[int, str, str], ...] = ()  # (query id, text, language), best first
    synset: str | None = None  # the nltk name, e.g. toy_poodle.n.01
    have: int = 0  # URLs this source already proposed for the category in earlier runs


@dataclasses.dataclass(frozen=True)
class Proposal:
    """One candidate image a source proposes for one category."""

    wnid: str
    url: str  # http(s) URL, or an absolute file path for local sources
    rank: int | None = None
    license: str | None = None
    attribution: str | None = None
    source_sha1: str | None = None  # hex SHA-1 of the file, when the source knows it
    truth: bool | None = None
    query_id: int | None = None
    error: str | None = None  # a row the source could not use (bad line, unknown wnid): recorded, not fetched


class Source(Protocol):
    name: str
    local: bool  # True: urls are file paths read from disk, no HTTP
    searches: bool  # True: proposes by searching the category's queries (gather expands them first)

    def __init__(self, argument: str, **settings: Any) -> None:
        """`argument`: what follows `name:` in the SPEC ("" when nothing does)."""

    def propose(self, categories: Iterable[CategoryQueries], per_category: int) -> Iterator[Proposal]:
        """Yield candidates for the given categories, at most about per_category each."""
        ...


REGISTRY: Registry[type[Source]] = Registry(
    "source", tuple(f"imgnet_build.sources.{module}" for module in ("dirs", "flickr", "openverse", "urls", "wikimedia")))


def register(name: str) -> Callable[[type[Source]], type[Source]]:
    """A class decorator: the source called `name` (which becomes its `name`)."""
    return REGISTRY.register(name)


def open_source(spec: str, **settings) -> Source:
    """A source from its SPEC, e.g. `urls:candidates.csv`."""
    REGISTRY.load()
    name, _, argument = spec.partition(":")
    if name not in REGISTRY:
        raise UnknownSource(f"unknown source {spec!r}; choose from {', '.join(sorted(REGISTRY))} "
                            "(e.g. urls:FILE.csv, dir:PATH, wikimedia)")
    return REGISTRY[name](argument, **settings)
