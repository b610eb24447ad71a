"""The census reader's paths give one answer: the receiving child process and the one-process
reader, the one-walk compatibility dump and the per-family dumps, the inline aggregation and
CensusBuilder.add(); and that answer is what `ss` sees, per state, family and port."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import struct
import subprocess
import sys
import time

import pytest

from netdiag.collect import sockets
from netdiag.collect.census import CensusBuilder, swap16
from netdiag.errors import SourceMissing

from conftest import REPO, NetNS, require_root

EPHEMERAL = (40000, 40999)


def _census_dict(builder: CensusBuilder) -> dict:
    census = dataclasses.asdict(builder.finish(top=1000))
    census.pop("source")
    return census


# ---- a recorded dump replayed through fake sockets -----------------------------------------

def _chunks(path) -> list[bytes]:
    data = path.read_bytes()
    out, off = [], 0
    while off < len(data):
        (n,) = struct.unpack_from("=I", data, off)
        out.append(data[off + 4:off + 4 + n])
        off += 4 + n
    return out


def _dumps(chunks: list[bytes]) -> list[list[bytes]]:
    """The recorded chunks, split into their dumps (each ends with NLMSG_DONE)."""
    dumps, cur = [], []
    for c in chunks:
        cur.append(c)
        if c[-20:-14] == struct.pack("=IH", 20, sockets.NLMSG_DONE):
            dumps.append(cur)
            cur = []
    assert not cur
    return dumps


class FakeSocket:
    """Stands for a netlink socket whose dump is already in its receive queue: a real
    SEQPACKET socket pair (so a forked receiver and its parent share it, as they share a
    netlink socket), one message per chunk. An OSError in the list is raised by the receive
    that meets it, in whichever process receives."""

    def __init__(self, replies: list[list]) -> None:
        import socket

        [reply] = replies
        self.ours, kernel = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        kernel.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
        for item in reply:
            if isinstance(item, OSError):
                kernel.send(b"OSError %d" % item.errno)
            else:
                kernel.send(item)
        kernel.close()
        self.closed = False

    def send(self, request: bytes) -> int:
        return len(request)

    def recv_into(self, buf, size: int) -> int:
        n = self.ours.recv_into(buf, size)
        if bytes(buf[:8]) == b"OSError ":
            code = int(bytes(buf[8:n]))
            raise OSError(code, os.strerror(code))
        return n

    def close(self) -> None:
        self.ours.close()
        self.closed = True


def _replay_with(monkeypatch, dumps: list[list[bytes]],
                 parallel: bool) -> tuple[CensusBuilder, int]:
    """netlink_census over fake sockets, one per dump request. Returns the builder and how
    many receiving processes were forked."""
    fakes = [FakeSocket([d]) for d in dumps]
    handed = iter(fakes)
    monkeypatch.setattr(sockets, "_open_netlink", lambda: next(handed))
    forks = _count_forks(monkeypatch)
    builder = CensusBuilder("netlink", EPHEMERAL)
    sockets.netlink_census(builder, parallel=parallel)
    assert all(f.closed for f in fakes)
    return builder, len(forks)


def _count_forks(monkeypatch) -> list[int]:
    forks: list[int] = []
    real = os.fork

    def fork() -> int:
        pid = real()
        if pid:
            forks.append(pid)
        return pid

    monkeypatch.setattr(os, "fork", fork)
    return forks


def _recorded(host_root) -> tuple[CensusBuilder, list[list[bytes]]]:
    path = host_root("linux-6.18-busy") / "sockdiag.bin"
    reference = CensusBuilder("netlink", EPHEMERAL)
    sockets.replay_census(str(path), reference)
    dumps = _dumps(_chunks(path))
    # The recording has per-family dumps (listeners v4, v6, then the rest v4, v6); the
    # census now asks for two (listeners, rest), each holding both families.
    assert len(dumps) == 4
    merged = [[c for d in dumps[:2] for c in d if len(c) > 20] + [dumps[1][-1]],
              [c for d in dumps[2:] for c in d if len(c) > 20] + [dumps[3][-1]]]
    return reference, merged


@pytest.mark.parametrize("parallel", [False, True])
def test_parallel_and_plain_readers_count_the_same(monkeypatch, host_root, parallel):
    reference, dumps = _recorded(host_root)
    got, forks = _replay_with(monkeypatch, dumps, parallel)
    assert _census_dict(got) == _census_dict(reference)
    assert got.total == reference.total > 500
    assert forks == (1 if parallel else 0)


def test_a_record_ending_like_done_does_not_end_the_dump_early(monkeypatch, host_root):
    """The receiving thread stops at a chunk whose last 20 bytes look like NLMSG_DONE; the
    parser, which walks every message, finds it was a record and reads the rest itself."""
    reference, dumps = _recorded(host_root)
    rest = dumps[1]
    # Split the first chunk after a record with attributes (an established socket's).
    whole = rest[0]
    off = cut = 0
    while off < len(whole):
        mlen = struct.unpack_from("=I", whole, off)[0]
        if mlen >= 108 and off:
            start, cut = off, off + ((mlen + 3) & ~3)
            break
        off += (mlen + 3) & ~3
    assert cut, "needs a record with attributes to forge"
    first = bytearray(whole[:cut])
    # Its attributes become one unknown attribute (the census does not read them) whose
    # payload ends with the bytes of a DONE header.
    struct.pack_into("=HH", first, start + sockets.MSG_SIZE, mlen - sockets.MSG_SIZE, 0x7F)
    first[cut - 20:cut - 14] = struct.pack("=IH", 20, sockets.NLMSG_DONE)
    assert sockets._ends_dump(first, len(first))
    forged = [dumps[0], [bytes(first), whole[cut:], *rest[1:]]]
    expected = CensusBuilder("netlink", EPHEMERAL)
    for dump in forged:
        for chunk in dump:
            buf = bytearray(sockets.RECV_SIZE + 100)
            buf[:len(chunk)] = chunk
            sockets.parse_chunk(buf, len(chunk), expected)
    got, forks = _replay_with(monkeypatch, forged, parallel=True)
    assert _census_dict(got) == _census_dict(expected)
    assert got.total == reference.total and forks == 1


@pytest.mark.parametrize("parallel", [False, True])
def test_receive_errors_are_one_source_error_and_leave_no_child(monkeypatch, host_root,
                                                               parallel):
    _, dumps = _recorded(host_root)
    broken = [dumps[0], dumps[1][:2] + [OSError(errno.ENOBUFS, "")]]
    fakes = iter([FakeSocket([d]) for d in broken])
    monkeypatch.setattr(sockets, "_open_netlink", lambda: next(fakes))
    forks = _count_forks(monkeypatch)
    with pytest.raises(SourceMissing, match="No buffer space available"):
        sockets.netlink_census(CensusBuilder("netlink", EPHEMERAL), parallel=parallel)
    for pid in forks:  # reaped: no zombie, no straggler
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)


def test_a_receiver_that_dies_is_an_error_not_a_short_census(monkeypatch, host_root):
    _, dumps = _recorded(host_root)
    fakes = iter([FakeSocket([d]) for d in dumps])
    monkeypatch.setattr(sockets, "_open_netlink", lambda: next(fakes))
    monkeypatch.setattr(sockets, "_hand_over", lambda dumps, out: os.kill(os.getpid(), 9))
    with pytest.raises(SourceMissing, match="receiving process ended before the dump"):
        sockets.netlink_census(CensusBuilder("netlink", EPHEMERAL), parallel=True)


def test_no_process_to_spare_reads_in_this_one(monkeypatch, host_root):
    reference, dumps = _recorded(host_root)

    def fork() -> int:
        raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")

    fakes = iter([FakeSocket([d]) for d in dumps])
    monkeypatch.setattr(sockets, "_open_netlink", lambda: next(fakes))
    monkeypatch.setattr(os, "fork", fork)
    got = CensusBuilder("netlink", EPHEMERAL)
    sockets.netlink_census(got, parallel=True)
    assert _census_dict(got) == _census_dict(reference)


def test_a_failed_dump_midway_is_not_retried_per_family(monkeypatch, host_root):
    _, dumps = _recorded(host_root)
    error = struct.pack("=IHHII", 36, sockets.NLMSG_ERROR, 0, 2, 0) + struct.pack("=i", -22)
    failed = [dumps[0], dumps[1][:2] + [error + bytes(16)]]
    fakes = iter([FakeSocket([d]) for d in failed])
    monkeypatch.setattr(sockets, "_open_netlink", lambda: next(fakes))
    with pytest.raises(SourceMissing, match="Invalid argument"):
        sockets.netlink_census(CensusBuilder("netlink", EPHEMERAL), parallel=True)


@pytest.mark.parametrize("young_ms", [None, 1, 30_000, 60_000])
def test_inline_path_counts_what_add_counts(host_root, young_ms):
    """The inline aggregation against CensusBuilder.add() (which a process table forces,
    since per-process counts are add()'s alone), on a recording with every special state;
    with young_ms, the TIME_WAIT younger than it per destination (from their timers) too."""
    path = str(host_root("linux-6.18-busy") / "sockdiag.bin")
    inline = CensusBuilder("netlink", EPHEMERAL)
    inline.young_ms = young_ms
    sockets.replay_census(path, inline)
    added = CensusBuilder("netlink", EPHEMERAL, owners={})
    added.young_ms = young_ms
    sockets.replay_census(path, added)
    a, b = _census_dict(inline), _census_dict(added)
    assert b.pop("by_process") is not None and a.pop("by_process") is None
    assert a == b
    assert a["by_state"]["TIME_WAIT"] and a["by_state"]["CLOSE_WAIT"] and a["by_state"]["LISTEN"]
    young = a["timewait_young_by_destination"]
    if young_ms is None:
        assert young is None
    else:
        total = sum(n for _, n in young["items"])
        tw = sum(n for _, n in a["timewait_by_destination"]["items"])
        # 60 s: every TIME_WAIT is younger; 1 ms: (almost) none
        assert (total == tw) if young_ms == 60_000 else total <= tw
        assert tw > 0


# ---- live, in a namespace of our own ------------------------------------------------------

POPULATION = [  # sockload modes: established, TIME_WAIT of both families, CLOSE_WAIT
    ("hold", "--port", "7100", "--count", "60"),
    ("churn", "--port", "7200", "--count", "80"),
    ("churn", "--port", "7300", "--count", "40", "--ipv6"),
    ("closewait", "--port", "7400", "--count", "15"),
]

CENSUS_IN_NS = r"""
import dataclasses, json, sys
from netdiag import netns
from netdiag.collect import sockets
from netdiag.collect.census import CensusBuilder, swap16
mode = sys.argv[1]
if len(sys.argv) > 2:  # enter the namespace the way --netns does (main thread, setns)
    netns.enter(sys.argv[2])
    import os
    main_ns = os.stat("/proc/thread-self/ns/net").st_ino
    r, w = os.pipe()
    pid = os.fork()  # the receiving process is forked like this: it is where we are
    if pid == 0:
        os.write(w, str(os.stat("/proc/self/ns/net").st_ino).encode()); os._exit(0)
    os.waitpid(pid, 0)
    assert int(os.read(r, 64)) == main_ns
if mode == "per-family":  # as on a kernel that refuses the compatibility request
    sockets.build_compat_request = lambda states, seq, ext=0: sockets.build_request(
        99, states, seq, ext)
b = CensusBuilder("netlink", (40000, 40999))
if mode == "proc":
    from netdiag.context import Context
    sockets.proc_census(Context(), b)
else:
    sockets.netlink_census(b, parallel=mode in ("parallel", "per-family"))
c = dataclasses.asdict(b.finish(top=1000))
c.pop("source")
print(json.dumps(c, default=list))
"""


def _census_in(ns: NetNS, mode: str, enter: bool = False) -> dict:
    env_cmd = ["env", f"PYTHONPATH={REPO}", sys.executable, "-c", CENSUS_IN_NS, mode]
    if enter:  # run in the initial namespace and setns() into ns, like --netns
        proc = subprocess.run(env_cmd[2:] + [f"/run/netns/{ns.name}"], capture_output=True,
                              text=True, timeout=120, env={"PYTHONPATH": str(REPO)})
    else:
        proc = ns.exec(*env_cmd, check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)  # not netdiag output: a census dumped by the test


def _ss(ns: NetNS) -> list[tuple[str, str, int, str, int]]:
    """(state, family, local port, peer address, peer port) of every socket, from ss."""
    out = []
    for line in ns.exec("ss", "-tanH").stdout.splitlines():
        state, _, _, local, peer = line.split()[:5]
        laddr, lport = local.rsplit(":", 1)
        paddr, pport = peer.rsplit(":", 1)
        family = "ipv6" if laddr.startswith("[") or laddr == "*" else "ipv4"
        paddr = paddr.strip("[]").removeprefix("::ffff:")
        out.append((state, family, int(lport), paddr, int(pport) if pport != "*" else 0))
    return out


SS_STATE = {"ESTAB": "ESTABLISHED", "TIME-WAIT": "TIME_WAIT", "CLOSE-WAIT": "CLOSE_WAIT",
            "LISTEN": "LISTEN", "FIN-WAIT-2": "FIN_WAIT2", "SYN-RECV": "SYN_RECV",
            "FIN-WAIT-1": "FIN_WAIT1", "LAST-ACK": "LAST_ACK", "SYN-SENT": "SYN_SENT"}


def test_every_reader_path_agrees_with_ss_in_a_namespace():
    require_root("sock_diag dumps in a namespace of our own")
    with NetNS() as ns:
        ns.sysctl("net.ipv4.ip_local_port_range", f"{EPHEMERAL[0]} {EPHEMERAL[1]}")
        for mode, *args in POPULATION:
            ns.spawn_load(mode, *args)
        parallel = _census_in(ns, "parallel")
        rows = _ss(ns)
        assert _census_in(ns, "plain") == parallel
        assert _census_in(ns, "per-family") == parallel
        assert _census_in(ns, "parallel", enter=True) == parallel
        proc = _census_in(ns, "proc")
    # /proc/net/tcp has no SYN_RECV request sockets and no timers detail differences matter
    # here: the counts by state and family are the same.
    assert proc["by_state"] == parallel["by_state"]
    assert proc["by_family_state"] == parallel["by_family_state"]
    by_state: dict[str, int] = {}
    by_family: dict[str, dict[str, int]] = {}
    by_port: dict[tuple[int, str], int] = {}
    by_dest: dict[tuple[str, int], int] = {}
    listen = {r[2] for r in rows if r[0] == "LISTEN"}
    for state, family, lport, paddr, pport in rows:
        state = SS_STATE[state]
        by_state[state] = by_state.get(state, 0) + 1
        fam = by_family.setdefault(family, {})
        fam[state] = fam.get(state, 0) + 1
        outgoing = EPHEMERAL[0] <= lport <= EPHEMERAL[1] and lport not in listen
        if outgoing:
            by_dest[(paddr, pport)] = by_dest.get((paddr, pport), 0) + 1
        elif state != "LISTEN":
            by_port[(lport, state)] = by_port.get((lport, state), 0) + 1
    assert parallel["by_state"] == by_state
    assert parallel["by_family_state"] == by_family
    assert by_state["TIME_WAIT"] >= 100 and by_state["CLOSE_WAIT"] == 15
    assert {tuple(k): v for k, v in parallel["by_local_port"]["items"]} == by_port
    dest: dict[tuple[str, int], int] = {}
    for (_, daddr, dport), n in parallel["by_destination"]["items"]:
        dest[(daddr, dport)] = dest.get((daddr, dport), 0) + n
    assert dest == by_dest
    assert not parallel["by_local_port"]["approximate"]


# ---- tcp_info: the chunk path against add() ------------------------------------------------

def _per_record(chunks: list[bytes], long_idle_ms: int | None = None):
    """tcpinfo.DetailBuilder fed one add() per established record: the reference."""
    from netdiag.collect.tcpinfo import DetailBuilder

    ref = DetailBuilder()
    if long_idle_ms is not None:
        ref.d.long_idle_ms = long_idle_ms
    for chunk in chunks:
        off = 0
        while off < len(chunk):
            mlen, mtype = struct.unpack_from("=IH", chunk, off)
            if mtype in (18, 20) and chunk[off + 17] == 1 and mlen > sockets.MSG_SIZE:
                (_, _, family, _, timer, sport, dport, src, dst, _, _,
                 inode) = sockets._MSG.unpack_from(chunk, off)
                ref.add(chunk, off + sockets.MSG_SIZE, off + mlen, family, src,
                        swap16(sport), dst, swap16(dport), timer, inode)
            off += (mlen + 3) & ~3
    return ref.finish()


def _by_chunk(chunks: list[bytes], long_idle_ms: int | None = None):
    from netdiag.collect.tcpinfo import DetailBuilder

    got = DetailBuilder()
    if long_idle_ms is not None:
        got.d.long_idle_ms = long_idle_ms
    for chunk in chunks:
        buf = bytearray(chunk) + bytearray(sockets._MSG.size)
        got.add_chunk(buf, len(chunk))
    return got.finish()


def _reorder_attributes(chunk: bytes) -> bytes:
    """Every other established record with its attributes in reverse order: same length,
    another layout."""
    out = bytearray(chunk)
    off = flip = 0
    while off < len(out):
        mlen, mtype = struct.unpack_from("=IH", out, off)
        if mtype in (18, 20) and out[off + 17] == 1 and mlen > sockets.MSG_SIZE:
            flip ^= 1
            if flip:
                attrs, a = [], off + sockets.MSG_SIZE
                while a + 4 <= off + mlen:
                    alen = struct.unpack_from("=H", out, a)[0]
                    step = (alen + 3) & ~3
                    attrs.append(bytes(out[a:a + step]))
                    a += step
                out[off + sockets.MSG_SIZE:off + mlen] = b"".join(reversed(attrs))
        off += (mlen + 3) & ~3
    return bytes(out)


def test_tcp_info_by_chunk_is_add_per_record(tmp_path):
    """Keepalive timers, idle connections and a flow that moved data, recorded live with
    tcp_info; and the same records with their attributes elsewhere (another layout)."""
    require_root("a recorded dump with tcp_info from a namespace of our own")
    capture = tmp_path / "sockdiag.bin"
    record = (f"from netdiag.collect import sockets, tcpinfo, census\n"
              f"with open({str(capture)!r}, 'wb') as fh:\n"
              f"    sockets.netlink_census(census.CensusBuilder('x', None), capture=fh,\n"
              f"                           ext=tcpinfo.EXT_MASK, parallel=False)\n")
    with NetNS() as ns:
        ns.spawn_load("keepalive", "--port", "7600", "--count", "20")
        ns.spawn_load("hold", "--port", "7700", "--count", "30")
        ns.spawn_load("rcvbuf", "--port", "7800")
        proc = ns.exec("env", f"PYTHONPATH={REPO}", sys.executable, "-c", record, check=False)
        assert proc.returncode == 0, proc.stderr
    chunks = _chunks(capture)
    ref = _per_record(chunks)
    assert ref.established >= 100 and ref.keepalive_timer >= 40 and ref.keepalive_groups
    assert _by_chunk(chunks) == ref
    # Every connection without a timer counted as long idle: the top-N heaps fill (the
    # full decode of the connections that enter them).
    ref_idle = _per_record(chunks, long_idle_ms=0)
    assert len(ref_idle.idle_without_keepalive) == 10
    assert _by_chunk(chunks, long_idle_ms=0) == ref_idle
    reordered = [_reorder_attributes(c) for c in chunks]
    assert reordered != chunks
    assert _by_chunk(reordered) == _per_record(reordered) == ref
    assert _by_chunk(reordered, long_idle_ms=0) == ref_idle


def test_keepalive_probes_on_an_idle_socket_are_no_drops_of_data(tmp_path):
    """An idle client whose server probes it every second: each probe arrives out of window,
    is answered and freed through tcp_drop_reason(), and ss shows the client's skmem d
    climbing although no data was lost (the review saw idle redis clients listed with
    'drops 4'). Once idle 10 s, such sockets are counted apart and not listed with the
    sockets that drop data, on both collector paths and in `netdiag buffers`."""
    require_root("keepalive probes in a namespace of our own")
    from conftest import load_json

    capture = tmp_path / "sockdiag.bin"
    record = (f"from netdiag.collect import sockets, tcpinfo, census\n"
              f"with open({str(capture)!r}, 'wb') as fh:\n"
              f"    sockets.netlink_census(census.CensusBuilder('x', None), capture=fh,\n"
              f"                           ext=tcpinfo.EXT_MASK, parallel=False)\n")

    def probed_clients() -> list[tuple[int, int, int]]:
        """(client port, skmem d, ms since it received data) of each idle client."""
        out = ns.exec("ss", "-tmniH", "state", "established", "dport", "= :7650").stdout
        rows, port = [], None
        for line in out.splitlines():
            fields = line.split()
            if len(fields) >= 4 and fields[0].isdigit():  # Recv-Q Send-Q Local Peer
                port = int(fields[2].rsplit(":", 1)[1])
            drops = [f for f in fields if f.startswith("skmem:")]
            lastrcv = [f for f in fields if f.startswith("lastrcv:")]
            if port is not None and drops and lastrcv:
                d = int(drops[0].rstrip(")").rsplit(",d", 1)[1])
                rows.append((port, d, int(lastrcv[0].split(":")[1])))
        return rows

    with NetNS() as ns:
        ns.spawn_load("probed", "--port", "7650", "--count", "3", "--hold", "60")
        deadline = time.monotonic() + 30
        rows = probed_clients()
        while not (len(rows) == 3 and all(d >= 3 and idle >= 11_000 for _, d, idle in rows)):
            assert time.monotonic() < deadline, rows
            time.sleep(0.5)
            rows = probed_clients()
        proc = ns.exec("env", f"PYTHONPATH={REPO}", sys.executable, "-c", record, check=False)
        assert proc.returncode == 0, proc.stderr
        report = load_json(ns.exec("env", f"PYTHONPATH={REPO}", sys.executable, "-m",
                                   "netdiag", "buffers", "--json", check=False).stdout)
    chunks = _chunks(capture)
    ref = _per_record(chunks)
    assert ref.sockets_with_drops == 3
    assert ref.socket_drops == []  # not listed as sockets dropping data
    assert ref.idle_sockets_with_drops == 3
    assert _by_chunk(chunks) == ref
    facts = report["facts"]
    assert facts["idle_sockets_whose_drops_are_not_data"] == 3
    ports = {port for port, _, _ in rows}
    assert not ports & {r["local_port"] for r in facts.get("sockets_with_drops", [])}


# ---- exact counts when the top tables prune ------------------------------------------------

def _record(family: int, state: int, timer: int, sport: int, dport: int, src: bytes,
            dst: bytes, inode: int) -> bytes:
    """One TCPDIAG_GETSOCK reply record (nlmsghdr + inet_diag_msg, no attributes)."""
    msg = struct.pack("=BBBBHH16s16sIQIIIII", family, state, timer, 0,
                      socket_htons(sport), socket_htons(dport), src, dst, 0, 0, 0, 0, 0, 0,
                      inode)
    return struct.pack("=IHHII", 16 + len(msg), sockets.TCPDIAG_GETSOCK, 2, 1, 0) + msg


def socket_htons(port: int) -> int:
    return swap16(port) if sys.byteorder == "little" else port


def test_counts_by_state_stay_exact_when_the_tables_prune():
    """Far more peers and destinations than the top tables keep: the groupings say they are
    approximate, but totals by state, family and timer (and the TIME_WAIT roles) stay exact,
    on the inline path and through add() alike."""
    import random

    rng = random.Random(7)
    listen = _record(2, 10, 0, 8080, 0, bytes(16), bytes(16), 1)
    records, expected = [], {}
    for i in range(30_000):
        family = rng.choice((2, 10))
        state = rng.choice((1, 1, 1, 6, 8, 4))
        timer = 3 if state == 6 else rng.choice((0, 2, 1))
        outgoing = rng.random() < 0.5
        addr = (i.to_bytes(4, "big") + bytes(12)) if family == 2 else i.to_bytes(16, "big")
        local = b"\x7f\0\0\1" + bytes(12) if family == 2 else bytes(15) + b"\1"
        sport = 40000 + i % 1000 if outgoing else 8080
        dport = 10000 + i % 20000 if outgoing else 50000 + i % 10000
        records.append(_record(family, state, timer, sport, dport, local, addr, 100 + i))
        key = (family, state, timer)
        expected[key] = expected.get(key, 0) + 1
    done = struct.pack("=IHHIIi", 20, sockets.NLMSG_DONE, 2, 1, 0, 0)

    def parse(builder: CensusBuilder) -> dict:
        for chunk in ([listen], *(records[i:i + 250] for i in range(0, len(records), 250)),
                      []):
            data = b"".join(chunk) + (done if not chunk else b"")
            buf = bytearray(data) + bytearray(sockets._MSG.size)
            sockets.parse_chunk(buf, len(data), builder)
        return dataclasses.asdict(builder.finish(top=20))

    inline = parse(CensusBuilder("netlink", (40000, 40999)))
    added = parse(CensusBuilder("netlink", (40000, 40999), owners={}))
    by_state: dict[str, int] = {}
    for (_, state, _), n in expected.items():
        name = {1: "ESTABLISHED", 6: "TIME_WAIT", 8: "CLOSE_WAIT", 4: "FIN_WAIT1"}[state]
        by_state[name] = by_state.get(name, 0) + n
    by_state["LISTEN"] = 1
    timers = {"off": 0, "on": 0, "keepalive": 0, "timewait": 0}
    for (_, _, timer), n in expected.items():
        timers[{0: "off", 1: "on", 2: "keepalive", 3: "timewait"}[timer]] += n
    timers["off"] += 1  # the listener
    time_wait = sum(n for (_, s, _), n in expected.items() if s == 6)
    for got in (inline, added):
        assert got["by_state"] == by_state and got["total"] == 30_001
        assert got["timers"] == timers
        assert sum(got["by_family"].values()) == 30_001
        assert got["by_peer"]["approximate"] and got["by_destination"]["approximate"]
        roles = got["timewait_roles"]
        assert sum(roles.values()) == time_wait and roles["server"] > 0 and roles["client"] > 0
    assert inline["by_family_state"] == added["by_family_state"]
    assert inline["timewait_roles"] == added["timewait_roles"]


def test_a_heavy_peer_stays_exact_when_its_destinations_are_pruned():
    """9,000 outgoing connections to one peer from 9,000 source addresses (each a light
    destination key), among 40,000 light destinations elsewhere: the destination table
    prunes, but the heavy peer's count is kept whole (pruned keys spill into a per-peer
    table), on the inline path and through add() alike."""
    local = b"\x7f\0\0\1" + bytes(12)
    heavy = b"\x0a\0\0\1" + bytes(12)
    records = []
    for i in range(9_000):
        src = b"\x7f" + i.to_bytes(3, "big") + bytes(12)
        records.append(_record(2, 1, 0, 40000 + i % 1000, 6379, src, heavy, 10 + i))
    for i in range(40_000):  # light: one connection per destination
        dst = b"\x0b" + i.to_bytes(3, "big") + bytes(12)
        records.append(_record(2, 1, 0, 40000 + i % 1000, 443, local, dst, 20_000 + i))
    done = struct.pack("=IHHIIi", 20, sockets.NLMSG_DONE, 2, 1, 0, 0)

    def parse(builder: CensusBuilder) -> dict:
        for chunk in (*(records[i:i + 250] for i in range(0, len(records), 250)), []):
            data = b"".join(chunk) + (done if not chunk else b"")
            buf = bytearray(data) + bytearray(sockets._MSG.size)
            sockets.parse_chunk(buf, len(data), builder)
        return dataclasses.asdict(builder.finish(top=20))

    for got in (parse(CensusBuilder("netlink", (40000, 40999))),
                parse(CensusBuilder("netlink", (40000, 40999), owners={}))):
        assert got["by_destination"]["approximate"]  # the destination table did prune
        top_peer, count = got["by_peer"]["items"][0]
        assert tuple(top_peer) == ("10.0.0.1", "ESTABLISHED")
        assert count == 9_000
        assert got["total"] == 49_000


def test_a_parent_ignoring_sigchld_still_gets_the_whole_census(monkeypatch, host_root):
    """SIG_IGN for SIGCHLD survives exec: the kernel then reaps the receiver itself and
    waitpid() fails with ECHILD. That must neither fail a complete census nor replace it."""
    import signal

    reference, dumps = _recorded(host_root)
    before = signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    try:
        got, forks = _replay_with(monkeypatch, dumps, parallel=True)
    finally:
        signal.signal(signal.SIGCHLD, before)
    assert forks == 1 and _census_dict(got) == _census_dict(reference)


def test_a_signal_right_after_fork_is_not_handled_in_the_receiver(monkeypatch, host_root):
    """A group-wide SIGTERM landing in the child before it set its own dispositions used to
    run netdiag's handler there (unwinding the parent's stack in the child). Now the signal
    waits, blocked, until the child has SIGTERM at its default: the child just dies, and the
    parent reports a failed dump."""
    import signal

    _, dumps = _recorded(host_root)
    parent = os.getpid()

    def handler(signum, frame):
        if os.getpid() != parent:
            os._exit(99)  # netdiag's handler ran in the child
        raise AssertionError("the parent got no signal")

    real_fork, real_waitpid = os.fork, os.waitpid
    statuses: list[int] = []

    def fork() -> int:
        pid = real_fork()
        if pid == 0:
            os.kill(os.getpid(), signal.SIGTERM)
        return pid

    def waitpid(pid: int, options: int):
        got = real_waitpid(pid, options)
        statuses.append(got[1])
        return got

    fakes = iter([FakeSocket([d]) for d in dumps])
    monkeypatch.setattr(sockets, "_open_netlink", lambda: next(fakes))
    monkeypatch.setattr(os, "fork", fork)
    monkeypatch.setattr(os, "waitpid", waitpid)
    before = signal.signal(signal.SIGTERM, handler)
    try:
        with pytest.raises(SourceMissing, match="receiving process ended"):
            sockets.netlink_census(CensusBuilder("netlink", EPHEMERAL), parallel=True)
    finally:
        signal.signal(signal.SIGTERM, before)
    assert len(statuses) == 1 and os.WIFSIGNALED(statuses[0])
    assert os.WTERMSIG(statuses[0]) == signal.SIGTERM


def test_a_dump_the_kernel_ended_with_an_error_is_not_complete(monkeypatch, host_root):
    """NLMSG_DONE carries the dump's final status: a negative errno means the kernel gave up
    midway, and what came before is not the whole table."""
    _, dumps = _recorded(host_root)
    failed_done = struct.pack("=IHHIIi", 20, sockets.NLMSG_DONE, 2, 1, 0, -errno.EINTR)
    failed = [dumps[0], dumps[1][:-1] + [failed_done]]
    for parallel in (False, True):
        fakes = iter([FakeSocket([d]) for d in failed])
        monkeypatch.setattr(sockets, "_open_netlink", lambda fakes=fakes: next(fakes))
        with pytest.raises(SourceMissing, match="Interrupted system call"):
            sockets.netlink_census(CensusBuilder("netlink", EPHEMERAL), parallel=parallel)
