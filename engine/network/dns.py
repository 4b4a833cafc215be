"""Just enough of the DNS wire format (RFC 1035) for the sandbox's stub: parse a query with
one question, build its answer. Pure functions; nothing here touches a socket."""

from __future__ import annotations

import struct
from dataclasses import dataclass

QTYPES = {1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 12: "PTR", 15: "MX", 16: "TXT", 28: "AAAA",
          33: "SRV", 64: "SVCB", 65: "HTTPS", 255: "ANY"}
TYPE_A = 1
CLASS_IN = 1
NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = 0, 1, 2, 3, 4, 5
RCODES = {NOERROR: "NOERROR", FORMERR: "FORMERR", SERVFAIL: "SERVFAIL", NXDOMAIN: "NXDOMAIN",
          NOTIMP: "NOTIMP", REFUSED: "REFUSED"}
_HEADER = struct.Struct("!HHHHHH")


class BadQuery(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Query:
    id: int
    flags: int
    name: str  # lower-case, no trailing dot
    qtype: int
    qclass: int
    question: bytes  # the question section as received, echoed in the answer

    @property
    def qtype_name(self) -> str:
        return QTYPES.get(self.qtype, str(self.qtype))


def parse_query(data: bytes) -> Query:
    """Raises BadQuery (answer FORMERR when at least the id could be read)."""
    if len(data) < _HEADER.size:
        raise BadQuery("short header")
    qid, flags, qd, _an, _ns, _ar = _HEADER.unpack_from(data)
    if flags & 0x8000:
        raise BadQuery("a response, not a query")
    if qd != 1:
        raise BadQuery(f"{qd} questions")
    pos = _HEADER.size
    labels: list[str] = []
    total = 0
    while True:
        if pos >= len(data):
            raise BadQuery("truncated name")
        n = data[pos]
        if n & 0xC0:
            raise BadQuery("compressed name in a question")
        pos += 1
        if n == 0:
            break
        label = data[pos:pos + n]
        if len(label) != n:
            raise BadQuery("truncated label")
        total += n + 1
        if total > 255:
            raise BadQuery("name too long")
        try:
            labels.append(label.decode("ascii").lower())
        except UnicodeDecodeError:
            raise BadQuery("non-ASCII name") from None
        pos += n
    if pos + 4 > len(data):
        raise BadQuery("truncated question")
    qtype, qclass = struct.unpack_from("!HH", data, pos)
    pos += 4
    return Query(qid, flags, ".".join(labels), qtype, qclass, data[_HEADER.size:pos])


def query_id(data: bytes) -> int | None:
    return struct.unpack_from("!H", data)[0] if len(data) >= 2 else None


def response(q: Query, rcode: int, addresses: tuple[str, ...] = (), ttl: int = 300) -> bytes:
    """The answer to ``q``: ``addresses`` (IPv4) as A records for an A query."""
    opcode = (q.flags >> 11) & 0xF
    rd = q.flags & 0x0100
    flags = 0x8000 | (opcode << 11) | 0x0400 | rd | 0x0080 | (rcode & 0xF)  # QR AA RD RA
    answers = b""
    count = 0
    if rcode == NOERROR and q.qtype == TYPE_A:
        for addr in addresses:
            raw = bytes(int(x) for x in addr.split("."))
            answers += struct.pack("!HHHIH", 0xC00C, TYPE_A, CLASS_IN, ttl, 4) + raw
            count += 1
    return _HEADER.pack(q.id, flags, 1, count, 0, 0) + q.question + answers


def error_response(data: bytes, rcode: int) -> bytes | None:
    """An answer with no question for a query we could not parse, or None."""
    qid = query_id(data)
    if qid is None:
        return None
    flags = 0x8000 | 0x0080 | (rcode & 0xF)
    return _HEADER.pack(qid, flags, 0, 0, 0, 0)


def build_query(name: str, qtype: int = TYPE_A, qid: int = 0x1234) -> bytes:
    """A query (for tests and the benchmark)."""
    q = b"".join(bytes([len(p)]) + p.encode() for p in name.rstrip(".").split(".")) + b"\0"
    return _HEADER.pack(qid, 0x0100, 1, 0, 0, 0) + q + struct.pack("!HH", qtype, CLASS_IN)


def parse_response(data: bytes) -> tuple[int, int, list[str]]:
    """(id, rcode, IPv4 answers) of a response (for tests)."""
    qid, flags, qd, an, _ns, _ar = _HEADER.unpack_from(data)
    pos = _HEADER.size
    for _ in range(qd):
        while data[pos]:
            pos += data[pos] + 1
        pos += 5
    out = []
    for _ in range(an):
        if data[pos] & 0xC0:
            pos += 2
        else:
            while data[pos]:
                pos += data[pos] + 1
            pos += 1
        rtype, _cls, _ttl, rdlen = struct.unpack_from("!HHIH", data, pos)
        pos += 10
        if rtype == TYPE_A and rdlen == 4:
            out.append(".".join(str(b) for b in data[pos:pos + 4]))
        pos += rdlen
    return qid, flags & 0xF, out
