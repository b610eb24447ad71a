"""Run netdiag's real entry point (netdiag.cli.main) inside the test process: fast enough to
fuzz hundreds of argument lists. Only for runs that cannot setns the test process or start
a server (the callers make sure: snapshots with --root, or values that fail validation, or
the guards below).

Each run gets its own stdout and stderr (bytes, decoded strictly, so an encoding error in
netdiag's output would surface here), its signal handlers are restored afterwards, and an
alarm turns a hang into a test failure.
"""

from __future__ import annotations

import io
import signal
import sys
from contextlib import contextmanager
from dataclasses import dataclass


class Hung(Exception):
    pass


@dataclass
class Result:
    rc: int
    out: str
    err: str


@contextmanager
def deadline(seconds: int):
    def alarm(signum, frame):  # noqa: ARG001
        raise Hung(f"no answer within {seconds} s")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def run_main(args: list[str], encoding: str = "utf-8", timeout: int = 60) -> Result:
    from netdiag import cli

    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    out_raw, err_raw = io.BytesIO(), io.BytesIO()
    out = io.TextIOWrapper(out_raw, encoding=encoding, errors="strict", write_through=True)
    err = io.TextIOWrapper(err_raw, encoding=encoding, errors="strict", write_through=True)
    old_out, old_err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = out, err
    rc = None
    try:
        with deadline(timeout):
            try:
                cli.main(list(args))
            except SystemExit as exc:
                rc = exc.code
    finally:
        sys.stdout, sys.stderr = old_out, old_err
        for s, h in saved.items():
            signal.signal(s, h)
    return Result(rc, out_raw.getvalue().decode(encoding), err_raw.getvalue().decode(encoding))


def check_answer(res: Result, args: list[str]) -> None:
    """What every run must give: a report (exit 0-2) or exit 3 with one line on stderr;
    never a traceback, never an internal error."""
    assert isinstance(res.rc, int) and 0 <= res.rc <= 3, (args, res)
    assert "Traceback" not in res.err, (args, res.err)
    assert "internal error" not in res.err, (args, res.err)
    if res.rc == 3:
        lines = res.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("netdiag: "), (args, res.err)
    elif "--help" not in args and "--output" not in args and "-o" not in args:
        assert res.out.strip(), (args, res)
