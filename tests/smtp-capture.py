#!/usr/bin/env python3
"""smtp-capture.py - a small SMTP server for tests/test-smtpclient.c that keeps exactly what it is sent.

Every octet received on connection N is appended to DIR/conn-N.raw as it arrives; every message completed by its
final dot is written, dot-unstuffed, to DIR/msg-M.eml before the reply. What it announces and how it misbehaves is
chosen on the command line; STEP is one of greeting, ehlo, helo, xforward, mail, rcpt, rcpt:ADDRESS, data, body
(the first octets of the message), dot, rset, quit; a STEP may end in @N to apply to connection N only, or in #K
to apply to its K-th occurrence on this server only. A 421 reply closes the connection after it is sent.

  --listen inet:HOST:PORT | unix:PATH     where to listen; "ready PORT" (0 for unix) goes to stdout once listening;
                                          HOST may be [::1]; PORT 0 picks a free one
  --dir DIR                               where the records go (also DIR/conn-N.done when connection N has ended)
  --ext 'SIZE 1000'                       an EHLO keyword line to announce (repeatable; none by default)
  --reply STEP=REPLY                      answer STEP with REPLY ("\\n" separates the lines of a multi-line reply)
  --drop STEP                             close the connection at STEP without answering
  --slow STEP=SECONDS                     wait before answering STEP (body: stop reading for that long)
  --close-after-dot [REPLY]               after answering a final dot, close the connection (sending REPLY first)

It exits when its standard input reaches end-of-file (the test that started it is gone) or on SIGTERM.
"""

import argparse
import os
import socket
import struct
import sys
import threading
import time


def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument("--listen", required=True)
    p.add_argument("--dir", required=True)
    p.add_argument("--ext", action="append", default=[])
    p.add_argument("--reply", action="append", default=[])
    p.add_argument("--drop", action="append", default=[])
    p.add_argument("--slow", action="append", default=[])
    p.add_argument("--close-after-dot", nargs="?", const="", default=None)
    return p.parse_args()


ARGS = parse_args()
LOCK = threading.Lock()
COUNTERS = {"conn": 0, "msg": 0}


def split_step(item):
    key, _, value = item.partition("=")
    return key, value


REPLIES = dict(split_step(r) for r in ARGS.reply)
SLOW = {k: float(v) for k, v in (split_step(s) for s in ARGS.slow)}
DROP = set(ARGS.drop)


OCCURRENCE = {}


def keys_for(step, conn):
    """the ways an option can name this occurrence of STEP: its K-th time on the server, connection N, any time"""
    with LOCK:
        OCCURRENCE[step] = OCCURRENCE.get(step, 0) + 1
        k = OCCURRENCE[step]
    return [f"{step}#{k}", f"{step}@{conn}", step]


def first(table, keys):
    for key in keys:
        if key in table:
            return table[key]
    return None


class Dropped(Exception):
    """the session ends. how: "close" (plainly), "reset" (at once, SO_LINGER 0: a dropped connection), or "drain"
    (after a 421: what the client still sends is read until it closes, so that the reply is not lost to a reset)"""

    def __init__(self, how="close"):
        super().__init__()
        self.how = how


class Session:
    def __init__(self, sock, number):
        self.sock = sock
        self.number = number
        self.buf = b""
        self.raw = open(os.path.join(ARGS.dir, f"conn-{number}.raw"), "ab", buffering=0)

    def recv_more(self):
        data = self.sock.recv(65536)
        if not data:
            raise Dropped()
        self.raw.write(data)
        self.buf += data

    def line(self):
        while b"\n" not in self.buf:
            self.recv_more()
        line, _, self.buf = self.buf.partition(b"\n")
        return line + b"\n"

    def step(self, step, default, extra=None):
        """answers STEP (and EXTRA, its more precise name): drop, wait, then the configured or the default reply;
        a 421 reply closes the connection after it is sent"""
        keys = (keys_for(extra, self.number) if extra else []) + keys_for(step, self.number)
        if any(k in DROP for k in keys):
            raise Dropped("reset")
        delay = first(SLOW, keys)
        if delay:
            time.sleep(delay)
        reply = first(REPLIES, keys)
        reply = reply if reply is not None else default
        self.sock.sendall(reply.replace("\\n", "\r\n").encode() + b"\r\n")
        if reply.startswith("421"):
            raise Dropped("drain")
        return reply

    def data(self):
        """reads the message up to its final dot; returns it dot-unstuffed"""
        keys = keys_for("body", self.number)
        if any(k in DROP for k in keys):
            if not self.buf:
                self.recv_more()
            raise Dropped("reset")
        delay = first(SLOW, keys)
        if delay:
            time.sleep(delay)
        lines = []
        while True:
            line = self.line()
            if line == b".\r\n":
                return b"".join(lines)
            lines.append(line[1:] if line.startswith(b".") else line)

    def run(self):
        self.step("greeting", "220 capture ESMTP")
        while True:
            line = self.line()
            verb = line.split(b" ", 1)[0].strip().upper()
            if verb == b"EHLO":
                exts = ["capture"] + ARGS.ext
                default = "\\n".join(f"250-{e}" for e in exts[:-1]) + ("\\n" if len(exts) > 1 else "")
                default += f"250 {exts[-1]}"
                self.step("ehlo", default)
            elif verb == b"HELO":
                self.step("helo", "250 capture")
            elif verb == b"XFORWARD":
                self.step("xforward", "250 2.0.0 Ok")
            elif verb == b"MAIL":
                self.step("mail", "250 2.1.0 Ok")
            elif verb == b"RCPT":
                address = line.split(b"<", 1)[-1].split(b">", 1)[0].decode("utf-8", "replace")
                self.step("rcpt", "250 2.1.5 Ok", "rcpt:" + address)
            elif verb == b"DATA":
                reply = self.step("data", "354 End data with <CR><LF>.<CR><LF>")
                if not reply.startswith("354"):
                    continue
                message = self.data()
                with LOCK:
                    COUNTERS["msg"] += 1
                    n = COUNTERS["msg"]
                with open(os.path.join(ARGS.dir, f"msg-{n}.eml"), "wb") as f:
                    f.write(message)
                self.step("dot", f"250 2.0.0 Ok: queued as {n}")
                if ARGS.close_after_dot is not None:
                    if ARGS.close_after_dot:
                        self.sock.sendall(ARGS.close_after_dot.encode() + b"\r\n")
                    return
            elif verb == b"RSET":
                self.step("rset", "250 2.0.0 Ok")
            elif verb == b"NOOP":
                self.sock.sendall(b"250 2.0.0 Ok\r\n")
            elif verb == b"QUIT":
                self.step("quit", "221 2.0.0 Bye")
                return
            else:
                self.sock.sendall(b"502 5.5.2 Error: command not recognized\r\n")


def serve_one(sock):
    with LOCK:
        COUNTERS["conn"] += 1
        number = COUNTERS["conn"]
    session = Session(sock, number)
    how = "close"
    try:
        session.run()
    except Dropped as e:
        how = e.how
    except OSError:
        pass
    try:
        if how == "reset":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        elif how == "drain":
            sock.shutdown(socket.SHUT_WR)
            sock.settimeout(5)
            while True:
                session.recv_more()
    except (Dropped, OSError):
        pass
    session.raw.close()
    sock.close()
    open(os.path.join(ARGS.dir, f"conn-{number}.done"), "w").close()


def main():
    kind, _, where = ARGS.listen.partition(":")
    if kind == "unix":
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(where)
        port = 0
    else:
        host, _, port = where.rpartition(":")
        family = socket.AF_INET6 if host.startswith("[") else socket.AF_INET
        host = host.strip("[]")
        server = socket.socket(family, socket.SOCK_STREAM)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind((host, int(port)))
        port = server.getsockname()[1]
    server.listen(16)
    print(f"ready {port}", flush=True)
    threading.Thread(target=lambda: (sys.stdin.read(), os._exit(0)), daemon=True).start()
    while True:
        sock, _ = server.accept()
        threading.Thread(target=serve_one, args=(sock,), daemon=True).start()


main()
