#!/usr/bin/env python3
"""signedparts.py DIR - splits the first multipart/signed of the message on stdin the way RFC 1847 defines it,
independently of GMime: DIR/content gets the first part's bytes exactly as they travel (from after the boundary line
to before the CRLF that precedes the next boundary), with line ends made CRLF as a verifier canonicalises them;
DIR/signature gets the second part's decoded payload. Prints the protocol and micalg parameters."""
import email
import email.policy
import os
import re
import sys

raw = sys.stdin.buffer.read()
msg = email.message_from_bytes(raw, policy=email.policy.compat32)
for part in msg.walk():
    if part.get_content_type() == "multipart/signed":
        break
else:
    sys.exit("no multipart/signed")
boundary = part.get_boundary().encode()
delim = re.compile(rb"(?:^|\r?\n)--" + re.escape(boundary) + rb"(--)?[ \t]*\r?\n", re.M)
marks = list(delim.finditer(raw))
if len(marks) < 3:
    sys.exit("multipart/signed without two parts")
content = raw[marks[0].end():marks[1].start()]
content = re.sub(rb"\r?\n", b"\r\n", content)
with open(os.path.join(sys.argv[1], "content"), "wb") as f:
    f.write(content)
with open(os.path.join(sys.argv[1], "signature"), "wb") as f:
    f.write(part.get_payload()[1].get_payload(decode=True))
print(part.get_param("protocol"), part.get_param("micalg"))
