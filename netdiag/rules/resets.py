"""RSTs sent and received, with the kernel's reasons (eBPF probe resets)."""

from __future__ import annotations

from typing import Any

from netdiag.facts import Facts
from netdiag.model import Finding, Rule, RuleSpec, Severity
from netdiag.rules._util import make

TOPIC = "resets"
SUMMARY = "TCP resets sent and received (eBPF probe resets)"
WARN_RATE = 10.0  # RSTs sent per second

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
        "application that aborts with SO_LINGER 0."
    ),
    recommendation=(
        "For NO_SOCKET: find the clients of that port (is a service down, or a health check "
        "probing a closed port?). For resets after close: make the application read the "
        "request fully before closing, or shut down writing first (shutdown(SHUT_WR))."
    ),
    thresholds=f"info when RSTs were sent; warning from {WARN_RATE:g}/s",
)

SPECS = (SENT,)


def check(facts: Facts) -> list[Finding]:
    probe = (facts.probes or {}).get("resets")
    if probe is None:
        return []
    seconds = max(probe.get("seconds") or 0.001, 0.001)
    total = probe.get("sent_total", 0)
    evidence: dict[str, Any] = {"seconds": probe.get("seconds"), "sent": probe.get("sent", [])[:10],
                                "sent_total": total, "received_total":
                                probe.get("received_total", 0),
                                "received_by_port": probe.get("received_by_port", [])[:10]}
    if not total:
        return [make(SENT, Severity.OK, "no RST sent during the window", evidence)]
    top = probe["sent"][0]
    rate = total / seconds
    return [make(SENT, Severity.WARNING if rate >= WARN_RATE else Severity.INFO,
                 f"{total} RSTs sent in {seconds:g} s ({rate:.1f}/s); most: {top['reason']} "
                 f"on local port {top['local_port']}", evidence)]
