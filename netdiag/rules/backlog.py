"""Listen backlog: the accept queue, its limit, the SYN queue and the counters behind them."""

from __future__ import annotations

from typing import Any

from netdiag.facts import Facts
from netdiag.model import Finding, Rule, RuleSpec, Severity
from netdiag.rules._policy import change, judge, judge_all
from netdiag.rules._util import make

TOPIC = "backlog"
SUMMARY = "Listen queues: accept queue and its limit, SYN queue, overflows and SYN cookies"

OVERFLOW_CRIT_RATE = 5.0  # ListenOverflows per second over --interval (netdata's critical)
# What common servers pass to listen(): the limit they get is min(this, somaxconn).
COMMON_BACKLOGS = ("nginx 511 (backlog= in listen), Redis 511 (tcp-backlog), Apache httpd 511 "
                   "(ListenBacklog), HAProxy maxconn-derived, Node.js 511, Java "
                   "ServerSocket 50, Python socketserver 5, Go: somaxconn itself")

BACKGROUND = (
    "A listening socket has two queues. The SYN queue holds half-open connections (SYN "
    "received, SYN-ACK sent). The accept queue holds connections whose handshake completed "
    "and that wait for accept(). Both are bounded by one number: min(the backlog passed to "
    "listen(), net.core.somaxconn), cut silently. The accept queue is full when it holds more "
    "than that number, so it takes limit + 1 entries. `ss -lnt` shows the current accept queue "
    "as Recv-Q and the limit as Send-Q. When the accept queue is full, new SYNs are dropped "
    "and completed handshakes are dropped or reset (tcp_abort_on_overflow), and "
    "ListenOverflows counts each. The client then either retries its SYN (a hang of seconds) "
    "or sees 'connection reset by peer'."
)

ACCEPT_FULL = RuleSpec(
    id="backlog.accept_queue_full",
    topic=TOPIC,
    title="A listener's accept queue is at its limit",
    rule=Rule(
        text="The backlog argument defines the maximum length to which the queue of pending "
             "connections may grow; if it is greater than /proc/sys/net/core/somaxconn it is "
             "silently truncated to that value. The queue is full when it holds more than the "
             "backlog (sk_acceptq_is_full: sk_ack_backlog > sk_max_ack_backlog).",
        source="listen(2); include/net/sock.h sk_acceptq_is_full(); net/ipv4/tcp_diag.c "
               "(LISTEN Recv-Q/Send-Q)",
    ),
    explanation=(
        "The application is not calling accept() as fast as connections complete: the "
        "process is busy, blocked, out of worker threads, or out of file descriptors (accept "
        "then fails with EMFILE and the connection stays queued). While the queue is full the "
        "kernel drops new SYNs and completed handshakes (ListenOverflows)."
    ),
    recommendation=(
        "Find why the process named in the evidence does not accept: its CPU, its threads, "
        "its fd limit (see sockets.fd_limit), a blocking call in its accept loop. A larger "
        "backlog (the application's listen() value and net.core.somaxconn together) absorbs "
        "bursts but does not fix a server that is too slow."
    ),
    thresholds="warning when Recv-Q equals the limit (one more fits); critical when Recv-Q "
               "exceeds it (the queue is full, drops are happening)",
)

OVERFLOW = RuleSpec(
    id="backlog.listen_overflow",
    topic=TOPIC,
    # Judged on ListenOverflows only: ListenDrops (overflows plus other listener drops) is
    # evidence; its growth alone is not a full accept queue.
    counters=("TcpExt.ListenOverflows",),
    title="Connections dropped by full accept queues",
    rule=Rule(
        text="TcpExt.ListenOverflows counts connections dropped because the accept queue was "
             "full (when the SYN arrived, or when the final ACK did). ListenDrops counts every "
             "drop by a listener, overflows included. With tcp_abort_on_overflow=0 (default) "
             "the final ACK is ignored and the SYN-ACK retransmitted; with 1 the client gets "
             "a RST.",
        source="Documentation/networking/snmp_counter.rst (ListenOverflows, ListenDrops); "
               "Documentation/networking/ip-sysctl.rst: tcp_abort_on_overflow",
    ),
    explanation=(
        "A listener's accept queue was full when connections arrived. With "
        "tcp_abort_on_overflow=0 the client thinks it is connected (its handshake finished) "
        "or keeps retransmitting its SYN; its first request then stalls for seconds, and "
        "after tcp_synack_retries / tcp_syn_retries it fails with a timeout. With "
        "tcp_abort_on_overflow=1 it sees 'connection reset by peer' at once. ListenDrops "
        "minus ListenOverflows counts other listener drops (SYN queue without cookies, "
        "memory)."
    ),
    recommendation=(
        "Run with --interval to see the rate and which listeners fill up, then treat the "
        "slow acceptor (backlog.accept_queue_full). Raise the backlog for bursty load: both "
        "the application's listen() value and net.core.somaxconn. Leave tcp_abort_on_overflow "
        "at 0 unless clients must fail fast rather than wait."
    ),
    thresholds="info when the counter is notable since boot; warning when it grows (over "
               "--interval or since the previous --state-dir run); critical from "
               f"{OVERFLOW_CRIT_RATE:g}/s",
)

CLAMP = RuleSpec(
    id="backlog.somaxconn_clamp",
    topic=TOPIC,
    title="Listen backlog cut to net.core.somaxconn",
    rule=Rule(
        text="net.core.somaxconn: limit of the socket listen() backlog. listen() silently "
             "truncates a larger backlog to this value; raising somaxconn raises only the cap.",
        source="Documentation/networking/ip-sysctl.rst: somaxconn; listen(2)",
    ),
    explanation=(
        "The listener's limit (Send-Q) equals net.core.somaxconn, so the application most "
        "likely asked for more and the kernel cut it without telling it (Redis logs a "
        "warning about this; most servers do not). What servers pass: "
        + COMMON_BACKLOGS + ". A Go server asks for somaxconn itself, so equality there is no "
        "loss. Default somaxconn is 4096 since 5.4 (128 before)."
    ),
    recommendation=(
        "If this listener overflows, raise net.core.somaxconn (e.g. to 4096 or more, in "
        "/etc/sysctl.d/; it is per network namespace) and the application's backlog "
        "together. Otherwise nothing is lost."
    ),
    thresholds="ok while no clamped listener overflows and somaxconn >= 4096 (nothing is "
               "lost); info when somaxconn is below 4096, or when a clamped listener overflows "
               "or is full; warning when both",
)

SYN_QUEUE = RuleSpec(
    id="backlog.syn_queue",
    topic=TOPIC,
    counters=("TcpExt.SyncookiesSent", "TcpExt.TCPReqQFullDrop",
              "TcpExt.TCPReqQFullDoCookies"),
    title="SYN queue overflowing: SYN cookies or dropped SYNs",
    rule=Rule(
        text="When a listener's SYN queue is full the kernel sends a SYN cookie if "
             "tcp_syncookies is on (TCPReqQFullDoCookies, SyncookiesSent), else drops the SYN "
             "(TCPReqQFullDrop). The SYN queue limit is the listen backlog; "
             "tcp_max_syn_backlog matters only with syncookies off.",
        source="Documentation/networking/ip-sysctl.rst: tcp_syncookies, tcp_max_syn_backlog; "
               "net/ipv4/tcp_input.c tcp_syn_flood_action()",
    ),
    explanation=(
        "More handshakes were in progress than the listen backlog allows: a SYN flood, or "
        "legitimate bursts against a small backlog. Cookies keep connections working but "
        "disable TCP options (window scaling, SACK) negotiated in the SYN unless timestamps "
        "carry them; dropped SYNs make clients retry after 1, 2, 4... seconds. Cookies do "
        "nothing for a full accept queue."
    ),
    recommendation=(
        "If the sources look legitimate, raise the listen backlog (application and "
        "somaxconn). Keep tcp_syncookies=1. If it is a flood, filter upstream; the kernel "
        "logs 'Possible SYN flooding on port N' once per listener."
    ),
    thresholds="info when the counters are non-zero since boot; warning when they grow "
               "during --interval; critical when SYNs are dropped (TCPReqQFullDrop grows)",
)

SPECS = (ACCEPT_FULL, OVERFLOW, CLAMP, SYN_QUEUE)


def _listener_rows(facts: Facts) -> list[dict[str, Any]]:
    procs = facts.processes
    rows = []
    for lst in facts.census.listeners if facts.census else []:
        row: dict[str, Any] = {"address": lst.address, "port": lst.port,
                               "accept_queue": lst.accept_queue, "limit": lst.backlog}
        pid = procs.owners.get(lst.inode) if procs is not None else None
        if pid is not None:
            info = procs.processes.get(pid)
            row["pid"] = pid
            row["command"] = info.command if info else ""
        rows.append(row)
    return rows


def _accept_full(facts: Facts) -> Finding | None:
    if facts.census is None:
        return None
    somaxconn = facts.sysctl.get_int("net.core.somaxconn") if facts.sysctl else None
    rows = _listener_rows(facts)
    full = [r for r in rows if r["accept_queue"] > r["limit"]]
    at = [r for r in rows if r["limit"] and r["accept_queue"] == r["limit"]]
    evidence: dict[str, Any] = {"listeners": len(rows), "somaxconn": somaxconn,
                                "full": full[:10], "at_limit": at[:10]}
    if not full and not at:
        return make(ACCEPT_FULL, Severity.OK, "no accept queue at its limit", evidence)
    worst = (full or at)[0]
    who = ""
    if "pid" in worst:
        who = f" (pid {worst['pid']}" + (f" {worst['command']}" if worst.get("command")
                                         else "") + ")"
    sev = Severity.CRITICAL if full else Severity.WARNING
    title = (f"accept queue of {worst['address']}:{worst['port']}{who} holds "
             f"{worst['accept_queue']} of limit {worst['limit']}"
             + (f"; {len(full) + len(at) - 1} more listener(s)" if len(full) + len(at) > 1
                else ""))
    return make(ACCEPT_FULL, sev, title, evidence)


def _overflow(facts: Facts) -> Finding | None:
    over = change(facts, "TcpExt", "ListenOverflows")
    drops = change(facts, "TcpExt", "ListenDrops")
    if over is None:
        return None
    sysctl = facts.sysctl
    evidence: dict[str, Any] = {"ListenOverflows": over.evidence()}
    if drops is not None:
        evidence["ListenDrops"] = drops.evidence()
        evidence["other_listener_drops"] = drops.total - over.total
    for key in ("tcp_abort_on_overflow", "tcp_synack_retries", "tcp_syn_retries"):
        evidence[key] = sysctl.get_int(f"net.ipv4.{key}") if sysctl else None
    at_limit = []
    if facts.listener_samples is not None:
        at_limit = [
            {"address": s.address, "port": s.port, "limit": s.backlog, "max_queue": s.max_queue,
             "samples_at_limit": s.samples_at_limit, "samples": s.samples}
            for s in facts.listener_samples if s.samples_at_limit][:10]
        evidence["listeners_at_limit_during_interval"] = at_limit
    abort = evidence["tcp_abort_on_overflow"]
    client_sees = ("a RST: 'connection reset by peer'" if abort == 1 else
                   "a stall: its handshake looks done, or its SYN is retried, until the "
                   "server catches up or the retries run out")
    evidence["client_sees"] = client_sees
    verdict = judge(over, crit_rate=OVERFLOW_CRIT_RATE)
    title = "no listen overflow" if over.total == 0 else verdict.text
    if over.growing:
        ports = ", ".join(str(r["port"]) for r in at_limit)
        title = (f"{over.delta} connections dropped by full accept queues in "
                 f"{over.seconds:g} s ({over.rate:.3g}/s)" + (f" on port {ports}" if ports
                                                              else ""))
    return make(OVERFLOW, verdict.severity, title, evidence,
                f"With tcp_abort_on_overflow={abort} the client sees {client_sees}.")


def _clamp(facts: Facts) -> Finding | None:
    somaxconn = facts.sysctl.get_int("net.core.somaxconn") if facts.sysctl else None
    if facts.census is None or somaxconn is None:
        return None
    # listen() calls the backlog probe saw, by the inode of the socket they were made on.
    calls = {c["inode"]: c for c in ((facts.probes or {}).get("backlog") or {})
             .get("listen_calls", []) if c.get("inode")}
    procs = facts.processes
    rows = []
    for lst in facts.census.listeners:
        call = calls.get(lst.inode)
        if lst.backlog != somaxconn and not (call and call["requested_backlog"] > lst.backlog):
            continue
        row: dict[str, Any] = {"address": lst.address, "port": lst.port,
                               "accept_queue": lst.accept_queue, "limit": lst.backlog}
        pid = procs.owners.get(lst.inode) if procs is not None else None
        if pid is not None:
            row["pid"] = pid
        if call:
            row["requested_backlog"] = call["requested_backlog"]
            row["requested_by"] = f"pid {call['pid']} ({call['command']})"
        rows.append(row)
    evidence: dict[str, Any] = {"somaxconn": somaxconn, "clamped_listeners": rows[:10],
                                "common_backlogs": COMMON_BACKLOGS}
    if not rows:
        return make(CLAMP, Severity.OK, f"no listener's limit equals somaxconn ({somaxconn})",
                    evidence)
    over = change(facts, "TcpExt", "ListenOverflows")
    overflowing = (over is not None and over.growing) or any(
        r["accept_queue"] >= max(r["limit"], 1) for r in rows)
    # Nothing is lost while no listener overflows: with today's default somaxconn (4096)
    # that is nothing to act on; a lower somaxconn is worth knowing before load arrives.
    if overflowing:
        severity = Severity.WARNING if somaxconn < 4096 else Severity.INFO
    else:
        severity = Severity.INFO if somaxconn < 4096 else Severity.OK
    seen = [r for r in rows if "requested_backlog" in r]
    if seen:  # the probe saw the application's own request: no guessing needed
        r = seen[0]
        if r["requested_backlog"] <= r["limit"]:
            return make(CLAMP, Severity.OK, f"port {r['port']}: {r['requested_by']} asked "
                                            f"listen({r['requested_backlog']}) and got it",
                        evidence)
        return make(CLAMP, severity, f"port {r['port']}: {r['requested_by']} asked "
                                     f"listen({r['requested_backlog']}), got {r['limit']} "
                                     "(cut to somaxconn)", evidence)
    ports = ", ".join(str(r["port"]) for r in rows[:6])
    return make(CLAMP, severity, f"{len(rows)} listener(s) limited to somaxconn={somaxconn} "
                                 f"(port {ports}): the application likely asked for more",
                evidence)


def _syn_queue(facts: Facts) -> Finding | None:
    sent = change(facts, "TcpExt", "SyncookiesSent")
    drop = change(facts, "TcpExt", "TCPReqQFullDrop")
    cookies = change(facts, "TcpExt", "TCPReqQFullDoCookies")
    if sent is None and drop is None:
        return None
    evidence: dict[str, Any] = {name: c.evidence() if c is not None else None for name, c in
                                (("SyncookiesSent", sent), ("TCPReqQFullDrop", drop),
                                 ("TCPReqQFullDoCookies", cookies))}
    if facts.sysctl is not None:
        evidence["tcp_syncookies"] = facts.sysctl.get_int("net.ipv4.tcp_syncookies")
        evidence["tcp_max_syn_backlog"] = facts.sysctl.get_int("net.ipv4.tcp_max_syn_backlog")
    if facts.census is not None:
        evidence["syn_recv_now"] = facts.census.by_state.get("SYN_RECV", 0)
    cookie_verdict = judge_all([c for c in (sent, cookies) if c is not None])
    # Dropped SYNs are lost connections: growth is critical.
    drop_verdict = judge(drop, grow=Severity.CRITICAL) if drop is not None else None
    verdicts = [v for v in (cookie_verdict, drop_verdict) if v is not None]
    worst = max(v.severity for v in verdicts)
    if worst is Severity.OK:
        return make(SYN_QUEUE, Severity.OK, "no SYN queue overflow", evidence)
    title = "; ".join(v.text for v in verdicts if v.severity == worst)
    return make(SYN_QUEUE, worst, title, evidence)


def check(facts: Facts) -> list[Finding]:
    return [f for f in (_accept_full(facts), _overflow(facts), _clamp(facts),
                        _syn_queue(facts)) if f is not None]
