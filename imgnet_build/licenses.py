"""Licence names as sources write them, reduced to short codes a `--license` filter can name.

    license_code("CC BY-SA 4.0")                                  -> "cc-by-sa"
    license_code("https://creativecommons.org/licenses/by/2.0/")  -> "cc-by"
    license_code("CC0 1.0"), license_code("Public Domain Mark 1.0") -> "cc0", "pdm"
    license_code("All Rights Reserved")                           -> "all-rights-reserved"
    license_code(None), license_code("  ")                        -> None (unknown)

Versions are dropped (a filter on `cc-by` keeps CC BY 2.0 and 4.0 alike). Anything that
is not a Creative Commons or public-domain name becomes its own lower-case slug, so a
filter can still name it exactly.
"""

from __future__ import annotations

import re
from functools import lru_cache

from imgnet_build.errors import BadInput

__all__ = ["license_code", "parse_license_spec", "UNKNOWN"]

UNKNOWN = "unknown"  # the code counted for images whose source gave no licence
_CC_URL = re.compile(r"creativecommons\.org/(?:licenses/([a-z-]+)|publicdomain/(zero|mark))", re.I)
_CC_NAME = re.compile(r"^(?:cc[\s_-]*)?(by(?:[\s_-]+(?:nc|sa|nd))*)(?:[\s_-]+v?[0-9.]+.*)?$", re.I)
_CC0 = re.compile(r"^cc[\s_-]*0\b|^cc[\s_-]*zero\b", re.I)
_PUBLIC_DOMAIN = re.compile(r"^(?:pdm\b|public[\s_-]*domain|pd\b|pd[\s_-])", re.I)


@lru_cache(maxsize=4096)
def license_code(text: str | None) -> str | None:
    """The short code of a licence name or URL; None when there is none."""
    if text is None or not text.strip():
        return None
    text = text.strip()
    if match := _CC_URL.search(text):
        by, public = match.groups()
        if public:
            return "cc0" if public.lower() == "zero" else "pdm"
        return "cc-" + by.lower()
    if _CC0.match(text):
        return "cc0"
    if _PUBLIC_DOMAIN.match(text):
        return "pdm"
    if (match := _CC_NAME.match(text)) and (text.lower().startswith("cc") or text.lower() == match.group(1).lower()):
        return "cc-" + re.sub(r"[\s_-]+", "-", match.group(1).lower())
    return re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-") or None


def parse_license_spec(spec: str) -> tuple[str, ...]:
    """`"cc0,cc-by,CC BY-SA"` -> `("cc-by", "cc-by-sa", "cc0")`: codes, sorted, no repeats."""
    codes = {license_code(part) for part in spec.split(",") if part.strip()}
    codes.discard(None)
    if not codes:
        raise BadInput(f"--license {spec!r} names no licence; give codes such as cc0,cc-by,cc-by-sa")
    return tuple(sorted(codes))  # type: ignore[arg-type]
