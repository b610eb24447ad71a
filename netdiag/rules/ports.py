"""Local (ephemeral) ports: exhaustion toward one destination, listeners inside the range."""

from __future__ import annotations

from typing import Any

from netdiag.facts import Facts
from netdiag.model import Finding, Rule, RuleSpec, Severity
from netdiag.rules._util import TIME_WAIT_SECONDS, is_loopback, is_reserved, make, port_budget

TOPIC = "ports"
SUMMARY = "Ephemeral ports: usage per destination, the port range, listeners inside it"

# connect() scans the ports of one parity first (since 4.6); once about half the range is in
# use toward a destination every connect() walks the whole range. Warn before that cliff.
EXHAUST_WARN_SHARE = 0.4
EXHAUST_CRIT_SHARE = 0.9

BACKGROUND = (
    "A TCP connection is identified by its four-tuple, so the ephemeral port limit applies "
    "per (source IP, destination IP, destination port), not per host: a client can hold "
    "28232 connections to each destination with the default range, and a server is not "
    "limited by ephemeral ports at all. The usable ports are ip_local_port_range minus "
    "ip_local_reserved_ports. Since 4.6, connect() tries ports of one parity first, so once "
    "about half of the range is taken toward one destination each connect() scans the whole "
    "range (a CPU cliff), and at the end connect() fails with EADDRNOTAVAIL. Each connection "
    "this host closes first keeps its port for the 60 s of TIME_WAIT."
)

EXHAUSTION = RuleSpec(
    id="ports.ephemeral_exhaustion",
    topic=TOPIC,
    title="Ephemeral ports toward one destination running out",
    rule=Rule(
        text="ip_local_port_range defines the local port range used by TCP and UDP to choose "
             "the local port (default 32768 60999); ip_local_reserved_ports are skipped by "
             "automatic assignment. connect() first tries ports with the same parity as the "
             "range's low end, then the others.",
        source="Documentation/networking/ip-sysctl.rst: ip_local_port_range, "
               "ip_local_reserved_ports; net/ipv4/inet_hashtables.c __inet_hash_connect()",
    ),
    explanation=(
        "These connections all leave from the same source IP toward the same destination "
        "(ip, port), so each needs its own local port from the usable range. Sockets in "
        "TIME_WAIT keep their port for 60 s after this host closed first, which caps the "
        "sustainable rate toward this destination at usable_ports / 60 new connections per "
        "second. Past about half the range every connect() scans more ports; at the end it "
        "fails with EADDRNOTAVAIL ('Cannot assign requested address')."
    ),
    recommendation=(
        "Reuse connections toward this destination (keep-alive, pooling) so fewer are opened "
        "and closed. If outgoing connections must churn: enable net.ipv4.tcp_tw_reuse=1 "
        "(needs tcp_timestamps on both ends) so TIME_WAIT ports are reused after 1 s; widen "
        "net.ipv4.ip_local_port_range (e.g. 10000 65000, keeping listening ports reserved); "
        "or spread over more source IPs or destination ports (each multiplies the budget). "
        "Use IP_BIND_ADDRESS_NO_PORT when binding a source address before connect()."
    ),
    thresholds=f"warning at {int(EXHAUST_WARN_SHARE * 100)}% of usable ports toward one "
               f"destination (the parity half approaches); critical at "
               f"{int(EXHAUST_CRIT_SHARE * 100)}%",
)

LISTENER = RuleSpec(
    id="ports.listener_in_ephemeral_range",
    topic=TOPIC,
    title="Listening port inside the ephemeral range",
    rule=Rule(
        text="ip_local_reserved_ports: specify the ports which are reserved for known "
             "third-party applications. These ports will not be used by automatic port "
             "assignments (e.g. when calling connect() or bind() with port number 0). "
             "Explicit port allocation behavior is unchanged.",
        source="Documentation/networking/ip-sysctl.rst: ip_local_reserved_ports",
    ),
    explanation=(
        "While the service listens, its port cannot be picked as a source port. But when it "
        "restarts, an outgoing connection may have taken that port in the meantime and the "
        "service's bind() then fails with EADDRINUSE. A port that was itself chosen "
        "automatically (bind to port 0) is expected to be in the range."
    ),
    recommendation=(
        "Add the port to net.ipv4.ip_local_reserved_ports (e.g. in /etc/sysctl.d/) or move "
        "the service to a port below ip_local_port_range's low end."
    ),
    thresholds="info (a restart risk, not an outage)",
)

SPECS = (EXHAUSTION, LISTENER)


def _exhaustion(facts: Facts) -> Finding | None:
    census = facts.census
    budget = port_budget(facts)
    if census is None or budget is None or census.by_destination is None:
        return None
    usable = budget["usable_ports"]
    reuse = facts.sysctl.get_int("net.ipv4.tcp_tw_reuse") if facts.sysctl else None
    timestamps = facts.sysctl.get_int("net.ipv4.tcp_timestamps") if facts.sysctl else 1
    delay_ms = facts.sysctl.get_int("net.ipv4.tcp_tw_reuse_delay") if facts.sysctl else None
    delay_s = (delay_ms or 1000) / 1000.0
    tw_by_dest = dict(census.timewait_by_destination.items) \
        if census.timewait_by_destination else {}
    before = dict(census_before_items(facts))
    rows = []
    for key, used in census.by_destination.items[:10]:
        src, dst, dport = key
        tw = tw_by_dest.get(key, 0)
        reuse_applies = bool(timestamps) and (reuse == 1 or (reuse == 2 and is_loopback(dst)))
        # With tw_reuse, a TIME_WAIT port older than the delay is free for connect() again;
        # of the TIME_WAIT sockets, about delay/60 are younger than that.
        effective = used - tw + round(tw * delay_s / TIME_WAIT_SECONDS) if reuse_applies \
            else used
        row: dict[str, Any] = {
            "source": src, "destination": dst, "port": dport,
            "ports_in_use": used, "time_wait": tw,
            "share": round(effective / usable, 3) if usable else 1.0,
            "tw_reuse_applies": reuse_applies,
            "estimated_conn_per_s": round(tw / TIME_WAIT_SECONDS, 1),
            "sustainable_conn_per_s": round(usable / TIME_WAIT_SECONDS, 1),
        }
        if reuse_applies:
            row["effective_in_use"] = effective
        if facts.interval and key in before:
            growth = (used - before[key]) / facts.interval
            row["growth_per_s"] = round(growth, 2)
            if growth > 0:
                row["seconds_to_exhaustion"] = round(max(usable - effective, 0) / growth, 1)
        rows.append(row)
    evidence: dict[str, Any] = {
        k: budget[k] for k in ("ip_local_port_range", "range_size", "reserved_in_range",
                               "usable_ports")
    }
    evidence.update(tcp_tw_reuse=reuse, tcp_timestamps=timestamps, destinations=rows,
                    outgoing_connections=sum(n for _, n in census.by_destination.items))
    if census.by_destination.approximate:
        evidence["approximate"] = True
    if not rows:
        return make(EXHAUSTION, Severity.OK, "no outgoing connections from the ephemeral range",
                    evidence)
    worst = max(rows, key=lambda r: r["share"])
    share = worst["share"]
    severity = Severity.OK
    if share >= EXHAUST_CRIT_SHARE:
        severity = Severity.CRITICAL
    elif share >= EXHAUST_WARN_SHARE:
        severity = Severity.WARNING
    title = (f"{worst.get('effective_in_use', worst['ports_in_use'])} of {usable} usable source "
             f"ports in use toward {worst['destination']}:{worst['port']} "
             f"({share * 100:.0f}%)")
    detail = (f"Toward {worst['destination']}:{worst['port']} this host can sustain about "
              f"{worst['sustainable_conn_per_s']:g} new connections/s; it closes about "
              f"{worst['estimated_conn_per_s']:g}/s (TIME_WAIT count / 60 s).")
    if "seconds_to_exhaustion" in worst:
        detail += (f" At the growth measured over {facts.interval:g} s the range is used up in "
                   f"about {worst['seconds_to_exhaustion']:g} s.")
    if worst["tw_reuse_applies"]:
        detail += (" tcp_tw_reuse applies to this destination, so only TIME_WAIT sockets "
                   "younger than tcp_tw_reuse_delay are counted as taken.")
    return make(EXHAUSTION, severity, title, evidence, detail)


def census_before_items(facts: Facts):
    if facts.census_before is None or facts.census_before.by_destination is None:
        return []
    return facts.census_before.by_destination.items


def _listeners(facts: Facts) -> Finding | None:
    census = facts.census
    budget = port_budget(facts)
    if census is None or budget is None:
        return None
    low, high, reserved = budget["low"], budget["high"], budget["reserved"]
    procs = facts.processes
    hits = []
    seen = set()
    for lst in census.listeners:
        if not (low <= lst.port <= high) or is_reserved(lst.port, reserved):
            continue
        if (lst.port, lst.address) in seen:
            continue
        seen.add((lst.port, lst.address))
        row: dict[str, Any] = {"port": lst.port, "address": lst.address}
        pid = procs.owners.get(lst.inode) if procs is not None else None
        if pid is not None:
            row["pid"] = pid
            info = procs.processes.get(pid)
            if info is not None:
                row["command"] = info.command
        hits.append(row)
    evidence: dict[str, Any] = {"ip_local_port_range": budget["ip_local_port_range"],
                                "ip_local_reserved_ports":
                                    facts.sysctl.values.get("net.ipv4.ip_local_reserved_ports", "")
                                    if facts.sysctl else "",
                                "listeners": hits}
    if not hits:
        return make(LISTENER, Severity.OK, "no listener inside the ephemeral range", evidence)
    ports = ", ".join(str(h["port"]) for h in hits[:8])
    return make(LISTENER, Severity.INFO,
                f"{len(hits)} listening port(s) inside ip_local_port_range and not reserved: "
                f"{ports}", evidence)


def check(facts: Facts) -> list[Finding]:
    return [f for f in (_exhaustion(facts), _listeners(facts)) if f is not None]
