"""Pixel masks by name: Landsat Collection 2 QA_PIXEL bits and Sentinel-2 SCL classes.

``mask_bits`` masks pixels whose mask asset has any of the given bits set, written
``ASSET=BITS`` where BITS are bit numbers (0 = least significant) or names of
`LANDSAT_QA_BITS`, or the preset `LANDSAT_CLOUDS`::

    qa_pixel=1,3,4                 # dilated cloud, cloud, cloud shadow
    qa_pixel=fill,cloud,shadow
    qa_pixel=landsat-clouds        # fill, dilated cloud, cirrus, cloud, shadow

``mask_values`` (a class raster such as SCL) takes class numbers or names of
`SCL_CLASSES`, or the preset ``s2-clouds`` (cloud shadow, medium and high cloud, cirrus).
Names are case-insensitive; ``-`` and ``_`` are the same.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from tfchips.errors import ConfigError

# Landsat Collection 2 Level-1 and Level-2 QA_PIXEL bits.
LANDSAT_QA_BITS = {
    "fill": 0,
    "dilated_cloud": 1,
    "cirrus": 2,
    "cloud": 3,
    "shadow": 4,
    "cloud_shadow": 4,
    "snow": 5,
    "clear": 6,
    "water": 7,
}
LANDSAT_CLOUDS = ("fill", "dilated_cloud", "cirrus", "cloud", "shadow")
# Sentinel-2 Level-2A scene classification (SCL) classes.
SCL_CLASSES = {
    "no_data": 0,
    "saturated": 1,
    "dark": 2,
    "cloud_shadow": 3,
    "shadow": 3,
    "vegetation": 4,
    "not_vegetated": 5,
    "water": 6,
    "unclassified": 7,
    "cloud_medium": 8,
    "cloud_high": 9,
    "cirrus": 10,
    "snow": 11,
}
S2_CLOUDS = ("cloud_shadow", "cloud_medium", "cloud_high", "cirrus")
_BIT_PRESETS = {"landsat_clouds": LANDSAT_CLOUDS}
_CLASS_PRESETS = {"s2_clouds": S2_CLOUDS}
# Bits a mask asset can hold: its values are read as 64-bit integers.
_MAX_BIT = 63


def mask_classes(value: Any) -> tuple[int, ...]:
    """Class numbers from ``value``: numbers, `SCL_CLASSES` names and ``s2-clouds``, comma-separated
    text or a list.

    Raises:
        ConfigError: an unknown name or a negative number (the caller names the parameter).
    """
    return _numbers(value, SCL_CLASSES, _CLASS_PRESETS, None)


def mask_bits(value: Any) -> tuple[str, tuple[int, ...]]:
    """(asset, bit numbers) from ``"ASSET=BITS"``, a one-entry mapping {asset: bits} or a pair.

    Raises:
        ConfigError: a malformed value, an unknown name or a bit past 63 (the caller names the parameter).
    """
    if isinstance(value, Mapping) and len(value) == 1:
        value = next(iter(value.items()))
    if isinstance(value, str):
        asset, equals, bits = value.partition("=")
        value = (asset, bits) if equals else None
    if not (isinstance(value, (tuple, list)) and len(value) == 2 and isinstance(value[0], str) and value[0].strip()):
        raise ConfigError(f"expected ASSET=BITS such as qa_pixel=1,3,4 or qa_pixel=landsat-clouds, got {value!r}")
    return value[0].strip(), _numbers(value[1], LANDSAT_QA_BITS, _BIT_PRESETS, _MAX_BIT)


def bits_set(layer: np.ndarray, bits: tuple[int, ...]) -> np.ndarray:
    """Where the integer ``layer`` has any of ``bits`` set (rows, cols booleans)."""
    selected = np.uint64(sum(1 << bit for bit in bits))
    return (layer.astype(np.int64).view(np.uint64) & selected) != 0


def _numbers(value: Any, names: dict[str, int], presets: dict, highest: int | None) -> tuple[int, ...]:
    words = value.split(",") if isinstance(value, str) else value if isinstance(value, (list, tuple)) else [value]
    found: set[int] = set()
    for word in words:
        # A YAML list inside a mapping reaches here as its text: "[1, 3, 4]".
        text = str(word).strip().strip("[]'\" ").lower().replace("-", "_")
        if not text:
            continue
        if text in presets:
            found.update(names[n] for n in presets[text])
        elif text in names:
            found.add(names[text])
        else:
            try:
                number = int(text)
            except ValueError:
                known = ", ".join(sorted({*names, *presets})).replace("_", "-")
                raise ConfigError(f"expected numbers or the names {known}; got {word!r}") from None
            if number < 0 or (highest is not None and number > highest):
                top = f" 0 to {highest}" if highest is not None else " of 0 or more"
                raise ConfigError(f"{number} is out of range; expected numbers{top}")
            found.add(number)
    if not found:
        raise ConfigError(f"expected at least one number or name, got {value!r}")
    return tuple(sorted(found))
