#!/usr/bin/env python3
"""mimeparts.py - an independent view of a MIME message or entity on stdin (Python's email package, not GMime).

Prints one line per leaf part: content type, file name, charset, and the SHA-256 of the decoded content. Text
parts are compared by their characters with line ends made LF: canonical CRLF before encryption (RFC 3156, RFC
8551) is not a change of content. Structure parts (multipart/*) print their type only."""
import email
import email.policy
import hashlib
import sys

msg = email.message_from_bytes(sys.stdin.buffer.read(), policy=email.policy.compat32)
for part in msg.walk():
    ctype = part.get_content_type()
    if part.is_multipart():
        print(ctype)
        continue
    data = part.get_payload(decode=True) or b""
    charset = part.get_content_charset()
    if part.get_content_maintype() == "text":
        data = data.decode(charset or "us-ascii", "replace").replace("\r\n", "\n").encode("utf-8")
    print("%s\t%s\t%s\t%s" % (ctype, part.get_filename() or "-", charset or "-", hashlib.sha256(data).hexdigest()))
