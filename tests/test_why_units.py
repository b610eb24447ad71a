"""`netdiag why` offline: symptom names, each symptom's cause table on the recorded fixtures
and on hand-built facts, the concepts `netdiag explain` knows, and the contract."""

from __future__ import annotations

import re

import pytest

from netdiag.collect.gather import Plan, collect
from netdiag.concepts import BY_NAME, CONCEPTS
from netdiag.context import Context
from netdiag.diagnose import judge
from netdiag.diagnose.judge import CANNOT_TELL, CONFIRMED, LIKELY, RANK, RULED_OUT, Scope
from netdiag.diagnose.symptoms import CAUSES, SYMPTOMS, find, nearest
from netdiag.facts import CounterFacts, Facts, Listener, ProcessFacts, ProcessInfo
from netdiag.probefacts import ErrorsResult, Failure, ResetsResult, SentReset
from netdiag.rules import TOPICS, evaluate

from conftest import HOSTS, REPO, judge_symptom, load_json, run_netdiag

FIXTURES = ("linux-6.18-busy", "linux-4.19-layout", "linux-rx-pressure")


def fixture_facts(name: str) -> Facts:
    facts, _ = collect(Context(root=HOSTS / name), Plan(details=True))
    return facts


run = judge_symptom


# ---- names ---------------------------------------------------------------------------------

@pytest.mark.parametrize("text,name", [
    ("ECONNRESET", "ECONNRESET"), ("econnreset", "ECONNRESET"), ("104", "ECONNRESET"),
    ("-104", "ECONNRESET"), ("reset", "ECONNRESET"),
    ("read tcp 10.0.0.1:5555->10.0.0.2:80: read: connection reset by peer", "ECONNRESET"),
    ("Connection refused", "ECONNREFUSED"), ("111", "ECONNREFUSED"),
    ("dial tcp: i/o timeout", "ETIMEDOUT"), ("connect timed out", "ETIMEDOUT"),
    ("Cannot assign requested address", "EADDRNOTAVAIL"), ("ports", "EADDRNOTAVAIL"),
    ("bind: Address already in use", "EADDRINUSE"), ("ENFILE", "EMFILE"),
    ("accept4: too many open files", "EMFILE"), ("write: broken pipe", "EPIPE"),
    ("SIGPIPE", "EPIPE"), ("hang", "hang"), ("stuck", "hang"), ("slow", "slow"),
    ("throughput", "slow"),
])
def test_symptoms_by_errno_message_or_word(text, name):
    assert find(text).name == name


def test_unknown_symptoms_and_hostile_text():
    assert find("flux capacitor") is None
    assert find("x" * 10_000) is None
    assert find("\x00\udcff[/]") is None
    assert "ECONNRESET" in nearest("ECONRESET")


def test_every_cause_is_declared_once_with_rule_and_action():
    ids = [c.id for s in SYMPTOMS for c in s.causes]
    assert len(ids) == len(set(ids)) == len(CAUSES)
    for s in SYMPTOMS:
        assert s.causes and s.returned_by and set(s.probes) <= {
            "states", "backlog", "wakeups", "drops", "rcvbuf", "softirq", "resets", "retrans",
            "errors"}
        for c in s.causes:
            assert c.id.startswith(s.causes[0].id.split(".")[0] + ".")
            assert c.title and c.mechanism and c.action and c.rule.text and c.rule.source


# ---- each symptom's cause table ------------------------------------------------------------

@pytest.mark.parametrize("fixture", FIXTURES)
@pytest.mark.parametrize("symptom", [s.name for s in SYMPTOMS])
def test_every_cause_gets_one_verdict_on_every_fixture(fixture, symptom):
    got = run(symptom, fixture_facts(fixture))
    s = find(symptom)
    assert set(got) == {c.id for c in s.causes}
    for v in got.values():
        assert v.verdict in RANK and v.because
        if v.verdict == CANNOT_TELL:
            assert v.would_tell, v.cause.id  # what would tell is always said
    ranks = [RANK[v.verdict] for v in judge.diagnose(
        s, fixture_facts(fixture), evaluate(fixture_facts(fixture), list(TOPICS)).findings,
        Scope())]
    assert ranks == sorted(ranks)


@pytest.mark.parametrize("symptom", [s.name for s in SYMPTOMS])
def test_nothing_collected_is_cannot_tell_or_ruled_out_never_a_guess(symptom):
    """With no facts at all, no cause is confirmed or likely."""
    got = run(symptom, Facts())
    assert all(v.verdict in (CANNOT_TELL, RULED_OUT) for v in got.values()), {
        k: v.verdict for k, v in got.items()}


def test_port_usage_on_the_busy_fixture():
    """The busy fixture holds 450 TIME_WAIT toward 127.0.0.1:9000 (45% of 999 ports): likely,
    not confirmed, until the errors probe sees EADDRNOTAVAIL."""
    facts = fixture_facts("linux-6.18-busy")
    v = run("EADDRNOTAVAIL", facts)["eaddrnotavail.port_exhaustion"]
    assert v.verdict == LIKELY and "127.0.0.1:9000" in v.because
    facts.probes = {"errors": ErrorsResult(failures=[Failure(
        "connect", 99, "EADDRNOTAVAIL", 4242, "client", 7, None, "127.0.0.1", 9000)])}
    v = run("EADDRNOTAVAIL", facts)["eaddrnotavail.port_exhaustion"]
    assert v.verdict == CONFIRMED and "7 time(s)" in v.because


def _listen_facts(accept_queue: int, abort: str, **counters) -> Facts:
    from netdiag.facts import Census, SysctlFacts

    census = Census(source="netlink", listeners=[Listener(2, "0.0.0.0", 80, accept_queue, 4, 7)])
    return Facts(sysctl=SysctlFacts(values={"net.ipv4.tcp_abort_on_overflow": abort}),
                 census=census, counters=CounterFacts({"TcpExt": {
                     "ListenOverflows": 0, "TCPAbortOnClose": 0, "TCPAbortOnData": 0,
                     **counters}}, taken_at=10.0),
                 processes=ProcessFacts(owners={7: 99}, processes={
                     99: ProcessInfo(99, "nginx", "nginx", 10, 1)}))


def test_overflow_reset_needs_abort_on_overflow_and_a_full_queue():
    full = run("ECONNRESET", _listen_facts(5, "1"))["econnreset.overflow_abort"]
    assert full.verdict == CONFIRMED and "pid 99 (nginx)" in full.because
    # This host's listener on --port 80 sent the RSTs if any: its sysctl rules it out.
    assert run("ECONNRESET", _listen_facts(5, "0"), Scope(port=80))[
        "econnreset.overflow_abort"].verdict == RULED_OUT
    # Without a scope the RSTs may come from another host, whose sysctl is not seen here.
    v = run("ECONNRESET", _listen_facts(5, "0"))["econnreset.overflow_abort"]
    assert v.verdict == CANNOT_TELL and v.evidence["rules_out_this_host_only"]
    assert "on the host that sent the RSTs" in v.would_tell
    # Not full now, overflows only since boot: likely, and what would tell is said.
    v = run("ECONNRESET", _listen_facts(0, "1", ListenOverflows=30))["econnreset.overflow_abort"]
    assert v.verdict == LIKELY and v.would_tell


def test_counters_over_a_window_decide():
    facts = _listen_facts(0, "0", TCPAbortOnClose=12)
    facts.counters_before = CounterFacts({"TcpExt": {"ListenOverflows": 0, "TCPAbortOnClose": 2,
                                                     "TCPAbortOnData": 0}}, taken_at=5.0)
    facts.interval, facts.baseline = 5.0, "interval"
    got = run("ECONNRESET", facts, Scope(port=80))
    assert got["econnreset.close_unread"].verdict == LIKELY  # the whole namespace's counter
    assert "grew by 10 in 5 s" in got["econnreset.close_unread"].because
    assert got["econnreset.linger_zero"].verdict == RULED_OUT  # did not grow
    got = run("ECONNRESET", facts)
    assert got["econnreset.close_unread"].verdict == CONFIRMED
    # Did not grow here; without the probe, where the RSTs came from is not known.
    assert got["econnreset.linger_zero"].verdict == CANNOT_TELL
    # The resets probe's reasons decide over the counters.
    facts.probes = {"resets": ResetsResult(sent=[SentReset("TCP_STATE", "ESTABLISHED", 80, 3)],
                                           sent_total=3)}
    got = run("ECONNRESET", facts)
    assert got["econnreset.linger_zero"].verdict == CONFIRMED
    assert got["econnreset.no_socket"].verdict == RULED_OUT


def test_scope_narrows_the_evidence():
    facts = _listen_facts(5, "1")
    assert run("ECONNREFUSED", facts, Scope(port=80))["econnrefused.no_listener"].verdict == \
        RULED_OUT
    assert run("ECONNREFUSED", facts, Scope(port=81))["econnrefused.no_listener"].verdict == \
        CONFIRMED
    # The full listener is on port 80: narrowing to another port rules the overflow out.
    v = run("ECONNRESET", facts, Scope(port=443))["econnreset.overflow_abort"]
    assert v.verdict != CONFIRMED
    v = run("ETIMEDOUT", facts, Scope(pid=99))["etimedout.accept_queue_full"]
    assert v.verdict == CONFIRMED


def test_emfile_from_the_errors_probe_names_the_process():
    facts = Facts(probes={"errors": ErrorsResult(failures=[
        Failure("accept4", 24, "EMFILE", 321, "server", 9, 8080)])})
    v = run("EMFILE", facts)["emfile.process_limit"]
    assert v.verdict == CONFIRMED and "pid 321" in v.because and "accept4" in v.because
    assert v.severity is not None


# ---- explain: concepts, causes, the list ---------------------------------------------------

def test_every_concept_is_explained_in_table_and_json():
    names = {c.name for c in CONCEPTS}
    for wanted in ("io-models", "reactor-proactor", "select-poll-epoll", "level-edge-triggered",
                   "epolloneshot", "epollexclusive", "so-reuseaddr", "so-reuseport",
                   "graceful-restart", "so-linger", "message-framing", "errno"):
        assert wanted in names
    for c in CONCEPTS:
        table = run_netdiag("explain", c.name, check_rc=(0,)).stdout
        assert c.title in table and "WHAT NETDIAG SHOWS OF IT" in table
        doc = load_json(run_netdiag("explain", c.name, "--json", check_rc=(0,)).stdout)
        assert doc["concept"] == c.name
    assert BY_NAME["epoll"].name == "select-poll-epoll"
    assert BY_NAME["thundering-herd"].name == "epollexclusive"


def test_explain_lists_and_suggests():
    listing = load_json(run_netdiag("explain", "--json", check_rc=(0,)).stdout)
    assert {t["topic"] for t in listing["topics"]} == set(TOPICS)
    assert len(listing["concepts"]) == len(CONCEPTS)
    assert "CONCEPTS" in run_netdiag("explain", check_rc=(0,)).stdout
    bad = run_netdiag("explain", "epol")
    assert bad.returncode == 3 and "did you mean" in bad.stderr and "epoll" in bad.stderr
    cause = load_json(run_netdiag("explain", "why.econnreset.linger_zero", "--json",
                                  check_rc=(0,)).stdout)
    assert cause["symptom"] == "ECONNRESET" and "SO_LINGER" in cause["rule"]["text"]


def test_the_contract_lists_every_cause():
    contract = (REPO / "docs" / "CONTRACT.md").read_text()
    section = contract.split("## Causes `netdiag why` weighs", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"`why\.([a-z]+\.[a-z0-9_]+)`", section))
    assert listed == set(CAUSES)


# ---- typed evidence (tests/test_output.py holds every cause's evidence to the facts' types) --

def typed_cases() -> list[tuple[str, Facts]]:
    """The recorded hosts' facts, and hand-built facts that reach the rest of why's evidence:
    probes (resets, errors), a full listener and its owner, a busy flow held by the peer's
    window and one application-limited, a connection idle an hour without keepalive."""
    from test_trial_units import _refusals_and_linger, _two_listeners

    from netdiag.facts import Connection, ConnectionDetails, SysctlFacts

    cases = [(name, fixture_facts(name)) for name in FIXTURES]
    cases += [("refusals", _refusals_and_linger(3)), ("listeners", _two_listeners())]
    window = Connection("10.0.0.1", 5201, "10.0.0.2", 40000, 11, "on",
                        {"busy_time": 990_000, "rwnd_limited": 700_000, "bytes_acked": 2_000_000,
                         "rtt": 50_000, "snd_wnd": 65535}, {"sndbuf": 87040})
    window.earlier = Connection("10.0.0.1", 5201, "10.0.0.2", 40000, 11, "on", {}, {})
    window.sample_seconds = 1.0
    app = Connection("10.0.0.1", 5202, "10.0.0.2", 40001, 12, "on",
                     {"busy_time": 200_000, "bytes_acked": 500_000, "rtt": 50_000}, {})
    app.earlier = Connection("10.0.0.1", 5202, "10.0.0.2", 40001, 12, "on", {}, {})
    app.sample_seconds = 1.0
    idle = Connection("10.0.0.1", 7000, "10.0.0.3", 50000, 13, "off",
                      {"last_data_recv": 3_600_000, "last_data_sent": 3_600_000}, {})
    procs = ProcessFacts(owners={11: 5, 12: 5, 13: 6}, processes={
        5: ProcessInfo(5, "iperf3", "iperf3 -c", 10, 2), 6: ProcessInfo(6, "", "", 10, 1)})
    flows = Facts(details=ConnectionDetails(established=3, with_info=3, flows=[window, app],
                                            active_flows=2, flow_sample="second sample",
                                            no_timer=1, long_idle_without_keepalive=1,
                                            idle_without_keepalive=[idle]),
                  processes=procs, sysctl=SysctlFacts(values={
                      "net.ipv4.tcp_rmem": "4096 131072 6291456",
                      "net.ipv4.tcp_wmem": "4096 16384 4194304",
                      "net.core.rmem_max": "212992", "net.core.wmem_max": "212992",
                      "net.ipv4.tcp_keepalive_time": "7200", "net.ipv4.tcp_keepalive_intvl": "75",
                      "net.ipv4.tcp_keepalive_probes": "9"}))
    cases.append(("flows", flows))
    for _, facts in cases:
        for name, result in (facts.probes or {}).items():
            result.probe = name  # as the probe runner names it
    return cases


def test_a_remote_rst_sender_is_never_ruled_out_by_this_hosts_evidence():
    """ECONNRESET's causes live on the host that sent the RST. RSTs that arrived from another
    host (received, not sent here) leave every cause 'cannot tell' here, never 'ruled out';
    when every RST received was sent by this host, its evidence decides."""
    from netdiag.probefacts import ReceivedReset

    facts = _listen_facts(0, "0")
    facts.probes = {"resets": ResetsResult(
        received=[ReceivedReset(40312, "10.9.8.7", 443, 6)], received_total=6)}
    got = run("ECONNRESET", facts)
    for cid in ("linger_zero", "close_unread", "overflow_abort"):
        v = got[f"econnreset.{cid}"]
        assert v.verdict == CANNOT_TELL, (cid, v.verdict, v.because)
        assert "another host" in v.because and "the peer" in v.would_tell
    # Another host sent them: why is known there, not here.
    no_socket = got["econnreset.no_socket"]
    assert no_socket.verdict == CANNOT_TELL and "the peer" in no_socket.would_tell
    local = _listen_facts(0, "0")
    local.probes = {"resets": ResetsResult(
        sent=[SentReset("TCP_STATE", "ESTABLISHED", 80, 2)], sent_total=2,
        received=[ReceivedReset(40312, "127.0.0.1", 80, 2)], received_total=2)}
    got = run("ECONNRESET", local)
    assert got["econnreset.linger_zero"].verdict == CONFIRMED
    assert got["econnreset.close_unread"].verdict == RULED_OUT


def test_advice_never_asks_for_the_interval_the_run_already_had():
    s = find("EADDRINUSE")  # no probe decides it: its advice is to run with --interval
    plain = judge.reword(s, Facts(), judge.RUN_WHILE)
    assert "--interval 10" in plain
    had = judge.reword(s, Facts(interval=5.0), judge.RUN_WHILE)
    assert "--interval" not in had and "this run judged the counters over 5 s" in had


# ---- EADDRNOTAVAIL: the ports toward one destination, counted one way --------------------

def _tops(items):
    from netdiag.facts import TopCounts

    return TopCounts(list(items), len(items), 0, False)


def _churn_facts(dest: str = "127.0.0.1", reuse: str = "2", window: bool = False,
                 failures: tuple = ()) -> Facts:
    """A client that opens and closes connections toward DEST:80 in bursts faster than the
    range allows: ip_local_port_range 40000-42000 (2001 ports), every one of them in
    TIME_WAIT toward DEST:80 (ss: 2001 TIME-WAIT). `window`: counters over an 8 s probe
    window in which 6000 connections entered TIME_WAIT. `failures`: what the errors probe
    saw."""
    from netdiag.facts import Census, SysctlFacts

    key = ("127.0.0.1" if dest.startswith("127.") else "10.0.0.1", dest, 80)
    census = Census(source="netlink", total=2001, by_state={"TIME_WAIT": 2001},
                    by_destination=_tops([(key, 2001)]),
                    timewait_by_destination=_tops([(key, 2001)]),
                    ephemeral_range=(40000, 42000))
    facts = Facts(census=census, sysctl=SysctlFacts(values={
        "net.ipv4.ip_local_port_range": "40000\t42000", "net.ipv4.ip_local_reserved_ports": "",
        "net.ipv4.tcp_tw_reuse": reuse, "net.ipv4.tcp_timestamps": "1",
        "net.ipv4.tcp_tw_reuse_delay": "1000"}),
        counters=CounterFacts({"Tcp": {"ActiveOpens": 8000}, "TcpExt": {"TW": 8000}},
                              taken_at=18.0))
    if window:
        facts.counters_before = CounterFacts({"Tcp": {"ActiveOpens": 2000},
                                              "TcpExt": {"TW": 2000}}, taken_at=10.0)
        facts.baseline = "probe window"
    if failures or window:
        facts.probes = {"errors": ErrorsResult(failures=list(failures))}
    return facts


def _addrnotavail(count: int, peer: str = "127.0.0.1", call: str = "connect",
                  error: str = "EADDRNOTAVAIL") -> Failure:
    return Failure(call, 99 if error == "EADDRNOTAVAIL" else 98, error, 4242, "client", count,
                   None, peer if call == "connect" else None, 80 if call == "connect" else None)


def test_every_port_in_time_wait_is_exhaustion_with_or_without_a_window():
    """Trial: 2001 of 2001 usable ports in TIME_WAIT toward 127.0.0.1:80 (tcp_tw_reuse=2
    applies on loopback). The ports are counted the same way with and without the probe's
    window (the steady-state estimate of the ports rule said 2% without it and 38% with it):
    never ruled out, confirmed once connect() is seen failing, and nothing blames bind()."""
    scope = Scope(peer="127.0.0.1", peer_port=80)
    alone = run("EADDRNOTAVAIL", _churn_facts(), scope)
    v = alone["eaddrnotavail.port_exhaustion"]
    assert v.verdict == LIKELY, v.because
    assert "2001 of the 2001 usable" in v.because and "1000 ms" in v.because
    failing = _churn_facts(window=True, failures=(_addrnotavail(1999),))
    got = run("EADDRNOTAVAIL", failing, scope)
    v = got["eaddrnotavail.port_exhaustion"]
    assert v.verdict == CONFIRMED and v.severity is not None and v.severity.name == "CRITICAL"
    assert "1999 time(s)" in v.because and "2001 of the 2001 usable" in v.because
    assert "younger" in v.because and "2001/s" in v.because
    assert v.evidence["destinations"][0]["share"] == \
        alone["eaddrnotavail.port_exhaustion"].evidence["destinations"][0]["share"] == 1.0
    for verdicts in (alone, got):
        cause = verdicts["eaddrnotavail.port_exhaustion"]
        assert "bind" not in cause.because
        assert "bind" not in cause.action and "IP_BIND_ADDRESS_NO_PORT" not in cause.action
        # tcp_tw_reuse=2 already applies to loopback: never asked for, the rate is the advice.
        assert "tcp_tw_reuse=1" not in cause.action and "already applies" in cause.action
        bind = verdicts["eaddrnotavail.bind_before_connect"]
        assert bind.verdict == RULED_OUT, bind.because


def test_tw_reuse_is_advised_only_where_it_does_not_apply():
    remote = run("EADDRNOTAVAIL", _churn_facts("10.0.0.2", failures=(
        _addrnotavail(5, "10.0.0.2"),)))["eaddrnotavail.port_exhaustion"]
    assert remote.verdict == CONFIRMED, remote.because
    assert "net.ipv4.tcp_tw_reuse=1" in remote.action  # 2 covers loopback only
    assert "60 s" in remote.because
    anywhere = run("EADDRNOTAVAIL", _churn_facts("10.0.0.2", reuse="1", failures=(
        _addrnotavail(5, "10.0.0.2"),)))["eaddrnotavail.port_exhaustion"]
    assert "set net.ipv4.tcp_tw_reuse" not in anywhere.action.lower()
    assert "already applies" in anywhere.action


def test_bind_is_blamed_only_on_evidence_of_bind():
    """connect() failing while the destination's own sockets hold few ports does not show
    bind(): cannot tell, not likely. bind() failing (the errors probe) does."""
    facts = _churn_facts(failures=(_addrnotavail(3),))
    facts.census.by_destination = _tops([(("127.0.0.1", "127.0.0.1", 80), 20)])
    facts.census.timewait_by_destination = _tops([(("127.0.0.1", "127.0.0.1", 80), 20)])
    got = run("EADDRNOTAVAIL", facts)
    assert got["eaddrnotavail.bind_before_connect"].verdict == CANNOT_TELL
    exhausted = got["eaddrnotavail.port_exhaustion"]
    assert exhausted.verdict == LIKELY and "bind" not in exhausted.because
    facts.probes["errors"].failures.append(_addrnotavail(7, call="bind", error="EADDRINUSE"))
    bind = run("EADDRNOTAVAIL", facts)["eaddrnotavail.bind_before_connect"]
    assert bind.verdict == LIKELY and "7 time(s)" in bind.because, bind.because


def test_a_client_binding_first_gets_no_reuse_delay_rate():
    """Trial: a client that bind(0)s before connect() to 127.0.0.1:80, every port in
    TIME_WAIT. tcp_tw_reuse (connect()'s rule) does not let bind() take those ports: the
    cause must not say "about 2001/s fit after 1000 ms" but 60 s per port, and the advice
    starts with IP_BIND_ADDRESS_NO_PORT."""
    facts = _churn_facts(window=True, failures=(
        _addrnotavail(50), _addrnotavail(36000, call="bind", error="EADDRINUSE")))
    v = run("EADDRNOTAVAIL", facts, Scope(peer="127.0.0.1", peer_port=80))[
        "eaddrnotavail.port_exhaustion"]
    assert v.verdict == CONFIRMED, v.because
    assert "2001/s" not in v.because and "60 s" in v.because and "33 new" in v.because
    assert "connect()'s rule, not bind()'s" in v.because
    assert v.action.startswith("A client here binds before connect()") and \
        "IP_BIND_ADDRESS_NO_PORT" in v.action


# ---- ECONNREFUSED: where the RSTs came from, and how grave nothing listening is -----------

def _refused_here(received: int = 40, sent: int = 40, probes: bool = True,
                  peer: str = "127.0.0.1") -> Facts:
    """connect() to 127.0.0.1:8081 where nothing listens (ss: no LISTEN on 8081): this host's
    kernel answers each SYN with a RST (reason NO_SOCKET) and the client receives it."""
    from netdiag.facts import Census
    from netdiag.probefacts import ReceivedReset

    facts = Facts(census=Census(source="netlink", listeners=[
        Listener(2, "0.0.0.0", 22, 0, 128, 5)]))
    if probes:
        facts.probes = {
            "resets": ResetsResult(
                sent=[SentReset("NO_SOCKET", "none", 8081, sent, answers_syn=True)],
                sent_total=sent,
                received=[ReceivedReset(None, peer, 8081, received)],
                received_total=received),
            "errors": ErrorsResult(failures=[Failure("connect", 111, "ECONNREFUSED", 700,
                                                     "client", received, None, "127.0.0.1",
                                                     8081)])}
    return facts


def test_resets_made_by_this_hosts_tcp_rule_out_a_firewall_for_refused_too():
    """Trial item 3: the resets probe ran and every RST received was sent by this host's own
    kernel (NO_SOCKET, answering SYNs): the firewall reset is ruled out, as ECONNRESET rules
    out a middlebox on the same evidence; the would_tell no longer asks for that probe."""
    got = run("ECONNREFUSED", _refused_here(), Scope(port=8081))
    fw = got["econnrefused.firewall_reset"]
    assert fw.verdict == RULED_OUT, fw.because
    assert "this host's own TCP" in fw.because and "NO_SOCKET" in fw.because
    assert fw.evidence["resets_sent"][0]["answers_syn"] is True
    reset = run("ECONNRESET", _refused_here(), Scope(port=8081))["econnreset.middlebox"]
    assert reset.verdict == RULED_OUT
    # More RSTs received from another host than this host sent: the server's kernel or the
    # path; not here.
    remote = run("ECONNREFUSED", _refused_here(received=40, sent=0, peer="10.0.0.9"),
                 Scope(port=8081))["econnrefused.firewall_reset"]
    assert remote.verdict == CANNOT_TELL and "on the server" in remote.would_tell
    assert "probe resets on the server" in remote.would_tell
    # From a loopback peer, RSTs this host's TCP did not send were made here: a firewall
    # rule of this namespace (nft reject with tcp reset).
    here = run("ECONNREFUSED", _refused_here(received=40, sent=0), Scope(port=8081))[
        "econnrefused.firewall_reset"]
    assert here.verdict == CONFIRMED and "firewall rule in this namespace" in here.because
    # Without the probe: cannot tell, and the probe is what would tell.
    plain = run("ECONNREFUSED", _refused_here(probes=False), Scope(port=8081))[
        "econnrefused.firewall_reset"]
    assert plain.verdict == CANNOT_TELL and "--probe-seconds" in plain.would_tell


def test_nothing_listening_is_a_warning_with_or_without_the_probe():
    """The contract's critical evidence is a full queue resetting clients, ports or
    descriptors run out; a closed port is a warning, whatever the probes add."""
    from netdiag.diagnose import to_finding
    from netdiag.model import Severity

    for probes in (False, True):
        v = run("ECONNREFUSED", _refused_here(probes=probes), Scope(port=8081))[
            "econnrefused.no_listener"]
        assert v.verdict == CONFIRMED
        assert to_finding(v).severity == Severity.WARNING, (probes, v.severity)


# ---- hang: keepalive judged on the scope's own sockets ---------------------------------

def _redis_facts() -> Facts:
    """redis on 6379 with `tcp-keepalive 0`: 5 accepted connections idle an hour, none with
    keepalive (ss -tno: no timer); elsewhere in the namespace 11 more idle connections on
    port 7000 without keepalive, and 4 outgoing connections to 10.0.0.5:5432 with
    SO_KEEPALIVE on the sysctls' timers (timer:(keepalive,...)). sysctls at the defaults."""
    from netdiag.facts import Census, Connection, ConnectionDetails, KeepaliveGroup, SysctlFacts

    def idle(sport: int, peer_port: int, inode: int) -> Connection:
        return Connection("10.0.0.1", sport, "10.0.0.9", peer_port, inode, "off",
                          {"last_data_recv": 3_600_000, "last_data_sent": 3_600_000}, {})

    named = [idle(6379, 50000 + n, 100 + n) for n in range(5)] + \
        [idle(7000, 51000 + n, 200 + n) for n in range(5)]
    census = Census(source="netlink", by_state={"ESTABLISHED": 20, "LISTEN": 2},
                    listeners=[Listener(2, "0.0.0.0", 6379, 0, 511, 63),
                               Listener(2, "0.0.0.0", 7000, 0, 511, 70)],
                    by_local_port=_tops([((6379, "ESTABLISHED"), 5),
                                         ((7000, "ESTABLISHED"), 11)]),
                    outgoing_timers=_tops([(("10.0.0.5", 5432, "ESTABLISHED", "keepalive"),
                                            4)]),
                    ephemeral_range=(32768, 60999))
    details = ConnectionDetails(
        established=20, with_info=20, keepalive_timer=4, no_timer=16,
        long_idle_without_keepalive=16, idle_without_keepalive=named,
        keepalive_groups=[KeepaliveGroup("remote_port", 5432, 4, 0, 7_200_000, 7_190_000,
                                         [300, 301, 302, 303])])
    return Facts(census=census, details=details, sysctl=SysctlFacts(values={
        "net.ipv4.tcp_keepalive_time": "7200", "net.ipv4.tcp_keepalive_intvl": "75",
        "net.ipv4.tcp_keepalive_probes": "9"}))


def test_keepalive_at_the_defaults_needs_a_keepalive_socket_in_scope():
    """Trial item 2: `why hang --port 6379` said keepalive at the defaults was likely, with
    the namespace's evidence, although no socket on 6379 uses keepalive."""
    got = run("hang", _redis_facts(), Scope(port=6379))
    ka = got["hang.keepalive_defaults"]
    assert ka.verdict == RULED_OUT, ka.because
    assert "uses keepalive" in ka.because
    assert ka.evidence["keepalive_sockets_in_scope"] == 0
    assert "idle over 10 min" not in str(ka.evidence)  # no namespace-wide finding title
    # The port whose connections do use keepalive on the sysctls' timers: likely.
    pg = run("hang", _redis_facts(), Scope(port=5432))["hang.keepalive_defaults"]
    assert pg.verdict == LIKELY and pg.evidence["keepalive_sockets_on_the_sysctls"] == 4
    assert "7875 s" in pg.because
    whole = run("hang", _redis_facts())["hang.keepalive_defaults"]
    assert whole.verdict == LIKELY, whole.because


def test_idle_without_keepalive_evidence_is_scoped_like_its_title():
    """The title said 5 connections in scope while the evidence said 16 (the namespace's
    count): the evidence counts the scope's, and says when that is a lower bound."""
    idle = run("hang", _redis_facts(), Scope(port=6379))["hang.idle_no_keepalive"]
    assert idle.verdict == CONFIRMED
    assert idle.evidence["long_idle_without_keepalive"] == 5, idle.evidence
    assert "5 connection(s) in scope" in idle.because
    assert idle.evidence["lower_bound"] is True and "at least 5" in idle.because
    assert all(r["local_port"] == 6379 for r in idle.evidence["examples"])
    whole = run("hang", _redis_facts())["hang.idle_no_keepalive"]
    assert whole.evidence["long_idle_without_keepalive"] == 16 and "16" in whole.because


def test_failed_binds_tell_the_bind_causes_apart():
    """The errors probe sees bind() fail: EADDRNOTAVAIL is an address not on the host;
    EADDRINUSE on bind(0) is a port wanted for every destination (bind before connect); a
    bind() to a port it names fails for whoever holds that port, which is no evidence here."""
    facts = _churn_facts(failures=(_addrnotavail(2, call="bind"),))
    got = run("EADDRNOTAVAIL", facts)
    assert got["eaddrnotavail.nonlocal_address"].verdict == CONFIRMED
    assert got["eaddrnotavail.bind_before_connect"].verdict != LIKELY
    named = Failure("bind", 98, "EADDRINUSE", 4242, "server", 5, 8080)
    facts = _churn_facts(failures=(_addrnotavail(3), named))
    facts.census.by_destination = _tops([(("127.0.0.1", "127.0.0.1", 80), 20)])
    facts.census.timewait_by_destination = _tops([(("127.0.0.1", "127.0.0.1", 80), 20)])
    got = run("EADDRNOTAVAIL", facts)
    assert got["eaddrnotavail.bind_before_connect"].verdict == CANNOT_TELL
    # The errors probe watched and saw no bind() fail with EADDRNOTAVAIL: not that cause.
    assert got["eaddrnotavail.nonlocal_address"].verdict == RULED_OUT
    assert run("EADDRNOTAVAIL", _churn_facts())["eaddrnotavail.nonlocal_address"].verdict == \
        CANNOT_TELL
