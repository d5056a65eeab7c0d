"""Distances on the Earth's surface.

>>> round(haversine_km(6.5244, 3.3792, -1.2921, 36.8219))   # Lagos -> Nairobi
3812
"""

from __future__ import annotations

from math import asin, cos, radians, sin, sqrt

EARTH_RADIUS_KM = 6371.0088


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in km between two (lat, lon) points in degrees."""
    dlat = radians(lat2 - lat1)
    dlon = radians(lon2 - lon1)
    a = sin(dlat / 2) ** 2 + cos(radians(lat1)) * cos(radians(lat2)) * sin(dlon / 2) ** 2
    return 2 * EARTH_RADIUS_KM * asin(min(1.0, sqrt(a)))


def max_pairwise_km(points: list[tuple[float, float]]) -> float:
    """Largest distance between any two points (0 for fewer than two).

    >>> max_pairwise_km([(0.0, 0.0), (0.0, 1.0), (0.0, 0.5)]) > 111
    True
    """
    best = 0.0
    for i, (lat1, lon1) in enumerate(points):
        for lat2, lon2 in points[i + 1 :]:
            best = max(best, haversine_km(lat1, lon1, lat2, lon2))
    return best
