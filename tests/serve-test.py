#!/usr/bin/env python3
"""serve-test.py MIMEGATE - `mimegate serve` (issue 12) against real components, reported as TAP.

The client side is Python's smtplib.LMTP/SMTP and raw sockets (for the bad inputs and LMTP's per-recipient replies);
the reinjection target is tests/smtp-capture.py (exact bytes, announced extensions, refusals, slowness) or Postfix's
smtp-sink; keys live in a temporary GnuPG home (real gpg) and a temporary openssl CA, and every encrypted result is
opened with gpg or openssl cms, its recipients read with gpg --list-packets or openssl cms -cmsout -print.

Each section starts its own `mimegate serve` on a free port of 127.0.0.1, with its own configuration, spool
directory (TMPDIR and spool-dir) and JSON log, and stops it with SIGTERM: it must exit 0 (under the sanitizer build a
leak at exit makes that fail). Every section also checks that the spool directory is empty and that the log never
holds a body's marker text. Every process started here is killed on every path.

Exit status: 0 when every check passed, 1 otherwise; 77 (skipped) when gpg, openssl or the binary is missing."""
import email
import email.policy
import glob
import json
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
import threading
import time
import traceback

MIMEGATE = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("MIMEGATE_BIN", "")
MIMEGATE = os.path.abspath(MIMEGATE) if MIMEGATE else ""  # serve runs in its own directory
HERE = os.path.dirname(os.path.abspath(__file__))
CAPTURE = os.path.join(HERE, "smtp-capture.py")
MARKER = "BODYMARKER-q7Zx3 the clear text of this message"
SENDER = "alice@example.org"
BOB = "bob@pgp.test"  # has an OpenPGP key
CAROL = "carol@smime.test"  # has an X.509 certificate
NOKEY = "nokey@partner.test"  # encrypt = required, no key
PLAIN = "plain@example.org"  # no key, opportunistic

RESULTS = {"n": 0, "failed": []}
PROCS = []  # every process started, killed at the end if still alive
WORK = None
KEYS = {}


def check(cond, what, detail=None):
    RESULTS["n"] += 1
    print("%s %d - %s" % ("ok" if cond else "not ok", RESULTS["n"], what), flush=True)
    if not cond:
        RESULTS["failed"].append(what)
        if detail is not None:
            for line in str(detail).splitlines()[:40]:
                print("#   " + line, flush=True)
    return bool(cond)


def note(text):
    for line in str(text).splitlines():
        print("# " + line, flush=True)


def skip(why):
    print("1..0 # SKIP " + why)  # TAP's skip: the exit status stays 0, as meson's TAP reader wants
    sys.exit(0)


def run(argv, inp=None, check_rc=True, env=None):
    p = subprocess.run(argv, input=inp, capture_output=True, env=env)
    if check_rc and p.returncode != 0:
        raise RuntimeError("%s exited %d: %s" % (" ".join(argv[:4]), p.returncode, p.stderr.decode(errors="replace")))
    return p


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(pred, timeout, step=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return pred()


# ---------------------------------------------------------------------------------------------------------------
# keys: a GnuPG home and a CA, as tests/bench/bench.py make_keys()


def gpg(home, *args, inp=None):
    return run(["gpg", "--homedir", home, "--batch", "--yes", "--pinentry-mode", "loopback", "--passphrase", "",
                "--trust-model", "always"] + list(args), inp=inp).stdout


def make_keys():
    home = os.path.join(WORK, "g")
    os.makedirs(home, mode=0o700)
    with open(os.path.join(home, "gpg-agent.conf"), "w") as f:
        f.write("allow-loopback-pinentry\n")
    gpg(home, "--quick-gen-key", BOB, "ed25519", "sign", "never")
    fpr = [l.split(":")[9] for l in gpg(home, "--with-colons", "-k", BOB).decode().splitlines()
           if l.startswith("fpr:")][0]
    gpg(home, "--quick-add-key", fpr, "cv25519", "encr", "never")
    gpg(home, "--check-trustdb")
    subs = [l.split(":")[4] for l in gpg(home, "--with-colons", "-k", BOB).decode().splitlines()
            if l.startswith("sub:")]
    KEYS["ghome"] = home
    KEYS["bob_subkey"] = subs[0].upper()
    x = os.path.join(WORK, "x")
    for sub in ("ca", "certs", "private"):
        os.makedirs(os.path.join(x, sub), mode=0o700)
    ca = os.path.join(WORK, "ca")
    os.makedirs(ca)
    run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca + "/root.key", "-out",
         x + "/ca/root.pem", "-days", "30", "-subj", "/CN=serve test root"])
    with open(ca + "/ext", "w") as f:
        f.write("subjectAltName=email:%s\nkeyUsage=digitalSignature,keyEncipherment\n"
                "extendedKeyUsage=emailProtection\n" % CAROL)
    run(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", ca + "/carol.key", "-out", ca + "/carol.csr",
         "-subj", "/CN=carol"])
    run(["openssl", "x509", "-req", "-in", ca + "/carol.csr", "-CA", x + "/ca/root.pem", "-CAkey", ca + "/root.key",
         "-CAcreateserial", "-out", x + "/certs/carol.pem", "-days", "30", "-extfile", ca + "/ext"])
    os.chmod(ca + "/carol.key", 0o600)
    serial = run(["openssl", "x509", "-in", x + "/certs/carol.pem", "-noout", "-serial"]).stdout.decode()
    KEYS["x509"] = x
    KEYS["carol_key"] = ca + "/carol.key"
    KEYS["carol_cert"] = x + "/certs/carol.pem"
    KEYS["carol_serial"] = int(serial.strip().split("=", 1)[1], 16)


# ---------------------------------------------------------------------------------------------------------------
# messages


def message(subject, to=(BOB, PLAIN), body=None, extra=""):
    body = body if body is not None else "Hello,\n\n%s (%s).\n.a line that starts with a dot\n\n-- \nAlice\n" % (
        MARKER, subject)
    head = ("From: Alice <%s>\nTo: %s\nSubject: %s\nMessage-ID: <%s@example.org>\nDate: Mon, 30 Nov 2026 10:00:00 "
            "+0000\nMIME-Version: 1.0\n%sContent-Type: text/plain; charset=us-ascii\n\n" %
            (SENDER, ", ".join("<%s>" % t for t in to), subject, re.sub(r"[^A-Za-z0-9]", "-", subject), extra))
    return (head + body).encode()


def wire(msg):
    """LF message → CRLF, dot-stuffed, with the final dot"""
    lines = msg.replace(b"\r\n", b"\n").split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return b"".join((b"." + l if l.startswith(b".") else l) + b"\r\n" for l in lines) + b".\r\n"


def crlf(msg):
    """the message with CRLF line ends, for smtplib (which sends bytes as they are)"""
    return lf(msg).replace(b"\n", b"\r\n")


def lf(data):
    return data.replace(b"\r\n", b"\n")


def body_of(msg):
    return lf(msg).split(b"\n\n", 1)[1]


def shown_body(msg):
    """what an encrypted copy's payload holds under header-protection = obscure (the default): the RFC 9788 legacy
    display of the obscured Subject, a blank line, then the original body byte for byte"""
    return b"Subject: " + header(msg, "Subject").encode() + b"\n\n" + body_of(msg)


def header(msg, name):
    m = email.message_from_bytes(lf(msg), policy=email.policy.compat32)
    return m.get(name)


# ---------------------------------------------------------------------------------------------------------------
# crypto checks with the independent tools


def pgp_part(msg):
    """the armored OpenPGP message of a PGP/MIME message (its second part)"""
    m = email.message_from_bytes(lf(msg), policy=email.policy.compat32)
    if m.get_content_type() != "multipart/encrypted":
        return None
    parts = m.get_payload()
    return parts[1].get_payload(decode=False).encode() if len(parts) == 2 else None


def gpg_decrypt(armored):
    p = subprocess.run(["gpg", "--homedir", KEYS["ghome"], "--batch", "-q", "--pinentry-mode", "loopback",
                        "--passphrase", "", "-d"], input=armored, capture_output=True)
    return p.stdout if p.returncode == 0 else None


def gpg_keyids(armored):
    p = subprocess.run(["gpg", "--homedir", KEYS["ghome"], "--batch", "--list-packets"], input=armored,
                       capture_output=True)
    found = re.findall(rb"pubkey enc packet:[^\n]*keyid ([0-9A-Fa-f]{16})", p.stdout + p.stderr)
    return sorted(set(k.decode().upper() for k in found))


def cms_decrypt(msg):
    p = subprocess.run(["openssl", "cms", "-decrypt", "-inkey", KEYS["carol_key"], "-recip", KEYS["carol_cert"]],
                       input=lf(msg), capture_output=True)
    return p.stdout if p.returncode == 0 else None


def cms_serials(msg):
    p = subprocess.run(["openssl", "cms", "-cmsout", "-print", "-inform", "SMIME"], input=lf(msg),
                       capture_output=True)
    text = p.stdout.decode(errors="replace")
    # issuerAndSerialNumber: ... serialNumber: 0x1234... (or decimal)
    out = []
    for v in re.findall(r"serialNumber:\s*(0x[0-9A-Fa-f]+|[0-9]+)", text):
        out.append(int(v, 16) if v.startswith("0x") else int(v))
    return out


# ---------------------------------------------------------------------------------------------------------------
# processes


class Capture:
    """tests/smtp-capture.py as the reinjection server"""

    def __init__(self, name, *args, port=0):
        self.dir = os.path.join(WORK, name)
        os.makedirs(self.dir, exist_ok=True)
        self.proc = subprocess.Popen([sys.executable, CAPTURE, "--listen", "inet:127.0.0.1:%d" % port, "--dir",
                                      self.dir] + list(args), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        PROCS.append(self.proc)
        line = self.proc.stdout.readline().decode()
        if not line.startswith("ready "):
            raise RuntimeError("smtp-capture did not start: %r" % line)
        self.port = int(line.split()[1])

    def stop(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def messages(self):
        files = sorted(glob.glob(os.path.join(self.dir, "msg-*.eml")), key=lambda p: int(re.findall(r"\d+", p)[-1]))
        return [open(p, "rb").read() for p in files]

    def raw(self):
        files = sorted(glob.glob(os.path.join(self.dir, "conn-*.raw")), key=lambda p: int(re.findall(r"\d+", p)[-1]))
        return [open(p, "rb").read() for p in files]

    def transactions(self):
        """every MAIL the server was sent, in order per connection: {mail, rcpts, xforward, body (None: no final
        dot), rset}"""
        out = []
        for raw in self.raw():
            pos, xf, cur = 0, [], None
            while True:
                nl = raw.find(b"\n", pos)
                if nl < 0:
                    break
                line = raw[pos:nl + 1]
                pos = nl + 1
                verb = line.split(b" ", 1)[0].strip().upper()
                text = line.rstrip(b"\r\n").decode("utf-8", "replace")
                if verb == b"XFORWARD":
                    xf.append(text)
                elif verb == b"MAIL":
                    cur = {"mail": text, "rcpts": [], "xforward": xf, "body": None, "rset": False}
                    xf = []
                    out.append(cur)
                elif verb == b"RCPT" and cur is not None:
                    cur["rcpts"].append(text.split("<", 1)[-1].split(">", 1)[0])
                elif verb == b"RSET" and cur is not None:
                    cur["rset"] = True
                    cur = None
                elif verb == b"DATA" and cur is not None:
                    end = raw.find(b"\r\n.\r\n", pos - 2)
                    if end < 0:
                        break
                    data = raw[pos:end + 2]
                    cur["body"] = b"".join(l[1:] if l.startswith(b".") else l for l in data.splitlines(True))
                    pos = end + 5
                    cur = None
        return out

    def delivered(self):
        return [t for t in self.transactions() if t["body"] is not None]


class Sink:
    """Postfix's smtp-sink, every message dumped into a file of its own"""

    def __init__(self, name):
        self.dir = os.path.join(WORK, name)
        os.makedirs(self.dir)
        os.chmod(self.dir, 0o777)
        self.port = free_port()
        argv = ["smtp-sink"] + (["-u", "nobody"] if os.geteuid() == 0 else []) + [
            "-d", self.dir + "/%M.", "127.0.0.1:%d" % self.port, "100"]
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        PROCS.append(self.proc)

        def up():
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return True
            except OSError:
                return False

        if not wait_for(up, 10):
            raise RuntimeError("smtp-sink did not start")

    def files(self):
        return [open(p, "rb").read() for p in sorted(glob.glob(self.dir + "/*"))]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Serve:
    """one `mimegate serve` with its own configuration, spool and log"""

    def __init__(self, name, reinject_port, gateway="", serve="", policy=None, protocol="lmtp", gnupg_home=None,
                 listen=None):
        self.name = name
        self.dir = os.path.join(WORK, "serve-" + name)
        os.makedirs(self.dir)
        self.spool = os.path.join(self.dir, "spool")
        os.makedirs(self.spool, mode=0o700)
        self.log = os.path.join(self.dir, "log.json")
        self.conf = os.path.join(self.dir, "mimegate.conf")
        self.port = free_port()
        listen = listen or "inet:127.0.0.1:%d" % self.port
        if policy is None:
            policy = "[domain partner.test]\nencrypt = required\n"
        self.text = ("[gateway]\ngnupg-home = %s\nx509-store = %s\ntrust-model = always\nauthserv-id = gw.test\n"
                     "log = json:%s\nspool-dir = %s\n%s\n[serve]\nlisten = %s\n"
                     "reinject = smtp:127.0.0.1:%d\nprotocol = %s\n%s\n%s" %
                     (gnupg_home or KEYS["ghome"], KEYS["x509"], self.log, self.spool,
                      ("" if "timeout" in gateway else "timeout = 10\n") + gateway, listen,
                      reinject_port, protocol, serve, policy))
        self.write_conf(self.text)
        env = dict(os.environ, TMPDIR=self.spool)
        self.stderr_path = os.path.join(self.dir, "stderr")
        self.stderr = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen([MIMEGATE, "serve", "-c", self.conf], stdin=subprocess.DEVNULL,
                                     stdout=self.stderr, stderr=self.stderr, env=env, cwd=self.dir)
        PROCS.append(self.proc)
        if not wait_for(lambda: self.records("service", "started") or self.proc.poll() is not None, 60):
            raise RuntimeError("serve %s did not start" % name)
        if self.proc.poll() is not None:
            raise RuntimeError("serve %s exited %d: %s" % (name, self.proc.returncode, self.errors()))

    def write_conf(self, text):
        tmp = self.conf + ".new"
        with open(tmp, "w") as f:
            f.write(text)
        os.rename(tmp, self.conf)

    def records(self, record=None, outcome=None):
        try:
            lines = open(self.log, encoding="utf-8").read().splitlines()
        except FileNotFoundError:
            return []
        out = []
        for l in lines:
            r = json.loads(l)
            if (record is None or r["record"] == record) and (outcome is None or r["outcome"] == outcome):
                out.append(r)
        return out

    def errors(self):
        self.stderr.flush()
        return open(self.stderr_path, "rb").read().decode(errors="replace")

    def stop(self, expect_clean=True):
        """SIGTERM: serve must exit 0 (with the sanitizers: no leak); then the spool and the log are checked"""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                check(False, "%s: serve exits after SIGTERM" % self.name, "still running after 60 s; killed")
                return
        if expect_clean:
            errs = self.errors()
            check(self.proc.returncode == 0 and "Sanitizer" not in errs and "CRITICAL" not in errs,
                  "%s: serve exited 0 after SIGTERM, nothing on stderr from the sanitizers or GLib" % self.name,
                  "exit %s\n%s" % (self.proc.returncode, errs[-3000:]))
        left = os.listdir(self.spool)
        check(left == [], "%s: the spool directory (TMPDIR, spool-dir) is empty" % self.name, left)
        log = open(self.log, "rb").read() if os.path.exists(self.log) else b""
        check(MARKER.encode() not in log and MARKER.split()[0].encode() not in log,
              "%s: the JSON log never holds a message's body text" % self.name)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class Client:
    """a raw LMTP/SMTP client: bytes out, whole replies in"""

    def __init__(self, port, timeout=30, host="127.0.0.1"):
        if isinstance(port, str):  # a unix socket
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(timeout)
            self.sock.connect(port)
        else:
            self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""

    def send(self, data):
        self.sock.sendall(data if isinstance(data, bytes) else data.encode())

    def line(self):
        while b"\n" not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError("connection closed")
            self.buf += data
        line, _, self.buf = self.buf.partition(b"\n")
        return line.rstrip(b"\r").decode("utf-8", "replace")

    def reply(self):
        """one (multi-line) reply: its lines"""
        lines = []
        while True:
            l = self.line()
            lines.append(l)
            if len(l) < 4 or l[3] != "-":
                return lines

    def cmd(self, line):
        self.send(line + "\r\n")
        return self.reply()

    def closed(self, timeout=10):
        """whether the server closes the connection (EOF) within @timeout seconds, with nothing more sent"""
        self.sock.settimeout(timeout)
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    return self.buf == b""
                self.buf += data
        except socket.timeout:
            return False
        except ConnectionResetError:
            return self.buf == b""

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def is_reply(lines, code, enhanced, phrase=None):
    """a reply's last line is "CODE ENHANCED ..." with @phrase in its text"""
    if not lines:
        return False
    last = lines[-1] if isinstance(lines, list) else lines
    return last.startswith("%d %s " % (code, enhanced)) and (phrase is None or phrase in last)


def lmtp_transaction(c, sender, rcpts, msg, xforward=None):
    """MAIL, RCPT..., DATA, the message: (the RCPT replies, the replies after the final dot, one per accepted
    recipient)"""
    if xforward:
        r = c.cmd("XFORWARD " + xforward)
        if not is_reply(r, 250, "2.0.0"):
            raise RuntimeError("XFORWARD: %s" % r)
    r = c.cmd("MAIL FROM:<%s>" % sender)
    if not is_reply(r, 250, "2.1.0"):
        raise RuntimeError("MAIL: %s" % r)
    rcpt_replies = [c.cmd("RCPT TO:<%s>" % a) for a in rcpts]
    accepted = sum(1 for r in rcpt_replies if r[-1].startswith("250"))
    r = c.cmd("DATA")
    if not r[-1].startswith("354"):
        raise RuntimeError("DATA: %s" % r)
    c.send(wire(msg))
    return rcpt_replies, [c.reply()[-1] for _ in range(accepted)]


def session(port, protocol="lmtp"):
    c = Client(port)
    greeting = c.reply()
    if not greeting[-1].startswith("220 "):
        raise RuntimeError("greeting: %s" % greeting)
    r = c.cmd(("LHLO" if protocol == "lmtp" else "EHLO") + " client.test")
    if not r[-1].startswith("250 "):
        raise RuntimeError("hello: %s" % r)
    return c


# ---------------------------------------------------------------------------------------------------------------
# sections


def section_protocol():
    cap = Capture("cap-protocol", "--ext", "PIPELINING", "--ext", "8BITMIME", "--ext", "SIZE 10000000", "--ext",
                  "ENHANCEDSTATUSCODES")
    srv = Serve("protocol", cap.port, gateway="max-size = 100000", serve="max-errors = 10")
    try:
        # LHLO through smtplib
        lm = smtplib.LMTP("127.0.0.1", srv.port, local_hostname="client.test", timeout=30)
        code, text = lm.ehlo("client.test")
        feats = lm.esmtp_features
        check(code == 250 and lm.does_esmtp, "LHLO answers 250", (code, text))
        for ext in ("pipelining", "8bitmime", "enhancedstatuscodes", "smtputf8"):
            check(ext in feats, "LHLO lists %s" % ext.upper(), feats)
        check(feats.get("size") == "100000", "LHLO lists SIZE 100000 (max-size)", feats.get("size"))
        check("xforward" in feats and "IDENT" in feats["xforward"].split(), "LHLO lists XFORWARD with IDENT",
              feats.get("xforward"))
        # several messages per connection
        replies = []
        for i in range(3):
            msg = message("several %d" % i, to=(PLAIN,))
            try:
                refused = lm.sendmail(SENDER, [PLAIN], crlf(msg))
                replies.append(refused == {})
            except smtplib.SMTPException as e:
                replies.append(e)
        check(replies == [True, True, True], "three messages on one connection are each accepted", replies)
        got = [t for t in cap.delivered() if b"several" in t["body"]]
        check(len(got) == 3 and all(t["rcpts"] == [PLAIN] and t["mail"].startswith("MAIL FROM:<%s>" % SENDER)
                                    for t in got) and
              [header(t["body"], "Subject") for t in got] == ["several 0", "several 1", "several 2"],
              "the reinjection server got the three, in order, with the envelope as sent",
              [(t["mail"], t["rcpts"]) for t in got])
        # RSET, NOOP
        code, text = lm.noop()
        check(code == 250 and text.startswith(b"2.0.0"), "NOOP → 250 2.0.0", (code, text))
        lm.mail(SENDER)
        lm.rcpt(PLAIN)
        code, text = lm.rset()
        check(code == 250 and text.startswith(b"2.0.0"), "RSET → 250 2.0.0", (code, text))
        code, text = lm.mail(SENDER)
        check(code == 250 and text.startswith(b"2.1.0"), "after RSET a new MAIL is accepted (no nested MAIL)",
              (code, text))
        lm.rset()
        code, text = lm.docmd("QUIT")
        check(code == 221 and text.startswith(b"2.0.0"), "QUIT → 221 2.0.0", (code, text))
        lm.close()

        # PIPELINING: the whole session in one write, every reply in order
        c = Client(srv.port)
        c.send(b"LHLO client.test\r\nMAIL FROM:<%s>\r\nRCPT TO:<%s>\r\nRCPT TO:<%s>\r\nDATA\r\n" %
               (SENDER.encode(), PLAIN.encode(), BOB.encode()) + wire(message("pipelined", to=(PLAIN, BOB))) +
               b"NOOP\r\nQUIT\r\n")
        got = [c.reply()[-1] for _ in range(9)]
        want = [(220, None), (250, None), (250, "2.1.0"), (250, "2.1.5"), (250, "2.1.5"), (354, None),
                (250, "2.0.0"), (250, "2.0.0"), (250, "2.0.0")]
        ok = all(l.startswith("%d %s" % (code, enh) if enh else "%d " % code) for l, (code, enh) in zip(got, want))
        bye = c.reply()[-1]
        check(ok and PLAIN in got[6] and BOB in got[7] and bye.startswith("221 2.0.0") and c.closed(5),
              "PIPELINING: LHLO, MAIL, 2 RCPT, DATA, the message, NOOP, QUIT in one write → every reply in order",
              got + [bye])
        c.close()

        # XFORWARD to a reinjection server that does not announce it: not passed on
        c = session(srv.port)
        rr, after = lmtp_transaction(c, SENDER, [PLAIN], message("no xforward", to=(PLAIN,)),
                                     xforward="NAME=client.example ADDR=192.0.2.7 IDENT=QID777")
        t = [t for t in cap.delivered() if b"no xforward" in t["body"]]
        check(len(after) == 1 and is_reply(after[0], 250, "2.0.0") and len(t) == 1 and t[0]["xforward"] == [] and
              not any(b"XFORWARD" in r for r in cap.raw()),
              "XFORWARD from the client, a reinjection server that does not announce it: none is sent to it",
              (after, t[0]["xforward"] if t else None))
        check([r["queue_id"] for r in srv.records("message") if r["queue_id"]] == ["QID777"],
              "the queue id is logged all the same")
        c.cmd("QUIT")
        c.close()

        # HELO and EHLO in LMTP
        c = Client(srv.port)
        c.reply()
        r = c.cmd("HELO client.test")
        check(is_reply(r, 500, "5.5.1"), "HELO in LMTP → 500 5.5.1", r)
        r = c.cmd("EHLO client.test")
        check(is_reply(r, 500, "5.5.1"), "EHLO in LMTP → 500 5.5.1", r)
        r = c.cmd("MAIL FROM:<%s>" % SENDER)
        check(is_reply(r, 503, "5.5.1", "LHLO"), "MAIL before LHLO → 503 5.5.1 (send LHLO first)", r)
        r = c.cmd("LHLO client.test")
        check(r[-1].startswith("250 "), "then LHLO → 250", r)
        # bad input
        r = c.cmd("NOOP " + "x" * 600)
        check(is_reply(r, 500, "5.5.2", "too long"), "a 606-octet command line → 500 5.5.2 line too long", r)
        r = c.cmd("X" * 508)  # 510 octets with CRLF: within the limit, not a command
        check(is_reply(r, 500, "5.5.1", "not recognized"), "a 510-octet unknown command → 500 5.5.1", r)
        r = c.cmd("FROBNICATE now")
        check(is_reply(r, 500, "5.5.1", "command not recognized"), "an unrecognised command → 500 5.5.1", r)
        r = c.cmd("RCPT TO:<%s>" % PLAIN)
        check(is_reply(r, 503, "5.5.1", "need MAIL"), "RCPT before MAIL → 503 5.5.1 need MAIL", r)
        r = c.cmd("DATA")
        check(is_reply(r, 503, "5.5.1", "need MAIL"), "DATA before MAIL → 503 5.5.1", r)
        r = c.cmd("MAIL FROM:<%s>" % SENDER)
        check(is_reply(r, 250, "2.1.0"), "MAIL → 250 2.1.0", r)
        r = c.cmd("DATA")
        check(is_reply(r, 503, "5.5.1", "need RCPT"), "DATA without RCPT → 503 5.5.1 need RCPT", r)
        r = c.cmd("MAIL FROM:<%s>" % SENDER)
        check(is_reply(r, 503, "5.5.1", "nested MAIL"), "a second MAIL → 503 5.5.1 nested MAIL", r)
        r = c.cmd("RSET")
        c.close()

        # a RCPT with CR, NUL or LF: each on a fresh connection, so that the error budget is not the subject
        for name, raw in (("CR", b"RCPT TO:<bad\rname@example.org>\r\n"),
                          ("NUL", b"RCPT TO:<bad\0name@example.org>\r\n"),
                          ("LF", b"RCPT TO:<bad\nname@example.org>\r\n")):
            c = session(srv.port)
            c.cmd("MAIL FROM:<%s>" % SENDER)
            c.send(raw)
            r = c.reply()
            ok = is_reply(r, 501, "5.1.3", "Bad recipient address")
            if name == "LF":  # what follows the LF is a line of its own
                r2 = c.reply()
                ok = ok and is_reply(r2, 500, "5.5.1")
            r3 = c.cmd("RCPT TO:<%s>" % PLAIN)
            check(ok and is_reply(r3, 250, "2.1.5"),
                  "RCPT with a %s in the address → 501 5.1.3; the transaction goes on" % name, (r, r3))
            c.cmd("QUIT")
            c.close()

        # over max-size: read to the end, 552 5.3.4 for each recipient, nothing reinjected, the session goes on
        before = len(cap.delivered())
        c = session(srv.port)
        big = message("too big", to=(PLAIN, BOB), body=("%s\n" % MARKER) + ("x" * 70 + "\n") * 2000)
        rr, after = lmtp_transaction(c, SENDER, [PLAIN, BOB], big)
        check(len(after) == 2 and all(is_reply(a, 552, "5.3.4", "too big") for a in after),
              "a 144 KB message over max-size 100000 → 552 5.3.4 for each recipient, after the final dot", after)
        r = c.cmd("NOOP")
        check(is_reply(r, 250, "2.0.0"), "the session reads the too-big message to its end (NOOP → 250 after it)", r)
        r = c.cmd("MAIL FROM:<%s> SIZE=200000" % SENDER)
        check(is_reply(r, 552, "5.3.4", "size exceeds"), "MAIL SIZE=200000 over max-size → 552 5.3.4", r)
        c.cmd("QUIT")
        c.close()
        time.sleep(0.3)
        check(len(cap.delivered()) == before and not any(b"too big" in t["body"] for t in cap.delivered()),
              "nothing of the too-big message was reinjected", len(cap.delivered()) - before)

        # more than max-errors errors → 421 and close
        c = session(srv.port)
        rs = [c.cmd("BOGUS%d" % i) for i in range(10)]
        check(all(is_reply(r, 500, "5.5.1") for r in rs), "10 errors (max-errors = 10) are each answered 500 5.5.1",
              rs)
        c.send("BOGUS10\r\n")
        r1 = c.reply()
        r2 = c.reply()
        check(is_reply(r1, 500, "5.5.1") and r2[-1].startswith("421 4.7.0") and "too many errors" in r2[-1],
              "the 11th error → its 500, then 421 4.7.0 too many errors", (r1, r2))
        check(c.closed(10), "and the connection is closed")
        c.close()

        # a client that disconnects in the middle of DATA: nothing reinjected
        before = len(cap.transactions())
        c = session(srv.port)
        c.cmd("MAIL FROM:<%s>" % SENDER)
        c.cmd("RCPT TO:<%s>" % PLAIN)
        c.cmd("DATA")
        cut = wire(message("cut off", to=(PLAIN,)))
        c.send(cut[: len(cut) // 2])
        time.sleep(0.2)
        c.close()
        closed = wait_for(lambda: [r for r in srv.records("connection") if "closed by the client" in (r["text"] or "")],
                          10)
        time.sleep(0.3)
        check(closed and len(cap.transactions()) == before,
              "a client that disconnects in the middle of DATA: the connection is logged closed, nothing is "
              "reinjected (not even a MAIL)", (len(cap.transactions()) - before, closed))
    finally:
        srv.stop()
        cap.stop()


def section_idle():
    cap = Capture("cap-idle")
    srv = Serve("idle", cap.port, serve="idle-timeout = 2")
    try:
        c = session(srv.port)
        t = time.monotonic()
        c.sock.settimeout(15)
        try:
            r = c.reply()
        except (EOFError, socket.timeout) as e:
            r = [repr(e)]
        dt = time.monotonic() - t
        check(is_reply(r, 421, "4.4.2", "idle timeout") and 1.5 <= dt <= 8,
              "idle-timeout = 2: an idle client gets 421 4.4.2 idle timeout after about 2 s", (r, dt))
        check(c.closed(5), "and the connection is closed")
        c.close()
        # idle in the middle of DATA: the same, and nothing reinjected
        c = session(srv.port)
        c.cmd("MAIL FROM:<%s>" % SENDER)
        c.cmd("RCPT TO:<%s>" % PLAIN)
        c.cmd("DATA")
        c.send(wire(message("idle in data", to=(PLAIN,)))[:200])
        c.sock.settimeout(15)
        try:
            r = c.reply()
        except (EOFError, socket.timeout) as e:
            r = [repr(e)]
        check(is_reply(r, 421, "4.4.2") and c.closed(5), "a client idle in the middle of DATA: 421 4.4.2 and close", r)
        c.close()
        time.sleep(0.3)
        check(cap.transactions() == [], "nothing was reinjected", cap.transactions())
    finally:
        srv.stop()
        cap.stop()


def section_unix():
    """listen = unix:PATH with listen-mode: the mode, a message through it, the socket removed at exit"""
    cap = Capture("cap-unix", "--ext", "PIPELINING")
    path = os.path.join(WORK, "lmtp.sock")
    srv = Serve("unix", cap.port, listen="unix:" + path, serve="listen-mode = 0620")
    try:
        mode = os.stat(path).st_mode
        check(stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o620, "unix:PATH: a socket with listen-mode 0620",
              oct(mode))
        c = session(path)
        rr, after = lmtp_transaction(c, SENDER, [PLAIN], message("over unix", to=(PLAIN,)))
        check(len(after) == 1 and is_reply(after[0], 250, "2.0.0"), "a message over the unix socket: 250 2.0.0",
              after)
        c.cmd("QUIT")
        c.close()
        check([t["rcpts"] for t in cap.delivered()] == [[PLAIN]], "and it was reinjected")
        srv.stop()
        check(not os.path.exists(path), "the socket is removed when serve stops")
    finally:
        srv.stop()
        cap.stop()


def section_ipv6():
    """listen = inet:[::1]:PORT (skipped where ::1 cannot be bound)"""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as t:
            t.bind(("::1", 0))
            port = t.getsockname()[1]
    except OSError:
        note("SKIP ipv6: ::1 cannot be bound")
        return
    cap = Capture("cap-ipv6")
    srv = Serve("ipv6", cap.port, listen="inet:[::1]:%d" % port)
    try:
        c = Client(port, host="::1")
        c.reply()
        r = c.cmd("LHLO client.test")
        rr, after = lmtp_transaction(c, SENDER, [PLAIN], message("over ipv6", to=(PLAIN,)))
        check(r[-1].startswith("250 ") and len(after) == 1 and is_reply(after[0], 250, "2.0.0"),
              "inet:[::1]:PORT: a client on ::1 (in the default allow) is served", (r, after))
        c.cmd("QUIT")
        c.close()
    finally:
        srv.stop()
        cap.stop()


def section_allow():
    cap = Capture("cap-allow")
    srv = Serve("allow", cap.port, serve="allow = 10.0.0.0/8")
    try:
        c = Client(srv.port)
        try:
            r = c.reply()
        except EOFError as e:
            r = [repr(e)]
        check(is_reply(r, 554, "5.7.1", "not allowed"), "a peer (127.0.0.1) outside allow = 10.0.0.0/8 → 554 5.7.1",
              r)
        check(c.closed(5), "and the connection is closed")
        c.close()
        rec = wait_for(lambda: [r for r in srv.records("connection") if "not in allow" in (r["text"] or "")], 5)
        check(bool(rec), "the connection record says it was refused (not in allow)", srv.records("connection"))
        check(cap.transactions() == [], "nothing was reinjected")
    finally:
        srv.stop()
        cap.stop()


def section_lmtp_crypto():
    cap = Capture("cap-crypto", "--ext", "PIPELINING", "--ext", "8BITMIME", "--ext", "SIZE 10000000", "--ext",
                  "ENHANCEDSTATUSCODES", "--ext", "XFORWARD NAME ADDR PROTO HELO IDENT SOURCE")
    srv = Serve("lmtp-crypto", cap.port)
    try:
        c = session(srv.port)
        msg = message("three recipients", to=(BOB, NOKEY, PLAIN))
        rr, after = lmtp_transaction(c, SENDER, [BOB, NOKEY, PLAIN], msg)
        check(all(is_reply(r, 250, "2.1.5") for r in rr), "RCPT for the three → 250 2.1.5", rr)
        check(len(after) == 3, "LMTP: one reply per recipient after the final dot", after)
        if len(after) == 3:
            check(is_reply(after[0], 250, "2.0.0", BOB), "1st (key): 250 2.0.0 <%s> delivered" % BOB, after[0])
            check(is_reply(after[1], 550, "5.7.1", NOKEY) and "encryption is required" in after[1],
                  "2nd (encrypt = required, no key): 550 5.7.1 with the address", after[1])
            check(is_reply(after[2], 250, "2.0.0", PLAIN), "3rd (no key, opportunistic): 250 2.0.0", after[2])
        txs = cap.delivered()
        check(len(cap.transactions()) == 2 and len(txs) == 2,
              "the reinjection server got exactly two transactions (one per group)",
              [(t["mail"], t["rcpts"]) for t in cap.transactions()])
        by_rcpt = {tuple(t["rcpts"]): t for t in txs}
        check(sorted(by_rcpt) == [(BOB,), (PLAIN,)] and all(t["mail"].startswith("MAIL FROM:<%s>" % SENDER)
                                                           for t in txs),
              "their envelopes: <%s> then <%s>, both from <%s>" % (BOB, PLAIN, SENDER),
              [(t["mail"], t["rcpts"]) for t in txs])
        pgp = by_rcpt.get((BOB,))
        armored = pgp_part(pgp["body"]) if pgp else None
        clear = gpg_decrypt(armored) if armored else None
        check(clear is not None and MARKER.encode() not in pgp["body"],
              "Bob's copy is PGP/MIME, no clear text outside the encryption, and gpg decrypts it")
        if clear is not None:
            check(lf(clear).split(b"\n\n", 1)[-1] == shown_body(msg),
                  "the decrypted body equals the original body byte for byte, after the legacy display",
                  clear[:400])
            # header-protection = obscure (the default): RFC 9788's hp="cipher" on the original Content-Type, the
            # charset UTF-8 (the legacy display may need it) and hp-legacy-display="1"
            check(re.sub(r";\s+", "; ", header(clear, "Content-Type")) ==
                  'text/plain; charset=utf-8; hp="cipher"; hp-legacy-display="1"',
                  "the decrypted entity keeps the original Content-Type (with hp=\"cipher\", hp-legacy-display)",
                  header(clear, "Content-Type"))
            check(gpg_keyids(armored) == [KEYS["bob_subkey"]],
                  "gpg --list-packets: encrypted to Bob's encryption subkey %s only" % KEYS["bob_subkey"],
                  gpg_keyids(armored))
        plain = by_rcpt.get((PLAIN,))
        check(plain is not None and lf(plain["body"]) == msg,
              "the opportunistic recipient's copy is the message as it was sent, byte for byte (CRLF on the wire)",
              plain["body"][:600] if plain else None)
        check(NOKEY not in " ".join(" ".join(t["rcpts"]) for t in cap.transactions()),
              "the refused recipient was never sent to the reinjection server")

        # S/MIME
        msg = message("smime", to=(CAROL,))
        rr, after = lmtp_transaction(c, SENDER, [CAROL], msg)
        check(len(after) == 1 and is_reply(after[0], 250, "2.0.0", CAROL), "S/MIME recipient: 250 2.0.0", after)
        t = [t for t in cap.delivered() if t["rcpts"] == [CAROL]]
        out = cms_decrypt(t[0]["body"]) if t else None
        check(out is not None and lf(out).split(b"\n\n", 1)[-1] == shown_body(msg) and
              MARKER.encode() not in t[0]["body"],
              "openssl cms -decrypt with Carol's key gives the original text", out[:300] if out else None)
        if t:
            check(cms_serials(t[0]["body"]) == [KEYS["carol_serial"]],
                  "openssl cms -cmsout -print: one recipient, Carol's certificate (serial %x)" % KEYS["carol_serial"],
                  cms_serials(t[0]["body"]))

        # XFORWARD: the queue id in the log, XFORWARD passed on to a server that announces it
        msg = message("xforward", to=(PLAIN,))
        rr, after = lmtp_transaction(c, SENDER, [PLAIN], msg,
                                     xforward="NAME=client.example ADDR=192.0.2.7 PROTO=ESMTP IDENT=4XyZ12QID")
        check(len(after) == 1 and is_reply(after[0], 250, "2.0.0"), "a message after XFORWARD: 250 2.0.0", after)
        recs = [r for r in srv.records("message") if r["queue_id"] == "4XyZ12QID"]
        check(len(recs) == 1 and recs[0]["recipients"] == [PLAIN] and recs[0]["outcome"] == "delivered",
              "the JSON log's message record has queue_id 4XyZ12QID", srv.records("message")[-1:])
        t = [t for t in cap.transactions() if t["body"] and b"xforward" in t["body"]]
        xf = " ".join(t[0]["xforward"]) if t else ""
        check("IDENT=4XyZ12QID" in xf and "ADDR=192.0.2.7" in xf and "NAME=client.example" in xf,
              "the reinjection server received XFORWARD with IDENT (and NAME, ADDR) before that MAIL", xf)
        earlier = [t for t in cap.transactions() if t["body"] and b"three recipients" in t["body"]]
        check(earlier and all("IDENT" not in " ".join(x["xforward"]) for x in earlier),
              "a transaction without XFORWARD passes none on", [x["xforward"] for x in earlier])
        c.cmd("QUIT")
        c.close()
    finally:
        srv.stop()
        cap.stop()


def section_smtp():
    cap = Capture("cap-smtp", "--ext", "PIPELINING", "--ext", "8BITMIME", "--ext", "ENHANCEDSTATUSCODES")
    srv = Serve("smtp", cap.port, protocol="smtp")
    try:
        s = smtplib.SMTP("127.0.0.1", srv.port, local_hostname="client.test", timeout=60)
        code, _ = s.ehlo("client.test")
        check(code == 250 and "xforward" in s.esmtp_features, "SMTP mode: EHLO → 250 with XFORWARD")
        code, text = s.docmd("LHLO", "client.test")
        check(code == 500 and text.startswith(b"5.5.1"), "LHLO in SMTP → 500 5.5.1", (code, text))
        # partial refusal: one reply (250), a DSN to the sender
        msg = message("partly refused", to=(BOB, NOKEY))
        s.mail(SENDER)
        s.rcpt(BOB)
        s.rcpt(NOKEY)
        code, text = s.data(crlf(msg))
        check(code == 250 and text.startswith(b"2.0.0") and b"refused" in text,
              "SMTP: one recipient refused by policy → one reply, 250 2.0.0 (…some recipients were refused)",
              (code, text))
        txs = cap.delivered()
        to_bob = [t for t in txs if t["rcpts"] == [BOB]]
        dsn = [t for t in txs if t["mail"].startswith("MAIL FROM:<>")]
        check(len(txs) == 2 and len(to_bob) == 1 and len(dsn) == 1, "two transactions: Bob's copy and a DSN",
              [(t["mail"], t["rcpts"]) for t in txs])
        if to_bob:
            armored = pgp_part(to_bob[0]["body"])
            clear = gpg_decrypt(armored) if armored else None
            check(clear is not None and lf(clear).split(b"\n\n", 1)[-1] == shown_body(msg),
                  "Bob's copy decrypts to the original body")
        if dsn:
            d = dsn[0]
            body = lf(d["body"])
            check(d["rcpts"] == [SENDER], "the DSN has the null sender and goes to the envelope sender <%s>" % SENDER,
                  (d["mail"], d["rcpts"]))
            check(b"Final-Recipient: rfc822; " + NOKEY.encode() in body and b"Status: 5.7.1" in body and
                  b"multipart/report" in body, "the DSN names the refused recipient with Status 5.7.1", body[:800])
            check(MARKER.encode() not in body and b"Subject: partly refused" in body,
                  "the DSN carries the original headers, never the body")
        # all refused: 550 5.7.1
        try:
            s.sendmail(SENDER, [NOKEY], crlf(message("all refused", to=(NOKEY,))))
            res = None
        except smtplib.SMTPDataError as e:
            res = (e.smtp_code, e.smtp_error)
        check(res is not None and res[0] == 550 and res[1].startswith(b"5.7.1") and NOKEY.encode() in res[1],
              "SMTP: every recipient refused → 550 5.7.1 with the address", res)
        check(len(cap.delivered()) == 2, "nothing more was reinjected", len(cap.delivered()))
        s.quit()
    finally:
        srv.stop()
        cap.stop()


def section_reinject_down():
    port = free_port()
    srv = Serve("reinject-down", port)
    cap = None
    try:
        c = session(srv.port)
        msg = message("server down", to=(BOB, PLAIN))
        rr, after = lmtp_transaction(c, SENDER, [BOB, PLAIN], msg)
        check(len(after) == 2 and all(is_reply(a, 451, "4.4.1", "reinjection failed") for a in after),
              "reinjection server down → 451 4.4.1 reinjection failed for every recipient", after)
        cap = Capture("cap-back", "--ext", "PIPELINING", "--ext", "ENHANCEDSTATUSCODES", port=port)
        rr, after = lmtp_transaction(c, SENDER, [BOB, PLAIN], msg)
        check(len(after) == 2 and all(is_reply(a, 250, "2.0.0") for a in after),
              "once it is back, the same message is delivered to both", after)
        check(len(cap.delivered()) == 2 and sorted(tuple(t["rcpts"]) for t in cap.delivered()) == [(BOB,), (PLAIN,)],
              "exactly one copy per group", [(t["mail"], t["rcpts"]) for t in cap.delivered()])
        c.cmd("QUIT")
        c.close()
    finally:
        srv.stop()
        if cap:
            cap.stop()


def fault_case(name, cap_args, expect_bob, expect_plain, dots, what, gateway=""):
    """one message to Bob (group 1, PGP/MIME) and PLAIN (group 2, as it came) against a misbehaving server; @dots:
    the groups whose final dot the server must have been sent, each exactly once"""
    cap = Capture("cap-" + name, "--ext", "PIPELINING", "--ext", "ENHANCEDSTATUSCODES", *cap_args)
    srv = Serve(name, cap.port, gateway=gateway)
    try:
        c = session(srv.port)
        msg = message(name, to=(BOB, PLAIN))
        rr, after = lmtp_transaction(c, SENDER, [BOB, PLAIN], msg)
        ok = len(after) == 2 and re.match(expect_bob, after[0]) and re.match(expect_plain, after[1])
        check(ok, "%s: %s" % (name, what), after)
        note("replies: %s" % after)
        got = sorted(tuple(t["rcpts"]) for t in cap.delivered())
        tried = sorted(tuple(t["rcpts"]) for t in cap.transactions())
        check(got == dots and tried == [(BOB,), (PLAIN,)],
              "%s: one transaction per group, nothing retried or duplicated; final dots sent for %s" %
              (name, " and ".join(d[0] for d in dots)), (tried, got))
        # the connection stays usable: the next message goes through (a kept connection, RSET or a new one)
        rr, after = lmtp_transaction(c, SENDER, [PLAIN], message(name + " next", to=(PLAIN,)))
        check(len(after) == 1 and is_reply(after[0], 250, "2.0.0"), "%s: the next message is delivered" % name,
              after)
        c.cmd("QUIT")
        c.close()
    finally:
        srv.stop()
        cap.stop()


def section_reinject_faults():
    fault_case("rcpt-4xx", ["--reply", "rcpt:%s=452 4.2.2 mailbox full" % BOB], r"451 4\.2\.2 .*452 4\.2\.2",
               r"250 2\.0\.0 ", [(PLAIN,)], "RCPT of Bob refused 452 4.2.2 → Bob 451 4.2.2 (the server's code and reply), "
               "the other group 250")
    fault_case("rcpt-5xx", ["--reply", "rcpt:%s=550 5.1.1 no such user" % BOB], r"451 4\.3\.0 .*550 5\.1\.1",
               r"250 2\.0\.0 ", [(PLAIN,)], "RCPT of Bob refused 550 → Bob 451 4.3.0 (deferred, never 5xx), the other group 250")
    fault_case("dot-5xx", ["--reply", "dot#1=554 5.6.0 content rejected"], r"451 4\.3\.0 .*554 5\.6\.0",
               r"250 2\.0\.0 ", [(BOB,), (PLAIN,)], "the first group's final dot refused 554 → Bob 451 4.3.0, "
               "the other group 250")
    fault_case("dot-4xx", ["--reply", "dot#1=451 4.3.0 try later"], r"451 4\.3\.0 .*451 4\.3\.0",
               r"250 2\.0\.0 ", [(BOB,), (PLAIN,)], "the first group's final dot refused 451 4.3.0 → Bob 451 4.3.0, "
               "the other group 250")
    fault_case("dot2-4xx", ["--reply", "dot#2=452 4.3.1 queue full"], r"250 2\.0\.0 ",
               r"451 4\.3\.1 .*452 4\.3\.1", [(BOB,), (PLAIN,)],
               "the second group's final dot refused 452 4.3.1 → Bob 250, the other 451 4.3.1")
    fault_case("dot-drop", ["--drop", "dot#1"], r"451 4\.4\.2 ", r"250 2\.0\.0 ", [(BOB,), (PLAIN,)],
               "the connection lost at the first group's final dot → Bob 451 4.4.2 (unknown: never 250), "
               "the other group 250 over a new connection")
    # the server too slow to answer Bob's RCPT (timeout = 2): 4.4.2 for Bob, no body sent; the other group delivered
    fault_case("rcpt-timeout", ["--slow", "rcpt:%s@1=5" % BOB], r"451 4\.4\.2 ", r"250 2\.0\.0 ", [(PLAIN,)],
               "the server silent at Bob's RCPT past timeout = 2 → Bob 451 4.4.2, the other group 250",
               gateway="timeout = 2")


def section_store_reload():
    late = os.path.join(WORK, "late")  # the GnuPG home that does not exist yet
    cap = Capture("cap-store", "--ext", "PIPELINING", "--ext", "ENHANCEDSTATUSCODES")
    srv = Serve("store", cap.port, gnupg_home=late)
    try:
        c = session(srv.port)
        msg = message("store", to=(BOB, PLAIN))
        rr, after = lmtp_transaction(c, SENDER, [BOB, PLAIN], msg)
        check(len(after) == 2 and all(is_reply(a, 451, "4.7.0") for a in after),
              "gnupg-home missing → 451 4.7.0 for every recipient", after)
        check(cap.delivered() == [], "nothing was reinjected")
        shutil.copytree(KEYS["ghome"], late, ignore=shutil.ignore_patterns("S.*", "*.lock"))
        rr, after = lmtp_transaction(c, SENDER, [BOB, PLAIN], msg)
        check(len(after) == 2 and all(is_reply(a, 250, "2.0.0") for a in after),
              "the home created on disk → the next transaction is delivered, no restart", after)
        t = [t for t in cap.delivered() if t["rcpts"] == [BOB]]
        armored = pgp_part(t[0]["body"]) if t else None
        check(armored is not None and gpg_keyids(armored) == [KEYS["bob_subkey"]],
              "…and Bob's copy is encrypted to his key (the new generation's store)")
        check(any("a file changed" in (r["text"] or "") for r in srv.records("service", "reloaded")),
              "the log has the reload (a file changed)", srv.records("service"))
        # SIGHUP with a broken configuration: the old generation stays
        srv.write_conf(srv.text + "\n[gateway]\nno-such-key = 1\n")
        srv.proc.send_signal(signal.SIGHUP)
        rec = wait_for(lambda: srv.records("service", "reload-failed"), 10)
        check(rec and "no-such-key" in rec[0]["text"] and "previous configuration stays" in rec[0]["text"],
              "SIGHUP with a broken configuration: the log says the reload failed, why, and that the old one stays",
              rec)
        check(srv.proc.poll() is None and "no-such-key" in srv.errors(), "serve is still running (stderr says why too)",
              srv.errors()[-1000:])
        rr, after = lmtp_transaction(c, SENDER, [BOB], message("after bad reload", to=(BOB,)))
        t = [t for t in cap.delivered() if b"<after-bad-reload@example.org>" in t["body"]]  # the Subject is "[...]"
        check(len(after) == 1 and is_reply(after[0], 250, "2.0.0") and t and pgp_part(t[0]["body"]) is not None,
              "and still serving with the old generation (Bob's copy encrypted)", after)
        c.cmd("QUIT")
        c.close()
        c = session(srv.port)  # a new connection too
        r = c.cmd("NOOP")
        check(is_reply(r, 250, "2.0.0"), "a new connection is served too", r)
        c.cmd("QUIT")
        c.close()
        # put it right: SIGHUP loads it
        srv.write_conf(srv.text)
        n = len(srv.records("service", "reloaded"))
        srv.proc.send_signal(signal.SIGHUP)
        check(wait_for(lambda: len(srv.records("service", "reloaded")) > n, 10), "a fixed file and SIGHUP: reloaded")
    finally:
        srv.stop()
        cap.stop()
        subprocess.run(["gpgconf", "--homedir", late, "--kill", "all"], capture_output=True)


def section_sigterm_idle():
    cap = Capture("cap-term-idle")
    srv = Serve("term-idle", cap.port)
    try:
        c = session(srv.port)
        srv.proc.send_signal(signal.SIGTERM)
        c.sock.settimeout(15)
        try:
            r = c.reply()
        except (EOFError, socket.timeout) as e:
            r = [repr(e)]
        check(is_reply(r, 421, "4.3.2", "shutting down"), "SIGTERM → 421 4.3.2 to a connected idle client", r)
        check(c.closed(5), "and the connection is closed")
        c.close()
        try:
            rc = srv.proc.wait(30)
        except subprocess.TimeoutExpired:
            rc = None
        check(rc == 0, "serve exits 0", (rc, srv.errors()[-2000:]))
        check(bool(srv.records("service", "stopped")), "the log has the stop")
    finally:
        srv.stop()
        cap.stop()


def section_sigterm_busy():
    cap = Capture("cap-term-busy", "--ext", "PIPELINING", "--slow", "dot=3")
    srv = Serve("term-busy", cap.port)
    try:
        c = session(srv.port)
        c.cmd("MAIL FROM:<%s>" % SENDER)
        c.cmd("RCPT TO:<%s>" % PLAIN)
        c.cmd("DATA")
        c.send(wire(message("in flight", to=(PLAIN,))))
        check(wait_for(lambda: cap.messages(), 20), "the reinjection server has the message, its reply held 3 s")
        srv.proc.send_signal(signal.SIGTERM)
        t = time.monotonic()

        def refused():
            try:
                socket.create_connection(("127.0.0.1", srv.port), timeout=1).close()
                return False
            except ConnectionRefusedError:
                return True
            except OSError:
                return False

        check(wait_for(refused, 2.5), "after SIGTERM no new connection is accepted")
        c.sock.settimeout(20)
        try:
            r = c.reply()
            bye = c.reply()
        except (EOFError, socket.timeout) as e:
            r, bye = [repr(e)], []
        check(is_reply(r, 250, "2.0.0", "delivered") and time.monotonic() - t > 1,
              "SIGTERM while the transaction is in flight: it still gets its 250 2.0.0", r)
        check(is_reply(bye, 421, "4.3.2"), "then 421 4.3.2", bye)
        try:
            rc = srv.proc.wait(30)
        except subprocess.TimeoutExpired:
            rc = None
        check(rc == 0, "serve exits 0 afterwards", (rc, srv.errors()[-2000:]))
        check(len(cap.delivered()) == 1, "delivered once", len(cap.delivered()))
        c.close()
    finally:
        srv.stop()
        cap.stop()


def section_sigterm_grace():
    """a transaction still in flight when shutdown-grace ends: serve exits without answering it (the client's MTA
    keeps the message and retries), never with a reply it cannot stand by"""
    cap = Capture("cap-term-grace", "--ext", "PIPELINING", "--slow", "dot=6")
    srv = Serve("term-grace", cap.port, serve="shutdown-grace = 1")
    try:
        c = session(srv.port)
        c.cmd("MAIL FROM:<%s>" % SENDER)
        c.cmd("RCPT TO:<%s>" % PLAIN)
        c.cmd("DATA")
        c.send(wire(message("past the grace", to=(PLAIN,))))
        wait_for(lambda: cap.messages(), 20)
        t = time.monotonic()
        srv.proc.send_signal(signal.SIGTERM)
        try:
            rc = srv.proc.wait(20)
        except subprocess.TimeoutExpired:
            rc = None
        dt = time.monotonic() - t
        check(rc == 0 and dt < 5, "shutdown-grace = 1 with a reinjection that takes 6 s: serve exits 0 after about 1 s",
              (rc, dt))
        c.sock.settimeout(10)
        try:
            r = c.reply()
        except (EOFError, ConnectionResetError, socket.timeout) as e:
            r = [repr(e)]
        check(not r[-1].startswith("250"), "the client got no 250 for it (its MTA keeps the message)", r)
        recs = srv.records("service", "stopped")
        check(recs and "1 connection(s) still open" in recs[0]["text"], "the log says a connection was cut off", recs)
        c.close()
    finally:
        srv.stop(expect_clean=False)  # _exit with a thread in flight: no leak check is possible
        cap.stop()


def section_concurrency():
    sink = Sink("sink-concurrency")
    srv = Serve("concurrency", sink.port, serve="workers = 4\nmax-connections = 20")
    results = {}

    def client(n):
        try:
            lm = smtplib.LMTP("127.0.0.1", srv.port, local_hostname="c%d.test" % n, timeout=120)
            lm.ehlo("c%d.test" % n)
            for i in range(5):
                rcpt = BOB if (n + i) % 2 else PLAIN
                msg = message("conc %d-%d" % (n, i), to=(rcpt,))
                results[(n, i)] = lm.sendmail(SENDER, [rcpt], crlf(msg))
            lm.quit()
        except Exception as e:  # noqa: BLE001 - reported as the result
            results[(n, "error")] = repr(e)

    try:
        threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        ok = [k for k, v in results.items() if v == {}]
        check(len(ok) == 40, "8 connections × 5 messages at once: 40 accepted with 250",
              {k: v for k, v in results.items() if v != {}})
        files = wait_for(lambda: len(sink.files()) >= 40 and sink.files(), 10) or sink.files()
        ids = sorted(set(m.group(1).decode() for f in files for m in [re.search(rb"Message-ID: <conc-(\d+-\d+)@", f)]
                         if m))
        check(len(files) == 40 and len(ids) == 40, "smtp-sink counted 40 messages, each once", (len(files), len(ids)))
        enc = [f for f in files if b"X-Rcpt-Args: <%s>" % BOB.encode() in f]
        check(len(enc) == 20 and all(b"multipart/encrypted" in f and MARKER.encode() not in f for f in enc),
              "the 20 for Bob are PGP/MIME, without clear text", len(enc))
        reloads = srv.records("service", "reloaded")
        check(reloads == [], "nothing changed on disk, so no reload (gpg's own runs do not make the store stale)",
              [r["text"] for r in reloads])
    finally:
        srv.stop()
        sink.stop()


def section_smtputf8():
    """RFC 6531: a UTF-8 envelope in an SMTPUTF8 transaction reaches a reinjection server that offers SMTPUTF8 as it
    was written; without SMTPUTF8 on MAIL the session refuses it at RCPT"""
    cap = Capture("cap-utf8", "--ext", "PIPELINING", "--ext", "ENHANCEDSTATUSCODES", "--ext", "SMTPUTF8", "--ext",
                  "8BITMIME")
    srv = Serve("smtputf8", cap.port)
    rcpt = "jöran@exämple.org"
    try:
        c = session(srv.port)
        r = c.cmd("MAIL FROM:<%s> SMTPUTF8" % SENDER)
        check(is_reply(r, 250, "2.1.0"), "MAIL with SMTPUTF8 accepted", r)
        r = c.cmd("RCPT TO:<%s>" % rcpt)
        check(is_reply(r, 250, "2.1.5"), "a UTF-8 recipient accepted in an SMTPUTF8 transaction", r)
        r = c.cmd("DATA")
        c.send(wire(message("utf8 envelope", to=(PLAIN,))))
        after = c.reply()
        check(is_reply(after, 250, "2.0.0"), "… and delivered (250 2.0.0), not refused as an invalid address", after)
        got = cap.delivered()
        check(len(got) == 1 and got[0]["rcpts"] == [rcpt] and "SMTPUTF8" in got[0]["mail"],
              "the reinjection carries the address as written, with SMTPUTF8 on MAIL",
              [(t["mail"], t["rcpts"]) for t in got])
        r = c.cmd("MAIL FROM:<%s>" % SENDER)
        r = c.cmd("RCPT TO:<%s>" % rcpt)
        check(r and r[-1].startswith("553 5.6.7"), "without SMTPUTF8 the same RCPT gets 553 5.6.7", r)
        c.cmd("QUIT")
        c.close()
    finally:
        srv.stop()
        cap.stop()


SECTIONS = [section_protocol, section_idle, section_allow, section_lmtp_crypto, section_smtp, section_reinject_down,
            section_reinject_faults, section_store_reload, section_sigterm_idle, section_sigterm_busy,
            section_sigterm_grace, section_unix, section_ipv6, section_smtputf8, section_concurrency]


def main():
    global WORK
    if not MIMEGATE or not os.access(MIMEGATE, os.X_OK):
        skip("no mimegate binary given")
    for tool in ("gpg", "gpgconf", "openssl", "smtp-sink"):
        if not shutil.which(tool):
            skip("%s is not installed" % tool)
    WORK = tempfile.mkdtemp(prefix="mgs-")  # short: gpg-agent's socket path is limited
    os.chmod(WORK, 0o711)  # smtp-sink runs as nobody and writes below it
    only = os.environ.get("SERVE_TEST_ONLY", "").split()
    try:
        make_keys()
        for s in SECTIONS:
            if only and s.__name__.replace("section_", "") not in only:
                continue
            note(s.__name__)
            try:
                s()
            except Exception:  # noqa: BLE001 - a section that breaks is a failed check, the others still run
                check(False, "%s ran to its end" % s.__name__, traceback.format_exc())
    finally:
        for p in PROCS:
            if p.poll() is None:
                p.kill()
                p.wait()
        subprocess.run(["gpgconf", "--homedir", os.path.join(WORK, "g"), "--kill", "all"], capture_output=True)
        if RESULTS["failed"] or os.environ.get("SERVE_TEST_KEEP"):
            note("work directory kept: %s" % WORK)
        else:
            shutil.rmtree(WORK, ignore_errors=True)
    print("1..%d" % RESULTS["n"])
    if RESULTS["failed"]:
        note("%d of %d checks failed" % (len(RESULTS["failed"]), RESULTS["n"]))
    sys.exit(1 if RESULTS["failed"] else 0)


main()
