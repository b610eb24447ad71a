"""Workloads of known size for the probe tests, run inside a test's network namespace.

Usage: python3 probeload.py MODE [options]. The workload sets up (listeners, workers), prints
`READY <details>`, waits for a line on stdin (the test sends it once netdiag and bpftrace are
both attached), generates exactly the events its options say, prints `DONE <details>`, then
holds its sockets until stdin closes or --hold runs out. Loopback only; every loop is
bounded in count and time.

Modes:
  churn      --count short connections to --port (client closes first); --ipv6
  refused    --count blocking connects to --port, where nothing listens
  nbrefused  --count non-blocking connects to --port, the error read with SO_ERROR
  closewait  --count connections the server never closes (the clients close); --release N
             of them are closed by the server after --after seconds
  linger     --count connections the client ends with SO_LINGER {1, 0} (a RST); the server
             then reads once (ECONNRESET)
  herd       --count connections to --workers workers, --style epoll | exclusive |
             reuseport | threads | blocking; each connection is answered with one byte before
             the next one is made, so every worker is idle when it arrives
  emfile     a server whose RLIMIT_NOFILE leaves no descriptor to accept with; --count
             clients connect
  synflood   listen(--backlog), never accepted; --count non-blocking connects (SYNs dropped,
             then retransmitted); all closed once retransmits were counted
  transfer   --count bytes to a receiver with SO_RCVBUF=--rcvbuf on --port, then to one that
             autotunes on --port + 1; SO_RCVBUF on a netlink socket too
"""

from __future__ import annotations

import argparse
import os
import resource
import select
import socket
import struct
import sys
import threading
import time

from lifeline import die_with_parent

HOST = {socket.AF_INET: "127.0.0.1", socket.AF_INET6: "::1"}


def listener(port: int, family: int = socket.AF_INET, backlog: int = 4096,
             reuseport: bool = False) -> socket.socket:
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuseport:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind((HOST[family], port))
    s.listen(backlog)
    return s


class Workload:
    def __init__(self, args) -> None:
        self.args = args
        self.keep: list = []
        self.kids: list[int] = []

    def ready(self) -> str:
        return ""

    def run(self) -> str:
        return ""

    def stop(self) -> None:
        for pid in self.kids:
            try:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
            except OSError:
                pass


class Churn(Workload):
    def ready(self) -> str:
        fam = socket.AF_INET6 if self.args.ipv6 else socket.AF_INET
        self.family = fam
        self.srv = listener(self.args.port, fam)
        self.srv.settimeout(10)
        return f"port={self.args.port}"

    def run(self) -> str:
        made = 0
        deadline = time.monotonic() + self.args.seconds
        for i in range(self.args.count):
            if time.monotonic() > deadline:
                break
            c = socket.socket(self.family, socket.SOCK_STREAM)
            if self.args.client_port:  # a client port outside the ephemeral range (NAT, macOS)
                c.bind((HOST[self.family], self.args.client_port + i))
            c.connect((HOST[self.family], self.args.port))
            a, _ = self.srv.accept()
            if self.args.server_closes:
                a.close()  # the server closes first: FIN_WAIT1 on the server
                c.recv(1)
                c.close()
            else:
                c.close()  # the client closes first: FIN_WAIT1 here, CLOSE_WAIT on the server
                a.recv(1)
                a.close()
            made += 1
        return f"made={made}"


class Refused(Workload):
    def run(self) -> str:
        n = 0
        for _ in range(self.args.count):
            c = socket.socket()
            try:
                c.connect(("127.0.0.1", self.args.port))
            except ConnectionRefusedError:
                n += 1
            c.close()
        return f"refused={n}"


class NbRefused(Workload):
    def run(self) -> str:
        n = 0
        for _ in range(self.args.count):
            c = socket.socket()
            c.setblocking(False)
            try:
                c.connect(("127.0.0.1", self.args.port))
            except BlockingIOError:
                pass
            select.select([], [c], [], 5)
            if c.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                n += 1
            c.close()
        return f"refused={n}"


class CloseWait(Workload):
    def ready(self) -> str:
        self.srv = listener(self.args.port)
        return f"pid={os.getpid()}"

    def run(self) -> str:
        held = []
        for _ in range(self.args.count):
            c = socket.create_connection(("127.0.0.1", self.args.port), timeout=5)
            a, _ = self.srv.accept()
            c.close()
            held.append(a)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and _close_wait_count(self.args.port) < len(held):
            time.sleep(0.01)
        if self.args.release:
            time.sleep(self.args.after)
            for a in held[:self.args.release]:
                a.close()
        self.keep = held[self.args.release:]
        return f"held={len(self.keep)} released={self.args.release}"


def _close_wait_count(port: int) -> int:
    n = 0
    with open("/proc/net/tcp") as fh:
        for line in fh:
            parts = line.split()
            if len(parts) > 3 and parts[3] == "08" and parts[1].endswith(f":{port:04X}"):
                n += 1
    return n


class Linger(Workload):
    def ready(self) -> str:
        self.srv = listener(self.args.port)
        return f"pid={os.getpid()}"

    def run(self) -> str:
        resets = 0
        for _ in range(self.args.count):
            c = socket.create_connection(("127.0.0.1", self.args.port), timeout=5)
            a, _ = self.srv.accept()
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            c.close()  # a RST instead of a FIN
            a.settimeout(5)
            try:
                a.recv(10)
            except ConnectionResetError:
                resets += 1
            a.close()
        return f"econnreset={resets}"


class Herd(Workload):
    """Workers wait for connections; the client makes one at a time and waits for its byte."""

    def ready(self) -> str:
        a = self.args
        self.done = None
        if a.style == "reuseport":
            socks = [listener(a.port, reuseport=True) for _ in range(a.workers)]
        else:
            socks = [listener(a.port)] * a.workers
        for s in socks:
            s.setblocking(a.style == "blocking")
        if a.style in ("threads", "blocking"):
            for s in socks:
                threading.Thread(target=self.worker, args=(s,), daemon=True).start()
            label = f"pid={os.getpid()}"
        else:
            for s in socks:
                pid = os.fork()
                if pid == 0:
                    try:
                        die_with_parent()
                        self.worker(s)
                    finally:
                        os._exit(0)
                self.kids.append(pid)
            label = "pids=" + ",".join(str(p) for p in self.kids)
        time.sleep(0.3)  # every worker reaches its wait
        return label

    def worker(self, s: socket.socket) -> None:
        end = time.monotonic() + self.args.hold
        if self.args.style == "blocking":
            # A plain blocking accept(), no timeout: a timeout would make Python poll() the
            # socket, and poll() waiters are woken all together (a herd of its own).
            while time.monotonic() < end:
                try:
                    c, _ = s.accept()
                except OSError:
                    return
                c.sendall(b"x")
                c.close()
            return
        ep = select.epoll()
        flags = select.EPOLLIN | (select.EPOLLEXCLUSIVE if self.args.style == "exclusive"
                                  else 0)
        ep.register(s.fileno(), flags)
        while time.monotonic() < end:
            if not ep.poll(0.5):
                continue
            try:  # one accept per wake-up, as many event loops do
                c, _ = s.accept()
            except BlockingIOError:
                continue
            c.setblocking(True)
            c.sendall(b"x")
            c.close()

    def run(self) -> str:
        ok = 0
        for _ in range(self.args.count):
            c = socket.create_connection(("127.0.0.1", self.args.port), timeout=5)
            if c.recv(1) == b"x":
                ok += 1
            c.close()
            time.sleep(self.args.gap)
        return f"answered={ok}"


class Emfile(Workload):
    def ready(self) -> str:
        self.srv = listener(self.args.port)
        self.srv.setblocking(False)
        return f"pid={os.getpid()}"

    def run(self) -> str:
        clients = [socket.create_connection(("127.0.0.1", self.args.port), timeout=5)
                   for _ in range(self.args.count)]
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        # No descriptor left: the lowest free fd is above the limit.
        probe = os.open("/dev/null", os.O_RDONLY)
        os.close(probe)
        resource.setrlimit(resource.RLIMIT_NOFILE, (probe, hard))
        failed = 0
        for _ in range(self.args.count):
            try:
                self.srv.accept()
            except OSError as exc:
                if exc.errno == 24:
                    failed += 1
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        self.keep = clients
        return f"emfile={failed}"


class SynFlood(Workload):
    """listen(--backlog) inside the window, --count non-blocking connects it never accepts:
    once its queue is full, SYNs are dropped and the clients retransmit them. When the
    namespace counted the retransmits (TcpRetransSegs), everything is closed, so no timer
    fires after DONE."""

    def run(self) -> str:
        srv = listener(self.args.port, backlog=self.args.backlog)
        clients = []
        for _ in range(self.args.count):
            c = socket.socket()
            c.setblocking(False)
            try:
                c.connect(("127.0.0.1", self.args.port))
            except BlockingIOError:
                pass
            clients.append(c)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and _counter("Tcp", "RetransSegs") < self.args.count:
            time.sleep(0.05)
        got = _counter("Tcp", "RetransSegs")
        for c in clients:
            c.close()
        srv.close()
        return f"retransmitted={'yes' if got else 'no'}"


def _counter(proto: str, name: str) -> int:
    with open("/proc/net/snmp") as fh:
        lines = [ln.split() for ln in fh if ln.startswith(proto + ":")]
    return int(lines[1][lines[0].index(name)])


class Transfer(Workload):
    """--count bytes through one connection to --port, read by a receiver that fixed
    SO_RCVBUF=--rcvbuf (autotuning off), then through one whose buffer autotunes; and
    SO_RCVBUF on a netlink socket, as `ip` and `ss` do, which is not a TCP/UDP buffer."""

    def run(self) -> str:
        nl = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)
        nl.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        nl.close()
        for port, rcvbuf in ((self.args.port, self.args.rcvbuf), (self.args.port + 1, 0)):
            srv = listener(port)
            if rcvbuf:
                srv.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)  # inherited
            c = socket.create_connection(("127.0.0.1", port), timeout=10)
            a, _ = srv.accept()
            sender = threading.Thread(target=c.sendall, args=(b"x" * self.args.count,))
            sender.start()
            got = 0
            a.settimeout(10)
            while got < self.args.count:
                chunk = a.recv(65536)
                if not chunk:
                    break
                got += len(chunk)
            sender.join(10)
            c.close()
            a.close()
            srv.close()
        return f"pid={os.getpid()}"


MODES = {"churn": Churn, "refused": Refused, "nbrefused": NbRefused, "closewait": CloseWait,
         "linger": Linger, "herd": Herd, "emfile": Emfile,
         "synflood": SynFlood, "transfer": Transfer}


def main() -> None:
    die_with_parent()
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=sorted(MODES))
    p.add_argument("--port", type=int, default=9000)
    p.add_argument("--count", type=int, default=10)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--style", default="epoll",
                   choices=["epoll", "exclusive", "reuseport", "threads", "blocking"])
    p.add_argument("--gap", type=float, default=0.005, help="seconds between herd clients")
    p.add_argument("--release", type=int, default=0)
    p.add_argument("--after", type=float, default=0.0)
    p.add_argument("--rcvbuf", type=int, default=65536)
    p.add_argument("--backlog", type=int, default=1)
    p.add_argument("--ipv6", action="store_true")
    p.add_argument("--client-port", type=int, default=0,
                   help="churn: bind the i-th client to this port + i")
    p.add_argument("--server-closes", action="store_true", help="churn: the server closes first")
    p.add_argument("--seconds", type=float, default=60.0, help="time bound for loops")
    p.add_argument("--hold", type=float, default=120.0, help="hold at most this long")
    args = p.parse_args()
    work = MODES[args.mode](args)
    try:
        print(f"READY {work.ready()}", flush=True)
        if not sys.stdin.readline():  # the test starts the load; EOF means abandon
            return
        print(f"DONE {work.run()}", flush=True)
        deadline = time.monotonic() + args.hold
        while time.monotonic() < deadline:
            r, _, _ = select.select([sys.stdin], [], [], 0.5)
            if r and not sys.stdin.readline():
                break
    finally:
        work.stop()


if __name__ == "__main__":
    main()
