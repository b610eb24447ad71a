"""Verdicts the new-user trial found wrong (trial report items 1-5, 11, 12), on hand-built
facts: each test asserts the right verdict and the absence of the wrong advice."""

from __future__ import annotations

from netdiag.diagnose import judge, to_finding
from netdiag.diagnose.judge import CANNOT_TELL, CONFIRMED, LIKELY, RULED_OUT, Scope
from netdiag.diagnose.symptoms import find
from netdiag.facts import (
    Census,
    ConnectionDetails,
    CounterFacts,
    Facts,
    Listener,
    ListenerSample,
    ProcessActivity,
    ProcessFacts,
    ProcessInfo,
    SysctlFacts,
    TopCounts,
)
from netdiag.model import Finding, Rule, Severity
from netdiag.probefacts import (
    DropPort,
    DropReason,
    DropsResult,
    ErrorsResult,
    Failure,
    ReceivedReset,
    ResetsResult,
    SentReset,
    Window,
)
from netdiag.rules import drops, evaluate

from conftest import judge_symptom

run = judge_symptom


def _counters(**tcpext) -> CounterFacts:
    return CounterFacts({"TcpExt": {"ListenOverflows": 0, "TCPAbortOnData": 0,
                                    "TCPAbortOnClose": 0, "TCPAbortOnTimeout": 0, **tcpext}},
                        taken_at=10.0)


# ---- 1: a RST answering a SYN is a refusal, not ECONNRESET ---------------------------------

def _refusals_and_linger(told_reset: int) -> Facts:
    # Client and server on this host (loopback, as in the trial): the linger RSTs arrive at
    # local sockets too.
    resets = ResetsResult(sent=[SentReset("NO_SOCKET", "none", 9999, 40, answers_syn=True),
                                SentReset("TCP_STATE", "ESTABLISHED", 9934, 5,
                                          answers_syn=False)], sent_total=45,
                          received=[ReceivedReset(40000, "127.0.0.1", 9934, 5)],
                          received_total=5)
    failures = [Failure("connect", 111, "ECONNREFUSED", 50, "client", 40, None, "127.0.0.1",
                        9999)]
    if told_reset:
        failures.append(Failure("read", 104, "ECONNRESET", 51, "client", told_reset, None))
    facts = Facts(counters=_counters(), counters_before=_counters(), interval=6.0,
                  baseline="probe window",
                  probes={"resets": resets, "errors": ErrorsResult(failures=failures)})
    return facts


def test_refused_connects_do_not_confirm_no_socket():
    got = run("ECONNRESET", _refusals_and_linger(told_reset=5))
    v = got["econnreset.no_socket"]
    assert v.verdict == RULED_OUT, v.because
    assert "refused connects" in v.because and v.evidence["refused_connects"][0]["resets"] == 40
    assert got["econnreset.linger_zero"].verdict == CONFIRMED
    ranked = judge.diagnose(find("ECONNRESET"), _refusals_and_linger(5), [], Scope())
    assert ranked[0].cause.id == "econnreset.linger_zero"
    # ECONNREFUSED still counts them: they are its evidence.
    refused = run("ECONNREFUSED", _refusals_and_linger(told_reset=0))
    assert refused["econnrefused.no_listener"].verdict == CONFIRMED
    assert "40 SYN(s)" in refused["econnrefused.no_listener"].because
    # EPIPE: a RST refusing a connection answers no write.
    epipe = run("EPIPE", _refusals_and_linger(told_reset=0))["epipe.write_after_peer_close"]
    assert epipe.verdict != LIKELY and "closed connections" not in epipe.because


def test_rsts_to_established_connections_still_confirm_no_socket():
    facts = _refusals_and_linger(told_reset=3)
    facts.probes["resets"].sent.append(SentReset("NO_SOCKET", "none", 8080, 3,
                                                 answers_syn=False))
    v = run("ECONNRESET", facts)["econnreset.no_socket"]
    assert v.verdict == CONFIRMED and "3 segment(s)" in v.because
    # On a kernel that cannot tell (no BTF offsets): likely at most, and said why.
    facts.probes["resets"].sent[-1].answers_syn = None
    v = run("ECONNRESET", facts)["econnreset.no_socket"]
    assert v.verdict == LIKELY and "not known" in v.because


def test_no_local_econnreset_caps_every_cause_at_likely():
    got = run("ECONNRESET", _refusals_and_linger(told_reset=0))
    assert all(v.verdict != CONFIRMED for v in got.values())
    v = got["econnreset.linger_zero"]
    assert v.verdict == LIKELY
    assert "no local process was told ECONNRESET" in v.because
    assert "other hosts" in v.because  # remote clients are not seen: said
    assert to_finding(v).severity == Severity.INFO


def test_rsts_sent_to_other_hosts_stay_confirmed_on_the_sender():
    """On the host that sends the RSTs to remote clients, no local process is told
    ECONNRESET (the clients are elsewhere): that must not demote what the resets probe saw."""
    facts = _refusals_and_linger(told_reset=0)
    facts.probes["resets"].received, facts.probes["resets"].received_total = [], 0
    v = run("ECONNRESET", facts)["econnreset.linger_zero"]
    assert v.verdict == CONFIRMED and "went to other hosts" in v.because
    assert to_finding(v).severity >= Severity.WARNING


# ---- 2: socket teardown is not a network drop ----------------------------------------------

def _drops(rows: list[tuple[str, int]], seconds: float = 2.0) -> Facts:
    res = DropsResult(by_reason=[DropReason(r, n, round(n / seconds, 2)) for r, n in rows],
                      by_port=[DropPort(r, "tcp", None, n, round(n / seconds, 2))
                               for r, n in rows], total=sum(n for _, n in rows))
    res.window = Window(seconds=seconds)
    return Facts(probes={"drops": res})


def test_queue_purge_at_teardown_never_warns():
    (f,) = drops.check(_drops([("QUEUE_PURGE", 300), ("SOCKET_CLOSE", 120)]))
    assert f.severity == Severity.OK
    assert f.title.startswith("no network drop") and "QUEUE_PURGE" in f.title
    assert f.evidence["network_drops"] == 0
    assert f.evidence["socket_teardown"]["packets"] == 420
    assert "firewall" not in f.recommendation and "resets" not in f.recommendation


def test_real_drops_beside_teardown_are_judged_alone():
    (f,) = drops.check(_drops([("QUEUE_PURGE", 900), ("NO_SOCKET", 30)]))
    assert f.severity == Severity.INFO  # 15/s of NO_SOCKET: below the warning rate
    assert "30 packets dropped" in f.title and "top reason NO_SOCKET" in f.title
    assert "900 more freed at socket teardown" in f.title
    (f,) = drops.check(_drops([("QUEUE_PURGE", 900), ("NO_SOCKET", 400)]))
    assert f.severity == Severity.WARNING and "top reason NO_SOCKET" in f.title


# ---- 3: a paced sender is not "ruled out" from one sample -----------------------------------

def _flows(*rows: dict) -> Finding:
    return Finding(id="buffers.max_below_bdp", topic="buffers", severity=Severity.OK,
                   title="t", evidence={"measured_over": "two samples", "flows": list(rows)},
                   explanation="e", recommendation="r", rule=Rule("t", "s"))


def test_application_limit_is_cannot_tell_from_one_sample():
    paced = {"local_address": "10.0.0.1", "local_port": 5201, "peer_address": "10.0.0.2",
             "peer_port": 40000, "limit": "network_or_application",
             "what_holds_it": "no window or buffer: ... cannot tell", "rate_mbit": 74837}
    facts = Facts()
    v = run("slow", facts, Scope(port=5201), [_flows(paced, dict(paced, local_port=5202))]
            )["slow.application_limited"]
    assert v.verdict == CANNOT_TELL and v.would_tell
    assert "none of" not in v.because and "paces or caps" in v.because
    # Conclusive both ways: idle most of a measured window; held by a window or buffer.
    idle = dict(paced, limit="application", busy_share=0.05,
                what_holds_it="its application: busy only 5% of the time")
    assert run("slow", facts, Scope(port=5201), [_flows(idle)])[
        "slow.application_limited"].verdict == CONFIRMED
    held = dict(paced, limit="peer_receive_window", what_holds_it="the receiver's window")
    assert run("slow", facts, Scope(port=5201), [_flows(held)])[
        "slow.application_limited"].verdict == RULED_OUT
    flag = dict(paced, limit="application", what_holds_it="its application (last sample)")
    v = run("slow", facts, Scope(port=5201), [_flows(flag)])["slow.application_limited"]
    assert v.verdict == CANNOT_TELL and "one sample does not decide" in v.because


# ---- 4 and 5: scope, and backlog advice -----------------------------------------------------

def _two_listeners(somaxconn: str = "4096", epoll: bool = False) -> Facts:
    """Port 7000: listen(8), never accepted (full, its process sleeps watching nothing);
    port 8080 healthy; 402 ListenOverflows since boot (port 7000's); 48 established
    connections on port 7000's clients, none on 8080."""
    census = Census(source="netlink", by_state={"ESTABLISHED": 48},
                    listeners=[Listener(2, "0.0.0.0", 7000, 9, 8, 70),
                               Listener(2, "0.0.0.0", 8080, 0, 511, 80)],
                    by_local_port=TopCounts([((7000, "ESTABLISHED"), 48)], 1, 0, False))
    procs = ProcessFacts(owners={70: 7, 80: 8}, processes={
        7: ProcessInfo(7, "slowsrv", "slowsrv", 10, 1), 8: ProcessInfo(8, "nginx", "nginx", 10, 1)},
        activity={7: ProcessActivity(7, "S", epoll_watches=[70] if epoll else [],
                                     cpu_percent=0.0),
                  8: ProcessActivity(8, "S", epoll_watches=[80], cpu_percent=0.0)})
    details = ConnectionDetails(established=48, with_info=48, no_timer=48)
    return Facts(sysctl=SysctlFacts(values={"net.core.somaxconn": somaxconn,
                                            "net.ipv4.tcp_abort_on_overflow": "0"}),
                 census=census, counters=_counters(ListenOverflows=402), processes=procs,
                 details=details)


def test_a_healthy_port_gets_no_namespace_overflows():
    facts = _two_listeners()
    got = run("hang", facts, Scope(port=8080))
    v = got["hang.never_accepted"]
    assert v.verdict == CANNOT_TELL, v.because
    assert "402" in v.because and "not this one" in v.because
    assert "7000" not in v.because and "7000" not in to_finding(v).recommendation
    idle = got["hang.idle_no_keepalive"]
    assert idle.verdict not in (LIKELY, CONFIRMED)
    assert "48" not in idle.because and "0 established connection(s) on local port 8080" in \
        idle.because
    # Samples of port 8080's queue over a window that never reached its limit: ruled out.
    facts.listener_samples = [ListenerSample("0.0.0.0", 8080, 511, 0, 20, inode=80),
                              ListenerSample("0.0.0.0", 7000, 8, 9, 20, 20, inode=70,
                                             samples_full=20)]
    v = run("hang", facts, Scope(port=8080))["hang.never_accepted"]
    assert v.verdict == RULED_OUT and "20 samples" in v.because
    # Unscoped, nothing idle long: not likely either (no positive evidence).
    assert run("hang", _two_listeners())["hang.idle_no_keepalive"].verdict == CANNOT_TELL
    # A namespace counter under --port: never confirmed, a total since boot says nothing.
    facts = _two_listeners()
    facts.counters = _counters(ListenOverflows=402, TCPAbortOnClose=9)
    v = run("ECONNRESET", facts, Scope(port=8080))["econnreset.close_unread"]
    assert v.verdict == CANNOT_TELL and "whole namespace" in v.because


def test_namespace_wide_counts_do_not_speak_for_another_port():
    """Timers, CLOSE_WAIT and the backlog findings of port 7000 say nothing of port 8080."""
    facts = _two_listeners()
    facts.census.timers = {"persist": 3}
    facts.census.by_state["CLOSE_WAIT"] = 5
    facts.census.close_wait_by_port = TopCounts([(7000, 5)], 1, 0, False)
    assert run("hang", facts)["hang.zero_window"].verdict == CONFIRMED
    v = run("hang", facts, Scope(port=8080))["hang.zero_window"]
    assert v.verdict == CANNOT_TELL and "in the namespace" in v.because and v.would_tell
    assert run("EPIPE", facts)["epipe.write_after_peer_close"].verdict == LIKELY
    v = run("EPIPE", facts, Scope(port=8080))["epipe.write_after_peer_close"]
    assert v.verdict == RULED_OUT and "5" not in v.because
    assert run("EPIPE", facts, Scope(port=7000))["epipe.write_after_peer_close"].verdict == \
        LIKELY
    v = run("slow", facts, Scope(port=8080))["slow.setup_delays"]
    assert v.verdict not in (CONFIRMED, LIKELY) and "7000" not in v.because
    assert run("slow", facts, Scope(port=7000))["slow.setup_delays"].verdict == CONFIRMED


def test_namespace_retransmits_are_not_a_scoped_flows_loss():
    facts = Facts(counters=CounterFacts({"Tcp": {"RetransSegs": 100, "OutSegs": 1000}},
                                        taken_at=15.0),
                  counters_before=CounterFacts({"Tcp": {"RetransSegs": 0, "OutSegs": 0}},
                                               taken_at=10.0),
                  interval=5.0, baseline="interval")
    assert run("slow", facts)["slow.loss_retransmits"].verdict == CONFIRMED
    v = run("slow", facts, Scope(port=5201))["slow.loss_retransmits"]
    assert v.verdict == LIKELY and "whole namespace" in v.because


def test_backlog_advice_names_the_application_value_below_somaxconn():
    facts = _two_listeners()
    f = next(x for x in evaluate(facts, ["backlog"]).findings
             if x.id == "backlog.accept_queue_full")
    rec = f.recommendation
    assert "No one was waiting to accept" in rec
    assert "application's listen() backlog (it asked for 8)" in rec
    assert "somaxconn (4096) is not the limit" in rec
    assert "raise net.core.somaxconn" not in rec and "accept faster" not in rec
    v = run("ETIMEDOUT", facts, Scope(port=7000))["etimedout.accept_queue_full"]
    assert v.verdict == CONFIRMED
    action = to_finding(v).recommendation
    assert action.startswith("No one was waiting to accept") and "it asked for 8" in action
    assert "accept faster" not in action and "raise net.core.somaxconn" not in action
    assert "no one waits to accept" in v.because  # the same why as check's title
    hang = to_finding(run("hang", facts, Scope(port=7000))["hang.never_accepted"])
    assert hang.recommendation == action


def test_backlog_advice_names_somaxconn_when_it_cuts():
    facts = _two_listeners(somaxconn="8", epoll=True)  # watching with epoll: slow, not stuck
    f = next(x for x in evaluate(facts, ["backlog"]).findings
             if x.id == "backlog.accept_queue_full")
    assert "raise net.core.somaxconn (now 8)" in f.recommendation
    assert "No one was waiting" not in f.recommendation
    assert "accepts slower than connections arrive" in f.recommendation


# ---- 12: TCPAbortOnTimeout is not tcp_retries2 alone ----------------------------------------

def test_abort_on_timeout_with_syn_sent_clients_is_not_blamed_on_retries2():
    census = Census(source="netlink", by_state={"SYN_SENT": 31}, timers={"on": 0})
    facts = Facts(census=census, counters=_counters(TCPAbortOnTimeout=31))
    v = run("ETIMEDOUT", facts)["etimedout.retransmits_exhausted"]
    assert v.verdict == CANNOT_TELL and v.would_tell
    assert "tcp_syn_retries" in v.because and "31 socket(s) wait in SYN_SENT" in v.because
    # The errors probe saw connect() time out, no read or write: SYN retries, not retries2.
    facts.probes = {"errors": ErrorsResult(failures=[
        Failure("connect", 110, "ETIMEDOUT", 5, "client", 31, None, "10.0.0.9", 80)])}
    facts.counters_before = _counters(TCPAbortOnTimeout=0)
    facts.interval, facts.baseline = 5.0, "probe window"
    v = run("ETIMEDOUT", facts)["etimedout.retransmits_exhausted"]
    assert v.verdict == CANNOT_TELL and "31 connect() did: SYN retries" in v.because
    # A read that timed out is the decisive evidence.
    facts.probes["errors"].failures.append(Failure("read", 110, "ETIMEDOUT", 6, "app", 2, 5555))
    v = run("ETIMEDOUT", facts)["etimedout.retransmits_exhausted"]
    assert v.verdict == CONFIRMED and "read() failed with ETIMEDOUT" in v.because
