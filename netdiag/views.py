"""What each command shows as facts: plain JSON-ready sections built from Facts.

A section is either a mapping (rendered as a two-column table) or a list of rows (rendered as
a table with one column per key). No judgement here: findings come from netdiag.rules.
"""

from __future__ import annotations

from typing import Any

from netdiag.facts import Census, Facts, ProcessFacts, close_wait_groups
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
    groups = close_wait_groups(census, procs)
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


def _sysctls(facts: Facts, keys: list[str]) -> dict[str, Any]:
    values = facts.sysctl.values if facts.sysctl else {}
    return {k.rsplit(".", 1)[1]: values.get(k, "(absent)") for k in keys}


def backlog_view(facts: Facts) -> dict[str, Any]:
    out: dict[str, Any] = {"settings": _sysctls(facts, [
        "net.core.somaxconn", "net.ipv4.tcp_max_syn_backlog", "net.ipv4.tcp_syncookies",
        "net.ipv4.tcp_abort_on_overflow", "net.ipv4.tcp_syn_retries",
        "net.ipv4.tcp_synack_retries"])}
    if facts.counters is not None:
        out["counters"] = {f"TcpExt.{n}": facts.counters.get("TcpExt", n) for n in (
            "ListenOverflows", "ListenDrops", "SyncookiesSent", "SyncookiesRecv",
            "SyncookiesFailed", "TCPReqQFullDrop", "TCPReqQFullDoCookies")}
    census, procs = facts.census, facts.processes
    if census is not None:
        syn_recv = {}
        if census.by_local_port is not None:
            for (port, state), n in census.by_local_port.items:
                if state == "SYN_RECV":
                    syn_recv[port] = syn_recv.get(port, 0) + n
        out["listeners"] = [
            {"address": lst.address, "port": lst.port, "accept_queue": lst.accept_queue,
             "limit": lst.backlog, "syn_recv": syn_recv.get(lst.port, 0),
             **_owner(procs, lst.inode)}
            for lst in census.listeners]
    if facts.listener_samples is not None:
        out["sampled_during_interval"] = [
            {"address": s.address, "port": s.port, "limit": s.backlog,
             "max_queue": s.max_queue, "at_limit": f"{s.samples_at_limit}/{s.samples}"}
            for s in facts.listener_samples]
    return out


def keepalive_view(facts: Facts) -> dict[str, Any]:
    out: dict[str, Any] = {"settings": _sysctls(facts, [
        "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_keepalive_intvl",
        "net.ipv4.tcp_keepalive_probes", "net.ipv4.tcp_retries2"])}
    d = facts.details
    if d is not None:
        out["established_connections"] = {
            "total": d.established,
            "keepalive timer armed (SO_KEEPALIVE on)": d.keepalive_timer,
            "no timer (SO_KEEPALIVE off)": d.no_timer,
            "retransmit/persist timer (keepalive not visible)": d.retransmit_timer,
            "idle > 10 min without keepalive": d.long_idle_without_keepalive,
            "idle > 10 min with keepalive": d.long_idle_with_keepalive,
        }
        out["longest_idle_without_keepalive"] = [
            {"local": f"{c.source}:{c.sport}", "peer": f"{c.destination}:{c.dport}",
             "idle_s": c.idle_ms // 1000, **_owner(facts.processes, c.inode)}
            for c in d.idle_without_keepalive]
    return out


def buffers_view(facts: Facts) -> dict[str, Any]:
    out: dict[str, Any] = {"settings": _sysctls(facts, [
        "net.ipv4.tcp_rmem", "net.ipv4.tcp_wmem", "net.core.rmem_max", "net.core.wmem_max",
        "net.core.rmem_default", "net.ipv4.tcp_mem", "net.ipv4.tcp_moderate_rcvbuf"])}
    if facts.sockstat is not None:
        out["settings"]["TCP mem in use (pages)"] = facts.sockstat.get("TCP", "mem")
    if facts.counters is not None:
        c = facts.counters
        out["counters"] = {f"TcpExt.{n}": c.get("TcpExt", n) for n in (
            "TCPRcvQDrop", "PruneCalled", "RcvPruned", "OfoPruned", "TCPRcvCollapsed",
            "TCPBacklogDrop", "TCPZeroWindowDrop", "TCPMemoryPressures")}
        for proto in ("Udp", "Udp6"):
            for n in ("RcvbufErrors", "SndbufErrors"):
                out["counters"][f"{proto}.{n}"] = c.get(proto, n)
    d = facts.details
    if d is not None:
        out["connections_by_bdp"] = [
            {"peer": f"{c.destination}:{c.dport}", "rtt_ms": round(c.info.get("rtt", 0) / 1000, 2),
             "rate_mbit": round(c.info.get("delivery_rate", 0) * 8 / 1e6, 1),
             "bdp": c.bdp_bytes, "rcvbuf": c.skmem.get("rcvbuf"), "sndbuf": c.skmem.get("sndbuf"),
             "rcv_space": c.info.get("rcv_space")}
            for c in d.largest_bdp]
        if d.socket_drops:
            out["sockets_with_drops"] = [
                {"local": f"{c.source}:{c.sport}", "peer": f"{c.destination}:{c.dport}",
                 "drops": c.skmem.get("drops"), "rcvbuf": c.skmem.get("rcvbuf")}
                for c in d.socket_drops]
    return out


def softirq_view(facts: Facts) -> dict[str, Any]:
    out: dict[str, Any] = {"settings": _sysctls(facts, [
        "net.core.netdev_max_backlog", "net.core.netdev_budget", "net.core.netdev_budget_usecs",
        "net.core.dev_weight"])}
    rows: dict[int, dict[str, Any]] = {}
    if facts.softnet is not None:
        for c in facts.softnet.cpus:
            rows[c.cpu] = {"cpu": c.cpu, "processed": c.processed, "dropped": c.dropped,
                           "squeezed": c.time_squeeze}
            if c.backlog_len is not None:
                rows[c.cpu]["backlog"] = c.backlog_len
    if facts.softirqs is not None:
        for cpu, n in enumerate(facts.softirqs.net_rx):
            rows.setdefault(cpu, {"cpu": cpu})["NET_RX"] = n
        for cpu, n in enumerate(facts.softirqs.net_tx):
            rows.setdefault(cpu, {"cpu": cpu})["NET_TX"] = n
    if facts.ksoftirqd:
        for cpu, secs in facts.ksoftirqd.items():
            rows.setdefault(cpu, {"cpu": cpu})["ksoftirqd_s"] = secs
    out["per_cpu"] = [rows[k] for k in sorted(rows)]
    if facts.links is not None:
        out["interfaces"] = [
            {"name": lk.name, "rx_packets": lk.rx_packets, "rx_dropped": lk.rx_dropped,
             "rx_missed": lk.rx_missed, "rx_fifo": lk.rx_fifo, "tx_dropped": lk.tx_dropped,
             "ring_rx": f"{lk.rx_ring}/{lk.rx_ring_max}" if lk.rx_ring is not None else "-",
             "rps": lk.rps_cpus or "-"}
            for lk in facts.links]
    return out


def _hist_text(rows: list[dict[str, Any]], unit: str) -> str:
    return " ".join(f"{r['from']}-{r['to']}{unit}:{r['count']}" for r in rows) or "-"


def probe_view(facts: Facts) -> dict[str, Any]:
    """Probe results as sections: one per probe and key; histograms as one line."""
    out: dict[str, Any] = {}
    for name, result in (facts.probes or {}).items():
        scalars = {}
        for key, value in result.items():
            if isinstance(value, list) and value and isinstance(value[0], dict):
                rows = []
                for row in value:
                    row = dict(row)
                    for k in ("latency_us", "runtime_us"):
                        if k in row:
                            row[k] = _hist_text(row[k], "us")
                    if "processes" in row:
                        row["processes"] = ", ".join(f"{p['pid']} {p['command']}"
                                                     for p in row["processes"])
                    rows.append(row)
                out[f"{name}: {key}"] = rows
            elif key == "close_wait_left_ms":
                scalars[key] = _hist_text(value, "ms")
            elif isinstance(value, dict):
                out[f"{name}: {key}"] = value or {"(none)": ""}
            else:
                scalars[key] = value
        out[f"{name}: summary"] = scalars
    return out
