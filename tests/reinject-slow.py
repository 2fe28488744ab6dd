#!/usr/bin/env python3
"""reinject-slow.py DIR MODE [-f SENDER -- RCPT...] - a reinject command for tests/test-reinject.c that stands in for
a sendmail the filter is killed under. It notes what its stdin is, reads it, and commits what it read only on end of
input, as sendmail does: into DIR/msg by a rename, with DIR/count holding "BYTES eof".

  DIR/stdin    what fd 0 is (readlink /proc/self/fd/0) and its seals (F_GET_SEALS, -1 when it cannot be sealed)
  DIR/reading  written after the first 64 KiB was read
  DIR/done     written last, whatever happened ("committed", or why not)

MODE read:   read everything, commit.
MODE wait:   after the first 64 KiB, wait (up to 20 s) until the filter that started us is dead, then read the rest:
             the test kills the filter in between; a child tied to the filter's life never gets to the rest.
MODE detach: as wait, but first leave the filter's process group and session in a child of our own, as a grandchild
             such as Postfix's postdrop or a sendmail that forks does: nothing the filter arranges for its direct
             child reaches it, so what it commits depends only on what its stdin holds."""
import fcntl
import os
import sys
import time

out, mode = sys.argv[1], sys.argv[2]
filter_pid = os.getppid()
F_GET_SEALS = getattr(fcntl, "F_GET_SEALS", 1034)


def note(name, text):
    with open(os.path.join(out, name + ".tmp"), "w") as f:
        f.write(text)
    os.rename(os.path.join(out, name + ".tmp"), os.path.join(out, name))


def dead(pid):
    """the process is gone or a zombie"""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True


if mode == "detach":
    if os.fork() != 0:
        os._exit(0)
    os.setsid()
try:
    seals = fcntl.fcntl(0, F_GET_SEALS)
except OSError:
    seals = -1
note("stdin", "%s\n%d\n" % (os.readlink("/proc/self/fd/0"), seals))
data = bytearray()
chunk = os.read(0, 65536)
data += chunk
note("reading", "%d\n" % len(data))
if mode in ("wait", "detach"):
    end = time.time() + 20
    while not dead(filter_pid) and time.time() < end:
        time.sleep(0.01)
    if not dead(filter_pid):
        note("done", "the filter was never killed\n")
        sys.exit(75)
while chunk:
    chunk = os.read(0, 65536)
    data += chunk
with open(os.path.join(out, "msg.tmp"), "wb") as f:
    f.write(data)
os.rename(os.path.join(out, "msg.tmp"), os.path.join(out, "msg"))
note("count", "%d eof\n" % len(data))
note("done", "committed\n")
