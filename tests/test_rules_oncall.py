"""Verdicts an on-call review found misleading: each test pins the facts it saw and the
verdict they call for (closewait, timewait.flood, keepalive, buffers)."""

from __future__ import annotations

import socket

from netdiag.collect.census import CensusBuilder
from netdiag.facts import (
    CLOSE_WAIT,
    LISTEN,
    Census,
    Facts,
    ProcessFacts,
    ProcessInfo,
)
from netdiag.model import Severity
from netdiag.rules import closewait

LO = socket.inet_aton("127.0.0.1") + bytes(12)
ANY = bytes(16)

# ---- closewait: sockets still in an accept queue (no inode) --------------------------------


def _census_with_unaccepted(held: int = 60, queued: int = 5) -> Census:
    """`held` CLOSE_WAIT sockets accepted on port 9000 (inodes 1000...), `queued` ones still
    in the accept queue of a listener on 0.0.0.0:8080 that nobody accepts from: ss shows
    them with ino:0."""
    b = CensusBuilder("netlink", (32768, 60999))
    b.add(2, LISTEN, 0, ANY, 8080, ANY, 0, queued, 128, 77)
    b.add(2, LISTEN, 0, ANY, 9000, ANY, 0, 0, 128, 78)
    for i in range(held):
        b.add(2, CLOSE_WAIT, 0, LO, 9000, LO, 40000 + i, 1, 0, 1000 + i)
    for i in range(queued):
        b.add(2, CLOSE_WAIT, 0, LO, 8080, LO, 50000 + i, 1, 0, 0)
    return b.finish()


def _leaky(census: Census) -> Facts:
    procs = ProcessFacts(owners={i: 4242 for i in census.close_wait_inodes},
                         processes={4242: ProcessInfo(4242, "leaky", "leaky", 80, 61)})
    return Facts(census=census, processes=procs)


def test_census_keeps_close_wait_without_inode_apart():
    census = _census_with_unaccepted()
    assert census.by_state["CLOSE_WAIT"] == 65
    assert len(census.close_wait_inodes) == 60
    assert census.close_wait_no_inode == {8080: 5}
    assert len(census.close_wait_no_inode_keys) == 5


def test_closewait_accounts_for_sockets_in_an_accept_queue():
    f = closewait.check(_leaky(_census_with_unaccepted()))[0]
    ev = f.evidence
    # Every CLOSE_WAIT socket is accounted for, and the 5 are not "held by a process".
    assert ev["close_wait"] == 65
    assert (ev["held_by_processes"], ev["unattributed"], ev["in_accept_queue"]) == (60, 0, 5)
    assert ev["held_by_processes"] + ev["unattributed"] + ev["in_accept_queue"] == 65
    [row] = ev["in_accept_queue_by_port"]
    assert (row["local_port"], row["close_wait"]) == (8080, 5)
    assert row["listeners"][0]["address"] == "0.0.0.0"
    assert row["listeners"][0]["accept_queue"] == 5
    assert f.severity is Severity.WARNING  # the 60 held by one process are a leak
    assert "60 held by pid 4242 (leaky) on local port 9000" in f.title
    assert "5 never accepted, in the accept queue of the listener on port 8080" in f.title
    assert "no process holds them" in f.explanation
    assert "backlog.accept_queue_full" in f.recommendation


def test_closewait_interval_keeps_the_unaccepted_ones():
    facts = _leaky(_census_with_unaccepted())
    facts.census_before = _census_with_unaccepted()
    facts.interval = 2.0
    ev = closewait.check(facts)[0].evidence
    assert ev["still_close_wait_after_interval"] == 65
    assert ev["still_in_accept_queue_after_interval"] == 5
    # New queued sockets (other four-tuples) are not "still" there.
    later = _census_with_unaccepted(queued=0)
    b = CensusBuilder("netlink", (32768, 60999))
    for i in range(5):
        b.add(2, CLOSE_WAIT, 0, LO, 8080, LO, 51000 + i, 1, 0, 0)
    later.close_wait_no_inode_keys = b.finish().close_wait_no_inode_keys
    facts.census_before = later
    assert closewait.check(facts)[0].evidence["still_in_accept_queue_after_interval"] == 0


def test_closewait_only_in_an_accept_queue_is_no_descriptor_leak():
    census = _census_with_unaccepted(held=0, queued=5)
    f = closewait.check(Facts(census=census, processes=ProcessFacts()))[0]
    assert f.severity is Severity.INFO
    assert f.evidence["in_accept_queue"] == 5 and f.evidence["unattributed"] == 0
    assert "owner not known" not in f.title
    assert "port 8080" in f.title
    assert "backlog.accept_queue_full" in f.recommendation
    assert "has not called close()" not in f.explanation
    for leak_advice in ("Fix the application named", "restarting the process",
                        "Find the process that holds them"):
        assert leak_advice not in f.recommendation
    # Still there over --interval: nobody accepts from that listener.
    facts = Facts(census=census, processes=ProcessFacts(),
                  census_before=_census_with_unaccepted(held=0, queued=5), interval=2.0)
    f = closewait.check(facts)[0]
    assert "nobody accepts from it" in f.title
    assert f.severity is Severity.INFO

