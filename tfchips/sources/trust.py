"""The catalog trust boundary: which files and URLs a catalog may make tfchips read.

Whoever wrote a catalog chooses what its links and asset hrefs name, so what tfchips
reads for it depends on where the catalog came from:

- a catalog read from disk is the user's own: it may name local files and URLs alike;
- a catalog fetched over the network (a static catalog behind a URL, a STAC API) may
  name only ``http(s)://``, ``s3://`` and ``gs://`` URLs: never a local path, a
  ``file://`` URL or a GDAL ``/vsi...`` path (``/vsicurl/http://internal-host/`` would
  reach hosts ``allowed_hosts`` keeps out, ``/vsizip/`` local archives);
- no catalog may name a device, a pipe or standard input (``/dev/zero``, ``/proc/...``,
  ``/vsistdin/``, ``file:///dev/stdin``): reading one never ends.

An item or child link of a static catalog is judged like an asset href, by the
document that holds it. Two settings move the boundary on purpose; like the retry
policy they come from the environment, read when a source is opened:

==================================  =======  ==========================================
``TFCHIPS_CATALOG_ALLOW_LOCAL``     0        1: network catalogs may name local files
                                             (devices and standard input never)
``TFCHIPS_CATALOG_ALLOWED_HOSTS``   (all)    comma-separated hosts: URLs that catalogs
                                             name (inside /vsicurl/ paths too) must be
                                             on one of them or on the catalog's host
==================================  =======  ==========================================

A host matches itself and its subdomains (``amazonaws.com`` matches
``sentinel-cogs.s3.us-west-2.amazonaws.com``); the host of an ``s3://`` or ``gs://``
URL is its bucket.
"""

from __future__ import annotations

import os
import re
import stat
import urllib.parse
from dataclasses import dataclass
from typing import Mapping

from tfchips.errors import CatalogError, ConfigError
from tfchips.sources.base import redact_text

ENVIRONMENT = {"allow_local": "TFCHIPS_CATALOG_ALLOW_LOCAL", "allowed_hosts": "TFCHIPS_CATALOG_ALLOWED_HOSTS"}
# Schemes a catalog fetched over the network may name.
REMOTE_SCHEMES = ("http", "https", "s3", "gs")
# Where the kernel keeps devices and process files; none of them is a raster or a catalog.
_SPECIAL_FOLDERS = ("/dev/", "/proc/", "/sys/")
# GDAL's virtual file systems that read a stream rather than a file.
_STREAMS = re.compile(r"/vsistd(in|out)(/|$)", re.I)
# Leading GDAL prefixes such as /vsizip/ or /vsigzip/, chained any number of times.
_VSI_PREFIX = re.compile(r"^(/vsi[a-z0-9_]+/)+", re.I)
# The URL inside a GDAL path such as /vsicurl/https://host/a.tif.
_WRAPPED_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://.*")
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("", "0", "false", "no", "off")


@dataclass(frozen=True)
class TrustBoundary:
    """What catalogs may name (see the module docstring).

    ``allow_local``: network catalogs may name local files too. ``allowed_hosts``: when
    not empty, the only hosts (and their subdomains) whose URLs catalogs may name.
    """

    allow_local: bool = False
    allowed_hosts: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "allowed_hosts", tuple(h.strip().lower().strip(".") for h in self.allowed_hosts))
        if not all(self.allowed_hosts):
            raise ConfigError(f"{ENVIRONMENT['allowed_hosts']} has an empty host name")

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> TrustBoundary:
        """The boundary set by the ``TFCHIPS_CATALOG_*`` variables; the strict default elsewhere."""
        environ = os.environ if environ is None else environ
        flag = environ.get(ENVIRONMENT["allow_local"], "").strip().lower()
        if flag not in _TRUE + _FALSE:
            raise ConfigError(f"{ENVIRONMENT['allow_local']} must be 0 or 1, got {flag!r}")
        hosts = [h for h in environ.get(ENVIRONMENT["allowed_hosts"], "").split(",") if h.strip()]
        return cls(allow_local=flag in _TRUE, allowed_hosts=tuple(hosts))

    def environment(self) -> dict[str, str]:
        """The variables that give this boundary to worker processes started after they are set."""
        return {ENVIRONMENT["allow_local"]: "1" if self.allow_local else "0",
                ENVIRONMENT["allowed_hosts"]: ",".join(self.allowed_hosts)}

    def trusting(self, catalog: str) -> TrustBoundary:
        """This boundary with the host of the catalog the user named added to ``allowed_hosts``."""
        host = _host(catalog)
        if not self.allowed_hosts or host is None or self._allows_host(host):
            return self
        return TrustBoundary(self.allow_local, (*self.allowed_hosts, host))

    def check(self, href: str, named_by: str, what: str = "href", error: type[Exception] = CatalogError) -> str:
        """``href`` if the document ``named_by`` (a path or URL) may make tfchips read it.

        Args:
            href: an absolute path or URL, as named in the document.
            named_by: where the document naming it was read from.
            what: what ``href`` is, for the error ("item link"); the error names ``named_by``
                first unless ``what`` does ("asset 'red' of item 'a' (URL)").
            error: the exception type to raise.

        Raises:
            error: ``href`` is outside the boundary; the message names both and why.
        """
        problem = self._problem(href, _is_remote(named_by))
        if problem is not None:
            subject = what if named_by in what else f"{named_by}: {what}"
            raise error(redact_text(f"{subject} {href} is refused: {problem}"))
        return href

    def _problem(self, href: str, from_network: bool) -> str | None:
        scheme = urllib.parse.urlsplit(href).scheme.lower() if "://" in href else ""
        if scheme in REMOTE_SCHEMES:
            host = _host(href)
            if self.allowed_hosts and not (host and self._allows_host(host)):
                return f"host {host!r} is not in {ENVIRONMENT['allowed_hosts']}"
            return None
        if from_network and not self.allow_local:
            return (
                "a catalog fetched over the network may name only http(s), s3 and gs URLs"
                f" (set {ENVIRONMENT['allow_local']}=1 to let it name local files)"
            )
        if scheme not in ("", "file"):
            return f"tfchips reads no {scheme}:// URLs" if from_network else None
        wrapped = _WRAPPED_URL.search(href) if href.startswith("/vsi") else None
        if wrapped is not None:  # /vsicurl/https://host/...: that host must be allowed too
            return self._problem(wrapped.group(0), from_network=False)
        return _special_file(urllib.parse.unquote(urllib.parse.urlsplit(href).path) if scheme else href)

    def _allows_host(self, host: str) -> bool:
        return any(host == allowed or host.endswith("." + allowed) for allowed in self.allowed_hosts)


def _special_file(path: str) -> str | None:
    """Why reading local ``path`` (maybe a GDAL /vsi path) could never end, if it could not."""
    if _STREAMS.search(path):
        return "it is a stream (/vsistdin/), which no catalog may name"
    inner = _VSI_PREFIX.sub("", path)
    if inner != path:
        # What the /vsi prefixes wrap: /vsisubfile/OFFSET_SIZE,PATH, /vsizip/{PATH}/member.
        inner = re.sub(r"^\d+_\d+,", "", inner).lstrip("{")
        if "://" in inner or inner.lower().startswith("vsi"):
            return None  # /vsicurl/https://..., /vsis3/bucket/...: not a local file
        inner = re.sub(r"^/+", "/", inner)
    if inner.startswith(_SPECIAL_FOLDERS):
        return "it is a device, pipe or process file, which no catalog may name"
    try:
        # Follows links: a link to /dev/zero or /dev/stdin is a device or a pipe.
        mode = os.stat(inner).st_mode
    except (OSError, ValueError):
        return None  # no such file: reading it will fail and say so
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        return "it is a device, pipe or process file, which no catalog may name"
    return None


def _is_remote(href: str) -> bool:
    return "://" in href and urllib.parse.urlsplit(href).scheme.lower() in REMOTE_SCHEMES


def _host(href: str) -> str | None:
    """The host of a URL (the bucket of s3:// and gs:// ones), lower case; None for paths."""
    if not _is_remote(href):
        return None
    parts = urllib.parse.urlsplit(href)
    host = parts.hostname if parts.scheme.lower() in ("http", "https") else parts.netloc
    return (host or "").lower() or None
