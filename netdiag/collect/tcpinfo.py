"""Per-connection detail from sock_diag attributes: tcp_info and skmeminfo.

Requested only when a rule needs it (keepalive, buffers), in the same dump as the census.
Aggregated as it streams: counts, per-service keepalive timers, and bounded top-N heaps of
the connections worth naming. Offsets follow struct tcp_info in include/uapi/linux/tcp.h
(checked against the running 6.18 kernel's BTF); kernels append fields over time, so each
field is read only when the attribute is long enough to hold it.
"""

from __future__ import annotations

import heapq
import struct

from netdiag.collect.census import swap16
from netdiag.facts import Connection, ConnectionDetails, KeepaliveGroup, format_address

INET_DIAG_INFO = 2
INET_DIAG_SKMEMINFO = 7
EXT_MASK = (1 << (INET_DIAG_INFO - 1)) | (1 << (INET_DIAG_SKMEMINFO - 1))

# struct inet_diag_msg (include/uapi/linux/inet_diag.h) after the 16-byte nlmsghdr: the
# attributes start right after it, at MSG_SIZE from the start of the netlink message.
MSG_SIZE = 88
MSG_RETRANS = 19  # u8 idiag_retrans: keepalive probes out (timer 2) or RTO retransmits (1)
MSG_EXPIRES = 68  # u32 idiag_expires: ms until the timer fires

_RTA = struct.Struct("=HH")
_U32 = struct.Struct("=I")
_U64 = struct.Struct("=Q")
# skmeminfo: SK_MEMINFO_RMEM_ALLOC, RCVBUF, WMEM_ALLOC, SNDBUF, FWD_ALLOC, WMEM_QUEUED,
# OPTMEM, BACKLOG, DROPS (the last two since 3.?/4.?; read when present).
_SKMEM_FIELDS = ("rmem_alloc", "rcvbuf", "wmem_alloc", "sndbuf", "fwd_alloc",
                 "wmem_queued", "optmem", "backlog", "drops")

# tcp_info byte offsets (u32 unless noted).
OFF = {
    "rto": 8, "ato": 12, "snd_mss": 16, "rcv_mss": 20, "unacked": 24, "retrans": 36,
    "last_data_sent": 44, "last_ack_sent": 48, "last_data_recv": 52, "last_ack_recv": 56,
    "pmtu": 60, "rcv_ssthresh": 64, "rtt": 68, "rttvar": 72, "snd_ssthresh": 76,
    "snd_cwnd": 80, "advmss": 84, "rcv_rtt": 92, "rcv_space": 96, "total_retrans": 100,
    "notsent_bytes": 144, "min_rtt": 148, "snd_wnd": 228, "rcv_wnd": 232,
}
OFF64 = {"pacing_rate": 104, "bytes_acked": 120, "bytes_received": 128, "delivery_rate": 160,
         "busy_time": 168, "rwnd_limited": 176, "sndbuf_limited": 184, "bytes_sent": 200,
         "bytes_retrans": 208}
TCPI_OPT_TIMESTAMPS = 1  # tcpi_options bit (include/uapi/linux/tcp.h)
_TIMERS = {0: "off", 1: "on", 2: "keepalive", 4: "persist"}
# The fields the hot path decides on, in one read: last_data_sent (44), last_data_recv
# (52), last_ack_recv (56), bytes_acked (120), bytes_received (128), busy_time (168),
# rwnd_limited (176), sndbuf_limited (184).
_HOT = struct.Struct("=44xI4xII60xQQ32xQQQ")

# The chunk-level path (DetailBuilder.add_chunk): a record's length, type, state and timer;
# from an attribute's header (rta_len, rta_type), the tcp_info fields the rules decide on
# (as _HOT) and skmeminfo's drops; the ports and inode of a record.
_HEAD = struct.Struct("=IH11xBB")
_INFO_AT = struct.Struct("=HH" + _HOT.format.lstrip("="))
_SKMEM_AT = struct.Struct("=HH32xI")
_PORTS_INODE = struct.Struct("=20xHH60xI")
_MSG = struct.Struct("=IH10xBBBxHH16s16s16xII4xI")  # as the census reads a record
_COMPAT, _BY_FAMILY, _DONE = 18, 20, 3  # TCPDIAG_GETSOCK, SOCK_DIAG_BY_FAMILY, NLMSG_DONE


def _layout(buf, off: int, mlen: int) -> tuple[int, tuple[int, int], int, tuple[int, int]] | None:
    """Where a record of this length keeps its attributes, relative to the record: the
    tcp_info attribute's header offset and (length, type), the same for skmeminfo (offset 0:
    absent). None when its tcp_info is too short for the one-struct read (an older kernel)."""
    info_off, info_len, skmem_off, skmem_len = find_attributes(buf, off + MSG_SIZE, off + mlen)
    if info_len < _HOT.size:
        return None
    skmem = (skmem_off - 4 - off, (skmem_len + 4, INET_DIAG_SKMEMINFO)) if skmem_len >= 36 \
        else (0, (0, 0))
    return (info_off - 4 - off, (info_len + 4, INET_DIAG_INFO), *skmem)


# A connection that sent or received data this recently is a flow worth judging.
ACTIVE_MS = 1000
# A socket that received no data for this long has no data arriving to lose: what its
# skmem drop counter (sk_drops) counted meanwhile are segments TCP discards without loss,
# such as the peer's keepalive probes (out of window: tcp_validate_incoming() answers each
# with an ACK and frees it through tcp_drop_reason(), which adds to sk_drops) or late
# duplicates. Such sockets are counted apart, never ranked among the sockets with drops.
IDLE_DROPS_MS = 10_000
KEEPALIVE_GROUPS_MAX = 512
KEEPALIVE_INODES_KEPT = 4


def decode_tcp_info(raw: bytes) -> dict[str, int]:
    out: dict[str, int] = {}
    n = len(raw)
    for name, off in OFF.items():
        if off + 4 <= n:
            out[name] = _U32.unpack_from(raw, off)[0]
    for name, off in OFF64.items():
        if off + 8 <= n:
            out[name] = _U64.unpack_from(raw, off)[0]
    if n > 7:
        out["state"] = raw[0]
        out["ca_state"] = raw[1]
        out["options"] = raw[5]
        out["snd_wscale"] = raw[6] & 0x0F  # bitfields, low bits first (little-endian ABI)
        out["rcv_wscale"] = raw[6] >> 4
        out["delivery_rate_app_limited"] = raw[7] & 1
    return out


def decode_skmeminfo(raw: bytes) -> dict[str, int]:
    count = min(len(raw) // 4, len(_SKMEM_FIELDS))
    values = struct.unpack_from(f"={count}I", raw, 0)
    return dict(zip(_SKMEM_FIELDS, values))


def find_attributes(buf, start: int, end: int) -> tuple[int, int, int, int]:
    """(offset, length) of the tcp_info and skmeminfo attributes in buf[start:end]."""
    info_off = info_len = skmem_off = skmem_len = 0
    off = start
    rta = _RTA.unpack_from
    while off + 4 <= end:
        rta_len, rta_type = rta(buf, off)
        if rta_len < 4:
            break
        if rta_type == INET_DIAG_INFO:
            info_off, info_len = off + 4, rta_len - 4
        elif rta_type == INET_DIAG_SKMEMINFO:
            skmem_off, skmem_len = off + 4, rta_len - 4
        off += (rta_len + 3) & ~3
    return info_off, info_len, skmem_off, skmem_len


def decode_attributes(buf, start: int, end: int) -> tuple[dict[str, int], dict[str, int]]:
    """tcp_info and skmeminfo of one inet_diag_msg's attributes, fully decoded."""
    info_off, info_len, skmem_off, skmem_len = find_attributes(buf, start, end)
    info = decode_tcp_info(bytes(buf[info_off:info_off + info_len])) if info_len else {}
    skmem = decode_skmeminfo(bytes(buf[skmem_off:skmem_off + skmem_len])) if skmem_len else {}
    return info, skmem


class DetailBuilder:
    """Receives established connections with their attribute bytes; keeps bounded tops."""

    def __init__(self, top: int = 10) -> None:
        self.top = top
        self.d = ConnectionDetails()
        self._idle: list = []
        self._busiest: list = []
        self._limited: list = []
        self._drops: list = []
        self._seq = 0
        self._keepalive: dict[tuple[str, int], KeepaliveGroup] = {}
        # The listening ports (filled by the census before established sockets arrive): an
        # accepted connection's service is its local port, an outgoing one's its remote port.
        self.listen_ports: set[int] = set()
        self._layouts: dict[int, tuple | None] = {}  # record length -> attribute layout

    def _push(self, heap: list, score: int, conn: Connection) -> None:
        self._seq += 1
        if len(heap) < self.top:
            heapq.heappush(heap, (score, self._seq, conn))
        else:
            heapq.heapreplace(heap, (score, self._seq, conn))

    def _qualifies(self, heap: list, score: int) -> bool:
        return bool(score) and (len(heap) < self.top or score > heap[0][0])

    def _keepalive_timer(self, buf, msg: int, sport: int, dport: int, idle_ms: int,
                         inode: int) -> None:
        if sport in self.listen_ports:
            key = ("local_port", sport)
        else:
            key = ("remote_port", dport)
        g = self._keepalive.get(key)
        if g is None:
            if len(self._keepalive) >= KEEPALIVE_GROUPS_MAX:
                return
            g = self._keepalive[key] = KeepaliveGroup(key[0], key[1])
        g.sockets += 1
        if len(g.inodes) < KEEPALIVE_INODES_KEPT and inode:
            g.inodes.append(inode)
        if buf[msg + MSG_RETRANS]:
            g.probing += 1
            return
        estimate = _U32.unpack_from(buf, msg + MSG_EXPIRES)[0] + idle_ms
        if estimate > g.idle_estimate_max_ms:
            g.idle_estimate_max_ms = estimate
        if g.idle_estimate_min_ms is None or estimate < g.idle_estimate_min_ms:
            g.idle_estimate_min_ms = estimate

    def add(self, buf, start: int, end: int, family: int, src: bytes, sport: int, dst: bytes,
            dport: int, timer: int, inode: int) -> None:
        """Read the attributes in buf[start:end] (after the inet_diag_msg) and count.

        Hot path: locate the attributes without copying, read the fields the rules decide on
        with one struct, and decode a connection fully only when it enters one of the top-N
        heaps.
        """
        d = self.d
        d.established += 1
        if timer == 2:
            d.keepalive_timer += 1
        elif timer == 0:
            d.no_timer += 1
        elif timer in (1, 4):
            d.retransmit_timer += 1
        # find_attributes(), inlined: a call per connection is measurable here.
        info_off = info_len = skmem_off = skmem_len = 0
        off = start
        rta = _RTA.unpack_from
        while off + 4 <= end:
            rta_len, rta_type = rta(buf, off)
            if rta_len < 4:
                break
            if rta_type == INET_DIAG_INFO:
                info_off, info_len = off + 4, rta_len - 4
            elif rta_type == INET_DIAG_SKMEMINFO:
                skmem_off, skmem_len = off + 4, rta_len - 4
            off += (rta_len + 3) & ~3
        if not info_len:
            return
        d.with_info += 1
        if info_len >= _HOT.size:
            (lds, ldr, lar, acked, received, _busy, rwnd_lim,
             snd_lim) = _HOT.unpack_from(buf, info_off)
        else:  # an older, shorter tcp_info: decode what it has
            info = decode_tcp_info(bytes(buf[info_off:info_off + info_len]))
            lds, ldr = info.get("last_data_sent", 0), info.get("last_data_recv", 0)
            lar = info.get("last_ack_recv", ldr)
            acked, received = info.get("bytes_acked", 0), info.get("bytes_received", 0)
            rwnd_lim, snd_lim = info.get("rwnd_limited", 0), info.get("sndbuf_limited", 0)
        drops = _U32.unpack_from(buf, skmem_off + 32)[0] if skmem_len >= 36 else 0
        idle = ldr if ldr < lds else lds
        if timer == 2:
            self._keepalive_timer(buf, start - MSG_SIZE, sport, dport,
                                  ldr if ldr < lar else lar, inode)
        idle_score = 0
        if idle >= d.long_idle_ms:
            if timer == 0:
                d.long_idle_without_keepalive += 1
                idle_score = idle
            elif timer == 2:
                d.long_idle_with_keepalive += 1
        bulk = limited = 0
        if idle < ACTIVE_MS:
            d.active_flows += 1
            bulk = acked + received
            limited = snd_lim + rwnd_lim
        if drops:
            d.sockets_with_drops += 1
            if ldr >= IDLE_DROPS_MS:
                d.idle_sockets_with_drops += 1
                drops = 0  # not data lost: kept out of the drops top-N
        # Hot path: decide with plain comparisons first; build the Connection (a full decode)
        # only when it enters one of the top-N heaps.
        top = self.top
        ih, bh, lh, dh = self._idle, self._busiest, self._limited, self._drops
        if not ((idle_score and (len(ih) < top or idle_score > ih[0][0]))
                or (bulk and (len(bh) < top or bulk > bh[0][0]))
                or (limited and (len(lh) < top or limited > lh[0][0]))
                or (drops and (len(dh) < top or drops > dh[0][0]))):
            return
        wanted = [(h, score) for h, score in ((ih, idle_score), (bh, bulk), (lh, limited),
                                              (dh, drops)) if self._qualifies(h, score)]
        info = decode_tcp_info(bytes(buf[info_off:info_off + info_len]))
        skmem = decode_skmeminfo(bytes(buf[skmem_off:skmem_off + skmem_len])) \
            if skmem_len else {}
        conn = Connection(format_address(family, src), sport, format_address(family, dst),
                          dport, inode, _TIMERS.get(timer, "unknown"), info, skmem, family)
        for h, score in wanted:
            self._push(h, score, conn)

    def add_chunk(self, buf, n: int) -> None:
        """Every established connection in buf[:n] (a sock_diag reply chunk), as add() would
        count it, for less: attributes come in the same places for every record of the same
        length (the same attributes asked for, the same kernel), so each length's layout is
        found once and checked per record with the two attribute headers it reads; the
        counters stay in locals for the chunk. A record whose layout differs goes to add()."""
        d = self.d
        layouts = self._layouts
        head = _HEAD.unpack_from
        info_at = _INFO_AT.unpack_from
        skmem_at = _SKMEM_AT.unpack_from
        long_idle = d.long_idle_ms
        top = self.top
        ih, bh, lh, dh = self._idle, self._busiest, self._limited, self._drops
        est = ka = none = rtx = info = long_no_ka = long_ka = active = dropping = 0
        idle_dropping = 0
        idle_drops = IDLE_DROPS_MS
        off = 0
        while off < n:
            mlen, mtype, state, timer = head(buf, off)
            if mtype == _DONE:
                break
            if state != 1 or mlen <= MSG_SIZE or (mtype != _COMPAT and mtype != _BY_FAMILY):
                off += (mlen + 3) & ~3
                if mlen < 16:
                    break  # the census parser raises for this chunk
                continue
            layout = layouts.get(mlen)
            if layout is None:
                layout = layouts[mlen] = _layout(buf, off, mlen)
            if layout:
                i_off, i_head, s_off, s_head = layout
                (rta_len, rta_type, lds, ldr, lar, acked, received, _busy, rwnd_lim,
                 snd_lim) = info_at(buf, off + i_off)
                if (rta_len, rta_type) == i_head:
                    if s_off:
                        rta_len, rta_type, drops = skmem_at(buf, off + s_off)
                        ok = (rta_len, rta_type) == s_head
                    else:
                        drops, ok = 0, True
                else:
                    ok = False
            else:
                ok = False
            if not ok:  # another layout (an ULP's extra attribute...): the full walk
                self._flush(est, ka, none, rtx, info, long_no_ka, long_ka, active, dropping,
                            idle_dropping)
                est = ka = none = rtx = info = long_no_ka = long_ka = active = dropping = 0
                idle_dropping = 0
                self._add_record(buf, off, mlen)
                off += (mlen + 3) & ~3
                continue
            est += 1
            info += 1
            if timer == 2:
                ka += 1
                self._keepalive_record(buf, off, ldr if ldr < lar else lar)
            elif timer == 0:
                none += 1
            elif timer == 1 or timer == 4:
                rtx += 1
            idle = ldr if ldr < lds else lds
            idle_score = bulk = limited = 0
            if idle >= long_idle:
                if timer == 0:
                    long_no_ka += 1
                    idle_score = idle
                elif timer == 2:
                    long_ka += 1
            if idle < ACTIVE_MS:
                active += 1
                bulk = acked + received
                limited = snd_lim + rwnd_lim
            if drops:
                dropping += 1
                if ldr >= idle_drops:
                    idle_dropping += 1
                    drops = 0  # not data lost: kept out of the drops top-N
            if ((idle_score and (len(ih) < top or idle_score > ih[0][0]))
                    or (bulk and (len(bh) < top or bulk > bh[0][0]))
                    or (limited and (len(lh) < top or limited > lh[0][0]))
                    or (drops and (len(dh) < top or drops > dh[0][0]))):
                self._enter_tops(buf, off, mlen, timer, idle_score, bulk, limited, drops)
            off += (mlen + 3) & ~3
        self._flush(est, ka, none, rtx, info, long_no_ka, long_ka, active, dropping,
                    idle_dropping)

    def _flush(self, est: int, ka: int, none: int, rtx: int, info: int, long_no_ka: int,
               long_ka: int, active: int, dropping: int, idle_dropping: int) -> None:
        d = self.d
        d.established += est
        d.keepalive_timer += ka
        d.no_timer += none
        d.retransmit_timer += rtx
        d.with_info += info
        d.long_idle_without_keepalive += long_no_ka
        d.long_idle_with_keepalive += long_ka
        d.active_flows += active
        d.sockets_with_drops += dropping
        d.idle_sockets_with_drops += idle_dropping

    def _add_record(self, buf, off: int, mlen: int) -> None:
        (_, _, family, _, timer, sport, dport, src, dst, _, _, inode) = _MSG.unpack_from(buf, off)
        self.add(buf, off + MSG_SIZE, off + mlen, family, src, swap16(sport), dst, swap16(dport),
                 timer, inode)

    def _keepalive_record(self, buf, off: int, idle_ms: int) -> None:
        sport, dport, inode = _PORTS_INODE.unpack_from(buf, off)
        self._keepalive_timer(buf, off, swap16(sport), swap16(dport), idle_ms, inode)

    def _enter_tops(self, buf, off: int, mlen: int, timer: int, idle_score: int, bulk: int,
                    limited: int, drops: int) -> None:
        """add()'s last step: the connection, decoded fully, into the heaps it qualifies for."""
        (_, _, family, _, _, sport, dport, src, dst, _, _, inode) = _MSG.unpack_from(buf, off)
        info_off, info_len, skmem_off, skmem_len = find_attributes(buf, off + MSG_SIZE,
                                                                   off + mlen)
        wanted = [(h, score) for h, score in ((self._idle, idle_score), (self._busiest, bulk),
                                              (self._limited, limited), (self._drops, drops))
                  if self._qualifies(h, score)]
        info = decode_tcp_info(bytes(buf[info_off:info_off + info_len]))
        skmem = decode_skmeminfo(bytes(buf[skmem_off:skmem_off + skmem_len])) \
            if skmem_len else {}
        conn = Connection(format_address(family, src), swap16(sport),
                          format_address(family, dst), swap16(dport), inode,
                          _TIMERS.get(timer, "unknown"), info, skmem, family)
        for h, score in wanted:
            self._push(h, score, conn)

    def finish(self) -> ConnectionDetails:
        d = self.d
        d.idle_without_keepalive = [c for _, _, c in sorted(self._idle, reverse=True)]
        flows: dict[int, Connection] = {}
        for heap in (self._busiest, self._limited):
            for _, _, c in sorted(heap, reverse=True):
                flows.setdefault(id(c), c)
        d.flows = list(flows.values())
        d.socket_drops = [c for _, _, c in sorted(self._drops, reverse=True)]
        d.keepalive_groups = sorted(self._keepalive.values(),
                                    key=lambda g: (-g.sockets, g.side, g.port))
        return d
