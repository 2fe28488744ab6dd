"""ldaptest.py - a throw-away OpenLDAP slapd on 127.0.0.1 and an openssl test CA, for tests/ldap-test.py and the
real-Postfix test (tests/postfix/postfix-test.py).

Slapd runs in the foreground (-d stats: every search's filter goes to its log, so a test can read what the server
saw) from a generated slapd.conf: the core, cosine and inetorgperson schemas (inetOrgPerson has userSMIMECertificate
and userCertificate), an mdb database for dc=test in a temporary directory, anonymous read, rootdn cn=admin,dc=test
with the password "secret". It listens on ldap:// and ldaps:// on free ports, with a server certificate for
127.0.0.1 from its own CA. Entries are loaded with ldapadd. Certificates are made with `openssl ca`, which (unlike
`openssl x509 -req` in OpenSSL 3.0) takes an explicit validity period, so expired certificates can be made too."""
import os
import shutil
import signal
import socket
import subprocess
import time

SCHEMAS = ("core", "cosine", "inetorgperson")
ROOT_DN = "cn=admin,dc=test"
ROOT_PW = "secret"
SUFFIX = "dc=test"


def available():
    """the reason this machine cannot run the tests, or None"""
    for tool in ("openssl", "ldapadd", "ldapsearch"):
        if shutil.which(tool) is None:
            return tool + " is not installed (apt-get install ldap-utils)"
    if slapd_path() is None:
        return "slapd is not installed (apt-get install slapd)"
    for s in SCHEMAS:
        if not os.path.exists("/etc/ldap/schema/%s.schema" % s):
            return "the %s schema of slapd is missing" % s
    return None


def slapd_path():
    for p in ("/usr/sbin/slapd", shutil.which("slapd")):
        if p and os.access(p, os.X_OK):
            return p
    return None


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(argv, inp=None, env=None):
    p = subprocess.run(argv, input=inp, capture_output=True, env=env)
    if p.returncode != 0:
        raise RuntimeError("%s exited %d: %s" % (" ".join(argv[:4]), p.returncode, p.stderr.decode(errors="replace")))
    return p


CA_CONF = """[ ca ]
default_ca = CA_default
[ CA_default ]
dir = %(dir)s
database = $dir/index.txt
new_certs_dir = $dir/newcerts
serial = $dir/serial
default_md = sha256
policy = policy_any
unique_subject = no
copy_extensions = none
email_in_dn = no
[ policy_any ]
commonName = supplied
[ smime ]
basicConstraints = CA:FALSE
keyUsage = digitalSignature, keyEncipherment
extendedKeyUsage = emailProtection
subjectAltName = email:${ENV::MG_EMAIL}
[ server ]
basicConstraints = CA:FALSE
keyUsage = digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
"""


class TestCA:
    """a root CA in @dir made by openssl; issue() signs S/MIME or server certificates with it"""

    def __init__(self, dir, name="mimegate LDAP Test Root"):
        self.dir = dir
        os.makedirs(dir + "/newcerts", exist_ok=True)
        open(dir + "/index.txt", "w").close()
        with open(dir + "/serial", "w") as f:
            f.write("%016X\n" % (int(time.time() * 1000) ^ os.getpid()))
        with open(dir + "/ca.cnf", "w") as f:
            f.write(CA_CONF % {"dir": dir})
        self.cert = dir + "/root.pem"
        self.key = dir + "/root.key"
        run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", self.key, "-out", self.cert,
             "-subj", "/CN=" + name, "-days", "3650", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign"])

    def issue(self, name, cn, email=None, start=None, end=None, days=None, server=False):
        """(cert.pem, key.pem, cert.der) for @cn; @start/@end "YYYYMMDDHHMMSSZ", else @days from now"""
        base = os.path.join(self.dir, name)
        run(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", base + ".key", "-out", base + ".csr",
             "-subj", "/CN=" + cn])
        argv = ["openssl", "ca", "-batch", "-notext", "-config", self.dir + "/ca.cnf", "-cert", self.cert, "-keyfile",
                self.key, "-in", base + ".csr", "-out", base + ".pem", "-extensions", "server" if server else "smime"]
        if start:
            argv += ["-startdate", start]
        if end:
            argv += ["-enddate", end]
        else:
            argv += ["-days", str(days or 365)]
        run(argv, env=dict(os.environ, MG_EMAIL=email or "none@invalid"))
        run(["openssl", "x509", "-in", base + ".pem", "-outform", "DER", "-out", base + ".der"])
        return base + ".pem", base + ".key", base + ".der"


def fingerprint(pem):
    out = run(["openssl", "x509", "-in", pem, "-noout", "-fingerprint", "-sha256"]).stdout.decode()
    return out.strip().split("=", 1)[1].replace(":", "").upper()


class Slapd:
    """slapd on 127.0.0.1 (ldap:// on .port, ldaps:// on .tls_port) with a throw-away database in @dir"""

    def __init__(self, dir, tls_ca=None, extra_schemas=()):
        self.dir = dir
        self.port = free_port()
        self.tls_port = free_port()
        self.proc = None
        self.log = os.path.join(dir, "slapd.log")
        os.makedirs(dir + "/db", exist_ok=True)
        tls = ""
        if tls_ca is not None:
            cert, key, _ = tls_ca.issue("slapd-server", "127.0.0.1", server=True)
            tls = "TLSCACertificateFile %s\nTLSCertificateFile %s\nTLSCertificateKeyFile %s\n" % (tls_ca.cert, cert,
                                                                                                 key)
        self.tls = tls_ca is not None
        with open(dir + "/slapd.conf", "w") as f:
            for s in SCHEMAS:
                f.write("include /etc/ldap/schema/%s.schema\n" % s)
            for s in extra_schemas:
                f.write("include %s\n" % s)
            f.write("pidfile %s/slapd.pid\nmodulepath /usr/lib/ldap\nmoduleload back_mdb\n%s"
                    "database mdb\nsuffix \"%s\"\nrootdn \"%s\"\nrootpw %s\ndirectory %s/db\nmaxsize 10485760\n"
                    "access to * by * read\n" % (dir, tls, SUFFIX, ROOT_DN, ROOT_PW, dir))
        self.loaded = []

    @property
    def uri(self):
        return "ldap://127.0.0.1:%d" % self.port

    @property
    def ldaps_uri(self):
        return "ldaps://127.0.0.1:%d" % self.tls_port

    def start(self):
        urls = self.uri + "/" + (" " + self.ldaps_uri + "/" if self.tls else "")
        logf = open(self.log, "ab")
        self.proc = subprocess.Popen([slapd_path(), "-f", self.dir + "/slapd.conf", "-h", urls, "-d", "256"],
                                     stdout=logf, stderr=logf, stdin=subprocess.DEVNULL)
        logf.close()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("slapd exited %d: %s" % (self.proc.returncode, open(self.log).read()[-2000:]))
            p = subprocess.run(["ldapsearch", "-x", "-H", self.uri, "-b", "", "-s", "base", "(objectClass=*)"],
                               capture_output=True)
            if p.returncode in (0, 32):
                return
            time.sleep(0.1)
        raise RuntimeError("slapd did not answer within 20 s")

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def add(self, ldif):
        run(["ldapadd", "-x", "-H", self.uri, "-D", ROOT_DN, "-w", ROOT_PW], inp=ldif.encode())

    def add_base(self):
        self.add("dn: dc=test\nobjectClass: dcObject\nobjectClass: organization\no: test\ndc: test\n\n"
                 "dn: ou=people,dc=test\nobjectClass: organizationalUnit\nou: people\n")

    def add_person(self, uid, mail, smime_ders=(), usercert_ders=(), pgp_keys=()):
        """@pgp_keys: files with OpenPGP keys, for pgpKey (needs the tests/ldap-openpgp.schema in extra_schemas)"""
        lines = ["dn: uid=%s,ou=people,dc=test" % uid, "objectClass: inetOrgPerson", "uid: " + uid, "cn: " + uid,
                 "sn: " + uid, "mail: " + mail]
        if pgp_keys:
            lines.append("objectClass: mimegateOpenPGPKeyHolder")
        lines += ["pgpKey:< file://" + k for k in pgp_keys]
        lines += ["userSMIMECertificate:< file://" + d for d in smime_ders]
        lines += ["userCertificate;binary:< file://" + d for d in usercert_ders]
        self.add("\n".join(lines) + "\n")

    def log_text(self):
        with open(self.log, errors="replace") as f:
            return f.read()
