"""Where collectors read from: the live host or a recorded snapshot (one root seam)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Context:
    """`root` is the filesystem root: /proc and /etc are read below it.

    A live context (root "/") may also use netlink and walk /proc/PID/fd. A snapshot context
    (any other root) reads only files: the socket table from a recorded sock_diag capture
    (`sockdiag.bin` in the root) or from proc/net/tcp{,6}.
    """

    root: Path = Path("/")
    netns: str = "default"
    # Global sysctls (tcp_mem, netdev_*) exist only in the initial network namespace's
    # /proc/sys; they are read there before entering another namespace, where they apply.
    host_sysctls: dict[str, str] = field(default_factory=dict)
    # True when they could not be read there (entering the initial namespace needs root).
    host_sysctls_denied: bool = False

    @property
    def live(self) -> bool:
        return self.root == Path("/")

    def path(self, rel: str) -> Path:
        return self.root / rel.lstrip("/")

    def display(self, rel: str) -> str:
        """A path as the user should read it: relative to the root for snapshots."""
        return "/" + rel.lstrip("/")
