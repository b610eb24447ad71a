"""Retransmits by destination; attempts that never left the host apart (eBPF probe retrans)."""

from __future__ import annotations

from typing import Any

from netdiag.facts import Facts
from netdiag.model import Finding, Rule, RuleSpec, Severity
from netdiag.probefacts import Retransmits, RetransResult
from netdiag.rules._util import make

TOPIC = "retrans"
SUMMARY = "TCP retransmits by destination or local port (eBPF probe retrans)"
WARN_RATE = 10.0  # retransmits per second on one flow group...
WARN_MIN = 20  # ...and at least this many in the window

BACKGROUND = (
    "TCP retransmits a segment when its ACK does not come in time (RTO) or when duplicate "
    "ACKs or SACKs show it was lost (fast retransmit). The probe counts tcp_retransmit_skb "
    "events: one per retransmitted skb (packet), which with TSO/GSO may carry several "
    "segments, so its counts are below nstat's TcpRetransSegs (segments). Retransmits "
    "concentrated on one peer "
    "point at that path or that peer (loss, a full receive queue there, a middlebox); spread "
    "over all peers they point at this host's own link. Since 6.17 the tracepoint also fires "
    "for retransmits that failed inside this host (no memory, no route, a busy device: "
    "TCPRetransFail): those never reached the network and are counted apart."
)

PEERS = RuleSpec(
    id="retrans.peers",
    topic=TOPIC,
    title="Retransmits concentrated on some destinations",
    rule=Rule(
        text="tcp:tcp_retransmit_skb fires once per retransmitted skb, which with TSO/GSO "
             "may carry several MSS-sized segments (with err < 0, since 6.17, for an attempt "
             "that failed before transmission); Tcp RetransSegs counts the segments sent "
             "again (tcp_skb_pcount() per skb), TcpExt TCPRetransFail the failed attempts.",
        source="include/trace/events/tcp.h (tcp_retransmit_skb); net/ipv4/tcp_output.c "
               "tcp_retransmit_skb(); RFC 6298 (RTO); "
               "Documentation/networking/snmp_counter.rst (RetransSegs)",
    ),
    explanation="The evidence ranks the destinations (or local ports) this host retransmitted "
                "to during the window, in retransmitted skbs (packets): one skb may carry "
                "several segments (TSO/GSO), so the segments are more (nstat "
                "TcpRetransSegs). A server's clients are not told apart (unbounded): their "
                "rows have the local port and no peer.",
    recommendation=(
        "Look at the top destination's path (mtr, ping with large packets for MTU problems) "
        "and at the peer itself (its receive queues and drops). If every peer is affected, "
        "look at this host's NIC (softirq topic) and qdisc drops. Failed attempts point at "
        "this host: memory (tcp_mem), routes, the device's queue."
    ),
    thresholds=f"info when retransmits were seen; warning from {WARN_RATE:g}/s toward one "
               f"destination (at least {WARN_MIN} in the window)",
)

SPECS = (PEERS,)


def _where(r: Retransmits) -> str:
    if r.peer is not None:
        return f"{r.peer}:{r.remote_port}"
    if r.local_port is not None:
        return f"clients of local port {r.local_port}"
    return "connections between ephemeral ports"


def _advice(top: Retransmits) -> str:
    """The advice, for the group that retransmitted most: a destination, or a server's
    clients (the probe does not keep their addresses)."""
    if top.peer is None and top.local_port is not None:
        return (f"The probe does not keep a server's clients (they are unbounded): list the "
                f"connections of local port {top.local_port} that retransmit with "
                f"`ss -tni state established '( sport = :{top.local_port} )'` (retrans:), then "
                "look at those clients' paths (mtr, ping with large packets for MTU problems) "
                "and at the clients themselves (their receive queues and drops). If every "
                "peer is affected, look at this host's NIC (softirq topic) and qdisc drops. "
                "Failed attempts point at this host: memory (tcp_mem), routes, the device's "
                "queue. Segments retransmitted: nstat TcpRetransSegs.")
    return PEERS.recommendation + " Segments retransmitted: nstat TcpRetransSegs."


def check(facts: Facts) -> list[Finding]:
    res = (facts.probes or {}).get("retrans")
    if not isinstance(res, RetransResult):
        return []
    evidence: dict[str, Any] = {
        "seconds": res.window.seconds, "total": res.total, "failed_total": res.failed_total,
        "failures_reported": res.failures_reported, "counted": res.counted,
        "by_flow": [{"local_port": r.local_port, "peer": r.peer, "remote_port": r.remote_port,
                     "retransmits": r.retransmits, "failed": r.failed, "per_s": r.per_s}
                    for r in res.by_flow[:10]]}
    failed = (f"; {res.failed_total} more attempts failed inside this host (never sent)"
              if res.failed_total else "")
    if not res.total:
        if res.failed_total:
            return [make(PEERS, Severity.INFO, f"no retransmit left the host, but "
                                               f"{res.failed_total} attempts failed inside it",
                         evidence)]
        return [make(PEERS, Severity.OK, "no retransmit during the window", evidence)]
    top = max(res.by_flow, key=lambda r: r.retransmits)
    warn = top.per_s >= WARN_RATE and top.retransmits >= WARN_MIN
    return [make(PEERS, Severity.WARNING if warn else Severity.INFO,
                 f"{res.total} retransmitted packets (skbs, not segments: see TcpRetransSegs); "
                 f"most toward {_where(top)} ({top.retransmits}, {top.per_s:g}/s){failed}",
                 evidence, recommendation=_advice(top))]
