"""The simulated fleet: which devices exist, where they are and what they are."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from simulators import catalog
from simulators.geography import METROPOLE

# Devices scatter around their zone centre (a quarter is ~1 km across).
_JITTER_M = 350.0
_M_PER_DEG_LAT = 111_320.0
# Per-device keys stay below 2**53 so the inventory survives any JSON reader.
_KEY_BOUND = 2**53


@dataclass(frozen=True, slots=True)
class Device:
    device_id: str
    tenant: str
    zone: str
    kind: str
    subtype: str
    model: str
    lat: float
    lon: float
    cadence_s: int
    # Offset of the device's reports inside its cadence, so a fleet does not report in lockstep.
    phase_s: float
    firmware: str
    ip: str
    # Key of the device's own random stream (telemetry noise, hidden hardware traits).
    noise_key: int


@dataclass(frozen=True)
class Fleet:
    devices: tuple[Device, ...]
    _by_id: dict[str, Device] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_id = {d.device_id: d for d in self.devices}
        if len(by_id) != len(self.devices):
            dupes = [i for i, n in Counter(d.device_id for d in self.devices).items() if n > 1]
            raise ValueError(f"duplicate device ids: {dupes[:5]}")
        object.__setattr__(self, "_by_id", by_id)

    def __len__(self) -> int:
        return len(self.devices)

    def __iter__(self) -> Iterator[Device]:
        return iter(self.devices)

    def get(self, device_id: str) -> Device:
        try:
            return self._by_id[device_id]
        except KeyError:
            raise KeyError(f"no device {device_id!r} in the fleet") from None

    def of_kind(self, kind: str) -> tuple[Device, ...]:
        return tuple(d for d in self.devices if d.kind == kind)


def kind_counts(n_devices: int) -> dict[str, int]:
    """Split n devices over the kinds by the catalog shares (largest remainder).

    Any fleet of 3 or more devices has at least one camera, so the camera scenarios always apply.
    """
    exact = {k: catalog.KIND_SHARE[k] * n_devices for k in catalog.KINDS}
    counts = {k: math.floor(v) for k, v in exact.items()}
    by_remainder = sorted(catalog.KINDS, key=lambda k: counts[k] - exact[k])
    for k in by_remainder[: n_devices - sum(counts.values())]:
        counts[k] += 1
    if n_devices >= 3 and counts[catalog.VIDEO] == 0:
        donor = max(catalog.KINDS, key=lambda k: counts[k])
        counts[donor] -= 1
        counts[catalog.VIDEO] += 1
    return counts


def build_fleet(n_devices: int, seed: int) -> Fleet:
    """A deterministic fleet of `n_devices` spread over the Métropole de Lyon."""
    if n_devices < 0:
        raise ValueError(f"n_devices must be >= 0, got {n_devices}")
    rng = np.random.default_rng(seed)
    kinds = np.repeat(np.array(catalog.KINDS), [kind_counts(n_devices)[k] for k in catalog.KINDS])
    rng.shuffle(kinds)
    u = rng.random((6, n_devices))
    communes = [(c, c.weight) for c in METROPOLE]
    commune_of = _categorical(u[0], communes)
    zone_of = np.empty(n_devices, dtype=object)
    subtype_of = np.empty(n_devices, dtype=object)
    model_of = np.empty(n_devices, dtype=object)
    firmware_of = np.empty(n_devices, dtype=object)
    for commune in METROPOLE:
        mine = commune_of == commune
        zone_of[mine] = _categorical(u[1][mine], [(z, z.weight) for z in commune.zones])
    for kind in catalog.KINDS:
        mine = kinds == kind
        subtype_of[mine] = _categorical(u[2][mine], catalog.SUBTYPES[kind])
        firmware_of[mine] = _categorical(u[3][mine], catalog.FIRMWARE[kind])
        for subtype, _ in catalog.SUBTYPES[kind]:
            ours = mine & (subtype_of == subtype)
            model_of[ours] = _categorical(u[4][ours], _models(kind, subtype))
    offsets = np.clip(rng.normal(0.0, _JITTER_M, (n_devices, 2)), -3 * _JITTER_M, 3 * _JITTER_M)
    keys = rng.integers(_KEY_BOUND, size=n_devices).tolist()

    serials: Counter[tuple[str, str]] = Counter()
    devices = []
    traits = zip(kinds.tolist(), commune_of, zone_of, strict=True)
    for i, (kind, commune, zone) in enumerate(traits):
        serials[commune.slug, kind] += 1
        serial = serials[commune.slug, kind]
        service = METROPOLE.index(commune) * len(catalog.KINDS) + catalog.KINDS.index(kind)
        lat, lon = _jitter(zone.lat, zone.lon, offsets[i].tolist())
        cadence = catalog.CADENCE_S[kind]
        devices.append(
            Device(
                device_id=f"{commune.slug}-{catalog.ID_INFIX[kind]}-{serial:05d}",
                tenant=commune.slug,
                zone=zone.slug,
                kind=kind,
                subtype=subtype_of[i],
                model=model_of[i],
                lat=lat,
                lon=lon,
                cadence_s=cadence,
                phase_s=round(float(u[5][i]) * cadence, 3) % cadence,
                firmware=firmware_of[i],
                ip=_ip(service, serial),
                noise_key=keys[i],
            )
        )
    return Fleet(tuple(sorted(devices, key=lambda d: d.device_id)))


def _categorical(u: np.ndarray, options: Sequence[tuple[object, float]]) -> np.ndarray:
    """The option each uniform draw in `u` falls on, options weighted by their second item."""
    weights = np.array([w for _, w in options], dtype=float)
    cumulative = np.cumsum(weights / weights.sum())
    picks = np.empty(len(options), dtype=object)
    picks[:] = [option for option, _ in options]
    return picks[np.minimum(np.searchsorted(cumulative, u, side="right"), len(options) - 1)]


def _models(kind: str, subtype: str) -> Sequence[tuple[str, float]]:
    if kind == catalog.LIGHTING:
        return [(m.name, m.share) for m in catalog.LAMP_MODELS]
    if kind == catalog.VIDEO:
        return [(m.name, m.share) for m in catalog.CAMERA_MODELS]
    return catalog.MOBILITY_MODELS[subtype]


def _jitter(lat: float, lon: float, offset_m: Sequence[float]) -> tuple[float, float]:
    north, east = offset_m
    m_per_deg_lon = _M_PER_DEG_LAT * math.cos(math.radians(lat))
    return round(lat + north / _M_PER_DEG_LAT, 6), round(lon + east / m_per_deg_lon, 6)


def _ip(service: int, serial: int) -> str:
    # One 10.x/16 per commune and kind (a VLAN per service); a huge service spills into the next.
    block, host = divmod(serial, 254 * 256)
    third, fourth = divmod(host, 254)
    return f"10.{(1 + service + 32 * block) % 256}.{third}.{fourth + 1}"
