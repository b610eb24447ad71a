"""Workloads that make an application see one errno for real, for the `netdiag why` scenarios.

    python3 whyload.py MODE [--port P] [--count N] [--seconds S]

Each mode prints `READY ...` once its setup is done, then makes the error happen `--count`
times (or until `--seconds` runs out), prints `DONE <errno name>=<times seen> ...`, and holds
its sockets until killed or --hold runs out. Every loop is bounded in count and time.

Modes (run inside the test's own network namespace):
  refused    connect() to a port nothing listens on: ECONNREFUSED
  timeout    blocking connect() to a port the test's firewall drops: ETIMEDOUT once the
             kernel's SYN retries run out
  abort      a listener that never accepts, backlog 1, with tcp_abort_on_overflow=1 set by
             the test, and the clients' final ACKs held back by the test until they all
             connected: then they write, and those the accept queue has no room for read
             ECONNRESET (two `go` lines on stdin, see the function)
  linger     a server that closes each accepted connection with SO_LINGER {1, 0}: the
             client's read gets ECONNRESET
  exhaust    a listener and clients that hold connections until connect() fails: with a
             narrowed ip_local_port_range, EADDRNOTAVAIL
  churn      a client that opens and closes connections (socket.create_connection, no
             bind()) to a listener on 127.0.0.1 as fast as it can: with a narrowed
             ip_local_port_range every port ends in TIME_WAIT younger than
             tcp_tw_reuse_delay, and connect() fails with EADDRNOTAVAIL until --count
             failures (tcp_tw_reuse=2 applies on loopback, and does not help a burst)
  bindhold   sockets bound to 127.0.0.1 port 0 (no connect()) until bind() fails with
             EADDRINUSE (--count times), then plain connect()s to a listener on --port, which
             fail with EADDRNOTAVAIL: the bound ports are taken from every destination; then
             a bind() to 192.0.2.1 (TEST-NET-1, on no host): EADDRNOTAVAIL from bind()
  emfile     a server whose RLIMIT_NOFILE is tiny accepts until accept() fails: EMFILE
  idle       --count idle connections to --port without keepalive, and --count to --port + 1
             whose clients set SO_KEEPALIVE (the sysctls' timers); no error, they are held
  unacked    a client that keeps writing to a peer whose packets the test drops (nftables):
             the data stays unacknowledged and retransmits
"""

from __future__ import annotations

import argparse
import errno
import os
import resource
import socket
import struct
import sys
import threading
import time

from lifeline import die_with_parent


def _listener(port: int, backlog: int = 128) -> socket.socket:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen(backlog)
    return s


def _count(seen: dict[str, int], exc: OSError) -> None:
    name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
    seen[name] = seen.get(name, 0) + 1


def refused(args, seen: dict[str, int]) -> list:
    print(f"READY pid={os.getpid()}", flush=True)
    for _ in range(args.count):
        c = socket.socket()
        try:
            c.connect(("127.0.0.1", args.port))
        except OSError as exc:
            _count(seen, exc)
        finally:
            c.close()
    return []


def timeout(args, seen: dict[str, int]) -> list:
    print(f"READY pid={os.getpid()}", flush=True)
    deadline = time.monotonic() + args.seconds
    for _ in range(args.count):
        if time.monotonic() > deadline:
            break
        c = socket.socket()
        c.settimeout(max(deadline - time.monotonic(), 0.1))  # the kernel's SYN retries decide
        try:
            c.connect(("127.0.0.1", args.port))
        except OSError as exc:  # TimeoutError too: ETIMEDOUT from the kernel is one
            if exc.errno is None:  # our own deadline, not the kernel's errno
                seen["timeout (ours)"] = seen.get("timeout (ours)", 0) + 1
                continue
            _count(seen, exc)
        finally:
            c.close()
    return []


def abort(args, seen: dict[str, int]) -> list:
    """Phase 1 (after `go`): clients connect while the test drops their handshake's final
    ACK, so the server holds them as requests (its accept queue has room) while each client
    believes it is connected. Phase 2 (after the second `go`, the drop rule gone):
    the clients write; the first ACKs fill the accept queue (backlog 1 holds 2) and the rest
    find it full: with tcp_abort_on_overflow=1 they are reset."""
    # backlog 4: at most 4 requests wait for their ACK (more would get SYN cookies, which
    # bypass the overflow reset), and the accept queue holds 5. Three connections fill it
    # partly first, so that two of the four requests find it full when their ACKs arrive.
    srv = _listener(args.port, backlog=4)  # never accepts
    clients = [socket.create_connection(("127.0.0.1", args.port), timeout=2)
               for _ in range(3)]
    print(f"READY pid={os.getpid()}", flush=True)
    sys.stdin.readline()
    for _ in range(args.count):
        c = socket.socket()
        c.settimeout(2)
        try:
            c.connect(("127.0.0.1", args.port))
            clients.append(c)
        except OSError as exc:
            _count(seen, exc)
            c.close()
    print(f"CONNECTED {len(clients)}", flush=True)
    sys.stdin.readline()
    for c in clients[3:]:
        try:
            c.sendall(b"GET / HTTP/1.0\r\n\r\n")
            c.recv(1)
        except socket.timeout:
            seen["no answer"] = seen.get("no answer", 0) + 1
        except OSError as exc:
            _count(seen, exc)
    return [srv, *clients]


def linger(args, seen: dict[str, int]) -> list:
    srv = _listener(args.port)
    print(f"READY pid={os.getpid()}", flush=True)
    for _ in range(args.count):
        c = socket.create_connection(("127.0.0.1", args.port), timeout=2)
        a, _ = srv.accept()
        a.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        a.close()  # RST
        try:
            c.sendall(b"x")
            c.recv(1)
        except OSError as exc:
            _count(seen, exc)
        c.close()
    return [srv]


def exhaust(args, seen: dict[str, int]) -> list:
    srv = _listener(args.port, backlog=4096)
    srv.setblocking(False)
    print(f"READY pid={os.getpid()}", flush=True)
    keep = [srv]
    deadline = time.monotonic() + args.seconds
    failures = 0
    while time.monotonic() < deadline and len(keep) < 20000 and failures < args.count:
        c = socket.socket()
        try:
            c.connect(("127.0.0.1", args.port))
            keep.append(c)
        except OSError as exc:
            _count(seen, exc)
            failures += 1
            c.close()
        try:
            while True:
                keep.append(srv.accept()[0])
        except BlockingIOError:
            pass
    return keep


def churn(args, seen: dict[str, int]) -> list:
    srv = _listener(args.port, backlog=4096)
    print(f"READY pid={os.getpid()}", flush=True)
    deadline = time.monotonic() + args.seconds
    failures = opened = 0
    while time.monotonic() < deadline and failures < args.count and opened < 100_000:
        try:
            c = socket.create_connection(("127.0.0.1", args.port), timeout=2)
        except OSError as exc:
            _count(seen, exc)
            failures += 1
            continue
        opened += 1
        a, _ = srv.accept()
        c.close()  # the client closes first: its port stays in TIME_WAIT
        a.close()
    return [srv]


def idle(args, seen: dict[str, int]) -> list:
    plain, alive = _listener(args.port), _listener(args.port + 1)
    keep = [plain, alive]
    for _ in range(args.count):
        c = socket.create_connection(("127.0.0.1", args.port), timeout=2)
        keep += [c, plain.accept()[0]]
        k = socket.socket()
        k.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        k.settimeout(2)
        k.connect(("127.0.0.1", args.port + 1))
        keep += [k, alive.accept()[0]]
    print(f"READY pid={os.getpid()}", flush=True)
    return keep


def bindhold(args, seen: dict[str, int]) -> list:
    srv = _listener(args.port)
    keep = [srv]
    print(f"READY pid={os.getpid()}", flush=True)
    bind_failures = 0
    while bind_failures < args.count and len(keep) < 70_000:
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", 0))
            keep.append(s)
        except OSError as exc:
            _count(seen, exc)
            bind_failures += 1
            s.close()
    for _ in range(args.count):
        c = socket.socket()
        try:
            c.connect(("127.0.0.1", args.port))
            keep.append(c)
        except OSError as exc:
            _count(seen, exc)
            c.close()
    s = socket.socket()
    try:
        s.bind(("192.0.2.1", 0))
    except OSError as exc:
        _count(seen, exc)
    s.close()
    return keep


def emfile(args, seen: dict[str, int]) -> list:
    srv = _listener(args.port)
    parent = os.getpid()
    child = os.fork()
    if child == 0:  # the clients: connect one by one and hold, while the server lives
        held = []
        for _ in range(args.count):
            try:
                held.append(socket.create_connection(("127.0.0.1", args.port), timeout=2))
            except OSError:
                pass
            time.sleep(0.05)
        deadline = time.monotonic() + args.hold
        while time.monotonic() < deadline and os.getppid() == parent:
            time.sleep(0.2)  # the test kills the server: leave with it, not after --hold
        os._exit(0)
    srv.settimeout(0.5)
    # A few descriptors above what the interpreter holds: accept() soon fails with EMFILE.
    used = len(os.listdir("/proc/self/fd"))
    resource.setrlimit(resource.RLIMIT_NOFILE, (used + 4, used + 4))
    print(f"READY pid={os.getpid()}", flush=True)
    keep = [srv]
    deadline = time.monotonic() + args.seconds
    tries = 0
    while time.monotonic() < deadline and tries < args.count * 3:
        tries += 1
        try:
            keep.append(srv.accept()[0])
        except socket.timeout:
            continue
        except OSError as exc:
            _count(seen, exc)
            if seen.get("EMFILE", 0) >= 5:
                break
            time.sleep(0.05)  # the connection stays queued: do not spin
    return keep


def unacked(args, seen: dict[str, int]) -> list:
    srv = _listener(args.port)
    c = socket.create_connection(("127.0.0.1", args.port), timeout=2)
    a, _ = srv.accept()
    print(f"READY pid={os.getpid()} lport={c.getsockname()[1]}", flush=True)
    # The test now drops the port's packets; what is written stays unacknowledged.
    sys.stdin.readline()
    c.setblocking(False)
    deadline = time.monotonic() + args.seconds
    while time.monotonic() < deadline:
        try:
            c.send(b"y" * 1000)
        except BlockingIOError:
            pass
        except OSError as exc:
            _count(seen, exc)
            break
        time.sleep(0.2)
    return [srv, c, a]


def slowread(args, seen: dict[str, int]) -> list:
    """A writer on loopback faster than its reader: the reader takes 16 KB every 10 ms, the
    writer sends as fast as the receiver's window lets it, for --seconds."""
    srv = _listener(args.port)
    c = socket.create_connection(("127.0.0.1", args.port), timeout=2)
    a, _ = srv.accept()
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            try:
                if not a.recv(16384):
                    return
            except OSError:
                return
            time.sleep(0.01)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    print(f"READY pid={os.getpid()} lport={c.getsockname()[1]}", flush=True)
    c.settimeout(0.5)
    deadline = time.monotonic() + args.seconds
    chunk = b"z" * 65536
    while time.monotonic() < deadline:
        try:
            c.send(chunk)
        except socket.timeout:
            pass
        except OSError as exc:
            _count(seen, exc)
            break
    stop.set()
    return [srv, c, a]


def main() -> None:
    die_with_parent()
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["refused", "timeout", "abort", "linger", "exhaust",
                                    "churn", "idle", "bindhold", "emfile", "unacked",
                                    "slowread"])
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--count", type=int, default=10)
    p.add_argument("--seconds", type=float, default=20.0, help="time bound for loops")
    p.add_argument("--hold", type=float, default=60.0, help="hold at most this long")
    args = p.parse_args()
    seen: dict[str, int] = {}
    keep = globals()[args.mode](args, seen)
    print("DONE " + " ".join(f"{k}={v}" for k, v in sorted(seen.items())), flush=True)
    deadline = time.monotonic() + args.hold
    while time.monotonic() < deadline:
        time.sleep(0.2)
    del keep


if __name__ == "__main__":
    main()
