"""Run probes for a window and return their typed results: the probe layer's collector.

Order of a run: import bcc, read struct offsets (BTF), compile and attach each probe (each
timed), open the window, wait (Ctrl-C or SIGTERM ends it early), detach, read the maps,
unload. From the first compile to the last unload, SIGINT/SIGTERM only set a flag: a signal
during the window ends it, a signal afterwards (a second Ctrl-C while detaching) is noted and
the report is still read and printed, and nothing stays loaded. A signal before the window
opened unloads what was loaded and ends the run like any signal outside a window
("netdiag: interrupted" / "netdiag: terminated", exit 3).
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime
import mmap
import os
import re
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from netdiag.ebpf import runtime
from netdiag.ebpf.probes import PROBES, ProbeSpec
from netdiag.ebpf.readers import ReadContext
from netdiag.errors import Interrupted, NetdiagError, UsageError
from netdiag.probefacts import Completeness, MapLoss, ProbeResult, Scope, Startup, Window

# Recording fixtures: NETDIAG_PROBE_RECORD=DIR writes each probe's raw maps to DIR/NAME.json
# at the end of the window (tests/fixtures/probes/ were made so).
RECORD_ENV = "NETDIAG_PROBE_RECORD"


class ProbeInterrupted(Interrupted):
    """Ctrl-C or SIGTERM before the probe window opened: outside a window, so the run ends
    as any interrupted run does ("netdiag: interrupted" / "netdiag: terminated", exit 3)."""


@dataclass
class NetnsTarget:
    label: str  # default, a name, pid:N
    inode: int | None  # the namespace to count; None: count the whole host


@contextlib.contextmanager
def hold_netns(target: NetnsTarget) -> Iterator[None]:
    """Hold the namespace being counted open for the whole window (nothing to hold for a
    host-wide run). The programs remember that namespace's kernel address (counted_net in
    probes/common.h); a namespace held open cannot be freed, so its address cannot be given
    to another while they run. The namespace is this thread's own (current_netns)."""
    if target.inode is None:
        yield
        return
    fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if os.fstat(fd).st_ino != target.inode:
            raise NetdiagError("the probe thread is no longer in the namespace it counts")
        yield
    finally:
        os.close(fd)


def current_netns(label: str) -> NetnsTarget:
    try:
        return NetnsTarget(label, os.stat("/proc/thread-self/ns/net").st_ino)
    except OSError:
        return NetnsTarget(label, None)


# ---- probe list ------------------------------------------------------------------------------

def status() -> list[dict[str, Any]]:
    """`probe list`: every probe, whether it can run here, and if not exactly why."""
    from netdiag.ebpf.btf import kernel_layout

    reqs = runtime.requirements()
    blockers = [r for r in reqs.values() if not r.ok]
    layout = kernel_layout()
    rows = []
    for spec in PROBES.values():
        plan = runtime.plan_hooks(spec.hooks, layout=layout) if reqs["tracefs"].ok else \
            runtime.Plan(missing=[(h, "tracefs is not visible") for h in spec.hooks])
        reasons = [f"{r.reason} (fix: {r.fix})" for r in blockers]
        unsupported = spec.unsupported() if spec.unsupported else None
        if unsupported:
            reasons.append(unsupported)
        if not plan.enabled and reqs["tracefs"].ok:
            reasons.append("none of its tracepoints can be used on this kernel")
        rows.append({
            "probe": spec.name,
            "runnable": not reasons,
            "why_not": "; ".join(reasons) or None,  # null: nothing stops it
            "hooks": [h.name for h in plan.enabled],
            "missing_parts": [f"{h.part}: {why}" for h, why in plan.missing],
            "netns_filter": _filter_kind(spec, plan, layout)[0],
            "summary": spec.summary,
            "overhead": spec.overhead,
            "topics": list(spec.topics),
            "in_check": spec.in_check,
        })
    return rows


def print_status(fmt: str, out) -> None:
    """`probe list` as a table (probe, runnable, why not) or JSON."""
    rows = status()
    if fmt == "json":
        import json

        from netdiag.render.json import SCHEMA

        json.dump({"schema": SCHEMA, "probes": rows}, out, indent=2)
        out.write("\n")
        return
    from netdiag.render.table import render_rows

    render_rows("probes", [{"probe": r["probe"], "runnable": "yes" if r["runnable"] else "no",
                            "netns": r["netns_filter"],
                            "why not / missing parts": r["why_not"] or
                            "; ".join(r["missing_parts"]) or "-"} for r in rows], out)


def check_requirements() -> None:
    reqs = runtime.requirements()
    bad = [r for r in reqs.values() if not r.ok]
    if bad:
        raise UsageError("; ".join(f"{r.reason} (fix: {r.fix})" for r in bad))


# ---- namespace filter ----------------------------------------------------------------------

def _filter_kind(spec: ProbeSpec, plan: runtime.Plan, layout) -> tuple[str, str]:
    """("exact" | "partial" | "host-wide", why) for this probe's enabled hooks."""
    hooks = plan.enabled or list(spec.hooks)
    if all(h.netns == "none" for h in hooks):
        return "host-wide", ("softirqs and the scheduler belong to no network namespace: "
                             "these numbers are the whole host's")
    why = layout.why("sk_netns")
    if why is None and any(h.netns == "packet" for h in hooks):
        why = layout.why("skb_netns")
    if why is not None:
        return "host-wide", f"cannot filter by namespace: {why}"
    if any(h.netns == "none" for h in hooks):
        return "partial", "some hooks have no socket and see the whole host"
    return "exact", ""


# ---- the run ---------------------------------------------------------------------------------

class _Signals:
    """SIGINT/SIGTERM only counted while probes are loaded."""

    def __init__(self) -> None:
        self.count = 0
        self.first: int | None = None  # the first signal's number
        self.old: dict[int, Any] = {}

    def __enter__(self) -> _Signals:
        for s in (signal.SIGINT, signal.SIGTERM):
            self.old[s] = signal.signal(s, self._handler)
        return self

    def _handler(self, signum, frame) -> None:  # noqa: ARG002
        self.count += 1
        if self.first is None:
            self.first = signum

    def word(self) -> str:
        """The contract's word for a signal outside a window."""
        return "terminated" if self.first == signal.SIGTERM else "interrupted"

    def __exit__(self, *exc) -> None:
        for s, h in self.old.items():
            signal.signal(s, h)


def _utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds") \
        .replace("+00:00", "Z")


def _since_process_start() -> float | None:
    try:
        with open("/proc/self/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")
        return round(time.clock_gettime(time.CLOCK_BOOTTIME) - started, 2)
    except (OSError, ValueError, IndexError, AttributeError):
        return None


@dataclass
class _Running:
    spec: ProbeSpec
    loaded: runtime.Loaded
    scope: Scope
    startup: Startup
    epoll_known: bool = False
    samples: list = field(default_factory=list)  # the spec's `sample` at the window's ends

    def take_sample(self) -> None:
        if self.spec.sample is not None:
            self.samples.append(_sample(self.spec.sample))


MAP_MMAPABLE = 1 << 10  # BPF_F_MMAPABLE (include/uapi/linux/bpf.h)


def used_slots(buf, stride: int, count: int, group: int = 256) -> list[int]:
    """The indexes of the slots of `buf` (count slots of stride bytes) with any byte
    non-zero. Compared a group of slots at a time against zeros, so that a mostly empty
    array of megabytes costs a few thousand comparisons, not one per slot."""
    used: list[int] = []
    zero_group, zero_slot = bytes(group * stride), bytes(stride)
    for first in range(0, count, group):
        n = min(group, count - first)
        start = first * stride
        if buf[start:start + n * stride] == zero_group[:n * stride]:
            continue
        for i in range(first, first + n):
            if buf[i * stride:(i + 1) * stride] != zero_slot:
                used.append(i)
    return used


class _Maps:
    """The reader interface over a loaded bcc object."""

    def __init__(self, bpf) -> None:
        self.bpf = bpf
        self._cpus: list[int] | None = None

    def items(self, name: str) -> list:
        """A hash's entries. An array created mappable (probes/common.h MMAPABLE) is read
        through one mapping of its memory, and only its slots in use come back (any byte
        non-zero: a probe frees a slot by zeroing all of it), as if it were a hash by index:
        hundreds of thousands of lookups would cost a second; the mapping, milliseconds.
        (bcc's batch read of arrays is not used: in bcc 0.26 it shares one variable between
        the batch cursor and the count, and overruns its buffers.)"""
        table = self.bpf[name]
        slots = self._mapped(table)
        if slots is not None:
            return slots
        return list(table.items())

    @staticmethod
    def _mapped(table) -> list | None:
        if type(table).__name__ != "Array" or not int(table.flags) & MAP_MMAPABLE:
            return None
        size = ctypes.sizeof(table.Leaf)
        stride = (size + 7) & ~7  # the kernel's element size
        try:
            m = mmap.mmap(table.map_fd, table.max_entries * stride, mmap.MAP_SHARED,
                          mmap.PROT_READ)
        except (OSError, ValueError):
            return None
        try:
            return [(table.Key(i), table.Leaf.from_buffer_copy(m, i * stride))
                    for i in used_slots(m, stride, table.max_entries)]
        finally:
            m.close()

    def rows(self, name: str) -> list:
        """A map's entries as plain data (for a recorded fixture): per-CPU values summed, a
        mapped counter array's non-zero slots, any other array's every slot (its readers
        take the values by position)."""
        table = self.bpf[name]
        if hasattr(table, "total_cpu"):
            leaf = getattr(table, "sLeaf", table.Leaf)
            if issubclass(leaf, ctypes.Structure):
                return []  # per-CPU scratch state, not counters
            return [[_plain(k), {"value": table.sum(k).value}] for k in table.keys()]
        return [[_plain(k), _plain(v)] for k, v in self.items(name)]

    def is_per_cpu(self, name: str) -> bool:
        return hasattr(self.bpf[name], "total_cpu")

    def has(self, name: str) -> bool:
        """Whether the loaded object has this map (one under a hook compiled out has not)."""
        try:
            self.bpf[name]
        except KeyError:
            return False
        return True

    def cpus(self) -> list[int]:
        """The possible CPUs, in the order the kernel lays out per-CPU values."""
        if self._cpus is None:
            from bcc.utils import get_possible_cpus

            self._cpus = list(get_possible_cpus())
        return self._cpus

    def per_cpu(self, name: str) -> list[tuple[int, int, int]]:
        """A per-CPU counter array's non-zero slots as (index, cpu id, value); empty for a
        per-CPU array of structs (scratch state, not counters)."""
        table = self.bpf[name]
        leaf = getattr(table, "sLeaf", table.Leaf)  # bcc: Leaf is the per-CPU array of it
        if ctypes.sizeof(leaf) != 8 or issubclass(leaf, ctypes.Structure):
            return []
        cpus = self.cpus()
        return [(k.value, cpus[i] if i < len(cpus) else i, int(v))
                for k, values in table.items() for i, v in enumerate(values) if v]

    def values(self, name: str) -> list[int]:
        table = self.bpf[name]
        if hasattr(table, "total_cpu"):  # a per-CPU array: each slot summed over the CPUs
            return [table.sum(k).value for k in table.keys()]
        return [v.value for v in table.values()]


def run(names: list[str], seconds: float, interval: float | None = None, on_tick=None,
        poll=None, netns: NetnsTarget | None = None, edges=None
        ) -> tuple[dict[str, ProbeResult], list[tuple[str, str]]]:
    """Run the named probes together for `seconds`. Returns {name: result} and errors.

    on_tick(results_so_far, elapsed) is called every `interval`; poll() on every loop turn
    (the backlog probe samples accept queues there); edges(True) as the window opens and
    edges(False) as it closes (the counters judged over the window are read there)."""
    started = time.monotonic()
    bcc = runtime.import_bcc()
    imports_s = round(time.monotonic() - started, 3)
    check_requirements()
    assert bcc is not None
    from netdiag.ebpf.btf import GROUPS, kernel_layout

    started = time.monotonic()
    layout = kernel_layout()
    btf_s = round(time.monotonic() - started, 3)
    target = netns or NetnsTarget("default", None)
    base: dict[str, int] = layout.defines(tuple(GROUPS))
    rng = runtime.port_range()
    if rng is not None:
        base.update(EPH_LO=rng[0], EPH_HI=rng[1])
    ports = runtime.listening_ports()

    def fill(bpf) -> None:
        table = bpf["listening"]
        for port in sorted(ports):
            table[table.Key(port)] = table.Leaf(1)

    running: dict[str, _Running] = {}
    errors: list[tuple[str, str]] = []
    results: dict[str, ProbeResult] = {}
    with hold_netns(target), _Signals() as sig:
        try:
            first = True
            for name in names:
                if sig.count:
                    raise ProbeInterrupted(sig.word())
                spec = PROBES[name]
                unsupported = spec.unsupported() if spec.unsupported else None
                if unsupported:
                    errors.append((f"probe:{name}", f"cannot run here: {unsupported}"))
                    continue
                plan = runtime.plan_hooks(spec.hooks, layout=layout)
                if not plan.enabled:
                    errors.append((f"probe:{name}", "none of its tracepoints can be used "
                                   "here: " + "; ".join(why for _, why in plan.missing)))
                    continue
                kind, why = _filter_kind(spec, plan, layout)
                defines = dict(base)
                defines.update(runtime.map_defines(spec.maps))
                if kind != "host-wide" and target.inode is not None:
                    defines["NETNS_INUM"] = target.inode
                scope = Scope(netns=target.label,
                              inode=target.inode if kind != "host-wide" else None,
                              filter=kind if target.inode is not None else "host-wide",
                              host_wide_parts=[h.name for h in plan.enabled
                                               if h.netns == "none"], note=why)
                epoll_known = False
                if spec.extra is not None:
                    extra, note = spec.extra()
                    defines.update(extra)
                    epoll_known = "EP_CALLBACK_ADDR" in extra
                    if note:
                        plan.missing.append((runtime.Hook(note, "-", "-", "-"), note))
                try:
                    loaded = runtime.Loaded(name, plan, defines, fill)
                except Exception as exc:  # noqa: BLE001 (bcc raises bare Exception)
                    errors.append((f"probe:{name}", f"could not load: {exc}"))
                    continue
                startup = Startup(imports_s=imports_s if first else 0.0,
                                  btf_s=btf_s if first else 0.0,
                                  compile_s=loaded.compile_s, attach_s=loaded.attach_s)
                startup.total_s = round(startup.imports_s + startup.btf_s +
                                        startup.compile_s + startup.attach_s, 3)
                first = False
                running[name] = _Running(spec, loaded, scope, startup, epoll_known)
            if sig.count:
                raise ProbeInterrupted(sig.word())
            if not running:
                return results, errors

            def read_all(elapsed: float, window: Window) -> dict[str, ProbeResult]:
                return {name: _read(r, elapsed, window) for name, r in running.items()}

            opened = _utc_now()
            since_start = _since_process_start()
            for r in running.values():
                r.startup.since_process_start_s = since_start
            tick = None
            if on_tick is not None:
                def tick(elapsed: float) -> None:
                    on_tick(read_all(elapsed, Window(opened, "", round(elapsed, 3))), elapsed)
            if edges is not None:
                edges(True)
            for r in running.values():
                r.take_sample()
            waited = runtime.wait(seconds, interval, tick or (lambda e: None), poll,
                                  stopped=lambda: sig.count > 0)
            for r in running.values():
                r.take_sample()
            if edges is not None:
                edges(False)
            closed = _utc_now()
            for r in running.values():
                r.loaded.detach()
            window = Window(opened, closed, waited, interrupted=sig.count > 0)
            results = read_all(waited, window)
            for name, r in running.items():
                res = results[name]
                res.completeness.skipped_runs = r.loaded.skipped_runs()
                _judge_completeness(res)
                if not res.completeness.complete:
                    errors.append((f"probe:{name}", _loss_text(res)))
        finally:
            for r in running.values():
                r.loaded.close()
    return results, errors


def _sample(read: Callable[[], Any]) -> Any:
    """A probe's kernel counter, None when it cannot be read (the reader leaves it out)."""
    try:
        return read()
    except (OSError, ValueError):
        return None


def _read(r: _Running, elapsed: float, window: Window) -> ProbeResult:
    spec, loaded = r.spec, r.loaded
    samples = None
    if r.spec.sample is not None and r.samples:
        # both ends of a closed window; a tick mid-window reads the counter now
        end = r.samples[1] if len(r.samples) > 1 else _sample(r.spec.sample)
        if r.samples[0] is not None and end is not None:
            samples = (r.samples[0], end)
    ctx = ReadContext(formats=loaded.plan.formats, enabled={h.fn for h in loaded.plan.enabled},
                      seconds=elapsed, now_ns=time.monotonic_ns(), epoll_known=r.epoll_known,
                      samples=samples)
    maps = _Maps(loaded.bpf)
    if os.environ.get(RECORD_ENV) and window.ended_at:
        record(os.environ[RECORD_ENV], spec, maps, ctx)
    res = spec.read(maps, ctx)
    res.probe = spec.name
    res.window = window
    res.startup = r.startup
    res.scope = r.scope
    res.hooks = loaded.hook_names()
    res.missing_parts = [f"{h.part}: {why}" if h.part != why else why
                         for h, why in loaded.plan.missing]
    if spec.sample is not None and (samples is None or not samples[0] or not samples[1]):
        res.missing_parts.append(spec.sample_missing)
    lost = maps.values("lost")
    res.completeness = Completeness()
    for i, m in enumerate(spec.maps):
        n = lost[i] if i < len(lost) else 0
        if n:
            cap = runtime.map_defines(spec.maps)[f"MAX_{m.name.upper()}"]
            res.completeness.lost.append(MapLoss(m.name, cap, n, list(m.tables)))
            mark_approximate(res, m.tables, m.rows)
            if m.name == "cw_since":
                res.close_wait.untracked = n  # type: ignore[attr-defined]
    res.completeness.events_lost = sum(m.events_lost for m in res.completeness.lost)
    _judge_completeness(res)
    return res


def mark_approximate(res: ProbeResult, tables, fed=None) -> None:
    """Rows of tables fed by a map that lost events are lower bounds: say so on each row
    (fed(table, row): the rows that map feeds, when others come from one that cannot fill)."""
    for table in tables:
        value = getattr(res, table, None)
        rows = value if isinstance(value, list) else [value]
        for row in rows:
            if hasattr(row, "approximate") and (fed is None or fed(table, row)):
                row.approximate = True


def _judge_completeness(res: ProbeResult) -> None:
    c = res.completeness
    c.complete = not c.lost and not c.skipped_runs


def _loss_text(res: ProbeResult) -> str:
    c = res.completeness
    parts = [f"{m.events_lost} events not counted: map {m.map} full ({m.capacity} entries); "
             f"{m.bounds}" for m in c.lost]
    if c.skipped_runs:
        parts.append(f"the kernel skipped {c.skipped_runs} program runs (another BPF program "
                     "was running on that CPU); counts are lower bounds")
    return "incomplete: " + "; ".join(parts)


def _plain(obj) -> Any:
    """A ctypes key or value as JSON: structs as objects, byte arrays as lists, comm as text."""
    import ctypes

    if isinstance(obj, ctypes.Structure):
        return {name: _plain(getattr(obj, name)) for name, *_ in obj._fields_}
    if isinstance(obj, bytes):
        return obj.split(b"\0", 1)[0].decode(errors="replace")
    if isinstance(obj, ctypes.Array):
        return [_plain(x) for x in obj]
    if hasattr(obj, "value"):
        return {"value": obj.value}
    return obj


# bcc's map declarations: BPF_ARRAY(name, ...), BPF_PERCPU_HASH(name), BPF_F_TABLE("hash",
# key type, leaf type, name, ...), BPF_TABLE(...) (types never contain a comma).
_MAP_DECL = re.compile(r"\bBPF_(?:[A-Z_]*ARRAY|[A-Z_]*HASH)\(\s*(\w+)\s*[,)]"
                       r"|\bBPF_(?:F_)?TABLE\(\s*\"\w+\"\s*,\s*[^,]+,\s*[^,]+,\s*(\w+)\s*,")


def declared_maps(src: str) -> list[str]:
    """The maps a probe's C source declares, in order."""
    return list(dict.fromkeys(a or b for a, b in _MAP_DECL.findall(src)))


def record(directory: str, spec: ProbeSpec, maps: _Maps, ctx: ReadContext) -> None:
    """The raw maps a reader saw, with what it needs beside them, as a test fixture."""
    import json
    import platform

    src = (runtime.probe_sources() / f"{spec.name}.c").read_text()
    names = [n for n in ["lost", *declared_maps(src)] if maps.has(n)]
    doc = {"probe": spec.name, "kernel": platform.release(),
           "formats": ctx.formats, "enabled": sorted(ctx.enabled), "seconds": ctx.seconds,
           "now_ns": ctx.now_ns, "epoll_known": ctx.epoll_known, "samples": ctx.samples,
           "maps": {n: maps.rows(n) for n in names},
           "per_cpu": {n: maps.per_cpu(n) for n in names if maps.is_per_cpu(n)}}
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, f"{spec.name}.json"), "w") as fh:
        json.dump(doc, fh, indent=1)
