#!/usr/bin/env python3
"""signed-check.py - the message on stdin is PGP/MIME encrypted around a PGP/MIME multipart/signed entity: decrypts it
with gpg (GNUPGHOME from the environment), cuts the signed part out of the clear entity's bytes exactly as RFC 3156
section 5 says (after the first delimiter line, up to the CRLF before the second), and checks the detached
signature over it with gpg --verify. Prints gpg's status lines (GOODSIG, VALIDSIG ...); exits 1 when any step
fails. Works on files, not in memory twice: the clear entity is written to a temporary directory."""
import email
import email.policy
import os
import re
import subprocess
import sys
import tempfile

msg = email.message_from_bytes(sys.stdin.buffer.read(), policy=email.policy.compat32)
if msg.get_content_type() != "multipart/encrypted":
    sys.exit("not multipart/encrypted: %s" % msg.get_content_type())
cipher = msg.get_payload()[1].get_payload(decode=True)
del msg
p = subprocess.run(["gpg", "--batch", "-q", "-d"], input=cipher, capture_output=True)
if p.returncode != 0:
    sys.exit("gpg -d failed: " + p.stderr.decode(errors="replace"))
clear = p.stdout
head, body = clear.split(b"\r\n\r\n", 1)
if not re.match(rb"(?i)content-type:\s*multipart/signed", head):
    sys.exit("the clear entity is not multipart/signed")
delim = b"--" + re.search(rb'boundary="?([^";\r\n]+)', head).group(1)
start = body.index(b"\r\n", body.index(delim)) + 2
end = body.index(b"\r\n" + delim, start)
sig_start = body.index(b"\r\n", end + 2) + 2
sig_end = body.index(b"\r\n" + delim, sig_start)
sig = email.message_from_bytes(body[sig_start:sig_end]).get_payload(decode=True)
with tempfile.TemporaryDirectory() as d:
    with open(os.path.join(d, "content"), "wb") as f:
        f.write(body[start:end])
    with open(os.path.join(d, "sig.asc"), "wb") as f:
        f.write(sig)
    v = subprocess.run(["gpg", "--batch", "--status-fd", "1", "--verify", os.path.join(d, "sig.asc"),
                        os.path.join(d, "content")], capture_output=True)
sys.stdout.write(v.stdout.decode(errors="replace"))
sys.exit(0 if v.returncode == 0 else 1)
