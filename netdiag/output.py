"""--output FILE: write the report so that nobody else can redirect the write.

netdiag often runs as root into a directory other users may write to (a node_exporter textfile
directory is often group-writable). So:

- the target's directory is reached by netdiag.safepath: one component at a time, never
  through another user's symbolic link, and held open: every step below is relative to that
  directory, so a component swapped meanwhile changes nothing;
- a regular file (or a new one) is replaced atomically: the report goes to a temporary file with
  an unpredictable name created with O_EXCL | O_NOFOLLOW in that directory (no symlink or
  existing file is ever followed there), is fsynced, then renamed over the target. A replaced
  file keeps its owner and permission bits (never set-id bits); a new one gets 0666 & ~umask;
- a character device or a FIFO (/dev/null, /dev/stdout, a named pipe) is written directly, never
  replaced: opened with O_NOFOLLOW and checked to be the same device or FIFO that was there
  when the report began (else refused); a FIFO nobody reads, or one that stops reading, fails
  after WRITE_TIMEOUT seconds; one of this process's own descriptors (/dev/stdout, /dev/fd/N,
  links into /proc/self/fd) is written where it leads;
- a directory, a socket or a block device is refused;
- a symbolic link at the target is followed only when it belongs to this user or to root;
  another user's link is replaced, not followed.
"""

from __future__ import annotations

import errno
import io
import os
import secrets
import select
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from netdiag.errors import CLOSED_AT_START, UsageError
from netdiag.safepath import MAX_LINKS, open_dir, show, trusted_owner

WRITE_TIMEOUT = 10.0
Write = Callable[[TextIO], None]


def write_report(path: Path | str, write: Write) -> None:
    """Render with write(fh) into path, by the rules above. Raises UsageError on failure."""
    path = Path(path)
    name = path.name
    if name in ("", ".", ".."):
        raise UsageError(f"--output {show(path)}: a directory; refusing to write there")
    dfd = _open_parent(path, path.parent)
    try:
        _write_at(dfd, name, path, write, 0)
    finally:
        os.close(dfd)


def _open_parent(shown: Path, parent: Path | str, at: int | None = None) -> int:
    try:
        return open_dir(parent, at=at)
    except OSError as exc:
        raise UsageError(f"--output {show(shown)}: {exc.strerror or exc}") from None


def _lstat(dfd: int, name: str, shown: Path) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dfd, follow_symlinks=False)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise UsageError(f"--output {show(shown)}: {exc.strerror}") from None


def _write_at(dfd: int, name: str, shown: Path, write: Write, links: int) -> None:
    st = _lstat(dfd, name, shown)
    if st is not None and stat.S_ISLNK(st.st_mode):
        if not trusted_owner(st.st_uid):
            _replace(dfd, name, None, shown, write)  # someone else's link: replaced, not followed
            return
        if _in_proc(dfd):
            _write_own_descriptor(dfd, name, shown, write)
            return
        if links >= MAX_LINKS:
            raise UsageError(f"--output {show(shown)}: {os.strerror(errno.ELOOP)}")
        target = os.readlink(name, dir_fd=dfd)
        tname = os.path.basename(target.rstrip("/")) if target.rstrip("/") else ""
        if tname in ("", ".", "..") or target.endswith("/"):
            raise UsageError(f"--output {show(shown)}: a directory; refusing to write there")
        try:
            tdir = open_dir(os.path.dirname(target) or ".", at=dfd)
        except FileNotFoundError:
            _replace(dfd, name, None, shown, write)  # a dangling link of ours: replaced
            return
        except OSError as exc:
            raise UsageError(f"--output {show(shown)}: {exc.strerror or exc}") from None
        try:
            if _lstat(tdir, tname, shown) is None:
                _replace(dfd, name, None, shown, write)
            else:
                _write_at(tdir, tname, shown, write, links + 1)
        finally:
            os.close(tdir)
        return
    if st is not None and (stat.S_ISCHR(st.st_mode) or stat.S_ISFIFO(st.st_mode)):
        _write_stream(dfd, name, st, shown, write)
        return
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise UsageError(f"--output {show(shown)}: {_kind(st)}; refusing to write there")
    _replace(dfd, name, st, shown, write)


def _kind(st: os.stat_result) -> str:
    return ("a directory" if stat.S_ISDIR(st.st_mode) else
            "a socket" if stat.S_ISSOCK(st.st_mode) else
            "a block device" if stat.S_ISBLK(st.st_mode) else "not a regular file")


def _in_proc(dfd: int) -> bool:
    """A directory of procfs (/proc/self/fd): its links are this process's descriptors."""
    try:
        return os.fstat(dfd).st_dev == os.stat("/proc").st_dev
    except OSError:
        return False


def _own_fd_dir(dfd: int) -> bool:
    """The directory is this process's /proc/PID/fd (what /dev/stdout leads to)."""
    try:
        own = os.stat(f"/proc/{os.getpid()}/fd")
        st = os.fstat(dfd)
        return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)
    except OSError:
        return False


def _render(write: Write) -> bytes:
    buf = io.StringIO()
    write(buf)
    return buf.getvalue().encode("utf-8", "backslashreplace")


def _open_stream(dfd: int, name: str, shown: Path, follow: bool) -> int:
    flags = os.O_WRONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    try:
        return os.open(name, flags if follow else flags | os.O_NOFOLLOW, dir_fd=dfd)
    except OSError as exc:
        if exc.errno == errno.ENXIO:
            raise UsageError(f"--output {show(shown)}: a FIFO nobody is reading") from None
        if exc.errno == errno.ELOOP:
            raise UsageError(f"--output {show(shown)}: became a symbolic link while the "
                             "report was made; refusing to write there") from None
        raise UsageError(f"--output {show(shown)}: {exc.strerror}") from None


def _write_stream(dfd: int, name: str, st: os.stat_result, shown: Path, write: Write) -> None:
    """A character device or FIFO: render to memory, open it without following a link, check
    it is still what was there, then write with a deadline."""
    data = _render(write)
    fd = _open_stream(dfd, name, shown, follow=False)
    try:
        now = os.fstat(fd)
        if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino) or not (
                stat.S_ISCHR(now.st_mode) or stat.S_ISFIFO(now.st_mode)):
            raise UsageError(f"--output {show(shown)}: was replaced while the report was "
                             "made; refusing to write there")
        _pump(fd, data, shown)
    finally:
        os.close(fd)


def _write_own_descriptor(dfd: int, name: str, shown: Path, write: Write) -> None:
    """/dev/stdout, /dev/fd/N: where one of this process's descriptors leads (a pipe, a
    terminal, a file the shell opened)."""
    if name.isdigit() and int(name) in CLOSED_AT_START and _own_fd_dir(dfd):
        which = {1: "standard output", 2: "standard error"}.get(int(name), f"descriptor {name}")
        raise UsageError(f"--output {show(shown)}: {which} is closed; nothing was written")
    data = _render(write)
    fd = _open_stream(dfd, name, shown, follow=True)
    try:
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode):
            _pump(fd, data, shown)
            os.ftruncate(fd, len(data))
        elif stat.S_ISCHR(st.st_mode) or stat.S_ISFIFO(st.st_mode):
            _pump(fd, data, shown)
        else:
            raise UsageError(f"--output {show(shown)}: {_kind(st)}; refusing to write there")
    except OSError as exc:
        raise UsageError(f"cannot write {show(shown)}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)


def _pump(fd: int, data: bytes, shown: Path) -> None:
    deadline = time.monotonic() + WRITE_TIMEOUT
    view = memoryview(data)
    try:
        while view:
            left = deadline - time.monotonic()
            if left <= 0:
                raise UsageError(f"--output {show(shown)}: the reader stopped reading "
                                 f"(gave up after {WRITE_TIMEOUT:g} s)")
            try:
                n = os.write(fd, view)
                view = view[n:]
            except BlockingIOError:
                select.select([], [fd], [], min(left, 0.5))
    except OSError as exc:
        raise UsageError(f"cannot write {show(shown)}: {exc.strerror or exc}") from None


def _temporary(dfd: int, name: str, shown: Path) -> tuple[int, str]:
    """A new file with an unpredictable name, O_EXCL | O_NOFOLLOW in the held directory."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    for _ in range(100):
        tmp = f".{name[:100]}.{secrets.token_hex(8)}.tmp"
        try:
            return os.open(tmp, flags, 0o600, dir_fd=dfd), tmp
        except FileExistsError:
            continue
        except OSError as exc:
            raise UsageError(f"--output {show(shown)}: cannot create a file in its "
                             f"directory: {exc.strerror}") from None
    raise UsageError(f"--output {show(shown)}: cannot create a temporary file in its "
                     "directory (100 names taken)")


def _replace(dfd: int, name: str, st: os.stat_result | None, shown: Path,
             write: Write) -> None:
    fd, tmp = _temporary(dfd, name, shown)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace") as fh:
            write(fh)
            fh.flush()
            if st is not None:
                os.fchmod(fh.fileno(), stat.S_IMODE(st.st_mode) & 0o777)
                if os.geteuid() == 0 and (st.st_uid, st.st_gid) != (0, 0):
                    os.fchown(fh.fileno(), st.st_uid, st.st_gid)
            else:
                umask = os.umask(0o022)
                os.umask(umask)
                os.fchmod(fh.fileno(), 0o666 & ~umask)
            os.fsync(fh.fileno())
        os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
    except BaseException as exc:
        try:
            os.unlink(tmp, dir_fd=dfd)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise UsageError(f"cannot write {show(shown)}: {exc.strerror or exc}") from None
        raise
    try:  # make the rename durable
        os.fsync(dfd)
    except OSError:
        pass
