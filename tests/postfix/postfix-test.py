#!/usr/bin/env python3
"""postfix-test.py MIMEGATE - mimegate filter in a real Postfix on 127.0.0.1 (README "Postfix").

Configures Debian's Postfix (installed by .ci/run) with virtual Maildir domains, an inbound smtpd on 127.0.0.1:2525
whose content_filter is a pipe(8) transport running MIMEGATE as an unprivileged user, and reinjection through
Postfix's own sendmail. Sends through SMTP and checks the Maildirs with gpg and openssl:

  1. PGP/MIME for an inline-only recipient (domain ms.test) arrives as PGP/Inline, readable with its key;
  2. S/MIME for an OpenPGP-only recipient arrives as PGP/MIME;
  3. plain text to a `required` partner with a key arrives encrypted; without a key it bounces (5.7.1 in the bounce);
     through a transport that hands both to one run, the sender gets mimegate's own DSN for the one without a key;
  4. with the GnuPG home unreadable the message stays deferred in the queue (4.7.0), and is delivered once the home
     is readable again and the queue is flushed;
  5. a 2 MB message whose filter run is killed with SIGKILL during its reinjection (through a transport whose reinject
     command holds sendmail back: sleeping before it runs, or pausing halfway through its input until the filter is
     dead) is deferred by Postfix, every copy that reaches the Maildir is complete (gpg decrypts all of it), and the
     deferred message is delivered after postqueue -f.

Exit 77 (skipped) unless root with Postfix installed and either MIMEGATE_POSTFIX_TEST=1 or no Postfix configured yet
(the test writes /etc/postfix/main.cf and master.cf, and puts back what was there). Talks only to 127.0.0.1."""
import email
import email.policy
import grp
import json
import os
import pwd
import re
import shutil
import signal
import smtplib
import subprocess
import sys
import time

MIMEGATE = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("MIMEGATE_BIN", "")
BASE = "/var/lib/mimegate-test"
MAILDIRS = "/var/mail/mimegate-test"
PFLOG = "/var/log/mimegate-test-postfix.log"
MARK = "# mimegate integration test"
PORT = 2525
ADDRESSES = ("inline@ms.test", "bob@pgp.test", "keyed@partner.test", "nokey@partner.test", "sender@sender.test",
             "alice@gw.test", "big@pgp.test")
HOLD = BASE + "/hold"  # step 5: the reinject wrapper holds sendmail back while a file named after its mode is here
failures = []


def skip(why):
    print("SKIP:", why)
    sys.exit(77)


def run(argv, **kw):
    kw.setdefault("check", True)
    kw.setdefault("capture_output", True)
    return subprocess.run(argv, **kw)


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        failures.append(what)
    return cond


if os.geteuid() != 0:
    skip("needs root (Postfix configuration and an unprivileged pipe(8) user)")
if not shutil.which("postfix") or not os.path.exists("/usr/sbin/sendmail"):
    skip("Postfix is not installed (.ci/run installs it)")
if not MIMEGATE or not os.access(MIMEGATE, os.X_OK):
    skip("no mimegate binary given")
main_cf = "/etc/postfix/main.cf"
if os.environ.get("MIMEGATE_POSTFIX_TEST") != "1" and os.path.exists(main_cf) and MARK not in open(main_cf).read():
    skip("a Postfix is configured here; set MIMEGATE_POSTFIX_TEST=1 to let this test take it over (it restores it)")


def ensure_user(name, home):
    try:
        pwd.getpwnam(name)
    except KeyError:
        run(["useradd", "--system", "--home-dir", home, "--no-create-home", "--shell", "/usr/sbin/nologin", name])
    return pwd.getpwnam(name)


def postfix_running():
    return subprocess.run(["postfix", "status"], capture_output=True).returncode == 0


def stop_postfix():
    if postfix_running():
        subprocess.run(["postfix", "stop"], capture_output=True)
        for _ in range(100):
            if not postfix_running():
                break
            time.sleep(0.1)


backups = {}


def restore():
    stop_postfix()
    for path, data in backups.items():
        if data is None:
            if os.path.exists(path):
                os.unlink(path)
        else:
            with open(path, "w") as f:
                f.write(data)
    for home in (BASE + "/gnupg",):
        if os.path.isdir(home):
            subprocess.run(["runuser", "-u", "mimegate", "--", "gpgconf", "--homedir", home, "--kill", "all"],
                           capture_output=True)
    if os.path.isdir(BASE + "/check"):
        subprocess.run(["gpgconf", "--homedir", BASE + "/check", "--kill", "all"], capture_output=True)
    if not failures:
        shutil.rmtree(BASE, ignore_errors=True)
        shutil.rmtree(MAILDIRS, ignore_errors=True)


def gpg(home, *args, inp=None):
    return run(["gpg", "--homedir", home, "--batch", "--yes", "--pinentry-mode", "loopback", "--passphrase", "",
                "--trust-model", "always"] + list(args), input=inp)


def make_keys():
    home = BASE + "/gnupg"
    os.makedirs(home, mode=0o700)
    with open(home + "/gpg-agent.conf", "w") as f:
        f.write("allow-loopback-pinentry\n")
    for addr in ("alice@gw.test", "inline@ms.test", "bob@pgp.test", "keyed@partner.test", "big@pgp.test"):
        gpg(home, "--quick-gen-key", addr, "ed25519", "sign", "never")
        fpr = [l.split(":")[9] for l in gpg(home, "--with-colons", "--list-keys", addr).stdout.decode().splitlines()
               if l.startswith("fpr:")][0]
        gpg(home, "--quick-add-key", fpr, "cv25519", "encr", "never")
    gpg(home, "--check-trustdb")
    # the checking side: a copy of the home that root uses (the filter's agent is the mimegate user's)
    shutil.copytree(home, BASE + "/check", ignore=shutil.ignore_patterns("S.*"))
    subprocess.run(["gpgconf", "--homedir", home, "--kill", "all"], capture_output=True)
    # X.509: a CA, carol@gw.test whose key the gateway holds
    x = BASE + "/x509"
    for sub in ("ca", "certs", "private"):
        os.makedirs(x + "/" + sub, mode=0o700)
    ca = BASE + "/ca"
    os.makedirs(ca)
    run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca + "/root.key", "-out",
         ca + "/root.pem", "-days", "30", "-subj", "/CN=mimegate test root"])
    with open(ca + "/ext", "w") as f:
        f.write("subjectAltName=email:carol@gw.test\nkeyUsage=digitalSignature,keyEncipherment\n"
                "extendedKeyUsage=emailProtection\n")
    run(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", ca + "/carol.key", "-out", ca + "/carol.csr",
         "-subj", "/CN=carol"])
    run(["openssl", "x509", "-req", "-in", ca + "/carol.csr", "-CA", ca + "/root.pem", "-CAkey", ca + "/root.key",
         "-CAcreateserial", "-out", ca + "/carol.pem", "-days", "30", "-extfile", ca + "/ext"])
    shutil.copy(ca + "/root.pem", x + "/ca/root.pem")
    shutil.copy(ca + "/carol.pem", x + "/certs/carol.pem")
    shutil.copy(ca + "/carol.key", x + "/private/carol.key")
    os.chmod(x + "/private/carol.key", 0o600)


def configure(mg, vm):
    os.makedirs(BASE + "/bin")
    shutil.copy(MIMEGATE, BASE + "/bin/mimegate")
    for d in (BASE, BASE + "/bin"):
        os.chmod(d, 0o755)
    os.chmod(BASE + "/bin/mimegate", 0o755)
    conf = ("[gateway]\ngnupg-home = %s/gnupg\nx509-store = %s/x509\ntrust-model = always\n"
            "authserv-id = gw.test\nlog = json:%s/mimegate.log\n%s"
            "[domain partner.test]\nencrypt = required\n[domain ms.test]\ninline-only = true\n")
    with open(BASE + "/mimegate.conf", "w") as f:
        f.write(conf % (BASE, BASE, BASE, ""))
    # step 5: the same, reinjecting through a wrapper that can hold sendmail back so that the filter is killed
    # during its reinjection. Its parent is the filter ($PPID); sendmail runs as the wrapper's child, so that only the
    # wrapper is the filter's direct child (tied to its life), as the shell of a reinject command line would be.
    with open(BASE + "/mimegate-kill.conf", "w") as f:
        f.write(conf % (BASE, BASE, BASE, "reinject = %s/bin/reinject-hold /usr/sbin/sendmail -G -i\n" % BASE))
    with open(BASE + "/bin/reinject-hold", "w") as f:
        f.write(f"""#!/bin/sh
# reinject-hold SENDMAIL... - {HOLD}/sleep: note the filter's pid, sleep, then run sendmail;
# {HOLD}/read: give sendmail the first 128 KiB, note the filter's pid, wait until the filter is dead, then the rest
filter=$PPID
if [ -e {HOLD}/sleep ]; then
  echo $filter > {HOLD}/filter.pid
  sleep 3
  exec "$@"
fi
if [ -e {HOLD}/read ]; then
  {{ dd bs=64k count=2 iflag=fullblock 2>/dev/null
    echo $filter > {HOLD}/filter.pid
    while kill -0 $filter 2>/dev/null; do sleep 0.05; done
    cat; }} | "$@"
  exit
fi
exec "$@"
""")
    os.chmod(BASE + "/bin/reinject-hold", 0o755)
    os.makedirs(HOLD)
    for root, dirs, files in os.walk(BASE):
        for n in dirs + files:
            os.chown(os.path.join(root, n), mg.pw_uid, mg.pw_gid)
    os.chown(BASE, mg.pw_uid, mg.pw_gid)
    open(BASE + "/mimegate.log", "a").close()
    os.chown(BASE + "/mimegate.log", mg.pw_uid, mg.pw_gid)
    os.makedirs(MAILDIRS, exist_ok=True)
    os.chown(MAILDIRS, vm.pw_uid, vm.pw_gid)
    for path in ("/etc/postfix/main.cf", "/etc/postfix/master.cf", "/etc/postfix/mimegate-test-vmailbox"):
        backups[path] = open(path).read() if os.path.exists(path) else None
    with open("/etc/postfix/mimegate-test-vmailbox", "w") as f:
        for addr in ADDRESSES:
            user, domain = addr.split("@")
            f.write("%s %s/%s/\n" % (addr, domain, user))
    with open("/etc/postfix/main.cf", "w") as f:
        f.write(f"""{MARK}: written by tests/postfix/postfix-test.py
compatibility_level = 3.6
myhostname = gw.test
mydomain = gw.test
myorigin = gw.test
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mydestination =
mynetworks = 127.0.0.0/8
relayhost =
alias_maps =
alias_database =
local_recipient_maps =
biff = no
smtpd_recipient_restrictions = permit_mynetworks, reject
virtual_mailbox_domains = gw.test ms.test pgp.test partner.test sender.test
virtual_mailbox_base = {MAILDIRS}
virtual_mailbox_maps = texthash:/etc/postfix/mimegate-test-vmailbox
virtual_uid_maps = static:{vm.pw_uid}
virtual_gid_maps = static:{vm.pw_gid}
maillog_file = {PFLOG}
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
mimegate_destination_recipient_limit = 1
""")
    with open("/etc/postfix/master.cf", "w") as f:
        f.write(f"""{MARK}
127.0.0.1:{PORT} inet n - n - - smtpd
  -o content_filter=mimegate:dummy
127.0.0.1:{PORT + 1} inet n - n - - smtpd
  -o content_filter=mimegate-many:dummy
127.0.0.1:{PORT + 2} inet n - n - - smtpd
  -o content_filter=mimegate-kill:dummy
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
virtual   unix  -       n       n       -       -       virtual
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
smtp      unix  -       -       n       -       -       smtp
postlog   unix-dgram n  -       n       -       1       postlogd
mimegate  unix  -       n       n       -       10      pipe
  flags=q user=mimegate null_sender=
  argv={BASE}/bin/mimegate filter -c {BASE}/mimegate.conf --queue-id ${{queue_id}} -f ${{sender}} -- ${{recipient}}
mimegate-many unix -    n       n       -       10      pipe
  flags=q user=mimegate null_sender=
  argv={BASE}/bin/mimegate filter -c {BASE}/mimegate.conf --queue-id ${{queue_id}} -f ${{sender}} -- ${{recipient}}
mimegate-kill unix -    n       n       -       10      pipe
  flags=q user=mimegate null_sender=
  argv={BASE}/bin/mimegate filter -c {BASE}/mimegate-kill.conf --queue-id ${{queue_id}} -f ${{sender}} -- ${{recipient}}
""")
    run(["postfix", "check"])
    subprocess.run(["postsuper", "-d", "ALL"], capture_output=True)  # what an earlier run left
    run(["postfix", "start"])


def send(rcpt, data, sender="sender@sender.test", port=PORT):
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
        s.sendmail(sender, rcpt if isinstance(rcpt, list) else [rcpt], data)


def maildir(addr):
    user, domain = addr.split("@")
    return os.path.join(MAILDIRS, domain, user, "new")


def wait_mail(addr, n=1, timeout=30):
    d = maildir(addr)
    end = time.time() + timeout
    while time.time() < end:
        if os.path.isdir(d) and len(os.listdir(d)) >= n:
            time.sleep(0.2)
            return [open(os.path.join(d, f), "rb").read() for f in sorted(os.listdir(d))]
        time.sleep(0.2)
    return [open(os.path.join(d, f), "rb").read() for f in sorted(os.listdir(d))] if os.path.isdir(d) else []


def gpg_open(data):
    """decrypts every armored block in data with the checking copy of the keys; returns the clear bytes"""
    out = b""
    rest = data
    while b"-----BEGIN PGP MESSAGE-----" in rest:
        b = rest.index(b"-----BEGIN PGP MESSAGE-----")
        e = rest.index(b"-----END PGP MESSAGE-----", b) + 25
        r = subprocess.run(["gpg", "--homedir", BASE + "/check", "--batch", "-q", "-d"], input=rest[b:e],
                           capture_output=True)
        out += r.stdout
        rest = rest[e:]
    return out


def recipients_of(data):
    b = data.index(b"-----BEGIN PGP MESSAGE-----")
    e = data.index(b"-----END PGP MESSAGE-----", b) + 25
    r = subprocess.run(["gpg", "--homedir", BASE + "/check", "--batch", "--list-packets"], input=data[b:e],
                       capture_output=True)
    return r.stdout.decode() + r.stderr.decode()


def keyid(addr):
    out = gpg(BASE + "/check", "--with-colons", "--list-keys", addr).stdout.decode()
    return [l.split(":")[4] for l in out.splitlines() if l.startswith("sub:")][0]


def queue():
    out = subprocess.run(["postqueue", "-j"], capture_output=True).stdout.decode()
    return [json.loads(l) for l in out.splitlines() if l.strip()]


def message(to, subject, body_entity):
    return ("From: Sender <sender@sender.test>\r\nTo: <%s>\r\nSubject: %s\r\nMessage-ID: <%s@sender.test>\r\n%s"
            % (to, subject, subject.replace(" ", "-"), body_entity))


def copies_of(addr, message_id):
    """every message in addr's Maildir with that Message-ID"""
    d = maildir(addr)
    names = sorted(os.listdir(d)) if os.path.isdir(d) else []
    copies = [open(os.path.join(d, f), "rb").read() for f in names]
    return [c for c in copies if ("Message-ID: <%s>" % message_id).encode() in c]


def complete(copy, text):
    """the copy is encrypted and gpg decrypts every line of text out of it, up to the last"""
    try:
        clear = gpg_open(copy).replace(b"\r\n", b"\n")
    except ValueError:  # armor that never ends
        return False
    return (b"multipart/encrypted" in copy and text.replace("\r\n", "\n").encode() in clear and
            clear.rstrip().endswith(b"LAST-LINE-MARK-BIG"))


def kill_during_reinjection(mode, text, least, most):
    """step 5 for one mode of bin/reinject-hold: the filter killed while reinjecting; then between least and most
    copies arrive (a reinjection that outlived the filter may make a duplicate), each of them complete"""
    addr = "big@pgp.test"
    subject = "big " + mode
    message_id = subject.replace(" ", "-") + "@sender.test"
    data = message(addr, subject, "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n" + text)
    pid_file = HOLD + "/filter.pid"
    open(HOLD + "/" + mode, "w").close()
    send(addr, data, port=PORT + 2)
    end = time.time() + 60
    while time.time() < end and not (os.path.exists(pid_file) and open(pid_file).read().strip()):
        time.sleep(0.05)
    if not check(os.path.exists(pid_file), "%s: the filter reached its reinjection" % mode):
        return
    os.kill(int(open(pid_file).read()), signal.SIGKILL)
    killed = time.time()
    os.unlink(HOLD + "/" + mode)  # the retry goes through
    os.unlink(pid_file)
    # Postfix defers a filter that died by a signal: the message is retried, not lost
    qid, deferred = None, None
    end = time.time() + 30
    while time.time() < end and deferred is None:
        log = open(PFLOG).read()
        m = re.search(r"([0-9A-F]+): message-id=<%s>" % re.escape(message_id), log)
        qid = m.group(1) if m else None
        deferred = qid and re.search(r"%s: to=<%s>, relay=mimegate-kill.*status=deferred \(Command died with signal 9"
                                     % (qid, re.escape(addr)), log)
        time.sleep(0.2)
    check(deferred is not None, "%s: Postfix deferred the killed run (Command died with signal 9)" % mode)
    # whatever a reinjection that outlived the filter commits, it has committed by now (the sleep is 3 s)
    time.sleep(max(1, killed + 5 - time.time()))
    early = copies_of(addr, message_id)
    check(all(complete(c, text) for c in early),
          "%s: the %d copies in the Maildir before postqueue -f (the orphan's, Postfix's own retry) are complete"
          % (mode, len(early)))
    run(["postqueue", "-f"])
    end = time.time() + 30
    while time.time() < end and (len(copies_of(addr, message_id)) < least or
                                 any(q.get("queue_id") == qid for q in queue())):
        time.sleep(0.2)
    time.sleep(1)
    copies = copies_of(addr, message_id)
    print("     %s: %d bytes sent, copies of" % (mode, len(data)), [len(c) for c in copies], "bytes delivered")
    check(least <= len(copies) <= most and not any(q.get("queue_id") == qid for q in queue()),
          "%s: after postqueue -f the deferred message is delivered (%d to %d copies)" % (mode, least, most))
    check(all(complete(c, text) for c in copies),
          "%s: every copy in the Maildir is complete (gpg decrypts every line)" % mode)


def main():
    mg = ensure_user("mimegate", BASE)
    vm = ensure_user("mgvmail", MAILDIRS)
    stop_postfix()
    shutil.rmtree(BASE, ignore_errors=True)
    shutil.rmtree(MAILDIRS, ignore_errors=True)
    os.makedirs(BASE)
    make_keys()
    configure(mg, vm)
    started = time.time()
    entity = "Content-Type: text/plain; charset=utf-8\r\n\r\nHello %s\r\n"

    # 1. PGP/MIME (to the gateway's alice) for an inline-only recipient: PGP/Inline with the recipient's key
    armored = gpg(BASE + "/check", "-a", "-e", "-r", "alice@gw.test", inp=(entity % "MARK-INLINE").encode()).stdout
    pgp_mime = message("inline@ms.test", "pgp mime in",
                       "MIME-Version: 1.0\r\nContent-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\";"
                       " boundary=b\r\n\r\n--b\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n--b\r\n"
                       "Content-Type: application/octet-stream\r\n\r\n" + armored.decode() + "\r\n--b--\r\n")
    send("inline@ms.test", pgp_mime)
    # 2. S/MIME (to carol, held) for bob, who has only an OpenPGP key
    smime = run(["openssl", "cms", "-encrypt", "-aes256", BASE + "/ca/carol.pem"],
                input=(entity % "MARK-SMIME").encode()).stdout.decode()
    send("bob@pgp.test", message("bob@pgp.test", "smime in", smime))
    # 3. plain text to the required partner: with a key, and without one
    plain = message("keyed@partner.test", "plain to partner",
                    "MIME-Version: 1.0\r\n" + entity % "MARK-PARTNER")
    send("keyed@partner.test", plain)
    send("nokey@partner.test", plain.replace("keyed@", "nokey@"))

    mails = wait_mail("inline@ms.test")
    if check(len(mails) == 1, "PGP/MIME for the inline-only recipient was delivered"):
        m = mails[0]
        check(b"multipart/encrypted" not in m and b"-----BEGIN PGP MESSAGE-----" in m,
              "it arrived as PGP/Inline (armor in text/plain, no multipart/encrypted)")
        check(keyid("inline@ms.test") in recipients_of(m), "encrypted to inline@ms.test's subkey (gpg --list-packets)")
        check(b"Hello MARK-INLINE" in gpg_open(m), "gpg decrypts it to the original text")
    mails = wait_mail("bob@pgp.test")
    if check(len(mails) == 1, "S/MIME for the OpenPGP-only recipient was delivered"):
        m = mails[0]
        check(b"Content-Type: multipart/encrypted" in m and b"application/pkcs7-mime" not in m,
              "it arrived as PGP/MIME")
        check(keyid("bob@pgp.test") in recipients_of(m), "encrypted to bob's subkey")
        check(b"MARK-SMIME" in gpg_open(m), "gpg decrypts it to the original text")
    mails = wait_mail("keyed@partner.test")
    if check(len(mails) == 1, "plain text for the required partner with a key was delivered"):
        m = mails[0]
        check(b"MARK-PARTNER" not in m and b"multipart/encrypted" in m, "it arrived encrypted, never in clear")
        check(b"MARK-PARTNER" in gpg_open(m), "gpg decrypts it")
    bounces = wait_mail("sender@sender.test")
    check(not os.path.isdir(maildir("nokey@partner.test")), "nothing reached the partner without a key")
    if check(len(bounces) == 1, "the sender got a bounce for the partner without a key"):
        b = bounces[0].decode(errors="replace")
        check("nokey@partner.test" in b and "5.7.1" in b and "encryption is required" in b,
              "the bounce names the recipient and says 5.7.1 encryption is required")
        check("MARK-PARTNER" not in b.split("Content-Description: Undelivered Message")[0],
              "the bounce's report part does not quote the text")

    # 3b. the same through a transport that passes both recipients to one run: the one with a key gets it, the
    #     sender gets mimegate's own DSN for the other (from the null sender, through Postfix's sendmail -f '')
    send(["keyed@partner.test", "nokey@partner.test"], plain.replace("Subject: plain to partner", "Subject: two"),
         port=PORT + 1)
    mails = wait_mail("keyed@partner.test", 2)
    check(len(mails) == 2 and b"MARK-PARTNER" in gpg_open(mails[-1]) and b"MARK-PARTNER" not in mails[-1],
          "one run for two recipients: the partner with a key got it encrypted")
    bounces = wait_mail("sender@sender.test", 2)
    if check(len(bounces) == 2, "the sender got mimegate's delivery status notification"):
        dsn = [b for b in bounces if b"Subject: Undelivered Mail Returned to Sender (encryption required)" in b]
        check(len(dsn) == 1 and b"Final-Recipient: rfc822; nokey@partner.test" in dsn[0] and
              b"Return-Path: <>" in dsn[0] and b"keyed@partner.test" not in dsn[0].split(b"text/rfc822-headers")[0],
              "the DSN (null sender) names only the refused recipient, with 5.7.1")
    check(not os.path.isdir(maildir("nokey@partner.test")), "still nothing reached the partner without a key")

    # 4. the GnuPG home unreadable: deferred in the queue, delivered after the fix and a flush
    home = BASE + "/gnupg"
    os.chmod(home, 0o000)
    send("bob@pgp.test", message("bob@pgp.test", "while broken", "MIME-Version: 1.0\r\n" + entity % "MARK-DEFER"))
    deferred = None
    end = time.time() + 30
    while time.time() < end and deferred is None:
        for q in queue():
            if q.get("queue_name") == "deferred":
                deferred = q
        time.sleep(0.3)
    if check(deferred is not None, "with the GnuPG home unreadable the message is deferred (postqueue -j)"):
        reason = " ".join(r.get("delay_reason", "") for r in deferred.get("recipients", []))
        print("     delay_reason:", reason)
        check("GnuPG home" in reason and "deferred" in reason, "the delay reason is the filter's line")
        check("dsn=4.7.0, status=deferred (mimegate filter: GnuPG home" in open(PFLOG).read(),
              "Postfix took the status 4.7.0 from the filter's first line")
    check(len(os.listdir(maildir("bob@pgp.test"))) == 1, "nothing was delivered while deferred")
    os.chmod(home, 0o700)
    run(["postqueue", "-f"])
    mails = wait_mail("bob@pgp.test", 2)
    if check(len(mails) == 2, "after the fix and postqueue -f the message is delivered"):
        check(any(b"MARK-DEFER" in gpg_open(m) for m in mails) and not any(b"MARK-DEFER" in m for m in mails),
              "encrypted for bob, as it would have been")
    check(not queue(), "the queue is empty at the end")

    # 5. a 2 MB message, the filter killed by SIGKILL during its reinjection (what Postfix's time limit, the OOM killer
    #    or kill -9 do; nothing the filter can catch): never a truncated or empty copy in the Maildir
    text = "".join("big %07d of a message that arrives whole or not at all MARK-BIG\r\n" % i for i in range(33000))
    text += "LAST-LINE-MARK-BIG\r\n"
    for mode, least, most in (("sleep", 1, 1), ("read", 1, 2)):
        kill_during_reinjection(mode, text, least, most)
    check(not queue(), "the queue is empty after the killed runs were retried")

    # the filter's log: one record per group and message, with Postfix's queue id, and never a body
    log = open(BASE + "/mimegate.log").read()
    records = [json.loads(l) for l in log.splitlines() if l.strip()]
    check(all(r.get("queue_id") for r in records), "every log record carries Postfix's queue id")
    check(any(r["record"] == "group" and r["form"] == "pgp-inline" for r in records), "the log has the pgp-inline group")
    check(not any(m in log for m in ("MARK-INLINE", "MARK-SMIME", "MARK-PARTNER", "MARK-DEFER", "MARK-BIG")),
          "the log holds no message text")
    print("     %d messages through Postfix in %.1f s" % (7, time.time() - started))


try:
    main()
except Exception as e:  # a broken setup is a failure, with what Postfix said
    failures.append(repr(e))
    print("FAIL", repr(e))
    if isinstance(e, subprocess.CalledProcessError):
        print((e.stdout or b"").decode(errors="replace"), (e.stderr or b"").decode(errors="replace"))
finally:
    if failures and os.path.exists(PFLOG):
        print("---- Postfix log ----")
        print(open(PFLOG).read()[-6000:])
    restore()
print("%d failure(s)" % len(failures))
sys.exit(1 if failures else 0)
