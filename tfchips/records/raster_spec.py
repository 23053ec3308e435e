"""What every image (or label) of a dataset shares: `RasterSpec`, dataset.json's ``image`` / ``label``.

`RasterSpec.as_json` writes the JSON form (`tfchips.records.dataset_info` reads it
back); `nodata_to_json` / `nodata_from_json` carry NaN nodata through JSON, which has none.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tfchips.errors import ChipError
from tfchips.records.codecs import EncodedRaster, png_channels


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
    def of(cls, raster: EncodedRaster, band_names: tuple[str, ...], nodata: float | None) -> RasterSpec:
        parts = png_channels(raster.shape[2]) if raster.encoding == "png" else (raster.shape[2],)
        return cls(raster.encoding, raster.format, raster.shape, raster.dtype, band_names, nodata, parts)

    def as_json(self) -> dict:
        """dataset.json form (nodata as `nodata_to_json` writes it)."""
        fields = raster_json(self.encoding, self.format, self.shape, self.dtype, self.band_names, self.nodata)
        return {**fields, "parts": list(self.parts)}

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
