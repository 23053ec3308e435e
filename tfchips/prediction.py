"""Predictions back to GeoTIFF: `write_prediction`, on the grid (CRS, transform) of the record predicted from."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence

import numpy as np
import tensorflow as tf
from affine import Affine

from tfchips.errors import ChipError, RecordError
from tfchips.records.schema import ChipExample
from tfchips.storage import publish


def _text(value) -> str:
    value = value.numpy() if isinstance(value, tf.Tensor) else value
    value = value.item() if isinstance(value, np.ndarray) else value
    return value.decode("utf-8") if isinstance(value, bytes) else str(value or "")


def _georeference(metadata: Mapping | ChipExample) -> tuple[str, Affine]:
    """(CRS, transform) of a record's metadata: a `make_dataset` / `parse_example` dict or a `ChipExample`."""
    if isinstance(metadata, ChipExample):
        crs, transform = metadata.crs or "", metadata.transform
    else:
        crs = _text(metadata["crs"])
        transform = metadata["transform"]
        if not isinstance(transform, Affine):
            values = np.asarray(transform, dtype=np.float64).ravel()
            if values.size != 6:
                raise RecordError(f"transform must be six GDAL-order numbers, got {values.size}")
            transform = None if np.isnan(values).any() else Affine.from_gdal(*values)
    if not crs or transform is None:
        raise RecordError("the record carries no CRS or transform (legacy schema?); cannot georeference a prediction")
    return crs, transform


def _smallest_dtype(array: np.ndarray, nodata: float | None) -> np.dtype:
    """The smallest of uint8, uint16, int16, int32, int64 that holds an integer array and a whole ``nodata``.

    Floats are unchanged.
    """
    if array.dtype.kind not in "biu" or array.size == 0:
        return array.dtype
    values = [int(array.min()), int(array.max())] + ([] if nodata is None else [int(nodata)])
    low, high = min(values), max(values)
    fits = (np.dtype(t) for t in ("uint8", "uint16", "int16", "int32", "int64"))
    return next((t for t in fits if np.iinfo(t).min <= low and high <= np.iinfo(t).max), array.dtype)


def write_prediction(
    path: str | os.PathLike,
    prediction,
    metadata: Mapping | ChipExample,
    nodata: float | None = None,
    band_names: Sequence[str] | None = None,
) -> str:
    """Write ``prediction`` as an LZW GeoTIFF on the grid of the record ``metadata`` describes.

    ``prediction``: (rows, cols) or (rows, cols, bands) array or tensor, e.g. the
    argmax of a model's output for one chip. ``metadata``: one element of
    ``make_dataset(..., with_metadata=True)`` (unbatched, or one row of a batch), a
    `parse_example` result, or a `ChipExample`; its CRS and transform place the
    pixels, so the file overlays the source chip exactly. When ``metadata`` holds
    the ``image``, rows and columns must match it. Integer classes are written in
    the smallest dtype that holds them and ``nodata`` (uint8 for up to 256 classes
    without nodata or with a nodata of 0 to 255). Bands are
    described by ``band_names`` (default ``prediction``, or ``prediction_<i>``).
    The file is written to a temporary name, then renamed. Returns ``path``.
    """
    from rasterio.io import MemoryFile

    path = os.fspath(path)
    array = np.asarray(prediction.numpy() if isinstance(prediction, tf.Tensor) else prediction)
    if array.ndim == 2:
        array = array[:, :, np.newaxis]
    if array.ndim != 3:
        raise ChipError(f"{path}: a prediction is (rows, cols) or (rows, cols, bands), got shape {array.shape}")
    reference = metadata.image if isinstance(metadata, ChipExample) else metadata.get("image")
    if reference is not None and tuple(reference.shape[:2]) != array.shape[:2]:
        rows, cols = reference.shape[:2]
        raise ChipError(f"{path}: prediction is {array.shape[0]} x {array.shape[1]} pixels, its chip {rows} x {cols}")
    crs, transform = _georeference(metadata)
    if nodata is not None and array.dtype.kind in "biu" and not (math.isfinite(nodata) and float(nodata).is_integer()):
        raise ChipError(f"{path}: nodata {nodata} is not a whole number, which integer predictions cannot hold")
    array = array.astype(_smallest_dtype(array, nodata), copy=False)
    bands = array.shape[2]
    if band_names is None:
        band_names = ["prediction"] if bands == 1 else [f"prediction_{i}" for i in range(1, bands + 1)]
    if len(band_names) != bands:
        raise ChipError(f"{path}: {len(band_names)} band names for {bands} bands")
    profile = dict(
        driver="GTiff", width=array.shape[1], height=array.shape[0], count=bands, dtype=array.dtype,
        crs=crs, transform=transform, nodata=nodata, compress="lzw",
    )
    with MemoryFile() as memory:
        with memory.open(**profile) as dataset:
            dataset.write(array.transpose(2, 0, 1))
            dataset.descriptions = tuple(band_names)
        publish(path, memory.read())
    return path
