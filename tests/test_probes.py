"""eBPF probes loaded for real (root, bcc, kernel headers): each sees the events its test makes.

`make test` installs python3-bpfcc, bpftool and the kernel headers, and (test setup only)
links /lib/modules/$(uname -r)/build to them and mounts tracefs when the kernel lacks them.
Under NETDIAG_REQUIRE_ROOT=1 a missing requirement fails these tests instead of skipping.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO, NetNS, finding, load_json, require_root, run_netdiag

pytestmark = pytest.mark.netns


def require_probes() -> None:
    require_root("loading eBPF probes")
    from netdiag.ebpf.runtime import requirements

    bad = [f"{r.reason} (fix: {r.fix})" for r in requirements().values() if not r.ok]
    if bad:
        reason = "eBPF probes cannot run here: " + "; ".join(bad)
        if os.environ.get("NETDIAG_REQUIRE_ROOT") == "1":
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.fixture
def probe_ns():
    require_probes()
    with NetNS() as ns:
        yield ns


def start_probe(name: str, seconds: float, *extra: str) -> subprocess.Popen:
    """Start `netdiag probe` and return once its BPF programs are attached."""
    before = bpf_programs()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "netdiag", "probe", name, "--duration",
                             str(seconds), "--json", *extra], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd="/")
    deadline = time.monotonic() + 60
    while not bpf_programs() - before:
        assert proc.poll() is None, proc.stderr.read()[-2000:]
        assert time.monotonic() < deadline, "probe did not attach within 60 s"
        time.sleep(0.1)
    time.sleep(0.3)  # the remaining hooks attach right after the first
    return proc


def finish(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode in (0, 1, 2), err[-2000:]
    return load_json(out)


def bpf_programs() -> set[str]:
    out = subprocess.run(["bpftool", "prog", "show", "--json"], capture_output=True, text=True,
                         check=True).stdout
    return {str(p["id"]) for p in json.loads(out)}  # not netdiag output


def test_probe_list_says_what_runs_and_why():
    report = load_json(run_netdiag("probe", "list", "--json").stdout)
    rows = {r["probe"]: r for r in report["probes"]}
    assert set(rows) == {"states", "backlog", "wakeups", "drops", "rcvbuf", "softirq",
                         "resets", "retrans"}
    for r in rows.values():
        assert isinstance(r["runnable"], bool) and r["summary"] and r["overhead"]
        if not r["runnable"]:
            assert "fix:" in r["why_not"] or "tracepoints" in r["why_not"]


def test_unknown_probe_is_a_usage_error():
    proc = run_netdiag("probe", "nosuch")
    assert proc.returncode == 3 and "unknown probe 'nosuch'" in proc.stderr


def test_states_sees_closers_and_close_wait(probe_ns):
    proc = start_probe("states", 6)
    probe_ns.spawn_load("churn", "--port", "9300", "--count", "40")
    probe_ns.spawn_load("closewait", "--port", "9301", "--count", "5")
    report = finish(proc)
    st = report["facts"]["states: summary"]
    assert st["active_closes_total"] >= 40
    closes = report["facts"]["states: active_closes"]
    assert any(r["peer"] == "127.0.0.1" and r["port"] == 9300 and r["closes"] >= 40
               for r in closes), closes
    waiting = report["facts"]["states: close_wait_still_waiting"]
    assert any(r["local_port"] == 9301 and r["sockets"] == 5 for r in waiting), waiting
    assert report["facts"]["states: transitions"]["ESTABLISHED->CLOSE_WAIT"] >= 5


def test_backlog_sees_the_requested_backlog(probe_ns):
    probe_ns.sysctl("net.core.somaxconn", "64")
    proc = start_probe("backlog", 5, "--netns", probe_ns.name)
    _, ready = probe_ns.spawn_load("listen", "--port", "9310", "--backlog", "511",
                                   "--count", "80")
    pid = int(re.search(r"pid=(\d+)", ready).group(1))
    report = finish(proc)
    calls = report["facts"]["backlog: listen_calls"]
    assert any(c["pid"] == pid and c["requested_backlog"] == 511 for c in calls), calls
    clamp = finding(report, "backlog.somaxconn_clamp")
    assert "asked listen(511), got 64" in clamp["title"]
    assert "exact" in report["facts"]["backlog: summary"]["netns_filter"]
    # Accept queues were sampled with sock_diag during the window, inside the namespace.
    sampled = {r["port"]: r for r in report["facts"]["backlog: accept_queues_sampled"]}
    assert sampled[9310]["limit"] == 64 and sampled[9310]["max_queue"] == 65
    assert sampled[9310]["samples"] >= 5 and sampled[9310]["samples_at_limit"] >= 1


def test_wakeups_sees_the_herd(probe_ns):
    proc = start_probe("wakeups", 7)
    probe_ns.spawn_load("herd", "--port", "9320", "--workers", "4", "--count", "40",
                        "--hold", "8")
    report = finish(proc)
    rows = report["facts"]["wakeups: listeners"]
    herd = max(rows, key=lambda r: r["accepted"])
    assert herd["accepted"] >= 30 and herd["workers"] >= 2 and herd["eagain"] > 0, rows
    f = finding(report, "wakeups.thundering_herd")
    assert f["severity"] in ("ok", "warning")  # the score depends on scheduling
    ready = {r["local_port"]: r["wakeups"]
             for r in report["facts"]["wakeups: data_ready_by_local_port"]}
    assert ready.get(9320, 0) >= 30, ready  # the listener is woken once per connection


def test_drops_and_resets_on_a_closed_port(probe_ns):
    drops = start_probe("drops", 5)
    resets = start_probe("resets", 4)
    probe_ns.spawn_load("refused", "--port", "9330", "--count", "30")
    probe_ns.spawn_load("linger", "--port", "9331", "--count", "10")
    d = finish(drops)
    reasons = {r["reason"]: r["drops"] for r in d["facts"]["drops: by_reason"]}
    assert reasons.get("NO_SOCKET", 0) >= 30, reasons
    assert d["facts"]["drops: summary"]["reasons_known"] > 10  # read from the format file
    ports = d["facts"]["drops: by_port"]
    assert any(p["reason"] == "NO_SOCKET" and p["protocol"] == "tcp" and p["port"] == 9330
               and p["drops"] >= 30 for p in ports), ports
    assert "to tcp port 9330" in finding(d, "drops.kernel_drops")["title"]
    r = finish(resets)
    sent = r["facts"]["resets: sent"]
    assert sum(x["resets"] for x in sent if x["local_port"] == 9330) >= 30, sent
    received = r["facts"]["resets: received_by_port"]
    assert any(x["resets"] >= 10 for x in received), received
    assert finding(r, "resets.sent")["severity"] in ("info", "warning")


def test_rcvbuf_sees_setsockopt_and_autotuning(probe_ns):
    proc = start_probe("rcvbuf", 6)
    _, ready = probe_ns.spawn_load("rcvbuf", "--port", "9340", "--rcvbuf", "65536")
    pid = int(re.search(r"pid=(\d+)", ready).group(1))
    report = finish(proc)
    fixed = report["facts"]["rcvbuf: buffer_fixed_by"]
    assert any(r["pid"] == pid and r["option"] == "SO_RCVBUF" and r["value"] == 65536
               for r in fixed), fixed
    f = finding(report, "buffers.rcvbuf_fixed")
    assert f["severity"] == "info" and str(pid) in f["title"]


def test_softirq_sees_net_rx(probe_ns):
    proc = start_probe("softirq", 4)
    probe_ns.spawn_load("churn", "--port", "9350", "--count", "200")
    report = finish(proc)
    rows = report["facts"]["softirq: per_cpu"]
    assert any(r["softirq"] == "NET_RX" and r["runs"] > 0 for r in rows), rows


def test_retrans_sees_syn_retransmits(probe_ns):
    """Real retransmits on loopback: a listener that never accepts drops the clients' SYNs
    once its queue is full, and their SYNs are retransmitted after the 1 s initial RTO."""
    proc = start_probe("retrans", 6)
    probe_ns.spawn_load("listen", "--port", "9360", "--backlog", "1", "--count", "20")
    report = finish(proc)
    rows = report["facts"]["retrans: by_peer"]
    assert any(r["peer"] == "127.0.0.1" and r["port"] == 9360 and r["retransmits"] >= 5
               for r in rows), rows
    assert finding(report, "retrans.peers")["severity"] in ("info", "warning")


def test_no_program_stays_loaded_even_when_interrupted(probe_ns):
    if shutil.which("bpftool") is None:
        pytest.fail("bpftool is needed to check that probes unload")
    before = bpf_programs()
    run_netdiag("probe", "states", "--duration", "1", check_rc=(0, 1, 2))
    assert bpf_programs() == before
    proc = start_probe("drops", 60)
    probe_ns.spawn_load("refused", "--port", "9370", "--count", "5")
    assert len(bpf_programs() - before) >= 1  # loaded while it runs
    proc.send_signal(signal.SIGTERM)
    report = finish(proc)
    assert report["facts"]["drops: summary"]["interrupted_after_s"] < 60
    assert bpf_programs() == before


def test_check_folds_probe_evidence(probe_ns):
    probe_ns.spawn_load("closewait", "--port", "9380", "--count", "12")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    # Drops during the window: connections to a closed port, every 0.1 s for 15 s, so some
    # land inside the window however long compiling and attaching takes.
    later = subprocess.Popen(["ip", "netns", "exec", probe_ns.name, sys.executable, "-c",
                              "import socket,time\n"
                              "for _ in range(150):\n"
                              "    c=socket.socket()\n"
                              "    try: c.connect(('127.0.0.1', 9381))\n"
                              "    except OSError: pass\n"
                              "    c.close(); time.sleep(0.1)\n"])
    probe_ns.procs.append(later)
    out = subprocess.run([sys.executable, "-m", "netdiag", "check", "--json", "--netns",
                          probe_ns.name, "--probe-seconds", "3", "--probes", "states,drops"],
                         capture_output=True, text=True, env=env, cwd="/", timeout=120)
    assert out.returncode in (1, 2), out.stderr
    report = load_json(out.stdout)
    cw = finding(report, "closewait.leak")
    assert cw["evidence"]["probe_seconds"] >= 1.5
    assert "probe window" in cw["explanation"]
    assert finding(report, "drops.kernel_drops") is not None
    prom = subprocess.run([sys.executable, "-m", "netdiag", "check", "--format", "prometheus",
                           "--netns", probe_ns.name, "--probe-seconds", "1", "--probes",
                           "states,drops"], capture_output=True, text=True, env=env, cwd="/",
                          timeout=120).stdout
    assert 'netdiag_probe_window_seconds{probe="states"' in prom
    assert "netdiag_probe_active_closes" in prom


def test_check_probe_seconds_without_root_reports_and_continues():
    require_root("dropping privileges")
    from test_scenarios import _unprivileged_python  # noqa: PLC0415

    python = _unprivileged_python()
    import site

    env = dict(os.environ, PYTHONPATH=":".join([str(REPO)] + site.getsitepackages()),
               HOME="/tmp")
    out = subprocess.run(["runuser", "-u", "nobody", "--", *python, "-m", "netdiag", "check",
                          "--json", "--probe-seconds", "1"], capture_output=True, text=True,
                         env=env, cwd="/", timeout=60)
    report = load_json(out.stdout)
    errs = [e for e in report["errors"] if e["collector"] == "probes"]
    assert errs and "not root" in errs[0]["message"] and "fix:" in errs[0]["message"]


def test_probe_without_privilege_is_one_line_and_exit_3():
    require_root("dropping privileges")
    import site

    from test_scenarios import _unprivileged_python  # noqa: PLC0415

    env = dict(os.environ, PYTHONPATH=":".join([str(REPO)] + site.getsitepackages()),
               HOME="/tmp")
    out = subprocess.run(["runuser", "-u", "nobody", "--", *_unprivileged_python(), "-m",
                          "netdiag", "probe", "states", "--duration", "1"],
                         capture_output=True, text=True, env=env, cwd="/", timeout=60)
    assert out.returncode == 3 and "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "not root" in lines[0] and "fix: run as root" in lines[0]
