"""Failures are contained and said in one line: a failing rule or collector, a bug, a signal,
a closed or failing output, a terminal that cannot print the text, and every option value
the issue found breaking the CLI. The real CLI runs in a subprocess each time."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from netdiag.rules import TOPICS

from conftest import HERE, HOSTS, REPO, load_json, run_netdiag

BUSY = str(HOSTS / "linux-6.18-busy")
LEGACY = str(HOSTS / "linux-4.19-layout")
INJECT = HERE / "helpers" / "inject.py"
F_SETPIPE_SZ = 1031  # fcntl.h (Linux)


def _env(**extra: str) -> dict:
    return dict(os.environ, PYTHONPATH=str(REPO), COLUMNS="100", **extra)


def run_injected(faults: list[str], *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(INJECT), *faults, "--", *args],
                          capture_output=True, text=True, timeout=120, env=_env(**env),
                          cwd="/")


def one_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("netdiag: "), stderr
    return lines[0]


def exit_code_matches(report: dict, rc: int) -> None:
    """The exit code follows the findings: 1 only with a warning, 2 only with a critical."""
    sev = {f["severity"] for f in report["findings"]}
    expected = 3 if report["status"] == "unknown" else (
        2 if "critical" in sev else 1 if "warning" in sev else 0)
    assert rc == expected, (rc, report["status"], sev)


# ---- contained failures -------------------------------------------------------------------

def test_a_failing_rule_leaves_the_rest_of_the_report():
    clean = load_json(run_netdiag("check", "--root", BUSY, "--json").stdout)
    proc = run_injected(["rule:timewait"], "check", "--root", BUSY, "--json")
    report = load_json(proc.stdout)
    assert "Traceback" not in proc.stderr
    assert {"collector": "rule timewait", "message": "KeyError: 'injected'"} in report["errors"]
    timewait_ids = {s.id for s in TOPICS["timewait"].specs}
    assert timewait_ids <= set(report["not_judged"])
    # Every other topic's findings are intact; none of timewait's is invented.
    kept = [f for f in clean["findings"] if f["topic"] != "timewait"]
    assert report["findings"] == kept
    assert not any(f["topic"] == "timewait" for f in report["findings"])
    exit_code_matches(report, proc.returncode)


def test_exit_1_only_with_a_warning_finding():
    # The busy fixture's warnings come from timewait and ports; with both rules failing the
    # report has no warning left, so the exit code must not say warning.
    clean = load_json(run_netdiag("check", "--root", BUSY, "--json").stdout)
    warned = {f["topic"] for f in clean["findings"] if f["severity"] == "warning"}
    assert warned, "the fixture must give warnings for this test to mean something"
    proc = run_injected([f"rule:{t}" for t in sorted(warned)], "check", "--root", BUSY,
                        "--json")
    report = load_json(proc.stdout)
    assert not any(f["severity"] in ("warning", "critical") for f in report["findings"])
    assert proc.returncode == 0 and report["status"] == "ok"
    assert {e["collector"] for e in report["errors"]} >= {f"rule {t}" for t in warned}


def test_every_rule_failing_is_unknown_and_says_why():
    proc = run_injected(["rules:all"], "check", "--root", BUSY, "--json")
    report = load_json(proc.stdout)
    assert proc.returncode == 3 and report["status"] == "unknown"
    assert report["findings"] == []
    line = one_line(proc.stderr)
    assert line.startswith("netdiag: could not judge: ") and "KeyError" in line
    all_ids = {s.id for t in TOPICS.values() for s in t.specs}
    probe_only = {s.id for t in ("wakeups", "drops", "resets", "retrans")
                  for s in TOPICS[t].specs}
    assert all_ids - probe_only <= set(report["not_judged"])


@pytest.mark.parametrize("collector", ["counters", "sockstat", "sysctl"])
def test_a_failing_collector_is_an_error_entry(collector):
    proc = run_injected([f"collector:{collector}"], "check", "--root", BUSY, "--json")
    report = load_json(proc.stdout)
    assert "Traceback" not in proc.stderr
    assert {"collector": collector, "message": "RuntimeError: injected"} in report["errors"]
    assert report["status"] != "unknown" and report["facts"] is not None
    exit_code_matches(report, proc.returncode)
    if collector == "counters":  # the counter findings are not judged, not guessed
        assert "backlog.listen_overflow" in report["not_judged"]
        assert not any(f["id"] == "backlog.listen_overflow" for f in report["findings"])


def test_the_socket_table_failing_is_unknown_in_every_format():
    for fmt in ("json", "table", "prometheus", "nagios"):
        proc = run_injected(["collector:sockets"], "check", "--root", BUSY, "--format", fmt)
        assert proc.returncode == 3, (fmt, proc.stderr)
        assert one_line(proc.stderr).startswith("netdiag: could not judge: sockets: "
                                                "RuntimeError: injected;")
        if fmt == "json":
            assert load_json(proc.stdout)["status"] == "unknown"
        if fmt == "nagios":
            assert proc.stdout.startswith("NETDIAG UNKNOWN - could not judge")
        if fmt == "prometheus":
            assert 'netdiag_collector_up{collector="sockets",netns="snapshot"} 0' in proc.stdout


def test_an_internal_error_is_one_line_and_exit_3():
    proc = run_injected(["internal"], "check", "--root", BUSY)
    assert proc.returncode == 3 and proc.stdout == ""
    assert one_line(proc.stderr) == ("netdiag: internal error: ValueError: injected "
                                     "(NETDIAG_DEBUG=1 shows the traceback)")
    debug = run_injected(["internal"], "check", "--root", BUSY, NETDIAG_DEBUG="1")
    assert debug.returncode == 3
    assert debug.stderr.startswith("Traceback (most recent call last):")
    assert "in boom" in debug.stderr  # the injected function, where the error was raised
    assert debug.stderr.strip().splitlines()[-1].startswith("netdiag: internal error: ")


# ---- signals ---------------------------------------------------------------------------

def _wait_sleeping(proc: subprocess.Popen, timeout: float = 60) -> None:
    """Until the process sleeps in its --interval wait (wchan: the nanosleep of time.sleep)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        try:
            wchan = Path(f"/proc/{proc.pid}/wchan").read_text()
        except OSError:
            wchan = ""
        if "nanosleep" in wchan:
            return
        time.sleep(0.05)
    raise AssertionError("netdiag never reached its --interval wait")


@pytest.mark.parametrize("sig,word", [(signal.SIGINT, "interrupted"),
                                      (signal.SIGTERM, "terminated")])
def test_a_signal_during_interval_is_one_line_and_exit_3(sig, word):
    proc = subprocess.Popen([sys.executable, "-m", "netdiag", "check", "--root", BUSY,
                             "--interval", "5", "--json"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env(), cwd="/")
    try:
        _wait_sleeping(proc)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 3
    assert one_line(err) == f"netdiag: {word}"
    assert out == ""  # no half report


# ---- closed and failing output --------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["json", "table", "prometheus"])
def test_a_reader_that_goes_away_is_one_line_and_exit_3(fmt):
    # A 4 KiB pipe and a reader that takes 100 bytes and closes: the report (7 to 15 KiB
    # in these formats; Nagios output is too small to ever fill a pipe) cannot fit, so the
    # write really meets EPIPE.
    r, w = os.pipe()
    fcntl.fcntl(w, F_SETPIPE_SZ, 4096)
    proc = subprocess.Popen([sys.executable, "-m", "netdiag", "check", "--root", BUSY,
                             "--format", fmt], stdout=w,
                            stderr=subprocess.PIPE, text=True, env=_env(), cwd="/")
    os.close(w)
    first = os.read(r, 100)
    os.close(r)
    _, err = proc.communicate(timeout=120)
    assert first
    assert proc.returncode == 3
    assert one_line(err) == "netdiag: output closed before the report was complete (broken pipe)"


def _large_snapshot(tmp_path: Path, sockets: int = 3000) -> Path:
    """The busy fixture's /proc with a /proc/net/tcp of many distinct ports and peers (and no
    sockdiag.bin): `sockets --top 1000` prints far more than a pipe holds."""
    import shutil

    root = tmp_path / "large"
    shutil.copytree(BUSY, root)
    (root / "sockdiag.bin").unlink()
    lines = ["  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt"
             "   uid  timeout inode"]
    for i in range(sockets):
        peer = f"{(10 << 24) + i:08X}"[::-1]  # any distinct address will do
        lines.append(f"{i:4d}: 0100007F:{20000 + i:04X} {peer}:{30000 + i:04X} 01 "
                     f"00000000:00000000 00:00000000 00000000     0        0 {100000 + i} 1 "
                     "0000000000000000 20 4 0 10 -1")
    (root / "proc/net/tcp").write_text("\n".join(lines) + "\n")
    (root / "proc/net/tcp6").write_text(lines[0] + "\n")
    return root


def test_head_dash_1_on_a_large_report(tmp_path):
    root = _large_snapshot(tmp_path)
    cmd = (f"{sys.executable} -m netdiag sockets --root {root} --top 1000 --json | head -1; "
           'echo "rc=${PIPESTATUS[0]}"')
    proc = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=120,
                          env=_env(), cwd="/")
    assert proc.stdout.splitlines() == ["{", "rc=3"]
    assert one_line(proc.stderr) == ("netdiag: output closed before the report was complete "
                                     "(broken pipe)")
    full = run_netdiag("sockets", "--root", str(root), "--top", "1000", "--json")
    assert len(full.stdout) > 2 * 65536  # more than the pipe holds: EPIPE was real


@pytest.mark.parametrize("args", [["check", "--root", BUSY, "--json"], ["explain", "timewait"],
                                  ["--version"], ["probe", "list"]])
def test_stdout_closed_before_start(args):
    cmd = [sys.executable, "-m", "netdiag", *args]
    proc = subprocess.run(["bash", "-c", 'exec "$@" >&-', "-", *cmd], capture_output=True,
                          text=True, timeout=120, env=_env(), cwd="/")
    assert proc.returncode == 3
    assert one_line(proc.stderr) == ("netdiag: standard output is closed; nothing was written "
                                     "(use --output FILE)")


def test_stdout_closed_but_output_file_given(tmp_path):
    target = tmp_path / "r.json"
    cmd = [sys.executable, "-m", "netdiag", "check", "--root", BUSY, "--json", "--output",
           str(target)]
    proc = subprocess.run(["bash", "-c", 'exec "$@" >&- 2>&-', "-", *cmd], timeout=120,
                          env=_env(), cwd="/", capture_output=True)
    assert proc.returncode == 1  # the busy fixture warns
    assert load_json(target.read_text())["status"] == "warning"


@pytest.mark.parametrize("target", ["/dev/stdout", "/dev/fd/1", "/proc/self/fd/1"])
def test_output_to_a_closed_stdout_is_refused(target):
    """stdout closed, then --output naming it: netdiag holds fd 1 on /dev/null, and the
    report must not vanish there with exit 0."""
    cmd = [sys.executable, "-m", "netdiag", "check", "--root", BUSY, "--json", "--output",
           target]
    proc = subprocess.run(["bash", "-c", 'exec "$@" >&-', "-", *cmd], capture_output=True,
                          text=True, timeout=120, env=_env(), cwd="/")
    assert proc.returncode == 3
    assert one_line(proc.stderr) == (f"netdiag: error: --output {target}: standard output is "
                                     "closed; nothing was written")


@pytest.mark.parametrize("args", [["check", "--root", BUSY], ["explain", "timewait"]])
def test_a_full_disk_behind_stdout(args):
    with open("/dev/full", "w") as full:
        proc = subprocess.run([sys.executable, "-m", "netdiag", *args], stdout=full,
                              stderr=subprocess.PIPE, text=True, timeout=120, env=_env(),
                              cwd="/")
    assert proc.returncode == 3
    assert "No space left on device" in one_line(proc.stderr)


@pytest.mark.parametrize("fmt", ["table", "json", "prometheus", "nagios"])
def test_an_ascii_terminal_never_crashes(fmt):
    proc = run_netdiag("check", "--root", BUSY, "--format", fmt,
                       env={"PYTHONIOENCODING": "ascii", "LC_ALL": "C"})
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout
    proc.stdout.encode("ascii")  # escapes, never an encoding error
    # netdiag's own symbols have ASCII stand-ins: \xNN is left to undecodable system bytes
    # (the snapshot has none), \uNNNN to system text the terminal cannot show.
    if fmt != "json":  # JSON writes \uNNNN escapes of its own, which decode back
        assert "\\x" not in proc.stdout and "\\u" not in proc.stdout, proc.stdout[:400]
    if fmt == "table":
        assert proc.stdout.startswith("netdiag . ")
    if fmt == "nagios":
        assert "..." in proc.stdout.split(" | ")[0]  # the summary was cut


def test_ascii_fallbacks_are_netdiags_own_symbols_only():
    import io

    from netdiag.render._safe import clean, register_fallback

    buf = io.BytesIO()
    out = io.TextIOWrapper(buf, encoding="ascii", errors=register_fallback())
    out.write(clean("netdiag · vm … ─ ✓ ≥ 2 × 3 " + os.fsdecode(b"\xff") + " caf\u00e9 \u4e2d"))
    out.flush()
    assert buf.getvalue().decode("ascii") == \
        "netdiag . vm ... - ok >= 2 x 3 \\xff caf\\u00e9 \\u4e2d"


# ---- option values the issue found breaking the CLI -----------------------------------------

def _capture(tmp_path: Path, data: bytes) -> str:
    import shutil

    root = tmp_path / "snap"
    shutil.copytree(BUSY, root)
    (root / "sockdiag.bin").write_bytes(data)
    return str(root)


BAD_VALUES = [
    (["check", "--interval", "nan"], "--interval nan: must be a finite number"),
    (["check", "--interval", "inf"], "--interval inf: must be a finite number"),
    (["check", "--interval", "-inf"], "--interval"),
    (["check", "--interval", "1e400"], "finite"),
    (["check", "--interval", "3601"], "between 0 and 3600"),
    (["check", "--probe-seconds", "nan"], "--probe-seconds nan: must be a finite number"),
    (["probe", "states", "--duration", "inf"], "--duration inf: must be a finite number"),
    (["probe", "states", "--interval", "nan"], "--interval nan: must be a finite number"),
    (["serve", "--timeout", "inf"], "--timeout inf: must be a finite number"),
    (["serve", "--min-interval", "nan"], "--min-interval nan: must be a finite number"),
    (["serve", "--listen", "127.0.0.1:65536"], "port must be between 1 and 65535"),
    (["serve", "--listen", "127.0.0.1:0"], "port must be between 1 and 65535"),
    (["serve", "--listen", "::1:9877"], "brackets"),
    (["serve", "--listen", "nonsense"], "expected ADDR:PORT"),
    (["check", "--output", ""], "--output: empty path"),
    (["check", "--root", ""], "--root: empty path"),
    (["check", "--root", "a" * 5000], "--root: path too long"),
    (["check", "--output", "/tmp/" + "b" * 300], "--output: path too long"),
    (["check", "--state-dir", ""], "--state-dir: empty path"),
    (["history", "--state-dir", ""], "--state-dir: empty path"),
    (["history", "--state-dir", "c" * 5000], "--state-dir: path too long"),
    (["history", "--netns", "n" * 5000], "--netns: too long"),
    (["history", "--last", "0"], "'--last'"),
    (["sockets", "--top", "0"], "'--top'"),
    (["sockets", "--top", "99999999999999999999999"], "'--top'"),
    (["sockets", "--port", "65536"], "'--port'"),
    (["sockets", "--port", "-1"], "'--port'"),
    (["check", "--pid", "0"], "not a process id"),
    (["check", "--pid", "99999999999999999999"], "not a process id"),
    (["check", "--netns", "x" * 300], "--netns"),
    (["check", "--netns", "../etc"], "invalid namespace name"),
    (["explain", "x" * 5000], "TOPIC_OR_FINDING_ID: too long"),
    (["explain", "time\x1b[2Jwait"], "unknown topic, finding id or concept"),
    (["check", "--probes", "states"], "--probes needs --probe-seconds"),
    (["check", "--probe-seconds", "1", "--probes", "nope"], "unknown probe(s) nope"),
]


@pytest.mark.parametrize("args,needle", BAD_VALUES, ids=[" ".join(a)[:40] for a, _ in
                                                           BAD_VALUES])
def test_bad_option_values_are_one_line_and_exit_3(args, needle):
    proc = run_netdiag(*args, timeout=60)
    assert proc.returncode == 3, (proc.returncode, proc.stderr)
    line = one_line(proc.stderr)
    assert line.startswith("netdiag: error:") and needle in line, line
    assert "x" * 300 not in line and len(line) < 1200  # a long value is not echoed whole
    assert "\x1b" not in line


@pytest.mark.parametrize("data,needle", [
    (b"", None),  # an empty capture is an empty socket table, not an error
    (b"\x05\x00", "truncated"),
    (b"\xff\xff\xff\xff" + b"\0" * 64, "more than a sock_diag read"),
    ((40).to_bytes(4, "little") + b"\0" * 40, "message length 0"),
    ((16).to_bytes(4, "little") + (16).to_bytes(4, "little") + (20).to_bytes(2, "little")
     + b"\0" * 10, "too short"),
    (os.urandom(1 << 16), None),
])
def test_a_crafted_capture_is_one_error_entry(tmp_path, data, needle):
    root = _capture(tmp_path, data)
    proc = run_netdiag("sockets", "--root", root, "--json", timeout=60)
    assert "Traceback" not in proc.stderr
    report = load_json(proc.stdout)
    errs = [e["message"] for e in report["errors"] if e["collector"] == "sockets"]
    if data == b"":
        assert proc.returncode == 0 and report["facts"]["summary"]["total"] == 0
        return
    assert proc.returncode == 3 and len(errs) == 1 and errs[0].startswith("/sockdiag.bin")
    if needle:
        assert needle in errs[0], errs
    assert one_line(proc.stderr).startswith("netdiag: could not judge: sockets: /sockdiag.bin")


# ---- a plain checkout, without the editable install's package mapping ----------------------

def _plain_checkout(*args: str) -> subprocess.CompletedProcess:
    """The CLI from the repository alone: -S skips site, so no .pth file (the editable
    install's finder) is processed; dependencies come from the site-packages directory."""
    import site

    env = dict(os.environ, PYTHONPATH=":".join([str(REPO), *site.getsitepackages()]),
               COLUMNS="100")
    return subprocess.run([sys.executable, "-S", "-m", "netdiag", *args], capture_output=True,
                          text=True, timeout=300, env=env, cwd="/")


def test_probe_sources_are_found_from_a_plain_checkout():
    import site

    env = dict(os.environ, PYTHONPATH=":".join([str(REPO), *site.getsitepackages()]))
    out = subprocess.run([sys.executable, "-S", "-c",
                          "import sys; from netdiag.ebpf.runtime import probe_sources; "
                          "p = probe_sources(); print(p); "
                          "print(any('editable' in type(f).__name__.lower() or "
                          "'__editable__' in str(f) for f in sys.meta_path))"],
                         capture_output=True, text=True, env=env, cwd="/", check=True)
    where, editable = out.stdout.split()
    assert editable == "False"  # really without the editable mapping
    assert Path(where) == REPO / "probes" and (REPO / "probes" / "common.h").is_file()
    report = load_json(_plain_checkout("check", "--root", BUSY, "--json").stdout)
    assert report["status"] == "warning"


def test_a_probe_runs_from_a_plain_checkout():
    from conftest import require_root

    require_root("loading an eBPF probe")
    proc = _plain_checkout("probe", "states", "--duration", "1", "--json")
    assert proc.returncode in (0, 1, 2), proc.stderr
    report = load_json(proc.stdout)
    assert not [e for e in report["errors"] if e["collector"] == "probes"], report["errors"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_the_exporter_stops_cleanly(sig):
    """A service stop is not a failure: serve exits 0 on SIGTERM or SIGINT, even one that
    arrives right after it said it listens."""
    import socket as sk

    with sk.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "netdiag", "serve", "--listen",
                             f"127.0.0.1:{port}"], stderr=subprocess.PIPE, text=True,
                            env=_env(), cwd="/")
    try:
        assert "listening on" in proc.stderr.readline()
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # It says that it stops (one log line), and nothing else: no traceback, no "interrupted".
    assert proc.returncode == 0 and "Traceback" not in err, err
    assert [line for line in err.splitlines() if "stopping" not in line] == [], err
