"""Option values checked before any work: finite numbers in range, sane paths, listen
addresses. Every failure is a UsageError (one line, exit 3)."""

from __future__ import annotations

import math
import os
from pathlib import Path

from netdiag.errors import UsageError
from netdiag.render._safe import quoted

# Longest path accepted on the command line (PATH_MAX on Linux).
MAX_PATH = 4096


def number(option: str, value: float | None, lo: float, hi: float) -> float | None:
    """A finite value in [lo, hi] (None passes: the option was not given)."""
    if value is None:
        return None
    if not math.isfinite(value):
        raise UsageError(f"{option} {value}: must be a finite number")
    if not lo <= value <= hi:
        raise UsageError(f"{option} {value:g}: must be between {lo:g} and {hi:g}")
    return value


def path_text(option: str, value: Path | str | None) -> Path | None:
    if value is None:
        return None
    text = str(value)
    if not text:
        raise UsageError(f"{option}: empty path")
    if len(text) > MAX_PATH or any(len(part) > 255 for part in text.split("/")):
        raise UsageError(f"{option}: path too long")
    if "\0" in text:
        raise UsageError(f"{option}: path contains a NUL byte")
    return Path(text)


def text(option: str, value: str | None, longest: int) -> str | None:
    """A word on the command line (a name, an id): at most `longest` characters."""
    if value is None:
        return None
    if len(value) > longest:
        raise UsageError(f"{option}: too long ({len(value)} characters; at most {longest})")
    if "\0" in value:
        raise UsageError(f"{option}: contains a NUL byte")
    if any("\udc80" <= c <= "\udcff" for c in value):
        from netdiag.render._safe import clean

        raise UsageError(f"{option}: {clean(value)[:80]} is not UTF-8 text")
    return value


def snapshot_root(value: Path | None) -> Path | None:
    """--root: an existing directory (a recorded snapshot)."""
    path = path_text("--root", value)
    if path is None:
        return None
    try:
        if not path.is_dir():
            raise UsageError(f"--root {_show(path)}: not a directory")
        return path.resolve()
    except OSError as exc:
        raise UsageError(f"--root {_show(path)}: {exc.strerror}") from None


def listen_address(text: str) -> tuple[str, int]:
    """ADDR:PORT, [V6ADDR]:PORT -> (host, port) with 1 <= port <= 65535."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise UsageError(f"--listen {quoted(text)}: expected ADDR:PORT, e.g. 127.0.0.1:9877 or "
                         "[::1]:9877")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise UsageError(f"--listen {quoted(text)}: port must be between 1 and 65535")
    if host.startswith("["):
        if not host.endswith("]") or len(host) < 3:
            raise UsageError(f"--listen {quoted(text)}: unbalanced brackets")
        host = host[1:-1]
    elif ":" in host:
        raise UsageError(f"--listen {quoted(text)}: write IPv6 addresses in brackets, "
                         "e.g. [::1]:9877")
    return host, port


def _show(path: Path) -> str:
    text = os.fsdecode(path)
    return text if len(text) <= 80 else text[:77] + "..."


def peer(text: str | None) -> dict:
    """--peer IP, IP:PORT or [V6]:PORT -> {"peer": address, "peer_port": port or None}."""
    import ipaddress

    if text is None:
        return {"peer": None, "peer_port": None}
    raw = text.strip()
    port_text = None
    if raw.startswith("["):
        addr, sep, rest = raw[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise UsageError(f"--peer {quoted(text)}: expected IP, IP:PORT or [IPV6]:PORT")
        port_text = rest[1:] or None
    elif raw.count(":") == 1:
        addr, _, port_text = raw.partition(":")
    else:
        addr = raw
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        raise UsageError(f"--peer {quoted(text)}: not an IP address") from None
    port = None
    if port_text is not None:
        if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            raise UsageError(f"--peer {quoted(text)}: the port must be between 1 and 65535")
        port = int(port_text)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return {"peer": str(ip), "peer_port": port}
