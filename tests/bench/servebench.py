"""servebench.py - `bench.py --serve`: what a message costs `mimegate serve`, next to the pipe filter.

bench.py makes the keys and the seeded corpus and hands them here. `mimegate serve` (LMTP, log = none, the default
[serve] keys: workers = number of CPUs) reinjects into Postfix's smtp-sink, whose own rate is measured first with the
same client, so that one can see it is not the bottleneck. The client is Python: one thread per connection, each
with its own persistent connection, one transaction after the other (no pipelining), 1, 4 and 16 connections.

Printed per workload, size and connection count: msgs/s, ms per message (MAIL to the last LMTP reply) p50 and p99,
CPU ms per message of the serve process (utime + stime from /proc/PID/stat before and after; its threads included)
and of the gpg processes it started (cutime + cstime) and of gpg-agent, msgs/s per core of serve (1 / its CPU per
message), the client's CPU, serve's peak RSS (VmHWM; one serve per workload and size) and the ratio to the pipe: the
same messages through `mimegate filter --stdout`, one process per message, as many in parallel as there are CPUs,
measured just before serve's runs of that workload (other load on the machine moves wall-clock rates; the CPU per
message, printed for both, moves much less). The workloads that run gpg for every message are set beside their floor,
bare `gpg -d` / `gpg -e` runs. Then serve's VmRSS after 1,000 and after 100,000 small pass-through messages (10,000
in --quick). Before any of it, the first message of every workload and size goes through a serve that reinjects into
tests/smtp-capture.py, and what it reinjected is opened with gpg or openssl: a broken workload stops the run, and so
does a serve that dies. Figures are printed, never asserted.

--gpg-lock-never keeps gpg from taking lock files in its home: each one changes the directory's mtime, which serve
watches, so that without it every message that runs gpg reloads the generation. --perf FILE / --attach CMD profile
serve while 16 connections send the --profile workload (pass-through/small)."""
import email
import itertools
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CLK = os.sysconf("SC_CLK_TCK")
SENDER = "sender@bench.example"
CONNS = (1, 4, 16)
# the gpg processes a message costs in the workloads that still run gpg in serve: decryption (gpg-agent holds the
# secret keys). Encryption runs in librnp in serve (openpgp-encrypt = auto), so pgp-encrypt and smime>pgp-mime are
# in-process workloads there.
GPG_BOUND = {"pgp-mime>pgp-inline": {"small": {"d": 1}, "medium": {"d": 1}}}


def die(text):
    sys.exit("bench --serve: " + text)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, what, errfile=None):
    """until @port accepts and greets; the process dying first stops the run"""
    deadline = time.monotonic() + 20
    while True:
        if proc.poll() is not None:
            err = open(errfile, errors="replace").read()[-2000:] if errfile else ""
            die("%s exited %d before listening: %s" % (what, proc.returncode, err))
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                if s.recv(512).startswith(b"220"):
                    s.sendall(b"QUIT\r\n")
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            die("%s does not answer on port %d" % (what, port))
        time.sleep(0.02)


def wire(msg):
    """@msg as it goes after DATA: CRLF lines, dot-stuffed, the final dot"""
    lines = msg.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    out = []
    for line in lines:
        if line.endswith(b"\r"):
            line = line[:-1]
        out.append(b"." + line if line.startswith(b".") else line)
    return b"\r\n".join(out) + b"\r\n.\r\n"


class Failure(Exception):
    pass


class Client:
    """one persistent LMTP (or SMTP) connection, one command at a time"""

    def __init__(self, port, lmtp):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=120)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.lmtp = lmtp
        self.buf = b""
        self.expect(b"2")
        self.sock.sendall((b"LHLO" if lmtp else b"EHLO") + b" client.bench.example\r\n")
        self.expect(b"2")

    def reply(self):
        """the last line of the next reply"""
        while True:
            i = self.buf.find(b"\r\n")
            if i < 0:
                data = self.sock.recv(65536)
                if not data:
                    raise Failure("connection closed by the server")
                self.buf += data
                continue
            line, self.buf = self.buf[:i], self.buf[i + 2:]
            if line[3:4] != b"-":
                return line

    def expect(self, first):
        line = self.reply()
        if not line.startswith(first):
            raise Failure(line.decode(errors="replace"))
        return line

    def send(self, mail, rcpts, data):
        s = self.sock
        s.sendall(mail)
        self.expect(b"2")
        for r in rcpts:
            s.sendall(r)
            self.expect(b"2")
        s.sendall(b"DATA\r\n")
        self.expect(b"3")
        s.sendall(data)
        for _ in range(len(rcpts) if self.lmtp else 1):
            self.expect(b"2")

    def quit(self):
        try:
            self.sock.sendall(b"QUIT\r\n")
            self.reply()
        except (OSError, Failure):
            pass
        self.sock.close()


def percentile(sorted_values, p):
    return sorted_values[min(len(sorted_values) - 1, int(p * len(sorted_values)))]


def drive(port, lmtp, conns, msgs, rcpt, seconds, min_n, probe=None, on_error=None):
    """@conns threads, each on its own connection, send @msgs round-robin for @seconds (at least @min_n messages;
    exactly @min_n when @seconds is 0). Returns n, wall seconds, sorted latencies, and @probe() before and after
    (taken once every connection is open, and once the last reply is in)"""
    clients = [Client(port, lmtp) for _ in range(conns)]
    mail = ("MAIL FROM:<%s>\r\n" % SENDER).encode()
    rcpts = [("RCPT TO:<%s>\r\n" % rcpt).encode()]
    counter = itertools.count()
    lat = [[] for _ in range(conns)]
    errors = []
    barrier = threading.Barrier(conns + 1)
    deadline = [0.0]

    def worker(k):
        c, out = clients[k], lat[k]
        barrier.wait()
        while True:
            i = next(counter)
            if i >= min_n and (seconds == 0 or time.perf_counter() >= deadline[0]):
                break
            t = time.perf_counter()
            try:
                c.send(mail, rcpts, msgs[i % len(msgs)])
            except (OSError, Failure) as e:
                errors.append("%s (message %d)" % (e, i))
                break
            out.append(time.perf_counter() - t)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(conns)]
    for t in threads:
        t.start()
    before = probe() if probe else None
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    deadline[0] = t0 + seconds
    barrier.wait()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    after = probe() if probe else None
    drive.client_cpu = ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime  # this process: the client
    for c in clients:
        c.quit()
    if errors:
        if on_error:
            on_error()
        die("%d message(s) not accepted, the first: %s" % (len(errors), errors[0]))
    every = sorted(itertools.chain.from_iterable(lat))
    return len(every), wall, every, before, after


def proc_cpu(pid):
    """(own, children) CPU seconds of @pid: utime + stime (every thread), cutime + cstime (its waited-for children)"""
    try:
        with open("/proc/%d/stat" % pid) as f:
            rest = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0, 0.0
    return (int(rest[11]) + int(rest[12])) / CLK, (int(rest[13]) + int(rest[14])) / CLK


def proc_status(pid, key):
    """a /proc/PID/status value in KiB"""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


class Agent:
    """the gpg-agent of our GnuPG home (started by the first gpg that needs it): its CPU seconds so far"""

    def __init__(self, ghome):
        self.ghome = ghome.encode()
        self.pid = None

    def cpu(self):
        if self.pid is None:
            for d in os.listdir("/proc"):
                try:
                    with open("/proc/%s/cmdline" % d, "rb") as f:
                        argv = f.read().split(b"\0")
                except OSError:
                    continue
                if argv and argv[0].endswith(b"gpg-agent") and self.ghome in argv:
                    self.pid = int(d)
                    break
        return proc_cpu(self.pid)[0] if self.pid else 0.0


class Serve:
    """one `mimegate serve` on a free port, reinjecting into @reinject_port"""

    log = None  # [gateway] log for serve, when not none (--log)

    def __init__(self, mg, conf, work, reinject_port):
        self.port = free_port()
        self.conf = os.path.join(work, "serve-%d.conf" % self.port)
        with open(conf) as f, open(self.conf, "w") as out:
            base = f.read()
            if Serve.log:
                base = base.replace("log = none\n", "log = %s\n" % Serve.log)
            out.write(base + "[serve]\nlisten = inet:127.0.0.1:%d\nreinject = smtp:127.0.0.1:%d\n" % (
                self.port, reinject_port))
        self.err = os.path.join(work, "serve-%d.err" % self.port)
        with open(self.err, "wb") as err:
            self.proc = subprocess.Popen([mg, "serve", "-c", self.conf], stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=err)
        wait_port(self.port, self.proc, "mimegate serve", self.err)
        self.pid = self.proc.pid

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.check()

    def died(self):
        """after a lost connection: whether serve died (the run stops then, with how)"""
        try:
            self.proc.wait(2)
        except subprocess.TimeoutExpired:
            return
        self.check()

    def check(self):
        """stops the run when serve has died or exited with a failure"""
        code = self.proc.poll()
        if code is not None and code != 0:
            how = "was killed by signal %s" % signal.Signals(-code).name if code < 0 else "exited %d" % code
            die("mimegate serve %s: %s" % (how, open(self.err, errors="replace").read()[-2000:]))


def start_sink(port):
    sink = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
    if not os.access(sink, os.X_OK):
        die("Postfix's smtp-sink is not installed (apt-get install postfix)")
    argv = [sink] + (["-u", "nobody"] if os.geteuid() == 0 else []) + ["127.0.0.1:%d" % port, "1000"]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port, proc, "smtp-sink")
    return proc


def pipe_rate(argv, paths, seconds, min_n, parallel, agent):
    """@argv once per message, stdin from the file, @parallel at a time, for @seconds: (msgs/s, CPU s per message of
    the processes, of what they waited for, and of gpg-agent)"""
    counter = itertools.count()
    deadline = [0.0]
    done = [0]
    errors = []

    def worker():
        while True:
            i = next(counter)
            if i >= min_n and time.perf_counter() >= deadline[0]:
                break
            with open(paths[i % len(paths)], "rb") as fin:
                p = subprocess.run(argv, stdin=fin, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            if p.returncode != 0:
                errors.append("%s exited %d: %s" % (" ".join(argv[:3]), p.returncode, p.stderr.decode()[-500:]))
                break
            done[0] += 1

    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    a0 = agent.cpu()
    t0 = time.perf_counter()
    deadline[0] = t0 + seconds
    threads = [threading.Thread(target=worker) for _ in range(parallel)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if errors:
        die(errors[0])
    cpu = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime) + agent.cpu() - a0
    return done[0] / wall, cpu / done[0]


def body_text(path):
    """the seeded text line every message of the corpus carries ("bench ..."), to look for in what was reinjected"""
    for line in open(path, "rb").read().split(b"\n"):
        if line.startswith(b"bench "):
            return line
    die("%s has no text line" % path)


def decoded(entity):
    """the decrypted entity's leaves without their transfer encoding, one after another: header protection's legacy
    display re-encodes the main text part (quoted-printable for the corpus's long lines)"""
    msg = email.message_from_bytes(entity)
    return b"\n".join(part.get_payload(decode=True) or b"" for part in msg.walk() if not part.is_multipart())


def check_first(mg, conf, work, workloads, inputs, files, openers):
    """the first message of every workload and size through serve into smtp-capture.py, opened by gpg or openssl"""
    cap_dir = os.path.join(work, "capture")
    os.makedirs(cap_dir)
    cap = subprocess.Popen([sys.executable, os.path.join(ROOT, "tests", "smtp-capture.py"), "--listen",
                            "inet:127.0.0.1:0", "--dir", cap_dir], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    line = cap.stdout.readline().split()
    if len(line) != 2 or line[0] != b"ready":
        die("tests/smtp-capture.py did not start")
    srv = Serve(mg, conf, work, int(line[1]))
    n = 0
    try:
        for name, rcpt in workloads:
            for cls in ("small", "medium"):
                msg = wire(open(inputs[(name, cls)][0], "rb").read())
                drive(srv.port, True, 1, [msg], rcpt, 0, 1, on_error=srv.died)
                n += 1
                got = open(os.path.join(cap_dir, "msg-%d.eml" % n), "rb").read()
                text = body_text(files[cls][0])
                opener = openers[name]
                if opener is None:  # pass-through: the text as it was, in clear
                    ok = text in got.replace(b"\r\n", b"\n") and b"-----BEGIN PGP" not in got
                else:
                    ok = text in decoded(opener(got)).replace(b"\r\n", b"\n")
                if not ok:
                    die("%s %s: what serve reinjected (%s) does not open to the message" % (
                        name, cls, os.path.join(cap_dir, "msg-%d.eml" % n)))
    finally:
        srv.stop()
        cap.stdin.close()
        cap.wait()
    return n


def huge_section(mg, conf, work, sink_port, workloads, files, conv, rcpt_of):
    """the 60 MB message through every path, 4 at once (one LMTP connection each, one serve per path): serve's peak
    RSS (VmHWM) against the sum of the 4 messages in flight"""
    print("60 MB message, 4 at once (4 LMTP connections, one message each) into smtp-sink: serve's peak RSS")
    for name, _, kind, _, _ in workloads:
        path = files["huge"][0] if kind is None else conv[(kind, "huge")][0]
        size = os.path.getsize(path)
        msgs = [wire(open(path, "rb").read())]
        srv = Serve(mg, conf, work, sink_port)
        try:
            t = time.monotonic()
            drive(srv.port, True, 4, msgs, rcpt_of[name], 0, 4, on_error=srv.died)
            wall = time.monotonic() - t
            hwm = proc_status(srv.pid, "VmHWM")
        finally:
            srv.stop()
        print("  %-20s 4 x %.1f MB in %6.1f s  VmHWM %7.1f MiB = %.2f x the sum in flight (target <= 2.0)" % (
            name, size / 1e6, wall, hwm / 1024, hwm * 1024 / (4 * size)))
        del msgs


def run(args, conf, ghome, files, conv, workloads, gpg_e, platform):
    mg = args.mimegate
    work = os.path.dirname(conf)
    quick = args.quick
    Serve.log = args.log
    if args.gpg_lock_never:
        # gpg then takes no lock files in its home, whose mtime serve watches (each lock changes it): see --help
        with open(os.path.join(ghome, "gpg.conf"), "a") as f:
            f.write("lock-never\n")
    seconds = args.seconds or (0.5 if quick else 4.0)
    ncpu = os.cpu_count() or 1
    names = [w[0] for w in workloads]
    for o in args.only:
        if o not in names:
            die("--only %s: not one of %s" % (o, ", ".join(names)))
    chosen = [w for w in workloads if not args.only or w[0] in args.only]
    inputs = {}
    for name, argv, kind, _, _ in workloads:
        for cls in ("small", "medium"):
            inputs[(name, cls)] = files[cls] if kind is None else conv[(kind, cls)]
    openers = {w[0]: w[4] for w in workloads}
    rcpt_of = {w[0]: w[1][-1] for w in workloads}
    pipe_argv = {w[0]: w[1] for w in workloads}
    # the messages as sent, made once per workload; 50 distinct 200 KB ones are plenty, and keep this process small
    wired_cache = {}

    def wired(key):
        if key not in wired_cache:
            wired_cache[key] = [wire(open(p, "rb").read()) for p in inputs[key][:50 if key[1] == "medium" else None]]
        return wired_cache[key]

    load = os.getloadavg()
    print("mimegate serve benchmark: %s, %d CPU, %s%s%s; load average %.2f %.2f %.2f at the start" % (
        os.uname().machine, ncpu, platform, " (quick)" if quick else "",
        " (gpg: lock-never)" if args.gpg_lock_never else "", *load))
    t0 = time.monotonic()
    checked = check_first(mg, conf, work, [(w[0], rcpt_of[w[0]]) for w in chosen], inputs, files, openers)
    print("first message of each workload and size reinjected and opened by gpg/openssl: %d ok (%.1f s)" % (
        checked, time.monotonic() - t0))

    sink_port = free_port()
    sink = start_sink(sink_port)
    try:
        # the sink alone, driven by the same client (SMTP), so that one can see it is not what limits serve
        print("smtp-sink alone (the reinjection target), same client, SMTP:")
        print("  %-7s %5s %7s %9s %8s %8s %11s %13s" % ("size", "conns", "n", "msgs/s", "p50 ms", "p99 ms",
                                                      "sink CPU ms", "client CPU ms"))
        sink_rate = {}
        for cls in ("small", "medium"):
            msgs = wired(("pass-through", cls))
            for conns in CONNS:
                n, wall, lat, b, a = drive(sink_port, False, conns, msgs, "rcpt@bench.example", seconds, 2 * conns,
                                           lambda: proc_cpu(sink.pid)[0])
                sink_rate[(cls, conns)] = n / wall
                print("  %-7s %5d %7d %9.0f %8.2f %8.2f %11.3f %13.3f" % (
                    cls, conns, n, n / wall, percentile(lat, .5) * 1e3, percentile(lat, .99) * 1e3,
                    (a - b) / n * 1e3, drive.client_cpu / n * 1e3))

        # the pipe on the same messages, one process per message, one per CPU at a time; and the bare gpg runs that
        # bound the workloads which run gpg for every message
        agent = Agent(ghome)
        pipe = {}  # measured just before serve on the same messages, so that both see about the same machine
        bare = {}
        if any(w[0] in GPG_BOUND for w in chosen):
            for cls in ("small", "medium"):
                bare[("e", cls)] = pipe_rate(gpg_e, files[cls], seconds / 2, 2 * ncpu, ncpu, agent)
                armored = []
                for i, path in enumerate(conv[("pgp-mime", cls)][:50]):
                    data = open(path, "rb").read()
                    b0 = data.index(b"-----BEGIN PGP MESSAGE-----")
                    b1 = data.index(b"-----END PGP MESSAGE-----", b0) + 25
                    armored.append(path + ".asc")
                    with open(armored[-1], "wb") as f:
                        f.write(data[b0:b1] + b"\n")
                gpg_d = ["gpg", "--homedir", ghome, "--batch", "-q", "-d", "-o", "-"]
                bare[("d", cls)] = pipe_rate(gpg_d, armored, seconds / 2, 2 * ncpu, ncpu, agent)

        print("serve (LMTP, workers = %d, log = %s) into smtp-sink; the pipe: `mimegate filter --stdout`, %d at a "
              "time:" % (ncpu, args.log or "none", ncpu))
        print("%-20s %-6s %5s %6s %8s %7s %7s %9s %8s %9s %7s %7s %8s %9s %6s" % (
            "workload", "size", "conns", "n", "msgs/s", "p50 ms", "p99 ms", "CPU ms", "msg/s/c", "gpg CPU ms",
            "cli CPU", "RSS MiB", "sink %", "pipe msg/s", "ratio"))
        results = {}
        for name, _, _, _, _ in chosen:
            for cls in ("small", "medium"):
                pipe[(name, cls)] = pipe_rate(pipe_argv[name], inputs[(name, cls)], seconds / 2, 2 * ncpu, ncpu, agent)
                srv = Serve(mg, conf, work, sink_port)
                try:
                    def probe():
                        own, kids = proc_cpu(srv.pid)
                        return own, kids + agent.cpu()
                    for conns in CONNS:
                        n, wall, lat, b, a = drive(srv.port, True, conns, wired((name, cls)), rcpt_of[name], seconds,
                                                   2 * conns, probe, srv.died)
                        rate = n / wall
                        cpu = (a[0] - b[0]) / n
                        gcpu = (a[1] - b[1]) / n
                        hwm = proc_status(srv.pid, "VmHWM")
                        prate = pipe[(name, cls)][0]
                        results[(name, cls, conns)] = (rate, cpu, gcpu, hwm, prate)
                        print("%-20s %-6s %5d %6d %8.0f %7.2f %7.2f %9.3f %8.0f %9.3f %7.3f %7.1f %8.0f %9.1f "
                              "%6.1f" % (
                            name, cls, conns, n, rate, percentile(lat, .5) * 1e3, percentile(lat, .99) * 1e3,
                            cpu * 1e3, 1 / cpu if cpu > 0 else float("inf"), gcpu * 1e3, drive.client_cpu / n * 1e3,
                            hwm / 1024, 100 * rate / sink_rate[(cls, conns)], prate, rate / prate))
                finally:
                    srv.stop()
                wired_cache.pop((name, cls), None)
        print("  CPU ms: of the serve process (all its threads) per message; msg/s/c: 1 / that (messages per\n"
              "  second per core of serve); gpg CPU ms: the gpg processes serve ran, and gpg-agent; cli CPU: the\n"
              "  client's, ms per message; RSS: serve's VmHWM; sink %: serve's rate as a share of the sink's alone at\n"
              "  that size and concurrency; ratio: serve's msgs/s over the pipe's")
        print("pipe, %d processes at a time (msgs/s; CPU ms per message: the processes, what they ran, gpg-agent):" %
              ncpu)
        for (name, cls), (rate, cpu) in pipe.items():
            print("  %-20s %-6s %8.1f msgs/s %8.2f CPU ms" % (name, cls, rate, cpu * 1e3))
        for (op, cls), (rate, cpu) in bare.items():
            print("  %-20s %-6s %8.1f msgs/s %8.2f CPU ms" % ("bare gpg -" + op, cls, rate, cpu * 1e3))

        # RSS: no growth over many messages
        rss = None
        if not args.only or "pass-through" in args.only:
            many = 10000 if quick else 100000
            srv = Serve(mg, conf, work, sink_port)
            try:
                msgs = wired(("pass-through", "small"))
                t = time.monotonic()
                drive(srv.port, True, 4, msgs, rcpt_of["pass-through"], 0, 1000, on_error=srv.died)
                r1 = proc_status(srv.pid, "VmRSS")
                drive(srv.port, True, 4, msgs, rcpt_of["pass-through"], 0, many - 1000, on_error=srv.died)
                r2 = proc_status(srv.pid, "VmRSS")
                hwm = proc_status(srv.pid, "VmHWM")
            finally:
                srv.stop()
            rss = (r1, r2, many)
            print("serve's VmRSS, small pass-through, 4 connections: after 1,000 messages %.1f MiB, after %s %.1f MiB "
                  "(x %.3f; VmHWM %.1f MiB; %.1f s)" % (r1 / 1024, format(many, ","), r2 / 1024, r2 / r1, hwm / 1024,
                                                       time.monotonic() - t))

        if "huge" in files and not args.only:
            huge_section(mg, conf, work, sink_port, workloads, files, conv, rcpt_of)

        if args.perf or args.attach:
            name, _, cls = args.profile.partition("/")
            if (name, cls) not in inputs:
                die("--profile %s: not WORKLOAD/small or WORKLOAD/medium" % args.profile)
            profile(args.perf, args.attach, mg, conf, work, sink_port, wired((name, cls)), rcpt_of[name],
                    max(seconds, 3.0), args.profile)
    finally:
        sink.terminate()
        sink.wait()

    print("serve targets (same run; per core = 1 / serve's CPU per message, best of 1, 4, 16 connections):")

    def line(what, value, target, ok, more=""):
        print("  %-66s %10s  target %-9s %s%s" % (what, value, target, "met" if ok else "NOT met", more))

    def best(name, cls, key):
        rows = [results[(name, cls, c)] for c in CONNS if (name, cls, c) in results]
        return max(key(r) for r in rows) if rows else None

    per_core = lambda r: 1 / r[1] if r[1] > 0 else float("inf")
    v = best("pass-through", "small", per_core)
    if v is not None:
        line("pass-through small, msgs/s per core of serve", "%.0f" % v, ">= 3000", v >= 3000)
    v = best("smime-encrypt", "small", per_core)
    if v is not None:
        line("S/MIME encrypt small, msgs/s per core of serve", "%.0f" % v, ">= 1500", v >= 1500)
    v = best("pgp-encrypt", "small", lambda r: 1 / (r[1] + r[2]) if r[1] + r[2] > 0 else float("inf"))
    if v is not None:
        line("PGP/MIME encrypt small (librnp), msgs/s per core of serve", "%.0f" % v, ">= 1000", v >= 1000)
    for name, _, _, _, _ in chosen:
        for cls in ("small", "medium"):
            v = best(name, cls, lambda r: r[0] / r[4])
            rate = best(name, cls, lambda r: r[0])
            cpu = min(r[1] + r[2] for c, r in ((c, results[(name, cls, c)]) for c in CONNS))
            what = "%s %s, serve / pipe msgs/s" % (name, cls)
            if name in GPG_BOUND:
                runs = GPG_BOUND[name][cls]
                frate = 1 / sum(k / bare[(op, cls)][0] for op, k in runs.items())
                fcpu = sum(k * bare[(op, cls)][1] for op, k in runs.items())
                print("  %-66s %10s  bound by gpg processes per message (%s): their floor (bare, %d at a time) "
                      "%.0f msgs/s, %.2f CPU ms; serve %.0f msgs/s, %.2f CPU ms with its gpg" % (
                          what, "%.1f" % v, ", ".join("%d gpg -%s" % (k, op) for op, k in runs.items()), ncpu, frate,
                          fcpu * 1e3, rate, cpu * 1e3))
            else:
                line(what, "%.1f" % v, ">= 5", v >= 5, "  (CPU per message, the pipe's / serve's: %.1f)" % (
                    pipe[(name, cls)][1] / cpu))
    if rss is not None:
        g = rss[1] / rss[0]
        line("VmRSS after %s / after 1,000 small messages" % format(rss[2], ","), "%.3f" % g, "<= 1.10", g <= 1.10)
    print("serve benchmark done in %.0f s; load average %.2f %.2f %.2f at the end" % (
        time.monotonic() - t0, *os.getloadavg()))


def profile(out, attach, mg, conf, work, sink_port, msgs, rcpt, seconds, what):
    """perf record -g (or the --attach command) on serve while 16 connections send @what's messages"""
    if out and not shutil.which("perf"):
        print("perf: not installed")
        return
    srv = Serve(mg, conf, work, sink_port)
    try:
        drive(srv.port, True, 16, msgs, rcpt, 1, 32, on_error=srv.died)  # warm
        if out:
            # DWARF unwinding: the distribution's GLib and GMime keep no frame pointers
            argv = ["perf", "record", "-q", "--call-graph", "dwarf,16384", "-F", "700", "-p", str(srv.pid), "-o", out]
        else:
            argv = [a.replace("{pid}", str(srv.pid)) for a in attach.split()]
        tool_err = os.path.join(work, "profile.err")
        with open(tool_err, "wb") as err:
            tool = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err)
        time.sleep(0.5)
        n, wall, _, _, _ = drive(srv.port, True, 16, msgs, rcpt, seconds, 100, on_error=srv.died)
        tool.send_signal(signal.SIGINT)
        tool.wait()
        with open(tool_err, errors="replace") as err:
            said = err.read().strip()
    finally:
        srv.stop()
    print("%s on serve, %s, 16 connections, %d messages in %.1f s%s:" % (
        "perf record -g" if out else attach, what.replace("/", " "), n, wall, ", into " + out if out else ""))
    if said:
        print("  it said: " + said[-1000:].replace("\n", "\n  "))
    if not out:
        return
    reports = (("by shared object (self)", ["--no-children", "--sort", "dso"]),
               ("by symbol (self)", ["--no-children", "--sort", "symbol"]),
               ("mimegate's functions (total with what they call, self)", ["--children", "--sort", "dso,symbol"]))
    for title, opts in reports:
        rep = subprocess.run(["perf", "report", "-i", out, "--stdio", "-g", "none", "--percent-limit", "1.5"] + opts,
                             capture_output=True, text=True).stdout
        rows = [l.rstrip(" -") for l in rep.splitlines() if l.strip() and not l.startswith("#")]
        if "dso,symbol" in opts:
            rows = [l.replace(" mimegate ", " ", 1) for l in rows if len(l.split()) > 2 and l.split()[2] == "mimegate"]
        print("  %s:" % title)
        for l in rows[:30]:
            print("    " + l.strip())
