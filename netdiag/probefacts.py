"""Typed results of the eBPF probes: what rules, views and metrics read.

Pure dataclasses (no I/O, no netdiag imports), so rules may import them. Each probe's result
carries the window it covers, what its start-up cost, how its events were filtered by
network namespace, and whether anything was lost; `netdiag.ebpf.readers` builds them from
the kernel maps. JSON: `dataclasses.asdict`, described by docs/schema/probes.schema.json.

Ports: a local port shown as null is "any ephemeral port" (a client's port from
ip_local_port_range, aggregated away in the kernel); a remote port shown as null is a
client's ephemeral port seen from the server. `peer` is set only for a service destination
(the remote port is not ephemeral): a server's peers are unbounded and not kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# ---- common to every probe ----------------------------------------------------------------

@dataclass
class Startup:
    """Seconds spent before the window opened. `imports_s` and `btf_s` are paid once per run
    and shown on the first probe of the run (0 on the others)."""

    imports_s: float = 0.0  # importing bcc
    btf_s: float = 0.0  # reading struct offsets from the kernel's BTF
    compile_s: float = 0.0  # clang: C to BPF
    attach_s: float = 0.0  # loading into the kernel (verifier) and attaching
    total_s: float = 0.0
    since_process_start_s: float | None = None  # exec of netdiag -> window open


@dataclass
class Window:
    started_at: str = ""  # ISO 8601, UTC, milliseconds: the last hook attached
    ended_at: str = ""  # the first hook detached
    seconds: float = 0.0
    interrupted: bool = False  # Ctrl-C or SIGTERM ended it early


@dataclass
class Scope:
    """Which network namespace the events were counted in."""

    netns: str = "default"  # label: default, a name, pid:N
    inode: int | None = None  # the namespace's inode; None when not filtered
    # "exact": every hook counted only this namespace's events; "host-wide": none could;
    # "partial": the hooks in host_wide_parts saw the whole host.
    filter: str = "exact"
    host_wide_parts: list[str] = field(default_factory=list)
    note: str = ""


@dataclass
class MapLoss:
    map: str
    capacity: int
    events_lost: int
    tables: list[str] = field(default_factory=list)  # result tables that are lower bounds

    @property
    def bounds(self) -> str:
        """What the loss makes a lower bound, in words (the error entry and the finding)."""
        return (f"the rows marked approximate in {', '.join(self.tables)}, and their totals, "
                "are lower bounds (a row may be missing altogether)")


@dataclass
class Completeness:
    complete: bool = True
    lost: list[MapLoss] = field(default_factory=list)
    events_lost: int = 0
    # Program runs the kernel skipped (another BPF program was running on that CPU, e.g. in
    # an interrupt): bpf_prog_info.recursion_misses of each program. None: unknown.
    skipped_runs: int | None = 0


@dataclass
class Bucket:
    """One log2 histogram bucket: values from `low` to `high` inclusive."""

    low: int
    high: int
    count: int


@dataclass
class ProbeResult:
    probe: str = ""
    window: Window = field(default_factory=Window)
    startup: Startup = field(default_factory=Startup)
    scope: Scope = field(default_factory=Scope)
    completeness: Completeness = field(default_factory=Completeness)
    hooks: list[str] = field(default_factory=list)
    missing_parts: list[str] = field(default_factory=list)

    def per_s(self, n: int) -> float:
        return round(n / max(self.window.seconds, 0.001), 2)


# ---- states ----------------------------------------------------------------------------------

@dataclass
class Transition:
    from_state: str
    to_state: str
    count: int
    approximate: bool = False


@dataclass
class FlowCount:
    local_port: int | None
    peer: str | None
    remote_port: int | None
    count: int
    per_s: float
    approximate: bool = False


@dataclass
class WaitingPort:
    local_port: int
    sockets: int
    oldest_s: float


@dataclass
class CloseWait:
    entered: int = 0  # sockets that entered CLOSE_WAIT in the window
    left: int = 0  # of those, how many left it (histogram below)
    left_entered_before: int = 0  # left in the window, entered before it (duration unknown)
    still_waiting: list[WaitingPort] = field(default_factory=list)
    still_waiting_total: int = 0
    left_after_ms: list[Bucket] = field(default_factory=list)
    untracked: int = 0  # entered but not tracked: the tracking map was full
    approximate: bool = False


@dataclass
class StatesResult(ProbeResult):
    transitions: list[Transition] = field(default_factory=list)
    active_closes: list[FlowCount] = field(default_factory=list)  # ESTABLISHED -> FIN_WAIT1
    passive_closes: list[FlowCount] = field(default_factory=list)  # ESTABLISHED -> CLOSE_WAIT
    connects: list[FlowCount] = field(default_factory=list)  # SYN_SENT -> ESTABLISHED
    failed_connects: list[FlowCount] = field(default_factory=list)  # SYN_SENT -> CLOSE
    accepted: list[FlowCount] = field(default_factory=list)  # SYN_RECV -> ESTABLISHED
    active_closes_total: int = 0
    passive_closes_total: int = 0
    connects_total: int = 0
    failed_connects_total: int = 0
    accepted_total: int = 0
    close_wait: CloseWait = field(default_factory=CloseWait)


# ---- backlog ---------------------------------------------------------------------------------

@dataclass
class ListenCall:
    inode: int
    pid: int
    command: str
    port: int
    requested_backlog: int


@dataclass
class PortCount:
    local_port: int | None
    count: int
    approximate: bool = False


@dataclass
class AcceptQueue:
    """One listening socket's accept queue sampled (sock_diag) during the window."""

    address: str
    port: int
    inode: int
    limit: int
    max_queue: int
    samples_at_limit: int  # Recv-Q >= limit
    samples_full: int  # Recv-Q > limit: full, the kernel was dropping
    samples: int


@dataclass
class BacklogResult(ProbeResult):
    listen_calls: list[ListenCall] = field(default_factory=list)
    synack_retransmits: list[PortCount] = field(default_factory=list)
    accept_queues: list[AcceptQueue] = field(default_factory=list)


# ---- wakeups ---------------------------------------------------------------------------------

@dataclass
class WorkerThread:
    pid: int  # the process (tgid)
    tid: int
    command: str
    woken: int  # wake-ups from this listener's connections
    accepted: int
    eagain: int
    errors: int


@dataclass
class EpollRegistration:
    pid: int
    command: str
    adds: int
    exclusive_adds: int  # with EPOLLEXCLUSIVE
    mods: int


@dataclass
class Listener:
    inode: int
    port: int
    family: str  # ipv4, ipv6
    connections: int  # connections queued on it (its data_ready events)
    accepted: int
    eagain: int
    errors: int
    wakeups: int  # tasks woken by its connections
    wakeups_per_connection: float | None
    waiters_max: int  # entries on its wait queue (most seen)
    epoll_waiters_max: int | None  # of those, epoll instances (None: not known here)
    exclusive_waiters_max: int  # entries waiting exclusively (EPOLLEXCLUSIVE, blocking accept)
    sockets_on_port: int  # listeners seen on this port and family: > 1 is a SO_REUSEPORT group
    processes: list[int] = field(default_factory=list)
    threads: list[WorkerThread] = field(default_factory=list)
    epoll_registrations: list[EpollRegistration] = field(default_factory=list)
    approximate: bool = False


@dataclass
class WakeupsResult(ProbeResult):
    listeners: list[Listener] = field(default_factory=list)


# ---- drops -----------------------------------------------------------------------------------

@dataclass
class DropReason:
    reason: str
    drops: int
    per_s: float
    approximate: bool = False


@dataclass
class DropPort:
    reason: str
    protocol: str  # tcp, udp
    port: int | None
    drops: int
    per_s: float
    approximate: bool = False


@dataclass
class ProtocolCount:
    protocol: str  # ipv4, ipv6, arp, or the ethertype in hex
    drops: int


@dataclass
class DropsResult(ProbeResult):
    by_reason: list[DropReason] = field(default_factory=list)
    by_port: list[DropPort] = field(default_factory=list)
    by_protocol: list[ProtocolCount] = field(default_factory=list)
    total: int = 0
    reasons_known: int = 0  # names read from this kernel's format file
    unattributed: int = 0  # drops with no device or socket: no namespace to count them in


# ---- rcvbuf ----------------------------------------------------------------------------------

@dataclass
class Growth:
    local_port: int | None
    grows: int
    max_rcvbuf: int
    last_rcvbuf: int
    approximate: bool = False


@dataclass
class LimitHit:
    local_port: int | None
    family: str
    kind: str  # receive_queue_full, memory_limit
    count: int
    approximate: bool = False


@dataclass
class BufferSet:
    pid: int
    command: str
    option: str  # SO_RCVBUF, SO_SNDBUF, SO_RCVBUFFORCE, SO_SNDBUFFORCE
    value: int
    family: str
    socket_type: str  # stream, dgram
    calls: int
    approximate: bool = False


@dataclass
class RcvbufResult(ProbeResult):
    space_adjust: list[PortCount] = field(default_factory=list)
    rcvbuf_growth: list[Growth] = field(default_factory=list)
    limits: list[LimitHit] = field(default_factory=list)
    receive_queue_full: int | None = None  # None: that hook is missing here
    memory_limit: int | None = None
    buffer_fixed_by: list[BufferSet] = field(default_factory=list)


# ---- softirq ---------------------------------------------------------------------------------

@dataclass
class SoftirqCpu:
    softirq: str  # NET_RX, NET_TX
    cpu: int
    runs: int
    time_ms: float
    cpu_share: float  # of the window
    latency_us: list[Bucket] = field(default_factory=list)  # raise -> entry
    runtime_us: list[Bucket] = field(default_factory=list)  # entry -> exit
    approximate: bool = False


@dataclass
class KsoftirqdCpu:
    cpu: int
    ms: float


@dataclass
class SoftirqResult(ProbeResult):
    per_cpu: list[SoftirqCpu] = field(default_factory=list)
    ksoftirqd: list[KsoftirqdCpu] = field(default_factory=list)


# ---- resets ----------------------------------------------------------------------------------

@dataclass
class SentReset:
    reason: str
    state: str
    local_port: int | None
    resets: int
    approximate: bool = False
    # True: each answered a SYN (a refused connection attempt: ECONNREFUSED for the client,
    # not ECONNRESET); False: answered another segment, or the socket sent it on its own;
    # None: not known (the kernel's BTF lacks the sk_buff offsets).
    answers_syn: bool | None = None


@dataclass
class ReceivedReset:
    local_port: int | None
    peer: str | None
    remote_port: int | None
    resets: int
    approximate: bool = False


@dataclass
class ResetsResult(ProbeResult):
    sent: list[SentReset] = field(default_factory=list)
    sent_total: int = 0
    received: list[ReceivedReset] = field(default_factory=list)
    received_total: int = 0
    unattributed: int = 0  # RSTs sent without socket or device: no namespace known


# ---- retrans ---------------------------------------------------------------------------------

@dataclass
class Retransmits:
    local_port: int | None
    peer: str | None
    remote_port: int | None
    # tcp:tcp_retransmit_skb events toward the peer: retransmitted skbs (packets), not
    # segments (with TSO/GSO one skb carries several MSS-sized segments)
    retransmits: int
    failed: int  # attempts that failed before leaving the host (err < 0, TCPRetransFail)
    per_s: float
    approximate: bool = False


RETRANS_COUNTED = ("skbs: one per tcp_retransmit_skb event (a retransmitted packet; with "
                   "TSO/GSO it may carry several segments); nstat TcpRetransSegs counts "
                   "segments")


@dataclass
class RetransResult(ProbeResult):
    by_flow: list[Retransmits] = field(default_factory=list)
    total: int = 0  # retransmitted skbs that left the host (events, not segments)
    failed_total: int = 0
    failures_reported: bool = False  # the kernel's tracepoint has `err` (6.17+)
    counted: str = RETRANS_COUNTED  # what one count is (skbs, not segments)


# ---- errors ----------------------------------------------------------------------------------

@dataclass
class Failure:
    call: str  # connect, accept4, read, sendmsg...; "connect" also for SO_ERROR reports
    errno: int
    error: str  # ECONNREFUSED...
    pid: int
    command: str
    count: int
    local_port: int | None = None
    peer: str | None = None
    remote_port: int | None = None
    reported_by: str = "return"  # "return": the call's return value; "so_error": getsockopt
    approximate: bool = False


@dataclass
class ErrnoCount:
    error: str
    errno: int
    count: int


@dataclass
class ErrorsResult(ProbeResult):
    failures: list[Failure] = field(default_factory=list)
    by_errno: list[ErrnoCount] = field(default_factory=list)
    total: int = 0
