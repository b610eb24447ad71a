"""Untrusted text is data: a process whose name is not UTF-8 and holds rich markup and a
terminal escape (b"\\xff[/]\\x1b[2J"), in a namespace of its own, holding CLOSE_WAIT sockets.
Every command that shows it succeeds, in table and JSON, on a UTF-8 and an ASCII terminal,
and shows the name as escaped text."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from netdiag.readfile import text
from netdiag.render._safe import clean

from conftest import HERE, load_json, require_root, run_netdiag

HOSTILE = b"\xff[/]\x1b[2J"
SHOWN = "\\xff[/]\x1b[2J"  # how facts hold it (JSON escapes the ESC as \u001b)
ON_TERMINAL = "\\xff[/]\\x1b[2J"  # how a table shows it
JUNK_ARG = b"\xfe[bold]\x1b]0;pwned\x07\n[/]\r# HELP x"  # \r kept as \r, not \n
PORT = 8191
COUNT = 3
ENCODINGS = [{}, {"PYTHONIOENCODING": "ascii", "LC_ALL": "C"}]


def test_text_escapes_undecodable_bytes():
    assert text(HOSTILE) == SHOWN
    assert text(os.fsdecode(HOSTILE)) == SHOWN  # surrogateescape'd, as os.listdir gives
    assert text("plain") == "plain"
    assert clean(SHOWN) == ON_TERMINAL
    # text that reorders or hides itself on a terminal (bidi override, zero-width, BOM)
    assert clean("a\u202eb\u200bc\ufeffd\u2028e") == "a\\u202eb\\u200bc\\ufeffd\\u2028e"


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """The process, in a network namespace no name points to (only its pid does)."""
    require_root("a process in a new network namespace")
    helper = HERE / "helpers" / "hostile_name.py"
    cmd = ["unshare", "-n", "--", "sh", "-c", 'ip link set lo up && exec "$@"', "sh",
           sys.executable, str(helper), JUNK_ARG, "--", "closewait", "--port", str(PORT),
           "--count", str(COUNT), "--hold", "300"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        line = proc.stdout.readline().decode()
        assert line.startswith("READY"), (line, proc.stderr.read() if proc.poll() else "")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the name is set before READY; check it holds
            with open(f"/proc/{proc.pid}/comm", "rb") as fh:
                if fh.read().rstrip(b"\n") == HOSTILE:
                    break
            time.sleep(0.05)
        else:
            raise AssertionError("the process name was not set")
        yield proc.pid, tmp_path_factory.mktemp("state")
    finally:
        proc.kill()
        proc.wait(timeout=30)


def run(*args: str, env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    proc = run_netdiag(*args, env=env, timeout=timeout)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode in (0, 1, 2), (proc.returncode, proc.stderr)
    assert proc.stdout
    return proc


def strings(value) -> list[str]:
    """Every string inside a JSON value."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    return []


def table_shows_the_name_escaped(out: str) -> None:
    assert "\x1b" not in out and "\x07" not in out  # no escape sequence reaches a terminal
    assert ON_TERMINAL in out


@pytest.mark.parametrize("env", ENCODINGS, ids=["utf8", "ascii"])
def test_closewait_names_the_process_safely(hostile, env):
    pid, _ = hostile
    report = load_json(run("closewait", "--pid", str(pid), "--json", env=env).stdout)
    leak = next(f for f in report["findings"] if f["id"] == "closewait.leak")
    assert leak["severity"] in ("info", "warning", "critical")
    assert SHOWN in leak["title"]
    assert SHOWN in strings(leak["evidence"])
    table_shows_the_name_escaped(run("closewait", "--pid", str(pid), env=env).stdout)


@pytest.mark.parametrize("env", ENCODINGS, ids=["utf8", "ascii"])
def test_sockets_processes_names_the_process_safely(hostile, env):
    pid, _ = hostile
    report = load_json(run("sockets", "--processes", "--pid", str(pid), "--json",
                            env=env).stdout)
    rows = [r for r in report["facts"]["by_process"] if r["pid"] == pid]
    assert rows and rows[0]["command"] == SHOWN
    table_shows_the_name_escaped(run("sockets", "--processes", "--pid", str(pid),
                                     env=env).stdout)


@pytest.mark.parametrize("env", ENCODINGS, ids=["utf8", "ascii"])
def test_all_netns_and_history_with_the_name(hostile, env):
    pid, state = hostile
    label = f"pid:{pid} ({SHOWN})"
    report = load_json(run("check", "--all-netns", "--json", "--state-dir", str(state),
                            env=env).stdout)
    rows = {r["netns"]: r for r in report["facts"]["namespaces"]}
    assert label in rows and rows[label]["status"] != "unknown"
    table = run("check", "--all-netns", "--state-dir", str(state), env=env).stdout
    assert "\x1b" not in table
    data = load_json(run("history", "--state-dir", str(state), "--netns", label, "--json",
                          env=env).stdout)
    assert data["netns"] == label and len(data["runs"]) >= 2
    assert label in data["namespaces"]
    table_shows_the_name_escaped(run("history", "--state-dir", str(state), "--netns", label,
                                     env=env).stdout)


def test_the_command_line_is_data_too(hostile):
    pid, _ = hostile
    report = load_json(run("closewait", "--pid", str(pid), "--json", env={}).stdout)
    leak = next(f for f in report["findings"] if f["id"] == "closewait.leak")
    assert any(text(JUNK_ARG) in s for s in strings(leak["evidence"]))
    out = run("closewait", "--pid", str(pid), env={}).stdout
    assert "\x07" not in out and "\x1b" not in out


def test_nagios_lines_cannot_be_forged(hostile):
    pid, _ = hostile
    out = run("closewait", "--pid", str(pid), "--format", "nagios", env={}).stdout
    lines = out.splitlines()
    assert lines[0].startswith("NETDIAG ")
    assert all(line.startswith("[") for line in lines[1:]), lines
    assert "\x1b" not in out and ON_TERMINAL in out


def test_prometheus_labels_carry_no_raw_escape(hostile):
    """The namespace's label holds the holder's name: escaped as on a terminal, then by the
    exposition format (a backslash doubled), so `cat` or curl of the metrics shows no raw
    escape sequence."""
    pid, _ = hostile
    out = run("check", "--all-netns", "--format", "prometheus", env={}).stdout
    assert "\x1b" not in out and "\x07" not in out
    assert f'netns="pid:{pid} (' + ON_TERMINAL.replace("\\", "\\\\") + ')"' in out
