#!/usr/bin/env python3
"""Writes the small seed corpora under fuzz/corpus-seed/<target>/.

The seeds are committed; rerun this only to change them. Each file starts
with the control bytes its target's doc comment describes, then the bytes
under test.
"""
import gzip
import io
import os
import tarfile

HERE = os.path.dirname(os.path.abspath(__file__))


def write(target, name, data):
    d = os.path.join(HERE, "corpus-seed", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# http_head: [limits, nreads, sizes..., wire]; limits 0x0e = 1 KiB / 100.
HEADS = {
    "get": b"GET /api/system HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t\r\n\r\n",
    "post_cl": b"POST /api/transfers?x=1 HTTP/1.1\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\nhello",
    "post_chunked": b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "cl_te": b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
    "two_cl": b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
    "http10": b"\r\n\nGET http://h:8080/a?b HTTP/1.0\nConnection: keep-alive\n\n",
    "upgrade": b"GET /api/servers/u/ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
}
for name, wire in HEADS.items():
    write("http_head", name, bytes([0x0E, 0]) + wire)
    write("http_head", name + "_dribble", bytes([0x09, 2, 1, 7]) + wire)

# http_chunked: [npieces, sizes..., cap, wire]
CHUNKED = {
    "simple": b"5\r\nhello\r\n0\r\n\r\n",
    "ext_trailer": b"7;a=b\r\n, world\r\nA \r\n0123456789\r\n0\r\nX-T: y\r\n\r\nNEXT",
    "big_size": b"fffffffffffffff\r\nabc",
}
for name, wire in CHUNKED.items():
    write("http_chunked", name, bytes([0, 255]) + wire)
    write("http_chunked", name + "_split", bytes([2, 1, 3, 2]) + wire)

# multipart: [boundary pick, nreads, sizes..., buffer, body]; pick 0 = "ferryfuzz"
def part(name, data, filename=None):
    disp = f'form-data; name="{name}"'
    if filename:
        disp += f'; filename="{filename}"'
    return (f"--ferryfuzz\r\nContent-Disposition: {disp}\r\n\r\n").encode() + data + b"\r\n"


TRANSFER = (
    b"preamble\r\n"
    + part("configuration", b'{"uuid":"x"}')
    + part("archive", b"\x1f\x8b\x08\x00--ferryfuzz-not\r\n--ferryfuzzX", "archive.tar.gz")
    + part("checksum", b"00" * 32)
    + b"--ferryfuzz--\r\nepilogue"
)
write("multipart", "transfer", bytes([0, 0, 255]) + TRANSFER)
write("multipart", "transfer_dribble", bytes([0, 2, 0, 3, 5]) + TRANSFER)
write("multipart", "truncated", bytes([0, 0, 64]) + TRANSFER[:120])
write(
    "multipart",
    "padding_and_headers",
    bytes([0, 0, 16])
    + b"--ferryfuzz  \t\r\nContent-Disposition: form-data;\r\n name=\"a\\\"b\"\r\nContent-Type: text/plain\r\n\r\nx\r\n--ferryfuzz--",
)


# archive_extract: [mode, bytes]; mode bit 0 = raw tar (checksums fixed up)
def tar_bytes(entries, fmt=tarfile.PAX_FORMAT):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as t:
        for info, data in entries:
            t.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def entry(name, kind=tarfile.REGTYPE, data=b"", link="", mode=0o644):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.mtime = 1700000000
    info.linkname = link
    if kind == tarfile.REGTYPE:
        info.size = len(data)
        return info, data
    return info, None


NORMAL = [
    entry("world/", tarfile.DIRTYPE, mode=0o755),
    entry("world/level.dat", data=b"level"),
    entry("start.sh", data=b"#!/bin/sh\n", mode=0o4755),
    entry("link", tarfile.SYMTYPE, link="world/level.dat"),
    entry("d" * 120 + "/long-name.txt", data=b"pax path"),
]
HOSTILE = {
    "dotdot": [entry("../escape", data=b"x")],
    "absolute": [entry("/tmp/abs", data=b"x")],
    "symlink_then_write": [
        entry("up", tarfile.SYMTYPE, link=".."),
        entry("up/escape", data=b"x"),
    ],
    "hardlink": [entry("h", tarfile.LNKTYPE, link="../outside/secret")],
    "device": [entry("dev", tarfile.CHRTYPE)],
    "fifo": [entry("fifo", tarfile.FIFOTYPE)],
    "big_file": [entry("big", data=b"z" * 9000)],
}
normal = tar_bytes(NORMAL)
write("archive_extract", "normal_gz", bytes([0]) + gzip.compress(normal, 6))
write("archive_extract", "normal_tar", bytes([1]) + normal)
write("archive_extract", "gnu_tar", bytes([1]) + tar_bytes(NORMAL, tarfile.GNU_FORMAT))
two_members = gzip.compress(normal[:1024]) + gzip.compress(normal[1024:])
write("archive_extract", "multi_member_gz", bytes([0]) + two_members)
for name, entries in HOSTILE.items():
    write("archive_extract", name, bytes([3]) + tar_bytes(entries))
