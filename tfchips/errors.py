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


class ConfigError(TfchipsError, ValueError):
    """Job options or a YAML config are invalid or contradict each other."""


class CatalogError(TfchipsError, OSError):
    """A catalog cannot be opened, reached or searched (names the path or URL)."""


class ItemError(TfchipsError, ValueError):
    """A catalog item is unusable: no datetime, no asset for a band (names the item)."""


class CredentialsError(TfchipsError, OSError):
    """A remote service needs credentials that are not set (names the variable)."""


class RasterReadError(TfchipsError, OSError):
    """A raster could not be read (names the file or URL)."""


class LabelError(TfchipsError, ValueError):
    """Ground truth cannot be rasterized: missing attribute, bad class values (names the file)."""


class ChipError(TfchipsError, ValueError):
    """A chip is corrupt, unpaired or does not match its twin (names the file)."""


class RecordError(TfchipsError, ValueError):
    """TFRecords or their dataset.json are malformed or inconsistent (names the file)."""


class OutputError(TfchipsError, OSError):
    """The output folder cannot be created or written (names the path)."""


class WorkerError(TfchipsError, ChildProcessError):
    """A worker process died mid-job (killed, out of memory); names the tiles left unfinished."""
