"""Rules on recorded hosts and on hand-built facts that pin each threshold."""

from __future__ import annotations

import pytest

from netdiag.collect.gather import Plan, collect
from netdiag.context import Context
from netdiag.facts import (
    Census,
    CounterFacts,
    Facts,
    FileNr,
    ProcessFacts,
    ProcessInfo,
    SockstatFacts,
    SysctlFacts,
    TopCounts,
)
from netdiag.model import Severity
from netdiag.rules import SPECS, TOPICS, closewait, evaluate, ports, sockets, timewait


def by_id(findings):
    return {f.id: f for f in findings}


def facts_from(root) -> Facts:
    facts, _ = collect(Context(root=root), Plan())
    return facts


def top(items) -> TopCounts:
    return TopCounts(items=list(items), distinct_seen=len(items), pruned=0, approximate=False)


def sysctl(**kw) -> SysctlFacts:
    base = {"net.ipv4.ip_local_port_range": "32768 60999", "net.ipv4.ip_local_reserved_ports": "",
            "net.ipv4.tcp_tw_reuse": "2", "net.ipv4.tcp_timestamps": "1",
            "net.ipv4.tcp_max_tw_buckets": "131072", "net.ipv4.tcp_fin_timeout": "60",
            "net.ipv4.tcp_tw_reuse_delay": "1000"}
    base.update({f"net.ipv4.{k}": str(v) for k, v in kw.items()})
    return SysctlFacts(values=base)


def census(**kw) -> Census:
    c = Census(source="test")
    c.by_destination = top([])
    c.timewait_by_destination = top([])
    c.timewait_server_side = top([])
    c.close_wait_by_port = top([])
    for k, v in kw.items():
        setattr(c, k, v)
    return c


def test_busy_618_snapshot(host_root):
    found = by_id(evaluate(facts_from(host_root("linux-6.18-busy")), list(TOPICS)).findings)
    flood = found["timewait.flood"]
    assert flood.severity is Severity.WARNING
    assert flood.evidence["top_destinations"][0]["destination"] == "127.0.0.1"
    assert flood.evidence["top_destinations"][0]["time_wait"] == 450
    assert flood.evidence["active_closer"]["this_host_as_client"] == 480
    assert "tcp_tw_reuse=0" in flood.explanation
    # Reuse is off here: advising it is true (and it is the only reuse advice given).
    assert "Set net.ipv4.tcp_tw_reuse=1" in flood.recommendation
    ex = found["ports.ephemeral_exhaustion"]
    assert ex.severity is Severity.WARNING
    worst = ex.evidence["destinations"][0]
    assert (worst["destination"], worst["port"], worst["ports_in_use"]) == ("127.0.0.1", 9000,
                                                                            450)
    assert ex.evidence["usable_ports"] == 999 and ex.evidence["reserved_in_range"] == 1
    assert worst["sustainable_conn_per_s"] == round(999 / 60, 1)
    lst = found["ports.listener_in_ephemeral_range"]
    assert lst.severity is Severity.INFO
    assert [h["port"] for h in lst.evidence["listeners"]] == [40100]
    cw = found["closewait.leak"]
    assert cw.severity is Severity.WARNING and cw.evidence["close_wait"] == 12
    assert cw.evidence["eof_not_read"] == 12
    assert found["timewait.bucket_overflow"].severity is Severity.OK


def test_legacy_419_host(host_root):
    found = by_id(evaluate(facts_from(host_root("linux-4.19-layout")), list(TOPICS)).findings)
    b = found["timewait.bucket_overflow"]
    assert b.severity is Severity.WARNING
    assert b.evidence["TCPTimeWaitOverflow"]["total"] == 1834
    assert b.evidence["time_wait"] == 179990 and b.evidence["tcp_max_tw_buckets"] == 180000
    r = found["timewait.tw_recycle_configured"]
    assert r.severity is Severity.WARNING
    assert r.evidence["configured_in"] == [{"file": "/etc/sysctl.d/60-tuning.conf", "line": 3,
                                            "value": 1}]
    assert found["closewait.leak"].severity is Severity.INFO


def test_every_finding_is_complete_on_every_fixture(host_root):
    for name in ("linux-6.18-busy", "linux-4.19-layout"):
        findings = evaluate(facts_from(host_root(name)), list(TOPICS)).findings
        assert findings
        for f in findings:
            d = f.to_dict()
            assert d["id"] in SPECS and d["topic"] == d["id"].split(".")[0]
            assert d["title"] and d["explanation"] and d["recommendation"]
            assert d["rule"]["text"] and d["rule"]["source"]
            assert isinstance(d["evidence"], dict) and d["evidence"]


def test_specs_conformance():
    contract_ids = {"timewait.bucket_overflow", "timewait.flood", "closewait.leak",
                    "ports.ephemeral_exhaustion", "ports.listener_in_ephemeral_range",
                    "sockets.fd_limit"}
    assert contract_ids <= set(SPECS)
    for spec in SPECS.values():
        assert spec.id.startswith(spec.topic + ".")
        assert spec.thresholds and spec.rule.source and spec.explanation
    for topic in TOPICS.values():
        assert topic.background and topic.summary


# ---- thresholds on hand-built facts -----------------------------------------------------


def test_bucket_title_never_has_parts_larger_than_its_total():
    """sockstat's tw and the socket table are read a moment apart: with sockets churning the
    table may show more TIME_WAIT than sockstat did. No orphaned FIN_WAIT2 are made up then
    (it read "1361 entries (1403 in TIME_WAIT, 0 orphaned FIN_WAIT2)")."""
    from netdiag.facts import Census

    f = Facts(sysctl=sysctl(tcp_max_tw_buckets=100_000),
              sockstat=SockstatFacts(values={"TCP": {"tw": 1361}}),
              census=Census(source="netlink", by_state={"TIME_WAIT": 1403}))
    got = timewait._bucket(f)
    assert "orphaned" not in got.title and "1403 in the socket table" in got.title, got.title
    f.sockstat.values["TCP"]["tw"] = 1500
    got = timewait._bucket(f)
    assert "1500 entries in the TIME_WAIT table (1403 in TIME_WAIT, 97 orphaned" in got.title


def test_bucket_thresholds_and_interval_growth():
    f = Facts(sysctl=sysctl(tcp_max_tw_buckets=1000),
              sockstat=SockstatFacts(values={"TCP": {"tw": 899}}),
              counters=CounterFacts(counters={"TcpExt": {"TCPTimeWaitOverflow": 0}}))
    assert timewait._bucket(f).severity is Severity.OK
    f.sockstat.values["TCP"]["tw"] = 900
    assert timewait._bucket(f).severity is Severity.WARNING
    f.sockstat.values["TCP"]["tw"] = 1000
    assert timewait._bucket(f).severity is Severity.CRITICAL
    # With --interval: an overflow counter that grows is critical, a stale one is info.
    f.sockstat.values["TCP"]["tw"] = 10
    f.counters = CounterFacts(counters={"TcpExt": {"TCPTimeWaitOverflow": 50}}, taken_at=12.0)
    f.counters_before = CounterFacts(counters={"TcpExt": {"TCPTimeWaitOverflow": 20}},
                                     taken_at=2.0)
    f.interval = 10.0
    b = timewait._bucket(f)
    assert b.severity is Severity.CRITICAL
    assert b.evidence["TCPTimeWaitOverflow"]["delta"] == 30
    assert b.evidence["TCPTimeWaitOverflow"]["rate_per_s"] == 3.0
    f.counters_before = CounterFacts(counters={"TcpExt": {"TCPTimeWaitOverflow": 50}},
                                     taken_at=2.0)
    # Not growing over the window: nothing happens now, so nothing to report (the counter
    # policy), though the evidence keeps the total.
    b = timewait._bucket(f)
    assert b.severity is Severity.OK
    assert b.evidence["TCPTimeWaitOverflow"] == {
        "counter": "TcpExt.TCPTimeWaitOverflow", "total": 50, "delta": 0, "seconds": 10.0,
        "rate_per_s": 0.0}


def test_counter_reset_is_not_a_negative_rate():
    f = Facts(sysctl=sysctl(), sockstat=SockstatFacts(values={"TCP": {"tw": 0}}),
              counters=CounterFacts(counters={"TcpExt": {"TCPTimeWaitOverflow": 3}}, taken_at=5),
              counters_before=CounterFacts(counters={"TcpExt": {"TCPTimeWaitOverflow": 90}},
                                           taken_at=0),
              interval=5.0)
    ev = timewait._bucket(f).evidence["TCPTimeWaitOverflow"]
    assert ev["reset"] is True and "rate_per_s" not in ev and ev["delta"] == 3


def _dest_facts(used: int, tw: int, reuse: int, dst="10.0.0.5", **kw) -> Facts:
    key = ("10.0.0.1", dst, 443)
    c = census(by_destination=top([(key, used)]), timewait_by_destination=top([(key, tw)]))
    return Facts(sysctl=sysctl(ip_local_port_range="40000 40999", tcp_tw_reuse=reuse),
                 census=c, **kw)


@pytest.mark.parametrize("used,expected", [(399, Severity.OK), (400, Severity.WARNING),
                                           (899, Severity.WARNING), (900, Severity.CRITICAL)])
def test_exhaustion_thresholds(used, expected):
    f = ports._exhaustion(_dest_facts(used, used, reuse=0))
    assert f.severity is expected
    assert f.evidence["usable_ports"] == 1000


def test_tw_reuse_frees_time_wait_ports_for_its_destinations():
    # tcp_tw_reuse=2 applies to loopback only: the same numbers judge differently.
    remote = ports._exhaustion(_dest_facts(950, 900, reuse=2))
    assert remote.severity is Severity.CRITICAL
    assert remote.evidence["destinations"][0]["tw_reuse_applies"] is False
    names = {"Tcp": ("ActiveOpens", "PassiveOpens"),
             "TcpExt": ("TW", "TWKilled", "TCPTimeWaitOverflow", "TWRecycled")}
    zero = {g: dict.fromkeys(n, 0) for g, n in names.items()}
    after = {g: dict.fromkeys(n, 0) for g, n in names.items()}
    after["TcpExt"]["TW"] = after["Tcp"]["ActiveOpens"] = 150
    measured = dict(counters_before=CounterFacts(counters=zero, taken_at=0.0),
                    counters=CounterFacts(counters=after, taken_at=10.0), interval=10.0)
    lo = ports._exhaustion(_dest_facts(950, 900, reuse=2, dst="127.0.0.1", **measured))
    assert lo.evidence["destinations"][0]["tw_reuse_applies"] is True
    # 50 in use, and of 900 TIME_WAIT only those younger than tcp_tw_reuse_delay (1 s) hold a
    # port: at the 15 closes/s measured, 15 of them.
    assert lo.evidence["destinations"][0]["ports_held"] == 50 + 15
    assert lo.severity is Severity.OK
    assert "tcp_tw_reuse" not in lo.recommendation
    # Not measured: how many of the 900 are younger than 1 s is unknown. A burst of
    # thousands a second holds them all (connect() fails), so this is never "OK": the ports
    # occupied are the fact judged, said as a possibility, with what tells.
    guess = ports._exhaustion(_dest_facts(950, 900, reuse=2, dst="127.0.0.1"))
    assert guess.severity is Severity.INFO
    assert "950 of 1000 usable source ports occupied" in guess.title
    assert "not measured" in guess.title and "--interval" in guess.title
    assert "tcp_tw_reuse=1" not in guess.recommendation  # it applies already
    assert "Nothing to do" not in guess.recommendation
    # The sockets' own timers tell, without any rate: all 900 younger than the delay (a
    # burst now) hold their ports; none (a burst that ended) frees them all.
    for young, severity, held in ((900, Severity.CRITICAL, 950), (0, Severity.OK, 50)):
        f = _dest_facts(950, 900, reuse=2, dst="127.0.0.1")
        f.census.timewait_young_by_destination = top([(("10.0.0.1", "127.0.0.1", 443), young)])
        f.census.timewait_young_ms = 1000
        got = ports._exhaustion(f)
        row = got.evidence["destinations"][0]
        assert (got.severity, row["ports_held"], row["time_wait_ages_known"]) == \
            (severity, held, True)
    # timestamps off: reuse cannot apply
    f = _dest_facts(950, 900, reuse=1)
    f.sysctl.values["net.ipv4.tcp_timestamps"] = "0"
    assert ports._exhaustion(f).severity is Severity.CRITICAL


def test_reserved_ports_shrink_the_budget_and_interval_gives_time_to_exhaustion():
    key = ("10.0.0.1", "10.0.0.5", 443)
    before = census(by_destination=top([(key, 300)]))
    f = _dest_facts(500, 100, reuse=0, census_before=before, interval=10.0)
    f.sysctl.values["net.ipv4.ip_local_reserved_ports"] = "40000-40099,50000"
    got = ports._exhaustion(f)
    assert got.evidence["usable_ports"] == 900
    row = got.evidence["destinations"][0]
    assert row["growth_per_s"] == 20.0
    assert row["seconds_to_exhaustion"] == (900 - 500) / 20.0
    assert "used up in about 20 s" in got.explanation


def test_idle_host_is_ok_everywhere():
    f = Facts(sysctl=sysctl(), census=census(by_state={"LISTEN": 1}),
              sockstat=SockstatFacts(values={"TCP": {"tw": 0}}),
              counters=CounterFacts(counters={"TcpExt": {"TCPTimeWaitOverflow": 0}}),
              processes=ProcessFacts(), file_nr=FileNr(allocated=900, maximum=10**6))
    from netdiag.facts import SysctlConfFacts

    f.sysctl_conf = SysctlConfFacts()
    topics = ["timewait", "closewait", "ports", "sockets"]
    ev = evaluate(f, topics)
    findings, unjudged = ev.findings, ev.not_judged
    assert unjudged == []
    assert {x.severity for x in findings} == {Severity.OK}


def test_closewait_attribution_and_thresholds():
    inodes = {1000 + i: 8080 for i in range(12)}
    procs = ProcessFacts(owners={i: 4242 for i in inodes},
                         processes={4242: ProcessInfo(4242, "leaky", "leaky --serve", 40, 13)})
    f = Facts(census=census(by_state={"CLOSE_WAIT": 12}, close_wait_inodes=inodes),
              processes=procs)
    got = closewait.check(f)[0]
    assert got.severity is Severity.WARNING
    assert "pid 4242 (leaky)" in got.title and "8080" in got.title
    assert got.evidence["by_process_and_port"][0] == {
        "pid": 4242, "local_port": 8080, "close_wait": 12, "command": "leaky",
        "cmdline": "leaky --serve", "fds": 40, "holders": [4242]}
    assert "restarting the process that holds them releases them" in got.recommendation
    few = {1: 80, 2: 80}
    f2 = Facts(census=census(by_state={"CLOSE_WAIT": 2}, close_wait_inodes=few),
               processes=ProcessFacts(owners={1: 7, 2: 7}))
    assert closewait.check(f2)[0].severity is Severity.INFO
    # The same two still in CLOSE_WAIT after --interval: they are not closing.
    f2.census_before = census(close_wait_inodes=dict(few))
    f2.interval = 5.0
    got2 = closewait.check(f2)[0]
    assert got2.severity is Severity.WARNING
    assert got2.evidence["still_close_wait_after_interval"] == 2


def test_fd_limit_thresholds():
    def facts(fds, soft=1024, nsock=10, allocated=100, maximum=10**6):
        p = ProcessFacts(processes={9: ProcessInfo(9, "srv", "", fds, nsock, soft, 4096,
                                                   holds_sockets=bool(nsock))})
        return Facts(processes=p, file_nr=FileNr(allocated, maximum))

    assert sockets.check(facts(800))[0].severity is Severity.OK
    assert sockets.check(facts(820))[0].severity is Severity.WARNING
    assert sockets.check(facts(980))[0].severity is Severity.CRITICAL
    assert sockets.check(facts(980, nsock=0))[0].severity is Severity.OK  # holds no socket
    assert sockets.check(facts(10, allocated=850, maximum=1000))[0].severity is Severity.WARNING
    assert sockets.check(facts(10, allocated=950, maximum=1000))[0].severity is Severity.CRITICAL


def test_flood_info_and_server_side():
    c = census(by_state={"TIME_WAIT": 12000}, timewait_roles={"client": 0, "server": 12000,
                                                               "other": 0},
               timewait_server_side=top([((80, "10.1.1.1"), 12000)]))
    f = timewait._flood(Facts(sysctl=sysctl(), census=c))
    assert f.severity is Severity.INFO and "as server" in f.title
    assert f.evidence["top_server_side"][0]["local_port"] == 80


def test_missing_facts_are_unjudged_not_guessed():
    ev = evaluate(Facts(), list(TOPICS))
    findings, unjudged = ev.findings, ev.not_judged
    assert findings == []
    # Probe-only topics are not "unjudged" when no probe ran: they simply do not apply.
    from netdiag.rules import PROBE_ONLY, PROBE_ONLY_IDS

    assert set(unjudged) == {i for i, s in SPECS.items()
                             if s.topic not in PROBE_ONLY and i not in PROBE_ONLY_IDS}
    # With probe facts, a probe-only id that got no finding is unjudged like any other.
    with_probes = evaluate(Facts(probes={}), ["buffers"]).not_judged
    assert set(PROBE_ONLY_IDS) <= set(with_probes)


def test_the_time_wait_table_is_not_called_time_wait_sockets_when_it_holds_fin_wait2():
    """sockstat tw counts the kernel's TIME_WAIT table, which also holds orphaned FIN_WAIT2
    sockets (ss shows them as FIN-WAIT-2): 81 entries, 1 in TIME_WAIT, said as such."""
    f = Facts(sysctl=sysctl(), sockstat=SockstatFacts(values={"TCP": {"tw": 81}}),
              census=census(by_state={"TIME_WAIT": 1, "FIN_WAIT2": 80}))
    b = timewait._bucket(f)
    assert "81 TIME_WAIT sockets" not in b.title
    assert "81 entries in the TIME_WAIT table (1 in TIME_WAIT, 80 orphaned FIN_WAIT2)" \
        in b.title
    assert b.evidence["time_wait_state"] == 1 and b.evidence["fin_wait2_timewait"] == 80
    same = Facts(sysctl=sysctl(), sockstat=SockstatFacts(values={"TCP": {"tw": 5}}),
                 census=census(by_state={"TIME_WAIT": 5}))
    assert timewait._bucket(same).title.startswith("5 TIME_WAIT sockets")
