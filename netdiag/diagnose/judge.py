"""Weigh the evidence for each cause of a symptom: confirmed, likely, ruled out, or cannot tell
here (and what would tell).

The evidence is what the run collected (census, counters judged over --interval or the probe
window, sysctls, processes), the findings of every topic, and the probes when they ran. Like the
rules, this module reads facts and findings only: it never reads the system itself.

Verdicts:
- confirmed: decisive evidence, now or over the window (a full accept queue; RSTs sent with the
  reason; connect() failing with the errno toward the destination);
- likely: evidence that fits but does not decide (a counter that moved since boot; a counter
  shared by several causes);
- ruled out: what would show the cause was looked at over a window (or now) and is absent;
- cannot tell: no source here can show it; `would_tell` says what would.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from netdiag.diagnose.symptoms import CAUSES, CauseSpec, Symptom
from netdiag.facts import Facts, KeepaliveGroup, Listener
from netdiag.model import Finding, Severity
from netdiag.rules import backlog as backlog_rules
from netdiag.rules import buffers as buffers_rules
from netdiag.rules import keepalive as keepalive_rules
from netdiag.rules import ports as ports_rules
from netdiag.rules._policy import Change, change
from netdiag.rules._util import (
    TIME_WAIT_SECONDS,
    DestinationPorts,
    destination_ports,
    duration,
    outgoing_advice,
    port_budget,
    rates,
)

CONFIRMED, LIKELY, RULED_OUT, CANNOT_TELL = "confirmed", "likely", "ruled_out", "cannot_tell"
RANK = {CONFIRMED: 0, LIKELY: 1, CANNOT_TELL: 2, RULED_OUT: 3}

HANDSHAKE_STATES = ("SYN_SENT", "SYN_RECV")
RUN_WHILE = "run while the errors happen, with --interval 10 (counters judged by change)"
PROBE = "add --probe-seconds 10 as root while the errors happen (reasons the kernel gives)"


@dataclass(frozen=True)
class Scope:
    """What --port, --peer and --pid narrow the evidence to."""

    port: int | None = None
    peer: str | None = None
    peer_port: int | None = None
    pid: int | None = None

    def text(self) -> str:
        parts = []
        if self.port is not None:
            parts.append(f"port {self.port}")
        if self.peer is not None:
            parts.append(f"peer {self.peer}" + (f":{self.peer_port}" if self.peer_port else ""))
        if self.pid is not None:
            parts.append(f"pid {self.pid}")
        return ", ".join(parts) or "the whole namespace"

    def port_matches(self, *ports: int | None) -> bool:
        return self.port is None or self.port in ports

    def peer_matches(self, peer: str | None, port: int | None = None) -> bool:
        if self.peer is not None and peer != self.peer:
            return False
        return self.peer_port is None or port == self.peer_port


@dataclass
class CauseVerdict:
    cause: CauseSpec
    verdict: str
    because: str
    evidence: dict[str, Any] = field(default_factory=dict)
    would_tell: str | None = None
    severity: Severity | None = None  # a confirmed cause's severity (default warning)
    action: str | None = None  # advice for this evidence, instead of the cause's own


class Evidence:
    """The run's facts, findings and probe results, with the scope applied."""

    def __init__(self, facts: Facts, findings: list[Finding], scope: Scope) -> None:
        self.facts = facts
        self.scope = scope
        self.by_id: dict[str, Finding] = {}
        for f in findings:
            old = self.by_id.get(f.id)
            if old is None or f.severity > old.severity:
                self.by_id[f.id] = f

    # -- what the run has
    @property
    def window(self) -> str | None:
        """What counters are judged over: "interval", "previous run", "probe window"."""
        f = self.facts
        return f.baseline if f.counters_before is not None and not f.baseline_reset else None

    def finding(self, fid: str) -> Finding | None:
        return self.by_id.get(fid)

    def bad(self, fid: str) -> Finding | None:
        """The finding when it is at least a warning."""
        f = self.by_id.get(fid)
        return f if f is not None and f.severity >= Severity.WARNING else None

    def counter(self, proto: str, name: str) -> Change | None:
        return change(self.facts, proto, name)

    def grew(self, proto: str, name: str) -> bool | None:
        """True/False over the window; None when there is no window (or it restarted)."""
        ch = self.counter(proto, name)
        if ch is None or ch.delta is None or ch.reset:
            return None
        return ch.delta > 0

    def since_boot(self, proto: str, name: str) -> int:
        ch = self.counter(proto, name)
        return ch.total if ch is not None else 0

    def sysctl(self, key: str) -> int | None:
        return self.facts.sysctl.get_int(key) if self.facts.sysctl else None

    def probe(self, name: str) -> Any:
        return (self.facts.probes or {}).get(name)

    @property
    def probes_ran(self) -> bool:
        return bool(self.facts.probes)

    # -- scoped views
    def listeners(self) -> list[Listener]:
        census = self.facts.census
        if census is None:
            return []
        out = [lst for lst in census.listeners if self.scope.port_matches(lst.port)]
        if self.scope.pid is not None:
            out = [lst for lst in out if self.scope.pid in self.holders(lst.inode)]
        return out

    def holders(self, inode: int) -> list[int]:
        procs = self.facts.processes
        return procs.holders_of(inode) if procs is not None else []

    def command(self, pid: int) -> str:
        procs = self.facts.processes
        info = procs.processes.get(pid) if procs is not None else None
        return info.command if info is not None and info.command else "?"

    def holder_rows(self, inode: int) -> list[dict[str, Any]] | None:
        """The processes holding a socket, typed for evidence ({pid, command}, command null
        when unknown); None when owners were not looked up."""
        if self.facts.processes is None:
            return None
        return [{"pid": p, "command": None if (c := self.command(p)) == "?" else c}
                for p in self.holders(inode)[:4]]

    def who(self, inode: int) -> str:
        pids = self.holders(inode)
        return ", ".join(f"pid {p} ({self.command(p)})" for p in pids[:4]) or "owner unknown"

    def local_port_states(self, port: int) -> dict[str, int]:
        census = self.facts.census
        out: dict[str, int] = {}
        if census is None or census.by_local_port is None:
            return out
        for (lport, state), n in census.by_local_port.items:
            if lport == port:
                out[state] = out.get(state, 0) + n
        return out

    @property
    def port(self) -> int | None:
        """The port the scope names: --port, else the port of --peer IP:PORT."""
        return self.scope.port if self.scope.port is not None else self.scope.peer_port

    @property
    def scoped(self) -> bool:
        s = self.scope
        return s.port is not None or s.peer is not None or s.pid is not None

    def data_retransmitting(self) -> int:
        """Sockets with data on the retransmit timer, namespace-wide: the timer "on" outside
        SYN_SENT/SYN_RECV (a socket there retransmits its SYN or SYN-ACK and holds no data)."""
        census = self.facts.census
        if census is None:
            return 0
        on = census.timers_by_state.get("on")
        if on is not None:
            return sum(n for st, n in on.items() if st not in HANDSHAKE_STATES)
        handshake = sum(census.by_state.get(st, 0) for st in HANDSHAKE_STATES)
        return max((census.timers or {}).get("on", 0) - handshake, 0)

    def outgoing(self) -> list[tuple[str, int, str, str, int]] | None:
        """This namespace's outgoing connections toward the scope's port and peer, as
        (address, port, state, timer, count); None when the socket table does not show them
        (not read, or --pid: an outgoing connection's process is not in these counts)."""
        census = self.facts.census
        if census is None or census.outgoing_timers is None or self.scope.pid is not None:
            return None
        port, top = self.port, census.outgoing_timers
        rows = [(a, p, st, t, n) for (a, p, st, t), n in top.items
                if (port is None or p == port) and
                (self.scope.peer is None or a == self.scope.peer)]
        if not rows and (top.approximate or top.distinct_seen > len(top.items)):
            return None  # the busiest destinations only: the scope's may be among the rest
        return rows

    def only_outgoing(self) -> bool:
        """The scope's sockets are all outgoing connections, whose timers the socket table
        shows: --port with no socket on that local port, or --peer IP:PORT (a service
        there). Not --peer IP alone (its incoming connections too) nor --pid."""
        s = self.scope
        if self.outgoing() is None:
            return False
        if s.port is not None:
            return not self.local_in_scope()
        return s.peer_port is not None

    def local_in_scope(self) -> dict[str, int]:
        """Sockets on the scoped local port (--port), by state; {} without --port."""
        return self.local_port_states(self.scope.port) if self.scope.port is not None else {}

    def failures(self, call: str | tuple[str, ...], *errors: str) -> list[Any]:
        """Syscall failures the errors probe counted, in scope."""
        res = self.probe("errors")
        if res is None:
            return []
        calls = (call,) if isinstance(call, str) else call
        out = []
        for f in res.failures:
            if f.call not in calls and not any(f.call.startswith(c) for c in calls):
                continue
            if errors and f.error not in errors:
                continue
            if self.scope.pid is not None and f.pid != self.scope.pid:
                continue
            if f.call == "connect" or f.call.startswith("connect"):
                if self.scope.port is not None and self.scope.port != f.remote_port and \
                        self.scope.port != f.local_port:
                    continue
                if not self.scope.peer_matches(f.peer, f.remote_port):
                    continue
            elif not self.scope.port_matches(f.local_port, f.remote_port) and \
                    f.local_port is not None:
                continue
            elif f.peer is not None and not self.scope.peer_matches(f.peer, f.remote_port):
                continue
            out.append(f)
        return out

    def unplaced(self, fails: list[Any]) -> list[Any]:
        """Of failures in scope, those the errors probe could not place under --port or
        --peer (their port or peer unknown): not known to be the scope's."""
        s = self.scope
        return [f for f in fails
                if (s.port is not None and f.local_port is None and f.remote_port is None)
                or (s.peer is not None and f.peer is None)
                or (s.peer_port is not None and f.remote_port is None)]

    def resets_sent(self, *reasons: str, syn: tuple[bool | None, ...] = (True, False, None)
                    ) -> tuple[int, list[dict[str, Any]]] | None:
        """RSTs this host sent in the probe window with these reasons (None: not probed),
        whose answers_syn is one of `syn`: True for a RST answering a SYN (a refused
        connection attempt: ECONNREFUSED, never ECONNRESET), False for the others, None where
        the kernel cannot tell."""
        res = self.probe("resets")
        if res is None:
            return None
        rows = [r for r in res.sent if (not reasons or r.reason in reasons)
                and self.scope.port_matches(r.local_port) and r.answers_syn in syn]
        return sum(r.resets for r in rows), [
            {"reason": r.reason, "state": r.state, "local_port": r.local_port,
             "answers_syn": r.answers_syn, "resets": r.resets} for r in rows[:5]]

    def told(self, error: str) -> int | None:
        """How many times local applications in scope were told `error` in the probe window
        (the errors probe; None: it did not run)."""
        if self.probe("errors") is None:
            return None
        return sum(f.count for f in self.failures("", error))

    def resets_received(self) -> tuple[int, list[dict[str, Any]]] | None:
        res = self.probe("resets")
        if res is None:
            return None
        rows = [r for r in res.received if self.scope.port_matches(r.local_port, r.remote_port)
                and self.scope.peer_matches(r.peer, r.remote_port)]
        return sum(r.resets for r in rows), [
            {"local_port": r.local_port, "peer": r.peer, "remote_port": r.remote_port,
             "resets": r.resets} for r in rows[:5]]

    def drops(self, *reasons: str) -> tuple[int, list[dict[str, Any]]] | None:
        res = self.probe("drops")
        if res is None:
            return None
        if self.scope.port is not None:
            rows = [r for r in res.by_port if r.reason in reasons and r.port == self.scope.port]
            return sum(r.drops for r in rows), [
                {"reason": r.reason, "port": r.port, "drops": r.drops} for r in rows[:5]]
        rows = [r for r in res.by_reason if r.reason in reasons]
        return sum(r.drops for r in rows), [{"reason": r.reason, "drops": r.drops}
                                            for r in rows[:5]]


# ---- small verdict builders --------------------------------------------------------------

def _v(cid: str, verdict: str, because: str, evidence: dict[str, Any] | None = None,
       would_tell: str | None = None, severity: Severity | None = None) -> CauseVerdict:
    return CauseVerdict(CAUSES[cid], verdict, because, evidence or {}, would_tell, severity)


def _namespace_wide(ev: Evidence, v: CauseVerdict, since_boot: bool = False) -> CauseVerdict:
    """A verdict drawn from namespace-wide counters or findings, under --port, --peer or
    --pid: they cannot say the scoped sockets are the ones counted, so a confirmed cause
    becomes likely, and one likely from totals since boot cannot be told."""
    if ev.scope.port is None and ev.scope.peer is None and ev.scope.pid is None:
        return v
    if v.verdict == CONFIRMED or (v.verdict == LIKELY and since_boot):
        v.verdict = LIKELY if v.verdict == CONFIRMED else CANNOT_TELL
        v.severity = None
        v.because += f" (the whole namespace, not only {ev.scope.text()})"
        v.evidence["scope"] = "the whole namespace"
        v.would_tell = v.would_tell or RUN_WHILE
    return v


def _counter_verdict(ev: Evidence, cid: str, proto: str, name: str, *, what: str,
                     decisive: bool, would_tell: str = RUN_WHILE) -> CauseVerdict:
    """A cause shown by one counter: growth over the window confirms it (or makes it likely
    when the counter is shared with other causes), no growth rules it out, a total since boot
    alone makes it likely, a zero total since boot rules it out for good."""
    ch = ev.counter(proto, name)
    if ch is None:
        return _v(cid, CANNOT_TELL, f"{proto}.{name} is not available here",
                  would_tell=would_tell)
    evidence = {f"{proto}.{name}": ch.evidence()}
    grew = ev.grew(proto, name)
    scoped = ev.scope.port is not None or ev.scope.peer is not None or ev.scope.pid is not None
    if scoped:
        # A namespace counter cannot say whether the scoped port, peer or process is the one
        # it counted: at most likely, and a total since boot says nothing about them.
        evidence[f"{proto}.{name}"]["scope"] = "the whole namespace"
        whole = f" (the whole namespace, not only {ev.scope.text()})"
        if grew:
            return _v(cid, LIKELY, f"{name} grew by {ch.delta} in {ch.seconds:g} s{whole}: "
                                   f"{what}", evidence, would_tell)
        if grew is None and ch.total:
            return _v(cid, CANNOT_TELL, f"{name} = {ch.total} since boot{whole}", evidence,
                      would_tell)
    if grew:
        return _v(cid, CONFIRMED if decisive else LIKELY,
                  f"{name} grew by {ch.delta} in {ch.seconds:g} s: {what}", evidence)
    if grew is False:
        return _v(cid, RULED_OUT, f"{name} did not grow over the {ev.window} "
                                  f"({ch.seconds:g} s)", evidence)
    if ch.total == 0:
        return _v(cid, RULED_OUT, f"{name} is 0 since the namespace was created", evidence)
    return _v(cid, LIKELY, f"{name} = {ch.total} since boot (not known whether it happens "
                           "now)", evidence, would_tell)


def _reset_verdict(ev: Evidence, cid: str, reasons: tuple[str, ...], counter: str | None,
                   what: str, counter_decisive: bool = False) -> CauseVerdict:
    """RSTs with one of these reasons, from the resets probe; else the counter."""
    sent = ev.resets_sent(*reasons)
    if sent is not None:
        n, rows = sent
        if n:
            got = _v(cid, CONFIRMED, f"this host sent {n} RST(s) with reason "
                                     f"{'/'.join(reasons)} in the probe window",
                     {"resets_sent": rows})
            # RSTs sent are known by local port only, not by peer or process.
            return got if ev.scope.port is not None else _namespace_wide(ev, got)
        if counter is None:
            return _v(cid, RULED_OUT, f"no RST with reason {'/'.join(reasons)} was sent in "
                                      "the probe window", {"resets_sent": rows})
    if counter is not None:
        got = _counter_verdict(ev, cid, "TcpExt", counter, what=what,
                               decisive=counter_decisive, would_tell=PROBE)
        if sent is not None and got.verdict != CONFIRMED:
            got.because += f"; no RST with reason {'/'.join(reasons)} in the probe window"
            got.evidence["resets_sent"] = []
            if got.verdict == LIKELY:
                got.verdict = RULED_OUT
        return got
    return _v(cid, CANNOT_TELL, "only the kernel's reset reason shows it", would_tell=PROBE)


# ---- ECONNRESET --------------------------------------------------------------------------

UNKNOWN = "unknown"


def _pressure_verdict(state: Any) -> str:
    return {True: CONFIRMED, None: LIKELY, False: RULED_OUT}.get(state, CANNOT_TELL)


def _accept_pressure(ev: Evidence) -> tuple[Any, dict[str, Any], str]:
    """Is a listener's accept queue full now or overflowing over the window? True, False,
    None (not full now, overflows since boot only) or UNKNOWN (no socket table)."""
    if ev.facts.census is None:
        return UNKNOWN, {}, "the socket table was not read"
    full = [lst for lst in ev.listeners() if lst.full or
            (lst.backlog and lst.accept_queue >= lst.backlog)]
    evidence: dict[str, Any] = {}
    if full:
        evidence["listeners_at_limit"] = [
            {"address": lst.address, "port": lst.port, "accept_queue": lst.accept_queue,
             "limit": lst.backlog, "holders": ev.holder_rows(lst.inode)} for lst in full[:5]]
        lst = full[0]
        why = backlog_rules.why_not_accepting(
            backlog_rules.socket_holders(ev.facts.processes, lst.inode))
        return True, evidence, (f"the accept queue of {lst.address}:{lst.port} "
                                f"({ev.who(lst.inode)}) holds {lst.accept_queue} of "
                                f"{lst.backlog}: {why}")
    samples = [s for s in (ev.facts.listener_samples or []) if s.samples_at_limit
               and ev.scope.port_matches(s.port)]
    if samples:
        s = samples[0]
        evidence["sampled_at_limit"] = [{"port": x.port, "limit": x.backlog,
                                         "max_queue": x.max_queue,
                                         "samples_at_limit": x.samples_at_limit,
                                         "samples": x.samples} for x in samples[:5]]
        return True, evidence, (f"the accept queue of port {s.port} stood at its limit in "
                                f"{s.samples_at_limit} of {s.samples} samples")
    ch = ev.counter("TcpExt", "ListenOverflows")
    if ch is not None:
        evidence["TcpExt.ListenOverflows"] = ch.evidence()
    grew = ev.grew("TcpExt", "ListenOverflows")
    if ev.scope.port is not None or ev.scope.pid is not None:
        return _scoped_pressure(ev, evidence, ch, grew)
    if grew:
        return True, evidence, f"ListenOverflows grew by {ch.delta} in {ch.seconds:g} s"
    if grew is False:
        return False, evidence, f"no listener was full and ListenOverflows did not grow " \
                                f"over the {ev.window}"
    if ch is not None and ch.total:
        return None, evidence, f"no listener is full now; ListenOverflows = {ch.total} " \
                               "since boot"
    return False, evidence, "no listener is full and ListenOverflows is 0"


def _backlog_action(ev: Evidence) -> str | None:
    """The advice for the first listener in scope that is full now or was seen at its limit:
    the process first (no one accepts, or too slowly), then the number that bounds its
    queue (the application's listen() value below somaxconn; somaxconn when it cuts)."""
    somaxconn = ev.sysctl("net.core.somaxconn")
    full = [lst for lst in ev.listeners() if lst.full or
            (lst.backlog and lst.accept_queue >= lst.backlog)]
    inode, limit = (full[0].inode, full[0].backlog) if full else (None, None)
    if not full:
        mine = {lst.inode for lst in ev.listeners()}
        s = next((x for x in ev.facts.listener_samples or [] if x.samples_at_limit
                  and (x.inode in mine if x.inode else ev.scope.port_matches(x.port))), None)
        if s is None:
            return None
        inode, limit = s.inode, s.backlog
    probe = ev.probe("backlog")
    call = next((c for c in getattr(probe, "listen_calls", []) if inode and c.inode == inode),
                None)
    holders = backlog_rules.socket_holders(ev.facts.processes, inode) if inode else []
    return backlog_rules.backlog_advice(limit, somaxconn,
                                        call.requested_backlog if call else None,
                                        backlog_rules.nobody_accepts(holders))


def _scoped_pressure(ev: Evidence, evidence: dict[str, Any], ch: Change | None,
                     grew: bool | None) -> tuple[Any, dict[str, Any], str]:
    """_accept_pressure for --port/--pid, once no listener in scope is full now: the
    namespace's ListenOverflows cannot be split by listener, so it supports the cause only
    through the scoped listeners' own samples."""
    mine = ev.listeners()
    scope = ev.scope.text()
    if ch is not None:
        evidence["TcpExt.ListenOverflows"]["scope"] = "the whole namespace: every listener"
    if not mine:
        return False, evidence, f"no listener in scope ({scope})"
    # No overflow anywhere in the namespace is none on the scoped listener either.
    if grew is False:
        return False, evidence, (f"the accept queue of port {mine[0].port} is not full and "
                                 f"ListenOverflows did not grow over the {ev.window}")
    if ch is not None and ch.total == 0:
        return False, evidence, (f"the accept queue of port {mine[0].port} is not full and "
                                 "ListenOverflows is 0")
    inodes = {lst.inode for lst in mine if lst.inode}
    samples = [s for s in ev.facts.listener_samples or []
               if (s.inode in inodes if s.inode else ev.scope.port_matches(s.port))]
    counted = ""
    if ch is not None and (grew or ch.total):
        amount = f"+{ch.delta} over the {ev.window}" if grew else f"{ch.total} since boot"
        counted = (f"; ListenOverflows ({amount}) counts every listener of the namespace, "
                   "not this one")
    if samples and all(s.samples for s in samples):
        n = min(s.samples for s in samples)
        return False, evidence, (f"the accept queue of port {mine[0].port} never reached its "
                                 f"limit ({mine[0].backlog}) in {n} samples over the window"
                                 + counted)
    return UNKNOWN, evidence, (f"the accept queue of port {mine[0].port} holds "
                               f"{mine[0].accept_queue} of {mine[0].backlog} now" + counted)


def _econnreset(ev: Evidence) -> list[CauseVerdict]:
    out = _econnreset_causes(ev)
    _rst_sender_elsewhere(ev, out)
    told = ev.told("ECONNRESET")
    arrived = ev.resets_received()
    if told == 0 and arrived is not None and arrived[0] == 0:
        # The RSTs this host sent went to other hosts (none arrived here): their clients were
        # told ECONNRESET, not this host's processes. A confirmed cause stands.
        for v in out:
            if v.verdict == CONFIRMED:
                v.because += ("; the RSTs went to other hosts (none arrived here), whose "
                              "applications were told ECONNRESET")
    elif told == 0:
        # The errors probe watched this host's processes over the same window and none was
        # told ECONNRESET: whatever the kernel did here reached no local application.
        for v in out:
            if v.verdict == CONFIRMED:
                v.verdict, v.severity = LIKELY, None
                who = "no local process" + (" in scope" if ev.scope.pid is not None or
                                            ev.scope.port is not None else "")
                v.because += (f"; yet {who} was told ECONNRESET in the window (the errors "
                              "probe sees this host's processes only: clients on other "
                              "hosts may have been)")
                v.evidence["econnreset_seen_locally"] = 0
                v.would_tell = ("run netdiag why ECONNRESET --probe-seconds 10 on the "
                                "clients' host")
    return out


def _rst_sender_elsewhere(ev: Evidence, out: list[CauseVerdict]) -> None:
    """Every ECONNRESET cause is about the host that sent the RST. This host's counters and
    probes rule a cause out only for RSTs this host sent: when the RSTs came from another
    host (the resets probe saw RSTs arrive that this host did not send), or when nothing says
    where they came from (no resets probe; no loopback --peer, no local listener on --port),
    "ruled out" would be said of a host not seen here: it becomes "cannot tell"."""
    received = ev.resets_received()
    if received is not None:
        sent_here = (ev.resets_sent() or (0, []))[0]
        elsewhere: bool | None = received[0] > sent_here
    else:
        elsewhere = None  # not known
    local_peer = _is_loopback(ev.scope.peer) or (
        ev.scope.port is not None and bool(ev.listeners()))
    if elsewhere is False or (elsewhere is None and local_peer):
        return
    for v in out:
        if v.verdict != RULED_OUT:
            continue
        v.verdict = CANNOT_TELL
        v.because += ("; that rules it out on this host only, and RSTs arrived here from "
                      "another host" if elsewhere else
                      "; that rules it out on this host only: a peer on another host is not "
                      "seen here")
        v.evidence["rules_out_this_host_only"] = True
        v.would_tell = (
            "run netdiag why ECONNRESET on the host that sent the RSTs (the peer)"
            if elsewhere else
            "run netdiag why ECONNRESET on the host that sent the RSTs; on this one, when it "
            "is the sender, give --port of its service (or --peer IP for a peer on this "
            "host), or --probe-seconds as root")


def _econnreset_causes(ev: Evidence) -> list[CauseVerdict]:
    out = []
    sent = ev.resets_sent("NO_SOCKET", syn=(False, None))  # known not to answer a SYN, or ?
    refusals = ev.resets_sent("NO_SOCKET", syn=(True,))
    refused = {"refused_connects": refusals[1], "refused_note": (
        "RSTs answering a SYN refuse a connection (the client gets ECONNREFUSED, not "
        "ECONNRESET): not counted here")} if refusals and refusals[0] else {}
    unknown = sum(r["resets"] for r in (sent[1] if sent else [])
                  if r["answers_syn"] is None)
    if sent is not None and sent[0] and unknown < sent[0]:
        out.append(_v("econnreset.no_socket", CONFIRMED,
                      f"this host answered {sent[0] - unknown} segment(s) of established "
                      "connections with a RST because no socket matched (reason NO_SOCKET)",
                      {"resets_sent": sent[1], **refused}))
    elif sent is not None and sent[0]:
        out.append(_v("econnreset.no_socket", LIKELY,
                      f"this host answered {sent[0]} segment(s) with a RST because no socket "
                      "matched (reason NO_SOCKET); whether they answered SYNs (refused "
                      "connects, ECONNREFUSED) is not known on this kernel",
                      {"resets_sent": sent[1], **refused},
                      "the kernel's BTF with sk_buff head/transport_header tells them apart"))
    elif sent is not None:
        received, rows = ev.resets_received() or (0, [])
        local = (ev.resets_sent() or (0, []))[0]
        foreign = received - local  # RSTs received that this host's own TCP did not send
        if foreign > 0:
            # RSTs from another host: why it sent them (no socket, SO_LINGER 0, unread data
            # at close...) is known on that host, not here.
            out.append(_v("econnreset.no_socket", CANNOT_TELL,
                          f"{received} RST(s) received, {local} sent by this host: another "
                          "host sent the others, and its reasons are known there",
                          {"resets_received": rows},
                          "run netdiag why ECONNRESET --probe-seconds 10 on the host that "
                          "sent them (the peer)"))
        else:
            out.append(_v("econnreset.no_socket", RULED_OUT,
                          "this host sent no NO_SOCKET RST to an established connection in "
                          "the window"
                          + (f" ({refusals[0]} answered SYNs: refused connects, "
                             "ECONNREFUSED)" if refused else "")
                          + (", and every RST received here was sent by this host's own "
                             "sockets" if received else ""),
                          {"resets_received": rows, **refused}))
    else:
        grew = ev.grew("Tcp", "OutRsts")
        ch = ev.counter("Tcp", "OutRsts")
        evidence = {"Tcp.OutRsts": ch.evidence()} if ch else {}
        if grew is False:
            out.append(_v("econnreset.no_socket", RULED_OUT, "this host sent no RST over the "
                          f"{ev.window} (Tcp.OutRsts did not grow)", evidence,
                          "run netdiag why ECONNRESET on the peer host"))
        else:
            out.append(_v("econnreset.no_socket", CANNOT_TELL,
                          "RSTs are counted (Tcp.OutRsts) but not why without the probe",
                          evidence, PROBE))
    out.append(_reset_verdict(ev, "econnreset.linger_zero", ("TCP_STATE",), "TCPAbortOnData",
                              "connections aborted by close() with SO_LINGER 0 (or data after "
                              "close)"))
    out.append(_reset_verdict(ev, "econnreset.close_unread", ("TCP_ABORT_ON_CLOSE",),
                              "TCPAbortOnClose", "sockets closed with unread data",
                              counter_decisive=True))
    abort = ev.sysctl("net.ipv4.tcp_abort_on_overflow")
    pressure, pev, ptext = _accept_pressure(ev)
    pev["tcp_abort_on_overflow"] = abort
    invalid = ev.resets_sent("INVALID_SYN")
    if invalid is not None and invalid[0]:
        pev["resets_sent"] = invalid[1]
        if abort == 1:
            pressure, ptext = True, (f"{ptext}; this host reset {invalid[0]} completed "
                                     "handshake(s) it had no room for (reason INVALID_SYN)")
    if abort == 1:
        verdict = _pressure_verdict(pressure)
        got = _v("econnreset.overflow_abort", verdict,
                 f"tcp_abort_on_overflow=1 and {ptext}", pev,
                 RUN_WHILE if pressure is None or pressure == UNKNOWN else None,
                 severity=Severity.CRITICAL if pressure is True else None)
        advice = _backlog_action(ev) if pressure is True else None
        if advice:
            got.action = (f"{advice} Set tcp_abort_on_overflow back to 0, so that clients "
                          "retry instead of failing.")
        out.append(got)
    else:
        out.append(_v("econnreset.overflow_abort", RULED_OUT,
                      f"tcp_abort_on_overflow={abort}: a full accept queue drops, it does "
                      "not reset", pev))
    flags = ev.resets_sent("TCP_FLAGS")
    if flags is not None and flags[0]:
        out.append(_v("econnreset.request_expired", CONFIRMED,
                      f"{flags[0]} RST(s) with reason TCP_FLAGS (ACKs for expired handshakes)"
                      f"; {ptext}", {"resets_sent": flags[1], **pev}))
    elif abort != 1 and pressure is True:
        out.append(_v("econnreset.request_expired", LIKELY,
                      f"{ptext}; with tcp_abort_on_overflow=0 handshakes expire after "
                      "tcp_synack_retries", pev, PROBE))
    else:
        out.append(_v("econnreset.request_expired", RULED_OUT if pressure is False else
                      CANNOT_TELL, ptext, pev, None if pressure is False else RUN_WHILE))
    out.append(_reset_verdict(ev, "econnreset.keepalive_timeout", ("TCP_KEEPALIVE_TIMEOUT",),
                              "TCPAbortOnTimeout", "connections given up on by a timer "
                              "(keepalive, retransmissions or SYN timeouts)"))
    mem = ev.bad("buffers.memory_pressure")
    got = _reset_verdict(ev, "econnreset.orphan_memory", ("TCP_ABORT_ON_MEMORY",),
                         "TCPAbortOnMemory", "orphans reset for lack of memory",
                         counter_decisive=True)
    if mem is not None and got.verdict in (RULED_OUT, CANNOT_TELL):
        got.verdict, got.because = LIKELY, f"{mem.title} (buffers.memory_pressure)"
    out.append(got)
    out.append(_reset_from_the_path(
        ev, "econnreset.middlebox", "the peer's kernel or a box on the path sent them",
        "run netdiag probe resets on the peer: RSTs its TCP did not send came from the path",
        PROBE + " here and on the peer"))
    return out


def _reset_from_the_path(ev: Evidence, cid: str, others: str, elsewhere_tell: str,
                         unprobed_tell: str) -> CauseVerdict:
    """A RST made on the path (netfilter's reject with tcp-reset, a load balancer, NAT) fires
    tcp_receive_reset where it arrives and no tcp_send_reset on any host's TCP
    (symptoms-and-limits.md §1.1). So RSTs received here that this host's own TCP sent
    (loopback, or a local peer) rule the path out for the probe window; more received than
    sent here were sent by the peer's kernel or the path, which this host cannot tell apart.
    ECONNRESET's middlebox and ECONNREFUSED's firewall reset are both judged so."""
    recv = ev.resets_received()
    if recv is None:
        return _v(cid, CANNOT_TELL, "only RSTs seen on both hosts tell a RST made on the path "
                                    "apart", would_tell=unprobed_tell)
    n, rows = recv
    sent, sent_rows = ev.resets_sent() or (0, [])
    evidence = {"resets_received": rows, "resets_sent": sent_rows}
    if n > sent:
        # From a loopback peer, a RST this host's TCP did not send can only have been made
        # here: netfilter's reject with tcp-reset (or tc/BPF) in this namespace.
        res = ev.probe("resets")
        local = sum(r.resets for r in res.received
                    if ev.scope.port_matches(r.local_port, r.remote_port)
                    and ev.scope.peer_matches(r.peer, r.remote_port)
                    and _is_loopback(r.peer)) if res is not None else 0
        if local > sent:
            return _v(cid, CONFIRMED, f"{local} RST(s) came from loopback peers though this "
                                      f"host's TCP sent {sent}: a firewall rule in this "
                                      "namespace made them (a reject with tcp-reset)",
                      evidence, "nft list ruleset; iptables -S (in this namespace)")
        return _v(cid, CANNOT_TELL, f"{n} RST(s) received, {n - sent} more than this host's "
                                    f"TCP sent: {others}", evidence, elsewhere_tell)
    if not n:
        return _v(cid, RULED_OUT, "no RST was received in the probe window", evidence)
    reasons = "/".join(sorted({r["reason"] for r in sent_rows}))
    syn = sum(r["resets"] for r in sent_rows if r["answers_syn"])
    how = ", all answering a SYN" if syn and syn == sent else \
        f", {syn} answering a SYN" if syn else ""
    return _v(cid, RULED_OUT, f"every RST received here ({n}) was sent by this host's own TCP, "
                              f"which sent {sent} in the window (reason {reasons}{how})",
              evidence)


# ---- ECONNREFUSED ------------------------------------------------------------------------

def _econnrefused(ev: Evidence) -> list[CauseVerdict]:
    out = []
    refused = ev.failures("connect", "ECONNREFUSED")
    dests = [{"peer": f.peer, "port": f.remote_port, "pid": f.pid, "command": f.command,
              "count": f.count} for f in refused[:5]]
    port = ev.port
    # --peer IP:PORT names the port too; its listener is here only when IP is loopback.
    remote = ev.scope.port is None and port is not None and not _is_loopback(ev.scope.peer)
    if port is not None and remote and not refused:
        out.append(_v("econnrefused.no_listener", CANNOT_TELL,
                      f"{ev.scope.peer}:{port} is another host's port: whether it listens "
                      "shows there", {"port": port},
                      f"netdiag why ECONNREFUSED --port {port} on {ev.scope.peer}"))
    elif port is not None and not remote:
        listening = [lst for lst in ev.listeners() if lst.port == port]
        states = ev.local_port_states(port)
        evidence = {"port": port, "listeners": len(listening),
                    "sockets_on_port": states}
        if dests:
            evidence["connect_refused"] = dests
        if not listening:
            # A warning with or without the probe's refusals: nothing listening is not
            # among the critical evidence (a full queue resetting clients, ports or
            # descriptors run out).
            out.append(_v("econnrefused.no_listener", CONFIRMED,
                          f"nothing listens on port {port} in this namespace", evidence))
        else:
            lst = listening[0]
            out.append(_v("econnrefused.no_listener", RULED_OUT,
                          f"{lst.address}:{lst.port} listens here ({ev.who(lst.inode)}); if "
                          "clients still get refused, they reach another host or address",
                          evidence))
    elif refused:
        f = refused[0]
        census = ev.facts.census
        here = {lst.port for lst in census.listeners} if census is not None else set()
        rst = ev.resets_sent("NO_SOCKET", syn=(True, None))
        rst_here = sum(r["resets"] for r in rst[1] if r["local_port"] == f.remote_port) \
            if rst is not None else 0
        evidence = {"connect_refused": dests}
        if rst_here or (_is_loopback(f.peer) and f.remote_port not in here):
            if rst is not None:
                evidence["resets_sent"] = rst[1]
            out.append(_v("econnrefused.no_listener", CONFIRMED,
                          f"connect() to {f.peer}:{f.remote_port} was refused {f.count} "
                          f"time(s) (pid {f.pid}, {f.command}) and nothing listens on port "
                          f"{f.remote_port} here"
                          + (f": this kernel answered {rst_here} SYN(s) with a RST "
                             "(NO_SOCKET)" if rst_here else ""), evidence))
        else:
            out.append(_v("econnrefused.no_listener", LIKELY,
                          f"connect() to {f.peer}:{f.remote_port} was refused {f.count} "
                          f"time(s) (pid {f.pid}, {f.command})", evidence,
                          f"netdiag why ECONNREFUSED --port {f.remote_port} on {f.peer}"))
    else:
        out.append(_v("econnrefused.no_listener", CANNOT_TELL,
                      "which port is refused is not known",
                      would_tell="give --port PORT (the port clients connect to), or "
                                 + PROBE))
    out.append(_reset_from_the_path(
        ev, "econnrefused.firewall_reset", "the server's kernel or a firewall on the path "
        "sent them",
        "netdiag probe resets on the server: RSTs its TCP did not send are a firewall's; nft "
        "list ruleset / iptables -S here, on the path and on the server",
        PROBE + "; nft list ruleset / iptables -S on the path and on the server"))
    out.append(_counter_verdict(ev, "econnrefused.icmp_unreachable", "Icmp", "InDestUnreachs",
                                what="ICMP destination-unreachable messages received",
                                decisive=False))
    return out


# ---- ETIMEDOUT ---------------------------------------------------------------------------

def _etimedout(ev: Evidence) -> list[CauseVerdict]:
    out = []
    pressure, pev, ptext = _accept_pressure(ev)
    verdict = _pressure_verdict(pressure)
    full = ev.bad("backlog.accept_queue_full")
    sev = full.severity if full is not None else None
    got = _v("etimedout.accept_queue_full", verdict, ptext, pev,
             RUN_WHILE if pressure is None or pressure == UNKNOWN else None, sev)
    got.action = _backlog_action(ev) if pressure is True else None
    out.append(got)
    cookies = ev.sysctl("net.ipv4.tcp_syncookies")
    got = _counter_verdict(ev, "etimedout.syn_queue_drop", "TcpExt", "TCPReqQFullDrop",
                           what="SYNs dropped on a full SYN queue", decisive=True)
    got.evidence["tcp_syncookies"] = cookies
    out.append(got)
    nf = ev.drops("NETFILTER_DROP")
    synretr = ev.counter("TcpExt", "TCPSynRetrans")
    sev_ = {"TcpExt.TCPSynRetrans": synretr.evidence()} if synretr else {}
    if nf is not None and nf[0]:
        out.append(_v("etimedout.firewall_drop", CONFIRMED,
                      f"netfilter dropped {nf[0]} packet(s) here in the probe window",
                      {"drops": nf[1], **sev_}))
    elif ev.grew("TcpExt", "TCPSynRetrans") and pressure is False:
        out.append(_namespace_wide(ev, _v(
            "etimedout.firewall_drop", LIKELY,
            f"SYNs were retransmitted ({synretr.delta} in {synretr.seconds:g} s) and no local "
            "listener dropped them: the SYNs or the answers are lost on the way", sev_,
            "run netdiag why ETIMEDOUT on the server; check its firewall")))
    else:
        out.append(_v("etimedout.firewall_drop",
                      RULED_OUT if nf is not None else CANNOT_TELL,
                      "no netfilter drop here in the probe window" if nf is not None else
                      "a drop on another host or box leaves no trace here", sev_,
                      None if nf is not None else PROBE + ", and on the server"))
    got = _retries_exhausted(ev)
    if ev.probe("retrans") is not None:
        got.evidence["retransmits_by_flow"] = _retransmits(ev)[:5]
    out.append(got)
    ka = _counter_verdict(ev, "etimedout.keepalive_expiry", "TcpExt", "TCPKeepAlive",
                          what="keepalive probes sent (idle connections being checked)",
                          decisive=False)
    if ev.resets_sent("TCP_KEEPALIVE_TIMEOUT") and ev.resets_sent("TCP_KEEPALIVE_TIMEOUT")[0]:
        n, rows = ev.resets_sent("TCP_KEEPALIVE_TIMEOUT")
        ka = _v("etimedout.keepalive_expiry", CONFIRMED,
                f"{n} connection(s) given up by keepalive in the probe window",
                {"resets_sent": rows})
    out.append(ka)
    # Likely by elimination only when every kernel cause was looked at and ruled out.
    eliminated = all(v.verdict == RULED_OUT for v in out)
    out.append(_v("etimedout.app_timeout", LIKELY if eliminated else CANNOT_TELL,
                  "every kernel cause was ruled out: an application deadline fires before "
                  "the kernel gives up" if eliminated else
                  "application timeouts leave no kernel trace",
                  would_tell="compare the application's timeout with the server's response "
                             "time"))
    return out


DATA_CALLS = ("read", "recv", "write", "send", "writev", "readv", "sendmsg", "recvmsg")


def _retries_exhausted(ev: Evidence) -> CauseVerdict:
    """tcp_retries2 ran out on established connections. TCPAbortOnTimeout does not say so
    alone: tcp_write_err() counts it for every connection a timer gives up, connection
    attempts out of tcp_syn_retries (SYN_SENT) and keepalive included."""
    cid = "etimedout.retransmits_exhausted"
    got = _counter_verdict(ev, cid, "TcpExt", "TCPAbortOnTimeout",
                           what="connections given up by a timer (retransmissions, SYN "
                                "retries of connect(), or keepalive)", decisive=False)
    census = ev.facts.census
    retrying = ev.data_retransmitting()
    syn_sent = census.by_state.get("SYN_SENT", 0) if census is not None else 0
    got.evidence["sockets_retransmitting_now"] = retrying
    got.evidence["syn_sent_now"] = syn_sent
    shared = ("TCPAbortOnTimeout also counts connect() attempts that ran out of "
              "tcp_syn_retries (SYN_SENT) and keepalive give-ups")
    if ev.probe("errors") is not None:
        data = ev.failures(DATA_CALLS, "ETIMEDOUT")
        conn = ev.failures("connect", "ETIMEDOUT")
        got.evidence["read_write_timeouts"] = sum(f.count for f in data)
        got.evidence["connect_timeouts"] = sum(f.count for f in conn)
        unplaced = ev.unplaced(data)
        if data and len(unplaced) == len(data):
            f = data[0]
            got.evidence["read_write_timeouts_port_unknown"] = sum(x.count for x in data)
            return _v(cid, LIKELY if got.verdict in (CONFIRMED, LIKELY) else CANNOT_TELL,
                      f"{f.call}() failed with ETIMEDOUT {sum(x.count for x in data)} "
                      f"time(s) (pid {f.pid}, {f.command}), but the errors probe could not "
                      f"tell whether on {ev.scope.text()} (its port or peer unknown)",
                      got.evidence, f"netdiag why ETIMEDOUT --pid {f.pid}")
        data = [f for f in data if f not in unplaced]
        if data:
            f = data[0]
            return _v(cid, CONFIRMED, f"{f.call}() failed with ETIMEDOUT "
                                      f"{sum(x.count for x in data)} time(s) (pid {f.pid}, "
                                      f"{f.command}): an established connection gave up",
                      got.evidence)
        if got.verdict in (CONFIRMED, LIKELY):
            got.verdict = LIKELY if retrying else CANNOT_TELL
            got.because += ("; no read or write failed with ETIMEDOUT in the probe window"
                            + (f" ({sum(f.count for f in conn)} connect() did: SYN retries, "
                               "not tcp_retries2)" if conn else "") + f": {shared}")
            got.would_tell = got.would_tell or RUN_WHILE
        return got
    if got.verdict in (CONFIRMED, LIKELY):
        got.because += f"; {shared}"
        if syn_sent and not retrying:
            got.verdict = CANNOT_TELL
            got.because += (f"; {syn_sent} socket(s) wait in SYN_SENT now and none has data on "
                            "the retransmit timer")
            got.would_tell = ("add --probe-seconds 10 as root: the errors probe tells connect() "
                              "timeouts (tcp_syn_retries) from read/write ones (tcp_retries2)")
    return got


def _retransmits(ev: Evidence) -> list[dict[str, Any]]:
    """Retransmits in the probe window toward the scope's peers (largest first)."""
    res = ev.probe("retrans")
    if res is None:
        return []
    return [{"local_port": r.local_port, "peer": r.peer, "remote_port": r.remote_port,
             "retransmits": r.retransmits}
            for r in res.by_flow if r.retransmits and ev.scope.peer_matches(r.peer, r.remote_port)
            and ev.scope.port_matches(r.local_port, r.remote_port)]


# ---- EADDRNOTAVAIL / EADDRINUSE ----------------------------------------------------------

def _port_budgets(ev: Evidence) -> list[DestinationPorts] | None:
    """The source ports toward each destination in scope (symptoms-and-limits.md §3.3), from
    the rules' own helper so that `why` and ports.ephemeral_exhaustion count alike; None when
    the socket table or ip_local_port_range was not read."""
    facts = ev.facts
    census = facts.census
    if census is None or census.by_destination is None or port_budget(facts) is None:
        return None
    tw = dict(census.timewait_by_destination.items) if census.timewait_by_destination else {}
    all_tw = census.by_state.get("TIME_WAIT", 0) or sum(tw.values())
    rate = rates(facts)
    out = []
    for key, used in census.by_destination.items:
        _src, dst, dport = key
        if not ev.scope.peer_matches(dst, dport) or not (ev.scope.port is None
                                                          or dport == ev.scope.port):
            continue
        dp = destination_ports(facts, key, used, tw.get(key, 0), all_tw, rate)
        if dp is not None:
            out.append(dp)
    return out


def _budget_row(dp: DestinationPorts) -> dict[str, Any]:
    """One destination's ports as `why` judges them: every port with a socket toward it
    (TIME_WAIT included) against the usable ports, and what tcp_tw_reuse gives back."""
    return {"source": dp.source, "destination": dp.destination, "port": dp.port,
            "usable_ports": dp.usable, "ports_in_use": dp.in_use + dp.time_wait,
            "connected": dp.in_use, "time_wait": dp.time_wait,
            "listening_in_range": dp.bound_in_range, "share": round(dp.occupied_share, 3),
            "tw_reuse_applies": dp.reuse.applies, "tw_reuse": dp.reuse.why,
            "tw_reuse_delay_ms": dp.reuse.delay_ms,
            "sustainable_conn_per_s": round(dp.sustainable_per_s, 1)}


def _held_how(dp: DestinationPorts, bound: bool = False) -> str:
    """Why the ports toward a destination stay taken, by the kernel's reuse rule
    (tcp_twsk_unique()). bound: the errors probe saw bind(0) fail for want of a port, so the
    client binds before connect(): bind() takes only a port no socket holds, TIME_WAIT
    included, whatever tcp_tw_reuse says (it is connect()'s rule)."""
    if bound and dp.time_wait:
        per_s = dp.burst_room / TIME_WAIT_SECONDS
        return (f"a client here binds before connect() (bind(0) failed for want of a "
                f"port), and tcp_tw_reuse is connect()'s rule, not bind()'s: bind() takes a "
                f"port a TIME_WAIT socket holds only when both set SO_REUSEADDR, so for such a "
                f"client each TIME_WAIT keeps its port for 60 s (at most about {per_s:.0f} new "
                "connections/s)")
    if dp.reuse.applies:
        return (f"{dp.reuse.why}; younger ones keep theirs, so connect() fails once more "
                f"than {dp.burst_room} connections are opened toward it within "
                f"{dp.reuse.delay_ms} ms (faster than about {dp.sustainable_per_s:.0f}/s)")
    if dp.time_wait:
        return (f"each TIME_WAIT keeps its port for 60 s ({dp.reuse.why}): at most about "
                f"{dp.sustainable_per_s:.0f} new connections/s fit")
    return "the connections in use hold them"


def _eaddrnotavail(ev: Evidence) -> list[CauseVerdict]:
    """connect() fails with EADDRNOTAVAIL when no port of the range is free for the
    destination's four-tuple. Every judgement here counts the ports with a socket toward the
    destination now (TIME_WAIT included): the share of them still held depends on their ages,
    which sock_diag does not give, so the census alone never rules out a burst that found
    them all younger than tcp_tw_reuse_delay."""
    out = []
    cid = "eaddrnotavail.port_exhaustion"
    fails = ev.failures("connect", "EADDRNOTAVAIL")
    told = sum(f.count for f in fails)
    probed = ev.probe("errors") is not None
    budgets = _port_budgets(ev)
    # The destination the failures name (when the probe knows it), else the busiest one.
    failed_to = {(f.peer, f.remote_port) for f in fails if f.peer is not None}
    pool = [d for d in budgets or [] if (d.destination, d.port) in failed_to] \
        if failed_to else budgets or []
    dp = max(pool, key=lambda d: d.occupied, default=None)
    evidence: dict[str, Any] = {"destinations": [
        _budget_row(d) for d in sorted(budgets or [], key=lambda d: -d.occupied)[:5]]}
    if fails:
        evidence["connect_failed"] = [{"peer": f.peer, "port": f.remote_port, "pid": f.pid,
                                       "command": f.command, "count": f.count}
                                      for f in fails[:5]]
    where = f"{dp.destination}:{dp.port}" if dp is not None else ""
    taken = (f"{dp.occupied} of the {dp.usable} usable source ports have a socket toward "
             f"{where} ({dp.in_use} connected, {dp.time_wait} in TIME_WAIT"
             + (f", {dp.bound_in_range} listening" if dp.bound_in_range else "") + ")"
             ) if dp is not None else ""
    share = dp.occupied_share if dp is not None else 0.0
    # The ports surely held whatever their age: connected, listening, and TIME_WAIT when
    # connect() may not take it back.
    held = (dp.in_use + dp.bound_in_range + (0 if dp.reuse.applies else dp.time_wait)) / \
        dp.usable if dp is not None and dp.usable else share
    bound = bool(_bind_evidence(ev))
    got: CauseVerdict
    if fails and dp is not None and share >= ports_rules.EXHAUST_WARN_SHARE:
        got = _v(cid, CONFIRMED, f"connect() failed with EADDRNOTAVAIL {told} time(s), and "
                                 f"{taken}; {_held_how(dp, bound)}", evidence,
                 severity=Severity.CRITICAL)
    elif fails:
        f = fails[0]
        got = _v(cid, LIKELY,
                 f"connect() failed with EADDRNOTAVAIL {told} time(s) (toward {f.peer}:"
                 f"{f.remote_port}, pid {f.pid}, {f.command}): no source port was free for it"
                 + (f"; yet only {taken} now" if dp is not None else
                    "; the socket table was not read" if budgets is None else
                    "; the socket table shows no connection toward it now"),
                 evidence, "ss -tan: which sockets hold the ports of ip_local_port_range")
    elif budgets is None:
        got = _v(cid, CANNOT_TELL, "the socket table or ip_local_port_range was not read",
                 evidence, RUN_WHILE)
    elif dp is None:
        got = _v(cid, RULED_OUT, f"no outgoing connection in scope ({ev.scope.text()}) holds "
                                 "a source port now"
                 + ("; no connect() failed with EADDRNOTAVAIL in the probe window"
                    if probed else ""), evidence)
    elif held >= ports_rules.EXHAUST_CRIT_SHARE:
        got = _v(cid, CONFIRMED, f"{taken}; {_held_how(dp, bound)}", evidence,
                 severity=Severity.CRITICAL)
    elif share >= ports_rules.EXHAUST_WARN_SHARE:
        got = _v(cid, LIKELY, f"{taken}; {_held_how(dp, bound)}"
                 + ("; no connect() failed with EADDRNOTAVAIL in the probe window"
                    if probed else ""), evidence, PROBE)
    else:
        got = _v(cid, RULED_OUT, f"{taken} ({share:.0%}), far from all of them", evidence)
    if dp is not None and got.verdict in (CONFIRMED, LIKELY):
        got.action = outgoing_advice(dp, bind_hint=bound)
        if bound and dp.reuse.applies:
            got.action = ("A client here binds before connect(), and tcp_tw_reuse does not "
                          "apply to bind(): set IP_BIND_ADDRESS_NO_PORT before bind() "
                          "(connect() then picks the port, and may take TIME_WAIT ones back). "
                          + got.action)
    elif bound and got.verdict in (CONFIRMED, LIKELY):
        got.action = (f"{got.cause.action} bind() failed here for want of a port: set "
                      "IP_BIND_ADDRESS_NO_PORT before bind() when choosing a source address.")
    out.append(got)
    out.append(_bind_before_connect(ev, fails, dp))
    out.append(_nonlocal_address(ev))
    return out


def _nonlocal_address(ev: Evidence) -> CauseVerdict:
    """bind() to an address the host does not have: the errors probe sees bind() itself
    fail with EADDRNOTAVAIL (inet_bind_sk())."""
    cid = "eaddrnotavail.nonlocal_address"
    tell = "ip -br addr: is the address the client binds configured?"
    if ev.probe("errors") is None:
        return _v(cid, CANNOT_TELL, "only a failed bind() shows it, which the errors probe "
                                    "sees", would_tell=PROBE + "; " + tell)
    binds = ev.failures("bind", "EADDRNOTAVAIL")
    if not binds:
        return _v(cid, RULED_OUT, "no bind() failed with EADDRNOTAVAIL in the probe window")
    f = binds[0]
    return _v(cid, CONFIRMED, f"bind() failed with EADDRNOTAVAIL {sum(x.count for x in binds)} "
                              f"time(s) (pid {f.pid}, {f.command}): the address it binds is "
                              "not on this host",
              {"bind_failed": [{"error": x.error, "pid": x.pid, "command": x.command,
                                "count": x.count} for x in binds[:5]]}, tell)


def _bind_evidence(ev: Evidence) -> list[Any]:
    """bind() calls the errors probe saw fail for want of a port: bind(0) with EADDRINUSE
    (no port free for every destination), the failure a client that binds before connect()
    meets first when the range runs out. A bind() to a port it names fails for whoever
    holds that port instead (EADDRINUSE's causes), so those do not count here."""
    return [f for f in ev.failures("bind", "EADDRINUSE") if f.local_port is None]


def _bind_before_connect(ev: Evidence, fails: list[Any], dp: DestinationPorts | None
                         ) -> CauseVerdict:
    """Ports bound before connect() are skipped by every connect(). Said only on evidence of
    bind(): bind(0) failing for want of a port (the errors probe). sock_diag here does not
    list sockets bound without a connection, nor tell a port bound before connect() from one
    connect() chose."""
    cid = "eaddrnotavail.bind_before_connect"
    binds = _bind_evidence(ev)
    if binds:
        f = binds[0]
        return _v(cid, LIKELY, f"bind() failed with {f.error} {sum(x.count for x in binds)} "
                               f"time(s) (pid {f.pid}, {f.command}): a process binds before "
                               "connect(), and each bound port is taken from every "
                               "destination",
                  {"bind_failed": [{"error": x.error, "pid": x.pid, "command": x.command,
                                    "count": x.count} for x in binds[:5]]},
                  "ss -tanp: that process's sockets and their local ports")
    tell = ("look for bind() before connect() in the client (strace -f -e trace=bind,connect), "
            "without IP_BIND_ADDRESS_NO_PORT")
    if dp is not None and dp.occupied_share >= ports_rules.EXHAUST_CRIT_SHARE:
        return _v(cid, RULED_OUT,
                  f"the connections toward {dp.destination}:{dp.port} themselves have "
                  f"{dp.occupied} of the {dp.usable} usable ports: they alone fill the "
                  "range, and nothing shows a port bound before connect()",
                  {"ports_toward_destination": dp.occupied, "usable_ports": dp.usable})
    if fails:
        return _v(cid, CANNOT_TELL,
                  "connect() failed while the connections toward its destination hold few "
                  "ports: something else holds them, and sock_diag here shows neither sockets "
                  "bound without a connection nor which ports bind() chose", would_tell=tell)
    return _v(cid, CANNOT_TELL, "sock_diag cannot tell a port bound before connect() from one "
                                "chosen by connect()", would_tell=tell)


def _eaddrinuse(ev: Evidence) -> list[CauseVerdict]:
    port = ev.scope.port
    if port is None:
        why = "which port fails to bind is needed"
        tell = "give --port PORT (the port the service binds)"
        return [_v(c.id, CANNOT_TELL, why, would_tell=tell)
                for c in _symptom_causes("EADDRINUSE")
                if c.id != "eaddrinuse.bind_zero_exhaustion"] + [_bind_zero(ev)]
    out = []
    listening = [lst for lst in (ev.facts.census.listeners if ev.facts.census else [])
                 if lst.port == port]
    states = ev.local_port_states(port)
    evidence = {"port": port, "sockets_on_port": states,
                "listeners": [{"address": lst.address, "port": lst.port,
                               "holders": ev.holder_rows(lst.inode)}
                              for lst in listening[:5]]}
    if listening:
        lst = listening[0]
        out.append(_v("eaddrinuse.listener_holds_port", CONFIRMED,
                      f"{lst.address}:{port} is already listening ({ev.who(lst.inode)})",
                      evidence))
    else:
        out.append(_v("eaddrinuse.listener_holds_port", RULED_OUT,
                      f"no socket listens on port {port}", evidence))
    tw = states.get("TIME_WAIT", 0)
    out.append(_v("eaddrinuse.time_wait_blocks_bind", LIKELY if tw and not listening else
                  RULED_OUT, f"{tw} TIME_WAIT socket(s) hold local port {port}" if tw else
                  f"no TIME_WAIT socket holds local port {port}", evidence,
                  "check that the service sets SO_REUSEADDR" if tw else None))
    eph = ev.facts.census.ephemeral_range if ev.facts.census else None
    others = sum(n for s, n in states.items() if s not in ("LISTEN", "TIME_WAIT"))
    in_range = eph is not None and eph[0] <= port <= eph[1]
    reserved = _reserved(ev, port)
    if in_range and not reserved and others and not listening:
        out.append(_v("eaddrinuse.outgoing_took_port", CONFIRMED,
                      f"port {port} is inside ip_local_port_range {eph[0]}-{eph[1]} and "
                      f"{others} connection(s) use it as their local port", evidence))
    else:
        out.append(_v("eaddrinuse.outgoing_took_port", LIKELY if in_range and not reserved
                      and not listening else RULED_OUT,
                      (f"port {port} is inside ip_local_port_range and not reserved: an "
                       "outgoing connection can take it while the service is down")
                      if in_range and not reserved else
                      f"port {port} is outside ip_local_port_range or reserved", evidence))
    out.append(_v("eaddrinuse.bind_zero_exhaustion", RULED_OUT,
                  f"bind() to port {port} names its port: the free ports of the ephemeral "
                  f"range do not matter, whoever holds port {port} does (the causes above)",
                  {"port": port}))
    return out


def _bind_zero(ev: Evidence) -> CauseVerdict:
    """bind(0) (no port given): it needs a local port no socket uses at all, whatever the
    destination, so the outgoing connections' ports count together, not per destination."""
    cid = "eaddrinuse.bind_zero_exhaustion"
    zero = _bind_evidence(ev) if ev.probe("errors") is not None else []
    if zero:  # the errors probe saw bind(0) itself fail with EADDRINUSE
        f = zero[0]
        return _v(cid, CONFIRMED, f"bind() with port 0 failed with EADDRINUSE "
                                  f"{sum(x.count for x in zero)} time(s) in the probe window "
                                  f"(pid {f.pid}, {f.command}): no port of the range was free "
                                  "for it",
                  {"bind_failed": [{"error": x.error, "pid": x.pid, "command": x.command,
                                    "count": x.count} for x in zero[:5]]})
    census = ev.facts.census
    eph = census.ephemeral_range if census is not None else None
    if census is None or census.by_destination is None or eph is None:
        return _v(cid, CANNOT_TELL, "the socket table or ip_local_port_range was not read",
                  would_tell="run as root")
    size = max(eph[1] - eph[0] + 1, 1)
    used = sum(n for _k, n in census.by_destination.items)
    evidence = {"ephemeral_range": list(eph), "outgoing_sockets": used, "range_size": size}
    share = used / size
    top = census.by_destination
    if share < 0.4 and (top.approximate or top.distinct_seen > len(top.items)):
        return _v(cid, CANNOT_TELL, f"the top destinations' {used} outgoing socket(s) hold "
                                    f"{share:.0%} of ip_local_port_range; the others are not "
                                    "counted here", evidence,
                  "ss -tan: the sockets whose local port lies in ip_local_port_range")
    if share >= 0.4:
        return _v(cid, LIKELY, f"{used} outgoing socket(s) hold ports of ip_local_port_range "
                               f"{eph[0]}-{eph[1]} ({share:.0%} of its {size} ports at most)",
                  evidence)
    return _v(cid, RULED_OUT, f"{used} outgoing socket(s) hold at most {share:.0%} of the "
                              f"{size} ports of ip_local_port_range {eph[0]}-{eph[1]}",
              evidence)


def _is_loopback(address: str | None) -> bool:
    return bool(address) and (address.startswith("127.") or address == "::1")


def _reserved(ev: Evidence, port: int) -> bool:
    from netdiag.facts import parse_port_list

    raw = ev.facts.sysctl.values.get("net.ipv4.ip_local_reserved_ports", "") \
        if ev.facts.sysctl else ""
    try:
        return any(lo <= port <= hi for lo, hi in parse_port_list(raw))
    except ValueError:
        return False


# ---- EMFILE ------------------------------------------------------------------------------

def _emfile(ev: Evidence) -> list[CauseVerdict]:
    out = []
    fails = ev.failures(("accept", "accept4", "socket", "connect"), "EMFILE", "ENFILE")
    fin = ev.finding("sockets.fd_limit")
    procs = ev.facts.processes
    rows = []
    # --port: the processes that hold that port's listeners (when they are known).
    serving = {p for lst in ev.listeners() for p in ev.holders(lst.inode)} \
        if ev.scope.port is not None else set()
    if procs is not None:
        for info in procs.processes.values():
            if ev.scope.pid is not None and info.pid != ev.scope.pid:
                continue
            if serving and info.pid not in serving:
                continue
            if info.netns is not None and procs.netns_inode is not None \
                    and info.netns != procs.netns_inode:
                continue  # another namespace's process
            if info.nofile_soft and info.fds >= 0.8 * info.nofile_soft:
                rows.append({"pid": info.pid, "command": info.command, "fds": info.fds,
                             "nofile_soft": info.nofile_soft})
    rows.sort(key=lambda r: -r["fds"] / max(r["nofile_soft"], 1))
    evidence: dict[str, Any] = {"near_limit": rows[:5],
                                "fd_limit_finding": fin.title if fin is not None else None}
    if fails:
        evidence["failed_calls"] = [{"call": f.call, "error": f.error, "pid": f.pid,
                                     "command": f.command, "count": f.count}
                                    for f in fails[:5]]
    emfile = [f for f in fails if f.error == "EMFILE"]
    if emfile:
        f = emfile[0]
        out.append(_v("emfile.process_limit", CONFIRMED,
                      f"{f.call}() failed with EMFILE {f.count} time(s) in pid {f.pid} "
                      f"({f.command})", evidence, severity=Severity.CRITICAL))
    elif rows:
        r = rows[0]
        out.append(_v("emfile.process_limit", CONFIRMED if r["fds"] >= r["nofile_soft"] - 1
                      else LIKELY, f"pid {r['pid']} ({r['command']}) holds {r['fds']} of its "
                      f"{r['nofile_soft']} descriptors", evidence,
                      None if r["fds"] >= r["nofile_soft"] - 1 else PROBE))
    elif procs is not None and procs.scanned and procs.unreadable:
        evidence["processes_not_readable"] = procs.unreadable
        out.append(_v("emfile.process_limit", CANNOT_TELL,
                      f"no readable process in scope is near its RLIMIT_NOFILE, but "
                      f"{procs.unreadable} process(es) could not be read", evidence,
                      "run as root"))
    elif procs is not None and procs.scanned:
        out.append(_v("emfile.process_limit", RULED_OUT,
                      "no process in scope is near its RLIMIT_NOFILE now", evidence,
                      RUN_WHILE + ", or " + PROBE))
    else:
        out.append(_v("emfile.process_limit", CANNOT_TELL,
                      "process fd tables could not be read", evidence, "run as root"))
    fnr = ev.facts.file_nr
    if any(f.error == "ENFILE" for f in fails):
        out.append(_v("emfile.system_limit", CONFIRMED, "calls failed with ENFILE",
                      evidence, severity=Severity.CRITICAL))
    elif fnr is not None and fnr.maximum:
        share = fnr.allocated / fnr.maximum
        out.append(_v("emfile.system_limit", CONFIRMED if share >= 0.99 else
                      LIKELY if share >= 0.8 else RULED_OUT,
                      f"{fnr.allocated} of fs.file-max {fnr.maximum} file handles "
                      f"({share:.0%}) are allocated",
                      {"file_nr": {"allocated": fnr.allocated, "maximum": fnr.maximum}}))
    else:
        out.append(_v("emfile.system_limit", CANNOT_TELL, "fs/file-nr was not read"))
    cw = ev.bad("closewait.leak")
    if cw is not None:
        pids = {r.get("pid") for r in cw.evidence.get("by_process_and_port", [])
                if isinstance(r, dict)}
        near = {r["pid"] for r in rows}
        out.append(_v("emfile.leak_close_wait", CONFIRMED if pids & near else LIKELY,
                      cw.title, {"closewait": cw.title}))
    else:
        out.append(_v("emfile.leak_close_wait", RULED_OUT,
                      "no process holds CLOSE_WAIT sockets worth a warning"))
    return out


# ---- EPIPE -------------------------------------------------------------------------------

def _epipe(ev: Evidence) -> list[CauseVerdict]:
    out = []
    fails = ev.failures(("write", "send", "sendto", "sendmsg", "writev"), "EPIPE")
    port = ev.scope.port
    # The errors probe does not always know a failed write's port (local_port unknown):
    # under --port those writes are not known to be the port's.
    unplaced = [f for f in fails if f.local_port is None] if port is not None else []
    placed = [f for f in fails if f not in unplaced]
    evidence: dict[str, Any] = {}
    if fails:
        evidence["failed_writes"] = [{"call": f.call, "pid": f.pid, "command": f.command,
                                      "local_port": f.local_port, "count": f.count}
                                     for f in fails[:5]]
    census = ev.facts.census
    cw_ports = dict(census.close_wait_by_port.items) \
        if census is not None and census.close_wait_by_port else {}
    cw_count = census.by_state.get("CLOSE_WAIT", 0) if census else 0
    cw_title = ""
    if port is not None and census is not None:
        # CLOSE_WAIT on the scoped local port only (the namespace's count is not the port's).
        cw_count = cw_ports.get(port, 0)
        evidence["close_wait_on_port"] = cw_count
    elif fails and census is not None:
        # The failed writes' own CLOSE_WAIT sockets (by their process): another process's
        # CLOSE_WAIT says nothing about these writes.
        pids = {f.pid for f in fails}
        theirs = [p_ for inode, p_ in census.close_wait_inodes.items()
                  if pids & set(ev.holders(inode))]
        evidence["close_wait_of_failing_processes"] = len(theirs)
        if cw_count and not theirs:
            evidence["close_wait_elsewhere"] = [{"port": p_, "sockets": n}
                                                for p_, n in list(cw_ports.items())[:5]]
        cw_count = len(theirs)
    else:
        cw = ev.finding("closewait.leak")
        cw_title = f" ({cw.title})" if cw is not None and cw_count else ""
    # Not the RSTs refusing connection attempts: those answer no write.
    tw_sent = ev.resets_sent("TCP_TIMEWAIT_SOCKET", "NO_SOCKET", syn=(False, None))
    n_placed = sum(f.count for f in placed)
    cid = "epipe.write_after_peer_close"
    if placed and cw_count:
        out.append(_v(cid, CONFIRMED,
                      f"writes failed with EPIPE {n_placed} time(s) and {cw_count} of their "
                      + ("port's " if port is not None else "process's ")
                      + "socket(s) are in CLOSE_WAIT (the peer closed first)", evidence))
    elif placed:
        f = placed[0]
        elsewhere = sum(x["sockets"] for x in evidence.get("close_wait_elsewhere", []))
        out.append(_v(cid, LIKELY,
                      f"{f.call}() failed with EPIPE {n_placed} time(s) (pid {f.pid}, "
                      f"{f.command}): the connection was closed under the writer; no CLOSE_WAIT "
                      "socket of " + (f"port {port}" if port is not None else "that process")
                      + " is left now"
                      + (f" (the {elsewhere} CLOSE_WAIT socket(s) here are another process's)"
                         if elsewhere else ""), evidence))
    elif unplaced:
        f = unplaced[0]
        n = sum(x.count for x in unplaced)
        mine = {p_ for lst in ev.facts.census.listeners if lst.port == port
                for p_ in ev.holders(lst.inode)} if census is not None else set()
        mine |= {p_ for inode, lp in (census.close_wait_inodes.items() if census else [])
                 if lp == port for p_ in ev.holders(inode)}
        ours = [x for x in unplaced if x.pid in mine]
        evidence["writes_port_unknown"] = n
        if ours:
            out.append(_v(cid, LIKELY,
                          f"{f.call}() failed with EPIPE {n} time(s) in pid {ours[0].pid} "
                          f"({ours[0].command}), which holds port {port}'s sockets; the errors "
                          "probe could not tell these writes' port (local port unknown)",
                          evidence, PROBE))
        else:
            out.append(_v(cid, CANNOT_TELL,
                          f"writes failed with EPIPE {n} time(s) (pid {f.pid}, {f.command}), "
                          "but the errors probe could not tell their port (local port "
                          f"unknown): whether they are on port {port} is not known",
                          evidence, f"netdiag why EPIPE --pid {f.pid}, or ss -tnp "
                                    f"'sport = :{port}': which process holds the port"))
    elif cw_count and not fails:
        out.append(_v(cid, LIKELY,
                      f"{cw_count} socket(s) in CLOSE_WAIT: their peer closed, a write there "
                      f"draws a RST and then EPIPE{cw_title}", evidence, PROBE))
    elif tw_sent is not None and tw_sent[0]:
        out.append(_v(cid, LIKELY,
                      f"this host answered {tw_sent[0]} segment(s) for closed connections "
                      "with a RST: a local peer writes after the other side closed",
                      {"resets_sent": tw_sent[1]}))
    else:
        out.append(_v(cid, RULED_OUT if census is not None else CANNOT_TELL,
                      "no socket is in CLOSE_WAIT now" if port is None else
                      f"no socket of port {port} is in CLOSE_WAIT now", evidence, RUN_WHILE))
    recv = ev.resets_received()
    if recv is not None:
        out.append(_v("epipe.write_after_reset", LIKELY if recv[0] else RULED_OUT,
                      f"{recv[0]} RST(s) received in the probe window",
                      {"resets_received": recv[1]}))
    else:
        out.append(_v("epipe.write_after_reset", CANNOT_TELL,
                      "received RSTs are seen by the resets probe only", would_tell=PROBE))
    out.append(_v("epipe.own_shutdown", CANNOT_TELL,
                  "shutdown() calls are not traced",
                  would_tell="review the application's close sequence"))
    return out


# ---- hang --------------------------------------------------------------------------------

def _hang(ev: Evidence) -> list[CauseVerdict]:
    out = []
    d = ev.facts.details
    ka = ev.finding("keepalive.slow_detection")
    if d is not None:
        scoped = ev.scoped
        idle = [c for c in d.idle_without_keepalive
                if ev.scope.port_matches(c.sport, c.dport)
                and ev.scope.peer_matches(c.destination, c.dport)
                and (ev.scope.pid is None or ev.scope.pid in ev.holders(c.inode))]
        # The connections named are the longest idle few: under a scope their count is all
        # that is known of it, and only a lower bound when the namespace has more.
        partial = scoped and d.long_idle_without_keepalive > len(d.idle_without_keepalive)
        n = len(idle) if scoped else d.long_idle_without_keepalive
        evidence: dict[str, Any] = {
            "long_idle_without_keepalive": n,
            "examples": [{"local_address": c.source, "local_port": c.sport,
                          "peer_address": c.destination, "peer_port": c.dport,
                          "idle_s": c.idle_ms // 1000,
                          "holders": ev.holder_rows(c.inode)} for c in idle[:5]]}
        if scoped:
            evidence["scope"] = ev.scope.text()
            if partial:
                evidence["lower_bound"] = True
        where = f" in scope ({ev.scope.text()})" if scoped else ""
        if n:
            out.append(_v("hang.idle_no_keepalive", CONFIRMED,
                          ("at least " if partial else "") + f"{n} connection(s){where} idle "
                          "over 10 min without keepalive: a dead peer is never noticed",
                          evidence))
        elif not scoped and not d.no_timer:
            out.append(_v("hang.idle_no_keepalive", RULED_OUT,
                          "every established connection has keepalive or traffic", evidence))
        else:
            # Connections without keepalive exist (in the namespace), but none has been idle
            # long: nothing shows a dead peer yet.
            if ev.scope.port is not None:
                est = ev.local_port_states(ev.scope.port).get("ESTABLISHED", 0)
                evidence["established_on_port"] = est
                now = f"{est} established connection(s) on local port {ev.scope.port}"
            elif scoped and d.idle_without_keepalive:
                now = ("the longest idle ones of the namespace are outside it"
                       + ("; only those are named, not all" if partial else ""))
            elif scoped:
                now = "none in the namespace either"
            else:
                now = f"{d.no_timer} established connection(s) without keepalive"
            out.append(_v("hang.idle_no_keepalive", CANNOT_TELL,
                          f"no connection{where} has been idle over 10 min without keepalive "
                          f"({now})", evidence,
                          "run again once the hang has lasted 10 min: a connection idle that "
                          "long without keepalive confirms it"))
    else:
        out.append(_v("hang.idle_no_keepalive", CANNOT_TELL,
                      "per-connection timers were not read", would_tell="run as root"))
    unacked = _unacked(ev)
    out.append(_keepalive_defaults(ev, ka, unacked))
    out.append(unacked)
    timers = (ev.facts.census.timers if ev.facts.census else {}) or {}
    persist = timers.get("persist", 0)
    toward = [(a, p, n) for a, p, _st, t, n in ev.outgoing() or [] if t == "persist"]
    if persist and toward and ev.scoped:
        a, p, _n = toward[0]
        out.append(_v("hang.zero_window", CONFIRMED,
                      f"{sum(x[2] for x in toward)} connection(s) toward {a}:{p} probe a zero "
                      "window (the peer does not read)",
                      {"persist_timer_sockets": persist, "outgoing_in_scope_on_persist": [
                          {"peer": x[0], "remote_port": x[1], "sockets": x[2]}
                          for x in toward[:5]]}))
    elif persist and ev.scoped and ev.only_outgoing():
        out.append(_v("hang.zero_window", RULED_OUT,
                      f"no connection in scope ({ev.scope.text()}) probes a zero window "
                      f"({persist} elsewhere in the namespace)",
                      {"persist_timer_sockets": persist, "scope": "the whole namespace"}))
    elif persist and ev.scoped:
        out.append(_v("hang.zero_window", CANNOT_TELL,
                      f"{persist} socket(s) in the namespace probe a zero window; whether any "
                      f"is in scope ({ev.scope.text()}) is not known here",
                      {"persist_timer_sockets": persist, "scope": "the whole namespace"},
                      "ss -tno: the sockets of that port or peer with timer:(persist,...)"))
    else:
        out.append(_v("hang.zero_window", CONFIRMED if persist else RULED_OUT,
                      f"{persist} socket(s) probe a zero window (the peer does not read)"
                      if persist else "no socket is probing a zero window",
                      {"persist_timer_sockets": persist}))
    pressure, pev, ptext = _accept_pressure(ev)
    got = _v("hang.never_accepted", _pressure_verdict(pressure), ptext, pev,
             RUN_WHILE if pressure is None or pressure == UNKNOWN else None)
    got.action = _backlog_action(ev) if pressure is True else None
    out.append(got)
    out.append(_v("hang.unread_data", CANNOT_TELL,
                  "Recv-Q that does not drain shows over two samples of the socket",
                  would_tell="netdiag sockets --interval 10; ss -tn shows Recv-Q per socket"))
    return out


def _in_scope_established(ev: Evidence) -> tuple[int | None, int]:
    """Established connections in scope (None: not known), and how many of them have data
    on the retransmit timer (known for outgoing connections only)."""
    census = ev.facts.census
    if census is None:
        return None, 0
    if not ev.scoped:
        return census.by_state.get("ESTABLISHED", 0), ev.data_retransmitting()
    out = ev.outgoing()
    if out is None or (ev.scope.peer is not None and ev.scope.port is not None):
        # --pid, or a peer and a local port at once: the counts cannot be split that way.
        return None, 0
    est = sum(n for _a, _p, st, _t, n in out if st == "ESTABLISHED")
    retr = sum(n for _a, _p, st, t, n in out if st == "ESTABLISHED" and t == "on")
    if ev.scope.port is not None:
        est += ev.local_in_scope().get("ESTABLISHED", 0)
    elif ev.scope.peer_port is None:
        # --peer IP alone: its connections either way (the census by peer counts them all).
        peers = census.by_peer
        if peers is None:
            return None, retr
        est = sum(n for (a, st), n in peers.items if a == ev.scope.peer and st == "ESTABLISHED")
        if not est and (peers.approximate or peers.distinct_seen > len(peers.items)):
            return None, retr
    return est, retr


def _keepalive_in_scope(ev: Evidence) -> list[KeepaliveGroup] | None:
    """The keepalive sockets (their timer shows, grouped by service port) in scope; None when
    the scope cannot be told apart in them: per-connection timers not read, a scope by peer
    address alone (groups are by port), a --pid whose sockets are not all named. Under
    --peer IP:PORT the groups toward PORT may hold other peers' connections too."""
    d = ev.facts.details
    if d is None:
        return None
    groups = d.keepalive_groups
    complete = sum(g.sockets for g in groups) >= d.keepalive_timer
    s = ev.scope
    if s.port is not None:
        groups = [g for g in groups if g.port == s.port]
    if s.peer_port is not None:
        groups = [g for g in groups if g.side == "remote_port" and g.port == s.peer_port]
    elif s.peer is not None and groups:
        return None
    if s.pid is not None and groups:
        if not all(len(g.inodes) >= g.sockets for g in groups):
            return None
        groups = [g for g in groups if any(s.pid in ev.holders(i) for i in g.inodes)]
    if not groups and not complete:
        return None  # the groups were capped: the scope's may be among those dropped
    return groups


def _keepalive_defaults(ev: Evidence, ka: Finding | None, unacked: CauseVerdict
                        ) -> CauseVerdict:
    """Keepalive at the defaults explains a hang only on established connections that sit
    idle with SO_KEEPALIVE on and the sysctls' timers: keepalive does not run while data is
    unacknowledged (tcp_retries2 bounds those), nor on a socket without SO_KEEPALIVE (the
    cause idle_no_keepalive), nor on the sysctls for a socket that sets its own TCP_KEEPIDLE.
    Its evidence is the scope's: the sysctls, and the scope's connections and keepalive
    sockets, never the namespace's counts."""
    cid = "hang.keepalive_defaults"
    if ka is None or ka.severity < Severity.INFO:
        return _v(cid, RULED_OUT, ka.title if ka is not None else "no keepalive finding")
    t = ev.sysctl("net.ipv4.tcp_keepalive_time") or 0
    i = ev.sysctl("net.ipv4.tcp_keepalive_intvl") or 0
    p = ev.sysctl("net.ipv4.tcp_keepalive_probes") or 0
    detect = f"{t} + {i} × {p} = {t + i * p} s ({duration(t + i * p)})"
    est, retr = _in_scope_established(ev)
    groups = _keepalive_in_scope(ev)
    evidence: dict[str, Any] = {"tcp_keepalive_time": t, "tcp_keepalive_intvl": i,
                                "tcp_keepalive_probes": p, "detection_seconds": t + i * p,
                                "established_in_scope": est,
                                "established_with_unacked_data": retr}
    where = f" in scope ({ev.scope.text()})" if ev.scoped else ""
    if ev.scoped:
        evidence["scope"] = ev.scope.text()
    on_sysctl: list[KeepaliveGroup] = []
    if groups is not None:
        settings = [(g, keepalive_rules.group_setting(g, t)) for g in groups]
        on_sysctl = [g for g, how in settings if how != "own" and how != "own (longer)"]
        evidence["keepalive_sockets_in_scope"] = sum(g.sockets for g in groups)
        evidence["keepalive_sockets_on_the_sysctls"] = sum(g.sockets for g in on_sysctl)
    if est == 0:
        return _v(cid, RULED_OUT, f"no established connection{where}: keepalive applies to "
                                  "established connections only", evidence)
    if est is not None and retr and retr >= est:
        return _v(cid, RULED_OUT, f"each of the {est} established connection(s){where} has "
                                  "unacknowledged data: keepalive does not run while data is "
                                  "in flight (tcp_retries2 bounds them)", evidence)
    if groups is not None and not groups:
        return _v(cid, RULED_OUT, f"no connection{where} uses keepalive (none shows its timer: "
                                  "SO_KEEPALIVE is off), so its timers do not apply; idle "
                                  "connections without it are the cause above", evidence)
    if groups and not on_sysctl:
        own = groups[0]
        return _v(cid, RULED_OUT, f"the {sum(g.sockets for g in groups)} keepalive socket(s)"
                                  f"{where} set their own TCP_KEEPIDLE (about "
                                  f"{own.idle_estimate_max_ms / 1000:.0f} s), not the "
                                  f"sysctls' {t} s", evidence)
    if ev.scoped and unacked.verdict in (CONFIRMED, LIKELY):
        return _v(cid, CANNOT_TELL, f"keepalive at the sysctls takes {detect}; yet "
                                    f"connection(s){where} have unacknowledged data on the "
                                    "retransmit timer, which keepalive does not cover (see "
                                    "that cause)", evidence,
                  "once no data is in flight: a connection idle on a dead peer for longer "
                  "than the keepalive time")
    if groups is None:
        return _v(cid, CANNOT_TELL, f"keepalive at the sysctls takes {detect}; whether a "
                                    f"connection{where} uses keepalive is not known here",
                  evidence, "ss -tno: the connections in scope and their timers "
                            "(timer:(keepalive,...) means SO_KEEPALIVE is on)")
    n = sum(g.sockets for g in on_sysctl)
    return _v(cid, LIKELY, f"{n} keepalive socket(s){where} run on the sysctls' timers: a dead "
                           f"peer is noticed after {detect}"
              + (f"; {retr} connection(s) have unacknowledged data" if retr else ""),
              evidence)


def _unacked(ev: Evidence) -> CauseVerdict:
    """Our data unacknowledged: the retrans probe decides; else the socket table shows the
    timer per outgoing connection (a SYN_SENT socket retransmits a SYN, not data)."""
    cid = "hang.unacked_retransmitting"
    census = ev.facts.census
    timers = (census.timers if census else {}) or {}
    syn = sum((census.timers_by_state.get("on") or {}).get(st, 0)
              for st in HANDSHAKE_STATES) if census is not None else 0
    retr = ev.data_retransmitting()
    grew = ev.grew("TcpExt", "TCPTimeouts")
    flows = _retransmits(ev)
    evidence: dict[str, Any] = {"retransmit_timer_sockets": timers.get("on", 0),
                                "data_retransmit_timer_sockets": retr,
                                "handshake_retransmit_timer_sockets": syn,
                                "retransmits_by_flow": flows[:5]}
    if flows:
        r = flows[0]
        where = (f"{r['peer']}:{r['remote_port']}" if r["peer"] is not None else
                 f"clients of local port {r['local_port']}" if r["local_port"] is not None
                 else "connections between ephemeral ports")
        return _v(cid, CONFIRMED, f"{sum(x['retransmits'] for x in flows)} packet(s) (skbs) "
                                  f"retransmitted in the probe window, most toward {where}: "
                                  "data stays unacknowledged", evidence)
    probed = ev.probe("retrans") is not None
    if ev.scoped:
        out = ev.outgoing()
        mine = [(a, p, st, n) for a, p, st, t, n in out or []
                if t == "on" and st not in HANDSHAKE_STATES]
        evidence["outgoing_in_scope_on_timer"] = [
            {"peer": a, "remote_port": p, "state": st, "sockets": n} for a, p, st, n in mine[:5]]
        local = ev.local_in_scope()
        if probed:
            return _v(cid, RULED_OUT, f"no segment toward {ev.scope.text()} was retransmitted "
                                      "in the probe window", evidence)
        if mine:
            a, p, st, _n = mine[0]
            n = sum(x[3] for x in mine)
            return _v(cid, LIKELY, f"{n} connection(s) toward {a}:{p} ({st}) have data on the "
                                   "retransmit timer now (the socket table)", evidence, PROBE)
        if ev.only_outgoing():
            return _v(cid, RULED_OUT, f"no connection in scope ({ev.scope.text()}) has data on "
                                      "the retransmit timer", evidence)
        if retr:
            return _v(cid, CANNOT_TELL, f"{retr} socket(s) in the namespace have data on the "
                                        "retransmit timer; the socket table does not split "
                                        f"the timers of local port {ev.scope.port}'s sockets"
                      if ev.scope.port is not None and local else
                      f"{retr} socket(s) in the namespace have data on the retransmit timer; "
                      f"whether any is in scope ({ev.scope.text()}) is not known here",
                      evidence, PROBE)
        return _v(cid, RULED_OUT, "no socket has unacknowledged data on the retransmit timer"
                  + (f" ({syn} in SYN_SENT/SYN_RECV retransmit a handshake, not data)"
                     if syn else ""), evidence)
    if probed:
        return _v(cid, RULED_OUT, "no segment was retransmitted in the probe window", evidence)
    if retr:
        return _v(cid, LIKELY, f"{retr} socket(s) have data in flight on the retransmit timer"
                  + (" and TCPTimeouts grew" if grew else ""), evidence, PROBE)
    return _v(cid, RULED_OUT, "no socket has unacknowledged data on the retransmit timer"
              + (f" ({syn} in SYN_SENT/SYN_RECV retransmit a handshake, not data)"
                 if syn else ""), evidence)


# ---- slow --------------------------------------------------------------------------------

def _slow(ev: Evidence) -> list[CauseVerdict]:
    out = []
    f = ev.finding("buffers.max_below_bdp")
    flows = [r for r in ((f.evidence.get("flows") or []) if f is not None else [])
             if isinstance(r, dict) and _flow_in_scope(ev, r)]
    by_limit: dict[str, list[dict[str, Any]]] = {}
    for r in flows:
        by_limit.setdefault(str(r.get("limit")), []).append(r)

    def rows(*limits: str) -> list[dict[str, Any]]:
        return [r for k in limits for r in by_limit.get(k, [])]

    measured = f.evidence.get("measured_over") if f is not None else None
    if f is None:
        reason = "per-flow tcp_info was not read"
        for cid in ("slow.receive_window", "slow.send_buffer", "slow.application_limited"):
            out.append(_v(cid, CANNOT_TELL, reason, would_tell="run as root"))
    else:
        recv = rows("peer_receive_window", "receive_buffer_max",
                    "receive_buffer_capped_by_rmem_max", "receive_buffer_fixed_by_application",
                    "slow_reader")
        send = rows("send_buffer_max", "send_buffer_capped_by_wmem_max",
                    "send_buffer_fixed_by_application")
        # Loopback has no path to fill, but its reader can be slower than its writer.
        loop = rows("loopback")
        readers = [r for r in loop if r.get("slow_reader") or
                   (r.get("rwnd_limited_share") or 0) >= buffers_rules.MIN_RWND_SHARE]
        idle = [r for r in loop if r not in readers and r.get("busy_share") is not None
                and r["busy_share"] < buffers_rules.APP_BUSY_SHARE]
        app = rows("application") + idle
        ev_base = {"measured_over": measured, "flows_judged": len(flows)}
        got = _flows_verdict("slow.receive_window", recv + readers, "held by the receiver's "
                             "window or a slow reader", ev_base, flows)
        if got.verdict == CONFIRMED and not recv and not any(
                r.get("slow_reader") or (r.get("rwnd_limited_share") or 0)
                >= buffers_rules.LIMITED_SHARE for r in readers):
            got.verdict = LIKELY  # held by the window part of the time only
        out.append(got)
        out.append(_flows_verdict("slow.send_buffer", send, "held by the send buffer",
                                  ev_base, flows))
        out.append(_app_limited(app, recv + readers + send, ev_base, flows,
                                ev.facts.interval))
    retr = ev.counter("Tcp", "RetransSegs")
    segs = ev.counter("Tcp", "OutSegs")
    if retr is not None and segs is not None and retr.delta is not None and segs.delta:
        share = retr.delta / segs.delta
        out.append(_namespace_wide(ev, _v(
            "slow.loss_retransmits", CONFIRMED if share >= 0.01 else
            LIKELY if share >= 0.001 else RULED_OUT,
            f"{share:.2%} of segments sent were retransmissions over the {ev.window} "
            f"({retr.delta} of {segs.delta})",
            {"Tcp.RetransSegs": retr.evidence(), "Tcp.OutSegs": segs.evidence()})))
    elif retr is not None and segs is not None and segs.total:
        share = retr.total / segs.total
        out.append(_namespace_wide(ev, _v(
            "slow.loss_retransmits", LIKELY if share >= 0.01 else CANNOT_TELL,
            f"{share:.2%} of segments were retransmissions since boot",
            {"Tcp.RetransSegs": retr.evidence()}, RUN_WHILE), since_boot=True))
    else:
        out.append(_v("slow.loss_retransmits", CANNOT_TELL, "Tcp counters not available",
                      would_tell=RUN_WHILE))
    drops = [x for x in (ev.bad("buffers.rcvbuf_drops"), ev.bad("softirq.netdev_backlog_drops"),
                         ev.bad("softirq.ring_overruns")) if x is not None]
    infos = [x for x in (ev.finding("buffers.rcvbuf_drops"),
                         ev.finding("softirq.netdev_backlog_drops")) if x is not None
             and x.severity == Severity.INFO]
    out.append(_namespace_wide(ev, _v(
        "slow.receiver_drops", CONFIRMED if drops else LIKELY if infos else
        RULED_OUT if ev.window else CANNOT_TELL,
        "; ".join(x.title for x in drops or infos) or
        "no receive-path drop " + (f"over the {ev.window}" if ev.window else
                                   "since boot worth noting"),
        {"findings": [x.id for x in drops or infos]},
        None if ev.window or drops else RUN_WHILE), since_boot=not drops))
    if ev.scope.port is not None or ev.scope.pid is not None:
        # The backlog findings and ListenOverflows cover every listener: the scoped ones'
        # own queues decide.
        pressure, pev, ptext = _accept_pressure(ev)
        out.append(_v("slow.setup_delays", _pressure_verdict(pressure), ptext, pev,
                      RUN_WHILE if pressure is None or pressure == UNKNOWN else None))
        return out
    setup = [x for x in (ev.bad("backlog.listen_overflow"), ev.bad("backlog.syn_queue"),
                         ev.bad("backlog.accept_queue_full")) if x is not None]
    out.append(_v("slow.setup_delays", CONFIRMED if setup else RULED_OUT if ev.window else
                  LIKELY if ev.since_boot("TcpExt", "ListenOverflows") else RULED_OUT,
                  "; ".join(x.title for x in setup) or
                  "no listen queue dropped connection requests" +
                  (f" over the {ev.window}" if ev.window else " now"),
                  {"findings": [x.id for x in setup]}))
    return out


def _app_limited(app: list[dict[str, Any]], held: list[dict[str, Any]], base: dict[str, Any],
                 flows: list[dict[str, Any]], interval: float | None = None) -> CauseVerdict:
    """The application as the limit. Conclusive only both ways round: a flow idle most of a
    measured window (busy time small: nothing queued) is application-limited; a flow held by
    the receiver's window or its send buffer, or busy most of a measured window, had data to
    send, so it is not. A single rate sample (tcpi_delivery_rate_app_limited) is not: a
    sender that paces or caps its rate is application-limited between bursts and looks
    unlimited within one."""
    cid = "slow.application_limited"
    measured = [r for r in app if r.get("busy_share") is not None]
    evidence = dict(base, flows=[{k: r.get(k) for k in (*ENDPOINT_KEYS, "limit",
                                                         "what_holds_it", "rate_mbit",
                                                         "busy_share")} for r in app[:5]])
    cap = ("compare the rate with any cap the application sets (rate limits, pacing, "
           "iperf3 -b)")
    tell = cap if interval else ("run over a window while it is slow: netdiag why slow "
                                 "--interval 10 (a sender idle most of the window is "
                                 "application-limited); " + cap)
    if measured:
        r = measured[0]
        return _v(cid, CONFIRMED, f"{len(measured)} of {len(flows)} busy flow(s) were "
                                  "application-limited over the measured window, e.g. "
                                  f"{_ends(r)}: "
                                  f"{r.get('what_holds_it')}", evidence,
                  severity=Severity.INFO)
    if app:
        r = app[0]
        return _v(cid, CANNOT_TELL, f"{len(app)} of {len(flows)} busy flow(s) were "
                                    f"application-limited in their last rate sample, e.g. "
                                    f"{_ends(r)}; one sample does not "
                                    "decide (the flag is per delivery-rate sample)",
                  evidence, tell)
    rest = [r for r in flows if r not in held]
    receiving = [r for r in rest if r.get("direction") == "receiving"]
    unknown = [r for r in rest if r not in receiving]
    if flows and not rest:
        return _v(cid, RULED_OUT, f"each of the {len(flows)} busy flow(s) is held by a window "
                                  "or buffer: it had data queued that it could not send",
                  evidence)
    if flows and not unknown:
        return _v(cid, CANNOT_TELL, f"{len(receiving)} of {len(flows)} busy flow(s) receive "
                                    "here: whether their sender has nothing to send shows on "
                                    "the sending host", evidence,
                  "netdiag why slow on the sending host")
    if unknown:
        # Over a measured window (--interval, or the second sample) a flow busy most of it
        # is still not decided: a paced or capped sender keeps data in flight too.
        sampled = any(r.get("busy_share") is not None for r in unknown) or bool(interval)
        return _v(cid, CANNOT_TELL, f"{len(unknown)} of {len(flows)} busy flow(s) are held by "
                                    "no window or buffer; a sender that paces or caps its "
                                    "rate is application-limited between bursts and looks "
                                    "unlimited within one, so "
                  + ("tcp_info over the measured window cannot tell it from the network"
                     if sampled else "one sample cannot tell"),
                  evidence, tell)
    return _v(cid, CANNOT_TELL, "no flow in scope moved data in the last second", evidence,
              "run while the transfer is slow (with --port or --peer for that flow)")


ENDPOINT_KEYS = ("local_address", "local_port", "peer_address", "peer_port")


def _flow_in_scope(ev: Evidence, row: dict[str, Any]) -> bool:
    if not ev.scope.port_matches(row.get("local_port"), row.get("peer_port")):
        return False
    if not ev.scope.peer_matches(row.get("peer_address"), row.get("peer_port")):
        return False
    return ev.scope.pid is None or row.get("pid") == ev.scope.pid


def _ends(row: dict[str, Any]) -> str:
    """A flow row's endpoints as one would write them: local ↔ peer."""
    def one(addr: Any, port: Any) -> str:
        host = f"[{addr}]" if ":" in str(addr) else str(addr)
        return f"{host}:{port}"

    return (f"{one(row.get('local_address'), row.get('local_port'))} ↔ "
            f"{one(row.get('peer_address'), row.get('peer_port'))}")


def _flows_verdict(cid: str, rows: list[dict[str, Any]], what: str, base: dict[str, Any],
                   flows: list[dict[str, Any]], severity: Severity | None = None
                   ) -> CauseVerdict:
    evidence = dict(base, flows=[{k: r.get(k) for k in (*ENDPOINT_KEYS, "limit",
                                                         "what_holds_it", "rate_mbit")}
                                 for r in rows[:5]])
    if rows:
        r = rows[0]
        return _v(cid, CONFIRMED, f"{len(rows)} of {len(flows)} busy flow(s) {what}, e.g. "
                                  f"{_ends(r)}: "
                                  f"{r.get('what_holds_it')}", evidence, severity=severity)
    if flows:
        return _v(cid, RULED_OUT, f"none of the {len(flows)} busy flow(s) is {what}", evidence)
    return _v(cid, CANNOT_TELL, "no flow in scope moved data in the last second", evidence,
              "run while the transfer is slow (with --port or --peer for that flow)")


# ---- advice that fits the symptom and the run ------------------------------------------

WHILE = {"slow": "while the transfer is slow", "hang": "while it hangs"}


def when(symptom: Symptom) -> str:
    """When to look again: a slow transfer or a hang has no errors to wait for."""
    return WHILE.get(symptom.name, "while the errors happen")


def reword(symptom: Symptom, facts: Facts, text: str | None) -> str | None:
    """Advice fitted to the run: no --probe-seconds when the run had probes or none decides
    this symptom; no "errors" for a symptom without errors."""
    if not text:
        return text
    if PROBE in text:
        if facts.probes:
            text = text.replace(PROBE, f"run again {when(symptom)}: the probes of this run "
                                       "(over their window) did not show it")
        elif not symptom.probes:
            text = text.replace(PROBE, RUN_WHILE)
    if facts.interval and RUN_WHILE in text:  # the run already judged counters by change
        text = text.replace(RUN_WHILE, "run again while the errors happen (this run judged "
                                       f"the counters over {facts.interval:.3g} s)")
    return text.replace("while the errors happen", when(symptom))


def next_step(symptom: Symptom, facts: Facts, verdicts: list[CauseVerdict]) -> str | None:
    """What to do when nothing seen here explains the symptom (None when something does)."""
    if any(v.verdict in (CONFIRMED, LIKELY) for v in verdicts):
        return None
    probe = " (with --probe-seconds as root)" if symptom.probes and not facts.probes else ""
    peer = "" if symptom.name in ("EADDRINUSE", "EADDRNOTAVAIL", "EMFILE") else \
        ", and on the peer host"
    return f"nothing seen here explains it now: run {when(symptom)}{probe}{peer}"


# ---- entry point -------------------------------------------------------------------------

JUDGES: dict[str, Callable[[Evidence], list[CauseVerdict]]] = {
    "ECONNRESET": _econnreset, "ECONNREFUSED": _econnrefused, "ETIMEDOUT": _etimedout,
    "EADDRNOTAVAIL": _eaddrnotavail, "EADDRINUSE": _eaddrinuse, "EMFILE": _emfile,
    "EPIPE": _epipe, "hang": _hang, "slow": _slow,
}


def _symptom_causes(name: str) -> Iterable[CauseSpec]:
    from netdiag.diagnose.symptoms import SYMPTOMS

    return next(s for s in SYMPTOMS if s.name == name).causes


def diagnose(symptom: Symptom, facts: Facts, findings: list[Finding],
             scope: Scope) -> list[CauseVerdict]:
    """Every cause of the symptom with its verdict, confirmed first."""
    ev = Evidence(facts, findings, scope)
    verdicts = JUDGES[symptom.name](ev)
    for v in verdicts:
        v.would_tell = reword(symptom, facts, v.would_tell)
        v.because = reword(symptom, facts, v.because) or v.because
    order = {c.id: i for i, c in enumerate(symptom.causes)}
    return sorted(verdicts, key=lambda v: (RANK[v.verdict], order[v.cause.id]))
