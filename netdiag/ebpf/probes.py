"""The probes: which hooks each attaches, and how its kernel maps become plain facts."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from netdiag.ebpf import tracefs
from netdiag.ebpf.runtime import Hook, Plan
from netdiag.facts import TCP_STATES, format_address


@dataclass(frozen=True)
class ProbeSpec:
    name: str
    summary: str
    hooks: tuple[Hook, ...]
    read: Callable[[Any, Plan, float], dict[str, Any]]
    overhead: str
    # Extra compile-time defines beyond tracepoint offsets: () -> (defines, why unavailable)
    defines: Callable[[], tuple[dict[str, int], str | None]] | None = None


def _addr(family: int, raw) -> str:
    return format_address(2 if family == 2 else 10, bytes(raw))


def _lost(bpf) -> int:
    return int(sum(v.value for v in bpf["lost"].values()))


def _hist(items) -> list[dict[str, Any]]:
    """log2 slots -> rows {from, to, count} (slot n holds values in [2^(n-1), 2^n))."""
    rows = []
    for slot, n in sorted(items):
        lo = 0 if slot == 0 else 1 << (slot - 1)
        rows.append({"from": lo, "to": (1 << slot) - 1 if slot else 0, "count": n})
    return rows


# ---- states -------------------------------------------------------------------------------

def read_states(bpf, plan: Plan, seconds: float) -> dict[str, Any]:
    pairs: dict[str, int] = {}
    closers: dict[tuple, int] = {}
    closers_local: dict[int, int] = {}
    passive: dict[int, int] = {}
    connects: dict[tuple, int] = {}
    accepted: dict[int, int] = {}
    for k, v in bpf["transitions"].items():
        n = v.value
        old, new = TCP_STATES.get(k.oldstate, str(k.oldstate)), TCP_STATES.get(k.newstate,
                                                                               str(k.newstate))
        pairs[f"{old}->{new}"] = pairs.get(f"{old}->{new}", 0) + n
        peer = _addr(k.family, k.daddr)
        if k.oldstate == 1 and k.newstate == 4:  # this side sent FIN first: TIME_WAIT maker
            closers[(peer, k.dport)] = closers.get((peer, k.dport), 0) + n
            closers_local[k.sport] = closers_local.get(k.sport, 0) + n
        elif k.oldstate == 1 and k.newstate == 8:  # the peer closed first
            passive[k.sport] = passive.get(k.sport, 0) + n
        elif k.oldstate == 2 and k.newstate == 1:  # our connect() completed
            key = (peer, k.dport)
            connects[key] = connects.get(key, 0) + n
        elif k.oldstate == 3 and k.newstate == 1:  # a handshake completed on a listener
            accepted[k.sport] = accepted.get(k.sport, 0) + n
    now_ns = time.monotonic_ns()  # the clock bpf_ktime_get_ns() reads
    waiting: dict[int, list[float]] = {}
    ports = {k.value: v.value for k, v in bpf["cw_port"].items()}
    for k, v in bpf["cw_since"].items():
        waiting.setdefault(ports.get(k.value, 0), []).append((now_ns - v.value) / 1e9)
    secs = max(seconds, 0.001)
    return {
        "transitions": dict(sorted(pairs.items(), key=lambda kv: -kv[1])),
        # This side closed first (it keeps the TIME_WAIT): by destination for clients, by
        # local port for servers (one of the two groupings is made of ephemeral ports).
        "active_closes": [{"peer": p, "port": rp, "closes": n, "per_s": round(n / secs, 2)}
                          for (p, rp), n in sorted(closers.items(), key=lambda kv: -kv[1])
                          [:20]],
        "active_closes_by_local_port": [{"local_port": lp, "closes": n}
                                        for lp, n in sorted(closers_local.items(),
                                                            key=lambda kv: -kv[1])[:20]],
        "active_closes_total": sum(closers.values()),
        "peer_closed_first_by_port": [{"local_port": p, "closes": n}
                                      for p, n in sorted(passive.items(), key=lambda kv: -kv[1])
                                      [:20]],
        "connects_per_peer": [{"peer": p, "port": rp, "connects": n,
                               "per_s": round(n / secs, 2)}
                              for (p, rp), n in sorted(connects.items(), key=lambda kv: -kv[1])
                              [:20]],
        "accepted_per_port": [{"local_port": p, "handshakes": n} for p, n in
                              sorted(accepted.items(), key=lambda kv: -kv[1])[:20]],
        "close_wait_left_ms": _hist((k.value, v.value) for k, v in bpf["cw_ms"].items()
                                    if v.value),
        "close_wait_still_waiting": [
            {"local_port": p, "sockets": len(ages), "oldest_s": round(max(ages), 1)}
            for p, ages in sorted(waiting.items(), key=lambda kv: -len(kv[1]))[:20]],
        "lost_events": _lost(bpf),
    }


# ---- backlog ------------------------------------------------------------------------------

def _socket_inode(tgid: int, fd: int) -> int | None:
    try:
        target = os.readlink(f"/proc/{tgid}/fd/{fd}")
    except OSError:
        return None
    return int(target[8:-1]) if target.startswith("socket:[") else None


def read_backlog(bpf, plan: Plan, seconds: float) -> dict[str, Any]:
    calls = []
    for k, v in bpf["listens"].items():
        calls.append({"pid": k.tgid, "fd": k.fd, "requested_backlog": v.backlog,
                      "command": v.comm.decode(errors="replace"),
                      "inode": _socket_inode(k.tgid, k.fd)})
    synack = [{"local_port": k.value, "retransmits": v.value}
              for k, v in sorted(bpf["synack"].items(), key=lambda kv: -kv[1].value)]
    return {"listen_calls": calls, "synack_retransmits": synack, "lost_events": _lost(bpf),
            "note": "a SYN refused because the accept queue is full is counted by "
                    "ListenOverflows; on most kernels it is not a kfree_skb drop with its "
                    "own reason, so the drops probe does not show it"}


# ---- wakeups ------------------------------------------------------------------------------

def read_wakeups(bpf, plan: Plan, seconds: float) -> dict[str, Any]:
    per_fd: dict[int | None, dict[str, Any]] = {}
    for k, v in bpf["accepts"].items():
        inode = _socket_inode(k.tgid, k.fd)
        row = per_fd.setdefault(inode, {"inode": inode, "processes": [], "accepted": 0,
                                        "eagain": 0, "errors": 0, "threads": 0})
        row["processes"].append({"pid": k.tgid, "command": v.comm.decode(errors="replace"),
                                 "accepted": v.ok, "eagain": v.eagain})
        row["accepted"] += v.ok
        row["eagain"] += v.eagain
        row["errors"] += v.other
        row["threads"] += v.threads
    listeners = []
    for row in per_fd.values():
        row["workers"] = len(row["processes"])
        # Wake-ups that found nothing per connection accepted: > 1 means several workers
        # woke for each connection (the thundering herd).
        row["herd_score"] = round(row["eagain"] / row["accepted"], 2) if row["accepted"] \
            else (float(row["eagain"]) if row["eagain"] else 0.0)
        listeners.append(row)
    ready = [v.value for v in bpf["data_ready"].values()] if "np_data_ready" in \
        {h.fn for h in plan.enabled} else []
    by_port = [{"local_port": k.value, "wakeups": v.value}
               for k, v in sorted(bpf["ready_by_port"].items(), key=lambda kv: -kv[1].value)
               [:20]]
    return {"listeners": sorted(listeners, key=lambda r: -r["eagain"]),
            "data_ready_tcp": ready[0] if ready else None,
            "data_ready_by_local_port": by_port, "lost_events": _lost(bpf)}


def wakeup_defines() -> tuple[dict[str, int], str | None]:
    """The offset of a socket's local port (sock_common.skc_num) from the kernel's BTF, to
    count data-ready wake-ups per port; without it they are counted in total only."""
    from netdiag.ebpf.btf import struct_offsets

    offsets, why = struct_offsets("sock_common", ("skc_num",))
    return ({"SK_NUM_OFF": offsets["skc_num"]}, None) if not why else ({}, why)


# ---- drops --------------------------------------------------------------------------------

def drop_defines() -> tuple[dict[str, int], str | None]:
    """sk_buff header offsets from the running kernel's BTF, to read the dropped packet's
    ports; without them drops are counted by reason only."""
    from netdiag.ebpf.btf import struct_offsets

    offsets, why = struct_offsets("sk_buff", ("head", "network_header", "transport_header"))
    if why:
        return {}, why
    return {"SKB_HEAD_OFF": offsets["head"], "SKB_NH_OFF": offsets["network_header"],
            "SKB_TH_OFF": offsets["transport_header"]}, None


def read_drops(bpf, plan: Plan, seconds: float) -> dict[str, Any]:
    fmt = plan.formats.get("skb:kfree_skb", "")
    names = tracefs.parse_symbolic(fmt, "reason")
    has_reason = "reason" in tracefs.parse_fields(fmt)
    rows: dict[str, int] = {}
    proto: dict[str, int] = {}
    ports: dict[tuple, int] = {}
    for k, v in bpf["drops"].items():
        name = names.get(k.reason, str(k.reason)) if has_reason else "unknown (no reason field)"
        rows[name] = rows.get(name, 0) + v.value
        p = {0x0800: "ipv4", 0x86DD: "ipv6", 0x0806: "arp"}.get(k.protocol, hex(k.protocol))
        proto[p] = proto.get(p, 0) + v.value
        if k.l4:
            key = (name, {6: "tcp", 17: "udp"}.get(k.l4, str(k.l4)), k.port)
            ports[key] = ports.get(key, 0) + v.value
    secs = max(seconds, 0.001)
    return {"by_reason": [{"reason": r, "drops": n, "per_s": round(n / secs, 2)}
                          for r, n in sorted(rows.items(), key=lambda kv: -kv[1])],
            "by_port": [{"reason": r, "protocol": l4, "port": port, "drops": n,
                         "per_s": round(n / secs, 2)}
                        for (r, l4, port), n in sorted(ports.items(), key=lambda kv: -kv[1])
                        [:30]],
            "by_protocol": proto, "reasons_known": len(names), "lost_events": _lost(bpf)}


# ---- rcvbuf -------------------------------------------------------------------------------

OPTNAMES = {7: "SO_SNDBUF", 8: "SO_RCVBUF", 32: "SO_SNDBUFFORCE", 33: "SO_RCVBUFFORCE"}


def read_rcvbuf(bpf, plan: Plan, seconds: float) -> dict[str, Any]:
    limits = [v.value for v in bpf["limits"].values()]
    enabled = {h.fn for h in plan.enabled}
    return {
        "space_adjust_by_port": [{"local_port": k.value, "adjustments": v.value}
                                 for k, v in sorted(bpf["adjust"].items(),
                                                    key=lambda kv: -kv[1].value)[:20]],
        "rcvbuf_grow_by_port": [{"local_port": k.value, "grows": v.count,
                                 "max_rcvbuf": v.max_rcvbuf, "last_rcvbuf": v.last_rcvbuf}
                                for k, v in sorted(bpf["grow"].items(),
                                                   key=lambda kv: -kv[1].count)[:20]],
        "rcvqueue_full": limits[0] if "np_rcvqueue_full" in enabled else None,
        "exceed_buf_limit": limits[1] if "np_exceed_limit" in enabled else None,
        "buffer_fixed_by": [{"pid": k.tgid, "command": k.comm.decode(errors="replace"),
                             "option": OPTNAMES.get(k.optname, str(k.optname)),
                             "value": k.value, "calls": v.value}
                            for k, v in sorted(bpf["setopts"].items(),
                                               key=lambda kv: -kv[1].value)[:50]],
        "lost_events": _lost(bpf),
    }


# ---- softirq ------------------------------------------------------------------------------

VEC = {2: "NET_TX", 3: "NET_RX"}


def read_softirq(bpf, plan: Plan, seconds: float) -> dict[str, Any]:
    def hist(table):
        out: dict[tuple, dict[int, int]] = {}
        for k, v in table.items():
            out.setdefault((k.vec, k.cpu), {})[k.slot] = out.get((k.vec, k.cpu), {}).get(
                k.slot, 0) + v.value
        return out

    lat, run = hist(bpf["latency_us"]), hist(bpf["runtime_us"])
    totals = {(k.vec, k.cpu): v.value for k, v in bpf["total_ns"].items()}
    counts = {(k.vec, k.cpu): v.value for k, v in bpf["count"].items()}
    rows = []
    for key in sorted(set(lat) | set(run) | set(totals)):
        vec, cpu = key
        rows.append({"softirq": VEC.get(vec, str(vec)), "cpu": cpu,
                     "runs": counts.get(key, 0),
                     "time_ms": round(totals.get(key, 0) / 1e6, 2),
                     "cpu_share": round(totals.get(key, 0) / 1e9 / max(seconds, 0.001), 4),
                     "latency_us": _hist(lat.get(key, {}).items()),
                     "runtime_us": _hist(run.get(key, {}).items())})
    ksoft = {k.value: round(v.value / 1e6, 2) for k, v in bpf["ksoft_ns"].items()}
    return {"per_cpu": rows, "ksoftirqd_ms": ksoft, "lost_events": _lost(bpf)}


# ---- resets and retransmits ----------------------------------------------------------------

def read_resets(bpf, plan: Plan, seconds: float) -> dict[str, Any]:
    fmt = plan.formats.get("tcp:tcp_send_reset", "")
    names = tracefs.parse_symbolic(fmt, "reason")
    sent: dict[tuple, int] = {}
    for k, v in bpf["sent"].items():
        reason = "not given by this kernel" if k.reason == 0 else names.get(k.reason - 1,
                                                                            str(k.reason - 1))
        key = (reason, TCP_STATES.get(k.state, str(k.state)) if k.state else "-", k.lport)
        sent[key] = sent.get(key, 0) + v.value
    received: dict[int, int] = {}
    for k, v in bpf["received"].items():
        received[k.lport] = received.get(k.lport, 0) + v.value
    return {"sent": [{"reason": r, "state": s, "local_port": p, "resets": n}
                     for (r, s, p), n in sorted(sent.items(), key=lambda kv: -kv[1])[:30]],
            "sent_total": sum(sent.values()),
            "received_by_port": [{"local_port": p, "resets": n} for p, n in
                                 sorted(received.items(), key=lambda kv: -kv[1])[:20]],
            "received_total": sum(received.values()), "lost_events": _lost(bpf)}


def read_retrans(bpf, plan: Plan, seconds: float) -> dict[str, Any]:
    rows = [{"peer": _addr(k.family, k.daddr), "port": k.dport, "retransmits": v.value,
             "per_s": round(v.value / max(seconds, 0.001), 2)}
            for k, v in bpf["retrans"].items()]
    rows.sort(key=lambda r: -r["retransmits"])
    return {"by_peer": rows[:30], "total": sum(r["retransmits"] for r in rows),
            "lost_events": _lost(bpf)}


_SOCK_FIELDS = ("skaddr", "oldstate", "newstate", "sport", "dport", "family", "protocol",
                "daddr", "daddr_v6")
PROBES: dict[str, ProbeSpec] = {p.name: p for p in (
    ProbeSpec("states", "TCP state transitions: who closes first (TIME_WAIT), CLOSE_WAIT entry "
              "and duration, connection rate per peer",
              (Hook("transitions", "sock", "inet_sock_set_state", "np_set_state",
                    _SOCK_FIELDS),), read_states,
              "one hash update per TCP state change (a handful per connection)"),
    ProbeSpec("backlog", "listen() backlog requested per process, SYN-ACK retransmits per port, "
              "accept queues sampled with sock_diag",
              (Hook("listen() calls", "syscalls", "sys_enter_listen", "np_listen",
                    ("fd", "backlog")),
               Hook("SYN-ACK retransmits", "tcp", "tcp_retransmit_synack", "np_synack",
                    ("sport",))), read_backlog,
              "only on listen() calls and SYN-ACK retransmits: negligible"),
    ProbeSpec("wakeups", "accept() results per listener and process (EAGAIN races: the "
              "thundering herd), socket data-ready wake-ups",
              (Hook("accept4 entry", "syscalls", "sys_enter_accept4", "np_enter_accept4",
                    ("fd",)),
               Hook("accept4 result", "syscalls", "sys_exit_accept4", "np_exit_accept4",
                    ("ret",)),
               Hook("accept entry", "syscalls", "sys_enter_accept", "np_enter_accept",
                    ("fd",)),
               Hook("accept result", "syscalls", "sys_exit_accept", "np_exit_accept",
                    ("ret",)),
               Hook("data-ready wake-ups", "sock", "sk_data_ready", "np_data_ready",
                    ("protocol", "skaddr"))), read_wakeups,
              "two map updates per accept() call, one per socket wake-up",
              defines=wakeup_defines),
    ProbeSpec("drops", "packets dropped in the kernel (kfree_skb) by reason, names read from "
              "the running kernel",
              (Hook("drops", "skb", "kfree_skb", "np_kfree_skb", ("skbaddr", "protocol"),
                    ("reason",)),),
              read_drops, "one hash update per dropped packet (not per packet received)",
              defines=drop_defines),
    ProbeSpec("rcvbuf", "receive-buffer autotuning, full receive queues, memory limits, and "
              "processes that fixed SO_RCVBUF/SO_SNDBUF",
              (Hook("space adjust", "tcp", "tcp_rcv_space_adjust", "np_space_adjust",
                    ("sport",)),
               Hook("buffer growth", "tcp", "tcp_rcvbuf_grow", "np_rcvbuf_grow",
                    ("sport", "rcvbuf")),
               Hook("receive queue full", "sock", "sock_rcvqueue_full", "np_rcvqueue_full",
                    ()),
               Hook("memory limit", "sock", "sock_exceed_buf_limit", "np_exceed_limit", ()),
               Hook("setsockopt", "syscalls", "sys_enter_setsockopt", "np_setsockopt",
                    ("level", "optname", "optval"))), read_rcvbuf,
              "one hash update per receive-space adjustment (per RTT of busy connections)"),
    ProbeSpec("softirq", "NET_RX/NET_TX softirq latency and run time per CPU (histograms), "
              "ksoftirqd CPU time",
              (Hook("raise", "irq", "softirq_raise", "np_raise", ("vec",)),
               Hook("entry", "irq", "softirq_entry", "np_entry", ("vec",)),
               Hook("exit", "irq", "softirq_exit", "np_exit", ("vec",)),
               Hook("ksoftirqd", "sched", "sched_switch", "np_switch",
                    ("prev_comm", "next_comm"))), read_softirq,
              "runs on every softirq and every context switch: measurable on busy hosts; "
              "use short windows"),
    ProbeSpec("resets", "RSTs sent (with the kernel's reason where given) and received, by port",
              (Hook("sent", "tcp", "tcp_send_reset", "np_send_reset", ("saddr", "daddr"),
                    ("reason", "state", "sport", "dport")),
               Hook("received", "tcp", "tcp_receive_reset", "np_receive_reset",
                    ("sport", "dport"))), read_resets,
              "one hash update per RST"),
    ProbeSpec("retrans", "TCP retransmits by peer",
              (Hook("retransmits", "tcp", "tcp_retransmit_skb", "np_retransmit",
                    ("family", "dport", "daddr", "daddr_v6")),), read_retrans,
              "one hash update per retransmitted segment"),
)}
