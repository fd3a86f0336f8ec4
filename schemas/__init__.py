"""The JSON Schemas of every document the tool reads or writes, and validation against them."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources

__all__ = ["load_schema", "validate"]


@cache
def load_schema(name: str) -> dict:
    """The schema `schemas/<name>.schema.json`."""
    return json.loads(resources.files("imgnet_build.schemas").joinpath(f"{name}.schema.json").read_text())


def validate(document: object, name: str) -> None:
    """Raise jsonschema.ValidationError when `document` does not match schema `name`."""
    import jsonschema

    jsonschema.validate(document, load_schema(name))
