"""Per-pixel composites of a stack of scenes, in pure numpy.

A stack is ``data`` shaped (scenes, bands, rows, cols) with ``valid`` shaped
(scenes, rows, cols): True where the scene has a value in every band and no pixel mask
(cloud, shadow, ...) applies. Every method is vectorised over pixels.

- ``closest``, ``latest``, ``least-cloudy``: at each pixel, the values of the most
  preferred scene that is valid there; `scene_order` ranks the scenes.
- ``median``: per band, the median of the valid values; for integer data the mean of
  the two middle values is rounded half up, so results stay in the source dtype.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Sequence

import numpy as np

METHODS = ("closest", "median", "latest", "least-cloudy")
# Methods that take each pixel from one scene, chosen by rank.
PRIORITY_METHODS = ("closest", "latest", "least-cloudy")


@dataclass(frozen=True)
class Composite:
    """A composited tile: ``data`` (bands, rows, cols) in the stack's dtype, ``nodata``
    where ``valid`` (rows, cols) is False; ``used`` (scenes,) marks the scenes that gave
    at least one pixel. ``provenance`` (rows, cols, int64) says where each pixel came
    from: for a priority method the stack index of the scene taken (-1 where none), for
    ``median`` how many scenes were valid there."""

    data: np.ndarray
    valid: np.ndarray
    used: np.ndarray
    provenance: np.ndarray | None = None


def scene_order(
    method: str,
    datetimes: Sequence[datetime],
    cloud_covers: Sequence[float | None],
    ids: Sequence[str],
    reference: datetime | None = None,
) -> np.ndarray:
    """Indices of the scenes from most to least preferred by a priority method.

    - ``closest``: nearest in time to ``reference`` (required), then lower cloud cover;
    - ``latest``: most recent first, then lower cloud cover;
    - ``least-cloudy``: lowest cloud cover first, then most recent.

    Remaining ties go to the smaller scene id, so the order never depends on input
    order. A scene with unknown cloud cover ranks after every known one.
    """
    if method not in PRIORITY_METHODS:
        raise ValueError(f"scene_order needs one of {', '.join(PRIORITY_METHODS)}, got {method!r}")
    if method == "closest" and reference is None:
        raise ValueError("the closest method needs a reference date")
    clouds = [float("inf") if c is None else float(c) for c in cloud_covers]
    seconds = [moment.timestamp() for moment in datetimes]
    if method == "closest":
        target = reference.timestamp()
        keys = [(abs(s - target), c, i) for s, c, i in zip(seconds, clouds, ids)]
    elif method == "latest":
        keys = [(-s, c, i) for s, c, i in zip(seconds, clouds, ids)]
    else:
        keys = [(c, -s, i) for s, c, i in zip(seconds, clouds, ids)]
    return np.array(sorted(range(len(keys)), key=keys.__getitem__), dtype=np.intp)


def first_valid(data: np.ndarray, valid: np.ndarray, order: Sequence[int], nodata: float = 0) -> Composite:
    """At each pixel, all bands of the first scene in ``order`` that is valid there.

    Scenes left out of ``order`` are never used.
    """
    _check_stack(data, valid)
    order = np.asarray(order, dtype=np.intp)
    scenes, bands, rows, cols = data.shape
    if order.size == 0:
        return _empty(data.dtype, bands, rows, cols, scenes, nodata, none=-1)
    ranked = valid[order]
    best = ranked.argmax(axis=0)  # first True along the ranked scenes
    chosen = order[best]
    found = np.take_along_axis(ranked, best[np.newaxis], axis=0)[0]
    out = np.take_along_axis(data, chosen[np.newaxis, np.newaxis], axis=0)[0]
    out[:, ~found] = nodata
    used = np.zeros(scenes, dtype=bool)
    used[np.unique(chosen[found])] = True
    return Composite(out, found, used, np.where(found, chosen, -1).astype(np.int64))


def median(data: np.ndarray, valid: np.ndarray, nodata: float = 0) -> Composite:
    """Per band and pixel, the median of the values of the scenes valid there."""
    _check_stack(data, valid)
    scenes, bands, rows, cols = data.shape
    if scenes == 0:
        return _empty(data.dtype, bands, rows, cols, scenes, nodata, none=0)
    # Invalid entries become the largest value so that sorting pushes them past the valid
    # ones; a valid value equal to it sorts among them harmlessly, being the same number.
    floating = data.dtype.kind == "f"
    sentinel = np.nan if floating else np.iinfo(data.dtype).max
    # Sorting short rows along the last, contiguous axis is much faster than along the first.
    work = np.empty((bands, rows, cols, scenes), dtype=data.dtype)
    by_scene = np.moveaxis(work, -1, 0)
    np.copyto(by_scene, data)
    np.copyto(by_scene, np.asarray(sentinel, data.dtype), where=~valid[:, np.newaxis])
    work.sort(axis=-1)
    count = valid.sum(axis=0)
    low = np.maximum((count - 1) // 2, 0)[np.newaxis, :, :, np.newaxis]
    high = (count // 2)[np.newaxis, :, :, np.newaxis]
    a = np.take_along_axis(work, low, axis=-1)[..., 0].astype(np.float64)
    b = np.take_along_axis(work, high, axis=-1)[..., 0].astype(np.float64)
    middle = (a + b) / 2.0
    if not floating:
        middle = np.floor(middle + 0.5)
    found = count > 0
    out = np.where(found, middle, nodata).astype(data.dtype)
    return Composite(out, found, valid.any(axis=(1, 2)), count.astype(np.int64))


def composite(
    data: np.ndarray,
    valid: np.ndarray,
    method: str,
    order: Sequence[int] | None = None,
    nodata: float = 0,
) -> Composite:
    """Composite a stack with ``method``; priority methods need the ``order`` of `scene_order`."""
    if method == "median":
        return median(data, valid, nodata)
    if method not in PRIORITY_METHODS:
        raise ValueError(f"unknown composite method {method!r}; expected one of {', '.join(METHODS)}")
    if order is None:
        raise ValueError(f"the {method} method needs a scene order (see scene_order)")
    return first_valid(data, valid, order, nodata)


def _check_stack(data: np.ndarray, valid: np.ndarray) -> None:
    if data.ndim != 4:
        raise ValueError(f"expected data shaped (scenes, bands, rows, cols), got {data.shape}")
    expected = (data.shape[0], *data.shape[2:])
    if valid.shape != expected or valid.dtype != bool:
        raise ValueError(f"expected a boolean valid mask shaped {expected}, got {valid.dtype} {valid.shape}")


def _empty(dtype, bands: int, rows: int, cols: int, scenes: int, nodata: float, none: int) -> Composite:
    return Composite(
        np.full((bands, rows, cols), nodata, dtype=dtype),
        np.zeros((rows, cols), dtype=bool),
        np.zeros(scenes, dtype=bool),
        np.full((rows, cols), none, dtype=np.int64),
    )
