"""The TCP socket table: netlink sock_diag (inet_diag) first, /proc/net/tcp{,6} as fallback.

Both are streamed into a CensusBuilder: nothing here holds more than one receive buffer or
one line at a time. The netlink reader is hand-written (struct.unpack_from over large
receive buffers) because generic netlink libraries build an object per socket, which costs
minutes and gigabytes on a host with a million sockets.
"""

from __future__ import annotations

import array
import errno
import os
import socket
import struct
import sys
from typing import BinaryIO

from netdiag.collect.census import CensusBuilder
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
SOCK_DIAG_BY_FAMILY = 20
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300
IPPROTO_TCP = 6
ALL_STATES = 0xFFF  # TCPF_ESTABLISHED .. TCPF_CLOSING (and SYN_RECV request socks)
LISTEN_MASK = 1 << LISTEN
RECV_SIZE = 1 << 16  # the kernel fills at most ~32 KiB per dump skb; 64 KiB is ample

_HDR = struct.Struct("=IHHII")
# nlmsghdr (length and type; flags, seq and pid skipped) + inet_diag_msg: family, state,
# timer, (retrans skipped), sport, dport (network order, read natively and swapped below),
# src[16], dst[16], (ifindex, cookie, expires skipped), rqueue, wqueue, (uid skipped), inode.
# Fewer fields unpacked is measurably faster on a million sockets.
_MSG = struct.Struct("=IH10xBBBxHH16s16s16xII4xI")
_ERR = struct.Struct("=i")
# Byte-swap table for 16-bit ports, built in C (a Python loop costs ~15 ms at start-up).
_swapped = array.array("H", range(65536))
_swapped.byteswap()
_SWAP = tuple(_swapped)  # a tuple indexes faster than an array in the per-socket loop


def build_request(family: int, states: int, seq: int, ext: int = 0) -> bytes:
    body = struct.pack("=BBBBI", family, IPPROTO_TCP, ext, 0, states) + bytes(48)
    return _HDR.pack(_HDR.size + len(body), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP,
                     seq, 0) + body


class NetlinkError(Exception):
    def __init__(self, code: int) -> None:
        self.code = code
        super().__init__(os.strerror(code))


# States CensusBuilder.add() handles; every other state takes the inline path (TIME_WAIT too,
# with its own branch: hosts in trouble hold hundreds of thousands of them).
_SPECIAL = frozenset((LISTEN, 8))  # LISTEN, CLOSE_WAIT
_TIME_WAIT = 6


def parse_chunk(buf, n: int, builder: CensusBuilder) -> bool:
    """Feed every inet_diag_msg in buf[:n] to the builder. Returns True on NLMSG_DONE.

    Records vary in length (kernels append attributes such as the shutdown state and the
    cgroup id even when none are asked for), so they are walked one by one. The common
    case (an unfiltered census without per-process counts, a socket that is not LISTEN,
    TIME_WAIT or CLOSE_WAIT) is aggregated inline, because a method call per socket costs
    more than the aggregation itself. It must count exactly what CensusBuilder.add()
    counts: the tests compare this path with the /proc/net/tcp path, which uses add().
    """
    unpack = _MSG.unpack_from
    swap = _SWAP
    add = builder.add
    fast = builder.states is None and builder.port is None and builder.owners is None
    per_state = builder.state_counts
    timers = builder.timer_counts
    by_port = builder.local_port.counts
    by_peer = builder.peer.counts
    by_dest = builder.dest.counts
    listen_ports = builder.listen_ports
    outgoing = builder.outgoing_mask()  # indexed by the raw (network-order) local port
    special = _SPECIAL
    detail = builder.detail
    by_dest_tw = builder.dest_tw.counts
    tw_server = builder.tw_server.counts
    tw_srv = tw_other = 0
    inline = 0
    off = 0
    while off < n:
        (mlen, mtype, family, state, timer, raw_sport, dport, src, dst, rq, wq,
         inode) = unpack(buf, off)
        if mtype == SOCK_DIAG_BY_FAMILY:
            if fast and state not in special:
                per_state[family][state] += 1
                timers[timer & 7] += 1
                k = (family, dst, state)
                by_peer[k] = by_peer.get(k, 0) + 1
                if outgoing[raw_sport]:
                    k = (family, src, dst, swap[dport])
                    if state == _TIME_WAIT:  # this host closed first, as the client;
                        by_dest_tw[k] = by_dest_tw.get(k, 0) + 1  # merged into by_dest
                    else:
                        by_dest[k] = by_dest.get(k, 0) + 1
                else:
                    sport = swap[raw_sport]
                    k = (sport, state)
                    by_port[k] = by_port.get(k, 0) + 1
                    if state == _TIME_WAIT:
                        if sport in listen_ports:  # closed first, as the server
                            k = (sport, family, dst)
                            tw_server[k] = tw_server.get(k, 0) + 1
                            tw_srv += 1
                        else:
                            tw_other += 1
                inline += 1
            else:
                add(family, state, timer, src, swap[raw_sport], dst, swap[dport], rq, wq, inode)
            if detail is not None and state == 1 and mlen > _MSG.size:
                detail.add(buf, off + _MSG.size, off + mlen, family, src, swap[raw_sport], dst,
                           swap[dport], timer, inode)
        elif mtype == NLMSG_DONE:
            builder.total += inline
            _add_roles(builder, tw_srv, tw_other)
            return True
        elif mtype == NLMSG_ERROR:
            (code,) = _ERR.unpack_from(buf, off + 16)
            if code:
                raise NetlinkError(-code)
        if mlen < 16:
            raise NetlinkError(errno.EPROTO)
        off += (mlen + 3) & ~3
    builder.total += inline
    _add_roles(builder, tw_srv, tw_other)
    builder.batch_done()
    return False


def _add_roles(builder: CensusBuilder, server: int, other: int) -> None:
    # Client-side TIME_WAIT is counted from the per-destination table at finish().
    roles = builder.tw_roles
    roles["server"] += server
    roles["other"] += other


def _dump(sock: socket.socket, family: int, states: int, seq: int, builder: CensusBuilder,
          capture: BinaryIO | None, ext: int = 0) -> None:
    sock.send(build_request(family, states, seq, ext))
    # Padding after RECV_SIZE lets unpack_from read a full record even at a short message.
    buf = bytearray(RECV_SIZE + _MSG.size)
    recv_into = sock.recv_into
    while True:
        n = recv_into(buf, RECV_SIZE)
        if n == 0:
            raise NetlinkError(errno.EPROTO)
        if capture is not None:
            capture.write(struct.pack("=I", n) + bytes(buf[:n]))
        if parse_chunk(buf, n, builder):
            return


def _open_netlink() -> socket.socket:
    try:
        return socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                             NETLINK_SOCK_DIAG)
    except OSError as exc:
        raise SourceMissing(f"netlink sock_diag unavailable: {exc.strerror}") from None


def netlink_census(builder: CensusBuilder, capture: BinaryIO | None = None,
                   states: int = ALL_STATES, ext: int = 0) -> None:
    """Dump listeners (IPv4, IPv6) first, then the rest, into the builder. `ext` asks for
    attributes (tcp_info, skmeminfo) with the non-listening sockets."""
    sock = _open_netlink()
    try:
        seq = 1
        no_ipv6 = False
        # Listeners of both families first: the rest is classified against their ports.
        for mask in (states & LISTEN_MASK, states & ~LISTEN_MASK):
            for family in (2, 10):
                if not mask or (family == 10 and no_ipv6):
                    continue
                try:
                    _dump(sock, family, mask, seq, builder, capture,
                          ext if not mask & LISTEN_MASK else 0)
                except NetlinkError as exc:
                    # No IPv6 in this kernel: the v4 census stands on its own.
                    if family == 10 and exc.code in (errno.ENOENT, errno.EAFNOSUPPORT):
                        no_ipv6 = True
                        continue
                    raise SourceMissing(f"sock_diag dump failed: {exc}") from None
                seq += 1
    finally:
        sock.close()


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
        netlink_census(builder, states=LISTEN_MASK)
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
            if state == LISTEN or (_SWAP[sport], _SWAP[dport]) != (conn.sport, conn.dport) \
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
        if mtype == SOCK_DIAG_BY_FAMILY:
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
            raise SourceMissing(f"{ctx.display(rel)} does not exist")
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
                resample: float = 0.0,
                ) -> tuple[Census, ConnectionDetails | None, list[str]]:
    """The census of the current network namespace, with per-connection details (tcp_info,
    skmeminfo) when asked. Returns both and any warnings to report. With `resample` seconds,
    the active flows among the details are looked at again after that wait."""
    warnings: list[str] = []
    detail = DetailBuilder() if details else None
    capture = ctx.path("sockdiag.bin")
    if not ctx.live and os.path.lexists(capture):
        builder = CensusBuilder("netlink (recorded)", ephemeral, owners, states, port)
        _attach(builder, detail)
        replay_census(str(capture), builder, ctx.display("sockdiag.bin"), str(ctx.root))
        return builder.finish(top), _finish(detail, warnings), warnings
    if ctx.live and not os.environ.get("NETDIAG_NO_NETLINK"):
        # The kernel filters by state (the dump's state mask): the builder need not, and
        # keeps its inline fast path.
        builder = CensusBuilder("netlink", ephemeral, owners, None, port)
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
