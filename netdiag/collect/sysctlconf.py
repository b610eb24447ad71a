"""net.* settings written in the boot-time sysctl configuration (sysctl.d(5) search path)."""

from __future__ import annotations

from netdiag import readfile
from netdiag.context import Context
from netdiag.errors import SourceMissing, Unreadable
from netdiag.facts import SysctlConfFacts, SysctlSetting

# sysctl.d(5): later directories are overridden by earlier ones; all are read here because a
# stale setting anywhere is worth reporting.
CONF_DIRS = ("etc/sysctl.d", "run/sysctl.d", "usr/local/lib/sysctl.d", "usr/lib/sysctl.d",
             "lib/sysctl.d")
# Files read per directory at most (a real one holds tens).
MAX_FILES = 1000


def parse_sysctl_conf(text: str, display: str) -> list[SysctlSetting]:
    out: list[SysctlSetting] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        key, sep, value = line.partition("=")
        if not sep:
            continue
        key = key.strip().lstrip("-").replace("/", ".")
        if key.startswith("net."):
            out.append(SysctlSetting(display, lineno, key, value.strip()))
    return out


def read_sysctl_conf(ctx: Context) -> SysctlConfFacts:
    """Every file of the search path, each read through netdiag.readfile (regular files
    only, capped, inside the snapshot); one that cannot be read is listed, not fatal."""
    facts = SysctlConfFacts()
    snapshot = None if ctx.live else ctx.root
    files = ["etc/sysctl.conf"]
    for rel in CONF_DIRS:
        try:
            names = readfile.list_dir(ctx.path(rel), ctx.display(rel), snapshot,
                                      limit=MAX_FILES)
        except Unreadable as exc:
            facts.unreadable.append(str(exc))
            continue
        except SourceMissing:
            continue
        files.extend(f"{rel}/{name}" for name in names if name.endswith(".conf"))
    for rel in files:
        display = readfile.text(ctx.display(rel))
        try:
            text = readfile.read_text(ctx.path(rel), display, snapshot, readfile.MAX_SMALL)
        except Unreadable as exc:
            facts.unreadable.append(str(exc))
            continue
        except SourceMissing:
            continue
        facts.files_read.append(display)
        facts.settings.extend(parse_sysctl_conf(text, display))
    return facts
