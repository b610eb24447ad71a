"""The probes, one declaration each: hooks, maps, topics, namespace filter, metrics, docs.

The CLI (`probe NAME`, `check --probe-seconds`), `probe list`, the session, the metrics and
the tests read these declarations; adding a probe is its C file (probes/NAME.c), its reader
(netdiag/ebpf/readers.py), its result type (netdiag/probefacts.py) and one entry here — the
checklist is in probes/README.md.
"""

from __future__ import annotations

import platform
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from netdiag.ebpf import readers
from netdiag.ebpf.runtime import Hook


@dataclass(frozen=True)
class MapDecl:
    """A map that can fill: its capacity and the result tables it feeds (whose rows become
    lower bounds, marked approximate, when it lost events). rows(table, row) says which rows
    of those tables the map feeds when others come from a map that cannot fill (None: all)."""

    name: str
    capacity: int
    tables: tuple[str, ...]
    rows: Callable[[str, Any], bool] | None = None


@dataclass(frozen=True)
class ProbeSpec:
    name: str
    summary: str
    hooks: tuple[Hook, ...]
    read: Callable[[Any, readers.ReadContext], Any]
    overhead: str
    topics: tuple[str, ...]  # rule topics that read this probe's result
    maps: tuple[MapDecl, ...] = ()
    metrics: tuple[str, ...] = ()  # Prometheus series it adds (netdiag.metrics)
    in_check: bool = True  # run by `check --probe-seconds` unless --probes says otherwise
    # Extra compile-time defines beyond offsets and filters: () -> (defines, note)
    extra: Callable[[], tuple[dict[str, int], str | None]] | None = None
    # Why this probe cannot run on this machine at all (None: it can), e.g. an architecture
    unsupported: Callable[[], str | None] | None = None
    # A counter the kernel keeps itself, read at both ends of the window (no program needed);
    # the reader gets both readings in ReadContext.samples. An empty reading is reported as
    # a missing part, with sample_missing saying why it may be empty.
    sample: Callable[[], Any] | None = None
    sample_missing: str = ""

    @property
    def host_wide_hooks(self) -> tuple[Hook, ...]:
        return tuple(h for h in self.hooks if h.netns == "none")


def _wakeup_extra() -> tuple[dict[str, int], str | None]:
    """ep_poll_callback's address (/proc/kallsyms), to tell epoll instances from blocking
    accept() callers among a listener's waiters."""
    from netdiag.ebpf.runtime import kernel_symbol

    addr = kernel_symbol("ep_poll_callback")
    if addr is None:
        return {}, ("epoll waiters cannot be told from accept() waiters: ep_poll_callback is "
                    "not in /proc/kallsyms")
    return {"EP_CALLBACK_ADDR": addr}, None


def _ksoftirqd_ns() -> dict[int, int]:
    """ksoftirqd/N time on CPU by CPU, from the scheduler's own accounting (schedstat)."""
    from netdiag.collect.rxpath import read_ksoftirqd_ns

    return read_ksoftirqd_ns()


def _x86_64_only() -> str | None:
    machine = platform.machine()
    if machine != "x86_64":
        return (f"reads system call registers with the x86-64 layout; this machine is "
                f"{machine}")
    return None


SOCK_FIELDS = ("skaddr", "oldstate", "newstate", "sport", "dport", "family", "protocol",
               "daddr", "daddr_v6")
# Struct offsets a hook cannot work without (the namespace filter's own offsets are not
# listed: without them a probe still runs, host-wide, and says so).
FD = ("fd_socket", "sk_ports")

PROBES: dict[str, ProbeSpec] = {p.name: p for p in (
    ProbeSpec(
        "states", "TCP state transitions: who closes first (TIME_WAIT), connections made, "
        "refused and accepted per port or destination, CLOSE_WAIT entry and duration",
        (Hook("transitions", "sock", "inet_sock_set_state", "np_set_state", SOCK_FIELDS,
              typed=("sk_ports", "sk_protocol", "inet_sport")),),
        readers.read_states, "a per-CPU counter per TCP state change (about ten per "
        "connection); for the five changes shown by port or destination, an array slot by "
        "local port for a server's (2 MiB) or a hash update for a client's (its destination "
        "is in the key); and an array slot per socket while it is in CLOSE_WAIT (262,144 slots, "
        "6 MiB; a socket whose 8 candidate slots are all taken is counted as untracked)",
        topics=("closewait", "timewait"),
        maps=(MapDecl("flows", 65536, ("active_closes", "passive_closes", "connects",
                                       "failed_connects"), readers.from_flows_hash),
              MapDecl("cw_since", 262144, ("close_wait",))),
        metrics=("netdiag_probe_state_changes", "netdiag_probe_active_closes",
                 "netdiag_probe_close_wait_waiting")),
    ProbeSpec(
        "backlog", "listen() backlog requested per listening socket, SYN-ACK retransmits per "
        "port, accept queues sampled with sock_diag",
        (Hook("listen() calls", "syscalls", "sys_enter_listen", "np_listen", ("fd", "backlog"),
              btf=FD + ("sk_inode",)),
         Hook("SYN-ACK retransmits", "tcp", "tcp_retransmit_synack", "np_synack",
              ("skaddr", "sport"))),
        readers.read_backlog, "only on listen() calls and SYN-ACK retransmits: negligible",
        topics=("backlog",),
        maps=(MapDecl("listens", 16384, ("listen_calls",)),
              MapDecl("synack", 16384, ("synack_retransmits",))),
        metrics=("netdiag_probe_synack_retransmits",)),
    ProbeSpec(
        "wakeups", "the thundering herd: tasks woken per connection on each listening socket, "
        "per thread, with accept() results, EPOLLEXCLUSIVE registrations and the listener's "
        "waiters",
        (Hook("data-ready on listeners", "sock", "sk_data_ready", "np_data_ready", raw=True,
              btf=("sk_ports", "sk_protocol", "waitqueue", "wq_lock")),
         Hook("tasks woken", "sched", "sched_waking", "np_waking", raw=True,
              btf=("task_ids",), netns="inherits"),
         Hook("accept4 entry", "syscalls", "sys_enter_accept4", "np_enter_accept4", ("fd",),
              btf=FD),
         Hook("accept4 result", "syscalls", "sys_exit_accept4", "np_exit_accept4", ("ret",),
              btf=FD),
         Hook("accept entry", "syscalls", "sys_enter_accept", "np_enter_accept", ("fd",),
              btf=FD),
         Hook("accept result", "syscalls", "sys_exit_accept", "np_exit_accept", ("ret",),
              btf=FD),
         Hook("epoll registrations", "syscalls", "sys_enter_epoll_ctl", "np_epoll_ctl",
              ("op", "fd", "event"), btf=FD)),
        readers.read_wakeups,
        "a per-CPU array read on every task wake-up and socket data-ready; the wait-queue "
        "walk and map updates only per connection on a listener",
        topics=("wakeups",),
        maps=(MapDecl("listeners", 16384, ("listeners",)),
              MapDecl("workers", 65536, ("listeners",)),
              MapDecl("epoll_regs", 16384, ("listeners",)),
              MapDecl("inflight", 65536, ("listeners",))),
        metrics=("netdiag_probe_listener_connections", "netdiag_probe_listener_wakeups"),
        extra=_wakeup_extra),
    ProbeSpec(
        "drops", "packets dropped in the kernel (kfree_skb) by reason (names read from the "
        "running kernel) and destination port",
        (Hook("drops", "skb", "kfree_skb", "np_kfree_skb", ("skbaddr", "protocol"),
              ("reason", "rx_sk"), netns="packet"),),
        readers.read_drops, "one hash update per dropped packet (not per packet received)",
        topics=("drops",),
        maps=(MapDecl("drops", 16384, ("by_reason", "by_port")),),
        metrics=("netdiag_probe_drops",)),
    ProbeSpec(
        "rcvbuf", "receive-buffer autotuning, full receive queues, memory limits, and "
        "processes that fixed SO_RCVBUF/SO_SNDBUF on TCP/UDP sockets",
        (Hook("space adjust", "tcp", "tcp_rcv_space_adjust", "np_space_adjust",
              ("skaddr", "sport")),
         Hook("buffer growth", "tcp", "tcp_rcvbuf_grow", "np_rcvbuf_grow",
              ("skaddr", "sport", "rcvbuf")),
         Hook("receive queue full", "sock", "sock_rcvqueue_full", "np_rcvqueue_full",
              raw=True, btf=("sk_ports",)),
         Hook("memory limit", "sock", "sock_exceed_buf_limit", "np_exceed_limit", raw=True,
              btf=("sk_ports",)),
         Hook("setsockopt", "syscalls", "sys_enter_setsockopt", "np_setsockopt",
              ("fd", "level", "optname", "optval"), btf=FD)),
        readers.read_rcvbuf,
        "an array slot by port on every TCP read (tcp_rcv_space_adjust runs in each "
        "recvmsg); a hash update only when a buffer grows, a queue fills or a limit is hit",
        topics=("buffers",),
        maps=(MapDecl("grow", 16384, ("rcvbuf_growth",)),
              MapDecl("limits", 16384, ("limits",)),
              MapDecl("setopts", 16384, ("buffer_fixed_by",))),
        metrics=("netdiag_probe_buffer_limits",)),
    ProbeSpec(
        "softirq", "NET_RX/NET_TX softirq latency and run time per CPU (histograms), "
        "ksoftirqd CPU time (host-wide: softirqs belong to no namespace)",
        (Hook("raise", "irq", "softirq_raise", "np_raise", raw=True, netns="none"),
         Hook("entry", "irq", "softirq_entry", "np_entry", raw=True, netns="none"),
         Hook("exit", "irq", "softirq_exit", "np_exit", raw=True, netns="none")),
        readers.read_softirq,
        "runs on every softirq of the host (per-CPU array slots, nothing that can fill): "
        "measurable on busy hosts; use short windows",
        topics=("softirq",), in_check=False, sample=_ksoftirqd_ns,
        sample_missing="ksoftirqd time: no ksoftirqd/N kernel thread could be read in /proc "
                       "(a container's PID namespace or hidepid hides them)",
        metrics=("netdiag_probe_softirq_runs",)),
    ProbeSpec(
        "resets", "RSTs sent (with the kernel's reason where given) by reason, state and "
        "local port, and received, by local port and destination",
        (Hook("sent", "tcp", "tcp_send_reset", "np_send_reset", ("saddr",),
              ("reason", "state", "sport", "skaddr", "skbaddr"),
              netns="packet"),
         Hook("received", "tcp", "tcp_receive_reset", "np_receive_reset",
              ("skaddr", "sport", "dport", "family", "daddr", "daddr_v6"))),
        readers.read_resets, "one hash update per RST", topics=("resets",),
        maps=(MapDecl("sent", 16384, ("sent",)), MapDecl("received", 65536, ("received",))),
        metrics=("netdiag_probe_resets_sent", "netdiag_probe_resets_received")),
    ProbeSpec(
        "retrans", "TCP retransmits by local port and destination; attempts that failed "
        "before leaving the host counted apart",
        (Hook("retransmits", "tcp", "tcp_retransmit_skb", "np_retransmit",
              ("skaddr", "family", "sport", "dport", "daddr", "daddr_v6"), ("err",)),),
        readers.read_retrans, "one hash update per retransmitted skb",
        topics=("retrans",),
        maps=(MapDecl("retrans", 65536, ("by_flow",)),),
        metrics=("netdiag_probe_retransmits", "netdiag_probe_retransmit_failures")),
    ProbeSpec(
        "errors", "socket system calls that failed (connect, bind, accept, read/recv, "
        "write/send) and asynchronous connect errors (SO_ERROR), by errno, process and "
        "destination",
        (Hook("system call results", "raw_syscalls", "sys_exit", "np_sys_exit", raw=True,
              btf=FD + ("syscall_regs",)),),
        readers.read_errors,
        "one comparison per system call on the host; the work only for failed socket calls",
        topics=("errors",),
        maps=(MapDecl("failures", 16384, ("failures", "by_errno")),),
        metrics=("netdiag_probe_syscall_failures",), unsupported=_x86_64_only),
)}

# The rule topics fed by probes, for `check` and `probe NAME`.
PROBE_TOPICS: dict[str, list[str]] = {name: list(p.topics) for name, p in PROBES.items()}
# Judged on every probe run: what was lost (probes.incomplete).
COMMON_TOPICS = ("probes",)
