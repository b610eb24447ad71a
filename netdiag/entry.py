"""The entry point (console script `netdiag`, `python -m netdiag`): one exit code that does not
lie and one line on stderr, whatever happens.

Start-up is part of every cron run and every scrape, and importing typer and click alone costs
more than a census of an idle namespace. So the report commands' plain invocations (the
options of netdiag.cli's declarations, spelled `--opt value`, `--opt=value` or `-o value`) are
read here, by a table of the same options, and run through netdiag.commands without importing
either. Everything else (help, completion, other commands, anything this table does not know
or cannot convert exactly as click would) goes to the typer application in netdiag.cli, which
stays the declaration of the interface: a test holds this table to it, option by option.
"""

from __future__ import annotations

import errno
import io
import os
import sys
from typing import NamedTuple

from netdiag.errors import CLOSED_AT_START, Interrupted, NetdiagError, OutputClosedError


class Opt(NamedTuple):
    """One option of a hot command: the parameter it sets and how its value is read."""

    param: str
    kind: str  # "flag", "str", "int", "float", "format" or "multi" (a repeatable str)
    low: float | None = None  # inclusive bounds, as click's IntRange/FloatRange check them
    high: float | None = None


FORMATS = ("table", "json", "prometheus", "nagios")

_REPORT = {
    "--format": Opt("fmt", "format"), "-f": Opt("fmt", "format"),
    "--json": Opt("as_json", "flag"),
    "--verbose": Opt("verbose", "flag"), "-v": Opt("verbose", "flag"),
    "--netns": Opt("netns", "str"),
    "--pid": Opt("pid", "int"),
    "--root": Opt("root", "str"),
    "--output": Opt("output", "str"), "-o": Opt("output", "str"),
}
_LIVE = {
    **_REPORT,
    "--interval": Opt("interval", "float", 0.0),
    "--state-dir": Opt("state_dir", "str"),
    "--all-netns": Opt("all_netns", "flag"),
}
# Command -> its options, as netdiag.cli declares them (tests/test_entry.py compares).
OPTIONS: dict[str, dict[str, Opt]] = {
    "check": {**_LIVE, "--probe-seconds": Opt("probe_seconds", "float", 0.5),
              "--probes": Opt("probes", "str")},
    "sockets": {**_LIVE, "--state": Opt("state", "multi"), "-s": Opt("state", "multi"),
                "--port": Opt("port", "int", 0, 65535), "-p": Opt("port", "int", 0, 65535),
                "--top": Opt("top", "int", 1, 1000),
                "--processes": Opt("processes", "flag"), "-P": Opt("processes", "flag")},
    "sysctl": dict(_REPORT),
    **{name: dict(_LIVE) for name in ("timewait", "closewait", "ports", "backlog", "keepalive",
                                      "buffers", "softirq")},
}

_NOT_READ = object()


def _value(opt: Opt, text: str):
    """The value click would give, or _NOT_READ when this parser should not decide (click
    then reads it, and reports it if it is wrong)."""
    if opt.kind in ("str", "multi"):
        return text
    if opt.kind == "format":
        return text if text in FORMATS else _NOT_READ
    if not text.isascii() or len(text) > 32:  # beyond any bound: click says what is wrong
        return _NOT_READ
    if opt.kind == "int":
        if not text.isdigit():
            return _NOT_READ
        value: float = int(text)
    elif text.replace(".", "", 1).isdigit():  # float: digits with at most one point
        value = float(text)
    else:
        return _NOT_READ
    if (opt.low is not None and value < opt.low) or (opt.high is not None and value > opt.high):
        return _NOT_READ
    return value


def parse(args: list[str]) -> tuple[str, dict] | None:
    """(command, keyword arguments for netdiag.commands) when args are a plain invocation of a
    report command; None when typer should read them."""
    if not args or "_NETDIAG_COMPLETE" in os.environ:
        return None
    command, rest = args[0], args[1:]
    table = OPTIONS.get(command)
    if table is None:
        return None
    kw: dict = {}
    i = 0
    while i < len(rest):
        arg = rest[i]
        if any("\udc80" <= c <= "\udcff" for c in arg):  # undecodable bytes: click's call
            return None
        name, eq, inline = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        opt = table.get(name)
        if opt is None:
            return None  # --help, an unknown option, a positional argument, `--`, -fjson
        i += 1
        if opt.kind == "flag":
            if eq:
                return None
            kw[opt.param] = True
            continue
        if eq:
            text = inline
        else:
            if i >= len(rest):
                return None
            text = rest[i]
            i += 1
            if text.startswith("-") or any("\udc80" <= c <= "\udcff" for c in text):
                return None
        value = _value(opt, text)
        if value is _NOT_READ:
            return None
        if opt.kind == "multi":
            kw.setdefault(opt.param, []).append(value)
        else:
            kw[opt.param] = value
    return command, kw


def run_fast(command: str, kw: dict) -> int:
    from netdiag import commands

    if command == "check":
        return commands.check(**kw)
    if command == "sockets":
        return commands.sockets(**kw)
    if command == "sysctl":
        return commands.sysctl(**kw)
    return commands.topic(command, **kw)


def dispatch(args: list[str]) -> int:
    parsed = parse(args)
    if parsed is None:
        from netdiag.cli import run

        return run(args)
    code = run_fast(*parsed)
    sys.stdout.flush()
    return code


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
        code = dispatch(args)
    except Interrupted as exc:
        code = fail(str(exc))
    except KeyboardInterrupt:
        code = fail("interrupted")
    except (BrokenPipeError, OutputClosedError):
        code = fail(_closed_message(stdout_closed))
    except SystemExit as exc:
        # click answers EPIPE on stdout with sys.exit(1) after wrapping the streams: that is
        # a closed output, not a warning.
        if sys.stdout is not stdout:
            code = fail(_closed_message(stdout_closed))
        elif exc.code in (0, 3, None):
            code = exc.code or 0
        else:  # 1 and 2 come from findings only, never from a library's exit
            code = _internal(exc)
    except NetdiagError as exc:
        code = fail(f"error: {exc}")
    except OSError as exc:
        if exc.filename is None and exc.errno in _WRITE_ERRNOS:  # stdout itself failed
            code = fail(f"cannot write to standard output: {exc.strerror}")
        else:
            code = _internal(exc)
    except Exception as exc:  # noqa: BLE001 (a bug: say so in one line, never exit 1)
        code = _internal(exc)
    for sig in (signal.SIGINT, signal.SIGTERM):  # the answer is decided: no second one
        signal.signal(sig, signal.SIG_IGN)
    _close_stdout()
    sys.exit(code if isinstance(code, int) else 0)




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
    return fail(f"internal error: {type(exc).__name__}: {exc} (NETDIAG_DEBUG=1 shows the "
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
            CLOSED_AT_START.add(fd)
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


def fail(message: str) -> int:
    """Say why on stderr, in one line; returns exit code 3."""
    from netdiag.render._safe import clean

    line = clean(" ".join(message.split()))  # one line, whatever the system's text held
    try:
        sys.stderr.write(f"netdiag: {line}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    return 3


def _safe_streams(skip_stdout: bool = False) -> None:
    """Text is printed whatever the terminal's encoding: netdiag's own symbols (·, …, ─)
    become ASCII (".", "...", "-") and other characters the stream cannot encode \\uNNNN,
    instead of a UnicodeEncodeError (render._safe.ASCII_FALLBACK)."""
    from netdiag.render._safe import register_fallback

    errors = register_fallback()
    for stream in ((sys.stderr,) if skip_stdout else (sys.stdout, sys.stderr)):
        try:
            stream.reconfigure(errors=errors)
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

