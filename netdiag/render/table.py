"""Terminal output with rich: facts as tables, then findings. Readable at 80 columns.

- A finding is its headline (severity, title, id), the evidence that matters and the action;
  the explanation and the documented rule come with --verbose (or `netdiag explain ID`).
- Tables fit the console width: identifiers and numbers are never split, prose wraps at word
  boundaries, and when even that does not fit, columns are dropped from the right with a note
  saying which. Rows beyond the limit are cut with "… N more" and how to see them.
- Colour only on a terminal, never with NO_COLOR set (https://no-color.org).
- Every string from the system goes through render._safe before rich sees it.
"""

from __future__ import annotations

import os
from typing import Any, TextIO

from rich.console import Console
from rich.table import Table
from rich.text import Text

from netdiag.model import Finding, Report, Severity
from netdiag.render._safe import SafeConsole, clean, safe

STYLE = {
    Severity.OK: "green",
    Severity.INFO: "cyan",
    Severity.WARNING: "yellow",
    Severity.CRITICAL: "bold red",
}
MAX_ROWS = 20  # rows per facts table without --verbose
EVIDENCE_ROWS = 3  # rows of each evidence list without --verbose
GAP = 2  # spaces between columns
MIN_PROSE = 12  # narrowest a wrapping column gets (unless its longest word is wider)
# A row's owner_lookup, when no owner was found: said in its command column, so that an owner
# nobody looked for never reads as "no owner" ("-").
OWNER_LOOKUP = {"not_looked_up": "not looked up (-P)", "not_found": "not found",
                "unavailable": "unknown (snapshot)"}
# (address key, port key, heading): shown as one "address:port" column.
ENDPOINTS = (("address", "port", "address"), ("local_address", "local_port", "local"),
             ("peer_address", "peer_port", "peer"), ("peer", "remote_port", "peer"))


def console_for(out: TextIO) -> Console:
    """A console on `out`: its width (the terminal's, $COLUMNS, or 80 on a pipe); styles only
    when `out` is a terminal and NO_COLOR is unset or empty (then none at all: no colour, no
    bold or dim); no trailing blanks on lines. Call .file.flush() when done."""
    plain = no_styles()
    return SafeConsole(file=_TrimmedLines(out), highlight=False, soft_wrap=False,
                       markup=False, emoji=False, no_color=plain,
                       **({"color_system": None} if plain else {}))


def no_styles() -> bool:
    """NO_COLOR set and not empty (https://no-color.org): rich's own no_color keeps bold and
    dim; netdiag then writes no escape sequence at all."""
    return bool(os.environ.get("NO_COLOR"))


def heading(key: str) -> str:
    return str(key).replace("_", " ")


def _scalar(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value.is_integer() or abs(value) >= 1e6:
            return f"{value:.0f}"
        return f"{value:g}"  # 6 significant digits: 0.99994 stays below 1
    if isinstance(value, dict):
        return ", ".join(f"{k}={_scalar(v)}" for k, v in value.items()) or "-"
    if isinstance(value, list):
        if not value:
            return "none"  # known to be empty ("-" is for unknown)
        if isinstance(value[0], dict):  # rows inside a row (a listener's threads): JSON has them
            if all(isinstance(v, dict) and "pid" in v for v in value):  # processes
                return ", ".join(f"{v['pid']} ({v.get('command') or '?'})" for v in value)
            return f"{len(value)} (in JSON)"
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            return " ".join(_scalar(v) for v in value)  # a vector: tcp_rmem, a port range
        if all(isinstance(v, list) and len(v) == 2 for v in value):  # ranges [first, last]
            return ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in value)
        return ", ".join(_scalar(v) for v in value)
    return str(value)


def _endpoint(address: Any, port: Any) -> str:
    if address is None:
        return "-"
    host = f"[{address}]" if ":" in str(address) else str(address)
    return host if port is None else f"{host}:{port}"


def _longest_word(text: str) -> int:
    return max((len(w) for w in text.split()), default=0)


def _wrap_heading(text: str, width: int) -> str:
    """A heading broken at spaces onto lines of at most `width` (words are never split)."""
    lines: list[str] = []
    for word in text.split():
        if lines and len(lines[-1]) + 1 + len(word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return "\n".join(lines)


class _Column:
    def __init__(self, title: str, cells: list[str]) -> None:
        self.title = title
        self.cells = cells
        cell_width = max((len(c) for c in cells), default=0)
        self.natural = max(cell_width, len(title))
        # Identifiers and numbers (no spaces) never wrap; their heading may.
        self.no_wrap = not any(" " in c for c in cells)
        if self.no_wrap:
            self.minimum = max(cell_width, _longest_word(title), 1)
        else:
            longest = max(_longest_word(title), max(_longest_word(c) for c in cells))
            self.minimum = max(longest, min(self.natural, MIN_PROSE))


def _fit(columns: list[_Column], width: int) -> tuple[list[_Column], list[int], list[str]]:
    """Columns that fit `width` (dropping from the right, never the first), their widths and
    the titles of the dropped ones."""
    kept = list(columns)
    dropped: list[str] = []
    while len(kept) > 1 and sum(c.minimum for c in kept) + GAP * (len(kept) - 1) > width:
        dropped.insert(0, kept.pop().title)
    widths = [c.minimum for c in kept]
    spare = width - sum(widths) - GAP * (len(kept) - 1)
    while spare > 0:  # grow the columns that want more, one character each in turn
        grew = False
        for i, c in enumerate(kept):
            if spare and widths[i] < c.natural:
                widths[i] += 1
                spare -= 1
                grew = True
        if not grew:
            break
    return kept, widths, dropped


def _table(title: str, columns: list[_Column], width: int, header: bool = True,
           key_style: str = "") -> tuple[Any, list[str]]:
    """The table under its title. The title is a line of its own at the console's width: as
    rich's table title it would wrap at the table's width ("summary:" / "by" / "family")."""
    kept, widths, dropped = _fit(columns, width)
    table = Table(show_header=header,
                  header_style="bold", box=None, padding=(0, GAP // 2), pad_edge=False)
    for i, (col, w) in enumerate(zip(kept, widths)):
        head = _wrap_heading(col.title, w) if col.no_wrap else col.title
        table.add_column(Text("\n".join(clean(line) for line in head.split("\n"))),
                         width=w, no_wrap=col.no_wrap, overflow="fold",
                         style=key_style if i == 0 else "")
    for r in range(len(kept[0].cells) if kept else 0):
        table.add_row(*(safe(col.cells[r]) for col in kept))
    if not title:
        return table, dropped
    from rich.console import Group

    return Group(safe(title, style="italic"), table), dropped


def _mapping_table(title: str, data: dict[str, Any], width: int) -> Any:
    keys = _Column("", [heading(k) for k in data])
    values = _Column("", [clean(_scalar(v)) for v in data.values()])
    values.no_wrap = False  # the value column is never dropped: it wraps instead
    values.minimum = min(values.minimum, max(width - keys.natural - GAP, 1))
    table, _ = _table(title, [keys, values], width, header=False, key_style="bold")
    return table


def _row_columns(rows: list[dict[str, Any]]) -> list[_Column]:
    keys: list[str] = []
    for row in rows:
        for key in row:
            if key not in keys:
                keys.append(key)
    columns: list[_Column] = []
    if "owner_lookup" in keys and "command" in keys:
        keys.remove("owner_lookup")
        rows = [_said_owner(row) for row in rows]
    merged = {addr: (port, title) for addr, port, title in ENDPOINTS
              if addr in keys and port in keys}
    skip = {port for port, _ in merged.values()}
    for key in keys:
        if key in skip:
            continue
        if key in merged:
            port, title = merged[key]
            cells = [clean(_endpoint(row.get(key), row.get(port))) for row in rows]
            columns.append(_Column(title, cells))
        else:
            columns.append(_Column(heading(key), [clean(_scalar(row.get(key))) for row in rows]))
    return columns


def _said_owner(row: dict[str, Any]) -> dict[str, Any]:
    why = OWNER_LOOKUP.get(row.get("owner_lookup"))
    if why is None or row.get("pid") is not None:
        return row
    return {**row, "pid": "", "command": why}


def _rows_table(title: str, rows: list[dict[str, Any]], width: int,
                limit: int | None = MAX_ROWS) -> tuple[Any, list[str]]:
    """The table and its notes: rows cut, columns dropped (printed under it at full width)."""
    shown = rows if limit is None else rows[:limit]
    table, dropped = _table(title, _row_columns(shown), width)
    notes = []
    if len(shown) < len(rows):
        notes.append(f"… {len(rows) - len(shown)} more rows (--verbose shows all; "
                     "--format json has every row)")
    if dropped:
        notes.append(f"columns not shown at {width} columns: {', '.join(dropped)} "
                     "(a wider terminal or COLUMNS=N shows them; --format json has them)")
    return table, notes


def _print_rows(console: Console, title: str, rows: list[dict[str, Any]],
                limit: int | None) -> None:
    table, notes = _rows_table(title, rows, console.width, limit)
    console.print(table)
    for note in notes:
        console.print(safe(note, style="dim"))


def _nested(value: Any) -> bool:
    return isinstance(value, dict) or (isinstance(value, list) and bool(value) and
                                       isinstance(value[0], dict))


def _section(console: Console, title: str, value: Any, limit: int | None) -> None:
    name = heading(title)
    width = console.width
    if isinstance(value, dict) and any(_nested(v) for v in value.values()):
        # An object holding tables (a probe's result): its scalars, then each table.
        flat = {k: v for k, v in value.items() if not _nested(v)}
        if flat:
            console.print(_mapping_table(name, flat, width))
            console.print()
        for key, sub in value.items():
            if _nested(sub):
                _section(console, f"{title}: {key}", sub, limit)
        return
    if isinstance(value, dict):
        if value:
            console.print(_mapping_table(name, value, width))
        else:
            console.print(safe(f"{name}: none", style="dim"))
    elif isinstance(value, list):
        if not value:
            console.print(safe(f"{name}: none", style="dim"))
        elif isinstance(value[0], dict):
            _print_rows(console, name, value, limit)
        else:
            console.print(safe(f"{name}: {_scalar(value)}"))
    else:
        console.print(safe(f"{name}: {_scalar(value)}"))
    console.print()


def _row_line(row: dict[str, Any]) -> str:
    """key=value pairs; an address and its port as one (local=10.0.0.1:5201)."""
    merged = {addr: (port, title) for addr, port, title in ENDPOINTS
              if addr in row and port in row}
    skip = {port for port, _ in merged.values()}
    parts = []
    for k, v in row.items():
        if k in merged:
            port, title = merged[k]
            parts.append(f"{title}={_endpoint(v, row.get(port))}")
        elif k not in skip:
            parts.append(f"{k}={_scalar(v)}")
    return "  ".join(parts)


def _hanging(label: str, text: Text, indent: int = 2, label_style: str = "bold") -> Table:
    """`label` then `text`, wrapped lines aligned under the text's first character."""
    grid = Table.grid(padding=0)
    grid.add_column(no_wrap=True)
    grid.add_column(overflow="fold")
    grid.add_row(Text(" " * indent) + Text(label, style=label_style), text)
    return grid


def _evidence(f: Finding, verbose: bool) -> list[Table]:
    """The evidence of a finding: its numbers (wrapped), then each list or mapping under its
    own label; without --verbose, lists are cut to their first rows."""
    body: list[Table] = []
    scalars = {k: v for k, v in f.evidence.items() if not isinstance(v, (list, dict))}
    nested = {k: v for k, v in f.evidence.items() if isinstance(v, (list, dict)) and v}
    if scalars:
        body.append(_hanging("evidence: ", safe(_row_line(scalars))))
    for key, value in nested.items():
        label = heading(key)
        if isinstance(value, list) and isinstance(value[0], dict):
            body.append(_hanging(f"{clean(label)}:", Text()))
            shown = value if verbose else value[:EVIDENCE_ROWS]
            for row in shown:
                body.append(_hanging("- ", safe(_row_line(row)), indent=4, label_style=""))
            if len(shown) < len(value):
                body.append(_hanging("", Text(f"… {len(value) - len(shown)} more (--verbose)",
                                              style="dim"), indent=4))
        else:
            body.append(_hanging(f"{clean(label)}: ", safe(_scalar(value))))
    return body


# `netdiag why` labels each cause by its verdict instead of its severity.
VERDICT_LABEL = {"confirmed": "CONFIRMED", "likely": "LIKELY", "ruled_out": "RULED OUT",
                 "cannot_tell": "CANNOT TELL"}


def _finding(console: Console, f: Finding, said: set[str], verbose: bool) -> None:
    head = Text(clean(f.title), style="bold")
    head.append(clean(f"  ({f.id}" + (f", netns {f.netns}" if f.netns else "") + ")"),
                style="dim")
    label = VERDICT_LABEL.get(f.verdict or "", f.severity.label.upper())
    console.print(_hanging(f"[{label}] ", head, indent=0, label_style=STYLE[f.severity]))
    if f.would_tell and f.verdict in ("likely", "cannot_tell"):
        console.print(_hanging("would tell: ", Text(clean(f.would_tell))))
    if f.severity is Severity.OK:
        if f.would_tell and f.verdict == "cannot_tell":
            console.print()
        return
    body = _evidence(f, verbose)
    if f.id in said:  # the same rule in another namespace: said once above
        body.append(_hanging("do: ", Text("as above", style="dim")))
    else:
        said.add(f.id)
        if verbose:
            body.append(_hanging("why: ", Text(clean(f.explanation))))
        body.append(_hanging("do: ", Text(clean(f.recommendation))))
        if verbose:
            body.append(_hanging("rule: ", Text(clean(f.rule.text))))
            body.append(_hanging("source: ", Text(clean(f.rule.source), style="dim")))
    for part in body:
        console.print(part)
    console.print()


class _TrimmedLines:
    """A stream wrapper that drops the spaces rich pads lines with (a table cell, a wrapped
    paragraph), so that copied output and diffs carry no trailing blanks."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._partial = ""

    def write(self, text: str) -> int:
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        for line in lines:
            self._out.write(line.rstrip(" ") + "\n")
        return len(text)

    def flush(self) -> None:
        if self._partial:
            self._out.write(self._partial)
            self._partial = ""
        self._out.flush()

    def __getattr__(self, name: str) -> Any:  # isatty, fileno, encoding: the real stream's
        return getattr(self._out, name)


def render_table(report: Report, out: TextIO, verbose: bool = False) -> None:
    console = console_for(out)
    host = report.host
    console.print(safe(f"netdiag · {host.hostname} · kernel {host.kernel} · netns {host.netns}",
                       style="dim"))
    console.print()
    # `sysctl` is a reference list: always whole.
    limit = None if verbose or report.topic == "sysctl" else MAX_ROWS
    if report.interim:
        console.print(safe(report.interim, style="bold"))
        for title, value in report.facts.items():
            _section(console, title, value, limit)
        console.file.flush()
        return
    window = report.facts.get("probe_window") if report.topic == "check" else None
    if isinstance(window, dict):
        console.print(safe(_window_line(window),
                           style="yellow" if window.get("interrupted") else "dim"))
        console.print()
    if report.topic == "why":
        _why_heading(console, report.facts)
    elif report.show_facts:
        for title, value in report.facts.items():
            _section(console, title, value, limit)
    if report.findings:
        said: set[str] = set()
        # Causes keep the order `why` ranked them in; findings go worst first.
        ordered = report.findings if report.topic == "why" else \
            sorted(report.findings, key=lambda f: -f.severity)
        for f in ordered:
            _finding(console, f, said, verbose)
        if not verbose and any(f.severity > Severity.OK for f in report.findings):
            console.print(Text("Why, and the documented rule: --verbose, or netdiag explain "
                               "ID.", style="dim"))
    elif report.topic != "sysctl" and report.judged:
        console.print(Text("No findings: nothing wrong in what was checked.", style="green"))
    if report.not_judged and report.errors:
        shown = ", ".join(report.not_judged[:6])
        more = f" and {len(report.not_judged) - 6} more" if len(report.not_judged) > 6 else ""
        console.print(safe(f"not judged: {shown}{more} (the errors say why)", style="yellow"))
    for err in report.errors:  # wrapped lines under the message, not under the "!"
        console.print(_hanging("! ", safe(f"{err.collector}: {err.message}", style="yellow"),
                               indent=0, label_style="yellow"))
    status = report.status.upper()
    style = {"OK": "green", "WARNING": "yellow", "CRITICAL": "bold red"}.get(status, "magenta")
    console.print(Text(f"status: {status}", style=style))
    console.file.flush()


def _window_line(window: dict[str, Any]) -> str:
    """check --probe-seconds: the probes' window, and whether a signal cut it short."""
    asked = window.get("asked_seconds")
    probes = ", ".join(window.get("probes") or [])
    if window.get("interrupted"):
        of = f" of the {asked:g} s asked" if asked is not None else ""
        return (f"probe window interrupted (Ctrl-C or SIGTERM): it lasted "
                f"{window.get('seconds', 0):g} s{of}; probe findings and rates cover only "
                f"that ({probes})")
    return f"probe window: {window.get('seconds', 0):g} s ({probes})"


def _why_heading(console: Console, facts: dict[str, Any]) -> None:
    """`netdiag why`: what was asked, where the evidence comes from; the causes follow."""
    sym, scope = facts.get("symptom") or {}, facts.get("scope") or {}
    where = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in scope.items()
                      if v is not None) or "the whole namespace"
    window = facts.get("evidence_window")
    probes = facts.get("probes") or []
    counts = facts.get("verdicts") or {}
    lines = [
        f"{sym.get('name')}: {sym.get('title')} — returned by {sym.get('returned_by')}",
        f"evidence: {where}; counters "
        + (f"judged over the {window}" if window else
           "since boot only (--interval"
           + (" or --probe-seconds" if sym.get("probes", True) else "")
           + " judge them over time)")
        + (f"; probes: {', '.join(probes)}" if probes else "; no probe ran"),
        ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in counts.items()),
    ]
    seen = facts.get("errors_seen") or []
    if seen:
        said = "; ".join(f"{r['error']} ×{r['count']} from {r['call']}() in pid {r['pid']} "
                         f"({r['command']})" for r in seen[:3])
        lines.append(f"applications were told (errors probe): {said}")
    if facts.get("next_step"):
        lines.append(facts["next_step"])
    for line in lines:
        console.print(_hanging("", safe(line)))
    console.print()


def render_rows(title: str, rows: list[dict[str, Any]], out: TextIO) -> None:
    """A plain table of rows (used by `probe list`): every row, at the console's width."""
    console = console_for(out)
    _print_rows(console, title, rows, None)
    console.file.flush()
