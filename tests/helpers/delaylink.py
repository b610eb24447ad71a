"""A point-to-point link with real delay between two network namespaces (no sch_netem here).

    python3 delaylink.py NS_A NS_B [--delay-ms 25] [--seconds 120] [--mtu 9000]
                         [--addr-a 10.201.0.1] [--addr-b 10.201.0.2]

Creates a TUN device in each namespace (tunA with --addr-a/24 in NS_A, tunB with --addr-b/24
in NS_B), then relays every IP packet from one to the other after --delay-ms milliseconds
(each direction, so the round trip is twice that). Prints `READY` once both ends are up.

Bounded: it exits after --seconds, on SIGTERM/SIGINT, or when a namespace disappears; at
most QUEUE_MAX packets wait per direction (more are dropped, as a router queue would). Runs
as root in the initial namespace; the devices disappear with the process.
"""

from __future__ import annotations

import argparse
import collections
import ctypes
import ctypes.util
import fcntl
import os
import select
import signal
import struct
import subprocess
import sys
import time

from lifeline import die_with_parent

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
CLONE_NEWNET = 0x40000000
QUEUE_MAX = 8192
READ_BURST = 256

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def open_tun(namespace: str, name: str) -> int:
    """A TUN device created inside `namespace` (it belongs to the namespace it was made in);
    the process itself returns to its own namespace."""
    own = os.open("/proc/self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{namespace}", os.O_RDONLY)
    try:
        _setns(target)
        try:
            fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
            fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
        finally:
            _setns(own)
    finally:
        os.close(own)
        os.close(target)
    return fd


def configure(namespace: str, dev: str, addr: str, mtu: int) -> None:
    for cmd in (["addr", "add", f"{addr}/24", "dev", dev],
                ["link", "set", dev, "mtu", str(mtu), "up"]):
        subprocess.run(["ip", "-n", namespace, *cmd], check=True)


def relay(fd_a: int, fd_b: int, delay: float, seconds: float) -> None:
    peer = {fd_a: fd_b, fd_b: fd_a}
    queues: dict[int, collections.deque] = {fd_a: collections.deque(),
                                             fd_b: collections.deque()}
    deadline = time.monotonic() + seconds
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    while not stop:
        now = time.monotonic()
        if now >= deadline:
            return
        due = [q[0][0] for q in queues.values() if q]
        timeout = max(min(due) - now, 0.0) if due else 0.2
        try:
            ready, _, _ = select.select([fd_a, fd_b], [], [], min(timeout, 0.2))
        except InterruptedError:
            continue
        now = time.monotonic()
        for fd in ready:
            q = queues[fd]
            for _ in range(READ_BURST):
                try:
                    packet = os.read(fd, 65536)
                except BlockingIOError:
                    break
                except OSError:
                    return  # the device went away with its namespace
                if len(q) < QUEUE_MAX:
                    q.append((now + delay, packet))
        for fd, q in queues.items():
            while q and q[0][0] <= now:
                _, packet = q.popleft()
                try:
                    os.write(peer[fd], packet)
                except BlockingIOError:
                    pass  # the receiving device's queue is full: a drop
                except OSError:
                    return


def main() -> None:
    die_with_parent()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("ns_a")
    ap.add_argument("ns_b")
    ap.add_argument("--delay-ms", type=float, default=25.0)
    ap.add_argument("--seconds", type=float, default=120.0)
    ap.add_argument("--mtu", type=int, default=9000)
    ap.add_argument("--addr-a", default="10.201.0.1")
    ap.add_argument("--addr-b", default="10.201.0.2")
    args = ap.parse_args()
    if not 0 <= args.delay_ms <= 1000 or not 0 < args.seconds <= 600:
        sys.exit("delay must be 0..1000 ms and seconds 0..600")
    fd_a = open_tun(args.ns_a, "tunA")
    fd_b = open_tun(args.ns_b, "tunB")
    configure(args.ns_a, "tunA", args.addr_a, args.mtu)
    configure(args.ns_b, "tunB", args.addr_b, args.mtu)
    print("READY", flush=True)
    relay(fd_a, fd_b, args.delay_ms / 1000.0, args.seconds)


if __name__ == "__main__":
    main()
