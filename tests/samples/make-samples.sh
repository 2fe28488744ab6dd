#!/usr/bin/env bash
# make-samples.sh - regenerates the sample messages mimegate ships (README quick start, tests/test-corpus.c).
# Keys are made fresh in a temporary GnuPG home and CA and thrown away: the samples show structure, and nobody can
# decrypt them. Each file is named after the kind detection must report for it.
set -euo pipefail
out=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d /tmp/mgs-XXXXXX)
export GNUPGHOME=$tmp/g
trap 'gpgconf --kill all 2>/dev/null || true; rm -rf "$tmp"' EXIT
mkdir -m 700 "$GNUPGHOME"
echo allow-loopback-pinentry > "$GNUPGHOME/gpg-agent.conf"
g() { gpg --batch --yes --pinentry-mode loopback --passphrase '' --trust-model always "$@"; }
g --quick-gen-key 'Alice Sample <alice@example.org>' ed25519 sign never
g --quick-add-key "$(g --with-colons -k alice@example.org | awk -F: '/^fpr/{print $10; exit}')" cv25519 encr never
cd "$tmp"
openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 3650 -subj '/CN=Sample CA' \
  -addext basicConstraints=critical,CA:TRUE 2>/dev/null
printf 'subjectAltName=email:carol@example.net\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=emailProtection\n' > ext
openssl req -newkey rsa:2048 -nodes -keyout carol.key -out carol.csr -subj '/CN=Carol Sample' 2>/dev/null
openssl x509 -req -in carol.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 3650 -extfile ext -out carol.pem 2>/dev/null

body='Hello,

this is a sample message from mimegate.
'
hdr() { printf 'From: Alice Sample <alice@example.org>\nTo: Carol Sample <carol@example.net>\nSubject: %s\nDate: Mon, 23 Nov 2026 10:00:00 +0000\nMessage-ID: <%s@samples.mimegate.invalid>\nMIME-Version: 1.0\n' "$1" "$2"; }
b64() { base64 -w 76; }

{ hdr 'plain text' plain; printf 'Content-Type: text/plain; charset=utf-8\n\n%s' "$body"; } > "$out/plain.eml"

armored=$(printf '%s' "$body" | g -a -e -r alice@example.org)
{ hdr 'PGP/Inline encrypted' inline; printf 'Content-Type: text/plain; charset=utf-8\n\n%s\n' "$armored"; } > "$out/pgp-inline-encrypted.eml"

{ hdr 'PGP/Inline cleartext signed' clearsign; printf 'Content-Type: text/plain; charset=utf-8\n\n'; printf '%s' "$body" | g --clearsign -u alice@example.org; } > "$out/pgp-inline-signed.eml"

{ hdr 'my OpenPGP key' key; printf 'Content-Type: text/plain; charset=utf-8\n\nMy key:\n\n'; g -a --export alice@example.org; } > "$out/pgp-inline-key.eml"

{ hdr 'PGP/MIME encrypted' pgpmime
  printf 'Content-Type: multipart/encrypted; protocol="application/pgp-encrypted"; boundary="enc"\n\n'
  printf -- '--enc\nContent-Type: application/pgp-encrypted\n\nVersion: 1\n\n--enc\nContent-Type: application/octet-stream; name="encrypted.asc"\n\n%s\n--enc--\n' "$armored"
} > "$out/pgp-mime-encrypted.eml"

{ hdr 'PGP/MIME as Exchange rewrites it' mangled
  printf 'Content-Type: multipart/mixed; boundary="mix"\n\n'
  printf -- '--mix\nContent-Type: text/plain; charset="us-ascii"\nContent-Transfer-Encoding: quoted-printable\n\n\n'
  printf -- '--mix\nContent-Type: application/pgp-encrypted; name="PGPMIME version identification"\nContent-Disposition: attachment; filename="PGPMIME version identification"\nContent-Transfer-Encoding: base64\n\n%s\n' "$(printf 'Version: 1\r\n' | b64)"
  printf -- '--mix\nContent-Type: application/octet-stream; name="encrypted.asc"\nContent-Disposition: attachment; filename="encrypted.asc"\nContent-Transfer-Encoding: base64\n\n%s\n--mix--\n' "$(printf '%s\n' "$armored" | b64)"
} > "$out/pgp-mime-mangled.eml"

signed_part=$(printf 'Content-Type: text/plain; charset=utf-8\r\n\r\n%s' "$body" | sed 's/$/\r/' | sed 's/\r\r$/\r/')
sig=$(printf '%s' "$signed_part" | g -a --detach-sign -u alice@example.org)
{ hdr 'PGP/MIME signed' pgpsigned
  printf 'Content-Type: multipart/signed; micalg=pgp-sha512; protocol="application/pgp-signature"; boundary="sig"\n\n'
  printf -- '--sig\n%s\n--sig\nContent-Type: application/pgp-signature; name="signature.asc"\n\n%s\n--sig--\n' "$(printf '%s' "$signed_part" | tr -d '\r')" "$sig"
} > "$out/pgp-mime-signed.eml"

{ hdr 'an encrypted attachment' attach
  printf 'Content-Type: multipart/mixed; boundary="att"\n\n--att\nContent-Type: text/plain\n\nThe report is attached.\n'
  printf -- '--att\nContent-Type: application/octet-stream; name="report.pdf.pgp"\nContent-Disposition: attachment; filename="report.pdf.pgp"\nContent-Transfer-Encoding: base64\n\n%s\n--att--\n' "$(printf '%%PDF-1.4 sample\n' | g -e -r alice@example.org | b64)"
} > "$out/pgp-attachment-encrypted.eml"

{ hdr 'S/MIME encrypted' smimeenv
  printf 'Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name="smime.p7m"\nContent-Disposition: attachment; filename="smime.p7m"\nContent-Transfer-Encoding: base64\n\n'
  printf 'Content-Type: text/plain; charset=utf-8\r\n\r\n%s' "$body" | openssl cms -encrypt -aes256 -outform DER carol.pem | b64
} > "$out/smime-enveloped.eml"

{ hdr 'S/MIME signed (opaque)' smimeopaque
  printf 'Content-Type: application/pkcs7-mime; smime-type=signed-data; name="smime.p7m"\nContent-Disposition: attachment; filename="smime.p7m"\nContent-Transfer-Encoding: base64\n\n'
  printf 'Content-Type: text/plain; charset=utf-8\r\n\r\n%s' "$body" | openssl cms -sign -nodetach -outform DER -signer carol.pem -inkey carol.key | b64
} > "$out/smime-signed-opaque.eml"

smime_part=$(printf 'Content-Type: text/plain; charset=utf-8\n\n%s' "$body")
{ hdr 'S/MIME signed (detached)' smimedetached
  printf 'Content-Type: multipart/signed; protocol="application/pkcs7-signature"; micalg=sha-256; boundary="ssig"\n\n'
  printf -- '--ssig\n%s\n--ssig\nContent-Type: application/pkcs7-signature; name="smime.p7s"\nContent-Disposition: attachment; filename="smime.p7s"\nContent-Transfer-Encoding: base64\n\n%s\n--ssig--\n' "$smime_part" "$(printf '%s' "$smime_part" | openssl cms -sign -binary -outform DER -signer carol.pem -inkey carol.key | b64)"
} > "$out/smime-signed-detached.eml"

{ hdr 'forwarded: a signed message inside' forward
  printf 'Content-Type: multipart/mixed; boundary="fwd"\n\n--fwd\nContent-Type: text/plain\n\nForwarding this.\n--fwd\nContent-Type: message/rfc822\n\n'
  tail -n +1 "$out/smime-signed-detached.eml"
  printf -- '--fwd--\n'
} > "$out/smime-signed-detached+forwarded.eml"
# CMS compressed-data (RFC 3274): Debian's OpenSSL has no zlib, so tests/cmscompress.py assembles the DER
{ hdr 'S/MIME compressed' smimecompressed
  printf 'Content-Type: application/pkcs7-mime; smime-type=compressed-data; name="smime.p7z"\nContent-Disposition: attachment; filename="smime.p7z"\nContent-Transfer-Encoding: base64\n\n'
  printf 'Content-Type: text/plain; charset=utf-8\r\n\r\n%s' "$body" | python3 "$out/../cmscompress.py" | b64
} > "$out/smime-compressed.eml"
echo "samples written to $out"
