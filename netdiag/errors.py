"""The errors netdiag raises on purpose. Anything else reaching the CLI is a bug."""

from __future__ import annotations


class NetdiagError(Exception):
    """netdiag could not judge: one line for the user, exit code 3."""


class UsageError(NetdiagError):
    """Bad arguments: unknown namespace, pid, format, negative interval."""


class SourceMissing(NetdiagError):
    """A file or interface the collector needs does not exist on this kernel."""


class ParseError(NetdiagError):
    """A source could not be parsed; names the file and the line."""

    def __init__(self, path: str, lineno: int, message: str) -> None:
        self.path = path
        self.lineno = lineno
        super().__init__(f"{path}:{lineno}: {message}")
