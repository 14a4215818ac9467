"""A run's broker-level events through the agent's traffic analysis, in simulated time.

Without a broker, what a scenario's MQTT-layer actions did is in its stream as broker events
(`simulators.effects.BrokerAction.events()`, the `{"event": ...}` entries of a recording): a
refused login, a subscription, a client id connecting from another address. Each becomes the
MQTT packets a capture of the broker's port would have shown (CONNECT with its client id and
username, the CONNACK, the SUBSCRIBE) and goes to the live agent's `Analyzer.event`; its alerts
go through the agent's `AlertBridge` into `Pipeline.raise_alerts`, with simulated time as the
bridge's clock (docs/scenarios.md, "How eval runs").
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Iterable, Mapping

from detectors.model import DeviceRef
from sentinel.alerting.alerts import Alert
from sentinel.config import TrafficSourcesConfig
from sentinel.pipeline import Pipeline
from sentinel.traffic.analyzer import Analyzer
from sentinel.traffic.live import AlertBridge
from sentinel.traffic.mqtt import Connack, Connect, MqttPacket, Subscribe
from sentinel.traffic.packet import ip_packed, ip_text
from sentinel.traffic.streams import Endpoint, MqttEvent
from simulators.fleet import Device

ORIGIN = "broker_events"  # evidence `origin`, and the end of the summary (as `broker_log`)
_BROKER = Endpoint("broker", 1883)
_KEEP_ALIVE_S = 30  # the simulator's paho clients (simulators/broker_actions.py)
_REFUSED = 5  # CONNACK "not authorised" (MQTT 3.1.1)
_MAX_SESSIONS = 4096  # sessions remembered for their subscriptions (recordings are untrusted)
_TEXT = 1024  # longer client ids, usernames and topics from a recording are cut


def fleet_inventory(devices: Iterable[Device]) -> dict[bytes, DeviceRef]:
    """The simulated fleet as the analyzer's inventory (devices by packed IP)."""
    return {ip_packed(d.ip): DeviceRef(d.tenant, d.zone, d.kind, d.device_id) for d in devices}


def _text(value: object) -> str | None:
    return None if value is None else str(value)[:_TEXT]


class BrokerTraffic:
    """The live agent's analyzer and alert bridge, driven by broker events and the run's clock.

    `add` an event, then `deliver(now)` the alert transitions (opened, and resolved after
    `resolve_after_s` of simulated quiet) into the pipeline's alert book.
    """

    def __init__(
        self, config: TrafficSourcesConfig, inventory: Mapping[bytes, DeviceRef] | None = None
    ) -> None:
        inventory = inventory or {}
        self.bridge = AlertBridge(config)
        # As `TrafficSources.analyzer` wires it for the agent's capture.
        self.analyzer = Analyzer(
            config,
            inventory,
            keep_features=False,
            keep_alerts=False,
            on_alert=lambda alert, _opened: self.bridge.touch(alert, ORIGIN),
        )
        self._ips = {d.device_id: ip_text(ip) for ip, d in inventory.items()}
        self._sessions: OrderedDict[tuple[str, str], int] = OrderedDict()
        self._streams = 0
        self.counts: Counter[str] = Counter()

    @property
    def active(self) -> bool:
        """Alerts are firing (so the clock must keep flushing to resolve them)."""
        return bool(self.bridge.active)

    def add(self, ts: float, event: Mapping[str, object]) -> None:
        """One broker event (`{"event": "connect_refused" | "subscribe" | "connect", ...}`)."""
        kind = event.get("event")
        src = _text(event.get("src_ip")) or ""
        try:
            ip_packed(src)
        except OSError:
            self.counts["bad_address"] += 1
            return
        client_id = _text(event.get("client_id")) or ""
        username = _text(event.get("username"))
        if kind == "connect_refused":
            self._connect(ts, src, client_id, username, _REFUSED)
        elif kind == "subscribe":
            topic = _text(event.get("topic"))
            if topic is None:
                self.counts["bad_event"] += 1
                return
            stream = self._sessions.get((client_id, src))
            if stream is None:  # its login comes first, as on the wire
                stream = self._connect(ts, src, client_id, username, 0)
                self._sessions[client_id, src] = stream
                if len(self._sessions) > _MAX_SESSIONS:
                    self._sessions.popitem(last=False)
            self._send(ts, stream, src, Subscribe(1, ((topic, 0),)), client_id, username)
        elif kind == "connect":
            # A client id taking over a session: the device's own session was open from its
            # address (the live action opens it just before, simulators/broker_actions.py).
            own = self._ips.get(client_id)
            if own is not None and own != src:
                self._connect(ts, own, client_id, username, 0)
            self._connect(ts, src, client_id, username, 0)
        else:
            self.counts["unknown_event"] += 1
            return
        self.counts[str(kind)] += 1

    def _connect(self, ts: float, src: str, client_id: str, username: str | None, code: int) -> int:
        self._streams += 1
        stream = self._streams
        connect = Connect(4, client_id, username, username is not None, _KEEP_ALIVE_S, True, None)
        self._send(ts, stream, src, connect, client_id, username)
        client = Endpoint(src, self._port(stream))
        self.analyzer.event(
            MqttEvent(ts, stream, _BROKER, client, False, Connack(False, code), client_id, username)
        )
        return stream

    def _send(
        self,
        ts: float,
        stream: int,
        src: str,
        packet: MqttPacket,
        client_id: str,
        username: str | None,
    ) -> None:
        client = Endpoint(src, self._port(stream))
        self.analyzer.event(
            MqttEvent(ts, stream, client, _BROKER, True, packet, client_id, username)
        )

    @staticmethod
    def _port(stream: int) -> int:
        return 32768 + stream % 28232  # Linux's ephemeral range

    async def deliver(self, pipeline: Pipeline, now: float) -> list[Alert]:
        """The bridge's transitions up to simulated time `now`, into the alert book."""
        self.analyzer.tick(now)
        changed: list[Alert] = []
        for source, transitions in self.bridge.flush(now, now):
            changed += await pipeline.raise_alerts(source, transitions)
        return changed
