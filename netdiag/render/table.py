"""Terminal output with rich: facts as tables, then findings. Readable at 80 columns."""

from __future__ import annotations

from typing import Any, TextIO

from rich.console import Console
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from netdiag.model import Finding, Report, Severity
from netdiag.render._safe import clean, safe

STYLE = {
    Severity.OK: "green",
    Severity.INFO: "cyan",
    Severity.WARNING: "yellow",
    Severity.CRITICAL: "bold red",
}
MAX_ROWS = 15


def _scalar(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_scalar(v)}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(_scalar(v) for v in value) or "-"
    return str(value)


def _mapping_table(title: str, data: dict[str, Any]) -> Table:
    table = Table(title=safe(title), title_justify="left", show_header=False, box=None,
                  padding=(0, 2, 0, 0), min_width=min(len(title), 80))
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key, value in data.items():
        table.add_row(safe(key), safe(_scalar(value)))
    return table


def _rows_table(title: str, rows: list[dict[str, Any]], limit: int = MAX_ROWS) -> Table:
    columns: list[str] = []
    for row in rows:
        for key in row:
            if key not in columns:
                columns.append(key)
    table = Table(title=safe(title), title_justify="left", header_style="bold", box=None,
                  padding=(0, 2, 0, 0), min_width=min(len(title), 80))
    for col in columns:
        table.add_column(safe(str(col).replace("_", " ")), overflow="fold")
    for row in rows[:limit]:
        table.add_row(*(safe(_scalar(row.get(col))) for col in columns))
    if len(rows) > limit:
        table.caption = Text(f"… {len(rows) - limit} more (see --format json)")
    return table


def _section(console: Console, title: str, value: Any) -> None:
    heading = title.replace("_", " ")
    if isinstance(value, dict):
        console.print(_mapping_table(heading, value))
    elif isinstance(value, list):
        if not value:
            console.print(safe(f"{heading}: none", style="dim"))
        elif isinstance(value[0], dict):
            console.print(_rows_table(heading, value))
        else:
            console.print(safe(f"{heading}: {_scalar(value)}"))
    else:
        console.print(safe(f"{heading}: {_scalar(value)}"))
    console.print()


def _row_line(row: dict[str, Any]) -> str:
    return "  ".join(f"{k}={_scalar(v)}" for k, v in row.items())


def _finding(console: Console, f: Finding, explained: set[str]) -> None:
    head = Text()
    head.append(f"[{f.severity.label.upper()}] ", style=STYLE[f.severity])
    head.append(clean(f.title), style="bold")
    head.append(clean(f"  ({f.id}" + (f", netns {f.netns}" if f.netns else "") + ")"),
                style="dim")
    console.print(head)
    if f.severity is Severity.OK:
        return
    body: list[Text] = []
    scalars = {k: v for k, v in f.evidence.items() if not isinstance(v, (list, dict))}
    nested = {k: v for k, v in f.evidence.items() if isinstance(v, (list, dict)) and v}
    if scalars:
        body.append(Text("evidence: ", style="bold") + safe(_row_line(scalars)))
    for key, value in nested.items():
        label = key.replace("_", " ")
        if isinstance(value, list) and isinstance(value[0], dict):
            body.append(safe(f"{label}:", style="bold"))
            for row in value[:5]:
                body.append(safe("  - " + _row_line(row)))
            if len(value) > 5:
                body.append(Text(f"  … {len(value) - 5} more", style="dim"))
        else:
            body.append(safe(f"{label}: ", style="bold") + safe(_scalar(value)))
    if f.id in explained:  # the same rule in another namespace: said once above
        body.append(Text(f"why, do, rule: as above (netdiag explain {f.id})", style="dim"))
    else:
        explained.add(f.id)
        body.append(Text("why: ", style="bold") + Text(f.explanation))
        body.append(Text("do: ", style="bold") + Text(f.recommendation))
        body.append(Text("rule: ", style="bold") + Text(f.rule.source, style="dim"))
    for line in body:
        console.print(Padding(line, (0, 0, 0, 2), expand=False))
    console.print()


def render_table(report: Report, out: TextIO) -> None:
    # Width: the terminal's, or $COLUMNS, or 80 on a pipe (rich's default).
    console = Console(file=out, highlight=False, soft_wrap=False)
    host = report.host
    console.print(safe(f"netdiag · {host.hostname} · kernel {host.kernel} · netns {host.netns}",
                       style="dim"))
    console.print()
    if report.interim:
        console.print(safe(report.interim, style="bold"))
        for title, value in report.facts.items():
            _section(console, title, value)
        return
    if report.show_facts:
        for title, value in report.facts.items():
            _section(console, title, value)
    if report.findings:
        explained: set[str] = set()
        for f in sorted(report.findings, key=lambda f: -f.severity):
            _finding(console, f, explained)
    elif report.topic != "sysctl":
        console.print(Text("No findings: nothing wrong in what was checked.", style="green"))
        console.print()
    for err in report.errors:
        console.print(safe(f"! {err.collector}: {err.message}", style="yellow"))
    status = report.status.upper()
    style = {"OK": "green", "WARNING": "yellow", "CRITICAL": "bold red"}.get(status, "magenta")
    console.print(Text(f"status: {status}", style=style))


def render_rows(title: str, rows: list[dict[str, Any]], out: TextIO) -> None:
    """A plain table of rows (used by `probe list`)."""
    console = Console(file=out, highlight=False, soft_wrap=False)
    console.print(_rows_table(title, rows, limit=len(rows)))
