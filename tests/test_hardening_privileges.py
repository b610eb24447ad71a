"""Unprivileged runs: what a normal user can check, it checks; what it cannot, it lists.
Each run uses a user id no process on the host has (setpriv), so the assertions about
unreadable processes hold whatever else runs here."""

from __future__ import annotations

import os
import random
import site
import subprocess
import sys

import pytest

from netdiag.facts import Facts, ProcessFacts
from netdiag.metrics import samples

from conftest import REPO, NetNS, load_json, require_root


def _used_uids() -> set[int]:
    uids = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                uids.add(os.stat(f"/proc/{entry}").st_uid)
            except OSError:
                pass
    return uids


def _python() -> str:
    """An interpreter any user may execute (the venv's may live under /root)."""
    for exe in (sys.executable, "/usr/bin/python3"):
        probe = subprocess.run(["setpriv", "--reuid", "65534", "--regid", "65534",
                                "--clear-groups", exe, "-c", "pass"], capture_output=True)
        if probe.returncode == 0:
            return exe
    pytest.fail("no Python interpreter an unprivileged user can execute")


@pytest.fixture
def stranger():
    """Run netdiag as a fresh, unused user id: no process of its own, no privilege."""
    require_root("switching to an unprivileged user id")
    used = _used_uids()
    uid = next(u for u in (random.randrange(61000, 65000) for _ in range(100))
               if u not in used)
    python = _python()
    env = dict(os.environ, PYTHONPATH=":".join([str(REPO), *site.getsitepackages()]),
               HOME="/tmp", NETDIAG_NO_PROGRESS="1")

    def run(*args: str) -> subprocess.CompletedProcess:
        proc = subprocess.run(["setpriv", "--reuid", str(uid), "--regid", str(uid),
                               "--clear-groups", python, "-m", "netdiag", *args],
                              capture_output=True, text=True, timeout=300, env=env, cwd="/")
        assert "Traceback" not in proc.stderr, proc.stderr
        return proc

    return run


def test_all_netns_checks_its_own_namespace_and_lists_the_others(stranger):
    with NetNS() as ns:  # a namespace the user cannot enter
        proc = stranger("check", "--all-netns", "--json")
        report = load_json(proc.stdout)
    rows = {r["netns"]: r for r in report["facts"]["namespaces"]}
    assert rows["default"]["status"] != "unknown" and rows["default"]["sockets"] is not None
    assert ns.name in report["facts"]["not_entered"]
    assert ns.name not in rows
    messages = [e["message"] for e in report["errors"] if e["collector"] == "netns"]
    assert any(m.startswith(f"{ns.name}: permission denied") for m in messages), messages
    assert report["status"] != "unknown" and proc.returncode in (0, 1, 2)
    sev = {f["severity"] for f in report["findings"]}
    assert proc.returncode == (2 if "critical" in sev else 1 if "warning" in sev else 0)


def test_processes_collector_is_down_when_no_fd_table_was_readable(stranger):
    proc = stranger("check", "--format", "prometheus")
    assert proc.returncode in (0, 1, 2), proc.stderr
    assert 'netdiag_collector_up{collector="processes",netns="default"} 0' in proc.stdout
    assert 'netdiag_collector_up{collector="sockets",netns="default"} 1' in proc.stdout
    report = load_json(stranger("check", "--json").stdout)
    messages = [e["message"] for e in report["errors"] if e["collector"] == "processes"]
    assert messages and "could not be read" in messages[0]


def test_entering_a_namespace_is_one_line(stranger):
    with NetNS() as ns:
        proc = stranger("check", "--netns", ns.name)
    assert proc.returncode == 3
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("netdiag: error: permission denied")


@pytest.mark.parametrize("scanned,unreadable,up", [(0, 40, 0), (3, 40, 1), (0, 0, 1)])
def test_collector_up_for_processes(scanned, unreadable, up):
    facts = Facts(processes=ProcessFacts(scanned=scanned, unreadable=unreadable))
    got = {dict(s.labels)["collector"]: s.value for s in samples(facts, [], [], "ok", "default")
           if s.name == "netdiag_collector_up"}
    assert got["processes"] == up


def test_probe_list_as_a_user_says_tracefs_is_not_readable_not_unmounted(stranger):
    """tracefs is mounted with mode 0700: an unprivileged run must not advise mounting it."""
    if not os.path.isdir("/sys/kernel/tracing/events"):
        pytest.fail("tracefs is not mounted here (make test mounts it)")
    proc = stranger("probe", "list", "--json")
    doc = load_json(proc.stdout)
    why_not = " ".join(p["why_not"] or "" for p in doc["probes"])
    assert "mount -t tracefs" not in proc.stdout, why_not[:1000]
    assert "tracefs is not mounted" not in why_not
    assert "cannot be read by this user" in why_not and "root" in why_not


def test_unreadable_processes_are_unknown_not_below_their_limits(stranger):
    proc = stranger("sockets", "--json")
    report = load_json(proc.stdout)
    fin = next(f for f in report["findings"] if f["id"] == "sockets.fd_limit")
    assert "well below" not in fin["title"] and "could not be read" in fin["title"]
