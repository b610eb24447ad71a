"""Real conditions in fresh network namespaces, judged by the real CLI (root only).

Each test makes its own namespace (its sysctls and TCP counters start fresh), provokes one
condition with tests/helpers/sockload.py on loopback, and runs `netdiag ... --netns NAME`
in a subprocess, so setns, collection, rules and exit codes are all exercised for real.
"""

from __future__ import annotations

import os
import re
import shutil
import site
import subprocess
import sys
import time

import pytest

from conftest import REPO, finding, host_wide, load_json, require_root, run_json, run_netdiag

pytestmark = pytest.mark.netns

SS_STATE = {"ESTAB": "ESTABLISHED", "TIME-WAIT": "TIME_WAIT", "CLOSE-WAIT": "CLOSE_WAIT",
            "FIN-WAIT-1": "FIN_WAIT1", "FIN-WAIT-2": "FIN_WAIT2", "LISTEN": "LISTEN",
            "SYN-SENT": "SYN_SENT", "SYN-RECV": "SYN_RECV", "LAST-ACK": "LAST_ACK",
            "CLOSING": "CLOSING", "UNCONN": "CLOSE"}


def wait_for(pred, timeout=20.0, step=0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(step)
    raise AssertionError("condition not reached in time")


def test_idle_namespace_is_ok(netns):
    report, rc = run_json("check", netns=netns.name)
    # Nothing about the namespace, and nothing about nothing: the keepalive default with no
    # connection is not even info. Only host-wide facts may speak (softirq squeezes since
    # boot on this machine; a neighbour's process near its fd limit).
    own = [(f["id"], f["severity"]) for f in report["findings"] if not host_wide(f)]
    assert own == [], own
    if not report["findings"]:
        assert rc == 0 and report["status"] == "ok", report
    assert report["host"]["netns"] == netns.name
    assert report["facts"]["sockets"]["total"] == 0
    assert report["errors"] == []


def test_close_wait_is_attributed_to_the_process_that_holds_it(netns):
    proc, ready = netns.spawn_load("closewait", "--port", "8080", "--count", "15")
    pid = int(re.search(r"pid=(\d+)", ready).group(1))
    wait_for(lambda: netns.ss_counts().get("CLOSE-WAIT") == 15)
    report, rc = run_json("closewait", netns=netns.name)
    f = finding(report, "closewait.leak")
    assert f["severity"] == "warning" and rc == 1
    row = f["evidence"]["by_process_and_port"][0]
    assert (row["pid"], row["local_port"], row["close_wait"]) == (pid, 8080, 15)
    assert row["command"].startswith("python")
    assert f"pid {pid}" in f["title"]
    assert f["evidence"]["eof_not_read"] == 15
    # check reports it too, and --pid reaches the same namespace through the process.
    by_pid, rc = run_json("check", "--pid", str(pid))
    assert finding(by_pid, "closewait.leak")["evidence"]["close_wait"] == 15
    assert by_pid["host"]["netns"] == f"pid:{pid}"


def test_close_wait_in_an_accept_queue_is_counted_apart(netns):
    """Connections queued for a listener nobody accepts from, closed by their clients: CLOSE_WAIT
    without an inode (ss: ino:0). They are counted apart, named by the listener's port, and
    still accounted for over --interval (the review saw them vanish from both counts)."""
    netns.spawn_load("closewait", "--port", "9000", "--count", "12", "--unaccepted", "5",
                     "--unaccepted-port", "8080")
    wait_for(lambda: netns.ss_counts().get("CLOSE-WAIT") == 17)
    inodes = netns.exec("ss", "-tanHe", "state", "close-wait", "sport", "= :8080").stdout
    assert inodes.count("ino:0") == 5, inodes
    report, rc = run_json("closewait", "--interval", "1", netns=netns.name)
    f = finding(report, "closewait.leak")
    ev = f["evidence"]
    assert ev["close_wait"] == 17 and rc == 1
    assert (ev["held_by_processes"], ev["unattributed"], ev["in_accept_queue"]) == (12, 0, 5)
    assert ev["still_close_wait_after_interval"] == 17
    assert ev["still_in_accept_queue_after_interval"] == 5
    assert ev["in_accept_queue_by_port"][0]["local_port"] == 8080
    assert "in the accept queue of the listener on port 8080" in f["title"]
    assert "backlog.accept_queue_full" in f["recommendation"]
    assert report["facts"]["summary"]["in_accept_queue"] == 5


def test_narrowed_port_range_exhausts_toward_one_destination(netns):
    netns.sysctl("net.ipv4.ip_local_port_range", "40000 40199")  # 200 ports
    netns.sysctl("net.ipv4.tcp_tw_reuse", "0")  # loopback reuse would hide the problem
    _, ready = netns.spawn_load("churn", "--port", "9000", "--count", "185")
    assert "made=185" in ready
    report, rc = run_json("ports", netns=netns.name)
    f = finding(report, "ports.ephemeral_exhaustion")
    assert f["severity"] == "critical" and rc == 2, f
    row = f["evidence"]["destinations"][0]
    assert (row["destination"], row["port"]) == ("127.0.0.1", 9000)
    assert row["ports_in_use"] == 185 and row["time_wait"] == 185
    assert f["evidence"]["usable_ports"] == 200
    assert row["sustainable_conn_per_s"] == round(200 / 60, 1)
    tw = finding(run_json("timewait", netns=netns.name)[0], "timewait.flood")
    assert tw["severity"] == "warning"
    assert tw["evidence"]["active_closer"]["this_host_as_client"] == 185


def test_exhaustion_forecast_with_interval(netns):
    netns.sysctl("net.ipv4.ip_local_port_range", "40000 40999")
    netns.sysctl("net.ipv4.tcp_tw_reuse", "0")
    # A slow churn keeps opening connections while netdiag samples twice.
    load = subprocess.Popen(
        ["ip", "netns", "exec", netns.name, sys.executable, "-c",
         "import socket,time\n"
         "s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
         "s.bind(('127.0.0.1', 9100)); s.listen(512)\n"
         "t=time.monotonic()\n"
         "for i in range(600):\n"
         "    c=socket.create_connection(('127.0.0.1', 9100)); a,_=s.accept()\n"
         "    c.close(); a.close()\n"
         "    time.sleep(0.01)\n"
         "    if time.monotonic()-t > 30: break\n"
         "time.sleep(30)\n"])
    netns.procs.append(load)
    wait_for(lambda: netns.ss_counts().get("TIME-WAIT", 0) >= 20)
    report, _ = run_json("ports", "--interval", "2", netns=netns.name)
    f = finding(report, "ports.ephemeral_exhaustion")
    row = next(r for r in f["evidence"]["destinations"] if r["port"] == 9100)
    assert row["growth_per_s"] > 5
    assert 0 < row["seconds_to_exhaustion"] < 1000 / 5


def test_time_wait_bucket_overflow(netns):
    netns.sysctl("net.ipv4.tcp_max_tw_buckets", "40")
    _, ready = netns.spawn_load("churn", "--port", "9000", "--count", "120")
    assert "made=120" in ready
    report, rc = run_json("timewait", netns=netns.name)
    f = finding(report, "timewait.bucket_overflow")
    ev = f["evidence"]
    assert ev["tcp_max_tw_buckets"] == 40
    assert ev["TCPTimeWaitOverflow"]["total"] >= 60, ev
    assert ev["time_wait"] <= 40
    assert f["severity"] in ("warning", "critical") and rc >= 1
    assert "TCPTimeWaitOverflow" in f["title"]


def test_census_matches_ss_per_state_and_family(netns):
    netns.spawn_load("hold", "--port", "7000", "--count", "20")
    netns.spawn_load("closewait", "--port", "7001", "--count", "7")
    netns.spawn_load("churn", "--port", "7002", "--count", "40")
    netns.spawn_load("churn", "--port", "7003", "--count", "25", "--ipv6")
    wait_for(lambda: netns.ss_counts().get("CLOSE-WAIT") == 7)
    report, _ = run_json("sockets", netns=netns.name)
    per_family = report["facts"]["by_family_and_state"]
    for family, name in (("-4", "ipv4"), ("-6", "ipv6")):
        expected = {SS_STATE[k]: v for k, v in netns.ss_counts(family).items()}
        assert per_family.get(name, {}) == expected, (family, per_family, expected)
    assert per_family["ipv6"]["TIME_WAIT"] == 25 and per_family["ipv4"]["TIME_WAIT"] == 40
    ss_all = {SS_STATE[k]: v for k, v in netns.ss_counts().items()}
    report, _ = run_json("sockets", netns=netns.name)
    got = report["facts"]["summary"]
    for state in ("ESTABLISHED", "LISTEN", "CLOSE_WAIT", "TIME_WAIT"):
        assert got["by_state"].get(state, 0) == ss_all.get(state, 0), (state, got, ss_all)
    v6 = sum(netns.ss_counts("-6").values())
    assert got["by_family"]["ipv6"] == v6 and v6 >= 26
    # The /proc/net/tcp fallback sees the same table and says it fell back.
    fb, _ = run_json("sockets", netns=netns.name, env={"NETDIAG_NO_NETLINK": "1"})
    assert fb["facts"]["summary"]["source"] == "/proc/net/tcp"
    for state in ("ESTABLISHED", "LISTEN", "CLOSE_WAIT", "TIME_WAIT"):
        assert fb["facts"]["summary"]["by_state"].get(state, 0) == ss_all.get(state, 0)
    procs, _ = run_json("sockets", "--processes", netns=netns.name)
    owners = {row["pid"] for row in procs["facts"]["by_process"]}
    assert len(owners) == 4  # every helper process holds sockets of its own


def _unprivileged_python() -> list[str] | None:
    for exe in (sys.executable, "/usr/bin/python3"):
        probe = subprocess.run(["runuser", "-u", "nobody", "--", exe, "-c", "pass"],
                               capture_output=True)
        if probe.returncode == 0:
            return [exe]
    return None


def test_unprivileged_run_reports_what_it_cannot_see(netns):
    require_root("dropping to an unprivileged user")
    if shutil.which("runuser") is None:
        pytest.fail("runuser (util-linux) is needed to test an unprivileged run")
    python = _unprivileged_python()
    assert python, "no Python interpreter the user nobody can execute"
    _, ready = netns.spawn_load("closewait", "--port", "8181", "--count", "3")
    paths = [str(REPO)] + site.getsitepackages()
    env = dict(os.environ, PYTHONPATH=":".join(paths), HOME="/tmp")
    cmd = ["ip", "netns", "exec", netns.name, "runuser", "-u", "nobody", "--", *python, "-m",
           "netdiag", "check", "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd="/", timeout=60)
    assert "Traceback" not in proc.stderr, proc.stderr
    report = load_json(proc.stdout)
    assert proc.returncode in (0, 1, 2)
    messages = " ".join(e["message"] for e in report["errors"] if e["collector"] == "processes")
    assert "could not be read" in messages
    f = finding(report, "closewait.leak")
    assert f["evidence"]["close_wait"] == 3  # the socket table itself needs no privilege
    assert f["evidence"]["unattributed"] == 3
    # Entering a namespace does need privilege: one clear line, exit 3.
    denied = subprocess.run(["runuser", "-u", "nobody", "--", *python, "-m", "netdiag", "check",
                             "--netns", netns.name], capture_output=True, text=True, env=env,
                            cwd="/", timeout=60)
    assert denied.returncode == 3, denied
    assert denied.stderr.startswith("netdiag: error: permission denied")
    assert len(denied.stderr.strip().splitlines()) == 1


def test_a_run_changes_nothing(netns):
    before = netns.exec("sh", "-c", "cat /proc/sys/net/ipv4/tcp_tw_reuse "
                        "/proc/sys/net/ipv4/ip_local_port_range").stdout
    run_netdiag("check", netns=netns.name, check_rc=(0, 1, 2))
    after = netns.exec("sh", "-c", "cat /proc/sys/net/ipv4/tcp_tw_reuse "
                       "/proc/sys/net/ipv4/ip_local_port_range").stdout
    assert before == after
    assert netns.ss_counts() == {}


def test_sockets_says_how_many_listeners_top_left_out(netns):
    """`--top N` shows at most 2N listeners: the report says how many there are, so a
    listener left out never reads as absent."""
    for port in ("8301", "8302", "8303"):
        netns.spawn_load("listen", "--port", port, "--backlog", "4", "--count", "0")
    report, rc = run_json("sockets", "-s", "listen", "--top", "1", netns=netns.name)
    assert rc == 0 and len(report["facts"]["listeners"]) == 2
    assert report["facts"]["listeners_total"] == 3
    table = run_netdiag("sockets", "-s", "listen", "--top", "1", netns=netns.name).stdout
    assert "listeners total: 3" in table
