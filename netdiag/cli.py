"""The command line. Commands stay thin: context -> collect -> evaluate -> render -> exit."""

from __future__ import annotations

import errno
import io
import os
import sys
from enum import Enum
from typing import Callable, List, Optional

import click
import typer

from netdiag import __version__
from netdiag.errors import NetdiagError, OutputClosedError, UsageError

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
VerboseOpt = typer.Option(False, "--verbose", "-v",
                          help="Tables: add why each finding happens and the documented rule, "
                               "and show every row.")


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


def _report(command: str, topics: list[str], plan, view: Callable, *, fmt: Format,
            as_json: bool, show_ok: bool = True, show_facts: bool = True, **opts) -> None:
    from netdiag.pipeline import Request, execute

    req = Request(command=command, topics=topics, plan=plan, view=view,
                  fmt="json" if as_json else fmt.value, show_ok=show_ok,
                  show_facts=show_facts, **opts)
    raise typer.Exit(execute(req))


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
    root: Optional[str] = RootOpt, output: Optional[str] = OutputOpt,
    state_dir: Optional[str] = StateDirOpt, all_netns: bool = AllNetnsOpt,
    probe_seconds: Optional[float] = typer.Option(
        None, "--probe-seconds", min=0.5, metavar="S",
        help="Also run the eBPF probes for S seconds and fold their evidence in."),
    probes: Optional[str] = typer.Option(
        None, "--probes", metavar="LIST",
        help="With --probe-seconds: which probes (comma-separated; default: all that can "
             "run here)."),
    verbose: bool = VerboseOpt,
) -> None:
    """Every rule on this host (or namespace): one report of findings."""
    from netdiag import views
    from netdiag.pipeline import ProbeRequest
    from netdiag.rules import TOPICS

    probe_req = None
    if probe_seconds is not None:
        from netdiag.ebpf.probes import PROBES

        names = [n.strip() for n in probes.split(",")] if probes else \
            [n for n, spec in PROBES.items() if spec.in_check]  # not softirq unless asked
        unknown = [n for n in names if n not in PROBES]
        if unknown:
            raise UsageError(f"unknown probe(s) {', '.join(unknown)}; known: "
                             f"{', '.join(PROBES)}")
        probe_req = ProbeRequest(names, probe_seconds)
    elif probes:
        raise UsageError("--probes needs --probe-seconds")
    _report("check", list(TOPICS), _plan(details=True, flow_sample=True, rxpath=True,
                                      sample_listeners=True),
            views.check_view, fmt=fmt, as_json=as_json, show_ok=False, show_facts=False,
            netns=netns, pid=pid, interval=interval, root=root, output=output,
            state_dir=state_dir, all_netns=all_netns, probes=probe_req, verbose=verbose)


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
    root: Optional[str] = RootOpt, output: Optional[str] = OutputOpt,
    state_dir: Optional[str] = StateDirOpt, all_netns: bool = AllNetnsOpt,
    verbose: bool = VerboseOpt,
) -> None:
    """Socket census: counts by state, local port, remote peer and owning process."""
    from netdiag import views

    plan = _plan(states=_parse_states(state), port=port, top=top,
                 processes="all" if processes else "targeted", sysctl_conf=False,
                 counters=False)
    _report("sockets", ["sockets"], plan, lambda f: views.sockets_view(f, top), fmt=fmt,
            as_json=as_json, netns=netns, pid=pid, interval=interval, root=root,
            output=output, state_dir=state_dir, all_netns=all_netns, verbose=verbose)


def _topic_command(topic: str, view_name: str, doc: str, **plan_kw):
    def command(
        fmt: Format = FormatOpt, as_json: bool = JsonOpt, netns: Optional[str] = NetnsOpt,
        pid: Optional[int] = PidOpt, interval: Optional[float] = IntervalOpt,
        root: Optional[str] = RootOpt, output: Optional[str] = OutputOpt,
        state_dir: Optional[str] = StateDirOpt, all_netns: bool = AllNetnsOpt,
        verbose: bool = VerboseOpt,
    ) -> None:
        from netdiag import views

        _report(topic, [topic], _plan(**plan_kw), getattr(views, view_name), fmt=fmt,
                as_json=as_json, netns=netns, pid=pid, interval=interval, root=root,
                output=output, state_dir=state_dir, all_netns=all_netns, verbose=verbose)

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
               sample_listeners=True, listener_owners=True, states={_LST, _SYNR})
_topic_command("keepalive", "keepalive_view",
               "Keepalive: time to detect a dead peer, connections without keepalive.",
               details=True, states={_EST, _LST})
_topic_command("buffers", "buffers_view",
               "Socket buffers: what limits each busy flow, autotuning, drops, TCP memory.",
               details=True, flow_sample=True, states={_EST, _LST})
_topic_command("softirq", "softirq_view",
               "Receive path: softnet_stat, NET_RX/NET_TX per CPU, ksoftirqd, NIC rings.",
               rxpath=True, link_detail=True, census=False, processes="none")


@app.command()
def sysctl(
    fmt: Format = FormatOpt, as_json: bool = JsonOpt, netns: Optional[str] = NetnsOpt,
    pid: Optional[int] = PidOpt, root: Optional[str] = RootOpt,
    output: Optional[str] = OutputOpt, verbose: bool = VerboseOpt,
) -> None:
    """Every networking sysctl the rules read: value, default, the rules that use it."""
    from netdiag import views

    plan = _plan(counters=False, sockstat=False, census=False, processes="none",
                 sysctl_conf=False, file_nr=False)
    _report("sysctl", [], plan, views.sysctl_view, fmt=fmt, as_json=as_json, netns=netns,
            pid=pid, root=root, output=output, verbose=verbose)


@app.command()
def probe(
    name: str = typer.Argument(..., metavar="NAME|list",
                               help="states, backlog, wakeups, drops, rcvbuf, softirq, "
                                    "resets, retrans, errors, or list."),
    duration: float = typer.Option(10.0, "--duration", "-d", min=0.1, metavar="S",
                                   help="How long to probe (Ctrl-C ends it early)."),
    interval: Optional[float] = typer.Option(None, "--interval", min=0.5, metavar="S",
                                             help="Also print progress every S seconds."),
    fmt: Format = FormatOpt, as_json: bool = JsonOpt, netns: Optional[str] = NetnsOpt,
    pid: Optional[int] = PidOpt, output: Optional[str] = OutputOpt,
    verbose: bool = VerboseOpt,
) -> None:
    """An eBPF probe (bcc), aggregated in the kernel, printed at the end."""
    from netdiag import views
    from netdiag.ebpf.probes import COMMON_TOPICS, PROBE_TOPICS, PROBES
    from netdiag.pipeline import ProbeRequest

    if name == "list":
        from netdiag.ebpf.session import print_status

        print_status("json" if as_json else fmt.value, sys.stdout)
        raise typer.Exit(0)
    if name not in PROBES:
        raise UsageError(f"unknown probe {name!r}; known: {', '.join(PROBES)}, list")
    plan = _plan(details=False, rxpath=name == "softirq", sysctl_conf=False,
                 processes="targeted")
    _report(f"probe {name}", PROBE_TOPICS[name] + list(COMMON_TOPICS), plan, views.probe_view,
            fmt=fmt,
            as_json=as_json, netns=netns, pid=pid, output=output,
            probes=ProbeRequest([name], duration, interval, required=True), verbose=verbose)


@app.command()
def serve(
    listen: str = typer.Option("127.0.0.1:9877", "--listen", metavar="ADDR:PORT",
                               help="Where to serve /metrics: 127.0.0.1:9877 (the default, "
                                    "loopback), [::1]:9877, 0.0.0.0:9877, [::]:9877 (IPv6 and "
                                    "IPv4)."),
    web_config: Optional[str] = typer.Option(
        None, "--web-config", metavar="FILE",
        help="TLS and basic authentication from a Prometheus exporter-toolkit web "
             "configuration file (the format of node_exporter's --web.config.file)."),
    min_interval: float = typer.Option(15.0, "--min-interval", min=0.0, metavar="S",
                                       help="Reuse a run younger than S seconds."),
    timeout: float = typer.Option(20.0, "--timeout", min=1.0, metavar="S",
                                  help="Give up on a run after S seconds."),
    max_connections: int = typer.Option(64, "--max-connections", min=1, max=100000,
                                        metavar="N",
                                        help="Client connections at once; past it idle ones "
                                             "are closed, or the new one refused (503)."),
    read_timeout: float = typer.Option(10.0, "--read-timeout", metavar="S",
                                       help="A request (and a TLS handshake) must arrive "
                                            "within S seconds."),
    write_timeout: float = typer.Option(30.0, "--write-timeout", metavar="S",
                                        help="A response must be taken within S seconds."),
    interval: Optional[float] = typer.Option(
        None, "--interval", metavar="S",
        help="Each run takes two samples S seconds apart and judges counters by their rate "
             "(must be below --timeout)."),
    netns: Optional[str] = NetnsOpt, all_netns: bool = AllNetnsOpt,
    state_dir: Optional[str] = StateDirOpt,
) -> None:
    """Prometheus exporter: /metrics runs the checks per scrape (loopback by default)."""
    from netdiag import validate
    from netdiag.serve import Exporter, Limits
    from netdiag.serve import serve as run_server

    host, port = validate.listen_address(listen)
    validate.number("--min-interval", min_interval, 0.0, 86400.0)
    validate.number("--timeout", timeout, 1.0, 3600.0)
    validate.number("--read-timeout", read_timeout, 0.1, 3600.0)
    validate.number("--write-timeout", write_timeout, 0.1, 3600.0)
    args: list[str] = []
    if interval is not None:
        validate.number("--interval", interval, 0.1, 3600.0)
        if interval >= timeout:
            raise UsageError(f"--interval {interval:g} must be below --timeout {timeout:g} "
                             "(a run takes the interval and then some)")
        args += ["--interval", f"{interval:g}"]
    if netns is not None:
        args += ["--netns", netns]
    if all_netns:
        args.append("--all-netns")
    if state_dir is not None:
        validate.path_text("--state-dir", state_dir)
        args += ["--state-dir", state_dir]
    config = None
    if web_config is not None:
        config = os.fsdecode(validate.path_text("--web-config", web_config))
    limits = Limits(max_connections=max_connections, read_timeout=read_timeout,
                    write_timeout=write_timeout)
    run_server(host, port, Exporter(args, min_interval, timeout), limits, config)


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
    from netdiag import validate
    from netdiag.historyview import show_history

    validate.path_text("--state-dir", state_dir)
    validate.text("--netns", netns, 1024)
    show_history(state_dir, netns, last, "json" if as_json else fmt.value, sys.stdout)


@app.command()
def explain(
    what: Optional[str] = typer.Argument(
        None, metavar="[TOPIC|FINDING_ID|CONCEPT]",
        help="A topic (timewait, ports, ...), a finding id, a concept (epoll, so-linger, "
             "io-models, ...) or a cause of `netdiag why` (why.econnreset.no_socket). "
             "Without it: what can be explained."),
    fmt: Format = FormatOpt, as_json: bool = JsonOpt,
) -> None:
    """The documented rule behind a topic, finding or concept (offline)."""
    from netdiag import validate
    from netdiag.explain import explain as do_explain

    validate.text("TOPIC_OR_FINDING_ID", what, 200)
    do_explain(what, "json" if as_json else fmt.value, sys.stdout)


@app.command()
def why(
    symptom: Optional[str] = typer.Argument(
        None, metavar="[SYMPTOM]",
        help="What the application saw: an errno (ECONNRESET, ETIMEDOUT...), its message "
             "('connection reset by peer'), or a word (reset, refused, timeout, ports, "
             "hang, slow). Without it: the list of symptoms."),
    port: Optional[int] = typer.Option(None, "--port", "-p", min=1, max=65535,
                                       help="Narrow the evidence to this local or remote "
                                            "port (the service's port)."),
    peer: Optional[str] = typer.Option(None, "--peer", metavar="IP[:PORT]",
                                       help="Narrow the evidence to this peer."),
    pid: Optional[int] = typer.Option(None, "--pid", metavar="PID",
                                      help="Narrow the evidence to this process (and run in "
                                           "its network namespace)."),
    probe_seconds: Optional[float] = typer.Option(
        None, "--probe-seconds", min=0.5, metavar="S",
        help="Also run the probes that decide this symptom's causes for S seconds (root)."),
    fmt: Format = FormatOpt, as_json: bool = JsonOpt, netns: Optional[str] = NetnsOpt,
    interval: Optional[float] = IntervalOpt, output: Optional[str] = OutputOpt,
    state_dir: Optional[str] = StateDirOpt, verbose: bool = VerboseOpt,
) -> None:
    """From the error an application saw to its kernel causes, ranked, with evidence."""
    from netdiag import diagnose, validate
    from netdiag.pipeline import ProbeRequest
    from netdiag.rules import TOPICS

    fmt_name = "json" if as_json else fmt.value
    if symptom is None:
        from netdiag.explain import print_symptoms

        print_symptoms(diagnose.listing(), fmt_name, sys.stdout)
        raise typer.Exit(0)
    validate.text("SYMPTOM", symptom, 300)
    found = diagnose.find(symptom)
    if found is None:
        near = diagnose.nearest(symptom)
        raise UsageError(f"unknown symptom {symptom!r}"
                         + (f"; did you mean {', '.join(near)}?" if near else "")
                         + " (`netdiag why` lists them)")
    scope = diagnose.Scope(port=port, pid=pid, **validate.peer(peer))
    probe_req = None
    if probe_seconds is not None and found.probes:
        probe_req = ProbeRequest(list(found.probes), probe_seconds)

    def conclude(facts, findings):
        return diagnose.report_parts(found, symptom, scope, facts, findings)

    _report("why", list(TOPICS), _plan(details=True, flow_sample=True, rxpath=True,
                                       sample_listeners=True, listener_owners=True),
            lambda facts: {}, fmt=fmt, as_json=as_json, show_ok=True, show_facts=True,
            netns=netns, pid=pid, interval=interval, output=output, state_dir=state_dir,
            probes=probe_req, verbose=verbose, conclude=conclude)


def main(argv: list[str] | None = None) -> None:
    """Entry point. Whatever happens, one line on stderr and an exit code that does not lie:
    0/1/2 only from a report's findings, 3 for everything else (usage errors, interruption,
    closed output, internal errors). NETDIAG_DEBUG=1 adds the traceback of internal errors."""
    import signal

    args = sys.argv[1:] if argv is None else argv
    stdout_closed = _standard_fds()
    _safe_streams(stdout_closed)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _interrupted)
    stdout = sys.stdout
    try:
        code = app(args=args, prog_name="netdiag", standalone_mode=False)
        sys.stdout.flush()
    except click.exceptions.NoArgsIsHelpError as exc:
        try:
            click.echo(exc.ctx.get_help() if exc.ctx else str(exc))
        except OSError:
            pass
        code = 3
    except click.exceptions.UsageError as exc:
        code = _fail(f"error: {exc.format_message()}")
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except Interrupted as exc:
        code = _fail(str(exc))
    except (click.exceptions.Abort, KeyboardInterrupt):
        code = _fail("interrupted")
    except (BrokenPipeError, OutputClosedError):
        code = _fail(_closed_message(stdout_closed))
    except SystemExit as exc:
        # click answers EPIPE on stdout with sys.exit(1) after wrapping the streams: that is
        # a closed output, not a warning.
        if sys.stdout is not stdout:
            code = _fail(_closed_message(stdout_closed))
        elif exc.code in (0, 3, None):
            code = exc.code or 0
        else:  # 1 and 2 come from findings only, never from a library's exit
            code = _internal(exc)
    except NetdiagError as exc:
        code = _fail(f"error: {exc}")
    except OSError as exc:
        if exc.filename is None and exc.errno in _WRITE_ERRNOS:  # stdout itself failed
            code = _fail(f"cannot write to standard output: {exc.strerror}")
        else:
            code = _internal(exc)
    except Exception as exc:  # noqa: BLE001 (a bug: say so in one line, never exit 1)
        code = _internal(exc)
    for sig in (signal.SIGINT, signal.SIGTERM):  # the answer is decided: no second one
        signal.signal(sig, signal.SIG_IGN)
    _close_stdout()
    sys.exit(code if isinstance(code, int) else 0)


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived outside a probe window (which handles its own). Not an
    Exception: the guards around collectors and rules must not swallow it."""


def _interrupted(signum, frame) -> None:  # noqa: ARG001
    import signal

    # One is enough: a second signal while netdiag winds down must not interrupt the
    # handling of the first (a traceback instead of the one line).
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    raise Interrupted("interrupted" if signum == signal.SIGINT else "terminated")


def _internal(exc: BaseException) -> int:
    if os.environ.get("NETDIAG_DEBUG") == "1":
        import traceback

        traceback.print_exception(type(exc), exc, exc.__traceback__)
    return _fail(f"internal error: {type(exc).__name__}: {exc} (NETDIAG_DEBUG=1 shows the "
                 "traceback)")


_WRITE_ERRNOS = (errno.ENOSPC, errno.EIO, errno.EDQUOT, errno.EFBIG, errno.EPIPE)


def _closed_message(at_start: bool) -> str:
    if at_start:
        return "standard output is closed; nothing was written (use --output FILE)"
    return "output closed before the report was complete (broken pipe)"


class _ClosedStdout(io.TextIOBase):
    """Stands for a stdout that was closed when netdiag started: writing to it fails like a
    closed pipe, and fd 1 itself is held on /dev/null so no file netdiag opens takes it."""

    encoding = "utf-8"
    errors = "backslashreplace"

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:
        raise BrokenPipeError(errno.EPIPE, "standard output is closed")

    def isatty(self) -> bool:
        return False


def _standard_fds() -> bool:
    """Hold fds 0-2 open (on /dev/null where closed), so that no file or socket netdiag
    opens later becomes its stdout. Returns whether stdout was closed."""
    closed = False
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            closed = closed or fd == 1
            try:
                null = os.open(os.devnull, os.O_RDWR)
                if null != fd:
                    os.dup2(null, fd)
                    os.close(null)
            except OSError:
                pass
    if closed:
        sys.stdout = _ClosedStdout()
    if sys.stderr is None:
        sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115 (fd 2 is /dev/null now)
    return closed


def _fail(message: str) -> int:
    from netdiag.render._safe import clean

    line = clean(" ".join(message.split()))  # one line, whatever the system's text held
    try:
        sys.stderr.write(f"netdiag: {line}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    return 3


def _safe_streams(skip_stdout: bool = False) -> None:
    """Text the system gave us is printed whatever the terminal's encoding: characters the
    stream cannot encode become escapes instead of a UnicodeEncodeError."""
    for stream in ((sys.stderr,) if skip_stdout else (sys.stdout, sys.stderr)):
        try:
            stream.reconfigure(errors="backslashreplace")
        except (AttributeError, ValueError):
            pass


def _close_stdout() -> None:
    """Flush stdout now; if the reader is gone, point stdout at /dev/null so the interpreter's
    own flush at exit cannot print a traceback."""
    try:
        sys.stdout.flush()
    except (BrokenPipeError, ValueError, OSError):
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass
