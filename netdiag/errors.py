"""The errors netdiag raises on purpose. Anything else reaching the CLI is a bug."""

from __future__ import annotations

# Standard descriptors (0-2) that were closed when netdiag started and are held on /dev/null
# (entry._standard_fds): `--output /dev/stdout` must not write the report there as if it
# were a reader's.
CLOSED_AT_START: set[int] = set()


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived outside a probe window (which handles its own); its message
    is "interrupted" or "terminated" (the contract's line). Not an Exception: the guards
    around collectors and rules must not swallow it."""


class NetdiagError(Exception):
    """netdiag could not judge: one line for the user, exit code 3."""


class UsageError(NetdiagError):
    """Bad arguments: unknown namespace, pid, format, negative interval."""


class SourceMissing(NetdiagError):
    """A file or interface the collector needs does not exist on this kernel."""


class Unreadable(SourceMissing):
    """A file exists but was not read: not a regular file, a link out of the snapshot, larger
    than netdiag accepts, or permission denied (netdiag.readfile says which)."""


class ParseError(NetdiagError):
    """A source could not be parsed; names the file and the line."""

    def __init__(self, path: str, lineno: int, message: str) -> None:
        self.path = path
        self.lineno = lineno
        super().__init__(f"{path}:{lineno}: {message}")


class OutputClosedError(NetdiagError):
    """The report's reader went away (a closed pipe: netdiag check | head -1)."""
