"""WGS84 longitude/latitude to northern-UTM metres and back, as the DLTile reference computes them.

Krueger series to third order (northern-hemisphere zones only, no false northing: southern
latitudes get negative northings), so that `tfchips.grid` decides tile membership on the same
numbers as ``earthdaily.earthone.geo.DLTile``.
"""

from __future__ import annotations

import numpy as np

# WGS84 and UTM constants (northern-hemisphere zones only, no false northing).
_SEMI_MAJOR_AXIS = 6378137.0
_FLATTENING = 1.0 / 298.257223563
_SCALE = 0.9996
FALSE_EASTING = 500000
_N = _FLATTENING / (2 - _FLATTENING)
_RECTIFYING_RADIUS = (
    _SEMI_MAJOR_AXIS / (1 + _N) * (1.0 + 1.0 / 4.0 * _N**2 + 1.0 / 64.0 * _N**4)
)


def lonlat_to_utm(lon: np.ndarray, lat: np.ndarray, zone: int) -> tuple[np.ndarray, np.ndarray]:
    """Project WGS84 degrees to easting, northing (metres) in northern UTM ``zone``.

    Krueger series to third order, the same expansion as the reference client, so
    that tile membership is decided on identical numbers.
    """
    n = _N
    big_n = 2 * np.sqrt(n) / (1.0 + n)
    a1 = 1.0 / 2.0 * n - 2.0 / 3.0 * n**2 + 5.0 / 16.0 * n**3
    a2 = 13.0 / 48.0 * n**2 - 3.0 / 5.0 * n**3
    a3 = 61.0 / 240.0 * n**3
    radlon = np.deg2rad(np.asarray(lon, dtype=np.double) - 6.0 * zone + 183.0)
    sinlat = np.sin(np.deg2rad(np.asarray(lat, dtype=np.double)))
    with np.errstate(divide="ignore"):  # the poles map to infinity here and to finite metres below
        t = np.sinh(np.arctanh(sinlat) - big_n * np.arctanh(big_n * sinlat))
    etap = np.arctanh(np.sin(radlon) / np.sqrt(1 + t**2))
    xip = np.arctan(t / np.cos(radlon))
    k = _SCALE * _RECTIFYING_RADIUS
    easting = FALSE_EASTING + k * (
        etap
        + a1 * np.cos(2 * xip) * np.sinh(2 * etap)
        + a2 * np.cos(4 * xip) * np.sinh(4 * etap)
        + a3 * np.cos(6 * xip) * np.sinh(6 * etap)
    )
    northing = k * (
        xip
        + a1 * np.sin(2 * xip) * np.cosh(2 * etap)
        + a2 * np.sin(4 * xip) * np.cosh(4 * etap)
        + a3 * np.sin(6 * xip) * np.cosh(6 * etap)
    )
    return easting, northing


def utm_to_lonlat(easting: np.ndarray, northing: np.ndarray, zone: int) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of `lonlat_to_utm`: metres in northern UTM ``zone`` to WGS84 degrees.

    Longitudes are wrapped into [-180, 180).
    """
    n = _N
    b1 = 1.0 / 2.0 * n - 2.0 / 3.0 * n**2 + 37.0 / 96.0 * n**3
    b2 = 1.0 / 48.0 * n**2 + 1.0 / 15.0 * n**3
    b3 = 17.0 / 480.0 * n**3
    d1 = 2.0 * n - 2.0 / 3.0 * n**2 - 2.0 * n**3
    d2 = 7.0 / 3.0 * n**2 - 8.0 / 5.0 * n**3
    d3 = 56.0 / 15.0 * n**3
    k = _SCALE * _RECTIFYING_RADIUS
    xi = np.asarray(northing, dtype=np.double) / k
    eta = (np.asarray(easting, dtype=np.double) - FALSE_EASTING) / k
    xip = xi - (
        b1 * np.sin(2 * xi) * np.cosh(2 * eta)
        + b2 * np.sin(4 * xi) * np.cosh(4 * eta)
        + b3 * np.sin(6 * xi) * np.cosh(6 * eta)
    )
    etap = eta - (
        b1 * np.cos(2 * xi) * np.sinh(2 * eta)
        + b2 * np.cos(4 * xi) * np.sinh(4 * eta)
        + b3 * np.cos(6 * xi) * np.sinh(6 * eta)
    )
    chi = np.arcsin(np.sin(xip) / np.cosh(etap))
    lat = np.rad2deg(chi + d1 * np.sin(2 * chi) + d2 * np.sin(4 * chi) + d3 * np.sin(6 * chi))
    lon = 6.0 * zone - 183.0 + np.rad2deg(np.arctan(np.sinh(etap) / np.cos(xip)))
    lon = (lon + 180.0) % 360.0 - 180.0
    return lon, lat
