"""Retrying remote reads: exponential backoff with jitter, honouring ``Retry-After``.

Every remote operation (a STAC API request, a catalog or item file fetched over HTTP,
the read of one raster over HTTP or from an object store) is tried up to
``RetryPolicy.attempts`` times, and for no longer than ``RetryPolicy.deadline`` seconds in
all, when it fails for a reason that may go away: a timeout,
a refused or reset connection, a truncated body, or HTTP 408, 425, 429, 500, 502, 503,
504. Before retry ``n`` (1 for the first) it waits ``backoff * 2 ** (n - 1)`` seconds,
scaled by a random factor from 0.5 to 1 so that workers that failed together do not
retry together, and never less than the server's ``Retry-After``; no wait is longer
than ``max_backoff``, and no retry starts that would begin past the ``deadline`` (counted
from the first try). The defaults ride out an outage of 15 s: the first six waits add up
to at least 15.75 s, jitter included. Other errors (404, a malformed file) are raised at once.

The policy comes from the environment, read at each call so that worker processes
follow the job that started them:

=============================  =======  =============================================
``TFCHIPS_RETRY_ATTEMPTS``     8        tries per operation, the first included
``TFCHIPS_RETRY_BACKOFF``      0.5      seconds before the first retry; doubles
``TFCHIPS_RETRY_MAX_BACKOFF``  30       longest single wait, ``Retry-After`` included
``TFCHIPS_RETRY_DEADLINE``     90       seconds from the first try past which none starts
``TFCHIPS_HTTP_TIMEOUT``       60       seconds to wait for a server to connect or answer
=============================  =======  =============================================
"""

from __future__ import annotations

import email.utils
import http.client
import logging
import math
import os
import random
import time
import urllib.error
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable, Mapping, TypeVar

from tfchips.errors import ConfigError
from tfchips.sources.base import first_line, redact_text

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Statuses that say "not now" rather than "never".
TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
ENVIRONMENT = {
    "attempts": "TFCHIPS_RETRY_ATTEMPTS",
    "backoff": "TFCHIPS_RETRY_BACKOFF",
    "max_backoff": "TFCHIPS_RETRY_MAX_BACKOFF",
    "deadline": "TFCHIPS_RETRY_DEADLINE",
    "timeout": "TFCHIPS_HTTP_TIMEOUT",
}


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently remote reads are retried (seconds throughout)."""

    attempts: int = 8
    backoff: float = 0.5
    max_backoff: float = 30.0
    timeout: float = 60.0
    deadline: float = 90.0

    def __post_init__(self) -> None:
        if isinstance(self.attempts, bool) or not isinstance(self.attempts, int) or self.attempts < 1:
            raise ConfigError(f"{ENVIRONMENT['attempts']} must be a whole number of at least 1, got {self.attempts!r}")
        for name in ("backoff", "max_backoff", "timeout", "deadline"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ConfigError(f"{ENVIRONMENT[name]} must be a number of seconds >= 0, got {value!r}")
        if self.timeout == 0:
            raise ConfigError(f"{ENVIRONMENT['timeout']} must be more than 0 seconds")

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> RetryPolicy:
        """The policy set by the ``TFCHIPS_*`` variables (see the module docstring); defaults elsewhere."""
        return cls(**numbers_from_environment(ENVIRONMENT, whole=("attempts",), environ=environ))

    def delay(self, retry: int, retry_after: float | None = None, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry number ``retry`` (1 for the first)."""
        nominal = min(self.max_backoff, self.backoff * 2.0 ** (retry - 1))
        wait = nominal * (0.5 + 0.5 * (rng or random).random())
        if retry_after is not None:
            wait = max(wait, retry_after)
        return min(wait, self.max_backoff)

    def gdal_options(self) -> dict[str, str]:
        """GDAL configuration options for a read that `with_retries` retries as a whole.

        GDAL must not retry requests itself as well: its tries would multiply these,
        ``attempts`` squared in all. Its timeouts are this policy's.
        """
        return {
            "GDAL_HTTP_MAX_RETRY": "0",
            "GDAL_HTTP_TIMEOUT": f"{self.timeout:g}",
            "GDAL_HTTP_CONNECTTIMEOUT": f"{self.timeout:g}",
        }


def numbers_from_environment(
    variables: Mapping[str, str], whole: tuple[str, ...] = (), environ: Mapping[str, str] | None = None
) -> dict[str, int | float]:
    """The numbers set in the environment for ``variables`` (field name -> variable name).

    Fields named in ``whole`` are read as int, the rest as float; unset or blank variables
    are left out, so the dataclass defaults apply. Raises `ConfigError` naming the variable.
    """
    environ = os.environ if environ is None else environ
    values: dict[str, int | float] = {}
    for name, variable in variables.items():
        text = environ.get(variable, "").strip()
        if not text:
            continue
        try:
            values[name] = int(text) if name in whole else float(text)
        except ValueError:
            raise ConfigError(f"{variable} must be a number, got {text!r}") from None
    return values


class TransientError(Exception):
    """A failure worth another try; ``retry_after`` is the server's requested wait in seconds."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RetryError(Exception):
    """An operation still failed after every attempt; the last error is its ``__cause__``."""

    def __init__(self, error: BaseException, attempts: int, seconds: float | None = None) -> None:
        within = "" if seconds is None else f" in {seconds:.1f} s (`TFCHIPS_RETRY_DEADLINE`)"
        super().__init__(f"{first_line(error)}; gave up after {attempts} attempts{within}")
        self.attempts = attempts


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks for: delta-seconds or an HTTP date; None if unusable."""
    if value is None:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            moment = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        seconds = (moment - (now or datetime.now(timezone.utc))).total_seconds()
    return max(seconds, 0.0) if math.isfinite(seconds) else None


def is_transient(error: BaseException) -> tuple[bool, float | None]:
    """Whether ``error`` (or an error it was raised from) may go away, and any ``Retry-After``.

    Recognises `TransientError`, ``urllib`` HTTP errors, ``requests`` and ``urllib3``
    transport errors, pystac-client's ``APIError`` (by its ``status_code``), timeouts,
    connection errors and truncated bodies (``http.client.IncompleteRead``).
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, TransientError):
            return True, current.retry_after
        if isinstance(current, urllib.error.HTTPError):
            headers = current.headers
            after = retry_after_seconds(headers.get("Retry-After")) if headers is not None else None
            return current.code in TRANSIENT_STATUS, after
        status = getattr(current, "status_code", None)
        if isinstance(status, int) and not isinstance(status, bool):
            return status in TRANSIENT_STATUS, None
        if isinstance(current, (TimeoutError, ConnectionError, http.client.HTTPException, urllib.error.URLError)):
            return True, None
        if _is_transport_error(current):
            return True, None
        current = current.__cause__ or current.__context__
    return False, None


def _is_transport_error(error: BaseException) -> bool:
    """Connection, timeout and protocol errors of ``requests`` and ``urllib3`` (when installed)."""
    kinds: list[type] = []
    try:
        import requests.exceptions as rq

        kinds += [rq.ConnectionError, rq.Timeout, rq.ChunkedEncodingError, rq.ContentDecodingError]
    except ImportError:
        pass
    try:
        import urllib3.exceptions as u3

        kinds += [u3.ProtocolError, u3.TimeoutError, u3.NewConnectionError]
    except ImportError:
        pass
    return isinstance(error, tuple(kinds))


def _pause(seconds: float) -> None:
    time.sleep(seconds)


def _clock() -> float:
    return time.monotonic()


def with_retries(
    operation: Callable[[], T],
    policy: RetryPolicy | None = None,
    transient: Callable[[BaseException], tuple[bool, float | None]] = is_transient,
    before_retry: Callable[[], None] | None = None,
    what: str = "",
) -> T:
    """``operation()``, tried again after transient failures as ``policy`` says.

    ``transient`` classifies an exception as (retry?, Retry-After seconds);
    ``before_retry`` runs before each new attempt (to drop a cache, say). A
    non-transient error propagates unchanged; a transient one that outlasts every
    attempt, or whose next retry would start past ``policy.deadline``, is raised as
    `RetryError` from it. ``what`` names the operation in logs.
    """
    policy = policy or RetryPolicy.from_environment()
    started = _clock()
    attempt = 1
    while True:
        try:
            return operation()
        except Exception as error:  # noqa: BLE001 - classified below; the rest propagate unchanged
            retry, retry_after = transient(error)
            if not retry:
                raise
            if attempt == policy.attempts:
                raise RetryError(error, policy.attempts) from error
            wait = policy.delay(attempt, retry_after)
            spent = _clock() - started
            if spent + wait > policy.deadline:
                raise RetryError(error, attempt, spent) from error
            reason = redact_text(first_line(error))
            logger.info("%s failed (%s); retry %d in %.2f s", what or "remote read", reason, attempt, wait)
        if before_retry is not None:
            before_retry()
        _pause(wait)
        attempt += 1
