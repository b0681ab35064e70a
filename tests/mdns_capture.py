"""A LAN observer for mDNS: records every multicast DNS packet on one interface.

Run inside a test-created namespace as an agent (``NetnsLab.spawn_agent``):
``python tests/mdns_capture.py <interface address>``. It joins 224.0.0.251 on that address
only and speaks JSON lines: it says ``{"event": "listening"}``, then one
``{"event": "packet", "hex": ...}`` per packet received; each line it reads on stdin makes it
multicast a query for p2prtc's service type (so announcements need not be waited for). It
exits when stdin closes.

`parse_packet` (used by the tests) decodes a captured packet with zeroconf's own parser.
"""

from __future__ import annotations

import json
import socket
import struct
import sys
import threading
from dataclasses import dataclass

MDNS_GROUP = "224.0.0.251"
MDNS_PORT = 5353
SERVICE_TYPE = "_p2prtc._tcp.local."
_TYPE_PTR = 12
_CLASS_IN = 1
_print_lock = threading.Lock()


@dataclass(frozen=True)
class Record:
    """One resource record of a captured packet: its owner name, type and raw data."""

    name: str
    type: str
    text: bytes  # TXT: the raw strings; other records: their textual form, utf-8


def parse_packet(packet: bytes) -> list[Record]:
    """The records (answers and additionals) of an mDNS packet; questions are skipped."""
    # Imported here: the agent itself does not need zeroconf. zeroconf re-exports these at
    # its top level without listing them in __all__, so they come from where they live.
    from zeroconf._dns import DNSText
    from zeroconf._protocol.incoming import DNSIncoming

    incoming = DNSIncoming(packet)
    records = []
    for record in incoming.answers():
        text = record.text if isinstance(record, DNSText) else str(record).encode()
        records.append(Record(record.name, type(record).__name__, text))
    return records


def txt_properties(raw: bytes) -> dict[str, str]:
    """A TXT record's ``key=value`` strings (each prefixed by its length byte)."""
    properties = {}
    offset = 0
    while offset < len(raw):
        length = raw[offset]
        entry = raw[offset + 1 : offset + 1 + length].decode()
        key, _, value = entry.partition("=")
        properties[key] = value
        offset += 1 + length
    return properties


def _query() -> bytes:
    """A standard mDNS query for PTR records of p2prtc's service type."""
    header = struct.pack("!HHHHHH", 0, 0, 1, 0, 0, 0)
    labels = b"".join(
        bytes([len(label)]) + label.encode() for label in SERVICE_TYPE.rstrip(".").split(".")
    )
    return header + labels + b"\x00" + struct.pack("!HH", _TYPE_PTR, _CLASS_IN)


def _say(**message: object) -> None:
    with _print_lock:
        print(json.dumps(message), flush=True)


def _open(interface: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("", MDNS_PORT))
    membership = socket.inet_aton(MDNS_GROUP) + socket.inet_aton(interface)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, membership)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(interface))
    return sock


def _capture(sock: socket.socket) -> None:
    while True:
        try:
            packet, _ = sock.recvfrom(9000)
        except OSError:  # closed at exit
            return
        _say(event="packet", hex=packet.hex())


def main(interface: str) -> None:
    sock = _open(interface)
    threading.Thread(target=_capture, args=(sock,), daemon=True).start()
    _say(event="listening")
    for _ in sys.stdin:
        sock.sendto(_query(), (MDNS_GROUP, MDNS_PORT))
    sock.close()


if __name__ == "__main__":
    main(sys.argv[1])
