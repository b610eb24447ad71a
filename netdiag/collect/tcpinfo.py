"""Per-connection detail from sock_diag attributes: tcp_info and skmeminfo.

Requested only when a rule needs it (keepalive, buffers), in the same dump as the census.
Aggregated as it streams: counts, and bounded top-N heaps of the connections worth naming.
Offsets follow struct tcp_info in include/uapi/linux/tcp.h; kernels append fields over
time, so each field is read only when the attribute is long enough to hold it.
"""

from __future__ import annotations

import heapq
import struct

from netdiag.facts import Connection, ConnectionDetails, format_address

INET_DIAG_INFO = 2
INET_DIAG_SKMEMINFO = 7
EXT_MASK = (1 << (INET_DIAG_INFO - 1)) | (1 << (INET_DIAG_SKMEMINFO - 1))

_RTA = struct.Struct("=HH")
_U32 = struct.Struct("=I")
_U64 = struct.Struct("=Q")
# skmeminfo: SK_MEMINFO_RMEM_ALLOC, RCVBUF, WMEM_ALLOC, SNDBUF, FWD_ALLOC, WMEM_QUEUED,
# OPTMEM, BACKLOG, DROPS (the last two since 3.?/4.?; read when present).
_SKMEM_FIELDS = ("rmem_alloc", "rcvbuf", "wmem_alloc", "sndbuf", "fwd_alloc",
                 "wmem_queued", "optmem", "backlog", "drops")

# tcp_info byte offsets (u32 unless noted).
OFF = {
    "rto": 8, "snd_mss": 16, "rcv_mss": 20, "unacked": 24, "retrans": 36,
    "last_data_sent": 44, "last_ack_sent": 48, "last_data_recv": 52, "last_ack_recv": 56,
    "rcv_ssthresh": 64, "rtt": 68, "rttvar": 72, "snd_cwnd": 80, "rcv_rtt": 92,
    "rcv_space": 96, "total_retrans": 100, "min_rtt": 148,
}
_TIMERS = {0: "off", 1: "on", 2: "keepalive", 4: "persist"}
# The fields the rules decide on, in one read: last_data_sent (44), last_data_recv (52),
# rtt (68), delivery_rate (160), busy_time (168), rwnd_limited (176), sndbuf_limited (184).
_HOT = struct.Struct("=44xI4xI12xI88xQQQQ")
OFF64 = {"bytes_acked": 120, "bytes_received": 128, "delivery_rate": 160, "busy_time": 168,
         "rwnd_limited": 176, "sndbuf_limited": 184, "bytes_sent": 200}

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
        out["delivery_rate_app_limited"] = raw[7] & 1
    return out


def decode_skmeminfo(raw: bytes) -> dict[str, int]:
    count = min(len(raw) // 4, len(_SKMEM_FIELDS))
    values = struct.unpack_from(f"={count}I", raw, 0)
    return dict(zip(_SKMEM_FIELDS, values))


class DetailBuilder:
    """Receives established connections with their attribute bytes; keeps bounded tops."""

    def __init__(self, top: int = 10) -> None:
        self.top = top
        self.d = ConnectionDetails()
        self._idle: list = []
        self._bdp: list = []
        self._limited: list = []
        self._drops: list = []
        self._seq = 0

    def _push(self, heap: list, score: int, conn: Connection) -> None:
        self._seq += 1
        if len(heap) < self.top:
            heapq.heappush(heap, (score, self._seq, conn))
        else:
            heapq.heapreplace(heap, (score, self._seq, conn))

    def _qualifies(self, heap: list, score: int) -> bool:
        return bool(score) and (len(heap) < self.top or score > heap[0][0])

    def add(self, buf, start: int, end: int, family: int, src: bytes, sport: int, dst: bytes,
            dport: int, timer: int, inode: int) -> None:
        """Read the attributes in buf[start:end] (after the inet_diag_msg) and count.

        Hot path: locate the attributes without copying, read the seven tcp_info fields the
        rules decide on with one struct, and decode a connection fully only when it enters
        one of the top-N heaps.
        """
        d = self.d
        d.established += 1
        if timer == 2:
            d.keepalive_timer += 1
        elif timer == 0:
            d.no_timer += 1
        elif timer in (1, 4):
            d.retransmit_timer += 1
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
            (lds, ldr, rtt, rate, _busy, rwnd_lim, snd_lim) = _HOT.unpack_from(buf, info_off)
        else:  # an older, shorter tcp_info: decode what it has
            info = decode_tcp_info(bytes(buf[info_off:info_off + info_len]))
            lds, ldr = info.get("last_data_sent", 0), info.get("last_data_recv", 0)
            rtt, rate = info.get("rtt", 0), info.get("delivery_rate", 0)
            rwnd_lim, snd_lim = info.get("rwnd_limited", 0), info.get("sndbuf_limited", 0)
        drops = _U32.unpack_from(buf, skmem_off + 32)[0] if skmem_len >= 36 else 0
        idle = ldr if ldr < lds else lds
        idle_score = 0
        if idle >= d.long_idle_ms:
            if timer == 0:
                d.long_idle_without_keepalive += 1
                idle_score = idle
            elif timer == 2:
                d.long_idle_with_keepalive += 1
        bdp = rate * rtt // 1_000_000
        limited = snd_lim + rwnd_lim
        if drops:
            d.sockets_with_drops += 1
        # Hot path: decide with plain comparisons first; build the Connection (a full decode)
        # only when it enters one of the top-N heaps.
        top = self.top
        ih, bh, lh, dh = self._idle, self._bdp, self._limited, self._drops
        if not ((idle_score and (len(ih) < top or idle_score > ih[0][0]))
                or (bdp and (len(bh) < top or bdp > bh[0][0]))
                or (limited and (len(lh) < top or limited > lh[0][0]))
                or (drops and (len(dh) < top or drops > dh[0][0]))):
            return
        wanted = [(h, score) for h, score in ((ih, idle_score), (bh, bdp), (lh, limited),
                                              (dh, drops)) if self._qualifies(h, score)]
        info = decode_tcp_info(bytes(buf[info_off:info_off + info_len]))
        skmem = decode_skmeminfo(bytes(buf[skmem_off:skmem_off + skmem_len])) \
            if skmem_len else {}
        conn = Connection(format_address(family, src), sport, format_address(family, dst),
                          dport, inode, _TIMERS.get(timer, "unknown"), info, skmem)
        for h, score in wanted:
            self._push(h, score, conn)

    def finish(self) -> ConnectionDetails:
        d = self.d
        d.idle_without_keepalive = [c for _, _, c in sorted(self._idle, reverse=True)]
        d.largest_bdp = [c for _, _, c in sorted(self._bdp, reverse=True)]
        d.buffer_limited = [c for _, _, c in sorted(self._limited, reverse=True)]
        d.socket_drops = [c for _, _, c in sorted(self._drops, reverse=True)]
        return d
