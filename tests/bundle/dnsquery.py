"""A tiny stdlib DNS client for tests (UDP or TCP): query(server, port, name, qtype) -> (rcode, [(type, value)])."""

from __future__ import annotations

import random
import socket
import struct

TYPES = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "PTR": 12, "AAAA": 28, "SRV": 33}
_NAMES = {v: k for k, v in TYPES.items()}


def _encode_name(name: str) -> bytes:
    out = b""
    for label in name.rstrip(".").split("."):
        out += bytes([len(label)]) + label.encode()
    return out + b"\x00"


def _read_name(msg: bytes, off: int) -> tuple[str, int]:
    labels, jumped, end = [], False, off
    while True:
        n = msg[off]
        if n & 0xC0 == 0xC0:
            if not jumped:
                end = off + 2
            off, jumped = ((n & 0x3F) << 8) | msg[off + 1], True
            continue
        if n == 0:
            return ".".join(labels) + ".", (end if jumped else off + 1)
        labels.append(msg[off + 1 : off + 1 + n].decode())
        off += n + 1


def query(
    server: str, port: int, name: str, qtype: str = "A", tcp: bool = False, timeout: float = 3.0
) -> tuple[int, list[tuple[str, str]]]:
    qid = random.randrange(65536)
    packet = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + _encode_name(name) + struct.pack(">HH", TYPES[qtype], 1)
    if tcp:
        with socket.create_connection((server, port), timeout=timeout) as s:
            s.sendall(struct.pack(">H", len(packet)) + packet)
            size = struct.unpack(">H", s.recv(2))[0]
            msg = b""
            while len(msg) < size:
                msg += s.recv(size - len(msg))
    else:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(timeout)
            s.sendto(packet, (server, port))
            msg = s.recv(65535)
    rid, flags, qd, an, _ns, _ar = struct.unpack(">HHHHHH", msg[:12])
    assert rid == qid
    off = 12
    for _ in range(qd):
        _, off = _read_name(msg, off)
        off += 4
    answers = []
    for _ in range(an):
        _, off = _read_name(msg, off)
        rtype, _cls, _ttl, rdlen = struct.unpack(">HHIH", msg[off : off + 10])
        off += 10
        rdata = msg[off : off + rdlen]
        t = _NAMES.get(rtype, str(rtype))
        if t == "A":
            value = socket.inet_ntop(socket.AF_INET, rdata)
        elif t == "AAAA":
            value = socket.inet_ntop(socket.AF_INET6, rdata)
        elif t in ("CNAME", "PTR", "NS"):
            value = _read_name(msg, off)[0]
        elif t == "SRV":
            prio, weight, port_ = struct.unpack(">HHH", rdata[:6])
            value = f"{prio} {weight} {port_} {_read_name(msg, off + 6)[0]}"
        else:
            value = rdata.hex()
        answers.append((t, value))
        off += rdlen
    return flags & 0xF, answers
