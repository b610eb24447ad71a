"""Socket buffers: autotuning, receive-queue drops, TCP memory pressure, max below the BDP."""

from __future__ import annotations

from typing import Any

from netdiag.facts import Facts
from netdiag.model import Finding, Rule, RuleSpec, Severity
from netdiag.rules._policy import change, judge, judge_all
from netdiag.rules._util import make

TOPIC = "buffers"
SUMMARY = "Socket buffers: autotuning, drops in the receive path, TCP memory, buffer limits"

DROP_COUNTERS = ("TCPRcvQDrop", "PruneCalled", "RcvPruned", "OfoPruned", "TCPRcvCollapsed",
                 "TCPBacklogDrop", "TCPZeroWindowDrop")
# Share of a connection's busy time spent limited by its send buffer that counts as limited.
LIMITED_SHARE = 0.1

BACKGROUND = (
    "Linux sizes TCP buffers itself: receive autotuning (tcp_moderate_rcvbuf=1) grows each "
    "connection's buffer toward what its bandwidth-delay product (BDP = rate × RTT) needs, up "
    "to tcp_rmem[2]; send buffers grow up to tcp_wmem[2]. An application that sets SO_RCVBUF "
    "or SO_SNDBUF turns autotuning off for that socket: the value is capped at "
    "rmem_max/wmem_max and doubled, and tcp_rmem[2] no longer applies. So the usual advice is "
    "not to fix buffer sizes by hand, but to make sure the maxima allow the BDP of the "
    "longest fat paths. tcp_mem (in pages, for all TCP sockets) is the global budget: above "
    "its second value TCP moderates every socket, at its third it refuses memory."
)

AUTOTUNE = RuleSpec(
    id="buffers.autotuning_disabled",
    topic=TOPIC,
    title="Receive-buffer autotuning is off",
    rule=Rule(
        text="tcp_moderate_rcvbuf: if enabled, TCP performs receive buffer auto-tuning, "
             "attempting to automatically size the buffer (no greater than tcp_rmem[2]) to "
             "match the size required by the path for full throughput. Enabled by default.",
        source="Documentation/networking/ip-sysctl.rst: tcp_moderate_rcvbuf",
    ),
    explanation=(
        "With autotuning off every TCP socket keeps its initial receive buffer "
        "(tcp_rmem[1]): a connection whose bandwidth-delay product is larger cannot use its "
        "path, and throughput stays at window / RTT."
    ),
    recommendation="Set net.ipv4.tcp_moderate_rcvbuf=1 (the default) in /etc/sysctl.d/.",
    thresholds="warning when tcp_moderate_rcvbuf is 0",
)

DROPS = RuleSpec(
    id="buffers.rcvbuf_drops",
    topic=TOPIC,
    counters=tuple(f"TcpExt.{n}" for n in DROP_COUNTERS),
    title="Receive queues overflowing: pruning, collapsing, drops",
    rule=Rule(
        text="PruneCalled: the socket went over its receive buffer and the kernel tried to "
             "collapse its queues. RcvPruned: pruning failed and packets were dropped. "
             "TCPRcvQDrop: in-order data dropped because memory could not be charged. "
             "TCPBacklogDrop: a packet arrived while the socket was owned by a user thread "
             "and its backlog was full.",
        source="Documentation/networking/snmp_counter.rst; net/ipv4/tcp_input.c "
               "tcp_prune_queue(), tcp_data_queue(); net/ipv4/tcp_ipv4.c tcp_add_backlog()",
    ),
    explanation=(
        "Data arrived faster than the application read it, or the receive buffer was too "
        "small for it: the kernel first collapses the queue (CPU cost), then drops, and the "
        "sender must retransmit. TCPBacklogDrop is different from a listen backlog: it means "
        "the process held the socket lock too long while packets arrived."
    ),
    recommendation=(
        "Find the slow readers (ss -tmi: rb close to rcvbuf, Recv-Q high): give them CPU, "
        "read in larger chunks, or stop fixing SO_RCVBUF so autotuning can grow the buffer. "
        "If tcp_mem is the limit, see buffers.memory_pressure."
    ),
    thresholds="info when notable since boot; warning when they grow (over --interval or "
               "since the previous --state-dir run)",
)

PRESSURE = RuleSpec(
    id="buffers.memory_pressure",
    topic=TOPIC,
    counters=("TcpExt.TCPMemoryPressures",),
    title="TCP memory near tcp_mem limits",
    rule=Rule(
        text="tcp_mem (pages): below the first value TCP does not regulate its memory; above "
             "the second it enters memory pressure and moderates buffers; the third is the "
             "maximum pages all TCP sockets may use.",
        source="Documentation/networking/ip-sysctl.rst: tcp_mem; tcp(7)",
    ),
    explanation=(
        "All TCP sockets together use close to the global budget (sockstat 'TCP mem', in "
        "pages). Under pressure every socket's buffer is trimmed; at the hard limit new data "
        "is dropped, orphans are reset (TCPAbortOnMemory) and the kernel logs 'TCP: out of "
        "memory -- consider tuning tcp_mem'."
    ),
    recommendation=(
        "Find what holds the memory (ss -tm: large Recv-Q/Send-Q, many orphans) and fix the "
        "readers; raise tcp_mem only if the host has the RAM (values are pages, not bytes)."
    ),
    thresholds="warning above the pressure threshold (tcp_mem[1]) or when TCPMemoryPressures "
               "grows; info when it is non-zero since boot; critical above 90% of tcp_mem[2]",
)

BDP = RuleSpec(
    id="buffers.max_below_bdp",
    topic=TOPIC,
    title="Buffer maximum below a connection's bandwidth-delay product",
    rule=Rule(
        text="tcp_rmem[2] / tcp_wmem[2]: the maximum receive / send buffer autotuning may "
             "reach. A connection can keep at most about one buffer of data in flight, so its "
             "throughput is bounded by buffer / RTT.",
        source="Documentation/networking/ip-sysctl.rst: tcp_rmem, tcp_wmem",
    ),
    explanation=(
        "The connections in the evidence reached the autotuning ceiling while their path "
        "could carry more: the bandwidth-delay product they measure (delivery rate × RTT) is "
        "at or above the maximum, or they spent a large share of their busy time limited by "
        "the send buffer (tcpi_sndbuf_limited). Their throughput is capped by buffer / RTT."
    ),
    recommendation=(
        "Raise net.ipv4.tcp_rmem[2] / tcp_wmem[2] (and net.core.rmem_max/wmem_max only for "
        "applications that set buffer sizes themselves) to about 2 × the largest BDP, as "
        "long as tcp_mem has room. Do not fix SO_RCVBUF/SO_SNDBUF in the application."
    ),
    thresholds="warning when a connection's BDP reaches tcp_rmem[2]/tcp_wmem[2], or its send "
               f"buffer is at tcp_wmem[2] and limited it ≥ {int(LIMITED_SHARE * 100)}% of its "
               "busy time",
)

UDP = RuleSpec(
    id="buffers.udp_buffer_errors",
    topic=TOPIC,
    counters=("Udp.RcvbufErrors", "Udp.SndbufErrors", "Udp6.RcvbufErrors",
              "Udp6.SndbufErrors"),
    title="UDP datagrams dropped for lack of buffer",
    rule=Rule(
        text="Udp RcvbufErrors: datagrams dropped because the socket receive buffer was full. "
             "SndbufErrors: datagrams not sent for lack of send buffer. UDP has no "
             "autotuning: the buffer is SO_RCVBUF or net.core.rmem_default.",
        source="Documentation/networking/snmp_counter.rst; socket(7): SO_RCVBUF; "
               "Documentation/admin-guide/sysctl/net.rst: rmem_default, rmem_max",
    ),
    explanation=(
        "A UDP reader did not keep up: its buffer filled and the kernel discarded datagrams "
        "(nothing retransmits them)."
    ),
    recommendation=(
        "Make the reader faster, or give it a larger SO_RCVBUF (capped by net.core.rmem_max, "
        "which may need raising), or raise net.core.rmem_default for all UDP sockets."
    ),
    thresholds="info when notable since boot; warning when growing (over --interval or "
               "since the previous --state-dir run)",
)

FIXED = RuleSpec(
    id="buffers.rcvbuf_fixed",
    topic=TOPIC,
    title="Processes that fix their socket buffer sizes",
    rule=Rule(
        text="SO_RCVBUF / SO_SNDBUF: the kernel doubles the value (bookkeeping overhead), caps "
             "it at rmem_max / wmem_max, and locks the buffer: TCP autotuning stops for that "
             "socket.",
        source="socket(7): SO_RCVBUF, SO_SNDBUF; net/core/sock.c __sock_set_rcvbuf(); "
               "Documentation/networking/ip-sysctl.rst: tcp_moderate_rcvbuf",
    ),
    explanation=(
        "The processes in the evidence set SO_RCVBUF or SO_SNDBUF during the probe window. "
        "Their sockets no longer grow with the path's bandwidth-delay product, and the value "
        "they got is twice what they asked, capped at 2 × rmem_max/wmem_max."
    ),
    recommendation=(
        "Unless the application has a measured reason, remove the setsockopt and let the "
        "kernel size the buffer (raise tcp_rmem[2]/tcp_wmem[2] if the maximum is the limit)."
    ),
    thresholds="info when a process set a buffer size during the probe window",
)

SPECS = (AUTOTUNE, DROPS, PRESSURE, BDP, UDP, FIXED)


def _fixed(facts: Facts) -> Finding | None:
    probe = (facts.probes or {}).get("rcvbuf")
    if probe is None:
        return None
    rows = probe.get("buffer_fixed_by", [])
    rmem_max = facts.sysctl.get_int("net.core.rmem_max") if facts.sysctl else None
    ev: dict[str, Any] = {"seconds": probe.get("seconds"), "calls": rows[:10],
                          "rmem_max": rmem_max}
    if not rows:
        return make(FIXED, Severity.OK, "no process set a socket buffer size", ev)
    for r in rows:
        cap = rmem_max if rmem_max and "RCV" in r["option"] else None
        if cap is not None and "FORCE" not in r["option"]:
            r["effective"] = 2 * min(max(r["value"], 0), cap)
    top = rows[0]
    return make(FIXED, Severity.INFO, f"{len(rows)} setsockopt call(s) fixing buffers, e.g. "
                                      f"pid {top['pid']} ({top['command']}) {top['option']}="
                                      f"{top['value']}: autotuning off for those sockets", ev)


def _autotune(facts: Facts) -> Finding | None:
    v = facts.sysctl.get_int("net.ipv4.tcp_moderate_rcvbuf") if facts.sysctl else None
    if v is None:
        return None
    ev = {"tcp_moderate_rcvbuf": v,
          "tcp_rmem": facts.sysctl.values.get("net.ipv4.tcp_rmem")}
    if v == 0:
        return make(AUTOTUNE, Severity.WARNING, "tcp_moderate_rcvbuf=0: receive buffers stay "
                                                "at tcp_rmem[1]", ev)
    return make(AUTOTUNE, Severity.OK, "receive-buffer autotuning is on", ev)


def _counters_finding(spec: RuleSpec, facts: Facts, names: list[tuple[str, str]],
                      what: str) -> Finding | None:
    changes = [c for p, n in names if (c := change(facts, p, n)) is not None]
    if not changes:
        return None
    evidence = {c.counter: c.evidence() for c in changes}
    verdict = judge_all(changes)
    if verdict.severity is Severity.OK:
        return make(spec, Severity.OK, f"no {what.lower()} to report", evidence)
    return make(spec, verdict.severity, f"{what}: {verdict.text}", evidence)


def _pressure(facts: Facts) -> Finding | None:
    mem = facts.sockstat.get("TCP", "mem") if facts.sockstat else None
    limits = facts.sysctl.get_ints("net.ipv4.tcp_mem") if facts.sysctl else None
    if mem is None or not limits or len(limits) != 3:
        return None
    low, pressure, high = limits
    presses = change(facts, "TcpExt", "TCPMemoryPressures")
    ev: dict[str, Any] = {"tcp_mem_pages": mem, "tcp_mem": [low, pressure, high],
                          "share_of_max": round(mem / high, 4) if high else None,
                          "orphans": facts.sockstat.get("TCP", "orphan")}
    if presses is not None:
        ev["TCPMemoryPressures"] = presses.evidence()
    if high and mem >= 0.9 * high:
        return make(PRESSURE, Severity.CRITICAL, f"TCP uses {mem} pages, {mem * 100 // high}% "
                                                 f"of the tcp_mem hard limit {high}", ev)
    if mem > pressure:
        return make(PRESSURE, Severity.WARNING, f"TCP uses {mem} pages, above the pressure "
                                                f"threshold {pressure}", ev)
    if presses is not None:
        verdict = judge(presses, notable=1)
        if verdict.severity > Severity.OK:
            return make(PRESSURE, verdict.severity, f"TCP memory pressure: {verdict.text}", ev)
    return make(PRESSURE, Severity.OK, f"TCP uses {mem} of {high} pages", ev)


def _bdp(facts: Facts) -> Finding | None:
    d = facts.details
    rmem = facts.sysctl.get_ints("net.ipv4.tcp_rmem") if facts.sysctl else None
    wmem = facts.sysctl.get_ints("net.ipv4.tcp_wmem") if facts.sysctl else None
    if d is None or not rmem or not wmem:
        return None
    rmax, wmax = rmem[-1], wmem[-1]
    hits: dict[tuple, dict[str, Any]] = {}
    for c in d.largest_bdp + d.buffer_limited:
        info, sk = c.info, c.skmem
        busy = info.get("busy_time", 0)
        snd_lim = info.get("sndbuf_limited", 0)
        reasons = []
        if c.bdp_bytes >= min(rmax, wmax):
            reasons.append("bdp at or above the buffer maximum")
        if busy and snd_lim >= LIMITED_SHARE * busy and sk.get("sndbuf", 0) >= wmax:
            reasons.append(f"send buffer at tcp_wmem[2], limited {snd_lim * 100 // busy}% "
                           "of busy time")
        if reasons:
            hits[(c.source, c.sport, c.destination, c.dport)] = {
                "local": f"{c.source}:{c.sport}", "peer": f"{c.destination}:{c.dport}",
                "rtt_ms": round(info.get("rtt", 0) / 1000, 2),
                "delivery_rate_mbit": round(info.get("delivery_rate", 0) * 8 / 1e6, 1),
                "bdp_bytes": c.bdp_bytes, "rcvbuf": sk.get("rcvbuf"), "sndbuf": sk.get("sndbuf"),
                "why": "; ".join(reasons)}
    ev: dict[str, Any] = {"tcp_rmem_max": rmax, "tcp_wmem_max": wmax,
                          "connections_checked": d.with_info,
                          "largest_bdp": [
                              {"peer": f"{c.destination}:{c.dport}", "bdp_bytes": c.bdp_bytes,
                               "rtt_ms": round(c.info.get("rtt", 0) / 1000, 2),
                               "rcvbuf": c.skmem.get("rcvbuf"), "sndbuf": c.skmem.get("sndbuf")}
                              for c in d.largest_bdp[:5]],
                          "limited": list(hits.values())[:10]}
    if hits:
        first = next(iter(hits.values()))
        return make(BDP, Severity.WARNING, f"{len(hits)} connection(s) limited by the buffer "
                                           f"maximum, e.g. {first['local']} → {first['peer']}",
                    ev)
    return make(BDP, Severity.OK, "no connection needs more than the buffer maxima allow", ev)


def check(facts: Facts) -> list[Finding]:
    drops = _counters_finding(DROPS, facts, [("TcpExt", n) for n in DROP_COUNTERS],
                              "Receive-queue drops and prunes")
    udp = _counters_finding(UDP, facts, [("Udp", "RcvbufErrors"), ("Udp", "SndbufErrors"),
                                         ("Udp6", "RcvbufErrors"), ("Udp6", "SndbufErrors")],
                            "UDP buffer errors")
    return [f for f in (_autotune(facts), drops, _pressure(facts), _bdp(facts), udp,
                        _fixed(facts)) if f is not None]
