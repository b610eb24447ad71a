"""Enter another network namespace for the whole collection.

setns(2) moves only the calling thread, while /proc/self/net (and so /proc/net) follows the
thread-group leader. netdiag therefore enters the namespace from the main thread, before any
other thread exists, so that the leader itself is inside and every /proc/net read, /proc/sys/net
read and netlink socket afterwards sees the target namespace.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Any

from netdiag import readfile
from netdiag.errors import SourceMissing, UsageError
from netdiag.render._safe import quoted

CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = "/run/netns"
# The namespace of pid 1: the host's initial network namespace (a container's own, inside
# one). Host-wide sysctls (tcp_mem, netdev_max_backlog...) are visible only there.
INITIAL_NETNS = "/proc/1/ns/net"
# Since 6.18 the initial namespace has a fixed inode (NET_NS_INIT_INO, 0xEFFFFFF9); dynamic
# namespace inodes start at 0xF0000000, so no other namespace can have it.
NET_NS_INIT_INO = 0xEFFFFFF9


_libc: Any = None


def _setns(fd: int) -> None:
    global _libc
    if hasattr(os, "setns"):  # Python 3.12+
        os.setns(fd, CLONE_NEWNET)  # novermin (guarded by hasattr)
        return
    if _libc is None:
        import ctypes

        try:  # by its usual name: find_library() runs ldconfig, tens of ms per call
            _libc = ctypes.CDLL("libc.so.6", use_errno=True)
        except OSError:
            import ctypes.util

            _libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc = _libc
    if libc.setns(fd, CLONE_NEWNET) != 0:
        import ctypes

        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def namespace_path(name: str | None, pid: int | None) -> tuple[str, str]:
    """Resolve --netns / --pid to a path under /run/netns or /proc/PID/ns; label for reports."""
    if name is not None:
        if "/" in name or name in (".", ".."):
            raise UsageError(f"invalid namespace name {quoted(name)}")
        path = os.path.join(NETNS_RUN_DIR, name)
        if not os.path.exists(path):
            raise UsageError(f"network namespace {quoted(name)} not found under "
                             f"{NETNS_RUN_DIR}")
        return path, readfile.text(name)
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


def identify() -> tuple[str | None, int | None, bool | None]:
    """The current network namespace: (its name under /run/netns or None, its inode,
    whether it is the initial one; None when that cannot be told without privilege).

    Like `ip netns identify`: the namespace is named by matching the device and inode of
    /proc/self/ns/net with the bind mounts under /run/netns (symptoms-and-limits.md §6)."""
    try:
        own = os.stat("/proc/self/ns/net")
    except OSError:
        return None, None, None
    initial: bool | None
    try:
        init = os.stat(INITIAL_NETNS)
        initial = (init.st_dev, init.st_ino) == (own.st_dev, own.st_ino)
    except OSError:
        # stat() of another process's namespace needs ptrace access; its link text may
        # still be readable, and the fixed inode of 6.18+ answers without either.
        try:
            initial = os.readlink(INITIAL_NETNS) == f"net:[{own.st_ino}]"
        except OSError:
            initial = True if own.st_ino == NET_NS_INIT_INO else None
    name = None
    try:
        names = sorted(os.listdir(NETNS_RUN_DIR))
    except OSError:
        names = []
    for entry in names:
        try:
            st = os.stat(os.path.join(NETNS_RUN_DIR, entry))
        except OSError:
            continue
        if (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino):
            name = readfile.text(entry)  # a file name: any bytes, kept as escaped text
            break
    return name, own.st_ino, initial


def read_in_initial(fn):
    """Run fn() inside the initial network namespace and come back. Raises UsageError when
    it cannot be entered (no privilege), and never returns in the wrong namespace."""
    if threading.active_count() > 1:
        raise UsageError("cannot switch network namespaces from a multi-threaded process")
    try:
        own = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise UsageError(f"cannot open /proc/self/ns/net: {exc.strerror}") from None
    try:
        enter(initial_netns_path())
        try:
            return fn()
        finally:
            _setns(own)  # an error here propagates: better to stop than judge another netns
    finally:
        os.close(own)


def initial_netns_path() -> str:
    """A path to the initial network namespace: pid 1's, or (when pid 1 may not be
    inspected) that of any process holding the fixed 6.18+ initial inode."""
    try:
        os.stat(INITIAL_NETNS)
        return INITIAL_NETNS
    except OSError:
        pass
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        path = f"/proc/{entry}/ns/net"
        try:
            if os.stat(path).st_ino == NET_NS_INIT_INO:
                return path
        except OSError:
            continue
    return INITIAL_NETNS  # entering it will say why it cannot


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


# Processes per namespace whose cgroup is read to find the container behind it.
MAX_PROBED = 8


@dataclass
class Namespace:
    """A network namespace --all-netns visits, and what it is called in the report."""

    label: str
    path: str  # where to setns() from
    inode: int
    name: str | None = None  # its name under /run/netns
    pid: int | None = None  # a process in it (the lowest pid)
    command: str | None = None
    container: Any = None  # netdiag.containers.Container, when one was recognised

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "holder_pid": self.pid, "holder_command": self.command,
                "container": self.container.as_json() if self.container is not None
                else None}


def _comm(pid: str) -> str:
    """A process's comm. Any process sets its own (prctl PR_SET_NAME): bytes, not UTF-8, maybe
    markup or escape sequences; the label keeps it as escaped text."""
    try:
        return readfile.read_text(f"/proc/{pid}/comm", f"/proc/{pid}/comm", limit=4096).strip()
    except SourceMissing:
        return "?"


def discover(root: str | None = None) -> tuple[list[Namespace], int]:
    """Every network namespace on the host, deduplicated by inode.

    The namespace netdiag started in comes first as "default", then named namespaces
    (/run/netns), then those only a process holds. Namespaces of containers are labelled by
    what runs in them (pod:NS/NAME, container:NAME; see netdiag.containers, which reads the
    runtimes' files below `root`, default NETDIAG_HOST_ROOT or /); the others keep their name,
    or "pid:N (command)" of the lowest pid in them. Returns the list and how many processes
    could not be inspected (their ns link needs privilege).
    """
    found: dict[int, Namespace] = {}
    own = os.stat("/proc/self/ns/net")
    inode = own.st_ino
    # Keep a path that stays valid after setns: the thread-group leader's ns link would move.
    found[inode] = Namespace("default", f"/proc/{os.getpid()}/ns/net", inode)
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
        if ino not in found:
            found[ino] = Namespace(readfile.text(name), path, ino, name=readfile.text(name))
    hidden = 0
    holders: dict[int, list[int]] = {}
    for pid in sorted(int(e) for e in os.listdir("/proc") if e.isdigit()):
        path = f"/proc/{pid}/ns/net"
        try:
            ino = os.stat(path).st_ino
        except PermissionError:
            hidden += 1
            continue
        except OSError:
            continue
        if ino == inode:
            continue
        ns = found.get(ino)
        if ns is None:
            comm = _comm(str(pid))
            ns = found[ino] = Namespace(f"pid:{pid} ({comm})", path, ino, pid=pid,
                                        command=comm)
        elif ns.pid is None:
            ns.pid, ns.command = pid, _comm(str(pid))
        probed = holders.setdefault(ino, [])
        if len(probed) < MAX_PROBED:
            probed.append(pid)
    _label_containers(found, holders, inode, own.st_dev, root)
    return list(found.values()), hidden


def _label_containers(found: dict[int, Namespace], holders: dict[int, list[int]],
                      own: int, dev: int, root: str | None) -> None:
    others = [ns for ns in found.values() if ns.inode != own]
    if not others:
        return
    from netdiag.containers import Labeller

    labeller = Labeller(root)
    for ns in others:
        container = labeller.by_name(ns.name, ns.inode) if ns.name else None
        if container is None:
            container = labeller.by_inode(ns.inode, dev)
        if container is None:
            for pid in holders.get(ns.inode, []):
                got = labeller.by_process(pid)
                if got is not None and (container is None or (got.pod_name and not
                                                               container.pod_name)):
                    container = got
                if container is not None and (container.pod_name or container.name):
                    break
        if container is not None:
            ns.container = container
            ns.label = container.label()
    seen: set[str] = set()
    for ns in found.values():  # two namespaces never share a label
        if ns.label in seen:
            ns.label = f"{ns.label} [netns:{ns.inode}]"
        seen.add(ns.label)
