"""Limits on the work a catalog can make tfchips do, so that no server or file can hang a job.

Every STAC JSON document (a static catalog, collection or item file, a STAC API landing
page or page of search results) is read under these limits, which come from the
environment like the `RetryPolicy`, read when a source is opened:

==============================  ==========  =========================================
``TFCHIPS_CATALOG_MAX_BYTES``   67108864    bytes of one document (64 MiB), local or
                                            fetched; larger ones fail at that size
``TFCHIPS_HTTP_DEADLINE``       300         seconds for one request, from connecting to
                                            the last byte of its body
``TFCHIPS_STAC_MAX_PAGES``      100         pages of results one STAC API search may
                                            return (a block's search, not the job's)
``TFCHIPS_STAC_PAGE_LIMIT``     100         items asked for per page of a search (the
                                            ``limit`` sent; servers may cap it)
``TFCHIPS_STAC_SEARCH_BLOCK``   16          tiles per side of the square block of the
                                            grid that one STAC API search covers; 1
                                            searches once per tile
``TFCHIPS_CATALOG_MAX_ITEMS``   250000      items one static catalog may hold
==============================  ==========  =========================================

``TFCHIPS_HTTP_TIMEOUT`` (see `tfchips.sources.retry`) still bounds each wait for bytes
(and is cut to the deadline); the deadline is checked as each chunk arrives, so a server
that sends one byte every half second is cut off too, at most one wait past it. A document over a limit is not retried: it fails with a `CatalogError`
that names the URL or path, the limit and the variable that raises it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Mapping

import requests
from requests.adapters import HTTPAdapter

from tfchips.errors import CatalogError, ConfigError
from tfchips.sources.base import redact_text
from tfchips.sources.retry import numbers_from_environment

ENVIRONMENT = {
    "max_bytes": "TFCHIPS_CATALOG_MAX_BYTES",
    "deadline": "TFCHIPS_HTTP_DEADLINE",
    "max_pages": "TFCHIPS_STAC_MAX_PAGES",
    "max_items": "TFCHIPS_CATALOG_MAX_ITEMS",
    "page_limit": "TFCHIPS_STAC_PAGE_LIMIT",
    "search_block": "TFCHIPS_STAC_SEARCH_BLOCK",
}
_WHOLE = ("max_bytes", "max_pages", "max_items", "page_limit", "search_block")
# Bytes asked of the socket at once; a read returns as soon as any arrive.
_CHUNK = 1 << 16


@dataclass(frozen=True)
class CatalogLimits:
    """Bounds on reading catalogs (see the module docstring); ``deadline`` in seconds."""

    max_bytes: int = 64 << 20
    deadline: float = 300.0
    max_pages: int = 100
    max_items: int = 250_000
    page_limit: int = 100
    search_block: int = 16

    def __post_init__(self) -> None:
        for name in _WHOLE:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{ENVIRONMENT[name]} must be a whole number of at least 1, got {value!r}")
        if not (isinstance(self.deadline, (int, float)) and math.isfinite(self.deadline) and self.deadline > 0):
            raise ConfigError(f"{ENVIRONMENT['deadline']} must be a number of seconds > 0, got {self.deadline!r}")

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> CatalogLimits:
        """The limits set by the ``TFCHIPS_*`` variables of the module docstring; defaults elsewhere."""
        return cls(**numbers_from_environment(ENVIRONMENT, _WHOLE, environ))

    def too_many_items(self, catalog: str) -> CatalogError:
        """The error of a static catalog that holds more than ``max_items`` items."""
        return _limit_error(
            f"{catalog}: holds more than {self.max_items} items (raise TFCHIPS_CATALOG_MAX_ITEMS to read it)"
        )

    def too_many_pages(self) -> CatalogError:
        """The error of a search still paging after ``max_pages``; the caller names URL and search."""
        return CatalogError(
            f"more than {self.max_pages} pages of results; raise TFCHIPS_STAC_MAX_PAGES to follow more"
        )


def _limit_error(message: str) -> CatalogError:
    """A `CatalogError` with credentials in its URLs masked."""
    return CatalogError(redact_text(message))


def read_body(
    read1: Callable[[int], bytes], where: str, limits: CatalogLimits, started: float, length: int | None = None
) -> bytes:
    """All bytes ``read1`` gives until it gives none, within ``limits``.

    Args:
        read1: returns up to n bytes as soon as any are there, b"" at the end.
        where: the URL or path, for errors.
        limits: ``max_bytes`` and ``deadline`` apply.
        started: `time.monotonic` when the request began (the deadline counts from it).
        length: the announced Content-Length, if any; over ``max_bytes`` fails before reading.

    Raises:
        CatalogError: the body is longer than ``max_bytes`` or still coming at the deadline.
    """
    if length is not None and length > limits.max_bytes:
        raise _too_large(where, limits)
    chunks, size = [], 0
    while True:
        if time.monotonic() - started > limits.deadline:
            raise _limit_error(
                f"{where}: no complete answer within {limits.deadline:g} s (TFCHIPS_HTTP_DEADLINE sets the limit)"
            )
        chunk = read1(_CHUNK)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limits.max_bytes:
            raise _too_large(where, limits)
        chunks.append(chunk)


def _too_large(where: str, limits: CatalogLimits) -> CatalogError:
    return _limit_error(f"{where}: larger than {limits.max_bytes} bytes (TFCHIPS_CATALOG_MAX_BYTES sets the limit)")


def read_local(path: str, limits: CatalogLimits) -> bytes:
    """The bytes of a local file of at most ``max_bytes``; OSError when it cannot be read."""
    with open(path, "rb") as stream:
        data = stream.read(limits.max_bytes + 1)
    if len(data) > limits.max_bytes:
        raise _too_large(path, limits)
    return data


def bound_session(
    session: requests.Session, limits: CatalogLimits, timeout: float, check_url: Callable[[str], None]
) -> requests.Session:
    """``session``, changed so that every request it sends (redirects and next pages too) is
    first passed to ``check_url``, which raises to refuse it, waits at most ``timeout``
    seconds for any one read and reads its body within ``limits``."""
    adapter = _BoundedAdapter(limits, timeout, check_url)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


class _BoundedAdapter(HTTPAdapter):
    """Reads each body itself, a chunk at a time, so that size and deadline are checked as
    bytes arrive; urllib3 would otherwise wait for a whole chunk however slowly it came."""

    def __init__(self, limits: CatalogLimits, timeout: float, check_url: Callable[[str], None]) -> None:
        super().__init__(max_retries=0)  # `with_retries` retries whole operations
        self._limits, self._timeout, self._check_url = limits, min(timeout, limits.deadline), check_url

    def send(self, request, stream=False, timeout=None, **kwargs):
        self._check_url(request.url)
        started = time.monotonic()
        response = super().send(request, stream=True, timeout=self._timeout, **kwargs)
        try:
            length = response.headers.get("Content-Length", "").strip()
            response._content = read_body(
                lambda n: response.raw.read1(n, decode_content=True),
                request.url,
                self._limits,
                started,
                int(length) if length.isdigit() else None,
            )
            response._content_consumed = True  # so that closing keeps the connection for reuse
        finally:
            response.close()  # drops the connection of a body left unread
        return response
