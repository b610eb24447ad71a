"""Create real socket conditions inside a (test) network namespace. Loopback only.

Usage: python3 sockload.py MODE [options]; prints READY <details> once the condition holds,
then holds it until killed or --hold seconds pass. Every loop is bounded in count and time.

Modes:
  closewait   a server accepts N connections and never closes them; the clients close
              (server side: CLOSE_WAIT, owned by this process); --unaccepted K adds K
              closed connections a listener never accepts (CLOSE_WAIT without an inode)
  churn       N short connections, client closes first (client side: TIME_WAIT)
  listen      a listener with --backlog that never accepts, N clients connect
  hold        N established connections held open by this process
  rcvbuf      one connection whose receiver fixed SO_RCVBUF=--rcvbuf (autotuning off),
              1 MiB sent through it, held open
  keepalive   N idle connections with SO_KEEPALIVE set on both ends
  probed      N idle connections whose server side sends keepalive probes every second
  herd        --workers processes share one non-blocking listener, each woken by epoll for
              every connection (no EPOLLEXCLUSIVE); then N clients connect
  refused     N connects to a port nobody listens on (the kernel answers with RSTs)
  linger      N connections closed with SO_LINGER {on, 0}: a RST instead of a FIN
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time

from lifeline import die_with_parent


def server(port: int, backlog: int = 4096, family: int = socket.AF_INET) -> socket.socket:
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("::1" if family == socket.AF_INET6 else "127.0.0.1", port))
    s.listen(backlog)
    return s


def closewait(args) -> str:
    srv = server(args.port)
    held = []
    for _ in range(args.count):
        c = socket.create_connection(("127.0.0.1", args.port), timeout=5)
        a, _ = srv.accept()
        held.append(a)
        c.close()  # client closes: the accepted socket goes to CLOSE_WAIT and stays there
    if args.unaccepted:
        # A listener (0.0.0.0) nobody accepts from: its clients close, and the connections
        # the kernel queued for it go to CLOSE_WAIT with no file (ss shows ino:0).
        idle = socket.socket()
        idle.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        idle.bind(("0.0.0.0", args.unaccepted_port))
        idle.listen(128)
        held.append(idle)
        for _ in range(args.unaccepted):
            socket.create_connection(("127.0.0.1", args.unaccepted_port), timeout=5).close()
    return f"pid={os.getpid()} port={args.port} count={args.count}", [srv, *held]


def churn(args) -> str:
    family = socket.AF_INET6 if args.ipv6 else socket.AF_INET
    host = "::1" if args.ipv6 else "127.0.0.1"
    srv = server(args.port, family=family)
    srv.settimeout(5)
    made = 0
    failed = 0
    deadline = time.monotonic() + args.seconds
    for _ in range(args.count):
        if time.monotonic() > deadline:
            break
        c = socket.socket(family, socket.SOCK_STREAM)
        try:
            c.connect((host, args.port))
        except OSError:
            failed += 1  # EADDRNOTAVAIL once the narrowed range is used up
            c.close()
            continue
        a, _ = srv.accept()
        c.close()  # the client closes first -> TIME_WAIT on the client side
        a.recv(1)
        a.close()
        made += 1
    return f"made={made} failed={failed}", [srv]


def listen(args) -> str:
    srv = server(args.port, backlog=args.backlog)
    clients = []
    for _ in range(args.count):
        c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        c.setblocking(False)
        try:
            c.connect(("127.0.0.1", args.port))
        except BlockingIOError:
            pass
        clients.append(c)
    time.sleep(0.5)  # let the handshakes (and the drops) happen
    return f"pid={os.getpid()} port={args.port}", [srv, *clients]


def hold(args) -> str:
    srv = server(args.port)
    held = []
    for _ in range(args.count):
        c = socket.create_connection(("127.0.0.1", args.port), timeout=5)
        a, _ = srv.accept()
        held += [c, a]
    return f"pid={os.getpid()} count={args.count}", [srv, *held]


def rcvbuf(args) -> str:
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, args.rcvbuf)  # inherited by accept()
    srv.bind(("127.0.0.1", args.port))
    srv.listen(8)
    c = socket.create_connection(("127.0.0.1", args.port), timeout=5)
    a, _ = srv.accept()
    payload = b"x" * (1 << 20)
    got = 0
    c.setblocking(False)
    sent = 0
    deadline = time.monotonic() + args.seconds
    while got < len(payload) and time.monotonic() < deadline:
        if sent < len(payload):
            try:
                sent += c.send(payload[sent:])
            except BlockingIOError:
                pass
        a.settimeout(0.05)
        try:
            got += len(a.recv(65536))
        except socket.timeout:
            pass
    effective = a.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    return f"pid={os.getpid()} rcvbuf={effective} got={got}", [srv, c, a]


def keepalive(args) -> str:
    srv = server(args.port)
    held = []
    for _ in range(args.count):
        c = socket.create_connection(("127.0.0.1", args.port), timeout=5)
        a, _ = srv.accept()
        for s in (c, a):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        held += [c, a]
    return f"pid={os.getpid()} count={args.count}", [srv, *held]


def probed(args) -> str:
    """N connections that exchange one byte each way and then sit idle, while the server's
    side sends keepalive probes every second (TCP_KEEPIDLE 1, TCP_KEEPINTVL 1): each probe
    reaches the idle client out of window and adds to its skmem drop counter (sk_drops)."""
    srv = server(args.port)
    held = []
    for _ in range(args.count):
        c = socket.create_connection(("127.0.0.1", args.port), timeout=5)
        a, _ = srv.accept()
        c.sendall(b"q")
        a.recv(1)
        a.sendall(b"r")
        c.recv(1)
        a.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        a.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 1)
        a.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 1)
        held += [c, a]
    return f"pid={os.getpid()} count={args.count}", [srv, *held]


def herd(args) -> str:
    import select

    srv = server(args.port)
    srv.setblocking(False)
    kids = []
    for _ in range(args.workers):
        pid = os.fork()
        if pid == 0:  # a worker: epoll on the shared socket, accept when woken
            die_with_parent()
            ep = select.epoll()
            ep.register(srv.fileno(), select.EPOLLIN)
            end = time.monotonic() + args.hold
            while time.monotonic() < end:
                if ep.poll(0.2):
                    try:
                        c, _ = srv.accept()
                        c.close()
                    except BlockingIOError:
                        pass
                    time.sleep(0.002)  # let the other woken workers reach accept()
            os._exit(0)
        kids.append(pid)
    time.sleep(0.3)
    for _ in range(args.count):
        c = socket.create_connection(("127.0.0.1", args.port), timeout=5)
        c.close()
        time.sleep(0.01)
    return f"pid={os.getpid()} workers={args.workers}", [srv]


def refused(args) -> str:
    n = 0
    for _ in range(args.count):
        c = socket.socket()
        try:
            c.connect(("127.0.0.1", args.port))
        except ConnectionRefusedError:
            n += 1
        c.close()
    return f"refused={n}", []


def linger(args) -> str:
    import struct

    srv = server(args.port)
    held = []
    for _ in range(args.count):
        c = socket.create_connection(("127.0.0.1", args.port), timeout=5)
        a, _ = srv.accept()
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.close()  # RST to the accepted side
        held.append(a)
    return f"pid={os.getpid()} count={args.count}", [srv, *held]


def main() -> None:
    die_with_parent()
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["closewait", "churn", "listen", "hold", "rcvbuf",
                                    "keepalive", "probed", "herd", "refused", "linger"])
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--rcvbuf", type=int, default=65536)
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--count", type=int, default=10)
    p.add_argument("--backlog", type=int, default=1)
    p.add_argument("--seconds", type=float, default=20.0, help="time bound for loops")
    p.add_argument("--hold", type=float, default=120.0, help="hold at most this long")
    p.add_argument("--ipv6", action="store_true")
    p.add_argument("--unaccepted", type=int, default=0,
                   help="closewait: also N connections left in the accept queue of a "
                        "listener on --unaccepted-port that never accepts, then closed")
    p.add_argument("--unaccepted-port", type=int, default=8081)
    args = p.parse_args()
    detail, keep = globals()[args.mode](args)
    print(f"READY {detail}", flush=True)
    # Hold the sockets until killed, or until stdin closes, or --hold runs out.
    deadline = time.monotonic() + args.hold
    while time.monotonic() < deadline:
        time.sleep(0.2)
    del keep
    sys.exit(0)


if __name__ == "__main__":
    main()
