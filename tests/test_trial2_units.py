"""Verdicts the second new-user trial found wrong (trial 2 report items 3, 4, 5, 6, 8), on
hand-built facts: each test asserts the right verdict and the absence of the wrong one."""

from __future__ import annotations

import socket

from netdiag.collect.census import CensusBuilder
from netdiag.diagnose import judge, report_parts
from netdiag.diagnose.judge import CANNOT_TELL, CONFIRMED, LIKELY, RULED_OUT, Scope
from netdiag.diagnose.symptoms import find
from netdiag.facts import (
    Census,
    Connection,
    ConnectionDetails,
    Facts,
    Listener,
    ProcessFacts,
    ProcessInfo,
    SysctlFacts,
    TopCounts,
)
from netdiag.probefacts import ErrorsResult, Failure, Retransmits, RetransResult
from netdiag.rules import TOPICS, evaluate

from conftest import judge_symptom

run = judge_symptom


def ranked(symptom: str, facts: Facts, scope: Scope) -> list[judge.CauseVerdict]:
    return judge.diagnose(find(symptom), facts, evaluate(facts, list(TOPICS)).findings, scope)


def texts(verdicts) -> str:
    return " | ".join(f"{v.because} {v.would_tell or ''}" for v in verdicts)


def _tops(rows: list) -> TopCounts:
    return TopCounts(rows, len(rows), 0, False)


KEEPALIVE = {"net.ipv4.tcp_keepalive_time": "7200", "net.ipv4.tcp_keepalive_intvl": "75",
             "net.ipv4.tcp_keepalive_probes": "9"}


# ---- census: timers per state and per outgoing connection --------------------------------

def test_census_counts_timers_by_state_and_per_destination():
    b = CensusBuilder("netlink", (32768, 60999))
    src, dst = (socket.inet_aton(a) + b"\0" * 12 for a in ("10.0.0.1", "10.0.0.2"))
    b.add(2, 1, 1, src, 40000, dst, 6400, 0, 5000, 11)  # ESTABLISHED, data on the timer
    for i in range(3):
        b.add(2, 2, 1, src, 40001 + i, dst, 8080, 0, 0, 12 + i)  # SYN_SENT
    c = b.finish()
    assert c.timers == {"on": 4}
    assert c.timers_by_state == {"on": {"ESTABLISHED": 1, "SYN_SENT": 3}}
    assert dict(c.outgoing_timers.items) == {("10.0.0.2", 6400, "ESTABLISHED", "on"): 1,
                                             ("10.0.0.2", 8080, "SYN_SENT", "on"): 3}


# ---- 4: hang --------------------------------------------------------------------------------

def _hang_facts(probes: dict | None = None) -> Facts:
    """A client's data toward port 6400 unacknowledged (retransmit timer on), the server on
    6400 in the same namespace; 11 connects toward 8080 stuck in SYN_SENT."""
    census = Census(
        source="netlink", by_state={"ESTABLISHED": 2, "SYN_SENT": 11, "LISTEN": 1},
        timers={"on": 12, "off": 2},
        timers_by_state={"on": {"ESTABLISHED": 1, "SYN_SENT": 11}, "off": {"ESTABLISHED": 1}},
        listeners=[Listener(2, "127.0.0.1", 6400, 0, 128, 64)],
        by_local_port=_tops([((6400, "ESTABLISHED"), 1)]),
        outgoing_timers=_tops([(("127.0.0.1", 6400, "ESTABLISHED", "on"), 1),
                               (("10.9.9.9", 8080, "SYN_SENT", "on"), 11)]),
        ephemeral_range=(32768, 60999))
    return Facts(census=census, sysctl=SysctlFacts(dict(KEEPALIVE)),
                 details=ConnectionDetails(established=2, with_info=2, retransmit_timer=1,
                                           no_timer=1),
                 probes=probes)


def test_hang_sees_the_scoped_connection_on_the_retransmit_timer():
    got = ranked("hang", _hang_facts(), Scope(port=6400))
    by = {v.cause.id: v for v in got}
    v = by["hang.unacked_retransmitting"]
    assert v.verdict == LIKELY, v.because
    assert "6400" in v.because and "not known" not in v.because
    # Keepalive does not run while data is in flight: not likely, and not ranked first.
    assert by["hang.keepalive_defaults"].verdict != LIKELY, by["hang.keepalive_defaults"].because
    assert got[0].cause.id == "hang.unacked_retransmitting"


def test_hang_syn_sent_is_no_data_and_no_established_is_no_keepalive():
    by = run("hang", _hang_facts(), Scope(port=8080))
    ka, un = by["hang.keepalive_defaults"], by["hang.unacked_retransmitting"]
    assert ka.verdict == RULED_OUT and "no established connection" in ka.because
    assert un.verdict == RULED_OUT, un.because
    assert "11 socket(s)" not in un.because and "have data" not in un.because
    # Namespace-wide: 1 socket has data on the timer, not the 12 the timer count shows.
    whole = run("hang", _hang_facts())["hang.unacked_retransmitting"]
    assert whole.verdict == LIKELY and whole.because.startswith("1 socket(s)")
    assert whole.evidence["handshake_retransmit_timer_sockets"] == 11


def test_hang_with_probes_never_advises_probe_seconds():
    retrans = RetransResult(by_flow=[Retransmits(40000, "127.0.0.1", 6400, 4, 0, 1.0)], total=4)
    facts = _hang_facts({"retrans": retrans})
    got = ranked("hang", facts, Scope(port=6400))
    assert got[0].cause.id == "hang.unacked_retransmitting" and got[0].verdict == CONFIRMED
    assert "--probe-seconds" not in texts(got)
    assert "errors happen" not in texts(got)
    _findings, section = report_parts(find("hang"), "hang", Scope(port=6400), facts, [])
    assert section["next_step"] is None


# ---- 3: slow --------------------------------------------------------------------------------

RMEM = {"net.ipv4.tcp_rmem": "4096 131072 6291456", "net.ipv4.tcp_wmem": "4096 16384 4194304",
        "net.core.rmem_max": "212992", "net.core.wmem_max": "212992"}


def _loopback_sender(rwnd_ms: int, busy_ms: int = 950) -> Connection:
    then = {"busy_time": 0, "rwnd_limited": 0, "sndbuf_limited": 0, "bytes_acked": 0,
            "bytes_received": 0, "rtt": 50, "snd_wnd": 65536}
    now = dict(then, busy_time=busy_ms * 1000, rwnd_limited=rwnd_ms * 1000,
               bytes_acked=1_600_000)
    earlier = Connection("127.0.0.1", 41000, "127.0.0.1", 5203, 7, "on", then, {})
    return Connection("127.0.0.1", 41000, "127.0.0.1", 5203, 7, "on", now,
                      {"sndbuf": 2_000_000}, earlier=earlier, sample_seconds=1.0)


def _slow_facts(*flows: Connection, interval: float | None = None) -> Facts:
    return Facts(sysctl=SysctlFacts(dict(RMEM)), interval=interval,
                 details=ConnectionDetails(established=2, with_info=2, active_flows=len(flows),
                                           flows=list(flows),
                                           flow_sample="interval" if interval else
                                           "second sample"))


def test_a_slow_reader_on_loopback_is_the_receive_window():
    got = ranked("slow", _slow_facts(_loopback_sender(rwnd_ms=900)), Scope(port=5203))
    by = {v.cause.id: v for v in got}
    v = by["slow.receive_window"]
    assert v.verdict == CONFIRMED, v.because
    assert "none of" not in v.because and v.evidence["flows"]
    assert by["slow.application_limited"].verdict == RULED_OUT
    # Part of the time only (iperf3 -w 4K: 28%): likely, not ruled out.
    part = run("slow", _slow_facts(_loopback_sender(rwnd_ms=280)), Scope(port=5203))
    assert part["slow.receive_window"].verdict == LIKELY, part["slow.receive_window"].because
    # A slow transfer has no errors to wait for.
    assert "errors happen" not in texts(got)


def test_a_slow_reader_seen_from_the_receiving_side_on_loopback():
    then = {"bytes_received": 0, "bytes_acked": 0, "rtt": 50}
    now = dict(then, bytes_received=1_000_000)
    earlier = Connection("127.0.0.1", 5203, "127.0.0.1", 41000, 8, "off", then, {})
    recv = Connection("127.0.0.1", 5203, "127.0.0.1", 41000, 8, "off", now,
                      {"rcvbuf": 8192, "rmem_alloc": 8000}, earlier=earlier,
                      sample_seconds=1.0)
    v = run("slow", _slow_facts(recv), Scope(port=5203))["slow.receive_window"]
    assert v.verdict == CONFIRMED and "slower than the writer" in v.because


def test_a_measured_interval_is_not_one_sample():
    busy = _loopback_sender(rwnd_ms=0, busy_ms=990)
    v = run("slow", _slow_facts(busy, interval=5.0), Scope(port=5203))[
        "slow.application_limited"]
    assert "one sample" not in v.because and "--interval 10" not in (v.would_tell or "")
    # Busy most of the window is still no verdict: a paced sender keeps data in flight too.
    assert v.verdict == CANNOT_TELL and "measured window" in v.because, v.because
    idle = _loopback_sender(rwnd_ms=0, busy_ms=200)
    v = run("slow", _slow_facts(idle, interval=5.0), Scope(port=5203))[
        "slow.application_limited"]
    assert v.verdict == CONFIRMED, v.because


# ---- 5: EADDRINUSE --------------------------------------------------------------------------

def _busy_range() -> Facts:
    """70% of a 10000-port range taken toward one destination; nothing on port 80."""
    census = Census(source="netlink", by_state={"ESTABLISHED": 7000},
                    by_destination=_tops([(("10.0.0.1", "10.0.0.2", 443), 7000)]),
                    by_local_port=_tops([]), ephemeral_range=(50000, 59999))
    return Facts(census=census, sysctl=SysctlFacts({"net.ipv4.ip_local_port_range":
                                                    "50000\t59999"}))


def test_eaddrinuse_with_a_port_is_its_holder_not_bind_zero():
    by = run("EADDRINUSE", _busy_range(), Scope(port=80))
    v = by["eaddrinuse.bind_zero_exhaustion"]
    assert v.verdict == RULED_OUT and "busiest destination" not in v.because
    assert all(x.verdict != LIKELY or x.cause.id != "eaddrinuse.bind_zero_exhaustion"
               for x in by.values())


def test_eaddrinuse_without_a_port_judges_bind_zero_and_offers_the_errors_probe():
    """Without --port, bind(0) running out of ports is judged from the socket table; the
    errors probe (it sees bind(0) itself fail) is what decides it, so it is offered."""
    facts = _busy_range()
    by = run("EADDRINUSE", facts)
    v = by["eaddrinuse.bind_zero_exhaustion"]
    assert v.verdict == LIKELY and "port fails to bind is needed" not in v.because
    assert by["eaddrinuse.listener_holds_port"].verdict == CANNOT_TELL
    assert find("EADDRINUSE").probes == ("errors",)
    _f, section = report_parts(find("EADDRINUSE"), "EADDRINUSE", Scope(port=80), facts, [])
    assert section["next_step"] and section["symptom"]["probes"] == ["errors"]


# ---- 6: EPIPE -------------------------------------------------------------------------------

def _epipe_facts(server_pid_holds_6300: bool = False) -> Facts:
    """pid 60 got EPIPE x10 (port unknown to the probe); 10 CLOSE_WAIT sockets on port 6200
    belong to pid 62."""
    census = Census(source="netlink", by_state={"CLOSE_WAIT": 10, "LISTEN": 2},
                    listeners=[Listener(2, "0.0.0.0", 6300, 0, 128, 630),
                               Listener(2, "0.0.0.0", 6200, 0, 128, 620)],
                    close_wait_by_port=_tops([(6200, 10)]),
                    close_wait_inodes={100 + i: 6200 for i in range(10)})
    owners = {100 + i: 62 for i in range(10)}
    owners[620] = 62
    if server_pid_holds_6300:
        owners[630] = 60
    procs = ProcessFacts(owners=owners, processes={
        60: ProcessInfo(60, "writer", "writer", 10, 1), 62: ProcessInfo(62, "other", "other",
                                                                        20, 11)})
    errors = ErrorsResult(failures=[Failure("write", 32, "EPIPE", 60, "writer", 10, None)])
    return Facts(census=census, processes=procs, probes={"errors": errors})


def test_epipe_writes_of_unknown_port_are_said_so_under_port():
    v = run("EPIPE", _epipe_facts(), Scope(port=6300))["epipe.write_after_peer_close"]
    assert v.verdict == CANNOT_TELL, v.because
    assert "could not tell their port" in v.because and "CLOSE_WAIT" not in v.because
    assert "--probe-seconds" not in (v.would_tell or "")
    held = run("EPIPE", _epipe_facts(True), Scope(port=6300))["epipe.write_after_peer_close"]
    assert held.verdict == LIKELY and "holds port 6300" in held.because


def test_epipe_close_wait_of_another_process_does_not_confirm():
    v = run("EPIPE", _epipe_facts())["epipe.write_after_peer_close"]
    assert v.verdict == LIKELY, v.because
    assert "10 of their" not in v.because and "another process" in v.because


# ---- 8: --peer IP:PORT names the port -------------------------------------------------------

def test_refused_takes_the_port_from_peer():
    census = Census(source="netlink", listeners=[Listener(2, "0.0.0.0", 22, 0, 128, 1)],
                    by_local_port=_tops([]))
    facts = Facts(census=census)
    v = run("ECONNREFUSED", facts, Scope(peer="127.0.0.1", peer_port=80))[
        "econnrefused.no_listener"]
    assert v.verdict == CONFIRMED and "port 80" in v.because
    assert "which port" not in v.because and "--port PORT" not in (v.would_tell or "")
    far = run("ECONNREFUSED", facts, Scope(peer="10.0.0.9", peer_port=80))[
        "econnrefused.no_listener"]
    assert far.verdict == CANNOT_TELL and "--port 80 on 10.0.0.9" in far.would_tell



# ---- the class: every judge keeps to the scope ----------------------------------------------

def test_timeouts_of_unknown_port_do_not_confirm_under_port():
    errors = ErrorsResult(failures=[Failure("read", 110, "ETIMEDOUT", 70, "client", 3, None)])
    facts = Facts(probes={"errors": errors})
    v = run("ETIMEDOUT", facts, Scope(port=6500))["etimedout.retransmits_exhausted"]
    assert v.verdict != CONFIRMED and "could not tell" in v.because, v.because
    assert run("ETIMEDOUT", facts)["etimedout.retransmits_exhausted"].verdict == CONFIRMED


def test_resets_sent_are_not_known_per_peer_or_process():
    from netdiag.probefacts import ResetsResult, SentReset

    resets = ResetsResult(sent=[SentReset("TCP_STATE", "ESTABLISHED", 9934, 5,
                                          answers_syn=False)], sent_total=5)
    facts = Facts(probes={"resets": resets})
    for scope in (Scope(peer="10.0.0.9"), Scope(pid=4242)):
        v = run("ECONNRESET", facts, scope)["econnreset.linger_zero"]
        assert v.verdict == LIKELY and "whole namespace" in v.because, (scope, v.because)
    assert run("ECONNRESET", facts, Scope(port=9934))["econnreset.linger_zero"].verdict == \
        CONFIRMED


def test_failures_toward_another_peer_are_out_of_scope():
    errors = ErrorsResult(failures=[Failure("write", 32, "EPIPE", 60, "writer", 4, 5000,
                                            "10.0.0.5", 443)])
    facts = Facts(census=Census(source="netlink"), probes={"errors": errors})
    v = run("EPIPE", facts, Scope(peer="10.0.0.9"))["epipe.write_after_peer_close"]
    assert "failed_writes" not in v.evidence and v.verdict == RULED_OUT, v.because
    _f, section = report_parts(find("EPIPE"), "EPIPE", Scope(peer="10.0.0.9", peer_port=443),
                               facts, [])
    assert section["errors_seen"] == []


def test_a_truncated_socket_table_does_not_rule_out_the_scope():
    facts = _hang_facts()
    top = facts.census.outgoing_timers
    facts.census.outgoing_timers = TopCounts(top.items, 500, 40, True)
    v = run("hang", facts, Scope(port=7777))["hang.unacked_retransmitting"]
    assert v.verdict == CANNOT_TELL, v.because


def test_keepalive_counts_a_peers_incoming_connections():
    from netdiag.facts import KeepaliveGroup

    facts = _hang_facts()
    facts.census.by_peer = _tops([(("10.0.0.7", "ESTABLISHED"), 3)])
    # No socket of the namespace shows the keepalive timer: keepalive applies to none.
    v = run("hang", facts, Scope(peer="10.0.0.7"))["hang.keepalive_defaults"]
    assert v.verdict == RULED_OUT and v.evidence["established_in_scope"] == 3, v.because
    # Keepalive sockets on the sysctls' timers, grouped by port: a peer's are not told apart.
    facts.details.keepalive_timer = 3
    facts.details.keepalive_groups = [KeepaliveGroup("local_port", 6400, 3, 0, 7_200_000,
                                                     7_150_000, [64])]
    v = run("hang", facts, Scope(peer="10.0.0.7"))["hang.keepalive_defaults"]
    assert v.verdict == CANNOT_TELL and v.evidence["established_in_scope"] == 3, v.because
    assert "timer:(keepalive" in v.would_tell
    none = run("hang", facts, Scope(peer="10.0.0.8"))["hang.keepalive_defaults"]
    assert none.verdict == RULED_OUT, none.because
    # Its incoming connections' timers are not split by peer: not ruled out from outgoing ones.
    un = run("hang", facts, Scope(peer="10.0.0.7"))["hang.unacked_retransmitting"]
    assert un.verdict == CANNOT_TELL, un.because


def test_the_heading_offers_no_probe_for_a_symptom_no_probe_decides():
    import io

    from netdiag.render.table import _why_heading, console_for

    _f, section = report_parts(find("EADDRINUSE"), "EADDRINUSE", Scope(port=80), Facts(), [])
    # Every symptom has a probe now; the heading's branch for one without stays covered.
    section["symptom"]["probes"] = []
    section["next_step"] = None  # written for the real symptom, which has one
    out = io.StringIO()
    _why_heading(console_for(out), section)
    assert "--probe-seconds" not in out.getvalue() and "--interval" in out.getvalue()
