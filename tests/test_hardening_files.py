"""Bounded in time and memory, whatever is at a path: the one reading primitive
(netdiag.readfile), the snapshot corruption test over every fixture (truncation, garbage,
FIFOs, huge files, /dev/zero links, links out of the snapshot, unreadable files as an
unprivileged user) and a property-based test of the recorded-capture parser."""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from inprocess import check_answer, deadline, run_main

from netdiag import readfile
from netdiag.collect.census import CensusBuilder
from netdiag.collect.sockets import replay_census
from netdiag.collect.tcpinfo import DetailBuilder
from netdiag.errors import NetdiagError, SourceMissing, Unreadable

from conftest import HOSTS, REPO, load_json, require_root

FIXTURES = sorted(p.name for p in HOSTS.iterdir() if p.is_dir())
BUSY = HOSTS / "linux-6.18-busy"
CAPTURE = (BUSY / "sockdiag.bin").read_bytes()


# ---- the reading primitive -----------------------------------------------------------------

def test_regular_files_are_read_and_decoded_with_escapes(tmp_path):
    f = tmp_path / "f"
    f.write_bytes(b"a \xff b\nline 2\n")
    assert readfile.read_text(f, "/f", tmp_path) == "a \\xff b\nline 2\n"
    assert list(readfile.iter_lines(f, "/f", tmp_path)) == ["a \\xff b", "line 2"]


def test_lines_are_the_same_as_splitlines_across_blocks(tmp_path, monkeypatch):
    monkeypatch.setattr(readfile, "BLOCK", 7)  # lines straddle many small blocks
    text = "".join(f"line {i} " + "x" * (i % 13) + "\n" for i in range(200)) + "tail"
    f = tmp_path / "f"
    f.write_text(text)
    assert list(readfile.iter_lines(f, "/f")) == text.splitlines()


@pytest.mark.parametrize("make,needle", [
    (lambda p: os.mkfifo(p), "a FIFO, not a regular file"),
    (lambda p: os.mkdir(p), "a directory, not a regular file"),
    (lambda p: socket.socket(socket.AF_UNIX).bind(str(p)), "a socket, not a regular file"),
])
def test_special_files_are_refused_without_blocking(tmp_path, make, needle):
    p = tmp_path / "special"
    make(p)
    with deadline(10):
        with pytest.raises(Unreadable, match=needle):
            readfile.read_text(p, "/special", tmp_path)
        with pytest.raises(Unreadable, match=needle):
            readfile.iter_lines(p, "/special")


def test_device_links_are_refused(tmp_path):
    link = tmp_path / "zero"
    link.symlink_to("/dev/zero")
    with deadline(10):
        with pytest.raises(Unreadable, match="a link that leaves the snapshot"):
            readfile.read_text(link, "/zero", tmp_path)
        with pytest.raises(Unreadable, match="a device, not a regular file"):
            readfile.read_text(link, "/zero")  # live: followed, and still refused


def test_links_inside_the_snapshot_are_followed(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "real").write_text("42\n")
    (tmp_path / "link").symlink_to("d/real")
    (tmp_path / "abs").symlink_to(tmp_path / "d" / "real")
    assert readfile.read_text(tmp_path / "link", "/link", tmp_path) == "42\n"
    assert readfile.read_text(tmp_path / "abs", "/abs", tmp_path) == "42\n"
    (tmp_path / "out").symlink_to("../../../../../../etc/passwd")
    with pytest.raises(Unreadable, match="leaves the snapshot"):
        readfile.read_text(tmp_path / "out", "/out", tmp_path)


def test_missing_is_not_refused(tmp_path):
    with pytest.raises(SourceMissing) as exc:
        readfile.read_text(tmp_path / "nope", "/nope", tmp_path)
    assert not isinstance(exc.value, Unreadable)
    assert str(exc.value) == f"/nope is not in the snapshot {tmp_path}"


def test_caps(tmp_path):
    big = tmp_path / "big"
    with open(big, "wb") as fh:
        fh.truncate(200 << 20)  # sparse: 200 MiB of zeros that cost no disk
    with pytest.raises(Unreadable, match="larger than 1 MiB"):
        readfile.read_text(big, "/big", tmp_path, readfile.MAX_SMALL)
    with pytest.raises(Unreadable, match="larger than 16 MiB"):
        readfile.read_text(big, "/big", tmp_path)
    with pytest.raises(Unreadable, match="a line longer than 64 KiB"):
        list(readfile.iter_lines(big, "/big", tmp_path))
    lines = tmp_path / "lines"
    lines.write_text("x\n" * 1000)
    with pytest.raises(Unreadable, match="larger than 100 bytes"):
        list(readfile.iter_lines(lines, "/lines", tmp_path, limit=100))


def test_directories_are_listed_with_a_bound(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    for i in range(30):
        (d / f"{i:02d}.conf").write_text("")
    assert readfile.list_dir(d, "/d", tmp_path)[:2] == ["00.conf", "01.conf"]
    with pytest.raises(Unreadable, match="more than 10 entries"):
        readfile.list_dir(d, "/d", tmp_path, limit=10)
    (tmp_path / "etc").symlink_to("/etc")
    with pytest.raises(Unreadable, match="leaves the snapshot"):
        readfile.list_dir(tmp_path / "etc", "/etc", tmp_path)


def test_text_of_system_names():
    assert readfile.text(b"ok") == "ok"
    assert readfile.text(b"\xff\xfe") == "\\xff\\xfe"
    assert readfile.text(os.fsdecode(b"a\xffb")) == "a\\xffb"
    assert readfile.text("caf\u00e9") == "caf\u00e9"  # valid UTF-8 stays as it is


# ---- snapshot corruption ---------------------------------------------------------------------

def _mutate(path: Path, how: str, seed: int = 0) -> None:
    import random

    data = path.read_bytes() if path.is_file() and not path.is_symlink() else b""
    path.unlink()
    if how == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "garbage":
        path.write_bytes(random.Random(seed).randbytes(max(len(data), 64)))
    elif how == "fifo":
        os.mkfifo(path)
    elif how == "huge":
        with open(path, "wb") as fh:
            fh.truncate(3 << 30)  # sparse 3 GiB: past every cap, sockdiag.bin's too
    elif how == "devzero":
        path.symlink_to("/dev/zero")
    elif how == "outside":
        path.symlink_to("/proc/self/status")
    elif how == "directory":
        path.mkdir()
    else:
        raise ValueError(how)


MUTATIONS = ("truncate", "empty", "garbage", "fifo", "huge", "devzero", "outside",
             "directory")
COMMANDS = (["check", "--json"], ["sockets", "--json", "--top", "5"], ["sysctl", "--json"],
            ["softirq", "--json"], ["check"], ["check", "--format", "prometheus"],
            ["check", "--format", "nagios"])


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.name != "meta.json")


def _check_report(res, args) -> None:
    check_answer(res, args)
    if "--json" in args and res.rc != 3:
        report = load_json(res.out)
        sev = {f["severity"] for f in report["findings"]}
        assert res.rc == (2 if "critical" in sev else 1 if "warning" in sev else 0), report
        for e in report["errors"]:
            assert "\n" not in e["message"] and len(e["message"]) < 2000


@pytest.mark.parametrize("fixture", FIXTURES)
@pytest.mark.parametrize("how", MUTATIONS)
def test_every_file_of_a_snapshot_corrupted_at_once(tmp_path, fixture, how):
    root = tmp_path / fixture
    shutil.copytree(HOSTS / fixture, root)
    for p in _files(root):
        _mutate(p, how)
    for args in COMMANDS:
        full = [*args, "--root", str(root)]
        _check_report(run_main(full), full)


@settings(max_examples=60, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                 HealthCheck.too_slow])
@given(data=st.data())
def test_one_file_corrupted(tmp_path_factory, data):
    fixture = data.draw(st.sampled_from(FIXTURES), label="fixture")
    root = tmp_path_factory.mktemp("snap") / fixture
    shutil.copytree(HOSTS / fixture, root)
    files = _files(root)
    target = data.draw(st.sampled_from(files), label="file")
    how = data.draw(st.sampled_from(MUTATIONS), label="how")
    _mutate(target, how, seed=data.draw(st.integers(0, 1000), label="seed"))
    args = [*data.draw(st.sampled_from(COMMANDS), label="command"), "--root", str(root)]
    _check_report(run_main(args), args)


def test_huge_files_cost_bounded_memory(tmp_path):
    """A 100 MB sysctl file (written, not sparse) and 100 MB /proc/net/dev: refused, and the
    whole run stays far below their size (it took 1.5 GB before)."""
    root = tmp_path / "snap"
    shutil.copytree(BUSY, root)
    with open(root / "proc/sys/net/core/somaxconn", "wb") as fh:
        fh.write(b"4096 " * (20 << 20))
    with open(root / "proc/net/dev", "wb") as fh:
        fh.write(b"eth0: " + b"1 " * (50 << 20))
    probe = ("import resource, subprocess, sys; p = subprocess.run(sys.argv[1:], "
             "capture_output=True, text=True); print(json.dumps({'rc': p.returncode, "
             "'err': p.stderr, 'out': p.stdout, 'kb': resource.getrusage("
             "resource.RUSAGE_CHILDREN).ru_maxrss}))")
    proc = subprocess.run([sys.executable, "-c", "import json; " + probe, sys.executable,
                           "-m", "netdiag", "check", "--root", str(root), "--json"],
                          capture_output=True, text=True, timeout=300, cwd="/",
                          env=dict(os.environ, PYTHONPATH=str(REPO)))
    got = json.loads(proc.stdout)  # not netdiag output (the wrapper's)
    report = load_json(got["out"])
    messages = [e["message"] for e in report["errors"]]
    assert any("somaxconn: larger than 1 MiB" in m for m in messages), messages
    assert any("/proc/net/dev: larger than 64 MiB" in m for m in messages), messages
    assert got["kb"] < 200 * 1024, f"peak RSS {got['kb']} KiB"


# ---- unreadable files, as an unprivileged user ---------------------------------------------

def _nobody_python() -> list[str]:
    for exe in (sys.executable, "/usr/bin/python3"):
        probe = subprocess.run(["runuser", "-u", "nobody", "--", exe, "-c", "pass"],
                               capture_output=True)
        if probe.returncode == 0:
            return [exe]
    pytest.fail("no Python interpreter the user nobody can execute")


@pytest.fixture
def shared_snapshot():
    """A copy of the busy fixture where the user nobody may read (pytest's tmp is 0700)."""
    require_root("running as another user")
    base = Path(tempfile.mkdtemp(prefix="netdiag-unreadable-"))
    try:
        base.chmod(0o755)
        root = base / "snap"
        shutil.copytree(BUSY, root)
        for d, _dirs, files in os.walk(root):
            os.chmod(d, 0o755)
            for f in files:
                os.chmod(os.path.join(d, f), 0o644)
        yield root
    finally:
        shutil.rmtree(base)


def _as_nobody(*args: str) -> subprocess.CompletedProcess:
    import site

    env = dict(os.environ, PYTHONPATH=":".join([str(REPO), *site.getsitepackages()]),
               HOME="/tmp")
    return subprocess.run(["runuser", "-u", "nobody", "--", *_nobody_python(), "-m",
                           "netdiag", *args], capture_output=True, text=True, timeout=120,
                          env=env, cwd="/")


def test_unreadable_files_as_nobody(shared_snapshot):
    root = shared_snapshot
    for rel in ("proc/net/netstat", "proc/sys/net/core/somaxconn", "proc/net/softnet_stat"):
        (root / rel).chmod(0)
    proc = _as_nobody("check", "--root", str(root), "--json")
    assert "Traceback" not in proc.stderr
    report = load_json(proc.stdout)
    assert proc.returncode in (0, 1, 2) and report["status"] != "unknown"
    messages = " | ".join(e["message"] for e in report["errors"])
    for rel in ("proc/net/netstat", "proc/sys/net/core/somaxconn", "proc/net/softnet_stat"):
        assert f"/{rel}: permission denied" in messages, messages
    # The somaxconn sysctl is unreadable, not "absent on this kernel".
    assert "net.core.somaxconn" not in " ".join(
        e["message"] for e in report["errors"] if "not present" in e["message"])


def test_an_unreadable_socket_table_as_nobody(shared_snapshot):
    (shared_snapshot / "sockdiag.bin").chmod(0)
    (shared_snapshot / "proc/net").chmod(0)
    for args in (["check", "--json"], ["sockets"], ["check", "--format", "nagios"]):
        proc = _as_nobody(*args, "--root", str(shared_snapshot))
        assert proc.returncode == 3, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("netdiag: could not judge: sockets: "
                                                        "/sockdiag.bin: permission denied")


# ---- the recorded capture is hostile input -------------------------------------------------

def _replay(data: bytes, path: Path) -> None:
    path.write_bytes(data)
    builder = CensusBuilder("netlink (recorded)", (32768, 60999))
    builder.detail = DetailBuilder()
    try:
        replay_census(str(path), builder, "/sockdiag.bin", str(path.parent))
    except NetdiagError as exc:
        text = str(exc)
        assert text.startswith("/sockdiag.bin: ") and "\n" not in text
        return
    builder.finish(20)
    builder.detail.finish()


@settings(max_examples=300, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(flips=st.lists(st.tuples(st.integers(0, len(CAPTURE) - 1), st.integers(0, 7)),
                      max_size=8),
       cut=st.one_of(st.none(), st.integers(0, len(CAPTURE))),
       splice=st.one_of(st.none(), st.tuples(st.integers(0, len(CAPTURE)),
                                              st.binary(min_size=1, max_size=64))))
def test_bit_flipped_truncated_or_spliced_capture(tmp_path_factory, flips, cut, splice):
    data = bytearray(CAPTURE)
    for pos, bit in flips:
        data[pos] ^= 1 << bit
    if splice is not None:
        pos, blob = splice
        data[pos:pos + len(blob)] = blob
    if cut is not None:
        data = data[:cut]
    with deadline(30):
        _replay(bytes(data), tmp_path_factory.mktemp("cap") / "sockdiag.bin")


def test_the_capture_is_checked_record_by_record(tmp_path):
    import struct

    def chunk(body: bytes) -> bytes:
        return struct.pack("=I", len(body)) + body

    def msg(mtype: int, payload: bytes) -> bytes:
        return struct.pack("=IHHII", 16 + len(payload), mtype, 0, 0, 0) + payload

    sock = bytes([2, 1]) + bytes(70)  # IPv4, ESTABLISHED, the rest zero
    good = chunk(msg(20, sock) + msg(3, b"\0\0\0\0"))
    cases = {
        "bad family": chunk(msg(20, bytes([7, 1]) + bytes(70))),
        "bad state": chunk(msg(20, bytes([2, 99]) + bytes(70))),
        "attribute past the record": chunk(msg(20, sock + struct.pack("=HH", 200, 2))),
        "unknown type": chunk(msg(77, b"")),
        "netlink error": chunk(msg(2, struct.pack("=i", -13) + bytes(16))),
    }
    _replay(good, tmp_path / "sockdiag.bin")
    for name, data in cases.items():
        p = tmp_path / name.replace(" ", "-")
        p.mkdir()
        builder = CensusBuilder("netlink (recorded)", None)
        with pytest.raises(Unreadable) as exc:
            (p / "sockdiag.bin").write_bytes(data)
            replay_census(str(p / "sockdiag.bin"), builder, "/sockdiag.bin", str(p))
        assert "chunk 1" in str(exc.value), name


def test_a_capture_that_is_a_fifo_or_too_large(tmp_path):
    os.mkfifo(tmp_path / "sockdiag.bin")
    with deadline(10), pytest.raises(Unreadable, match="a FIFO"):
        replay_census(str(tmp_path / "sockdiag.bin"), CensusBuilder("x", None),
                      "/sockdiag.bin", str(tmp_path))
    os.unlink(tmp_path / "sockdiag.bin")
    with open(tmp_path / "sockdiag.bin", "wb") as fh:
        fh.truncate(3 << 30)
    with pytest.raises(Unreadable, match="larger than 2 GiB"):
        replay_census(str(tmp_path / "sockdiag.bin"), CensusBuilder("x", None),
                      "/sockdiag.bin", str(tmp_path))
    assert stat.S_ISREG(os.stat(tmp_path / "sockdiag.bin").st_mode)
