"""File descriptors: processes holding sockets near RLIMIT_NOFILE, the system near file-max."""

from __future__ import annotations

from typing import Any

from netdiag.facts import Facts
from netdiag.model import Finding, Rule, RuleSpec, Severity
from netdiag.rules._util import make

TOPIC = "sockets"
SUMMARY = "The socket census and the file-descriptor limits every socket counts against"

PROC_WARN, PROC_CRIT = 0.8, 0.95  # share of the soft RLIMIT_NOFILE (netdata: 85/95 %)
SYS_WARN, SYS_CRIT = 0.8, 0.9  # share of fs.file-max (netdata crit 90 %, node-mixin 70/90 %)

BACKGROUND = (
    "Every socket a process holds is a file descriptor. accept(), socket() and connect() "
    "fail with EMFILE when the process reaches its RLIMIT_NOFILE soft limit, and with ENFILE "
    "when the whole system reaches fs.file-max. An accept() that fails with EMFILE leaves "
    "the connection in the accept queue, so a full fd table also looks like a slow listener."
)

FD_LIMIT = RuleSpec(
    id="sockets.fd_limit",
    topic=TOPIC,
    title="File descriptors near their limit",
    rule=Rule(
        text="RLIMIT_NOFILE: a value one greater than the maximum file descriptor number that "
             "can be opened by this process; attempts to exceed it yield EMFILE. "
             "/proc/sys/fs/file-max: the system-wide limit on open files; reaching it yields "
             "ENFILE.",
        source="getrlimit(2): RLIMIT_NOFILE; proc(5): /proc/sys/fs/file-max, file-nr",
    ),
    explanation=(
        "The process named in the evidence holds most of the file descriptors its soft "
        "RLIMIT_NOFILE allows; new sockets (accept, connect) will fail with EMFILE ('Too many "
        "open files'), which servers often log and retry in a loop while clients wait in the "
        "accept queue. fs.file-max is the same for the whole host (ENFILE)."
    ),
    recommendation=(
        "First check the fds are not leaking (CLOSE_WAIT sockets, `ls /proc/PID/fd | wc -l` "
        "over time). If the load is real, raise the limit where the service starts: "
        "LimitNOFILE= in its systemd unit, or `ulimit -n` in its start script (at most "
        "fs.nr_open). For the system limit, raise fs.file-max in /etc/sysctl.d/."
    ),
    thresholds=f"warning at {int(PROC_WARN * 100)}% of a socket-holding process's soft "
               f"RLIMIT_NOFILE or {int(SYS_WARN * 100)}% of fs.file-max; critical at "
               f"{int(PROC_CRIT * 100)}% / {int(SYS_CRIT * 100)}%",
)

SPECS = (FD_LIMIT,)


def check(facts: Facts) -> list[Finding]:
    procs = facts.processes
    file_nr = facts.file_nr
    if procs is None and file_nr is None:
        return []
    evidence: dict[str, Any] = {}
    severity = Severity.OK
    titles = []
    unread = 0
    if procs is not None:
        rows = []
        elsewhere = 0
        for info in procs.processes.values():
            # holds_sockets is only looked up for tables at least half full, which covers
            # every process the thresholds below can select.
            if not info.nofile_soft or not (info.holds_sockets or info.sockets):
                continue
            share = info.fds / info.nofile_soft
            if share < PROC_WARN:
                continue
            # /proc shows every process of the host: one in another network namespace is
            # that namespace's finding, not this one's.
            if info.netns is not None and procs.netns_inode is not None \
                    and info.netns != procs.netns_inode:
                elsewhere += 1
                continue
            rows.append({"pid": info.pid, "command": info.command, "fds": info.fds,
                         "sockets": info.sockets, "nofile_soft": info.nofile_soft,
                         "nofile_hard": info.nofile_hard, "share": round(share, 3)})
        rows.sort(key=lambda r: -r["share"])
        evidence["processes_near_limit"] = rows[:20]
        evidence["processes_scanned"] = procs.scanned
        if elsewhere:
            evidence["near_limit_in_other_namespaces"] = elsewhere
        if procs.unreadable:
            unread = procs.unreadable
            evidence["processes_not_readable"] = unread
        if rows:
            top = rows[0]
            severity = Severity.CRITICAL if top["share"] >= PROC_CRIT else Severity.WARNING
            socks = f", {top['sockets']} sockets" if top["sockets"] else ", holds sockets"
            titles.append(f"pid {top['pid']} ({top['command']}) uses {top['fds']} of "
                          f"{top['nofile_soft']} file descriptors{socks}")
    if file_nr is not None and file_nr.maximum > 0:
        share = file_nr.allocated / file_nr.maximum
        evidence["file_nr_allocated"] = file_nr.allocated
        evidence["file_max"] = file_nr.maximum
        evidence["file_max_share"] = round(share, 6)
        if share >= SYS_WARN:
            severity = max(severity, Severity.CRITICAL if share >= SYS_CRIT else Severity.WARNING)
            titles.append(f"system uses {file_nr.allocated} of fs.file-max {file_nr.maximum}")
    if not titles:
        if unread:
            # Not "well below": the processes it could not read are unknown, not fine.
            return [make(FD_LIMIT, Severity.OK,
                         f"no readable process near its fd limit; {unread} of "
                         f"{unread + procs.scanned} processes could not be read (not root): "
                         "their fd use is unknown", evidence,
                         recommendation="Run as root to see every process's file "
                                        "descriptors.")]
        return [make(FD_LIMIT, Severity.OK, "file descriptors well below their limits",
                     evidence)]
    return [make(FD_LIMIT, severity, "; ".join(titles), evidence)]
