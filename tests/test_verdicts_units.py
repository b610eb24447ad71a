"""The verdict rules of issue 10 pinned on hand-built facts, and their collectors on real
loopback sockets of the test process (no privilege needed): which limit holds a flow, the
TIME_WAIT reuse rules, every holder of a socket, reuseport members, overflow attribution,
keepalive per socket, host-wide sysctls."""

from __future__ import annotations

import os
import select
import signal
import socket
import time

import pytest

from netdiag.collect.gather import _sysctl_errors
from netdiag.collect.processes import read_activity, scan_fds
from netdiag.collect.sockets import ListenerSampler, query_flows, read_census, resample_flows
from netdiag.collect.tcpinfo import decode_tcp_info
from netdiag.context import Context
from netdiag.facts import (
    Census,
    Connection,
    ConnectionDetails,
    CounterFacts,
    Facts,
    KeepaliveGroup,
    Listener,
    ListenerSample,
    ListenerWindow,
    ProcessActivity,
    ProcessFacts,
    ProcessInfo,
    SysctlFacts,
    TopCounts,
)
from netdiag.metrics import samples
from netdiag.model import Severity
from netdiag.rules import backlog, buffers, closewait, keepalive, ports, timewait
from netdiag.rules._util import rates, tw_reuse


def top(items) -> TopCounts:
    return TopCounts(items=list(items), distinct_seen=len(items), pruned=0, approximate=False)


def sysctl(**kw) -> SysctlFacts:
    base = {"net.ipv4.ip_local_port_range": "40000 40999", "net.ipv4.ip_local_reserved_ports": "",
            "net.ipv4.tcp_tw_reuse": "2", "net.ipv4.tcp_timestamps": "1",
            "net.ipv4.tcp_tw_reuse_delay": "1000", "net.ipv4.tcp_rmem": "4096 131072 6291456",
            "net.ipv4.tcp_wmem": "4096 16384 4194304", "net.core.rmem_max": "212992",
            "net.core.wmem_max": "212992", "net.core.somaxconn": "4096",
            "net.ipv4.tcp_keepalive_time": "7200", "net.ipv4.tcp_keepalive_intvl": "75",
            "net.ipv4.tcp_keepalive_probes": "9"}
    base.update({k.replace("__", "."): str(v) for k, v in kw.items()})
    return SysctlFacts(values=base)


LIMITS = {"rmax": 6291456, "wmax": 4194304, "rmem_max": 212992, "wmem_max": 212992}


def flow(now: dict, then: dict | None = None, skmem: dict | None = None, *, seconds=1.0,
         dst="10.0.0.9", earlier_skmem: dict | None = None) -> Connection:
    c = Connection("10.0.0.1", 40000, dst, 443, 7, "on", now, skmem or {})
    if then is not None:
        c.earlier = Connection("10.0.0.1", 40000, dst, 443, 7, "on", then,
                               earlier_skmem if earlier_skmem is not None else dict(skmem or {}))
        c.sample_seconds = seconds
    return c


def sender(busy: int, rwnd: int = 0, sndbuf_lim: int = 0, acked: int = 1_250_000,
           **info) -> tuple[dict, dict]:
    then = {"busy_time": 0, "rwnd_limited": 0, "sndbuf_limited": 0, "bytes_acked": 0,
            "bytes_received": 0}
    now = {"busy_time": busy, "rwnd_limited": rwnd, "sndbuf_limited": sndbuf_lim,
           "bytes_acked": acked, "bytes_received": 0, "rtt": 50_000, **info}
    return now, then


def receiver(received: int, **info) -> tuple[dict, dict]:
    then = {"bytes_acked": 0, "bytes_received": 0}
    now = {"bytes_acked": 0, "bytes_received": received, "rtt": 50_000, "rcv_rtt": 50_000,
           **info}
    return now, then


# ---- which limit holds a flow -------------------------------------------------------------


def test_sender_held_by_its_application_gets_no_advice():
    v = buffers.judge_flow(flow(*sender(300_000), skmem={"sndbuf": 87040}), LIMITS)
    assert (v.limit, v.held, v.advice) == ("application", False, "")


def test_one_application_limited_rate_sample_names_no_limit():
    """tcpi_delivery_rate_app_limited flags one delivery-rate sample: a capped sender
    (iperf3 -b) is flagged between bursts, unflagged within one. One sample, or one of two,
    is "cannot tell"; never "its application", never "the network"."""
    busy = sender(990_000, delivery_rate_app_limited=1)
    one = Connection("10.0.0.1", 40000, "10.0.0.9", 443, 7, "on", busy[0], {})
    for c in (one, flow(*busy), flow(busy[0], dict(busy[1], delivery_rate_app_limited=0))):
        v = buffers.judge_flow(c, LIMITS)
        assert (v.limit, v.held, v.advice) == ("network_or_application", False, ""), v
        assert "one sample does not decide" in v.text and "cannot tell" in v.text
        assert "its application:" not in v.text and "not a buffer" not in v.text
    unflagged = buffers.judge_flow(flow(*sender(990_000)), LIMITS)
    assert unflagged.limit == "network_or_application" and "one sample" not in unflagged.text
    # Application-limited in both samples of the window, nothing left unsent: its application.
    both = flow(busy[0], dict(busy[1], delivery_rate_app_limited=1))
    assert buffers.judge_flow(both, LIMITS).limit == "application"
    queued = flow(dict(busy[0], notsent_bytes=5000),
                  dict(busy[1], delivery_rate_app_limited=1))
    assert buffers.judge_flow(queued, LIMITS).limit == "network_or_application"


def test_sender_held_by_the_peer_window_is_told_where_to_act():
    v = buffers.judge_flow(flow(*sender(990_000, rwnd=700_000, snd_wnd=65535)), LIMITS)
    assert v.limit == "peer_receive_window" and v.held
    assert "On the receiving host (10.0.0.9)" in v.advice
    assert "advertises 65535 bytes" in v.text
    # A paced sender (BBR) rarely stalls on the window itself: a window it fills every RTT
    # with some rwnd-limited time is the same verdict.
    paced = flow(*sender(990_000, rwnd=300_000, acked=1_300_000, snd_wnd=65535))
    assert buffers.judge_flow(paced, LIMITS).limit == "peer_receive_window"
    assert buffers.judge_flow(flow(*sender(990_000, rwnd=300_000, acked=100_000,
                                           snd_wnd=65535)), LIMITS).limit == \
        "network_or_application"


def test_sender_held_by_its_send_buffer_says_which():
    at_max = flow(*sender(990_000, sndbuf_lim=700_000), skmem={"sndbuf": 4194304})
    v = buffers.judge_flow(at_max, LIMITS)
    assert v.limit == "send_buffer_max" and "tcp_wmem (now 4194304)" in v.advice
    capped = flow(*sender(990_000, sndbuf_lim=700_000), skmem={"sndbuf": 2 * 212992})
    assert buffers.judge_flow(capped, LIMITS).limit == "send_buffer_capped_by_wmem_max"
    fixed = flow(*sender(990_000, sndbuf_lim=700_000), skmem={"sndbuf": 131072})
    v = buffers.judge_flow(fixed, LIMITS)
    assert v.limit == "send_buffer_fixed_by_application" and "tcp_wmem does not apply" in v.advice
    growing = flow(*sender(990_000, sndbuf_lim=700_000), skmem={"sndbuf": 262144},
                   earlier_skmem={"sndbuf": 131072})
    v = buffers.judge_flow(growing, LIMITS)
    assert v.limit == "autotuning_growing" and not v.held


def test_receiver_window_bound_at_the_autotuning_maximum():
    # 30 Mbit/s × 50 ms = 187 500 bytes in a 190 000-byte window: bound by it.
    now, then = receiver(3_750_000, rcv_wnd=190_000, rcv_space=190_000, rcv_wscale=7,
                         snd_wscale=7)
    v = buffers.judge_flow(flow(now, then, {"rcvbuf": 6291456, "rmem_alloc": 0}), LIMITS)
    assert v.limit == "receive_buffer_max" and v.held
    assert "Raise the third value of net.ipv4.tcp_rmem (now 6291456)" in v.advice


def test_receiver_buffer_fixed_by_the_application():
    # Window scale 1 where the host would offer ilog2(6 MiB) - 15 = 7: SO_RCVBUF was set
    # before connect()/listen().
    now, then = receiver(1_750_000, rcv_wnd=91_546, rcv_space=110_000, rcv_wscale=1,
                         snd_wscale=1)
    v = buffers.judge_flow(flow(now, then, {"rcvbuf": 131072}), LIMITS)
    assert v.limit == "receive_buffer_fixed_by_application"
    assert "SO_RCVBUF = 65536" in v.advice and "tcp_rmem does not apply" in v.advice
    # Set after connect: the scale is the host's, but the buffer stays below twice what the
    # application reads per RTT, which autotuning would never allow.
    now, then = receiver(1_750_000, rcv_wnd=91_546, rcv_space=110_000, rcv_wscale=7,
                         snd_wscale=7)
    v = buffers.judge_flow(flow(now, then, {"rcvbuf": 131072}), LIMITS)
    assert v.limit == "receive_buffer_fixed_by_application"
    assert buffers.expected_wscale(33554432, 4194304) == 10
    assert buffers.expected_wscale(262144, 4194304) == 7


def test_receiver_capped_by_rmem_max_and_slow_reader_and_idle_window():
    now, then = receiver(1_750_000, rcv_wnd=100_000, rcv_space=300_000, rcv_wscale=7,
                         snd_wscale=7)
    capped = buffers.judge_flow(flow(now, then, {"rcvbuf": 425984}), LIMITS)
    assert capped.limit == "receive_buffer_capped_by_rmem_max"
    assert "net.core.rmem_max (now 212992)" in capped.advice
    # A full queue in that capped buffer is the cap, not a slow reader: autotuning would
    # give it twice the 300000 bytes the application reads per RTT (review d).
    full = buffers.judge_flow(flow(now, then, {"rcvbuf": 425984, "rmem_alloc": 400_000}),
                              LIMITS)
    assert (full.limit, full.held) == ("receive_buffer_capped_by_rmem_max", True)
    assert "400000 of 425984" in full.text
    # In a buffer autotuning sized (above twice rcv_space), a full queue is the reader.
    slow = buffers.judge_flow(flow(now, then, {"rcvbuf": 1_048_576, "rmem_alloc": 1_000_000}),
                              LIMITS)
    assert (slow.limit, slow.held, slow.advice) == ("slow_reader", False, "")
    now, then = receiver(125_000, rcv_wnd=1_000_000, rcv_space=300_000)
    assert buffers.judge_flow(flow(now, then, {"rcvbuf": 6291456}), LIMITS).limit == "network"


def test_loopback_and_short_or_idle_windows_are_never_held():
    lo = flow(*sender(990_000, rwnd=900_000), dst="127.0.0.1")
    v = buffers.judge_flow(lo, LIMITS)
    assert (v.limit, v.held, v.advice) == ("loopback", False, "")
    assert "reading application is slower" in v.text
    short = flow(*sender(50_000), seconds=0.05)
    assert buffers.judge_flow(short, LIMITS).limit == "unjudged"
    idle = flow({"bytes_acked": 5, "bytes_received": 5}, {"bytes_acked": 5, "bytes_received": 5})
    assert buffers.judge_flow(idle, LIMITS).limit == "idle"


def test_buffer_finding_composes_only_the_advice_of_held_flows():
    held = flow(*sender(990_000, rwnd=800_000, snd_wnd=65535))
    app = flow(*sender(200_000))
    app.sport = 40001
    facts = Facts(sysctl=sysctl(), details=ConnectionDetails(with_info=2, flows=[held, app],
                                                             flow_sample="second sample"))
    f = buffers._bdp(facts)
    assert f.severity is Severity.WARNING and "held by the receiver's window" in f.title
    assert f.recommendation.startswith("On the receiving host")
    assert [r["limit"] for r in f.evidence["flows"]] == ["peer_receive_window", "application"]
    assert f.evidence["measured_over"] == "two samples of each flow 1 s apart"


def test_tcp_info_bitfields_and_tail_fields():
    raw = bytearray(240)
    raw[5] = 1  # TCPI_OPT_TIMESTAMPS
    raw[6] = (9 << 4) | 7  # rcv_wscale 9, snd_wscale 7
    raw[7] = 1  # delivery_rate_app_limited
    raw[228:232] = (65535).to_bytes(4, "little")
    info = decode_tcp_info(bytes(raw))
    assert (info["snd_wscale"], info["rcv_wscale"]) == (7, 9)
    assert info["delivery_rate_app_limited"] == 1 and info["options"] == 1
    assert info["snd_wnd"] == 65535 and info["rcv_wnd"] == 0
    assert "snd_wnd" not in decode_tcp_info(bytes(raw[:200]))  # an older, shorter tcp_info


def _pair(listener: socket.socket) -> tuple[socket.socket, socket.socket]:
    c = socket.create_connection(listener.getsockname(), timeout=5)
    a, _ = listener.accept()
    return c, a


def test_a_second_exact_look_at_a_live_flow():
    srv = socket.create_server(("127.0.0.1", 0))
    c, a = _pair(srv)
    try:
        c.sendall(b"x" * 200_000)
        got = 0
        while got < 200_000:
            got += len(a.recv(65536))
        port = c.getsockname()[1]
        conn = Connection("127.0.0.1", port, "127.0.0.1", srv.getsockname()[1], 0, "on", {},
                          {})
        [(info, skmem)] = query_flows([conn]).values()
        assert info["bytes_acked"] >= 200_000 and skmem["rcvbuf"] > 0
        conn.info = dict(info, last_data_sent=0, last_data_recv=0)
        d = ConnectionDetails(flows=[conn])
        resample_flows(d, 0.05)
        assert d.flow_sample == "second sample" and conn.earlier is not None
        assert 0.04 < conn.sample_seconds < 5
        gone = Connection("127.0.0.1", 1, "127.0.0.1", 2, 0, "on", {}, {})
        assert query_flows([gone]) == {}  # ENOENT: not there, not an error
    finally:
        for s in (c, a, srv):
            s.close()


# ---- TIME_WAIT reuse and the port budget -----------------------------------------------------


@pytest.mark.parametrize("reuse,dst,timestamps,applies", [
    (0, "127.0.0.1", 1, False), (1, "10.0.0.5", 1, True), (2, "127.0.0.1", 1, True),
    (2, "::1", 1, True), (2, "127.8.9.1", 1, True), (2, "10.0.0.5", 1, False),
    (1, "10.0.0.5", 0, False)])
def test_tw_reuse_rules(reuse, dst, timestamps, applies):
    r = tw_reuse(Facts(sysctl=sysctl(net__ipv4__tcp_tw_reuse=reuse,
                                     net__ipv4__tcp_timestamps=timestamps)), dst)
    assert r.applies is applies and r.delay_ms == 1000


def _tw_facts(tw: int, reuse: int, dst: str = "10.0.0.5", used: int | None = None,
              **kw) -> Facts:
    key = ("10.0.0.1", dst, 443)
    c = Census(source="test", by_state={"TIME_WAIT": tw},
               by_destination=top([(key, used if used is not None else tw)]),
               timewait_by_destination=top([(key, tw)]), timewait_server_side=top([]),
               timewait_roles={"client": tw, "server": 0, "other": 0})
    return Facts(sysctl=sysctl(net__ipv4__tcp_tw_reuse=reuse), census=c, **kw)


def test_flood_and_exhaustion_agree_and_never_advise_what_is_set():
    for reuse, dst in ((0, "10.0.0.5"), (2, "10.0.0.5"), (2, "127.0.0.1"), (1, "10.0.0.5")):
        f = _tw_facts(800, reuse, dst)
        flood, ex = timewait._flood(f), ports._exhaustion(f)
        a, b = flood.evidence["top_destinations"][0], ex.evidence["destinations"][0]
        for key in ("time_wait_holding_ports", "ports_held", "closes_per_s", "tw_reuse_applies"):
            assert a[key] == b[key], (reuse, dst, key)
        for rec in (flood.recommendation, ex.recommendation):
            if a["tw_reuse_applies"]:
                assert "set net.ipv4.tcp_tw_reuse" not in rec.lower()
        if a["tw_reuse_applies"]:
            # 800 of 1000 ports occupied, the close rate not measured: whether the TIME_WAIT
            # are younger than the reuse delay is unknown. Neither says "nothing to do".
            assert (flood.severity, ex.severity) == (Severity.INFO, Severity.INFO)
            assert "needs the close rate" in flood.title and "not measured" in ex.title
            assert "Nothing to do" not in flood.recommendation + ex.recommendation
        else:
            assert flood.severity is Severity.WARNING and ex.severity is Severity.WARNING
    assert "Set net.ipv4.tcp_tw_reuse=1 (2 for loopback-only" in \
        ports._exhaustion(_tw_facts(800, 0)).recommendation
    assert "covers loopback only: set net.ipv4.tcp_tw_reuse=1" in \
        timewait._flood(_tw_facts(800, 2)).recommendation
    no_ts = _tw_facts(800, 1)
    no_ts.sysctl.values["net.ipv4.tcp_timestamps"] = "0"
    assert "set net.ipv4.tcp_timestamps=1" in ports._exhaustion(no_ts).recommendation


def test_real_rates_replace_the_count_over_60_s():
    before = CounterFacts(counters={"Tcp": {"ActiveOpens": 0, "PassiveOpens": 0}, "TcpExt": {
        "TW": 0, "TWKilled": 0, "TCPTimeWaitOverflow": 0, "TWRecycled": 0}}, taken_at=100.0)
    now = CounterFacts(counters={"Tcp": {"ActiveOpens": 20_000, "PassiveOpens": 20_000},
                                 "TcpExt": {"TW": 19_000, "TWKilled": 500,
                                            "TCPTimeWaitOverflow": 500, "TWRecycled": 15_000}},
                       taken_at=102.0)
    f = _tw_facts(600, 2, "127.0.0.1", counters=now, counters_before=before, interval=2.0,
                  baseline="interval")
    r = rates(f)
    assert (r.closes_first, r.tw_reused, r.active_opens) == (10_000, 7_500, 10_000)
    flood = timewait._flood(f)
    assert flood.evidence["closes_per_s"] == 10_000
    assert flood.evidence["rate_source"].startswith("TcpExt.TW + TWKilled")
    row = ports._exhaustion(f).evidence["destinations"][0]
    # All of this namespace's TIME_WAIT is toward it: 10 000 closes/s, and the last second's
    # (tcp_tw_reuse_delay) still hold their port: all 600 here.
    assert row["closes_per_s"] == 10_000 and row["time_wait_holding_ports"] == 600
    # A reset baseline gives no rate, and the count-based estimate says what it is.
    f.baseline_reset = "the host rebooted since the previous run"
    assert rates(f) is None
    assert "TIME_WAIT count / 60 s" in timewait._flood(f).evidence["rate_source"]


def test_exhaustion_within_a_minute_is_critical():
    key = ("10.0.0.1", "10.0.0.5", 443)
    before = Census(source="test", by_destination=top([(key, 100)]),
                    timewait_by_destination=top([(key, 0)]))
    f = _tw_facts(0, 0, used=300, census_before=before, interval=10.0)
    got = ports._exhaustion(f)
    row = got.evidence["destinations"][0]
    assert row["growth_per_s"] == 20.0 and row["seconds_to_exhaustion"] == 35.0
    assert got.severity is Severity.CRITICAL and "used up in about 35 s" in got.title


def test_listening_ports_in_the_range_are_off_limits_to_connect():
    f = _tw_facts(0, 0, used=100)
    f.census.listeners = [Listener(2, "0.0.0.0", 40100, 0, 128, 1),
                          Listener(10, "::", 40100, 0, 128, 2)]
    row = ports._exhaustion(f).evidence["destinations"][0]
    assert row["ports_held"] == 101  # one distinct bound port
    assert row["sustainable_conn_per_s"] == round((1000 - 1 - 100) / 60, 1)


def test_server_side_flood_advice_is_about_clients_not_tw_reuse():
    c = Census(source="test", by_state={"TIME_WAIT": 12000}, by_destination=top([]),
               timewait_by_destination=top([]),
               timewait_server_side=top([((80, "10.1.1.1"), 12000)]),
               timewait_roles={"client": 0, "server": 12000, "other": 0})
    f = timewait._flood(Facts(sysctl=sysctl(), census=c))
    assert f.severity is Severity.INFO and "as server" in f.title
    assert "no effect on accepted connections" in f.recommendation
    assert "set net.ipv4.tcp_tw_reuse" not in f.recommendation.lower()
    assert "understates the rate" in f.explanation


# ---- every holder of a socket ---------------------------------------------------------------


@pytest.mark.parametrize("exhaustive", [True, False])
def test_holders_after_fork_and_what_a_stopped_holder_does(monkeypatch, exhaustive):
    from netdiag.collect import processes

    if not exhaustive:  # a host with too many fds: large tables are searched by fd number
        monkeypatch.setattr(processes, "EXHAUSTIVE_FDS", 0)
        monkeypatch.setattr(processes, "SMALL_TABLE", 0)
    srv = socket.create_server(("127.0.0.1", 0))
    inode = os.fstat(srv.fileno()).st_ino
    r, w = os.pipe()
    kids = []
    for role in ("sleep", "watch"):
        pid = os.fork()
        if pid == 0:
            if role == "watch":  # watch the listener with epoll, then stop
                ep = select.epoll()
                ep.register(srv.fileno(), select.EPOLLIN)
                os.write(w, b"x")
                os.kill(os.getpid(), signal.SIGSTOP)
            time.sleep(30)
            os._exit(0)
        kids.append(pid)
    sleeper, watcher = kids
    try:
        assert os.read(r, 1) == b"x"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with open(f"/proc/{watcher}/stat") as fh:
                if fh.read().rsplit(")", 1)[1].split()[0] == "T":
                    break
            time.sleep(0.02)
        procs = scan_fds(Context(), {inode})
        # The walk skips netdiag's own process (here the test's); both children hold it.
        assert sorted(procs.holders_of(inode)) == sorted(kids)
        assert procs.holders_complete is exhaustive
        act = read_activity(Context(), {watcher, sleeper}, {inode}, window=0.05)
        assert act[watcher].state == "T" and act[watcher].epoll_watches == [inode]
        assert act[sleeper].state == "S" and act[sleeper].epoll_watches == []
        assert act[watcher].cpu_percent is not None and act[watcher].cpu_percent < 50
    finally:
        for pid in kids:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        for fd in (r, w):
            os.close(fd)
        srv.close()


def test_closewait_advice_follows_the_holders():
    inodes = {1000 + i: 8080 for i in range(12)}
    shared = ProcessFacts(owners={i: 10 for i in inodes}, shared={i: [10, 11] for i in inodes},
                          processes={10: ProcessInfo(10, "srv", "", 20, 12),
                                     11: ProcessInfo(11, "srv-child", "", 20, 12)})
    f = closewait.check(Facts(census=Census(source="t", by_state={"CLOSE_WAIT": 12},
                                            close_wait_inodes=inodes), processes=shared))[0]
    assert "held by pid 10 (srv) and pid 11 (srv-child)" in f.title
    assert "Restarting pid 10 (srv) alone will not release them: pid 11 (srv-child) holds " \
           "them too" in f.recommendation
    assert "releases them" not in f.recommendation.split("alone will not")[0]
    partial = ProcessFacts(owners={i: 10 for i in inodes}, holders_complete=False,
                           holders_scope="processes related to the first holder")
    f = closewait.check(Facts(census=Census(source="t", by_state={"CLOSE_WAIT": 12},
                                            close_wait_inodes=inodes), processes=partial))[0]
    assert "no other holder was found among processes related" in f.recommendation
    assert f.evidence["holders_searched_among"] == "processes related to the first holder"


# ---- listeners ---------------------------------------------------------------------------------


def test_reuseport_members_are_sampled_one_by_one():
    members = []
    for _ in range(2):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        s.bind(("127.0.0.1", members[0].getsockname()[1] if members else 0))
        s.listen(16)
        members.append(s)
    clients = []
    try:
        port = members[0].getsockname()[1]
        for _ in range(12):  # each lands in one member's queue; nobody accepts
            clients.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        sampler = ListenerSampler()
        sampler.sample()
        sampler.sample()
        got = [s for s in sampler.result() if s.port == port]
        inodes = {os.fstat(m.fileno()).st_ino for m in members}
        assert {s.inode for s in got} == inodes and all(s.samples == 2 for s in got)
        assert sum(s.max_queue for s in got) == 12 and all(s.backlog == 16 for s in got)
    finally:
        for s in clients + members:
            s.close()


def _holder(pid: int, state: str, **kw) -> dict:
    return {"pid": pid, "command": "srv", "cmdline": "", "state": state, **kw}


def test_why_a_full_queue_is_not_accepted():
    w = backlog.why_not_accepting
    assert "is stopped (T)" in w([_holder(1, "S"), _holder(2, "T")])
    assert "uninterruptible sleep (D) in io_schedule" in w([_holder(1, "D", wchan="io_schedule")])
    assert "2 thread(s) in uninterruptible" in w([_holder(1, "S", thread_states={"D": 2})])
    assert "runs at 100% CPU" in w([_holder(1, "R", cpu_percent=100.0)])
    assert "EMFILE" in w([_holder(1, "S", fds=1024, nofile_soft=1024)])
    assert "watches it with epoll" in w([_holder(1, "S", watches_socket_with_epoll=True,
                                                 state_text="sleeping")])
    napping = [_holder(1, "S", state_text="sleeping", wchan="do_nanosleep")]
    assert "no holder was waiting in accept() or epoll when sampled" in w(napping)
    assert "do_nanosleep" in w(napping) and "or only between other work" in w(napping)
    # Blocked in accept(): it accepts, one at a time; never "no one waits".
    blocking = [_holder(1, "S", state_text="sleeping", wchan="inet_csk_accept")]
    assert "waits in accept() (inet_csk_accept)" in w(blocking)
    assert backlog.nobody_accepts(blocking) is False and backlog.nobody_accepts(napping)


def _reuseport_facts(**kw) -> Facts:
    lst = [Listener(2, "127.0.0.1", 8080, 33, 32, 501), Listener(2, "127.0.0.1", 8080, 0, 32, 502),
           Listener(2, "127.0.0.1", 9090, 0, 32, 503)]
    procs = ProcessFacts(owners={501: 20, 502: 20, 503: 30}, shared={501: [20, 21, 22]},
                         processes={p: ProcessInfo(p, "nginx", "nginx: worker process", 10, 3)
                                    for p in (20, 21, 22, 30)},
                         activity={22: ProcessActivity(22, "T", epoll_watches=[501])})
    return Facts(census=Census(source="t", listeners=lst), processes=procs,
                 sysctl=sysctl(net__core__somaxconn=32, net__ipv4__tcp_abort_on_overflow=0),
                 **kw)


def test_one_reuseport_member_not_accepting():
    f = backlog._accept_full(_reuseport_facts())
    assert f.severity is Severity.CRITICAL
    assert "1 of 2 reuseport sockets is not accepting" in f.title
    assert "pid 22 (nginx: worker process) is stopped (T)" in f.title
    [row] = f.evidence["full"]
    assert row["inode"] == 501 and [h["pid"] for h in row["holders"]] == [20, 21, 22]


def _overflowing(samples=None, window=None) -> Facts:
    counters = dict(counters=CounterFacts(counters={"TcpExt": {
        "ListenOverflows": 60, "ListenDrops": 60}}, taken_at=2.0))
    if window is None:
        counters.update(counters_before=CounterFacts(counters={"TcpExt": {
            "ListenOverflows": 0, "ListenDrops": 0}}), interval=2.0, baseline="interval")
    f = _reuseport_facts(**counters)
    f.listener_samples, f.listener_window = samples, window
    return f


def test_overflows_are_attributed_only_to_listeners_seen_full():
    seen = [ListenerSample("127.0.0.1", 8080, 32, 33, 10, 10, 501, 2, 10),
            ListenerSample("127.0.0.1", 8080, 32, 0, 10, 0, 502, 2, 0),
            ListenerSample("127.0.0.1", 9090, 32, 0, 10, 0, 503, 2, 0)]
    f = backlog._overflow(_overflowing(seen))
    assert [r["inode"] for r in f.evidence["attributed_to"]] == [501]
    assert "127.0.0.1:8080" in f.title and "9090" not in f.title
    unseen = [ListenerSample("127.0.0.1", 9090, 32, 5, 10, 0, 503, 2, 0)]
    f = backlog._overflow(_overflowing(unseen))
    assert f.evidence["attribution"].startswith("impossible: no sample caught a full")
    assert "attributed_to" not in f.evidence and "9090" not in f.title
    f = backlog._overflow(_overflowing(None))
    assert f.evidence["attribution"].startswith("not attributed")
    assert f.evidence["full_now"] == [{"address": "127.0.0.1", "port": 8080, "inode": 501}]
    # The title says which listener is full now, not only "not attributed".
    assert "full now: 127.0.0.1:8080" in f.title and "not attributed" not in f.title


def test_the_probe_window_is_a_baseline_of_its_own():
    window = ListenerWindow("probe window", 3.0, 15, 100, 1035, 100, 1035)
    seen = [ListenerSample("127.0.0.1", 8080, 32, 33, 15, 15, 501, 2, 15)]
    f = backlog._overflow(_overflowing(seen, window))
    assert f.severity is Severity.CRITICAL  # 935 in 3 s
    assert f.evidence["ListenOverflows"]["since"] == "probe window"
    assert "935 handshake segments (SYNs or final ACKs) dropped" in f.title
    assert "during the probe window" in f.title and "connections dropped" not in f.title


def test_somaxconn_never_blames_a_listener_that_was_not_full():
    f = _reuseport_facts(counters=CounterFacts(counters={"TcpExt": {"ListenOverflows": 50}},
                                               taken_at=2.0),
                         counters_before=CounterFacts(counters={"TcpExt": {
                             "ListenOverflows": 0}}), interval=2.0)
    got = backlog._clamp(f)
    assert got.severity is Severity.WARNING and "port 8080" in got.title
    assert "9090" not in got.title
    f.census.listeners[0].accept_queue = 0  # nobody full: the namespace counter alone
    got = backlog._clamp(f)
    assert got.severity is Severity.INFO


def test_each_reuseport_member_is_its_own_series():
    f = _reuseport_facts()
    got = [(dict(s.labels), s.value) for s in samples(f, [], [], "ok", "default")
           if s.name == "netdiag_listener_accept_queue"]
    assert sorted((lb["port"], lb["inode"], v) for lb, v in got) == [
        ("8080", "501", 33), ("8080", "502", 0), ("9090", "503", 0)]


# ---- keepalive per socket ----------------------------------------------------------------------


def test_keepalive_timers_read_from_live_sockets():
    srv = socket.create_server(("127.0.0.1", 0))
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    srv.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 45)  # inherited by accept()
    pairs = [_pair(srv) for _ in range(3)]
    try:
        _, details, _ = read_census(Context(), (32768, 60999), details=True)
        port = srv.getsockname()[1]
        [g] = [g for g in details.keepalive_groups if (g.side, g.port) == ("local_port", port)]
        assert g.sockets == 3 and g.probing == 0
        assert 44_000 <= g.idle_estimate_min_ms <= g.idle_estimate_max_ms <= 46_000
    finally:
        for c, a in pairs:
            c.close()
            a.close()
        srv.close()


def _ka_facts(*groups: KeepaliveGroup) -> Facts:
    return Facts(sysctl=sysctl(), details=ConnectionDetails(established=9, keepalive_timer=9,
                                                            keepalive_groups=list(groups)))


def test_keepalive_says_when_the_sysctls_do_not_apply():
    own = KeepaliveGroup("local_port", 6379, 4, 0, 60_000, 59_000)
    f = keepalive.check(_ka_facts(own))[0]
    assert f.severity is Severity.OK and "set their own timers" in f.title
    assert "the sysctl defaults do not apply" in f.explanation
    on_sysctl = KeepaliveGroup("remote_port", 5432, 3, 0, 7_199_000, 7_000_000)
    f = keepalive.check(_ka_facts(own, on_sysctl))[0]
    assert f.severity is Severity.INFO and "3 of 9 keepalive socket(s) use the sysctls" in f.title
    rows = {g.get("local_port", g.get("remote_port")): g["setting"]
            for g in f.evidence["keepalive_sockets_by_service"]}
    assert rows == {6379: "own", 5432: "sysctl"}
    assert "are not affected by the sysctls" in f.recommendation
    probing = KeepaliveGroup("local_port", 22, 2, 2, 0, None)
    f = keepalive.check(_ka_facts(probing))[0]
    assert "not answer" in f.explanation


# ---- namespaces and host-wide sysctls -----------------------------------------------------------


def test_host_wide_and_denied_sysctls_are_said_as_such():
    facts = Facts(sysctl=SysctlFacts(values={}, missing=["net.ipv4.tcp_mem", "net.ipv4.nope"],
                                     unreadable={"net.ipv4.tcp_tw_reuse": "/proc/sys/net/ipv4/"
                                                 "tcp_tw_reuse: permission denied"}))
    inside = _sysctl_errors(Context(netns="blue", host_sysctls_denied=True), facts)
    text = [e.message for e in inside]
    assert "host-wide, not visible inside this network namespace, and the initial namespace " \
           "could not be entered to read them (needs root): net.ipv4.tcp_mem" in text
    assert "/proc/sys/net/ipv4/tcp_tw_reuse: permission denied" in text
    assert not any("not present" in t and "tcp_mem" in t for t in text)
    default = [e.message for e in _sysctl_errors(Context(), facts)]
    assert any(t.startswith("not present on this kernel") and "tcp_mem" in t for t in default)


def test_overflows_since_boot_are_segments_and_name_a_listener_full_now():
    """Without a window: the total is handshake segments (retries count), the title names a
    listener full now; with a window, the advice no longer asks for --interval."""
    f = backlog._overflow(_reuseport_facts(counters=CounterFacts(counters={"TcpExt": {
        "ListenOverflows": 60, "ListenDrops": 60}}, taken_at=2.0)))
    assert "handshake segments" in f.title and "full now: 127.0.0.1:8080" in f.title
    assert "Run with --interval" in f.recommendation  # no window yet: it is the next step
    seen = [ListenerSample("127.0.0.1", 8080, 32, 33, 10, 10, 501, 2, 10)]
    got = backlog._overflow(_overflowing(seen))
    assert "Run with --interval" not in got.recommendation


# ---- review d: a receive queue near a fixed small rcvbuf is the buffer's limit ------------

RVD_LIMITS = {"rmax": 33554432, "rdefault": 131072, "wmax": 4194304, "rmem_max": 4194304,
              "wmem_max": 4194304}


def _rvd_receiver(queued: int, rcv_rtt: int = 6) -> Connection:
    """iperf3 -w 16K into a namespace over veth (review d, buf4/buf5): SO_RCVBUF=16384,
    doubled to 32768, below tcp_rmem[1]; the reader copied 66608 bytes in one RTT; window
    scale 0 on both sides; RTT of a few µs."""
    now, then = receiver(628_000_000 // 2, rtt=14, rcv_rtt=rcv_rtt, rcv_space=66608,
                         rcv_wnd=27512, rcv_wscale=0, snd_wscale=0)
    return flow(now, then, {"rcvbuf": 32768, "rmem_alloc": queued}, seconds=0.5)


def test_a_full_queue_in_a_fixed_small_rcvbuf_is_the_buffer_not_a_slow_reader():
    v = buffers.judge_flow(_rvd_receiver(30008), RVD_LIMITS)
    assert (v.limit, v.held) == ("receive_buffer_fixed_by_application", True), v
    assert "32768" in v.text and "SO_RCVBUF" in v.text and "autotuning" in v.text
    assert "slower than data arrives" not in v.text
    assert "SO_RCVBUF = 16384" in v.advice
    assert "netdiag probe rcvbuf" in v.advice and "remove" in v.advice.lower()


def test_a_fixed_small_rcvbuf_drained_each_rtt_is_the_buffer_even_at_microsecond_rtts():
    # buf4: the queue happened to be empty when sampled and the µs RTT makes rate × RTT look
    # like a small share of the window: not "the network or the sender".
    v = buffers.judge_flow(_rvd_receiver(0), RVD_LIMITS)
    assert (v.limit, v.held) == ("receive_buffer_fixed_by_application", True), v


def test_a_slow_reader_with_an_autotuned_buffer_stays_a_slow_reader():
    # Autotuned: at or above tcp_rmem[1] and not below twice what it reads per RTT.
    now, then = receiver(125_000, rcv_space=20_000, rcv_wnd=30_000, rcv_wscale=7,
                         snd_wscale=7)
    v = buffers.judge_flow(flow(now, then, {"rcvbuf": 131072, "rmem_alloc": 120_000}),
                           RVD_LIMITS)
    assert (v.limit, v.held) == ("slow_reader", False), v


def test_the_finding_follows_the_per_flow_limits_never_ok_beside_a_held_flow():
    c = _rvd_receiver(30008)
    c.source, c.sport, c.destination, c.dport = "10.77.0.1", 5201, "10.77.0.2", 34948
    facts = Facts(sysctl=sysctl(net__ipv4__tcp_rmem="4096 131072 33554432",
                                net__core__rmem_max=4194304),
                  details=ConnectionDetails(with_info=2, flows=[c],
                                            flow_sample="second sample"))
    f = buffers._bdp(facts)
    rows = f.evidence["flows"]
    assert rows[0]["limit"] == "receive_buffer_fixed_by_application"
    assert f.severity is Severity.WARNING and not f.title.startswith("no busy flow"), f.title
    assert "SO_RCVBUF" in f.title and "netdiag probe rcvbuf" in f.recommendation
    assert any(r["held_by_buffer"] for r in rows) == (f.severity is not Severity.OK)


def test_rtt_below_a_millisecond_is_shown_in_microseconds():
    v = buffers.judge_flow(flow(*sender(990_000, rwnd=800_000, snd_wnd=27512, rtt=50)),
                           LIMITS)
    assert v.limit == "peer_receive_window"
    assert "RTT 0.0 ms" not in v.text and "RTT 50 µs" in v.text, v.text
    assert buffers.fmt_rtt(1500) == "1.5 ms" and buffers.fmt_rtt(52_000) == "52 ms"


def test_the_ok_headline_has_no_nested_parentheses():
    app = flow(*sender(990_000))
    facts = Facts(sysctl=sysctl(), details=ConnectionDetails(with_info=1, flows=[app],
                                                             flow_sample="second sample"))
    f = buffers._bdp(facts)
    assert f.severity is Severity.OK and "cannot tell" in f.title, f.title
    depth = deepest = 0
    for ch in f.title:
        depth += {"(": 1, ")": -1}.get(ch, 0)
        deepest = max(deepest, depth)
    assert deepest <= 1, f.title
