"""Traffic and MQTT-protocol analysis of packet captures (see docs/traffic.md).

The analyzer itself needs only the standard library, pydantic and orjson; `synth` (synthetic
captures) needs scapy.
"""

from sentinel.traffic.alerts import TrafficAlert
from sentinel.traffic.analyzer import Analysis, Analyzer, Summary, analyze_file
from sentinel.traffic.config import ALERT_KINDS, AlertKind, TrafficConfig
from sentinel.traffic.flows import FlowFeatures
from sentinel.traffic.inventory import InventoryError, load_inventory
from sentinel.traffic.pcap import CaptureError, CaptureReader
from sentinel.traffic.streams import Endpoint, MqttEvent

__all__ = [
    "ALERT_KINDS",
    "AlertKind",
    "Analysis",
    "Analyzer",
    "CaptureError",
    "CaptureReader",
    "Endpoint",
    "FlowFeatures",
    "InventoryError",
    "MqttEvent",
    "Summary",
    "TrafficAlert",
    "TrafficConfig",
    "analyze_file",
    "load_inventory",
]
