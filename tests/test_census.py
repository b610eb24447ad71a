"""The socket census: recorded netlink replies, /proc/net/tcp, and the bounded counters."""

from __future__ import annotations

import json
import struct

import pytest

from netdiag.collect.census import CensusBuilder, TopCounter
from netdiag.collect.sockets import (
    _HDR,
    NLMSG_ERROR,
    NetlinkError,
    decode_proc_address,
    parse_chunk,
    proc_census,
    read_census,
    replay_census,
)
from netdiag.context import Context


def test_recorded_netlink_capture_matches_what_was_seen(host_root):
    root = host_root("linux-6.18-busy")
    meta = json.loads((root / "meta.json").read_text())  # not netdiag output
    b = CensusBuilder("netlink", (40000, 40999))
    replay_census(str(root / "sockdiag.bin"), b)
    census = b.finish()
    assert census.by_state == meta["sockets_by_state"]
    assert census.by_state["TIME_WAIT"] == 480 and census.by_state["CLOSE_WAIT"] == 12
    assert sum(census.by_family.values()) == census.total
    assert census.by_family["ipv6"] == 30 + 1  # the ::1 churn's TIME_WAIT and its listener
    ports = sorted({lst.port for lst in census.listeners})
    assert ports == [8080, 9000, 9001, 40100]
    listener = next(lst for lst in census.listeners if lst.port == 8080)
    assert listener.backlog == 4096  # sock_diag Send-Q of a listener is its backlog limit
    # Client side of the churn: TIME_WAIT toward 127.0.0.1:9000 from ephemeral ports.
    assert dict(census.timewait_by_destination.items)[("127.0.0.1", "127.0.0.1", 9000)] == 450
    assert dict(census.timewait_by_destination.items)[("::1", "::1", 9001)] == 30
    assert census.timewait_roles == {"client": 480, "server": 0, "other": 0}
    assert census.close_wait_eof_unread == 12 and census.close_wait_unread == 0
    assert len(census.close_wait_inodes) == 12
    assert set(census.close_wait_inodes.values()) == {8080}


def test_netlink_and_proc_agree_on_the_same_snapshot(host_root):
    root = host_root("linux-6.18-busy")
    a = CensusBuilder("netlink", (40000, 40999))
    replay_census(str(root / "sockdiag.bin"), a)
    b = CensusBuilder("/proc/net/tcp", (40000, 40999))
    assert proc_census(Context(root=root), b) == []
    ca, cb = a.finish(), b.finish()
    assert ca.by_state == cb.by_state
    assert ca.by_family == cb.by_family
    assert dict(ca.by_destination.items) == dict(cb.by_destination.items)
    assert dict(ca.by_peer.items) == dict(cb.by_peer.items)
    assert ca.close_wait_inodes == cb.close_wait_inodes


def test_proc_tcp_4x_with_a_truncated_line(host_root):
    census, details, warnings = read_census(Context(root=host_root("linux-4.19-layout")),
                                            (32768, 60999))
    assert details is None
    assert census.source == "/proc/net/tcp"
    assert census.by_state == {"LISTEN": 3, "ESTABLISHED": 2, "TIME_WAIT": 2, "CLOSE_WAIT": 1}
    assert census.skipped_lines == 1
    assert warnings == ["/proc/net/tcp: skipped 1 malformed line(s) (line 7)"]
    peers = {k[0] for k, _ in census.by_peer.items}
    assert "10.0.0.9" in peers  # IPv4-mapped IPv6 shown as IPv4
    assert dict(census.timewait_by_destination.items) == {("10.0.0.10", "10.0.0.5", 5432): 2}
    assert census.timers.get("timewait") == 2 and census.timers.get("keepalive") == 2


def test_decode_proc_address():
    assert decode_proc_address("0100007F")[:4] == bytes([127, 0, 0, 1])
    six = decode_proc_address("00000000000000000000000001000000")
    assert six == bytes(15) + b"\x01"  # ::1


def test_top_counter_stays_bounded_and_keeps_heavy_hitters():
    tc = TopCounter(capacity=16)
    for i in range(5000):
        key = "heavy" if i % 3 == 0 else f"k{i}"
        tc.counts[key] = tc.counts.get(key, 0) + 1
        if i % 50 == 0:
            tc.maybe_prune()
    tc.maybe_prune()
    assert len(tc.counts) <= 32 + 50
    res = tc.result(5)
    assert res.items[0][0] == "heavy" and res.items[0][1] >= 1600
    assert res.approximate and res.pruned > 0
    exact = TopCounter(capacity=16)
    exact.counts.update({"a": 3, "b": 1})
    assert not exact.result(5).approximate


def test_netlink_error_message_raises():
    msg = _HDR.pack(36, NLMSG_ERROR, 0, 1, 0) + struct.pack("=i", -2) + bytes(16)
    buf = bytearray(msg) + bytearray(200)
    with pytest.raises(NetlinkError) as exc:
        parse_chunk(buf, len(msg), CensusBuilder("netlink", None))
    assert exc.value.code == 2


def test_state_and_port_filters(host_root):
    root = host_root("linux-6.18-busy")
    b = CensusBuilder("netlink", (40000, 40999), states={8}, port=8080)
    replay_census(str(root / "sockdiag.bin"), b)
    assert b.finish().by_state == {"CLOSE_WAIT": 12}
