"""What a chip record holds: feature keys and types of the two schemas, both ways.

Schema ``tfchips`` (version 1, the default): one ``tf.train.Example`` per chip pair.

======================  ==============  ============================================================
key                     type            content
======================  ==============  ============================================================
``name``                bytes           chip name (file stem), e.g. ``256#0#10.0#13#-34#1542``
``key``                 bytes           DLTile key (``256:0:10.0:13:-34:1542``); empty when the
                                        name is not a tile key (ESRI exports)
``crs``                 bytes           image CRS, ``EPSG:<code>`` or WKT; empty when it has none
``transform``           bytes           48 bytes: six little-endian float64, GDAL geotransform order
                                        (x_origin, pixel_width, row_rotation, y_origin,
                                        col_rotation, pixel_height); ``tf.io.decode_raw(x, tf.float64)``
``image/encoding``      bytes           ``bytes``, ``png`` or ``array``
``image/format``        bytes           ``bytes``: ``tiff``, ``png``, ``jpeg`` or ``bmp`` (the file as
                                        stored); ``png``: ``png``; ``array``: ``raw``
``image/data``          bytes x n       ``bytes`` and ``array``: one element; ``png``: one PNG per
                                        group of up to 4 bands, in band order (13 bands: 4+4+4+1
                                        channels), concatenated on the channel axis when parsed
``image/shape``         int64 x 3       rows, cols, bands of the decoded pixels (H, W, C)
``image/dtype``         bytes           numpy name of the decoded dtype (``uint8``, ``float32``...)
``image/band_names``    bytes x bands   band descriptions, ``band_<i>`` where a band has none
``label/...``           same as image   the label chip (its encoding may differ from the image's)
======================  ==============  ============================================================

``array`` data are the pixels in C order (H, W, C), little-endian: ``tf.io.decode_raw(data,
dtype)`` then reshape to ``shape``. ``png`` holds 8- and 16-bit integers: ``uint8`` and
``uint16`` as they are, ``int8`` and ``int16`` bit for bit in ``uint8``/``uint16`` PNGs (parse
with ``tf.io.decode_png(..., dtype=tf.uint16)`` then ``tf.bitcast`` to the recorded dtype); other
dtypes are refused with an error that points to ``array``. TensorFlow decodes ``png``, ``array``
and ``bytes`` of PNG/JPEG/BMP in-graph; ``bytes`` of GeoTIFF need GDAL (`decode_example`).

Schema ``legacy`` writes the keys of the scripts tfchips replaces: ``image/image_data`` and
``target/target_data`` (one bytes element when each side is encoded bytes or a uint8 array in C
order (H, W, C); otherwise both as float32 ``FloatList``), ``image/height``, ``image/width``,
``image/channels``, ``target/height``, ``target/width`` (int64) and ``identifier`` (bytes: the
tile key in ``:`` form, or the chip name). Its limits: no dtype (readers must know it from
dataset.json), no CRS or transform (predictions cannot be georeferenced from the record alone),
float32 loses integers above 2**24 (16 777 216) and doubles' precision, at most 4 bands for
``png`` (one PNG per record), and an encoded image cannot pair with a non-uint8 array label.
"""

from __future__ import annotations

import functools
import math
import struct
from dataclasses import dataclass
from typing import Mapping

import numpy as np
from affine import Affine

from tfchips.chips import ChipGeoreference, chip_key
from tfchips.errors import RecordError
from tfchips.records.codecs import EncodedRaster, decode_payload
from tfchips.records.example import Chunks, bytes_feature, float_feature, int64_feature, serialize_example
from tfchips.records.raster_spec import MAX_BANDS, RasterSpec

SCHEMAS = ("tfchips", "legacy")
SCHEMA_VERSION = 1
# Side -> (data key, prefix of its height/width keys) in the legacy schema.
LEGACY_SIDES = {"image": ("image/image_data", "image"), "label": ("target/target_data", "target")}


@dataclass(frozen=True, slots=True)
class ChipExample:
    """A record read back: pixels as (rows, cols, bands) arrays and where they lie.

    ``crs`` and ``transform`` are None for legacy records, which do not carry them.
    ``image_encoding`` and ``image_format`` (and the label's) say how the record
    stores the pixels; for legacy records, as their dataset.json says.
    """

    name: str
    key: str | None
    crs: str | None
    transform: Affine | None
    image: np.ndarray
    label: np.ndarray
    image_band_names: tuple[str, ...]
    label_band_names: tuple[str, ...]
    image_encoding: str | None = None
    image_format: str | None = None
    label_encoding: str | None = None
    label_format: str | None = None


def _side(prefix: str, raster: EncodedRaster, band_names: tuple[str, ...]) -> dict[str, Chunks]:
    return {
        **_description(prefix, raster.encoding, raster.format, raster.shape, raster.dtype, band_names),
        f"{prefix}/data": bytes_feature(raster.data),
    }


@functools.lru_cache(maxsize=256)
def _description(
    prefix: str, encoding: str, format: str, shape: tuple[int, ...], dtype: str, band_names: tuple[str, ...]
) -> dict[str, Chunks]:
    """The features that describe one side's pixels (cached: they repeat from record to record; never mutated)."""
    return {
        f"{prefix}/encoding": bytes_feature([encoding.encode()]),
        f"{prefix}/format": bytes_feature([format.encode()]),
        f"{prefix}/shape": int64_feature(shape),
        f"{prefix}/dtype": bytes_feature([dtype.encode()]),
        f"{prefix}/band_names": bytes_feature([n.encode("utf-8") for n in band_names]),
    }


def build_record(
    name: str,
    key: str | None,
    georeference: ChipGeoreference,
    image: EncodedRaster,
    label: EncodedRaster,
    label_band_names: tuple[str, ...],
) -> bytes:
    """Serialized ``tfchips`` record of an encoded image and label chip."""
    return serialize_example(
        {
            "name": bytes_feature([name.encode("utf-8")]),
            "key": bytes_feature([(key or "").encode()]),
            "crs": bytes_feature([(georeference.crs or "").encode("utf-8")]),
            "transform": bytes_feature([struct.pack("<6d", *georeference.transform.to_gdal())]),
            **_side("image", image, georeference.band_names),
            **_side("label", label, label_band_names),
        }
    )


def legacy_payload(image: EncodedRaster | RasterSpec, label: EncodedRaster | RasterSpec) -> str:
    """``bytes`` or ``float``: how the legacy schema stores this image and label."""
    sides = {"images": image, "labels": label}
    if all(side.encoding != "array" or side.dtype == "uint8" for side in sides.values()):
        return "bytes"
    if all(side.encoding == "array" for side in sides.values()):
        return "float"
    encoded = next(name for name, side in sides.items() if side.encoding != "array")
    array = next(name for name, side in sides.items() if side.encoding == "array")
    raise RecordError(
        f"the legacy schema cannot pair encoded {sides[encoded].encoding} {encoded} with {sides[array].dtype} "
        f"array {array} (it stores both as bytes or both as floats); use `encoding='array'` for both, "
        "or the tfchips schema"
    )


def build_legacy_record(name: str, key: str | None, image: EncodedRaster, label: EncodedRaster) -> bytes:
    """Serialized ``legacy`` record (see the module docstring for its limits)."""
    sides = {"image": image, "label": label}
    for raster in sides.values():
        if len(raster.data) > 1:
            raise RecordError(
                f"{name}: the legacy schema holds one PNG, not {raster.shape[2]} bands; use `encoding='array'`"
            )
    if legacy_payload(image, label) == "bytes":
        payloads = {side: bytes_feature(raster.data) for side, raster in sides.items()}
    else:
        payloads = {
            side: float_feature(decode_payload("array", r.data, r.shape, r.dtype).ravel()) for side, r in sides.items()
        }
    features = {
        "image/channels": int64_feature([image.shape[2]]),
        "identifier": bytes_feature([(key or name).encode("utf-8")]),
    }
    for side, (data_key, prefix) in LEGACY_SIDES.items():
        features[data_key] = payloads[side]
        features[f"{prefix}/height"] = int64_feature([sides[side].shape[0]])
        features[f"{prefix}/width"] = int64_feature([sides[side].shape[1]])
    return serialize_example(features)


def _texts(feature) -> list[str]:
    return [v.decode("utf-8") for v in feature.bytes_list.value]


def _feature(features, key: str):
    # A protobuf map hands out an empty message for a missing key; say it is missing.
    if key not in features:
        raise KeyError(key)
    return features[key]


def record_spec(features, side: str, record: str = "") -> RasterSpec:
    """The spec of one side of a ``tfchips`` record, from its own features (a ``tf.train.Example`` feature map).

    Rows and columns are the record's. Raises `RecordError` (after ``record``, e.g.
    ``record 'NAME': ``) for a shape that is not (rows, cols, bands), `KeyError` or
    `IndexError` for a missing or empty feature, `UnicodeDecodeError` for text that
    is not UTF-8.
    """
    shape = tuple(_feature(features, f"{side}/shape").int64_list.value)
    if len(shape) != 3:
        raise RecordError(f"{record}{side} shape {list(shape)} is not (rows, cols, bands)")
    if not 1 <= shape[2] <= MAX_BANDS:  # before anything is sized by an untrusted band count
        raise RecordError(f"{record}{side} shape {list(shape)}: {shape[2]} bands, not 1..{MAX_BANDS}")
    return RasterSpec.stored(
        _feature(features, f"{side}/encoding").bytes_list.value[0].decode(),
        _feature(features, f"{side}/format").bytes_list.value[0].decode(),
        shape,
        _feature(features, f"{side}/dtype").bytes_list.value[0].decode(),
        tuple(_texts(_feature(features, f"{side}/band_names"))),
    )


def _pixels(record: str, side: str, spec: RasterSpec, data: tuple[bytes, ...], shape: tuple) -> np.ndarray:
    """`RasterSpec.decode`, with a payload that does not decode as recorded a `RecordError` that names ``record``."""
    import tensorflow as tf
    from rasterio.errors import RasterioError

    try:
        return spec.decode(data, shape)
    except (ValueError, TypeError, RasterioError, tf.errors.OpError) as error:
        raise RecordError(
            f"{record}{side} data do not decode as {spec.encoding} {spec.dtype} {list(shape)} ({error})"
        ) from None


def decode_example(serialized: bytes, dataset=None) -> ChipExample:
    """Read a record back into pixels, in numpy: the inverse of `build_record` / `build_legacy_record`.

    ``dataset`` (a `DatasetInfo`, or dataset.json content holding at least ``image``
    and ``label``) is needed for legacy records only, which do not say their
    encoding or dtype. Pixels decode by `RasterSpec.decode`; in-graph parsing is
    `tfchips.parse.parse_example`. Raises `RecordError` naming the record and feature for
    bytes that are not a record, a missing or malformed feature, or pixels that
    do not decode as the record says.
    """
    import tensorflow as tf
    from google.protobuf.message import DecodeError

    try:
        features = tf.train.Example.FromString(serialized).features.feature
    except DecodeError as error:
        raise RecordError(f"not a tf.train.Example ({error})") from None
    if "identifier" in features:
        return _decode_legacy(features, dataset)
    record = ""  # "record 'NAME': " once the name is known
    try:
        record = f"record {_feature(features, 'name').bytes_list.value[0].decode('utf-8')!r}: "
        specs = {side: record_spec(features, side, record) for side in ("image", "label")}
        rasters = {
            side: _pixels(record, side, spec, tuple(_feature(features, f"{side}/data").bytes_list.value), spec.shape)
            for side, spec in specs.items()
        }
        crs = _feature(features, "crs").bytes_list.value[0].decode("utf-8")
        return _example(
            specs,
            rasters,
            name=_feature(features, "name").bytes_list.value[0].decode("utf-8"),
            key=_feature(features, "key").bytes_list.value[0].decode() or None,
            crs=crs or None,
            transform=Affine.from_gdal(*struct.unpack("<6d", _feature(features, "transform").bytes_list.value[0])),
        )
    except (IndexError, KeyError, UnicodeDecodeError, struct.error) as error:
        raise RecordError(f"{record}not a tfchips record: missing or malformed feature {error}") from None


def _decode_legacy(features, dataset) -> ChipExample:
    from tfchips.records.dataset_info import raster_specs  # it builds on this module

    if dataset is None:
        raise RecordError("legacy records do not say their encoding or dtype: pass the dataset.json content")
    specs = dict(zip(LEGACY_SIDES, raster_specs(dataset)))
    record = ""
    try:
        identifier = _feature(features, "identifier").bytes_list.value[0].decode("utf-8")
        record = f"legacy record {identifier!r}: "
        sides = {}
        for side, (data_key, prefix) in LEGACY_SIDES.items():
            spec = specs[side]
            value = _feature(features, data_key)
            shape = (
                _feature(features, f"{prefix}/height").int64_list.value[0],
                _feature(features, f"{prefix}/width").int64_list.value[0],
                _feature(features, "image/channels").int64_list.value[0] if side == "image" else spec.shape[2],
            )
            if value.HasField("float_list"):  # the pixels as float32, whatever their dtype: cast back, as parse_example
                floats = np.asarray(value.float_list.value, dtype=np.float32)
                if floats.size != math.prod(shape):
                    raise RecordError(f"{record}{side} holds {floats.size} floats, not {' x '.join(map(str, shape))}")
                sides[side] = floats.reshape(shape).astype(spec.dtype)
            else:
                sides[side] = _pixels(record, side, spec, tuple(value.bytes_list.value), shape)
    except (IndexError, KeyError, UnicodeDecodeError) as error:
        raise RecordError(f"{record}missing or malformed legacy feature {error}") from None
    key = chip_key(identifier.replace(":", "#"))
    return _example(specs, sides, name=identifier.replace(":", "#") if key else identifier, key=key, crs=None, transform=None)


def _example(specs: Mapping[str, RasterSpec], pixels: Mapping[str, np.ndarray], **where) -> ChipExample:
    """A decoded record: ``pixels`` per side, described by its ``specs``; ``where`` names and places it."""
    image, label = specs["image"], specs["label"]
    return ChipExample(
        **where,
        image=pixels["image"],
        label=pixels["label"],
        image_band_names=image.band_names,
        label_band_names=label.band_names,
        image_encoding=image.encoding,
        image_format=image.format,
        label_encoding=label.encoding,
        label_format=label.format,
    )


def feature_table(schema: str, image: RasterSpec, label: RasterSpec) -> dict[str, dict]:
    """dataset.json's ``features``: key -> {"type": bytes|int64|float, "shape": [] | [n] | None}.

    ``[]`` is one value, ``[n]`` exactly n values, None a variable number.
    """

    def fixed(kind: str, *length: int) -> dict:
        return {"type": kind, "shape": list(length)}

    if schema == "legacy":
        payload = legacy_payload(image, label)
        table = {"identifier": fixed("bytes")}
        for spec, (key, prefix) in zip((image, label), LEGACY_SIDES.values()):
            if payload == "bytes":
                table[key] = fixed("bytes")
            else:
                known = None not in spec.shape
                table[key] = fixed("float", math.prod(spec.shape)) if known else {"type": "float", "shape": None}
            table[f"{prefix}/height"] = fixed("int64")
            table[f"{prefix}/width"] = fixed("int64")
        table["image/channels"] = fixed("int64")
        return table
    table = {name: fixed("bytes") for name in ("name", "key", "crs", "transform")}
    for prefix, spec in (("image", image), ("label", label)):
        for field in ("encoding", "format", "dtype"):
            table[f"{prefix}/{field}"] = fixed("bytes")
        table[f"{prefix}/data"] = fixed("bytes", len(spec.parts))
        table[f"{prefix}/shape"] = fixed("int64", 3)
        table[f"{prefix}/band_names"] = fixed("bytes", spec.shape[2])
    return table


def feature_spec(dataset) -> dict:
    """``tf.io.parse_example`` features of a dataset's records (a `DatasetInfo` or dataset.json content)."""
    import tensorflow as tf

    from tfchips.records.dataset_info import DatasetInfo  # it builds on this module

    kinds = {"bytes": tf.string, "int64": tf.int64, "float": tf.float32}
    return {
        key: tf.io.VarLenFeature(kinds[f["type"]])
        if f["shape"] is None
        else tf.io.FixedLenFeature(f["shape"], kinds[f["type"]])
        for key, f in DatasetInfo.of(dataset).features.items()
    }
