"""Enter another network namespace for the whole collection.

setns(2) moves only the calling thread, while /proc/self/net (and so /proc/net) follows the
thread-group leader. netdiag therefore enters the namespace from the main thread, before any
other thread exists, so that the leader itself is inside and every /proc/net read, /proc/sys/net
read and netlink socket afterwards sees the target namespace.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading

from netdiag.errors import UsageError

CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = "/run/netns"


def _setns(fd: int) -> None:
    if hasattr(os, "setns"):  # Python 3.12+
        os.setns(fd, CLONE_NEWNET)  # novermin (guarded by hasattr)
        return
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def namespace_path(name: str | None, pid: int | None) -> tuple[str, str]:
    """Resolve --netns / --pid to a path under /run/netns or /proc/PID/ns; label for reports."""
    if name is not None:
        if "/" in name or name in (".", ".."):
            raise UsageError(f"invalid namespace name {name!r}")
        path = os.path.join(NETNS_RUN_DIR, name)
        if not os.path.exists(path):
            raise UsageError(f"network namespace {name!r} not found under {NETNS_RUN_DIR}")
        return path, name
    assert pid is not None
    if pid <= 0:
        raise UsageError(f"invalid pid {pid}")
    path = f"/proc/{pid}/ns/net"
    if not os.path.exists(f"/proc/{pid}"):
        raise UsageError(f"no process with pid {pid}")
    return path, f"pid:{pid}"


def enter(path: str) -> None:
    if threading.active_count() > 1:
        raise UsageError("cannot enter a network namespace from a multi-threaded process")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except PermissionError:
        raise UsageError(f"permission denied opening {path} (entering a namespace needs "
                         "root or CAP_SYS_ADMIN)") from None
    except OSError as exc:
        raise UsageError(f"cannot open {path}: {exc.strerror}") from None
    try:
        _setns(fd)
    except PermissionError:
        raise UsageError(f"permission denied entering the network namespace of {path} "
                         "(needs root or CAP_SYS_ADMIN)") from None
    except OSError as exc:
        raise UsageError(f"cannot enter network namespace {path}: {exc.strerror}") from None
    finally:
        os.close(fd)


def current_inode() -> int | None:
    try:
        return os.stat("/proc/self/ns/net").st_ino
    except OSError:
        return None


def enter_if_needed(path: str, inode: int | None) -> None:
    """Enter the namespace unless the process is already in it: an unprivileged run cannot
    setns() even into its own namespace, and need not."""
    if inode is not None and inode == current_inode():
        return
    enter(path)


def discover() -> tuple[list[tuple[str, str, int]], int]:
    """Every network namespace on the host: (label, path, inode), deduplicated by inode.

    The namespace netdiag started in comes first as "default", then named namespaces
    (/run/netns), then those only a process holds (labelled "pid:N (command)"). Returns the
    list and how many processes could not be inspected (their ns link needs privilege).
    """
    found: dict[int, tuple[str, str, int]] = {}
    own = "/proc/self/ns/net"
    inode = os.stat(own).st_ino
    # Keep a path that stays valid after setns: the thread-group leader's ns link would move.
    found[inode] = ("default", f"/proc/{os.getpid()}/ns/net", inode)
    try:
        names = sorted(os.listdir(NETNS_RUN_DIR))
    except OSError:
        names = []
    for name in names:
        path = os.path.join(NETNS_RUN_DIR, name)
        try:
            ino = os.stat(path).st_ino
        except OSError:
            continue
        found.setdefault(ino, (name, path, ino))
    hidden = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        path = f"/proc/{entry}/ns/net"
        try:
            ino = os.stat(path).st_ino
        except PermissionError:
            hidden += 1
            continue
        except OSError:
            continue
        if ino not in found:
            try:
                with open(f"/proc/{entry}/comm") as fh:
                    comm = fh.read().strip()
            except OSError:
                comm = "?"
            found[ino] = (f"pid:{entry} ({comm})", path, ino)
    return list(found.values()), hidden
