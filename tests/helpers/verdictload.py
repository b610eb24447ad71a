"""Clients and holders around the real servers of tests/test_verdicts.py (loopback or the
test's own namespace addresses only).

Usage: python3 verdictload.py MODE [options]; prints READY <details> once the condition holds,
then holds it until killed or --hold seconds pass. Every loop is bounded in count and time.

Modes:
  closewait-fork  a server accepts N connections, the clients close, and the server forks a
                  child before closing anything: both processes hold the CLOSE_WAIT sockets
                  (prints pid= and child=; the child outlives the parent, bounded by --hold)
  idle            N client connections to --host:--port, opened and left idle
  pusher          new non-blocking connections to --host:--port at --rate per second for
                  --seconds (at most --count), all held open: keeps SYNs coming at a listener
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time

from lifeline import alive, die_with_parent


def closewait_fork(args) -> tuple[str, list]:
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", args.port))
    srv.listen(4096)
    held = []
    for _ in range(args.count):
        c = socket.create_connection(("127.0.0.1", args.port), timeout=5)
        a, _ = srv.accept()
        held.append(a)
        c.close()  # the peer closes: the accepted socket goes to CLOSE_WAIT
    test = os.getppid()
    child = os.fork()
    if child == 0:  # the child inherits every fd and never closes them
        # It outlives its parent on purpose (the test kills the parent), not the test.
        end = time.monotonic() + args.hold
        while time.monotonic() < end and alive(test):
            time.sleep(0.2)
        os._exit(0)
    return f"pid={os.getpid()} child={child} port={args.port} count={args.count}", [srv, *held]


def idle(args) -> tuple[str, list]:
    held = []
    for _ in range(args.count):
        held.append(socket.create_connection((args.host, args.port), timeout=5))
    return f"pid={os.getpid()} count={len(held)}", held


def pusher(args) -> tuple[str, list]:
    held = []
    end = time.monotonic() + args.seconds
    while time.monotonic() < end and len(held) < args.count:
        c = socket.socket()
        c.setblocking(False)
        try:
            c.connect((args.host, args.port))
        except BlockingIOError:
            pass
        except OSError:
            c.close()
            continue
        held.append(c)
        time.sleep(1.0 / args.rate)
    return f"pid={os.getpid()} pushed={len(held)}", held


def main() -> None:
    die_with_parent()
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["closewait-fork", "idle", "pusher"])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--count", type=int, default=10)
    p.add_argument("--rate", type=float, default=50.0)
    p.add_argument("--seconds", type=float, default=20.0, help="time bound for loops")
    p.add_argument("--hold", type=float, default=60.0, help="hold at most this long")
    args = p.parse_args()
    if args.mode == "pusher":
        # READY first: the pushing itself is the condition the test samples.
        print(f"READY pid={os.getpid()}", flush=True)
        detail, keep = pusher(args)
    else:
        detail, keep = {"closewait-fork": closewait_fork, "idle": idle}[args.mode](args)
        print(f"READY {detail}", flush=True)
    deadline = time.monotonic() + args.hold
    while time.monotonic() < deadline:
        time.sleep(0.2)
    del keep
    sys.exit(0)


if __name__ == "__main__":
    main()
