"""The one way netdiag reads a file it did not write: bounded in time and memory, whatever
is at the path.

Every file netdiag reads (/proc, /sys, /etc/sysctl.d, a recorded snapshot under --root) goes
through here:

- opened without blocking (O_NONBLOCK | O_NOCTTY): a FIFO or a terminal at the path can
  never hang the run;
- only regular files are read (procfs and sysfs files are regular): a FIFO, a socket, a
  device (a link to /dev/zero) or a directory is refused with a clear error, checked before
  opening (lstat) and again on the open file (fstat), so a device node is never opened;
- under a snapshot root, symbolic links are followed only while they stay inside the root;
- what one file may hold is capped: a whole-file read stops past its limit with an error
  naming the file, and a streamed read keeps at most one block and one line in memory;
- bytes become text with escapes (b"\\xff" -> "\\\\xff"), never an exception: names and
  values from the system are data.

A missing file raises netdiag.errors.SourceMissing; one that exists but is refused raises its
subclass Unreadable (the collectors turn either into an `errors` entry).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

from netdiag.errors import SourceMissing, Unreadable

# What one whole-file read may hold. The largest files netdiag reads whole are
# /proc/net/netstat (a few KiB), /proc/softirqs and softnet_stat (a row per CPU: ~150 KiB at
# 1,024 CPUs) and /proc/net/dev (a line per interface: ~20 MiB at 100,000 interfaces).
MAX_TEXT = 16 << 20
# A sysctl value is at most a page; a sysctl.d file is a few KiB.
MAX_SMALL = 1 << 20
# Streamed reads: the longest line accepted, the block read at a time, and the most read in
# all (/proc/net/tcp is ~150 bytes a socket: 10 million sockets stay far below).
MAX_LINE = 64 << 10
BLOCK = 1 << 20
MAX_STREAM = 4 << 30

_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


def text(value: bytes | str) -> str:
    """Text from the system as a printable, encodable str: undecodable bytes (or the
    surrogates os.listdir and psutil use for them) become \\xNN escapes."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
            return value
        except UnicodeEncodeError:
            value = value.encode("utf-8", "surrogateescape")
    return value.decode("utf-8", "backslashreplace")


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def absent(display: str, root: Path | str | None) -> str:
    """Why a file is missing, in the terms of where netdiag read: a snapshot directory is not
    a kernel."""
    if root is not None and os.fspath(root) != "/":
        return f"{display} is not in the snapshot {os.fspath(root)}"
    return f"{display} does not exist on this kernel"


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def open_file(path: Path | str, display: str, root: Path | str | None = None) -> int:
    """A read-only descriptor of the regular file at path. With `root` (a snapshot), the
    path and every link on it must stay inside root. Raises SourceMissing (absent) or
    Unreadable (refused)."""
    path = os.fspath(path)
    if root is not None and os.fspath(root) != "/":
        real_root = os.path.realpath(root)
        real = os.path.realpath(path)
        if not _inside(real, real_root):
            # Missing files are reported as missing; links out of the snapshot as refused.
            if not os.path.lexists(path):
                raise SourceMissing(absent(display, root))
            raise Unreadable(f"{display}: a link that leaves the snapshot; not read")
        path = real
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise SourceMissing(absent(display, root)) from None
    except PermissionError:
        raise Unreadable(f"{display}: permission denied") from None
    except OSError as exc:
        raise Unreadable(f"{display}: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise Unreadable(f"{display}: {_kind(st.st_mode)}, not a regular file; not read")
    try:
        fd = os.open(path, _OPEN_FLAGS | (os.O_NOFOLLOW if root is not None else 0))
    except FileNotFoundError:
        raise SourceMissing(absent(display, root)) from None
    except PermissionError:
        raise Unreadable(f"{display}: permission denied") from None
    except OSError as exc:
        raise Unreadable(f"{display}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):  # replaced between the checks
            raise Unreadable(f"{display}: {_kind(st.st_mode)}, not a regular file; not read")
    except BaseException:
        os.close(fd)
        raise
    return fd


def _read_error(display: str, exc: OSError) -> Unreadable:
    return Unreadable(f"{display}: {exc.strerror or exc}")


def read_bytes(path: Path | str, display: str, root: Path | str | None = None,
               limit: int = MAX_TEXT) -> bytes:
    """The whole file, at most `limit` bytes (Unreadable past it)."""
    fd = open_file(path, display, root)
    try:
        chunks = []
        total = 0
        while True:
            try:
                chunk = os.read(fd, min(BLOCK, limit + 1 - total))
            except BlockingIOError:  # not for regular files; never wait for one
                raise Unreadable(f"{display}: would block; not read") from None
            except OSError as exc:
                raise _read_error(display, exc) from None
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:
                raise Unreadable(f"{display}: larger than {_size(limit)}; not read "
                                    "(not what the kernel writes there)")
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_text(path: Path | str, display: str, root: Path | str | None = None,
              limit: int = MAX_TEXT) -> str:
    """The whole file as text (undecodable bytes escaped), at most `limit` bytes."""
    return read_bytes(path, display, root, limit).decode("utf-8", "backslashreplace")


def iter_lines(path: Path | str, display: str, root: Path | str | None = None,
               max_line: int = MAX_LINE, limit: int = MAX_STREAM) -> Iterator[str]:
    """The file's lines (without their newline), streamed: at most one block and one line
    in memory. Unreadable for a line longer than max_line or a file past limit. The file
    is opened (and refused) at the call, before the first line is asked for."""
    fd = open_file(path, display, root)
    return _lines(fd, display, max_line, limit)


def _lines(fd: int, display: str, max_line: int, limit: int) -> Iterator[str]:
    try:
        carry = b""
        total = 0
        while True:
            try:
                block = os.read(fd, BLOCK)
            except OSError as exc:
                raise _read_error(display, exc) from None
            if not block:
                break
            total += len(block)
            if total > limit:
                raise Unreadable(f"{display}: larger than {_size(limit)}; stopped reading")
            data = carry + block
            cut = data.rfind(b"\n")
            if cut < 0:
                carry = data
            else:  # lines within a block are bounded by the block; only the tail grows
                carry = data[cut + 1:]
                yield from data[:cut].decode("utf-8", "backslashreplace").split("\n")
            if len(carry) > max_line:
                raise Unreadable(f"{display}: a line longer than {_size(max_line)}; "
                                    "stopped reading")
        if carry:
            yield carry.decode("utf-8", "backslashreplace")
    finally:
        os.close(fd)


def list_dir(path: Path | str, display: str, root: Path | str | None = None,
             limit: int = 10_000) -> list[str]:
    """Names in a directory (sorted), at most `limit`; a directory that leaves the snapshot
    root, or is not a directory, is refused. Names are kept as the OS gives them (so they
    still open); show them through text()."""
    path = os.fspath(path)
    if root is not None and os.fspath(root) != "/":
        real = os.path.realpath(path)
        if not _inside(real, os.path.realpath(root)):
            raise Unreadable(f"{display}: a link that leaves the snapshot; not read")
        path = real
    names: list[str] = []
    try:
        with os.scandir(path) as it:
            for entry in it:
                names.append(entry.name)
                if len(names) > limit:
                    raise Unreadable(f"{display}: more than {limit} entries; not read")
    except FileNotFoundError:
        raise SourceMissing(absent(display, root)) from None
    except NotADirectoryError:
        raise Unreadable(f"{display}: not a directory") from None
    except OSError as exc:
        raise _read_error(display, exc) from None
    return sorted(names)


def _size(n: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            return f"{n / (1 << shift):g} {unit}"
    return f"{n} bytes"
