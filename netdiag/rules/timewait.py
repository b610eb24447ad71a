"""TIME_WAIT: the bucket limit, floods toward few peers, and stale tw_recycle settings."""

from __future__ import annotations

from typing import Any

from netdiag.facts import Facts, sysctl_value
from netdiag.model import Finding, Rule, RuleSpec, Severity
from netdiag.rules._policy import change, judge
from netdiag.rules._util import (
    TIME_WAIT_SECONDS,
    destination_ports,
    make,
    outgoing_advice,
    port_budget,
    rates,
)

TOPIC = "timewait"
SUMMARY = "TIME_WAIT sockets: who closes first, toward whom, and the kernel's limits"

# TIME_WAIT at or above this share of tcp_max_tw_buckets warns before it overflows.
BUCKET_WARN_SHARE = 0.9
# A single destination whose TIME_WAIT holds this share of the usable ephemeral ports warns:
# each of those sockets keeps its source port out of use toward that destination for 60 s.
FLOOD_DEST_SHARE = 0.2
# This many TIME_WAIT sockets (≈ 166 closed connections/s sustained) are worth an info line
# showing who causes them, even when no limit is near.
FLOOD_INFO_COUNT = 10_000
# With a measured close rate, a TIME_WAIT count that rate would not even half sustain
# (rate × 60 s) is draining: left by a burst that has ended.
DRAINING_SHARE = 0.5

TW_REUSE_MEANING = {
    0: "0: TIME_WAIT ports are never reused for new outgoing connections",
    1: "1: a new outgoing connection may take over a TIME_WAIT socket's port once it is "
       "older than tcp_tw_reuse_delay (1 s), if timestamps are on at both ends",
    2: "2: reuse as with 1, but only for loopback traffic (the default since ~4.20)",
}

BACKGROUND = (
    "TIME_WAIT belongs to the side that closes first (the active closer). It lasts 60 s "
    "(TCP_TIMEWAIT_LEN, compiled into the kernel; no sysctl changes it) so that late segments "
    "of the old connection cannot be taken for a new one with the same four-tuple. A TIME_WAIT "
    "socket is small (no buffers, no fd); it costs a source port only on the client side, "
    "toward one destination. tcp_fin_timeout sets how long an orphaned FIN_WAIT_2 lasts, not "
    "TIME_WAIT. tcp_tw_recycle was removed in 4.12: it broke clients behind NAT."
)

BUCKET = RuleSpec(
    id="timewait.bucket_overflow",
    topic=TOPIC,
    counters=("TcpExt.TCPTimeWaitOverflow",),
    title="TIME_WAIT sockets at the tcp_max_tw_buckets limit",
    rule=Rule(
        text="tcp_max_tw_buckets: maximal number of timewait sockets held by the system "
             "simultaneously. If this number is exceeded the time-wait socket is immediately "
             "destroyed. This limit exists only to prevent simple DoS attacks; you must not "
             "lower the limit artificially.",
        source="Documentation/networking/ip-sysctl.rst: tcp_max_tw_buckets; "
               "net/ipv4/tcp_minisocks.c tcp_time_wait() (TCPTimeWaitOverflow)",
    ),
    explanation=(
        "When the TIME_WAIT count reaches tcp_max_tw_buckets, tcp_time_wait() cannot "
        "allocate a timewait socket: the closing connection is destroyed at once, without "
        "TIME_WAIT protection, and TcpExt.TCPTimeWaitOverflow counts it (newer kernels print "
        "nothing). Late or duplicate segments of such a connection may then be accepted by a "
        "new connection that reuses the four-tuple. Orphaned FIN_WAIT_2 minisockets count "
        "against the same limit (sockstat 'tw' includes them)."
    ),
    recommendation=(
        "Do not lower tcp_max_tw_buckets to 'get rid of' TIME_WAIT. If the limit was lowered "
        "by hand, restore the default (ehash buckets / 2) or raise it; a TIME_WAIT socket "
        "costs only a few hundred bytes. Then reduce the churn that creates them: keep "
        "connections alive and pool them on the side that closes first."
    ),
    thresholds=f"warning at {int(BUCKET_WARN_SHARE * 100)}% of tcp_max_tw_buckets; critical at "
               "100% or when TCPTimeWaitOverflow grows (over --interval or since the previous "
               "--state-dir run); info when TCPTimeWaitOverflow is non-zero since boot",
)

FLOOD = RuleSpec(
    id="timewait.flood",
    topic=TOPIC,
    title="TIME_WAIT sockets concentrated on few peers",
    rule=Rule(
        text="TIME_WAIT lasts TCP_TIMEWAIT_LEN = 60 s and sits on the side that closes first. "
             "tcp_tw_reuse (0 off, 1 global, 2 loopback only) lets a new outgoing connection "
             "take over a TIME_WAIT socket older than tcp_tw_reuse_delay (1 s) when both ends "
             "use timestamps; it does nothing for accepted connections. tcp_fin_timeout does "
             "not shorten TIME_WAIT.",
        source="include/net/tcp.h TCP_TIMEWAIT_LEN; Documentation/networking/ip-sysctl.rst: "
               "tcp_tw_reuse, tcp_tw_reuse_delay, tcp_fin_timeout; net/ipv4/tcp_ipv4.c "
               "tcp_twsk_unique()",
    ),
    explanation=(
        "Every connection this host closes first leaves a TIME_WAIT socket. Without reuse it "
        "stays 60 s, so the count is about (closes per second) × 60; with reuse (or when a "
        "new SYN from the same client takes it over on the server side) it goes sooner, and "
        "the count says little about the rate: the counters do (TcpExt.TW and TWKilled count "
        "sockets entering TIME_WAIT, TWRecycled those connect() took over). When this host "
        "is the client, each TIME_WAIT socket that reuse cannot take holds a source port "
        "toward that destination; when it is the server and closes first, TIME_WAIT costs "
        "little but shows that clients do not reuse their connections."
    ),
    recommendation=(
        "Reuse connections instead of opening one per request: HTTP keep-alive, connection "
        "pools, longer idle timeouts on the side that closes first. For outgoing "
        "connections where tcp_tw_reuse does not already apply, net.ipv4.tcp_tw_reuse=1 "
        "(with tcp_timestamps=1 on both ends) lets connect() take TIME_WAIT ports back after "
        "1 s; spreading over more source IPs or destination ports multiplies the port "
        "budget. Lowering tcp_fin_timeout or tcp_max_tw_buckets does not help, and "
        "tcp_tw_recycle no longer exists."
    ),
    thresholds=f"warning when the TIME_WAIT sockets toward one destination that reuse cannot "
               f"take hold ≥ {int(FLOOD_DEST_SHARE * 100)}% of the usable ephemeral ports and, "
               "when a close rate was measured (--interval, --state-dir, probe window), that "
               "rate would keep them there; info when the rate measured does not (a pile "
               f"draining after a burst), and from {FLOOD_INFO_COUNT} TIME_WAIT sockets",
)

RECYCLE = RuleSpec(
    id="timewait.tw_recycle_configured",
    topic=TOPIC,
    title="tcp_tw_recycle is still configured",
    rule=Rule(
        text="tcp_tw_recycle enabled fast recycling of TIME_WAIT sockets using per-host "
             "timestamps; it broke connections from clients behind NAT and was removed in "
             "Linux 4.12 (commit 4396e46187ca).",
        source="tcp(7): tcp_tw_recycle; commit 4396e46187ca (\"tcp: remove tcp_tw_recycle\", "
               "Linux 4.12)",
    ),
    explanation=(
        "On kernels before 4.12, tcp_tw_recycle=1 drops SYNs whose timestamps go backwards "
        "for a given peer IP, which is normal when several clients share one NAT address: "
        "those clients see connection timeouts (PAWSPassiveRejected). On 4.12 and later the "
        "key no longer exists, so `sysctl --system` fails on that line at every boot, which "
        "hides the settings after it in some tools and misleads readers of the file."
    ),
    recommendation=(
        "Delete the net.ipv4.tcp_tw_recycle line from the file named in the evidence. To "
        "handle TIME_WAIT from outgoing connections use tcp_tw_reuse and connection reuse."
    ),
    thresholds="warning when any sysctl configuration file sets it, or the running kernel "
               "has it enabled",
)

SPECS = (BUCKET, FLOOD, RECYCLE)


def _bucket(facts: Facts) -> Finding | None:
    limit = facts.sysctl.get_int("net.ipv4.tcp_max_tw_buckets") if facts.sysctl else None
    tw = facts.sockstat.get("TCP", "tw") if facts.sockstat else None
    tw_source = "/proc/net/sockstat TCP tw"
    if tw is None and facts.census is not None:
        tw = facts.census.by_state.get("TIME_WAIT", 0)
        tw_source = "socket table TIME_WAIT count"
    overflow = change(facts, "TcpExt", "TCPTimeWaitOverflow")
    if limit is None or tw is None:
        return None
    evidence: dict[str, Any] = {
        "time_wait": tw,
        "time_wait_source": tw_source,
        "tcp_max_tw_buckets": limit,
        "share": round(tw / limit, 3) if limit else None,
    }
    if overflow is not None:
        evidence["TCPTimeWaitOverflow"] = overflow.evidence()
    severity = Severity.OK
    # The kernel's TIME_WAIT table (sockstat tw, what tcp_max_tw_buckets caps) also holds
    # the FIN_WAIT2 of sockets this host closed and no process holds any more (tcp_time_wait
    # with TCP_FIN_WAIT2): ss shows those as FIN-WAIT-2, not TIME-WAIT.
    in_state = facts.census.by_state.get("TIME_WAIT", 0) if facts.census is not None else None
    what = f"{tw} TIME_WAIT sockets"
    if tw_source.startswith("/proc") and in_state is not None and tw > in_state:
        evidence["time_wait_state"] = in_state
        evidence["fin_wait2_timewait"] = tw - in_state
        what = (f"{tw} entries in the TIME_WAIT table ({in_state} in TIME_WAIT, "
                f"{tw - in_state} orphaned FIN_WAIT2)")
    elif tw_source.startswith("/proc") and in_state is not None and tw < in_state:
        # sockstat and the socket table were read a moment apart while sockets churn: the
        # parts cannot be told apart then, so none is made up.
        evidence["time_wait_state"] = in_state
        what = (f"{tw} TIME_WAIT sockets in sockstat ({in_state} in the socket table read a "
                "moment later: they churn)")
    title = f"{what}, limit {limit}"
    reasons = []
    if limit and tw >= limit:
        severity = Severity.CRITICAL
        reasons.append("TIME_WAIT is at tcp_max_tw_buckets")
    elif limit and tw >= BUCKET_WARN_SHARE * limit:
        severity = Severity.WARNING
        reasons.append(f"TIME_WAIT is at {tw * 100 // limit}% of tcp_max_tw_buckets")
    if overflow is not None:
        # Any overflow skipped TIME_WAIT protection: one is notable; growth is critical.
        verdict = judge(overflow, notable=1, grow=Severity.CRITICAL)
        if verdict.severity > Severity.OK:
            severity = max(severity, verdict.severity)
            reasons.append(verdict.text)
    if reasons:
        title = "; ".join(reasons) + f" ({what}, limit {limit})"
    return make(BUCKET, severity, title, evidence)


def _flood(facts: Facts) -> Finding | None:
    census = facts.census
    if census is None:
        return None
    total = census.by_state.get("TIME_WAIT", 0)
    budget = port_budget(facts)
    usable = budget["usable_ports"] if budget else None
    reuse = facts.sysctl.get_int("net.ipv4.tcp_tw_reuse") if facts.sysctl else None
    timestamps = facts.sysctl.get_int("net.ipv4.tcp_timestamps") if facts.sysctl else None
    rate = rates(facts)
    roles = census.timewait_roles
    in_use = dict(census.by_destination.items) if census.by_destination else {}
    dests, pressure = [], []
    if census.timewait_by_destination and budget:
        for key, n in census.timewait_by_destination.items[:10]:
            dp = destination_ports(facts, key, in_use.get(key, n), n, total, rate)
            if dp is None:
                continue
            entry = dp.evidence()
            entry["share_of_ports_held_by_time_wait"] = round(dp.time_wait_holding / usable, 3) \
                if usable else None
            dests.append(entry)
            pressure.append(dp)
    server = []
    if census.timewait_server_side:
        for (lport, peer), n in census.timewait_server_side.items[:10]:
            server.append({"local_port": lport, "peer": peer, "time_wait": n})
    closes, source = _close_rate(total, rate)
    measured = rate is not None and rate.closes_first is not None
    evidence: dict[str, Any] = {
        "time_wait": total,
        "closes_per_s": round(closes, 1),
        "rate_source": source,
        "rate_measured": measured,
        "active_closer": {
            "this_host_as_client": roles.get("client", 0),
            "this_host_as_server": roles.get("server", 0),
            "unclassified": roles.get("other", 0),
        },
        "top_destinations": dests,
        "top_server_side": server,
        "time_wait_seconds": TIME_WAIT_SECONDS,
        "tcp_tw_reuse": reuse,
        "tcp_tw_reuse_delay_ms": facts.sysctl.get_int("net.ipv4.tcp_tw_reuse_delay")
        if facts.sysctl else None,
        "tcp_timestamps": timestamps,
        "tcp_fin_timeout": facts.sysctl.get_int("net.ipv4.tcp_fin_timeout")
        if facts.sysctl else None,
    }
    if rate is not None:
        evidence["rates"] = rate.evidence()
    if usable:
        evidence["usable_ephemeral_ports"] = usable
    # A pile is draining when the closes measured would keep well under the TIME_WAIT
    # sockets there are: what is left of a burst that ended, not a flood going on.
    draining = measured and closes * TIME_WAIT_SECONDS < DRAINING_SHARE * total
    if measured:
        evidence["draining"] = draining
    side = "as client" if roles.get("client", 0) >= roles.get("server", 0) else "as server"
    severity = Severity.OK
    title = f"{total} TIME_WAIT sockets ({_rate_text(closes, rate)})"
    recommendation = "Nothing to do: TIME_WAIT holds no resource that is running short."
    detail = ""
    worst = max(pressure, key=lambda dp: dp.time_wait_holding, default=None)
    if worst is not None and usable and worst.time_wait_holding >= FLOOD_DEST_SHARE * usable:
        where = f"{worst.destination}:{worst.port}"
        held = (f"{worst.time_wait} TIME_WAIT toward {where}: {worst.time_wait_holding} hold "
                f"their source port, {worst.time_wait_holding * 100 // usable}% of the "
                f"{usable} usable")
        if worst.rate_measured and worst.holding_at_rate < FLOOD_DEST_SHARE * usable:
            # Measured, and the rate does not sustain the pile: it drains within 60 s.
            severity = Severity.INFO
            title = (f"{held}, draining: {_rate_text(worst.closes_per_s, rate)} toward it, "
                     f"which would hold {worst.holding_at_rate}; not an ongoing flood")
            detail = (f"{worst.reuse.why}. These TIME_WAIT sockets are what earlier closes "
                      f"left: at the rate measured {_over(rate)} the pile shrinks, since each "
                      "frees its port at most 60 s after it closed and new closes replace "
                      "few of them. They are a flood only if the burst that made them comes "
                      "back.")
            recommendation = ("Nothing to do now: the pile drains by itself within 60 s. If "
                              "the burst that made it recurs (run again with --interval while "
                              "it happens): " + outgoing_advice(worst))
        else:
            severity = Severity.WARNING
            title = (f"{held} (this host closes first: "
                     f"{_rate_text(worst.closes_per_s, rate)})")
            detail = f"{worst.reuse.why}."
            recommendation = outgoing_advice(worst)
    elif (unsure := _unsure(pressure, usable)) is not None:
        # Reuse applies, but how many are younger than its delay (and so hold their port)
        # needs the close rate, not measured here: never "nothing to do" then.
        severity = Severity.INFO
        where = f"{unsure.destination}:{unsure.port}"
        title = (f"{unsure.time_wait} TIME_WAIT toward {where} ({_rate_text(closes, rate)}): "
                 f"connect() takes them back once {unsure.reuse.delay_ms} ms old; whether "
                 "they are younger needs the close rate (see ports.ephemeral_exhaustion)")
        detail = f"{unsure.reuse.why}."
        recommendation = ("Run again with --interval 5 (or keep --state-dir history) to "
                          "measure the close rate: below the ports over the reuse delay "
                          "they are free; above it, " + outgoing_advice(unsure))
    elif total >= FLOOD_INFO_COUNT:
        severity = Severity.INFO
        title = (f"{total} TIME_WAIT sockets ({_rate_text(closes, rate)}"
                 + ("; draining" if draining else "")
                 + f"), mostly closed first by this host {side}")
        recommendation = _info_advice(side, pressure)
        if draining:
            detail = (f"At the rate measured {_over(rate)} the count falls: these are "
                      "what earlier closes left, and each goes at most 60 s after it closed.")
    if rate is None and side == "as server" and total:
        detail += (" On the server side a new SYN from the same client takes over its "
                   "TIME_WAIT socket, so the count understates the rate: run with --interval "
                   "or --state-dir.")
    return make(FLOOD, severity, title, evidence, detail.strip(), recommendation)


def _unsure(pressure: list, usable: int | None):
    """The destination whose TIME_WAIT may hold its ports, unmeasured: reuse applies, no
    close rate, and the ports occupied (TIME_WAIT included) reach FLOOD_DEST_SHARE."""
    if not usable:
        return None
    unsure = [dp for dp in pressure if dp.reuse.applies and not dp.rate_measured and
              not dp.ages_known and dp.time_wait and dp.occupied >= FLOOD_DEST_SHARE * usable]
    return max(unsure, key=lambda dp: dp.occupied, default=None)


def _rate_text(closes: float, rate) -> str:
    """The close rate as a headline says it: measured (and over what), or estimated."""
    if rate is not None and rate.closes_first is not None:
        return f"{_fmt(closes)} closes/s measured {_over(rate)}"
    return f"≈ {_fmt(closes)} closes/s estimated from the count, not measured"


def _over(rate) -> str:
    if rate.since == "previous run":
        return f"over the {round(rate.seconds, 1):g} s since the previous run"
    return f"over the {round(rate.seconds, 1):g} s {rate.since}"


def _close_rate(total: int, rate) -> tuple[float, str]:
    """Connections closed first per second: from the counters when there is a baseline."""
    if rate is not None and rate.closes_first is not None:
        return rate.closes_first, (f"TcpExt.TW + TWKilled + TCPTimeWaitOverflow over "
                                   f"{rate.seconds:g} s ({rate.since}): measured")
    return total / TIME_WAIT_SECONDS, ("TIME_WAIT count / 60 s, not measured: assumes a "
                                       "steady rate and no reuse; run with --interval or "
                                       "--state-dir for the counters' rate")


def _info_advice(side: str, pressure: list) -> str:
    if side == "as server":
        return ("Let clients keep their connections (HTTP keep-alive, pools) or let them close "
                "first; tcp_tw_reuse has no effect on accepted connections, and TIME_WAIT on "
                "a server costs only memory.")
    if pressure:
        return outgoing_advice(max(pressure, key=lambda dp: dp.time_wait))
    return "Reuse connections (keep-alive, pools) on the side that closes first."


def _fmt(rate: float) -> str:
    """A rate, readably rounded."""
    if rate == 0:
        return "0"
    return f"{rate:.0f}" if rate >= 10 else f"{rate:.1f}"


def _conf_value(key: str, raw: str) -> Any:
    """A value written in a sysctl.d file, typed as the kernel would read it; text the kernel
    would refuse stays as written."""
    typed = sysctl_value(key, raw)
    return raw if typed is None else typed


def _recycle(facts: Facts) -> Finding | None:
    if facts.sysctl_conf is None:
        return None
    hits = [
        {"file": s.file, "line": s.line, "value": _conf_value(s.key, s.value)}
        for s in facts.sysctl_conf.settings
        if s.key == "net.ipv4.tcp_tw_recycle"
    ]
    live = facts.sysctl.get_int("net.ipv4.tcp_tw_recycle") if facts.sysctl else None
    evidence: dict[str, Any] = {"configured_in": hits,
                                "files_read": len(facts.sysctl_conf.files_read),
                                "kernel": facts.kernel,
                                "kernel_has_tcp_tw_recycle": live is not None}
    if live:
        evidence["running_value"] = live
    if not hits and not live:
        return make(RECYCLE, Severity.OK, "tcp_tw_recycle is not configured", evidence)
    where = ", ".join(f"{h['file']}:{h['line']}" for h in hits) or "the running kernel"
    return make(RECYCLE, Severity.WARNING, f"tcp_tw_recycle set in {where}", evidence)


def check(facts: Facts) -> list[Finding]:
    return [f for f in (_bucket(facts), _flood(facts), _recycle(facts)) if f is not None]
