"""Directories netdiag writes into, reached so that no other user can redirect the write.

netdiag often runs as root and writes where other users may create files (/tmp, a shared
textfile directory, a home directory given as --state-dir). A path is therefore walked one
component at a time from a directory file descriptor, each step opened with O_NOFOLLOW:

- a symbolic link is followed only when root or this user owns it (a stricter form of the
  kernel's fs.protected_symlinks, which many hosts leave off and which covers only sticky
  directories); another user's link anywhere in the path is refused;
- the directory reached is held open: the caller creates, renames and opens relative to that
  descriptor, so a component swapped after the walk changes nothing.

`trusted_dir` adds what a store that other programs (SQLite) open by name needs: the directory
must belong to root or this user and be writable by nobody else, so nobody else can plant a
link or a file in it.
"""

from __future__ import annotations

import errno
import os
import stat
from collections import deque

MAX_LINKS = 40  # as the kernel's own limit on links followed in one lookup (ELOOP)
MAX_STEPS = 4096


class UnsafePath(OSError):
    """The path cannot be walked safely; str() says which component and why."""


def trusted_owner(uid: int) -> bool:
    return uid in (0, os.geteuid())


def _components(text: str) -> list[str]:
    return [p for p in text.split("/") if p not in ("", ".")]


def show(path: str | os.PathLike) -> str:
    """A path as text for a message: undecodable bytes and control characters as escapes
    (render._safe.clean), at most 80 characters."""
    from netdiag.render._safe import clean

    text = clean(os.fsdecode(path))
    return text if len(text) <= 80 else text[:77] + "..."


def open_dir(path: str | os.PathLike, create: bool = False, mode: int = 0o750,
             at: int | None = None) -> int:
    """A descriptor (O_RDONLY | O_DIRECTORY) of the directory `path`, walked from `at` (or the
    working directory) for a relative path and from / for an absolute one. create: missing
    components are made with `mode` as they are reached. Raises UnsafePath for another user's
    link, OSError (ENOENT, ENOTDIR, ELOOP...) otherwise. The caller closes it."""
    text = os.fsdecode(path)
    start = "/" if text.startswith("/") else "."
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
    fd = os.open(start, flags, dir_fd=at if start == "." else None)
    parts = deque(_components(text))
    links = steps = 0
    try:
        while parts:
            steps += 1
            if steps > MAX_STEPS:
                raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), text)
            name = parts.popleft()
            try:
                nfd = os.open(name, flags | os.O_NOFOLLOW, dir_fd=fd)
            except FileNotFoundError:
                if not create or name == "..":
                    raise
                try:
                    os.mkdir(name, mode, dir_fd=fd)
                except FileExistsError:
                    pass  # made meanwhile: opened (and judged) on the next step
                parts.appendleft(name)
                continue
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                if not stat.S_ISLNK(st.st_mode):
                    raise
                if not trusted_owner(st.st_uid):
                    raise UnsafePath(errno.EPERM, f"{show(name)} is a symbolic link owned by "
                                     f"uid {st.st_uid} (not root, not this user): not "
                                     "followed") from None
                links += 1
                if links > MAX_LINKS:
                    raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), text) from None
                target = os.readlink(name, dir_fd=fd)
                if target.startswith("/"):
                    os.close(fd)
                    fd = -1
                    fd = os.open("/", flags)
                parts.extendleft(reversed(_components(target)))
                continue
            os.close(fd)
            fd = nfd
        return fd
    except BaseException:
        if fd >= 0:
            os.close(fd)
        raise


def trusted_dir(path: str | os.PathLike, create: bool = False, mode: int = 0o750) -> int:
    """open_dir, and the directory reached must belong to root or this user and be writable
    by nobody else (group or others): files in it are then only what root or this user put
    there."""
    fd = open_dir(path, create=create, mode=mode)
    try:
        st = os.fstat(fd)
        if not trusted_owner(st.st_uid):
            raise UnsafePath(errno.EPERM, f"owned by uid {st.st_uid}, not by root or this user")
        if st.st_mode & 0o022:
            who = "others" if st.st_mode & 0o002 else "its group"
            raise UnsafePath(errno.EPERM, f"writable by {who} (mode "
                             f"{stat.S_IMODE(st.st_mode):04o})")
        return fd
    except BaseException:
        os.close(fd)
        raise
