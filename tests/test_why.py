"""`netdiag why`: each symptom produced for real in a fresh namespace, then asked about.

Every scenario starts `netdiag why SYMPTOM --probe-seconds 300` (so the probes that decide the
symptom watch the namespace), waits until all its probe hooks are attached, runs a workload
that makes an application see the errno (tests/helpers/whyload.py prints how often it saw
it), then ends the window with SIGINT: the report follows. Each test asserts the confirmed
cause, causes that must be ruled out, and that the errors probe saw the errno the application
saw. Nothing waits on a fixed delay except what the kernel itself times (SYN retries).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest
from referee import attachments, hook_count

from conftest import HERE, REPO, NetNS, load_json, require_root, run_json, run_netdiag

WHYLOAD = HERE / "helpers" / "whyload.py"
ATTACH_TIMEOUT = 90.0


def causes(report: dict) -> dict[str, dict]:
    return {f["id"]: f for f in report["findings"]}


def verdict(report: dict, cid: str) -> str:
    return causes(report)[f"why.{cid}"]["verdict"]


def seen(report: dict, error: str) -> int:
    """How many times the errors probe saw applications told `error`."""
    rows = report["facts"]["errors_seen"]
    assert rows is not None, "the errors probe did not run"
    return sum(r["count"] for r in rows if r["error"] == error)


class Why:
    """`netdiag why` with its probes attached around workloads in the namespace."""

    def __init__(self, ns: NetNS, symptom: str, *args: str, probes: tuple[str, ...],
                 netns: bool = True) -> None:
        self.ns, self.symptom, self.args, self.probes = ns, symptom, args, probes
        self.netns = netns
        self.report: dict = {}
        self.returncode: int | None = None
        self.loads: list[subprocess.Popen] = []

    def __enter__(self) -> Why:
        cmd = [sys.executable, "-m", "netdiag", "why", self.symptom, "--probe-seconds", "300",
               "--json", *self.args] + (["--netns", self.ns.name] if self.netns else [])
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, cwd="/", env=dict(os.environ,
                                                                  PYTHONPATH=str(REPO)))
        want = sum(hook_count(p) for p in self.probes)
        deadline = time.monotonic() + ATTACH_TIMEOUT
        while attachments(self.proc.pid) < want:
            if self.proc.poll() is not None:
                raise AssertionError(f"netdiag why exited early: {self.proc.stderr.read()}")
            assert time.monotonic() < deadline, "probes did not attach"
            time.sleep(0.1)
        return self

    def load(self, mode: str, *args: str, steps: tuple = ()) -> str:
        """Run a whyload workload in the namespace; returns its DONE line (it keeps its sockets
        until the window ends). Each step is called after the workload's last line (READY,
        CONNECTED...) before it is told to go on."""
        p = subprocess.Popen(["ip", "netns", "exec", self.ns.name, sys.executable,
                              str(WHYLOAD), mode, *args], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.ns.procs.append(p)
        self.loads.append(p)
        ready = p.stdout.readline()
        assert ready.startswith("READY"), (ready, p.stderr.read() if p.poll() else "")
        self.ready = ready
        for step in steps:
            step()
            p.stdin.write("go\n")
            p.stdin.flush()
            line = p.stdout.readline()
            assert line.strip(), p.stderr.read() if p.poll() else "no output"
        done = line if steps else p.stdout.readline()
        assert done.startswith("DONE"), (done, p.stderr.read() if p.poll() else "")
        return done.strip()

    def __exit__(self, exc_type, *exc) -> None:
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGINT)
            out, err = self.proc.communicate(timeout=180)
            self.returncode = self.proc.returncode
            if exc_type is None:
                assert "Traceback" not in err, err[-3000:]
                self.report = load_json(out)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            for p in self.loads:
                if p.poll() is None:
                    p.kill()


def count(done: str, error: str) -> int:
    for part in done.split()[1:]:
        name, _, n = part.partition("=")
        if name == error:
            return int(n)
    return 0


# ---- without probes ------------------------------------------------------------------------

def test_why_alone_lists_the_symptoms_and_unknown_ones_get_a_suggestion():
    listing, rc = run_json("why")
    assert rc == 0
    names = {s["name"] for s in listing["symptoms"]}
    assert names == {"ECONNRESET", "ECONNREFUSED", "ETIMEDOUT", "EADDRNOTAVAIL", "EADDRINUSE",
                     "EMFILE", "EPIPE", "hang", "slow"}
    table = run_netdiag("why", check_rc=(0,))
    assert "connection reset by peer" in table.stdout
    bad = run_netdiag("why", "ECONRESET")
    assert bad.returncode == 3 and bad.stderr.count("\n") == 1
    assert "did you mean ECONNRESET" in bad.stderr
    for words in ("read: connection reset by peer", "104", "Cannot assign requested address",
                  "dial tcp 10.0.0.1:80: i/o timeout", "write: broken pipe"):
        assert run_netdiag("why", words, "--root", "/nonexistent").returncode == 3  # no --root


def test_closed_port_without_probes(netns):
    """ss shows no LISTEN on 9930: ECONNREFUSED's first cause is confirmed from the census
    alone; a port with a listener rules it out and names the listener."""
    report, rc = run_json("why", "refused", "--port", "9930", netns=netns.name)
    assert verdict(report, "econnrefused.no_listener") == "confirmed" and rc == 1
    assert report["facts"]["scope"]["port"] == 9930
    # run in a namespace: every cause names it, as rule findings do (JSON and Nagios)
    assert {f.get("netns") for f in report["findings"]} == {netns.name}
    nagios = run_netdiag("why", "refused", "--port", "9930", "--format", "nagios",
                         netns=netns.name).stdout.splitlines()
    assert f"why.econnrefused.no_listener [{netns.name}]:" in nagios[1], nagios
    assert report["facts"]["errors_seen"] is None  # no probe ran
    netns.spawn_load("listen", "--port", "9930", "--backlog", "8", "--count", "0")
    report, rc = run_json("why", "ECONNREFUSED", "--port", "9930", netns=netns.name)
    cause = causes(report)["why.econnrefused.no_listener"]
    assert cause["verdict"] == "ruled_out" and "9930 listens here" in cause["title"]
    assert rc == 0


def test_eaddrinuse_names_the_holder(netns):
    _, ready = netns.spawn_load("listen", "--port", "9939", "--backlog", "8", "--count", "0")
    report, rc = run_json("why", "bind: Address already in use", "--port", "9939",
                          netns=netns.name)
    assert verdict(report, "eaddrinuse.listener_holds_port") == "confirmed" and rc == 1
    assert verdict(report, "eaddrinuse.time_wait_blocks_bind") == "ruled_out"
    pid = ready.split("pid=")[1].split()[0]
    assert f"pid {pid}" in causes(report)["why.eaddrinuse.listener_holds_port"]["title"]


def test_hang_keepalive_is_judged_on_the_scoped_ports_sockets(netns):
    """Trial item 2: three idle connections to 9945 without keepalive (like redis with
    `tcp-keepalive 0`) and three to 9946 whose clients set SO_KEEPALIVE (ss -tno:
    timer:(keepalive,119min...)). On 9945 keepalive at the defaults does not apply; on 9946
    it does, and the evidence is the port's."""
    p = subprocess.Popen(["ip", "netns", "exec", netns.name, sys.executable, str(WHYLOAD),
                          "idle", "--port", "9945", "--count", "3", "--hold", "60"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    netns.procs.append(p)
    ready = p.stdout.readline()
    assert ready.startswith("READY"), (ready, p.stderr.read() if p.poll() else "")
    report, _rc = run_json("why", "hang", "--port", "9945", netns=netns.name)
    ka = causes(report)["why.hang.keepalive_defaults"]
    assert ka["verdict"] == "ruled_out" and "uses keepalive" in ka["title"], ka
    assert ka["evidence"]["keepalive_sockets_in_scope"] == 0
    alive, _rc = run_json("why", "hang", "--port", "9946", netns=netns.name)
    ka = causes(alive)["why.hang.keepalive_defaults"]
    assert ka["verdict"] == "likely", ka
    assert ka["evidence"]["keepalive_sockets_in_scope"] == 3


# ---- with probes: the errno seen for real --------------------------------------------------

@pytest.fixture
def ns():
    require_root("netdiag why with probes")
    with NetNS() as n:
        yield n


def test_refused_connects(ns):
    with Why(ns, "ECONNREFUSED", probes=("resets", "errors", "drops")) as w:
        done = w.load("refused", "--port", "9931", "--count", "20")
    assert count(done, "ECONNREFUSED") == 20
    r = w.report
    assert verdict(r, "econnrefused.no_listener") == "confirmed" and w.returncode == 1
    cause = causes(r)["why.econnrefused.no_listener"]
    assert "127.0.0.1:9931" in cause["title"] and "NO_SOCKET" in cause["title"]
    assert verdict(r, "econnrefused.icmp_unreachable") == "ruled_out"
    assert r["facts"]["evidence_window"] == "probe window"
    assert seen(r, "ECONNREFUSED") == 20


def test_refused_on_a_scoped_port_rules_out_a_firewall(ns):
    """Trial item 3: `why refused --port 9938` while a client's connects to it are refused
    (nothing listens): every RST the client received was sent by this namespace's own kernel
    (tcp_send_reset NO_SOCKET answering SYNs), so no firewall made them; and nothing
    listening is a warning (exit 1), as it is without the probes."""
    with Why(ns, "ECONNREFUSED", "--port", "9938", probes=("resets", "errors", "drops")) as w:
        done = w.load("refused", "--port", "9938", "--count", "20")
    assert count(done, "ECONNREFUSED") == 20
    r = w.report
    fw = causes(r)["why.econnrefused.firewall_reset"]
    assert fw["verdict"] == "ruled_out" and "own TCP" in fw["title"], fw
    cause = causes(r)["why.econnrefused.no_listener"]
    assert cause["verdict"] == "confirmed" and cause["severity"] == "warning", cause
    assert w.returncode == 1


def test_reset_by_a_full_queue_with_abort_on_overflow(ns):
    """tcp_abort_on_overflow=1 and a listener (backlog 4) that never accepts, its accept queue
    partly full: four clients connect while their final ACKs are held back (nftables), so the
    server keeps them as requests; once the ACKs pass, two find the queue full (ss: Recv-Q 5,
    Send-Q 4) and are reset: nstat shows EmbryonicRsts 2, and those clients read ECONNRESET."""
    ns.sysctl("net.ipv4.tcp_abort_on_overflow", "1")
    hold_acks = ("tcp", "dport", "9932", "tcp", "flags", "&", "(syn", "|", "ack)", "==", "ack",
                 "drop")
    with Why(ns, "connection reset by peer", "--port", "9932",
             probes=("resets", "errors")) as w:
        done = w.load("abort", "--port", "9932", "--count", "4",
                      steps=(lambda: _nft(ns, *hold_acks), lambda: _nft_flush(ns)))
    assert count(done, "ECONNRESET") == 2, done
    r = w.report
    cause = causes(r)["why.econnreset.overflow_abort"]
    assert cause["verdict"] == "confirmed" and cause["severity"] == "critical", cause
    assert "INVALID_SYN" in cause["title"]
    assert w.returncode == 2
    assert verdict(r, "econnreset.linger_zero") == "ruled_out"
    assert verdict(r, "econnreset.close_unread") == "ruled_out"
    assert seen(r, "ECONNRESET") == 2


def test_reset_by_linger_zero_close(ns):
    with Why(ns, "ECONNRESET", probes=("resets", "errors")) as w:
        done = w.load("linger", "--port", "9933", "--count", "10")
    assert count(done, "ECONNRESET") == 10
    r = w.report
    assert verdict(r, "econnreset.linger_zero") == "confirmed"
    assert "TCP_STATE" in causes(r)["why.econnreset.linger_zero"]["title"]
    assert verdict(r, "econnreset.overflow_abort") == "ruled_out"  # abort_on_overflow = 0
    assert verdict(r, "econnreset.close_unread") == "ruled_out"
    assert seen(r, "ECONNRESET") == 10


def test_refused_connects_are_no_evidence_for_econnreset(ns):
    """Trial item 1: 40 connect() to a closed port (ECONNREFUSED x40, the kernel's RSTs answer
    SYNs with reason NO_SOCKET) beside a real SO_LINGER-0 server in the same window: the
    refusals are told apart and not counted for ECONNRESET; linger_zero ranks first."""
    with Why(ns, "ECONNRESET", probes=("resets", "errors")) as w:
        refused = w.load("refused", "--port", "9999", "--count", "40")
        done = w.load("linger", "--port", "9934", "--count", "5")
    assert count(refused, "ECONNREFUSED") == 40 and count(done, "ECONNRESET") == 5
    r = w.report
    no_socket = causes(r)["why.econnreset.no_socket"]
    assert no_socket["verdict"] == "ruled_out", no_socket
    assert "answered SYN" in no_socket["title"]
    rows = no_socket["evidence"]["refused_connects"]
    assert sum(x["resets"] for x in rows if x["local_port"] == 9999) == 40
    assert all(x["answers_syn"] is True for x in rows)
    assert r["findings"][0]["id"] == "why.econnreset.linger_zero"
    assert verdict(r, "econnreset.linger_zero") == "confirmed"
    # The resets rule's evidence tells the refusals apart too.
    assert seen(r, "ECONNRESET") == 5


def test_refusals_alone_do_not_confirm_econnreset(ns):
    """Only refused connects in the window: no cause of ECONNRESET is confirmed, and the
    errors probe (no local ECONNRESET) caps any at likely."""
    with Why(ns, "ECONNRESET", probes=("resets", "errors")) as w:
        done = w.load("refused", "--port", "9999", "--count", "40")
    assert count(done, "ECONNREFUSED") == 40
    r = w.report
    assert seen(r, "ECONNRESET") == 0
    assert r["facts"]["verdicts"]["confirmed"] == 0, r["facts"]["causes"]
    assert verdict(r, "econnreset.no_socket") == "ruled_out"
    assert w.returncode == 0


def test_port_exhaustion_toward_one_destination(ns):
    """ip_local_port_range narrowed to 50 ports: the 51st connect() to 127.0.0.1:9934 fails
    with EADDRNOTAVAIL while the others are held (ss: 50 ESTAB from ports 40000-40049)."""
    ns.sysctl("net.ipv4.ip_local_port_range", "40000 40049")
    with Why(ns, "EADDRNOTAVAIL", probes=("errors",)) as w:
        done = w.load("exhaust", "--port", "9934", "--count", "5")
    assert count(done, "EADDRNOTAVAIL") == 5
    r = w.report
    cause = causes(r)["why.eaddrnotavail.port_exhaustion"]
    assert cause["verdict"] == "confirmed" and cause["severity"] == "critical"
    assert w.returncode == 2
    assert "127.0.0.1:9934" in cause["title"]
    assert seen(r, "EADDRNOTAVAIL") == 5
    assert verdict(r, "eaddrnotavail.bind_before_connect") != "likely"


def test_port_exhaustion_by_churn_within_the_reuse_delay(ns):
    """Trial item 1: ip_local_port_range narrowed to 200 ports; a client without bind()
    opens and closes connections to 127.0.0.1:9944 faster than 200 per second, so every port
    sits in TIME_WAIT younger than tcp_tw_reuse_delay (1 s) and connect() fails with
    EADDRNOTAVAIL (ss: 200 TIME-WAIT toward 127.0.0.1:9944), although tcp_tw_reuse=2 applies
    on loopback. Exhaustion is confirmed by the ports held, bind() is not blamed, and the
    advice does not ask for tcp_tw_reuse."""
    ns.sysctl("net.ipv4.ip_local_port_range", "40000 40199")
    ns.sysctl("net.ipv4.tcp_tw_reuse", "2")
    if os.path.exists("/proc/sys/net/ipv4/tcp_tw_reuse_delay"):  # 6.14+
        ns.sysctl("net.ipv4.tcp_tw_reuse_delay", "1000")
    with Why(ns, "EADDRNOTAVAIL", "--peer", "127.0.0.1:9944", probes=("errors",)) as w:
        done = w.load("churn", "--port", "9944", "--count", "200", "--seconds", "20")
    assert count(done, "EADDRNOTAVAIL") == 200, done
    r = w.report
    cause = causes(r)["why.eaddrnotavail.port_exhaustion"]
    assert cause["verdict"] == "confirmed" and cause["severity"] == "critical", cause
    assert w.returncode == 2
    # tcp_tw_reuse=2 already applies on loopback: the advice is about the rate.
    assert "tcp_tw_reuse=1" not in cause["recommendation"], cause["recommendation"]
    assert "already applies" in cause["recommendation"]
    assert "bind" not in cause["title"] and "IP_BIND_ADDRESS_NO_PORT" not in \
        cause["recommendation"]
    assert "127.0.0.1:9944" in cause["title"] and "of the 200 usable" in cause["title"]
    row = cause["evidence"]["destinations"][0]
    assert row["tw_reuse_applies"] is True and row["share"] >= 0.9, row
    assert verdict(r, "eaddrnotavail.bind_before_connect") == "ruled_out"
    assert seen(r, "EADDRNOTAVAIL") == 200


def test_bind_before_connect_is_said_on_evidence_of_bind(ns):
    """ip_local_port_range narrowed to 50 ports, all bound to 127.0.0.1 port 0 without a
    connection (ss does not list them): the next bind(0) fails with EADDRINUSE, and a plain
    connect() to 127.0.0.1:9947 fails with EADDRNOTAVAIL although no connection holds a port
    toward it; a bind() to 192.0.2.1 fails with EADDRNOTAVAIL. The errors probe sees the
    failed bind() calls: they are the evidence of bind() before connect() and of an address
    not on the host."""
    ns.sysctl("net.ipv4.ip_local_port_range", "40000 40049")
    with Why(ns, "EADDRNOTAVAIL", probes=("errors",)) as w:
        done = w.load("bindhold", "--port", "9947", "--count", "3")
    assert count(done, "EADDRINUSE") == 3 and count(done, "EADDRNOTAVAIL") == 4, done
    r = w.report
    bind = causes(r)["why.eaddrnotavail.bind_before_connect"]
    assert bind["verdict"] == "likely" and "bind() failed with EADDRINUSE 3" in bind["title"]
    nonlocal_ = causes(r)["why.eaddrnotavail.nonlocal_address"]
    assert nonlocal_["verdict"] == "confirmed" and "1 time(s)" in nonlocal_["title"]
    exhausted = causes(r)["why.eaddrnotavail.port_exhaustion"]
    assert exhausted["verdict"] == "likely" and "127.0.0.1:9947" in exhausted["title"]
    assert "IP_BIND_ADDRESS_NO_PORT" in exhausted["recommendation"]  # bind() was seen


def test_accept_out_of_descriptors(ns):
    with Why(ns, "Too many open files", probes=("errors",)) as w:
        done = w.load("emfile", "--port", "9935", "--count", "20")
    pid = int(w.ready.split("pid=")[1].split()[0])
    assert count(done, "EMFILE") >= 1
    r = w.report
    cause = causes(r)["why.emfile.process_limit"]
    assert cause["verdict"] == "confirmed" and f"pid {pid}" in cause["title"]
    assert "accept" in cause["title"]
    assert verdict(r, "emfile.system_limit") == "ruled_out"
    rows = [x for x in r["facts"]["errors_seen"] if x["error"] == "EMFILE"]
    assert rows and all(x["pid"] == pid and x["call"].startswith("accept") for x in rows)


def _nft(ns: NetNS, *rule: str) -> None:
    """Add a rule to an input chain of the namespace's own ruleset."""
    ns.exec("nft", "add", "table", "inet", "nd")
    ns.exec("nft", "add", "chain", "inet", "nd", "in", "{ type filter hook input priority 0; }")
    ns.exec("nft", "add", "rule", "inet", "nd", "in", *rule)


def _nft_flush(ns: NetNS) -> None:
    ns.exec("nft", "flush", "ruleset")


def _drop_port(ns: NetNS, port: int) -> None:
    _nft(ns, "tcp", "dport", str(port), "drop")
    _nft(ns, "tcp", "sport", str(port), "drop")


def test_connect_timeout_behind_a_firewall_drop(ns):
    """nftables drops everything to port 9936; with tcp_syn_retries=1 connect() gives up after
    about 3 s with ETIMEDOUT (no RST, no ICMP)."""
    ns.sysctl("net.ipv4.tcp_syn_retries", "1")
    if os.path.exists("/proc/sys/net/ipv4/tcp_syn_linear_timeouts"):  # 6.5+: 4 fast retries
        ns.sysctl("net.ipv4.tcp_syn_linear_timeouts", "0")
    _drop_port(ns, 9936)
    with Why(ns, "connect timed out", probes=("drops", "retrans", "resets", "errors")) as w:
        done = w.load("timeout", "--port", "9936", "--count", "2")
    assert count(done, "ETIMEDOUT") == 2
    r = w.report
    cause = causes(r)["why.etimedout.firewall_drop"]
    assert cause["verdict"] == "confirmed" and "netfilter" in cause["title"]
    assert verdict(r, "etimedout.accept_queue_full") == "ruled_out"
    assert verdict(r, "etimedout.syn_queue_drop") == "ruled_out"
    assert seen(r, "ETIMEDOUT") == 2


def test_a_peer_that_vanished_while_data_was_in_flight(ns):
    """A connection established on 9937, then nftables drops its packets and the client keeps
    writing: ss shows the client's socket on the retransmit timer."""
    with Why(ns, "hang", "--port", "9937", probes=("retrans", "resets")) as w:
        w.load("unacked", "--port", "9937", "--seconds", "4",
               steps=(lambda: _drop_port(ns, 9937),))
    r = w.report
    cause = causes(r)["why.hang.unacked_retransmitting"]
    assert cause["verdict"] == "confirmed" and "127.0.0.1:9937" in cause["title"]
    assert verdict(r, "hang.zero_window") == "ruled_out"
    assert verdict(r, "hang.never_accepted") == "ruled_out"


def test_why_output_is_one_document_and_validates(ns):
    """--format json documents validate (run_json does it); the table ranks causes."""
    table = run_netdiag("why", "EPIPE", "--netns", ns.name, check_rc=(0, 1, 2))
    lines = table.stdout.splitlines()
    assert lines[2].lstrip().startswith("EPIPE: broken pipe")
    labels = [ln.split("]")[0] + "]" for ln in lines if ln.startswith("[")]
    order = {"[CONFIRMED]": 0, "[LIKELY]": 1, "[CANNOT TELL]": 2, "[RULED OUT]": 3}
    ranks = [order[x] for x in labels]
    assert ranks == sorted(ranks) and ranks, labels


def _rwnd_share(ns: NetNS) -> float:
    """The largest share of busy time any of the namespace's senders toward B spent held by
    the peer's window, in % (ss -ti: rwnd_limited:Nms(P%), since the connection began)."""
    import test_verdicts as tv

    out = ns.exec("ss", "-tinH", "dst", tv.B_ADDR).stdout
    return max((float(x) for x in re.findall(r"rwnd_limited:\d+ms\(([\d.]+)%\)", out)),
               default=0.0)


def test_a_transfer_held_by_a_small_window(ns):
    """iperf3 -w 64K over a 50 ms path (two namespaces joined by tests/helpers/delaylink.py):
    ss shows the sender rwnd_limited most of its busy time. `why slow` on the sender confirms
    the receive window and rules out the application."""
    import test_verdicts as tv

    tv.need("iperf3")
    with NetNS() as b:
        for n in (ns, b):
            n.sysctl("net.ipv4.tcp_rmem", "4096 131072 33554432")
            n.sysctl("net.ipv4.tcp_wmem", "4096 16384 4194304")
        link = subprocess.Popen([sys.executable, str(tv.DELAYLINK), ns.name, b.name,
                                 "--delay-ms", "25", "--seconds", "120"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert link.stdout.readline().startswith("READY"), link.stderr.read()
            with tv.iperf3(ns, b, 5211, "-w", "64K", ready=lambda: _rwnd_share(ns) >= 50):
                report, rc = run_json("why", "slow", "--peer", tv.B_ADDR, netns=ns.name)
        finally:
            link.terminate()
            link.wait(timeout=10)
    cause = causes(report)["why.slow.receive_window"]
    assert cause["verdict"] == "confirmed" and tv.B_ADDR in cause["title"], cause
    assert "receiver's window" in cause["title"]
    assert verdict(report, "slow.application_limited") == "ruled_out"
    assert verdict(report, "slow.send_buffer") == "ruled_out"
    assert rc == 1


def test_eaddrinuse_bind_zero_is_confirmed_by_the_errors_probe(ns):
    """The same 50 ports bound to port 0: `why EADDRINUSE --probe-seconds` runs the errors
    probe (it used to run none and say nothing), and bind(0) failing with EADDRINUSE in its
    window confirms that no port of the range was free."""
    ns.sysctl("net.ipv4.ip_local_port_range", "40000 40049")
    with Why(ns, "EADDRINUSE", probes=("errors",)) as w:
        done = w.load("bindhold", "--port", "9948", "--count", "3")
    assert count(done, "EADDRINUSE") == 3, done
    r = w.report
    assert r["facts"]["symptom"]["probes"] == ["errors"]
    cause = causes(r)["why.eaddrinuse.bind_zero_exhaustion"]
    assert cause["verdict"] == "confirmed" and "port 0 failed with EADDRINUSE 3" in \
        cause["title"], cause["title"]


def test_refused_by_a_firewall_reject_in_the_namespace(ns):
    """A listener on 9949 behind `nft ... tcp dport 9949 reject with tcp reset`: the clients
    get ECONNREFUSED from RSTs netfilter makes, which no tcp_send_reset counts. From a
    loopback peer such a RST can only have been made here: the firewall cause is confirmed
    (it said "cannot tell" and the listener's presence ruled everything else out)."""
    ns.spawn_load("listen", "--port", "9949", "--backlog", "8", "--count", "0")
    _nft(ns, "tcp", "dport", "9949", "reject", "with", "tcp", "reset")
    with Why(ns, "ECONNREFUSED", "--peer", "127.0.0.1:9949",
             probes=("resets", "errors", "drops")) as w:
        done = w.load("refused", "--port", "9949", "--count", "10")
    assert count(done, "ECONNREFUSED") == 10, done
    r = w.report
    fw = causes(r)["why.econnrefused.firewall_reset"]
    assert fw["verdict"] == "confirmed" and "firewall rule in this namespace" in fw["title"], fw
    assert verdict(r, "econnrefused.no_listener") == "ruled_out"
