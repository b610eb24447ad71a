"""What each command shows as facts: plain JSON-ready sections built from Facts.

A section is either a mapping (rendered as a two-column table) or a list of rows (rendered as
a table with one column per key). No judgement here: findings come from netdiag.rules.
"""

from __future__ import annotations

from typing import Any

from netdiag.facts import Census, Facts, ProcessFacts
from netdiag.sysctls import SYSCTLS


def _states(items, key_index: int = 0, top: int = 20) -> list[dict[str, Any]]:
    """Fold ((key, state), n) items into rows {key, total, states} sorted by total."""
    rows: dict[Any, dict[str, Any]] = {}
    for key, n in items:
        k, state = key[key_index], key[-1]
        row = rows.setdefault(k, {"total": 0, "states": {}})
        row["total"] += n
        row["states"][state] = row["states"].get(state, 0) + n
    ordered = sorted(rows.items(), key=lambda kv: -kv[1]["total"])[:top]
    return [{"key": k, "total": v["total"],
             "states": " ".join(f"{s}={c}" for s, c in sorted(v["states"].items(),
                                                              key=lambda sc: -sc[1]))}
            for k, v in ordered]


def _owner(procs: ProcessFacts | None, inode: int) -> dict[str, Any]:
    """pid and command of a socket's owner, when the run attributed it (else nothing)."""
    if procs is None:
        return {}
    pid = procs.owners.get(inode)
    if pid is None:
        return {}
    info = procs.processes.get(pid)
    return {"pid": pid, "command": info.command if info else ""}


def census_summary(census: Census) -> dict[str, Any]:
    out: dict[str, Any] = {"source": census.source, "total": census.total}
    out.update({f"sockets_{k}": v for k, v in census.by_family.items()})
    out.update(census.by_state)
    if census.skipped_lines:
        out["skipped_malformed_lines"] = census.skipped_lines
    return out


def sockets_view(facts: Facts, top: int) -> dict[str, Any]:
    census = facts.census
    if census is None:
        return {}
    out: dict[str, Any] = {"summary": census_summary(census)}
    out["by_family_and_state"] = census.by_family_state
    if census.by_local_port is not None:
        out["by_local_port"] = [
            {"local_port": r["key"], "sockets": r["total"], "states": r["states"]}
            for r in _states(census.by_local_port.items, 0, top)
        ]
    if census.by_peer is not None:
        out["by_peer"] = [
            {"peer": r["key"], "sockets": r["total"], "states": r["states"]}
            for r in _states(census.by_peer.items, 0, top)
        ]
    procs = facts.processes
    if census.by_process is not None and procs is not None:
        rows = []
        for r in _states(census.by_process.items, 0, top):
            info = procs.processes.get(r["key"])
            rows.append({"pid": r["key"], "command": info.command if info else "",
                         "sockets": r["total"], "states": r["states"]})
        out["by_process"] = rows
    out["listeners"] = [
        {"address": lst.address, "port": lst.port, "accept_queue": lst.accept_queue,
         "backlog": lst.backlog, **_owner(procs, lst.inode)}
        for lst in census.listeners[: top * 2]
    ]
    approximate = [name for name, tc in (("by_local_port", census.by_local_port),
                                         ("by_peer", census.by_peer),
                                         ("by_process", census.by_process))
                   if tc is not None and tc.approximate]
    if approximate:
        out["summary"]["approximate_groupings"] = ", ".join(approximate)
    return out


def timewait_view(facts: Facts) -> dict[str, Any]:
    census, sysctl = facts.census, facts.sysctl
    summary: dict[str, Any] = {}
    if census is not None:
        summary["TIME_WAIT (socket table)"] = census.by_state.get("TIME_WAIT", 0)
        for role, n in census.timewait_roles.items():
            summary[f"closed first by this host as {role}" if role != "other"
                    else "closer not classified"] = n
    if facts.sockstat is not None:
        summary["tw (sockstat, incl. FIN_WAIT2 minisockets)"] = facts.sockstat.get("TCP", "tw")
    if sysctl is not None:
        for key in ("net.ipv4.tcp_max_tw_buckets", "net.ipv4.tcp_tw_reuse",
                    "net.ipv4.tcp_tw_reuse_delay", "net.ipv4.tcp_timestamps",
                    "net.ipv4.tcp_fin_timeout"):
            if key in sysctl.values:
                summary[key.rsplit(".", 1)[1]] = sysctl.values[key]
    if facts.counters is not None:
        summary["TcpExt.TCPTimeWaitOverflow"] = facts.counters.get("TcpExt",
                                                                   "TCPTimeWaitOverflow")
    out: dict[str, Any] = {"summary": summary}
    if census is not None and census.timewait_by_destination is not None:
        out["as_client_by_destination"] = [
            {"source": s, "destination": d, "port": p, "time_wait": n}
            for (s, d, p), n in census.timewait_by_destination.items
        ]
    if census is not None and census.timewait_server_side is not None:
        out["as_server_by_local_port"] = [
            {"local_port": lp, "peer": peer, "time_wait": n}
            for (lp, peer), n in census.timewait_server_side.items
        ]
    return out


def closewait_view(facts: Facts) -> dict[str, Any]:
    census, procs = facts.census, facts.processes
    if census is None:
        return {}
    out: dict[str, Any] = {"summary": {
        "CLOSE_WAIT": census.by_state.get("CLOSE_WAIT", 0),
        "end of file never read (Recv-Q = 1)": census.close_wait_eof_unread,
        "data unread (Recv-Q > 1)": census.close_wait_unread,
    }}
    groups: dict[tuple[Any, int], int] = {}
    for inode, lport in census.close_wait_inodes.items():
        pid = procs.owners.get(inode) if procs is not None else None
        groups[(pid, lport)] = groups.get((pid, lport), 0) + 1
    rows = []
    for (pid, lport), n in sorted(groups.items(), key=lambda kv: -kv[1])[:20]:
        info = procs.processes.get(pid) if (procs is not None and pid is not None) else None
        rows.append({"pid": pid, "command": info.command if info else "",
                     "local_port": lport, "close_wait": n})
    out["by_process_and_port"] = rows
    return out


def ports_view(facts: Facts) -> dict[str, Any]:
    census, sysctl = facts.census, facts.sysctl
    out: dict[str, Any] = {}
    if sysctl is not None:
        out["summary"] = {
            "ip_local_port_range": sysctl.values.get("net.ipv4.ip_local_port_range"),
            "ip_local_reserved_ports": sysctl.values.get("net.ipv4.ip_local_reserved_ports")
            or "(none)",
            "tcp_tw_reuse": sysctl.values.get("net.ipv4.tcp_tw_reuse"),
        }
    if census is not None and census.by_destination is not None:
        tw = dict(census.timewait_by_destination.items) \
            if census.timewait_by_destination else {}
        out["outgoing_by_destination"] = [
            {"source": s, "destination": d, "port": p, "in_use": n,
             "time_wait": tw.get((s, d, p), 0)}
            for (s, d, p), n in census.by_destination.items
        ]
    return out


def sysctl_view(facts: Facts) -> dict[str, Any]:
    values = facts.sysctl.values if facts.sysctl else {}
    return {"sysctls": [
        {"key": s.key, "value": values.get(s.key, "(absent)"), "default": s.default,
         "scope": s.scope, "rules": ", ".join(s.rules) or "-"}
        for s in SYSCTLS
    ]}


def check_view(facts: Facts) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if facts.census is not None:
        out["sockets"] = census_summary(facts.census)
    return out
