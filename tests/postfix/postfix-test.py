#!/usr/bin/env python3
"""postfix-test.py MIMEGATE | --packaged - mimegate filter in a real Postfix on 127.0.0.1 (README "Postfix").

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
     deferred message is delivered after postqueue -f;
  6. plain text to a `required` partner whose certificate exists only in an LDAP directory (a slapd the test starts
     on 127.0.0.1 with tests/ldaptest.py; the filter's [directory] names it, its CA is a second root in ca/) arrives
     as S/MIME that openssl cms opens with the partner's key, never in clear; the filter's shared cache file is
     0600 and the user's.

Then the same Postfix runs `mimegate serve` as FILTER_README's advanced content filter (README "Postfix: the serve
face"): an inbound smtpd on 127.0.0.1:2528 whose content_filter is the lmtp(8) transport mimegate-lmtp to serve on
127.0.0.1:10025 (started by the test as the unprivileged user), which reinjects into a second smtpd on 127.0.0.1:10026
(-o content_filter= and FILTER_README's overrides), delivering into fresh Maildirs:

  S0. `mimegate serve --check` says what it would listen on and reinject to, and exits 0;
  S1. PGP/MIME -> PGP/Inline, S/MIME -> PGP/MIME, required with a key -> encrypted (decrypted with gpg); required
      without a key -> Postfix's own bounce from MAILER-DAEMON with serve's 5.7.1; of two recipients in one LMTP
      transaction the refused one is bounced by Postfix and the other delivered (no DSN of mimegate's own);
  S2. the GnuPG home unreadable -> deferred (4.7.0); fixed on disk + postqueue -f -> delivered by the same serve
      process (a new generation, no restart);
  S3. the reinjection smtpd removed from master.cf (postfix reload) -> deferred (4.4.1); back + postqueue -f ->
      delivered;
  S4. serve killed with SIGKILL while 200 mixed messages flow; restarted + postqueue -f -> every message delivered
      (counted by Message-ID per recipient; duplicates reported), every copy complete (decrypted to its last line),
      none in clear for the required partner;
  S5. SIGTERM stops serve with exit 0 (under ASan: no sanitizer report); its log has the queue ids and no text.

Exit 77 (skipped) unless root with Postfix installed and either MIMEGATE_POSTFIX_TEST=1 or no Postfix configured yet
(the test writes /etc/postfix/main.cf and master.cf, and puts back what was there). Talks only to 127.0.0.1.

MIMEGATE is copied into the test's own directory and run with the test's configuration, GnuPG home and X.509 store
(the user mimegate is created with home BASE when missing). With --packaged instead, the installed Debian package is
tested as an admin runs it (.ci/package): /usr/bin/mimegate itself (no copy) for pipe(8) and serve, as the package's
user mimegate (which must exist), with no -c (the compiled-in /etc/mimegate/mimegate.conf, which the test writes),
the GnuPG home /var/lib/mimegate/gnupg and the X.509 store /etc/mimegate/x509 (the test's keys go there). Those three
are copied (cp -a) to PACKAGE_BACKUP first and put back on every way out, checked byte for byte, owner and mode; a
backup an earlier run left behind stops the test until an admin has looked at it. Only step 5's reinject variant
has a configuration of its own (-c BASE/mimegate-kill.conf, with the package's GnuPG home and X.509 store)."""
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
import socket
import stat
import subprocess
import sys
import threading
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import ldaptest  # noqa: E402  (tests/ldaptest.py: slapd and an openssl CA for step 6)

PACKAGED = sys.argv[1:2] == ["--packaged"]
if PACKAGED and len(sys.argv) > 2:
    print("usage: postfix-test.py MIMEGATE | --packaged (which tests /usr/bin/mimegate)", file=sys.stderr)
    sys.exit(2)
MIMEGATE = "/usr/bin/mimegate" if PACKAGED else sys.argv[1] if len(sys.argv) > 1 else os.environ.get("MIMEGATE_BIN", "")
BASE = "/var/lib/mimegate-test"
# what the filter and serve run and read: the test's own copies, or (--packaged) the installed package's paths
BIN = MIMEGATE if PACKAGED else BASE + "/bin/mimegate"
CONF = "/etc/mimegate/mimegate.conf" if PACKAGED else BASE + "/mimegate.conf"
SERVE_CONF = CONF if PACKAGED else BASE + "/serve.conf"
CONF_ARGS = [] if PACKAGED else ["-c", CONF]  # packaged: the compiled-in default, as an admin's master.cf has it
SERVE_CONF_ARGS = [] if PACKAGED else ["-c", SERVE_CONF]
GNUPG = "/var/lib/mimegate/gnupg" if PACKAGED else BASE + "/gnupg"
X509 = "/etc/mimegate/x509" if PACKAGED else BASE + "/x509"
MG_HOME = "/var/lib/mimegate" if PACKAGED else BASE
PACKAGE_PATHS = (CONF, GNUPG, X509)
PACKAGE_BACKUP = "/var/lib/mimegate-test.package-backup"
MAILDIRS = "/var/mail/mimegate-test"
PFLOG = "/var/log/mimegate-test-postfix.log"
MARK = "# mimegate integration test"
PORT = 2525
ADDRESSES = ("inline@ms.test", "bob@pgp.test", "keyed@partner.test", "nokey@partner.test", "sender@sender.test",
             "alice@gw.test", "big@pgp.test", "plain@sender.test", "dir@partner.test")
SLAPD = []  # step 6's slapd, stopped by restore()
DIRECTORY_CONF = [""]  # step 6: the [directory] group of the pipe filter's configuration
HOLD = BASE + "/hold"  # step 5: the reinject wrapper holds sendmail back while a file named after its mode is here
SERVE_IN = PORT + 3  # the inbound smtpd whose content filter is mimegate serve
SERVE = 10025  # mimegate serve's listen (its default); the reinjection smtpd is SERVE + 1 (serve's reinject default)
# README "Postfix: the serve face" shows these master.cf lines as they are (the test checks that it does)
SERVE_INBOUND_CF = f"""127.0.0.1:{SERVE_IN} inet n - n - - smtpd
  -o content_filter=mimegate-lmtp:inet:127.0.0.1:{SERVE}
mimegate-lmtp unix - - n - 10 lmtp
  -o lmtp_send_xforward_command=yes
  -o disable_mime_output_conversion=yes
"""
SERVE_REINJECT_CF = f"""127.0.0.1:{SERVE + 1} inet n - n - 10 smtpd
  -o content_filter=
  -o receive_override_options=no_unknown_recipient_checks,no_header_body_checks,no_milters
  -o smtpd_helo_restrictions=
  -o smtpd_client_restrictions=
  -o smtpd_sender_restrictions=
  -o smtpd_relay_restrictions=
  -o smtpd_recipient_restrictions=permit_mynetworks,reject
  -o mynetworks=127.0.0.0/8
  -o smtpd_authorized_xforward_hosts=127.0.0.0/8
"""
README = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "README")
failures = []
serve_proc = None  # the running `mimegate serve`


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


def fail_setup(why):
    """--packaged: the package is not there as the test needs it; a failure, not a skip"""
    print("FAIL", why)
    sys.exit(1)


if os.geteuid() != 0:
    skip("needs root (Postfix configuration and an unprivileged pipe(8) user)")
if not shutil.which("postfix") or not os.path.exists("/usr/sbin/sendmail"):
    skip("Postfix is not installed (.ci/run installs it)")
if PACKAGED and not os.access(MIMEGATE, os.X_OK):
    fail_setup("--packaged: there is no /usr/bin/mimegate (is the package installed?)")
if not MIMEGATE or not os.access(MIMEGATE, os.X_OK):
    skip("no mimegate binary given")
main_cf = "/etc/postfix/main.cf"
if os.environ.get("MIMEGATE_POSTFIX_TEST") != "1" and os.path.exists(main_cf) and MARK not in open(main_cf).read():
    skip("a Postfix is configured here; set MIMEGATE_POSTFIX_TEST=1 to let this test take it over (it restores it)")
if PACKAGED:
    try:
        print("     packaged: /usr/bin/mimegate as the user mimegate (home %s)" % pwd.getpwnam("mimegate").pw_dir)
    except KeyError:
        fail_setup("--packaged: there is no user mimegate (the package's postinst creates it; is mimegate installed?)")
    for path, isdir in ((CONF, False), (GNUPG, True), (X509, True)):
        if not (os.path.isdir(path) if isdir else os.path.isfile(path)):
            fail_setup("--packaged: %s is missing (is the package installed?)" % path)
    if os.path.lexists(PACKAGE_BACKUP):
        fail_setup("--packaged: %s is there: an earlier run's copy of %s that it did not put back; restore it "
                   "(cp -a) or remove it, then run again" % (PACKAGE_BACKUP, ", ".join(PACKAGE_PATHS)))
    # SIGTERM (a CI timeout) ends the test through the finally below, which puts the package's files back
    signal.signal(signal.SIGTERM, lambda sig, frame: sys.exit(128 + sig))


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
package_saved = {}  # --packaged: path -> its state (tree_state) when backed up to PACKAGE_BACKUP


def tree_state(path):
    """every file under path (path itself included): relative name, type and mode, owner, group, and its bytes (or
    link target); what a restore has to give back"""
    out = []
    for root, dirs, files in os.walk(path) if os.path.isdir(path) else [(os.path.dirname(path), [],
                                                                        [os.path.basename(path)])]:
        dirs.sort()
        names = [root] if root == path else []
        names += [os.path.join(root, n) for n in sorted(dirs + files)]
        for name in names:
            st = os.lstat(name)
            if stat.S_ISREG(st.st_mode):
                data = open(name, "rb").read()
            elif stat.S_ISLNK(st.st_mode):
                data = os.readlink(name)
            else:
                data = None
            out.append((os.path.relpath(name, path), st.st_mode, st.st_uid, st.st_gid, data))
    return out


def backup_package():
    """--packaged: cp -a of the conffile, the GnuPG home and the X.509 store to PACKAGE_BACKUP, before any change"""
    os.makedirs(PACKAGE_BACKUP, mode=0o700)
    for path in PACKAGE_PATHS:
        state = tree_state(path)
        run(["cp", "-a", path, PACKAGE_BACKUP + "/" + os.path.basename(path)])
        package_saved[path] = state
    print("     packaged: %s backed up to %s" % (", ".join(PACKAGE_PATHS), PACKAGE_BACKUP))


def restore_package():
    """--packaged: puts back what backup_package copied, byte for byte with owner and mode; the backup is removed
    only when every path is back as it was"""
    back = True
    for path, state in package_saved.items():
        saved = PACKAGE_BACKUP + "/" + os.path.basename(path)
        try:
            if os.path.isdir(saved):  # a directory: what the test added goes with it
                shutil.rmtree(path, ignore_errors=True)
            run(["cp", "-a", saved, path])  # the conffile: written in place
            same = tree_state(path) == state
        except Exception as e:
            print("     packaged: restoring %s: %r" % (path, e))
            same = False
        back = check(same, "packaged: %s is back as it was (bytes, owner, mode)" % path) and back
    if back:
        shutil.rmtree(PACKAGE_BACKUP, ignore_errors=True)
    elif package_saved:
        print("     packaged: the backup stays in %s" % PACKAGE_BACKUP)


def restore():
    for slapd in SLAPD:
        slapd.stop()
    stop_serve()
    stop_postfix()
    for path, data in backups.items():
        if data is None:
            if os.path.exists(path):
                os.unlink(path)
        else:
            with open(path, "w") as f:
                f.write(data)
    for home in (GNUPG,):
        if os.path.isdir(home):
            subprocess.run(["runuser", "-u", "mimegate", "--", "gpgconf", "--homedir", home, "--kill", "all"],
                           capture_output=True)
    if os.path.isdir(BASE + "/check"):
        subprocess.run(["gpgconf", "--homedir", BASE + "/check", "--kill", "all"], capture_output=True)
    if PACKAGED:
        restore_package()
    if not failures:
        shutil.rmtree(BASE, ignore_errors=True)
        shutil.rmtree(MAILDIRS, ignore_errors=True)
        shutil.rmtree(MAILDIRS + "-pipe", ignore_errors=True)


def gpg(home, *args, inp=None):
    return run(["gpg", "--homedir", home, "--batch", "--yes", "--pinentry-mode", "loopback", "--passphrase", "",
                "--trust-model", "always"] + list(args), input=inp)


def make_keys():
    home = GNUPG
    os.makedirs(home, mode=0o700, exist_ok=PACKAGED)  # the package's is there (and backed up)
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
    x = X509
    for sub in ("ca", "certs", "private"):
        os.makedirs(x + "/" + sub, mode=0o700, exist_ok=PACKAGED)
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
    if PACKAGED:  # outside BASE (which configure gives to the user): the keys the filter reads are its own
        mg = pwd.getpwnam("mimegate")
        for root, dirs, files in os.walk(home):
            for n in dirs + files:
                os.chown(os.path.join(root, n), mg.pw_uid, mg.pw_gid)
        for f in ("ca/root.pem", "certs/carol.pem", "private/carol.key"):
            os.chown(x + "/" + f, mg.pw_uid, mg.pw_gid)


GATEWAY_CONF = ("[gateway]\ngnupg-home = %s\nx509-store = %s\ntrust-model = always\n"
                "authserv-id = gw.test\nlog = json:%s/%s\n%s"
                "[domain partner.test]\nencrypt = required\n[domain ms.test]\ninline-only = true\n")
# the serve part: the same gateway and policy, its own log, the [serve] group with the defaults spelt out
SERVE_CONF_TEXT = (GATEWAY_CONF % (GNUPG, X509, BASE, "serve.log", "") +
                   "[serve]\nlisten = inet:127.0.0.1:%d\nreinject = smtp:127.0.0.1:%d\n" % (SERVE, SERVE + 1))


def configure(mg, vm):
    os.makedirs(BASE + "/bin")
    if not PACKAGED:
        shutil.copy(MIMEGATE, BASE + "/bin/mimegate")
    for d in (BASE, BASE + "/bin"):
        os.chmod(d, 0o755)
    if not PACKAGED:
        os.chmod(BASE + "/bin/mimegate", 0o755)
    with open(CONF, "w") as f:  # packaged: the conffile (backed up); serve_main writes SERVE_CONF_TEXT there
        f.write(GATEWAY_CONF % (GNUPG, X509, BASE, "mimegate.log", DIRECTORY_CONF[0]))
    # step 5: the same, reinjecting through a wrapper that can hold sendmail back so that the filter is killed
    # during its reinjection. Its parent is the filter ($PPID); sendmail runs as the wrapper's child, so that only the
    # wrapper is the filter's direct child (tied to its life), as the shell of a reinject command line would be.
    with open(BASE + "/mimegate-kill.conf", "w") as f:
        f.write(GATEWAY_CONF % (GNUPG, X509, BASE, "mimegate.log",
                                "reinject = %s/bin/reinject-hold /usr/sbin/sendmail -G -i\n" % BASE))
    if not PACKAGED:
        with open(SERVE_CONF, "w") as f:
            f.write(SERVE_CONF_TEXT)
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
    for log in ("/mimegate.log", "/serve.log"):
        open(BASE + log, "a").close()
        os.chown(BASE + log, mg.pw_uid, mg.pw_gid)
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
    write_master_cf(reinjection=True)
    open(PFLOG, "w").close()  # this run's log only: the checks look messages up in it
    run(["postfix", "check"])
    subprocess.run(["postsuper", "-d", "ALL"], capture_output=True)  # what an earlier run left
    run(["postfix", "start"])


def directory_setup():
    """step 6: a slapd on 127.0.0.1 holding dir@partner.test's certificate (from a CA of its own, whose root becomes
    a second trusted root in ca/); the certificate is nowhere in certs/"""
    why = ldaptest.available()
    if why:
        raise RuntimeError("step 6 needs slapd: " + why)
    ca = ldaptest.TestCA(BASE + "/ldap-ca")
    cert, key, der = ca.issue("dir", "Dir Partner", "dir@partner.test")
    shutil.copy(ca.cert, X509 + "/ca/ldap-root.pem")
    if PACKAGED:
        mg = pwd.getpwnam("mimegate")
        os.chown(X509 + "/ca/ldap-root.pem", mg.pw_uid, mg.pw_gid)
    slapd = ldaptest.Slapd(BASE + "/slapd")
    SLAPD.append(slapd)
    slapd.start()
    slapd.add_base()
    slapd.add_person("dir", "dir@partner.test", usercert_ders=[der])
    # the first section of the [gateway] format's extra part: a group of its own before the policy groups
    DIRECTORY_CONF[0] = "[directory]\nuri = %s\nbase = dc=test\ncache-file = %s/directory.cache\n" % (slapd.uri, BASE)
    return cert, key


def write_master_cf(reinjection):
    """master.cf: the pipe transports, the serve face, and (with @reinjection) serve's reinjection smtpd"""
    c = "".join(a + " " for a in CONF_ARGS)
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
  argv={BIN} filter {c}--queue-id ${{queue_id}} -f ${{sender}} -- ${{recipient}}
mimegate-many unix -    n       n       -       10      pipe
  flags=q user=mimegate null_sender=
  argv={BIN} filter {c}--queue-id ${{queue_id}} -f ${{sender}} -- ${{recipient}}
mimegate-kill unix -    n       n       -       10      pipe
  flags=q user=mimegate null_sender=
  argv={BIN} filter -c {BASE}/mimegate-kill.conf --queue-id ${{queue_id}} -f ${{sender}} -- ${{recipient}}
""" + SERVE_INBOUND_CF + (SERVE_REINJECT_CF if reinjection else ""))


def send(rcpt, data, sender="sender@sender.test", port=PORT):
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
        s.sendmail(sender, rcpt if isinstance(rcpt, list) else [rcpt], data)


def send_queued(rcpt, data, sender="sender@sender.test", port=PORT):
    """send() to one recipient; Returns: the queue id of smtpd's "250 2.0.0 Ok: queued as ID" (None if not named)"""
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
        s.ehlo("client.test")
        code, text = s.mail(sender)
        if code == 250:
            code, text = s.rcpt(rcpt)
        if code == 250:
            code, text = s.data(data)
        if code != 250:
            raise smtplib.SMTPResponseException(code, text)
        m = re.search(rb"queued as ([0-9A-Za-z]+)", text)
        return m.group(1).decode() if m else None


def daemon_pids(name):
    """the pids of the running processes whose command name is @name (Postfix daemons: qmgr, smtpd, ...)"""
    pids = set()
    for d in os.listdir("/proc"):
        try:
            with open("/proc/%s/comm" % d) as f:
                if d.isdigit() and f.read().strip() == name:
                    pids.add(int(d))
        except OSError:
            pass
    return pids


def postfix_reload():
    """postfix reload, returning once the old queue manager has exited. Until it has, it still holds the qmgr trigger
    fifo and may take a new message into the active queue and then exit (master disconnect) without delivering it;
    the new qmgr scanned the active queue at its start already, so such a message stays there until the next qmgr
    start (S3 once waited out its 30 s that way: the message neither deferred nor delivered)"""
    old = daemon_pids("qmgr")
    t = time.time()
    run(["postfix", "reload"])
    end = t + 30
    while time.time() < end and daemon_pids("qmgr") & old:
        time.sleep(0.05)
    left = daemon_pids("qmgr") & old
    print("     postfix reload: the old qmgr %s %s after %.2f s" % (sorted(old), "still runs" if left else "exited",
                                                                   time.time() - t))


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
    mg = pwd.getpwnam("mimegate") if PACKAGED else ensure_user("mimegate", BASE)  # packaged: checked above
    vm = ensure_user("mgvmail", MAILDIRS)
    if PACKAGED:
        backup_package()
    stop_postfix()
    shutil.rmtree(BASE, ignore_errors=True)
    shutil.rmtree(MAILDIRS, ignore_errors=True)
    shutil.rmtree(MAILDIRS + "-pipe", ignore_errors=True)
    os.makedirs(BASE)
    make_keys()
    dir_cert, dir_key = directory_setup()
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
    home = GNUPG
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

    # 6. a required partner whose certificate only the directory holds: S/MIME that its key opens, never clear
    check(not any("dir" in f for f in os.listdir(X509 + "/certs")), "dir@partner.test's certificate is not in certs/")
    send("dir@partner.test", message("dir@partner.test", "to the directory's partner",
                                     "MIME-Version: 1.0\r\n" + entity % "MARK-DIRECTORY"))
    mails = wait_mail("dir@partner.test")
    if check(len(mails) == 1, "plain text for the partner known only to the directory was delivered"):
        m = mails[0]
        check(re.search(rb"(?im)^Content-Type:\s*application/pkcs7-mime", m) is not None and b"MARK-DIRECTORY" not in m,
              "it arrived as S/MIME, never in clear")
        r = subprocess.run(["openssl", "cms", "-decrypt", "-inkey", dir_key, "-recip", dir_cert],
                           input=m.replace(b"\r\n", b"\n"), capture_output=True)
        check(r.returncode == 0 and b"Hello MARK-DIRECTORY" in r.stdout,
              "openssl cms -decrypt with the partner's key opens it to the original text")
    cache = BASE + "/directory.cache"
    st = os.stat(cache) if os.path.exists(cache) else None
    mg_uid = pwd.getpwnam("mimegate").pw_uid
    check(st is not None and stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == mg_uid,
          "the filter's directory cache file is 0600 and the mimegate user's")
    check('filter="(mail=dir@partner.test)"' in SLAPD[0].log_text(), "slapd was asked for the partner's address")

    # the filter's log: one record per group and message, with Postfix's queue id, and never a body
    log = open(BASE + "/mimegate.log").read()
    records = [json.loads(l) for l in log.splitlines() if l.strip()]
    check(all(r.get("queue_id") for r in records), "every log record carries Postfix's queue id")
    check(any(r["record"] == "group" and r["form"] == "pgp-inline" for r in records), "the log has the pgp-inline group")
    check(not any(m in log for m in ("MARK-INLINE", "MARK-SMIME", "MARK-PARTNER", "MARK-DEFER", "MARK-BIG",
                                     "MARK-DIRECTORY")),
          "the log holds no message text")
    print("     %d messages through Postfix in %.1f s" % (8, time.time() - started))



# ---- the serve face: mimegate serve as FILTER_README's advanced content filter ----

def listening(port):
    """whether something accepts connections on 127.0.0.1:port"""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return True
    except OSError:
        return False


def start_serve():
    """mimegate serve as the unprivileged user (its stderr to serve.stderr); Returns: whether it started and listens"""
    global serve_proc
    mg = pwd.getpwnam("mimegate")
    env = {"PATH": "/usr/bin:/bin", "HOME": MG_HOME, "LC_ALL": "C.UTF-8"}
    for k in ("ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS"):
        if k in os.environ:
            env[k] = os.environ[k]
    started = open(BASE + "/serve.log").read().count('"outcome":"started"')
    with open(BASE + "/serve.stderr", "ab") as err:
        serve_proc = subprocess.Popen([BIN, "serve"] + SERVE_CONF_ARGS, user=mg.pw_uid,
                                      group=mg.pw_gid, extra_groups=[], env=env, cwd=BASE,
                                      stdin=subprocess.DEVNULL, stdout=err, stderr=err)
    end = time.time() + 30
    while (time.time() < end and serve_proc.poll() is None and
           open(BASE + "/serve.log").read().count('"outcome":"started"') == started):
        time.sleep(0.05)
    return serve_proc.poll() is None and listening(SERVE)


def stop_serve(sig=signal.SIGTERM, timeout=40):
    """stops the serve this test started; Returns: its exit status (None when it had to be killed)"""
    global serve_proc
    if serve_proc is None:
        return None
    p, serve_proc = serve_proc, None
    if p.poll() is None:
        p.send_signal(sig)
    try:
        return p.wait(timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        return None


def serve_stderr():
    return open(BASE + "/serve.stderr", errors="replace").read() if os.path.exists(BASE + "/serve.stderr") else ""


def wait_queue_entry(message_id, timeout=30, queue_id=None):
    """the deferred queue entry (postqueue -j) of the message with @queue_id (as smtpd's reply named it: see
    send_queued) or else with that Message-ID (as cleanup logged it), once Postfix has deferred it. On a timeout, where
    the message is instead (queue and log lines) is printed"""
    end = time.time() + timeout
    seen = None
    while time.time() < end:
        qid = queue_id
        if qid is None:
            m = re.search(r"([0-9A-F]+): message-id=<%s>" % re.escape(message_id), open(PFLOG).read())
            qid = m.group(1) if m else None
        if qid is not None:
            for q in queue():
                if q.get("queue_id") == qid:
                    seen = q
                    if q.get("queue_name") == "deferred":
                        return q
        time.sleep(0.2)
    print("     not deferred after %d s: %s is %s" % (timeout, queue_id or message_id,
                                                        "in the %s queue" % seen.get("queue_name") if seen
                                                        else "not in the queue"))
    if queue_id is not None:
        for line in open(PFLOG).read().splitlines():
            if queue_id in line:
                print("     log: " + line[:300])
    return None


def wait_empty_queue(timeout=30):
    end = time.time() + timeout
    while time.time() < end and queue():
        time.sleep(0.2)
    return not queue()


def maildir_index(addrs):
    """{(addr, message_id): [copies]} for every message in those Maildirs"""
    index = {}
    for addr in addrs:
        d = maildir(addr)
        for name in sorted(os.listdir(d)) if os.path.isdir(d) else []:
            data = open(os.path.join(d, name), "rb").read()
            m = re.search(rb"^Message-ID: <([^>]*)>", data, re.M | re.I)
            index.setdefault((addr, m.group(1).decode() if m else None), []).append(data)
    return index


def serve_readme():
    """README's serve section holds this test's master.cf lines as they are (so that they work when pasted)"""
    if not os.path.exists(README):
        return
    text = open(README).read()
    for block, what in ((SERVE_INBOUND_CF, "the inbound smtpd and mimegate-lmtp"),
                        (SERVE_REINJECT_CF, "the reinjection smtpd")):
        indented = "".join("    " + l + "\n" for l in block.splitlines())
        check(indented in text, "README's serve section shows the master.cf lines of %s as the test uses them" % what)


def serve_basic(entity):
    """S1: the pipe part's conversions and refusals through serve, with Postfix's own bounces"""
    armored = gpg(BASE + "/check", "-a", "-e", "-r", "alice@gw.test", inp=(entity % "SV-INLINE").encode()).stdout
    send("inline@ms.test", message("inline@ms.test", "serve pgp mime in",
                                   "MIME-Version: 1.0\r\nContent-Type: multipart/encrypted; "
                                   "protocol=\"application/pgp-encrypted\"; boundary=b\r\n\r\n--b\r\n"
                                   "Content-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n--b\r\n"
                                   "Content-Type: application/octet-stream\r\n\r\n" + armored.decode() +
                                   "\r\n--b--\r\n"), port=SERVE_IN)
    smime = run(["openssl", "cms", "-encrypt", "-aes256", BASE + "/ca/carol.pem"],
                input=(entity % "SV-SMIME").encode()).stdout.decode()
    send("bob@pgp.test", message("bob@pgp.test", "serve smime in", smime), port=SERVE_IN)
    plain = message("keyed@partner.test", "serve plain to partner", "MIME-Version: 1.0\r\n" + entity % "SV-PARTNER")
    send("keyed@partner.test", plain, port=SERVE_IN)
    send("nokey@partner.test", plain.replace("keyed@", "nokey@").replace("serve-plain", "serve-nokey"), port=SERVE_IN)
    # two recipients in one LMTP transaction (lmtp's recipient limit is 50): a reply for each after DATA
    send(["keyed@partner.test", "nokey@partner.test"],
         plain.replace("serve plain to partner", "serve two").replace("serve-plain-to-partner", "serve-two"),
         port=SERVE_IN)

    mails = wait_mail("inline@ms.test")
    if check(len(mails) == 1, "serve: PGP/MIME for the inline-only recipient was delivered"):
        m = mails[0]
        check(b"multipart/encrypted" not in m and b"-----BEGIN PGP MESSAGE-----" in m,
              "serve: it arrived as PGP/Inline (armor in text/plain, no multipart/encrypted)")
        check(keyid("inline@ms.test") in recipients_of(m), "serve: encrypted to inline@ms.test's subkey")
        check(b"Hello SV-INLINE" in gpg_open(m), "serve: gpg decrypts it to the original text")
    mails = wait_mail("bob@pgp.test")
    if check(len(mails) == 1, "serve: S/MIME for the OpenPGP-only recipient was delivered"):
        m = mails[0]
        check(b"Content-Type: multipart/encrypted" in m and b"application/pkcs7-mime" not in m,
              "serve: it arrived as PGP/MIME")
        check(keyid("bob@pgp.test") in recipients_of(m), "serve: encrypted to bob's subkey")
        check(b"SV-SMIME" in gpg_open(m), "serve: gpg decrypts it to the original text")
    mails = wait_mail("keyed@partner.test", 2)
    if check(len(mails) == 2, "serve: both messages for the required partner with a key were delivered"):
        check(all(b"SV-PARTNER" not in m and b"multipart/encrypted" in m for m in mails),
              "serve: they arrived encrypted, never in clear")
        check(all(b"SV-PARTNER" in gpg_open(m) for m in mails), "serve: gpg decrypts both")
        check(any(b"Message-ID: <serve-two@sender.test>" in m for m in mails),
              "serve: of the two recipients in one transaction, the one with a key got it")
    bounces = wait_mail("sender@sender.test", 2)
    check(not os.path.isdir(maildir("nokey@partner.test")), "serve: nothing reached the partner without a key")
    if check(len(bounces) == 2, "serve: the sender got two bounces for the partner without a key"):
        for b in (b.decode(errors="replace") for b in bounces):
            report = b.split("Content-Description: Undelivered Message")[0]
            check(re.search(r"^From: Mail Delivery System <MAILER-DAEMON@gw\.test>$", b, re.M) and
                  "Return-Path: <>" in b and "Reporting-MTA: dns; gw.test" in b,
                  "serve: the bounce is Postfix's own (from MAILER-DAEMON, null sender, Reporting-MTA gw.test)")
            check("Final-Recipient: rfc822; nokey@partner.test" in report and
                  "Status: 5.7.1" in report and "said: 550 5.7.1 <nokey@partner.test>: encryption is required"
                  in report.replace("\n    ", " ").replace("\n", " ") and "keyed@partner.test" not in report,
                  "serve: it names only the refused recipient, with serve's 550 5.7.1 text")
            check("SV-PARTNER" not in report, "serve: the bounce's report part does not quote the text")
        check(not any("(encryption required)" in b.decode(errors="replace") for b in bounces),
              "serve: no delivery status notification of mimegate's own (LMTP answers per recipient)")
    log = open(PFLOG).read()
    check(re.search(r"to=<keyed@partner\.test>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:%d, .*dsn=2\.0\.0, status=sent "
                    r"\(250 2\.0\.0 <keyed@partner\.test> delivered\)" % SERVE, log) is not None,
          "serve: Postfix's log has serve's per-recipient 250 for the partner with a key")
    check(re.search(r"to=<nokey@partner\.test>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:%d, .*dsn=5\.7\.1, "
                    r"status=bounced" % SERVE, log) is not None,
          "serve: and its 5.7.1 bounce for the one without")


def serve_store_broken(entity, pid):
    """S2: the GnuPG home unreadable: deferred with 4.7.0; fixed on disk: delivered by the same serve"""
    home = GNUPG
    os.chmod(home, 0o000)
    try:
        qid = send_queued("bob@pgp.test", message("bob@pgp.test", "serve while broken",
                                                  "MIME-Version: 1.0\r\n" + entity % "SV-DEFER"), port=SERVE_IN)
        q = wait_queue_entry("serve-while-broken@sender.test", queue_id=qid)
        if check(q is not None, "serve: with the GnuPG home unreadable the message is deferred (postqueue -j)"):
            reason = " ".join(r.get("delay_reason", "") for r in q.get("recipients", []))
            print("     delay_reason:", reason)
            check("said: 451 4.7.0" in reason and "GnuPG home" in reason,
                  "serve: the delay reason is serve's 451 4.7.0 naming the GnuPG home")
        check(len(os.listdir(maildir("bob@pgp.test"))) == 1, "serve: nothing was delivered while deferred")
    finally:
        os.chmod(home, 0o700)
    run(["postqueue", "-f"])
    mails = wait_mail("bob@pgp.test", 2)
    if check(len(mails) == 2, "serve: after the fix on disk and postqueue -f the message is delivered"):
        check(any(b"SV-DEFER" in gpg_open(m) for m in mails) and not any(b"SV-DEFER" in m for m in mails),
              "serve: encrypted for bob, as it would have been")
    check(serve_proc is not None and serve_proc.poll() is None and serve_proc.pid == pid,
          "serve: the same serve process (pid %d) delivered it: no restart" % pid)
    check('"outcome":"reloaded"' in open(BASE + "/serve.log").read(),
          "serve: its log says it loaded a new generation")


def serve_reinjection_down(entity):
    """S3: the reinjection smtpd gone: deferred with 4.4.1; back: delivered after postqueue -f"""
    write_master_cf(reinjection=False)
    postfix_reload()
    end = time.time() + 20
    while time.time() < end and listening(SERVE + 1):
        time.sleep(0.2)
    check(not listening(SERVE + 1), "serve: the reinjection smtpd is gone after postfix reload")
    qid = send_queued("bob@pgp.test", message("bob@pgp.test", "serve reinjection down",
                                              "MIME-Version: 1.0\r\n" + entity % "SV-DOWN"), port=SERVE_IN)
    q = wait_queue_entry("serve-reinjection-down@sender.test", queue_id=qid)
    if check(q is not None, "serve: with the reinjection smtpd gone the message is deferred"):
        reason = " ".join(r.get("delay_reason", "") for r in q.get("recipients", []))
        print("     delay_reason:", reason)
        check("said: 451 4.4.1" in reason, "serve: the delay reason is serve's 451 4.4.1")
    check(len(os.listdir(maildir("bob@pgp.test"))) == 2, "serve: nothing was delivered while it was gone")
    write_master_cf(reinjection=True)
    postfix_reload()
    end = time.time() + 20
    while time.time() < end and not listening(SERVE + 1):
        time.sleep(0.2)
    run(["postqueue", "-f"])
    mails = wait_mail("bob@pgp.test", 3)
    if check(len(mails) == 3, "serve: with the reinjection smtpd back and postqueue -f it is delivered"):
        check(any(b"SV-DOWN" in gpg_open(m) for m in mails) and not any(b"SV-DOWN" in m for m in mails),
              "serve: encrypted for bob")
    check(wait_empty_queue(), "serve: the queue is empty")


KILL_KINDS = (("bob@pgp.test", "pgp-mime"), ("keyed@partner.test", "required"), ("plain@sender.test", "plain"),
              ("inline@ms.test", "pgp-inline"))


def kill_messages(n):
    """n messages for the kill test: (addr, kind, message_id, text, data), a mix of forms and sizes"""
    out = []
    for i in range(n):
        addr, kind = KILL_KINDS[i % len(KILL_KINDS)]
        lines = 4000 if i % 25 == 7 else 20 + (i * 37) % 300  # 1 to 18 KB, every 25th 250 KB
        text = "".join("kill %03d line %05d of a message that arrives whole SV-KILL\r\n" % (i, l) for l in range(lines))
        text += "LAST-LINE-SV-KILL-%03d\r\n" % i
        mid = "serve-kill-%03d@sender.test" % i
        data = ("From: Sender <sender@sender.test>\r\nTo: <%s>\r\nSubject: serve kill %03d\r\nMessage-ID: <%s>\r\n"
                "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n%s" % (addr, i, mid, text))
        out.append((addr, kind, mid, text, data))
    return out


def kill_copy_complete(kind, copy, text):
    """the copy holds the whole text, in the form its recipient gets (decrypted with gpg), up to its last line"""
    want = text.replace("\r\n", "\n").encode()
    if kind == "plain":
        body = copy.replace(b"\r\n", b"\n")
        return body.endswith(want) or body.endswith(want.rstrip(b"\n"))
    if b"SV-KILL" in copy:  # clear text in an encrypting form
        return False
    if kind == "pgp-inline" and b"multipart/encrypted" in copy:
        return False
    if kind != "pgp-inline" and b"multipart/encrypted" not in copy:
        return False
    try:
        clear = gpg_open(copy).replace(b"\r\n", b"\n")
    except ValueError:  # armor that never ends
        return False
    return want in clear  # the text ends with its LAST-LINE


def serve_kill(n=200):
    """S4: serve killed with SIGKILL while n messages flow; restarted + postqueue -f: every one delivered, whole"""
    msgs = kill_messages(n)
    addrs = sorted({m[0] for m in msgs})
    before = {k: len(v) for k, v in maildir_index(addrs).items()}
    base = sum(before.values())
    errors = []

    def sender():
        try:
            with smtplib.SMTP("127.0.0.1", SERVE_IN, timeout=60) as s:
                for addr, _, _, _, data in msgs:
                    s.sendmail("sender@sender.test", [addr], data)
        except Exception as e:  # reported below
            errors.append(repr(e))

    t0 = time.time()
    thread = threading.Thread(target=sender)
    thread.start()
    # kill serve once a quarter of the messages are in the Maildirs: the rest are in flight or still queued
    end = time.time() + 90
    delivered = 0
    while time.time() < end:
        delivered = sum(len(os.listdir(maildir(a))) for a in addrs if os.path.isdir(maildir(a))) - base
        if delivered >= n // 4:
            break
        time.sleep(0.02)
    pid = serve_proc.pid
    stop_serve(signal.SIGKILL)
    killed = time.time()
    thread.join(120)
    check(not errors and not thread.is_alive(), "kill: all %d messages were accepted by the inbound smtpd %s"
          % (n, errors))
    time.sleep(2)
    at_kill = delivered
    after_kill = sum(len(os.listdir(maildir(a))) for a in addrs if os.path.isdir(maildir(a))) - base
    waiting = len(queue())
    print("     kill: serve (pid %d) killed after %.1f s with %d of %d delivered; 2 s later %d delivered, %d in "
          "Postfix's queue" % (pid, killed - t0, at_kill, n, after_kill, waiting))
    check(at_kill < n and waiting > 0, "kill: serve was killed while messages were still flowing")
    log = open(PFLOG).read()
    lost = {}
    for why in re.findall(r"status=deferred \(lost connection with 127\.0\.0\.1\[127\.0\.0\.1\] while ([^)]*)\)", log):
        lost[why] = lost.get(why, 0) + 1
    lost = sum(lost.values()), lost
    refused = len(re.findall(r"status=deferred \((delivery temporarily suspended: )?connect to 127\.0\.0\.1"
                             r"\[127\.0\.0\.1\]:%d: Connection refused" % SERVE, log))
    print("     kill: Postfix deferred %d message(s) for a lost connection %s and %d for a refused connect"
          % (lost[0], lost[1], refused))
    lost = lost[0]
    check(lost + refused > 0, "kill: Postfix saw serve die (lost connections or refused connects, deferred)")
    check(start_serve(), "kill: serve restarted")
    t1 = time.time()
    run(["postqueue", "-f"])
    ids = {(m[0], m[2]) for m in msgs}
    end = time.time() + 120
    while time.time() < end:
        index = maildir_index(addrs)
        if all(index.get(k) for k in ids) and not queue():
            break
        time.sleep(0.5)
    time.sleep(1)  # a late duplicate
    index = maildir_index(addrs)
    print("     kill: after the restart and postqueue -f everything was in the Maildirs in %.1f s" % (time.time() - t1))
    missing = [mid for addr, _, mid, _, _ in msgs if not index.get((addr, mid))]
    dups = {mid: len(index[(addr, mid)]) for addr, _, mid, _, _ in msgs if len(index.get((addr, mid), [])) > 1}
    broken = [mid for addr, kind, mid, text, _ in msgs for c in index.get((addr, mid), [])
              if not kill_copy_complete(kind, c, text)]
    stray = sum(len(v) for k, v in index.items() if k not in ids) - base
    clear = [mid for addr, kind, mid, _, _ in msgs if kind == "required" for c in index.get((addr, mid), [])
             if b"SV-KILL" in c]
    copies = sum(len(index.get(k, [])) for k in ids)
    print("     kill: %d messages sent, %d delivered (%d copies: %d duplicate(s) of %d message(s)%s), %d missing, "
          "%d incomplete, %d other" % (n, n - len(missing), copies, copies - (n - len(missing)), len(dups),
                                       (": " + ", ".join("%s x%d" % kv for kv in sorted(dups.items()))) if dups
                                       else "", len(missing), len(broken), stray))
    per_kind = {}
    for addr, kind, mid, _, _ in msgs:
        per_kind.setdefault(kind, [0, 0])
        per_kind[kind][0] += 1
        per_kind[kind][1] += len(index.get((addr, mid), []))
    print("     kill: sent/copies per form:", ", ".join("%s %d/%d" % (k, v[0], v[1]) for k, v in per_kind.items()))
    check(not missing, "kill: every one of the %d messages was delivered (%s missing)" % (n, missing[:5]))
    check(not broken, "kill: every copy is complete: decrypted (or read) to its last line (%s)" % broken[:5])
    check(not clear, "kill: no copy for the required partner is in clear")
    check(stray == 0, "kill: nothing else arrived in those Maildirs")
    check(wait_empty_queue(), "kill: the queue is empty")


def serve_main(entity):
    mg = pwd.getpwnam("mimegate")
    vm = pwd.getpwnam("mgvmail")
    started = time.time()
    serve_readme()
    # the serve part starts from empty Maildirs; the pipe part's (checked above) are kept beside them
    check(wait_empty_queue(), "the queue is empty before the serve part")
    os.rename(MAILDIRS, MAILDIRS + "-pipe")
    os.makedirs(MAILDIRS)
    os.chown(MAILDIRS, vm.pw_uid, vm.pw_gid)
    check(not listening(SERVE), "nothing else listens on 127.0.0.1:%d" % SERVE)
    if PACKAGED:  # the pipe transports are done: the conffile becomes serve's
        with open(SERVE_CONF, "w") as f:
            f.write(SERVE_CONF_TEXT)
    r = subprocess.run(["runuser", "-u", "mimegate", "--", BIN, "serve"] + SERVE_CONF_ARGS + ["--check"],
                       capture_output=True, text=True, env=dict(os.environ, HOME=MG_HOME))
    print("     " + r.stdout.strip().replace("\n", "\n     "))
    check(r.returncode == 0 and "listen: inet:127.0.0.1:%d (lmtp)" % SERVE in r.stdout and
          "reinject: smtp:127.0.0.1:%d" % (SERVE + 1) in r.stdout and "(1 private key(s)" in r.stdout,
          "serve --check: exit 0, says where it listens and reinjects, finds carol's key")
    if not check(start_serve(), "serve started as the mimegate user and listens on 127.0.0.1:%d" % SERVE):
        print(serve_stderr()[-3000:])
        return
    check(pwd.getpwuid(os.stat("/proc/%d" % serve_proc.pid).st_uid).pw_name == "mimegate",
          "serve runs as the mimegate user")
    pid = serve_proc.pid
    t = time.time()
    serve_basic(entity)
    serve_store_broken(entity, pid)
    serve_reinjection_down(entity)
    print("     serve: S1-S3 (8 messages) in %.1f s" % (time.time() - t))
    t = time.time()
    serve_kill()
    print("     serve: S4 in %.1f s" % (time.time() - t))
    code = stop_serve(signal.SIGTERM)
    err = serve_stderr()
    check(code == 0, "serve: SIGTERM stops it with exit 0 (got %s)" % code)
    check(not any(m in err for m in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")),
          "serve: no sanitizer report on its stderr")
    if err.strip():
        print("     serve's stderr:", err.strip()[-2000:].replace("\n", "\n     "))
    log = open(BASE + "/serve.log").read()
    records = [json.loads(l) for l in log.splitlines() if l.strip()]
    msgs = [r for r in records if r["record"] in ("message", "group")]
    check(msgs and all(r.get("queue_id") for r in msgs),
          "serve: every message and group record carries Postfix's queue id (XFORWARD)")
    check(any(r["record"] == "connection" for r in records), "serve: the log has its connection records")
    check(any(r["record"] == "group" and r.get("form") == "pgp-inline" for r in records),
          "serve: the log has the pgp-inline group")
    check(not any(m in log for m in ("SV-INLINE", "SV-SMIME", "SV-PARTNER", "SV-DEFER", "SV-DOWN", "SV-KILL")),
          "serve: the log holds no message text")
    print("     serve part in %.1f s" % (time.time() - started))


try:
    main()
    serve_main("Content-Type: text/plain; charset=utf-8\r\n\r\nHello %s\r\n")
except Exception as e:  # a broken setup is a failure, with what Postfix said
    failures.append(repr(e))
    print("FAIL", repr(e))
    if isinstance(e, subprocess.CalledProcessError):
        print((e.stdout or b"").decode(errors="replace"), (e.stderr or b"").decode(errors="replace"))
finally:
    if failures and os.path.exists(PFLOG):
        print("---- Postfix log ----")
        print(open(PFLOG).read()[-6000:])
    if failures and os.path.exists(BASE + "/serve.stderr"):
        print("---- serve's stderr ----")
        print(serve_stderr()[-6000:])
    restore()
print("%d failure(s)" % len(failures))
sys.exit(1 if failures else 0)
