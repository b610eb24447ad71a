"""Local (ephemeral) ports: exhaustion toward one destination, listeners inside the range."""

from __future__ import annotations

from typing import Any

from netdiag.facts import Facts
from netdiag.model import Finding, Rule, RuleSpec, Severity
from netdiag.rules._util import (
    destination_ports,
    is_reserved,
    make,
    outgoing_advice,
    port_budget,
    rates,
)

TOPIC = "ports"
SUMMARY = "Ephemeral ports: usage per destination, the port range, listeners inside it"

# connect() scans the ports of one parity first (since 4.6); once about half the range is in
# use toward a destination every connect() walks the whole range. Warn before that cliff.
EXHAUST_WARN_SHARE = 0.4
EXHAUST_CRIT_SHARE = 0.9
# Ports used up within this long at the growth measured: critical.
FORECAST_CRIT_SECONDS = 60

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
        "(ip, port), so each needs its own local port from the usable range; listening "
        "ports inside the range are off-limits to connect(). A socket in TIME_WAIT keeps its "
        "port for 60 s after this host closed first, unless tcp_tw_reuse applies to the "
        "destination (1: any; 2, the default: loopback only), timestamps are on and the "
        "socket is older than tcp_tw_reuse_delay (1 s): then connect() takes the port back "
        "and only the younger TIME_WAIT sockets hold theirs. So the destination can take at "
        "most free_ports / 60 s (or / tcp_tw_reuse_delay with reuse) new connections per "
        "second. Past about half the range every connect() scans more ports; at the end it "
        "fails with EADDRNOTAVAIL ('Cannot assign requested address')."
    ),
    recommendation=(
        "Reuse connections toward this destination (keep-alive, pooling) so fewer are opened "
        "and closed. If outgoing connections must churn and tcp_tw_reuse does not already "
        "apply to the destination: net.ipv4.tcp_tw_reuse=1 (needs tcp_timestamps on both "
        "ends) lets connect() take TIME_WAIT ports back after 1 s. Widen "
        "net.ipv4.ip_local_port_range (e.g. 10000 65000, keeping listening ports reserved), "
        "or spread over more source IPs or destination ports (each multiplies the budget). "
        "Use IP_BIND_ADDRESS_NO_PORT when binding a source address before connect()."
    ),
    thresholds=f"warning at {int(EXHAUST_WARN_SHARE * 100)}% of usable ports held toward one "
               f"destination (the parity half approaches; with tcp_tw_reuse, TIME_WAIT younger "
               f"than tcp_tw_reuse_delay counted from their timers); info when they are "
               f"occupied but neither the TIME_WAIT ages nor a close rate are known; critical at "
               f"{int(EXHAUST_CRIT_SHARE * 100)}%, or when the growth measured over --interval "
               f"uses them up within {FORECAST_CRIT_SECONDS} s",
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
    tw_by_dest = dict(census.timewait_by_destination.items) \
        if census.timewait_by_destination else {}
    all_tw = census.by_state.get("TIME_WAIT", 0) or sum(tw_by_dest.values())
    rate = rates(facts)
    before = dict(census_before_items(facts))
    tw_before = dict(_tw_before_items(facts))
    rows, found = [], []
    for key, used in census.by_destination.items[:10]:
        dp = destination_ports(facts, key, used, tw_by_dest.get(key, 0), all_tw, rate)
        if dp is None:
            continue
        row = dp.evidence()
        if facts.interval and key in before:
            # Growth of the ports held: sockets in use, plus TIME_WAIT when it holds ports.
            grown = (used - tw_by_dest.get(key, 0)) - (before[key] - tw_before.get(key, 0))
            if not dp.reuse.applies:
                grown += tw_by_dest.get(key, 0) - tw_before.get(key, 0)
            growth = grown / facts.interval
            row["growth_per_s"] = round(growth, 2)
            if growth > 0:
                row["seconds_to_exhaustion"] = round(max(usable - dp.held, 0) / growth, 1)
        rows.append(row)
        found.append(dp)
    evidence: dict[str, Any] = {
        k: budget[k] for k in ("ip_local_port_range", "range_size", "reserved_in_range",
                               "usable_ports")
    }
    evidence.update(tcp_tw_reuse=facts.sysctl.get_int("net.ipv4.tcp_tw_reuse"),
                    tcp_timestamps=facts.sysctl.get_int("net.ipv4.tcp_timestamps"),
                    destinations=rows,
                    outgoing_connections=sum(n for _, n in census.by_destination.items))
    if rate is not None:
        evidence["rates"] = rate.evidence()
    if census.by_destination.approximate:
        evidence["approximate"] = True
    if not rows:
        return make(EXHAUSTION, Severity.OK, "no outgoing connections from the ephemeral range",
                    evidence, recommendation="Nothing to do.")

    def urgency(pair):
        row, dp = pair
        soon = row.get("seconds_to_exhaustion")
        return (soon is not None and soon < FORECAST_CRIT_SECONDS, dp.share)

    row, dp = max(zip(rows, found), key=urgency)
    share = dp.share
    soon = row.get("seconds_to_exhaustion")
    # With a measured close rate, the TIME_WAIT ports that rate would keep held: fewer than
    # are held now when the pile is what a burst that ended left (it frees them within 60 s).
    held_at_rate = dp.in_use + dp.bound_in_range + min(dp.time_wait_holding, dp.holding_at_rate)
    draining = dp.rate_measured and held_at_rate < dp.held
    if draining:
        row["ports_held_at_rate"] = held_at_rate
    severity = Severity.OK
    if share >= EXHAUST_CRIT_SHARE or (soon is not None and soon < FORECAST_CRIT_SECONDS):
        severity = Severity.CRITICAL
    elif share >= EXHAUST_WARN_SHARE:
        severity = Severity.WARNING
    if draining and severity > Severity.INFO and (soon is None or soon >= FORECAST_CRIT_SECONDS) \
            and held_at_rate < EXHAUST_WARN_SHARE * usable:
        severity = Severity.INFO  # held now, but freed within 60 s at the rate measured
    where = f"{dp.destination}:{dp.port}"
    title = f"{dp.held} of {usable} usable source ports held toward {where} ({share * 100:.0f}%)"
    # With reuse, a TIME_WAIT port holds only while younger than tcp_tw_reuse_delay: how many
    # are that young needs the close rate. Unmeasured, the count / 60 s guess says almost
    # none, which a burst opening thousands of connections a second makes false (connect()
    # then fails while this says OK). The ports occupied are a fact: judged on them, as "may".
    unknown = dp.reuse.applies and not dp.rate_measured and not dp.ages_known and \
        dp.time_wait
    if unknown and severity < Severity.INFO and dp.occupied_share >= EXHAUST_WARN_SHARE:
        severity = Severity.INFO  # a possibility this run cannot confirm nor rule out
        row["ports_occupied"] = dp.occupied
        title = (f"{dp.occupied} of {usable} usable source ports occupied toward {where} "
                 f"({dp.occupied_share * 100:.0f}%), {dp.time_wait} of them in TIME_WAIT: "
                 f"connect() fails if they are younger than {dp.reuse.delay_ms} ms; the close "
                 "rate was not measured (--interval tells)")
    if soon is not None and soon < FORECAST_CRIT_SECONDS:
        title += f"; used up in about {soon:g} s at the growth measured"
    elif draining and severity is Severity.INFO:
        rate = f"{dp.closes_per_s:.1f}".rstrip("0").rstrip(".")
        title += (f", draining: the {dp.time_wait_holding} in TIME_WAIT free their ports "
                  f"within 60 s, and at the {rate} closes/s measured about {held_at_rate} "
                  "would stay held")
    detail = (f"Toward {where}: {dp.in_use} connections in use, {dp.time_wait} in TIME_WAIT "
              f"of which {dp.time_wait_holding} still hold their port ({dp.reuse.why}), "
              f"{dp.bound_in_range} listening port(s) inside the range. This host can sustain "
              f"about {dp.sustainable_per_s:.0f} new connections/s toward it; it closes about "
              f"{dp.closes_per_s:.1f}/s ({dp.rate_source}).")
    if soon is not None:
        detail += (f" At the growth measured over {facts.interval:g} s the range is used up in "
                   f"about {soon:g} s.")
    if unknown and "ports_occupied" in row:
        detail += (f" {dp.time_wait} sockets toward it are in TIME_WAIT. tcp_tw_reuse lets "
                   f"connect() take one back once it is {dp.reuse.delay_ms} ms old, so they "
                   "are free unless connections close faster than that: then every one is "
                   "held and connect() fails with EADDRNOTAVAIL. Without a measured close rate "
                   "(--interval, --state-dir, a probe window) this run cannot tell which.")
    recommendation = outgoing_advice(dp) if severity > Severity.OK else (
        "Nothing to do: the source ports toward each destination are far from used up.")
    return make(EXHAUSTION, severity, title, evidence, detail, recommendation)


def _tw_before_items(facts: Facts):
    cb = facts.census_before
    if cb is None or cb.timewait_by_destination is None:
        return []
    return cb.timewait_by_destination.items


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
                                    facts.sysctl.typed("net.ipv4.ip_local_reserved_ports")
                                    if facts.sysctl else None,
                                "listeners": hits}
    if not hits:
        return make(LISTENER, Severity.OK, "no listener inside the ephemeral range", evidence)
    ports = ", ".join(str(h["port"]) for h in hits[:8])
    return make(LISTENER, Severity.INFO,
                f"{len(hits)} listening port(s) inside ip_local_port_range and not reserved: "
                f"{ports}", evidence)


def check(facts: Facts) -> list[Finding]:
    return [f for f in (_exhaustion(facts), _listeners(facts)) if f is not None]
