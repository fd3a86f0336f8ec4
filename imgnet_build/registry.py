"""One shape for every kind of plug-in: a `Registry`, plug-in classes found by name.

    METHODS = Registry("consensus method")
    METHODS.add(Dynamic)                  # keyed by Dynamic.name
    METHODS["dynamic"]                    # the class (`in`, `names()`, iteration: a dict)

Sources, exporters, labeling backends and consensus methods each keep one (`registries()`
lists them); tests/test_plugins.py holds every registered entry of each to its contract.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TypeVar

__all__ = ["Registry", "registries"]

T = TypeVar("T")


class Registry(dict[str, T]):
    """{name: plug-in class}. `modules` are imported on the first lookup: the built-in plug-ins
    register themselves when their module is imported (optional ones may be missing)."""

    def __init__(self, kind: str, modules: tuple[str, ...] = (), *, optional: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.kind, self.modules, self.optional = kind, modules, optional
        self._loaded = False

    def add(self, plugin: T, name: str | None = None) -> T:
        """Register `plugin` under `name` (default: its `name` attribute); returns it (a decorator)."""
        self[name if name is not None else getattr(plugin, "name")] = plugin  # noqa: B009  (T has no bound)
        return plugin

    def register(self, name: str) -> Callable[[T], T]:
        """A decorator registering a class under `name`, which also becomes its `name` attribute."""
        def decorate(plugin: T) -> T:
            setattr(plugin, "name", name)  # noqa: B010
            return self.add(plugin, name)
        return decorate

    def load(self) -> Registry[T]:
        """Import the modules of the built-in plug-ins (once); returns the registry."""
        if not self._loaded:
            for module in self.modules:
                importlib.import_module(module)
            for module in self.optional:
                try:
                    importlib.import_module(module)
                except ModuleNotFoundError as exc:  # the module itself is absent; a missing dependency is an error
                    if exc.name != module:
                        raise
            self._loaded = True
        return self

    def names(self) -> list[str]:
        """Every registered name, sorted."""
        return sorted(self.load())

    def copy(self) -> Registry[T]:
        """A loaded registry with the same plug-ins (a test registers a fake one in a copy)."""
        other: Registry[T] = Registry(self.kind, self.modules, optional=self.optional)
        other.update(self.load())
        other._loaded = True
        return other


def registries() -> dict[str, Registry]:
    """Every plug-in registry, loaded: {"source": …, "exporter": …, "backend": …, "consensus": …}."""
    from imgnet_build.exporters import EXPORTERS
    from imgnet_build.labeling.backends import BACKENDS
    from imgnet_build.labeling.consensus import METHODS
    from imgnet_build.sources import REGISTRY

    return {"source": REGISTRY.load(), "exporter": EXPORTERS.load(), "backend": BACKENDS.load(),
            "consensus": METHODS.load()}
