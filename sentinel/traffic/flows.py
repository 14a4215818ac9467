"""Per-host flow features over tumbling windows.

A host is an inventory device (found by IP) or, without an inventory, any IP seen. Who
contacts whom: the sender of a TCP SYN, or the first sender of a UDP 4-tuple.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from detectors.model import DeviceRef, Record
from sentinel.traffic.config import TrafficConfig
from sentinel.traffic.packet import ip_text

_MAX_SEEN = 4096  # destinations remembered per host; past that, new ones stay "new"
_MAX_DNS = 256  # names kept per host and window
_MAX_UDP_FLOWS = 200_000
_TELNET = frozenset({23, 2323})
# The numbers of a window, in `FlowFeatures.metrics()` (and on the wire to the agent).
FEATURE_METRICS = (
    "bytes_out",
    "bytes_in",
    "packets_out",
    "packets_in",
    "connections",
    "dst_ips",
    "dst_ports",
    "new_dsts",
    "telnet",
    "ssh",
    "dns_names",
)


@dataclass(frozen=True, slots=True)
class FlowFeatures:
    """One host's traffic in one window."""

    start: float
    end: float
    ip: str
    device: DeviceRef | None
    bytes_out: int
    bytes_in: int
    packets_out: int
    packets_in: int
    connections: int  # TCP connections opened (SYN sent)
    dst_ips: int  # distinct destinations contacted
    dst_ports: int
    new_dsts: int  # destinations this host had never contacted before
    telnet: int  # contacts to 23/2323
    ssh: int  # contacts to 22
    dns_names: tuple[str, ...]

    def metrics(self) -> dict[str, float]:
        values = (
            self.bytes_out,
            self.bytes_in,
            self.packets_out,
            self.packets_in,
            self.connections,
            self.dst_ips,
            self.dst_ports,
            self.new_dsts,
            self.telnet,
            self.ssh,
            len(self.dns_names),
        )
        return {name: float(v) for name, v in zip(FEATURE_METRICS, values, strict=True)}

    def to_record(self) -> Record | None:
        """The window as a telemetry record (inventory devices only), for the detector engine."""
        return None if self.device is None else Record(self.device, self.end, self.metrics())


class HostWindow:
    __slots__ = (
        "bytes_in",
        "bytes_out",
        "connections",
        "dns",
        "dst_ips",
        "dst_ports",
        "new_dsts",
        "packets_in",
        "packets_out",
        "scan_dsts",
        "ssh",
        "telnet",
        "unknown",
    )

    def __init__(self) -> None:
        self.bytes_in = self.bytes_out = self.packets_in = self.packets_out = 0
        self.connections = self.new_dsts = self.telnet = self.ssh = 0
        self.dst_ips: set[bytes] = set()
        self.dst_ports: set[int] = set()
        self.scan_dsts: set[bytes] = set()
        self.unknown: dict[bytes, int] = {}  # after learning: new destination -> first port
        self.dns: dict[str, None] = {}  # insertion-ordered set


class HostState:
    __slots__ = ("baseline", "device", "ip", "learn_until", "seen", "window")

    def __init__(self, ip: bytes, device: DeviceRef | None, learn_until: float) -> None:
        self.ip = ip
        self.device = device
        self.learn_until = learn_until
        self.seen: set[bytes] = set()
        self.baseline: deque[int] = deque(maxlen=64)  # bytes out of past, unflagged windows
        self.window: HostWindow | None = None


class FlowTracker:
    """Accumulates per-host windows; calls `on_window(host, window, start, end)` as each closes."""

    def __init__(
        self,
        config: TrafficConfig,
        inventory: Mapping[bytes, DeviceRef] | None,
        on_window: Callable[[HostState, HostWindow, float, float], None],
    ) -> None:
        self._cfg = config
        self._inventory = inventory
        self._on_window = on_window
        self._hosts: dict[bytes, HostState] = {}
        self._active: list[HostState] = []
        self._udp: dict[tuple[bytes, int, bytes, int], None] = {}
        self._scan_ports = frozenset(config.scan_ports)
        self._window_end: float | None = None
        self.udp_flows = 0
        self.dns_queries = 0
        self.hosts_dropped = 0

    @property
    def hosts(self) -> int:
        return len(self._hosts)

    def _window(self, ip: bytes, ts: float) -> HostWindow | None:
        host = self._hosts.get(ip)
        if host is None:
            if self._inventory is not None:
                device = self._inventory.get(ip)
                if device is None:
                    return None
            elif len(self._hosts) >= self._cfg.max_hosts:
                self.hosts_dropped += 1
                return None
            else:
                device = None
            host = self._hosts[ip] = HostState(ip, device, ts + self._cfg.learning_s)
        if host.window is None:
            host.window = HostWindow()
            self._active.append(host)
        return host.window

    def packet(self, ts: float, src: bytes, dst: bytes, length: int) -> None:
        if self._window_end is None or ts >= self._window_end:
            self.close()
            self._window_end = (ts // self._cfg.window_s + 1) * self._cfg.window_s
        w = self._window(src, ts)
        if w is not None:
            w.bytes_out += length
            w.packets_out += 1
        w = self._window(dst, ts)
        if w is not None:
            w.bytes_in += length
            w.packets_in += 1

    def contact(self, ts: float, src: bytes, dst: bytes, dport: int, tcp: bool) -> None:
        """`src` opens a TCP connection or a UDP flow to dst:dport (after `packet`)."""
        host = self._hosts.get(src)
        if host is None or host.window is None:
            return
        w = host.window
        w.connections += tcp
        w.dst_ips.add(dst)
        w.dst_ports.add(dport)
        if dport in self._scan_ports:
            w.scan_dsts.add(dst)
            if dport in _TELNET:
                w.telnet += 1
            else:
                w.ssh += 1
        if dst not in host.seen:
            w.new_dsts += 1
            if ts >= host.learn_until:
                w.unknown.setdefault(dst, dport)
            if len(host.seen) < _MAX_SEEN:
                host.seen.add(dst)

    def udp(
        self, ts: float, src: bytes, sport: int, dst: bytes, dport: int, payload: bytes
    ) -> None:
        key = (src, sport, dst, dport)
        if key in self._udp or (dst, dport, src, sport) in self._udp:
            return
        if len(self._udp) >= _MAX_UDP_FLOWS:
            del self._udp[next(iter(self._udp))]
        self._udp[key] = None
        self.udp_flows += 1
        self.contact(ts, src, dst, dport, tcp=False)
        if dport == 53:
            name = dns_query_name(payload)
            host = self._hosts.get(src)
            if name is not None:
                self.dns_queries += 1
                if host is not None and host.window is not None:
                    dns = host.window.dns
                    if len(dns) < _MAX_DNS:
                        dns[name] = None

    def advance(self, now: float) -> None:
        """Live: close the current window once `now` has passed its end, even with no packet
        to say so (a quiet network must not hold a window open)."""
        if self._window_end is not None and now >= self._window_end:
            self.close()
            self._window_end = None

    def close(self) -> None:
        """Close the current window of every active host (also at the end of a capture)."""
        if self._window_end is None:
            return
        end, start = self._window_end, self._window_end - self._cfg.window_s
        active, self._active = self._active, []
        for host in active:
            assert host.window is not None
            window, host.window = host.window, None
            self._on_window(host, window, start, end)

    @staticmethod
    def features(host: HostState, w: HostWindow, start: float, end: float) -> FlowFeatures:
        return FlowFeatures(
            start,
            end,
            ip_text(host.ip),
            host.device,
            w.bytes_out,
            w.bytes_in,
            w.packets_out,
            w.packets_in,
            w.connections,
            len(w.dst_ips),
            len(w.dst_ports),
            w.new_dsts,
            w.telnet,
            w.ssh,
            tuple(w.dns),
        )


def dns_query_name(payload: bytes) -> str | None:
    """The first question's name of a DNS query, lower-cased; None for anything else."""
    if len(payload) < 17 or payload[2] & 0x80 or not (payload[4] or payload[5]):
        return None  # too short, a response, or no question
    labels: list[str] = []
    off = 12
    while off < len(payload):
        n = payload[off]
        off += 1
        if n == 0:
            return ".".join(labels).lower() if labels else None
        if n & 0xC0 or off + n > len(payload) or off > 255:
            return None  # compression in a question, or damage
        labels.append(payload[off : off + n].decode("ascii", "replace"))
        off += n
    return None
