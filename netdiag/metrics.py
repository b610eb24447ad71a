"""Facts and findings as metric samples, for the Prometheus and Nagios renderers.

Builds plain samples (name, type, help, labels, value); renderers only format them. Names
follow the Prometheus conventions: one `netdiag_` prefix, base units, `_total` on counters,
low-cardinality labels (no per-connection labels).
"""

from __future__ import annotations

from dataclasses import dataclass

from netdiag.facts import Facts
from netdiag.model import CollectorError, Finding

# Kernel counters exported (proto, name): the ones the rules read.
KEY_COUNTERS = (
    ("TcpExt", "ListenOverflows"), ("TcpExt", "ListenDrops"), ("TcpExt", "TCPTimeWaitOverflow"),
    ("TcpExt", "SyncookiesSent"), ("TcpExt", "TCPReqQFullDrop"),
    ("TcpExt", "TCPReqQFullDoCookies"), ("TcpExt", "TCPRcvQDrop"), ("TcpExt", "PruneCalled"),
    ("TcpExt", "RcvPruned"), ("TcpExt", "TCPBacklogDrop"), ("TcpExt", "TCPMemoryPressures"),
    ("TcpExt", "TCPAbortOnData"), ("TcpExt", "TCPAbortOnClose"), ("TcpExt", "TCPAbortOnMemory"),
    ("Tcp", "ActiveOpens"), ("Tcp", "PassiveOpens"), ("Tcp", "AttemptFails"),
    ("Tcp", "EstabResets"), ("Tcp", "RetransSegs"), ("Tcp", "OutRsts"),
    ("Udp", "RcvbufErrors"), ("Udp", "SndbufErrors"),
)

# Collectors and the fact each fills: up = 1 when it produced its fact.
COLLECTORS = ("sysctl", "counters", "sockets", "sockstat", "processes", "file-nr",
              "softnet_stat", "softirqs", "links")

STATUS_VALUE = {"ok": 0, "warning": 1, "critical": 2, "unknown": 3}


@dataclass(frozen=True)
class Sample:
    name: str
    kind: str  # gauge | counter
    help: str
    labels: tuple[tuple[str, str], ...]
    value: float


def _facts_present(facts: Facts) -> dict[str, bool]:
    return {"sysctl": facts.sysctl is not None and bool(facts.sysctl.values),
            "counters": facts.counters is not None and bool(facts.counters.counters),
            "sockets": facts.census is not None, "sockstat": facts.sockstat is not None,
            # up only when some process's fd table could be read (not as a normal user)
            "processes": facts.processes is not None and (
                facts.processes.scanned > 0 or not facts.processes.unreadable),
            "file-nr": facts.file_nr is not None,
            "softnet_stat": facts.softnet is not None, "softirqs": facts.softirqs is not None,
            "links": facts.links is not None}


def samples(facts: Facts, findings: list[Finding], errors: list[CollectorError],
            status: str, netns: str, collectors: tuple[str, ...] = ()) -> list[Sample]:
    ns = ("netns", netns)
    out: list[Sample] = []
    add = out.append
    add(Sample("netdiag_status", "gauge",
               "Overall status of the last run: 0 ok, 1 warning, 2 critical, 3 unknown.",
               (ns,), STATUS_VALUE[status]))
    # One series per finding id whose value is the severity: its labels never change with
    # the verdict, so alerts keep their history. Several findings of one id: the worst.
    worst: dict[tuple[str, str], int] = {}
    for f in findings:
        key = (f.id, f.topic)
        worst[key] = max(worst.get(key, 0), int(f.severity))
    for (fid, topic), sev in worst.items():
        add(Sample("netdiag_finding_severity", "gauge",
                   "Severity of each finding: 0 ok, 1 info, 2 warning, 3 critical "
                   "(netdiag explain ID tells the rule).",
                   (("id", fid), ("topic", topic), ns), sev))
    present = _facts_present(facts)
    for name in collectors or COLLECTORS:
        up = present.get(name, False)  # the errors say why a collector produced nothing
        add(Sample("netdiag_collector_up", "gauge",
                   "1 when the collector produced its facts in the last run, 0 when it failed "
                   "(see the JSON errors).", (("collector", name), ns), 1 if up else 0))
    census = facts.census
    if census is not None:
        for state, n in sorted(census.by_state.items()):
            add(Sample("netdiag_sockets", "gauge", "TCP sockets by state (sock_diag).",
                       (("state", state), ns), n))
        for lst in census.listeners:
            # Each SO_REUSEPORT member is a socket of its own, with its own queue: the inode
            # keeps their series apart (they share address and port).
            labels = (("address", lst.address), ("port", str(lst.port)),
                      ("inode", str(lst.inode)), ns)
            add(Sample("netdiag_listener_accept_queue", "gauge",
                       "Connections waiting for accept() on a listening socket (ss Recv-Q).",
                       labels, lst.accept_queue))
            add(Sample("netdiag_listener_backlog_limit", "gauge",
                       "Accept queue limit of a listening socket: min(listen() backlog, "
                       "somaxconn) (ss Send-Q).", labels, lst.backlog))
    if facts.counters is not None:
        for proto, name in KEY_COUNTERS:
            v = facts.counters.get(proto, name)
            if v is not None:
                add(Sample("netdiag_nstat_total", "counter",
                           "Kernel SNMP/netstat counter since boot, labelled with its nstat "
                           "name (/proc/net/netstat, /proc/net/snmp).",
                           (("counter", f"{proto}{name}"), ns), v))
    if facts.sockstat is not None:
        for key, metric, helptext in (
                ("tw", "netdiag_tcp_timewait_sockets",
                 "TIME_WAIT sockets, FIN_WAIT2 minisockets included (sockstat tw)."),
                ("orphan", "netdiag_tcp_orphan_sockets", "Orphaned TCP sockets (sockstat)."),
                ("mem", "netdiag_tcp_memory_pages",
                 "Pages used by all TCP sockets (sockstat mem; compare tcp_mem).")):
            v = facts.sockstat.get("TCP", key)
            if v is not None:
                add(Sample(metric, "gauge", helptext, (ns,), v))
    for name, probe in (facts.probes or {}).items():
        _probe_samples(add, name, probe, ns)
    if facts.softnet is not None:
        for c in facts.softnet.cpus:
            cpu = ("cpu", str(c.cpu))
            add(Sample("netdiag_softnet_dropped_total", "counter",
                       "Packets dropped at the per-CPU input backlog (softnet_stat col 2).",
                       (cpu, ns), c.dropped))
            add(Sample("netdiag_softnet_time_squeeze_total", "counter",
                       "NET_RX cycles cut short by netdev_budget(_usecs) (softnet_stat col 3).",
                       (cpu, ns), c.time_squeeze))
    return out


# The resets probe's answers_syn (True, False, None) as a label value.
ANSWERS_SYN = {True: "true", False: "false", None: "unknown"}


def _probe_samples(add, name: str, probe, ns: tuple[str, str]) -> None:
    """Aggregates of one probe run (netdiag.probefacts): gauges over its window, which restart
    every run. Each probe's series are listed in its declaration (ProbeSpec.metrics)."""
    pl = ("probe", name)
    add(Sample("netdiag_probe_window_seconds", "gauge",
               "Length of the eBPF probe window the netdiag_probe_* series cover.",
               (pl, ns), probe.window.seconds))
    add(Sample("netdiag_probe_startup_seconds", "gauge",
               "Seconds from starting to load the probe to its window opening (bcc import, "
               "BTF, compile, attach).", (pl, ns), probe.startup.total_s))
    c = probe.completeness
    add(Sample("netdiag_probe_lost_events", "gauge",
               "Events a probe could not count (a full map, or runs the kernel skipped); "
               "non-zero means its tables are lower bounds.", (pl, ns),
               c.events_lost + (c.skipped_runs or 0)))
    kind = type(probe).__name__
    if kind == "StatesResult":
        for t in probe.transitions[:30]:
            add(Sample("netdiag_probe_state_changes", "gauge",
                       "TCP state changes during the probe window, by state pair.",
                       (("from", t.from_state), ("to", t.to_state), ns), t.count))
        add(Sample("netdiag_probe_active_closes", "gauge",
                   "Connections this host closed first during the probe window (each leaves "
                   "a TIME_WAIT socket).", (ns,), probe.active_closes_total))
        for w in probe.close_wait.still_waiting[:20]:
            add(Sample("netdiag_probe_close_wait_waiting", "gauge",
                       "Sockets that entered CLOSE_WAIT during the probe window and stayed.",
                       (("local_port", str(w.local_port)), ns), w.sockets))
    elif kind == "BacklogResult":
        for r in probe.synack_retransmits[:20]:
            add(Sample("netdiag_probe_synack_retransmits", "gauge",
                       "SYN-ACKs retransmitted during the probe window, by listening port.",
                       (("local_port", str(r.local_port)), ns), r.count))
    elif kind == "WakeupsResult":
        per_port: dict[int, list[int]] = {}
        for lst in probe.listeners:
            row = per_port.setdefault(lst.port, [0, 0])
            row[0] += lst.connections
            row[1] += lst.wakeups
        for port, (conns, wakes) in sorted(per_port.items(), key=lambda kv: -kv[1][0])[:20]:
            lp = ("local_port", str(port))
            add(Sample("netdiag_probe_listener_connections", "gauge",
                       "Connections queued on listening sockets during the probe window.",
                       (lp, ns), conns))
            add(Sample("netdiag_probe_listener_wakeups", "gauge",
                       "Tasks the kernel woke for those connections (more than the connections:"
                       " a thundering herd).", (lp, ns), wakes))
    elif kind == "DropsResult":
        for r in probe.by_reason[:20]:
            add(Sample("netdiag_probe_drops", "gauge",
                       "Packets dropped during the probe window, by the kernel's drop reason.",
                       (("reason", r.reason), ns), r.drops))
    elif kind == "RcvbufResult":
        for label, value in (("receive_queue_full", probe.receive_queue_full),
                             ("memory_limit", probe.memory_limit)):
            if value is not None:
                add(Sample("netdiag_probe_buffer_limits", "gauge",
                           "Receive queues found full and protocol memory limits hit during "
                           "the probe window.", (("kind", label), ns), value))
    elif kind == "SoftirqResult":
        for r in probe.per_cpu:
            add(Sample("netdiag_probe_softirq_runs", "gauge",
                       "NET_RX/NET_TX softirq runs per CPU during the probe window.",
                       (("softirq", r.softirq), ("cpu", str(r.cpu)), ns), r.runs))
    elif kind == "ResetsResult":
        by_reason: dict[tuple[str, str], int] = {}
        for r in probe.sent:
            key = (r.reason, ANSWERS_SYN[r.answers_syn])
            by_reason[key] = by_reason.get(key, 0) + r.resets
        for (reason, syn), n in by_reason.items():
            add(Sample("netdiag_probe_resets_sent", "gauge",
                       "RSTs sent during the probe window, by the kernel's reason and whether "
                       "they answered a SYN (true: connection attempts refused; unknown: the "
                       "kernel's BTF lacks the offsets to tell).",
                       (("reason", reason), ("answers_syn", syn), ns), n))
        add(Sample("netdiag_probe_resets_received", "gauge",
                   "RSTs received during the probe window.", (ns,), probe.received_total))
    elif kind == "RetransResult":
        add(Sample("netdiag_probe_retransmits", "gauge",
                   "Packets (skbs) retransmitted toward peers during the probe window: "
                   "tcp_retransmit_skb events, not segments (with TSO/GSO one skb carries "
                   "several; TcpRetransSegs counts segments).", (ns,),
                   probe.total))
        add(Sample("netdiag_probe_retransmit_failures", "gauge",
                   "Retransmit attempts that failed inside this host during the probe window "
                   "(never sent).", (ns,), probe.failed_total))
    elif kind == "ErrorsResult":
        calls: dict[tuple[str, str], int] = {}
        for f in probe.failures:
            calls[(f.call, f.error)] = calls.get((f.call, f.error), 0) + f.count
        for (call, error), n in sorted(calls.items(), key=lambda kv: -kv[1])[:30]:
            add(Sample("netdiag_probe_syscall_failures", "gauge",
                       "Socket system calls that failed during the probe window, by call and "
                       "errno.", (("call", call), ("error", error), ns), n))
