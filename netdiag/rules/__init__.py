"""Rules turn facts into findings. One module per topic; each declares its RuleSpecs and a
`check(facts)` that returns one Finding per id it can judge (severity ok when all is well).

Rules import only netdiag.facts, netdiag.model and netdiag.probefacts (a test enforces it).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from netdiag.facts import Facts
from netdiag.model import Finding, RuleSpec


@dataclass(frozen=True)
class Topic:
    name: str
    summary: str
    specs: tuple[RuleSpec, ...]
    check: Callable[[Facts], list[Finding]]
    background: str


# The topic modules (netdiag.rules.NAME, whose TOPIC is NAME), in report order. Each is
# imported when a command first needs it: a census (`sockets`) loads its own rules, not all.
TOPIC_NAMES = ("timewait", "closewait", "ports", "backlog", "keepalive", "buffers", "softirq",
               "sockets", "wakeups", "drops", "resets", "retrans", "errors", "probes")
_loaded: dict[str, Topic] = {}


def topic(name: str) -> Topic:
    """One topic's declaration, its module imported on first use. Once the full registry
    (TOPICS) exists, it is the one answer (whoever replaced an entry there is obeyed)."""
    registry = globals().get("TOPICS")
    if registry is not None:
        return registry[name]
    got = _loaded.get(name)
    if got is None:
        if name not in TOPIC_NAMES:
            raise KeyError(name)
        mod = importlib.import_module(f"netdiag.rules.{name}")
        got = _loaded[name] = Topic(mod.TOPIC, mod.SUMMARY, mod.SPECS, mod.check,
                                    mod.BACKGROUND)
    return got


def __getattr__(attr: str):
    """TOPICS (every topic by name) and SPECS (every rule by id), built on first access."""
    if attr == "TOPICS":
        topics = {name: topic(name) for name in TOPIC_NAMES}
        globals()["TOPICS"] = topics
        return topics
    if attr == "SPECS":
        specs = {spec.id: spec for t in __getattr__("TOPICS").values() for spec in t.specs}
        globals()["SPECS"] = specs
        return specs
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")


# Topics judged only from eBPF probe facts (absent unless probes ran).
PROBE_ONLY = ("wakeups", "drops", "resets", "retrans", "errors", "probes")
# Finding ids of other topics judged only from probe facts: without probes they are simply
# not asked, not "not judged".
PROBE_ONLY_IDS = ("buffers.rcvbuf_fixed",)


@dataclass
class Evaluation:
    findings: list[Finding]
    # ids that could not be judged: their facts were missing, or their rule failed
    not_judged: list[str]
    # one "rule TOPIC: ExceptionType: message" per rule that failed
    errors: list[tuple[str, str]]


def evaluate(facts: Facts, topics: list[str]) -> Evaluation:
    """Run the topics' rules, each isolated: a rule that raises leaves the others' findings
    intact, becomes an error entry, and its ids count as not judged."""
    out = Evaluation([], [], [])
    for name in topics:
        t = topic(name)
        try:
            got = t.check(facts)
        except Exception as exc:  # noqa: BLE001 (a bug in one rule must not end the report)
            out.errors.append((f"rule {name}", f"{type(exc).__name__}: {exc}"))
            out.not_judged.extend(s.id for s in t.specs)
            continue
        seen = {f.id for f in got}
        if name not in PROBE_ONLY or facts.probes is not None:
            out.not_judged.extend(s.id for s in t.specs if s.id not in seen and (
                facts.probes is not None or s.id not in PROBE_ONLY_IDS))
        for f in got:
            f.netns = None if facts.netns in ("default", "snapshot") else facts.netns
        out.findings.extend(got)
    return out
