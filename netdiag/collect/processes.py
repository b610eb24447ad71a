"""Socket -> process attribution by walking /proc/PID/fd; process details from psutil.

Socket inodes are unique on the host, so the walk works for any network namespace. What an
unprivileged run cannot read is counted in `unreadable`, never guessed.

A socket may have several holders: fds are shared after fork() and inherited across exec()
(a master and its workers, a graceful binary upgrade, systemd socket activation). Every
holder of a wanted socket is recorded, so that advice such as "restart the process" can be
made true for the whole set.

Cost: listing a process's fd directory is one syscall; resolving each fd (readlink) is one
per fd, which on a host with a million sockets dominates. So links are resolved only while
some wanted inode is still unfound, for every process when all owners are wanted, and for
processes whose fd table is at least `detail_share` full, until their first socket (to
know whether they hold sockets). Further holders are then searched in every other process
when the host holds at most EXHAUSTIVE_FDS fds. Beyond that, processes with small fd tables
are still searched whole, and the large ones only at the fd numbers where the first holder
has the socket: an fd shared by fork() or inherited across exec() keeps its number (a
master's listeners in its workers, a graceful upgrade). The facts say which search was made.
"""

from __future__ import annotations

import os
import resource
import time

from netdiag.context import Context
from netdiag.facts import ProcessActivity, ProcessFacts, ProcessInfo
from netdiag.readfile import text

_SOCKET_PREFIX = "socket:["
_EPOLL = "anon_inode:[eventpoll]"
_INF = resource.RLIM_INFINITY
# Resolving every fd on the host costs about 2 µs each: exact about further holders up to
# this many fds (~0.4 s); beyond, tables larger than SMALL_TABLE are looked at only at the
# first holder's fd numbers.
EXHAUSTIVE_FDS = 200_000
SMALL_TABLE = 4096


def scan_fds(ctx: Context, wanted: set[int] | None, detail_share: float = 0.5) -> ProcessFacts:
    """Walk every process's fd table once (and again, for further holders, the tables not
    resolved the first time).

    wanted: the socket inodes to attribute (None = every socket inode).
    """
    facts = ProcessFacts(every_socket=wanted is None, looked_up=set(wanted or ()))
    proc = str(ctx.path("proc"))
    if ctx.live:
        try:
            facts.netns_inode = os.stat("/proc/self/ns/net").st_ino
        except OSError:
            pass
    owners = facts.owners
    shared = facts.shared
    want_all = wanted is None
    remaining = 0 if want_all else len(wanted)
    me = os.getpid()
    unresolved: list[tuple[int, int]] = []  # (pid, fds) whose links were not all resolved
    fd_numbers: dict[int, set[str]] = {}  # wanted inode -> fd numbers in its first holder
    total_fds = 0
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
            total_fds += nfds
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
                        if want_all or inode in wanted:
                            first = owners.get(inode)
                            if first is None:
                                owners[inode] = pid
                                remaining -= 1
                                if not want_all:
                                    fd_numbers.setdefault(inode, set()).add(fd)
                            elif first != pid:
                                _add_holder(shared, inode, first, pid)
                            elif not want_all:
                                fd_numbers[inode].add(fd)
                if probe:
                    nsock = None
                    unresolved.append((pid, nfds))
            else:
                unresolved.append((pid, nfds))
            holds = bool(holds)
            netns = None
            if ctx.live and soft_v is not None and nfds >= detail_share * soft_v:
                try:  # which namespace's process it is (near its limit: worth a stat)
                    netns = os.stat(f"{proc}/{name}/ns/net").st_ino
                except OSError:
                    pass
            facts.processes[pid] = ProcessInfo(
                pid=pid, command="", cmdline="", fds=nfds, sockets=nsock,
                nofile_soft=soft_v, nofile_hard=hard_v, holds_sockets=holds, netns=netns)
        finally:
            os.close(dirfd)
    if not want_all and owners and unresolved:
        _further_holders(facts, proc, unresolved, total_fds, fd_numbers)
    return facts


def _add_holder(shared: dict[int, list[int]], inode: int, first: int, pid: int) -> None:
    holders = shared.get(inode)
    if holders is None:
        shared[inode] = [first, pid]
    elif pid not in holders:
        holders.append(pid)


def _further_holders(facts: ProcessFacts, proc: str, unresolved: list[tuple[int, int]],
                     total_fds: int, fd_numbers: dict[int, set[str]]) -> None:
    """Search the fd tables the first walk did not resolve for more holders of the sockets
    it attributed."""
    exhaustive = total_fds <= EXHAUSTIVE_FDS
    if not exhaustive:
        facts.holders_complete = False
        facts.holders_scope = (
            f"every process with at most {SMALL_TABLE} fds, and the others at the fd numbers "
            f"the first holder uses (fork and exec keep them); the host holds {total_fds} fds, "
            "too many to resolve them all")
    numbers = sorted({n for ns in fd_numbers.values() for n in ns}, key=int)
    for pid, nfds in unresolved:
        try:
            dirfd = os.open(f"{proc}/{pid}/fd", os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            continue
        try:
            if exhaustive or nfds <= SMALL_TABLE:
                try:
                    fds = os.listdir(dirfd)
                except OSError:
                    continue
            else:
                fds = numbers
            for fd in fds:
                try:
                    target = os.readlink(fd, dir_fd=dirfd)
                except OSError:
                    continue
                if target.startswith(_SOCKET_PREFIX):
                    inode = int(target[8:-1])
                    first = facts.owners.get(inode)
                    if inode in fd_numbers and first != pid:
                        _add_holder(facts.shared, inode, first, pid)
        finally:
            os.close(dirfd)


def _stat_fields(proc: str, pid: int, task: str = "") -> list[str] | None:
    """/proc/PID/stat after the command (which may hold spaces and parentheses)."""
    try:
        with open(f"{proc}/{pid}{task}/stat", "rb") as fh:
            raw = fh.read()
    except OSError:
        return None
    end = raw.rfind(b")")
    return raw[end + 2:].decode("ascii", "replace").split() if end > 0 else None


def read_activity(ctx: Context, pids: set[int], inodes: set[int],
                  window: float = 0.25) -> dict[int, ProcessActivity]:
    """What each process is doing: its state and its threads' states, its CPU use over a
    short window, the kernel function it sleeps in, and which of `inodes` its epoll
    instances watch (the sockets it waits on)."""
    proc = str(ctx.path("proc"))
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    first: dict[int, int] = {}
    for pid in pids:
        fields = _stat_fields(proc, pid)
        if fields is not None and len(fields) > 12:
            first[pid] = int(fields[11]) + int(fields[12])
    t0 = time.monotonic()
    if first:
        time.sleep(window)
    elapsed = time.monotonic() - t0
    out: dict[int, ProcessActivity] = {}
    for pid in pids:
        fields = _stat_fields(proc, pid)
        if fields is None or len(fields) < 18:
            continue
        act = ProcessActivity(pid=pid, state=fields[0], threads=int(fields[17]))
        if pid in first and elapsed > 0:
            used = int(fields[11]) + int(fields[12]) - first[pid]
            act.cpu_percent = round(100.0 * used / ticks / elapsed, 1)
        act.thread_states = _thread_states(proc, pid)
        try:
            with open(f"{proc}/{pid}/wchan", encoding="ascii", errors="replace") as fh:
                wchan = fh.read(128).strip()
            act.wchan = wchan if wchan and wchan != "0" else None
        except OSError:
            pass
        act.epoll_watches = sorted(_epoll_watches(proc, pid, inodes))
        out[pid] = act
    return out


THREADS_MAX = 256


def _thread_states(proc: str, pid: int) -> dict[str, int]:
    states: dict[str, int] = {}
    try:
        tids = os.listdir(f"{proc}/{pid}/task")[:THREADS_MAX]
    except OSError:
        return states
    for tid in tids:
        fields = _stat_fields(proc, pid, f"/task/{tid}")
        if fields:
            states[fields[0]] = states.get(fields[0], 0) + 1
    return states


EPOLL_FDS_MAX = 16
FDS_MAX = 65536


def _epoll_watches(proc: str, pid: int, inodes: set[int]) -> set[int]:
    """Inodes among `inodes` that an epoll instance of the process watches: each line of
    /proc/PID/fdinfo/EPFD reads `tfd: N events: X data: Y pos:P ino:HEX sdev:S`
    (fs/eventpoll.c ep_show_fdinfo())."""
    found: set[int] = set()
    try:
        fds = os.listdir(f"{proc}/{pid}/fd")[:FDS_MAX]
    except OSError:
        return found
    epolls = 0
    for fd in fds:
        try:
            if os.readlink(f"{proc}/{pid}/fd/{fd}") != _EPOLL:
                continue
        except OSError:
            continue
        epolls += 1
        if epolls > EPOLL_FDS_MAX:
            break
        try:
            with open(f"{proc}/{pid}/fdinfo/{fd}", encoding="ascii", errors="replace") as fh:
                for line in fh:
                    if not line.startswith("tfd:"):
                        continue
                    at = line.find(" ino:")
                    if at < 0:
                        continue
                    try:
                        ino = int(line[at + 5:].split()[0], 16)
                    except (ValueError, IndexError):
                        continue
                    if ino in inodes:
                        found.add(ino)
        except OSError:
            continue
    return found


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


def _cmdline(pid: int) -> str:
    """/proc/PID/cmdline as bytes (psutil reads it as text with newline translation: a
    carriage return in an argument came out as a newline), arguments joined by spaces, the
    first 200 characters; "" when it cannot be read (a zombie, a kernel thread)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            raw = fh.read(1024)
    except OSError:
        return ""
    args = raw.rstrip(b"\0").replace(b"\0", b" ")
    return text(args)[:200]


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
                info.cmdline = _cmdline(pid)
                try:
                    info.user = text(proc.username())
                except (psutil.AccessDenied, KeyError):
                    info.user = None
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
