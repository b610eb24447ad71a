"""--output FILE: write the report so that nobody else can redirect the write.

netdiag often runs as root into a directory other users may write to (a node_exporter textfile
directory is often group-writable). So:

- a regular file (or a new one) is replaced atomically: the report goes to a temporary file with
  an unpredictable name created with O_EXCL in the target's directory (mkstemp: no symlink or
  existing file is ever followed there), is fsynced, then renamed over the target. A replaced
  file keeps its owner and permission bits (never set-id bits); a new one gets 0666 & ~umask;
- a character device or a FIFO (/dev/null, /dev/stdout, a named pipe) is written directly, never
  replaced; a FIFO nobody reads, or one that stops reading, fails after WRITE_TIMEOUT seconds;
- a directory, a socket or a block device is refused;
- a symbolic link is followed only when it belongs to this user or to root (as the kernel's
  protected_symlinks does in sticky directories); another user's link is replaced, not followed.
"""

from __future__ import annotations

import errno
import io
import os
import select
import stat
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from netdiag.errors import UsageError

WRITE_TIMEOUT = 10.0


def write_report(path: Path | str, write: Callable[[TextIO], None]) -> None:
    """Render with write(fh) into path, by the rules above. Raises UsageError on failure."""
    path = Path(path)
    target, st = _resolve(path)
    if st is not None and (stat.S_ISCHR(st.st_mode) or stat.S_ISFIFO(st.st_mode)):
        _write_stream(target, write)
        return
    if st is not None and not stat.S_ISREG(st.st_mode):
        kind = ("a directory" if stat.S_ISDIR(st.st_mode) else
                "a socket" if stat.S_ISSOCK(st.st_mode) else
                "a block device" if stat.S_ISBLK(st.st_mode) else "not a regular file")
        raise UsageError(f"--output {_show(path)}: {kind}; refusing to write there")
    _replace(target, st, write)


def _resolve(path: Path) -> tuple[Path, os.stat_result | None]:
    """The path to write and what is there now (None: nothing)."""
    try:
        lst = os.lstat(path)
    except FileNotFoundError:
        return path, None
    except OSError as exc:
        raise UsageError(f"--output {_show(path)}: {exc.strerror}") from None
    if not stat.S_ISLNK(lst.st_mode):
        return path, lst
    if lst.st_uid not in (0, os.geteuid()):
        return path, None  # someone else's link: replace the link itself, never follow it
    try:
        real = Path(os.path.realpath(path))
        return real, os.stat(real)
    except FileNotFoundError:
        return path, None  # a dangling link of ours: replace it
    except OSError as exc:
        raise UsageError(f"--output {_show(path)}: {exc.strerror}") from None


def _replace(target: Path, st: os.stat_result | None, write: Callable[[TextIO], None]) -> None:
    directory = target.parent
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name[:100]}.", suffix=".tmp",
                                   dir=str(directory))
    except OSError as exc:
        raise UsageError(f"--output {_show(target)}: cannot create a file in "
                         f"{_show(directory)}: {exc.strerror}") from None
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
        os.replace(tmp, target)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise UsageError(f"cannot write {_show(target)}: {exc.strerror or exc}") from None
        raise
    try:  # make the rename durable
        dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def _write_stream(target: Path, write: Callable[[TextIO], None]) -> None:
    """A character device or FIFO: render to memory, then write with a deadline."""
    buf = io.StringIO()
    write(buf)
    data = buf.getvalue().encode("utf-8", "backslashreplace")
    try:
        fd = os.open(target, os.O_WRONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ENXIO:
            raise UsageError(f"--output {_show(target)}: a FIFO nobody is reading") from None
        raise UsageError(f"--output {_show(target)}: {exc.strerror}") from None
    try:
        deadline = time.monotonic() + WRITE_TIMEOUT
        view = memoryview(data)
        while view:
            left = deadline - time.monotonic()
            if left <= 0:
                raise UsageError(f"--output {_show(target)}: the reader stopped reading "
                                 f"(gave up after {WRITE_TIMEOUT:g} s)")
            try:
                n = os.write(fd, view)
                view = view[n:]
            except BlockingIOError:
                select.select([], [fd], [], min(left, 0.5))
    except OSError as exc:
        raise UsageError(f"cannot write {_show(target)}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)


def _show(path: Path) -> str:
    text = os.fsdecode(path).encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= 80 else text[:77] + "..."
