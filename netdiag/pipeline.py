"""One report run, in explicit steps:

    validate -> enter the namespace -> (probe window) -> collect -> evaluate -> store -> render

The typer commands in netdiag.cli only declare options and build a Request; everything else
happens here. Each step contains its own failures: a collector or rule that fails becomes an
entry in the report's errors, never a traceback, and never an exit code that lies to
monitoring (exit 1 only with a warning finding, 3 when nothing could be judged, with the
reason on stderr).
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netdiag import validate
from netdiag.errors import NetdiagError, OutputClosedError, UsageError

# Bounds of numeric options. An interval or probe window longer than an hour is a mistake in
# a cron line, not a measurement.
MAX_INTERVAL = 3600.0
MIN_PROBE_SECONDS = 0.1

# Facts that are the same in every namespace (per-CPU softnet, processes and their fd limits,
# global TCP memory): with --all-netns they are judged once, in the starting namespace.
# Judged once, in the initial namespace, with --all-netns. Processes near their fd limit are
# judged per namespace (by the namespace of each process); fs.file-max only in "default".
HOST_WIDE_TOPICS = ("softirq",)
# Their collectors (the receive path, fs.file-max) run in "default" only.
HOST_ONLY = ("file-nr", "softnet_stat", "softirqs", "links")
HOST_WIDE_IDS = ("buffers.memory_pressure",)


@dataclass
class ProbeRequest:
    names: list[str]
    seconds: float
    interval: float | None = None  # print the facts so far every `interval` seconds (table)
    required: bool = False  # `probe NAME`: a probe that cannot load makes the run unknown


@dataclass
class Request:
    """What one command asked for. Built by the CLI, checked by validate()."""

    command: str  # "check", "sockets", a topic, "sysctl", "probe NAME"
    topics: list[str]
    plan: Any  # collect.gather.Plan
    view: Callable[[Any], dict[str, Any]]  # Facts -> the command's facts section
    fmt: str = "table"
    show_ok: bool = False
    show_facts: bool = False
    netns: str | None = None
    pid: int | None = None
    root: Path | str | None = None  # a Path once validated
    interval: float | None = None
    output: Path | str | None = None  # a Path once validated
    state_dir: str | None = None
    all_netns: bool = False
    probes: ProbeRequest | None = None
    verbose: bool = False
    # Turns the evaluated findings into the command's own (`why`: one finding per cause):
    # (facts, findings) -> (findings, facts section). None: the findings and view as they are.
    conclude: Callable[[Any, list], tuple[list, dict[str, Any]]] | None = None


@dataclass
class Target:
    """Where the run reads from, after the namespace was entered."""

    ctx: Any  # netdiag.context.Context
    inode: int | None = None


@dataclass
class Outcome:
    """One namespace's collected facts, judged."""

    facts: Any
    findings: list = field(default_factory=list)
    errors: list = field(default_factory=list)
    not_judged: list[str] = field(default_factory=list)
    judged: bool = True


# ---- the steps -----------------------------------------------------------------------------

def validate_request(req: Request) -> None:
    """Option combinations and values, before any work is done."""
    if req.all_netns and (req.netns is not None or req.pid is not None or req.root is not None):
        raise UsageError("--all-netns cannot be combined with --netns, --pid or --root")
    if req.netns is not None and req.pid is not None:
        raise UsageError("--netns and --pid are mutually exclusive")
    if req.root is not None and (req.netns is not None or req.pid is not None):
        raise UsageError("--root reads a snapshot; it cannot be combined with --netns/--pid")
    if req.state_dir is not None and req.root is not None:
        raise UsageError("--state-dir keeps history of live runs; not with --root")
    if req.pid is not None and not 0 < req.pid < 2**22:
        raise UsageError(f"--pid {req.pid}: not a process id")
    if req.netns is not None and (not req.netns or len(req.netns) > 255):
        raise UsageError("--netns: expected the name of a namespace under /run/netns")
    req.interval = validate.number("--interval", req.interval, 0.0, MAX_INTERVAL) or None
    req.root = validate.snapshot_root(req.root)
    req.output = validate.path_text("--output", req.output)
    if req.state_dir is not None:
        validate.path_text("--state-dir", req.state_dir)
    if req.probes is not None:
        p = req.probes
        p.seconds = validate.number("--probe-seconds" if not p.required else "--duration",
                                    p.seconds, MIN_PROBE_SECONDS, MAX_INTERVAL)
        p.interval = validate.number("--interval", p.interval, 0.5, MAX_INTERVAL)
        if req.all_netns or req.root is not None:
            raise UsageError("probes cannot be combined with --all-netns or --root")


def enter_namespace(req: Request) -> Target:
    """The run's context: a snapshot, the current namespace, or one entered with setns."""
    from netdiag.context import Context

    if req.root is not None:
        return Target(Context(root=req.root, netns="snapshot"))
    from netdiag import netns as nsmod

    if req.netns is None and req.pid is None:
        # Under `ip netns exec NAME` the process is already inside: name it, and read the
        # host-wide sysctls where they live.
        name, inode, initial = nsmod.identify()
        if initial or (initial is None and name is None):
            return Target(Context(), inode)
        label = name if name is not None else f"inode {inode}"
        host, denied = _host_sysctls(nsmod)
        return Target(Context(netns=label, host_sysctls=host, host_sysctls_denied=denied),
                      inode)
    path, label = nsmod.namespace_path(req.netns, req.pid)
    # Global sysctls (tcp_mem, netdev_*) are visible only from the initial namespace.
    host, denied = _host_sysctls(nsmod)
    nsmod.enter(path)
    return Target(Context(netns=label, host_sysctls=host, host_sysctls_denied=denied))


def _host_sysctls(nsmod) -> tuple[dict[str, str], bool]:
    """Host-wide sysctls read in the initial namespace (from wherever netdiag runs); the
    flag says they could not be read there (entering it needs privilege)."""
    from netdiag.collect.procfs import read_sysctls
    from netdiag.context import Context
    from netdiag.sysctls import GLOBAL_KEYS

    _, _, initial = nsmod.identify()
    if initial:
        return read_sysctls(Context(), GLOBAL_KEYS).values, False
    try:
        values = nsmod.read_in_initial(lambda: read_sysctls(Context(), GLOBAL_KEYS).values)
    except NetdiagError:
        return {}, True
    return values, False


class WindowCounters:
    """The kernel counters read as the probe window opens and as it closes, so that the
    counters judged over the window cover exactly its seconds (not the probes' start-up)."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.before = None
        self.after = None

    def read(self, opening: bool) -> None:
        from netdiag.collect.procfs import read_counters

        try:
            got = read_counters(self.target.ctx)[0]
        except NetdiagError:
            return
        if opening:
            self.before = got
        else:
            self.after = got


def run_probes(req: Request, target: Target, counters: WindowCounters | None = None
               ) -> tuple[dict | None, list, Any]:
    """The eBPF window (before the collection, so the census that follows is current).
    Returns probe results, errors and the accept-queue samples the backlog probe took.

    The probes count the events of the namespace the run is in (entered above), filtered in
    the kernel by its inode, so their numbers and the census that follows describe the same
    namespace."""
    from netdiag.model import CollectorError

    p = req.probes
    if p is None:
        return None, [], None
    from netdiag.ebpf import session

    sampler = None
    if "backlog" in p.names and target.ctx.live:
        from netdiag.collect.sockets import ListenerSampler

        # ListenOverflows is read at both ends of the window: the probe's own baseline.
        sampler = ListenerSampler("probe window", counters=True)
    import time

    last = [0.0]

    def sample_queues() -> None:  # the backlog probe also watches accept queues (sock_diag)
        if sampler is not None and time.monotonic() - last[0] >= 0.2:
            last[0] = time.monotonic()
            sampler.sample()

    def edges(opening: bool) -> None:  # both ends of the window: counters, accept queues
        if counters is not None:
            counters.read(opening)
        if sampler is not None:
            last[0] = time.monotonic()
            sampler.sample()

    def on_tick(partial, elapsed):  # tables only: JSON and the rest stay one document
        from netdiag import views
        from netdiag.facts import Facts
        from netdiag.model import HostInfo, Report

        interim = Report(host=HostInfo(socket.gethostname(), "", target.ctx.netns),
                         generated_at="", facts=views.probe_view(Facts(probes=partial)),
                         interim=f"-- after {elapsed:.0f} s (so far) --")
        _render(interim, "table", sys.stdout)
        sys.stdout.flush()

    tick = on_tick if (p.interval and req.fmt == "table") else None
    try:
        results, errs = session.run(p.names, p.seconds, p.interval, tick, sample_queues,
                                    session.current_netns(target.ctx.netns), edges)
    except session.ProbeInterrupted:
        raise
    except NetdiagError as exc:  # not root, no bcc...
        if p.required:
            raise
        return {}, [CollectorError("probes", str(exc))], None
    errors = [CollectorError(c, m) for c, m in errs]
    if p.required and not results:  # it could not load at all: nothing was judged
        raise UsageError("; ".join(m for _, m in errs).splitlines()[0])
    if sampler is not None and "backlog" in results:
        from netdiag.probefacts import AcceptQueue

        results["backlog"].accept_queues = [
            AcceptQueue(address=s.address, port=s.port, inode=s.inode, limit=s.backlog,
                        max_queue=s.max_queue, samples_at_limit=s.samples_at_limit,
                        samples_full=s.samples_full, samples=s.samples)
            for s in sampler.result()]
        # The collection names the owners of the listeners seen full in the window.
        req.plan.listener_sampler = sampler
    return results, errors, sampler


def collect(req: Request, target: Target, plan) -> tuple[Any, list]:
    from netdiag.collect.gather import collect as gather

    plan.interval = req.interval
    return gather(target.ctx, plan)


def splice_probes(facts, results: dict | None, samples) -> None:
    """Probe results join the collected facts (both describe the run's namespace)."""
    if results is None:
        return
    facts.probes = results


def evaluate(req: Request, facts, topics: list[str], collect_errors: list) -> Outcome:
    from netdiag.model import CollectorError
    from netdiag.rules import evaluate as run_rules
    from netdiag.rules import topic

    ev = run_rules(facts, topics)
    errors = list(collect_errors) + [CollectorError(c, m) for c, m in ev.errors]
    all_ids = sum(len(topic(t).specs) for t in topics)
    # Unknown when nothing could be judged, or when the socket table, the primary evidence of
    # every socket rule, could not be read at all.
    judged = (not topics or len(set(ev.not_judged)) < all_ids) and not (
        req.plan.census and facts.census is None)
    return Outcome(facts, ev.findings, errors, ev.not_judged, judged)


class History:
    """--state-dir: the previous run becomes the counters' baseline; this run is stored.
    A store that cannot be opened, read or written costs the history, never the report: the
    reason goes into `errors` (a damaged store is moved aside by netdiag.state; one that
    cannot be written still gives its baseline, and the report says this run was not
    stored)."""

    def __init__(self, state_dir: str | None) -> None:
        self.store = None
        self.errors: list = []
        self.unwritten: str | None = None
        if state_dir is not None:
            from netdiag import state

            try:
                self.store = state.Store(state.resolve(state_dir))
            except NetdiagError as exc:
                self._fail(exc)
            self._notes()
            if self.store is not None and self.store.read_only:
                self.unwritten = (f"history {self.store.path} cannot be written "
                                  f"({self.store.read_only})")

    def _note(self, message: str) -> None:
        from netdiag.model import CollectorError

        self.errors.append(CollectorError("history", message))

    def _notes(self) -> None:
        if self.store is not None:
            for note in self.store.notes:
                self._note(note)
            self.store.notes.clear()

    def _fail(self, exc: Exception) -> None:
        self._note(f"{exc}; history was not kept")
        if self.store is not None:
            self.store.close()
        self.store = None

    def attach(self, facts, label: str, interval: float | None) -> Any:
        """Find the baseline of namespace `label` (the one entered now). Returns what
        record() needs."""
        if self.store is None:
            return None
        from netdiag import state

        ident = state.identity()
        try:
            prev, series = self.store.previous(label, ident)
        except NetdiagError as exc:
            self._fail(exc)
            return None
        finally:
            self._notes()
        if prev is not None and not interval:
            state.attach_previous(facts, prev, ident)
        return ident, series

    def record(self, facts, status: str, key) -> None:
        if self.store is None or key is None:
            return
        if self.unwritten is not None:
            return
        if facts.counters is None:
            # `sockets` (and `sysctl`) read no counters: a history row is a counter sample.
            # Said once per run (--all-netns records each namespace).
            if not any(e.collector == "history" and "reads no counters" in e.message
                       for e in self.errors):
                self._note("this command reads no counters, so it stores no run; check and "
                           "the topic commands do (history was not kept)")
            return
        ident, series = key
        try:
            self.store.record(facts, status, facts.netns, ident, series)
        except NetdiagError as exc:
            # Read-only, disk full: keep reading baselines, stop trying to write.
            self.unwritten = str(exc)
        finally:
            self._notes()

    def close(self) -> None:
        if self.unwritten is not None:
            self._note(f"{self.unwritten}; this run was not stored (history was not kept)")
            self.unwritten = None
        if self.store is not None:
            self.store.close()


def build_report(req: Request, target: Target, outcome: Outcome):
    from netdiag.model import HostInfo, Report, Severity

    if req.conclude is not None:
        outcome.findings, section = req.conclude(outcome.facts, outcome.findings)
        # The command's own findings (why's causes) name their namespace as the rules' do.
        label = getattr(outcome.facts, "netns", None)
        for f in outcome.findings:
            if f.netns is None and label not in (None, "default", "snapshot"):
                f.netns = label
    else:
        section = req.view(outcome.facts)
    findings = outcome.findings
    # Prometheus keeps ok findings: every rule has a series, so alerts can resolve.
    if not req.show_ok and req.fmt != "prometheus":
        findings = [f for f in findings if f.severity > Severity.OK]
    report = Report(
        host=HostInfo(hostname=_hostname(target), kernel=outcome.facts.kernel,
                      netns=target.ctx.netns),
        generated_at=_now(), findings=findings, facts=section,
        errors=outcome.errors, topic=req.command, show_facts=req.show_facts,
        judged=outcome.judged, not_judged=sorted(set(outcome.not_judged)))
    if req.fmt in ("prometheus", "nagios"):
        from netdiag.metrics import samples

        report.metrics = samples(outcome.facts, outcome.findings, outcome.errors,
                                 report.status, target.ctx.netns)
    return report


# ---- whole runs -------------------------------------------------------------------------

def run_one(req: Request):
    target = enter_namespace(req)
    window = WindowCounters(target) if _counters_over_window(req, target) else None
    results, probe_errors, samples = run_probes(req, target, window)
    facts, errors = collect(req, target, req.plan)
    splice_probes(facts, results, samples)
    if window is not None and window.before is not None and window.after is not None \
            and results and facts.counters is not None and facts.counters_before is None:
        # No --interval: the counters are judged over the probe window (read as it opened
        # and as it closed), like the probes' own numbers, over the same seconds; a stored
        # previous run is not needed then.
        facts.counters_before, facts.counters = window.before, window.after
        # Each was read at one edge of the window (within a millisecond): its seconds are
        # the window's own.
        seconds = max(next(iter(results.values())).window.seconds, 0.001)
        window.after.taken_at = window.before.taken_at + seconds
        facts.interval = seconds
        facts.baseline = "probe window"
    history = History(req.state_dir)
    try:
        ident = history.attach(facts, target.ctx.netns, req.interval or facts.interval)
        outcome = evaluate(req, facts, req.topics, probe_errors + errors)
        report = build_report(req, target, outcome)
        history.record(facts, report.status, ident)
    finally:
        history.close()
    report.errors.extend(history.errors)
    return report


def _counters_over_window(req: Request, target: Target) -> bool:
    """Are the counters judged over the probe window? (Not without one, nor when --interval
    gives the baseline.)"""
    return req.probes is not None and not req.interval and bool(req.plan.counters) \
        and target.ctx.live


def run_all(req: Request):
    """--all-netns: the same checks in every network namespace, findings labelled."""
    import copy

    from netdiag import netns as nsmod
    from netdiag.collect.procfs import read_kernel_release
    from netdiag.context import Context
    from netdiag.model import CollectorError, HostInfo, Report, Severity

    namespaces, hidden = nsmod.discover()
    host, denied = _host_sysctls(nsmod)
    findings, errors, metrics, rows, not_judged = [], [], [], [], []
    if hidden:
        errors.append(CollectorError("netns", f"{hidden} processes' namespaces could not "
                                              "be inspected (permission denied)"))
    skipped = []
    history = History(req.state_dir)
    try:
        with _progress(len(namespaces), "namespaces") as advance:
            for ns in namespaces:
                advance()
                label, inode = ns.label, ns.inode
                try:
                    nsmod.enter_if_needed(ns.path, inode)
                except NetdiagError as exc:  # gone meanwhile, or no permission
                    skipped.append(label)
                    errors.append(CollectorError("netns", f"{label}: {exc}"))
                    continue
                ns_plan = copy.copy(req.plan)
                ns_topics = req.topics
                if label != "default":  # host-wide facts are judged once, in "default"
                    ns_plan.rxpath = False
                    ns_plan.file_nr = False
                    ns_topics = [t for t in req.topics if t not in HOST_WIDE_TOPICS]
                target = Target(Context(netns=label, host_sysctls=host,
                                        host_sysctls_denied=denied), inode)
                facts, errs = collect(req, target, ns_plan)
                ident = history.attach(facts, label, req.interval)
                outcome = evaluate(req, facts, ns_topics, errs)
                got = outcome.findings
                for f in got:
                    f.netns = label
                if label != "default":
                    got = [f for f in got if f.id not in HOST_WIDE_IDS]
                errors.extend(CollectorError(e.collector, f"[{label}] {e.message}")
                              for e in outcome.errors)
                not_judged.extend(f"{label}:{i}" for i in outcome.not_judged)
                worst = max((f.severity for f in got), default=Severity.OK)
                status = ("unknown" if not outcome.judged else
                          {Severity.CRITICAL: "critical", Severity.WARNING: "warning"}.get(
                              worst, "ok"))
                history.record(facts, status, ident)
                if req.fmt in ("prometheus", "nagios"):
                    from netdiag.metrics import COLLECTORS, samples

                    # Host-wide collectors run in "default" only: elsewhere they are not
                    # down, they are not asked (no collector_up series for them).
                    metrics.extend(samples(facts, got, outcome.errors, status, label,
                                           COLLECTORS if label == "default" else tuple(
                                               c for c in COLLECTORS if c not in HOST_ONLY)))
                rows.append({"netns": label, "inode": inode, "status": status,
                             "sockets": facts.census.total if facts.census else None,
                             "findings": sum(1 for f in got if f.severity > Severity.OK),
                             **ns.as_json()})
                keep_ok = req.show_ok or req.fmt == "prometheus"
                findings.extend(f for f in got if keep_ok or f.severity > Severity.OK)
    finally:
        history.close()
    errors.extend(history.errors)
    facts_out: dict[str, Any] = {"namespaces": rows}
    if skipped:
        facts_out["not_entered"] = skipped
    return Report(
        host=HostInfo(hostname=socket.gethostname(), kernel=read_kernel_release(Context()),
                      netns="all"),
        generated_at=_now(), findings=findings, facts=facts_out, errors=errors,
        topic=req.command, show_facts=True, judged=any(r["status"] != "unknown" for r in rows),
        metrics=metrics, not_judged=not_judged, all_netns=True)


def execute(req: Request) -> int:
    """Run the request and write its report. Returns the exit code."""
    validate_request(req)
    report = run_all(req) if req.all_netns else run_one(req)
    emit(report, req)
    return report.exit_code


def emit(report, req: Request) -> None:
    if req.output is None:
        try:
            _render(report, req.fmt, sys.stdout, req.verbose)
            sys.stdout.flush()
        except BrokenPipeError:
            raise OutputClosedError("output closed before the report was complete (broken "
                                    "pipe)") from None
        except OSError as exc:  # a full disk behind a redirection, an I/O error
            raise NetdiagError(f"cannot write the report to standard output: "
                               f"{exc.strerror or exc}") from None
    else:
        from netdiag.output import write_report

        write_report(req.output, lambda fh: _render(report, req.fmt, fh, req.verbose))
    if report.status == "unknown":
        from netdiag.render._safe import clean

        reason = clean(" ".join(unknown_reason(report).split()))
        sys.stderr.write(f"netdiag: could not judge: {reason}\n")


def unknown_reason(report) -> str:
    if report.errors:
        # The socket table is the primary evidence: when it failed, that is the reason.
        errors = sorted(report.errors, key=lambda e: e.collector != "sockets")
        return "; ".join(e.message if e.collector in e.message else
                         f"{e.collector}: {e.message}" for e in errors[:3])
    return "no rule could be judged (" + ", ".join(report.not_judged[:5]) + ")"


# ---- helpers -------------------------------------------------------------------------------

def _render(report, fmt: str, out, verbose: bool = False) -> None:
    from netdiag.render import render

    render(report, fmt, out, verbose)


def _now() -> str:
    import time

    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _hostname(target: Target) -> str:
    if target.ctx.live:
        return socket.gethostname()
    from netdiag.collect.procfs import read_text

    try:
        return read_text(target.ctx, "proc/sys/kernel/hostname").strip() or "snapshot"
    except NetdiagError:
        return "snapshot"


class _progress:
    """A rich progress bar on stderr when it is a terminal; nothing on a pipe."""

    def __init__(self, total: int, what: str) -> None:
        self.total, self.what, self.bar = total, what, None

    def __enter__(self):
        if sys.stderr.isatty() and not os.environ.get("NETDIAG_NO_PROGRESS"):
            from rich.console import Console
            from rich.progress import Progress

            plain = {"color_system": None} if os.environ.get("NO_COLOR") else {}
            self.bar = Progress(transient=True, console=Console(file=sys.stderr, **plain))
            self.bar.start()
            self.task = self.bar.add_task(self.what, total=self.total)
            return lambda: self.bar.advance(self.task)
        return lambda: None

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.stop()
