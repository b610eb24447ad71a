"""Loading probes with bcc: requirements, per-hook degradation, compile, attach, detach.

bcc comes from the distribution (python3-bpfcc); when netdiag runs from a virtual
environment that does not see the system site-packages, the distribution's dist-packages
directory is appended to sys.path for that import only. netdiag never installs anything,
never mounts tracefs and never links kernel headers: it says what is missing and how to fix
it.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from netdiag.ebpf import tracefs, typed

SYSTEM_SITE = ("/usr/lib/python3/dist-packages", "/usr/lib64/python3/site-packages")
CAP_SYS_ADMIN, CAP_PERFMON, CAP_BPF = 21, 38, 39
# Testing knob: cap every probe map at N entries, to exercise the loss accounting.
MAP_ENTRIES_ENV = "NETDIAG_PROBE_MAP_ENTRIES"
# Testing knob: =1 loads every hook as its tracepoint, the way kernels that refuse typed raw
# tracepoints (netdiag.ebpf.typed) run the probes, so that both variants are checked here.
UNTYPED_ENV = "NETDIAG_PROBE_UNTYPED"


def typed_allowed() -> bool:
    return os.environ.get(UNTYPED_ENV) != "1"


@dataclass(frozen=True)
class Hook:
    """One tracepoint a probe attaches to, and what it needs there."""

    part: str  # what this hook measures, for `probe list` and degraded-run messages
    category: str
    event: str
    fn: str  # C function in the probe source, compiled only when the hook is usable
    fields: tuple[str, ...] = ()  # required format fields: the hook is skipped without them
    optional: tuple[str, ...] = ()  # read when the kernel has them (HAS_<event>_<field>)
    raw: bool = False  # raw tracepoint: the program gets the TP_PROTO arguments, no fields
    btf: tuple[str, ...] = ()  # struct offset groups it needs (netdiag.ebpf.btf.GROUPS)
    # How the hook knows the network namespace of an event: "socket" (the event's socket),
    # "packet" (the packet's socket or device), "inherits" (it only continues what a
    # filtered hook started), "none" (host-wide: softirqs and the scheduler have none).
    netns: str = "socket"
    # Also written as a typed raw tracepoint (tp_btf, netdiag.ebpf.typed): the C file has a
    # variant under TYPED_<fn> reading the tracepoint's arguments, which needs these struct
    # offset groups too; used where the kernel allows it, the tracepoint otherwise.
    typed: tuple[str, ...] | None = None

    @property
    def name(self) -> str:
        return f"{'raw:' if self.raw else ''}{self.category}:{self.event}"


@dataclass
class Requirement:
    ok: bool
    reason: str = ""
    fix: str = ""


@dataclass
class Plan:
    """What can run here: hooks enabled, hooks missing (with why), format texts."""

    enabled: list[Hook] = field(default_factory=list)
    missing: list[tuple[Hook, str]] = field(default_factory=list)
    formats: dict[str, str] = field(default_factory=dict)  # "cat:event" -> format text
    typed: list[str] = field(default_factory=list)  # fns to load as typed raw tracepoints


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


def netns_exec_name() -> str | None:
    """The name of the namespace when this process runs under `ip netns exec NAME`, which
    mounts a fresh sysfs on /sys with NAME as its source (iproute2 netns_switch()), hiding
    tracefs; None otherwise."""
    try:
        with open("/proc/self/mountinfo") as fh:
            mounts = [line.split() for line in fh]
        names = set(os.listdir("/run/netns"))
    except OSError:
        return None
    for fields in mounts:
        if len(fields) < 10 or fields[4] != "/sys" or "-" not in fields:
            continue
        tail = fields[fields.index("-") + 1:]
        if len(tail) >= 2 and tail[0] == "sysfs" and tail[1] in names:
            return tail[1]
    return None


def tracefs_requirement() -> Requirement:
    if tracefs.tracefs_root() is not None:
        return Requirement(True)
    name = netns_exec_name()
    if name is not None:
        return Requirement(False, f"tracefs is not visible: this runs under `ip netns exec "
                                  f"{name}`, which mounts a fresh /sys for the namespace and "
                                  "hides /sys/kernel/tracing",
                           f"run from the host with --netns {name} (netdiag probe NAME "
                           f"--netns {name}); the probes count that namespace's events only")
    mounted = _tracefs_mounted()
    if mounted is not None:  # there, but its directory may not be read (mode 0700: root)
        return Requirement(False, f"tracefs is mounted at {mounted} but cannot be read by "
                                  "this user", "run as root (sudo netdiag probe ...)")
    return Requirement(False, "tracefs is not mounted",
                       "mount -t tracefs nodev /sys/kernel/tracing")


def _tracefs_mounted() -> str | None:
    """Where tracefs is mounted (from /proc/self/mounts), or None."""
    try:
        with open("/proc/self/mounts") as fh:
            for line in fh:
                fields = line.split()
                if len(fields) >= 3 and fields[2] == "tracefs" and \
                        fields[1] in tracefs.MOUNTS:
                    return fields[1]
    except OSError:
        pass
    return None


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
    out["tracefs"] = tracefs_requirement()
    return out


def plan_hooks(hooks: tuple[Hook, ...], root: str | None = None, layout=None) -> Plan:
    """Which hooks can run: their tracepoint exists, has the fields they read, and the kernel's
    BTF has the struct offsets they need (`layout`: netdiag.ebpf.btf.Layout; None skips that
    check, for `probe list` without reading BTF)."""
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
        if absent and not hook.raw:
            plan.missing.append((hook, f"{key} has no field {', '.join(absent)} here"))
            continue
        if layout is not None:
            why = next((layout.why(g) for g in hook.btf if layout.why(g)), None)
            if why:
                plan.missing.append((hook, why))
                continue
        plan.enabled.append(hook)
        plan.formats[key] = text
        if hook.typed is not None and layout is not None and typed_allowed() and \
                not any(layout.why(g) for g in hook.typed) and \
                typed.unavailable(hook.event) is None:
            plan.typed.append(hook.fn)
    return plan


def map_defines(maps) -> dict[str, int]:
    """MAX_<MAP> (capacity, capped by NETDIAG_PROBE_MAP_ENTRIES) and LOSS_<MAP> (its slot in
    the `lost` array) for each declared map."""
    cap = os.environ.get(MAP_ENTRIES_ENV)
    limit = int(cap) if cap and cap.isdigit() and int(cap) > 0 else None
    out: dict[str, int] = {}
    for i, m in enumerate(maps):
        out[f"MAX_{m.name.upper()}"] = min(m.capacity, limit) if limit else m.capacity
        out[f"LOSS_{m.name.upper()}"] = i
    return out


def c_source(name: str, plan: Plan, defines: dict[str, int] | None = None) -> str:
    """Defines (hooks, field offsets, struct offsets, filters) + common header + the C file."""
    lines = [f"#define {k} {v:#x}ULL" if v >= 1 << 31 else f"#define {k} {v}"
             for k, v in (defines or {}).items()]
    for hook in plan.enabled:
        lines.append(f"#define HOOK_{hook.fn} 1")
        if hook.fn in plan.typed:
            lines.append(f"#define TYPED_{hook.fn} 1")
        if hook.raw:
            continue
        fields = tracefs.parse_fields(plan.formats[f"{hook.category}:{hook.event}"])
        for fname in hook.fields + hook.optional:
            if fname in fields:
                lines.append(f"#define OFF_{hook.event}_{fname} {fields[fname].offset}")
                lines.append(f"#define SIZE_{hook.event}_{fname} {fields[fname].size}")
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


class _TypedRefused(Exception):
    def __init__(self, fn: str, why: str) -> None:
        super().__init__(why)
        self.fn, self.why = fn, why


class Loaded:
    """A compiled and attached probe. detach() stops counting; close() unloads everything."""

    def __init__(self, name: str, plan: Plan, defines: dict[str, int] | None = None,
                 fill=None, source: str | None = None) -> None:
        """source: C text to compile instead of the probe's own (bench/probes.py measures
        the hooks alone with programs that return at once). A typed program the kernel
        refuses (to load or to attach) is compiled again as its tracepoint variant:
        `fallbacks` says why, hook_names() which way each hook went."""
        self.name = name
        self.plan = plan
        self.attached: list[Hook] = []
        self.typed_fds: dict[str, int] = {}  # fn -> program loaded as a typed raw tracepoint
        self.links: dict[str, int] = {}  # fn -> its attachment while attached
        self.fallbacks: dict[str, str] = {}  # fn -> why the kernel refused it typed
        self.bpf = None
        self._starting = True
        self.compile_s = 0.0  # every compile it took (a refused typed program: two)
        while True:
            try:
                started = time.monotonic()
                try:
                    self._compile(source, defines)
                finally:
                    self.compile_s = round(self.compile_s + time.monotonic() - started, 3)
                started = time.monotonic()
                if fill is not None:
                    fill(self.bpf)  # maps the programs read from the start (listening ports)
                self.attach()
                self.attach_s = round(time.monotonic() - started, 3)
                self._starting = False
                return
            except _TypedRefused as refused:
                self.close()
                self.attached.clear()
                self.plan.typed.remove(refused.fn)
                self.fallbacks[refused.fn] = refused.why
            except BaseException:
                self.close()
                raise

    def _compile(self, source: str | None, defines: dict[str, int] | None) -> None:
        bcc = import_bcc()
        text = source if source is not None else c_source(self.name, self.plan, defines)
        self.bpf = bcc.BPF(text=text.encode(),
                           cflags=["-Wno-macro-redefined", "-Wno-unused-function"])
        for hook in self.plan.enabled:
            if hook.fn in self.plan.typed:
                try:
                    self.typed_fds[hook.fn] = typed.load(
                        self.bpf.dump_func(hook.fn.encode()), hook.fn, hook.event)
                except OSError as exc:
                    raise _TypedRefused(hook.fn, f"not loaded: {exc.strerror or exc}") from exc

    def hook_names(self) -> list[str]:
        """The enabled hooks as attached: btf:CATEGORY:EVENT for a typed raw tracepoint."""
        return [f"btf:{h.category}:{h.event}" if h.fn in self.typed_fds else h.name
                for h in self.plan.enabled]

    def prog_fd(self, hook: Hook) -> int | None:
        """The descriptor of a hook's loaded program (None for a bcc-loaded one before its
        first attach)."""
        if hook.fn in self.typed_fds:
            return self.typed_fds[hook.fn]
        fn = self.bpf.funcs.get(hook.fn.encode()) if self.bpf is not None else None
        return fn.fd if fn is not None else None

    def attach(self) -> None:
        """Attach every enabled hook (loading its program into the kernel the first time)."""
        for hook in self.plan.enabled:
            if hook in self.attached:
                continue
            if hook.fn in self.typed_fds:
                try:
                    self.links[hook.fn] = typed.attach(self.typed_fds[hook.fn])
                except OSError as exc:
                    if not self._starting:  # it attached before: a real failure
                        raise
                    raise _TypedRefused(hook.fn, f"not attached: {exc.strerror or exc}") \
                        from exc
            elif hook.raw:
                self.bpf.attach_raw_tracepoint(tp=hook.event.encode(), fn_name=hook.fn.encode())
            else:
                self.bpf.attach_tracepoint(tp=f"{hook.category}:{hook.event}".encode(),
                                           fn_name=hook.fn.encode())
            self.attached.append(hook)

    def detach(self) -> None:
        """Stop every hook (the maps stay readable until close()), last attached first: each
        hook's window then lies inside the windows of the hooks declared before it, so an
        event seen by a later hook (a RST received) is never missing from an earlier one
        that precedes it in the kernel (the same RST sent by this host) at the window's
        end."""
        for hook in reversed(list(self.attached)):
            try:
                if hook.fn in self.links:
                    os.close(self.links.pop(hook.fn))
                elif hook.raw:
                    self.bpf.detach_raw_tracepoint(tp=hook.event.encode())
                else:
                    self.bpf.detach_tracepoint(tp=f"{hook.category}:{hook.event}".encode())
            except Exception:  # noqa: BLE001 (close() below releases it anyway)
                pass
            self.attached.remove(hook)

    def skipped_runs(self) -> int | None:
        """Runs the kernel skipped for these programs (bpf_prog_info.recursion_misses), or None
        when this kernel or bcc cannot tell."""
        if self.bpf is None:
            return None
        from netdiag.ebpf.btf import kernel_layout

        off = kernel_layout().offsets.get("PROG_INFO_MISSES_OFF")
        if off is None:
            return None
        try:
            from bcc.libbcc import lib
        except ImportError:
            return None
        total = 0
        for hook in self.plan.enabled:
            fd = self.prog_fd(hook)
            if fd is None:
                continue
            buf = ctypes.create_string_buffer(off + 8)
            size = ctypes.c_uint32(off + 8)
            try:
                rc = lib.bpf_obj_get_info(ctypes.c_int(fd), buf, ctypes.byref(size))
            except (AttributeError, ctypes.ArgumentError):
                return None
            if rc != 0 or size.value < off + 8:
                return None
            total += int.from_bytes(buf.raw[off:off + 8], sys.byteorder)
        return total

    def close(self) -> None:
        for fds in (self.links, self.typed_fds):
            for fd in fds.values():
                try:
                    os.close(fd)
                except OSError:
                    pass
            fds.clear()
        if self.bpf is not None:
            bpf, self.bpf = self.bpf, None
            bpf.cleanup()


def listening_ports() -> set[int]:
    """TCP ports with a listener in the current network namespace (/proc/net/tcp, tcp6)."""
    ports: set[int] = set()
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path) as fh:
                next(fh, None)
                for line in fh:
                    parts = line.split(None, 4)
                    if len(parts) > 3 and parts[3] == "0A":
                        ports.add(int(parts[1].rsplit(":", 1)[1], 16))
        except (OSError, ValueError):
            continue
    return ports


def port_range() -> tuple[int, int] | None:
    """ip_local_port_range of the current network namespace."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as fh:
            lo, hi = (int(x) for x in fh.read().split())
        return (lo, hi) if 0 < lo <= hi <= 65535 else None
    except (OSError, ValueError):
        return None


def kernel_symbol(name: str) -> int | None:
    """A kernel function's address from /proc/kallsyms (None when hidden or absent)."""
    suffix = f" {name}\n"
    try:
        with open("/proc/kallsyms") as fh:
            for line in fh:
                if line.endswith(suffix):
                    addr = int(line.split(None, 1)[0], 16)
                    return addr or None
    except (OSError, ValueError):
        return None
    return None


def wait(seconds: float, interval: float | None, tick, poll=None, stopped=None) -> float:
    """Sleep `seconds` (calling tick(elapsed) every `interval`); returns early when stopped()
    (the caller's signal handler set it). Returns the seconds actually waited."""
    start = time.monotonic()
    next_tick = start + interval if interval else None
    while not (stopped and stopped()):
        now = time.monotonic()
        if now - start >= seconds:
            break
        if next_tick is not None and now >= next_tick:
            tick(now - start)
            next_tick += interval
        if poll is not None:
            poll()
        time.sleep(max(0.0, min(0.1, seconds - (now - start))))
    return round(time.monotonic() - start, 3)
