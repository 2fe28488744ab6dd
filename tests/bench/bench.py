#!/usr/bin/env python3
"""bench.py [--quick] [--serve] [--mimegate PATH] [--seed N] - what one message costs mimegate, next to the bare tools.

Postfix runs one mimegate process per message, so every workload here runs one process per message, as pipe(8)
would (`mimegate filter --stdout`), side by side with the bare tool doing the same crypto on the same file, in
alternation (A B A B ...) so that both see the same machine state. The corpus is generated from a seed: small text
messages (about 2 KB), medium ones (a 200 KB attachment), large ones (a 20 MB attachment) and one 60 MB message;
keys live in a temporary GnuPG home and a temporary CA, as in the tests.

Printed per workload and size: median ms per message, messages/s, MB/s, peak RSS, and the ratio to the bare tool's
median. Figures are printed, never asserted: the targets (README "Performance") are listed with the measured
values. The first result of every workload is opened with gpg or openssl, so a broken workload fails the run.

--serve measures `mimegate serve` instead, on the same keys and the same small and 200 KB messages: an LMTP client
with 1, 4 and 16 connections, Postfix's smtp-sink as the reinjection target, the pipe beside it (servebench.py)."""
import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

ap = argparse.ArgumentParser()
ap.add_argument("--quick", action="store_true", help="a few messages per size (what CI runs)")
ap.add_argument("--mimegate", default=os.path.join(ROOT, "build", "gateway", "mimegate"))
ap.add_argument("--seed", type=int, default=20261123)
ap.add_argument("--store-keys", type=int, default=5000, metavar="N",
                help="the key-store section: GnuPG home and X.509 store of N entries against 5 (store-bench.py; 0: "
                "skip it)")
ap.add_argument("--serve", action="store_true",
                help="benchmark `mimegate serve` instead, on the same corpus and keys (tests/bench/servebench.py)")
ap.add_argument("--only", action="append", default=[], metavar="WORKLOAD",
                help="--serve: only this workload (repeatable)")
ap.add_argument("--perf", metavar="FILE", help="--serve: perf record -g the serve process while 16 connections send "
                "the --profile workload, into FILE, and print its top symbols")
ap.add_argument("--profile", metavar="WORKLOAD/SIZE", default="pass-through/small",
                help="--serve: what --perf and --attach measure (pass-through/small)")
ap.add_argument("--attach", metavar="CMD", help="--serve: instead of --perf, run CMD ({pid} = serve's) during "
                "that run, stopped with SIGINT after it (e.g. 'strace -c -f -o FILE -p {pid}')")
ap.add_argument("--seconds", type=float, help="--serve: how long each measured run lasts (4 s; --quick: 0.5 s)")
ap.add_argument("--log", metavar="LOG", help="--serve: serve's [gateway] log instead of none (json:/PATH, syslog)")
ap.add_argument("--gpg-lock-never", action="store_true",
                help="--serve: lock-never in the GnuPG home's gpg.conf, so that a gpg run does not change the home "
                "directory's mtime, which serve watches: without it, every message that runs gpg reloads the "
                "generation")
args = ap.parse_args()
COUNTS = {"small": 30, "medium": 4, "large": 1} if args.quick else {"small": 1000, "medium": 100, "large": 5}
if args.serve:  # serve needs no 20 MB or 60 MB messages: its figures are about messages per second
    del COUNTS["large"]
rng = random.Random(args.seed)
work = tempfile.mkdtemp(prefix="mgb-")  # short: gpg-agent's socket path is limited
GHOME = os.path.join(work, "g")


def sh(argv, inp=None, env=None):
    p = subprocess.run(argv, input=inp, capture_output=True, env=env)
    if p.returncode != 0:
        sys.exit("bench: %s failed: %s" % (" ".join(argv[:4]), p.stderr.decode(errors="replace")))
    return p.stdout


def gpg(*a, inp=None):
    return sh(["gpg", "--homedir", GHOME, "--batch", "--yes", "--pinentry-mode", "loopback", "--passphrase", "",
               "--trust-model", "always"] + list(a), inp=inp)


def make_keys():
    os.makedirs(GHOME, mode=0o700)
    with open(os.path.join(GHOME, "gpg-agent.conf"), "w") as f:
        f.write("allow-loopback-pinentry\n")
    for addr in ("gw@bench.example", "pgp@bench.example", "inline@bench.example"):
        gpg("--quick-gen-key", addr, "ed25519", "sign", "never")
        fpr = [l.split(":")[9] for l in gpg("--with-colons", "-k", addr).decode().splitlines()
               if l.startswith("fpr:")][0]
        gpg("--quick-add-key", fpr, "cv25519", "encr", "never")
    gpg("--check-trustdb")
    x = os.path.join(work, "x")
    for sub in ("ca", "certs", "private"):
        os.makedirs(os.path.join(x, sub), mode=0o700)
    ca = os.path.join(work, "ca")
    os.makedirs(ca)
    sh(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca + "/root.key", "-out",
        x + "/ca/root.pem", "-days", "30", "-subj", "/CN=bench root"])
    for name in ("smime", "gw"):
        with open(ca + "/ext", "w") as f:
            f.write("subjectAltName=email:%s@bench.example\nkeyUsage=digitalSignature,keyEncipherment\n"
                    "extendedKeyUsage=emailProtection\n" % name)
        key = (x + "/private/" if name == "gw" else ca + "/") + name + ".key"
        sh(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", ca + "/r.csr", "-subj",
            "/CN=" + name])
        sh(["openssl", "x509", "-req", "-in", ca + "/r.csr", "-CA", x + "/ca/root.pem", "-CAkey", ca + "/root.key",
            "-CAcreateserial", "-out", x + "/certs/%s.pem" % name, "-days", "30", "-extfile", ca + "/ext"])
        os.chmod(key, 0o600)
    with open(os.path.join(work, "mimegate.conf"), "w") as f:
        f.write("[gateway]\ngnupg-home = %s\nx509-store = %s\ntrust-model = always\nauthserv-id = bench.example\n"
                "log = none\nmax-size = 200M\n[address inline@bench.example]\ninline-only = true\n" % (GHOME, x))
    return os.path.join(work, "mimegate.conf"), x


def message(size_class, i):
    """a seeded message: text, or text plus an incompressible attachment"""
    words = ["mail", "gateway", "partner", "report", "invoice", "meeting", "encrypted", "schedule", "policy", "kind"]
    text = "bench " + " ".join(rng.choice(words) for _ in range(300)) + "\n"
    head = ("From: Sender <sender@bench.example>\nTo: Recipient <rcpt@bench.example>\nSubject: bench %s %d\n"
            "Message-ID: <%s-%d@bench.example>\nMIME-Version: 1.0\n" % (size_class, i, size_class, i))
    attach = {"small": 0, "medium": 200 * 1024, "large": 20 * 1024 * 1024, "huge": 60 * 1024 * 1024}[size_class]
    if attach == 0:
        return (head + "Content-Type: text/plain; charset=us-ascii\n\n" + text).encode()
    import base64
    data = rng.randbytes(attach)
    b64 = base64.encodebytes(data).decode()
    return (head + "Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/plain\n\n" + text +
            "--b\nContent-Type: application/octet-stream\nContent-Disposition: attachment; filename=data.bin\n"
            "Content-Transfer-Encoding: base64\n\n" + b64 + "--b--\n").encode()


MEASURE = r"""
import json, os, sys, time
for line in sys.stdin:
    argv, stdin_path = json.loads(line)
    fin = os.open(stdin_path, os.O_RDONLY)
    fout = os.open(os.devnull, os.O_WRONLY)
    r, w = os.pipe()
    t = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        os.dup2(fin, 0); os.dup2(fout, 1); os.dup2(w, 2)
        try:
            os.execvp(argv[0], argv)
        finally:
            os._exit(127)
    os.close(w)
    err = b""
    while True:
        chunk = os.read(r, 65536)
        if not chunk:
            break
        err += chunk
    _, status, usage = os.wait4(pid, 0)
    dt = time.perf_counter() - t
    for fd in (fin, fout, r):
        os.close(fd)
    print(json.dumps([dt, usage.ru_maxrss, os.waitstatus_to_exitcode(status), err.decode(errors="replace")[-2000:]]),
          flush=True)
"""
measurer = None


def timed(argv, stdin_path):
    """one process, stdin from a file, stdout to /dev/null: (seconds, peak RSS in KiB). Started from a small helper
    process made before the corpus, because a child's peak RSS counts the memory of whatever it was forked from"""
    import json
    measurer.stdin.write(json.dumps([argv, stdin_path]) + "\n")
    measurer.stdin.flush()
    dt, rss, code, err = json.loads(measurer.stdout.readline())
    if code != 0:
        sys.exit("bench: %s exited %d: %s" % (" ".join(argv[:3]), code, err))
    return dt, rss


def check_once(argv, stdin_path, opener):
    with open(stdin_path, "rb") as fin:
        out = subprocess.run(argv, stdin=fin, capture_output=True).stdout
    clear = opener(out)
    if b"bench" not in clear:
        sys.exit("bench: %s did not produce what the recipient can open" % " ".join(argv[:3]))


def gpg_open(data):
    b = data.index(b"-----BEGIN PGP MESSAGE-----")
    e = data.index(b"-----END PGP MESSAGE-----", b) + 25
    return subprocess.run(["gpg", "--homedir", GHOME, "--batch", "-q", "-d"], input=data[b:e],
                          capture_output=True).stdout


def main():
    global measurer
    measurer = subprocess.Popen([sys.executable, "-c", MEASURE], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                text=True)
    conf, x509 = make_keys()
    mg = args.mimegate
    if not os.access(mg, os.X_OK):
        sys.exit("bench: %s is not built (bash .ci/setup)" % mg)
    filt = lambda rcpt: [mg, "filter", "--stdout", "-c", conf, "-f", "sender@bench.example", "--", rcpt]
    gpg_e = ["gpg", "--homedir", GHOME, "--batch", "--trust-model", "always", "-a", "-e", "-r", "pgp@bench.example",
             "-o", "-"]
    cms_e = ["openssl", "cms", "-encrypt", "-aes256", "-in", None, x509 + "/certs/smime.pem"]
    cms_open = lambda d: subprocess.run(["openssl", "cms", "-decrypt", "-inkey", work + "/ca/smime.key", "-recip",
                                         x509 + "/certs/smime.pem"], input=d, capture_output=True).stdout

    sizes = dict(COUNTS)
    sizes["huge"] = 1  # the pipe's 60 MB section; --serve: 4 of them at once
    files = {}
    for cls, n in sizes.items():
        d = os.path.join(work, cls)
        os.makedirs(d)
        files[cls] = []
        for i in range(n):
            path = os.path.join(d, "%d.eml" % i)
            with open(path, "wb") as f:
                f.write(message(cls, i))
            files[cls].append(path)
    # inputs for the conversion workloads: the same messages as PGP/MIME and as S/MIME to the gateway's keys
    def pgp_mime(path):
        entity = open(path, "rb").read().split(b"\n\n", 1)
        inner = b"\n".join(l for l in entity[0].split(b"\n") if l.lower().startswith(b"content-")) + b"\n\n" + entity[1]
        armored = sh(["gpg", "--homedir", GHOME, "--batch", "--trust-model", "always", "-a", "-e", "-r",
                      "gw@bench.example", "-z", "0"], inp=inner)
        head = b"\n".join(l for l in entity[0].split(b"\n") if not l.lower().startswith(b"content-"))
        return (head + b"\nContent-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=e\n\n"
                b"--e\nContent-Type: application/pgp-encrypted\n\nVersion: 1\n--e\nContent-Type: "
                b"application/octet-stream\n\n" + armored + b"\n--e--\n")

    def smime(path):
        entity = open(path, "rb").read().split(b"\n\n", 1)
        inner = b"\n".join(l for l in entity[0].split(b"\n") if l.lower().startswith(b"content-")) + b"\n\n" + entity[1]
        out = sh(["openssl", "cms", "-encrypt", "-aes256", x509 + "/certs/gw.pem"], inp=inner)
        head = b"\n".join(l for l in entity[0].split(b"\n")
                          if not l.lower().startswith(b"content-") and not l.lower().startswith(b"mime-version"))
        return head + b"\n" + out

    conv = {}
    for kind, make in (("pgp-mime", pgp_mime), ("smime", smime)):
        for cls in list(COUNTS) + ["huge"]:
            for path in files[cls]:
                out = path + "." + kind
                with open(out, "wb") as f:
                    f.write(make(path))
                conv.setdefault((kind, cls), []).append(out)

    workloads = [
        # name, mimegate argv, input kind, bare argv, opener of mimegate's output
        ("pass-through", filt("none@bench.example"), None, gpg_e, None),
        ("pgp-encrypt", filt("pgp@bench.example"), None, gpg_e, gpg_open),
        ("smime-encrypt", filt("smime@bench.example"), None, cms_e, cms_open),
        ("pgp-mime>pgp-inline", filt("inline@bench.example"), "pgp-mime", gpg_e, gpg_open),
        ("smime>pgp-mime", filt("pgp@bench.example"), "smime", gpg_e, gpg_open),
    ]
    # the pipe's OpenPGP workloads again with librnp in-process (openpgp-encrypt = auto means gpg in the pipe)
    conf_rnp = conf.replace(".conf", "-rnp.conf")
    with open(conf, encoding="utf-8") as f, open(conf_rnp, "w", encoding="utf-8") as g:
        g.write(f.read().replace("[gateway]\n", "[gateway]\nopenpgp-encrypt = rnp\n", 1))
    filt_rnp = lambda rcpt: [mg, "filter", "--stdout", "-c", conf_rnp, "-f", "sender@bench.example", "--", rcpt]
    if args.serve:
        sys.path.insert(0, HERE)
        import servebench
        servebench.run(args, conf=conf, ghome=GHOME, files=files, conv=conv, workloads=workloads, gpg_e=gpg_e,
                       platform=platform_line())
        return
    print("mimegate benchmark: %s, %d CPU, %s%s" % (os.uname().machine, os.cpu_count(), platform_line(),
                                                    " (quick)" if args.quick else ""))
    print("%-20s %-7s %6s %9s %8s %8s %9s %11s %7s" % ("workload", "size", "n", "ms/msg", "msgs/s", "MB/s",
                                                      "RSS MiB", "bare ms/msg", "ratio"))
    workloads += [
        ("pgp-encrypt rnp", filt_rnp("pgp@bench.example"), None, gpg_e, gpg_open),
        ("pgp-mime>inline rnp", filt_rnp("inline@bench.example"), "pgp-mime", gpg_e, gpg_open),
        ("smime>pgp-mime rnp", filt_rnp("pgp@bench.example"), "smime", gpg_e, gpg_open),
    ]
    results = {}
    for name, argv, kind, bare, opener in workloads:
        for cls in ("small", "medium", "large"):
            inputs = files[cls] if kind is None else conv[(kind, cls)]
            if opener is not None:
                check_once(argv, inputs[0], opener)
            a, b, rss = [], [], 0
            for path in inputs:  # A B A B: mimegate, then the bare tool, on the same file
                dt, r = timed(argv, path)
                a.append(dt)
                rss = max(rss, r)
                dt, _ = timed([path if a is None else a for a in bare] if None in bare else bare + [path], "/dev/null")
                b.append(dt)
            size = os.path.getsize(inputs[0]) / 1e6
            ma, mb = statistics.median(a), statistics.median(b)
            results[(name, cls)] = (ma, mb, rss, size)
            print("%-20s %-7s %6d %9.2f %8.1f %8.1f %9.1f %11.2f %7.2f" % (
                name, cls, len(inputs), ma * 1e3, 1 / ma, size / ma, rss / 1024, mb * 1e3, ma / mb))
    # the 60 MB message through every path that takes plain input, and its peak RSS
    huge = files["huge"][0]
    hsize = os.path.getsize(huge)
    print("60 MB message (%.1f MB):" % (hsize / 1e6))
    # (max-size = 200M in the bench's configuration: the 60 MB attachment in PGP/MIME is about 115 MB)
    huge_paths = (("pass-through", filt("none@bench.example"), None, None),
                  ("pgp-encrypt", filt("pgp@bench.example"), None, gpg_open),
                  ("smime-encrypt", filt("smime@bench.example"), None, cms_open),
                  ("pgp-mime>pgp-inline", filt("inline@bench.example"), "pgp-mime", gpg_open),
                  ("smime>pgp-mime", filt("pgp@bench.example"), "smime", gpg_open))
    for name, argv, kind, opener in huge_paths:
        path = huge if kind is None else conv[(kind, "huge")][0]
        if opener is not None:
            check_once(argv, path, opener)
        size = os.path.getsize(path)
        dt, rss = timed(argv, path)
        results[(name, "huge")] = (dt, None, rss, size / 1e6)
        print("  %-20s %8.0f ms %8.1f MB/s  peak RSS %6.1f MiB = %.2f x the message (%.1f MB)" % (
            name, dt * 1e3, size / 1e6 / dt, rss / 1024, rss * 1024 / size, size / 1e6))

    stores = None
    if args.store_keys > 0:  # the pipe floor: a run's cost flat in the size of the key stores (store-bench.py)
        import importlib.util
        spec = importlib.util.spec_from_file_location("storebench", os.path.join(HERE, "store-bench.py"))
        storebench = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(storebench)
        print("key stores, 5 and %d entries (median of %d runs each; CPU: user + system of the run and its children):"
              % (args.store_keys, 5 if args.quick else 20))
        stores = storebench.run(mg, args.store_keys, 5 if args.quick else 20)

    print("targets (same run):")
    def line(what, value, target, ok):
        print("  %-58s %10s  target %-8s %s" % (what, value, target, "met" if ok else "NOT met"))
    r = results[("pgp-encrypt", "small")][0] / results[("pgp-encrypt", "small")][1]
    line("PGP encrypt per message / bare gpg -e (small)", "%.2f" % r, "<= 1.5", r <= 1.5)
    r = results[("pgp-encrypt rnp", "small")][0] / results[("pgp-encrypt rnp", "small")][1]
    line("PGP encrypt with librnp (rnp) / bare gpg -e (small)", "%.2f" % r, "<= 1.0", r <= 1.0)
    r = results[("smime-encrypt", "small")][0] / results[("smime-encrypt", "small")][1]
    line("S/MIME encrypt per message / bare openssl cms (small)", "%.2f" % r, "<= 1.0", r <= 1.0)
    r = results[("pass-through", "small")][0] / results[("pass-through", "small")][1]
    line("pass-through (no key) / bare gpg -e (small)", "%.2f" % r, "<= 1.0", r <= 1.0)
    worst = max(results[(n, "huge")][2] * 1024 / (results[(n, "huge")][3] * 1e6) for n, _, _, _ in huge_paths)
    line("60 MB message: peak RSS / message size (worst path)", "%.2f" % worst, "<= 2.0", worst <= 2.0)
    ma, _, _, size = results[("pgp-encrypt", "large")]
    line("20 MB attachment, PGP encrypt throughput (MB/s)", "%.1f" % (size / ma), ">= 80", size / ma >= 80)
    if stores is not None:
        for kind, what in (("gnupg", "GnuPG home of %d keys: PGP run / with 5 (CPU)"),
                           ("x509", "X.509 store of %d certs: S/MIME run / with 5 (CPU)")):
            if kind not in stores:
                continue
            wall, cpu = stores[kind]["mimegate"]
            line(what % args.store_keys, "%.2f" % cpu, "<= 1.2", cpu <= 1.2)


def platform_line():
    try:
        model = [l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")][0]
    except (OSError, IndexError):
        model = "unknown CPU"
    return model


try:
    main()
finally:
    subprocess.run(["gpgconf", "--homedir", GHOME, "--kill", "all"], capture_output=True)
    shutil.rmtree(work, ignore_errors=True)
