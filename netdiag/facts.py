"""Plain facts that collectors produce and rules read. No judgement lives here.

The helpers at the bottom decode kernel value formats (a port range, a reserved-ports list);
they describe what a value *is*, never whether it is good.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

# TCP states as the kernel numbers them (include/net/tcp_states.h).
TCP_STATES = {
    1: "ESTABLISHED",
    2: "SYN_SENT",
    3: "SYN_RECV",
    4: "FIN_WAIT1",
    5: "FIN_WAIT2",
    6: "TIME_WAIT",
    7: "CLOSE",
    8: "CLOSE_WAIT",
    9: "LAST_ACK",
    10: "LISTEN",
    11: "CLOSING",
    12: "NEW_SYN_RECV",
}
STATE_BY_NAME = {name: num for num, name in TCP_STATES.items()}
ESTABLISHED, SYN_SENT, SYN_RECV, FIN_WAIT1, FIN_WAIT2, TIME_WAIT = 1, 2, 3, 4, 5, 6
CLOSE, CLOSE_WAIT, LAST_ACK, LISTEN, CLOSING = 7, 8, 9, 10, 11

# idiag_timer / the `tr` column of /proc/net/tcp.
TIMER_NAMES = {0: "off", 1: "on", 2: "keepalive", 3: "timewait", 4: "persist"}


@dataclass
class SysctlFacts:
    """Raw sysctl values as the kernel prints them, keyed by dotted name."""

    values: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)

    def get_int(self, key: str) -> int | None:
        raw = self.values.get(key)
        if raw is None:
            return None
        try:
            return int(raw.split()[0])
        except (ValueError, IndexError):
            return None

    def get_ints(self, key: str) -> list[int] | None:
        raw = self.values.get(key)
        if raw is None:
            return None
        try:
            return [int(x) for x in raw.split()]
        except ValueError:
            return None


@dataclass
class CounterFacts:
    """/proc/net/netstat and /proc/net/snmp: {"TcpExt": {"ListenOverflows": 3}, "Tcp": {...}}."""

    counters: dict[str, dict[str, int]] = field(default_factory=dict)
    taken_at: float = 0.0

    def get(self, proto: str, name: str) -> int | None:
        return self.counters.get(proto, {}).get(name)


@dataclass
class SockstatFacts:
    """/proc/net/sockstat and sockstat6: {"TCP": {"inuse": 3, "tw": 0, ...}, "sockets": {...}}."""

    values: dict[str, dict[str, int]] = field(default_factory=dict)

    def get(self, proto: str, key: str) -> int | None:
        return self.values.get(proto, {}).get(key)


@dataclass
class Listener:
    family: int
    address: str
    port: int
    accept_queue: int  # Recv-Q: connections waiting for accept()
    backlog: int  # Send-Q: the effective limit, min(listen() backlog, somaxconn)
    inode: int


@dataclass
class TopCounts:
    """Bounded heavy-hitter counts: exact while the keys fit, approximate (pruned) beyond."""

    items: list[tuple[Any, int]]
    distinct_seen: int
    pruned: int  # how many counts were dropped when the structure was pruned
    approximate: bool


@dataclass
class Census:
    """Aggregated socket table of one network namespace: counts, never a list of sockets."""

    source: str  # "netlink" or "/proc/net/tcp"
    total: int = 0
    by_state: dict[str, int] = field(default_factory=dict)
    by_family: dict[str, int] = field(default_factory=dict)
    by_family_state: dict[str, dict[str, int]] = field(default_factory=dict)
    timers: dict[str, int] = field(default_factory=dict)
    listeners: list[Listener] = field(default_factory=list)
    # key (port, state_name); outgoing connections (source port in ip_local_port_range) are
    # counted in by_destination instead: one row per ephemeral port would say nothing.
    by_local_port: TopCounts | None = None
    by_peer: TopCounts | None = None  # key (address, state_name)
    by_process: TopCounts | None = None  # key (pid, state_name); only with attribution
    # Outgoing connections grouped per destination: sockets whose local port lies in
    # ip_local_port_range and is not a listening port. key (src, dst, dport).
    by_destination: TopCounts | None = None
    timewait_by_destination: TopCounts | None = None  # same key, TIME_WAIT only
    # TIME_WAIT whose local port is a listening port: this host (as server) closed first.
    timewait_server_side: TopCounts | None = None  # key (local port, peer address)
    timewait_roles: dict[str, int] = field(default_factory=dict)  # client / server / other
    close_wait_by_port: TopCounts | None = None  # key local port
    # Recv-Q on a CLOSE_WAIT socket counts the peer's FIN as one byte: Recv-Q == 1 means the
    # application never read the end of file, Recv-Q > 1 that data is unread too.
    close_wait_eof_unread: int = 0
    close_wait_unread: int = 0
    # inode -> local port for CLOSE_WAIT sockets (bounded; see close_wait_inodes_truncated)
    close_wait_inodes: dict[int, int] = field(default_factory=dict)
    close_wait_inodes_truncated: bool = False
    ephemeral_range: tuple[int, int] | None = None
    skipped_lines: int = 0


@dataclass
class ProcessInfo:
    pid: int
    command: str
    cmdline: str
    fds: int
    sockets: int | None  # None when its fds were not resolved (see collect.processes)
    nofile_soft: int | None = None
    nofile_hard: int | None = None
    user: str | None = None
    # True when at least one socket fd was seen (known even when `sockets` was not counted).
    holds_sockets: bool = False


@dataclass
class ProcessFacts:
    """Socket ownership found by walking /proc/PID/fd."""

    processes: dict[int, ProcessInfo] = field(default_factory=dict)
    owners: dict[int, int] = field(default_factory=dict)  # socket inode -> pid (wanted ones)
    scanned: int = 0
    unreadable: int = 0  # processes whose fd table we may not read (not root)


@dataclass
class SysctlSetting:
    file: str
    line: int
    key: str
    value: str


@dataclass
class SysctlConfFacts:
    """net.* settings found in the boot-time sysctl configuration files."""

    settings: list[SysctlSetting] = field(default_factory=list)
    files_read: list[str] = field(default_factory=list)


@dataclass
class FileNr:
    allocated: int
    maximum: int


@dataclass
class Facts:
    """Everything one run collected. A field is None when its collector failed or was not run."""

    netns: str = "default"
    kernel: str = ""
    sysctl: SysctlFacts | None = None
    counters: CounterFacts | None = None
    counters_before: CounterFacts | None = None  # first sample when --interval was given
    sockstat: SockstatFacts | None = None
    census: Census | None = None
    census_before: Census | None = None
    interval: float | None = None
    processes: ProcessFacts | None = None
    sysctl_conf: SysctlConfFacts | None = None
    file_nr: FileNr | None = None


# ---- decoding kernel value formats -------------------------------------------------------


def parse_port_list(text: str) -> list[tuple[int, int]]:
    """ip_local_reserved_ports: "8080,9000-9010" -> [(8080, 8080), (9000, 9010)]."""
    ranges: list[tuple[int, int]] = []
    for part in text.replace("\n", ",").split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            lo, hi = part.split("-", 1)
            ranges.append((int(lo), int(hi)))
        else:
            ranges.append((int(part), int(part)))
    return ranges


def reserved_in_range(reserved: list[tuple[int, int]], low: int, high: int) -> int:
    """How many reserved ports fall inside [low, high] (ranges may overlap)."""
    ports: set[int] = set()
    for lo, hi in reserved:
        ports.update(range(max(lo, low), min(hi, high) + 1))
    return len(ports)


def format_address(family: int, raw: bytes) -> str:
    """16-byte address as sock_diag gives it (IPv4 in the first 4 bytes) -> text."""
    if family == 2:
        return str(ipaddress.IPv4Address(raw[:4]))
    addr = ipaddress.IPv6Address(raw[:16])
    if addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return str(addr)
