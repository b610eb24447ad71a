"""The command line. Commands stay thin: context -> collect -> evaluate -> render -> exit."""

from __future__ import annotations

import datetime
import os
import socket
import sys
from enum import Enum
from pathlib import Path
from typing import Callable, List, Optional

import click
import typer

from netdiag import __version__
from netdiag.errors import NetdiagError, UsageError

app = typer.Typer(
    name="netdiag",
    help="Explain what the Linux TCP stack is doing, against the documented kernel rules.",
    add_completion=True,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


class Format(str, Enum):
    table = "table"
    json = "json"
    prometheus = "prometheus"
    nagios = "nagios"


# Options every report command takes (CONTRACT.md).
FormatOpt = typer.Option(Format.table, "--format", "-f",
                         help="Output format: table, json, prometheus or nagios.")
JsonOpt = typer.Option(False, "--json", help="Short for --format json.")
NetnsOpt = typer.Option(None, "--netns", metavar="NAME",
                        help="Run inside the named network namespace (/run/netns/NAME).")
PidOpt = typer.Option(None, "--pid", metavar="PID",
                      help="Run inside the network namespace of process PID.")
IntervalOpt = typer.Option(None, "--interval", min=0.0, metavar="S",
                           help="Take two samples S seconds apart; judge counters by rate.")
RootOpt = typer.Option(None, "--root", metavar="DIR",
                       help="Read a recorded snapshot under DIR instead of the live host.")
OutputOpt = typer.Option(None, "--output", "-o", metavar="FILE",
                         help="Write the report to FILE atomically (temp file + rename).")
StateDirOpt = typer.Option(None, "--state-dir", metavar="DIR",
                           help="Keep counter history in DIR ('auto': /var/lib/netdiag for "
                                "root, the user's state directory otherwise) and judge "
                                "counters by their change since the previous run.")
AllNetnsOpt = typer.Option(False, "--all-netns",
                           help="Run in every network namespace on the host (named ones and "
                                "those of running processes); label findings with it.")
TopOpt = typer.Option(20, "--top", min=1, max=1000, help="Rows per grouping.")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"netdiag {__version__}")
        raise typer.Exit(0)


@app.callback()
def _main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """netdiag reads sysctl, /proc/net and netlink sock_diag, and explains what it finds."""


class Run:
    """One report run: resolves the namespace and root, collects, evaluates, renders."""

    def __init__(self, fmt: Format, as_json: bool, netns: str | None, pid: int | None,
                 interval: float | None, root: Path | None, output: Path | None,
                 state_dir: str | None = None, all_netns: bool = False) -> None:
        self.fmt = "json" if as_json else fmt.value
        self.interval = interval or None
        self.output = output
        self.store = None
        self.all_netns = all_netns
        self.probe_results: dict | None = None
        self.probe_errors: list = []
        self.listener_samples: list | None = None  # accept queues watched by probe backlog
        if all_netns and (netns is not None or pid is not None or root is not None):
            raise UsageError("--all-netns cannot be combined with --netns, --pid or --root")
        if state_dir is not None:
            if root is not None:
                raise UsageError("--state-dir keeps history of live runs; not with --root")
            from netdiag import state

            self.store = state.Store(state.resolve(state_dir))
        if netns is not None and pid is not None:
            raise UsageError("--netns and --pid are mutually exclusive")
        if root is not None and (netns is not None or pid is not None):
            raise UsageError("--root reads a snapshot; it cannot be combined with --netns/--pid")
        from netdiag.context import Context

        if root is not None:
            if not root.is_dir():
                raise UsageError(f"--root {root}: not a directory")
            self.ctx = Context(root=root.resolve(), netns="snapshot")
        elif netns is not None or pid is not None:
            from netdiag import netns as nsmod
            from netdiag.collect.procfs import read_sysctls
            from netdiag.sysctls import GLOBAL_KEYS

            path, label = nsmod.namespace_path(netns, pid)
            host = read_sysctls(Context(), GLOBAL_KEYS).values
            nsmod.enter(path)
            self.ctx = Context(netns=label, host_sysctls=host)
        else:
            self.ctx = Context()

    def report(self, topics: list[str], plan, view: Callable, *, show_ok: bool,
               show_facts: bool, topic: str | None = None) -> None:
        if self.all_netns:
            return self.report_all(topics, plan, show_ok=show_ok, topic=topic)
        from netdiag.collect.gather import collect
        from netdiag.model import HostInfo, Report, Severity
        from netdiag.rules import evaluate

        plan.interval = self.interval
        facts, errors = collect(self.ctx, plan)
        if self.probe_results is not None:
            from netdiag.model import CollectorError

            errors.extend(CollectorError(c, m) for c, m in self.probe_errors)
            if self.ctx.netns != "default" and facts.census is not None:
                from netdiag.ebpf.nsfilter import filter_probe

                for name, result in self.probe_results.items():
                    filter_probe(name, result, facts.census, self.ctx.netns)
            facts.probes = self.probe_results
            if self.listener_samples is not None and facts.listener_samples is None:
                facts.listener_samples = self.listener_samples
        ident = None
        if self.store is not None:
            from netdiag import state

            ident = state.identity()
            prev = self.store.previous(self.ctx.netns)
            if prev is not None and not self.interval:
                state.attach_previous(facts, prev, ident)
        findings, unjudged = evaluate(facts, topics)
        # Prometheus keeps ok findings: every rule has a series, so alerts can resolve.
        if not show_ok and self.fmt != "prometheus":
            findings = [f for f in findings if f.severity > Severity.OK]
        all_ids = sum((len(_topic_ids(t)) for t in topics), 0)
        report = Report(
            host=HostInfo(hostname=self._hostname(), kernel=facts.kernel, netns=self.ctx.netns),
            generated_at=datetime.datetime.now(datetime.timezone.utc)
            .strftime("%Y-%m-%dT%H:%M:%SZ"),
            findings=findings,
            facts=view(facts),
            errors=errors,
            topic=topic,
            show_facts=show_facts,
            # Unknown when nothing could be judged, or when the socket table, the primary
            # evidence of every socket rule, could not be read at all.
            judged=(not topics or len(unjudged) < all_ids)
            and not (plan.census and facts.census is None),
        )
        if self.fmt in ("prometheus", "nagios"):
            from netdiag.metrics import samples

            report.metrics = samples(facts, findings, errors, report.status, self.ctx.netns)
        if self.store is not None:
            self.store.record(facts, report.status, ident)
            self.store.close()
        self.emit(report)

    def report_all(self, topics: list[str], plan, *, show_ok: bool, topic: str | None) -> None:
        """--all-netns: the same checks in every network namespace, findings labelled."""
        import copy

        from netdiag import netns as nsmod
        from netdiag.collect.gather import collect
        from netdiag.collect.procfs import read_kernel_release, read_sysctls
        from netdiag.context import Context
        from netdiag.model import CollectorError, HostInfo, Report, Severity
        from netdiag.rules import evaluate
        from netdiag.sysctls import GLOBAL_KEYS

        namespaces, hidden = nsmod.discover()
        host = read_sysctls(Context(), GLOBAL_KEYS).values
        findings, errors, metrics, rows = [], [], [], []
        if hidden:
            errors.append(CollectorError("netns", f"{hidden} processes' namespaces could not "
                                                  "be inspected (permission denied)"))
        statuses = []
        with _progress(len(namespaces), "namespaces") as advance:
            for label, path, inode in namespaces:
                advance()
                try:
                    nsmod.enter(path)
                except NetdiagError as exc:  # gone meanwhile, or no permission
                    errors.append(CollectorError("netns", f"{label}: {exc}"))
                    continue
                ns_plan = copy.copy(plan)
                ns_topics = topics
                if label != "default":  # host-wide facts are judged once, in "default"
                    ns_plan.rxpath = False
                    ns_topics = [t for t in topics if t not in HOST_WIDE_TOPICS]
                ns_plan.interval = self.interval
                ctx = Context(netns=label, host_sysctls=host)
                facts, errs = collect(ctx, ns_plan)
                got, _ = evaluate(facts, ns_topics)
                for f in got:
                    f.netns = label
                if label != "default":
                    got = [f for f in got if f.id not in HOST_WIDE_IDS]
                errors.extend(CollectorError(e.collector, f"[{label}] {e.message}") for e in errs)
                worst = max((f.severity for f in got), default=Severity.OK)
                status = {Severity.CRITICAL: "critical", Severity.WARNING: "warning"}.get(
                    worst, "ok")
                statuses.append(worst)
                if self.fmt in ("prometheus", "nagios"):
                    from netdiag.metrics import samples

                    metrics.extend(samples(facts, got, errs, status, label))
                rows.append({"netns": label, "inode": inode, "status": status,
                             "sockets": facts.census.total if facts.census else None,
                             "findings": sum(1 for f in got if f.severity > Severity.OK)})
                keep_ok = show_ok or self.fmt == "prometheus"
                findings.extend(f for f in got if keep_ok or f.severity > Severity.OK)
        report = Report(
            host=HostInfo(hostname=socket.gethostname(), kernel=read_kernel_release(Context()),
                          netns="all"),
            generated_at=datetime.datetime.now(datetime.timezone.utc)
            .strftime("%Y-%m-%dT%H:%M:%SZ"),
            findings=findings, facts={"namespaces": rows}, errors=errors, topic=topic,
            show_facts=True, judged=bool(rows), metrics=metrics)
        self.emit(report)

    def _hostname(self) -> str:
        if self.ctx.live:
            return socket.gethostname()
        try:
            return self.ctx.path("proc/sys/kernel/hostname").read_text().strip()
        except OSError:
            return "snapshot"

    def emit(self, report) -> None:
        from netdiag.render import render

        if self.output is None:
            render(report, self.fmt, sys.stdout)
        else:
            _write_atomically(self.output, lambda fh: render(report, self.fmt, fh))
        raise typer.Exit(report.exit_code)


# Facts that are the same in every namespace (per-CPU softnet, processes and their fd limits,
# global TCP memory): with --all-netns they are judged once, in the starting namespace.
HOST_WIDE_TOPICS = ("softirq", "sockets")
HOST_WIDE_IDS = ("buffers.memory_pressure",)


class _progress:
    """A rich progress bar on stderr when it is a terminal; nothing on a pipe."""

    def __init__(self, total: int, what: str) -> None:
        self.total, self.what, self.bar = total, what, None

    def __enter__(self):
        if sys.stderr.isatty():
            from rich.progress import Progress

            self.bar = Progress(transient=True, console=None)
            self.bar.console.file = sys.stderr
            self.bar.start()
            self.task = self.bar.add_task(self.what, total=self.total)
            return lambda: self.bar.advance(self.task)
        return lambda: None

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.stop()


def _topic_ids(topic: str) -> list[str]:
    from netdiag.rules import TOPICS

    return [s.id for s in TOPICS[topic].specs]


def _write_atomically(path: Path, write: Callable) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise UsageError(f"cannot write {path}: {exc.strerror}") from None


def _plan(**kw):
    from netdiag.collect.gather import Plan

    return Plan(**kw)


_STATE_ALIASES = {"established": "ESTABLISHED", "estab": "ESTABLISHED", "syn-sent": "SYN_SENT",
                  "syn-recv": "SYN_RECV", "fin-wait-1": "FIN_WAIT1", "fin-wait-2": "FIN_WAIT2",
                  "time-wait": "TIME_WAIT", "close": "CLOSE", "close-wait": "CLOSE_WAIT",
                  "last-ack": "LAST_ACK", "listen": "LISTEN", "closing": "CLOSING"}


def _parse_states(names: list[str]) -> set[int] | None:
    from netdiag.facts import STATE_BY_NAME

    if not names:
        return None
    out = set()
    for name in names:
        for part in name.split(","):
            key = _STATE_ALIASES.get(part.strip().lower(), part.strip().upper().replace("-", "_"))
            if key not in STATE_BY_NAME:
                raise UsageError(f"unknown TCP state {part!r} (e.g. established, time-wait, "
                                 "close-wait, listen)")
            out.add(STATE_BY_NAME[key])
    return out


@app.command()
def check(
    fmt: Format = FormatOpt, as_json: bool = JsonOpt, netns: Optional[str] = NetnsOpt,
    pid: Optional[int] = PidOpt, interval: Optional[float] = IntervalOpt,
    root: Optional[Path] = RootOpt, output: Optional[Path] = OutputOpt,
    state_dir: Optional[str] = StateDirOpt, all_netns: bool = AllNetnsOpt,
    probe_seconds: Optional[float] = typer.Option(
        None, "--probe-seconds", min=0.5, metavar="S",
        help="Also run the eBPF probes for S seconds and fold their evidence in."),
    probes: Optional[str] = typer.Option(
        None, "--probes", metavar="LIST",
        help="With --probe-seconds: which probes (comma-separated; default: all that can "
             "run here)."),
) -> None:
    """Every rule on this host (or namespace): one report of findings."""
    from netdiag import views
    from netdiag.rules import TOPICS

    run = Run(fmt, as_json, netns, pid, interval, root, output, state_dir, all_netns)
    if probe_seconds:
        if all_netns or root is not None:
            raise UsageError("--probe-seconds cannot be combined with --all-netns or --root")
        from netdiag.ebpf.probes import PROBES

        names = [n.strip() for n in probes.split(",")] if probes else list(PROBES)
        unknown = [n for n in names if n not in PROBES]
        if unknown:
            raise UsageError(f"unknown probe(s) {', '.join(unknown)}; known: "
                             f"{', '.join(PROBES)}")
        if not probes:  # all: skip the heavy softirq probe unless asked
            names.remove("softirq")
        try:
            _run_probes(run, names, probe_seconds, None)
        except NetdiagError as exc:  # no root, no bcc...: the rest of the report stands
            run.probe_results, run.probe_errors = {}, [("probes", str(exc))]
    plan = _plan(details=True, rxpath=True, sample_listeners=True)
    run.report(list(TOPICS), plan, views.check_view, show_ok=False, show_facts=False,
               topic="check")


@app.command()
def sockets(
    state: List[str] = typer.Option([], "--state", "-s", help="Only these states "
                                    "(repeatable or comma-separated: time-wait,close-wait)."),
    port: Optional[int] = typer.Option(None, "--port", "-p", min=0, max=65535,
                                       help="Only sockets with this local or remote port."),
    top: int = TopOpt,
    processes: bool = typer.Option(False, "--processes", "-P",
                                   help="Attribute every socket to its process (walks "
                                        "/proc/PID/fd; slower on large hosts)."),
    fmt: Format = FormatOpt, as_json: bool = JsonOpt, netns: Optional[str] = NetnsOpt,
    pid: Optional[int] = PidOpt, interval: Optional[float] = IntervalOpt,
    root: Optional[Path] = RootOpt, output: Optional[Path] = OutputOpt,
    state_dir: Optional[str] = StateDirOpt, all_netns: bool = AllNetnsOpt,
) -> None:
    """Socket census: counts by state, local port, remote peer and owning process."""
    from netdiag import views

    states = _parse_states(state)
    run = Run(fmt, as_json, netns, pid, interval, root, output, state_dir, all_netns)
    plan = _plan(states=states, port=port, top=top,
                 processes="all" if processes else "targeted", sysctl_conf=False,
                 counters=False)
    run.report(["sockets"], plan, lambda f: views.sockets_view(f, top), show_ok=True,
               show_facts=True, topic="sockets")


def _topic_command(topic: str, view_name: str, doc: str, **plan_kw):
    def command(
        fmt: Format = FormatOpt, as_json: bool = JsonOpt, netns: Optional[str] = NetnsOpt,
        pid: Optional[int] = PidOpt, interval: Optional[float] = IntervalOpt,
        root: Optional[Path] = RootOpt, output: Optional[Path] = OutputOpt,
        state_dir: Optional[str] = StateDirOpt, all_netns: bool = AllNetnsOpt,
    ) -> None:
        from netdiag import views

        run = Run(fmt, as_json, netns, pid, interval, root, output, state_dir, all_netns)
        run.report([topic], _plan(**plan_kw), getattr(views, view_name), show_ok=True,
                   show_facts=True, topic=topic)

    command.__doc__ = doc
    command.__name__ = topic
    app.command(name=topic)(command)


# Each topic asks sock_diag only for the states its rules read (LISTEN: to tell accepted
# connections from outgoing ones, and for the listener facts).
_TW, _CW, _EST, _LST, _SYNR = 6, 8, 1, 10, 3
_topic_command("timewait", "timewait_view",
               "TIME_WAIT: who closes first, toward whom, and the kernel limits.",
               states={_TW, _LST})
_topic_command("closewait", "closewait_view",
               "CLOSE_WAIT: sockets the peer closed and the application did not, by process.",
               states={_CW, _LST})
_topic_command("ports", "ports_view",
               "Ephemeral ports: usage per destination, the range, listeners inside it.")
_topic_command("backlog", "backlog_view",
               "Listen queues: accept queue vs limit per listener, SYN queue, overflows.",
               sample_listeners=True, states={_LST, _SYNR})
_topic_command("keepalive", "keepalive_view",
               "Keepalive: time to detect a dead peer, connections without keepalive.",
               details=True, states={_EST, _LST})
_topic_command("buffers", "buffers_view",
               "Socket buffers: autotuning, limits, per-connection BDP, drops, TCP memory.",
               details=True, states={_EST, _LST})
_topic_command("softirq", "softirq_view",
               "Receive path: softnet_stat, NET_RX/NET_TX per CPU, ksoftirqd, NIC rings.",
               rxpath=True, link_detail=True, census=False, processes="none")


@app.command()
def sysctl(
    fmt: Format = FormatOpt, as_json: bool = JsonOpt, netns: Optional[str] = NetnsOpt,
    pid: Optional[int] = PidOpt, root: Optional[Path] = RootOpt,
    output: Optional[Path] = OutputOpt,
) -> None:
    """Every networking sysctl the rules read: value, default, the rules that use it."""
    from netdiag import views

    run = Run(fmt, as_json, netns, pid, None, root, output)
    plan = _plan(counters=False, sockstat=False, census=False, processes="none",
                 sysctl_conf=False, file_nr=False)
    run.report([], plan, views.sysctl_view, show_ok=True, show_facts=True, topic="sysctl")


# The topics whose findings use each probe's facts.
PROBE_TOPICS = {"states": ["closewait", "timewait"], "backlog": ["backlog"],
                "wakeups": ["wakeups"], "drops": ["drops"], "rcvbuf": ["buffers"],
                "softirq": ["softirq"], "resets": ["resets"], "retrans": ["retrans"]}


def _run_probes(run: Run, names: list[str], seconds: float,
                interval: float | None) -> None:
    """Run probes for the window; the caller then collects and judges as usual."""
    import time

    from netdiag.ebpf import session

    sampler = None
    if "backlog" in names and run.ctx.live:
        from netdiag.collect.sockets import ListenerSampler

        sampler = ListenerSampler()
    last = [0.0]

    def sample_queues() -> None:  # the backlog probe also watches accept queues, via sock_diag
        if sampler is not None and time.monotonic() - last[0] >= 0.2:
            last[0] = time.monotonic()
            sampler.sample()

    def on_tick(partial, elapsed):
        if run.fmt != "table":  # JSON and the rest stay one document, at the end
            return
        from netdiag import views
        from netdiag.facts import Facts
        from netdiag.model import HostInfo, Report
        from netdiag.render import render

        render(Report(host=HostInfo(socket.gethostname(), "", run.ctx.netns), generated_at="",
                      facts=views.probe_view(Facts(probes=partial)),
                      interim=f"-- after {elapsed:.0f} s (so far) --"), "table", sys.stdout)
        sys.stdout.flush()

    probes, errs = session.run(names, seconds, interval, on_tick if interval else None,
                               sample_queues)
    run.probe_results, run.probe_errors = probes, errs
    if sampler is not None and "backlog" in probes:
        run.listener_samples = sampler.result()
        probes["backlog"]["accept_queues_sampled"] = [
            {"address": s.address, "port": s.port, "limit": s.backlog,
             "max_queue": s.max_queue, "at_limit": f"{s.samples_at_limit}/{s.samples}"}
            for s in run.listener_samples]


@app.command()
def probe(
    name: str = typer.Argument(..., metavar="NAME|list",
                               help="states, backlog, wakeups, drops, rcvbuf, softirq, "
                                    "resets, retrans, or list."),
    duration: float = typer.Option(10.0, "--duration", "-d", min=0.1, metavar="S",
                                   help="How long to probe (Ctrl-C ends it early)."),
    interval: Optional[float] = typer.Option(None, "--interval", min=0.5, metavar="S",
                                             help="Also print progress every S seconds."),
    fmt: Format = FormatOpt, as_json: bool = JsonOpt, netns: Optional[str] = NetnsOpt,
    pid: Optional[int] = PidOpt, output: Optional[Path] = OutputOpt,
) -> None:
    """An eBPF probe (bcc), aggregated in the kernel, printed at the end."""
    from netdiag import views
    from netdiag.ebpf.probes import PROBES

    if name == "list":
        from netdiag.ebpf import session

        rows = session.status()
        if as_json or fmt is Format.json:
            import json

            json.dump({"schema": "netdiag/1", "probes": rows}, sys.stdout, indent=2)
            sys.stdout.write("\n")
        else:
            from netdiag.render.table import render_rows

            render_rows("probes", [{"probe": r["probe"],
                                    "runnable": "yes" if r["runnable"] else "no",
                                    "why not / missing parts": r["why_not"] or
                                    "; ".join(r["missing_parts"]) or "-"} for r in rows],
                        sys.stdout)
        raise typer.Exit(0)
    if name not in PROBES:
        raise UsageError(f"unknown probe {name!r}; known: {', '.join(PROBES)}, list")
    run = Run(fmt, as_json, netns, pid, None, None, output)
    _run_probes(run, [name], duration, interval)
    if name not in run.probe_results:  # it could not load at all: nothing was judged
        raise UsageError("; ".join(m for _, m in run.probe_errors).splitlines()[0])
    plan = _plan(details=False, rxpath=name == "softirq", sysctl_conf=False,
                 processes="targeted")
    run.report(PROBE_TOPICS[name], plan, views.probe_view, show_ok=True, show_facts=True,
               topic=f"probe {name}")


@app.command()
def serve(
    listen: str = typer.Option("127.0.0.1:9877", "--listen", metavar="ADDR:PORT",
                               help="Where to serve /metrics (loopback by default)."),
    min_interval: float = typer.Option(15.0, "--min-interval", min=0.0, metavar="S",
                                       help="Reuse a run younger than S seconds."),
    timeout: float = typer.Option(20.0, "--timeout", min=1.0, metavar="S",
                                  help="Give up on a run after S seconds."),
    netns: Optional[str] = NetnsOpt, all_netns: bool = AllNetnsOpt,
    state_dir: Optional[str] = StateDirOpt,
) -> None:
    """Prometheus exporter: /metrics runs the checks per scrape (loopback by default)."""
    from netdiag.serve import Exporter
    from netdiag.serve import serve as run_server

    host, sep, port_text = listen.rpartition(":")
    if not sep or not port_text.isdigit() or not host:
        raise UsageError(f"--listen {listen!r}: expected ADDR:PORT, e.g. 127.0.0.1:9877")
    args: list[str] = []
    if netns is not None:
        args += ["--netns", netns]
    if all_netns:
        args.append("--all-netns")
    if state_dir is not None:
        args += ["--state-dir", state_dir]
    try:
        run_server(host.strip("[]"), int(port_text), Exporter(args, min_interval, timeout))
    except OSError as exc:
        raise UsageError(f"cannot listen on {listen}: {exc.strerror}") from None
    except KeyboardInterrupt:
        raise typer.Exit(0) from None


@app.command()
def history(
    state_dir: str = typer.Option("auto", "--state-dir", metavar="DIR",
                                  help="Where the runs were stored ('auto': the default)."),
    netns: str = typer.Option("default", "--netns", metavar="LABEL",
                              help="Which namespace's runs: default, a name, or pid:N."),
    last: int = typer.Option(20, "--last", min=1, max=5000, help="How many runs."),
    fmt: Format = FormatOpt, as_json: bool = JsonOpt,
) -> None:
    """How the key counters and socket counts moved over the stored runs."""
    from netdiag import state
    from netdiag.historyview import history_data

    path = state.resolve(state_dir)
    if not (path / "history.sqlite").exists():
        raise UsageError(f"no history in {path} (runs store it with --state-dir)")
    store = state.Store(path)
    try:
        data = history_data(store, netns, last)
    finally:
        store.close()
    if as_json or fmt is Format.json:
        import json

        json.dump(data, sys.stdout, indent=2)
        sys.stdout.write("\n")
    elif fmt is Format.table:
        from netdiag.render.history import render_history

        render_history(data, sys.stdout)
    else:
        raise UsageError("history supports --format table or json")


@app.command()
def explain(
    what: str = typer.Argument(..., metavar="TOPIC_OR_FINDING_ID",
                               help="A topic (timewait, ports, ...) or a finding id."),
    fmt: Format = FormatOpt, as_json: bool = JsonOpt,
) -> None:
    """The documented rule behind a topic or finding id (offline)."""
    from netdiag.explain import explain as do_explain

    do_explain(what, "json" if as_json else fmt.value, sys.stdout)


def main(argv: list[str] | None = None) -> None:
    """Entry point: maps every usage error to exit 3 with one line on stderr."""
    args = sys.argv[1:] if argv is None else argv
    try:
        code = app(args=args, prog_name="netdiag", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.ctx.get_help() if exc.ctx else str(exc))
        sys.exit(3)
    except click.exceptions.UsageError as exc:
        sys.stderr.write(f"netdiag: error: {exc.format_message()}\n")
        sys.exit(3)
    except click.exceptions.Abort:
        sys.stderr.write("netdiag: interrupted\n")
        sys.exit(3)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except NetdiagError as exc:
        sys.stderr.write(f"netdiag: error: {exc}\n")
        sys.exit(3)
    except KeyboardInterrupt:
        sys.stderr.write("netdiag: interrupted\n")
        sys.exit(3)
    except BrokenPipeError:
        sys.exit(3)
    sys.exit(code if isinstance(code, int) else 0)
