"""A process near its fd limit is its own namespace's finding: /proc lists every process of
the host, so the rule must not page every other namespace (nor `default`) for it. And a run
that could not read processes says their fd use is unknown, never that it is fine."""

from __future__ import annotations

import subprocess
import sys

import pytest

from netdiag.facts import Facts, FileNr, ProcessFacts, ProcessInfo
from netdiag.model import Severity
from netdiag.rules import closewait, sockets

from conftest import NetNS, finding, require_root, run_json

HOG = """
import resource, socket, sys, time
resource.setrlimit(resource.RLIMIT_NOFILE, (32, 32))
keep = []
srv = socket.socket(); srv.bind(("127.0.0.1", 9731)); srv.listen(64); keep.append(srv)
while True:
    try:
        keep.append(socket.socket())
    except OSError:
        break
print("READY", len(keep), flush=True)
time.sleep(120)
"""


def _hog(ns: NetNS) -> subprocess.Popen:
    p = subprocess.Popen(["ip", "netns", "exec", ns.name, sys.executable, "-c", HOG],
                         stdout=subprocess.PIPE, text=True)
    ns.procs.append(p)
    line = p.stdout.readline()
    assert line.startswith("READY"), line
    return p


def _near(f: dict | None) -> list[int]:
    return [r["pid"] for r in f["evidence"]["processes_near_limit"]] if f else []


def test_a_process_at_its_fd_limit_is_judged_in_its_own_namespace_only():
    require_root("network namespaces")
    with NetNS() as busy, NetNS() as empty:
        hog = _hog(busy)
        mine, rc = run_json("check", netns=busy.name)
        fin = finding(mine, "sockets.fd_limit")
        assert fin["severity"] == "critical" and f"pid {hog.pid} " in fin["title"]
        assert rc == 2
        # check lists findings that are not ok: in the empty namespace, none about the hog.
        other, _ = run_json("sockets", netns=empty.name)
        fin = finding(other, "sockets.fd_limit")
        assert fin["severity"] == "ok" and hog.pid not in _near(fin)
        assert f"pid {hog.pid} " not in fin["title"]
        assert fin["evidence"]["near_limit_in_other_namespaces"] >= 1
        # --all-netns: one finding about the hog, labelled with its own namespace.
        every, _ = run_json("check", "--all-netns")
        hits = [f for f in every["findings"]
                if f["id"] == "sockets.fd_limit" and hog.pid in _near(f)]
        assert [f["netns"] for f in hits] == [busy.name]
        # why EMFILE in the empty namespace does not blame the hog.
        why, _ = run_json("why", "EMFILE", netns=empty.name)
        assert f"pid {hog.pid} " not in str(why)


def _facts(unreadable=0, netns=None, judged=7):
    p = ProcessFacts(processes={9: ProcessInfo(9, "srv", "", 31, 20, 32, 32,
                                               holds_sockets=True, netns=netns)},
                     unreadable=unreadable, scanned=3, netns_inode=judged)
    return Facts(processes=p, file_nr=FileNr(100, 10**6))


def test_fd_limit_counts_only_the_judged_namespaces_processes():
    assert sockets.check(_facts(netns=7))[0].severity is Severity.CRITICAL
    elsewhere = sockets.check(_facts(netns=8))[0]
    assert elsewhere.severity is Severity.OK and "pid 9" not in elsewhere.title
    assert elsewhere.evidence["near_limit_in_other_namespaces"] == 1
    # Namespace not known (a snapshot, or not readable): counted, as before.
    assert sockets.check(_facts(netns=None))[0].severity is Severity.CRITICAL


def test_unreadable_processes_are_unknown_not_fine():
    f = _facts(unreadable=94, netns=8)
    got = sockets.check(f)[0]
    assert "well below" not in got.title and "94 of 97 processes could not be read" \
        in got.title
    assert "root" in got.recommendation


@pytest.mark.parametrize("holders", [{}, None])
def test_closewait_without_a_known_holder_does_not_point_to_one(holders):
    from netdiag.facts import Census

    census = Census(source="netlink", by_state={"CLOSE_WAIT": 3},
                    close_wait_inodes={11: 80, 12: 80, 13: 80})
    procs = ProcessFacts(owners=holders or {}, unreadable=50) if holders is not None else None
    got = closewait.check(Facts(census=census, processes=procs))[0]
    assert "named in the evidence" not in got.recommendation
    assert "as root" in got.recommendation
