"""Socket -> process attribution by walking /proc/PID/fd; process details from psutil.

Socket inodes are unique on the host, so the walk works for any network namespace. What an
unprivileged run cannot read is counted in `unreadable`, never guessed.

Cost: listing a process's fd directory is one syscall; resolving each fd (readlink) is one
per fd, which on a host with a million sockets dominates. So links are resolved only while
some wanted inode is still unfound, for every process when all owners are wanted, and for
processes whose fd table is at least `detail_share` full, until their first socket (to
know whether they hold sockets).
"""

from __future__ import annotations

import os
import resource

from netdiag.context import Context
from netdiag.facts import ProcessFacts, ProcessInfo
from netdiag.readfile import text

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
            # Since Linux 6.2 the size of /proc/PID/fd is the number of open fds: one stat()
            # instead of listing the directory. Older kernels report 0; then list it.
            try:
                nfds = os.fstat(dirfd).st_size
                fds = None
                if nfds == 0:
                    fds = os.listdir(dirfd)
                    nfds = len(fds)
            except PermissionError:
                facts.unreadable += 1
                continue
            except OSError:
                continue
            facts.scanned += 1
            if not nfds:
                continue
            try:
                soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
            except (OSError, ValueError):
                soft = hard = _INF
            soft_v = None if soft == _INF else soft
            hard_v = None if hard == _INF else hard
            attribute = want_all or remaining > 0
            # A process near its fd limit: find out whether it holds sockets at all (the
            # first socket fd answers that; counting them all would cost a syscall per fd).
            probe = not attribute and soft_v is not None and nfds >= detail_share * soft_v
            nsock = None
            holds = False
            if probe:
                holds = _probe_sockets(dirfd, nfds)
            if attribute or (probe and holds is None):
                if fds is None:
                    try:
                        fds = os.listdir(dirfd)
                    except OSError:
                        continue
                nsock = 0
                for fd in fds:
                    try:
                        target = os.readlink(fd, dir_fd=dirfd)
                    except OSError:
                        continue
                    if target.startswith(_SOCKET_PREFIX):
                        holds = True
                        if probe:
                            break
                        nsock += 1
                        inode = int(target[8:-1])
                        if (want_all or inode in wanted) and inode not in owners:
                            owners[inode] = pid
                            remaining -= 1
                if probe:
                    nsock = None
            holds = bool(holds)
            facts.processes[pid] = ProcessInfo(
                pid=pid, command="", cmdline="", fds=nfds, sockets=nsock,
                nofile_soft=soft_v, nofile_hard=hard_v, holds_sockets=holds)
        finally:
            os.close(dirfd)
    return facts


PROBE_FDS = 64


def _probe_sockets(dirfd: int, nfds: int) -> bool | None:
    """Look at the lowest-numbered fds for a socket without listing the whole table.

    True when one is found, None when the first PROBE_FDS open fds hold none (then the
    caller lists the table)."""
    seen = 0
    fd = 0
    while seen < min(nfds, PROBE_FDS) and fd < 4 * PROBE_FDS:
        try:
            target = os.readlink(str(fd), dir_fd=dirfd)
        except OSError:
            fd += 1
            continue
        if target.startswith(_SOCKET_PREFIX):
            return True
        seen += 1
        fd += 1
    return None


def fill_details(facts: ProcessFacts, pids: set[int]) -> None:
    """Command, command line and user for the given pids, via psutil."""
    if not pids:
        return  # psutil costs ~12 ms to import: only when a process is to be named
    import psutil

    for pid in pids:
        info = facts.processes.get(pid)
        if info is None:
            continue
        try:
            proc = psutil.Process(pid)
            # A process names itself (comm, argv): any bytes, markup or escape sequences
            # included. psutil keeps undecodable bytes as surrogates; facts hold escapes.
            with proc.oneshot():
                info.command = text(proc.name())
                try:
                    info.cmdline = text(" ".join(proc.cmdline())[:200])
                except (psutil.AccessDenied, psutil.ZombieProcess):
                    info.cmdline = ""
                try:
                    info.user = text(proc.username())
                except (psutil.AccessDenied, KeyError):
                    info.user = None
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
