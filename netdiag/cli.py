"""The command line, declared with typer. Commands stay thin: each calls netdiag.commands,
which builds the request and runs the pipeline (context -> collect -> evaluate -> render).

The plain invocations of the report commands are read without typer by netdiag.entry (start-up
time), from a table of these same options; tests/test_entry.py holds that table to these
declarations."""

from __future__ import annotations

import os
import sys
from enum import Enum
from typing import List, Optional

import click
import typer

from netdiag import __version__, commands
from netdiag.entry import fail
from netdiag.entry import main as main  # the console script's entry point (netdiag.entry)
from netdiag.errors import UsageError
from netdiag.render._safe import quoted

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
    raise typer.Exit(commands.check(
        fmt=fmt.value, as_json=as_json, netns=netns, pid=pid, interval=interval, root=root,
        output=output, state_dir=state_dir, all_netns=all_netns, probe_seconds=probe_seconds,
        probes=probes, verbose=verbose))


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
    raise typer.Exit(commands.sockets(
        state=state, port=port, top=top, processes=processes, fmt=fmt.value, as_json=as_json,
        netns=netns, pid=pid, interval=interval, root=root, output=output,
        state_dir=state_dir, all_netns=all_netns, verbose=verbose))


def _topic_command(topic: str, doc: str):
    def command(
        fmt: Format = FormatOpt, as_json: bool = JsonOpt, netns: Optional[str] = NetnsOpt,
        pid: Optional[int] = PidOpt, interval: Optional[float] = IntervalOpt,
        root: Optional[str] = RootOpt, output: Optional[str] = OutputOpt,
        state_dir: Optional[str] = StateDirOpt, all_netns: bool = AllNetnsOpt,
        verbose: bool = VerboseOpt,
    ) -> None:
        raise typer.Exit(commands.topic(
            topic, fmt=fmt.value, as_json=as_json, netns=netns, pid=pid, interval=interval,
            root=root, output=output, state_dir=state_dir, all_netns=all_netns,
            verbose=verbose))

    command.__doc__ = doc
    command.__name__ = topic
    app.command(name=topic)(command)


for _name, (_, _doc, _) in commands.TOPIC_COMMANDS.items():
    _topic_command(_name, _doc)


@app.command()
def sysctl(
    fmt: Format = FormatOpt, as_json: bool = JsonOpt, netns: Optional[str] = NetnsOpt,
    pid: Optional[int] = PidOpt, root: Optional[str] = RootOpt,
    output: Optional[str] = OutputOpt, verbose: bool = VerboseOpt,
) -> None:
    """Every networking sysctl the rules read: value, default, the rules that use it."""
    raise typer.Exit(commands.sysctl(fmt=fmt.value, as_json=as_json, netns=netns, pid=pid,
                                     root=root, output=output, verbose=verbose))


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
        raise UsageError(f"unknown probe {quoted(name)}; known: {', '.join(PROBES)}, list")
    plan = commands.plan(details=False, rxpath=name == "softirq", sysctl_conf=False,
                         processes="targeted")
    raise typer.Exit(commands.report(
        f"probe {name}", PROBE_TOPICS[name] + list(COMMON_TOPICS), plan, views.probe_view,
        fmt=fmt.value,
        as_json=as_json, netns=netns, pid=pid, output=output,
        probes=ProbeRequest([name], duration, interval, required=True), verbose=verbose))


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
    raise typer.Exit(commands.why(
        symptom, port=port, peer=peer, pid=pid, probe_seconds=probe_seconds, fmt=fmt.value,
        as_json=as_json, netns=netns, interval=interval, output=output, state_dir=state_dir,
        verbose=verbose))


def run(args: list[str]) -> int:
    """The typer application on args (netdiag.entry.main calls it for what it does not read
    itself, and handles everything but click's own outcomes, which become exit codes here)."""
    try:
        code = app(args=args, prog_name="netdiag", standalone_mode=False)
        sys.stdout.flush()
        return code
    except click.exceptions.NoArgsIsHelpError as exc:
        try:
            click.echo(exc.ctx.get_help() if exc.ctx else str(exc))
        except OSError:
            pass
        return 3
    except click.exceptions.UsageError as exc:
        return fail(f"error: {exc.format_message()}")
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.exceptions.Abort:
        return fail("interrupted")
