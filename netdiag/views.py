"""What each command shows as facts: typed, JSON-ready sections built from Facts.

A section is either a mapping (rendered as a two-column table) or a list of rows (rendered as
a table with one column per key). No judgement here: findings come from netdiag.rules.

Every value is typed (numbers, booleans, lists, objects; None for absent) under a stable
snake_case key; the table renderer turns the keys into headings. The only maps keyed by data
are `by_state`/`states` (TCP state names as the kernel spells them), `counters` (nstat names,
"TcpExt.ListenOverflows") and `by_family_and_state`. docs/schema/netdiag.schema.json
describes every section.
"""

from __future__ import annotations

from typing import Any

from netdiag.facts import (
    Census,
    Facts,
    ProcessFacts,
    close_wait_groups,
    reuseport_groups,
    sysctl_value,
)
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
             "states": dict(sorted(v["states"].items(), key=lambda sc: -sc[1]))}
            for k, v in ordered]


def _owner(facts: Facts, inode: int) -> dict[str, Any]:
    """pid and command of a socket's owner, and `owner_lookup`: "found", "not_found" (searched
    for; no readable process holds it), "not_looked_up" (this run did not search: `sockets
    --processes` does) or "unavailable" (a snapshot has no processes). pid and command are
    null unless found."""
    procs = facts.processes
    lookup = _lookup(facts, inode)
    pid = procs.owners.get(inode) if procs is not None else None
    if pid is None:
        return {"pid": None, "command": None, "owner_lookup": lookup}
    info = procs.processes.get(pid)
    return {"pid": pid, "command": info.command if info else None, "owner_lookup": lookup}


def _lookup(facts: Facts, inode: int) -> str:
    procs = facts.processes
    if procs is None:
        return "unavailable" if facts.netns == "snapshot" else "not_looked_up"
    return procs.owner_lookup(inode)


def census_summary(census: Census) -> dict[str, Any]:
    approximate = [name for name, tc in (("by_local_port", census.by_local_port),
                                         ("by_peer", census.by_peer),
                                         ("by_process", census.by_process))
                   if tc is not None and tc.approximate]
    return {"source": census.source, "total": census.total,
            "by_family": dict(census.by_family), "by_state": dict(census.by_state),
            "skipped_malformed_lines": census.skipped_lines,
            "approximate_groupings": approximate}


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
            rows.append({"pid": r["key"], "command": info.command if info else None,
                         "sockets": r["total"], "states": r["states"]})
        out["by_process"] = rows
    out["listeners"] = [
        {"address": lst.address, "port": lst.port, "accept_queue": lst.accept_queue,
         "backlog": lst.backlog, **_owner(facts, lst.inode)}
        for lst in census.listeners[: top * 2]
    ]
    out["listeners_total"] = len(census.listeners)
    return out


def timewait_view(facts: Facts) -> dict[str, Any]:
    census = facts.census
    roles = census.timewait_roles if census is not None else {}
    summary: dict[str, Any] = {
        "time_wait": census.by_state.get("TIME_WAIT", 0) if census is not None else None,
        "closed_first_as_client": roles.get("client"),
        "closed_first_as_server": roles.get("server"),
        "closer_not_classified": roles.get("other"),
        # sockstat's tw counts FIN_WAIT2 minisockets too
        "sockstat_tw": facts.sockstat.get("TCP", "tw") if facts.sockstat is not None else None,
    }
    summary.update(_sysctls(facts, [
        "net.ipv4.tcp_max_tw_buckets", "net.ipv4.tcp_tw_reuse", "net.ipv4.tcp_tw_reuse_delay",
        "net.ipv4.tcp_timestamps", "net.ipv4.tcp_fin_timeout"]))
    out: dict[str, Any] = {"summary": summary}
    if facts.counters is not None:
        # TW/TWKilled count sockets entering TIME_WAIT, TWRecycled those connect() took
        # over: with --interval or --state-dir the findings turn them into rates.
        out["counters"] = _counters(facts, [
            ("TcpExt", "TCPTimeWaitOverflow"), ("TcpExt", "TW"), ("TcpExt", "TWKilled"),
            ("TcpExt", "TWRecycled"), ("Tcp", "ActiveOpens"), ("Tcp", "PassiveOpens")])
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
        "close_wait": census.by_state.get("CLOSE_WAIT", 0),
        "eof_not_read": census.close_wait_eof_unread,  # Recv-Q = 1: the FIN itself
        "with_unread_data": census.close_wait_unread,  # Recv-Q > 1
        # No inode: still in a listener's accept queue, held by no process.
        "in_accept_queue": sum(census.close_wait_no_inode.values()),
    }}
    groups = close_wait_groups(census, procs)
    rows = []
    for (holders, lport), n in sorted(groups.items(), key=lambda kv: -kv[1])[:20]:
        pid = holders[0] if holders else None
        info = procs.processes.get(pid) if (procs is not None and pid is not None) else None
        # Every process holding the sockets (fds shared after fork, inherited across exec).
        # null other_holders: nobody looked (a snapshot), not "no other holder"
        searched = procs is not None
        rows.append({"pid": pid, "command": info.command if info else None,
                     "owner_lookup": "found" if pid is not None else
                     ("not_found" if searched else _lookup(facts, 0)),
                     "other_holders": [_holder(procs, h) for h in holders[1:8]]
                     if searched else None,
                     "local_port": lport, "close_wait": n})
    out["by_process_and_port"] = rows
    out["in_accept_queue_by_port"] = [
        {"local_port": p, "close_wait": n}
        for p, n in sorted(census.close_wait_no_inode.items(), key=lambda kv: -kv[1])[:20]]
    return out


def ports_view(facts: Facts) -> dict[str, Any]:
    census, sysctl = facts.census, facts.sysctl
    out: dict[str, Any] = {}
    if sysctl is not None:
        out["summary"] = _sysctls(facts, ["net.ipv4.ip_local_port_range",
                                          "net.ipv4.ip_local_reserved_ports",
                                          "net.ipv4.tcp_tw_reuse", "net.ipv4.tcp_tw_reuse_delay",
                                          "net.ipv4.tcp_timestamps"])
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
    host_wide = set(facts.sysctl.host_wide) if facts.sysctl else set()
    unreadable = set(facts.sysctl.unreadable) if facts.sysctl else set()

    def read_from(key: str) -> str:
        if key in unreadable:  # present but not read: the errors say why
            return "unreadable"
        if key not in values:
            return "absent"
        return "initial namespace (host-wide)" if key in host_wide else "this namespace"

    return {"sysctls": [
        {"key": s.key, "value": sysctl_value(s.key, values.get(s.key)),
         "default": s.default, "scope": s.scope, "read_from": read_from(s.key),
         "rules": list(s.rules)}
        for s in SYSCTLS
    ]}


def check_view(facts: Facts, probe_seconds: float | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if facts.census is not None:
        out["sockets"] = census_summary(facts.census)
    window = probe_window(facts, probe_seconds)
    if window is not None:
        out["probe_window"] = window
    return out


def probe_window(facts: Facts, asked: float | None) -> dict[str, Any] | None:
    """The window the probes of `check --probe-seconds` ran (one window for all): how long
    it was asked to last, how long it lasted, and whether a signal cut it short."""
    results = [r for r in (facts.probes or {}).values() if getattr(r, "window", None)]
    if not results:
        return None
    w = results[0].window
    return {"probes": sorted(facts.probes or {}), "asked_seconds": asked,
            "seconds": w.seconds, "started_at": w.started_at, "ended_at": w.ended_at,
            "interrupted": w.interrupted}


def _sysctls(facts: Facts, keys: list[str]) -> dict[str, Any]:
    """{short name: typed value or None} for the given dotted keys."""
    values = facts.sysctl.values if facts.sysctl else {}
    return {k.rsplit(".", 1)[1]: sysctl_value(k, values.get(k)) for k in keys}


def _counters(facts: Facts, names: list[tuple[str, str]]) -> dict[str, int | None]:
    """{"TcpExt.ListenOverflows": total since boot, or None when the kernel has no such
    counter}."""
    c = facts.counters
    return {f"{proto}.{n}": (c.get(proto, n) if c is not None else None)
            for proto, n in names}


def backlog_view(facts: Facts) -> dict[str, Any]:
    out: dict[str, Any] = {"settings": _sysctls(facts, [
        "net.core.somaxconn", "net.ipv4.tcp_max_syn_backlog", "net.ipv4.tcp_syncookies",
        "net.ipv4.tcp_abort_on_overflow", "net.ipv4.tcp_syn_retries",
        "net.ipv4.tcp_synack_retries"])}
    if facts.counters is not None:
        out["counters"] = _counters(facts, [("TcpExt", n) for n in (
            "ListenOverflows", "ListenDrops", "SyncookiesSent", "SyncookiesRecv",
            "SyncookiesFailed", "TCPReqQFullDrop", "TCPReqQFullDoCookies")])
    census, procs = facts.census, facts.processes
    if census is not None:
        syn_recv = {}
        if census.by_local_port is not None:
            for (port, state), n in census.by_local_port.items:
                if state == "SYN_RECV":
                    syn_recv[port] = syn_recv.get(port, 0) + n
        # One row per listening socket: the members of an SO_REUSEPORT group share address and
        # port but each has its own inode, queue and holders.
        groups = reuseport_groups(census.listeners)
        rows = []
        for lst in census.listeners:
            group = groups.get((lst.family, lst.address, lst.port))
            holders = procs.holders_of(lst.inode) if procs is not None and lst.inode else []
            rows.append({"address": lst.address, "port": lst.port, "inode": lst.inode,
                         "accept_queue": lst.accept_queue, "limit": lst.backlog,
                         "syn_recv": syn_recv.get(lst.port, 0),
                         "reuseport_members": len(group) if group else 1,
                         **_owner(facts, lst.inode),
                         # null: not searched for (never "none held")
                         "holders": [_holder(procs, pid) for pid in holders[:8]]
                         if _lookup(facts, lst.inode) in ("found", "not_found") else None})
        out["listeners"] = rows
    if facts.listener_samples is not None:
        out["sampled_during_interval"] = [
            {"address": s.address, "port": s.port, "inode": s.inode, "limit": s.backlog,
             "max_queue": s.max_queue, "samples_at_limit": s.samples_at_limit,
             "samples_full": s.samples_full, "samples": s.samples}
            for s in facts.listener_samples]
    return out


def _holder(procs: ProcessFacts | None, pid: int) -> dict[str, Any]:
    info = procs.processes.get(pid) if procs is not None else None
    return {"pid": pid, "command": info.command if info else None}


def keepalive_view(facts: Facts) -> dict[str, Any]:
    out: dict[str, Any] = {"settings": _sysctls(facts, [
        "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_keepalive_intvl",
        "net.ipv4.tcp_keepalive_probes", "net.ipv4.tcp_retries2"])}
    d = facts.details
    if d is not None:
        out["established_connections"] = {
            "total": d.established,
            "showing_keepalive_timer": d.keepalive_timer,  # SO_KEEPALIVE on
            "no_timer_keepalive_off": d.no_timer,
            "retransmit_timer_unknown": d.retransmit_timer,  # keepalive hidden behind it
            "idle_over_10min_without_keepalive": d.long_idle_without_keepalive,
            "idle_over_10min_with_keepalive": d.long_idle_with_keepalive,
        }
        # Per service, the idle time the keepalive timers show (idiag_expires + time since
        # the last packet received): an application's own TCP_KEEPIDLE shows here.
        out["keepalive_timers_by_service"] = [
            {"side": g.side, "port": g.port, "sockets": g.sockets, "probing": g.probing,
             "idle_estimate_s": round(g.idle_estimate_max_ms / 1000, 1)
             if g.idle_estimate_min_ms is not None else None,
             **(_owner(facts, g.inodes[0]) if g.inodes
                else {"pid": None, "command": None, "owner_lookup": "unavailable"})}
            for g in d.keepalive_groups[:20]]
        out["longest_idle_without_keepalive"] = [
            {"local_address": c.source, "local_port": c.sport, "peer_address": c.destination,
             "peer_port": c.dport, "idle_s": c.idle_ms // 1000,
             **_owner(facts, c.inode)}
            for c in d.idle_without_keepalive]
    return out


def buffers_view(facts: Facts) -> dict[str, Any]:
    out: dict[str, Any] = {"settings": _sysctls(facts, [
        "net.ipv4.tcp_rmem", "net.ipv4.tcp_wmem", "net.core.rmem_max", "net.core.wmem_max",
        "net.core.rmem_default", "net.ipv4.tcp_mem", "net.ipv4.tcp_moderate_rcvbuf"])}
    if facts.sockstat is not None:
        out["memory"] = {"tcp_pages_in_use": facts.sockstat.get("TCP", "mem")}
    if facts.counters is not None:
        out["counters"] = _counters(facts, [("TcpExt", n) for n in (
            "TCPRcvQDrop", "PruneCalled", "RcvPruned", "OfoPruned", "TCPRcvCollapsed",
            "TCPBacklogDrop", "TCPZeroWindowDrop", "TCPMemoryPressures")] + [
            (proto, n) for proto in ("Udp", "Udp6") for n in ("RcvbufErrors", "SndbufErrors")])
    d = facts.details
    if d is not None:
        # The flows that moved data in the last second, as ss -tmi shows them; the
        # buffers.max_below_bdp finding says what holds each.
        out["busy_flows"] = [_flow_row(c) for c in d.flows]
        if d.socket_drops:
            out["sockets_with_drops"] = [
                {"local_address": c.source, "local_port": c.sport,
                 "peer_address": c.destination, "peer_port": c.dport,
                 "drops": c.skmem.get("drops"), "rcvbuf_bytes": c.skmem.get("rcvbuf")}
                for c in d.socket_drops]
        # Sockets that received no data for 10 s and more are not listed above: what their
        # drop counter took meanwhile (keepalive probes, duplicates) is no data lost.
        out["idle_sockets_whose_drops_are_not_data"] = d.idle_sockets_with_drops
    return out


def _flow_row(c) -> dict[str, Any]:
    i, sk = c.info, c.skmem
    busy = i.get("busy_time", 0)
    return {"local_address": c.source, "local_port": c.sport,
            "peer_address": c.destination, "peer_port": c.dport,
            "rtt_ms": round(i.get("rtt", 0) / 1000, 2),
            "delivery_rate_mbit": round(i.get("delivery_rate", 0) * 8 / 1e6, 1),
            "busy_ms": busy // 1000,
            "rwnd_limited_share": round(i.get("rwnd_limited", 0) / busy, 3) if busy else None,
            "sndbuf_limited_share": round(i.get("sndbuf_limited", 0) / busy, 3)
            if busy else None,
            "app_limited": bool(i.get("delivery_rate_app_limited")),
            "rcvbuf_bytes": sk.get("rcvbuf"), "sndbuf_bytes": sk.get("sndbuf"),
            "rcv_space_bytes": i.get("rcv_space"), "snd_wnd_bytes": i.get("snd_wnd"),
            "rcv_wnd_bytes": i.get("rcv_wnd")}


def rps_cpus(masks: str | None) -> list[int] | None:
    """CPUs any rx queue may steer packets to (RPS), from the per-queue hex masks
    ("00000000,0000000f 0": queue masks separated by spaces, 32-bit groups by commas)."""
    if masks is None:
        return None
    cpus: set[int] = set()
    for mask in masks.split():
        try:
            bits = int(mask.replace(",", ""), 16)
        except ValueError:
            continue
        cpu = 0
        while bits:
            if bits & 1:
                cpus.add(cpu)
            bits >>= 1
            cpu += 1
    return sorted(cpus)


def softirq_view(facts: Facts) -> dict[str, Any]:
    out: dict[str, Any] = {"settings": _sysctls(facts, [
        "net.core.netdev_max_backlog", "net.core.netdev_budget", "net.core.netdev_budget_usecs",
        "net.core.dev_weight"])}
    rows: dict[int, dict[str, Any]] = {}

    def row(cpu: int) -> dict[str, Any]:
        return rows.setdefault(cpu, {"cpu": cpu, "processed": None, "dropped": None,
                                     "time_squeeze": None, "backlog_len": None,
                                     "net_rx": None, "net_tx": None, "ksoftirqd_s": None})

    if facts.softnet is not None:
        for c in facts.softnet.cpus:
            row(c.cpu).update(processed=c.processed, dropped=c.dropped,
                              time_squeeze=c.time_squeeze, backlog_len=c.backlog_len)
    if facts.softirqs is not None:
        for cpu, n in enumerate(facts.softirqs.net_rx):
            row(cpu)["net_rx"] = n
        for cpu, n in enumerate(facts.softirqs.net_tx):
            row(cpu)["net_tx"] = n
    if facts.ksoftirqd:
        for cpu, secs in facts.ksoftirqd.items():
            row(cpu)["ksoftirqd_s"] = secs
    out["per_cpu"] = [rows[k] for k in sorted(rows)]
    if facts.links is not None:
        out["interfaces"] = [
            {"name": lk.name, "rx_packets": lk.rx_packets, "rx_dropped": lk.rx_dropped,
             "rx_missed": lk.rx_missed, "rx_fifo": lk.rx_fifo, "tx_dropped": lk.tx_dropped,
             "rx_ring": lk.rx_ring, "rx_ring_max": lk.rx_ring_max,
             "rps_cpus": rps_cpus(lk.rps_cpus)}
            for lk in facts.links]
    return out


def probe_view(facts: Facts) -> dict[str, Any]:
    """Probe results, typed (netdiag.probefacts), one object per probe: its window, start-up
    cost, namespace scope, completeness and tables (docs/schema/probes.schema.json)."""
    from dataclasses import asdict

    return {name: asdict(result) for name, result in (facts.probes or {}).items()}
