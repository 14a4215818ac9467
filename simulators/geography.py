"""Métropole de Lyon: communes (tenants) and districts (zones) with their centres.

Coordinates are approximate centres (WGS 84, degrees) of real quarters; weights say roughly how
much street furniture a zone holds relative to its neighbours in the same commune.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Zone:
    slug: str
    lat: float
    lon: float
    weight: float


@dataclass(frozen=True, slots=True)
class Commune:
    slug: str
    name: str
    # Share of the metropole's devices; roughly follows population.
    weight: float
    zones: tuple[Zone, ...]


METROPOLE: tuple[Commune, ...] = (
    Commune(
        "lyon",
        "Lyon",
        0.66,
        (
            Zone("presquile", 45.7606, 4.8343, 1.4),
            Zone("part-dieu", 45.7607, 4.8575, 1.3),
            Zone("confluence", 45.7415, 4.8185, 1.0),
            Zone("croix-rousse", 45.7745, 4.8315, 1.0),
            Zone("vieux-lyon", 45.7620, 4.8272, 0.6),
            Zone("gerland", 45.7275, 4.8330, 1.0),
            Zone("brotteaux", 45.7682, 4.8500, 0.9),
            Zone("guillotiere", 45.7540, 4.8440, 0.9),
            Zone("vaise", 45.7745, 4.8050, 0.8),
        ),
    ),
    Commune(
        "villeurbanne",
        "Villeurbanne",
        0.22,
        (
            Zone("gratte-ciel", 45.7688, 4.8821, 1.2),
            Zone("charpennes", 45.7704, 4.8636, 1.0),
            Zone("la-doua", 45.7826, 4.8723, 0.8),
        ),
    ),
    Commune(
        "venissieux",
        "Vénissieux",
        0.12,
        (
            Zone("centre", 45.6973, 4.8860, 1.0),
            Zone("minguettes", 45.6890, 4.8660, 1.0),
            Zone("parilly", 45.7190, 4.8860, 0.7),
        ),
    ),
)

# Sun and weather models use one point for the whole metropole (it spans ~10 km).
LYON_LAT = 45.7578
LYON_LON = 4.8320
