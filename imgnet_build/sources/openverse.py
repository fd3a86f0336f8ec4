"""`openverse` — openly licensed images through the Openverse API.

    GET /v1/images/?q=Q&page_size=20&page=N[&license=by,by-sa,cc0][&mature=false]

answers `{"result_count", "page_count", "page_size", "page", "results": [{"url", "license",
"license_version", "creator", "attribution", ...}]}`. Anonymous clients may ask for at most
20 results a page and 20 pages deep (400 results a query) and are rate limited (a burst
per minute, a sustained quota per day): we wait `min_interval` (3 s) between requests and on
429 honour `Retry-After` up to `max_wait`; a longer wait fails the query and pauses the
source instead of hammering the API. With an `api_key` (an Openverse OAuth access token,
sent as a Bearer token) pages may hold up to 500 results.

Settings: base_url, api_key, licenses ("by,by-sa,cc0…"; default: any), page_size,
max_pages, user_agent, timeout, retries, max_wait, min_interval, session.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from imgnet_build.sources import register
from imgnet_build.sources.http import ApiError, Hit, HttpSettings, PoliteClient, SearchSource

__all__ = ["Openverse", "license_name"]

BASE_URL = "https://api.openverse.org"
ANONYMOUS_PAGE_SIZE, ANONYMOUS_PAGE_DEPTH = 20, 20


def license_name(code: str | None, version: str | None) -> str | None:
    """Openverse's license code and version as people write it: "by-sa", "2.0" -> "CC BY-SA 2.0"."""
    if not code:
        return None
    code = code.lower()
    if code == "cc0":
        return f"CC0 {version or '1.0'}"
    if code == "pdm":
        return f"Public Domain Mark {version or '1.0'}"
    return " ".join(part for part in ("CC", code.upper(), version) if part)


@register("openverse")
class Openverse(SearchSource):
    """Openverse image search; yields Proposals with license and Openverse's attribution line."""

    name = "openverse"

    def __init__(self, argument: str = "", **settings: Any):
        self.token = settings.get("api_key")
        anonymous = not self.token
        self.client = PoliteClient(HttpSettings.pick(settings, base_url=argument or BASE_URL,
                                                     min_interval=3.0 if anonymous else 0.5),
                                   session=settings.get("session"))
        limit = ANONYMOUS_PAGE_SIZE if anonymous else 500
        self.page_size = max(1, min(limit, int(settings.get("page_size") or ANONYMOUS_PAGE_SIZE)))
        depth = int(settings.get("max_pages") or ANONYMOUS_PAGE_DEPTH)
        self.max_pages = min(depth, ANONYMOUS_PAGE_DEPTH) if anonymous else depth
        licenses = settings.get("licenses")
        self.licenses = licenses if isinstance(licenses, str) or not licenses else ",".join(licenses)
        self.headers = {"Authorization": f"Bearer {self.token}"} if self.token else None

    def search(self, text: str, language: str) -> Iterator[Hit]:
        """Hits for one query, pages 1, 2, … up to page_count or max_pages."""
        params: dict[str, Any] = {"q": text, "page_size": self.page_size, "mature": "false"}
        if self.licenses:
            params["license"] = self.licenses
        page = 1
        while page <= self.max_pages:
            body = self.client.get_json("v1/images/", {**params, "page": page}, headers=self.headers)
            results = body.get("results") if isinstance(body, dict) else None
            if not isinstance(results, list):
                raise ApiError(f"unexpected answer: {str(body)[:100]}")
            for result in results:
                if result.get("url"):
                    yield Hit(url=result["url"],
                              license=license_name(result.get("license"), result.get("license_version")),
                              attribution=result.get("attribution") or result.get("creator"))
            if not results or page >= int(body.get("page_count") or 0):
                return
            page += 1
