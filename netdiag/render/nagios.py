"""Nagios / monitoring-plugins output: one status line with perfdata, long output after it.

    NETDIAG WARNING - 2 warnings: <worst title> | 'sockets'=518 'time_wait'=480 ...
    [WARNING] timewait.flood: ...

The exit code (from the report) matches the word: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.
"""

from __future__ import annotations

from typing import TextIO

from netdiag.model import Report, Severity
from netdiag.render._safe import clean

MAX_SUMMARY = 70


def _label(name: str) -> str:
    """A perfdata label (monitoring-plugins guidelines): any characters but "=" and "'";
    quoted when it holds a space (a quote inside is doubled)."""
    name = name.replace("=", "_")
    if any(c in name for c in " '"):
        return "'" + name.replace("'", "''") + "'"
    return name


def _perf(report: Report) -> str:
    """With --all-netns every namespace has its own values: each label is qualified by the
    namespace ("NETNS:sockets_listen"), so that no label appears twice."""
    items = []
    for s in report.metrics:
        labels = dict(s.labels)
        prefix = f"{clean(labels.get('netns', ''))}:" if report.all_netns else ""
        if s.name == "netdiag_sockets":
            items.append((f"{prefix}sockets_{labels['state'].lower()}", f"{int(s.value)}"))
        elif s.name == "netdiag_nstat_total":
            counter = labels["counter"]
            if counter in ("TcpExtListenOverflows", "TcpExtTCPTimeWaitOverflow", "TcpRetransSegs",
                           "TcpExtTCPRcvQDrop"):
                items.append((f"{prefix}{counter}", f"{int(s.value)}c"))
    sev = [f.severity for f in report.findings]
    items.append(("findings_warning", str(sum(1 for s in sev if s is Severity.WARNING))))
    items.append(("findings_critical", str(sum(1 for s in sev if s is Severity.CRITICAL))))
    seen: set[str] = set()
    out = []
    for name, value in items:
        label = _label(name)
        n = 1
        while label in seen:  # two labels the same once cleaned: still apart
            n += 1
            label = _label(f"{name} #{n}")
        seen.add(label)
        out.append(f"{label}={value}")
    return " ".join(out)


def render_nagios(report: Report, out: TextIO) -> None:
    status = report.status.upper()
    bad = sorted((f for f in report.findings if f.severity >= Severity.WARNING),
                 key=lambda f: -f.severity)
    if report.status == "unknown":
        summary = "could not judge: " + "; ".join(e.message for e in report.errors[:2])
    elif bad:
        crit = sum(1 for f in bad if f.severity is Severity.CRITICAL)
        warn = len(bad) - crit
        counts = ", ".join(p for p in (f"{crit} critical" if crit else "",
                                       f"{warn} warning{'s' if warn > 1 else ''}" if warn
                                       else "") if p)
        summary = f"{counts}: {bad[0].title}"
    else:
        summary = "no problem found"
    summary = clean(" ".join(summary.split())).replace("|", "/")  # one line: system text
    if len(summary) > MAX_SUMMARY:
        summary = summary[: MAX_SUMMARY - 1] + "…"
    out.write(f"NETDIAG {status} - {summary} | {_perf(report)}\n")
    # Most severe first (stable: the report's order within a severity), as the status line.
    for f in sorted(report.findings, key=lambda f: -f.severity):
        if f.severity >= Severity.INFO:
            ns = f" [{clean(f.netns)}]" if f.netns else ""
            out.write(f"[{f.severity.label.upper()}] {f.id}{ns}: "
                      f"{clean(f.title).replace('|', '/')}\n")
    for e in report.errors:
        out.write(f"[ERROR] {clean(e.collector)}: {clean(e.message).replace('|', '/')}\n")
