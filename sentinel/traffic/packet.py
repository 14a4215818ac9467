"""Link and IP headers with `struct`: just enough to reach TCP and UDP.

Addresses stay packed `bytes` (4 or 16 long) on the hot path; `ip_text` turns them into text
only for what is reported.
"""

from __future__ import annotations

import socket
import struct
from functools import lru_cache
from typing import NamedTuple

from sentinel.traffic import pcap

PROTO_TCP = 6
PROTO_UDP = 17
_ETH_IPV4, _ETH_IPV6 = 0x0800, 0x86DD
_VLAN_TAGS = frozenset({0x8100, 0x88A8, 0x9100})
# IPv6 extension headers that we step over (fragment headers are handled apart).
_IPV6_EXT = frozenset({0, 43, 60})
_IPV6_FRAGMENT = 44
_H = struct.Struct("!H")
_RAW_IP = frozenset(
    {pcap.LINKTYPE_RAW, pcap.LINKTYPE_RAW_OLD, pcap.LINKTYPE_IPV4, pcap.LINKTYPE_IPV6}
)
_BSD_AF_INET6 = frozenset({10, 24, 28, 30})  # AF_INET6 on Linux, NetBSD/OpenBSD, FreeBSD, macOS


class IpPacket(NamedTuple):
    proto: int
    src: bytes
    dst: bytes
    l4: int  # offset of the transport header in the frame
    end: int  # end of the IP payload in the frame (Ethernet padding excluded)
    length: int  # IP packet length in bytes, as announced by the header
    fragment: bool  # a non-first fragment or a fragmented datagram: transport not decoded


def ip_layer(linktype: int, frame: bytes) -> IpPacket | None:
    """The IP packet inside a frame, or None (not IP, or too short)."""
    off = _network_offset(linktype, frame)
    if off < 0 or len(frame) < off + 20:
        return None
    version = frame[off] >> 4
    if version == 4:
        return _ipv4(frame, off)
    if version == 6 and len(frame) >= off + 40:
        return _ipv6(frame, off)
    return None


def _network_offset(linktype: int, frame: bytes) -> int:
    """Offset of the IP header, or -1 when the frame carries something else."""
    if linktype == pcap.LINKTYPE_ETHERNET:
        off = 12
        if len(frame) < 14:
            return -1
        ethertype = _H.unpack_from(frame, off)[0]
        while ethertype in _VLAN_TAGS and len(frame) >= off + 6:
            off += 4
            ethertype = _H.unpack_from(frame, off)[0]
        return off + 2 if ethertype in (_ETH_IPV4, _ETH_IPV6) else -1
    if linktype in _RAW_IP:
        return 0
    if linktype == pcap.LINKTYPE_LINUX_SLL:
        ok = len(frame) >= 16 and _H.unpack_from(frame, 14)[0] in (_ETH_IPV4, _ETH_IPV6)
        return 16 if ok else -1
    if linktype == pcap.LINKTYPE_LINUX_SLL2:
        ok = len(frame) >= 20 and _H.unpack_from(frame, 0)[0] in (_ETH_IPV4, _ETH_IPV6)
        return 20 if ok else -1
    if linktype in (pcap.LINKTYPE_NULL, pcap.LINKTYPE_LOOP) and len(frame) >= 4:
        # NULL stores the address family in the capturing host's byte order, LOOP big-endian.
        family = max(frame[0], frame[3]) if linktype == pcap.LINKTYPE_NULL else frame[3]
        return 4 if family == 2 or family in _BSD_AF_INET6 else -1
    return -1


def _ipv4(frame: bytes, off: int) -> IpPacket | None:
    ihl = (frame[off] & 0x0F) * 4
    total = _H.unpack_from(frame, off + 2)[0]
    if ihl < 20 or total < ihl:
        return None
    end = min(off + total, len(frame))
    frag = _H.unpack_from(frame, off + 6)[0]
    fragmented = bool(frag & 0x3FFF)  # more-fragments flag or a non-zero offset
    return IpPacket(
        frame[off + 9],
        frame[off + 12 : off + 16],
        frame[off + 16 : off + 20],
        off + ihl,
        end,
        total,
        fragmented,
    )


def _ipv6(frame: bytes, off: int) -> IpPacket | None:
    total = 40 + _H.unpack_from(frame, off + 4)[0]
    end = min(off + total, len(frame))
    nxt, l4 = frame[off + 6], off + 40
    fragmented = False
    while nxt in _IPV6_EXT or nxt == _IPV6_FRAGMENT:
        if l4 + 8 > end:
            return None
        if nxt == _IPV6_FRAGMENT:
            fragmented = True
            nxt, l4 = frame[l4], l4 + 8
        else:
            nxt, l4 = frame[l4], l4 + 8 + frame[l4 + 1] * 8
    return IpPacket(
        nxt, frame[off + 8 : off + 24], frame[off + 24 : off + 40], l4, end, total, fragmented
    )


@lru_cache(maxsize=65536)
def ip_text(packed: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET if len(packed) == 4 else socket.AF_INET6, packed)


def ip_packed(text: str) -> bytes:
    """Raises OSError for a string that is not an IPv4 or IPv6 address."""
    family = socket.AF_INET6 if ":" in text else socket.AF_INET
    return socket.inet_pton(family, text)
