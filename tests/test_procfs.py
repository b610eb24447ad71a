"""Parsers of /proc files, on recorded samples from two kernel generations and broken input."""

from __future__ import annotations

from pathlib import Path

import pytest

from netdiag.collect import procfs
from netdiag.collect.sysctlconf import parse_sysctl_conf, read_sysctl_conf
from netdiag.context import Context
from netdiag.errors import ParseError
from netdiag.facts import parse_port_list, reserved_in_range


def test_netstat_by_header_name_on_6x_and_4x(host_root):
    new, errs = procfs.read_counters(Context(root=host_root("linux-6.18-busy")))
    old, errs_old = procfs.read_counters(Context(root=host_root("linux-4.19-layout")))
    assert errs == [] and errs_old == []
    # Fields appear and disappear between kernel generations; lookup is by name.
    assert "TCPRcvQDrop" in new.counters["TcpExt"]
    assert "TCPRcvQDrop" not in old.counters["TcpExt"]
    assert "TW" in old.counters["TcpExt"]
    assert old.get("TcpExt", "TCPTimeWaitOverflow") == 1834
    assert old.get("TcpExt", "TW") == 52011934
    assert new.get("Tcp", "MaxConn") == -1 and old.get("Tcp", "MaxConn") == -1
    assert "MemErrors" in new.counters["Udp"] and "MemErrors" not in old.counters["Udp"]
    assert old.get("Tcp", "ActiveOpens") == 52099811


def test_counter_count_mismatch_names_file_and_line():
    text = "TcpExt: A B C\nTcpExt: 1 2\n"
    with pytest.raises(ParseError) as exc:
        procfs.parse_counters(text, "/proc/net/netstat")
    assert exc.value.path == "/proc/net/netstat" and exc.value.lineno == 2
    assert "3 names but 2 values" in str(exc.value)


def test_counter_non_integer_and_orphan_header():
    with pytest.raises(ParseError, match=r"netstat:2: TcpExt: a value is not an integer"):
        procfs.parse_counters("TcpExt: A\nTcpExt: x\n", "/proc/net/netstat")
    with pytest.raises(ParseError, match="header line without a value line"):
        procfs.parse_counters("Tcp: A B\n", "/proc/net/snmp")
    with pytest.raises(ParseError, match="expected its value line"):
        procfs.parse_counters("Tcp: A\nUdp: 1\n", "/proc/net/snmp")


def test_one_broken_counter_file_leaves_the_other(tmp_path):
    (tmp_path / "proc/net").mkdir(parents=True)
    (tmp_path / "proc/net/netstat").write_text("TcpExt: A B\nTcpExt: 1\n")
    (tmp_path / "proc/net/snmp").write_text("Tcp: ActiveOpens\nTcp: 7\n")
    facts, errors = procfs.read_counters(Context(root=tmp_path))
    assert facts.get("Tcp", "ActiveOpens") == 7
    assert len(errors) == 1 and "/proc/net/netstat:2" in errors[0][1]


def test_missing_files_are_reported_not_raised(tmp_path):
    facts, errors = procfs.read_counters(Context(root=tmp_path))
    assert facts.counters == {}
    assert [rel for rel, _ in errors] == ["proc/net/netstat", "proc/net/snmp"]
    # A snapshot directory is not a kernel: the message speaks of the snapshot.
    assert errors[0][1] == f"/proc/net/netstat is not in the snapshot {tmp_path}"
    assert "kernel" not in errors[1][1]
    stat, errs = procfs.read_sockstat(Context(root=tmp_path))
    # sockstat6 absent is IPv6 being off, not an error; sockstat absent is.
    assert [rel for rel, _ in errs] == ["proc/net/sockstat"]


def test_sockstat_both_generations(host_root):
    new, errs = procfs.read_sockstat(Context(root=host_root("linux-6.18-busy")))
    assert errs == []
    # sockstat "tw" counts TIME_WAIT plus orphaned FIN_WAIT2 minisockets: the snapshot holds
    # 480 TIME_WAIT and 12 FIN_WAIT2 (the clients of the CLOSE_WAIT server).
    assert new.get("TCP", "tw") == 480 + 12 and new.get("TCP6", "inuse") is not None
    old, _ = procfs.read_sockstat(Context(root=host_root("linux-4.19-layout")))
    assert old.get("TCP", "tw") == 179990 and old.get("sockets", "used") == 412
    with pytest.raises(ParseError, match="sockstat:1"):
        procfs.parse_sockstat("TCP: inuse\n", "/proc/net/sockstat")


def test_sysctls_and_tab_separated_values(host_root):
    facts = procfs.read_sysctls(Context(root=host_root("linux-6.18-busy")),
                                ["net.ipv4.ip_local_port_range", "net.ipv4.no_such_key"])
    assert facts.values["net.ipv4.ip_local_port_range"] == "40000 40999"
    assert facts.get_ints("net.ipv4.ip_local_port_range") == [40000, 40999]
    assert facts.missing == ["net.ipv4.no_such_key"]


def test_file_nr():
    nr = procfs.parse_file_nr("2208\t0\t1618431\n", "/proc/sys/fs/file-nr")
    assert (nr.allocated, nr.maximum) == (2208, 1618431)
    with pytest.raises(ParseError):
        procfs.parse_file_nr("12 0\n", "/proc/sys/fs/file-nr")


def test_sysctl_conf_finds_stale_settings(host_root):
    facts = read_sysctl_conf(Context(root=host_root("linux-4.19-layout")))
    keys = {(s.key, s.value, s.line) for s in facts.settings}
    assert ("net.ipv4.tcp_tw_recycle", "1", 3) in keys
    assert "/etc/sysctl.d/60-tuning.conf" in facts.files_read
    parsed = parse_sysctl_conf("; c\n# c\nnet/ipv4/tcp_tw_recycle=1\n-net.core.x = 2\nkernel.a=1\n",
                               "/etc/sysctl.conf")
    assert [(s.key, s.value) for s in parsed] == [("net.ipv4.tcp_tw_recycle", "1"),
                                                   ("net.core.x", "2")]


def test_reserved_ports():
    ranges = parse_port_list("8080,9000-9010, 40500\n")
    assert ranges == [(8080, 8080), (9000, 9010), (40500, 40500)]
    assert reserved_in_range(ranges, 9005, 40999) == 7
    assert parse_port_list("") == []


def test_kernel_release_missing(tmp_path: Path):
    assert procfs.read_kernel_release(Context(root=tmp_path)) == "unknown"


def test_check_on_a_snapshot_speaks_of_the_snapshot(tmp_path):
    from conftest import run_netdiag

    proc = run_netdiag("check", "--root", str(tmp_path), env={"COLUMNS": "1000"})
    assert proc.returncode == 3
    said = proc.stdout + proc.stderr
    assert f"/proc/net/netstat is not in the snapshot {tmp_path}" in said
    assert f"not present in the snapshot {tmp_path}:" in said
    assert "on this kernel" not in said
