"""Verdicts an on-call review found misleading: each test pins the facts it saw and the
verdict they call for (closewait, timewait.flood, keepalive, buffers)."""

from __future__ import annotations

import socket

from netdiag.collect.census import CensusBuilder
from netdiag.facts import (
    CLOSE_WAIT,
    LISTEN,
    Census,
    ConnectionDetails,
    CounterFacts,
    Facts,
    KeepaliveGroup,
    ProcessFacts,
    ProcessInfo,
    SysctlFacts,
    TopCounts,
)
from netdiag.model import Severity
from netdiag.rules import closewait, keepalive, ports, timewait

LO = socket.inet_aton("127.0.0.1") + bytes(12)
ANY = bytes(16)

# ---- closewait: sockets still in an accept queue (no inode) --------------------------------


def _census_with_unaccepted(held: int = 60, queued: int = 5) -> Census:
    """`held` CLOSE_WAIT sockets accepted on port 9000 (inodes 1000...), `queued` ones still
    in the accept queue of a listener on 0.0.0.0:8080 that nobody accepts from: ss shows
    them with ino:0."""
    b = CensusBuilder("netlink", (32768, 60999))
    b.add(2, LISTEN, 0, ANY, 8080, ANY, 0, queued, 128, 77)
    b.add(2, LISTEN, 0, ANY, 9000, ANY, 0, 0, 128, 78)
    for i in range(held):
        b.add(2, CLOSE_WAIT, 0, LO, 9000, LO, 40000 + i, 1, 0, 1000 + i)
    for i in range(queued):
        b.add(2, CLOSE_WAIT, 0, LO, 8080, LO, 50000 + i, 1, 0, 0)
    return b.finish()


def _leaky(census: Census) -> Facts:
    procs = ProcessFacts(owners={i: 4242 for i in census.close_wait_inodes},
                         processes={4242: ProcessInfo(4242, "leaky", "leaky", 80, 61)})
    return Facts(census=census, processes=procs)


def test_census_keeps_close_wait_without_inode_apart():
    census = _census_with_unaccepted()
    assert census.by_state["CLOSE_WAIT"] == 65
    assert len(census.close_wait_inodes) == 60
    assert census.close_wait_no_inode == {8080: 5}
    assert len(census.close_wait_no_inode_keys) == 5


def test_closewait_accounts_for_sockets_in_an_accept_queue():
    f = closewait.check(_leaky(_census_with_unaccepted()))[0]
    ev = f.evidence
    # Every CLOSE_WAIT socket is accounted for, and the 5 are not "held by a process".
    assert ev["close_wait"] == 65
    assert (ev["held_by_processes"], ev["unattributed"], ev["in_accept_queue"]) == (60, 0, 5)
    assert ev["held_by_processes"] + ev["unattributed"] + ev["in_accept_queue"] == 65
    [row] = ev["in_accept_queue_by_port"]
    assert (row["local_port"], row["close_wait"]) == (8080, 5)
    assert row["listeners"][0]["address"] == "0.0.0.0"
    assert row["listeners"][0]["accept_queue"] == 5
    assert f.severity is Severity.WARNING  # the 60 held by one process are a leak
    assert "60 held by pid 4242 (leaky) on local port 9000" in f.title
    assert "5 never accepted, in the accept queue of the listener on port 8080" in f.title
    assert "no process holds them" in f.explanation
    assert "backlog.accept_queue_full" in f.recommendation


def test_closewait_interval_keeps_the_unaccepted_ones():
    facts = _leaky(_census_with_unaccepted())
    facts.census_before = _census_with_unaccepted()
    facts.interval = 2.0
    ev = closewait.check(facts)[0].evidence
    assert ev["still_close_wait_after_interval"] == 65
    assert ev["still_in_accept_queue_after_interval"] == 5
    # New queued sockets (other four-tuples) are not "still" there.
    later = _census_with_unaccepted(queued=0)
    b = CensusBuilder("netlink", (32768, 60999))
    for i in range(5):
        b.add(2, CLOSE_WAIT, 0, LO, 8080, LO, 51000 + i, 1, 0, 0)
    later.close_wait_no_inode_keys = b.finish().close_wait_no_inode_keys
    facts.census_before = later
    assert closewait.check(facts)[0].evidence["still_in_accept_queue_after_interval"] == 0


def test_closewait_only_in_an_accept_queue_is_no_descriptor_leak():
    census = _census_with_unaccepted(held=0, queued=5)
    f = closewait.check(Facts(census=census, processes=ProcessFacts()))[0]
    assert f.severity is Severity.INFO
    assert f.evidence["in_accept_queue"] == 5 and f.evidence["unattributed"] == 0
    assert "owner not known" not in f.title
    assert "port 8080" in f.title
    assert "backlog.accept_queue_full" in f.recommendation
    assert "has not called close()" not in f.explanation
    for leak_advice in ("Fix the application named", "restarting the process",
                        "Find the process that holds them"):
        assert leak_advice not in f.recommendation
    # Still there over --interval: nobody accepts from that listener.
    facts = Facts(census=census, processes=ProcessFacts(),
                  census_before=_census_with_unaccepted(held=0, queued=5), interval=2.0)
    f = closewait.check(facts)[0]
    assert "nobody accepts from it" in f.title
    assert f.severity is Severity.INFO



# ---- timewait.flood: the rate that was measured, not the one the pile suggests ---------------


def _burst_left(tw_delta: int = 0, opens_delta: int = 0, seconds: float = 3.0,
                baseline: str | None = "interval") -> Facts:
    """8300 TIME_WAIT toward 10.0.0.5:443 (29% of the default range's 28232 ports, no reuse
    toward a remote peer), and over `seconds` the counters moved by the deltas given."""
    key = ("10.0.0.1", "10.0.0.5", 443)
    census = Census(source="test", by_state={"TIME_WAIT": 8300},
                    by_destination=_top([(key, 8300)]), timewait_by_destination=_top([(key, 8300)]),
                    timewait_server_side=_top([]),
                    timewait_roles={"client": 8300, "server": 0, "other": 0})
    sysctl = SysctlFacts(values={
        "net.ipv4.ip_local_port_range": "32768 60999", "net.ipv4.ip_local_reserved_ports": "",
        "net.ipv4.tcp_tw_reuse": "2", "net.ipv4.tcp_timestamps": "1",
        "net.ipv4.tcp_tw_reuse_delay": "1000", "net.ipv4.tcp_fin_timeout": "60"})
    facts = Facts(sysctl=sysctl, census=census)
    if baseline is None:
        return facts
    names = {"Tcp": ("ActiveOpens", "PassiveOpens"),
             "TcpExt": ("TW", "TWKilled", "TCPTimeWaitOverflow", "TWRecycled")}
    before = {p: {n: 1_000_000 for n in ns} for p, ns in names.items()}
    now = {p: dict(v) for p, v in before.items()}
    now["TcpExt"]["TW"] += tw_delta
    now["Tcp"]["ActiveOpens"] += opens_delta
    facts.counters_before = CounterFacts(counters=before, taken_at=100.0)
    facts.counters = CounterFacts(counters=now, taken_at=100.0 + seconds)
    facts.interval, facts.baseline = seconds, baseline
    return facts


def _top(items):
    return TopCounts(items=list(items), distinct_seen=len(items), pruned=0, approximate=False)


def test_a_draining_pile_is_not_an_ongoing_flood():
    f = timewait._flood(_burst_left())
    ev = f.evidence
    assert ev["closes_per_s"] == 0 and ev["rate_measured"] and ev["draining"]
    row = ev["top_destinations"][0]
    # The headline and the evidence give the same, measured rate: never the count / 60 s.
    assert row["closes_per_s"] == 0 and row["rate_measured"]
    assert "138" not in f.title and "≈" not in f.title
    assert "0 closes/s measured over the 3 s interval" in f.title
    assert "draining" in f.title and "not an ongoing flood" in f.title
    assert f.severity is Severity.INFO
    assert "Nothing to do now" in f.recommendation
    # ports.ephemeral_exhaustion says the same rate.
    ex = ports._exhaustion(_burst_left()).evidence["destinations"][0]
    assert ex["closes_per_s"] == 0 and ex["rate_measured"]


def test_the_probe_window_is_a_measured_rate_too():
    f = timewait._flood(_burst_left(seconds=3.0, baseline="probe window"))
    assert "measured over the 3 s probe window" in f.title
    assert f.severity is Severity.INFO and f.evidence["draining"]


def test_a_flood_that_goes_on_warns_with_the_measured_rate():
    f = timewait._flood(_burst_left(tw_delta=420, opens_delta=420))  # 140/s × 60 s = 8400
    assert f.severity is Severity.WARNING
    assert "this host closes first: 140 closes/s measured over the 3 s interval" in f.title
    assert not f.evidence["draining"]
    assert f.evidence["top_destinations"][0]["time_wait_holding_at_rate"] == 8400


def test_without_a_measurement_the_estimate_says_so():
    f = timewait._flood(_burst_left(baseline=None))
    assert f.severity is Severity.WARNING
    assert "≈ 138 closes/s estimated from the count, not measured" in f.title
    assert not f.evidence["rate_measured"] and "draining" not in f.evidence
    assert "not measured" in f.evidence["top_destinations"][0]["rate_source"]


def test_ports_held_by_a_draining_pile_are_said_to_drain():
    def narrowed(**kw):
        f = _burst_left(**kw)
        f.census.by_state["TIME_WAIT"] = 400
        key = ("10.0.0.1", "10.0.0.5", 443)
        f.census.by_destination = _top([(key, 400)])
        f.census.timewait_by_destination = _top([(key, 400)])
        f.sysctl.values["net.ipv4.ip_local_port_range"] = "40000 40999"
        return f

    drained = ports._exhaustion(narrowed())  # 40% held now, nothing closing
    assert drained.severity is Severity.INFO
    assert "draining: the 400 in TIME_WAIT free their ports within 60 s" in drained.title
    assert drained.evidence["destinations"][0]["ports_held_at_rate"] == 0
    going_on = ports._exhaustion(narrowed(tw_delta=21))  # 7/s × 60 s = 420 held
    assert going_on.severity is Severity.WARNING and "draining" not in going_on.title
    assert ports._exhaustion(narrowed(baseline=None)).severity is Severity.WARNING


# ---- keepalive.slow_detection: the sockets that use the sysctls, and advice that fits them ----


def _redis_and_one_other(idle_without: int = 12) -> Facts:
    """6 keepalive sockets: 5 redis connections on port 6380 whose timers show 60 s (redis
    --tcp-keepalive 60 sets TCP_KEEPIDLE), 1 toward port 5432 on the sysctl's 7200 s; and
    connections idle over 10 min without keepalive."""
    redis = KeepaliveGroup("local_port", 6380, 5, 0, 60_000, 58_000, [61])
    other = KeepaliveGroup("remote_port", 5432, 1, 0, 7_199_000, 7_199_000, [62])
    d = ConnectionDetails(established=6 + idle_without, keepalive_timer=6,
                          no_timer=idle_without, long_idle_without_keepalive=idle_without,
                          keepalive_groups=[redis, other])
    procs = ProcessFacts(owners={61: 10, 62: 11},
                         processes={10: ProcessInfo(10, "redis-server", "", 30, 8),
                                    11: ProcessInfo(11, "worker", "", 30, 8)})
    sysctl = SysctlFacts(values={"net.ipv4.tcp_keepalive_time": "7200",
                                 "net.ipv4.tcp_keepalive_intvl": "75",
                                 "net.ipv4.tcp_keepalive_probes": "9"})
    return Facts(sysctl=sysctl, details=d, processes=procs)


def test_keepalive_title_counts_only_the_sockets_on_the_sysctls():
    f = keepalive.check(_redis_and_one_other())[0]
    assert f.severity is Severity.WARNING
    assert "1 of 6 keepalive socket(s) use the sysctls: 2 h 11 min 15 s; 5 set their own" \
        in f.title
    assert "keepalive sockets need" not in f.title
    ev = f.evidence
    assert (ev["keepalive_using_sysctls"], ev["keepalive_own_setting"],
            ev["keepalive_setting_unknown"]) == (1, 5, 0)


def test_keepalive_advice_fits_the_sockets_it_is_for():
    f = keepalive.check(_redis_and_one_other())[0]
    rec = f.recommendation
    # SO_KEEPALIVE only for the connections without it, named as such.
    assert "The 12 connection(s) idle over 10 min without keepalive" in rec
    assert rec.count("SO_KEEPALIVE") == 1
    # The one on the sysctls: lower them, or per-socket timers; the redis ones are left alone.
    assert "For the 1 keepalive socket(s) that use the sysctls (toward port 5432" in rec
    assert "TCP_KEEPIDLE/TCP_KEEPINTVL/TCP_KEEPCNT" in rec
    assert "tcp_keepalive_time=600" in rec
    assert "The 5 that set their own TCP_KEEPIDLE (local port 6380, redis-server)" in rec
    # Without the idle connections, nothing calls for SO_KEEPALIVE: they all have it.
    f = keepalive.check(_redis_and_one_other(idle_without=0))[0]
    assert f.severity is Severity.INFO
    assert f.title.startswith("1 of 6 keepalive socket(s) use the sysctls: 2 h 11 min 15 s "
                              "(the kernel default); 5 set their own")
    assert "SO_KEEPALIVE" not in f.recommendation
