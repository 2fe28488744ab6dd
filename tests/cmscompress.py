#!/usr/bin/env python3
"""cmscompress.py - CMS compressed-data (RFC 3274, ZLIB) of stdin, as DER on stdout. Debian's OpenSSL is built
without zlib, so `openssl cms -compress` cannot make one: the DER is assembled here with python's zlib."""
import sys
import zlib


def der(tag, body):
    n = len(body)
    if n < 128:
        ln = bytes([n])
    elif n < 256:
        ln = bytes([0x81, n])
    elif n < 65536:
        ln = bytes([0x82, n >> 8, n & 255])
    else:
        ln = bytes([0x83, n >> 16, (n >> 8) & 255, n & 255])
    return bytes([tag]) + ln + body


def oid(*b):
    return der(6, bytes(b))


PKCS9 = (0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x10)
data = zlib.compress(sys.stdin.buffer.read(), 9)
cd = der(0x30, der(2, b"\0") + der(0x30, oid(*PKCS9, 3, 8)) +
         der(0x30, oid(0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 1, 7, 1) + der(0xa0, der(4, data))))
sys.stdout.buffer.write(der(0x30, oid(*PKCS9, 1, 9) + der(0xa0, cd)))
