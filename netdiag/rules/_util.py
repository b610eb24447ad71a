"""Small helpers shared by rule modules (no I/O)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from netdiag.facts import Facts, parse_port_list, reserved_in_range
from netdiag.model import Finding, RuleSpec, Severity

# Length of TIME_WAIT: TCP_TIMEWAIT_LEN (60*HZ) in include/net/tcp.h, not a sysctl.
TIME_WAIT_SECONDS = 60


def make(spec: RuleSpec, severity: Severity, title: str, evidence: dict[str, Any],
         detail: str = "", recommendation: str | None = None) -> Finding:
    explanation = spec.explanation if not detail else f"{detail} {spec.explanation}"
    return Finding(
        id=spec.id,
        topic=spec.topic,
        severity=severity,
        title=title,
        evidence=evidence,
        explanation=explanation,
        recommendation=recommendation or spec.recommendation,
        rule=spec.rule,
    )


def port_budget(facts: Facts) -> dict[str, Any] | None:
    """ip_local_port_range minus ip_local_reserved_ports: the ports connect() may use."""
    if facts.sysctl is None:
        return None
    rng = facts.sysctl.get_ints("net.ipv4.ip_local_port_range")
    if not rng or len(rng) != 2:
        return None
    low, high = rng
    reserved_raw = facts.sysctl.values.get("net.ipv4.ip_local_reserved_ports", "")
    try:
        reserved = parse_port_list(reserved_raw)
    except ValueError:
        reserved = []
    in_range = reserved_in_range(reserved, low, high)
    return {
        "ip_local_port_range": [low, high],
        "range_size": high - low + 1,
        "reserved_in_range": in_range,
        "usable_ports": max(high - low + 1 - in_range, 0),
        "low": low,
        "high": high,
        "reserved": reserved,
    }


def is_reserved(port: int, reserved: list[tuple[int, int]]) -> bool:
    return any(lo <= port <= hi for lo, hi in reserved)


def endpoint(address: str, port: int) -> str:
    """address:port for prose ([v6]:port); evidence keeps the two apart, typed."""
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def is_loopback(address: str) -> bool:
    return address.startswith("127.") or address == "::1"


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    parts = []
    if h:
        parts.append(f"{h} h")
    if m:
        parts.append(f"{m} min")
    if s or not parts:
        parts.append(f"{s} s")
    return " ".join(parts)


# ---- TIME_WAIT reuse and the port budget toward one destination --------------------------
# timewait.flood and ports.ephemeral_exhaustion both judge outgoing connections with these,
# so that they agree with each other and with the kernel's reuse rules
# (symptoms-and-limits.md §3; net/ipv4/tcp_ipv4.c tcp_twsk_unique()).

# Before tcp_tw_reuse_delay existed (~6.14) the age was a hard-coded second.
DEFAULT_TW_REUSE_DELAY_MS = 1000


@dataclass(frozen=True)
class Reuse:
    """Whether connect() may take over a TIME_WAIT port toward a destination, and why."""

    applies: bool
    why: str
    setting: int | None  # tcp_tw_reuse
    delay_ms: int


def tw_reuse(facts: Facts, destination: str) -> Reuse:
    sysctl = facts.sysctl
    reuse = sysctl.get_int("net.ipv4.tcp_tw_reuse") if sysctl else None
    timestamps = sysctl.get_int("net.ipv4.tcp_timestamps") if sysctl else None
    delay = (sysctl.get_int("net.ipv4.tcp_tw_reuse_delay") if sysctl else None) \
        or DEFAULT_TW_REUSE_DELAY_MS
    if reuse is None:
        return Reuse(False, "tcp_tw_reuse could not be read", None, delay)
    if timestamps == 0:
        return Reuse(False, f"tcp_tw_reuse={reuse}, but tcp_timestamps=0: reuse needs "
                            "timestamps", reuse, delay)
    if reuse == 1:
        return Reuse(True, f"tcp_tw_reuse=1: connect() takes over TIME_WAIT ports older than "
                           f"{delay} ms (peer timestamps needed)", reuse, delay)
    if reuse == 2:
        if is_loopback(destination):
            return Reuse(True, f"tcp_tw_reuse=2 and {destination} is loopback: connect() takes "
                               f"over TIME_WAIT ports older than {delay} ms", reuse, delay)
        return Reuse(False, f"tcp_tw_reuse=2 applies to loopback only; {destination} is not "
                            "loopback", reuse, delay)
    return Reuse(False, f"tcp_tw_reuse={reuse}: TIME_WAIT ports are never reused by connect()",
                 reuse, delay)


@dataclass(frozen=True)
class Rates:
    """Namespace-wide connection rates from counter deltas (--interval or --state-dir)."""

    seconds: float
    since: str  # "interval" or "previous run"
    active_opens: float | None  # Tcp.ActiveOpens: connect()s
    passive_opens: float | None  # Tcp.PassiveOpens: accepted connections
    closes_first: float | None  # TcpExt.TW + TWKilled + TCPTimeWaitOverflow: entered TIME_WAIT
    tw_reused: float | None  # TcpExt.TWRecycled: TIME_WAIT taken over by connect()

    def evidence(self) -> dict[str, Any]:
        return {"seconds": self.seconds, "since": self.since,
                "active_opens_per_s": _r(self.active_opens),
                "passive_opens_per_s": _r(self.passive_opens),
                "closes_first_per_s": _r(self.closes_first),
                "time_wait_reused_per_s": _r(self.tw_reused)}


def _r(v: float | None) -> float | None:
    return None if v is None else round(v, 1)


def rates(facts: Facts) -> Rates | None:
    """Rates over the run's baseline, or None without one (or after a counter reset)."""
    from netdiag.rules._policy import change

    def rate(*names: tuple[str, str]) -> tuple[float | None, float | None, str | None]:
        total, seconds, since = 0.0, None, None
        for proto, name in names:
            ch = change(facts, proto, name)
            if ch is None or ch.rate is None:
                if ch is not None and ch.reset:
                    return None, None, None
                continue
            total += ch.delta or 0
            seconds, since = ch.seconds, ch.baseline
        if seconds is None:
            return None, None, None
        return total / seconds, seconds, since

    active, secs, since = rate(("Tcp", "ActiveOpens"))
    if secs is None:
        return None
    passive, _, _ = rate(("Tcp", "PassiveOpens"))
    closes, _, _ = rate(("TcpExt", "TW"), ("TcpExt", "TWKilled"),
                        ("TcpExt", "TCPTimeWaitOverflow"))
    reused, _, _ = rate(("TcpExt", "TWRecycled"))
    return Rates(secs, since or "interval", active, passive, closes, reused)


@dataclass
class DestinationPorts:
    """The source ports toward one destination (src IP, dst IP, dst port), per §3.3."""

    source: str
    destination: str
    port: int
    usable: int  # ip_local_port_range minus reserved
    in_use: int  # non-TIME_WAIT sockets
    time_wait: int
    bound_in_range: int  # listening ports inside the range: off-limits to connect()
    reuse: Reuse
    closes_per_s: float
    rate_source: str
    time_wait_holding: int  # TIME_WAIT ports connect() may not take (all, or the young ones)
    # True when closes_per_s was measured (counters over --interval, since the previous
    # --state-dir run, or over the probe window); False: estimated from the TIME_WAIT count.
    rate_measured: bool = False
    # With reuse: time_wait_holding counted from the sockets' own timers (those younger than
    # the reuse delay now), not derived from a rate.
    ages_known: bool = False

    @property
    def holding_at_rate(self) -> int:
        """The TIME_WAIT ports this destination would hold if connections kept closing at
        closes_per_s: each holds its port 60 s, or tcp_tw_reuse_delay with reuse. Below
        time_wait_holding, the pile is draining."""
        return round(self.closes_per_s * self.hold_seconds)

    @property
    def hold_seconds(self) -> float:
        """How long a TIME_WAIT socket keeps its port from connect(): tcp_tw_reuse_delay with
        reuse, 60 s without."""
        return self.reuse.delay_ms / 1000 if self.reuse.applies else TIME_WAIT_SECONDS

    @property
    def held(self) -> int:
        return self.in_use + self.time_wait_holding + self.bound_in_range

    @property
    def share(self) -> float:
        return self.held / self.usable if self.usable else 1.0

    @property
    def occupied(self) -> int:
        """Ports with a socket toward the destination now, TIME_WAIT included whether or not
        connect() could take it back, plus the listening ports inside the range: the ports a
        burst of connect() calls within tcp_tw_reuse_delay finds taken."""
        return self.in_use + self.time_wait + self.bound_in_range

    @property
    def occupied_share(self) -> float:
        return self.occupied / self.usable if self.usable else 1.0

    @property
    def burst_room(self) -> int:
        """New connections toward the destination that fit within one hold time (the reuse
        delay with reuse, 60 s without): the ports no connected socket or listener holds."""
        return max(self.usable - self.bound_in_range - self.in_use, 0)

    @property
    def sustainable_per_s(self) -> float:
        """New connections per second this destination can take when this host closes
        first: the free ports over how long each stays taken."""
        return self.burst_room / self.hold_seconds

    def evidence(self) -> dict[str, Any]:
        return {"source": self.source, "destination": self.destination, "port": self.port,
                "ports_in_use": self.in_use + self.time_wait, "time_wait": self.time_wait,
                "time_wait_holding_ports": self.time_wait_holding,
                "time_wait_ages_known": self.ages_known,
                "ports_held": self.held, "share": round(self.share, 3),
                "tw_reuse_applies": self.reuse.applies, "tw_reuse": self.reuse.why,
                "closes_per_s": round(self.closes_per_s, 1), "rate_source": self.rate_source,
                "rate_measured": self.rate_measured,
                "time_wait_holding_at_rate": self.holding_at_rate,
                "sustainable_conn_per_s": round(self.sustainable_per_s, 1)}


def destination_ports(facts: Facts, key: tuple[str, str, int], used: int, time_wait: int,
                      all_time_wait: int, rate: Rates | None) -> DestinationPorts | None:
    """`used` counts every socket toward the destination (TIME_WAIT included), as the census
    does; `all_time_wait` every TIME_WAIT socket of the namespace (to share the rate of
    sockets entering TIME_WAIT among destinations)."""
    budget = port_budget(facts)
    if budget is None:
        return None
    src, dst, dport = key
    reuse = tw_reuse(facts, dst)
    low, high = budget["low"], budget["high"]
    bound = len({lst.port for lst in (facts.census.listeners if facts.census else [])
                 if low <= lst.port <= high and not is_reserved(lst.port, budget["reserved"])})
    steady = time_wait / TIME_WAIT_SECONDS
    measured = rate is not None and rate.closes_first is not None
    if measured:
        # What was measured wins over what the pile suggests: a pile left by a burst that
        # has ended drains at no new closes, whatever its size.
        share = time_wait / all_time_wait if all_time_wait else 0.0
        closes = rate.closes_first * share
        source = (f"TcpExt.TW + TWKilled + TCPTimeWaitOverflow over {rate.seconds:g} s "
                  f"({rate.since}) × this destination's share of TIME_WAIT: measured")
    elif reuse.applies:
        closes = steady
        source = ("TIME_WAIT count / 60 s, not measured: a lower bound, since reuse takes "
                  "TIME_WAIT ports back early (run with --interval or --state-dir for the "
                  "real rate)")
    else:
        closes = steady
        source = ("TIME_WAIT count / 60 s, not measured (each holds its port for 60 s; "
                  "assumes a steady rate: run with --interval or --state-dir for the real "
                  "rate)")
    holding = time_wait
    young = _young(facts, key, reuse.delay_ms)
    if reuse.applies:  # only those younger than the delay still hold their port
        holding = min(time_wait, young if young is not None else
                      round(closes * reuse.delay_ms / 1000))
    return DestinationPorts(src, dst, dport, budget["usable_ports"], max(used - time_wait, 0),
                            time_wait, bound, reuse, closes, source, holding, measured,
                            reuse.applies and young is not None)


def _young(facts: Facts, key: tuple[str, str, int], delay_ms: int) -> int | None:
    """TIME_WAIT sockets toward the destination younger than delay_ms, from their timers as
    the census read them (None: not known, or counted against another delay)."""
    c = facts.census
    if c is None or c.timewait_young_by_destination is None or c.timewait_young_ms != delay_ms:
        return None
    for k, n in c.timewait_young_by_destination.items:
        if k == key:
            return n
    return 0


def outgoing_advice(dp: DestinationPorts, bind_hint: bool = True) -> str:
    """What helps a client that runs short of source ports toward one destination: true for
    the reuse setting it already has. `bind_hint`: also the advice for clients that bind()
    a source address before connect() (leave it out where nothing shows they do)."""
    where = f"{dp.destination}:{dp.port}"
    out = [f"Reuse connections toward {where} (keep-alive, pooling) so that fewer are opened "
           "and closed."]
    r = dp.reuse
    if r.applies:
        out.append(f"tcp_tw_reuse (now {r.setting}) already applies to this destination: "
                   f"TIME_WAIT ports come back after {r.delay_ms} ms, so at most about "
                   f"{dp.sustainable_per_s:.0f} new connections/s fit "
                   f"({dp.burst_room} per {r.delay_ms} ms); what remains is the rate of new "
                   "connections itself: spread bursts out, or open fewer.")
    elif r.setting is not None and "tcp_timestamps=0" in r.why:
        out.append("tcp_tw_reuse needs timestamps: set net.ipv4.tcp_timestamps=1 (it is 0), "
                   "on both ends.")
    elif r.setting == 2:
        out.append(f"tcp_tw_reuse=2 covers loopback only: set net.ipv4.tcp_tw_reuse=1 so that "
                   f"connect() may take over TIME_WAIT ports toward {where} once they are "
                   f"{r.delay_ms} ms old (timestamps on at both ends).")
    elif r.setting is not None:
        out.append(f"Set net.ipv4.tcp_tw_reuse=1 (2 for loopback-only traffic) so that "
                   f"connect() may take over TIME_WAIT ports once they are {r.delay_ms} ms old "
                   "(timestamps on at both ends).")
    out.append("Widen net.ipv4.ip_local_port_range (keep listening ports reserved), or spread "
               "over more source IPs or destination ports: each multiplies the budget.")
    if bind_hint:
        out.append("Use IP_BIND_ADDRESS_NO_PORT when binding a source address before "
                   "connect().")
    return " ".join(out)
