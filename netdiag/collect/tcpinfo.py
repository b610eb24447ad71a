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

    def _push(self, heap: list, score: int, make) -> None:
        self._seq += 1
        if len(heap) < self.top:
            heapq.heappush(heap, (score, self._seq, make()))
        elif score > heap[0][0]:
            heapq.heapreplace(heap, (score, self._seq, make()))

    def add(self, buf, start: int, end: int, family: int, src: bytes, sport: int, dst: bytes,
            dport: int, timer: int, inode: int) -> None:
        """Parse the attributes in buf[start:end] (after the inet_diag_msg) and count."""
        d = self.d
        d.established += 1
        if timer == 2:
            d.keepalive_timer += 1
        elif timer == 0:
            d.no_timer += 1
        elif timer in (1, 4):
            d.retransmit_timer += 1
        info_raw = skmem_raw = None
        off = start
        while off + 4 <= end:
            rta_len, rta_type = _RTA.unpack_from(buf, off)
            if rta_len < 4:
                break
            if rta_type == INET_DIAG_INFO:
                info_raw = bytes(buf[off + 4 : off + rta_len])
            elif rta_type == INET_DIAG_SKMEMINFO:
                skmem_raw = bytes(buf[off + 4 : off + rta_len])
            off += (rta_len + 3) & ~3
        if info_raw is None:
            return
        d.with_info += 1
        info = decode_tcp_info(info_raw)
        skmem = decode_skmeminfo(skmem_raw) if skmem_raw else {}

        def make() -> Connection:
            return Connection(format_address(family, src), sport, format_address(family, dst),
                              dport, inode, {0: "off", 1: "on", 2: "keepalive",
                                             4: "persist"}.get(timer, "unknown"), info, skmem)

        idle = min(info.get("last_data_recv", 0), info.get("last_data_sent", 0))
        if idle >= d.long_idle_ms:
            if timer == 0:
                d.long_idle_without_keepalive += 1
                self._push(self._idle, idle, make)
            elif timer == 2:
                d.long_idle_with_keepalive += 1
        bdp = info.get("delivery_rate", 0) * info.get("rtt", 0) // 1_000_000
        if bdp:
            self._push(self._bdp, bdp, make)
        limited = info.get("sndbuf_limited", 0) + info.get("rwnd_limited", 0)
        if limited:
            self._push(self._limited, limited, make)
        drops = skmem.get("drops", 0)
        if drops:
            d.sockets_with_drops += 1
            self._push(self._drops, drops, make)

    def finish(self) -> ConnectionDetails:
        d = self.d
        d.idle_without_keepalive = [c for _, _, c in sorted(self._idle, reverse=True)]
        d.largest_bdp = [c for _, _, c in sorted(self._bdp, reverse=True)]
        d.buffer_limited = [c for _, _, c in sorted(self._limited, reverse=True)]
        d.socket_drops = [c for _, _, c in sorted(self._drops, reverse=True)]
        return d
