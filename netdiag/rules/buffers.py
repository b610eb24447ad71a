"""Socket buffers: autotuning, receive-queue drops, TCP memory pressure, max below the BDP."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from netdiag.facts import Connection, Facts
from netdiag.model import Finding, Rule, RuleSpec, Severity
from netdiag.probefacts import RcvbufResult
from netdiag.rules._policy import change, judge, judge_all
from netdiag.rules._util import endpoint, is_loopback, make

TOPIC = "buffers"
SUMMARY = "Socket buffers: autotuning, drops in the receive path, TCP memory, buffer limits"

DROP_COUNTERS = ("TCPRcvQDrop", "PruneCalled", "RcvPruned", "OfoPruned", "TCPRcvCollapsed",
                 "TCPBacklogDrop", "TCPZeroWindowDrop")
# What holds a flow (symptoms-and-limits.md §2.3), over two samples when there are two:
# - a sender busy less than this share of the window has nothing to send: the application;
APP_BUSY_SHARE = 0.9
# - a share of busy time at least this large spent limited by the peer's window
#   (tcpi_rwnd_limited) or by the send buffer (tcpi_sndbuf_limited) is what holds it;
LIMITED_SHARE = 0.5
# - a receiver whose rate × RTT fills at least this share of the window it advertises is
#   held by that window;
WINDOW_USE = 0.5
# - a receive queue holding at least this share of the receive buffer: the reader is slow.
SLOW_READER_SHARE = 0.5
# A sender whose rate × RTT fills this share of the peer's window, and that was limited by
# it at least MIN_RWND_SHARE of its busy time, is held by that window too (a paced sender,
# BBR, rarely stalls on the window itself).
SENDER_WINDOW_USE = 0.8
MIN_RWND_SHARE = 0.2
# Shares of busy time are not judged on less busy time than this (jiffy resolution).
MIN_BUSY_US = 100_000

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
    title="A busy flow is held back by a buffer limit",
    rule=Rule(
        text="A TCP sender keeps at most the receiver's advertised window in flight, and the "
             "window is bounded by the receive buffer: tcp_rmem[2] for autotuned sockets, the "
             "application's SO_RCVBUF (doubled, capped at 2 × rmem_max, autotuning off) "
             "otherwise. Throughput is then at most window / RTT. tcp_info says what held "
             "the sender: tcpi_rwnd_limited (the peer's window), tcpi_sndbuf_limited (its "
             "send buffer), tcpi_busy_time (time with data to send).",
        source="Documentation/networking/ip-sysctl.rst: tcp_rmem, tcp_wmem, "
               "tcp_moderate_rcvbuf; socket(7): SO_RCVBUF; include/uapi/linux/tcp.h "
               "(tcpi_busy_time, tcpi_rwnd_limited, tcpi_sndbuf_limited); "
               "net/ipv4/tcp.c tcp_get_info()",
    ),
    explanation=(
        "Each busy flow is judged from what its own tcp_info and skmeminfo say, over two "
        "samples when there are two: a sender busy less than 90% of the time, or "
        "application-limited in both samples, is held by its application (nothing to send); "
        "one application-limited rate sample decides nothing (the flag belongs to one "
        "delivery-rate sample: a paced or capped sender looks unlimited within its bursts), "
        "so a sender limited by no window or buffer is otherwise 'cannot tell' between the "
        "network, congestion control and the application's own rate; a sender limited by "
        "the peer's window for most of "
        "its busy time is held by the receiver's buffer, one limited by its send buffer by "
        "that buffer; a receiver whose rate × RTT fills its advertised window is held by "
        "its receive buffer, which is either at tcp_rmem[2] (the autotuning maximum), at "
        "2 × rmem_max (an application request capped), or fixed by the application "
        "(SO_RCVBUF stops autotuning: the buffer stays below tcp_rmem[1], where autotuning "
        "starts, or below tcp_rmem[2] and twice what the application reads per RTT, or the "
        "window scale is smaller than the host would choose). A receive queue near full is "
        "a slow reader only in a buffer autotuning sized; in a buffer fixed below what "
        "autotuning would give it is that buffer's limit, and so is a fixed buffer whose "
        "application reads a whole advertised window in one RTT (at µs RTTs rate × RTT "
        "understates how much of the window is used). The rate a flow already gets is "
        "never the trigger: it cannot reveal "
        "a flow held back by its window. On loopback the path has no bandwidth-delay "
        "product worth the name: a window-limited loopback flow means the reader is slower "
        "than the writer."
    ),
    recommendation=(
        "Act on the limit the evidence names: raise net.ipv4.tcp_rmem[2] (or tcp_wmem[2]) "
        "when the autotuning maximum holds the flow; raise net.core.rmem_max/wmem_max when an "
        "application's request was capped; change the application's own setting when it "
        "fixed the size (then tcp_rmem does not apply); on the receiving host when the peer's "
        "window holds the sender. Nothing to change for flows held by their application, "
        "the network, or on loopback."
    ),
    thresholds=f"warning when a non-loopback flow that is busy ≥ {int(APP_BUSY_SHARE * 100)}% "
               f"of the time is limited ≥ {int(LIMITED_SHARE * 100)}% of it by the peer's "
               f"window or its send buffer, or as receiver fills ≥ {int(WINDOW_USE * 100)}% of "
               "its window while its buffer is at a maximum or fixed by the application, "
               "or as receiver has its queue ≥ 50% full (or reads its whole window per RTT) "
               "in a buffer the application fixed below what autotuning would give",
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
    if not isinstance(probe, RcvbufResult):
        return None
    rows = [{"pid": r.pid, "command": r.command, "option": r.option, "value": r.value,
             "calls": r.calls} for r in probe.buffer_fixed_by]
    rmem_max = facts.sysctl.get_int("net.core.rmem_max") if facts.sysctl else None
    ev: dict[str, Any] = {"seconds": probe.window.seconds, "calls": rows[:10],
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
          "tcp_rmem": facts.sysctl.typed("net.ipv4.tcp_rmem")}
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


@dataclass
class FlowVerdict:
    """What holds one flow, in the rule's words."""

    limit: str  # stable id: receive_buffer_max, receive_buffer_fixed_by_application, ...
    held: bool  # a buffer limit holds it: worth a warning
    text: str  # one clause: what holds it
    advice: str = ""  # what to do; empty when nothing should change
    figures: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Window:
    seconds: float | None  # None: totals since the connection began
    busy: int
    rwnd: int
    sndbuf: int
    acked: int
    received: int


def _window(c: Connection) -> _Window:
    now = c.info
    then = c.earlier.info if c.earlier is not None and c.sample_seconds else None

    def d(key: str) -> int:
        v = now.get(key, 0)
        return max(v - then.get(key, 0), 0) if then is not None else v

    return _Window(c.sample_seconds if then is not None else None, d("busy_time"),
                   d("rwnd_limited"), d("sndbuf_limited"), d("bytes_acked"),
                   d("bytes_received"))


def _mbit(bytes_per_s: float) -> float:
    return round(bytes_per_s * 8 / 1e6, 1)


def fmt_rtt(rtt_us: int | float) -> str:
    """An RTT for a sentence: µs below a millisecond (veth and LAN RTTs are tens of µs, and
    "0.0 ms" says nothing), else ms with 2 significant digits."""
    if rtt_us < 1000:
        return f"{round(rtt_us)} µs"
    ms = rtt_us / 1000
    return f"{ms:.1f} ms" if ms < 10 else f"{ms:.0f} ms"


def expected_wscale(rmem_max2: int, rmem_max: int | None) -> int:
    """The receive window scale the host offers a socket whose buffer is not locked:
    ilog2(max(tcp_rmem[2], rmem_max)) - 15, clamped to 0..14 (tcp_select_initial_window())."""
    space = max(rmem_max2, rmem_max or 0, 1)
    return min(max(space.bit_length() - 1 - 15, 0), 14)


def judge_flow(c: Connection, limits: dict[str, int | None]) -> FlowVerdict:
    """Which limit holds one flow (symptoms-and-limits.md §2.3)."""
    w = _window(c)
    info = c.info
    if w.acked == 0 and w.received == 0:
        return FlowVerdict("idle", False, "no data moved")
    sending = w.acked >= w.received
    rtt_us = info.get("rtt", 0)
    figures: dict[str, Any] = {"direction": "sending" if sending else "receiving",
                               "rtt_ms": round(rtt_us / 1000, 2)}
    if w.seconds:
        figures["rate_mbit"] = _mbit((w.acked if sending else w.received) / w.seconds)
    if is_loopback(c.source) or is_loopback(c.destination) or c.source == c.destination:
        # No path to fill, but a reader can still be slower than the writer: the sender's
        # time held by the receiver's window, or the receiver's queue, shows it.
        text = "loopback: the path has no bandwidth-delay product; CPU and copies bound it"
        if sending and w.seconds:
            figures["busy_share"] = round(min(w.busy / (w.seconds * 1e6), 1.0), 3)
        if sending and w.busy:
            figures["rwnd_limited_share"] = round(w.rwnd / w.busy, 3)
        rb, queued = c.skmem.get("rcvbuf", 0), c.skmem.get("rmem_alloc", 0)
        if sending and w.busy and w.rwnd >= MIN_RWND_SHARE * w.busy:
            wnd = info.get("snd_wnd")
            text = ("loopback: the reading application is slower than the writer (or its "
                    "receive buffer is fixed small): the receiver's window"
                    + (f" ({wnd} bytes)" if wnd else "")
                    + f" held the writer {w.rwnd / w.busy:.0%} of its busy time")
        elif not sending and rb and queued >= SLOW_READER_SHARE * rb:
            figures["slow_reader"] = True
            text = (f"loopback: the reading application is slower than the writer (its "
                    f"receive queue holds {queued} of {rb} bytes)")
        return FlowVerdict("loopback", False, text, figures=figures)
    if sending:
        return _judge_sender(c, w, limits, figures)
    return _judge_receiver(c, w, limits, figures)


def _judge_sender(c: Connection, w: _Window, limits: dict[str, int | None],
                  figures: dict[str, Any]) -> FlowVerdict:
    info, sk = c.info, c.skmem
    if w.seconds:
        figures["busy_share"] = round(min(w.busy / (w.seconds * 1e6), 1.0), 3)
    if w.busy:
        figures["rwnd_limited_share"] = round(w.rwnd / w.busy, 3)
        figures["sndbuf_limited_share"] = round(w.sndbuf / w.busy, 3)
    if w.seconds and w.busy < APP_BUSY_SHARE * w.seconds * 1e6:
        return FlowVerdict("application", False,
                           f"its application: busy only {figures['busy_share']:.0%} of the "
                           "time (nothing queued to send the rest)", figures=figures)
    if w.busy < MIN_BUSY_US:
        return FlowVerdict("unjudged", False, f"too little busy time ({w.busy // 1000} ms) "
                                              "to judge", figures=figures)
    snd_wnd, rtt_us = info.get("snd_wnd"), info.get("rtt", 0)
    rate = w.acked / w.seconds if w.seconds else info.get("delivery_rate", 0)
    use = rate * rtt_us / 1e6 / snd_wnd if snd_wnd and rtt_us else 0.0
    if snd_wnd and rtt_us:
        figures["peer_window_use"] = round(use, 2)
    if w.rwnd >= LIMITED_SHARE * w.busy or (w.rwnd >= MIN_RWND_SHARE * w.busy
                                            and use >= SENDER_WINDOW_USE):
        text = (f"the receiver's window: limited by it {w.rwnd / w.busy:.0%} of its busy "
                f"time, {use:.0%} of it in flight each RTT")
        if snd_wnd and rtt_us:
            figures["peer_window_bytes"] = snd_wnd
            text += (f"; {c.destination} advertises {snd_wnd} bytes, which at RTT "
                     f"{fmt_rtt(rtt_us)} allows ≈ {_mbit(snd_wnd / (rtt_us / 1e6))} Mbit/s")
        return FlowVerdict(
            "peer_receive_window", True, text,
            f"On the receiving host ({c.destination}): let its receive buffer grow (raise "
            "net.ipv4.tcp_rmem[2] there, or the receiving application's SO_RCVBUF if it "
            "sets one); run netdiag buffers there to see which.", figures)
    if w.sndbuf >= LIMITED_SHARE * w.busy:
        sndbuf, wmax, wmem_max = sk.get("sndbuf", 0), limits["wmax"], limits["wmem_max"]
        figures["sndbuf"] = sndbuf
        earlier = c.earlier.skmem.get("sndbuf") if c.earlier is not None else None
        share = f"limited by its send buffer {w.sndbuf / w.busy:.0%} of its busy time"
        if wmax and sndbuf >= wmax:
            return FlowVerdict("send_buffer_max", True,
                               f"the send buffer maximum: {share}, at tcp_wmem[2] = {wmax}",
                               f"Raise the third value of net.ipv4.tcp_wmem (now {wmax}).",
                               figures)
        if wmem_max and sndbuf == 2 * wmem_max:
            return FlowVerdict("send_buffer_capped_by_wmem_max", True,
                               f"a send buffer the application asked for, capped at 2 × "
                               f"wmem_max = {sndbuf}: {share}",
                               f"Raise net.core.wmem_max (now {wmem_max}) to what the "
                               "application asks, or let it stop setting SO_SNDBUF.", figures)
        if earlier is not None and earlier == sndbuf:
            return FlowVerdict("send_buffer_fixed_by_application", True,
                               f"a send buffer fixed by the application at {sndbuf} bytes "
                               f"(it did not grow; below tcp_wmem[2] = {wmax}): {share}",
                               "Raise or remove the application's SO_SNDBUF setting; "
                               "tcp_wmem does not apply to it.", figures)
        return FlowVerdict("autotuning_growing", False,
                           f"its send buffer, still growing ({share})", figures=figures)
    # tcpi_delivery_rate_app_limited flags one delivery-rate sample: a sender that paces or
    # caps its rate is application-limited between its bursts and looks unlimited within
    # one. Only the flag in both samples of a measured window, with nothing left unsent,
    # says the application; one sample (or totals since the connection began) cannot.
    then = c.earlier.info if c.earlier is not None and w.seconds else None
    if then is not None and _app_limited(info) and _app_limited(then):
        return FlowVerdict("application", False,
                           "its application: application-limited in both samples of the "
                           "window, nothing queued unsent, no window or buffer limit",
                           figures=figures)
    last = ("; its last rate sample was application-limited, which one sample does not "
            "decide" if _app_limited(info) else "")
    return FlowVerdict("network_or_application", False,
                       "no window or buffer: the network, congestion control or the "
                       "application's own rate (a paced or capped sender looks unlimited within "
                       f"its bursts; tcp_info cannot tell them apart){last}", figures=figures)


def _app_limited(info: dict[str, int]) -> bool:
    return bool(info.get("delivery_rate_app_limited")) and not info.get("notsent_bytes")


def _fixed_small(c: Connection, limits: dict[str, int | None]) -> str:
    """Why this receiver's buffer is one the application fixed below what autotuning would
    give it, or "" when nothing says so. An autotuned socket starts at tcp_rmem[1] and only
    grows, to about twice what the application reads per RTT (rcv_space), up to tcp_rmem[2];
    SO_RCVBUF locks it (SOCK_RCVBUF_LOCK: tcp_rcv_space_adjust() leaves it alone)."""
    info, rb = c.info, c.skmem.get("rcvbuf", 0)
    rmax, rdefault = limits["rmax"] or 0, limits.get("rdefault") or 0
    space = info.get("rcv_space", 0)
    earlier = c.earlier.skmem.get("rcvbuf") if c.earlier is not None else None
    if not rb or earlier not in (None, rb) or (rmax and rb >= rmax):
        return ""
    if rdefault and rb < rdefault:
        return (f"below tcp_rmem[1] = {rdefault}, where autotuning starts and which it never "
                "goes under")
    if rmax and rb < 2 * space:
        return (f"below tcp_rmem[2] = {rmax} and below twice what the application reads per "
                f"RTT ({space})")
    return ""


def _fixed_verdict(c: Connection, limits: dict[str, int | None], why: str, held: str,
                   figures: dict[str, Any]) -> FlowVerdict:
    rb, rmax = c.skmem.get("rcvbuf", 0), limits["rmax"]
    return FlowVerdict(
        "receive_buffer_fixed_by_application", True,
        f"a receive buffer fixed by the application at {rb} bytes (SO_RCVBUF: autotuning "
        f"is off for this socket; {why}): {held}",
        f"Remove the application's SO_RCVBUF call (autotuning then sizes the buffer, up to "
        f"tcp_rmem[2] = {rmax}) or raise it (now SO_RCVBUF = {rb // 2}, e.g. iperf3 -w, "
        "nginx listen rcvbuf=); tcp_rmem does not apply to a socket that set it. "
        "`netdiag probe rcvbuf` names the process that sets it.", figures)


def _capped_verdict(rb: int, rmem_max: int, held: str,
                    figures: dict[str, Any]) -> FlowVerdict:
    return FlowVerdict(
        "receive_buffer_capped_by_rmem_max", True,
        f"a receive buffer the application asked for, capped at 2 × rmem_max = {rb} "
        f"(SO_RCVBUF: autotuning is off for this socket): {held}",
        f"Raise net.core.rmem_max (now {rmem_max}) to what the application asks, or let "
        "it stop setting SO_RCVBUF so that autotuning sizes the buffer. "
        "`netdiag probe rcvbuf` names the process that sets it.", figures)


def _judge_receiver(c: Connection, w: _Window, limits: dict[str, int | None],
                    figures: dict[str, Any]) -> FlowVerdict:
    info, sk = c.info, c.skmem
    rb, queued = sk.get("rcvbuf", 0), sk.get("rmem_alloc", 0)
    rmax, rmem_max = limits["rmax"] or 0, limits["rmem_max"]
    figures.update(rcvbuf=rb, rcv_space=info.get("rcv_space"), rcv_wnd=info.get("rcv_wnd"))
    fixed = _fixed_small(c, limits)
    if rb and queued >= SLOW_READER_SHARE * rb:
        if fixed:
            # The queue is full because the buffer is small, not because the reader is
            # slow: autotuning would have given it more room than it reads per RTT.
            figures["receive_queue"] = queued
            full = f"its receive queue holds {queued} of {rb} bytes"
            if rmem_max and rb == 2 * rmem_max:
                return _capped_verdict(rb, rmem_max, full, figures)
            return _fixed_verdict(c, limits, fixed, full, figures)
        return FlowVerdict("slow_reader", False,
                           f"its application reads slower than data arrives (its receive "
                           f"queue holds {queued} of {rb} bytes)", figures=figures)
    rtt_us = info.get("rcv_rtt") or info.get("rtt", 0)
    window = info.get("rcv_wnd")
    rate = w.received / w.seconds if w.seconds else (
        info.get("rcv_space", 0) / (rtt_us / 1e6) if rtt_us else 0)
    if not window or not rtt_us:
        return FlowVerdict("unjudged", False, "its advertised window or RTT is not known",
                           figures=figures)
    use = rate * (rtt_us / 1e6) / window
    figures["window_use"] = round(use, 2)
    held = (f"its receive window ({window} bytes, {use:.0%} used each RTT of "
            f"{fmt_rtt(rtt_us)})")
    if use < WINDOW_USE:
        if fixed and info.get("rcv_space", 0) >= window:
            # At µs RTTs rate × RTT understates the use of the window; the application
            # reading a whole advertised window within one RTT says the window paces it.
            return _fixed_verdict(
                c, limits, fixed, f"its receive window ({window} bytes) is smaller than what "
                f"the application reads in one RTT ({info.get('rcv_space')} bytes)", figures)
        return FlowVerdict("network", False, f"the sender or the path: it uses {use:.0%} of "
                                             "the window it advertises", figures=figures)
    wscale, expected = info.get("rcv_wscale"), expected_wscale(rmax, rmem_max)
    small_scale = wscale is not None and (wscale or info.get("snd_wscale")) and \
        wscale < expected
    bdp_per_100 = round(2 * 100e6 / 8 * rtt_us / 1e6)
    if rmax and rb >= rmax and not small_scale:
        return FlowVerdict(
            "receive_buffer_max", True,
            f"the receive buffer maximum: {held}; the buffer ({rb}) is at tcp_rmem[2]",
            f"Raise the third value of net.ipv4.tcp_rmem (now {rmax}): a flow needs about "
            f"2 × bandwidth × RTT, here ≈ {bdp_per_100} bytes per 100 Mbit/s.", figures)
    if rmem_max and rb == 2 * rmem_max:
        return _capped_verdict(rb, rmem_max, held, figures)
    if small_scale or fixed:
        why = (f"window scale {wscale} below the host's {expected}" if small_scale else fixed)
        return _fixed_verdict(c, limits, why, held, figures)
    return FlowVerdict("autotuning_growing", False,
                       f"{held}; autotuning is still growing its buffer ({rb})", figures=figures)


def _bdp(facts: Facts) -> Finding | None:
    d = facts.details
    rmem = facts.sysctl.get_ints("net.ipv4.tcp_rmem") if facts.sysctl else None
    wmem = facts.sysctl.get_ints("net.ipv4.tcp_wmem") if facts.sysctl else None
    if d is None or not rmem or not wmem:
        return None
    limits = {"rmax": rmem[-1], "rdefault": rmem[1] if len(rmem) > 1 else None,
              "wmax": wmem[-1],
              "rmem_max": facts.sysctl.get_int("net.core.rmem_max"),
              "wmem_max": facts.sysctl.get_int("net.core.wmem_max")}
    procs = facts.processes
    sample = {"second sample": "two samples of each flow "
                               f"{_seconds(d.flows)} s apart",
              "interval": f"two samples --interval {facts.interval or 0:g} s apart"}.get(
        d.flow_sample or "", "totals since each connection began (one sample)")
    rows, held = [], []
    for c in d.flows:
        v = judge_flow(c, limits)
        if v.limit == "idle":
            continue
        row: dict[str, Any] = {"local_address": c.source, "local_port": c.sport,
                               "peer_address": c.destination, "peer_port": c.dport,
                               "limit": v.limit, "held_by_buffer": v.held,
                               "what_holds_it": v.text}
        row.update(v.figures)
        holders = procs.holders_of(c.inode) if procs is not None and c.inode else []
        info = procs.processes.get(holders[0]) if holders else None
        row.update(pid=holders[0] if holders else None,
                   command=info.command if info and info.command else None)
        rows.append(row)
        if v.held:
            held.append((c, v, row))
    ev: dict[str, Any] = {"tcp_rmem_max": limits["rmax"], "tcp_wmem_max": limits["wmax"],
                          "rmem_max": limits["rmem_max"], "wmem_max": limits["wmem_max"],
                          "connections_checked": d.with_info, "active_flows": d.active_flows,
                          "measured_over": sample, "flows": rows[:10]}
    if held:
        c, v, row = held[0]
        who = f" ({row['command']}, pid {row['pid']})" if row.get("command") else ""
        rate = f", {row['rate_mbit']} Mbit/s" if "rate_mbit" in row else ""
        title = (f"{endpoint(c.source, c.sport)} ↔ {endpoint(c.destination, c.dport)}"
                 f"{who}{rate}: held by {v.text}"
                 + (f"; {len(held) - 1} more flow(s) held by a buffer" if len(held) > 1
                    else ""))
        advice = []
        for _, fv, _ in held:
            if fv.advice and fv.advice not in advice:
                advice.append(fv.advice)
        return make(BDP, Severity.WARNING, title, ev, recommendation=" ".join(advice[:3]))
    kinds: dict[str, int] = {}
    for r in rows:
        kinds[r["limit"]] = kinds.get(r["limit"], 0) + 1
    what = ", ".join(f"{n} by {_LIMIT_WORDS.get(k, k)}" for k, n in
                     sorted(kinds.items(), key=lambda kv: -kv[1]))
    title = (f"no busy flow is held back by a buffer: {what}" if rows else
             "no busy flow to judge")
    return make(BDP, Severity.OK, title, ev,
                recommendation="Nothing to change in buffer settings for these flows.")


_LIMIT_WORDS = {"loopback": "loopback (no path to fill)", "application": "their application",
                "network": "the network or the sender", "slow_reader": "a slow reader",
                "network_or_application": "no window or buffer, so the network, congestion "
                                          "control or the application's own rate (cannot "
                                          "tell which)",
                "autotuning_growing": "autotuning still growing",
                "unjudged": "too little busy time to judge"}


def _seconds(flows: list[Connection]) -> str:
    secs = [c.sample_seconds for c in flows if c.sample_seconds]
    return f"{min(secs):.2g}" if secs else "?"


def check(facts: Facts) -> list[Finding]:
    drops = _counters_finding(DROPS, facts, [("TcpExt", n) for n in DROP_COUNTERS],
                              "Receive-queue drops and prunes")
    udp = _counters_finding(UDP, facts, [("Udp", "RcvbufErrors"), ("Udp", "SndbufErrors"),
                                         ("Udp6", "RcvbufErrors"), ("Udp6", "SndbufErrors")],
                            "UDP buffer errors")
    return [f for f in (_autotune(facts), drops, _pressure(facts), _bdp(facts), udp,
                        _fixed(facts)) if f is not None]
