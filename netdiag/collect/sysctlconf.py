"""net.* settings written in the boot-time sysctl configuration (sysctl.d(5) search path)."""

from __future__ import annotations

from netdiag.context import Context
from netdiag.facts import SysctlConfFacts, SysctlSetting

# sysctl.d(5): later directories are overridden by earlier ones; all are read here because a
# stale setting anywhere is worth reporting.
CONF_DIRS = ("etc/sysctl.d", "run/sysctl.d", "usr/local/lib/sysctl.d", "usr/lib/sysctl.d",
             "lib/sysctl.d")


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
    facts = SysctlConfFacts()
    files = [ctx.path("etc/sysctl.conf")]
    for rel in CONF_DIRS:
        d = ctx.path(rel)
        if d.is_dir():
            files.extend(sorted(p for p in d.iterdir() if p.name.endswith(".conf")))
    for path in files:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        display = "/" + str(path.relative_to(ctx.root))
        facts.files_read.append(display)
        facts.settings.extend(parse_sysctl_conf(text, display))
    return facts
