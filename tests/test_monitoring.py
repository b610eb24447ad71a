"""Monitoring outputs: Prometheus (textfile and exporter), Nagios, history, --all-netns."""

from __future__ import annotations

import io
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import (
    HOSTS,
    REPO,
    NetNS,
    finding,
    load_json,
    require_root,
    run_json,
    run_netdiag,
)

BUSY = str(HOSTS / "linux-6.18-busy")
# monitoring-plugins perfdata: 'label'=value[UOM];[warn];[crit];[min];[max]; a label holds
# no "=", is quoted when it holds a space, and a quote inside a quoted label is doubled.
PERF_LABEL = r"(?:[^'= ]+|'(?:[^'=]|'')+')"
PERF_ITEM = PERF_LABEL + r"=-?[0-9.]+(?:s|ms|us|%|B|KB|MB|TB|c)?(?:;[-0-9.:~@]*){0,4}"
NAGIOS = re.compile(r"^NETDIAG (OK|WARNING|CRITICAL|UNKNOWN) - [^|\n]+ \| "
                    rf"{PERF_ITEM}( {PERF_ITEM})*$")
PERF_ITEMS = re.compile(rf"({PERF_LABEL})=")
WORD_CODE = {"OK": 0, "WARNING": 1, "CRITICAL": 2, "UNKNOWN": 3}


def families(text: str) -> dict:
    return {f.name: f for f in text_string_to_metric_families(text)}


def test_prometheus_output_parses_back_with_known_values():
    proc = run_netdiag("check", "--root", BUSY, "--format", "prometheus")
    assert proc.returncode == 1
    text = proc.stdout
    fams = families(text)
    assert fams["netdiag_status"].type == "gauge"
    assert fams["netdiag_status"].samples[0].value == 1
    sev = {s.labels["id"]: s for s in fams["netdiag_finding_severity"].samples}
    # Severity is the value of a series whose labels never change with the verdict.
    assert sev["timewait.flood"].value == 2
    assert set(sev["timewait.flood"].labels) == {"id", "topic", "netns"}
    assert sev["backlog.accept_queue_full"].value == 0  # ok findings have a series too
    assert all(s.labels["netns"] == "snapshot" for s in sev.values())
    socks = {s.labels["state"]: s.value for s in fams["netdiag_sockets"].samples}
    assert socks["TIME_WAIT"] == 480 and socks["CLOSE_WAIT"] == 12
    queue = {(s.labels["port"]): s.value for s in fams["netdiag_listener_backlog_limit"].samples}
    assert queue["8080"] == 4096
    # prometheus_client strips _total from counter family names.
    counters = {s.labels["counter"]: s.value for s in fams["netdiag_nstat"].samples}
    assert counters["TcpExtListenOverflows"] == 0 and "TcpRetransSegs" in counters
    assert fams["netdiag_nstat"].type == "counter"
    up = {s.labels["collector"]: s.value for s in fams["netdiag_collector_up"].samples}
    assert up["sockets"] == 1 and up["processes"] == 0  # a snapshot has no processes
    # Textfile collector rules: no timestamps, legacy names, one HELP/TYPE per metric.
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        assert re.match(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{.*\})? -?[0-9.e+]+$', line), line
    helps = [ln.split()[2] for ln in text.splitlines() if ln.startswith("# HELP")]
    assert len(helps) == len(set(helps))
    assert text.endswith("\n")


def test_textfile_output_is_atomic(tmp_path):
    target = tmp_path / "netdiag.prom"
    run_netdiag("check", "--root", BUSY, "--format", "prometheus", "--output", str(target),
                check_rc=(1,))
    assert "netdiag_status" in families(target.read_text())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["netdiag.prom"]


@pytest.mark.parametrize("root,word", [(BUSY, "WARNING"),
                                        (str(HOSTS / "linux-4.19-layout"), "WARNING")])
def test_nagios_grammar_and_exit_code(root, word):
    proc = run_netdiag("check", "--root", root, "--format", "nagios")
    first, *rest = proc.stdout.splitlines()
    assert NAGIOS.match(first), first
    assert first.startswith(f"NETDIAG {word} - ")
    assert proc.returncode == WORD_CODE[word]
    assert len(first.split(" | ")[0]) <= 90
    assert any(line.startswith("[WARNING] ") for line in rest)
    # finding lines most severe first, as the status line names the worst
    order = {"CRITICAL": 0, "WARNING": 1, "INFO": 2}
    ranks = [order[line[1:line.index("]")]] for line in rest if not line.startswith("[ERROR]")]
    assert ranks == sorted(ranks), rest


def perf_labels(status_line: str) -> list[str]:
    """The labels of a Nagios status line's perfdata, unquoted."""
    labels = PERF_ITEMS.findall(status_line.split(" | ", 1)[1])
    return [lab[1:-1].replace("''", "'") if lab.startswith("'") else lab for lab in labels]


def test_nagios_perfdata_of_one_namespace_keeps_plain_labels():
    first = run_netdiag("check", "--root", BUSY, "--format", "nagios").stdout.splitlines()[0]
    labels = perf_labels(first)
    assert "sockets_time_wait" in labels and "TcpRetransSegs" in labels
    assert len(labels) == len(set(labels))


def test_nagios_perfdata_with_all_netns_is_unique_per_namespace():
    """--all-netns: every namespace's values under labels qualified by it (quoted when the
    namespace's label holds a space or a quote), never the same label twice."""
    from netdiag.metrics import Sample
    from netdiag.model import HostInfo, Report
    from netdiag.render.nagios import render_nagios

    namespaces = ("default", "ndp-a", "web [netns:4026532300]", "o'brien", "a=b", "a_b")
    metrics = []
    for ns in namespaces:
        for state in ("LISTEN", "TIME_WAIT"):
            metrics.append(Sample("netdiag_sockets", "gauge", "h",
                                  (("state", state), ("netns", ns)), 3))
        metrics.append(Sample("netdiag_nstat_total", "counter", "h",
                              (("counter", "TcpRetransSegs"), ("netns", ns)), 7))
    report = Report(host=HostInfo("h", "6.18", "all"), generated_at="2026-01-01T00:00:00Z",
                    metrics=metrics, all_netns=True)
    out = io.StringIO()
    render_nagios(report, out)
    first = out.getvalue().splitlines()[0]
    assert NAGIOS.match(first), first
    labels = perf_labels(first)
    assert len(labels) == len(set(labels)), labels
    assert len(labels) == 3 * len(namespaces) + 2  # + the findings counts
    for ns in ("default", "ndp-a", "web [netns:4026532300]", "o'brien"):
        assert {f"{ns}:sockets_listen", f"{ns}:sockets_time_wait",
                f"{ns}:TcpRetransSegs"} <= set(labels), ns
    assert "'web [netns:4026532300]:sockets_listen'=3" in first
    assert "'o''brien:TcpRetransSegs'=7c" in first


def test_nagios_unknown_when_nothing_can_be_read(tmp_path):
    proc = run_netdiag("check", "--root", str(tmp_path), "--format", "nagios")
    assert proc.returncode == 3 and proc.stdout.startswith("NETDIAG UNKNOWN - could not judge")
    assert NAGIOS.match(proc.stdout.splitlines()[0])


def test_nagios_ok_and_critical_live(netns):
    proc = run_netdiag("check", "--format", "nagios", netns=netns.name)
    assert proc.returncode == 0 and NAGIOS.match(proc.stdout.splitlines()[0])
    assert proc.stdout.startswith("NETDIAG OK - no problem found | ")
    netns.spawn_load("listen", "--port", "8090", "--backlog", "1", "--count", "10")
    proc = run_netdiag("check", "--format", "nagios", netns=netns.name)
    assert proc.returncode == 2 and proc.stdout.startswith("NETDIAG CRITICAL - ")
    assert NAGIOS.match(proc.stdout.splitlines()[0])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_exporter_scraped_over_loopback():
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "netdiag", "serve", "--listen",
                             f"127.0.0.1:{port}", "--min-interval", "0"],
                            stderr=subprocess.PIPE, text=True, env=env, cwd="/")
    try:
        assert "listening on" in proc.stderr.readline()
        url = f"http://127.0.0.1:{port}/metrics"
        with urllib.request.urlopen(url, timeout=60) as resp:
            assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            fams = families(resp.read().decode())
        assert fams["netdiag_exporter_last_run_success"].samples[0].value == 1
        assert "netdiag_finding_severity" in fams and "netdiag_status" in fams
        with urllib.request.urlopen(url, timeout=60) as resp:
            again = families(resp.read().decode())
        assert again["netdiag_exporter_runs"].samples[0].value == 2
        with pytest.raises(urllib.error.HTTPError) as exc:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/other", timeout=10)
        assert exc.value.code == 404
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_exporter_refuses_a_bad_listen_address():
    proc = run_netdiag("serve", "--listen", "nonsense")
    assert proc.returncode == 3 and "expected ADDR:PORT" in proc.stderr


def test_alert_rules_pass_promtool():
    promtool = shutil.which("promtool")
    if promtool is None:
        reason = "promtool (Debian package prometheus) is not installed; `make test` installs it"
        if os.environ.get("NETDIAG_REQUIRE_ROOT") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    out = subprocess.run([promtool, "check", "rules",
                          str(REPO / "contrib" / "prometheus" / "netdiag-alerts.yml")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS: 8 rules found" in out.stdout


def test_history_delta_reset_and_concurrency(tmp_path):
    require_root("history across namespace events")
    state = str(tmp_path / "state")
    with NetNS() as ns:
        name = ns.name
        first, _ = run_json("backlog", "--state-dir", state, netns=name)
        ev = finding(first, "backlog.listen_overflow")["evidence"]["ListenOverflows"]
        assert "delta" not in ev  # nothing stored before
        ns.spawn_load("listen", "--port", "8091", "--backlog", "1", "--count", "12")
        time.sleep(0.5)
        second, _ = run_json("backlog", "--state-dir", state, netns=name)
        ev = finding(second, "backlog.listen_overflow")["evidence"]["ListenOverflows"]
        assert ev["since"] == "previous run" and ev["delta"] > 0 and ev["seconds"] > 0
        assert ev["delta"] == ev["total"]
        for p in ns.procs:
            p.kill()
    # Same name, new namespace: its counters start at zero again.
    with NetNS() as again:
        subprocess.run(["ip", "netns", "del", again.name], check=True)
        again.name = name
        subprocess.run(["ip", "netns", "add", name], check=True)
        third, _ = run_json("backlog", "--state-dir", state, netns=name)
        ev = finding(third, "backlog.listen_overflow")["evidence"]["ListenOverflows"]
        assert ev["reset"] is True and "recreated" in ev["reset_reason"]
        assert ev.get("rate_per_s") is None and ev["delta"] >= 0
        # Two runs at once on one store both succeed.
        env = dict(os.environ, PYTHONPATH=str(REPO))
        cmd = [sys.executable, "-m", "netdiag", "check", "--json", "--state-dir", state,
               "--netns", name]
        runs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                                 cwd="/") for _ in range(3)]
        for p in runs:
            out, err = p.communicate(timeout=60)
            assert p.returncode in (0, 1, 2), err
            assert load_json(out)["schema"] == "netdiag/2"
    hist = load_json(run_netdiag("history", "--state-dir", state, "--netns", name, "--json")
                      .stdout)
    assert len(hist["runs"]) == 6
    assert hist["runs"][1]["ListenOverflows"] > 0
    assert hist["runs"][2]["reset"] == "namespace recreated"
    assert set(hist["sparklines"]) >= {"sockets", "ListenOverflows", "TIME_WAIT"}
    table = run_netdiag("history", "--state-dir", state, "--netns", name,
                        env={"COLUMNS": "80"})
    assert table.returncode == 0 and "↺ netns" in table.stdout
    assert max(len(line) for line in table.stdout.splitlines()) <= 80
    missing = run_netdiag("history", "--state-dir", str(tmp_path / "none"))
    assert missing.returncode == 3 and "no history" in missing.stderr


def test_all_netns_labels_each_namespace():
    require_root("several namespaces")
    with NetNS() as leak, NetNS() as ports, NetNS() as idle:
        leak.spawn_load("closewait", "--port", "8080", "--count", "11")
        ports.sysctl("net.ipv4.ip_local_port_range", "40000 40099")
        ports.sysctl("net.ipv4.tcp_tw_reuse", "0")
        ports.spawn_load("churn", "--port", "9000", "--count", "60")
        report, rc = run_json("check", "--all-netns")
        assert report["host"]["netns"] == "all" and rc >= 1
        by = {}
        for f in report["findings"]:
            by.setdefault(f["netns"], set()).add(f["id"])
        assert "closewait.leak" in by[leak.name]
        assert "ports.ephemeral_exhaustion" in by[ports.name]
        assert "closewait.leak" not in by.get(ports.name, set())
        assert {f["severity"] for f in report["findings"] if f["netns"] == idle.name} <= {"info"}
        rows = {r["netns"]: r for r in report["facts"]["namespaces"]}
        assert rows[leak.name]["status"] == "warning" and rows[idle.name]["status"] == "ok"
        assert rows["default"]["inode"] == os.stat("/proc/self/ns/net").st_ino
        prom = run_netdiag("check", "--all-netns", "--format", "prometheus").stdout
        status = {s.labels["netns"]: s.value
                  for s in families(prom)["netdiag_status"].samples}
        assert status[leak.name] == 1 and status[idle.name] == 0
        series = [(f.name, tuple(sorted(s.labels.items())))
                  for f in families(prom).values() for s in f.samples]
        assert len(series) == len(set(series))  # namespaces differ by their netns label
        # Host-wide collectors run in "default" only: no namespace reports them as down.
        up = {(s.labels["netns"], s.labels["collector"]): s.value
              for s in families(prom)["netdiag_collector_up"].samples}
        assert up[(idle.name, "sockets")] == 1 and (idle.name, "file-nr") not in up
        assert not [k for k, v in up.items() if k[0] != "default" and v == 0], up
        nagios = run_netdiag("check", "--all-netns", "--format", "nagios").stdout
        first = nagios.splitlines()[0]
        assert NAGIOS.match(first), first
        labels = perf_labels(first)
        assert len(labels) == len(set(labels)), labels
        for ns in (leak.name, ports.name, idle.name):
            assert f"{ns}:sockets_listen" in labels or f"{ns}:TcpRetransSegs" in labels, ns
        assert f"{leak.name}:sockets_close_wait" in labels
        assert run_netdiag("check", "--all-netns", "--netns", idle.name).returncode == 3
