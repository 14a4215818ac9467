"""Real captures from nDPI's test data in ../shared/pcaps (read in place, never copied)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from scapy.contrib.mqtt import CONTROL_PACKET_TYPE, MQTT
from scapy.layers.inet import IP, TCP
from scapy.packet import Packet
from scapy.utils import rdpcap

from sentinel.traffic import analyze_file
from sentinel.traffic.mqtt import Publish

PCAPS = Path(__file__).resolve().parents[2] / "shared" / "pcaps"

pytestmark = [
    pytest.mark.shared,
    pytest.mark.skipif(not PCAPS.is_dir(), reason=f"no shared captures in {PCAPS}"),
]

# Per capture: MQTT packets by type, MQTT streams (of which picked up mid-way), server ports.
EXPECTED = {
    "ndpi-coap_mqtt.pcap": (
        {
            "CONNACK": 1,
            "CONNECT": 1,
            "PINGREQ": 2,
            "PINGRESP": 2,
            "PUBACK": 70,
            "PUBLISH": 75,
            "SUBACK": 1,
            "SUBSCRIBE": 1,
        },
        4,
        3,
        {17501},
    ),
    "ndpi-mqtt.pcapng": (
        {"CONNACK": 1, "CONNECT": 2, "DISCONNECT": 1, "PUBLISH": 2, "SUBACK": 1, "SUBSCRIBE": 1},
        2,
        0,
        {1883},
    ),
}


def scapy_mqtt_types(path: Path, ports: set[int]) -> Counter[str]:
    """The same count by scapy's own dissector, as a cross-check."""
    counts: Counter[str] = Counter()
    for pkt in rdpcap(str(path)):
        if TCP not in pkt or not {pkt[TCP].sport, pkt[TCP].dport} & ports:
            continue
        ip, tcp = pkt[IP], pkt[TCP]
        payload = bytes(ip)[ip.ihl * 4 + tcp.dataofs * 4 : ip.len]  # no Ethernet padding
        layer: Packet | None = MQTT(payload) if payload else None
        while isinstance(layer, MQTT):
            counts[CONTROL_PACKET_TYPE[layer.type]] += 1
            layer = layer.payload.payload if layer.payload else None
    return counts


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_real_captures(name: str) -> None:
    by_type, streams, midstream, ports = EXPECTED[name]
    analysis = analyze_file(PCAPS / name, keep_events=True)
    s = analysis.summary
    assert s.damage is None
    assert s.parse_errors == 0
    assert s.reassembly_gaps == 0
    assert s.mqtt_by_type == by_type
    assert (s.mqtt_streams, s.mqtt_midstream) == (streams, midstream)
    assert {e.dst.port for e in analysis.events if e.from_client} == ports
    assert dict(scapy_mqtt_types(PCAPS / name, ports)) == by_type


def test_non_standard_port_flows() -> None:
    """ndpi-coap_mqtt.pcap: MQTT on 17501 (one stream from its CONNECT, three mid-way)."""
    analysis = analyze_file(PCAPS / "ndpi-coap_mqtt.pcap", keep_events=True)
    connects = [e for e in analysis.events if e.client_id is not None]
    assert {(e.client_id, e.dst.port) for e in connects if e.from_client} == {("Bus41", 17501)}
    topics = {e.packet.topic for e in analysis.events if isinstance(e.packet, Publish)}
    assert "Bus17Info" in topics
    assert analysis.summary.udp_packets == 819  # the CoAP side of the capture
