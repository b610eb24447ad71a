"""Thundering herd on accept(): several workers woken for one connection (probe wakeups)."""

from __future__ import annotations

from typing import Any

from netdiag.facts import Facts
from netdiag.model import Finding, Rule, RuleSpec, Severity
from netdiag.rules._util import make

TOPIC = "wakeups"
SUMMARY = "Accept wake-ups: workers racing for the same connection (eBPF probe wakeups)"
HERD_WARN = 1.0  # EAGAIN wake-ups per connection accepted
MIN_EAGAIN = 20

BACKGROUND = (
    "When several processes or threads wait on one listening socket (a shared fd after fork, "
    "or the same socket in several epoll sets), a new connection can wake all of them; one "
    "accept() wins and the others get EAGAIN and go back to sleep. Blocking accept() has "
    "woken only one waiter since Linux 2.6, but epoll without EPOLLEXCLUSIVE wakes every "
    "epoll instance watching the socket. The cost is CPU and latency that grow with the "
    "number of workers."
)

HERD = RuleSpec(
    id="wakeups.thundering_herd",
    topic=TOPIC,
    title="Workers woken for connections other workers take",
    rule=Rule(
        text="epoll_ctl(2) EPOLLEXCLUSIVE: sets an exclusive wakeup mode for the epoll file "
             "descriptor ... useful for avoiding thundering herd problems in certain "
             "scenarios. socket(7) SO_REUSEPORT: each of several sockets bound to the same "
             "port gets its own accept queue, and the kernel spreads connections over them.",
        source="epoll_ctl(2): EPOLLEXCLUSIVE; socket(7): SO_REUSEPORT; accept(2): EAGAIN",
    ),
    explanation=(
        "During the probe window, accept() on this listener returned EAGAIN more often than "
        "it returned a connection: for each connection, other workers were woken and found "
        "nothing. That is CPU spent on wake-ups and cache misses, and it grows with the "
        "number of workers sharing the socket."
    ),
    recommendation=(
        "Give each worker its own listening socket with SO_REUSEPORT (nginx: listen ... "
        "reuseport), or register the shared socket with EPOLLEXCLUSIVE, or let one thread "
        "accept and hand connections out."
    ),
    thresholds=f"warning when a listener shared by ≥ 2 workers has ≥ {MIN_EAGAIN} EAGAIN "
               f"accepts and ≥ {HERD_WARN:g} per accepted connection",
)

SPECS = (HERD,)


def check(facts: Facts) -> list[Finding]:
    probe = (facts.probes or {}).get("wakeups")
    if probe is None:
        return []
    rows = probe.get("listeners", [])
    herd = [r for r in rows if r["workers"] >= 2 and r["eagain"] >= MIN_EAGAIN
            and r["herd_score"] >= HERD_WARN]
    evidence: dict[str, Any] = {"seconds": probe.get("seconds"),
                                "listeners": [{k: r[k] for k in ("inode", "workers", "accepted",
                                                                 "eagain", "herd_score")}
                                              for r in rows[:10]]}
    if not herd:
        return [make(HERD, Severity.OK, "no thundering herd on accept()", evidence)]
    worst = herd[0]
    port = f" (port {worst['port']})" if worst.get("port") else ""
    return [make(HERD, Severity.WARNING,
                 f"{worst['workers']} workers share a listener{port}: {worst['eagain']} "
                 f"empty wake-ups for {worst['accepted']} connections "
                 f"(score {worst['herd_score']:g})", evidence)]
