"""Live capture: a raw AF_PACKET socket (Linux) feeding the same `Analyzer` as a file.

No scapy on the packet path: frames go from `recvfrom_into` to `Analyzer.feed`. scapy (with
Debian's libpcap) only compiles the BPF filter, which the kernel then runs: the filter is
attached before the socket is bound, so no unfiltered packet slips in.

Loopback shows every packet twice, once leaving (PACKET_OUTGOING) and once arriving; as libpcap
does, the outgoing copy is skipped there. On other interfaces an outgoing packet is seen once.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from sentinel.errors import SentinelError
from sentinel.traffic import pcap
from sentinel.traffic.analyzer import Analyzer

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
SOL_PACKET = 263
PACKET_STATISTICS = 6
SO_RCVBUFFORCE = 33
SO_ATTACH_FILTER = 26
ARPHRD_ETHER, ARPHRD_LOOPBACK, ARPHRD_NONE = 1, 772, 0xFFFE
# Interface hardware type -> the link type of its frames (what Analyzer.feed and BPF expect).
_LINKTYPES = {
    ARPHRD_ETHER: pcap.LINKTYPE_ETHERNET,
    ARPHRD_LOOPBACK: pcap.LINKTYPE_ETHERNET,  # Linux gives lo a zeroed Ethernet header
    ARPHRD_NONE: pcap.LINKTYPE_RAW,  # tun devices, WireGuard: bare IP
}
_SNAP = 262_144  # frames of lo or GRO can exceed the MTU; one buffer, reused
_BATCH = 2000  # frames per wake-up before the event loop gets its turn again
_STATS = struct.Struct("II")  # struct tpacket_stats: packets, drops (reset on read)


class LiveCaptureError(SentinelError):
    """Capturing on `iface` is not possible; `reason` says why and what to do."""

    def __init__(self, iface: str, reason: str) -> None:
        self.iface = iface
        self.reason = reason
        super().__init__(f"cannot capture on {iface}: {reason}")


def _hardware_type(iface: str) -> int:
    try:
        return int(Path(f"/sys/class/net/{iface}/type").read_text().strip())
    except (OSError, ValueError):
        return ARPHRD_ETHER


def _attach(sock: socket.socket, bpf: str, linktype: int, iface: str) -> None:
    try:
        from scapy.arch.common import compile_filter  # noqa: PLC0415 - slow, only with a BPF
        from scapy.error import Scapy_Exception  # noqa: PLC0415
        from scapy.libs.structures import sock_fprog  # noqa: PLC0415
        from scapy.libs.winpcapy import pcap_freecode  # noqa: PLC0415
    except (ImportError, OSError) as exc:
        raise LiveCaptureError(iface, f"a BPF filter needs scapy and libpcap: {exc}") from None
    try:
        program = compile_filter(bpf, linktype=linktype)
    except (Scapy_Exception, ImportError, OSError) as exc:
        # ImportError: "libpcap is not available" (Debian: apt-get install libpcap0.8).
        raise LiveCaptureError(iface, f"BPF filter {bpf!r}: {exc}") from None
    try:
        fprog = sock_fprog(program.bf_len, program.bf_insns)
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, bytes(fprog))
    except OSError as exc:
        raise LiveCaptureError(iface, f"the kernel refused the BPF filter: {exc}") from None
    finally:
        with contextlib.suppress(Exception):
            pcap_freecode(program)


class LiveSocket:
    """An AF_PACKET socket on one interface, non-blocking."""

    def __init__(self, iface: str, bpf: str = "", rcvbuf: int = 32 << 20) -> None:
        self.iface = iface
        if not hasattr(socket, "AF_PACKET"):
            raise LiveCaptureError(iface, "live capture needs Linux (AF_PACKET sockets)")
        try:
            socket.if_nametoindex(iface)
        except OSError:
            raise LiveCaptureError(
                iface, f"there is no network interface named {iface!r}"
            ) from None
        hardware = _hardware_type(iface)
        linktype = _LINKTYPES.get(hardware)
        if linktype is None:
            raise LiveCaptureError(iface, f"unsupported link type (ARPHRD {hardware})")
        self.linktype = linktype
        self.loopback = hardware == ARPHRD_LOOPBACK
        try:
            # Protocol 0: receives nothing until bound, so the filter is in place first.
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        except PermissionError as exc:
            raise LiveCaptureError(
                iface,
                "capturing packets needs the CAP_NET_RAW capability "
                f"({exc.strerror}): run as root, or grant it to the Python interpreter "
                "(setcap cap_net_raw+eip), or in a systemd unit (AmbientCapabilities=CAP_NET_RAW)",
            ) from None
        try:
            if bpf:
                _attach(sock, bpf, linktype, iface)
            try:
                sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
            except OSError:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.bind((iface, ETH_P_ALL))
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            raise LiveCaptureError(iface, str(exc)) from None
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self._buf = bytearray(_SNAP)
        self._view = memoryview(self._buf)
        self.packets = 0
        self.skipped_outgoing = 0

    def fileno(self) -> int:
        return self._sock.fileno()

    def close(self) -> None:
        self._sock.close()

    def read(self, analyzer: Analyzer, limit: int = _BATCH) -> int:
        """Feed the frames waiting in the socket (at most `limit`); returns how many."""
        recv, view, feed, linktype = (
            self._sock.recvfrom_into,
            self._view,
            analyzer.feed,
            self.linktype,
        )
        skip_outgoing = self.loopback
        fed = 0
        now = time.time()
        for _ in range(limit):
            try:
                n, addr = recv(self._buf)
            except (BlockingIOError, InterruptedError):
                break
            if skip_outgoing and addr[2] == PACKET_OUTGOING:
                self.skipped_outgoing += 1
                continue
            feed(now, linktype, bytes(view[:n]))
            fed += 1
        self.packets += fed
        return fed

    def kernel_drops(self) -> int:
        """Frames the kernel dropped since the last call (its buffer was full)."""
        try:
            raw = self._sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, _STATS.size)
        except OSError:
            return 0
        return int(_STATS.unpack(raw)[1])


async def pump(
    live: LiveSocket,
    analyzer: Analyzer,
    on_tick: Callable[[int, int], Awaitable[None]],
    tick_s: float = 0.25,
) -> None:
    """Feed the analyzer as frames arrive; every `tick_s`, close windows on the clock and
    call `on_tick(frames_fed, kernel_drops)` (since the previous tick). Runs until cancelled."""
    loop = asyncio.get_running_loop()
    fed = 0

    def readable() -> None:
        nonlocal fed
        fed += live.read(analyzer)

    loop.add_reader(live.fileno(), readable)
    try:
        while True:
            await asyncio.sleep(tick_s)
            analyzer.tick(time.time())
            done, fed = fed, 0
            await on_tick(done, live.kernel_drops())
    finally:
        loop.remove_reader(live.fileno())
