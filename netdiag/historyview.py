"""`netdiag history`: how the key counters and socket counts moved over the stored runs."""

from __future__ import annotations

import datetime
from typing import Any

from netdiag.state import Run, Store

# Series shown: (label, kind, source). "delta" series are counters shown per interval.
SERIES = (
    ("sockets", "gauge", lambda r: sum(r.sockets.values()) if r.sockets is not None else None),
    ("TIME_WAIT", "gauge", lambda r: r.sockets.get("TIME_WAIT", 0) if r.sockets is not None
     else None),
    ("CLOSE_WAIT", "gauge", lambda r: r.sockets.get("CLOSE_WAIT", 0) if r.sockets is not None
     else None),
    ("ListenOverflows", "delta", lambda r: r.counters.get("TcpExt", {}).get("ListenOverflows")),
    ("TCPTimeWaitOverflow", "delta",
     lambda r: r.counters.get("TcpExt", {}).get("TCPTimeWaitOverflow")),
    ("RetransSegs", "delta", lambda r: r.counters.get("Tcp", {}).get("RetransSegs")),
    ("ActiveOpens", "delta", lambda r: r.counters.get("Tcp", {}).get("ActiveOpens")),
    ("TCPRcvQDrop", "delta", lambda r: r.counters.get("TcpExt", {}).get("TCPRcvQDrop")),
)
BARS = "▁▂▃▄▅▆▇█"


def sparkline(values: list[float | None]) -> str:
    nums = [v for v in values if v is not None]
    if not nums:
        return ""
    lo, hi = min(nums), max(nums)
    span = hi - lo or 1
    return "".join(" " if v is None else BARS[int((v - lo) / span * (len(BARS) - 1))]
                   for v in values)


def _reset(prev: Run, cur: Run) -> str | None:
    from netdiag.state import Identity, reset_reason

    why = reset_reason(prev.boot_id, prev.netns_inode, prev.netns_cookie, prev.taken_at,
                       Identity(cur.netns_inode, cur.netns_cookie, cur.boot_id), cur.taken_at)
    if why is None:
        return None
    return ("reboot" if "rebooted" in why else "namespace recreated" if "recreated" in why
            else "clock went back")


def history_data(store: Store, netns: str, last: int) -> dict[str, Any]:
    series = store.series_for(netns)
    runs = store.runs(series, last)
    rows = []
    for i, run in enumerate(runs):
        row: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(run.taken_at, datetime.timezone.utc)
            .strftime("%Y-%m-%dT%H:%M:%SZ"),
            "status": run.status,
        }
        prev = runs[i - 1] if i else None
        reset = _reset(prev, run) if prev else None
        row["seconds"] = round(run.taken_at - prev.taken_at, 3) if prev and not reset else None
        for label, kind, get in SERIES:
            value = get(run)
            if kind == "gauge":
                row[label] = value
            elif prev is None or value is None:
                row[label] = None
            else:
                before = get(prev)
                if reset or before is None or value < before:
                    row[label] = value  # counted since the reset
                    reset = reset or "counter went down"
                else:
                    row[label] = value - before
        if reset:
            row["reset"] = reset
        if run.netns != netns:
            row["netns"] = run.netns  # the namespace had another label then
        rows.append(row)
    lines = {label: sparkline([r[label] for r in rows]) for label, _, _ in SERIES}
    from netdiag.render.json import SCHEMA

    return {"schema": SCHEMA, "netns": netns, "runs": rows, "sparklines": lines,
            "namespaces": store.namespaces(), "errors": [
                {"collector": "history", "message": m} for m in store.notes]}


def show_history(state_dir: str, netns: str, last: int, fmt: str, out) -> None:
    """`netdiag history`: the stored runs of one namespace, as a table or JSON."""
    from netdiag import state
    from netdiag.errors import UsageError

    if fmt not in ("table", "json"):
        raise UsageError("history supports --format table or json")
    path = state.resolve(state_dir)
    if not (path / state.FILE).exists():
        raise UsageError(f"no history in {path} (runs store it with --state-dir)")
    # Read-only: showing the history never changes it (and works on a read-only store).
    store = state.Store(path, read_only=True)
    try:
        data = history_data(store, netns, last)
    finally:
        store.close()
    import sys

    for err in data["errors"]:
        sys.stderr.write(f"netdiag: {err['message']}\n")
    if fmt == "json":
        import json

        json.dump(data, out, indent=2)
        out.write("\n")
    else:
        from netdiag.render.history import render_history

        render_history(data, out)
