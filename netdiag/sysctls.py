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
               "source ports connect() and bind(port 0) choose from"),
    SysctlSpec("net.ipv4.ip_local_reserved_ports", "(empty)", "netns",
               ("ports.ephemeral_exhaustion", "ports.listener_in_ephemeral_range"),
               "ports automatic assignment skips; explicit binds are unaffected"),
    SysctlSpec("net.core.somaxconn", "4096 (128 before 5.4)", "netns", (),
               "cap on the listen() backlog"),
    SysctlSpec("net.ipv4.tcp_max_syn_backlog", "max(128, ehash buckets / 128)", "netns", (),
               "SYN_RECV requests per listener when syncookies are off"),
    SysctlSpec("net.ipv4.tcp_syncookies", "1", "netns", (),
               "send SYN cookies when a listener's SYN queue overflows"),
    SysctlSpec("fs.file-max", "about 10% of RAM in KiB, at least 8192", "global",
               ("sockets.fd_limit",), "system-wide open-file limit (ENFILE beyond it)"),
    SysctlSpec("fs.nr_open", "1048576", "global", ("sockets.fd_limit",),
               "ceiling for any process's RLIMIT_NOFILE"),
)

SYSCTL_KEYS = [s.key for s in SYSCTLS]
OPTIONAL_KEYS = {s.key for s in SYSCTLS if s.optional}
