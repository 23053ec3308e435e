"""Size limits on what a file may make tfchips allocate, checked before allocating.

A file's header is the file's word only: a TIFF may declare thousands of tags of
megabytes each, a COG 200,000 x 200,000 pixels under one small tile. Each limit
fails only the file (or tile) that exceeds it, with an error naming the file, the
size it asked for and the variable that raises the limit. Limits are read from the
environment at each use, so that worker processes follow the job that started them:

==============================  ===========  ===============================================
``TFCHIPS_MAX_TIFF_TAG_BYTES``  16777216     bytes of tag values in a TIFF's first directory
``TFCHIPS_MAX_READ_PIXELS``     100000000    pixels (bands x rows x cols) of one raster read
==============================  ===========  ===============================================
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping

from tfchips.errors import ConfigError


@dataclass(frozen=True)
class SizeLimit:
    """A ceiling on one kind of allocation: ``default`` units unless ``variable`` says otherwise."""

    variable: str
    default: int
    units: str

    def value(self, environ: Mapping[str, str] | None = None) -> int:
        """The limit in force: ``variable`` from ``environ`` (the process environment by default), else ``default``."""
        text = (os.environ if environ is None else environ).get(self.variable, "").strip()
        if not text:
            return self.default
        if not text.isdigit() or int(text) < 1:
            raise ConfigError(f"{self.variable} must be a whole number of {self.units} of at least 1, got {text!r}")
        return int(text)

    def excess(self, amount: int) -> str | None:
        """Why ``amount`` units are refused ("X > limit, set VARIABLE to raise it"), or None when they fit."""
        limit = self.value()
        if amount <= limit:
            return None
        return f"{amount} {self.units}, more than the limit of {limit} ({self.variable} raises it)"


TIFF_TAG_BYTES = SizeLimit("TFCHIPS_MAX_TIFF_TAG_BYTES", 16 * 2**20, "bytes")
READ_PIXELS = SizeLimit("TFCHIPS_MAX_READ_PIXELS", 100_000_000, "pixels")
