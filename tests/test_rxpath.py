"""Receive-path and per-connection parsers on recorded and reconstructed samples."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netdiag.collect.procfs import parse_snmp6, read_counters
from netdiag.collect.rxpath import (
    ksoftirqd_cpu,
    parse_proc_net_dev,
    parse_softirqs,
    parse_softnet_stat,
    read_ksoftirqd,
    read_ksoftirqd_ns,
)
from netdiag.collect.tcpinfo import decode_skmeminfo, decode_tcp_info
from netdiag.context import Context
from netdiag.errors import ParseError

from conftest import FIXTURES

SAMPLES = FIXTURES / "samples"


def test_softnet_stat_in_its_three_layouts():
    new = parse_softnet_stat((SAMPLES / "softnet_stat.15col-6.18").read_text(), "x")
    assert new.columns == 15 and [c.cpu for c in new.cpus] == [0, 1]
    assert new.cpus[0].processed == 0x36D954 and new.cpus[0].backlog_len == 0
    mid = parse_softnet_stat((SAMPLES / "softnet_stat.13col-5.15").read_text(), "x")
    # CPU 1 is offline: the cpu column (not the row number) names the CPU.
    assert mid.columns == 13 and [c.cpu for c in mid.cpus] == [0, 2]
    assert (mid.cpus[0].dropped, mid.cpus[0].time_squeeze) == (0x12A4, 0x31F0)
    assert mid.cpus[1].received_rps == 0x3F11A
    old = parse_softnet_stat((SAMPLES / "softnet_stat.11col-4.19").read_text(), "x")
    assert old.columns == 11 and [c.cpu for c in old.cpus] == [0, 1, 2, 3]
    assert old.cpus[2].time_squeeze == 0x52 and old.cpus[0].backlog_len is None


def test_softnet_stat_malformed():
    with pytest.raises(ParseError, match="x:2: expected 11 columns like line 1"):
        parse_softnet_stat("0 " * 11 + "\n" + "0 " * 10 + "\n", "x")
    with pytest.raises(ParseError, match="not hexadecimal"):
        parse_softnet_stat("zz " * 11 + "\n", "x")


def test_softirqs_with_many_cpus():
    sq = parse_softirqs((SAMPLES / "softirqs.64cpu").read_text(), "/proc/softirqs")
    assert len(sq.net_rx) == 64 and sq.net_rx[0] == 9_000_000 and sq.net_rx[63] == 362
    assert len(sq.net_tx) == 64
    with pytest.raises(ParseError, match="no NET_RX row"):
        parse_softirqs("  CPU0\nTIMER: 1\n", "/proc/softirqs")


def test_proc_net_dev_folds_missed_into_dropped():
    links = {lk.name: lk for lk in parse_proc_net_dev((SAMPLES / "net_dev.fifo").read_text(),
                                                       "/proc/net/dev")}
    eth = links["eth0"]
    assert (eth.rx_packets, eth.rx_dropped, eth.rx_fifo) == (812345678, 48211, 1377)
    assert eth.rx_missed is None and eth.source == "/proc/net/dev"
    with pytest.raises(ParseError, match="eth0: expected 16 columns"):
        parse_proc_net_dev("eth0: 1 2 3\n", "/proc/net/dev")


def test_snmp6_recorded(host_root):
    facts, errors = read_counters(Context(root=host_root("linux-6.18-busy")))
    assert errors == []
    assert facts.get("Udp6", "RcvbufErrors") == 0 and "InReceives" in facts.counters["Ip6"]
    assert parse_snmp6("Udp6RcvbufErrors 7\nIcmp6InMsgs 2\n", "x") == {
        "Udp6": {"RcvbufErrors": 7}, "Icmp6": {"InMsgs": 2}}
    with pytest.raises(ParseError):
        parse_snmp6("Udp6RcvbufErrors\n", "x")


def test_tcp_info_and_skmeminfo_decoding():
    raw = bytearray(232)
    raw[7] = 1
    raw[68:72] = (2500).to_bytes(4, "little")  # rtt µs
    raw[120:128] = (100001).to_bytes(8, "little")  # bytes_acked
    raw[160:168] = (12_500_000).to_bytes(8, "little")  # delivery rate, bytes/s
    info = decode_tcp_info(bytes(raw))
    assert info["rtt"] == 2500 and info["bytes_acked"] == 100001
    assert info["delivery_rate"] == 12_500_000 and info["delivery_rate_app_limited"] == 1
    # An old kernel's shorter tcp_info: later fields are simply absent.
    short = decode_tcp_info(bytes(raw[:104]))
    assert "rtt" in short and "delivery_rate" not in short
    sk = decode_skmeminfo(b"".join(i.to_bytes(4, "little") for i in range(1, 10)))
    assert sk["rcvbuf"] == 2 and sk["sndbuf"] == 4 and sk["drops"] == 9


def test_recorded_capture_carries_connection_details(host_root):
    from netdiag.collect.sockets import read_census

    census, details, warnings = read_census(Context(root=host_root("linux-6.18-busy")),
                                            (40000, 40999), details=True)
    assert warnings == []
    assert details.established == census.by_state["ESTABLISHED"] == 10
    assert details.with_info == 10
    # The helper holds idle connections without SO_KEEPALIVE: no timer at all.
    assert details.no_timer == 10 and details.keepalive_timer == 0


# /proc/PID/stat of ksoftirqd/0 on this 6.18 machine (flags 0x4208040: PF_KTHREAD among
# them), and of a user process that named itself the same (prctl PR_SET_NAME; 0x400000).
KSOFTIRQD_STAT = ("14 (ksoftirqd/0) S 2 0 0 0 -1 69238848 0 0 0 0 5 6503 0 0 20 0 1 0 22 0 0 "
                  "18446744073709551615 0 0 0 0 0 0 0 2147483647 0 1 0 0 17 0 0 0 0 0 0 0 0 0 "
                  "0 0 0 0 0")
IMPOSTOR_STAT = ("4242 (ksoftirqd/0) S 1 4242 4242 0 -1 4194304 90 0 0 0 0 0 0 0 20 0 1 0 "
                 "900 4 1 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0")


def test_ksoftirqd_is_told_by_the_kernel_thread_flag_not_by_its_name():
    assert ksoftirqd_cpu(KSOFTIRQD_STAT) == 0
    assert ksoftirqd_cpu(IMPOSTOR_STAT) is None
    # A name holding ") S 2 ... " cannot pass for the fields after it: the last ")" ends it.
    assert ksoftirqd_cpu("9 (ksoftirqd/3) S 2 0 0 0 -1 2129984) S 1 0 0 0 -1 0 0") is None
    assert ksoftirqd_cpu("9 (ksoftirqd/x) S 2 0 0 0 -1 2129984") is None
    assert ksoftirqd_cpu("9 (ksoftirqd/2) S 2") is None  # truncated: no flags field


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_ksoftirqd_cpu_never_raises_on_any_stat_line(line):
    cpu = ksoftirqd_cpu(line)
    assert cpu is None or cpu >= 0


def test_ksoftirqd_time_is_read_from_each_threads_schedstat(tmp_path):
    """A /proc with a ksoftirqd thread, an impostor, a task that vanished between listing
    and reading, and a FIFO where schedstat should be (never opened)."""
    import os

    def task(pid, stat, schedstat):
        d = tmp_path / str(pid)
        d.mkdir()
        (d / "stat").write_text(stat)
        if schedstat is not None:
            (d / "schedstat").write_text(schedstat)
        return d

    task(14, KSOFTIRQD_STAT, "7351226 93113 410\n")
    task(4242, IMPOSTOR_STAT, "999999999 0 1\n")
    task(23, KSOFTIRQD_STAT.replace("ksoftirqd/0", "ksoftirqd/1"), None)  # exited
    os.mkfifo(task(24, KSOFTIRQD_STAT.replace("ksoftirqd/0", "ksoftirqd/5"), None)
              / "schedstat")
    (tmp_path / "self").mkdir()
    assert read_ksoftirqd_ns(str(tmp_path)) == {0: 7351226}
    # `netdiag softirq`'s totals (user + system ticks of /proc/PID/stat: the tasks whose
    # schedstat is missing or a FIFO have their stat) skip the impostor too
    secs = round((5 + 6503) / os.sysconf("SC_CLK_TCK"), 2)
    assert read_ksoftirqd(str(tmp_path)) == {0: secs, 1: secs, 5: secs}
    # Where kthreadd lists its children, only they are read (a kernel thread is always one).
    kids = tmp_path / "2" / "task" / "2"
    kids.mkdir(parents=True)
    (kids / "children").write_text("14 23 ")
    assert read_ksoftirqd(str(tmp_path)) == {0: secs, 1: secs}
