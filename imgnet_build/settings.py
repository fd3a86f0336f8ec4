"""The stage tables of `imgnet.toml` (`[fetch]`, `[label]`, `[export]`, `[report]`), type-checked.

Each table holds fields of one frozen settings dataclass; the file's values are checked
against the field's annotated type (a boolean is not a number, a number is not a string)
and then by the dataclass itself. One precedence everywhere:

    command-line flag > environment variable > imgnet.toml > the dataclass's default

so every default is written once, in its dataclass, and the CLI reads it from there.

    settings = StageSettings.from_tables({"fetch": {"workers": 8}}, "imgnet.toml")
    settings.make("fetch", workers=None, per_host=4)   # FetchSettings(workers=8, per_host=4, …)
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from importlib import import_module
from pathlib import Path
from typing import Any

from imgnet_build.errors import BadInput

__all__ = ["STAGES", "StageSettings", "check_table", "stage_class"]

# table name -> (module, dataclass); imported only when used (some stages import heavy libraries)
STAGES: dict[str, tuple[str, str]] = {
    "fetch": ("imgnet_build.fetch", "FetchSettings"),
    "label": ("imgnet_build.labeling.rounds", "LabelSettings"),
    "export": ("imgnet_build.split", "ExportOptions"),
    "report": ("imgnet_build.report", "ReportOptions"),
}
_SCALARS = (bool, int, float, str)
_NOT_IN_FILE = {"fetch": {"local_sources", "executor"},  # executor: the file's top-level `executor`
                "label": {"categories"}, "export": {"overwrite"}}


def stage_class(stage: str) -> type:
    module, name = STAGES[stage]
    return typing.cast(type, getattr(import_module(module), name))


def _allowed(annotation: Any) -> tuple[tuple[type, ...], tuple[type, ...]] | None:
    """(scalar types, types a list may hold) a field takes; None when a file cannot set it."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        members = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
    else:
        members = [annotation]
    scalars: list[type] = []
    listed: list[type] = []
    for member in members:
        if typing.get_origin(member) is tuple:
            args = typing.get_args(member)
            if len(args) == 2 and args[1] is Ellipsis and args[0] in _SCALARS:
                listed.append(args[0])
                continue
            return None
        if member not in _SCALARS:
            return None
        scalars.append(member)
    return tuple(scalars), tuple(listed)


_NAMES = {bool: ("true or false", "true or false values"), int: ("a whole number", "whole numbers"),
          float: ("a number", "numbers"), str: ("a string in quotes", "strings in quotes")}


def _wanted(scalars: tuple[type, ...], listed: tuple[type, ...]) -> str:
    names = [_NAMES[scalar][0] for scalar in scalars]
    names += [f"a list of {_NAMES[scalar][1]}" for scalar in listed]
    return " or ".join(names)


def _fits(value: object, scalars: tuple[type, ...]) -> bool:
    if isinstance(value, bool):
        return bool in scalars
    if isinstance(value, int):
        return int in scalars or float in scalars
    return any(isinstance(value, scalar) and scalar is not bool for scalar in scalars)


def check_table(cls: type, table: object, where: str, path: Path | str,
                skip: set[str] | frozenset[str] = frozenset()) -> dict[str, Any]:
    """The table's values, checked against `cls`'s field types (BadInput naming the setting otherwise)."""
    if not isinstance(table, dict):
        raise BadInput(f"{path}: {where} must be a table ([{where}]), not {table!r}")
    hints = typing.get_type_hints(cls)
    settable = {}
    for field in dataclasses.fields(cls):
        allowed = None if field.name in skip else _allowed(hints[field.name])
        if allowed is not None:
            settable[field.name] = allowed
    unknown = sorted(set(table) - set(settable))
    if unknown:
        raise BadInput(f"{path}: unknown [{where}] setting(s) {', '.join(unknown)}; known: {', '.join(sorted(settable))}")
    values: dict[str, Any] = {}
    for name, value in table.items():
        scalars, listed = settable[name]
        if isinstance(value, list) and listed and all(_fits(item, listed) for item in value):
            value = tuple(value)
        elif isinstance(value, list) or not _fits(value, scalars):
            raise BadInput(f"{path}: [{where}] {name} must be {_wanted(scalars, listed)}, not {value!r}")
        elif float in scalars and int not in scalars and isinstance(value, int):
            value = float(value)
        values[name] = value
    return values


@dataclasses.dataclass(frozen=True)
class StageSettings:
    """The checked `[fetch]`, `[label]`, `[export]` and `[report]` tables (only those present)."""

    tables: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_tables(cls, data: dict[str, object], path: Path | str) -> StageSettings:
        """Take the stage tables out of `data` (the parsed file), checked; BadInput names the bad setting."""
        tables = {}
        for stage in STAGES:
            if stage in data:
                table = check_table(stage_class(stage), data.pop(stage), stage, path, _NOT_IN_FILE.get(stage, set()))
                try:
                    stage_class(stage)(**table)  # the dataclass's own checks (ranges, combinations)
                except BadInput as exc:
                    raise BadInput(f"{path} [{stage}]: {exc}") from None
                tables[stage] = table
        return cls(tables)

    def make(self, stage: str, *, replaces: Mapping[str, tuple[str, ...]] | None = None, **flags: Any) -> Any:
        """The stage's settings: flags that are not None over the file's table over the defaults.

        `replaces` names file settings a given flag makes void (`--val-per-class` voids the
        file's `val_fraction`)."""
        given = {name: value for name, value in flags.items() if value is not None}
        values = dict(self.tables.get(stage, {}))
        for flag, voided in (replaces or {}).items():
            if flag in given:
                for name in voided:
                    values.pop(name, None)
        return stage_class(stage)(**{**values, **given})

    def default(self, stage: str, name: str) -> Any:
        """What a flag defaults to when not given: the file's value, else the dataclass's default."""
        if name in self.tables.get(stage, {}):
            return self.tables[stage][name]
        return {field.name: field.default for field in dataclasses.fields(stage_class(stage))}[name]
