"""Trial 2 items on the real kernel, without probes, each in a fresh namespace with the real
CLI: `why hang --port` reads the port of a connection whose data is unacknowledged from the
socket table (item 4), and a slow reader on loopback is the receiver's window (item 3).
The verdict logic itself is tested on hand-built facts in test_trial2_units.py."""

from __future__ import annotations

import subprocess
import sys

from test_why import _drop_port

from conftest import HERE, NetNS, run_json

WHYLOAD = HERE / "helpers" / "whyload.py"


def _load(ns: NetNS, mode: str, *args: str) -> subprocess.Popen:
    p = subprocess.Popen(["ip", "netns", "exec", ns.name, sys.executable, str(WHYLOAD), mode,
                          *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    ns.procs.append(p)
    ready = p.stdout.readline()
    assert ready.startswith("READY"), (ready, p.stderr.read() if p.poll() is not None else "")
    return p


def _causes(report: dict) -> dict[str, dict]:
    return {f["id"]: f for f in report["findings"]}


def _advice(report: dict) -> str:
    return " ".join(f"{f['title']} {f['recommendation']} {f.get('would_tell') or ''}"
                    for f in report["findings"]) + " " + str(report["facts"]["next_step"])


def test_hang_reads_the_scoped_port_from_the_socket_table(netns):
    """A connection to 9941 whose packets nftables drops after the client wrote: the client's
    socket is on the retransmit timer toward 9941. Without probes, `why hang --port 9941`
    says so (likely, naming the port), ranks it first, and keepalive is not likely; on a port
    with no connection, keepalive is ruled out."""
    p = _load(netns, "unacked", "--port", "9941", "--seconds", "2")
    _drop_port(netns, 9941)
    p.stdin.write("go\n")
    p.stdin.flush()
    done = p.stdout.readline()
    assert done.startswith("DONE"), done
    report, _rc = run_json("why", "hang", "--port", "9941", netns=netns.name)
    first = report["findings"][0]
    assert first["id"] == "why.hang.unacked_retransmitting", [f["id"] for f in
                                                              report["findings"]]
    assert first["verdict"] == "likely" and "9941" in first["title"], first
    assert "not known without" not in first["title"]
    assert _causes(report)["why.hang.keepalive_defaults"]["verdict"] != "likely"
    assert "errors happen" not in _advice(report)
    other, _rc = run_json("why", "hang", "--port", "9942", netns=netns.name)
    ka = _causes(other)["why.hang.keepalive_defaults"]
    assert ka["verdict"] == "ruled_out" and "no established connection" in ka["title"]
    assert _causes(other)["why.hang.unacked_retransmitting"]["verdict"] == "ruled_out"


def test_a_slow_reader_on_loopback_is_the_receive_window(netns):
    """A reader taking 16 KB every 10 ms from a writer on loopback: the writer waits on the
    receiver's window. `why slow --port` names it (no "loopback: nothing to fill" dismissal),
    and with --interval the application limit is not "one sample"."""
    _load(netns, "slowread", "--port", "9943", "--seconds", "40", "--hold", "5")
    report, _rc = run_json("why", "slow", "--port", "9943", netns=netns.name)
    cause = _causes(report)["why.slow.receive_window"]
    assert cause["verdict"] in ("confirmed", "likely"), cause
    assert cause["evidence"]["flows"] and "slower than the writer" in cause["title"]
    assert "errors happen" not in _advice(report)
    timed, _rc = run_json("why", "slow", "--port", "9943", "--interval", "2",
                          netns=netns.name)
    app = _causes(timed)["why.slow.application_limited"]
    assert "one sample" not in app["title"] and "--interval 10" not in _advice(timed), app
    assert _causes(timed)["why.slow.receive_window"]["verdict"] in ("confirmed", "likely")
