"""The TCP socket table: netlink sock_diag (inet_diag) first, /proc/net/tcp{,6} as fallback.

Both are streamed into a CensusBuilder: nothing here holds more than a few receive buffers or
one line at a time. The netlink reader is hand-written (struct.unpack_from over large
receive buffers) because generic netlink libraries build an object per socket, which costs
minutes and gigabytes on a host with a million sockets.

Where the time goes on a large host (bench/census.py): the kernel fills the dump (about half),
and this module reads it. The two overlap on large tables: a child process receives (each
receive is where the kernel builds the next chunk) while this one parses. One dump covers
both address families: the inet_diag compatibility request (TCPDIAG_GETSOCK)
asks for AF_UNSPEC, so the kernel walks its established hash once, not once per family (as
`ss` does); kernels that refuse it get the per-family SOCK_DIAG_BY_FAMILY dumps.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import struct
import sys
from typing import BinaryIO

from netdiag.collect.census import LITTLE_ENDIAN, CensusBuilder, swap16
from netdiag.collect.tcpinfo import (
    ACTIVE_MS,
    EXT_MASK,
    MSG_SIZE,
    ConnectionDetails,
    DetailBuilder,
    decode_attributes,
)
from netdiag.context import Context
from netdiag.errors import SourceMissing
from netdiag.facts import LISTEN, Census, Connection, ListenerSample, ListenerWindow

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20  # include/uapi/linux/sock_diag.h
TCPDIAG_GETSOCK = 18  # include/uapi/linux/inet_diag.h: the compatibility request
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300
IPPROTO_TCP = 6
ALL_STATES = 0xFFF  # TCPF_ESTABLISHED .. TCPF_CLOSING (and SYN_RECV request socks)
LISTEN_MASK = 1 << LISTEN
RECV_SIZE = 1 << 16  # the kernel fills at most ~32 KiB per dump skb; 64 KiB is ample
# Socket buffers between the receiving process and the parser: up to ~100 chunks in flight.
PAIR_BUFFER = 4 << 20
# Below this many TCP sockets in the namespace (sockstat), the dump is read and parsed in one
# process: a fork and two more system calls per chunk would cost more than they save.
PARALLEL_MIN_SOCKETS = 20000
# No sock_diag receive waits this long (each one returns a chunk the kernel builds in well
# under a millisecond): a guard against a hang, never reached by a working kernel.
RECV_TIMEOUT = 10

_HDR = struct.Struct("=IHHII")
# nlmsghdr (length and type; flags, seq and pid skipped) + inet_diag_msg: family, state,
# timer, (retrans skipped), sport, dport (network order, read natively), src[16], dst[16],
# (ifindex, cookie, expires skipped), rqueue, wqueue, (uid skipped), inode.
_MSG = struct.Struct("=IH10xBBBxHH16s16s16xII4xI")
# The same record as the inline census reads it: only the length, the type and the fields
# every socket is counted by: family and state as one u16 (see census.count_index()), the
# timer, the local port, and the destination port and both addresses as one 34-byte field
# (an outgoing connection's key as it is; an accepted one's peer is its last 16 bytes).
# Fewer objects made per socket is measurably faster on a million sockets; the rest is read
# for the sockets that need it.
# Then (ifindex and cookie skipped) idiag_expires: ms left of the socket's timer, read here
# for every socket (one more field costs less than a second unpack for each TIME_WAIT).
_REC = struct.Struct("=IH10xHBxH34s12xI")
_ERR = struct.Struct("=i")
# By family | state << 8: LISTEN and CLOSE_WAIT, and states past TCP's.
_SPECIAL = bytearray(65536)
for _state in (LISTEN, 8):
    _SPECIAL[_state << 8:(_state + 1) << 8] = b"\x01" * 256
_SPECIAL[16 << 8:] = b"\x01" * (65536 - (16 << 8))
_ALL = b"\x01" * 65536
_TIME_WAIT = 6
_DONE_TAIL = struct.pack("=IH", 20, NLMSG_DONE)  # nlmsghdr of an NLMSG_DONE (errno payload)


def build_request(family: int, states: int, seq: int, ext: int = 0) -> bytes:
    """SOCK_DIAG_BY_FAMILY dump of one address family (struct inet_diag_req_v2)."""
    body = struct.pack("=BBBBI", family, IPPROTO_TCP, ext, 0, states) + bytes(48)
    return _HDR.pack(_HDR.size + len(body), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP,
                     seq, 0) + body


def build_compat_request(states: int, seq: int, ext: int = 0) -> bytes:
    """TCPDIAG_GETSOCK dump (struct inet_diag_req: family, src_len, dst_len, ext, sockid,
    states, dbs). inet_diag_dump_compat() dumps it as AF_UNSPEC: both families, one walk."""
    body = struct.pack("=BBBB", 0, 0, 0, ext) + bytes(48) + struct.pack("=II", states, 0)
    return _HDR.pack(_HDR.size + len(body), TCPDIAG_GETSOCK, NLM_F_REQUEST | NLM_F_DUMP,
                     seq, 0) + body


class NetlinkError(Exception):
    def __init__(self, code: int) -> None:
        self.code = code
        super().__init__(os.strerror(code))


def parse_chunk(buf, n: int, builder: CensusBuilder) -> bool:
    """Feed every inet_diag_msg in buf[:n] to the builder. Returns True on NLMSG_DONE.

    Records vary in length (kernels append attributes such as the shutdown state and the
    cgroup id even when none are asked for), so they are walked one by one. The common
    case (an unfiltered census without per-process counts, a socket that is not LISTEN or
    CLOSE_WAIT) is aggregated inline, because a method call per socket costs more than the
    aggregation itself: every operation in this loop runs once per socket. It must count
    exactly what CensusBuilder.add() counts: the tests compare the two on recorded and live
    dumps.
    """
    unpack = _REC.unpack_from
    special = _SPECIAL
    # The inline path reads family and state as one little-endian u16 (count_index()).
    fast = builder.states is None and builder.port is None and builder.owners is None \
        and LITTLE_ENDIAN
    by_port = builder.local_port.counts
    by_peer = builder.peer.counts
    by_dest = builder.dest.counts
    tw_server = builder.tw_server.counts
    outgoing, listening = builder.port_masks()  # indexed by the raw (network-order) port
    compat, by_family, time_wait = TCPDIAG_GETSOCK, SOCK_DIAG_BY_FAMILY, _TIME_WAIT
    if not fast:
        special = _ALL  # every socket through add()
    tw_srv = tw_other = 0
    young_above = builder.young_above()
    if young_above is not None:
        builder.ages_seen = True  # netlink gives every socket's timer
    young = young_above if young_above is not None else 1 << 32  # no u32 is above it
    done = False
    off = 0
    while off < n:
        mlen, mtype, fs, timer, sport, ends, expires = unpack(buf, off)
        if mtype == compat or mtype == by_family:
            if not special[fs]:
                # Keyed by count_index() (family, state and timer), which the census sums.
                if outgoing[sport]:  # grouped by destination; its peer is counted from there
                    k = (fs << 3 | timer & 7, ends)
                    by_dest[k] = by_dest.get(k, 0) + 1
                    # young TIME_WAIT: connect() cannot take its port back yet
                    if expires > young and fs >> 8 == time_wait:
                        builder.count_young(fs & 0xFF, ends)
                else:
                    dst = ends[18:]
                    k = (fs << 3 | timer & 7, dst)
                    by_peer[k] = by_peer.get(k, 0) + 1
                    state = fs >> 8
                    k = (sport, state)
                    by_port[k] = by_port.get(k, 0) + 1
                    if state == time_wait:
                        if listening[sport]:  # closed first, as the server
                            k = (sport, fs & 0xFF, dst)
                            tw_server[k] = tw_server.get(k, 0) + 1
                            tw_srv += 1
                        else:
                            tw_other += 1
            else:
                (_, _, family, state, timer, sport, dport, src, dst, rq, wq,
                 inode) = _MSG.unpack_from(buf, off)
                builder.add(family, state, timer, src, swap16(sport), dst, swap16(dport), rq,
                            wq, inode, expires)
        elif mtype == NLMSG_DONE:
            # Its payload is the dump's final status: a negative errno when the kernel gave
            # up midway (then what came before is not the whole table).
            if mlen >= 20:
                (code,) = _ERR.unpack_from(buf, off + 16)
                if code < 0:
                    raise NetlinkError(-code)
            done = True
            break
        elif mtype == NLMSG_ERROR:
            (code,) = _ERR.unpack_from(buf, off + 16)
            if code:
                raise NetlinkError(-code)
        if mlen < 16:
            raise NetlinkError(errno.EPROTO)
        off += (mlen + 3) & ~3
    if tw_srv or tw_other:
        # Client-side TIME_WAIT is what remains of the TIME_WAIT count at finish().
        roles = builder.tw_roles
        roles["server"] += tw_srv
        roles["other"] += tw_other
    if builder.detail is not None:
        builder.detail.add_chunk(buf, off if done else n)
    if not done:
        builder.batch_done()
    return done


def _ends_dump(buf, n: int) -> bool:
    """Whether this chunk is the last of its dump, as far as its ends tell: it finishes with
    NLMSG_DONE (the kernel puts it last, alone or after the last records) or is an error
    reply. The parser confirms (a record's last bytes could look like a DONE header)."""
    return n == 0 or (n >= 20 and buf[n - 20:n - 14] == _DONE_TAIL) or buf[4] == NLMSG_ERROR


class _Dump:
    """One dump request on its own socket, opened by the calling (main) thread: a netlink
    socket belongs to the namespace of the thread that creates it."""

    def __init__(self, request: bytes, tolerated: tuple[int, ...] = ()) -> None:
        self.request = request
        self.tolerated = tolerated  # errors that end this dump without failing the census
        self.sock = _open_netlink()
        self.done = False


def _receive(dumps: list[_Dump], builder: CensusBuilder, capture: BinaryIO | None,
             parallel: bool) -> None:
    """Run the dumps in order, parsing every chunk into the builder. A dump's tolerated error
    ends that dump; any other raises NetlinkError."""

    def take(dump: _Dump, buf, n: int) -> None:
        if n == 0:
            raise NetlinkError(errno.EPROTO)
        try:
            dump.done = parse_chunk(buf, n, builder)
        except NetlinkError as exc:
            if exc.code not in dump.tolerated:
                raise
            dump.done = True
            return  # a recording holds what was counted, not the refusal
        if capture is not None:
            capture.write(struct.pack("=I", n) + bytes(buf[:n]))

    buf = bytearray(RECV_SIZE + _MSG.size)  # padding: unpack_from may read past a short one

    def rest_of(dump: _Dump) -> None:  # this process reads the dump to its end
        recv_into = dump.sock.recv_into
        while not dump.done:
            take(dump, buf, recv_into(buf, RECV_SIZE))

    receiver = None
    if parallel:
        try:
            receiver = _Receiver(dumps)
        except OSError:  # no process to spare (EAGAIN, ENOMEM): read here
            receiver = None
    if receiver is None:
        for dump in dumps:
            dump.sock.send(dump.request)
            rest_of(dump)
        return
    try:
        for index, n in receiver.chunks(buf):
            dump = dumps[index]
            take(dump, buf, n)
            if _ends_dump(buf, n) and not dump.done:
                rest_of(dump)  # the receiver stopped too early (a record ended like DONE)
        if not all(dump.done for dump in dumps):
            raise OSError(errno.EPIPE, "the receiving process ended before the dump did")
    finally:
        # Never raises: cleaning up must not replace what ended the parse (an interruption,
        # a netlink error), nor fail a census that completed.
        receiver.close(kill=not all(dump.done for dump in dumps))


# A chunk handed from the receiving process: the dump's index, or -errno for its failure.
_FRAME = struct.Struct("=i")
_MSG_TRUNC = int(socket.MSG_TRUNC)  # a plain int: flag arithmetic on the enum is slow


class _Receiver:
    """A child process that receives the dumps' chunks and hands them over a SEQPACKET
    socket pair (one message per chunk, so no framing to parse), while this one parses.

    Why a process and not a thread: each receive is where the kernel builds the next chunk,
    and a thread must take the GIL back after every one; with the parser holding it, the
    kernel would sit idle for up to the switch interval per chunk. A forked child has its own
    interpreter: the kernel's work and the parsing overlap fully on two CPUs, for two more
    system calls per 32 KiB chunk. The netlink sockets were opened by this (main) thread in
    the namespace being read; the child inherits them (and that namespace) as they are."""

    def __init__(self, dumps: list[_Dump]) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        parent = os.getpid()
        # SIGINT/SIGTERM stay blocked across fork(): netdiag's handlers raise Interrupted,
        # which in the child would unwind the parent's stack (its finally blocks, its
        # buffered output). The child sets its own dispositions before it unblocks them;
        # the parent takes a pending one once the child's pid is recorded.
        blocked = {signal.SIGINT, signal.SIGTERM}
        try:
            for s in (ours, theirs):  # room for the child to run ahead of the parser
                s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, PAIR_BUFFER)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, PAIR_BUFFER)
            # A stuck or stopped child must not hang the parent (cron has no outer bound).
            ours.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO,
                            struct.pack("=qq", RECV_TIMEOUT + 5, 0))
            previous = signal.pthread_sigmask(signal.SIG_BLOCK, blocked)
            try:
                pid = os.fork()
            except OSError:
                signal.pthread_sigmask(signal.SIG_SETMASK, previous)
                raise
        except OSError:
            ours.close()
            theirs.close()
            raise
        if pid == 0:  # the child: receive, hand over, and leave without unwinding anything
            status = 1
            try:
                signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent answers Ctrl-C
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                _die_with(parent)
                signal.pthread_sigmask(signal.SIG_SETMASK, previous)
                ours.close()
                status = _hand_over(dumps, theirs)
            finally:
                os._exit(status)
        self.pid, self.ours = pid, ours
        theirs.close()
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)

    def chunks(self, buf):
        """(dump index, length) of each chunk, received into buf; ends when the child does."""
        head = bytearray(_FRAME.size)
        body = memoryview(buf)[:RECV_SIZE]
        receive = self.ours.recvmsg_into
        while True:
            nbytes, _, flags, _ = receive([head, body])
            if nbytes == 0:
                return
            if flags & _MSG_TRUNC or nbytes < _FRAME.size:
                raise NetlinkError(errno.EMSGSIZE)
            (index,) = _FRAME.unpack(head)
            if index < 0:
                raise OSError(-index, os.strerror(-index))
            yield index, nbytes - _FRAME.size

    def close(self, kill: bool) -> None:
        """Close our end (a child still sending gets EPIPE and leaves) and reap the child;
        kill it first when the parse gave up. Never raises: a parent that ignores SIGCHLD
        (inherited across exec) has its children reaped by the kernel (ECHILD)."""
        try:
            self.ours.close()
        except OSError:
            pass
        if kill:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except OSError:
                pass
        try:
            os.waitpid(self.pid, 0)
        except OSError:  # ChildProcessError: already reaped
            pass


def _die_with(parent: int) -> None:
    """In the receiving child: be killed when the parent dies (PR_SET_PDEATHSIG), and leave
    at once if it already has."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # without it, the child still ends on EPIPE at its next hand-over
    if os.getppid() != parent:
        os._exit(1)


def _hand_over(dumps: list[_Dump], out: socket.socket) -> int:
    """The receiving child's whole life (its signal dispositions already set). Returns its
    exit status."""
    buf = bytearray(RECV_SIZE)
    view = memoryview(buf)
    send = out.sendmsg
    try:
        for index, dump in enumerate(dumps):
            dump.sock.send(dump.request)
            recv_into = dump.sock.recv_into
            head = _FRAME.pack(index)
            while True:
                n = recv_into(buf, RECV_SIZE)
                send([head, view[:n]])
                if _ends_dump(buf, n):
                    break
    except OSError as exc:
        try:
            out.send(_FRAME.pack(-(exc.errno or errno.EIO)))
        except OSError:
            pass  # the parent is gone
        return 1
    return 0


def _open_netlink() -> socket.socket:
    try:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                             NETLINK_SOCK_DIAG)
    except OSError as exc:
        raise SourceMissing(f"netlink sock_diag unavailable: {exc.strerror}") from None
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("=qq", RECV_TIMEOUT, 0))
    return sock


def _parallel_pays_off() -> bool:
    """A receiving process pays off with a second CPU to run on and a table large enough
    (this namespace's TCP sockets and TIME_WAIT minisockets, from /proc/net/sockstat)."""
    import threading

    try:
        if len(os.sched_getaffinity(0)) < 2:
            return False
    except (AttributeError, OSError):
        if (os.cpu_count() or 1) < 2:
            return False
    if threading.active_count() > 1:  # fork() only from a single-threaded process
        return False
    from netdiag import readfile

    total = 0
    # TCP: inuse counts IPv4 sockets and tw every TIME_WAIT one; TCP6: inuse the IPv6 ones.
    for path, tag, keys in (("/proc/net/sockstat", "TCP:", ("inuse", "tw")),
                            ("/proc/net/sockstat6", "TCP6:", ("inuse",))):
        try:
            text = readfile.read_text(path, path, None, 4096)
        except SourceMissing:
            continue
        for line in text.splitlines():
            if line.startswith(tag):
                fields = line.split()[1:]
                values = dict(zip(fields[::2], fields[1::2]))
                for key in keys:
                    value = values.get(key, "0")
                    total += int(value) if value.isdigit() and len(value) < 19 else 0
    return total >= PARALLEL_MIN_SOCKETS


def netlink_census(builder: CensusBuilder, capture: BinaryIO | None = None,
                   states: int = ALL_STATES, ext: int = 0,
                   parallel: bool | None = None) -> None:
    """Dump the listeners first, then the rest, into the builder. `ext` asks for attributes
    (tcp_info, skmeminfo) with the non-listening sockets. `parallel`: receive in a child
    process while this one parses (default: when that pays off, _parallel_pays_off())."""
    if parallel is None:
        parallel = _parallel_pays_off()
    masks = [m for m in (states & LISTEN_MASK, states & ~LISTEN_MASK) if m]
    # Listeners first: the rest is classified against their ports.
    dumps = [_Dump(build_compat_request(mask, seq, 0 if mask & LISTEN_MASK else ext))
             for seq, mask in enumerate(masks, 1)]
    try:
        try:
            _receive(dumps, builder, capture, parallel)
            return
        except NetlinkError as exc:
            if builder.total or any(d.done for d in dumps) or exc.code not in (
                    errno.EOPNOTSUPP, errno.EINVAL, errno.ENOENT):
                raise SourceMissing(f"sock_diag dump failed: {exc}") from None
        finally:
            for dump in dumps:
                dump.sock.close()
        # No compatibility request here: one SOCK_DIAG_BY_FAMILY dump per family. Without
        # IPv6 in this kernel, the IPv4 census stands on its own.
        dumps = []
        seq = 1
        for mask in masks:
            for family in (2, 10):
                no_ipv6 = (errno.ENOENT, errno.EAFNOSUPPORT) if family == 10 else ()
                dumps.append(_Dump(build_request(family, mask, seq,
                                                 0 if mask & LISTEN_MASK else ext), no_ipv6))
                seq += 1
        try:
            _receive(dumps, builder, capture, parallel)
        except NetlinkError as exc:
            raise SourceMissing(f"sock_diag dump failed: {exc}") from None
        finally:
            for dump in dumps:
                dump.sock.close()
    except OSError as exc:
        raise SourceMissing(f"sock_diag dump failed: {exc.strerror or exc}") from None


class ListenerSampler:
    """Accept queues watched over a window: each sample() is one LISTEN-only dump; the
    deepest queue and how often each listener stood at or over its limit are kept, per
    socket (inode): the members of an SO_REUSEPORT group are sampled one by one.

    With `counters`, ListenOverflows and ListenDrops are read at the first and the last
    sample, so that overflows in the window can be set against the listeners seen full."""

    def __init__(self, source: str = "interval", counters: bool = False) -> None:
        self.seen: dict[int, ListenerSample] = {}
        self.source = source
        self.counters = counters
        self.samples = 0
        self.started: float | None = None
        self.ended: float | None = None
        self.first: tuple[int, int] | None = None
        self.last: tuple[int, int] | None = None

    def sample(self) -> None:
        import time

        builder = CensusBuilder("netlink", None)
        netlink_census(builder, states=LISTEN_MASK, parallel=False)  # small: one process
        now = time.monotonic()
        if self.started is None:
            self.started = now
        self.ended = now
        self.samples += 1
        if self.counters:
            got = _listen_counters()
            if got is not None:
                if self.first is None:
                    self.first = got
                self.last = got
        for lst in builder.listeners:
            key = lst.inode or hash((lst.family, lst.address, lst.port))
            s = self.seen.get(key)
            if s is None:
                s = self.seen[key] = ListenerSample(lst.address, lst.port, lst.backlog,
                                                    inode=lst.inode, family=lst.family)
            s.samples += 1
            s.max_queue = max(s.max_queue, lst.accept_queue)
            if lst.accept_queue >= max(lst.backlog, 1):
                s.samples_at_limit += 1
            if lst.accept_queue > lst.backlog:
                s.samples_full += 1

    def result(self) -> list[ListenerSample]:
        return sorted(self.seen.values(),
                      key=lambda s: (-s.samples_full, -s.samples_at_limit, -s.max_queue,
                                     s.port, s.inode))

    def window(self) -> ListenerWindow:
        seconds = (self.ended or 0.0) - (self.started or 0.0)
        w = ListenerWindow(self.source, round(seconds, 3), self.samples)
        if self.first is not None and self.last is not None:
            w.overflows_before, w.drops_before = self.first
            w.overflows_after, w.drops_after = self.last
        return w


def _listen_counters() -> tuple[int, int] | None:
    """(ListenOverflows, ListenDrops) of the current namespace, or None if unreadable."""
    from netdiag import readfile
    from netdiag.errors import SourceMissing as Missing

    try:
        lines = readfile.read_text("/proc/net/netstat", "/proc/net/netstat", None,
                                   readfile.MAX_TEXT).splitlines()
    except Missing:
        return None
    for names, values in zip(lines[::2], lines[1::2]):
        if names.startswith("TcpExt:"):
            row = dict(zip(names.split()[1:], values.split()[1:]))
            try:
                return int(row["ListenOverflows"]), int(row["ListenDrops"])
            except (KeyError, ValueError):
                return None
    return None


def sample_listeners(seconds: float, step: float = 0.2) -> ListenerSampler:
    """Sample every listener's accept queue every `step` seconds for `seconds`."""
    import time

    sampler = ListenerSampler("interval")
    deadline = time.monotonic() + seconds
    while True:
        sampler.sample()
        left = deadline - time.monotonic()
        if left <= 0:
            break
        time.sleep(min(step, left))
    return sampler


# ---- a second look at the flows that matter ---------------------------------------------

INET_DIAG_NOCOOKIE = 0xFFFFFFFF
_SOCKID = struct.Struct("!HH16s16s")  # sport, dport (network order), src, dst


def _address_bytes(family: int, text: str) -> bytes:
    import ipaddress

    addr = ipaddress.ip_address(text)
    if family == 10 and addr.version == 4:  # an IPv4-mapped IPv6 socket, printed as IPv4
        addr = ipaddress.IPv6Address("::ffff:" + text)
    return addr.packed.ljust(16, b"\0")


def _exact_request(conn: Connection, seq: int) -> bytes:
    """SOCK_DIAG_BY_FAMILY for one socket (no dump flag): the kernel looks the 4-tuple up
    (inet_diag_find_one_icsk()) and answers with that socket alone, or ENOENT."""
    body = struct.pack("=BBBBI", conn.family, IPPROTO_TCP, EXT_MASK, 0, ALL_STATES)
    body += _SOCKID.pack(conn.sport, conn.dport, _address_bytes(conn.family, conn.source),
                         _address_bytes(conn.family, conn.destination))
    body += struct.pack("=III", 0, INET_DIAG_NOCOOKIE, INET_DIAG_NOCOOKIE)
    return _HDR.pack(_HDR.size + len(body), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST, seq, 0) + body


def query_flows(conns: list[Connection]) -> dict[tuple, tuple[dict, dict]]:
    """tcp_info and skmeminfo of each connection now, by key; a socket gone meanwhile is
    absent from the result."""
    out: dict[tuple, tuple[dict, dict]] = {}
    if not conns:
        return out
    sock = _open_netlink()
    buf = bytearray(RECV_SIZE)
    try:
        for seq, conn in enumerate(conns, 1):
            try:
                sock.send(_exact_request(conn, seq))
                n = sock.recv_into(buf, RECV_SIZE)
            except OSError:
                continue
            if n < 16:
                continue
            mlen, mtype = struct.unpack_from("=IH", buf, 0)
            if mtype != SOCK_DIAG_BY_FAMILY or mlen > n or mlen < MSG_SIZE:
                continue  # NLMSG_ERROR: ENOENT when the connection closed meanwhile
            # The lookup falls back to a listener on the local address: only the same
            # connection (same ports, not LISTEN, same inode when known) counts.
            (_, _, _, state, _, sport, dport, _, _, _, _, inode) = _MSG.unpack_from(buf, 0)
            if state == LISTEN or (swap16(sport), swap16(dport)) != (conn.sport, conn.dport) \
                    or (conn.inode and inode != conn.inode):
                continue
            out[conn.key] = decode_attributes(buf, MSG_SIZE, mlen)
    finally:
        sock.close()
    return out


def resample_flows(details: ConnectionDetails, wait: float) -> None:
    """Look again at the active flows after `wait` seconds, so that their limitation is
    judged over a known window (deltas of busy, rwnd- and sndbuf-limited time) rather than
    over the connection's whole life. Costs two exact lookups per flow, not a second dump."""
    import time

    flows = [c for c in details.flows if c.idle_ms < ACTIVE_MS]
    if not flows:
        return
    t0 = time.monotonic()
    first = query_flows(flows)
    time.sleep(wait)
    second = query_flows([c for c in flows if c.key in first])
    seconds = time.monotonic() - t0
    resampled = False
    for conn in flows:
        if conn.key in first and conn.key in second:
            (i0, s0), (i1, s1) = first[conn.key], second[conn.key]
            conn.earlier = Connection(conn.source, conn.sport, conn.destination, conn.dport,
                                      conn.inode, conn.timer, i0, s0, conn.family)
            conn.info, conn.skmem = i1, s1
            conn.sample_seconds = round(seconds, 3)
            resampled = True
    if resampled:
        details.flow_sample = "second sample"


# A recorded capture is input like any other file: refused past this size, and every chunk
# checked (record and attribute lengths, family, state) before the census parser sees it,
# so a crafted or bit-flipped file is one clear error, never a crash or unbounded work.
MAX_CAPTURE = 2 << 30
_FAMILIES = (2, 10)
_RTA_LEN = struct.Struct("=H")


def check_chunk(buf, n: int) -> str | None:
    """Why buf[:n] is not a well-formed sock_diag reply chunk (None: it is)."""
    off = 0
    while off < n:
        if off + _HDR.size > n:
            return f"a message header runs past the chunk at offset {off}"
        mlen, mtype = _HDR.unpack_from(buf, off)[:2]
        if mlen < _HDR.size or off + mlen > n:
            return f"message length {mlen} at offset {off} does not fit the chunk"
        if mtype in (SOCK_DIAG_BY_FAMILY, TCPDIAG_GETSOCK):
            if mlen < _MSG.size:
                return f"a socket record of {mlen} bytes at offset {off} is too short"
            family, state = buf[off + 16], buf[off + 17]
            if family not in _FAMILIES:
                return f"address family {family} at offset {off} is not IPv4 or IPv6"
            if state >= 16:
                return f"TCP state {state} at offset {off} does not exist"
            a, end = off + _MSG.size, off + mlen
            while a + 4 <= end:
                (alen,) = _RTA_LEN.unpack_from(buf, a)
                if alen < 4 or a + alen > end:
                    return f"attribute length {alen} at offset {a} does not fit its record"
                a += (alen + 3) & ~3
        elif mtype == NLMSG_ERROR:
            if mlen < _HDR.size + _ERR.size:
                return f"an error message of {mlen} bytes at offset {off} is too short"
        elif mtype != NLMSG_DONE:
            return f"message type {mtype} at offset {off} is not a sock_diag reply"
        off += (mlen + 3) & ~3
    return None


def replay_census(path: str, builder: CensusBuilder, display: str | None = None,
                  root: str | None = None) -> None:
    """Feed a recorded capture (what `netlink_census(capture=...)` wrote) to the builder.
    The capture is hostile input: any defect is one SourceMissing naming the chunk."""
    from netdiag import readfile
    from netdiag.errors import Unreadable

    display = display or path
    fd = readfile.open_file(path, display, root)
    try:
        size = os.fstat(fd).st_size
        if size > MAX_CAPTURE:
            raise Unreadable(f"{display}: larger than {MAX_CAPTURE >> 30} GiB; not read")
        buf = bytearray(RECV_SIZE + _MSG.size)
        with os.fdopen(fd, "rb", closefd=False) as fh:
            chunk = 0
            while True:
                head = fh.read(4)
                if not head:
                    return
                chunk += 1
                if len(head) != 4:
                    raise Unreadable(f"{display}: capture is truncated (chunk {chunk})")
                (n,) = struct.unpack("=I", head)
                if n > RECV_SIZE:
                    raise Unreadable(f"{display}: chunk {chunk} claims {n} bytes, more than "
                                     f"a sock_diag read ({RECV_SIZE}); not a capture")
                data = fh.read(n)
                if len(data) != n:
                    raise Unreadable(f"{display}: capture is truncated (chunk {chunk})")
                buf[:n] = data
                why = check_chunk(buf, n)
                if why is not None:
                    raise Unreadable(f"{display}: chunk {chunk}: {why}; not a valid capture")
                try:
                    parse_chunk(buf, n, builder)
                except NetlinkError as exc:
                    raise Unreadable(f"{display}: chunk {chunk} records a failed dump "
                                     f"({exc})") from None
    except OSError as exc:
        raise Unreadable(f"{display}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)


# ---- /proc/net/tcp{,6} fallback --------------------------------------------------------

_LITTLE = sys.byteorder == "little"


def decode_proc_address(hexaddr: str) -> bytes:
    """/proc/net/tcp prints each 32-bit word of the address in host byte order."""
    raw = bytes.fromhex(hexaddr)
    if _LITTLE:
        raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return raw.ljust(16, b"\0")


def parse_proc_tcp(lines, family: int, builder: CensusBuilder, listeners: bool,
                   path: str) -> list[int]:
    """Feed the LISTEN rows (listeners=True) or all other rows to the builder.

    Returns the numbers of malformed lines (skipped, not fatal).
    """
    bad: list[int] = []
    cache: dict[str, bytes] = {}
    add = builder.add
    count = 0
    for lineno, line in enumerate(lines, 1):
        if lineno == 1:
            continue  # header
        fields = line.split()
        if not fields:
            continue
        try:
            st = fields[3]
            if (st == "0A") != listeners:
                continue
            lhex, lport = fields[1].split(":")
            rhex, rport = fields[2].split(":")
            tx, rx = fields[4].split(":")
            timer = int(fields[5].split(":")[0], 16)
            inode = int(fields[9])
            src = cache.get(lhex)
            if src is None:
                src = cache[lhex] = decode_proc_address(lhex)
            dst = cache.get(rhex)
            if dst is None:
                dst = cache[rhex] = decode_proc_address(rhex)
            add(family, int(st, 16), timer, src, int(lport, 16), dst, int(rport, 16),
                int(rx, 16), int(tx, 16), inode)
        except (ValueError, IndexError):
            if not listeners:  # each line is seen by both passes; report it once
                bad.append(lineno)
            continue
        count += 1
        if count % 512 == 0:
            builder.batch_done()
    return bad


def proc_census(ctx: Context, builder: CensusBuilder) -> list[str]:
    """Read proc/net/tcp and tcp6 (two passes each: listeners first), streamed and bounded
    (netdiag.readfile). Returns warnings."""
    from netdiag import readfile

    warnings: list[str] = []
    root = None if ctx.live else ctx.root
    for rel, family in (("proc/net/tcp", 2), ("proc/net/tcp6", 10)):
        path = ctx.path(rel)
        if not os.path.lexists(path):
            if family == 10:
                continue  # IPv6 disabled
            raise SourceMissing(readfile.absent(ctx.display(rel), root))
        bad: list[int] = []
        for listeners in (True, False):
            lines = readfile.iter_lines(path, ctx.display(rel), root)
            bad += parse_proc_tcp(lines, family, builder, listeners, ctx.display(rel))
        if bad:
            builder.skipped_lines += len(bad)
            first = ", ".join(str(n) for n in sorted(bad)[:5])
            warnings.append(f"{ctx.display(rel)}: skipped {len(bad)} malformed line(s) "
                            f"(line {first})")
    return warnings


def read_census(ctx: Context, ephemeral: tuple[int, int] | None,
                owners: dict[int, int] | None = None, states: set[int] | None = None,
                port: int | None = None, top: int = 20, details: bool = False,
                resample: float = 0.0, young_ms: int | None = None,
                ) -> tuple[Census, ConnectionDetails | None, list[str]]:
    """The census of the current network namespace, with per-connection details (tcp_info,
    skmeminfo) when asked. Returns both and any warnings to report. With `resample` seconds,
    the active flows among the details are looked at again after that wait. A census of some
    states or of one port says so (`filtered`): its counts are not the namespace's."""
    census, result, warnings = _read_census(ctx, ephemeral, owners, states, port, top,
                                            details, resample, young_ms)
    census.filtered = bool(states) or port is not None
    return census, result, warnings


def _read_census(ctx: Context, ephemeral: tuple[int, int] | None,
                 owners: dict[int, int] | None, states: set[int] | None, port: int | None,
                 top: int, details: bool, resample: float, young_ms: int | None,
                 ) -> tuple[Census, ConnectionDetails | None, list[str]]:
    warnings: list[str] = []
    detail = DetailBuilder() if details else None
    capture = ctx.path("sockdiag.bin")
    if not ctx.live and os.path.lexists(capture):
        builder = CensusBuilder("netlink (recorded)", ephemeral, owners, states, port)
        builder.young_ms = young_ms
        _attach(builder, detail)
        replay_census(str(capture), builder, ctx.display("sockdiag.bin"), str(ctx.root))
        return builder.finish(top), _finish(detail, warnings), warnings
    if ctx.live and not os.environ.get("NETDIAG_NO_NETLINK"):
        # The kernel filters by state (the dump's state mask): the builder need not, and
        # keeps its inline fast path.
        builder = CensusBuilder("netlink", ephemeral, owners, None, port)
        builder.young_ms = young_ms
        _attach(builder, detail)
        mask = ALL_STATES
        if states:
            mask = 0
            for s in states:
                mask |= 1 << s
        try:
            netlink_census(builder, states=mask, ext=EXT_MASK if details else 0)
            census = builder.finish(top)
            result = _finish(detail, warnings)
            if result is not None and resample > 0:
                resample_flows(result, resample)
            return census, result, warnings
        except SourceMissing as exc:
            warnings.append(f"{exc}; fell back to /proc/net/tcp (slower, no timers detail)")
    builder = CensusBuilder("/proc/net/tcp", ephemeral, owners, states, port)
    warnings += proc_census(ctx, builder)
    if details:
        warnings.append("per-connection details (tcp_info, buffers) need netlink sock_diag; "
                        "/proc/net/tcp does not carry them")
    return builder.finish(top), None, warnings


def _attach(builder: CensusBuilder, detail: DetailBuilder | None) -> None:
    builder.detail = detail
    if detail is not None:
        detail.listen_ports = builder.listen_ports  # filled by the listener dump first


def _finish(detail: DetailBuilder | None, warnings: list[str]) -> ConnectionDetails | None:
    if detail is None:
        return None
    result = detail.finish()
    if result.established and not result.with_info:
        warnings.append("sock_diag returned no tcp_info for established connections "
                        "(a recording made without attributes?)")
    return result
