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
    """Raw sysctl values as the kernel prints them, keyed by dotted name.

    `missing`: absent here (not on this kernel, or host-wide and not visible in this network
    namespace); `unreadable`: present but not read, and why; `host_wide`: keys whose value was
    read in the initial network namespace because they are global (tcp_mem,
    netdev_max_backlog...) and a namespace other than the initial one does not show them.
    """

    values: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    # present but not read (not a regular file, too large, permission denied): key -> why
    unreadable: dict[str, str] = field(default_factory=dict)
    host_wide: list[str] = field(default_factory=list)

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

    def typed(self, key: str) -> Any:
        """The value as JSON shows it (facts and evidence alike): int, list of ints, list of
        [first, last] port ranges, or None (see sysctl_value)."""
        return sysctl_value(key, self.values.get(key))


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
    """One LISTEN socket. Members of an SO_REUSEPORT group share address and port but each
    has its own inode and accept queue (symptoms-and-limits.md §4)."""

    family: int
    address: str
    port: int
    accept_queue: int  # Recv-Q: connections waiting for accept()
    backlog: int  # Send-Q: the effective limit, min(listen() backlog, somaxconn)
    inode: int

    @property
    def full(self) -> bool:
        """The queue holds backlog + 1: the kernel drops what comes next
        (sk_acceptq_is_full() compares with `>`)."""
        return self.accept_queue > self.backlog


def reuseport_groups(listeners: list[Listener]) -> dict[tuple[int, str, int], list[Listener]]:
    """Listeners that share (family, address, port): SO_REUSEPORT groups (2+ members)."""
    groups: dict[tuple[int, str, int], list[Listener]] = {}
    for lst in listeners:
        groups.setdefault((lst.family, lst.address, lst.port), []).append(lst)
    return {k: sorted(v, key=lambda m: m.inode) for k, v in groups.items() if len(v) > 1}


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
    # Sockets by timer name and state (exact): a SYN_SENT socket on the retransmit timer
    # retransmits its SYN, it holds no data.
    timers_by_state: dict[str, dict[str, int]] = field(default_factory=dict)
    # Outgoing connections by (destination address, destination port, state, timer name):
    # what the socket table shows of each connection's timer toward a service.
    outgoing_timers: TopCounts | None = None
    # Recv-Q on a CLOSE_WAIT socket counts the peer's FIN as one byte: Recv-Q == 1 means the
    # application never read the end of file, Recv-Q > 1 that data is unread too.
    close_wait_eof_unread: int = 0
    close_wait_unread: int = 0
    # inode -> local port for CLOSE_WAIT sockets (bounded; see close_wait_inodes_truncated)
    close_wait_inodes: dict[int, int] = field(default_factory=dict)
    close_wait_inodes_truncated: bool = False
    # CLOSE_WAIT sockets without an inode (sock_i_ino() is 0: no struct socket, so no file
    # and no process refers to them): connections still in a listener's accept queue, which
    # the peer closed before the application called accept(). Counted by local port, and
    # kept by four-tuple (family, src, sport, dst, dport; bounded like the inodes) so that
    # two samples can tell the same sockets apart.
    close_wait_no_inode: dict[int, int] = field(default_factory=dict)
    close_wait_no_inode_keys: set[tuple] = field(default_factory=set)
    ephemeral_range: tuple[int, int] | None = None
    skipped_lines: int = 0
    filtered: bool = False  # only some states or one port were counted (a topic's census)
    # Outgoing TIME_WAIT younger than timewait_young_ms (tcp_tw_reuse_delay) per destination
    # (key as timewait_by_destination), from each socket's timer; None: not known (no timers
    # in the source, or not asked).
    timewait_young_by_destination: TopCounts | None = None
    timewait_young_ms: int | None = None


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
    # Inode of its network namespace (/proc/PID/ns/net), read for processes near their fd
    # limit; None when not read (or not readable).
    netns: int | None = None


@dataclass
class ProcessActivity:
    """What a process is doing, from /proc/PID/stat, wchan, task/*/stat and the interest lists
    of its epoll instances (/proc/PID/fdinfo)."""

    pid: int
    state: str  # the leader's state letter: R, S, D, T, t, Z, I...
    threads: int = 1
    thread_states: dict[str, int] = field(default_factory=dict)  # letter -> threads
    cpu_percent: float | None = None  # utime+stime over a short window (all threads)
    wchan: str | None = None  # kernel function the leader sleeps in
    # Socket inodes (of those asked about) that one of its epoll instances watches.
    epoll_watches: list[int] = field(default_factory=list)
    fds: int | None = None
    nofile_soft: int | None = None


@dataclass
class ProcessFacts:
    """Socket ownership found by walking /proc/PID/fd.

    A socket may be held by several processes at once: fds are shared after fork() and
    inherited across exec() (a master and its workers; a graceful binary upgrade; a socket
    activated by systemd). `owners` keeps the first holder found (what the census counts by);
    `shared` lists every holder of the sockets held by more than one process.
    """

    processes: dict[int, ProcessInfo] = field(default_factory=dict)
    owners: dict[int, int] = field(default_factory=dict)  # socket inode -> pid (wanted ones)
    shared: dict[int, list[int]] = field(default_factory=dict)  # inode -> every holder (2+)
    scanned: int = 0
    unreadable: int = 0  # processes whose fd table we may not read (not root)
    # Inode of the network namespace being judged (None for a snapshot): /proc lists every
    # process of the host, whatever its namespace.
    netns_inode: int | None = None
    # False when the search for further holders was limited to related processes (parent,
    # children, siblings of the first holder) because the host holds too many fds to resolve
    # them all; holders_scope says which.
    holders_complete: bool = True
    holders_scope: str = "every process"
    activity: dict[int, ProcessActivity] = field(default_factory=dict)
    # Which sockets' owners were searched for: every socket (sockets --processes), or the
    # inodes in `looked_up` (what findings name). A socket outside both has an owner nobody
    # looked for: not the same as one no process holds.
    every_socket: bool = False
    looked_up: set[int] = field(default_factory=set)

    def owner_lookup(self, inode: int) -> str:
        """"found", "not_found" (searched; no readable process holds it) or
        "not_looked_up"."""
        if inode in self.owners:
            return "found"
        return "not_found" if self.every_socket or inode in self.looked_up else \
            "not_looked_up"

    def holders_of(self, inode: int) -> list[int]:
        """Every process known to hold the socket (first holder first); [] if unattributed."""
        if inode in self.shared:
            return self.shared[inode]
        pid = self.owners.get(inode)
        return [] if pid is None else [pid]


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
    # files found but not read (not a regular file, too large, a link out of the snapshot)
    unreadable: list[str] = field(default_factory=list)


@dataclass
class FileNr:
    allocated: int
    maximum: int


# An established connection idle (no data either way) this long counts as long-lived idle.
LONG_IDLE_MS = 600_000


@dataclass
class Connection:
    """One connection worth naming in evidence (a top-N entry).

    `info` is its tcp_info (named fields, include/uapi/linux/tcp.h), `skmem` its skmeminfo.
    When a second sample was taken (--interval, or a short second look at the flows that
    matter), `earlier` holds the first one and `sample_seconds` the time between them.
    """

    source: str
    sport: int
    destination: str
    dport: int
    inode: int
    timer: str
    info: dict[str, int]
    skmem: dict[str, int]
    family: int = 2
    earlier: Connection | None = None
    sample_seconds: float | None = None

    @property
    def key(self) -> tuple[int, str, int, str, int]:
        return (self.family, self.source, self.sport, self.destination, self.dport)

    @property
    def idle_ms(self) -> int:
        return min(self.info.get("last_data_recv", 0), self.info.get("last_data_sent", 0))

    @property
    def bdp_bytes(self) -> int:
        """Bandwidth-delay product: delivery rate (bytes/s) × smoothed RTT. The rate is what
        the flow already gets, so this never shows a flow held back by its window."""
        rate = self.info.get("delivery_rate", 0)
        rtt_us = self.info.get("rtt", 0)
        return rate * rtt_us // 1_000_000


@dataclass
class KeepaliveGroup:
    """Established sockets showing the keepalive timer, grouped by service: the local port
    when it is a listening port (accepted connections), else the remote port.

    From sock_diag (symptoms-and-limits.md §5): idiag_timer 2 is the keepalive timer,
    idiag_expires the ms until it fires, idiag_retrans the probes sent and unanswered. For a
    socket that sent no probe, expires + min(last_data_recv, last_ack_recv) estimates its
    keepalive idle time (exact when it has been idle since the timer was last armed)."""

    side: str  # "local_port" or "remote_port"
    port: int
    sockets: int = 0
    probing: int = 0  # idiag_retrans > 0: probes outstanding, the peer is not answering
    idle_estimate_max_ms: int = 0
    idle_estimate_min_ms: int | None = None
    inodes: list[int] = field(default_factory=list)  # a few, to name the owner


@dataclass
class ConnectionDetails:
    """What the established connections' tcp_info/skmeminfo say, aggregated."""

    established: int = 0
    with_info: int = 0
    keepalive_timer: int = 0  # showing the keepalive timer (SO_KEEPALIVE on, idle)
    retransmit_timer: int = 0  # data in flight: the keepalive timer is hidden behind it
    no_timer: int = 0  # no timer at all: SO_KEEPALIVE is off
    long_idle_without_keepalive: int = 0
    long_idle_with_keepalive: int = 0
    idle_without_keepalive: list[Connection] = field(default_factory=list)  # longest idle
    # Flows that moved data in the last second: the busiest, and the ones most limited by a
    # window or a send buffer (tcpi_rwnd_limited + tcpi_sndbuf_limited).
    flows: list[Connection] = field(default_factory=list)
    active_flows: int = 0  # established connections that moved data in the last second
    # How the flows' limitation was measured: "interval" (two census samples), "second
    # sample" (the flows looked at again after a short wait), or None (totals since each
    # connection began).
    flow_sample: str | None = None
    keepalive_groups: list[KeepaliveGroup] = field(default_factory=list)
    # skmem drops > 0 on a socket that received data in the last IDLE_DROPS_MS (10 s);
    # sockets_with_drops counts every socket with drops > 0, idle_sockets_with_drops those
    # that received no data for longer (collect.tcpinfo: not data lost).
    socket_drops: list[Connection] = field(default_factory=list)
    sockets_with_drops: int = 0
    idle_sockets_with_drops: int = 0
    long_idle_ms: int = LONG_IDLE_MS


@dataclass
class SoftnetCpu:
    cpu: int
    processed: int
    dropped: int
    time_squeeze: int
    received_rps: int | None = None
    flow_limit_count: int | None = None
    backlog_len: int | None = None  # a gauge (kernels >= ~5.10)


@dataclass
class SoftnetFacts:
    """/proc/net/softnet_stat: one row per online CPU."""

    cpus: list[SoftnetCpu] = field(default_factory=list)
    columns: int = 0


@dataclass
class SoftirqFacts:
    """/proc/softirqs NET_RX / NET_TX counts per CPU (since boot)."""

    net_rx: list[int] = field(default_factory=list)
    net_tx: list[int] = field(default_factory=list)


@dataclass
class LinkStats:
    """Interface counters. From /proc/net/dev, rx_dropped includes rx_missed and rx_missed /
    rx_over are None; from rtnetlink (IFLA_STATS64) every field is exact."""

    name: str
    ifindex: int
    rx_packets: int
    rx_dropped: int
    rx_missed: int | None  # the NIC had no room in its ring (rx_missed_errors)
    rx_fifo: int
    rx_over: int | None
    tx_dropped: int
    tx_fifo: int
    source: str = "rtnetlink"
    rx_ring: int | None = None
    rx_ring_max: int | None = None
    tx_ring: int | None = None
    tx_ring_max: int | None = None
    rps_cpus: str | None = None  # per rx queue hex masks ("f 0"), space-separated


@dataclass
class ListenerSample:
    """One listening socket's accept queue watched during --interval or the backlog probe's
    window (sampled every few hundred ms). Keyed by inode: each SO_REUSEPORT member is its
    own sample."""

    address: str
    port: int
    backlog: int
    max_queue: int = 0
    samples: int = 0
    samples_at_limit: int = 0  # Recv-Q >= limit
    inode: int = 0
    family: int = 2
    samples_full: int = 0  # Recv-Q > limit: full, the kernel was dropping


@dataclass
class ListenerWindow:
    """The window the accept queues were sampled over, with ListenOverflows/ListenDrops read
    at its two ends (the backlog probe's window has no other baseline)."""

    source: str  # "interval" or "probe window"
    seconds: float
    samples: int
    overflows_before: int | None = None
    overflows_after: int | None = None
    drops_before: int | None = None
    drops_after: int | None = None


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
    details: ConnectionDetails | None = None  # tcp_info/skmeminfo, when a rule needs it
    listener_samples: list[ListenerSample] | None = None
    listener_window: ListenerWindow | None = None
    softnet: SoftnetFacts | None = None
    softnet_before: SoftnetFacts | None = None
    softirqs: SoftirqFacts | None = None
    softirqs_before: SoftirqFacts | None = None
    ksoftirqd: dict[int, float] | None = None
    links: list[LinkStats] | None = None
    links_before: list[LinkStats] | None = None
    notes: list[str] = field(default_factory=list)
    # Probe results ({"states": {...}, ...}) when probes ran (netdiag probe, --probe-seconds).
    probes: dict[str, Any] | None = None
    # What counters_before is: "interval" (two samples now) or "previous run" (--state-dir).
    baseline: str | None = None
    # Why counters restarted from zero since the baseline (reboot, namespace recreated).
    baseline_reset: str | None = None


def close_wait_groups(census: Census, processes: ProcessFacts | None
                      ) -> dict[tuple[tuple[int, ...], int], int]:
    """CLOSE_WAIT sockets counted per (every process holding them, local port); the holders
    tuple is empty when the owner is not known."""
    groups: dict[tuple[tuple[int, ...], int], int] = {}
    for inode, lport in census.close_wait_inodes.items():
        holders = tuple(processes.holders_of(inode)) if processes is not None else ()
        groups[(holders, lport)] = groups.get((holders, lport), 0) + 1
    return groups


# ---- decoding kernel value formats -------------------------------------------------------


def sysctl_value(key: str, raw: str | None) -> Any:
    """A sysctl as the kernel prints it -> int, list of ints (vectors), list of [first, last]
    port ranges, or None when absent (or, on a corrupt snapshot, not a number at all)."""
    from netdiag.sysctls import KIND  # the table of kinds (no judgement in it)

    if raw is None:
        return None
    kind = KIND.get(key, "int")
    if kind == "ports":
        try:
            return [[lo, hi] for lo, hi in parse_port_list(raw)]
        except ValueError:
            return None
    numbers = []
    for token in raw.split():
        try:
            numbers.append(int(token))
        except ValueError:
            break
    if kind == "ints":
        return numbers if numbers else None
    return numbers[0] if numbers else None


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
