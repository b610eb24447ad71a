"""Render `netdiag history` as a compact terminal table (JSON goes through json.dump)."""

from __future__ import annotations

from typing import Any, TextIO

from rich.table import Table

from netdiag.render._safe import safe
from netdiag.render.table import console_for


def render_history(data: dict[str, Any], out: TextIO) -> None:
    console = console_for(out)
    runs = data["runs"]
    if not runs:
        console.print(safe(f"no runs stored for netns {data['netns']!r} "
                           f"(known: {', '.join(data['namespaces']) or 'none'})"))
        console.file.flush()
        return
    table = Table(title=safe(f"netdiag history · netns {data['netns']} · {len(runs)} runs "
                             "(counters: change since the run before)"),
                  title_justify="left", box=None, header_style="bold", padding=(0, 1))
    short = {"sockets": "socks", "TIME_WAIT": "TW", "CLOSE_WAIT": "CW",
             "ListenOverflows": "LstOvf", "TCPTimeWaitOverflow": "TWOvf",
             "RetransSegs": "Retr", "ActiveOpens": "Opens", "TCPRcvQDrop": "RQDrop"}
    columns = [k for k in runs[0] if k not in ("reset", "seconds", "netns")]
    if any(r.get("reset") for r in runs):  # counters restarted: say where, and why
        columns = columns[:2] + ["reset"] + columns[2:]
    for col in columns:
        table.add_column(short.get(col, col), justify="left" if col in ("time", "status",
                                                                         "reset") else "right")
    one_day = len({r["time"][:10] for r in runs}) == 1
    marks = {"reboot": "↺ boot", "namespace recreated": "↺ netns", "counter went down": "↺ ctr",
             "clock went back": "↺ clock"}
    for r in runs:
        cells = ["" if c == "reset" and not r.get(c) else "-" if r.get(c) is None else str(r[c])
                 for c in columns]
        stamp = r["time"].rstrip("Z")
        cells[0] = stamp[11:] if one_day else stamp[5:].replace("T", " ")
        if "reset" in columns and r.get("reset"):
            cells[columns.index("reset")] = marks.get(r["reset"], "↺")
        table.add_row(*(safe(c) for c in cells))
    console.print(table)
    console.print(safe(("time is UTC" + (f" ({runs[0]['time'][:10]})" if one_day else "")) +
                       "; LstOvf = ListenOverflows, TWOvf = TCPTimeWaitOverflow, Retr = "
                       "RetransSegs, Opens = ActiveOpens, RQDrop = TCPRcvQDrop"))
    if "reset" in columns:
        console.print(safe("↺ counters restarted from zero: boot = host rebooted, netns = "
                           "namespace recreated, ctr = a counter went down, clock = the clock "
                           "went back; the values there count since then"))
    renamed = sorted({r["netns"] for r in runs if r.get("netns")})
    if renamed:
        console.print(safe(f"earlier runs of this namespace were labelled: "
                           f"{', '.join(renamed)}"))
    console.print()
    width = max(len(k) for k in data["sparklines"])
    for label, line in data["sparklines"].items():
        console.print(safe(f"{label:<{width}}  {line}"))
    console.file.flush()
