"""Packets the kernel dropped, by the reason it gives (eBPF probe drops)."""

from __future__ import annotations

from typing import Any

from netdiag.facts import Facts
from netdiag.model import Finding, Rule, RuleSpec, Severity
from netdiag.probefacts import DropsResult
from netdiag.rules._util import make

TOPIC = "drops"
SUMMARY = "Kernel packet drops by reason (skb:kfree_skb, eBPF probe drops)"
WARN_RATE = 100.0  # drops per second for one reason (NOT_SPECIFIED excluded)...
WARN_MIN = 100  # ...and at least this many in the window
# Reasons that name the normal end of a socket, not a packet lost on its way (comments of
# enum skb_drop_reason, include/net/dropreason-core.h): QUEUE_PURGE "bulk free" (queues
# purged as a socket is destroyed: one per ordinary connection), SOCKET_CLOSE "socket is
# close()d" (data still queued), TCP_CLOSE "TCP socket in CLOSE state" (a late segment for a
# connection already gone), UNIX_DISCONNECT (an AF_UNIX receive queue purged on disconnect).
TEARDOWN = ("QUEUE_PURGE", "SOCKET_CLOSE", "TCP_CLOSE", "UNIX_DISCONNECT")
NOT_COUNTED = ("NOT_SPECIFIED",) + TEARDOWN

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
               f"(NOT_SPECIFIED excluded; at least {WARN_MIN} in the window); packets freed "
               f"at socket teardown ({', '.join(TEARDOWN)}) are shown apart and never warn",
)

SPECS = (DROPS,)


def check(facts: Facts) -> list[Finding]:
    res = (facts.probes or {}).get("drops")
    if not isinstance(res, DropsResult):
        return []
    evidence: dict[str, Any] = {
        "seconds": res.window.seconds,
        "by_reason": [{"reason": r.reason, "drops": r.drops, "per_s": r.per_s}
                      for r in res.by_reason[:10]],
        "by_port": [{"reason": p.reason, "protocol": p.protocol, "port": p.port,
                     "drops": p.drops} for p in res.by_port[:10]],
        "unattributed": res.unattributed}
    if not res.by_reason:
        return [make(DROPS, Severity.OK, "no packet dropped during the window", evidence)]
    teardown = [r for r in res.by_reason if r.reason in TEARDOWN]
    network = [r for r in res.by_reason if r.reason not in TEARDOWN]
    freed = sum(r.drops for r in teardown)
    evidence["network_drops"] = res.total - freed
    evidence["socket_teardown"] = {
        "packets": freed, "reasons": [{"reason": r.reason, "drops": r.drops} for r in teardown],
        "note": "freed with their socket as it closed (normal teardown): not a network drop"}
    also = (f"; {freed} more freed at socket teardown "
            f"({'/'.join(r.reason for r in teardown)}: not network drops)") if freed else ""
    if not network:
        return [make(DROPS, Severity.OK,
                     f"no network drop: {freed} packets freed at socket teardown in "
                     f"{res.window.seconds:g} s ({'/'.join(r.reason for r in teardown)}: "
                     "queues emptied as sockets closed)", evidence,
                     recommendation="Nothing to do: closing sockets free what they still "
                                    "queue.")]
    hot = [r for r in network if r.reason not in NOT_COUNTED and r.per_s >= WARN_RATE
           and r.drops >= WARN_MIN]
    top = network[0]
    port = next((p for p in res.by_port if p.reason == top.reason and p.port), None)
    where = f" to {port.protocol} port {port.port}" if port else ""
    return [make(DROPS, Severity.WARNING if hot else Severity.INFO,
                 f"{res.total - freed} packets dropped in {res.window.seconds:g} s; top reason "
                 f"{top.reason} ({top.drops}, {top.per_s:g}/s){where}{also}", evidence)]
