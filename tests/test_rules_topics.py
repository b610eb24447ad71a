"""Backlog, keepalive, buffers and softirq rules: recorded hosts and threshold boundaries."""

from __future__ import annotations

from netdiag.collect.gather import Plan, collect
from netdiag.context import Context
from netdiag.facts import (
    Census,
    Connection,
    ConnectionDetails,
    CounterFacts,
    Facts,
    LinkStats,
    Listener,
    ListenerSample,
    SockstatFacts,
    SoftirqFacts,
    SoftnetCpu,
    SoftnetFacts,
    SysctlFacts,
)
from netdiag.model import Severity
from netdiag.rules import TOPICS, backlog, buffers, evaluate, keepalive, softirq


def found(root, topics):
    facts, _ = collect(Context(root=root), Plan(details=True, rxpath=True))
    return {f.id: f for f in evaluate(facts, topics).findings}


def sysctl(**kw) -> SysctlFacts:
    return SysctlFacts(values={k.replace("__", "."): str(v) for k, v in kw.items()})


def test_rx_pressure_host(host_root):
    got = found(host_root("linux-rx-pressure"), ["buffers", "softirq"])
    assert got["buffers.autotuning_disabled"].severity is Severity.WARNING
    mp = got["buffers.memory_pressure"]
    assert mp.severity is Severity.WARNING and mp.evidence["tcp_mem_pages"] == 260114
    assert got["buffers.rcvbuf_drops"].severity is Severity.INFO
    assert got["buffers.rcvbuf_drops"].evidence["TcpExt.RcvPruned"]["total"] == 311
    assert got["buffers.udp_buffer_errors"].evidence["Udp.RcvbufErrors"]["total"] == 90210
    imb = got["softirq.imbalance"]
    assert imb.severity is Severity.WARNING  # CPU0 also drops and squeezes
    assert imb.evidence["busiest_cpu"] == 0 and imb.evidence["busiest_share"] > 0.99
    assert got["softirq.netdev_backlog_drops"].evidence["dropped_per_cpu"][0] == 0x4F21
    assert got["softirq.time_squeeze"].severity is Severity.INFO
    ring = got["softirq.ring_overruns"]
    assert ring.severity is Severity.INFO and "eth0" in ring.title
    assert "a squeeze is not a drop" in softirq.SQUEEZE.explanation.lower()


def test_busy_618_keepalive_and_backlog(host_root):
    got = found(host_root("linux-6.18-busy"), ["keepalive", "backlog"])
    ka = got["keepalive.slow_detection"]
    assert ka.severity is Severity.INFO and ka.evidence["detection_seconds"] == 7875
    assert ka.evidence["established"] == 10 and ka.evidence["no_timer_keepalive_off"] == 10
    assert got["backlog.accept_queue_full"].severity is Severity.OK
    assert got["backlog.listen_overflow"].severity is Severity.OK


def test_every_topic_finding_has_rule_and_evidence(host_root):
    for name in ("linux-rx-pressure", "linux-6.18-busy", "linux-4.19-layout"):
        facts, _ = collect(Context(root=host_root(name)), Plan(details=True, rxpath=True))
        for f in evaluate(facts, list(TOPICS)).findings:
            d = f.to_dict()
            assert d["evidence"] and d["explanation"] and d["recommendation"]
            assert d["rule"]["text"] and d["rule"]["source"], d["id"]


# ---- backlog -----------------------------------------------------------------------------


def _listen_facts(rq: int, wq: int, somaxconn: int = 4096, **kw) -> Facts:
    c = Census(source="test", listeners=[Listener(2, "0.0.0.0", 8080, rq, wq, 0)])
    return Facts(census=c, sysctl=sysctl(net__core__somaxconn=somaxconn,
                                         net__ipv4__tcp_abort_on_overflow=0), **kw)


def test_accept_queue_thresholds():
    assert backlog._accept_full(_listen_facts(3, 8)).severity is Severity.OK
    at = backlog._accept_full(_listen_facts(8, 8))
    assert at.severity is Severity.WARNING and "8 of limit 8" in at.title
    full = backlog._accept_full(_listen_facts(9, 8))
    assert full.severity is Severity.CRITICAL  # the queue holds limit + 1: drops now


def test_listen_overflow_total_and_rate():
    def f(prev, now, interval=None, rq=0):
        facts = _listen_facts(rq, 8, counters=CounterFacts(
            counters={"TcpExt": {"ListenOverflows": now, "ListenDrops": now + 3}}, taken_at=10))
        if interval:
            facts.counters_before = CounterFacts(
                counters={"TcpExt": {"ListenOverflows": prev, "ListenDrops": prev}}, taken_at=0)
            facts.interval = interval
        return backlog._overflow(facts)

    assert f(0, 0).severity is Severity.OK
    since_boot = f(0, 12)
    assert since_boot.severity is Severity.INFO
    assert since_boot.evidence["other_listener_drops"] == 3
    # Since boot stays info even with a listener full now: that is accept_queue_full's
    # finding (the counter policy: totals since boot never warn).
    assert f(0, 12, rq=9).severity is Severity.INFO
    assert f(10, 30, interval=10).severity is Severity.WARNING  # 2/s
    assert f(0, 80, interval=10).severity is Severity.CRITICAL  # 8/s
    assert f(12, 12, interval=10).severity is Severity.OK  # no growth: nothing now
    assert "a stall" in f(0, 12).evidence["client_sees"]


def test_somaxconn_clamp():
    assert backlog._clamp(_listen_facts(0, 511)).severity is Severity.OK
    # Clamped at today's default and nothing overflows: nothing to act on, no info line.
    quiet = backlog._clamp(_listen_facts(0, 4096))
    assert quiet.severity is Severity.OK and "511" in quiet.explanation
    info = backlog._clamp(_listen_facts(4097, 4096))  # full now: worth knowing why
    assert info.severity is Severity.INFO
    assert backlog._clamp(_listen_facts(0, 128, somaxconn=128)).severity is Severity.INFO
    warn = backlog._clamp(_listen_facts(129, 128, somaxconn=128))
    assert warn.severity is Severity.WARNING


def test_syn_queue_counters():
    def f(**now):
        return backlog._syn_queue(Facts(counters=CounterFacts(counters={"TcpExt": {
            "SyncookiesSent": 0, "TCPReqQFullDrop": 0, "TCPReqQFullDoCookies": 0, **now}})))

    assert f().severity is Severity.OK
    assert f(SyncookiesSent=5, TCPReqQFullDoCookies=5).severity is Severity.OK  # too few
    assert f(SyncookiesSent=50, TCPReqQFullDoCookies=50).severity is Severity.INFO
    facts = Facts(counters=CounterFacts(counters={"TcpExt": {
        "SyncookiesSent": 0, "TCPReqQFullDrop": 40, "TCPReqQFullDoCookies": 0}}, taken_at=5),
        counters_before=CounterFacts(counters={"TcpExt": {
            "SyncookiesSent": 0, "TCPReqQFullDrop": 0, "TCPReqQFullDoCookies": 0}}),
        interval=5)
    assert backlog._syn_queue(facts).severity is Severity.CRITICAL


def test_sampled_listeners_name_the_port():
    facts = _listen_facts(0, 8, counters=CounterFacts(counters={"TcpExt": {
        "ListenOverflows": 50, "ListenDrops": 50}}, taken_at=2))
    facts.counters_before = CounterFacts(counters={"TcpExt": {"ListenOverflows": 0,
                                                              "ListenDrops": 0}})
    facts.interval = 2
    facts.listener_samples = [ListenerSample("0.0.0.0", 8080, 8, 9, 10, 7)]
    got = backlog._overflow(facts)
    assert got.severity is Severity.CRITICAL and "0.0.0.0:8080" in got.title
    assert got.evidence["listeners_at_limit_during_interval"][0]["samples_at_limit"] == 7


# ---- keepalive ---------------------------------------------------------------------------


def _ka(t, i, p, idle_without=0) -> Facts:
    d = ConnectionDetails(established=20, long_idle_without_keepalive=idle_without)
    return Facts(sysctl=sysctl(net__ipv4__tcp_keepalive_time=t, net__ipv4__tcp_keepalive_intvl=i,
                               net__ipv4__tcp_keepalive_probes=p), details=d)


def test_keepalive_levels():
    default = keepalive.check(_ka(7200, 75, 9))[0]
    assert default.severity is Severity.INFO and default.evidence["detection_seconds"] == 7875
    assert default.evidence["detection"] == "2 h 11 min 15 s"
    assert keepalive.check(_ka(600, 30, 5))[0].severity is Severity.OK
    assert keepalive.check(_ka(7200, 75, 9, idle_without=12))[0].severity is Severity.WARNING
    assert keepalive.check(_ka(60, 10, 6, idle_without=12))[0].severity is Severity.OK


# ---- buffers -----------------------------------------------------------------------------


def test_memory_pressure_levels():
    def f(mem):
        return buffers._pressure(Facts(sockstat=SockstatFacts(values={"TCP": {"mem": mem}}),
                                       sysctl=sysctl(net__ipv4__tcp_mem="100 200 1000")))

    assert f(150).severity is Severity.OK
    assert f(201).severity is Severity.WARNING
    assert f(900).severity is Severity.CRITICAL


def test_bdp_from_the_rate_a_flow_gets_is_not_the_trigger():
    # 1 Gbit/s at 80 ms: a "BDP" of 10 MB above tcp_rmem[2], but the flow is busy only a
    # third of the time: its application holds it, and nothing is advised.
    then = {"busy_time": 0, "bytes_acked": 0, "rtt": 80_000, "delivery_rate": 125_000_000}
    now = dict(then, busy_time=300_000, bytes_acked=125_000_000)
    conn = Connection("10.0.0.1", 5000, "10.0.0.9", 443, 0, "on", now,
                      {"rcvbuf": 6291456, "sndbuf": 4194304})
    conn.earlier = Connection("10.0.0.1", 5000, "10.0.0.9", 443, 0, "on", then, {})
    conn.sample_seconds = 1.0
    assert conn.bdp_bytes == 10_000_000
    facts = Facts(details=ConnectionDetails(with_info=1, flows=[conn]),
                  sysctl=sysctl(net__ipv4__tcp_rmem="4096 131072 6291456",
                                net__ipv4__tcp_wmem="4096 16384 4194304"))
    got = buffers._bdp(facts)
    assert got.severity is Severity.OK
    assert got.evidence["flows"][0]["limit"] == "application"
    assert "tcp_rmem" not in got.recommendation


def test_autotuning_and_drop_rates():
    assert buffers._autotune(Facts(sysctl=sysctl(net__ipv4__tcp_moderate_rcvbuf=0))).severity \
        is Severity.WARNING
    facts = Facts(counters=CounterFacts(counters={"TcpExt": {"PruneCalled": 30}}, taken_at=3),
                  counters_before=CounterFacts(counters={"TcpExt": {"PruneCalled": 10}}),
                  interval=3)
    got = buffers.check(facts)
    drops = next(f for f in got if f.id == "buffers.rcvbuf_drops")
    assert drops.severity is Severity.WARNING and "PruneCalled +20" in drops.title


# ---- softirq -----------------------------------------------------------------------------


def test_softnet_interval_deltas():
    before = SoftnetFacts(cpus=[SoftnetCpu(0, 100, 5, 7), SoftnetCpu(1, 100, 0, 0)], columns=13)
    now = SoftnetFacts(cpus=[SoftnetCpu(0, 200, 5, 9), SoftnetCpu(1, 150, 0, 0)], columns=13)
    facts = Facts(softnet=now, softnet_before=before, interval=2.0)
    got = {f.id: f for f in softirq.check(facts)}
    assert got["softirq.netdev_backlog_drops"].severity is Severity.OK  # 5, not growing
    sq = got["softirq.time_squeeze"]
    assert sq.severity is Severity.WARNING and "CPU0 +2" in sq.title


def test_softnet_totals_since_boot_are_said_host_wide_never_none():
    """softnet_stat is per CPU for the host: a namespace's run reads the host's. A few since
    boot are not worth a warning, but the title must not say "none" beside a table with
    some (18 and 23 squeezes read "no time squeezes to report")."""
    now = SoftnetFacts(cpus=[SoftnetCpu(0, 200, 0, 18), SoftnetCpu(1, 150, 132, 23)], columns=13)
    got = {f.id: f for f in softirq.check(Facts(softnet=now))}
    sq, drops = got["softirq.time_squeeze"], got["softirq.netdev_backlog_drops"]
    assert sq.severity is Severity.OK
    assert sq.title == ("41 time squeezes since boot, host-wide (every namespace), too few to "
                        "matter (info from 1000)")
    assert drops.severity is Severity.INFO and "132 backlog drops since boot, host-wide" in \
        drops.title and "namespace was created" not in drops.title
    assert sq.evidence["scope"] == drops.evidence["scope"] == "host"


def test_imbalance_needs_work_and_several_cpus():
    def f(rx):
        return softirq._imbalance(Facts(softirqs=SoftirqFacts(net_rx=rx)))

    assert f([500, 10]).severity is Severity.OK  # too little work to judge
    assert f([90_000, 1_000]).severity is Severity.INFO
    assert f([50_000, 40_000]).severity is Severity.OK
    assert f([90_000]) is None  # one CPU: nothing to balance


def test_ring_overruns_exact_counters_and_growth():
    def link(missed):
        return LinkStats("eth0", 2, 10**6, 0, missed, 0, 0, 0, 0, rx_ring=256, rx_ring_max=4096)

    facts = Facts(links=[link(100)], links_before=[link(40)], interval=5.0)
    got = softirq._ring(facts)
    assert got.severity is Severity.WARNING and "60 ring overruns" in got.title
    assert "256/4096" in got.title
    assert softirq._ring(Facts(links=[link(0)])).severity is Severity.OK
