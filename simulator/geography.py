"""Distances and displacements on the Earth's surface, in kilometres.

>>> round(distance_km(6.5244, 3.3792, 5.6037, -0.1870))  # Lagos -> Accra
407
>>> lat, lon = displaced(0.0, 0.0, 111.195, 0.0)  # one degree north
>>> round(lat, 3), round(lon, 3)
(1.0, 0.0)
"""

from __future__ import annotations

import math

EARTH_RADIUS_KM = 6371.0
KM_PER_DEGREE = math.pi * EARTH_RADIUS_KM / 180.0  # ~111.195 km


def distance_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle (haversine) distance."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


def displaced(lat: float, lon: float, distance: float, bearing_deg: float) -> tuple[float, float]:
    """The point `distance` km from (lat, lon) along an initial bearing (0 = north)."""
    delta = distance / EARTH_RADIUS_KM
    theta = math.radians(bearing_deg)
    p1, l1 = math.radians(lat), math.radians(lon)
    p2 = math.asin(math.sin(p1) * math.cos(delta) + math.cos(p1) * math.sin(delta) * math.cos(theta))
    l2 = l1 + math.atan2(
        math.sin(theta) * math.sin(delta) * math.cos(p1), math.cos(delta) - math.sin(p1) * math.sin(p2)
    )
    return math.degrees(p2), (math.degrees(l2) + 540.0) % 360.0 - 180.0
