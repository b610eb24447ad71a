"""Keepalive: how long the kernel takes to notice a dead peer, and who is not covered."""

from __future__ import annotations

from typing import Any

from netdiag.facts import Facts, KeepaliveGroup
from netdiag.model import Finding, Rule, RuleSpec, Severity
from netdiag.rules._util import duration, make

TOPIC = "keepalive"
SUMMARY = "TCP keepalive: time to detect a dead peer, and connections without keepalive"

# Detection slower than this is "slow" (the default, 7875 s, is); up to it is "short".
SLOW_SECONDS = 1800
# Long-idle connections without keepalive that make slow settings a warning.
IDLE_WITHOUT_KEEPALIVE_WARN = 10
# A socket's keepalive idle time (estimated from its timer) this far from the sysctl's is
# its own TCP_KEEPIDLE: share of the sysctl, plus a margin for the timer's granularity.
OWN_SETTING_SHARE = 0.1
OWN_SETTING_MARGIN_S = 2.0
GROUPS_SHOWN = 10

BACKGROUND = (
    "Keepalive applies only to sockets whose application set SO_KEEPALIVE. After "
    "tcp_keepalive_time seconds without data the kernel sends a probe, then one every "
    "tcp_keepalive_intvl seconds, and resets the connection after tcp_keepalive_probes "
    "unanswered ones: 7200 + 75 × 9 = 7875 s (2 h 11 min 15 s) by default. Per-socket "
    "TCP_KEEPIDLE, TCP_KEEPINTVL and TCP_KEEPCNT override the sysctls. TCP_USER_TIMEOUT, when "
    "set, decides instead (it is not visible through sock_diag). Without keepalive, an idle "
    "connection to a dead peer stays ESTABLISHED forever. A connection with unacknowledged "
    "data gives up after tcp_retries2 retransmissions (~924.6 s by default). Keepalive still "
    "does not replace an application heartbeat: middleboxes may drop or answer probes, and "
    "the kernel answers them even when the process is stuck."
)

SLOW = RuleSpec(
    id="keepalive.slow_detection",
    topic=TOPIC,
    title="Dead peers are detected slowly (or not at all)",
    rule=Rule(
        text="tcp_keepalive_time: how often TCP sends out keepalive messages when keepalive "
             "is enabled (default 2 hours). tcp_keepalive_probes: how many probes TCP sends "
             "out until it decides the connection is broken (default 9). tcp_keepalive_intvl: "
             "how frequently the probes are sent out (default 75 s). Keepalive applies only "
             "to sockets with SO_KEEPALIVE.",
        source="Documentation/networking/ip-sysctl.rst: tcp_keepalive_time, "
               "tcp_keepalive_probes, tcp_keepalive_intvl; tcp(7); socket(7) SO_KEEPALIVE",
    ),
    explanation=(
        "A peer that vanished without a FIN or RST (host crash, cable pulled, NAT or firewall "
        "state expired) leaves the connection ESTABLISHED here. With SO_KEEPALIVE, the kernel "
        "notices after time + intvl × probes seconds; without it, never, unless the "
        "application writes and the retransmissions time out. NAT gateways, load balancers "
        "and conntrack often forget idle flows after minutes, far below the 2-hour default, "
        "so the first probe may come too late anyway."
    ),
    recommendation=(
        "Set SO_KEEPALIVE in the application, with TCP_KEEPIDLE/TCP_KEEPINTVL/TCP_KEEPCNT "
        "suited to it (e.g. 60/10/6: about 2 minutes), or shorten the sysctls for every "
        "keepalive socket in this namespace (e.g. tcp_keepalive_time=600, "
        "tcp_keepalive_intvl=30, tcp_keepalive_probes=5). Keep an application-level "
        "heartbeat too: it also catches a stuck process, which keepalive cannot."
    ),
    thresholds=f"ok up to {SLOW_SECONDS} s, or with no established connection; info above "
               "(the default 7875 s included); warning "
               f"when also {IDLE_WITHOUT_KEEPALIVE_WARN} or more connections idle over 10 min "
               "have no keepalive",
)

SPECS = (SLOW,)


def group_setting(g: KeepaliveGroup, sysctl_time: int) -> str:
    """Whose keepalive idle time a group's sockets run on, from their timers: "sysctl",
    "own", "own (longer)", or "unknown (all probing)" (symptoms-and-limits.md §5)."""
    if g.idle_estimate_min_ms is None:
        return "unknown (all probing)"
    est = g.idle_estimate_max_ms / 1000
    margin = sysctl_time * OWN_SETTING_SHARE + OWN_SETTING_MARGIN_S
    if est < sysctl_time - margin:
        return "own"
    if est > sysctl_time + margin:
        return "own (longer)"
    return "sysctl"


def keepalive_groups(facts: Facts, sysctl_time: int) -> list[dict[str, Any]]:
    """Keepalive sockets per service with the idle time their timers show, and whether that
    is the sysctl's or the application's own (symptoms-and-limits.md §5)."""
    d = facts.details
    if d is None:
        return []
    procs = facts.processes
    rows = []
    for g in d.keepalive_groups[:GROUPS_SHOWN]:
        row: dict[str, Any] = {g.side: g.port, "sockets": g.sockets,
                               "probing_unanswered": g.probing}
        if g.idle_estimate_min_ms is not None:
            row["keepalive_idle_s"] = round(g.idle_estimate_max_ms / 1000, 1)
        row["setting"] = group_setting(g, sysctl_time)
        holders = [pid for inode in g.inodes for pid in
                   (procs.holders_of(inode) if procs is not None else [])]
        if holders:
            info = procs.processes.get(holders[0])
            row.update(pid=holders[0], command=info.command if info else "")
        rows.append(row)
    return rows


def _census(facts: Facts, sysctl_time: int) -> dict[str, int]:
    """Keepalive sockets by whose timer they follow, over every group (not only those shown):
    the sysctls', their own, or not known (probing, or beyond the groups kept)."""
    d = facts.details
    out = {"keepalive_sockets": d.keepalive_timer, "using_sysctls": 0, "own_setting": 0}
    for g in d.keepalive_groups:
        setting = group_setting(g, sysctl_time)
        if setting == "sysctl":
            out["using_sysctls"] += g.sockets
        elif setting.startswith("own"):
            out["own_setting"] += g.sockets
    out["setting_unknown"] = max(
        out["keepalive_sockets"] - out["using_sysctls"] - out["own_setting"], 0)
    return out


def _who_uses(counts: dict[str, int], seconds: int, note: str = "") -> str:
    """'1 of 6 keepalive sockets use the sysctls: 2 h 11 min 15 s; 5 set their own'."""
    total, on, own = (counts["keepalive_sockets"], counts["using_sysctls"],
                      counts["own_setting"])
    unknown = counts["setting_unknown"]
    if on == 0 and own and not unknown:
        return (f"the {own} keepalive socket(s) set their own timers; the sysctls "
                f"({duration(seconds)}) apply to none of them")
    text = f"{on} of {total} keepalive socket(s) use the sysctls: {duration(seconds)}{note}"
    if own:
        text += f"; {own} set their own"
    if unknown:
        text += f"; {unknown} not known (probing, or not grouped)"
    return text


def check(facts: Facts) -> list[Finding]:
    if facts.sysctl is None:
        return []
    t = facts.sysctl.get_int("net.ipv4.tcp_keepalive_time")
    i = facts.sysctl.get_int("net.ipv4.tcp_keepalive_intvl")
    p = facts.sysctl.get_int("net.ipv4.tcp_keepalive_probes")
    if t is None or i is None or p is None:
        return []
    seconds = t + i * p
    evidence: dict[str, Any] = {
        "tcp_keepalive_time": t, "tcp_keepalive_intvl": i, "tcp_keepalive_probes": p,
        "detection_seconds": seconds, "detection": duration(seconds),
        "tcp_retries2": facts.sysctl.get_int("net.ipv4.tcp_retries2"),
    }
    d = facts.details
    idle_rows = []
    groups = keepalive_groups(facts, t)
    counts = None
    if d is not None:
        procs = facts.processes
        evidence.update(
            established=d.established,
            showing_keepalive_timer=d.keepalive_timer,
            no_timer_keepalive_off=d.no_timer,
            retransmit_timer_unknown=d.retransmit_timer,
            idle_over_10min_without_keepalive=d.long_idle_without_keepalive,
            idle_over_10min_with_keepalive=d.long_idle_with_keepalive,
        )
        for c in d.idle_without_keepalive[:10]:
            row: dict[str, Any] = {"local_address": c.source, "local_port": c.sport,
                                   "peer_address": c.destination, "peer_port": c.dport,
                                   "idle_s": c.idle_ms // 1000}
            pid = procs.owners.get(c.inode) if procs is not None else None
            info = procs.processes.get(pid) if pid is not None else None
            row.update(pid=pid, command=info.command if info and info.command else None)
            idle_rows.append(row)
        evidence["idle_without_keepalive"] = idle_rows
        evidence["keepalive_sockets_by_service"] = groups
        counts = _census(facts, t)
        # Which timer each keepalive socket follows: the detection time above is only theirs
        # that use the sysctls.
        evidence.update(keepalive_using_sysctls=counts["using_sysctls"],
                        keepalive_own_setting=counts["own_setting"],
                        keepalive_setting_unknown=counts["setting_unknown"])
        evidence["per_socket_source"] = (
            "the keepalive timer of each socket: idiag_expires + time since it last "
            "received (exact for a socket idle since the timer was armed); TCP_KEEPINTVL and "
            "TCP_KEEPCNT are not visible this way")
    else:
        evidence["per_connection"] = "not collected (needs netlink sock_diag)"
    own = [g for g in groups if g["setting"].startswith("own")]
    on_sysctl = [g for g in groups if g["setting"] == "sysctl"]
    probing = sum(g["probing_unanswered"] for g in groups)
    slow = seconds > SLOW_SECONDS
    uncovered = d.long_idle_without_keepalive if d is not None else 0
    known = counts is not None and counts["keepalive_sockets"] > 0
    detail = f"Here: {t} + {i} × {p} = {seconds} s for sockets that use the sysctls."
    if own:
        detail += (" " + "; ".join(_own_text(g) for g in own[:3]) + ": for those sockets the "
                   "sysctl defaults do not apply (they set TCP_KEEPIDLE themselves).")
    if probing:
        detail += (f" {probing} socket(s) are sending keepalive probes that the peer does not "
                   "answer: it may be gone.")
    if not slow:
        severity = Severity.OK
        title = f"a dead peer is detected after {duration(seconds)} ({seconds} s)"
    elif uncovered >= IDLE_WITHOUT_KEEPALIVE_WARN:
        severity = Severity.WARNING
        title = f"{uncovered} connections idle over 10 min have no keepalive; "
        if known:
            title += _who_uses(counts, seconds)
        elif counts is not None:
            title += (f"no socket uses keepalive (with SO_KEEPALIVE and the sysctls: "
                      f"{duration(seconds)})")
        else:
            title += f"keepalive sockets that use the sysctls need {duration(seconds)}"
    elif d is not None and d.established == 0:  # no connection relies on it: nothing to do
        severity = Severity.OK
        title = (f"a dead peer would be detected after {duration(seconds)} ({seconds} s); "
                 "no established connection now")
    elif own and not on_sysctl and not counts["using_sysctls"]:
        severity = Severity.OK
        n = counts["own_setting"]
        title = (f"{n} keepalive socket(s) set their own timers ({_own_text(own[0])}); the "
                 f"sysctls ({duration(seconds)}) apply to none of them")
    else:
        severity = Severity.INFO
        default = t == 7200 and i == 75 and p == 9
        if known:
            title = _who_uses(counts, seconds, " (the kernel default)" if default else "")
        else:
            title = f"a dead peer is detected after {duration(seconds)} ({seconds} s)"
            if default:
                title += ": the kernel default"
            if counts is not None:
                title += "; no socket uses keepalive now"
    recommendation = _advice(severity, seconds, counts, on_sysctl, own, idle_rows, uncovered)
    return [make(SLOW, severity, title, evidence, detail, recommendation)]


HEARTBEAT = ("Keep an application-level heartbeat too: it also catches a stuck process, which "
             "keepalive cannot.")
SYSCTL_EXAMPLE = ("lower the sysctls for this namespace (e.g. tcp_keepalive_time=600, "
                  "tcp_keepalive_intvl=30, tcp_keepalive_probes=5: 12 min 30 s)")
PER_SOCKET = "TCP_KEEPIDLE/TCP_KEEPINTVL/TCP_KEEPCNT (e.g. 60/10/6: about 2 minutes)"


def _advice(severity: Severity, seconds: int, counts: dict[str, int] | None,
            on_sysctl: list[dict[str, Any]], own: list[dict[str, Any]],
            idle_rows: list[dict[str, Any]], uncovered: int) -> str:
    """What to do, for the sockets it is about: SO_KEEPALIVE only for those without it,
    the sysctls or per-socket timers for those that use the sysctls."""
    if counts is None and severity is Severity.OK:
        return (f"Nothing to change: a dead peer is detected after {duration(seconds)} on "
                "keepalive sockets that use the sysctls.")
    if counts is None:  # no per-socket facts: say who each piece of advice is for
        return ("Sockets with SO_KEEPALIVE use these sysctls unless they set their own "
                f"{PER_SOCKET}: {SYSCTL_EXAMPLE}, or set those options per socket. "
                "Applications that need to notice a dead peer and do not set SO_KEEPALIVE "
                f"must set it. {HEARTBEAT}")
    out = []
    if uncovered and severity > Severity.OK:
        where = " (the longest idle are in the evidence)" if idle_rows else ""
        out.append(f"The {uncovered} connection(s) idle over 10 min without keepalive{where} "
                   f"never notice a dead peer: set SO_KEEPALIVE in their application, with "
                   f"{PER_SOCKET} suited to it.")
    if counts["using_sysctls"] and severity > Severity.OK:
        where = ", ".join(_own_text(g).split(":")[0] for g in on_sysctl[:3])
        out.append(f"For the {counts['using_sysctls']} keepalive socket(s) that use the "
                   f"sysctls ({where}): {SYSCTL_EXAMPLE}, or have their application set "
                   f"{PER_SOCKET} on them.")
    if counts["keepalive_sockets"] == 0 and not uncovered and severity > Severity.OK:
        out.append("No socket here uses keepalive, so the sysctls apply to none now; an "
                   "application that must notice a dead peer sets SO_KEEPALIVE, with "
                   f"{PER_SOCKET}.")
    if own:
        where = ", ".join(_own_text(g).split(":")[0] for g in own[:3])
        if severity is Severity.OK and not counts["using_sysctls"]:
            return ("Nothing to change: the applications here set their own keepalive "
                    "timers; the sysctls matter only for keepalive sockets that do not.")
        out.append(f"The {counts['own_setting']} that set their own TCP_KEEPIDLE ({where}) "
                   "are not affected by the sysctls.")
    if severity is Severity.OK and not out:
        return (f"Nothing to change: a dead peer is detected after {duration(seconds)} on "
                "keepalive sockets that use the sysctls.")
    if severity > Severity.OK:
        out.append(HEARTBEAT)
    return " ".join(out)


def _own_text(g: dict[str, Any]) -> str:
    where = (f"local port {g['local_port']}" if "local_port" in g
             else f"toward port {g['remote_port']}")
    who = f", {g['command']}" if g.get("command") else ""
    return f"{where}{who}: idle ≈ {g['keepalive_idle_s']:g} s"
