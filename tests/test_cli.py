"""The CLI contract: formats, exit codes, one-line errors, explain, atomic output."""

from __future__ import annotations

import pytest

from netdiag.rules import SPECS, TOPICS

from conftest import HOSTS, load_json, run_json, run_netdiag

BUSY = str(HOSTS / "linux-6.18-busy")
LEGACY = str(HOSTS / "linux-4.19-layout")


@pytest.mark.parametrize("args,needle", [
    (["check", "--format", "xml"], "'xml' is not one of"),
    (["check", "--interval", "-1"], "--interval"),
    (["check", "--netns", "nd-does-not-exist"], "not found under /run/netns"),
    (["check", "--pid", "999999999"], "--pid 999999999: not a process id"),
    (["check", "--netns", "x", "--pid", "1"], "mutually exclusive"),
    (["check", "--root", "/nonexistent-dir"], "not a directory"),
    (["sockets", "--state", "bogus"], "unknown TCP state 'bogus'"),
    (["explain", "no.such.id"], "unknown topic, finding id or concept"),
    (["frobnicate"], "No such command"),
    (["check", "--no-such-option"], "No such option"),
])
def test_bad_input_is_one_line_and_exit_3(args, needle):
    proc = run_netdiag(*args)
    assert proc.returncode == 3, proc
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("netdiag: error:"), proc.stderr
    assert needle in lines[0]


def test_json_document_follows_the_contract():
    report, rc = run_json("check", "--root", BUSY)
    assert rc == 1
    assert report["schema"] == "netdiag/2"
    assert set(report) == {"schema", "command", "generated_at", "host", "all_netns", "status",
                           "findings", "facts", "errors", "not_judged"}
    assert report["command"] == "check" and report["all_netns"] is False
    assert report["generated_at"].endswith("Z")
    assert report["host"]["kernel"] == "6.18.44-fc-v595"
    assert report["status"] == "warning"
    for f in report["findings"]:
        assert set(f) >= {"id", "topic", "severity", "title", "evidence", "explanation",
                          "recommendation", "rule"}
        assert f["severity"] in ("info", "warning", "critical")  # check omits ok
        assert set(f["rule"]) == {"text", "source"}
    assert any(e["collector"] == "processes" for e in report["errors"])


def test_exit_code_follows_the_worst_finding():
    assert run_netdiag("check", "--root", BUSY).returncode == 1
    assert run_netdiag("sysctl", "--root", BUSY).returncode == 0
    # The explain command never judges a host.
    assert run_netdiag("explain", "timewait").returncode == 0


@pytest.mark.parametrize("command,ids", [
    ("timewait", {"timewait.bucket_overflow", "timewait.flood",
                  "timewait.tw_recycle_configured"}),
    ("closewait", {"closewait.leak"}),
    ("ports", {"ports.ephemeral_exhaustion", "ports.listener_in_ephemeral_range"}),
    ("sockets", {"sockets.fd_limit"}),
])
def test_topic_commands_show_their_facts_and_every_finding(command, ids):
    report, _ = run_json(command, "--root", LEGACY)
    assert report["facts"], report
    assert ids - {"sockets.fd_limit"} <= {f["id"] for f in report["findings"]}
    assert all(f["topic"] == command for f in report["findings"])


def test_sockets_census_on_a_snapshot():
    report, rc = run_json("sockets", "--root", BUSY, "--top", "3")
    facts = report["facts"]
    assert facts["summary"]["by_state"]["TIME_WAIT"] == 480 and facts["summary"]["total"] == 518
    assert facts["summary"]["source"] == "netlink (recorded)"
    assert len(facts["by_local_port"]) <= 3
    assert {lst["port"] for lst in facts["listeners"]} == {8080, 9000, 9001, 40100}
    cw, _ = run_json("sockets", "--root", BUSY, "--state", "close-wait")
    assert cw["facts"]["summary"]["total"] == 12


def test_sysctl_lists_values_defaults_and_rules():
    report, rc = run_json("sysctl", "--root", LEGACY)
    rows = {r["key"]: r for r in report["facts"]["sysctls"]}
    assert rows["net.ipv4.tcp_max_tw_buckets"]["value"] == 180000
    assert rows["net.ipv4.ip_local_port_range"]["value"] == [32768, 60999]
    assert "timewait.bucket_overflow" in rows["net.ipv4.tcp_max_tw_buckets"]["rules"]
    assert rows["net.ipv4.tcp_tw_reuse_delay"]["value"] is None
    assert report["errors"] == [] and rc == 0


@pytest.mark.parametrize("what", sorted(SPECS) + sorted(TOPICS))
def test_explain_every_id_and_topic(what):
    proc = run_netdiag("explain", what)
    assert proc.returncode == 0 and proc.stderr == ""
    if what in SPECS:
        assert "RULE" in proc.stdout and SPECS[what].rule.source[:12] in proc.stdout
    data = load_json(run_netdiag("explain", what, "--json").stdout)
    assert data.get("id", data.get("topic")) == what


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("netdiag: error: "), stderr
    return lines[0]


def test_explain_names_whatever_their_case_and_points_symptoms_to_why():
    from netdiag.explain import explain_data

    for what, key, want in (("TIMEWAIT", "topic", "timewait"), ("Time_Wait", "topic", "timewait"),
                            ("CLOSE_WAIT", "topic", "closewait"),
                            ("TIMEWAIT.FLOOD", "id", "timewait.flood"),
                            ("SO_LINGER", "concept", "so-linger"),
                            ("Why.Econnreset.Linger_Zero", "cause",
                             "why.econnreset.linger_zero")):
        assert explain_data(what)[key] == want, what
    for what in ("ECONNRESET", "econnreset", "connection reset by peer", "ETIMEDOUT"):
        proc = run_netdiag("explain", what)
        assert proc.returncode == 3 and proc.stdout == ""
        line = one_line(proc.stderr)
        assert "is a symptom" in line and "`netdiag why E" in line and "why." in line, line
    assert "`netdiag why ECONNRESET`" in one_line(run_netdiag("explain", "ECONNRESET").stderr)
    typo = one_line(run_netdiag("explain", "ECONNRESTE").stderr)
    assert "did you mean netdiag why ECONNRESET" in typo, typo
    near = one_line(run_netdiag("explain", "TIMEWAT").stderr)
    assert "did you mean timewait" in near, near
    assert "did you mean" not in one_line(run_netdiag("explain", "zzzzqqq").stderr)


def test_table_output_fits_80_columns():
    proc = run_netdiag("check", "--root", BUSY, env={"COLUMNS": "80"})
    assert proc.returncode == 1
    assert "[WARNING]" in proc.stdout and "status: WARNING" in proc.stdout
    assert max(len(line) for line in proc.stdout.splitlines()) <= 80
    for cmd in ("sockets", "timewait", "closewait", "ports", "sysctl"):
        out = run_netdiag(cmd, "--root", LEGACY, env={"COLUMNS": "80"}).stdout
        assert max(len(line) for line in out.splitlines()) <= 80, cmd


def test_output_file_is_written_atomically(tmp_path):
    target = tmp_path / "netdiag.json"
    proc = run_netdiag("check", "--root", BUSY, "--json", "--output", str(target))
    assert proc.returncode == 1 and proc.stdout == ""
    assert load_json(target.read_text())["status"] == "warning"
    assert [p.name for p in tmp_path.iterdir()] == ["netdiag.json"]


def test_python_dash_m_and_version():
    proc = run_netdiag("--version")
    assert proc.returncode == 0 and proc.stdout.startswith("netdiag ")


@pytest.mark.parametrize("args", [("sockets", "-s", "\udcff"), ("why", "\udcff"),
                                  ("explain", "\udcff"), ("probe", "\udcff"),
                                  ("history", "--netns", "\udcff")])
def test_undecodable_words_are_shown_as_bytes(args):
    """A word that is not UTF-8 (\\xff on the command line) is named as \\xff in a one-line
    usage error, never as Python's '\\udcff' or a traceback."""
    proc = run_netdiag(*args)
    assert proc.returncode == 3 and proc.stdout == ""
    [line] = proc.stderr.splitlines()
    assert line.startswith("netdiag: error: ") and "\\xff" in line and "udc" not in line, line
