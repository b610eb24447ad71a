"""Output people and machines can act on: terse tables that fit 80 columns and say when all is
well, typed JSON that validates against the published schema, Prometheus names that pass
promtool, and a contract that lists every id and metric the code can emit."""

from __future__ import annotations

import copy
import io
import json
import os
import pty
import re
import select
import shutil
import subprocess
import sys
import time

import pytest

from netdiag.model import Finding, HostInfo, Report, Rule, Severity
from netdiag.render.table import render_table
from netdiag.rules import SPECS
from netdiag.sysctls import SYSCTLS

from conftest import (
    HOSTS,
    REPO,
    NetNS,
    host_wide,
    load_json,
    require_root,
    run_json,
    run_netdiag,
)

BUSY = str(HOSTS / "linux-6.18-busy")
LEGACY = str(HOSTS / "linux-4.19-layout")
RX = str(HOSTS / "linux-rx-pressure")
CONTRACT = (REPO / "docs" / "CONTRACT.md").read_text()
TOPIC_COMMANDS = ("sockets", "timewait", "closewait", "ports", "backlog", "keepalive",
                  "buffers", "softirq", "sysctl")
NUMBER_TEXT = re.compile(r"^-?[0-9]+(\.[0-9]+)?$")
PLACEHOLDERS = {"-", "(absent)", "(none)", "n/a", ""}
VERBOSE_PART = re.compile(r"^  (why|rule|source): ", re.M)
COLOUR_SGR = re.compile(r"\x1b\[[0-9;]*?(?:3[0-9]|9[0-7]|38;)[0-9;]*m")


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        reason = "promtool (Debian package prometheus) is not installed; `make test` installs it"
        if os.environ.get("NETDIAG_REQUIRE_ROOT") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    return path


def _check_metrics(text: str) -> None:
    assert text.startswith("# HELP"), text[:200]
    out = subprocess.run([_promtool(), "check", "metrics"], input=text, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


# ---- tables ----------------------------------------------------------------------------------

def test_idle_namespace_check_is_a_few_lines_that_say_it_is_fine(netns):
    report, rc = run_json("check", netns=netns.name)
    table = run_netdiag("check", netns=netns.name, env={"COLUMNS": "80"})
    lines = table.stdout.splitlines()
    assert "keepalive" not in table.stdout  # the default with no connection is nothing
    # Only host-wide facts may speak here (softirq totals since boot, a neighbour's process
    # near its fd limit): other work on this machine, not this namespace.
    assert all(host_wide(f) for f in report["findings"]), report["findings"]
    if not report["findings"]:
        assert rc == 0 and table.returncode == 0
        assert len(lines) <= 4, table.stdout
        assert "No findings: nothing wrong in what was checked." in table.stdout
        assert lines[-1] == "status: OK"
    assert not VERBOSE_PART.search(table.stdout)


def test_a_finding_is_headline_evidence_and_action_and_verbose_adds_why_and_rule():
    terse = run_netdiag("check", "--root", BUSY, env={"COLUMNS": "80"}).stdout
    full = run_netdiag("check", "--root", BUSY, "--verbose", env={"COLUMNS": "80"}).stdout
    report, _ = run_json("check", "--root", BUSY)
    flood = next(f for f in report["findings"] if f["id"] == "timewait.flood")
    # Headline: severity, title, id on the first line(s) of each finding.
    assert re.search(r"^\[WARNING\] 450 TIME_WAIT toward 127\.0\.0\.1:9000", terse, re.M)
    assert "(timewait.flood)" in " ".join(terse.split())
    assert "evidence: time_wait=480" in terse and "do: Reuse connections" in terse
    # The explanation and the rule only with --verbose (or explain); the hint says so.
    assert not VERBOSE_PART.search(terse)
    assert "--verbose, or netdiag explain ID" in terse
    assert {m.group(1) for m in VERBOSE_PART.finditer(full)} == {"why", "rule", "source"}
    assert " ".join(flood["explanation"].split()[:8]) in " ".join(full.split())
    assert " ".join(flood["rule"]["source"].split()[:3]) in " ".join(full.split())
    assert "--verbose, or netdiag explain ID" not in full
    # Evidence lists are cut to their first rows, saying so; --verbose shows them all.
    assert "… 1 more (--verbose)" in terse and "… 1 more (--verbose)" not in full
    assert len(terse.splitlines()) < len(full.splitlines())


def test_the_action_in_the_table_is_the_findings_own():
    """No advice the finding did not give: each 'do:' block is that finding's recommendation."""
    terse = run_netdiag("check", "--root", LEGACY, env={"COLUMNS": "200"}).stdout
    report, _ = run_json("check", "--root", LEGACY)
    blocks = terse.split("\n\n")
    for f in report["findings"]:
        block = next(b for b in blocks if f"({f['id']}" in b)
        do = " ".join(block.split("do: ", 1)[1].split())
        assert do == " ".join(f["recommendation"].split()), f["id"]


@pytest.mark.parametrize("width", [80, 60])
def test_every_table_fits_without_splitting_names(width):
    env = {"COLUMNS": str(width)}
    runs = [("check", "--verbose")] + [(cmd,) for cmd in ("check", *TOPIC_COMMANDS)]
    for root in (BUSY, LEGACY, RX):
        for args in runs:
            out = run_netdiag(*args, "--root", root, env=env).stdout
            assert max(len(line) for line in out.splitlines()) <= width, (args, root)
            assert all(line == line.rstrip() for line in out.splitlines()), args
    out = run_netdiag("sysctl", "--root", LEGACY, env=env).stdout
    for spec in SYSCTLS:  # whole names, one per line: never split mid-word
        assert re.search(rf"^{re.escape(spec.key)}( |$)", out, re.M), spec.key
    note = re.search(rf"^columns not shown at {width} columns: ([a-z, ]+) \(", out, re.M)
    assert note and "rules" in note.group(1).split(", ")
    wide = run_netdiag("sysctl", "--root", LEGACY, env={"COLUMNS": "220"}).stdout
    assert "columns not shown" not in wide and "timewait.bucket_overflow" in wide


def _section_titles(title: str, value):
    """The headings the table renderer gives a facts section (render.table._section)."""
    nested = [k for k, v in value.items() if isinstance(v, dict) or (
        isinstance(v, list) and v and isinstance(v[0], dict))] if isinstance(value, dict) else []
    if nested:
        if len(nested) < len(value):
            yield title.replace("_", " ")
        for key in nested:
            yield from _section_titles(f"{title}: {key}", value[key])
    elif (isinstance(value, dict) and value) or (isinstance(value, list) and value and
                                                 isinstance(value[0], dict)):
        yield title.replace("_", " ")


@pytest.mark.parametrize("width", [80, 60])
def test_section_headings_never_wrap_mid_phrase(width):
    """A section's heading is one line whatever its table's width (it wrapped at the width
    of a narrow table: "summary:" / "by" / "family")."""
    runs = [(cmd,) for cmd in TOPIC_COMMANDS] + [("sockets", "--state", "close-wait")]
    for root in (BUSY, LEGACY, RX):
        for args in runs:
            report, _ = run_json(*args, "--root", root)
            out = run_netdiag(*args, "--root", root, env={"COLUMNS": str(width)}).stdout
            lines = set(out.splitlines())
            titles = [t for k, v in report["facts"].items() for t in _section_titles(k, v)]
            assert titles, args
            for title in titles:
                assert len(title) > width or title in lines, (args, root, title)
    out = run_netdiag("sockets", "--state", "close-wait", "--root", BUSY,
                      env={"COLUMNS": "80"}).stdout
    assert "summary: by family\n" in out and "summary: by state\n" in out


def _report(facts: dict, findings: list[Finding] | None = None) -> Report:
    return Report(host=HostInfo("h", "6.18", "default"), generated_at="2026-01-01T00:00:00Z",
                  findings=findings or [], facts=facts, topic="sockets", show_facts=True)


def _render(report: Report, verbose: bool = False, width: int = 80) -> str:
    out = io.StringIO()
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(width)
    try:
        render_table(report, out, verbose)
    finally:
        if old is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = old
    return out.getvalue()


def test_rows_are_cut_only_with_a_count_and_how_to_see_them():
    rows = [{"local_port": 1000 + i, "sockets": i} for i in range(30)]
    out = _render(_report({"by_local_port": rows}))
    shown = [int(m) for m in re.findall(r"^(1\d{3})\s", out, re.M)]
    assert shown == list(range(1000, 1020))
    assert "… 10 more rows (--verbose shows all; --format json has every row)" in out
    everything = _render(_report({"by_local_port": rows}), verbose=True)
    assert [int(m) for m in re.findall(r"^(1\d{3})\s", everything, re.M)] == \
        list(range(1000, 1030))
    assert "more rows" not in everything


def test_typed_facts_read_well_in_a_table():
    facts = {"listeners": [{"address": "::1", "port": 8080, "pid": None, "command": None},
                           {"address": "10.0.0.1", "port": 22, "pid": 7, "command": "sshd"}],
             "settings": {"tcp_rmem": [4096, 131072, 6291456],
                          "ip_local_reserved_ports": [[8080, 8080], [9000, 9010]],
                          "tcp_tw_reuse_delay": None, "rps": True}}
    out = _render(_report(facts))
    assert "[::1]:8080" in out and "10.0.0.1:22" in out  # address and port as one column
    assert "tcp rmem" in out and "4096 131072 6291456" in out
    assert "8080, 9000-9010" in out
    assert re.search(r"tcp tw reuse delay\s+-$", out, re.M)
    assert re.search(r"rps\s+yes$", out, re.M)


def test_system_strings_cannot_style_the_table():
    facts = {"by_process": [{"pid": 1, "command": "[bold red]x\x1b[2J\udcff"}]}
    f = Finding("closewait.leak", "closewait", Severity.WARNING, "t [/] \x07", {
        "cmdline": "a\nb"}, "e", "r", Rule("text", "src"))
    out = _render(_report(facts, [f]))
    assert "[bold red]x\\x1b[2J\\xff" in out and "\x1b" not in out and "\x07" not in out
    assert "t [/] \\x07" in out and "cmdline=a\\x0ab" in out


def _run_on_terminal(args: list[str], extra_env: dict) -> str:
    """Run netdiag with stdout on a pseudo-terminal; return what it printed."""
    master, slave = pty.openpty()
    env = dict(os.environ, PYTHONPATH=str(REPO), TERM="xterm-256color", COLUMNS="100")
    for key in ("NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
        env.pop(key, None)
    env.update(extra_env)
    proc = subprocess.Popen([sys.executable, "-m", "netdiag", *args], stdout=slave,
                            stderr=subprocess.DEVNULL, env=env, cwd="/")
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # the child closed the terminal
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
    finally:
        os.close(master)
        proc.wait(timeout=30)
    return b"".join(chunks).decode("utf-8", "replace")


def test_colour_only_on_a_terminal_and_never_with_no_color():
    args = ["check", "--root", BUSY]
    coloured = _run_on_terminal(args, {})
    assert COLOUR_SGR.search(coloured), coloured[:300]  # a terminal gets colour
    assert "\x1b[1m" in coloured or "\x1b[2m" in coloured  # bold and dim, too
    plain = _run_on_terminal(args, {"NO_COLOR": "1"})
    assert "[WARNING]" in plain and not COLOUR_SGR.search(plain), plain[:300]
    # NO_COLOR: no styling at all, not even bold or dim (README: no styles with NO_COLOR)
    assert "\x1b" not in plain, plain[:300]
    for cmd in (["sockets", "--root", BUSY], ["check", "--help"]):
        assert "\x1b" not in _run_on_terminal(cmd, {"NO_COLOR": "1"}), cmd
    empty = _run_on_terminal(args, {"NO_COLOR": ""})  # set but empty: no effect (no-color.org)
    assert COLOUR_SGR.search(empty)
    piped = run_netdiag(*args).stdout  # a pipe gets no escape sequence at all
    assert "\x1b" not in piped and "[WARNING]" in piped


def test_an_owner_nobody_looked_for_never_reads_as_no_owner(netns):
    """`sockets` looks up only the owners findings name (the census stays cheap on a host with
    a million sockets): a quiet listener's owner is "not looked up (-P)", never "-"; with -P,
    and in `backlog` (which names every listener's holders), the owner itself."""
    proc, ready = netns.spawn_load("listen", "--port", "8093", "--count", "0",
                                   "--backlog", "16")
    pid = int(ready.split("pid=")[1].split()[0])
    report, _ = run_json("sockets", netns=netns.name)
    row = next(r for r in report["facts"]["listeners"] if r["port"] == 8093)
    assert row["pid"] is None and row["owner_lookup"] == "not_looked_up"
    table = run_netdiag("sockets", netns=netns.name, env={"COLUMNS": "100"}).stdout
    line = next(ln for ln in table.splitlines() if ":8093 " in ln)
    assert line.rstrip().endswith("not looked up (-P)"), line
    full, _ = run_json("sockets", "-P", netns=netns.name)
    row = next(r for r in full["facts"]["listeners"] if r["port"] == 8093)
    assert (row["pid"], row["owner_lookup"]) == (pid, "found")
    table = run_netdiag("sockets", "-P", netns=netns.name, env={"COLUMNS": "100"}).stdout
    assert re.search(rf":8093 .* {pid} +python", table), table
    backlog, _ = run_json("backlog", netns=netns.name)
    row = next(r for r in backlog["facts"]["listeners"] if r["port"] == 8093)
    assert row["pid"] == pid and row["owner_lookup"] == "found"
    assert [h["pid"] for h in row["holders"]] == [pid]
    snap, _ = run_json("sockets", "--root", BUSY)
    assert {r["owner_lookup"] for r in snap["facts"]["listeners"]} == {"unavailable"}
    shown = run_netdiag("closewait", "--root", BUSY).stdout
    assert re.search(r"unknown \(snapshot\) +- +8080 +12", shown), shown


# ---- JSON ------------------------------------------------------------------------------------

def _walk(value, path="facts"):
    if isinstance(value, dict):
        for k, v in value.items():
            yield path, k, v
            yield from _walk(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _walk(v, f"{path}[{i}]")


DATA_KEYS = re.compile(r"^([A-Z][A-Z0-9_]+|[A-Z][A-Za-z0-9]*\.[A-Za-z0-9_]+|ipv4|ipv6)$")


@pytest.mark.parametrize("root", [BUSY, LEGACY, RX])
def test_every_fact_is_typed_under_a_stable_key(root):
    for cmd in ("check", *TOPIC_COMMANDS):
        report, _ = run_json(cmd, "--root", root)  # validated against the schema too
        assert report["command"] == cmd
        for path, key, value in _walk(report["facts"]):
            assert re.match(r"^[a-z][a-z0-9_]*$", key) or DATA_KEYS.match(key), (cmd, path, key)
            if isinstance(value, str) and key != "default":  # "default": documented prose
                assert not NUMBER_TEXT.match(value), (cmd, path, key, value)
                assert value not in PLACEHOLDERS, (cmd, path, key, value)
                assert "=" not in value and "/" not in value or key in (
                    "source", "cmdline", "command"), (cmd, path, key, value)


NUMBERS_TEXT = re.compile(r"^\s*-?[0-9]+(\.[0-9]+)?([\s,:/-]+-?[0-9]+(\.[0-9]+)?)*\s*$")


def _endpoint_text(text: str) -> bool:
    """ "10.0.0.1:5201", "[::1]:80": an address and a port in one string (not an address)."""
    import ipaddress

    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        return False
    try:
        ipaddress.ip_address(text.strip("[]"))
        return False  # an IPv6 address ("::1") is an address, not an endpoint
    except ValueError:
        pass
    try:
        ipaddress.ip_address(host.strip("[]"))
        return True
    except ValueError:
        return False


def assert_typed_evidence(evidence, where: str) -> None:
    """Numbers as numbers, endpoints as address + port, null (never "" or "-") for absent."""
    for path, text in _evidence_strings(evidence, where):
        assert not NUMBERS_TEXT.match(text), (path, text)
        assert not _endpoint_text(text), (path, text)
        assert text not in PLACEHOLDERS and text != "?", (path, text)
    for path, key, value in _walk(evidence, where):
        if key == "holders":  # processes as rows ({pid, command}) or pids, null if not looked up
            assert value is None or isinstance(value, list), (path, value)


def _evidence_strings(value, path):
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _evidence_strings(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _evidence_strings(v, f"{path}[{i}]")
    elif isinstance(value, str):
        yield path, value


@pytest.mark.parametrize("root", sorted(p.name for p in HOSTS.iterdir() if p.is_dir()))
def test_every_findings_evidence_is_typed_like_the_facts(root):
    """Evidence holds numbers as numbers and sysctl vectors as integer lists, like the facts:
    no "40000 40999", no "4096 131072 6291456", no "" for an absent value. Every rule of every
    topic, OK findings included, on each recorded host."""
    from netdiag.collect.gather import Plan, collect
    from netdiag.context import Context
    from netdiag.rules import TOPICS, evaluate

    facts, _ = collect(Context(root=HOSTS / root), Plan(details=True))
    result = evaluate(facts, list(TOPICS))
    assert result.findings and not result.errors, result.errors
    for f in result.findings:
        assert_typed_evidence(f.evidence, f.id)
    by_id = {f.id: f for f in result.findings}
    ports = by_id["ports.listener_in_ephemeral_range"].evidence
    assert isinstance(ports["ip_local_port_range"], list) and \
        all(isinstance(p, int) for p in ports["ip_local_port_range"])
    assert isinstance(ports["ip_local_reserved_ports"], list)
    rmem = by_id["buffers.autotuning_disabled"].evidence["tcp_rmem"]
    assert isinstance(rmem, list) and len(rmem) == 3 and all(isinstance(v, int) for v in rmem)


def test_the_evidence_guard_catches_numbers_in_strings():
    for bad in ("40000 40999", "4096 131072 33554432", "1", "8080,9000-9010", " 12 "):
        assert NUMBERS_TEXT.match(bad), bad
    for fine in ("127.0.0.1", "ESTABLISHED", "nginx", "::1", "/etc/sysctl.d/x.conf"):
        assert not NUMBERS_TEXT.match(fine), fine
        assert not _endpoint_text(fine), fine
    for bad in ("10.0.0.1:5201", "[fe80::1]:443", "0.0.0.0:80"):
        assert _endpoint_text(bad), bad


def test_every_why_evidence_is_typed_like_the_facts():
    """`why` on every symptom, unscoped and scoped, over the recorded hosts (why has no --root:
    their collected facts) and hand-built facts that reach the evidence the hosts do not
    (probes, listeners with owners, busy flows, idle connections): every cause's evidence and
    the facts section typed as the facts are."""
    from test_why_units import typed_cases

    from netdiag.diagnose import SYMPTOMS, Scope, report_parts
    from netdiag.rules import TOPICS, evaluate

    seen = set()
    for name, facts in typed_cases():
        findings = evaluate(facts, list(TOPICS)).findings
        for f in findings:
            assert_typed_evidence(f.evidence, f"{name}: {f.id}")
        for symptom in SYMPTOMS:
            for scope in (Scope(), Scope(port=7000), Scope(port=5201, peer="10.0.0.2")):
                causes, section = report_parts(symptom, symptom.name, scope, facts, findings)
                for c in causes:
                    assert_typed_evidence(c.evidence, f"{name}: {c.id}")
                    seen.update(_keys(c.evidence))
                assert_typed_evidence({k: v for k, v in section.items() if k != "causes"},
                                      f"{name}: facts")
    # The evidence the issue named was reached: flows, idle connections, holders.
    assert {"local_port", "peer_address", "idle_s", "holders", "what_holds_it"} <= seen


def _keys(value):
    if isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from _keys(v)
    elif isinstance(value, list):
        for v in value:
            yield from _keys(v)


def test_the_schema_rejects_what_the_issue_complained_about():
    """The schema is not a check that cannot fail: the old shapes do not validate."""
    good, _ = run_json("backlog", "--root", BUSY)
    load_json(json.dumps(good))
    bad = []
    doc = copy.deepcopy(good)
    doc["facts"]["settings"]["somaxconn"] = "4096"  # a number in a string
    bad.append(doc)
    keep, _ = run_json("keepalive", "--root", BUSY)
    doc = copy.deepcopy(keep)
    doc["facts"]["established_connections"]["idle > 10 min without keepalive"] = 0  # a label
    bad.append(doc)
    soft, _ = run_json("softirq", "--root", BUSY)
    doc = copy.deepcopy(soft)
    doc["facts"]["interfaces"][0]["rx_ring"] = "256/4096"  # a placeholder text
    bad.append(doc)
    doc = copy.deepcopy(good)
    doc["schema"] = "netdiag/1"
    bad.append(doc)
    buf, _ = run_json("buffers", "--root", BUSY)
    doc = copy.deepcopy(buf)
    row = next(f for f in doc["findings"] if f["id"] == "buffers.max_below_bdp")[
        "evidence"]["flows"][0]
    row["local"] = f"{row.pop('local_address')}:{row.pop('local_port')}"  # "addr:port" text
    bad.append(doc)
    doc = copy.deepcopy(good)
    doc["findings"].append(dict(good["findings"][0], severity="warn"))
    bad.append(doc)
    doc = copy.deepcopy(good)
    del doc["findings"][0]["rule"]
    bad.append(doc)
    for doc in bad:
        with pytest.raises(AssertionError, match="does not match"):
            load_json(json.dumps(doc))


def test_explain_probe_list_and_errors_validate():
    for what in ("timewait", "backlog.somaxconn_clamp"):
        data = load_json(run_netdiag("explain", what, "--json").stdout)
        assert data["schema"] == "netdiag/2"
    assert load_json(run_netdiag("explain", "keepalive.slow_detection", "--json").stdout)[
        "counters"] == list(SPECS["keepalive.slow_detection"].counters)
    listing = load_json(run_netdiag("probe", "list", "--json").stdout)
    assert {p["probe"] for p in listing["probes"]} >= {"states", "drops"}
    unknown = run_netdiag("check", "--root", str(HOSTS), "--json")  # not a snapshot: unknown
    assert unknown.returncode == 3
    doc = load_json(unknown.stdout)
    assert doc["status"] == "unknown" and doc["errors"] and doc["not_judged"]


def test_tests_validate_the_netdiag_json_they_parse():
    """Future tests too: JSON parsed in a test goes through conftest.load_json (or run_json,
    run_netdiag), which validates it against the schema; other JSON says so on its line."""
    unchecked = []
    for path in sorted((REPO / "tests").rglob("*.py")):
        # conftest validates; the smoke suite runs against the installed wheel in a venv
        # without the test dependencies and checks the document's shape itself.
        if path.name == "conftest.py" or "smoke" in path.relative_to(REPO).parts:
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"\bjson\.loads?\(", line) and "# not netdiag output" not in line:
                unchecked.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    assert unchecked == [], "parse netdiag JSON with conftest.load_json:\n" + "\n".join(
        unchecked)


# ---- Prometheus ------------------------------------------------------------------------------

def test_promtool_accepts_check_and_every_topic_command():
    for root in (BUSY, LEGACY, RX):
        for cmd in ("check", *TOPIC_COMMANDS):
            proc = run_netdiag(cmd, "--root", root, "--format", "prometheus")
            assert proc.returncode in (0, 1, 2, 3), proc.stderr  # 3: softirq of an old layout
            _check_metrics(proc.stdout)
            assert 'severity="' not in proc.stdout  # severity is the value, never a label


def test_promtool_accepts_all_netns_and_live_output():
    require_root("several namespaces")
    with NetNS() as one, NetNS() as two:
        two.sysctl("net.ipv4.ip_local_port_range", "40000 40099")
        two.sysctl("net.ipv4.tcp_tw_reuse", "0")
        two.spawn_load("churn", "--port", "9000", "--count", "60")
        proc = run_netdiag("check", "--all-netns", "--format", "prometheus")
        assert proc.returncode in (0, 1, 2), proc.stderr
        _check_metrics(proc.stdout)
        for name in (one.name, two.name):
            assert f'netdiag_status{{netns="{name}"}}' in proc.stdout
        series = re.findall(r'^netdiag_finding_severity\{id="([^"]+)",topic="[^"]+",'
                            rf'netns="{two.name}"\}} ([0-3])$', proc.stdout, re.M)
        assert ("ports.ephemeral_exhaustion", "2") in series
        ids = [i for i, _ in series]
        assert len(ids) == len(set(ids))  # one series per id and namespace
        live = run_netdiag("softirq", "--format", "prometheus", netns=one.name)
        _check_metrics(live.stdout)


def test_promtool_accepts_probe_output():
    from test_probes import require_probes  # noqa: PLC0415

    require_probes()
    with NetNS() as ns:
        proc = run_netdiag("check", "--format", "prometheus", "--probe-seconds", "1",
                           "--probes", "states,backlog,wakeups,drops,rcvbuf,resets,retrans",
                           netns=ns.name, timeout=180)
        assert proc.returncode in (0, 1, 2), proc.stderr
        _check_metrics(proc.stdout)
        assert 'netdiag_probe_window_seconds{probe="drops"' in proc.stdout
        one = run_netdiag("probe", "softirq", "--duration", "1", "--format", "prometheus",
                          netns=ns.name, timeout=180)
        assert one.returncode in (0, 1, 2), one.stderr
        _check_metrics(one.stdout)


def test_alert_rules_fire_and_resolve_on_the_stable_series():
    out = subprocess.run([_promtool(), "test", "rules",
                          str(HOSTS.parent / "prometheus" / "netdiag-alerts.test.yml")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "SUCCESS" in out.stdout, out.stdout + out.stderr


# ---- the contract ----------------------------------------------------------------------------

def _contract_table_ids() -> set[str]:
    section = CONTRACT.split("## Finding ids", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([a-z]+\.[a-z0-9_]+)` \|", section, re.M))


def _contract_metrics() -> set[str]:
    section = CONTRACT.split("## Metrics", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `(netdiag_[a-z0-9_]+)` \|", section, re.M))


def _metric_names_in_code() -> set[str]:
    names: set[str] = set()
    for path in (REPO / "netdiag").rglob("*.py"):
        text = path.read_text()
        names.update(n for n in re.findall(r"\b(netdiag_[a-z0-9_]+)", text)
                     if not n.endswith("_"))  # "netdiag_probe_*" in a help text
        # prometheus_client exposes a CounterMetricFamily "x" as "x_total".
        for n in re.findall(r'CounterMetricFamily\(\s*"(netdiag_[a-z0-9_]+)"', text):
            names.discard(n)
            names.add(n + "_total")
    return names


def test_contract_lists_every_finding_id_and_no_other():
    assert _contract_table_ids() == set(SPECS)


def test_contract_lists_every_metric_name_the_code_can_emit():
    in_code = _metric_names_in_code()
    assert "netdiag_finding_severity" in in_code and "netdiag_exporter_runs_total" in in_code
    assert in_code - _contract_metrics() == set()
    assert _contract_metrics() - in_code == set()  # no stale name either
    emitted = set()
    for root in (BUSY, LEGACY, RX):
        text = run_netdiag("check", "--root", root, "--format", "prometheus").stdout
        emitted.update(re.findall(r"^# TYPE (\S+) ", text, re.M))
    assert emitted and emitted <= _contract_metrics()


def test_contract_lists_every_command_and_option():
    import typer.main

    from netdiag.cli import app

    group = typer.main.get_command(app)
    commands = CONTRACT.split("## Commands", 1)[1].split("\n## ", 1)[0]
    for name, command in group.commands.items():
        assert f"`netdiag {name}" in commands or f"`{name}`" in commands, name
        for param in command.params:
            for opt in param.opts:
                if opt.startswith("--") and opt not in ("--install-completion",
                                                        "--show-completion"):
                    assert f"`{opt}" in commands, f"{name} {opt} missing from docs/CONTRACT.md"


def test_contract_readme_and_man_page_point_to_each_other():
    readme = (REPO / "README.md").read_text()
    man = (REPO / "man" / "netdiag.1").read_text()
    assert "docs/CONTRACT.md" in readme and "docs/CONTRACT.md" in man
    assert "docs/schema/netdiag.schema.json" in CONTRACT and "netdiag/2" in CONTRACT
    changelog = (REPO / "CHANGELOG.md").read_text()
    assert "netdiag/2" in changelog and "netdiag_nstat_total" in changelog


def test_resets_sent_says_which_answered_a_syn_in_the_table_and_the_metrics():
    """The resets probe's sent rows: answers_syn as a column of `probe resets` (yes, no, "-"
    for unknown) and as the answers_syn label of netdiag_probe_resets_sent (true, false,
    unknown): a refused connection attempt never sums with a RST that ended a connection."""
    from netdiag.facts import Facts
    from netdiag.metrics import samples
    from netdiag.probefacts import ResetsResult, SentReset
    from netdiag.render.prometheus import render_prometheus
    from netdiag.views import probe_view

    res = ResetsResult(sent=[SentReset("NO_SOCKET", "none", 9999, 40, answers_syn=True),
                             SentReset("NO_SOCKET", "none", 9999, 2, answers_syn=False),
                             SentReset("NOT_SPECIFIED", "ESTABLISHED", 8080, 5),
                             SentReset("NO_SOCKET", "none", 7000, 3, answers_syn=True)],
                       sent_total=50)
    facts = Facts(probes={"resets": res})
    table = _render(Report(host=HostInfo("h", "6.18", "default"),
                           generated_at="2026-01-01T00:00:00Z", facts=probe_view(facts),
                           topic="probe", show_facts=True))
    lines = table.splitlines()
    head = next(i for i, ln in enumerate(lines) if ln.startswith("resets: sent"))
    assert "answers syn" in lines[head + 1], table
    assert [ln.split()[-1] for ln in lines[head + 2:head + 6]] == ["yes", "no", "-", "yes"], \
        table
    report = Report(host=HostInfo("h", "6.18", "default"), generated_at="2026-01-01T00:00:00Z",
                    metrics=samples(facts, [], [], "ok", "default"))
    out = io.StringIO()
    render_prometheus(report, out)
    text = out.getvalue()
    _check_metrics(text)
    got = {line.split("{", 1)[1].split("}")[0]: line.rsplit(" ", 1)[1]
           for line in text.splitlines() if line.startswith("netdiag_probe_resets_sent{")}
    assert got == {
        'reason="NO_SOCKET",answers_syn="true",netns="default"': "43",
        'reason="NO_SOCKET",answers_syn="false",netns="default"': "2",
        'reason="NOT_SPECIFIED",answers_syn="unknown",netns="default"': "5"}, got
