"""Thundering herd on accept(): tasks woken for connections other tasks take (probe wakeups)."""

from __future__ import annotations

from typing import Any

from netdiag.facts import Facts
from netdiag.model import Finding, Rule, RuleSpec, Severity
from netdiag.probefacts import Listener, WakeupsResult
from netdiag.rules._util import make

TOPIC = "wakeups"
SUMMARY = "Accept wake-ups: tasks woken per connection on each listener (eBPF probe wakeups)"
HERD_RATIO = 1.5  # tasks woken per connection queued on one listening socket
MIN_CONNECTIONS = 20  # connections on that socket during the window, to judge at all

BACKGROUND = (
    "A connection ready on a listening socket wakes the tasks waiting on it. A blocking "
    "accept() waits exclusively: one task is woken per connection. Each epoll instance "
    "watching the socket waits non-exclusively unless registered with EPOLLEXCLUSIVE: one "
    "connection then wakes a task in every instance (every worker process, or every thread "
    "with its own epoll), one accept() wins and the others find nothing (EAGAIN, or no event "
    "left). With SO_REUSEPORT each worker has its own socket and queue, and a connection "
    "wakes only that socket's waiters. netdiag counts the tasks the kernel wakes for each "
    "connection, per listening socket and per thread (sock:sk_data_ready, sched:sched_waking)."
)

HERD = RuleSpec(
    id="wakeups.thundering_herd",
    topic=TOPIC,
    title="Several tasks woken for each connection on one listening socket",
    rule=Rule(
        text="epoll_ctl(2) EPOLLEXCLUSIVE: sets an exclusive wakeup mode for the epoll file "
             "descriptor that is being attached to the target file descriptor ... useful for "
             "avoiding thundering herd problems in certain scenarios. socket(7) SO_REUSEPORT: "
             "each of several sockets bound to the same port gets its own accept queue, and "
             "incoming connections are distributed across them.",
        source="epoll_ctl(2) EPOLLEXCLUSIVE; socket(7) SO_REUSEPORT; fs/eventpoll.c "
               "ep_poll_callback(); net/core/sock.c sock_def_readable()",
    ),
    explanation=(
        "For each connection on this socket the kernel woke more than one task: all but one "
        "find nothing to accept and go back to sleep. That CPU time and latency grows with "
        "the number of workers sharing the socket."
    ),
    recommendation=(
        "Register the shared listening socket with EPOLLEXCLUSIVE (epoll_ctl EPOLL_CTL_ADD "
        "with EPOLLIN | EPOLLEXCLUSIVE), or give each worker its own socket with SO_REUSEPORT "
        "(nginx: listen ... reuseport), or serialize accept() with an accept mutex (nginx: "
        "accept_mutex on)."
    ),
    thresholds=f"warning when one listening socket with ≥ {MIN_CONNECTIONS} connections in "
               f"the window woke ≥ {HERD_RATIO:g} tasks per connection",
)

SPECS = (HERD,)


def _n(count: float, word: str, plural: str | None = None) -> str:
    """A count and its noun: "1 task", "0.42 tasks", "3 tasks" (singular only for exactly 1)."""
    return f"{count:g} {word if count == 1 else (plural or word + 's')}"


def _row(lst: Listener) -> dict[str, Any]:
    return {"port": lst.port, "inode": lst.inode, "connections": lst.connections,
            "wakeups": lst.wakeups, "wakeups_per_connection": lst.wakeups_per_connection,
            "accepted": lst.accepted, "eagain": lst.eagain,
            "threads": len(lst.threads), "processes": lst.processes,
            "waiters": lst.waiters_max, "epoll_waiters": lst.epoll_waiters_max,
            "exclusive_waiters": lst.exclusive_waiters_max,
            "sockets_on_port": lst.sockets_on_port}


def _who(lst: Listener) -> str:
    woken = [t for t in lst.threads if t.woken]
    pids = sorted({t.pid for t in woken})
    names = sorted({t.command for t in woken if t.command})
    cmd = f" ({', '.join(names[:3])})" if names else ""
    if len(pids) == 1:
        return f"{_n(len(woken), 'thread')} of pid {pids[0]}{cmd}"
    shown = ", ".join(str(p) for p in pids[:6]) + (", ..." if len(pids) > 6 else "")
    return f"{_n(len(woken), 'task')} in {_n(len(pids), 'process', 'processes')} " \
           f"(pid {shown}){cmd}"


def _fix(lst: Listener) -> str:
    """The fix for what was seen on this socket's wait queue."""
    exclusive_regs = sum(r.exclusive_adds for r in lst.epoll_registrations)
    plain_regs = sum(r.adds - r.exclusive_adds for r in lst.epoll_registrations)
    epoll = lst.epoll_waiters_max
    if (epoll is not None and epoll >= 2 and lst.exclusive_waiters_max < epoll) or plain_regs:
        seen = (f"{epoll} epoll instances wait on it" if epoll else
                f"{plain_regs} epoll registrations without EPOLLEXCLUSIVE were seen")
        return (f"{seen}, not exclusively: add EPOLLEXCLUSIVE when registering the socket, "
                "or give each worker its own socket with SO_REUSEPORT (then one connection "
                "wakes only its socket's worker), or serialize accept() with an accept mutex.")
    if exclusive_regs:
        return ("EPOLLEXCLUSIVE registrations were seen, yet several tasks woke per "
                "connection: workers sharing one epoll instance in level-triggered mode wake "
                "each other in turn; give each worker its own socket with SO_REUSEPORT, or "
                "accept in one thread and hand connections out.")
    return HERD.recommendation


def check(facts: Facts) -> list[Finding]:
    res = (facts.probes or {}).get("wakeups")
    if not isinstance(res, WakeupsResult):
        return []
    rows = res.listeners
    evidence: dict[str, Any] = {"seconds": res.window.seconds,
                                "listeners": [_row(r) for r in rows[:10]]}
    judged = [r for r in rows if r.connections >= MIN_CONNECTIONS]
    if not judged:
        total = sum(r.connections for r in rows)
        return [make(HERD, Severity.OK, f"too few connections on any listener to judge "
                                        f"({total} in {res.window.seconds:g} s)", evidence)]
    herd = [r for r in judged if (r.wakeups_per_connection or 0) >= HERD_RATIO]
    if not herd:
        worst = max(judged, key=lambda r: r.wakeups_per_connection or 0)
        group = (f" (SO_REUSEPORT group of {worst.sockets_on_port} sockets: each wakes only "
                 "its own workers)" if worst.sockets_on_port > 1 else "")
        return [make(HERD, Severity.OK,
                     f"no thundering herd: port {worst.port} woke "
                     f"{_n(worst.wakeups_per_connection or 0, 'task')} per connection{group}",
                     evidence)]
    worst = max(herd, key=lambda r: (r.wakeups_per_connection or 0, r.connections))
    evidence["worst"] = _row(worst)
    evidence["threads"] = [{"pid": t.pid, "tid": t.tid, "command": t.command,
                            "woken": t.woken, "accepted": t.accepted, "eagain": t.eagain}
                           for t in worst.threads[:16]]
    shared = ("one listening socket shared by " if worst.sockets_on_port == 1 else
              f"one socket of a SO_REUSEPORT group of {worst.sockets_on_port}, shared by ")
    title = (f"port {worst.port}: {_n(worst.wakeups_per_connection, 'task')} woken per "
             f"connection ({_n(worst.wakeups, 'wake-up')} for "
             f"{_n(worst.connections, 'connection')}) on "
             f"{shared}{_who(worst)}")
    return [make(HERD, Severity.WARNING, title, evidence, recommendation=_fix(worst))]
