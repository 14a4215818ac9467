"""Mosquitto's log as an event source, no capture needed (docs/traffic.md, "Broker log").

`LogFollower` follows the file like `tail -F` (rotation, truncation, bounded lines);
`parse_line` reads one line; `BrokerLogEvents` keeps what the log spreads over several lines
(the connection a refused login came on, each client's username) and turns lines into the same
`MqttEvent`s a capture yields, for the same detections (`Analyzer.event`).

Formats are Mosquitto 2.0's (`log_type error warning notice information subscribe`,
`connection_messages true`, any `log_timestamp_format` or none), e.g.:

    2026-11-29T01:02:23: New connection from 127.0.0.1:36229 on port 18830.
    2026-11-29T01:02:23: New client connected from 127.0.0.1:36229 as snif (p2, c1, k60, u'dev').
    2026-11-29T01:02:23: snif 0 #
    2026-11-29T01:02:23: Client <unknown> disconnected, not authorised.

Everything after the timestamp is attacker-influenced (client ids, topics): nothing here
raises on a line, and what is kept per client is bounded.
"""

from __future__ import annotations

import os
import re
from collections import Counter, OrderedDict
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal, NamedTuple, get_args

from sentinel.traffic.mqtt import Connack, Connect, Malformed, MqttPacket, Publish, Subscribe
from sentinel.traffic.streams import Endpoint, MqttEvent

# --- one line -----------------------------------------------------------------------------

_EPOCH = re.compile(r"(\d{9,11})(?:\.\d+)?: ")
_ISO = re.compile(
    r"(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?)(Z|[+-]\d{2}:?\d{2})?: "
)
# Every pattern is anchored on a fixed text and matched once, never searched with two free
# parts: lines are up to broker_log_max_line_bytes of an attacker's client ids and topics, and
# a pattern that backtracks over them would take quadratic time (tested).
_NEW_CONNECTION = re.compile(r"New connection from (\S+):(\d{1,5}) on port (\d{1,5})\.")
_ADDRESS = re.compile(r"(\S+):(\d{1,5})")
# The end of "New client connected ... as <id> (p2, c1, k60, u'<user>').": found from the
# line's end; the username authenticated (a password file names it), the client id did not.
_CONNECTED_TAIL = re.compile(r"\(p(\d{1,3}), c(\d{1,3}), k(\d{1,5})(?:, u'(.*)')?\)\.", re.DOTALL)
_CONNECTED_PREFIXES = ("New client connected from ", "New bridge connected from ")
_TAIL_TRIES = 4  # a username holding " (p" moves the tail back: a few tries, no more
_PUBLISH_PREFIX = "Received PUBLISH from "
_PUBLISH_HEAD = re.compile(r"\(d(\d), q(\d), r(\d), m(\d{1,5}), '")
_PUBLISH_TAIL = re.compile(r"', \.\.\. \((\d{1,12}) bytes\)\)")
_SUBSCRIPTION = re.compile(r" (\d{1,3}) ")  # "client qos filter": candidates for the split

DisconnectReason = Literal[
    "disconnected",  # a DISCONNECT from the client
    "closed",  # the socket closed without DISCONNECT
    "not_authorised",
    "timeout",  # keep-alive exceeded
    "protocol_error",
    "malformed_packet",
    "oversize",  # oversize packet or payload
    "error",  # "disconnected: <reason>", out of memory, socket errors, admin action, ...
]
# Suffixes after "Client <id>", most specific first; the id is whatever precedes.
_DISCONNECTS: tuple[tuple[str, DisconnectReason], ...] = (
    (" disconnected, not authorised.", "not_authorised"),
    (" disconnected due to protocol error.", "protocol_error"),
    (" disconnected due to malformed packet.", "malformed_packet"),
    (" disconnected due to oversize packet.", "oversize"),
    (" disconnected due to oversize payload.", "oversize"),
    (" disconnected due to out of memory.", "error"),
    (" disconnected due to QoS too high or retain not supported.", "error"),
    (" been disconnected by administrative action.", "error"),
    (" has exceeded timeout, disconnecting.", "timeout"),
    (" closed its connection.", "closed"),
    (" disconnected.", "disconnected"),
)
_TAKEOVER = " already connected, closing old connection."
# Lines that carry no security event (or one the log repeats elsewhere): known, skipped.
_IGNORED_PREFIXES = (
    "Saving in-memory database",
    "Config loaded from",
    "Opening ipv4 listen socket",
    "Opening ipv6 listen socket",
    "Opening websockets listen socket",
    "Opening unix listen socket",
    "Sending ",  # debug: CONNACK, SUBACK, PUBLISH, ... (the refusal has its own line)
    "Received ",  # debug: SUBSCRIBE, PINGREQ, DISCONNECT, ... (PUBLISH is parsed before)
    "Denied PUBLISH",
    "Dropped too large PUBLISH",
    "\t",  # debug: the filters under "Received SUBSCRIBE", also logged as "client qos filter"
    "Expiring client",
    "Outgoing messages are being dropped",
    "Warning: ",
    "Error: ",
    "Bad socket read/write",
    "Client connection from",  # refused by tcpd or max_connections, or a failed TLS handshake
    "OpenSSL Error",  # a failed TLS handshake (its connection then logs its own end)
    "=== ",  # deploy/local/stack's own marker lines
)


class Stamped(NamedTuple):
    ts: float | None  # None: the line has no timestamp Mosquitto writes
    message: str


_iso_cache: dict[str, float] = {}


def split_stamp(line: str) -> Stamped:
    """The time of a line (Unix seconds, or None) and the message after it."""
    m = _EPOCH.match(line)
    if m:
        return Stamped(float(m.group(1)), line[m.end() :])
    m = _ISO.match(line)
    if m:
        stamp = m.group(0)
        ts = _iso_cache.get(stamp)
        if ts is None:
            date, clock, zone = m.group(1), m.group(2), m.group(3) or ""
            try:
                # No zone: the broker writes local time, taken as this machine's local time.
                when = datetime.fromisoformat(f"{date}T{clock}{zone.replace('Z', '+00:00')}")
                ts = when.timestamp()
            except (ValueError, OverflowError, OSError):
                return Stamped(None, line)
            if len(_iso_cache) > 4096:
                _iso_cache.clear()
            _iso_cache[stamp] = ts
        return Stamped(ts, line[m.end() :])
    return Stamped(None, line)


def _endpoint(host: str, port: str) -> Endpoint:
    return Endpoint(host.strip("[]"), int(port))


# --- lines into events ----------------------------------------------------------------------

EventName = Literal[
    "connection",  # a TCP connection accepted
    "connected",  # a login accepted
    "refused",  # a login refused (not authorised)
    "subscribe",
    "unsubscribe",
    "publish",  # debug logs only
    "disconnect",  # any of DisconnectReason but not_authorised
    "takeover",  # a second connection with the same client id
    "broker_restart",
    "no_session",  # subscribe/publish from a client whose login we did not see: not checked
    "ignored",  # a known line with nothing to detect
    "unrecognised",
    "truncated",  # a line longer than the limit, cut (from LogFollower)
]
EVENT_NAMES: tuple[EventName, ...] = get_args(EventName)


@dataclass(slots=True)
class _Session:
    client: Endpoint
    username: str | None
    stream: int

    def event(self, ts: float, client_id: str, packet: MqttPacket) -> MqttEvent:
        """What this client sent to the broker, as a capture would have shown it."""
        return MqttEvent(
            ts,
            self.stream,
            self.client,
            Endpoint("broker", 0),
            True,
            packet,
            client_id,
            self.username,
        )


_PENDING_FRESH_S = 2.0  # a client sends CONNECT at once: a refusal belongs to a fresh connection
_MAX_PENDING = 4096
_MAX_SESSIONS = 50_000
_MAX_ID = 1024  # longer client ids are not followed (their subscriptions count as no_session)
_SUB_QOS = frozenset({"0", "1", "2"})


class BrokerLogEvents:
    """Lines in, MQTT events out; counts every line by what it was (`counts`).

    What a single line does not say:
    - A refused login is logged as `Client <unknown> disconnected, not authorised.`, with no
      address and no username. It is put on the oldest connection opened in the last 2 s that
      has not logged in yet (a client sends CONNECT right after connecting), else on the newest
      one; the username of a refused login is never known from the log.
    - A subscription (`client qos filter`) is checked only for a client whose login was seen:
      its username is needed, and it is how a line is split when the client id holds spaces.
    """

    def __init__(self) -> None:
        self.counts: Counter[EventName] = Counter()
        self._pending: OrderedDict[Endpoint, tuple[float, int, int]] = OrderedDict()
        self._sessions: OrderedDict[str, _Session] = OrderedDict()
        self._by_token: dict[str, set[str]] = {}  # first word of a client id -> client ids
        self._streams = 0
        self._last_ts = 0.0

    @property
    def sessions(self) -> int:
        return len(self._sessions)

    def feed(self, line: str, now: float) -> list[MqttEvent]:
        """The events of one line (without its newline); `now` times lines with no stamp."""
        stamped = split_stamp(line)
        ts = max(stamped.ts if stamped.ts is not None else now, self._last_ts)
        self._last_ts = ts
        try:
            return self._message(stamped.message.rstrip("\r"), ts)
        except (ValueError, OverflowError):  # a number too large for its field, and the like
            self.counts["unrecognised"] += 1
            return []

    def _message(self, msg: str, ts: float) -> list[MqttEvent]:
        # First a subscription of a known client: its id may read like any line below.
        known = self._known_prefixes(msg)
        for client_id in known:
            rest = msg[len(client_id) + 1 :]
            if rest[:1] in _SUB_QOS and rest[1:2] == " ":
                return self._subscribe(client_id, int(rest[0]), rest[2:], ts)
        if msg.startswith("Client ") and not msg.startswith("Client connection from "):
            return self._client_line(msg[7:], ts)
        if msg.startswith("New connection from "):
            m = _NEW_CONNECTION.fullmatch(msg)
            if m:
                self._connection(_endpoint(m.group(1), m.group(2)), int(m.group(3)), ts)
                return []
        elif msg.startswith(_CONNECTED_PREFIXES):
            fields = _connected_fields(msg)
            if fields is not None:
                return self._connected(*fields, ts)
        elif msg.startswith("mosquitto version "):
            if msg.endswith((" starting", " terminating")):
                self._pending.clear()
                self._sessions.clear()
                self._by_token.clear()
                self.counts["broker_restart"] += 1
            else:
                self.counts["ignored"] += 1
            return []
        elif msg.startswith(_PUBLISH_PREFIX):
            return self._publish(msg[len(_PUBLISH_PREFIX) :], ts)
        if known:  # "client filter": an unsubscribe
            self.counts["unsubscribe"] += 1
        elif msg.startswith(_IGNORED_PREFIXES):
            self.counts["ignored"] += 1
        elif _SUBSCRIPTION.search(msg):
            self.counts["no_session"] += 1  # likely a subscription of a client not seen
        else:
            self.counts["unrecognised"] += 1
        return []

    # sessions --------------------------------------------------------------------------------

    def _known_prefixes(self, msg: str) -> list[str]:
        """Client ids of known sessions that `msg` starts with (followed by a space), longest
        first."""
        ids = self._by_token.get(msg.split(" ", 1)[0])
        if not ids:
            return []
        return sorted((c for c in ids if msg.startswith(c + " ")), key=len, reverse=True)

    def _add_session(self, client_id: str, session: _Session) -> None:
        if len(client_id) > _MAX_ID:
            return
        self._drop_session(client_id)
        self._sessions[client_id] = session
        self._by_token.setdefault(client_id.split(" ", 1)[0], set()).add(client_id)
        if len(self._sessions) > _MAX_SESSIONS:
            self._drop_session(next(iter(self._sessions)))

    def _drop_session(self, client_id: str) -> _Session | None:
        session = self._sessions.pop(client_id, None)
        if session is not None:
            token = client_id.split(" ", 1)[0]
            ids = self._by_token.get(token)
            if ids is not None:
                ids.discard(client_id)
                if not ids:
                    del self._by_token[token]
        return session

    # connections ---------------------------------------------------------------------------

    def _connection(self, client: Endpoint, port: int, ts: float) -> None:
        self.counts["connection"] += 1
        self._streams += 1
        self._pending.pop(client, None)
        self._pending[client] = (ts, port, self._streams)
        if len(self._pending) > _MAX_PENDING:
            self._pending.popitem(last=False)

    def _take_pending(self, ts: float) -> tuple[Endpoint, int, int] | None:
        """The connection a line about `<unknown>` is most likely about (and forget it)."""
        if not self._pending:
            return None
        chosen = next(
            (ep for ep, (t, _, _) in self._pending.items() if t >= ts - _PENDING_FRESH_S),
            next(reversed(self._pending)),
        )
        _, port, stream = self._pending.pop(chosen)
        return chosen, port, stream

    def _next_stream(self) -> int:
        self._streams += 1
        return self._streams

    def _connected(
        self,
        client: Endpoint,
        client_id: str,
        username: str | None,
        protocol: int,
        clean: bool,
        keep_alive: int,
        ts: float,
    ) -> list[MqttEvent]:
        self.counts["connected"] += 1
        pending = self._pending.pop(client, None)
        port, stream = (pending[1], pending[2]) if pending else (0, self._next_stream())
        self._add_session(client_id, _Session(client, username, stream))
        connect = Connect(
            # Mosquitto's protocol numbers: 1 = 3.1, 2 = 3.1.1, 5 = 5.0 (levels 3, 4, 5).
            level={1: 3, 2: 4}.get(protocol, protocol),
            client_id=client_id,
            username=username,
            has_password=username is not None,  # not logged; a password file needs one
            keep_alive=keep_alive,
            clean_session=clean,
            will=None,  # not logged
        )
        broker = Endpoint("broker", port)
        return [
            MqttEvent(ts, stream, client, broker, True, connect, client_id, username),
            MqttEvent(ts, stream, broker, client, False, Connack(False, 0), client_id, username),
        ]

    def _client_line(self, rest: str, ts: float) -> list[MqttEvent]:
        if rest.endswith(_TAKEOVER):
            self.counts["takeover"] += 1
            return []
        reason: DisconnectReason | None = None
        client_id = ""
        for suffix, why in _DISCONNECTS:
            if rest.endswith(suffix):
                reason, client_id = why, rest[: -len(suffix)]
                break
        else:
            head, sep, _ = rest.rpartition(" disconnected: ")
            if sep:
                reason, client_id = "error", head
        if reason is None:
            self.counts["unrecognised"] += 1
            return []
        self.counts["refused" if reason == "not_authorised" else "disconnect"] += 1
        unknown = client_id == "<unknown>"
        session = None if unknown else self._drop_session(client_id)
        cid: str | None = None if unknown else client_id
        username: str | None = None
        if session is not None:
            client, port, stream = session.client, 0, session.stream
            username = session.username
        else:
            taken = self._take_pending(ts) if unknown else None
            if taken is None:
                client, port, stream = Endpoint("unknown", 0), 0, self._next_stream()
            else:
                client, port, stream = taken
        broker = Endpoint("broker", port)
        if reason == "not_authorised":
            # The broker's CONNACK refused the login (code 5 in 3.1.1, 0x87 in 5: either way
            # a refusal to the detections).
            return [MqttEvent(ts, stream, broker, client, False, Connack(False, 5), cid, username)]
        if reason in ("protocol_error", "malformed_packet", "oversize"):
            malformed = Malformed(
                "oversized" if reason == "oversize" else "protocol_violation",
                0,
                f"broker: {reason.replace('_', ' ')}",
            )
            return [MqttEvent(ts, stream, client, broker, True, malformed, cid, username)]
        return []

    # subscriptions and publishes -------------------------------------------------------------

    def _subscribe(self, client_id: str, qos: int, topic_filter: str, ts: float) -> list[MqttEvent]:
        session = self._sessions[client_id]
        self.counts["subscribe"] += 1
        packet = Subscribe(0, ((topic_filter, qos),))
        return [session.event(ts, client_id, packet)]

    def _publish(self, rest: str, ts: float) -> list[MqttEvent]:
        """`<id> (d0, q1, r0, m3, '<topic>', ... (<n> bytes))` (debug logs), known clients only."""
        for client_id in self._known_prefixes(rest):
            head = _PUBLISH_HEAD.match(rest, len(client_id) + 1)
            if head is None:
                continue
            cut = rest.rfind("', ... (")
            tail = _PUBLISH_TAIL.fullmatch(rest, cut) if cut >= head.end() else None
            if tail is None:
                continue
            session = self._sessions[client_id]
            self.counts["publish"] += 1
            qos = int(head.group(2))
            packet = Publish(
                topic=rest[head.end() : cut],
                qos=qos,
                retain=head.group(3) == "1",
                dup=head.group(1) == "1",
                packet_id=int(head.group(4)) if qos else None,
                payload_size=int(tail.group(1)),
            )
            return [session.event(ts, client_id, packet)]
        self.counts["no_session"] += 1
        return []


def _connected_fields(
    msg: str,
) -> tuple[Endpoint, str, str | None, int, bool, int] | None:
    """(client, client id, username, protocol, clean session, keep-alive) of a login line."""
    rest = msg[len(_CONNECTED_PREFIXES[0]) :]  # both prefixes have the same length
    split = rest.find(" as ")
    address = _ADDRESS.fullmatch(rest, 0, split) if split > 0 else None
    if address is None:
        return None
    body = rest[split + 4 :]
    end = len(body)
    for _ in range(_TAIL_TRIES):
        start = body.rfind(" (p", 0, end)
        if start < 0:
            return None
        tail = _CONNECTED_TAIL.fullmatch(body, start + 1)
        if tail is not None:
            client = _endpoint(address.group(1), address.group(2))
            protocol, clean, keep_alive = (
                int(tail.group(1)),
                tail.group(2) != "0",
                int(tail.group(3)),
            )
            return client, body[:start], tail.group(4), protocol, clean, keep_alive
        end = start
    return None


# --- the file -----------------------------------------------------------------------------


class LogFollower:
    """Follow a growing log file like `tail -F`.

    Starts at the end (or the start with `from_start`); reopens the path when the file was
    replaced (rotation: what the old file still held is read first) and rereads from the start
    when it shrank (copytruncate); waits for a missing file. Lines longer than
    `max_line_bytes` are cut to that length (`truncated` counts them); bytes that are not
    UTF-8 are replaced. `poll` never blocks for long: local files only.
    """

    def __init__(
        self,
        path: Path | str,
        *,
        from_start: bool = False,
        max_line_bytes: int = 262_144,
        max_read_bytes: int = 4 << 20,
    ) -> None:
        self.path = Path(path)
        self._from_start = from_start
        self._max_line = max_line_bytes
        self._max_read = max_read_bytes
        self._fd: int | None = None
        self._first_poll = True  # a file there at the first poll is read from its end
        self._ident: tuple[int, int] | None = None
        self._pos = 0
        self._buf = bytearray()
        self._cutting = False  # inside an over-long line: drop until its newline
        self.opened = 0
        self.rotations = 0
        self.truncations = 0
        self.truncated_lines = 0
        self.error: str | None = None  # why the file cannot be read right now
        self.backlog = False  # the last poll stopped at max_read_bytes: poll again soon

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _open(self) -> bool:
        try:
            fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except OSError as exc:
            self.error = f"{self.path}: {exc.strerror or exc}"
            return False
        st = os.fstat(fd)
        self._fd, self._ident = fd, (st.st_dev, st.st_ino)
        start_at_end = self._first_poll and not self._from_start
        self._pos = os.lseek(fd, 0, os.SEEK_END) if start_at_end else 0
        self.opened += 1
        self.error = None
        return True

    def poll(self) -> list[str]:
        """The complete lines appended since the last poll."""
        lines: list[str] = []
        self.backlog = False
        if self._fd is None:
            opened = self._open()
            self._first_poll = False
            if not opened:
                return lines
        budget = self._max_read
        while True:
            assert self._fd is not None
            budget -= self._drain(lines, budget)
            if budget <= 0:
                self.backlog = True
                return lines
            if not self._switch(lines):
                return lines

    def _drain(self, lines: list[str], budget: int) -> int:
        """Read to the end of the open file (at most `budget` bytes); returns bytes read."""
        assert self._fd is not None
        try:
            size = os.fstat(self._fd).st_size
        except OSError:
            return 0
        if size < self._pos:  # truncated in place: start over
            self.truncations += 1
            self._pos = 0
            self._buf.clear()
            self._cutting = False
        done = 0
        while done < budget:
            try:
                chunk = os.pread(self._fd, min(1 << 16, budget - done), self._pos)
            except OSError as exc:
                self.error = f"{self.path}: {exc.strerror or exc}"
                break
            if not chunk:
                break
            self._pos += len(chunk)
            done += len(chunk)
            self._split(chunk, lines)
        return done

    def _switch(self, lines: list[str]) -> bool:
        """At the end of the open file: move to a new file at the path, if there is one."""
        try:
            st = os.stat(self.path)
        except OSError:
            return False  # rotated away and not recreated yet: keep the old file meanwhile
        if (st.st_dev, st.st_ino) == self._ident:
            return False
        if self._buf:  # the old file's last line had no newline
            lines.append(self._decode(bytes(self._buf)))
            self._buf.clear()
        self._cutting = False
        self.close()
        self.rotations += 1
        return self._open()

    def _split(self, chunk: bytes, lines: list[str]) -> None:
        start = 0
        while True:
            nl = chunk.find(b"\n", start)
            if nl < 0:
                break
            piece = chunk[start:nl]
            start = nl + 1
            if self._cutting:
                self._cutting = False
                continue
            if self._buf:
                self._buf += piece
                piece = bytes(self._buf)
                self._buf.clear()
            if len(piece) > self._max_line:
                self.truncated_lines += 1
                piece = piece[: self._max_line]
            lines.append(self._decode(piece))
        if self._cutting:
            return
        rest = chunk[start:]
        if len(self._buf) + len(rest) > self._max_line:
            keep = self._max_line - len(self._buf)
            self._buf += rest[:keep]
            lines.append(self._decode(bytes(self._buf)))
            self._buf.clear()
            self.truncated_lines += 1
            self._cutting = True
        else:
            self._buf += rest

    @staticmethod
    def _decode(raw: bytes) -> str:
        return raw.decode("utf-8", "replace")
