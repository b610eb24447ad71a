"""From kernel maps to typed probe results (netdiag.probefacts).

Readers see the maps through a small interface (`items(name)`: key/value pairs; `values(name)`:
an array's values in index order), so the same code reads a live bcc object and a recorded
fixture (tests/fixtures/probes/NAME.json). They judge nothing.
"""

from __future__ import annotations

import errno as errno_mod
from dataclasses import dataclass, field
from typing import Any

from netdiag.ebpf import tracefs
from netdiag.facts import TCP_STATES, format_address
from netdiag.probefacts import (
    BacklogResult,
    Bucket,
    BufferSet,
    CloseWait,
    DropPort,
    DropReason,
    DropsResult,
    EpollRegistration,
    ErrnoCount,
    ErrorsResult,
    Failure,
    FlowCount,
    Growth,
    KsoftirqdCpu,
    LimitHit,
    ListenCall,
    Listener,
    PortCount,
    ProtocolCount,
    RcvbufResult,
    ReceivedReset,
    ResetsResult,
    Retransmits,
    RetransResult,
    SentReset,
    SoftirqCpu,
    SoftirqResult,
    StatesResult,
    Transition,
    WaitingPort,
    WakeupsResult,
    WorkerThread,
)

AF_INET, AF_INET6 = 2, 10
FAMILY = {AF_INET: "ipv4", AF_INET6: "ipv6"}
ETHERTYPE = {0x0800: "ipv4", 0x86DD: "ipv6", 0x0806: "arp"}
L4 = {6: "tcp", 17: "udp"}
SOCK_TYPE = {1: "stream", 2: "dgram"}
OPTNAMES = {7: "SO_SNDBUF", 8: "SO_RCVBUF", 32: "SO_SNDBUFFORCE", 33: "SO_RCVBUFFORCE"}
SOFTIRQ_VEC = {2: "NET_TX", 3: "NET_RX"}
# x86-64 system call numbers the errors probe follows (arch/x86/entry/syscalls/syscall_64.tbl)
SYSCALLS = {0: "read", 1: "write", 19: "readv", 20: "writev", 42: "connect", 43: "accept",
            44: "sendto", 45: "recvfrom", 46: "sendmsg", 47: "recvmsg", 49: "bind",
            55: "getsockopt",
            288: "accept4", 299: "recvmmsg", 307: "sendmmsg"}
NR_GETSOCKOPT = 55


@dataclass
class ReadContext:
    formats: dict[str, str] = field(default_factory=dict)  # "cat:event" -> format text
    enabled: set[str] = field(default_factory=set)  # C functions of the enabled hooks
    seconds: float = 0.0
    now_ns: int = 0  # CLOCK_MONOTONIC now (bpf_ktime_get_ns's clock)
    epoll_known: bool = False  # the wakeups probe could tell epoll entries apart
    samples: tuple[Any, Any] | None = None  # the probe's `sample` at the window's two ends


def text(raw: Any) -> str:
    if isinstance(raw, str):
        return raw
    return bytes(raw).split(b"\0", 1)[0].decode(errors="replace")


def address(family: int, raw: Any) -> str:
    data = bytes(raw)
    return format_address(AF_INET if family == AF_INET else AF_INET6, data.ljust(16, b"\0"))


def port_or_none(port: int) -> int | None:
    return port or None


def state_name(n: int) -> str:
    return TCP_STATES.get(n, str(n))


def buckets(slots: dict[int, int]) -> list[Bucket]:
    """Slot k of a log2 histogram (probes/common.h slot_of) -> [2^(k-1), 2^k - 1]; slot 0 -> 0."""
    out = []
    for slot, n in sorted(slots.items()):
        if n:
            low = 0 if slot == 0 else 1 << (slot - 1)
            high = 0 if slot == 0 else (1 << slot) - 1
            out.append(Bucket(low, high, n))
    return out


def _sorted_flows(counts: dict[tuple, int], secs: float) -> list[FlowCount]:
    return [FlowCount(lp, peer, rp, n, round(n / secs, 2))
            for (lp, peer, rp), n in sorted(counts.items(), key=lambda kv: -kv[1])]


# ---- states ------------------------------------------------------------------------------

FLOW_PAIRS = {(1, 4): "active_closes", (1, 8): "passive_closes", (2, 1): "connects",
              (2, 7): "failed_connects", (3, 1): "accepted"}
# probes/states.c by_port: a server's rows by local port, one counter each
SERVER_ROWS = ("accepted", "passive_closes", "active_closes")


def from_flows_hash(table: str, row: FlowCount) -> bool:
    """The rows probes/states.c counts in its hash (the others, a server's rows by local
    port, are in an array that cannot fill): every connect and failed connect, and a close
    toward a destination."""
    return table in ("connects", "failed_connects") or row.remote_port is not None


def read_states(maps, ctx: ReadContext) -> StatesResult:
    res = StatesResult()
    secs = max(ctx.seconds, 0.001)
    pairs: dict[tuple[int, int], int] = {}
    flows: dict[str, dict[tuple, int]] = {name: {} for name in FLOW_PAIRS.values()}
    for index, n in enumerate(maps.values("pairs")):
        if n:
            pairs[(index >> 4, index & 15)] = n
    for k, v in maps.items("flows"):
        table = FLOW_PAIRS.get((k.oldstate, k.newstate))
        if table is not None:
            key = (port_or_none(k.lport), address(k.family, k.daddr) if k.rport else None,
                   port_or_none(k.rport))
            flows[table][key] = flows[table].get(key, 0) + v.value
    for k, v in maps.items("by_port"):  # a server's rows: local port, no peer
        for table in SERVER_ROWS:
            n = getattr(v, table)
            if n:
                key = (port_or_none(k.value), None, None)
                flows[table][key] = flows[table].get(key, 0) + n
    res.transitions = [Transition(state_name(a), state_name(b), n)
                       for (a, b), n in sorted(pairs.items(), key=lambda kv: -kv[1])]
    for table, counts in flows.items():
        setattr(res, table, _sorted_flows(counts, secs))
        setattr(res, f"{table}_total", sum(counts.values()))
    counts = maps.values("cw_counts")
    cw = CloseWait(entered=counts[0], left=counts[1], left_entered_before=counts[2])
    waiting: dict[int, list[float]] = {}
    for _sk, v in maps.items("cw_since"):
        if not v.sk or not v.since:
            continue  # claimed or freed while a live view read it: not yet (or no longer) one
        age = max(ctx.now_ns - v.since, 0) / 1e9
        waiting.setdefault(v.lport, []).append(age)
    cw.still_waiting = [WaitingPort(p, len(ages), round(max(ages), 1))
                        for p, ages in sorted(waiting.items(), key=lambda kv: -len(kv[1]))]
    cw.still_waiting_total = sum(len(a) for a in waiting.values())
    cw.left_after_ms = buckets(dict(enumerate(maps.values("cw_ms"))))
    res.close_wait = cw
    return res


# ---- backlog ------------------------------------------------------------------------------

def read_backlog(maps, ctx: ReadContext) -> BacklogResult:
    res = BacklogResult()
    for k, v in maps.items("listens"):
        res.listen_calls.append(ListenCall(inode=k.value, pid=v.tgid, command=text(v.comm),
                                           port=v.port, requested_backlog=v.backlog))
    res.listen_calls.sort(key=lambda c: (c.port, c.pid))
    res.synack_retransmits = [PortCount(k.value, v.value) for k, v in
                              sorted(maps.items("synack"), key=lambda kv: -kv[1].value)]
    return res


# ---- wakeups ------------------------------------------------------------------------------

def read_wakeups(maps, ctx: ReadContext) -> WakeupsResult:
    res = WakeupsResult()
    by_sk: dict[int, Listener] = {}
    for k, v in maps.items("listeners"):
        per_conn = round(v.wakeups / v.ready, 2) if v.ready else None
        by_sk[k.value] = Listener(
            inode=v.inode, port=v.port, family=FAMILY.get(v.family, str(v.family)),
            connections=v.ready, accepted=v.accepted, eagain=v.eagain, errors=v.errors,
            wakeups=v.wakeups, wakeups_per_connection=per_conn, waiters_max=v.waiters_max,
            epoll_waiters_max=v.epoll_max if ctx.epoll_known else None,
            exclusive_waiters_max=v.exclusive_max, sockets_on_port=1)
    for k, v in maps.items("workers"):
        lst = by_sk.get(k.sk)
        if lst is None:
            continue
        lst.threads.append(WorkerThread(pid=v.tgid, tid=k.tid, command=text(v.comm),
                                        woken=v.woken, accepted=v.accepted, eagain=v.eagain,
                                        errors=v.errors))
    for k, v in maps.items("epoll_regs"):
        lst = by_sk.get(k.sk)
        if lst is None:
            continue
        lst.epoll_registrations.append(EpollRegistration(
            pid=k.tgid, command=text(v.comm), adds=v.adds, exclusive_adds=v.exclusive,
            mods=v.mods))
    groups: dict[tuple[int, str], int] = {}
    for lst in by_sk.values():
        groups[(lst.port, lst.family)] = groups.get((lst.port, lst.family), 0) + 1
    for lst in by_sk.values():
        lst.sockets_on_port = groups[(lst.port, lst.family)]
        lst.threads.sort(key=lambda t: (-t.woken, -t.accepted, t.pid, t.tid))
        lst.processes = sorted({t.pid for t in lst.threads} |
                               {r.pid for r in lst.epoll_registrations})
        lst.epoll_registrations.sort(key=lambda r: r.pid)
    res.listeners = sorted(by_sk.values(), key=lambda r: (-r.wakeups, -r.connections, r.port,
                                                            r.inode))
    return res


# ---- drops --------------------------------------------------------------------------------

def read_drops(maps, ctx: ReadContext) -> DropsResult:
    res = DropsResult()
    secs = max(ctx.seconds, 0.001)
    fmt = ctx.formats.get("skb:kfree_skb", "")
    names = tracefs.parse_symbolic(fmt, "reason")
    has_reason = "reason" in tracefs.parse_fields(fmt)
    reasons: dict[str, int] = {}
    proto: dict[str, int] = {}
    ports: dict[tuple, int] = {}
    for k, v in maps.items("drops"):
        name = names.get(k.reason, str(k.reason)) if has_reason else "unknown (no reason field)"
        reasons[name] = reasons.get(name, 0) + v.value
        p = ETHERTYPE.get(k.protocol, hex(k.protocol))
        proto[p] = proto.get(p, 0) + v.value
        if k.l4:
            key = (name, L4.get(k.l4, str(k.l4)), port_or_none(k.port))
            ports[key] = ports.get(key, 0) + v.value
    res.by_reason = [DropReason(r, n, round(n / secs, 2))
                     for r, n in sorted(reasons.items(), key=lambda kv: -kv[1])]
    res.by_port = [DropPort(r, l4, port, n, round(n / secs, 2))
                   for (r, l4, port), n in sorted(ports.items(), key=lambda kv: -kv[1])]
    res.by_protocol = [ProtocolCount(p, n) for p, n in sorted(proto.items(),
                                                               key=lambda kv: -kv[1])]
    res.total = sum(reasons.values())
    res.reasons_known = len(names)
    res.unattributed = maps.values("unattributed")[0]
    return res


# ---- rcvbuf -------------------------------------------------------------------------------

def read_rcvbuf(maps, ctx: ReadContext) -> RcvbufResult:
    res = RcvbufResult()
    res.space_adjust = [PortCount(port_or_none(k.value), v.value) for k, v in
                        sorted(maps.items("adjust"), key=lambda kv: -kv[1].value)]
    res.rcvbuf_growth = [Growth(port_or_none(k.value), v.count, v.max_rcvbuf, v.last_rcvbuf)
                         for k, v in sorted(maps.items("grow"), key=lambda kv: -kv[1].count)]
    full = limit = 0
    for k, v in sorted(maps.items("limits"), key=lambda kv: -kv[1].value):
        kind = "receive_queue_full" if k.kind == 0 else "memory_limit"
        res.limits.append(LimitHit(port_or_none(k.lport), FAMILY.get(k.family, str(k.family)),
                                   kind, v.value))
        if k.kind == 0:
            full += v.value
        else:
            limit += v.value
    res.receive_queue_full = full if "np_rcvqueue_full" in ctx.enabled else None
    res.memory_limit = limit if "np_exceed_limit" in ctx.enabled else None
    res.buffer_fixed_by = [
        BufferSet(pid=k.tgid, command=text(k.comm), option=OPTNAMES.get(k.optname,
                                                                         str(k.optname)),
                  value=k.value, family=FAMILY.get(k.family, str(k.family)),
                  socket_type=SOCK_TYPE.get(k.type, str(k.type)), calls=v.value)
        for k, v in sorted(maps.items("setopts"), key=lambda kv: -kv[1].value)]
    return res


# ---- softirq ------------------------------------------------------------------------------

SOFTIRQ_SLOTS = 64  # probes/softirq.c: histogram slots per softirq
NET_TX = 2  # the first softirq vector counted


def read_softirq(maps, ctx: ReadContext) -> SoftirqResult:
    """Per-CPU arrays: histogram index (vec - NET_TX) * SLOTS + slot, totals by vec - NET_TX;
    each CPU's value is that CPU's. ksoftirqd time: the scheduler's own per-thread
    accounting read at both ends of the window (ctx.samples)."""
    res = SoftirqResult()

    def hist(name: str) -> dict[tuple[int, int], dict[int, int]]:
        out: dict[tuple[int, int], dict[int, int]] = {}
        for index, cpu, value in maps.per_cpu(name):
            vec, slot = divmod(index, SOFTIRQ_SLOTS)
            out.setdefault((vec + NET_TX, cpu), {})[slot] = value
        return out

    lat, run = hist("latency_us"), hist("runtime_us")
    totals = {(i + NET_TX, cpu): v for i, cpu, v in maps.per_cpu("total_ns")}
    counts = {(i + NET_TX, cpu): v for i, cpu, v in maps.per_cpu("count")}
    secs = max(ctx.seconds, 0.001)
    for key in sorted(set(lat) | set(run) | set(totals) | set(counts)):
        vec, cpu = key
        res.per_cpu.append(SoftirqCpu(
            softirq=SOFTIRQ_VEC.get(vec, str(vec)), cpu=cpu, runs=counts.get(key, 0),
            time_ms=round(totals.get(key, 0) / 1e6, 2),
            cpu_share=round(totals.get(key, 0) / 1e9 / secs, 4),
            latency_us=buckets(lat.get(key, {})), runtime_us=buckets(run.get(key, {}))))
    if ctx.samples is not None:  # ksoftirqd/N time on CPU (ns) at both ends, by CPU
        start, end = ({int(k): int(v) for k, v in s.items()} for s in ctx.samples)
        res.ksoftirqd = [KsoftirqdCpu(cpu, round(max(end[cpu] - start[cpu], 0) / 1e6, 2))
                         for cpu in sorted(set(start) & set(end))]
    return res


# ---- resets -------------------------------------------------------------------------------

def read_resets(maps, ctx: ReadContext) -> ResetsResult:
    res = ResetsResult()
    names = tracefs.parse_symbolic(ctx.formats.get("tcp:tcp_send_reset", ""), "reason")
    sent: dict[tuple, int] = {}
    for k, v in maps.items("sent"):
        reason = ("not given by this kernel" if k.reason == 0 else
                  names.get(k.reason - 1, str(k.reason - 1)))
        # 1: the RST answered a SYN (a refused connection attempt), 2: anything else, 0: not
        # known (no sk_buff offsets; recordings made before the field existed lack it).
        syn = {1: True, 2: False}.get(getattr(k, "syn", 0))
        key = (reason, state_name(k.state) if k.state else "none", port_or_none(k.lport), syn)
        sent[key] = sent.get(key, 0) + v.value
    res.sent = [SentReset(r, s, p, n, answers_syn=syn)
                for (r, s, p, syn), n in sorted(sent.items(), key=lambda kv: -kv[1])]
    res.sent_total = sum(sent.values())
    received: dict[tuple, int] = {}
    for k, v in maps.items("received"):
        key = (port_or_none(k.lport), address(k.family, k.daddr) if k.rport else None,
               port_or_none(k.rport))
        received[key] = received.get(key, 0) + v.value
    res.received = [ReceivedReset(lp, peer, rp, n) for (lp, peer, rp), n in
                    sorted(received.items(), key=lambda kv: -kv[1])]
    res.received_total = sum(received.values())
    res.unattributed = maps.values("unattributed")[0]
    return res


# ---- retrans ------------------------------------------------------------------------------

def read_retrans(maps, ctx: ReadContext) -> RetransResult:
    res = RetransResult()
    secs = max(ctx.seconds, 0.001)
    flows: dict[tuple, list[int]] = {}
    for k, v in maps.items("retrans"):
        key = (port_or_none(k.lport), address(k.family, k.daddr) if k.rport else None,
               port_or_none(k.rport))
        row = flows.setdefault(key, [0, 0])
        row[1 if k.failed else 0] += v.value
    res.by_flow = [Retransmits(lp, peer, rp, ok, failed, round(ok / secs, 2))
                   for (lp, peer, rp), (ok, failed) in
                   sorted(flows.items(), key=lambda kv: (-kv[1][0], -kv[1][1]))]
    res.total = sum(r.retransmits for r in res.by_flow)
    res.failed_total = sum(r.failed for r in res.by_flow)
    res.failures_reported = "err" in tracefs.parse_fields(
        ctx.formats.get("tcp:tcp_retransmit_skb", ""))
    return res


# ---- errors -------------------------------------------------------------------------------

def read_errors(maps, ctx: ReadContext) -> ErrorsResult:
    res = ErrorsResult()
    by_errno: dict[int, int] = {}
    for k, v in maps.items("failures"):
        so_error = k.nr == NR_GETSOCKOPT
        call = "connect" if so_error else SYSCALLS.get(k.nr, f"syscall {k.nr}")
        connect = call == "connect"
        res.failures.append(Failure(
            call=call, errno=k.err, error=errno_mod.errorcode.get(k.err, f"errno {k.err}"),
            pid=k.tgid, command=text(v.comm), count=v.count,
            local_port=port_or_none(k.lport),
            peer=address(k.family, k.daddr) if (k.rport or connect) else None,
            remote_port=port_or_none(k.rport),
            reported_by="so_error" if so_error else "return"))
        by_errno[k.err] = by_errno.get(k.err, 0) + v.count
    res.failures.sort(key=lambda f: (-f.count, f.call, f.errno, f.pid))
    res.by_errno = [ErrnoCount(errno_mod.errorcode.get(e, f"errno {e}"), e, n)
                    for e, n in sorted(by_errno.items(), key=lambda kv: -kv[1])]
    res.total = sum(by_errno.values())
    return res
