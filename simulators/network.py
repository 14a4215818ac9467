"""Network behaviour and identity of every simulated device, as its gateway reports them.

Each telemetry report carries, beside the sensor metrics, what the device did on the network since
its previous report (`net_*` metrics, integers) and an `info` object with its identity and state
(client id, source IP, firmware, config hash). See docs/wire-format.md.

A healthy device talks to very few peers: a street light or a mobility sensor to its broker only,
a camera to its recording server and its broker (and to an NTP server now and then). Rare benign
novelties (a DNS lookup, an NTP pool rotation to a new address) keep detectors honest.
"""

from __future__ import annotations

import zlib
from typing import Final

import numpy as np

from simulators import catalog
from simulators.fleet import Device
from simulators.telemetry.base import Columns, TelemetryModel

NET_METRICS: Final = (
    "net_bytes_out",
    "net_bytes_in",
    "net_pkts_out",
    "net_conns",
    "net_dst_ips",
    "net_dst_ports",
    "net_new_dsts",
    "net_telnet_attempts",
    "net_dns_queries",
)

# Random streams of the network model (the sensor models use small numbers).
_S_BYTES, _S_IN, _S_PKTS, _S_EXTRA, _S_DNS, _S_NEW = 900, 901, 902, 903, 904, 905
# Per report: probability of a benign new destination (NTP pool rotation, firmware check).
_NEW_DST_RATE = 0.0005
# DNS lookups per hour (broker / NTP names re-resolved).
_DNS_PER_HOUR: Final = {catalog.LIGHTING: 1.0, catalog.MOBILITY: 1.0, catalog.VIDEO: 4.0}
# Telemetry + keep-alive bytes per report of a small device (MQTT over TLS), out and in.
_SMALL_OUT: Final = {catalog.LIGHTING: 520.0, catalog.MOBILITY: 380.0}
_SMALL_IN: Final = {catalog.LIGHTING: 180.0, catalog.MOBILITY: 150.0}
_MTU_PAYLOAD = 1_350.0
# A camera's management traffic (broker, ONVIF events) on top of the video upload, bytes/s.
_CAMERA_MGMT_BPS = 220.0
# TCP acknowledgements and RTCP reports coming back, share of the bytes sent.
_CAMERA_ACK_SHARE = 0.018


def columns(
    kind: str, model: TelemetryModel, rows: np.ndarray, report: np.ndarray, sensor: Columns
) -> Columns:
    """The `net_*` columns of a batch of reports of one sub-type (same rows as `sensor`)."""
    cadence = model.cadence_s[rows]
    u_extra = model.uniform(rows, report, _S_EXTRA)
    dns_p = _DNS_PER_HOUR.get(kind, 1.0) * cadence / 3_600.0
    dns = (model.uniform(rows, report, _S_DNS) < dns_p).astype(np.int64)
    new = (model.uniform(rows, report, _S_NEW) < _NEW_DST_RATE).astype(np.int64)
    if kind == catalog.VIDEO:
        upload_bytes = sensor["upload_kbps"] * 125.0 * cadence  # kbit/s -> bytes per report
        out = upload_bytes + _CAMERA_MGMT_BPS * cadence * (
            1 + 0.1 * model.normal(rows, report, _S_BYTES)
        )
        back = out * _CAMERA_ACK_SHARE * (1 + 0.05 * model.normal(rows, report, _S_IN))
        pkts = out / _MTU_PAYLOAD * (1 + 0.01 * model.normal(rows, report, _S_PKTS))
        # Recording server and broker, plus an NTP exchange now and then.
        conns = 2 + (u_extra < 0.08).astype(np.int64)
    else:
        base_out, base_in = _SMALL_OUT.get(kind, 400.0), _SMALL_IN.get(kind, 150.0)
        out = base_out * (1 + 0.08 * model.normal(rows, report, _S_BYTES))
        back = base_in * (1 + 0.08 * model.normal(rows, report, _S_IN))
        pkts = 4 + np.floor(3 * model.uniform(rows, report, _S_PKTS))
        conns = 1 + (u_extra < 0.01).astype(np.int64)
    conns = conns + new
    return {
        "net_bytes_out": np.rint(np.maximum(out, 0.0)).astype(np.int64),
        "net_bytes_in": np.rint(np.maximum(back, 0.0)).astype(np.int64),
        "net_pkts_out": np.maximum(np.rint(pkts), 1).astype(np.int64),
        "net_conns": conns,
        "net_dst_ips": conns.copy(),
        "net_dst_ports": conns.copy(),
        "net_new_dsts": new,
        "net_telnet_attempts": np.zeros(len(rows), dtype=np.int64),
        "net_dns_queries": dns,
    }


def config_hash(device: Device) -> str:
    """The hash of the configuration profile a device runs: shared by a commune's devices of
    one hardware model, so a change on a single device stands out."""
    profile = f"{device.tenant}/{device.kind}/{device.model}/v1".encode()
    return f"{zlib.crc32(profile):08x}"


def info(device: Device) -> dict[str, str]:
    """The identity and state a device's gateway reports with every message (the `info` object)."""
    return {
        "client_id": device.device_id,
        "src_ip": device.ip,
        "firmware": device.firmware,
        "config_hash": config_hash(device),
        "model": device.model,
    }
