"""Rules turn facts into findings. One module per topic; each declares its RuleSpecs and a
`check(facts)` that returns one Finding per id it can judge (severity ok when all is well).

Rules import only netdiag.facts and netdiag.model (a test enforces it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from netdiag.facts import Facts
from netdiag.model import Finding, RuleSpec
from netdiag.rules import (
    backlog,
    buffers,
    closewait,
    drops,
    keepalive,
    ports,
    resets,
    retrans,
    sockets,
    softirq,
    timewait,
    wakeups,
)


@dataclass(frozen=True)
class Topic:
    name: str
    summary: str
    specs: tuple[RuleSpec, ...]
    check: Callable[[Facts], list[Finding]]
    background: str


TOPICS: dict[str, Topic] = {
    mod.TOPIC: Topic(mod.TOPIC, mod.SUMMARY, mod.SPECS, mod.check, mod.BACKGROUND)
    for mod in (timewait, closewait, ports, backlog, keepalive, buffers, softirq, sockets,
                wakeups, drops, resets, retrans)
}

SPECS: dict[str, RuleSpec] = {spec.id: spec for t in TOPICS.values() for spec in t.specs}


# Topics judged only from eBPF probe facts (absent unless probes ran).
PROBE_ONLY = ("wakeups", "drops", "resets", "retrans")


def evaluate(facts: Facts, topics: list[str]) -> tuple[list[Finding], list[str]]:
    """Run the topics' rules. Returns the findings and the ids that could not be judged
    (their facts were not collected: the collector's error says why)."""
    findings: list[Finding] = []
    unjudged: list[str] = []
    for name in topics:
        topic = TOPICS[name]
        got = topic.check(facts)
        seen = {f.id for f in got}
        if name not in PROBE_ONLY or facts.probes is not None:
            unjudged.extend(s.id for s in topic.specs if s.id not in seen)
        for f in got:
            f.netns = None if facts.netns in ("default", "snapshot") else facts.netns
        findings.extend(got)
    return findings, unjudged
