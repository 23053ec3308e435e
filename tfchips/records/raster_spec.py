"""The record format of one raster (image or label): `RasterSpec`, dataset.json's ``image`` / ``label``.

Like a TFDS feature class, a spec does the four conversions of its pixels:
`RasterSpec.encode` (numpy to record payload), `RasterSpec.decode` (payload to
numpy), `RasterSpec.decode_tensor` (payload to pixels in the TensorFlow graph,
`tfchips.records.graph_decoder`) and JSON both ways (`RasterSpec.as_json`,
`RasterSpec.from_json`). `nodata_to_json` / `nodata_from_json` carry NaN nodata
through JSON, which has none. `tfchips.records.tfds_metadata` says why TFDS's own
classes cannot take this role.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from tfchips.errors import ChipError
from tfchips.records.codecs import (
    ENCODINGS,
    FORMATS,
    RAW_FORMAT,
    EncodedRaster,
    decode_payload,
    encode_pixels,
    png_channels,
)
from tfchips.records.json_fields import JsonFields, show

MAX_SIDE = 65536  # rows or columns of a chip
MAX_BANDS = 4096
DTYPES = ("uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64", "float16", "float32", "float64")
RECORD_FORMATS = (*FORMATS.values(), RAW_FORMAT)


def _same(a: float | None, b: float | None) -> bool:
    return a == b or (a is not None and b is not None and math.isnan(a) and math.isnan(b))


@dataclass(frozen=True, slots=True)
class RasterSpec:
    """What every image (or label) of a dataset shares; dataset.json's ``image`` / ``label``.

    ``shape`` is (rows, cols, bands) with None where chips differ; ``format`` is None
    where they mix formats; ``parts`` gives the bands held by each ``data`` element.
    """

    encoding: str
    format: str | None
    shape: tuple[int | None, int | None, int]
    dtype: str
    band_names: tuple[str, ...]
    nodata: float | None
    parts: tuple[int, ...]

    @classmethod
    def stored(
        cls,
        encoding: str,
        format: str | None,
        shape: tuple[int | None, int | None, int],
        dtype: str,
        band_names: tuple[str, ...],
        nodata: float | None = None,
    ) -> RasterSpec:
        """The spec of pixels stored as ``encoding``, its ``parts`` following from it and the band count."""
        parts = png_channels(shape[2]) if encoding == "png" else (shape[2],)
        return cls(encoding, format, tuple(shape), dtype, tuple(band_names), nodata, parts)

    @classmethod
    def of(cls, raster: EncodedRaster, band_names: tuple[str, ...], nodata: float | None) -> RasterSpec:
        return cls.stored(raster.encoding, raster.format, raster.shape, raster.dtype, band_names, nodata)

    def encode(self, pixels: np.ndarray, where: str = "pixels") -> EncodedRaster:
        """The ``array`` or ``png`` record payload of (rows, cols, bands) ``pixels``; ``where`` names them in errors.

        ``bytes`` payloads are chip files as stored (`tfchips.records.codecs.encode_file`).
        """
        return encode_pixels(np.asarray(pixels, dtype=self.dtype), self.encoding, where)

    def decode(self, data: tuple[bytes, ...], shape: tuple[int, int, int] | None = None) -> np.ndarray:
        """(rows, cols, bands) pixels of a record payload, in numpy: the inverse of `encode`.

        ``shape`` is the record's, needed where the spec leaves rows or columns unknown.
        """
        return decode_payload(self.encoding, data, self.shape if shape is None else shape, self.dtype)

    def decode_tensor(self, data, shape, fmt=None):
        """`decode`, in the TensorFlow graph (`tfchips.records.graph_decoder.decode_tensor`)."""
        from tfchips.records.graph_decoder import decode_tensor  # TensorFlow, which writer workers never import

        return decode_tensor(self, data, shape, fmt)

    def as_json(self) -> dict:
        """dataset.json form (nodata as `nodata_to_json` writes it)."""
        fields = raster_json(self.encoding, self.format, self.shape, self.dtype, self.band_names, self.nodata)
        return {**fields, "parts": list(self.parts)}

    @classmethod
    def from_json(cls, fields: JsonFields) -> RasterSpec:
        """The inverse of `as_json`, checked: `RecordError` naming the file and field of any bad entry.

        ``format``, ``nodata`` and ``parts`` may be left out; ``parts`` must follow from
        the encoding and band count where given.
        """
        encoding = fields.choice("encoding", ENCODINGS)
        form = fields.choice("format", RECORD_FORMATS, optional=True)
        shape = fields.child("shape").elements()
        if len(shape) != 3:
            raise fields.error(f"{len(shape)} entries, not 3 (rows, cols, bands)", f"{fields.field}.shape")
        rows, cols = (side.as_integer(1, MAX_SIDE, nullable=True) for side in shape[:2])
        bands = shape[2].as_integer(1, MAX_BANDS)
        band_names = tuple(name.as_text() for name in fields.child("band_names").elements())
        if len(band_names) != bands:
            raise fields.error(f"{len(band_names)} band names for {bands} bands", f"{fields.field}.band_names")
        nodata = fields.get("nodata", optional=True)
        nodata = nodata_from_json(nodata) if nodata in (None, "nan") else fields.number("nodata")
        spec = cls.stored(encoding, form, (rows, cols, bands), fields.choice("dtype", DTYPES), band_names, nodata)
        given = fields.get("parts", optional=True)
        if given is not None and given != list(spec.parts):
            message = f"{show(given)} is not how {encoding} holds {bands} bands ({list(spec.parts)})"
            raise fields.error(message, f"{fields.field}.parts")
        return spec

    def differences(
        self, encoding: str | None, shape: tuple[int, ...], dtype: str, band_names: tuple[str, ...]
    ) -> list[str]:
        """How pixels stored as ``encoding`` with this ``shape``, ``dtype`` and ``band_names`` contradict the spec."""
        found = []
        if encoding is not None and encoding != self.encoding:
            found.append(f"encoding {encoding}, not {self.encoding}")
        if len(shape) != 3 or any(want is not None and want != got for want, got in zip(self.shape, shape)):
            expected = " x ".join("any" if n is None else str(n) for n in self.shape)
            found.append(f"shape {' x '.join(map(str, shape))}, not {expected}")
        if dtype != self.dtype:
            found.append(f"dtype {dtype}, not {self.dtype}")
        if tuple(band_names) != self.band_names:
            found.append(f"bands {list(band_names)}, not {list(self.band_names)}")
        return found

    def combine(self, other: RasterSpec, where: str) -> RasterSpec:
        """The spec shared by both; `ChipError` naming ``where`` if the bands or dtype differ."""
        if (other.dtype, other.band_names) != (self.dtype, self.band_names):
            raise ChipError(
                f"{where}: {other.dtype} bands {list(other.band_names)} where earlier chips have "
                f"{self.dtype} bands {list(self.band_names)}"
            )
        return RasterSpec(
            self.encoding,
            self.format if self.format == other.format else None,
            tuple(a if a == b else None for a, b in zip(self.shape, other.shape)),
            self.dtype,
            self.band_names,
            self.nodata if _same(self.nodata, other.nodata) else None,
            self.parts,
        )


def raster_json(
    encoding: str | None,
    format: str | None,
    shape: tuple,
    dtype: str,
    band_names: tuple[str, ...],
    nodata: float | None,
) -> dict:
    """How pixels are stored, as dataset.json's ``image`` / ``label`` and ``tfchips inspect --json`` write it."""
    return {
        "encoding": encoding,
        "format": format,
        "shape": list(shape),
        "dtype": dtype,
        "band_names": list(band_names),
        "nodata": nodata_to_json(nodata),
    }


def nodata_to_json(value: float | None) -> float | str | None:
    """A nodata value as dataset.json holds it: a number, null, or ``"nan"`` (JSON has no NaN)."""
    return "nan" if value is not None and math.isnan(value) else value


def nodata_from_json(value: float | str | None) -> float | None:
    """The inverse of `nodata_to_json`."""
    return math.nan if value == "nan" else value
