"""Packets the kernel dropped, by the reason it gives (eBPF probe drops)."""

from __future__ import annotations

from typing import Any

from netdiag.facts import Facts
from netdiag.model import Finding, Rule, RuleSpec, Severity
from netdiag.rules._util import make

TOPIC = "drops"
SUMMARY = "Kernel packet drops by reason (skb:kfree_skb, eBPF probe drops)"
WARN_RATE = 100.0  # drops per second for one reason (NOT_SPECIFIED excluded)

BACKGROUND = (
    "Since 5.17 the kernel names the reason when it frees a packet as dropped "
    "(enum skb_drop_reason): NO_SOCKET (nothing listens on that port), SOCKET_RCVBUFF "
    "(receive buffer full), TCP_* (protocol checks), NETFILTER_DROP and more. The names "
    "differ between kernels, so netdiag reads them from the running kernel."
)

DROPS = RuleSpec(
    id="drops.kernel_drops",
    topic=TOPIC,
    title="Packets dropped in the kernel",
    rule=Rule(
        text="skb:kfree_skb fires when a packet is freed as dropped, with the drop reason "
             "(enum skb_drop_reason, include/net/dropreason-core.h).",
        source="include/trace/events/skb.h (kfree_skb); include/net/dropreason-core.h",
    ),
    explanation=(
        "The evidence lists the reasons the kernel gave for the packets it dropped during the "
        "window, with their rates. NO_SOCKET usually means clients connect to a closed port; "
        "SOCKET_RCVBUFF a reader too slow for its buffer; TCP_ reasons protocol checks "
        "(out-of-window segments, bad checksums)."
    ),
    recommendation=(
        "Start from the top reason: for NO_SOCKET, find who connects to which port (probe "
        "resets); for SOCKET_RCVBUFF, the buffers topic; for NETFILTER_DROP, the firewall "
        "rules. `netdiag explain drops` has the background."
    ),
    thresholds=f"info when drops were seen; warning from {WARN_RATE:g}/s for one reason "
               "(NOT_SPECIFIED excluded)",
)

SPECS = (DROPS,)


def check(facts: Facts) -> list[Finding]:
    probe = (facts.probes or {}).get("drops")
    if probe is None:
        return []
    rows = probe.get("by_reason", [])
    evidence: dict[str, Any] = {"seconds": probe.get("seconds"), "by_reason": rows[:10],
                                "by_port": probe.get("by_port", [])[:10],
                                "by_protocol": probe.get("by_protocol")}
    if not rows:
        return [make(DROPS, Severity.OK, "no packet dropped during the window", evidence)]
    total = sum(r["drops"] for r in rows)
    hot = [r for r in rows if r["reason"] != "NOT_SPECIFIED" and r["per_s"] >= WARN_RATE]
    top = rows[0]
    port = next((p for p in probe.get("by_port", []) if p["reason"] == top["reason"]), None)
    where = f" to {port['protocol']} port {port['port']}" if port else ""
    return [make(DROPS, Severity.WARNING if hot else Severity.INFO,
                 f"{total} packets dropped in {probe.get('seconds', 0):g} s; top reason "
                 f"{top['reason']} ({top['drops']}, {top['per_s']:g}/s){where}", evidence)]
