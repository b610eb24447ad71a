"""Every sysctl the rules read: its documented default, its scope, and the rules that use it.

Defaults are quoted from Documentation/networking/ip-sysctl.rst and admin-guide/sysctl/net.rst
(see ../shared/docs/kernel-rules.md §2.1); where the kernel derives a default from RAM, the
formula is given instead of a number.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SysctlSpec:
    key: str
    default: str
    scope: str  # "netns" (per network namespace) or "global"
    rules: tuple[str, ...]
    meaning: str
    # Absent on some kernels by design (added or removed upstream): absence is not an error.
    optional: bool = False
    # How the kernel prints the value, for typed output: "int" (one integer), "ints" (a
    # whitespace-separated vector: tcp_rmem, ip_local_port_range), "ports" (a port list
    # "8080,9000-9010").
    kind: str = "int"


SYSCTLS: tuple[SysctlSpec, ...] = (
    SysctlSpec("net.ipv4.tcp_max_tw_buckets", "ehash buckets / 2 (scales with RAM)", "netns",
               ("timewait.bucket_overflow",),
               "TIME_WAIT sockets allowed at once; beyond it a closing socket skips TIME_WAIT"),
    SysctlSpec("net.ipv4.tcp_tw_reuse", "2 (loopback only; 0 before ~4.20)", "netns",
               ("timewait.flood", "ports.ephemeral_exhaustion"),
               "reuse a TIME_WAIT port for a new outgoing connection (needs timestamps)"),
    SysctlSpec("net.ipv4.tcp_tw_reuse_delay", "1000 ms (kernels >= ~6.14)", "netns",
               ("timewait.flood",),
               "minimum age of a TIME_WAIT socket before tcp_tw_reuse may take it",
               optional=True),
    SysctlSpec("net.ipv4.tcp_tw_recycle", "absent since 4.12 (was 0)", "netns",
               ("timewait.tw_recycle_configured",),
               "removed: fast TIME_WAIT recycling that broke clients behind NAT",
               optional=True),
    SysctlSpec("net.ipv4.tcp_timestamps", "1", "netns", ("timewait.flood",),
               "RFC 1323 timestamps; tcp_tw_reuse relies on them (PAWS)"),
    SysctlSpec("net.ipv4.tcp_fin_timeout", "60 s", "netns", ("timewait.flood",),
               "how long an orphaned connection stays in FIN_WAIT_2; not the TIME_WAIT length"),
    SysctlSpec("net.ipv4.ip_local_port_range", "32768 60999 (28232 ports)", "netns",
               ("ports.ephemeral_exhaustion", "ports.listener_in_ephemeral_range"),
               "source ports connect() and bind(port 0) choose from",
               kind="ints"),
    SysctlSpec("net.ipv4.ip_local_reserved_ports", "(empty)", "netns",
               ("ports.ephemeral_exhaustion", "ports.listener_in_ephemeral_range"),
               "ports automatic assignment skips; explicit binds are unaffected",
               kind="ports"),
    SysctlSpec("net.core.somaxconn", "4096 (128 before 5.4)", "netns",
               ("backlog.somaxconn_clamp", "backlog.accept_queue_full"),
               "cap on the listen() backlog; larger requests are silently cut"),
    SysctlSpec("net.ipv4.tcp_max_syn_backlog", "max(128, ehash buckets / 128)", "netns",
               ("backlog.syn_queue",),
               "SYN_RECV requests per listener, acting only when syncookies are off"),
    SysctlSpec("net.ipv4.tcp_syncookies", "1", "netns", ("backlog.syn_queue",),
               "send SYN cookies when a listener's SYN queue overflows (2: always)"),
    SysctlSpec("net.ipv4.tcp_abort_on_overflow", "0", "netns", ("backlog.listen_overflow",),
               "1: reset new connections the accept queue cannot take (client sees a RST)"),
    SysctlSpec("net.ipv4.tcp_syn_retries", "6", "netns", ("backlog.listen_overflow",),
               "SYN retransmits of an active open before connect() gives up"),
    SysctlSpec("net.ipv4.tcp_synack_retries", "5", "netns", ("backlog.listen_overflow",),
               "SYN-ACK retransmits of a passive open (5: gives up after ~63 s)"),
    SysctlSpec("net.ipv4.tcp_keepalive_time", "7200 s", "netns", ("keepalive.slow_detection",),
               "idle time before the first keepalive probe (SO_KEEPALIVE sockets only)"),
    SysctlSpec("net.ipv4.tcp_keepalive_intvl", "75 s", "netns", ("keepalive.slow_detection",),
               "time between unanswered keepalive probes"),
    SysctlSpec("net.ipv4.tcp_keepalive_probes", "9", "netns", ("keepalive.slow_detection",),
               "unanswered probes before the connection is reset"),
    SysctlSpec("net.ipv4.tcp_retries2", "15 (~924.6 s)", "netns", ("keepalive.slow_detection",),
               "RTO retransmits of outstanding data before the connection is dropped"),
    SysctlSpec("net.ipv4.tcp_rmem", "4096 131072 max (RAM/128, at most 6 MiB; 32 MiB on "
               "newer kernels: 33554432 on this 6.18 test machine)", "netns",
               ("buffers.max_below_bdp",),
               "receive buffer min / default / autotuning max (TCP)",
               kind="ints"),
    SysctlSpec("net.ipv4.tcp_wmem", "4096 16384 4194304 (max scaled by RAM)", "netns",
               ("buffers.max_below_bdp",), "send buffer min / default / autotuning max (TCP)",
               kind="ints"),
    SysctlSpec("net.ipv4.tcp_mem", "~4.7% / 6.25% / 9.4% of RAM, in pages", "global",
               ("buffers.memory_pressure",),
               "TCP memory thresholds in pages: no pressure / pressure / hard limit",
               kind="ints"),
    SysctlSpec("net.ipv4.tcp_moderate_rcvbuf", "1", "netns", ("buffers.autotuning_disabled",),
               "receive-buffer autotuning up to tcp_rmem[2]"),
    SysctlSpec("net.core.rmem_max", "212992", "global", ("buffers.max_below_bdp",),
               "largest SO_RCVBUF a process may set (the kernel doubles it)"),
    SysctlSpec("net.core.wmem_max", "212992", "global", ("buffers.max_below_bdp",),
               "largest SO_SNDBUF a process may set (the kernel doubles it)"),
    SysctlSpec("net.core.rmem_default", "212992", "netns", ("buffers.udp_buffer_errors",),
               "default receive buffer of non-TCP sockets (UDP)"),
    SysctlSpec("net.core.netdev_max_backlog", "1000", "global",
               ("softirq.netdev_backlog_drops",),
               "packets queued per CPU on the input backlog before drops"),
    SysctlSpec("net.core.netdev_budget", "300", "global", ("softirq.time_squeeze",),
               "packets one NET_RX softirq run may take from all devices"),
    SysctlSpec("net.core.netdev_budget_usecs", "2 jiffies (2000 µs at HZ=1000)", "global",
               ("softirq.time_squeeze",), "time one NET_RX softirq run may take"),
    SysctlSpec("net.core.dev_weight", "64", "global", ("softirq.time_squeeze",),
               "packets per NAPI poll of one device"),
    SysctlSpec("fs.file-max", "about 10% of RAM in KiB, at least 8192", "global",
               ("sockets.fd_limit",), "system-wide open-file limit (ENFILE beyond it)"),
    SysctlSpec("fs.nr_open", "1048576", "global", ("sockets.fd_limit",),
               "ceiling for any process's RLIMIT_NOFILE"),
)

SYSCTL_KEYS = [s.key for s in SYSCTLS]
OPTIONAL_KEYS = {s.key for s in SYSCTLS if s.optional}
GLOBAL_KEYS = [s.key for s in SYSCTLS if s.scope == "global"]
KIND = {s.key: s.kind for s in SYSCTLS}
