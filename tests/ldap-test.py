#!/usr/bin/env python3
"""ldap-test.py MIMEGATE - a directory as a key source ([directory], issue 16) against a real OpenLDAP slapd, as TAP.

The test starts its own slapd on 127.0.0.1 (tests/ldaptest.py: a generated slapd.conf, an mdb database in a temporary
directory, entries loaded with ldapadd) and stops it at the end. Certificates come from an openssl test CA whose root
is the X.509 store's ca/; certs/ stays empty, so every certificate found comes from the directory. Results are
checked with openssl cms (decryption with the recipient's key, byte-exact content), `mimegate keys` (what was chosen,
from where, and why the others were refused) and slapd's own log (the filter it was sent). Pipe runs (filter, keys,
convert) share a cache file; `mimegate serve` (LMTP in, tests/smtp-capture.py as the reinjection server) keeps its
answers in memory; both are checked with slapd stopped mid-run: the cached answer, then 4.7.0 after stale-ttl.

Exit status: 0 when every check passed, 1 otherwise; skipped (TAP "1..0 # SKIP") without slapd, ldap-utils or
openssl."""
import base64, json
import os
import re
import shutil
import signal
import smtplib
import socket
import stat
import subprocess
import sys
import tempfile
import time
import traceback

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ldaptest  # noqa: E402

MIMEGATE = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("MIMEGATE_BIN", "")
MARKER = "LDAPMARKER-8fQ2 the clear text of this message"
SENDER = "alice@example.org"
DAVE = "dave@dir.test"  # one valid certificate, userCertificate;binary
OLD = "old@dir.test"  # an expired certificate only
TWO = "two@dir.test"  # two valid certificates: 100 days (userCertificate;binary) and 400 days (userSMIMECertificate)
CAROL = "carol@dir.test"  # an OpenPGP key in pgpKey
LATE = "late@dir.test"  # an expired OpenPGP key in pgpKey
SCHEMA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ldap-openpgp.schema")
RESULTS = {"n": 0, "failed": []}


def check(cond, what, detail=None):
    RESULTS["n"] += 1
    print("%s %d - %s" % ("ok" if cond else "not ok", RESULTS["n"], what), flush=True)
    if not cond:
        RESULTS["failed"].append(what)
        for line in str(detail if detail is not None else "").splitlines()[:40]:
            print("#   " + line, flush=True)
    return bool(cond)


def skip(why):
    print("1..0 # SKIP " + why)
    sys.exit(0)


class Env:
    pass


E = Env()


def conf(directory, name="mimegate.conf"):
    """a configuration with the X.509 store and [directory] @directory (a dict), written to WORK/@name"""
    path = os.path.join(E.work, name)
    text = "[gateway]\ngnupg-home = none\nx509-store = %s\nlog = none\n\n[directory]\n" % E.store
    for k, v in directory.items():
        text += "%s = %s\n" % (k, v)
    with open(path, "w") as f:
        f.write(text)
    return path


def base_directory(**more):
    d = {"uri": E.slapd.uri, "base": "dc=test", "cache-file": os.path.join(E.work, "cache", "plain.cache")}
    d.update({k.replace("_", "-"): v for k, v in more.items()})
    return d


def mg(*args, inp=None):
    return subprocess.run([MIMEGATE] + list(args), input=inp, capture_output=True)


def keys_json(conf_path, addr):
    p = mg("keys", "-c", conf_path, "--json", addr)
    try:
        return p, json.loads(p.stdout.decode())[0]
    except (ValueError, IndexError):
        return p, None


MESSAGE = ("From: %s\r\nTo: %%s\r\nSubject: directory test\r\nMessage-ID: <ldap-%%d@example.org>\r\n"
           "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n%s\r\nsecond line\r\n" % (SENDER, MARKER))
BODY = ("%s\r\nsecond line\r\n" % MARKER).encode()
# what the encrypted entity's body is under header-protection = obscure (the default): the RFC 9788 legacy display
# of the obscured Subject, then the body byte for byte
SHOWN = b"Subject: directory test\r\n\r\n" + BODY
COUNTER = [0]


def message(to):
    COUNTER[0] += 1
    return (MESSAGE % (to, COUNTER[0])).encode()


def cms_open(data, who):
    """the decrypted entity's body, or None"""
    p = subprocess.run(["openssl", "cms", "-decrypt", "-inkey", E.certs[who][1], "-recip", E.certs[who][0]],
                       input=data.replace(b"\r\n", b"\n"), capture_output=True)
    if p.returncode != 0:
        return None
    entity = p.stdout.replace(b"\r\n", b"\n")
    head, _, body = entity.partition(b"\n\n")
    return body.replace(b"\n", b"\r\n")


def is_smime(data):
    return re.search(rb"(?im)^Content-Type:\s*application/(x-)?pkcs7-mime", data) is not None


def filter_run(conf_path, to):
    return mg("filter", "-c", conf_path, "--stdout", "-f", SENDER, "--", to, inp=message(to))


def status_of(p):
    """what pipe(8) reads of a filter run that did not deliver: its output, stdout and stderr"""
    return (p.stdout + p.stderr).decode(errors="replace")


def setup():
    E.work = tempfile.mkdtemp(prefix="mg-ldap-test-")
    E.store = os.path.join(E.work, "x509")
    for sub in ("ca", "certs", "crl", "private"):
        os.makedirs(os.path.join(E.store, sub))
    os.makedirs(os.path.join(E.work, "cache"), mode=0o700)
    E.ca = ldaptest.TestCA(os.path.join(E.work, "ca"))
    shutil.copy(E.ca.cert, os.path.join(E.store, "ca", "root.pem"))
    E.tls_ca = ldaptest.TestCA(os.path.join(E.work, "tls-ca"), name="mimegate LDAP TLS Test CA")
    E.other_ca = ldaptest.TestCA(os.path.join(E.work, "other-ca"), name="Some Other CA")
    E.certs = {
        DAVE: E.ca.issue("dave", "Dave", DAVE),
        OLD: E.ca.issue("old", "Old", OLD, start="20200101000000Z", end="20210101000000Z"),
        "two-short": E.ca.issue("two-short", "Two", TWO, days=100),
        "two-long": E.ca.issue("two-long", "Two", TWO, days=400),
        "meta": E.ca.issue("meta", "Meta", "meta@dir.test"),
    }
    E.slapd = ldaptest.Slapd(os.path.join(E.work, "slapd"), tls_ca=E.tls_ca, extra_schemas=[SCHEMA])
    E.slapd.start()
    E.slapd.add_base()
    E.slapd.add_person("dave", DAVE, usercert_ders=[E.certs[DAVE][2]])
    E.slapd.add_person("old", OLD, usercert_ders=[E.certs[OLD][2]])
    E.slapd.add_person("two", TWO, smime_ders=[E.certs["two-long"][2]], usercert_ders=[E.certs["two-short"][2]])
    E.slapd.add_person("meta", "meta@dir.test", usercert_ders=[E.certs["meta"][2]])
    # OpenPGP: each person's own GnuPG home holds the secret key; the directory only the public key
    E.pgp = {}
    for who, addr, faked in (("carol", CAROL, None), ("late", LATE, "20200101T000000!")):
        home = os.path.join(E.work, "gpg-" + who)
        os.makedirs(home, mode=0o700)
        gpg = ["gpg", "--homedir", home, "--batch", "--no-tty", "--passphrase", "", "--pinentry-mode", "loopback"]
        ldaptest.run(gpg + (["--faked-system-time", faked] if faked else []) +
                     ["--quick-gen-key", "%s <%s>" % (who.title(), addr), "future-default", "default", "1y"])
        fpr = [l.split(":")[9] for l in ldaptest.run(gpg + ["--with-colons", "--list-keys", addr]).stdout.decode()
               .splitlines() if l.startswith("fpr:")][0]
        pub = os.path.join(E.work, who + ".pgp")
        ldaptest.run(gpg + ["--output", pub, "--export", fpr])
        E.pgp[addr] = (home, fpr)
        E.slapd.add_person(who, addr, pgp_keys=[pub])
    E.name = E.slapd.uri + "/dc=test"


def test_found():
    c = conf(base_directory())
    p, a = keys_json(c, DAVE)
    check(p.returncode == 0 and a and a["x509"] and a["x509"]["fingerprint"] == ldaptest.fingerprint(E.certs[DAVE][0]),
          "keys: the certificate only the directory holds is chosen", p.stdout.decode() + p.stderr.decode())
    check(a and a["x509"] and a["x509"].get("source") == E.name, "keys --json: its source is " + E.name,
          p.stdout.decode())
    t = mg("keys", "-c", c, DAVE).stdout.decode()
    check(("from " + E.name) in t, "keys: the text says where it came from", t)
    src = os.path.join(E.work, "msg.eml")
    with open(src, "wb") as f:
        f.write(message(DAVE))
    p = mg("convert", "-c", c, "--to", "smime", "-r", DAVE, src)
    check(p.returncode == 0 and is_smime(p.stdout), "convert --to smime for the directory's recipient",
          p.stderr.decode())
    check(cms_open(p.stdout, DAVE) == SHOWN, "openssl cms -decrypt with the recipient's key: the content, byte-exact")
    cache = os.path.join(E.work, "cache", "plain.cache")
    st = os.stat(cache) if os.path.exists(cache) else None
    check(st is not None and stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == os.geteuid(),
          "the shared cache file exists, mode 0600, ours")
    p = filter_run(c, DAVE)
    check(p.returncode == 0 and is_smime(p.stdout) and cms_open(p.stdout, DAVE) == SHOWN,
          "filter: S/MIME to the directory's certificate, and it opens", p.stderr.decode())


def test_expired():
    c = conf(base_directory())
    p, a = keys_json(c, OLD)
    fp = ldaptest.fingerprint(E.certs[OLD][0])
    refused = [r for r in (a or {}).get("refused", []) if r["id"] == fp]
    check(p.returncode == 1 and a and a["x509"] is None, "keys: an expired certificate is not chosen",
          p.stdout.decode())
    check(refused and "expired on 2021-01-01" in refused[0]["reason"] and refused[0].get("source") == E.name,
          "keys: refused as expired, with its source", p.stdout.decode())
    t = mg("keys", "-c", c, OLD).stdout.decode()
    check(re.search(r"refused\s+X\.509 %s \(from %s\): expired on" % (fp, re.escape(E.name)), t) is not None,
          "keys (text): refused, from where, and why", t)
    p = filter_run(c, OLD)
    check(p.returncode == 0 and not is_smime(p.stdout) and MARKER.encode() in p.stdout,
          "filter: no usable certificate → unchanged (opportunistic)", p.stderr.decode())


def test_two():
    c = conf(base_directory())
    p, a = keys_json(c, TWO)
    long_fp, short_fp = (ldaptest.fingerprint(E.certs[k][0]) for k in ("two-long", "two-short"))
    check(a and a["x509"] and a["x509"]["fingerprint"] == long_fp, "two certificates: the one valid longer wins",
          p.stdout.decode())
    r = [r for r in (a or {}).get("refused", []) if r["id"] == short_fp]
    check(r and "valid longer" in r[0]["reason"], "the other is refused as valid shorter", p.stdout.decode())
    p = filter_run(c, TWO)
    check(p.returncode == 0 and cms_open(p.stdout, "two-long") == SHOWN and cms_open(p.stdout, "two-short") is None,
          "filter: encrypted to the longer-valid certificate only", p.stderr.decode())


def test_metacharacters():
    c = conf(base_directory(cache_ttl=0, negative_ttl=0))
    before = len(E.slapd.log_text())
    for addr, escaped in (("*@dir.test", r"\2A@dir.test"), ("meta*@dir.test", r"meta\2A@dir.test"),
                          ('"meta)(mail=*"@dir.test', None), ('"a\\\\b"@dir.test', None), ("*", None)):
        p, a = keys_json(c, addr)
        if p.returncode == 64:
            check(True, "keys %s: not an address, never searched" % addr)
            continue
        check(p.returncode == 1 and a and a["x509"] is None and not a["refused"],
              "keys %s: matches nothing (no wildcard)" % addr, p.stdout.decode() + p.stderr.decode())
        if escaped:
            log = E.slapd.log_text()[before:]
            check(('filter="(mail=%s)"' % escaped) in log, "slapd saw the escaped filter (mail=%s)" % escaped,
                  "\n".join(l for l in log.splitlines() if "filter=" in l))
    log = E.slapd.log_text()[before:]
    check(not re.search(r'filter="\(mail=[^"]*[^\\]\*', log) and "nentries=1" not in log,
          "no search went out with a bare * and none found an entry",
          "\n".join(l for l in log.splitlines() if "filter=" in l or "nentries" in l))


def test_tls():
    tls_ca = E.tls_ca.cert
    for label, d in (("StartTLS", base_directory(starttls="true", ca_file=tls_ca,
                                                 cache_file=os.path.join(E.work, "cache", "starttls.cache"))),
                     ("ldaps://", base_directory(uri=E.slapd.ldaps_uri, ca_file=tls_ca,
                                                 cache_file=os.path.join(E.work, "cache", "ldaps.cache")))):
        p, a = keys_json(conf(d), DAVE)
        check(p.returncode == 0 and a and a["x509"], "%s with the test CA: found" % label, p.stderr.decode())
    d = base_directory(starttls="true", ca_file=E.other_ca.cert, cache_file=os.path.join(E.work, "cache", "bad.cache"))
    c = conf(d)
    p = mg("keys", "-c", c, DAVE)
    check(p.returncode == 75 and E.name in p.stderr.decode() and "StartTLS" in p.stderr.decode(),
          "StartTLS with a server certificate from another CA: refused (75, naming the directory)", p.stderr.decode())
    p = filter_run(c, DAVE)
    check(p.returncode == 75 and status_of(p).startswith("4.7.0") and E.name in status_of(p),
          "filter: 4.7.0 naming the directory, never clear text", p.stdout.decode() + p.stderr.decode())


def test_bind():
    pw = os.path.join(E.work, "bind.pw")
    with open(pw, "w") as f:
        f.write(ldaptest.ROOT_PW + "\n")
    os.chmod(pw, 0o600)
    d = base_directory(bind_dn=ldaptest.ROOT_DN, bind_password_file=pw,
                       cache_file=os.path.join(E.work, "cache", "bind.cache"))
    p, a = keys_json(conf(d), DAVE)
    check(p.returncode == 0 and a and a["x509"], "simple bind with the right password: found", p.stderr.decode())
    bad = os.path.join(E.work, "bad.pw")
    with open(bad, "w") as f:
        f.write("wrong\n")
    os.chmod(bad, 0o600)
    d = base_directory(bind_dn=ldaptest.ROOT_DN, bind_password_file=bad,
                       cache_file=os.path.join(E.work, "cache", "badbind.cache"))
    c = conf(d)
    p = mg("keys", "-c", c, DAVE)
    err = p.stderr.decode()
    check(p.returncode == 75 and E.name in err and "Invalid credentials" in err,
          "wrong bind password: transient (75), naming the directory", err)
    p = filter_run(c, DAVE)
    out = status_of(p)
    check(p.returncode == 75 and out.startswith("4.7.0") and E.name in out and MARKER not in out,
          "filter: 4.7.0 naming the directory", out + p.stderr.decode())
    os.chmod(bad, 0o644)
    p = filter_run(c, DAVE)
    out = p.stdout.decode() + p.stderr.decode()
    check(p.returncode == 75 and bad in out and "0600" in out, "a bind-password-file readable by others: named", out)


def test_stale():
    cache = os.path.join(E.work, "cache", "stale.cache")
    c = conf(base_directory(cache_ttl=1, negative_ttl=1, stale_ttl=5, cache_file=cache))
    p = filter_run(c, DAVE)
    check(p.returncode == 0 and cms_open(p.stdout, DAVE) == SHOWN, "stale: first run asks the directory")
    t0 = time.monotonic()
    E.slapd.stop()
    time.sleep(1.5)
    p = filter_run(c, DAVE)
    check(p.returncode == 0 and cms_open(p.stdout, DAVE) == SHOWN,
          "slapd stopped, past cache-ttl: the cached answer is used (S/MIME)", p.stdout[:300] + p.stderr)
    p = filter_run(c, "nobody@dir.test")
    out = status_of(p)
    check(p.returncode == 75 and out.startswith("4.7.0") and E.name in out,
          "slapd stopped, nothing cached: 4.7.0 naming the directory (not clear text)", out + p.stderr.decode())
    time.sleep(max(0, 5.5 - (time.monotonic() - t0)))
    p = filter_run(c, DAVE)
    out = status_of(p)
    check(p.returncode == 75 and out.startswith("4.7.0") and E.name in out and MARKER not in out,
          "past stale-ttl: 4.7.0 naming the directory", out + p.stderr.decode())
    E.slapd.start()
    p = filter_run(c, DAVE)
    check(p.returncode == 0 and cms_open(p.stdout, DAVE) == SHOWN, "slapd back: answered again", p.stderr.decode())


def test_on_error():
    """on-error = pass with a directory that cannot answer (a refused bind): an opportunistic recipient gets the
    message as it came and the log names the directory; a required recipient of a clear message is still deferred"""
    bad = os.path.join(E.work, "onerror.pw")
    with open(bad, "w") as f:
        f.write("wrong\n")
    os.chmod(bad, 0o600)
    log = os.path.join(E.work, "onerror.log")
    path = conf(base_directory(bind_dn=ldaptest.ROOT_DN, bind_password_file=bad,
                               cache_file=os.path.join(E.work, "cache", "onerror.cache")), "onerror.conf")
    with open(path) as f:
        text = f.read().replace("log = none", "log = json:" + log)
    text += "\n[default]\non-error = pass\n\n[address req@dir.test]\nencrypt = required\n"
    with open(path, "w") as f:
        f.write(text)
    msg = message(DAVE)
    p = mg("filter", "-c", path, "--stdout", "-f", SENDER, "--", DAVE, inp=msg)
    check(p.returncode == 0 and p.stdout == msg, "on-error = pass, directory refusing the bind: the message as it came",
          status_of(p))
    recs = [json.loads(l) for l in open(log)] if os.path.exists(log) else []
    group = [r for r in recs if r.get("record") == "group" and r.get("recipients") == [DAVE]]
    texts = " | ".join(str(r.get("text")) for r in group)
    check(any(r.get("form") == "keep" and E.name in str(r.get("text")) and "Invalid credentials" in str(r.get("text"))
              for r in group), "the log record says it went as it came, naming the directory and why", texts or recs)
    p = filter_run(path, "req@dir.test")
    out = status_of(p)
    check(p.returncode == 75 and out.startswith("4.7.0") and E.name in out and MARKER not in out,
          "on-error = pass but encrypt = required (a clear message): still 75 / 4.7.0 naming the directory", out)
    p = mg("filter", "-c", path, "--stdout", "-f", SENDER, "--", DAVE, "req@dir.test", inp=message(DAVE))
    out = status_of(p)
    check(p.returncode == 75 and out.startswith("4.7.0") and MARKER not in out,
          "with both recipients, the pipe (one exit status) defers the message", out)
    with open(path, "w") as f:
        f.write(text.replace("on-error = pass", "on-error = defer"))
    p = filter_run(path, DAVE)
    check(p.returncode == 75 and status_of(p).startswith("4.7.0"), "on-error = defer: 4.7.0 as before", status_of(p))


def pgp_conf(name, validity=None, encrypt=None, attribute="pgpKey"):
    """a configuration with a GnuPG home of the gateway's own (empty: every key comes from the directory)"""
    home = os.path.join(E.work, "gw-gnupg")
    os.makedirs(home, mode=0o700, exist_ok=True)
    d = base_directory(cache_file=os.path.join(E.work, "cache", name + ".cache"))
    if attribute:
        d["openpgp-attributes"] = attribute
    if validity:
        d["openpgp-validity"] = validity
    path = conf(d, name + ".conf")
    with open(path) as f:
        text = f.read().replace("gnupg-home = none", "gnupg-home = " + home +
                                ("\nopenpgp-encrypt = " + encrypt if encrypt else ""))
    with open(path, "w") as f:
        f.write(text)
    return path, home


def gpg_open(data, who):
    """what `gpg --decrypt` in @who's own home makes of @data (a PGP/MIME message): (exit, plaintext)"""
    m = re.search(rb"-----BEGIN PGP MESSAGE-----.*?-----END PGP MESSAGE-----", data, re.S)
    if m is None:
        return None, b""
    p = subprocess.run(["gpg", "--homedir", E.pgp[who][0], "--batch", "--no-tty", "--decrypt"], input=m.group(0),
                       capture_output=True)
    return p.returncode, p.stdout


def test_openpgp():
    """openpgp-attributes: a key published in the directory is judged like one of the GnuPG home and encrypted to
    without being imported; under trust-model gnupg only with openpgp-validity = full"""
    fpr = E.pgp[CAROL][0:2][1]
    c, home = pgp_conf("pgp-off", attribute=None)
    p, a = keys_json(c, CAROL)
    check(p.returncode == 1 and a and a["openpgp"] is None and not a["refused"],
          "without openpgp-attributes the directory's OpenPGP keys are not asked for", p.stdout.decode())
    c, home = pgp_conf("pgp-unknown")
    p, a = keys_json(c, CAROL)
    r = [r for r in (a or {}).get("refused", []) if r["id"] == fpr]
    check(p.returncode == 1 and a and a["openpgp"] is None and r and r[0].get("source") == E.name and
          "validity unknown, trust-model gnupg needs full" in r[0]["reason"],
          "trust-model gnupg: a directory key is of unknown validity, refused with its source", p.stdout.decode())
    c, home = pgp_conf("pgp-full", validity="full")
    p, a = keys_json(c, CAROL)
    check(p.returncode == 0 and a and a["openpgp"] and a["openpgp"]["fingerprint"] == fpr and
          a["openpgp"].get("source") == E.name, "openpgp-validity = full: the directory's key is chosen, source "
          + E.name, p.stdout.decode() + p.stderr.decode())
    t = mg("keys", "-c", c, CAROL).stdout.decode()
    check(fpr in t and ("from " + E.name) in t, "keys (text): the OpenPGP key and where it came from", t)
    src = os.path.join(E.work, "pgp-msg.eml")
    with open(src, "wb") as f:
        f.write(message(CAROL))
    for encrypt in ("gpg", "rnp"):
        c, home = pgp_conf("pgp-" + encrypt, validity="full", encrypt=encrypt)
        p = mg("convert", "-c", c, "--to", "pgp-mime", "-r", CAROL, src)
        rc, plain = gpg_open(p.stdout, CAROL)
        check(p.returncode == 0 and b"multipart/encrypted" in p.stdout and rc == 0 and MARKER.encode() in plain,
              "convert --to pgp-mime (openpgp-encrypt = %s): gpg --decrypt with the recipient's secret key opens it"
              % encrypt, p.stderr.decode() + (plain or b"").decode(errors="replace")[:300])
        # over spool-threshold the engine takes the streaming encryption: the directory's key must reach it too
        big = os.path.join(E.work, "pgp-big-%s.eml" % encrypt)
        filler = base64.encodebytes(os.urandom(3 * 1024 * 1024))
        with open(big, "wb") as f:
            f.write(message(CAROL).rstrip(b"\n") + b"\n" + filler)
        p = mg("convert", "-c", c, "--to", "pgp-mime", "-r", CAROL, big)
        rc, plain = gpg_open(p.stdout, CAROL)
        whole = filler in plain.replace(b"\r\n", b"\n")
        check(p.returncode == 0 and rc == 0 and MARKER.encode() in plain and whole,
              "a 4 MB message (over spool-threshold) to the directory's key (openpgp-encrypt = %s): it opens, "
              "every byte there" % encrypt, p.stderr.decode())
    p = filter_run(c, CAROL)
    rc, plain = gpg_open(p.stdout, CAROL)
    check(p.returncode == 0 and rc == 0 and MARKER.encode() in plain, "filter (form = auto): PGP/MIME to the "
          "directory's key, and it opens", p.stderr.decode())
    listed = subprocess.run(["gpg", "--homedir", home, "--batch", "--with-colons", "--list-keys"],
                            capture_output=True).stdout.decode()
    check(fpr not in listed and "pub:" not in listed, "the key was never imported into the gateway's GnuPG home",
          listed)
    late = E.pgp[LATE][1]
    p, a = keys_json(c, LATE)
    r = [r for r in (a or {}).get("refused", []) if r["id"] == late]
    check(p.returncode == 1 and a and a["openpgp"] is None and r and "expired on 2020-12-31" in r[0]["reason"]
          and r[0].get("source") == E.name, "an expired key in the directory is refused as expired, with its source",
          p.stdout.decode())
    p = mg("convert", "-c", c, "--to", "pgp-mime", "-r", LATE, src)
    check(p.returncode != 0 and "-----BEGIN PGP MESSAGE-----" not in p.stdout.decode(errors="replace") and
          LATE in p.stderr.decode(), "convert to the expired key: refused (no usable key), nothing encrypted",
          p.stderr.decode())


def lmtp_send(port, to):
    """the LMTP reply for @to: (code, text)"""
    with smtplib.LMTP("127.0.0.1", port, timeout=60) as c:
        c.ehlo("client.test")
        try:
            refused = c.sendmail(SENDER, [to], message(to))
        except smtplib.SMTPDataError as e:
            return e.smtp_code, e.smtp_error.decode(errors="replace")
        except smtplib.SMTPRecipientsRefused as e:
            code, text = e.recipients[to]
            return code, text.decode(errors="replace")
        if to in refused:
            return refused[to][0], refused[to][1].decode(errors="replace")
        return 250, ""


def test_serve():
    """serve keeps the directory's answers in memory (no cache file), uses them while slapd is away up to
    stale-ttl, then answers 4.7.0 naming the directory"""
    capture_dir = os.path.join(E.work, "capture")
    os.makedirs(capture_dir)
    cap = subprocess.Popen([sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                         "smtp-capture.py"), "--listen", "inet:127.0.0.1:0", "--dir",
                            capture_dir], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    serve = None
    try:
        line = cap.stdout.readline().decode()
        reinject = int(line.split()[1])
        port = ldaptest.free_port()
        cache = os.path.join(E.work, "cache", "serve.cache")
        path = conf(base_directory(cache_ttl=1, negative_ttl=1, stale_ttl=8, timeout=1, cache_file=cache), "serve.conf")
        slog = os.path.join(E.work, "serve.log")
        with open(path) as f:
            text = f.read().replace("log = none", "log = json:" + slog)
        with open(path, "w") as f:
            f.write(text + "\n[serve]\nlisten = inet:127.0.0.1:%d\nreinject = smtp:127.0.0.1:%d\n" % (port, reinject))
        err = open(os.path.join(E.work, "serve.stderr"), "wb")
        serve = subprocess.Popen([MIMEGATE, "serve", "-c", path], stdin=subprocess.DEVNULL, stdout=err, stderr=err)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)

        def delivered():
            files = sorted((f for f in os.listdir(capture_dir) if f.startswith("msg-")),
                           key=lambda f: int(re.findall(r"\d+", f)[0]))
            return [open(os.path.join(capture_dir, f), "rb").read() for f in files]

        def reloaded():
            if not os.path.exists(slog):
                return 0
            return sum(1 for l in open(slog) if '"reloaded"' in l)

        code, text = lmtp_send(port, DAVE)
        got = delivered()
        check(code == 250 and got and cms_open(got[-1], DAVE) == SHOWN,
              "serve: S/MIME to the directory's certificate, and it opens", "%s %s" % (code, text))
        code, text = lmtp_send(port, "none@dir.test")  # a not-found answer, cached too
        got = delivered()
        check(code == 250 and len(got) == 2 and not is_smime(got[-1]) and MARKER.encode() in got[-1],
              "serve: no certificate in the directory → as it came", "%s %s" % (code, text))
        t0 = time.monotonic()
        E.slapd.stop()
        time.sleep(1.5)
        code, text = lmtp_send(port, DAVE)
        got = delivered()
        check(code == 250 and len(got) == 3 and cms_open(got[-1], DAVE) == SHOWN,
              "serve, slapd stopped, past cache-ttl: the answer kept in memory is used", "%s %s" % (code, text))
        check(not os.path.exists(cache), "serve writes no cache file (memory only)")
        before = reloaded()
        serve.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while reloaded() == before and time.monotonic() < deadline:
            time.sleep(0.05)
        check(reloaded() == before + 1, "serve: SIGHUP reloads (the log says so)")
        code, text = lmtp_send(port, DAVE)
        got = delivered()
        check(code == 250 and len(got) == 4 and cms_open(got[-1], DAVE) == SHOWN,
              "serve, reloaded while slapd is stopped: the new generation took over the cached certificate",
              "%s %s" % (code, text))
        code, text = lmtp_send(port, "none@dir.test")
        got = delivered()
        check(code == 250 and len(got) == 5 and not is_smime(got[-1]) and MARKER.encode() in got[-1],
              "... and the cached not-found answer (as it came, not 4.7.0)", "%s %s" % (code, text))
        code, text = lmtp_send(port, "nobody@dir.test")
        check(code == 451 and text.startswith("4.7.0") and E.name in text,
              "serve, slapd stopped, nothing cached: 451 4.7.0 naming the directory", "%s %s" % (code, text))
        time.sleep(max(0, 8.5 - (time.monotonic() - t0)))
        code, text = lmtp_send(port, DAVE)
        check(code == 451 and text.startswith("4.7.0") and E.name in text and len(delivered()) == 5,
              "serve, past stale-ttl: 451 4.7.0 naming the directory, nothing delivered", "%s %s" % (code, text))
        E.slapd.start()
        time.sleep(1.1)  # after a failure the directory is not asked again for `timeout` seconds
        code, text = lmtp_send(port, DAVE)
        got = delivered()
        check(code == 250 and len(got) == 6 and cms_open(got[-1], DAVE) == SHOWN, "serve, slapd back: answered again",
              "%s %s" % (code, text))
    finally:
        if serve is not None and serve.poll() is None:
            serve.send_signal(signal.SIGTERM)
            try:
                rc = serve.wait(60)
            except subprocess.TimeoutExpired:
                serve.kill()
                rc = serve.wait()
            check(rc == 0, "serve exits 0 after SIGTERM", open(os.path.join(E.work, "serve.stderr")).read())
        cap.stdin.close()
        try:
            cap.wait(10)
        except subprocess.TimeoutExpired:
            cap.kill()
            cap.wait()
        if E.slapd.proc is None:
            E.slapd.start()


def test_concurrent():
    """pipe runs at the same time share the cache file: each merges what the others wrote, none is lost"""
    cache = os.path.join(E.work, "cache", "concurrent.cache")
    c = conf(base_directory(cache_file=cache), "concurrent.conf")
    addrs = [DAVE, TWO, OLD, "meta@dir.test"] + ["nobody%d@dir.test" % i for i in range(4)]
    procs = [subprocess.Popen([MIMEGATE, "keys", "-c", c, a], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
             for a in addrs]
    rcs = [p.wait(60) for p in procs]
    check(all(rc in (0, 1) for rc in rcs), "8 concurrent runs all answered", rcs)
    text = open(cache).read() if os.path.exists(cache) else ""
    lines = text.splitlines()
    keys = sorted(l.split("\t")[0].replace("%40", "@") for l in lines[2:-1])
    check(lines[:1] == ["mimegate-directory-cache v1"] and lines[-1:] == ["end"] and keys == sorted(addrs),
          "the cache file holds every run's answer, complete", text[:2000])
    leftovers = [f for f in os.listdir(os.path.dirname(cache)) if f.endswith(".tmp")]
    check(not leftovers, "no temporary file is left behind", leftovers)


def test_unconfigured():
    path = os.path.join(E.work, "plain.conf")
    with open(path, "w") as f:
        f.write("[gateway]\ngnupg-home = none\nx509-store = %s\nlog = none\n" % E.store)
    p, a = keys_json(path, DAVE)
    check(p.returncode == 1 and a and a["x509"] is None, "without [directory]: the directory is not asked",
          p.stdout.decode())
    p = mg("keys", "-c", conf({"uri": "http://x", "base": "dc=test"}, "bad.conf"), DAVE)
    check(p.returncode == 78 and "[directory] uri" in p.stderr.decode(), "a bad uri is a configuration error",
          p.stderr.decode())
    p = mg("keys", "-c", conf(base_directory(openpgp_attributes="pgpKey", openpgp_validity="maybe"), "bad2.conf"), DAVE)
    check(p.returncode == 78 and "[directory] openpgp-validity" in p.stderr.decode(),
          "openpgp-validity other than unknown or full is a configuration error", p.stderr.decode())


def main():
    if not MIMEGATE or not os.access(MIMEGATE, os.X_OK):
        skip("no mimegate binary")
    why = ldaptest.available()
    if why:
        skip(why)
    try:
        setup()
        for t in (test_found, test_expired, test_two, test_metacharacters, test_tls, test_bind, test_on_error, test_openpgp, test_unconfigured,
                  test_concurrent, test_stale, test_serve):
            try:
                t()
            except Exception:
                check(False, t.__name__ + " raised", traceback.format_exc())
    finally:
        if getattr(E, "slapd", None) is not None:
            E.slapd.stop()
    print("1..%d" % RESULTS["n"])
    if RESULTS["failed"]:
        if os.environ.get("MG_KEEP") is None:
            shutil.rmtree(E.work, ignore_errors=True)
        else:
            print("# kept " + E.work)
        return 1
    shutil.rmtree(E.work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
