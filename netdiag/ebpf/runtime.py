"""Loading probes with bcc: requirements, per-hook degradation, compile, attach, detach.

bcc comes from the distribution (python3-bpfcc); when netdiag runs from a virtual
environment that does not see the system site-packages, the distribution's dist-packages
directory is appended to sys.path for that import only. netdiag never installs anything,
never mounts tracefs and never links kernel headers: it says what is missing and how to fix
it.
"""

from __future__ import annotations

import os
import platform
import signal
import sys
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from netdiag.ebpf import tracefs

SYSTEM_SITE = ("/usr/lib/python3/dist-packages", "/usr/lib64/python3/site-packages")
CAP_SYS_ADMIN, CAP_PERFMON, CAP_BPF = 21, 38, 39


@dataclass(frozen=True)
class Hook:
    """One tracepoint a probe attaches to, and the fields it reads there."""

    part: str  # what this hook measures, for `probe list` and degraded-run messages
    category: str
    event: str
    fn: str  # C function in the probe source, compiled only when the hook is usable
    fields: tuple[str, ...]  # required: the hook is skipped without them
    optional: tuple[str, ...] = ()  # read when the kernel has them (HAS_<event>_<field>)


@dataclass
class Requirement:
    ok: bool
    reason: str = ""
    fix: str = ""


@dataclass
class Plan:
    """What can run here: hooks enabled, hooks missing (with why), the C text."""

    enabled: list[Hook] = field(default_factory=list)
    missing: list[tuple[Hook, str]] = field(default_factory=list)
    formats: dict[str, str] = field(default_factory=dict)  # "cat:event" -> format text


def import_bcc():
    try:
        import bcc  # noqa: F401

        return sys.modules["bcc"]
    except ImportError:
        pass
    for path in SYSTEM_SITE:
        if os.path.isdir(os.path.join(path, "bcc")) and path not in sys.path:
            sys.path.append(path)  # appended: never shadows the environment's own packages
            try:
                import bcc  # noqa: F401

                return sys.modules["bcc"]
            except ImportError:
                sys.path.remove(path)
    return None


def _capabilities() -> int:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("CapEff:"):
                    return int(line.split()[1], 16)
    except OSError:
        pass
    return 0


def requirements() -> dict[str, Requirement]:
    """The host-wide conditions every probe needs, each with its fix."""
    caps = _capabilities()
    privileged = os.geteuid() == 0 or bool(caps & (1 << CAP_SYS_ADMIN)) or (
        bool(caps & (1 << CAP_BPF)) and bool(caps & (1 << CAP_PERFMON)))
    out = {"privilege": Requirement(privileged, "" if privileged else
                                    "not root, and no CAP_BPF + CAP_PERFMON (or "
                                    "CAP_SYS_ADMIN)", "run as root (sudo netdiag probe ...)")}
    has_bcc = import_bcc() is not None
    out["bcc"] = Requirement(has_bcc, "" if has_bcc else "the bcc Python module is not "
                             "installed", "apt-get install python3-bpfcc (Debian/Ubuntu) or "
                             "dnf install python3-bcc (Fedora/RHEL); the 'bcc' package on "
                             "PyPI is unrelated")
    release = platform.release()
    build = f"/lib/modules/{release}/build"
    headers = os.path.isdir(os.path.join(build, "include"))
    out["headers"] = Requirement(headers, "" if headers else f"no kernel headers at {build}",
                                 f"apt-get install linux-headers-{release} (or the headers "
                                 "package of the running kernel)")
    root = tracefs.tracefs_root()
    out["tracefs"] = Requirement(root is not None, "" if root else
                                 "tracefs is not mounted",
                                 "mount -t tracefs nodev /sys/kernel/tracing")
    return out


def plan_hooks(hooks: tuple[Hook, ...], root: str | None = None) -> Plan:
    plan = Plan()
    root = root or tracefs.tracefs_root()
    for hook in hooks:
        key = f"{hook.category}:{hook.event}"
        text = tracefs.read_format(root, hook.category, hook.event) if root else None
        if text is None:
            plan.missing.append((hook, f"tracepoint {key} does not exist on this kernel"))
            continue
        fields = tracefs.parse_fields(text)
        absent = [f for f in hook.fields if f not in fields]
        if absent:
            plan.missing.append((hook, f"{key} has no field {', '.join(absent)} here"))
            continue
        plan.enabled.append(hook)
        plan.formats[key] = text
    return plan


def c_source(name: str, plan: Plan, defines: dict[str, int] | None = None) -> str:
    """Defines (hooks, field offsets, extra struct offsets) + common header + the C file."""
    lines = [f"#define {k} {v}" for k, v in (defines or {}).items()]
    for hook in plan.enabled:
        lines.append(f"#define HOOK_{hook.fn} 1")
        fields = tracefs.parse_fields(plan.formats[f"{hook.category}:{hook.event}"])
        for fname in hook.fields + hook.optional:
            if fname in fields:
                lines.append(f"#define OFF_{hook.event}_{fname} {fields[fname].offset}")
                if fname in hook.optional:
                    lines.append(f"#define HAS_{hook.event}_{fname} 1")
    pkg = probe_sources()
    common = (pkg / "common.h").read_text()
    body = (pkg / f"{name}.c").read_text()
    return "\n".join(lines) + "\n" + common + "\n" + body


def probe_sources():
    """Where the BPF C sources are: the installed package netdiag.probes (the wheel maps the
    repository's probes/ there), or probes/ beside the package in a plain checkout."""
    try:
        pkg = resources.files("netdiag.probes")
        if (pkg / "common.h").is_file():
            return pkg
    except ModuleNotFoundError:
        pass
    return Path(__file__).resolve().parents[2] / "probes"


class Loaded:
    """A compiled and attached probe; `close()` detaches and unloads everything."""

    def __init__(self, name: str, plan: Plan, defines: dict[str, int] | None = None) -> None:
        bcc = import_bcc()
        self.name = name
        self.plan = plan
        started = time.monotonic()
        self.bpf = bcc.BPF(text=c_source(name, plan, defines), cflags=["-Wno-macro-redefined"])
        try:
            for hook in plan.enabled:
                self.bpf.attach_tracepoint(tp=f"{hook.category}:{hook.event}", fn_name=hook.fn)
        except Exception:
            self.close()
            raise
        self.startup_seconds = round(time.monotonic() - started, 3)

    def close(self) -> None:
        if self.bpf is not None:
            self.bpf.cleanup()
            self.bpf = None


def wait(seconds: float, interval: float | None, tick, poll=None) -> float:
    """Sleep `seconds` (calling tick(elapsed) every `interval`); SIGINT/SIGTERM end it early.

    Returns the seconds actually waited.
    """
    stop = {"now": False}

    def handler(signum, frame):  # noqa: ARG001
        stop["now"] = True

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    start = time.monotonic()
    next_tick = start + interval if interval else None
    try:
        while not stop["now"]:
            now = time.monotonic()
            if now - start >= seconds:
                break
            if next_tick is not None and now >= next_tick:
                tick(now - start)
                next_tick += interval
            if poll is not None:
                poll()
            time.sleep(max(0.0, min(0.1, seconds - (now - start))))
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    return round(time.monotonic() - start, 3)
