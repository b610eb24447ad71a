"""What applications were told: failed socket calls, by errno (eBPF probe errors)."""

from __future__ import annotations

from typing import Any

from netdiag.facts import Facts
from netdiag.model import Finding, Rule, RuleSpec, Severity
from netdiag.probefacts import ErrorsResult, Failure
from netdiag.rules._util import make

TOPIC = "errors"
SUMMARY = "Socket calls that failed, by errno, process and destination (eBPF probe errors)"
CONNECT_WARN = 5  # failed connects toward one destination with one errno
IO_WARN_RATE = 10.0  # failed reads/writes per second, one errno...
IO_WARN_MIN = 20  # ...and at least this many in the window

BACKGROUND = (
    "The kernel tells an application why a socket call failed with an errno; applications log "
    "it later, or not at all. connect(): ECONNREFUSED (a RST: nothing listens there), "
    "ETIMEDOUT (no answer to the SYNs), EADDRNOTAVAIL (no free local port toward that "
    "destination), EHOSTUNREACH/ENETUNREACH (routing, or an ICMP error). accept(): EMFILE "
    "and ENFILE (out of file descriptors; the connection stays queued). read/write: "
    "ECONNRESET (the peer reset), EPIPE (writing after the connection was closed or reset), "
    "ETIMEDOUT (retransmits or keepalive gave up). Non-blocking clients learn a failed "
    "connect from getsockopt(SO_ERROR), which the probe reads too."
)

CONNECT_CAUSES = {
    "ECONNREFUSED": "nothing listens on that port there (the service is down or the port is "
                    "wrong), or a firewall rejects with a reset",
    "ETIMEDOUT": "the SYNs got no answer: the host is down, a firewall drops them, or the "
                 "server's SYN/accept queue is full",
    "EADDRNOTAVAIL": "no local port was free toward that destination: ephemeral-port "
                     "exhaustion (see the ports topic), or a bind() to an address not on "
                     "this host",
    "EHOSTUNREACH": "no route, or an ICMP host-unreachable/prohibited came back",
    "ENETUNREACH": "no route to that network",
    "ECONNRESET": "the connection was reset during the handshake",
    "ECONNABORTED": "the connection was aborted locally (ss -K, SOCK_DESTROY)",
}
ACCEPT_CAUSES = {
    "EMFILE": "the process reached its RLIMIT_NOFILE (ulimit -n): the connection stays in the "
              "accept queue, which then overflows",
    "ENFILE": "the system reached fs.file-max",
    "ENOBUFS": "out of socket memory",
    "ENOMEM": "out of memory",
}
IO_CAUSES = {
    "ECONNRESET": "the peer reset the connection (closed with unread data, SO_LINGER 0, "
                  "crashed and came back, a middlebox); the resets probe shows who sent it",
    "EPIPE": "the application wrote after the connection was closed or reset",
    "ETIMEDOUT": "retransmits (tcp_retries2, TCP_USER_TIMEOUT) or keepalive gave up on a "
                 "silent peer",
    "EHOSTUNREACH": "an ICMP error ended the connection",
}

CONNECT = RuleSpec(
    id="errors.connect_failures",
    topic=TOPIC,
    title="connect() failures toward some destinations",
    rule=Rule(
        text="connect(2) ERRORS: ECONNREFUSED: no-one listening on the remote address; "
             "ETIMEDOUT: timeout while attempting connection; EADDRNOTAVAIL: insufficient "
             "entries in the routing cache (no free local port); a non-blocking connect "
             "reports its result through getsockopt(SO_ERROR).",
        source="connect(2); tcp(7); net/ipv4/tcp_input.c tcp_reset(); "
               "net/ipv4/inet_hashtables.c __inet_hash_connect()",
    ),
    explanation=(
        "These are the errors the applications in the evidence got from connect() (or from "
        "SO_ERROR after a non-blocking connect), per destination: what they would log as "
        "'connection refused', 'timed out' or 'cannot assign requested address'."
    ),
    recommendation=(
        "ECONNREFUSED: check the service behind that destination (is it up, on that port?). "
        "ETIMEDOUT: check the path and firewalls, and the server's backlog. EADDRNOTAVAIL: "
        "the client ran out of ephemeral ports toward that destination: reuse connections, "
        "widen ip_local_port_range, add destination addresses (netdiag ports)."
    ),
    thresholds=f"info when any; warning from {CONNECT_WARN} failures toward one destination "
               "with one errno, and at the first EADDRNOTAVAIL",
)

ACCEPT = RuleSpec(
    id="errors.accept_failures",
    topic=TOPIC,
    title="accept() failures: a server cannot take its connections",
    rule=Rule(
        text="accept(2) ERRORS: EMFILE: the per-process limit on the number of open file "
             "descriptors has been reached; ENFILE: the system-wide limit. The file "
             "descriptor is reserved before the connection is dequeued, so it stays queued.",
        source="accept(2); getrlimit(2) RLIMIT_NOFILE; net/socket.c __sys_accept4_file()",
    ),
    explanation=(
        "The listening process could not take connections: they stay in the accept queue, "
        "which fills; then new SYNs are dropped (ListenOverflows) and clients time out."
    ),
    recommendation=(
        "EMFILE: raise the process's RLIMIT_NOFILE (systemd LimitNOFILE=, ulimit -n) and look "
        "for descriptor leaks (netdiag sockets --processes, CLOSE_WAIT). ENFILE: raise "
        "fs.file-max."
    ),
    thresholds="warning at the first failure",
)

IO = RuleSpec(
    id="errors.io_failures",
    topic=TOPIC,
    title="Reads and writes that failed on established connections",
    rule=Rule(
        text="After a reset, the first call returns ECONNRESET and later sends EPIPE "
             "(SIGPIPE unless MSG_NOSIGNAL); a connection whose retransmits or keepalive "
             "probes go unanswered ends with ETIMEDOUT.",
        source="tcp(7); send(2) EPIPE; net/ipv4/tcp_input.c tcp_reset(); "
               "net/ipv4/tcp_timer.c tcp_write_err()",
    ),
    explanation="The evidence lists which processes got which errors on which connections.",
    recommendation=(
        "ECONNRESET: run the resets probe on the peer's side to see why it reset. EPIPE: the "
        "application writes to connections the peer already closed: handle EOF and errors "
        "on read before writing. ETIMEDOUT: a silent peer or path; see retrans."
    ),
    thresholds=f"info when any; warning from {IO_WARN_RATE:g}/s for one errno (and at least "
               f"{IO_WARN_MIN} in the window)",
)

SPECS = (CONNECT, ACCEPT, IO)

ACCEPT_CALLS = ("accept", "accept4")
IO_CALLS = ("read", "write", "readv", "writev", "recvfrom", "sendto", "recvmsg", "sendmsg",
            "recvmmsg", "sendmmsg")


def _row(f: Failure) -> dict[str, Any]:
    out: dict[str, Any] = {"call": f.call, "error": f.error, "count": f.count, "pid": f.pid,
                           "command": f.command}
    if f.peer is not None:
        out["peer"] = f.peer
    if f.remote_port is not None:
        out["remote_port"] = f.remote_port
    if f.local_port is not None:
        out["local_port"] = f.local_port
    if f.reported_by != "return":
        out["reported_by"] = f.reported_by
    if f.approximate:
        out["approximate"] = True
    return out


def _connect(res: ErrorsResult) -> Finding:
    rows = [f for f in res.failures if f.call == "connect"]
    ev: dict[str, Any] = {"seconds": res.window.seconds, "failures": [_row(f) for f in rows[:10]]}
    if not rows:
        return make(CONNECT, Severity.OK, "no connect() failed", ev)
    dest: dict[tuple, int] = {}
    for f in rows:
        key = (f.error, f.peer, f.remote_port)
        dest[key] = dest.get(key, 0) + f.count
    (error, peer, port), n = max(dest.items(), key=lambda kv: kv[1])
    severity = Severity.WARNING if (n >= CONNECT_WARN or any(
        f.error == "EADDRNOTAVAIL" for f in rows)) else Severity.INFO
    who = sorted({f"{f.pid} ({f.command})" for f in rows if (f.error, f.peer,
                                                              f.remote_port) == (error, peer,
                                                                                 port)})
    where = f"{peer}:{port}" if port is not None else str(peer)
    cause = CONNECT_CAUSES.get(error, "")
    return make(CONNECT, severity,
                f"{n} connect() to {where} failed with {error} (pid {', '.join(who[:3])})",
                ev, f"{error} toward {where}: {cause}." if cause else "")


def _accept(res: ErrorsResult) -> Finding:
    rows = [f for f in res.failures if f.call in ACCEPT_CALLS]
    ev: dict[str, Any] = {"seconds": res.window.seconds, "failures": [_row(f) for f in rows[:10]]}
    if not rows:
        return make(ACCEPT, Severity.OK, "no accept() failed", ev)
    top = rows[0]
    cause = ACCEPT_CAUSES.get(top.error, "")
    port = f" on port {top.local_port}" if top.local_port is not None else ""
    return make(ACCEPT, Severity.WARNING,
                f"pid {top.pid} ({top.command}): {top.count} accept(){port} failed with "
                f"{top.error}", ev, f"{top.error}: {cause}." if cause else "")


def _io(res: ErrorsResult) -> Finding:
    rows = [f for f in res.failures if f.call in IO_CALLS]
    ev: dict[str, Any] = {"seconds": res.window.seconds, "failures": [_row(f) for f in rows[:10]]}
    if not rows:
        return make(IO, Severity.OK, "no read or write failed on a connection", ev)
    per_errno: dict[str, int] = {}
    for f in rows:
        per_errno[f.error] = per_errno.get(f.error, 0) + f.count
    error, n = max(per_errno.items(), key=lambda kv: kv[1])
    rate = n / max(res.window.seconds, 0.001)
    top = next(f for f in rows if f.error == error)
    where = f" from {top.peer}:{top.remote_port}" if top.peer else (
        f" on local port {top.local_port}" if top.local_port else "")
    cause = IO_CAUSES.get(error, "")
    warn = rate >= IO_WARN_RATE and n >= IO_WARN_MIN
    return make(IO, Severity.WARNING if warn else Severity.INFO,
                f"{n} reads/writes failed with {error} ({rate:.1f}/s); most: pid {top.pid} "
                f"({top.command}) {top.call}(){where}", ev,
                f"{error}: {cause}." if cause else "")


def check(facts: Facts) -> list[Finding]:
    res = (facts.probes or {}).get("errors")
    if not isinstance(res, ErrorsResult):
        return []
    return [_connect(res), _accept(res), _io(res)]
