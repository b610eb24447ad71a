"""Listen backlog: the accept queue, its limit, the SYN queue and the counters behind them."""

from __future__ import annotations

from typing import Any

from netdiag.facts import Facts, Listener, ListenerSample, ProcessFacts, reuseport_groups
from netdiag.model import Finding, Rule, RuleSpec, Severity
from netdiag.probefacts import BacklogResult
from netdiag.rules._policy import Change, change, judge, judge_all, window_change
from netdiag.rules._util import make

TOPIC = "backlog"
SUMMARY = "Listen queues: accept queue and its limit, SYN queue, overflows and SYN cookies"

OVERFLOW_CRIT_RATE = 5.0  # ListenOverflows per second over --interval (netdata's critical)
BUSY_CPU_PERCENT = 90.0  # a holder this busy does not get to accept()
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
        "process is busy, blocked, stopped, out of worker threads, or out of file "
        "descriptors (accept then fails with EMFILE and the connection stays queued). While "
        "the queue is full the kernel drops new SYNs and completed handshakes "
        "(ListenOverflows). Each member of an SO_REUSEPORT group (several listening sockets "
        "on one address and port) has its own queue, and the kernel hashes each new "
        "connection to a member without looking at its queue: one member whose process "
        "stopped accepting drops its share of connections while the others sit idle."
    ),
    recommendation=(
        "Find why the processes named in the evidence do not accept: their state (stopped, "
        "blocked in D state), their CPU, their fd limit (see sockets.fd_limit), a blocking "
        "call in the accept loop. A larger backlog absorbs bursts but does not fix a server "
        "that is too slow; the listener's limit is min(the application's listen() value, "
        "net.core.somaxconn): raise the smaller one."
    ),
    thresholds="warning when Recv-Q equals the limit (one more fits); critical when Recv-Q "
               "exceeds it (the queue is full, drops are happening)",
)

# The first step of the overflow advice when the run measured no rate yet.
_MEASURE_FIRST = "Run with --interval to see the rate and which listeners fill up. "

OVERFLOW = RuleSpec(
    id="backlog.listen_overflow",
    topic=TOPIC,
    # Judged on ListenOverflows only: ListenDrops (overflows plus other listener drops) is
    # evidence; its growth alone is not a full accept queue.
    counters=("TcpExt.ListenOverflows",),
    title="Connections dropped by full accept queues",
    rule=Rule(
        text="TcpExt.ListenOverflows counts handshake segments dropped because the accept "
             "queue was full: a SYN refused on arrival, or a final ACK ignored (each retried "
             "SYN or ACK counts again, so one connection may count several times). "
             "ListenDrops counts every "
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
        _MEASURE_FIRST + "Treat the "
        "slow acceptor (backlog.accept_queue_full). For bursty load raise the number that "
        "bounds the full listener's queue: the application's listen() value when it is below "
        "net.core.somaxconn, somaxconn when it cuts a larger request (backlog.somaxconn_clamp "
        "says which). Leave tcp_abort_on_overflow "
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


STATE_WORDS = {"R": "running", "S": "sleeping", "D": "in uninterruptible sleep (D)",
               "T": "stopped (T)", "t": "stopped by a debugger (t)", "Z": "a zombie (Z)",
               "I": "idle", "X": "dead"}


def socket_holders(procs: ProcessFacts | None, inode: int) -> list[dict[str, Any]]:
    """Every process holding the socket, with what it is doing when that was looked at."""
    if procs is None or not inode:
        return []
    out = []
    for pid in procs.holders_of(inode):
        info = procs.processes.get(pid)
        row: dict[str, Any] = {"pid": pid, "command": info.command if info else "",
                               "cmdline": info.cmdline[:80] if info else ""}
        act = procs.activity.get(pid)
        if act is not None:
            row.update(state=act.state, state_text=STATE_WORDS.get(act.state, act.state),
                       threads=act.threads, thread_states=act.thread_states,
                       cpu_percent=act.cpu_percent, wchan=act.wchan,
                       watches_socket_with_epoll=inode in act.epoll_watches,
                       fds=act.fds, nofile_soft=act.nofile_soft)
        out.append(row)
    return out


def _who(h: dict[str, Any]) -> str:
    name = h.get("cmdline") if 0 < len(h.get("cmdline") or "") <= 40 else h.get("command")
    return f"pid {h['pid']}" + (f" ({name})" if name else "")


def why_not_accepting(holders: list[dict[str, Any]]) -> str:
    """What the holders are doing that explains a full queue, in one sentence or two."""
    if not holders:
        return "its owner is not known (see errors)"
    if not any("state" in h for h in holders):
        return "held by " + ", ".join(_who(h) for h in holders[:6])
    reasons = []
    for h in holders:
        state, cpu = h.get("state"), h.get("cpu_percent")
        threads = h.get("thread_states") or {}
        if state in ("T", "t"):
            reasons.append(f"{_who(h)} is {STATE_WORDS[state]}: it runs no code, so it accepts "
                           "nothing (SIGCONT resumes it)")
        elif state == "D" or threads.get("D"):
            where = f" in {h['wchan']}" if h.get("wchan") else ""
            n = threads.get("D", 1)
            reasons.append(f"{_who(h)} has {n} thread(s) in uninterruptible sleep (D){where}: "
                           "blocked on I/O or a lock")
        elif state == "Z":
            reasons.append(f"{_who(h)} is a zombie: it has exited")
        elif cpu is not None and cpu >= BUSY_CPU_PERCENT:
            reasons.append(f"{_who(h)} runs at {cpu:g}% CPU: busy elsewhere, its loop does not "
                           "get to accept()")
        elif h.get("nofile_soft") and h.get("fds") and h["fds"] >= h["nofile_soft"] - 1:
            reasons.append(f"{_who(h)} has {h['fds']} of {h['nofile_soft']} file descriptors "
                           "open: accept() fails with EMFILE")
    if reasons:
        return "; ".join(reasons)
    in_accept = [h for h in holders if _in_accept(h)]
    if in_accept:
        h = in_accept[0]
        return (f"{_who(h)} waits in accept() ({h['wchan']}): it takes connections one at a "
                "time, slower than they arrive")
    watching = [h for h in holders if h.get("watches_socket_with_epoll")]
    if watching:
        h = watching[0]
        where = f" in {h['wchan']}" if h.get("wchan") else ""
        return (f"{_who(h)} watches it with epoll and is {h.get('state_text', '?')}{where}: it "
                "does not accept as fast as connections arrive")
    sleeping = ", ".join(f"{_who(h)} {h.get('state_text', '?')}"
                         + (f" in {h['wchan']}" if h.get("wchan") else "") for h in holders[:4])
    return (f"no holder was waiting in accept() or epoll when sampled ({sleeping}): no one "
            "waits to accept on this socket, or only between other work")


def _in_accept(h: dict[str, Any]) -> bool:
    """Blocked in accept() on a listener (inet_csk_accept / inet_csk_wait_for_connect)."""
    return "accept" in (h.get("wchan") or "") or "wait_for_connect" in (h.get("wchan") or "")


def nobody_accepts(holders: list[dict[str, Any]]) -> bool:
    """True when what the holders do shows that no one accepts at all (stopped, exited,
    blocked in D state, or not waiting on the socket), not that they accept too slowly."""
    seen = [h for h in holders if "state" in h]
    if not seen:
        return False
    for h in seen:
        threads = h.get("thread_states") or {}
        if h.get("state") in ("T", "t", "Z", "D") or threads.get("D"):
            continue
        cpu = h.get("cpu_percent")
        if (cpu is not None and cpu >= BUSY_CPU_PERCENT) or \
                h.get("watches_socket_with_epoll") or _in_accept(h) or \
                (h.get("nofile_soft") and h.get("fds") and h["fds"] >= h["nofile_soft"] - 1):
            return False  # busy, watching, or out of descriptors: it tries to accept
    return True


def backlog_advice(limit: int | None, somaxconn: int | None, requested: int | None,
                   stuck: bool) -> str:
    """What to do about one full listener: first the process (it accepts nothing, or too
    slowly), then which number bounds its queue: the application's listen() value when it is
    below net.core.somaxconn, somaxconn when that cuts a larger request."""
    if stuck:
        first = ("No one was waiting to accept on this socket: fix the process first (see "
                 "why in the title: stopped, blocked, or not waiting in accept()/epoll, or "
                 "accepting only between other work, e.g. a sleep or a slow request in the "
                 "accept loop); a larger backlog only delays the drops.")
    else:
        first = ("The server accepts slower than connections arrive: find why (CPU, a "
                 "blocking call in the accept loop, worker or descriptor limits).")
    if not limit:
        return first
    if somaxconn is None:
        second = (f"For bursts, raise the listen backlog (now {limit}): the application's "
                  "listen() value, and net.core.somaxconn if it caps it.")
    elif limit < somaxconn:
        second = (f"For bursts, raise the application's listen() backlog (it asked for "
                  f"{limit}); net.core.somaxconn ({somaxconn}) is not the limit here.")
    else:
        asked = (f" (the application asked for {requested})" if requested and
                 requested > limit else "")
        second = (f"For bursts, raise net.core.somaxconn (now {somaxconn}): it cuts this "
                  f"listener's listen() request to {limit}{asked}; if the application asked "
                  "for exactly that, raise its value too.")
    return f"{first} {second}"


def _sampled(facts: Facts) -> dict[int, ListenerSample]:
    return {s.inode: s for s in facts.listener_samples or [] if s.inode}


def _seen_full(s: ListenerSample) -> bool:
    return bool(s.samples_full) or s.max_queue > s.backlog


def _listener_row(lst: Listener, facts: Facts, sample: ListenerSample | None,
                  group: list[Listener] | None, with_activity: bool) -> dict[str, Any]:
    row: dict[str, Any] = {"address": lst.address, "port": lst.port, "inode": lst.inode,
                           "accept_queue": lst.accept_queue, "limit": lst.backlog}
    if group is not None:
        row["reuseport_members"] = len(group)
        row["reuseport_member"] = [m.inode for m in group].index(lst.inode) + 1
    if sample is not None:
        row.update(max_queue_sampled=sample.max_queue, samples_full=sample.samples_full,
                   samples=sample.samples)
    holders = socket_holders(facts.processes, lst.inode)
    if not with_activity:
        holders = [{"pid": h["pid"], "command": h["command"], "cmdline": h["cmdline"]}
                   for h in holders]
    if holders:
        row["holders"] = holders
        row["pid"], row["command"] = holders[0]["pid"], holders[0]["command"]
    return row


def _listener_rows(facts: Facts) -> list[dict[str, Any]]:
    census = facts.census
    if census is None:
        return []
    groups = reuseport_groups(census.listeners)
    sampled = _sampled(facts)
    return [_listener_row(lst, facts, sampled.get(lst.inode),
                          groups.get((lst.family, lst.address, lst.port)), False)
            for lst in census.listeners]


def _accept_full(facts: Facts) -> Finding | None:
    census = facts.census
    if census is None:
        return None
    somaxconn = facts.sysctl.get_int("net.core.somaxconn") if facts.sysctl else None
    groups = reuseport_groups(census.listeners)
    sampled = _sampled(facts)
    full, at, was_full = [], [], []
    for lst in census.listeners:
        group = groups.get((lst.family, lst.address, lst.port))
        sample = sampled.get(lst.inode)
        if lst.full:
            full.append(_listener_row(lst, facts, sample, group, True))
        elif lst.backlog and lst.accept_queue == lst.backlog:
            at.append(_listener_row(lst, facts, sample, group, True))
        elif sample is not None and _seen_full(sample):
            was_full.append(_listener_row(lst, facts, sample, group, True))
    group_rows = []
    for (_, address, port), members in groups.items():
        group_rows.append({"address": address, "port": port, "members": len(members),
                           "full": sum(1 for m in members if m.full),
                           "queues": [f"{m.accept_queue}/{m.backlog}" for m in members],
                           "inodes": [m.inode for m in members]})
    evidence: dict[str, Any] = {"listeners": len(census.listeners), "somaxconn": somaxconn,
                                "full": full[:10], "at_limit": at[:10],
                                "full_while_sampled": was_full[:10],
                                "reuseport_groups": group_rows[:10]}
    if not full and not at and not was_full:
        return make(ACCEPT_FULL, Severity.OK, "no accept queue at its limit", evidence,
                    recommendation="Nothing to do.")
    worst = (full or at or was_full)[0]
    why = why_not_accepting(worst.get("holders", []))
    where = f"{worst['address']}:{worst['port']}"
    if worst in was_full:
        sev = Severity.WARNING
        title = (f"accept queue of {where} was full in {worst['samples_full']} of "
                 f"{worst['samples']} samples (max {worst['max_queue_sampled']}, limit "
                 f"{worst['limit']})")
    else:
        sev = Severity.CRITICAL if full else Severity.WARNING
        title = f"accept queue of {where} holds {worst['accept_queue']} of limit {worst['limit']}"
    detail = ""
    members = worst.get("reuseport_members")
    if members:
        busy = sum(1 for r in full + at if r["address"] == worst["address"]
                   and r["port"] == worst["port"])
        if busy < members:
            title += (f": {busy} of {members} reuseport sockets {'is' if busy == 1 else 'are'} "
                      "not accepting")
            detail = (f"The other {members - busy} member(s) of its SO_REUSEPORT group take "
                      "their share; connections hashed to this one are dropped.")
        else:
            title += f": all {members} reuseport sockets are full"
    title += f"; {why}"
    more = len(full) + len(at) + len(was_full) - 1
    if more > 0:
        title += f" ({more} more listener(s) in the evidence)"
    probe = (facts.probes or {}).get("backlog")
    call = next((c for c in probe.listen_calls if c.inode == worst["inode"]), None) \
        if isinstance(probe, BacklogResult) else None
    advice = backlog_advice(worst["limit"], somaxconn,
                            call.requested_backlog if call else None,
                            nobody_accepts(worst.get("holders", [])))
    return make(ACCEPT_FULL, sev, title, evidence, detail,
                recommendation=f"{advice} The evidence shows each holder's state, CPU and "
                               "descriptors (sockets.fd_limit for the limits).")


def _overflow_change(facts: Facts) -> tuple[Change | None, Change | None]:
    """ListenOverflows/ListenDrops over the run's baseline; else over the probe window."""
    over = change(facts, "TcpExt", "ListenOverflows")
    drops = change(facts, "TcpExt", "ListenDrops")
    w = facts.listener_window
    if (over is None or over.delta is None) and w is not None and \
            w.overflows_after is not None:
        return (window_change("TcpExt.ListenOverflows", w.overflows_before, w.overflows_after,
                              w.seconds, w.source),
                window_change("TcpExt.ListenDrops", w.drops_before, w.drops_after, w.seconds,
                              w.source))
    return over, drops


def _overflow(facts: Facts) -> Finding | None:
    over, drops = _overflow_change(facts)
    if over is None:
        return None
    sysctl = facts.sysctl
    evidence: dict[str, Any] = {"ListenOverflows": over.evidence()}
    if drops is not None:
        evidence["ListenDrops"] = drops.evidence()
        evidence["other_listener_drops"] = drops.total - over.total
    for key in ("tcp_abort_on_overflow", "tcp_synack_retries", "tcp_syn_retries"):
        evidence[key] = sysctl.get_int(f"net.ipv4.{key}") if sysctl else None
    samples = facts.listener_samples
    full_seen = [s for s in samples or [] if _seen_full(s)]
    if samples is not None:
        evidence["listeners_at_limit_during_interval"] = [
            {"address": s.address, "port": s.port, "inode": s.inode, "limit": s.backlog,
             "max_queue": s.max_queue, "samples_full": s.samples_full,
             "samples_at_limit": s.samples_at_limit, "samples": s.samples}
            for s in samples if s.samples_at_limit][:10]
    abort = evidence["tcp_abort_on_overflow"]
    client_sees = ("a RST: 'connection reset by peer'" if abort == 1 else
                   "a stall: its handshake looks done, or its SYN is retried, until the "
                   "server catches up or the retries run out")
    evidence["client_sees"] = client_sees
    verdict = judge(over, crit_rate=OVERFLOW_CRIT_RATE)
    title = "no listen overflow" if over.total == 0 else verdict.text
    detail = f"With tcp_abort_on_overflow={abort} the client sees {client_sees}."
    if over.total and not over.growing:
        # Segments, not connections; and a listener full now is worth naming.
        title += " (handshake segments: each retried SYN or ACK counts)"
        full_now = [lst for lst in (facts.census.listeners if facts.census else [])
                    if lst.full]
        if full_now:
            title += "; full now: " + ", ".join(f"{lst.address}:{lst.port}"
                                                for lst in full_now[:3])
    recommendation = None
    if over.baseline is not None:  # the run already measured the rate: no "run with --interval"
        recommendation = OVERFLOW.recommendation[len(_MEASURE_FIRST):]
    if over.growing:
        blamed = _attribution(facts, samples, full_seen, evidence)
        # Segments, not connections: a client's retried SYNs each count.
        title = (f"{over.delta} handshake segments (SYNs or final ACKs) dropped by full "
                 f"accept queues in {over.seconds:g} s ({over.rate:.3g}/s)")
        if over.baseline == "probe window":
            title += " during the probe window"
        if blamed:
            title += " on " + ", ".join(blamed)
        elif evidence.get("full_now"):
            title += " (full now: " + ", ".join(
                f"{r['address']}:{r['port']}" for r in evidence["full_now"][:3]) + \
                "; counted for the whole namespace)"
        else:
            title += f" ({evidence['attribution']})"
    return make(OVERFLOW, verdict.severity, title, evidence, detail, recommendation)


def _attribution(facts: Facts, samples: list[ListenerSample] | None,
                 full_seen: list[ListenerSample], evidence: dict[str, Any]) -> list[str]:
    """Blame only listeners seen full; say so when no sample could tell which one was."""
    procs = facts.processes
    if samples is None:
        evidence["attribution"] = ("not attributed: ListenOverflows counts the whole "
                                   "namespace; run with --interval to sample each accept queue")
        full_now = [lst for lst in (facts.census.listeners if facts.census else []) if lst.full]
        if full_now:
            evidence["full_now"] = [{"address": lst.address, "port": lst.port,
                                     "inode": lst.inode} for lst in full_now]
        return []
    if not full_seen:
        evidence["attribution"] = ("impossible: no sample caught a full accept queue (one "
                                   "sample every 0.2 s; a queue that fills and drains between "
                                   "two is not seen)")
        return []
    evidence["attribution"] = "to the listeners seen full while sampling"
    rows, names = [], []
    for s in full_seen[:5]:
        holders = socket_holders(procs, s.inode)
        rows.append({"address": s.address, "port": s.port, "inode": s.inode,
                     "samples_full": s.samples_full, "samples": s.samples,
                     "holders": [{"pid": h["pid"], "command": h["command"],
                                  "cmdline": h["cmdline"]} for h in holders]})
        who = f" ({holders[0]['command'] or 'pid ' + str(holders[0]['pid'])})" if holders else ""
        names.append(f"{s.address}:{s.port}{who}, full in {s.samples_full or 1} of "
                     f"{s.samples} samples")
    evidence["attributed_to"] = rows
    return names


def _clamp(facts: Facts) -> Finding | None:
    somaxconn = facts.sysctl.get_int("net.core.somaxconn") if facts.sysctl else None
    if facts.census is None or somaxconn is None:
        return None
    # listen() calls the backlog probe saw, by the inode of the socket they were made on.
    probe = (facts.probes or {}).get("backlog")
    calls = {c.inode: c for c in probe.listen_calls if c.inode} \
        if isinstance(probe, BacklogResult) else {}
    sampled = _sampled(facts)
    procs = facts.processes
    rows = []
    for lst in facts.census.listeners:
        call = calls.get(lst.inode)
        if lst.backlog != somaxconn and not (call and call.requested_backlog > lst.backlog):
            continue
        sample = sampled.get(lst.inode)
        # Only this listener's own queue says it overflows: ListenOverflows counts the whole
        # namespace and cannot blame one listener.
        overflowing = lst.accept_queue >= max(lst.backlog, 1) or (
            sample is not None and sample.samples_at_limit > 0)
        row: dict[str, Any] = {"address": lst.address, "port": lst.port, "inode": lst.inode,
                               "accept_queue": lst.accept_queue, "limit": lst.backlog,
                               "at_or_over_limit": overflowing}
        holders = procs.holders_of(lst.inode) if procs is not None else []
        if holders:
            row["pid"] = holders[0]
        if call:
            row["requested_backlog"] = call.requested_backlog
            row["requested_by"] = f"pid {call.pid} ({call.command})"
        rows.append(row)
    evidence: dict[str, Any] = {"somaxconn": somaxconn, "clamped_listeners": rows[:10],
                                "common_backlogs": COMMON_BACKLOGS}
    if not rows:
        return make(CLAMP, Severity.OK, f"no listener's limit equals somaxconn ({somaxconn})",
                    evidence)
    overflowing = [r for r in rows if r["at_or_over_limit"]]
    # Nothing is lost while no listener overflows: with today's default somaxconn (4096)
    # that is nothing to act on; a lower somaxconn is worth knowing before load arrives.
    if overflowing:
        severity = Severity.WARNING if somaxconn < 4096 else Severity.INFO
    else:
        severity = Severity.INFO if somaxconn < 4096 else Severity.OK
    seen = [r for r in (overflowing or rows) if "requested_backlog" in r]
    if seen:  # the probe saw the application's own request: no guessing needed
        r = seen[0]
        if r["requested_backlog"] <= r["limit"]:
            return make(CLAMP, Severity.OK, f"port {r['port']}: {r['requested_by']} asked "
                                            f"listen({r['requested_backlog']}) and got it",
                        evidence)
        return make(CLAMP, severity, f"port {r['port']}: {r['requested_by']} asked "
                                     f"listen({r['requested_backlog']}), got {r['limit']} "
                                     "(cut to somaxconn)", evidence)
    named = overflowing if severity is Severity.WARNING else rows
    ports = ", ".join(str(r["port"]) for r in named[:6])
    if severity is Severity.WARNING:
        return make(CLAMP, severity, f"{len(named)} listener(s) cut to somaxconn={somaxconn} "
                                     f"are full (port {ports}): the application likely asked "
                                     "for more", evidence)
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
