"""A small pcap / pcapng reader: (timestamp, link type, frame bytes), nothing dissected.

Our own rather than scapy's RawPcapReader: one `struct.unpack_from` per record over an mmap is
several times cheaper per packet, and a damaged file ends the iteration with a note in
`CaptureReader.damage` instead of an exception halfway through an analysis.
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

from sentinel.errors import SentinelError

# Link types (https://www.tcpdump.org/linktypes.html) that `packet.ip_layer` decodes.
LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW_OLD = 12  # DLT_RAW on most BSDs/Linux before LINKTYPE_RAW existed
LINKTYPE_RAW = 101
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276
SUPPORTED_LINKTYPES = frozenset(
    {
        LINKTYPE_NULL,
        LINKTYPE_ETHERNET,
        LINKTYPE_RAW_OLD,
        LINKTYPE_RAW,
        LINKTYPE_LOOP,
        LINKTYPE_LINUX_SLL,
        LINKTYPE_IPV4,
        LINKTYPE_IPV6,
        LINKTYPE_LINUX_SLL2,
    }
)

_PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": ("<", 1e-6),
    b"\xa1\xb2\xc3\xd4": (">", 1e-6),
    b"\x4d\x3c\xb2\xa1": ("<", 1e-9),
    b"\xa1\xb2\x3c\x4d": (">", 1e-9),
}
_PCAPNG_SHB = b"\x0a\x0d\x0d\x0a"
_MAX_FRAME = 1 << 20  # no link layer has frames near 1 MiB: a larger length is damage

Frame = tuple[float, int, bytes]


class CaptureError(SentinelError):
    """The file is not a capture this reader understands (or cannot be read at all)."""

    def __init__(self, path: Path | str, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class CaptureReader:
    """Iterate over the frames of a pcap or pcapng file.

    `damage` describes why reading stopped early (truncated or corrupt file), else it is None;
    `unsupported_frames` counts frames of interfaces whose link type is not decoded.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.damage: str | None = None
        self.unsupported_frames = 0
        try:
            with self.path.open("rb") as f:
                self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError) as exc:  # ValueError: mmap of an empty file
            raise CaptureError(path, f"cannot read: {exc}") from None
        head = self._map[:4]
        if head in _PCAP_MAGICS:
            self.format = "pcap"
        elif head == _PCAPNG_SHB:
            self.format = "pcapng"
        else:
            self._map.close()
            raise CaptureError(path, "not a pcap or pcapng file (unknown magic number)")
        if self.format == "pcap":
            self._check_pcap_header()

    def __enter__(self) -> CaptureReader:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._map.close()

    @property
    def size(self) -> int:
        return len(self._map)

    def __iter__(self) -> Iterator[Frame]:
        return self._pcap() if self.format == "pcap" else self._pcapng()

    def _check_pcap_header(self) -> None:
        if len(self._map) < 24:
            raise CaptureError(self.path, "truncated pcap header")
        order, _ = _PCAP_MAGICS[self._map[:4]]
        linktype = struct.unpack_from(order + "I", self._map, 20)[0] & 0xFFFF
        if linktype not in SUPPORTED_LINKTYPES:
            raise CaptureError(self.path, f"unsupported link type {linktype}")

    def _pcap(self) -> Iterator[Frame]:
        m = self._map
        order, unit = _PCAP_MAGICS[m[:4]]
        linktype = struct.unpack_from(order + "I", m, 20)[0] & 0xFFFF
        record = struct.Struct(order + "IIII")
        off, end = 24, len(m)
        while off + 16 <= end:
            sec, frac, incl, _orig = record.unpack_from(m, off)
            off += 16
            if incl > _MAX_FRAME:
                self.damage = f"corrupt record length {incl} at byte {off - 16}"
                return
            if off + incl > end:
                break
            yield sec + frac * unit, linktype, m[off : off + incl]
            off += incl
        if off != end:
            self.damage = f"truncated record at byte {off}"

    def _pcapng(self) -> Iterator[Frame]:
        m = self._map
        off, end = 0, len(m)
        order = "<"
        # Per interface of the current section: (link type, timestamp ticks per second, offset).
        ifaces: list[tuple[int, int, int]] = []
        ts = 0.0
        while off + 12 <= end:
            if m[off : off + 4] == _PCAPNG_SHB:
                bom = m[off + 8 : off + 12]
                order = {b"\x4d\x3c\x2b\x1a": "<", b"\x1a\x2b\x3c\x4d": ">"}.get(bom, "")
                if not order:
                    self.damage = f"bad byte-order magic at byte {off}"
                    return
                ifaces = []
            btype, blen = struct.unpack_from(order + "II", m, off)
            if blen < 12 or blen % 4 or off + blen > end:
                self.damage = f"corrupt or truncated block at byte {off}"
                return
            body = off + 8
            if btype == 1 and blen >= 20:  # interface description
                linktype = struct.unpack_from(order + "H", m, body)[0]
                ticks, offset = _if_options(m, order, body + 8, off + blen - 4)
                ifaces.append((linktype, ticks, offset))
            elif btype in (6, 2) and blen >= 32:  # enhanced / obsolete packet block
                if btype == 6:
                    iface, hi, lo, cap = struct.unpack_from(order + "IIII", m, body)
                else:
                    iface, _drops, hi, lo, cap = struct.unpack_from(order + "HHIII", m, body)
                data = body + 20
                if iface >= len(ifaces) or data + cap > off + blen - 4:
                    self.damage = f"bad packet block at byte {off}"
                    return
                linktype, ticks, offset = ifaces[iface]
                sec, frac = divmod((hi << 32) | lo, ticks)
                ts = sec + frac / ticks + offset
                yield from self._frame(ts, linktype, m[data : data + cap])
            elif btype == 3 and blen >= 16 and ifaces:  # simple packet block: no timestamp
                orig = struct.unpack_from(order + "I", m, body)[0]
                cap = min(orig, blen - 16)
                yield from self._frame(ts, ifaces[0][0], m[body + 4 : body + 4 + cap])
            off += blen
        if off != end:
            self.damage = f"truncated block at byte {off}"

    def _frame(self, ts: float, linktype: int, data: bytes) -> Iterator[Frame]:
        if linktype in SUPPORTED_LINKTYPES:
            yield ts, linktype, data
        else:
            self.unsupported_frames += 1


def _if_options(m: mmap.mmap, order: str, off: int, end: int) -> tuple[int, int]:
    """Ticks per second (if_tsresol, default 10**6) and if_tsoffset of an interface block."""
    ticks, offset = 10**6, 0
    while off + 4 <= end:
        code, length = struct.unpack_from(order + "HH", m, off)
        value = off + 4
        if code == 0:
            break
        if code == 9 and length >= 1:
            res = m[value]
            ticks = 2 ** (res & 0x7F) if res & 0x80 else 10 ** min(res, 18)
        elif code == 14 and length >= 8:
            offset = struct.unpack_from(order + "q", m, value)[0]
        off = value + ((length + 3) & ~3)
    return ticks, offset
