"""Socket -> process attribution by walking /proc/PID/fd; process details from psutil.

Socket inodes are unique on the host, so the walk works for any network namespace. What an
unprivileged run cannot read is counted in `unreadable`, never guessed.

Cost: listing a process's fd directory is one syscall; resolving each fd (readlink) is one
per fd, which on a host with a million sockets dominates. So links are resolved only while
some wanted inode is still unfound, for every process when all owners are wanted, and for
processes whose fd table is at least `detail_share` full (to count their sockets).
"""

from __future__ import annotations

import os
import resource

from netdiag.context import Context
from netdiag.facts import ProcessFacts, ProcessInfo

_SOCKET_PREFIX = "socket:["
_INF = resource.RLIM_INFINITY


def scan_fds(ctx: Context, wanted: set[int] | None, detail_share: float = 0.5) -> ProcessFacts:
    """Walk every process's fd table once.

    wanted: the socket inodes to attribute (None = every socket inode).
    """
    facts = ProcessFacts()
    proc = str(ctx.path("proc"))
    owners = facts.owners
    want_all = wanted is None
    remaining = 0 if want_all else len(wanted)
    me = os.getpid()
    try:
        entries = os.listdir(proc)
    except OSError:
        return facts
    for name in entries:
        if not name.isdigit():
            continue
        pid = int(name)
        if pid == me:
            continue
        try:
            dirfd = os.open(f"{proc}/{name}/fd", os.O_RDONLY | os.O_DIRECTORY)
        except PermissionError:
            facts.unreadable += 1
            continue
        except OSError:
            continue  # exited, or a kernel thread without an fd table
        try:
            try:
                fds = os.listdir(dirfd)
            except PermissionError:
                facts.unreadable += 1
                continue
            except OSError:
                continue
            facts.scanned += 1
            if not fds:
                continue
            try:
                soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
            except (OSError, ValueError):
                soft = hard = _INF
            soft_v = None if soft == _INF else soft
            hard_v = None if hard == _INF else hard
            resolve = want_all or remaining > 0 or (
                soft_v is not None and len(fds) >= detail_share * soft_v)
            nsock = None
            if resolve:
                nsock = 0
                for fd in fds:
                    try:
                        target = os.readlink(fd, dir_fd=dirfd)
                    except OSError:
                        continue
                    if target.startswith(_SOCKET_PREFIX):
                        nsock += 1
                        inode = int(target[8:-1])
                        if (want_all or inode in wanted) and inode not in owners:
                            owners[inode] = pid
                            remaining -= 1
            facts.processes[pid] = ProcessInfo(
                pid=pid, command="", cmdline="", fds=len(fds), sockets=nsock,
                nofile_soft=soft_v, nofile_hard=hard_v)
        finally:
            os.close(dirfd)
    return facts


def fill_details(facts: ProcessFacts, pids: set[int]) -> None:
    """Command, command line and user for the given pids, via psutil."""
    import psutil

    for pid in pids:
        info = facts.processes.get(pid)
        if info is None:
            continue
        try:
            proc = psutil.Process(pid)
            with proc.oneshot():
                info.command = proc.name()
                try:
                    info.cmdline = " ".join(proc.cmdline())[:200]
                except (psutil.AccessDenied, psutil.ZombieProcess):
                    info.cmdline = ""
                try:
                    info.user = proc.username()
                except (psutil.AccessDenied, KeyError):
                    info.user = None
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
