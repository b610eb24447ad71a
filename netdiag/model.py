"""The neutral report: findings, rules, errors. Renderers read only this module's types."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class Severity(enum.IntEnum):
    OK = 0
    INFO = 1
    WARNING = 2
    CRITICAL = 3

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class Rule:
    """The documented kernel rule a finding rests on, and where it is written down."""

    text: str
    source: str


@dataclass(frozen=True)
class RuleSpec:
    """Static description of one finding id: what `netdiag explain ID` prints."""

    id: str
    topic: str
    title: str
    rule: Rule
    explanation: str
    recommendation: str
    thresholds: str = ""
    # Kernel counters the finding is judged on ("TcpExt.ListenOverflows", "softnet_stat.
    # dropped", "link.rx_overruns"): each goes through the one counter policy (rules._policy).
    counters: tuple[str, ...] = ()


@dataclass
class Finding:
    id: str
    topic: str
    severity: Severity
    title: str
    evidence: dict[str, Any]
    explanation: str
    recommendation: str
    rule: Rule
    netns: str | None = None
    # `netdiag why`: how the evidence weighs this cause (confirmed, likely, ruled_out,
    # cannot_tell), and for the undecided ones what would tell.
    verdict: str | None = None
    would_tell: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "topic": self.topic,
            "severity": self.severity.label,
            "title": self.title,
            "evidence": self.evidence,
            "explanation": self.explanation,
            "recommendation": self.recommendation,
            "rule": {"text": self.rule.text, "source": self.rule.source},
        }
        if self.netns is not None:
            out["netns"] = self.netns
        if self.verdict is not None:
            out["verdict"] = self.verdict
            out["would_tell"] = self.would_tell
        return out


@dataclass
class CollectorError:
    collector: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"collector": self.collector, "message": self.message}


@dataclass
class HostInfo:
    hostname: str
    kernel: str
    netns: str


@dataclass
class Report:
    """What one run found: renderers format it, the CLI derives the exit code from it."""

    host: HostInfo
    generated_at: str
    findings: list[Finding] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    errors: list[CollectorError] = field(default_factory=list)
    topic: str | None = None
    # A topic command may ask to see its facts first; check shows only findings.
    show_facts: bool = False
    # False when a rule could not be judged at all (every source it needs failed).
    judged: bool = True
    # Metric samples (netdiag.metrics.Sample) for the prometheus and nagios formats.
    metrics: list = field(default_factory=list)
    # Set on the intermediate prints of `probe --interval`: a heading, facts only.
    interim: str | None = None
    # Finding ids that could not be judged: their facts were not collected, or their rule
    # failed (the errors say why).
    not_judged: list[str] = field(default_factory=list)
    # True for the --all-netns document (facts: one row per namespace).
    all_netns: bool = False

    @property
    def worst(self) -> Severity:
        return max((f.severity for f in self.findings), default=Severity.OK)

    @property
    def status(self) -> str:
        if not self.judged:
            return "unknown"
        worst = self.worst
        if worst >= Severity.CRITICAL:
            return "critical"
        if worst >= Severity.WARNING:
            return "warning"
        return "ok"

    @property
    def exit_code(self) -> int:
        return {"ok": 0, "warning": 1, "critical": 2, "unknown": 3}[self.status]
