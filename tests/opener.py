#!/usr/bin/env python3
"""opener.py MARKER - opens the message on stdin as a recipient's mail client would, with independent tools only
(gpg for OpenPGP, openssl cms for S/MIME; GNUPGHOME, CMS_KEY and CMS_CERT from the environment), layer by layer:
multipart/encrypted, PGP/Inline armor in text, NAME.pgp attachments, application/pkcs7-mime (enveloped, opaque
signed, compressed). Prints the layers it opened, in order ("gpg", "cms-decrypt", "cms-signed", "cms-compressed"),
then "found" or "missing" for MARKER in any clear leaf. Exits 1 when a layer cannot be opened. With OPENER_SHA256=1
in the environment, also "sha256 NAME HEX" for every clear leaf (NAME: its file name, .pgp stripped, or "-")."""
import hashlib
import email
import email.policy
import os
import re
import subprocess
import sys
import zlib

marker = sys.argv[1].encode()
layers = []
found = False
digests = []


def digest(name, data):
    digests.append("sha256 %s %s" % (name or "-", hashlib.sha256(data).hexdigest()))


def run(argv, data):
    p = subprocess.run(argv, input=data, capture_output=True)
    if p.returncode != 0:
        sys.exit("%s failed: %s" % (argv[0], p.stderr.decode(errors="replace")))
    return p.stdout


def gpg(data):
    layers.append("gpg")
    return run(["gpg", "--batch", "-q", "-d"], data)


def cms(data, smime_type):
    der = data
    if smime_type == "compressed-data":
        # Debian's OpenSSL has no zlib: take the eContent OCTET STRING from the DER and inflate it with python's zlib
        layers.append("cms-compressed")
        text = run(["openssl", "asn1parse", "-inform", "DER"], der).decode()
        off = [l for l in text.splitlines() if "OCTET STRING" in l][-1]
        m = re.match(r"\s*(\d+):d=\d+\s+hl=(\d+)\s+l=\s*(\d+)", off)
        start, hl, ln = int(m.group(1)), int(m.group(2)), int(m.group(3))
        return zlib.decompress(der[start + hl:start + hl + ln])
    if smime_type == "signed-data":
        layers.append("cms-signed")
        return run(["openssl", "cms", "-verify", "-noverify", "-inform", "DER"], der)
    layers.append("cms-decrypt")
    return run(["openssl", "cms", "-decrypt", "-inform", "DER", "-inkey", os.environ["CMS_KEY"],
                "-recip", os.environ["CMS_CERT"]], der)


def open_entity(raw):
    global found
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    walk(msg)


def walk(part):
    global found
    ctype = part.get_content_type()
    if part.is_multipart():
        subs = part.get_payload()
        if ctype == "multipart/encrypted" and len(subs) == 2:
            open_entity(gpg(subs[1].get_payload(decode=True)))
            return
        for s in subs:
            walk(s)
        return
    data = part.get_payload(decode=True) or b""
    name = part.get_filename() or ""
    if ctype in ("application/pkcs7-mime", "application/x-pkcs7-mime") or name.endswith(".p7m"):
        stype = part.get_param("smime-type") or "enveloped-data"
        open_entity(cms(data, stype.lower()))
        return
    if name.endswith(".pgp"):
        clear = gpg(data)
        if clear.startswith(b"Content-Type:") or b"\nContent-Type:" in clear[:400]:
            open_entity(clear)
        else:
            digest(name[:-4], clear)
            found |= marker in clear
        return
    digest(name, data)
    blocks = re.findall(rb"-----BEGIN PGP MESSAGE-----.*?-----END PGP MESSAGE-----", data, re.S)
    for b in blocks:
        if marker in gpg(b):
            found = True
    if marker in data:
        found = True


open_entity(sys.stdin.buffer.read())
print(" ".join(layers))
print("found" if found else "missing")
if os.environ.get("OPENER_SHA256") == "1":
    print("\n".join(digests))
