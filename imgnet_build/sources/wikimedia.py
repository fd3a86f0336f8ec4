"""`wikimedia` — file search on Wikimedia Commons through the MediaWiki Action API.

One request per 50 results:

    api.php?action=query&format=json&generator=search&gsrsearch=Q&gsrnamespace=6&gsrlimit=50
           &prop=imageinfo&iiprop=url|size|mime|sha1|extmetadata&maxlag=5

paged by merging the answer's `continue` object into the next request until there is none.
Pages come keyed by page id; the search order is each page's `index`. Each hit carries the
file URL, `LicenseShortName` as license, `Artist` (HTML stripped) as attribution and the
file's SHA-1, which lets the fetcher skip files it already has. Non-image files (SVG, PDF,
video, audio) are left out. A `maxlag` error is retried after `Retry-After` (Commons asks
bots to send `maxlag=5` and back off when servers lag). Settings: base_url, user_agent,
timeout, retries, max_wait, min_interval (see `HttpSettings`), session, page_size (≤ 50).
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from typing import Any

from imgnet_build.sources import register
from imgnet_build.sources.http import ApiError, Hit, HttpSettings, PoliteClient, SearchSource

__all__ = ["WikimediaCommons", "strip_html"]

BASE_URL = "https://commons.wikimedia.org/w/api.php"
SKIPPED_MIME = ("image/svg+xml", "image/vnd.djvu", "image/x-xcf")
_TAG = re.compile(r"<[^>]*>")


def strip_html(value: str | None) -> str | None:
    """Plain text of an extmetadata HTML value ("<a href=…>Ann</a>" -> "Ann"); None when empty."""
    if not value:
        return None
    text = " ".join(html.unescape(_TAG.sub(" ", value)).split())
    return text or None


def _maxlag(body: Any) -> str | None:
    error = body.get("error") if isinstance(body, dict) else None
    return f"maxlag ({error.get('info', 'servers lagging')})" if error and error.get("code") == "maxlag" else None


@register("wikimedia")
class WikimediaCommons(SearchSource):
    """Wikimedia Commons file search; yields Proposals with license, attribution and sha1."""

    name = "wikimedia"

    def __init__(self, argument: str = "", **settings: Any):
        self.client = PoliteClient(HttpSettings.pick(settings, base_url=argument or BASE_URL),
                                   session=settings.get("session"))
        self.page_size = max(1, min(50, int(settings.get("page_size") or 50)))

    def search(self, text: str, language: str) -> Iterator[Hit]:
        """Hits for one query in Commons' search order, page after page."""
        params: dict[str, Any] = {
            "action": "query", "format": "json", "generator": "search", "gsrsearch": text, "gsrnamespace": 6,
            "gsrlimit": self.page_size, "prop": "imageinfo", "iiprop": "url|size|mime|sha1|extmetadata",
            "iiextmetadatafilter": "LicenseShortName|Artist", "maxlag": 5,
        }
        while True:
            body = self.client.get_json("", params, retry_if=_maxlag)
            if not isinstance(body, dict):
                raise ApiError(f"unexpected answer: {str(body)[:100]}")
            if "error" in body:
                error = body["error"]
                raise ApiError(f"{error.get('code', 'error')}: {error.get('info', '')}".strip())
            yield from self._hits(body.get("query", {}).get("pages", {}))
            if "continue" not in body:
                return
            params = {**params, **body["continue"]}

    @staticmethod
    def _hits(pages: dict | list) -> Iterator[Hit]:
        pages = list(pages.values()) if isinstance(pages, dict) else list(pages)
        for page in sorted(pages, key=lambda page: page.get("index", 0)):
            for info in page.get("imageinfo", [])[:1]:
                mime = info.get("mime", "")
                if not info.get("url") or not mime.startswith("image/") or mime in SKIPPED_MIME:
                    continue
                meta = info.get("extmetadata", {})
                yield Hit(url=info["url"], license=strip_html(meta.get("LicenseShortName", {}).get("value")),
                          attribution=strip_html(meta.get("Artist", {}).get("value")),
                          source_sha1=(info.get("sha1") or "").lower() or None)
