"""Small helpers shared by rule modules (no I/O)."""

from __future__ import annotations

from typing import Any

from netdiag.facts import Facts, parse_port_list, reserved_in_range
from netdiag.model import Finding, RuleSpec, Severity

# Length of TIME_WAIT: TCP_TIMEWAIT_LEN (60*HZ) in include/net/tcp.h, not a sysctl.
TIME_WAIT_SECONDS = 60


def make(spec: RuleSpec, severity: Severity, title: str, evidence: dict[str, Any],
         detail: str = "", recommendation: str | None = None) -> Finding:
    explanation = spec.explanation if not detail else f"{detail} {spec.explanation}"
    return Finding(
        id=spec.id,
        topic=spec.topic,
        severity=severity,
        title=title,
        evidence=evidence,
        explanation=explanation,
        recommendation=recommendation or spec.recommendation,
        rule=spec.rule,
    )


def port_budget(facts: Facts) -> dict[str, Any] | None:
    """ip_local_port_range minus ip_local_reserved_ports: the ports connect() may use."""
    if facts.sysctl is None:
        return None
    rng = facts.sysctl.get_ints("net.ipv4.ip_local_port_range")
    if not rng or len(rng) != 2:
        return None
    low, high = rng
    reserved_raw = facts.sysctl.values.get("net.ipv4.ip_local_reserved_ports", "")
    try:
        reserved = parse_port_list(reserved_raw)
    except ValueError:
        reserved = []
    in_range = reserved_in_range(reserved, low, high)
    return {
        "ip_local_port_range": f"{low} {high}",
        "range_size": high - low + 1,
        "reserved_in_range": in_range,
        "usable_ports": max(high - low + 1 - in_range, 0),
        "low": low,
        "high": high,
        "reserved": reserved,
    }


def is_reserved(port: int, reserved: list[tuple[int, int]]) -> bool:
    return any(lo <= port <= hi for lo, hi in reserved)


def is_loopback(address: str) -> bool:
    return address.startswith("127.") or address == "::1"


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    parts = []
    if h:
        parts.append(f"{h} h")
    if m:
        parts.append(f"{m} min")
    if s or not parts:
        parts.append(f"{s} s")
    return " ".join(parts)
