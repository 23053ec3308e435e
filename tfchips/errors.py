"""Errors raised by tfchips.

Every error derives from `TfchipsError`; each subclass is also a built-in
`ValueError` or `OSError`, so callers that already catch those keep working.
"""


class TfchipsError(Exception):
    """Root of every error raised by tfchips."""


class TileKeyError(TfchipsError, ValueError):
    """A DLTile key or chip file name is malformed."""


class GridError(TfchipsError, ValueError):
    """Grid parameters are invalid (resolution, tilesize, pad)."""


class ShapeError(TfchipsError, ValueError):
    """A geometry cannot be tiled: empty, invalid, or outside lon/lat bounds."""


class VectorFileError(TfchipsError, OSError):
    """A vector file is missing, unreadable, empty or has no CRS."""
