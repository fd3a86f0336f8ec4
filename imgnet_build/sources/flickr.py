"""`flickr` — Flickr photo search (`flickr.photos.search`, REST, JSON) with a key from FLICKR_API_KEY.

    GET services/rest/?method=flickr.photos.search&api_key=K&text=Q&format=json&nojsoncallback=1
        &license=1,2,…&min_upload_date=T0&max_upload_date=T1&sort=relevance&per_page=500&page=N
        &extras=license,owner_name,url_o,url_l,o_dims,date_upload

answers `{"photos": {"page", "pages", "perpage", "total", "photo": [...]}, "stat": "ok"}` or
`{"stat": "fail", "code", "message"}`. Flickr returns only the first 4,000 results of a
query, so a query runs over upload-date windows: when a window reports more than 4,000,
it is split in two (newest half first) until each window fits, and then paged. Flickr
allows 3,600 requests an hour per key: `min_interval` is 1 s. A rejected key stops the
command (`MissingCredentials`); other failures fail only the query.

Settings: api_key (else FLICKR_API_KEY), licenses (Flickr license ids, default every
Creative Commons and public-domain one), min_upload_date / max_upload_date (YYYY-MM-DD or
Unix time), per_page (≤ 500), base_url, user_agent, timeout, retries, max_wait,
min_interval, session.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Iterator
from typing import Any

from imgnet_build.errors import BadInput, MissingCredentials
from imgnet_build.sources import register
from imgnet_build.sources.http import ApiError, Hit, HttpSettings, PoliteClient, SearchSource

__all__ = ["Flickr", "LICENSES", "RESULT_CAP"]

BASE_URL = "https://api.flickr.com/services/rest/"
KEY_VARIABLE = "FLICKR_API_KEY"
RESULT_CAP = 4000  # Flickr answers at most this many results per query
MIN_WINDOW = 3600  # seconds; a window this short is paged as it is, even past the cap
FIRST_UPLOAD = 1072915200  # 2004-01-01, before Flickr opened
EXTRAS = "license,owner_name,url_o,url_l,o_dims,date_upload"
LICENSES = {  # flickr.photos.licenses.getInfo
    "0": "All Rights Reserved", "1": "CC BY-NC-SA 2.0", "2": "CC BY-NC 2.0", "3": "CC BY-NC-ND 2.0",
    "4": "CC BY 2.0", "5": "CC BY-SA 2.0", "6": "CC BY-ND 2.0", "7": "No known copyright restrictions",
    "8": "United States Government Work", "9": "CC0 1.0", "10": "Public Domain Mark 1.0",
}
OPEN_LICENSES = "1,2,3,4,5,6,7,8,9,10"


def _timestamp(value: Any, name: str) -> int:
    if isinstance(value, (int, float)):
        return int(value)
    try:
        day = value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value))
    except ValueError:
        raise BadInput(f"flickr {name} {value!r} is not a date (YYYY-MM-DD) or a Unix time") from None
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp())


@register("flickr")
class Flickr(SearchSource):
    """Flickr search over upload-date windows; yields Proposals with license and owner name."""

    name = "flickr"

    def __init__(self, argument: str = "", **settings: Any):
        self.api_key = settings.get("api_key") or os.environ.get(KEY_VARIABLE)
        if not self.api_key:
            raise MissingCredentials(f"the flickr source needs an API key: set {KEY_VARIABLE} "
                                     "(get one at https://www.flickr.com/services/apps/create/)")
        self.client = PoliteClient(HttpSettings.pick(settings, base_url=argument or BASE_URL, min_interval=1.0),
                                   session=settings.get("session"))
        self.per_page = max(1, min(500, int(settings.get("per_page") or 500)))
        licenses = settings.get("licenses") or OPEN_LICENSES
        self.licenses = licenses if isinstance(licenses, str) else ",".join(str(item) for item in licenses)
        self.first = _timestamp(settings.get("min_upload_date") or FIRST_UPLOAD, "min_upload_date")
        self.last = _timestamp(settings.get("max_upload_date") or int(time.time()), "max_upload_date")

    def search(self, text: str, language: str) -> Iterator[Hit]:
        """Hits for one query: date windows newest first, each paged up to Flickr's cap."""
        windows = [(self.first, self.last)]
        while windows:
            low, high = windows.pop()
            photos = self._page(text, low, high, 1)
            if int(photos.get("total") or 0) > RESULT_CAP and high - low > MIN_WINDOW:
                middle = (low + high) // 2
                windows += [(low, middle), (middle + 1, high)]  # the newer half is popped first
                continue
            page = 1
            while True:
                yield from self._hits(photos.get("photo") or [])
                page += 1
                if page > int(photos.get("pages") or 0) or (page - 1) * self.per_page >= RESULT_CAP:
                    break
                photos = self._page(text, low, high, page)

    def _page(self, text: str, low: int, high: int, page: int) -> dict:
        params = {"method": "flickr.photos.search", "api_key": self.api_key, "text": text, "format": "json",
                  "nojsoncallback": 1, "license": self.licenses, "min_upload_date": low, "max_upload_date": high,
                  "sort": "relevance", "content_type": 1, "media": "photos", "extras": EXTRAS,
                  "per_page": self.per_page, "page": page}
        body = self.client.get_json("", params)
        if not isinstance(body, dict) or body.get("stat") != "ok":
            code, message = (body.get("code"), body.get("message")) if isinstance(body, dict) else (None, str(body)[:100])
            if code == 100:
                raise MissingCredentials(f"Flickr rejected the key in {KEY_VARIABLE}: {message}")
            raise ApiError(f"Flickr error {code}: {message}")
        return body.get("photos") or {}

    @staticmethod
    def _hits(photos: list[dict]) -> Iterator[Hit]:
        for photo in photos:
            url = photo.get("url_o") or photo.get("url_l")
            if url:
                license_id = str(photo.get("license", ""))
                yield Hit(url=url, license=LICENSES.get(license_id, f"flickr license {license_id}" if license_id else None),
                          attribution=photo.get("ownername") or photo.get("owner"))
