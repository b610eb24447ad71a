"""RSTs sent and received, with the kernel's reasons (eBPF probe resets)."""

from __future__ import annotations

from typing import Any

from netdiag.facts import Facts
from netdiag.model import Finding, Rule, RuleSpec, Severity
from netdiag.probefacts import ResetsResult
from netdiag.rules._util import make

TOPIC = "resets"
SUMMARY = "TCP resets sent and received (eBPF probe resets)"
WARN_RATE = 10.0  # RSTs sent per second...
WARN_MIN = 20  # ...and at least this many in the window (short windows make rates jumpy)

BACKGROUND = (
    "This host sends a RST when a segment arrives for no socket (closed port), when an "
    "application closes a socket with unread data (TCPAbortOnClose) or with SO_LINGER 0 "
    "(TCPAbortOnData), when the accept queue overflows with tcp_abort_on_overflow=1, and on "
    "protocol errors. The peer then sees 'connection reset by peer' (ECONNRESET), or EPIPE "
    "when it writes after the reset. Newer kernels give the reason with each RST."
)

SENT = RuleSpec(
    id="resets.sent",
    topic=TOPIC,
    title="Resets sent by this host",
    rule=Rule(
        text="tcp:tcp_send_reset fires for each RST the kernel sends, with enum sk_rst_reason "
             "on kernels that have it; tcp_close() sends a RST instead of a FIN when unread "
             "data remains in the receive queue.",
        source="include/trace/events/tcp.h (tcp_send_reset, tcp_receive_reset); "
               "include/net/rstreason.h; net/ipv4/tcp.c __tcp_close()",
    ),
    explanation=(
        "Each RST ends a connection abruptly for the peer: 'connection reset by peer'. The "
        "reason and the local port in the evidence say which case it is: NO_SOCKET for "
        "connections to a port nobody listens on, a closed socket with unread data, an "
        "application that aborts with SO_LINGER 0. A RST that answers a SYN (answers_syn) "
        "refuses a connection attempt: that client's connect() fails with ECONNREFUSED; "
        "the others end connections that existed (ECONNRESET)."
    ),
    recommendation=(
        "For NO_SOCKET: find the clients of that port (is a service down, or a health check "
        "probing a closed port?). For resets after close (TCP_ABORT_ON_CLOSE): the "
        "application closed with received data still unread, and that sends a RST whether "
        "or not it called shutdown() first. Make it read until end of file (or drain what "
        "the peer sent) before close(); the graceful sequence is shutdown(SHUT_WR), then read "
        "until read() returns 0, then close()."
    ),
    thresholds=f"info when RSTs were sent; warning from {WARN_RATE:g}/s (at least {WARN_MIN} "
               "in the window)",
)

SPECS = (SENT,)


def check(facts: Facts) -> list[Finding]:
    res = (facts.probes or {}).get("resets")
    if not isinstance(res, ResetsResult):
        return []
    seconds = max(res.window.seconds, 0.001)
    evidence: dict[str, Any] = {
        "seconds": res.window.seconds, "sent_total": res.sent_total,
        "sent": [{"reason": r.reason, "state": r.state, "local_port": r.local_port,
                  "answers_syn": r.answers_syn, "resets": r.resets} for r in res.sent[:10]],
        # RSTs answering a SYN refuse a connection attempt (ECONNREFUSED for the client)
        "answering_syn": sum(r.resets for r in res.sent if r.answers_syn),
        "received_total": res.received_total,
        "received": [{"local_port": r.local_port, "peer": r.peer, "remote_port": r.remote_port,
                      "resets": r.resets} for r in res.received[:10]]}
    if res.unattributed:
        evidence["unattributed"] = res.unattributed
    if not res.sent_total:
        return [make(SENT, Severity.OK, "no RST sent during the window", evidence)]
    top = res.sent[0]
    rate = res.sent_total / seconds
    port = f" on local port {top.local_port}" if top.local_port is not None else \
        " on client (ephemeral) ports"
    warn = rate >= WARN_RATE and res.sent_total >= WARN_MIN
    refused = evidence["answering_syn"]
    tail = (f"; {refused} answered SYNs (connection attempts refused: ECONNREFUSED, not "
            "ECONNRESET, for those clients)" if refused else "")
    return [make(SENT, Severity.WARNING if warn else Severity.INFO,
                 f"{res.sent_total} RSTs sent in {seconds:g} s ({rate:.1f}/s); most: "
                 f"{top.reason}{port}{tail}", evidence)]
