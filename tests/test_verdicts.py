"""Verdicts on real workloads (issue 10): nginx, redis, wrk, iperf3, socat in fresh namespaces.

Each test runs the real server and client a user would, states what `ss`/`nstat` show, and
asserts netdiag's verdict and its advice, including the absence of wrong advice ("raise
tcp_rmem" for a loopback or application-limited flow, "set tcp_tw_reuse=1" where reuse
already applies, "restarting the process releases the sockets" when a forked child holds
them too). A real 50 ms path between two namespaces comes from tests/helpers/delaylink.py (a
bounded TUN relay: this kernel has no sch_netem).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from conftest import REPO, NetNS, finding, load_json, require_root, run_json, run_netdiag

HELPERS = Path(__file__).parent / "helpers"
sys.path.insert(0, str(HELPERS))
from servers import Nginx, Redis, listening, wait_for  # noqa: E402

pytestmark = pytest.mark.netns

VLOAD = HELPERS / "verdictload.py"
DELAYLINK = HELPERS / "delaylink.py"
A_ADDR, B_ADDR = "10.201.0.1", "10.201.0.2"
WRONG_TW_ADVICE = ("set net.ipv4.tcp_tw_reuse", "tcp_tw_reuse=1 so")


def need(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None and not os.path.exists(f"/usr/sbin/{t}")]
    if missing:
        reason = f"needs {', '.join(missing)} (make test installs them)"
        if os.environ.get("NETDIAG_REQUIRE_ROOT") == "1":
            pytest.fail(reason)
        pytest.skip(reason)


def spawn(ns: NetNS, *args: str) -> tuple[subprocess.Popen, str]:
    """Start tests/helpers/verdictload.py in the namespace; return once it says READY."""
    p = subprocess.Popen(["ip", "netns", "exec", ns.name, sys.executable, str(VLOAD), *args],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ns.procs.append(p)
    line = p.stdout.readline()
    assert line.startswith("READY"), (line, p.stderr.read() if p.poll() is not None else "")
    return p, line.strip()


def background(ns: NetNS, *cmd: str) -> subprocess.Popen:
    p = subprocess.Popen(["ip", "netns", "exec", ns.name, *cmd], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    ns.procs.append(p)
    return p


def nstat(ns: NetNS, *names: str) -> dict[str, int]:
    out = ns.exec("nstat", "-az", *names).stdout
    return {p[0]: int(p[1]) for p in (line.split() for line in out.splitlines())
            if len(p) >= 2 and p[1].isdigit()}


def accept_queues(ns: NetNS, port: int) -> list[tuple[int, int]]:
    """(Recv-Q, Send-Q) of each LISTEN socket on the port, as ss -ltn shows them."""
    out = ns.exec("ss", "-ltnH", f"sport = :{port}").stdout
    return sorted((int(f[1]), int(f[2])) for f in (line.split() for line in out.splitlines())
                  if len(f) >= 3)


def recommendations(report: dict) -> str:
    return " ".join(f["recommendation"] for f in report["findings"])


# ---- buffers: which limit holds a flow -----------------------------------------------------


@pytest.fixture(scope="module")
def delayed_path():
    """Namespaces A (10.201.0.1) and B (10.201.0.2) joined by a TUN relay that delays each
    packet 25 ms: a 50 ms round trip, as `ping` would show."""
    require_root("a delayed path between two namespaces")
    need("iperf3")
    with NetNS() as a, NetNS() as b:
        # Buffers wide enough that only the path limits a flow unless a test says otherwise.
        for ns in (a, b):
            ns.sysctl("net.ipv4.tcp_rmem", "4096 131072 33554432")
            ns.sysctl("net.ipv4.tcp_wmem", "4096 16384 4194304")
        link = subprocess.Popen([sys.executable, str(DELAYLINK), a.name, b.name, "--delay-ms",
                                 "25", "--seconds", "300"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            line = link.stdout.readline()
            assert line.startswith("READY"), (line, link.stderr.read())
            yield a, b
        finally:
            link.terminate()
            try:
                link.wait(timeout=10)
            except subprocess.TimeoutExpired:
                link.kill()


@contextmanager
def iperf3(a: NetNS, b: NetNS, port: int, *client: str, seconds: int = 8, ready=None):
    """iperf3 -s in B, iperf3 -c in A sending for `seconds`; yields once the data flow has
    run a while (or, given `ready`, once ready() is true: bounded), then waits for both to
    finish (bounded)."""
    server = subprocess.Popen(["ip", "netns", "exec", b.name, "iperf3", "-s", "-1", "-p",
                               str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    b.procs.append(server)
    wait_for(lambda: listening(b, port))
    cli = subprocess.Popen(["ip", "netns", "exec", a.name, "iperf3", "-c", B_ADDR, "-p",
                            str(port), "-t", str(seconds), *client], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    a.procs.append(cli)
    # The data connection is the second one to the port; let it run 2.5 s (ramp-up done).
    wait_for(lambda: b.exec("ss", "-tnH", "state", "established", f"sport = :{port}")
             .stdout.count("\n") >= 2)
    if ready is not None:
        wait_for(ready, timeout=seconds / 2)
    else:
        time.sleep(2.5)
    try:
        yield cli
    finally:
        for p in (cli, server):
            try:
                p.wait(timeout=seconds + 20)
            except subprocess.TimeoutExpired:
                p.kill()


def flows(report: dict) -> tuple[dict, list[dict]]:
    f = finding(report, "buffers.max_below_bdp")
    assert f is not None, report
    return f, [r for r in f["evidence"]["flows"] if r.get("command") == "iperf3"]


def test_iperf3_window_of_64k_over_50_ms_is_held_by_a_fixed_buffer(delayed_path):
    """iperf3 -w 64K: ss shows the sender rwnd_limited most of its busy time, wscale 1 and
    rb131072 on the receiver (SO_RCVBUF 64 KiB doubled, set before listen: autotuning off).
    Reported in the issue at 14 Mbit/s, 57% rwnd-limited, and judged OK."""
    a, b = delayed_path
    with iperf3(a, b, 5201, "-w", "64K"):
        assert "rwnd_limited" in a.exec("ss", "-tinH", "dst", B_ADDR).stdout
        assert "rb131072" in b.exec("ss", "-tmnH", "src", B_ADDR).stdout
        sender, rc_a = run_json("buffers", netns=a.name)
        receiver, rc_b = run_json("buffers", netns=b.name)
    f, rows = flows(sender)
    assert f["severity"] == "warning" and rc_a == 1, f
    [row] = [r for r in rows if r["direction"] == "sending"]
    assert row["limit"] == "peer_receive_window" and row["rtt_ms"] >= 45
    assert row["rate_mbit"] < 40  # a window-bound flow, not what the path could carry
    assert f["evidence"]["measured_over"].startswith("two samples")
    assert f"receiving host ({B_ADDR})" in f["recommendation"]
    assert "net.ipv4.tcp_rmem (now" not in f["recommendation"]  # not this host's setting
    f, rows = flows(receiver)
    assert f["severity"] == "warning" and rc_b == 1, f
    [row] = [r for r in rows if r["direction"] == "receiving"]
    assert row["limit"] == "receive_buffer_fixed_by_application"
    assert row["rcvbuf"] == 131072 and row["window_use"] >= 0.5
    assert "SO_RCVBUF call" in f["recommendation"] and "SO_RCVBUF = 65536" in f["recommendation"]
    assert "tcp_rmem does not apply" in f["recommendation"]
    assert "Raise the third value of net.ipv4.tcp_rmem" not in f["recommendation"]


def test_iperf3_receiver_at_a_lowered_tcp_rmem_max(delayed_path):
    """tcp_rmem max 256 KiB on the receiver: ss shows rb262144 (the cap) while autotuning's
    rcv_space asks for more; reported in the issue at 30 Mbit/s and judged OK."""
    a, b = delayed_path
    saved = b.exec("cat", "/proc/sys/net/ipv4/tcp_rmem").stdout.split()
    b.sysctl("net.ipv4.tcp_rmem", "4096 131072 262144")
    try:
        with iperf3(a, b, 5202):
            assert "rb262144" in b.exec("ss", "-tmnH", "src", B_ADDR).stdout
            receiver, rc = run_json("buffers", "--interval", "1", netns=b.name)
            sender, _ = run_json("buffers", netns=a.name)
    finally:
        b.sysctl("net.ipv4.tcp_rmem", " ".join(saved))
    f, rows = flows(receiver)
    assert f["severity"] == "warning" and rc == 1, f
    [row] = [r for r in rows if r["direction"] == "receiving"]
    assert row["limit"] == "receive_buffer_max" and row["rcvbuf"] == 262144
    assert f["evidence"]["measured_over"].startswith("two samples --interval 1")
    assert "Raise the third value of net.ipv4.tcp_rmem (now 262144)" in f["recommendation"]
    # The sender is told the limit is on the other host, never to raise its own tcp_rmem.
    f, _ = flows(sender)
    assert "net.ipv4.tcp_rmem (now" not in f["recommendation"]


def test_iperf3_unconstrained_and_paced_flows_get_no_buffer_advice(delayed_path):
    """Default buffers (the sender is bound by the path and congestion control) and iperf3
    -b 10M (the application sends 10 Mbit/s and idles between bursts: ss shows app_limited):
    neither is held by a buffer, so no buffer setting is advised."""
    a, b = delayed_path
    with iperf3(a, b, 5203, seconds=7):
        free = [run_json("buffers", netns=ns.name)[0] for ns in (a, b)]
    with iperf3(a, b, 5204, "-b", "10M", seconds=7):
        assert "app_limited" in a.exec("ss", "-tinH", "dst", B_ADDR).stdout
        paced = [run_json("buffers", netns=ns.name)[0] for ns in (a, b)]
    for report in free + paced:
        f, rows = flows(report)
        assert f["severity"] == "ok" and rows, f
        assert all(not r["held_by_buffer"] for r in rows)
        assert "tcp_rmem" not in f["recommendation"] and "tcp_wmem" not in f["recommendation"]
    _, rows = flows(paced[0])
    assert [r["limit"] for r in rows if r["direction"] == "sending"] == ["application"]
    _, rows = flows(paced[1])
    assert [r["limit"] for r in rows if r["direction"] == "receiving"] == ["network"]


def test_wrk_400_connections_on_loopback_is_not_a_buffer_problem(netns, tmp_path):
    """wrk -c 400 against nginx on loopback: ss shows app_limited flows with a tiny RTT. The
    issue's false alarm was 'BDP 82 MB >= buffer max, raise tcp_rmem'."""
    need("nginx", "wrk")
    with Nginx(netns, tmp_path / "nginx", ["127.0.0.1:8281"]):
        background(netns, "wrk", "-t2", "-c400", "-d8s", "http://127.0.0.1:8281/")
        wait_for(lambda: netns.exec("ss", "-tnH", "state", "established", "dport = :8281")
                 .stdout.count("\n") >= 300)
        time.sleep(1)
        report, rc = run_json("buffers", netns=netns.name)
    f = finding(report, "buffers.max_below_bdp")
    assert f["severity"] == "ok", f
    rows = f["evidence"]["flows"]
    assert rows and all(r["limit"] == "loopback" and not r["held_by_buffer"] for r in rows)
    assert "raise" not in f["title"].lower() and "tcp_rmem" not in recommendations(report)
    assert not [x for x in report["findings"] if x["id"].startswith("buffers.")
                and x["severity"] in ("warning", "critical")]


# ---- TIME_WAIT and ports ---------------------------------------------------------------------


def test_wrk_connection_close_rate_comes_from_the_counters(netns, tmp_path):
    """wrk -H 'Connection: close' against nginx: nginx closes first, so TIME_WAIT is on the
    server side and a new SYN from the same client takes each one over: ss shows far fewer
    TIME_WAIT sockets than 60 s of closes, nstat TcpPassiveOpens and TcpExtTW climb fast."""
    need("nginx", "wrk")
    with Nginx(netns, tmp_path / "nginx", ["127.0.0.1:8282"]):
        background(netns, "wrk", "-t2", "-c20", "-d8s", "-H", "Connection: close",
                   "http://127.0.0.1:8282/")
        wait_for(lambda: netns.ss_counts().get("TIME-WAIT", 0) > 500)
        report, _ = run_json("timewait", "--interval", "2", netns=netns.name)
        counters = nstat(netns, "TcpPassiveOpens", "TcpExtTW")
    f = finding(report, "timewait.flood")
    ev = f["evidence"]
    assert ev["rate_source"].startswith("TcpExt.TW + TWKilled")
    rates = ev["rates"]
    assert rates["passive_opens_per_s"] > 200 and rates["since"] == "interval"
    assert 0.5 < ev["closes_per_s"] / rates["passive_opens_per_s"] < 1.5, ev
    # The count-based estimate would have been far off.
    assert ev["closes_per_s"] > 3 * ev["time_wait"] / 60
    assert ev["active_closer"]["this_host_as_server"] > ev["active_closer"]["this_host_as_client"]
    assert counters["TcpExtTW"] >= counters["TcpPassiveOpens"] * 0.5
    assert "no effect on accepted connections" in f["recommendation"] or \
        f["severity"] == "ok"
    assert not any(w in f["recommendation"] for w in WRONG_TW_ADVICE)


def test_redis_benchmark_churn_on_loopback_honours_tw_reuse(netns):
    """redis-benchmark -k 0 opens and closes a connection per request: TIME_WAIT piles up on
    the client side toward 127.0.0.1:6379 (ss), and with the default tcp_tw_reuse=2 the
    kernel takes them back after 1 s (nstat TcpExtTWRecycled climbs). The issue's wrong
    advice was 'set tcp_tw_reuse=1' with every port counted as held for 60 s."""
    need("redis-server", "redis-benchmark")
    netns.sysctl("net.ipv4.tcp_tw_reuse", "2")
    with Redis(netns, 6379):
        bench = background(netns, "timeout", "20", "redis-benchmark", "-p", "6379", "-k", "0",
                           "-c", "4", "-n", "2000000", "-t", "ping_inline", "-q")
        wait_for(lambda: netns.ss_counts().get("TIME-WAIT", 0) > 2000)
        report, _ = run_json("check", "--interval", "1", netns=netns.name)
        ports, _ = run_json("ports", "--interval", "1", netns=netns.name)
        bench.kill()
        recycled = nstat(netns, "TcpExtTWRecycled")["TcpExtTWRecycled"]
    assert recycled > 0
    ex = finding(ports, "ports.ephemeral_exhaustion")
    row = next(r for r in ex["evidence"]["destinations"] if r["port"] == 6379)
    assert row["tw_reuse_applies"] and "loopback" in row["tw_reuse"]
    assert row["time_wait_holding_ports"] <= row["time_wait"]
    assert row["rate_source"].startswith("TcpExt.TW + TWKilled")
    assert not any(w in recommendations(ports) + recommendations(report)
                   for w in WRONG_TW_ADVICE)
    # Where both findings speak (check shows what is not ok), they give the same numbers.
    flood, exh = finding(report, "timewait.flood"), finding(report, "ports.ephemeral_exhaustion")
    if flood is not None and exh is not None and flood["evidence"]["top_destinations"]:
        a = flood["evidence"]["top_destinations"][0]
        b = exh["evidence"]["destinations"][0]
        for key in ("time_wait", "time_wait_holding_ports", "ports_held", "closes_per_s"):
            assert a[key] == b[key], key


def test_tw_reuse_advice_follows_the_setting_for_a_non_loopback_destination(netns):
    """redis-server on 10.77.0.1 (an address of this namespace, not loopback) and
    redis-benchmark -k 0: 1500 TIME_WAIT toward it (ss) in a 2000-port range. tcp_tw_reuse=2
    covers loopback only, so netdiag warns and advises 1; once it is 1, reuse applies and
    netdiag neither warns about those ports nor advises what is already set."""
    need("redis-server", "redis-benchmark")
    netns.exec("ip", "addr", "add", "10.77.0.1/32", "dev", "lo")
    netns.sysctl("net.ipv4.ip_local_port_range", "40000 41999")
    netns.sysctl("net.ipv4.tcp_tw_reuse", "2")
    with Redis(netns, 6379, "--protected-mode", "no", bind="10.77.0.1"):
        netns.exec("redis-benchmark", "-h", "10.77.0.1", "-p", "6379", "-k", "0", "-n", "1500",
                   "-c", "1", "-t", "ping_inline", "-q")
        assert netns.ss_counts().get("TIME-WAIT", 0) >= 1400
        before = [run_json(cmd, netns=netns.name)[0] for cmd in ("ports", "timewait")]
        netns.sysctl("net.ipv4.tcp_tw_reuse", "1")
        # connect() takes a TIME_WAIT port back only once it is older than
        # tcp_tw_reuse_delay (1 s): until then they hold their ports, and netdiag, reading
        # their timers, says so. Wait until the youngest is older (ss: under 59 s left).
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            left = [int(x) for x in re.findall(r"timewait,(\d+)sec", netns.exec(
                "ss", "-tno", "state", "time-wait").stdout)]
            if left and max(left) <= 58:
                break
            time.sleep(0.1)
        else:
            raise AssertionError("the TIME_WAIT sockets did not age past 1 s in 10 s")
        after = [run_json(cmd, netns=netns.name)[0] for cmd in ("ports", "timewait")]
    ex, tw = finding(before[0], "ports.ephemeral_exhaustion"), finding(before[1], "timewait.flood")
    for f in (ex, tw):
        assert f["severity"] == "warning", f
        assert "tcp_tw_reuse=2 covers loopback only: set net.ipv4.tcp_tw_reuse=1" in \
            f["recommendation"]
    assert ex["evidence"]["destinations"][0]["ports_held"] >= 1400
    ex, tw = finding(after[0], "ports.ephemeral_exhaustion"), finding(after[1], "timewait.flood")
    for f in (ex, tw):
        assert f["severity"] == "ok", f
        assert not any(w in f["recommendation"] for w in WRONG_TW_ADVICE)
    row = ex["evidence"]["destinations"][0]
    assert row["tw_reuse_applies"] and row["tw_reuse"].startswith("tcp_tw_reuse=1")
    # Without a baseline, the sockets' own timers say how many are younger than the delay:
    # none, a second after the burst.
    assert row["time_wait_ages_known"] is True and row["time_wait_holding_ports"] == 0


# ---- owners ----------------------------------------------------------------------------------


def test_close_wait_shared_with_a_forked_child(netns):
    """20 CLOSE_WAIT sockets whose fds a forked child shares: ss -p lists both processes.
    Killing the parent leaves them (the issue's 'restarting releases them' was false)."""
    proc, ready = spawn(netns, "closewait-fork", "--port", "8290", "--count", "20", "--hold",
                        "60")
    pid, child = map(int, re.search(r"pid=(\d+) child=(\d+)", ready).groups())
    try:
        users = netns.exec("ss", "-tnpH", "state", "close-wait").stdout
        assert f"pid={pid}," in users and f"pid={child}," in users
        report, rc = run_json("closewait", netns=netns.name)
        f = finding(report, "closewait.leak")
        row = f["evidence"]["by_process_and_port"][0]
        assert sorted(row["holders"]) == sorted([pid, child]) and row["close_wait"] == 20
        assert f"pid {pid}" in f["title"] and f"pid {child}" in f["title"]
        assert f"alone will not release them: pid {child}" in f["recommendation"] or \
            f"alone will not release them: pid {pid}" in f["recommendation"]
        assert "restarting the process that holds them releases them" not in \
            f["recommendation"]
        os.kill(pid, signal.SIGKILL)
        proc.wait(timeout=10)
        assert netns.ss_counts().get("CLOSE-WAIT") == 20  # still there: the child holds them
        report, _ = run_json("closewait", netns=netns.name)
        f = finding(report, "closewait.leak")
        assert f["evidence"]["by_process_and_port"][0]["holders"] == [child]
        assert "restarting the process that holds them releases them" in f["recommendation"]
    finally:
        try:
            os.kill(child, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_nginx_listener_holders_across_a_binary_upgrade(netns, tmp_path):
    """nginx's graceful upgrade (USR2): the new master is exec'ed with the listening socket's
    fd and starts its own workers, so ss -ltnp lists the old and the new master and all
    workers on the one socket. Restarting 'the' nginx process releases nothing."""
    need("nginx")
    with Nginx(netns, tmp_path / "nginx", ["127.0.0.1:8287"], daemon=True) as ngx:
        new_master = ngx.upgrade()
        users = netns.exec("ss", "-ltnpH", "sport = :8287").stdout
        expected = {ngx.master, new_master, *ngx.workers()} | set(
            __import__("servers").children(new_master))
        assert all(f"pid={p}," in users for p in expected), (users, expected)
        report, _ = run_json("backlog", netns=netns.name)
    [row] = [r for r in report["facts"]["listeners"] if r["port"] == 8287]
    assert {h["pid"] for h in row["holders"]} == expected
    assert all(h["command"] == "nginx" for h in row["holders"])


# ---- listeners -------------------------------------------------------------------------------


def prometheus_queues(text: str, port: int) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line.startswith("netdiag_listener_accept_queue{") and f'port="{port}"' in line:
            inode = re.search(r'inode="(\d+)"', line).group(1)
            out[inode] = float(line.rsplit(" ", 1)[1])
    return out


def test_nginx_reuseport_member_of_a_stopped_worker(netns, tmp_path):
    """nginx, 2 workers, `listen ... reuseport backlog=511` with somaxconn 32, one worker
    stopped with SIGSTOP, new connections arriving: ss -ltn shows two LISTEN sockets on the
    port, one at 33/32 and one empty; nstat TcpExtListenOverflows climbs. An idle second
    server (cut to somaxconn too) must not be blamed for the overflows."""
    need("nginx")
    netns.sysctl("net.core.somaxconn", "32")
    with Nginx(netns, tmp_path / "nginx", ["127.0.0.1:8283 reuseport backlog=511",
                                           "127.0.0.1:8284 backlog=511"]) as ngx:
        stopped = ngx.workers()[-1]
        os.kill(stopped, signal.SIGSTOP)
        spawn(netns, "pusher", "--port", "8283", "--rate", "40", "--seconds", "40",
              "--count", "1500", "--hold", "60")
        wait_for(lambda: (33, 32) in accept_queues(netns, 8283))
        queues = accept_queues(netns, 8283)
        assert len(queues) == 2 and queues[0][0] < 32, queues
        report, rc = run_json("backlog", "--interval", "2", netns=netns.name)
        prom = run_netdiag("backlog", "--format", "prometheus", netns=netns.name).stdout

    full = finding(report, "backlog.accept_queue_full")
    assert full["severity"] == "critical" and rc == 2
    [row] = full["evidence"]["full"]
    assert (row["port"], row["accept_queue"], row["limit"]) == (8283, 33, 32)
    assert row["reuseport_members"] == 2
    assert "1 of 2 reuseport sockets is not accepting" in full["title"]
    holders = {h["pid"]: h for h in row["holders"]}
    assert set(holders) >= {ngx.master, stopped}
    assert holders[stopped]["state"] == "T" and holders[stopped]["watches_socket_with_epoll"]
    assert f"pid {stopped}" in full["title"] and "stopped (T)" in full["title"]
    # The listener facts keep each member apart, with its own queue and inode.
    members = [r for r in report["facts"]["listeners"] if r["port"] == 8283]
    assert sorted(r["accept_queue"] for r in members)[-1] == 33 and len(members) == 2
    assert len({r["inode"] for r in members}) == 2
    # Overflows are attributed to the member seen full, and to nothing else.
    over = finding(report, "backlog.listen_overflow")
    assert over["severity"] in ("warning", "critical")
    assert over["evidence"]["ListenOverflows"]["delta"] > 0
    assert [r["inode"] for r in over["evidence"]["attributed_to"]] == [row["inode"]]
    assert "127.0.0.1:8283" in over["title"] and "8284" not in over["title"]
    # somaxconn cut both servers' backlog of 511, but only the full one is named.
    clamp = finding(report, "backlog.somaxconn_clamp")
    assert clamp["severity"] == "warning" and "port 8283" in clamp["title"]
    assert "8284" not in clamp["title"]
    idle = [r for r in clamp["evidence"]["clamped_listeners"] if r["port"] == 8284]
    assert idle and not idle[0]["at_or_over_limit"]
    # Prometheus: one series per member, the full one at 33.
    series = prometheus_queues(prom, 8283)
    assert len(series) == 2 and sorted(series.values())[-1] == 33


def test_backlog_probe_window_judges_the_overflows_it_saw(netns, tmp_path):
    """The backlog probe reported OK while overflows happened in its own window: the window's
    ListenOverflows (read at both ends) and its accept-queue samples now judge it."""
    from test_probes import require_probes

    require_probes()
    need("nginx")
    with Nginx(netns, tmp_path / "nginx", ["127.0.0.1:8285 reuseport backlog=16"]) as ngx:
        os.kill(ngx.workers()[-1], signal.SIGSTOP)
        spawn(netns, "pusher", "--port", "8285", "--rate", "40", "--seconds", "90",
              "--count", "4000", "--hold", "120")
        wait_for(lambda: (17, 16) in accept_queues(netns, 8285))
        report, rc = run_json("probe", "backlog", "--duration", "3", netns=netns.name,
                              timeout=180)
    over = finding(report, "backlog.listen_overflow")
    assert over["severity"] in ("warning", "critical"), over
    assert over["evidence"]["ListenOverflows"]["since"] == "probe window"
    assert "during the probe window" in over["title"] and "127.0.0.1:8285" in over["title"]
    sampled = report["facts"]["backlog"]["accept_queues"]
    assert any(r["port"] == 8285 and r["samples_full"] for r in sampled)


# ---- keepalive -------------------------------------------------------------------------------


def test_keepalive_per_socket_from_the_kernel_timers(netns, tmp_path):
    """redis-server --tcp-keepalive 60 and nginx `listen ... so_keepalive=30s:10s:3`, each
    with idle clients, and socat clients with keepidle=20: ss -o shows
    timer:(keepalive,58sec,0), (keepalive,28sec,0) and (keepalive,19sec,0) although the sysctl
    says 7200 s. netdiag reads each socket's timer and says the sysctl defaults do not apply
    to them."""
    need("nginx", "redis-server", "socat")
    with Nginx(netns, tmp_path / "nginx", ["127.0.0.1:8286 so_keepalive=30s:10s:3"]), \
            Redis(netns, 6379, "--tcp-keepalive", "60"):
        spawn(netns, "idle", "--port", "8286", "--count", "5", "--hold", "60")
        spawn(netns, "idle", "--port", "6379", "--count", "4", "--hold", "60")
        for _ in range(2):  # clients that set their own keepalive: socat keepidle=20
            background(netns, "timeout", "60", "socat", "-u",
                       "TCP:127.0.0.1:6379,keepalive,keepidle=20,keepintvl=5,keepcnt=3",
                       "/dev/null")
        wait_for(lambda: netns.exec("ss", "-tnoH", "state", "established", "dport = :6379")
                 .stdout.count("timer:(keepalive,") == 2)
        timers = netns.exec("ss", "-tnoH", "state", "established").stdout
        assert "timer:(keepalive,5" in timers and "timer:(keepalive,2" in timers
        assert "timer:(keepalive,1" in timers or "timer:(keepalive,20" in timers
        report, rc = run_json("keepalive", netns=netns.name)
    f = finding(report, "keepalive.slow_detection")
    groups = {g["local_port"]: g for g in f["evidence"]["keepalive_sockets_by_service"]
              if "local_port" in g}
    assert groups[8286]["sockets"] == 5 and groups[6379]["sockets"] == 4 + 2
    assert 25 <= groups[8286]["keepalive_idle_s"] <= 31
    assert 55 <= groups[6379]["keepalive_idle_s"] <= 61
    assert groups[8286]["setting"] == groups[6379]["setting"] == "own"
    assert groups[6379]["command"] == "redis-server" and groups[8286]["command"] == "nginx"
    # The client side: socat's own keepalive, grouped by the port it connects to.
    [client] = [g for g in f["evidence"]["keepalive_sockets_by_service"]
                if g.get("remote_port") == 6379]
    assert client["sockets"] == 2 and 15 <= client["keepalive_idle_s"] <= 21
    assert client["setting"] == "own" and client["command"] == "socat"
    assert "the sysctl defaults do not apply" in f["explanation"]
    assert f["severity"] == "ok" and "set their own timers" in f["title"]
    assert "Nothing to change" in f["recommendation"]


# ---- namespaces ------------------------------------------------------------------------------


def test_ip_netns_exec_names_the_namespace_and_reads_host_wide_sysctls(netns):
    """Under `ip netns exec NAME` (ip netns identify would say NAME) the header names NAME,
    and tcp_mem, netdev_max_backlog... (host-wide: absent from /proc/sys in the namespace)
    are read in the initial namespace and labelled so, not 'not present on this kernel'."""
    assert netns.exec("ip", "netns", "identify").stdout.strip() in ("", netns.name)
    assert netns.exec("sh", "-c", "test -e /proc/sys/net/ipv4/tcp_mem", check=False) \
        .returncode != 0
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = subprocess.run(["ip", "netns", "exec", netns.name, sys.executable, "-m", "netdiag",
                          "sysctl", "--json"], capture_output=True, text=True, env=env,
                         cwd="/", timeout=60)
    assert "Traceback" not in out.stderr, out.stderr
    report = load_json(out.stdout)
    assert report["host"]["netns"] == netns.name
    rows = {r["key"]: r for r in report["facts"]["sysctls"]}
    host = [int(x) for x in Path("/proc/sys/net/ipv4/tcp_mem").read_text().split()]
    assert rows["net.ipv4.tcp_mem"]["value"] == host
    assert rows["net.ipv4.tcp_mem"]["read_from"] == "initial namespace (host-wide)"
    assert rows["net.core.netdev_max_backlog"]["read_from"] == "initial namespace (host-wide)"
    assert rows["net.ipv4.tcp_tw_reuse"]["read_from"] == "this namespace"
    assert not [e for e in report["errors"] if "not present" in e["message"]]
    # check labels the findings with the namespace too.
    out = subprocess.run(["ip", "netns", "exec", netns.name, sys.executable, "-m", "netdiag",
                          "check", "--json"], capture_output=True, text=True, env=env, cwd="/",
                         timeout=60)
    report = load_json(out.stdout)
    assert report["host"]["netns"] == netns.name
    assert all(f.get("netns") == netns.name for f in report["findings"])


def test_unreadable_sysctl_is_permission_denied_not_absent():
    """A sysctl file that exists but may not be read is reported as 'permission denied'."""
    require_root("reading a snapshot as an unprivileged user")
    from test_scenarios import _unprivileged_python

    python = _unprivileged_python()
    assert python, "no Python interpreter the user nobody can execute"
    src = Path(__file__).parent / "fixtures" / "hosts" / "linux-6.18-busy"
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        os.chmod(tmp, 0o755)
        root = Path(tmp) / "snap"
        shutil.copytree(src, root)
        (root / "proc/sys/net/ipv4/tcp_tw_reuse").chmod(0o000)
        paths = [str(REPO), *__import__("site").getsitepackages()]
        env = dict(os.environ, PYTHONPATH=":".join(paths), HOME="/tmp")
        out = subprocess.run(["runuser", "-u", "nobody", "--", *python, "-m", "netdiag",
                              "sysctl", "--root", str(root), "--json"], capture_output=True,
                             text=True, env=env, cwd="/", timeout=60)
    assert "Traceback" not in out.stderr, out.stderr
    report = load_json(out.stdout)
    messages = [e["message"] for e in report["errors"]]
    assert any("tcp_tw_reuse" in m and "permission denied" in m for m in messages), messages
    assert not any("not present" in m and "tcp_tw_reuse" in m for m in messages)
    rows = {r["key"]: r for r in report["facts"]["sysctls"]}
    assert rows["net.ipv4.tcp_tw_reuse"]["read_from"] == "unreadable"


def test_iperf3_capped_sender_is_never_given_a_wrong_limit(delayed_path):
    """iperf3 -b 20M in 8 KiB writes over the 50 ms path: a write every ~3 ms keeps data in
    flight the whole time (busy time near 100%, so it does not show the idling), and ss shows
    app_limited on some rate samples, not all. Reported before as "the network or congestion
    control, not a buffer" (two samples) or "its application" (one sample): the limit is the
    application's cap, which one sample of tcp_info cannot prove. Netdiag says either its
    application (measured over the window) or "cannot tell", never the network or a buffer,
    and `why slow` never rules the application out."""
    a, b = delayed_path
    with iperf3(a, b, 5205, "-b", "20M", "-l", "8K", seconds=7):
        report, rc = run_json("buffers", netns=a.name)
        why, _ = run_json("why", "slow", "--port", "5205", netns=a.name)
    f, rows = flows(report)
    [row] = [r for r in rows if r["direction"] == "sending"]
    assert row["limit"] in ("application", "network_or_application"), row
    if row["limit"] == "application":  # only from the window, never from one sample
        assert row["busy_share"] < 0.9 or "both samples" in row["what_holds_it"], row
    assert not row["held_by_buffer"] and "not a buffer" not in row["what_holds_it"], row
    assert row["rate_mbit"] < 30  # the cap, not what the path could carry
    assert f["severity"] == "ok" and rc == 0, f
    assert "tcp_wmem" not in f["recommendation"] and "tcp_rmem" not in f["recommendation"]
    app = next(x for x in why["findings"] if x["id"] == "why.slow.application_limited")
    assert app["verdict"] in ("confirmed", "cannot_tell"), app
