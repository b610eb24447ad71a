"""CLOSE_WAIT: the peer closed, the local application never did."""

from __future__ import annotations

from typing import Any

from netdiag.facts import Facts, close_wait_groups
from netdiag.model import Finding, Rule, RuleSpec, Severity
from netdiag.probefacts import StatesResult
from netdiag.rules._util import make

TOPIC = "closewait"
SUMMARY = "CLOSE_WAIT sockets: connections the peer closed and the application did not"

# CLOSE_WAIT normally lasts the moment between read() returning 0 and close(). A few at once
# are ordinary on a busy server (info); this many held by one process is a leak.
LEAK_WARN = 10
LEAK_CRIT = 1000

BACKGROUND = (
    "A socket enters CLOSE_WAIT when the peer's FIN arrives; it leaves only when the local "
    "application calls close() (or shutdown() and then close()). No sysctl bounds CLOSE_WAIT "
    "and no kernel timer ends it, except keepalive or TCP_USER_TIMEOUT when the application "
    "enabled them. Sockets piling up in CLOSE_WAIT are the signature of an application that "
    "leaks connections: an error path that skips close(), a pool that never notices the "
    "peer closed, a thread stuck before it gets to close()."
)

LEAK = RuleSpec(
    id="closewait.leak",
    topic=TOPIC,
    title="Sockets stuck in CLOSE_WAIT",
    rule=Rule(
        text="CLOSE_WAIT: the remote end has shut down, waiting for the socket to close. The "
             "kernel keeps the socket until the owning process calls close(); no sysctl "
             "limits or times out this state.",
        source="RFC 793 §3.2 (CLOSE-WAIT); tcp(7); net/ipv4/tcp_diag.c tcp_diag_get_info() "
               "(Recv-Q)",
    ),
    explanation=(
        "The peer sent FIN and the kernel acknowledged it; read() on these sockets returns 0 "
        "(end of file), but the owning process has not called close(). Each one keeps its "
        "file descriptor, its buffers and its four-tuple until the process closes it or "
        "exits. On these sockets Recv-Q counts the FIN as one byte: Recv-Q = 1 (eof_not_read) "
        "means the application has not even read the end of file, i.e. it is not reading "
        "the socket at all; Recv-Q > 1 means data is unread as well."
    ),
    recommendation=(
        "Fix the application named in the evidence: close the socket when read() returns 0 "
        "or an error, on every path (use finally/defer/with), and make connection pools drop "
        "connections the peer closed. No sysctl fixes this. To inspect: `ss -tanp state "
        "close-wait` and `ls -l /proc/PID/fd`. As a stop-gap, the sockets are released when "
        "every process holding them has closed them or exited: a forked child or a worker "
        "that shares the fd keeps them alive after its parent restarts."
    ),
    thresholds=f"info for a few; warning from {LEAK_WARN} in one process (or sockets a process "
               f"holds still in CLOSE_WAIT after --interval); critical from {LEAK_CRIT} in one "
               "process. Sockets still in an accept queue (no inode) are counted apart: info",
)

SPECS = (LEAK,)


def _who(procs, pid: int) -> str:
    info = procs.processes.get(pid) if procs is not None else None
    return f"pid {pid}" + (f" ({info.command})" if info and info.command else "")


def _queue_text(queued: dict[int, int]) -> str:
    ports = sorted(queued, key=lambda p: -queued[p])
    names = ", ".join(str(p) for p in ports[:5]) + (" and others" if len(ports) > 5 else "")
    return f"port{'s' if len(ports) > 1 else ''} {names}"


def check(facts: Facts) -> list[Finding]:
    census = facts.census
    if census is None:
        return []
    total = census.by_state.get("CLOSE_WAIT", 0)
    procs = facts.processes
    groups = close_wait_groups(census, procs)
    per_holders: dict[tuple[int, ...], int] = {}
    for (holders, _), n in groups.items():
        per_holders[holders] = per_holders.get(holders, 0) + n
    # No inode: in a listener's accept queue, never accepted. No process holds these, so
    # they are counted apart from the ones a process holds (and from unknown owners).
    queued = census.close_wait_no_inode
    n_queued = sum(queued.values())
    held = sum(n for h, n in per_holders.items() if h)
    persistent = persistent_queued = None
    if facts.census_before is not None:
        before = facts.census_before.close_wait_inodes
        persistent_held = sum(1 for inode in census.close_wait_inodes if inode in before)
        persistent_queued = len(census.close_wait_no_inode_keys
                                & facts.census_before.close_wait_no_inode_keys)
        persistent = persistent_held + persistent_queued

    rows = []
    for (holders, lport), n in sorted(groups.items(), key=lambda kv: -kv[1])[:20]:
        pid = holders[0] if holders else None
        row: dict[str, Any] = {"pid": pid, "local_port": lport, "close_wait": n,
                               # null: owners not looked up (never "held by none")
                               "holders": list(holders) if procs is not None else None}
        info = procs.processes.get(pid) if (procs is not None and pid is not None) else None
        if info is not None:
            row.update(command=info.command, cmdline=info.cmdline, fds=info.fds)
        if len(holders) > 1:
            row["holder_commands"] = [
                (procs.processes[h].command if h in procs.processes else None)
                for h in holders]
        rows.append(row)
    queue_rows = []
    for lport, n in sorted(queued.items(), key=lambda kv: -kv[1])[:20]:
        listeners = [lst for lst in census.listeners if lst.port == lport]
        queue_rows.append({
            "local_port": lport, "close_wait": n,
            "listeners": [{"address": lst.address, "port": lst.port, "inode": lst.inode,
                           "accept_queue": lst.accept_queue, "backlog": lst.backlog}
                          for lst in listeners[:8]]})
    evidence: dict[str, Any] = {
        "close_wait": total,
        "eof_not_read": census.close_wait_eof_unread,
        "with_unread_data": census.close_wait_unread,
        "by_process_and_port": rows,
        # Every CLOSE_WAIT socket is in exactly one of these three (unless counting_truncated).
        "held_by_processes": held,
        "unattributed": per_holders.get((), 0),
        "in_accept_queue": n_queued,
        "in_accept_queue_by_port": queue_rows,
    }
    if census.close_wait_by_port is not None:
        evidence["by_local_port"] = [
            {"local_port": p, "close_wait": n} for p, n in census.close_wait_by_port.items[:10]
        ]
    if persistent is not None:
        evidence["still_close_wait_after_interval"] = persistent
        evidence["still_in_accept_queue_after_interval"] = persistent_queued
        evidence["interval_seconds"] = facts.interval
    states = (facts.probes or {}).get("states")
    if not isinstance(states, StatesResult) or states.scope.filter != "exact":
        states = None  # host-wide probe rows are never set beside this namespace's sockets
    if states is not None:
        cw = states.close_wait
        evidence["probe_seconds"] = states.window.seconds
        evidence["still_waiting_entered_during_probe"] = [
            {"local_port": w.local_port, "sockets": w.sockets, "oldest_s": w.oldest_s}
            for w in cw.still_waiting[:10]]
        evidence["left_close_wait_ms"] = [{"low": b.low, "high": b.high, "count": b.count}
                                          for b in cw.left_after_ms]
        evidence["peer_closed_first_by_port"] = [
            {"local_port": r.local_port, "closes": r.count} for r in states.passive_closes[:10]]
    if census.close_wait_inodes_truncated:
        evidence["attribution_truncated"] = True
        evidence["not_counted_apart"] = max(
            total - held - per_holders.get((), 0) - n_queued, 0)
    if procs is None:
        evidence["attribution"] = "unavailable (see errors)"
    elif not procs.holders_complete:
        evidence["holders_searched_among"] = procs.holders_scope

    if total == 0:
        return [make(LEAK, Severity.OK, "no socket in CLOSE_WAIT", evidence,
                     recommendation="Nothing to do.")]

    worst, worst_n = max(per_holders.items(), key=lambda kv: kv[1], default=((), 0))
    held_persistent = (persistent or 0) - (persistent_queued or 0)
    severity = Severity.INFO
    if worst_n >= LEAK_CRIT:
        severity = Severity.CRITICAL
    elif worst_n >= LEAK_WARN or held_persistent:
        severity = Severity.WARNING
    ports = sorted({lport for (holders, lport) in groups if holders == worst})
    port_text = ", ".join(str(p) for p in ports[:5])
    title = f"{total} socket(s) in CLOSE_WAIT"
    if worst:
        title += f"; {worst_n} held by " + " and ".join(_who(procs, h) for h in worst[:4])
        if len(worst) > 4:
            title += f" and {len(worst) - 4} more"
        if port_text:
            title += f" on local port {port_text}"
    elif port_text:
        title += f"; {worst_n} on local port {port_text} (owner not known: see errors)"
    if n_queued:
        title += (f"; {n_queued} never accepted, in the accept queue of the listener on "
                  f"{_queue_text(queued)}")
        if persistent_queued:
            title += f" (still there after {facts.interval:g} s: nobody accepts from it)"
    detail = ""
    if states is not None:
        waiting = states.close_wait.still_waiting_total
        detail = (f"During the {states.window.seconds:g} s probe window {waiting} socket(s) "
                  "entered CLOSE_WAIT and stayed there")
        if total > waiting:
            detail += (f"; the {total - waiting} others were already waiting when it started, "
                       "so they have waited at least that long")
        detail += ". "
    if persistent:
        detail += (f"{persistent} of them were already in CLOSE_WAIT {facts.interval:g} s "
                   "earlier: they are not closing")
        if persistent_queued:
            detail += (f" ({persistent_queued} of those still in the accept queue: not "
                       "accepted in that time either)")
        detail += ". "
    if n_queued:
        detail += (f"{n_queued} have no inode: no file refers to them, so no process holds "
                   "them. They are connections the kernel completed for a listener (in its "
                   "accept queue) whose peer closed before the application called accept(): "
                   f"the application listening on {_queue_text(queued)} does not accept, or "
                   "not fast enough. They leave CLOSE_WAIT once accepted and closed, or when "
                   "the listener is closed; this is not a descriptor leak.")
    finding = make(LEAK, severity, title, evidence, detail.strip(),
                   _recommendation(procs, per_holders, queued))
    if not per_holders:
        # Only sockets nobody has accepted: the leak's explanation (a process that does not
        # close) is not theirs.
        finding.explanation = detail.strip()
    return [finding]


def _recommendation(procs, per_holders: dict[tuple[int, ...], int],
                    queued: dict[int, int]) -> str:
    advice = _holders_advice(procs, per_holders)
    if not queued:
        return advice
    n = sum(queued.values())
    accept = (f"The {n} in the accept queue of {_queue_text(queued)} were never accepted: find "
              "why the application listening there does not call accept() (netdiag backlog: "
              "backlog.accept_queue_full names the listener's holders and what they are "
              "doing). No process holds them, so no descriptor leak explains them: they go "
              "once the application accepts and closes them, or closes the listener.")
    return accept if not per_holders else f"{advice} {accept}"


def _holders_advice(procs, per_holders: dict[tuple[int, ...], int]) -> str:
    fix = ("Fix the application named in the evidence: close the socket when read() returns "
           "0 or an error, on every path (use finally/defer/with), and make connection pools "
           "drop connections the peer closed. No sysctl fixes this. To inspect: `ss -tanp "
           "state close-wait` and `ls -l /proc/PID/fd`.")
    shared = [h for h in per_holders if len(h) > 1]
    if shared:
        h = max(shared, key=lambda k: per_holders[k])
        others = " and ".join(_who(procs, pid) for pid in h[1:4])
        return (f"{fix} Restarting {_who(procs, h[0])} alone will not release them: {others} "
                f"hold{'s' if len(h) == 2 else ''} them too (an fd shared after fork or "
                "inherited across exec); the sockets close only when every holder has closed "
                "them or exited.")
    if any(per_holders):
        scope = "no other process holds them" if procs is None or procs.holders_complete \
            else f"no other holder was found among {procs.holders_scope}"
        return (f"{fix} As a stop-gap, restarting the process that holds them releases them "
                f"({scope}).")
    # No holder known (not root, or sockets orphaned): nothing is named in the evidence.
    return ("Find the process that holds them: run netdiag closewait as root, or `ss -tanp "
            "state close-wait`. " + fix.replace("Fix the application named in the evidence",
                                                "Then fix that application"))
