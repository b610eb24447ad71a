"""`netdiag why SYMPTOM`: from the error an application saw to its kernel causes.

symptoms.py holds what each symptom is and its candidate causes (pure data); judge.py weighs
the run's evidence for each cause. This module turns the verdicts into the report: one finding
per cause (confirmed first), and a facts section that summarises them.
"""

from __future__ import annotations

from typing import Any

from netdiag.diagnose.judge import (
    CANNOT_TELL,
    CONFIRMED,
    LIKELY,
    RULED_OUT,
    CauseVerdict,
    Scope,
    diagnose,
    next_step,
)
from netdiag.diagnose.symptoms import SYMPTOMS, Symptom, find, nearest
from netdiag.facts import Facts
from netdiag.model import Finding, Severity

__all__ = ["SYMPTOMS", "Scope", "Symptom", "find", "nearest", "report_parts", "listing"]


def _severity(v: CauseVerdict) -> Severity:
    if v.verdict == CONFIRMED:
        return max(v.severity or Severity.WARNING, Severity.WARNING)
    if v.verdict == LIKELY:
        return Severity.INFO
    return Severity.OK


def to_finding(v: CauseVerdict) -> Finding:
    c = v.cause
    action = (v.action or c.action) if v.verdict in (CONFIRMED, LIKELY) else (
        "Nothing to do for this cause." if v.verdict == RULED_OUT else
        f"To tell: {v.would_tell}." if v.would_tell else c.action)
    return Finding(id=f"why.{c.id}", topic="why", severity=_severity(v),
                   title=f"{c.title}: {v.because}", evidence=v.evidence,
                   explanation=c.mechanism, recommendation=action, rule=c.rule,
                   verdict=v.verdict, would_tell=v.would_tell)


def report_parts(symptom: Symptom, matched: str, scope: Scope, facts: Facts,
                 findings: list[Finding]) -> tuple[list[Finding], dict[str, Any]]:
    """The report's findings (one per cause, ranked) and facts for `why`."""
    verdicts = diagnose(symptom, facts, findings, scope)
    window = facts.baseline if facts.counters_before is not None else None
    counts = {k: sum(1 for v in verdicts if v.verdict == k)
              for k in (CONFIRMED, LIKELY, CANNOT_TELL, RULED_OUT)}
    section: dict[str, Any] = {
        "symptom": {"name": symptom.name, "title": symptom.title, "errnos": list(symptom.errnos),
                    "returned_by": symptom.returned_by, "asked": matched,
                    "probes": list(symptom.probes)},
        "scope": {"port": scope.port, "peer": scope.peer, "peer_port": scope.peer_port,
                  "pid": scope.pid},
        "evidence_window": window,
        "probes": sorted(facts.probes or {}),
        "verdicts": counts,
        "errors_seen": _errors_seen(symptom, facts, scope),
        "next_step": next_step(symptom, facts, verdicts),
        "causes": [{"id": f"why.{v.cause.id}", "verdict": v.verdict, "title": v.cause.title,
                    "because": v.because, "would_tell": v.would_tell} for v in verdicts],
    }
    return [to_finding(v) for v in verdicts], section


def _errors_seen(symptom: Symptom, facts: Facts, scope: Scope) -> list[dict[str, Any]] | None:
    """What the errors probe saw applications told, for this symptom's errnos (None: the probe
    did not run)."""
    res = (facts.probes or {}).get("errors")
    if res is None:
        return None
    wanted = set(symptom.errnos) or {"ECONNRESET", "ETIMEDOUT", "EPIPE"}
    rows = []
    for f in res.failures:
        if f.error not in wanted or (scope.pid is not None and f.pid != scope.pid):
            continue
        if scope.port is not None and scope.port not in (f.local_port, f.remote_port):
            continue
        if not scope.peer_matches(f.peer if scope.peer is not None else None, f.remote_port):
            continue
        rows.append({"call": f.call, "error": f.error, "pid": f.pid, "command": f.command,
                     "peer": f.peer, "remote_port": f.remote_port, "count": f.count})
    return rows[:20]


def listing() -> dict[str, Any]:
    """`netdiag why` alone: the symptoms it knows and how to name them."""
    return {"symptoms": [{"name": s.name, "title": s.title, "errnos": list(s.errnos),
                          "words": list(s.words), "returned_by": s.returned_by,
                          "causes": [c.id for c in s.causes]} for s in SYMPTOMS]}
