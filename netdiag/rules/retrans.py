"""Retransmits by peer (eBPF probe retrans)."""

from __future__ import annotations

from typing import Any

from netdiag.facts import Facts
from netdiag.model import Finding, Rule, RuleSpec, Severity
from netdiag.rules._util import make

TOPIC = "retrans"
SUMMARY = "TCP retransmits by peer (eBPF probe retrans)"
WARN_RATE = 10.0  # retransmits per second toward one peer

BACKGROUND = (
    "TCP retransmits a segment when its ACK does not come in time (RTO) or when duplicate "
    "ACKs or SACKs show it was lost (fast retransmit). Retransmits concentrated on one peer "
    "point at that path or that peer (loss, a full receive queue there, a middlebox); spread "
    "over all peers they point at this host's own link."
)

PEERS = RuleSpec(
    id="retrans.peers",
    topic=TOPIC,
    title="Retransmits concentrated on some peers",
    rule=Rule(
        text="tcp:tcp_retransmit_skb fires for each retransmitted segment; Tcp RetransSegs "
             "counts them in /proc/net/snmp.",
        source="include/trace/events/tcp.h (tcp_retransmit_skb); RFC 6298 (RTO); "
               "Documentation/networking/snmp_counter.rst (RetransSegs)",
    ),
    explanation="The evidence ranks the peers this host retransmitted to during the window.",
    recommendation=(
        "Look at the top peer's path (mtr, ping with large packets for MTU problems) and at "
        "the peer itself (its receive queues and drops). If every peer is affected, look at "
        "this host's NIC (softirq topic) and qdisc drops."
    ),
    thresholds=f"info when retransmits were seen; warning from {WARN_RATE:g}/s toward one peer",
)

SPECS = (PEERS,)


def check(facts: Facts) -> list[Finding]:
    probe = (facts.probes or {}).get("retrans")
    if probe is None:
        return []
    rows = probe.get("by_peer", [])
    evidence: dict[str, Any] = {"seconds": probe.get("seconds"), "by_peer": rows[:10],
                                "total": probe.get("total", 0)}
    if not rows:
        return [make(PEERS, Severity.OK, "no retransmit during the window", evidence)]
    top = rows[0]
    return [make(PEERS, Severity.WARNING if top["per_s"] >= WARN_RATE else Severity.INFO,
                 f"{probe.get('total', 0)} retransmits; most toward {top['peer']}:"
                 f"{top['port']} ({top['retransmits']}, {top['per_s']:g}/s)", evidence)]
