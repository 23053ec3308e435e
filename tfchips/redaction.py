"""Credentials masked in everything tfchips prints or writes.

A URL's password (or its whole user info when it has no password: a token used as a
user name) and the value of every query parameter whose name suggests a secret become
``***``. That covers ``Error:`` lines, failure reasons, logs, warnings (GDAL's, pyogrio's,
requests' and urllib3's among them), ``manifest.json``, ``config.yaml``, ``dataset.json``
and ``report.html``.

Importing this module installs, once per process, the hooks that mask what libraries
say: a log record factory (every logger, handlers and captured warnings included), a
wrapper of `warnings.showwarning` (warnings printed to stderr) and, unless the program
set its own, `sys.excepthook` (the traceback of an unexpected error).
"""

from __future__ import annotations

import logging
import re
import sys
import traceback
import urllib.parse
import warnings
from typing import Any

REDACTED = "***"

# Names of query parameters that carry credentials: signed URLs (S3's X-Amz-Signature,
# X-Amz-Credential and X-Amz-Security-Token, GCS's X-Goog-*, Azure's SAS sig), API keys,
# tokens, passwords. X-Amz-Date, X-Amz-Expires or Azure's sv/se say nothing secret and stay,
# and so do names that merely contain a fragment of one (design, author, keywords).
_SECRET_PARAMETER = re.compile(
    r"signature|(?:^|[-_.])sig(?:$|[-_.])|token|secret|passw|pwd|^pass|auth(?!or)|credential|bearer|jwt|session"
    r"|access[-_.]?key|(?:^|[-_.])key(?:$|[-_.])|key$|^code$",
    re.I,
)
_TRAILING = ".,;:)]"
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")
# A name=value pair of a query string or fragment, also in a path quoted without its host
# ("GET /items?token=... HTTP/1.1" in urllib3's logs).
_PARAMETER = re.compile(r"(?<=[?&#;])([A-Za-z0-9_.\-]+)=([^&#;\s'\"<>]*)")


def is_secret_parameter(name: str) -> bool:
    """Whether a query parameter named ``name`` carries a credential (its value is masked)."""
    return bool(_SECRET_PARAMETER.search(name))


def redact_url(url: str) -> str:
    """``url`` with its password and the values of credential-like query parameters
    (``sig``, ``token``, ``X-Amz-Signature``, ``api_key``, ``pwd``, ...) replaced by ``***``."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return _redact_parameters(url)
    netloc = parts.netloc
    if "@" in netloc:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.split(':', 1)[0]}:{REDACTED}@{host}" if ":" in user else f"{REDACTED}@{host}"
    return _redact_parameters(urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment)))


def _redact_parameters(text: str) -> str:
    def redact(match: re.Match) -> str:
        name, value = match.groups()
        if not is_secret_parameter(name):
            return match.group(0)
        # Punctuation that ends a sentence or a clause is not part of the value.
        return f"{name}={REDACTED}{value[len(value.rstrip(_TRAILING)):]}"

    return _PARAMETER.sub(redact, text)


def redact_text(text: str) -> str:
    """``text`` with every URL in it passed through `redact_url`, and credential-like query
    parameters masked where a path is quoted without its host (for messages and logs)."""

    def redact(match: re.Match) -> str:
        # Punctuation that ends a sentence or a clause is not part of the URL.
        url = match.group(0).rstrip(_TRAILING)
        return redact_url(url) + match.group(0)[len(url) :]

    return _redact_parameters(_URL.sub(redact, text))


def redact_json(value: Any) -> Any:
    """``value`` (parsed JSON or YAML: dicts, lists, tuples, strings, numbers) with every string in it redacted."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {redact_json(k): redact_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact_json(v) for v in value)
    return value


def _redacting_record_factory(factory):
    def make_record(*args, **kwargs) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a malformed log call: logging itself reports it when the record is emitted
            return record
        record.msg, record.args = redact_text(message), None
        if record.exc_info and not record.exc_text:
            # Formatters reuse exc_text: the traceback is masked once, here.
            record.exc_text = redact_text(logging.Formatter().formatException(record.exc_info))
        return record

    make_record.redacts = True
    return make_record


def _redacting_showwarning(show):
    def showwarning(message, category, filename, lineno, file=None, line=None):
        show(redact_text(str(message)), category, filename, lineno, file, line)

    showwarning.redacts = True
    return showwarning


def _redacting_excepthook(exception_type, exception, trace) -> None:
    # An unexpected error's traceback quotes the URLs in its message and in its frames' source lines.
    sys.stderr.write(redact_text("".join(traceback.format_exception(exception_type, exception, trace))))


def install() -> None:
    """Mask credentials in every log record, printed warning and uncaught error's traceback
    of this process (idempotent)."""
    if not getattr(logging.getLogRecordFactory(), "redacts", False):
        logging.setLogRecordFactory(_redacting_record_factory(logging.getLogRecordFactory()))
    if not getattr(warnings.showwarning, "redacts", False):
        warnings.showwarning = _redacting_showwarning(warnings.showwarning)
    if sys.excepthook is sys.__excepthook__:
        sys.excepthook = _redacting_excepthook


install()
