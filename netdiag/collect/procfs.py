"""Files under /proc: counters, sockstat, sysctls, file-nr. Readers do I/O; parsers are pure."""

from __future__ import annotations

import time

from netdiag import readfile
from netdiag.context import Context
from netdiag.errors import ParseError, SourceMissing, Unreadable
from netdiag.facts import CounterFacts, FileNr, SockstatFacts, SysctlFacts


def read_text(ctx: Context, rel: str, limit: int = readfile.MAX_TEXT) -> str:
    """A whole file under the context's root: bounded, never blocking, only a regular file,
    inside the snapshot (netdiag.readfile). Raises SourceMissing."""
    return readfile.read_text(ctx.path(rel), ctx.display(rel),
                              None if ctx.live else ctx.root, limit)


def parse_counters(text: str, path: str) -> dict[str, dict[str, int]]:
    """Parse the header/value line pairs of /proc/net/netstat and /proc/net/snmp.

    Each protocol prints a line of names and then a line of values; fields are matched by
    name, never by position, because kernels add and remove them.
    """
    out: dict[str, dict[str, int]] = {}
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        header = lines[i]
        if not header.strip():
            i += 1
            continue
        proto, sep, names = header.partition(":")
        if not sep or not proto or " " in proto:
            raise ParseError(path, i + 1, f"expected 'Proto: names', got {header[:60]!r}")
        if i + 1 >= len(lines):
            raise ParseError(path, i + 1, f"{proto}: header line without a value line")
        vproto, vsep, values = lines[i + 1].partition(":")
        if vproto != proto:
            raise ParseError(path, i + 2, f"{proto}: expected its value line, got {vproto!r}")
        keys = names.split()
        vals = values.split()
        if len(keys) != len(vals):
            raise ParseError(
                path, i + 2, f"{proto}: {len(keys)} names but {len(vals)} values"
            )
        try:
            out.setdefault(proto, {}).update(zip(keys, (int(v) for v in vals)))
        except ValueError:
            raise ParseError(path, i + 2, f"{proto}: a value is not an integer") from None
        i += 2
    return out


def read_counters(ctx: Context) -> tuple[CounterFacts, list[tuple[str, str]]]:
    """TcpExt/IpExt from netstat, Ip/Tcp/Udp/... from snmp. Returns facts and per-file errors."""
    facts = CounterFacts(taken_at=time.time())
    errors: list[tuple[str, str]] = []
    for rel in ("proc/net/netstat", "proc/net/snmp", "proc/net/snmp6"):
        parser = parse_snmp6 if rel.endswith("6") else parse_counters
        try:
            parsed = parser(read_text(ctx, rel), ctx.display(rel))
        except (SourceMissing, ParseError) as exc:
            if rel.endswith("6") and isinstance(exc, SourceMissing):
                continue  # IPv6 disabled
            errors.append((rel, str(exc)))
            continue
        for proto, values in parsed.items():
            facts.counters.setdefault(proto, {}).update(values)
    return facts, errors


def parse_snmp6(text: str, path: str) -> dict[str, dict[str, int]]:
    """/proc/net/snmp6: one `Udp6RcvbufErrors  0` per line -> {"Udp6": {"RcvbufErrors": 0}}."""
    out: dict[str, dict[str, int]] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2:
            raise ParseError(path, lineno, f"expected 'Name value', got {line[:60]!r}")
        name, value = parts
        for proto in ("UdpLite6", "Udp6", "Icmp6", "Ip6", "Tcp6"):
            if name.startswith(proto):
                try:
                    out.setdefault(proto, {})[name[len(proto):]] = int(value)
                except ValueError:
                    raise ParseError(path, lineno, f"{name}: not an integer") from None
                break
    return out


def parse_sockstat(text: str, path: str) -> dict[str, dict[str, int]]:
    """`TCP: inuse 3 orphan 0 tw 5 alloc 4 mem 1` -> {"TCP": {"inuse": 3, ...}}."""
    out: dict[str, dict[str, int]] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        proto, sep, rest = line.partition(":")
        words = rest.split()
        if not sep or len(words) % 2:
            raise ParseError(path, lineno, f"expected 'PROTO: key value ...', got {line[:60]!r}")
        try:
            out[proto.strip()] = {words[j]: int(words[j + 1]) for j in range(0, len(words), 2)}
        except ValueError:
            raise ParseError(path, lineno, f"{proto}: a value is not an integer") from None
    return out


def read_sockstat(ctx: Context) -> tuple[SockstatFacts, list[tuple[str, str]]]:
    facts = SockstatFacts()
    errors: list[tuple[str, str]] = []
    for rel in ("proc/net/sockstat", "proc/net/sockstat6"):
        try:
            facts.values.update(parse_sockstat(read_text(ctx, rel), ctx.display(rel)))
        except (SourceMissing, ParseError) as exc:
            # sockstat6 is absent when IPv6 is disabled: that is a fact, not a failure.
            if rel.endswith("6") and isinstance(exc, SourceMissing):
                continue
            errors.append((rel, str(exc)))
    return facts, errors


# The sysctls the rules read (per network namespace unless noted in netdiag.sysctls).
def read_sysctls(ctx: Context, keys: list[str]) -> SysctlFacts:
    facts = SysctlFacts()
    for key in keys:
        rel = "proc/sys/" + key.replace(".", "/")
        try:
            # The kernel separates multi-value sysctls with tabs; normalise to spaces.
            facts.values[key] = " ".join(read_text(ctx, rel, readfile.MAX_SMALL).split())
        except Unreadable as exc:  # there, but not readable: say why, not "absent"
            facts.unreadable[key] = str(exc)
        except SourceMissing:
            facts.missing.append(key)
    return facts


def parse_file_nr(text: str, path: str) -> FileNr:
    parts = text.split()
    if len(parts) != 3:
        raise ParseError(path, 1, "expected 'allocated unused max'")
    try:
        return FileNr(allocated=int(parts[0]), maximum=int(parts[2]))
    except ValueError:
        raise ParseError(path, 1, "a value is not an integer") from None


def read_file_nr(ctx: Context) -> FileNr:
    rel = "proc/sys/fs/file-nr"
    return parse_file_nr(read_text(ctx, rel, readfile.MAX_SMALL), ctx.display(rel))


def read_kernel_release(ctx: Context) -> str:
    try:
        return read_text(ctx, "proc/sys/kernel/osrelease", readfile.MAX_SMALL).strip()
    except SourceMissing:
        return "unknown"
