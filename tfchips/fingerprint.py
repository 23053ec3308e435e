"""The options fingerprint of a chip folder: every job option that changes a chip's pixels.

The manifest keeps it under ``fingerprint`` from the moment a job starts, so that a
later job into the same folder resumes only chips made the same way; thresholds
(``min_valid``, ``min_labelled``), class names and worker counts change no pixel and
are left out. So are the places inputs are read from (``catalog``, ``labels``,
``extent``): a catalog or labels file moved, mirrored or repaired resumes the
folder, as the bad-input matrix does; other data behind the same options is not
detected. Option names are those `ImageryRequest.from_options` and
`LabelRequest.from_options` take (``start``, ``labels_layer``, ...).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
from typing import Any, Callable

from tfchips import storage
from tfchips.chips import MANIFEST_NAME
from tfchips.errors import ChipError, ConfigError
from tfchips.imagery import ImageryRequest
from tfchips.labels import LabelRequest

# LabelRequest fields whose option has another name.
_LABEL_OPTIONS = {"path": "labels", "layer": "labels_layer"}
# Where inputs are read from, not how: left out (see above), in merged and stacked products too.
_LOCATIONS = frozenset({"catalog", "labels", "extent"})
# A manifest larger than this (bytes) is refused rather than read whole.
MAX_MANIFEST_BYTES = 512 << 20
# Values longer than this (characters) are shortened in messages, which list this many options.
_SHOWN = 80
_LISTED = 8


def job_fingerprint(imagery: ImageryRequest, labels: LabelRequest) -> dict[str, Any]:
    """{option name: value} of the pixel options, as JSON stores it (no location, so no credential)."""
    options = {f.name: getattr(imagery, f.name) for f in dataclasses.fields(imagery)}
    options.update({_LABEL_OPTIONS.get(f.name, f.name): getattr(labels, f.name) for f in dataclasses.fields(labels)})
    options = {name: value for name, value in options.items() if name not in _LOCATIONS}
    return json.loads(json.dumps(options, default=_json_value))


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime.datetime):
        return value.isoformat()
    if dataclasses.is_dataclass(value):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value) if f.name not in _LOCATIONS}
    raise TypeError(f"{type(value).__name__} is not an option value")


def check_fingerprint(
    out: str,
    fingerprint: dict[str, Any],
    option_name: Callable[[str], str] = str,
    overwrite: str = "overwrite=True",
) -> bool:
    """Refuse to resume in ``out`` when its manifest records other pixel options.

    Returns True when the manifest records ``fingerprint``, False when there is no
    manifest: a folder made by hand, or emptied, is resumed chip by chip as before,
    by band names. ``option_name`` and ``overwrite`` word the message (the CLI
    passes its flags).

    Raises:
        ConfigError: the manifest records other values (each option named, with
            both values) or no fingerprint at all.
        ChipError: the manifest cannot be read or is not a JSON object.
    """
    path = storage.join(out, MANIFEST_NAME)
    if not storage.exists(path):
        return False
    recorded = _read_fingerprint(path)
    advice = f"pass {overwrite} to make every tile again, or write to another folder"
    if recorded is None:
        raise ConfigError(f"{path} records no options fingerprint, so its chips may be made otherwise; {advice}")
    changed = [
        # A name the manifest made up is shown quoted, like a value.
        f"{option_name(name) if name.isidentifier() else _shown(name)}"
        f" {_shown(recorded.get(name))} there, {_shown(fingerprint.get(name))} now"
        for name in sorted(set(recorded) | set(fingerprint))
        if recorded.get(name) != fingerprint.get(name)
    ]
    if len(changed) > _LISTED:
        changed[_LISTED:] = [f"{len(changed) - _LISTED} more"]
    if changed:
        raise ConfigError(f"{out} holds chips made with other options ({'; '.join(changed)}); {advice}")
    return True


def _read_fingerprint(path: str) -> dict | None:
    try:
        too_large = not storage.is_url(path) and os.path.getsize(path) > MAX_MANIFEST_BYTES
        content = None if too_large else json.loads(storage.read(path))
    except OSError as error:
        raise ChipError(f"{path}: cannot read chip manifest ({error.strerror or error})") from None
    except ValueError as error:
        raise ChipError(f"{path}: not a valid chip manifest ({error})") from None
    if too_large:
        raise ChipError(f"{path}: larger than {MAX_MANIFEST_BYTES >> 20} MiB; not a chip manifest")
    if not isinstance(content, dict):
        raise ChipError(f"{path}: not a valid chip manifest (a JSON object was expected)")
    fingerprint = content.get("fingerprint")
    if not isinstance(fingerprint, (dict, type(None))):
        raise ChipError(f"{path}: not a valid chip manifest (fingerprint must be an object)")
    return fingerprint


def _shown(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."
