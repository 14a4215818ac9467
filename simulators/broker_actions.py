"""MQTT-layer attacks performed by real clients against a real broker (paho-mqtt 2.x).

A scenario's broker actions (`BrokerAction`) and the messages that someone other than the
simulator's gateway publishes (`Message.origin`: the broker's last will, an operator console)
are carried out here, each at its simulated time mapped to the wall clock like the publisher's
pacing. Outcomes are counted: what the broker refused is the point of most of these attacks.

- `bruteforce`: CONNECT with a wrong password (the broker answers "not authorised");
- `subscribe`: SUBSCRIBE to `#` and `$SYS/#` with a field device's credentials;
- `clone`: the same client id connects again from another loopback address (the broker
  closes the first session);
- a last will: a connection that set the device's `offline` will drops without DISCONNECT, and
  the broker publishes the will;
- an operator message: published with the operator's credentials under the scenario's client id.
"""

from __future__ import annotations

import logging
import secrets
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from simulators.effects import BrokerAction
from simulators.messages import OPERATOR, WILL, Message
from simulators.mqtt_session import BrokerUrl

log = logging.getLogger(__name__)

_ANSWER_S = 5.0


@dataclass(frozen=True)
class Login:
    username: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class BrokerCredentials:
    """Who the actions connect as. `device` is a field device's own login (reconnaissance and
    clone use it); `gateway` is the simulator's (it may set any device's last will)."""

    gateway: Login | None = None
    operator: Login | None = None
    device: Login | None = None


def _client(client_id: str, login: Login | None) -> mqtt.Client:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311)
    if login is not None:
        c.username_pw_set(login.username, login.password)
    return c


class _Waiter:
    """Collects one client's callbacks; the caller drives the network loop."""

    def __init__(self, client: mqtt.Client) -> None:
        self.connack: Any = None
        self.suback: list[Any] | None = None
        self.disconnected = False
        self.published: set[int] = set()
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish

    def _on_connect(self, _c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        self.connack = reason

    def _on_subscribe(self, _c: Any, _u: Any, _mid: int, codes: list[Any], _p: Any) -> None:
        self.suback = list(codes)

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, _reason: Any, _p: Any) -> None:
        self.disconnected = True

    def _on_publish(self, _c: Any, _u: Any, mid: int, _reason: Any, _p: Any) -> None:
        self.published.add(mid)


def _pump(client: mqtt.Client, until: Any, timeout_s: float = _ANSWER_S) -> bool:
    deadline = time.monotonic() + timeout_s
    while not until():
        if time.monotonic() > deadline:
            return False
        client.loop(0.02)
    return True


def _connect(
    url: BrokerUrl, client_id: str, login: Login | None, bind: str = ""
) -> tuple[mqtt.Client, _Waiter]:
    c = _client(client_id, login)
    w = _Waiter(c)
    c.connect(url.host, url.port, keepalive=30, bind_address=bind)
    _pump(c, lambda: w.connack is not None or w.disconnected)
    return c, w


def try_login(url: BrokerUrl, username: str, password: str, client_id: str, bind: str = "") -> str:
    """One login attempt; the broker's answer ("Success", "Not authorized", ...)."""
    c, w = _connect(url, client_id, Login(username, password), bind)
    answer = str(w.connack) if w.connack is not None else "no answer"
    c.disconnect()
    return answer


@dataclass(frozen=True)
class ProbeResult:
    """Per topic, whether the SUBACK granted it; and the messages delivered while listening.

    Mosquitto 2.0 grants a wildcard subscription that its ACL file does not cover and then
    filters each message against the subscriber's read rights: `granted` alone says little,
    `received` says what leaked.
    """

    granted: list[bool]
    received: list[str]


def subscribe_probe(
    url: BrokerUrl,
    login: Login,
    client_id: str,
    topics: Sequence[str],
    bind: str = "",
    listen_s: float = 0.0,
) -> ProbeResult:
    """Subscribe to `topics`, listen `listen_s` seconds, disconnect."""
    c, w = _connect(url, client_id, login, bind)
    if w.connack is None or w.connack.is_failure:
        c.disconnect()
        raise ConnectionError(f"login as {login.username} refused: {w.connack}")
    received: list[str] = []
    c.on_message = lambda _c, _u, msg: received.append(msg.topic)
    c.subscribe([(t, 0) for t in topics])
    _pump(c, lambda: w.suback is not None)
    granted = [not code.is_failure for code in (w.suback or [])]
    if listen_s > 0:
        _pump(c, lambda: False, listen_s)
    c.disconnect()
    return ProbeResult(granted, received)


def clone_connect(
    url: BrokerUrl, login: Login, client_id: str, bind: str, hold_s: float = 0.3
) -> bool:
    """Connect twice with one client id, the second time from `bind`; True when the broker
    dropped the first session for the newcomer."""
    first, w1 = _connect(url, client_id, login, "127.0.0.1")
    if w1.connack is None or w1.connack.is_failure:
        first.disconnect()
        raise ConnectionError(f"login as {login.username} refused: {w1.connack}")
    second, _w2 = _connect(url, client_id, login, bind)
    kicked = _pump(first, lambda: w1.disconnected, hold_s + 2.0)
    _pump(second, lambda: False, hold_s)
    second.disconnect()
    if not kicked:
        first.disconnect()
    return kicked


def drop_with_will(url: BrokerUrl, login: Login, client_id: str, will: Message) -> bool:
    """Connect with `will` as the last will, then lose the connection without DISCONNECT."""
    c = _client(client_id, login)
    w = _Waiter(c)
    c.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain)
    c.connect(url.host, url.port, keepalive=30)
    _pump(c, lambda: w.connack is not None or w.disconnected)
    ok = w.connack is not None and not w.connack.is_failure
    sock = c.socket()
    if isinstance(sock, socket.socket):
        sock.shutdown(socket.SHUT_RDWR)
        sock.close()
    return ok


@dataclass
class ActionStats:
    """What the broker made of the actions: counters by outcome."""

    counts: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)


class ActionRunner:
    """Carries out broker actions and non-gateway messages at their paced wall times.

    Runs in its own thread (`start` / `join`); `stop` makes it give up what is left.
    """

    def __init__(
        self,
        url: str,
        creds: BrokerCredentials,
        items: Iterable[BrokerAction | Message],
        *,
        sim_start: float,
        wall_start: float,
        speed: float,
        listen_s: float = 1.0,
    ) -> None:
        self.url = BrokerUrl.parse(url)
        self.listen_s = listen_s
        self.creds = creds
        self.items = sorted(items, key=lambda x: x.ts)
        self.sim_start = sim_start
        self.wall_start = wall_start
        self.speed = speed
        self.stats = ActionStats()
        self._stop = threading.Event()
        self._operators: dict[str, tuple[mqtt.Client, _Waiter]] = {}
        self._thread = threading.Thread(target=self.run, name="broker-actions", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout_s: float | None = None) -> ActionStats:
        self._thread.join(timeout_s)
        return self.stats

    def run(self) -> None:
        try:
            for item in self.items:
                due = self.wall_start + (item.ts - self.sim_start) / self.speed
                if self._stop.wait(max(due - time.time(), 0.0)):
                    break
                try:
                    self._do(item)
                except (OSError, ConnectionError, ValueError) as exc:
                    self.stats.counts["error"] += 1
                    self.stats.errors.append(f"{type(item).__name__} at {item.ts}: {exc}")
        finally:
            for client, _w in self._operators.values():
                client.disconnect()

    def _do(self, item: BrokerAction | Message) -> None:
        counts = self.stats.counts
        if isinstance(item, Message):
            if item.origin == WILL:
                if self.creds.gateway is None:
                    counts["will_skipped_no_credentials"] += 1
                    return
                cid = f"{item.device_id}-link-{secrets.token_hex(3)}"
                counts[
                    "will_dropped"
                    if drop_with_will(self.url, self.creds.gateway, cid, item)
                    else "will_refused"
                ] += 1
            elif item.origin.startswith(OPERATOR):
                self._operator_publish(item.origin.removeprefix(OPERATOR), item)
            return
        p = dict(item.params)
        if item.kind == "bruteforce":
            answer = try_login(
                self.url,
                str(p["username"]),
                f"guess-{secrets.token_hex(4)}",
                str(p["client_id"]),
                str(p.get("src_ip") or ""),
            )
            counts["login_refused" if "authori" in answer.lower() else f"login:{answer}"] += 1
        elif item.kind == "subscribe":
            if self.creds.device is None:
                counts["subscribe_skipped_no_credentials"] += 1
                return
            topics = [str(t) for t in p.get("topics", [])]  # type: ignore[attr-defined]
            probe = subscribe_probe(
                self.url,
                self.creds.device,
                str(p["client_id"]),
                topics,
                str(p.get("src_ip", "")),
                listen_s=self.listen_s,
            )
            counts["subscribe_granted"] += sum(probe.granted)
            counts["subscribe_refused"] += len(probe.granted) - sum(probe.granted)
            counts["subscribe_messages_received"] += len(probe.received)
        elif item.kind == "clone":
            if self.creds.device is None:
                counts["clone_skipped_no_credentials"] += 1
                return
            kicked = clone_connect(
                self.url, self.creds.device, str(p["client_id"]), str(p.get("src_ip", ""))
            )
            counts["clone_took_over" if kicked else "clone_coexisted"] += 1

    def _operator_publish(self, client_id: str, message: Message) -> None:
        if self.creds.operator is None:
            self.stats.counts["command_skipped_no_credentials"] += 1
            return
        if client_id not in self._operators:
            self._operators[client_id] = _connect(self.url, client_id, self.creds.operator)
        client, w = self._operators[client_id]
        info = client.publish(message.topic, message.payload, message.qos, message.retain)
        _pump(client, lambda: info.mid in w.published)
        self.stats.counts["command_published"] += 1
