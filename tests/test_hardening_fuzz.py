"""Property-based fuzzing of the command line (hypothesis): every subcommand and every option,
read from the CLI's own declaration (so a new option is fuzzed without touching this file),
with hostile values (nan, inf, huge, negative, empty, very long, control characters,
undecodable bytes, special files). Whatever the arguments: a report, or exit 3 with one line
on stderr; never a traceback, never a hang, never an exit code that lies.

In-process runs cannot change the test process's namespace or start a server: entering a
namespace, serving and loading eBPF programs are replaced by a refusal (exit 3 through the
real error path), and the paths given point into a private temporary directory. A smaller
derandomized set runs the real CLI in a subprocess with raw argv bytes and an ASCII
terminal, where nothing is replaced. Examples are derandomized (no database): CI is
reproducible and bounded to about a minute.
"""

from __future__ import annotations

import os
import subprocess
import sys

import click
import pytest
import typer
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from inprocess import check_answer, run_main

from netdiag.cli import app
from netdiag.errors import NetdiagError, UsageError
from netdiag.rules import SPECS, TOPICS

from conftest import HOSTS, REPO, load_json

COMMAND = typer.main.get_command(app)
FIXTURES = [str(p) for p in sorted(HOSTS.iterdir()) if p.is_dir()]
# Options never fuzzed: they act on the user's shell configuration, not on netdiag's.
EXCLUDED = {"--install-completion", "--show-completion"}

FLOATS = ["nan", "NaN", "inf", "-inf", "+inf", "1e400", "-1", "-0", "0", "1e-300", "0.01",
          "3601", "86401", "1e9", "abc", "", " ", "0x10", "1_0"]
INTS = ["-1", "0", "1", "80", "65535", "65536", "1000", "1001", "5000", "5001",
        "99999999999999999999", "abc", "", " 7", "0x50"]
HOSTILE = ["", " ", "-", "--", "x" * 5000, "a\x00b", "\x1b[2J[/]", "[bold]x[/bold]",
           os.fsdecode(b"\xff\xfe"), "../../etc", "a/b", "\n", "é" * 100]


def _subcommands() -> dict[str, click.Command]:
    return dict(COMMAND.commands)


def _options(cmd: click.Command) -> list[click.Parameter]:
    return [p for p in cmd.params if not set(p.opts) & EXCLUDED]


def _paths(tmp: str) -> dict[str, tuple[list[str], list[str]]]:
    """(good, bad) path values per option: real ones inside the private directory, and
    broken ones."""
    return {
        "--root": (FIXTURES, [f"{tmp}/fifo-snapshot", f"{tmp}/missing", f"{tmp}/file", "",
                              "a" * 5000, "/" + "b" * 300, "a\x00b", f"{tmp}/link-to-etc"]),
        "--output": ([f"{tmp}/out/report"], [f"{tmp}/out", f"{tmp}/fifo", "", "a" * 5000,
                                             f"{tmp}/no/such/dir/x", f"{tmp}/" + "c" * 300,
                                             f"{tmp}/out/\x1b[2J"]),
        "--state-dir": ([f"{tmp}/state"], [f"{tmp}/file", f"{tmp}/fifo", "", "d" * 5000,
                                           f"{tmp}/state/\xff"]),
    }


def _range_values(param: click.Parameter, numbers: list[str]) -> tuple[list[str], list[str]]:
    """Good values inside the option's declared range (its bounds), and the hostile ones."""
    lo = getattr(param.type, "min", None)
    hi = getattr(param.type, "max", None)
    good = [str(lo)] if lo is not None else ["0"]
    if hi is not None:
        good.append(str(hi))
    if isinstance(param.type, click.FloatRange) and (lo or 0) <= 0.01:
        good.append("0.01")
    return good, numbers


def _choices(param: click.Parameter, tmp: str) -> tuple[list[str], list[str]]:
    """(good, bad) values of one option or argument."""
    opt = max(param.opts, key=len)
    name = param.name or ""
    paths = _paths(tmp)
    if opt in paths:
        return paths[opt]
    if opt == "--netns":
        return [], ["nd-does-not-exist", "default", "pid:1", "x" * 300, *HOSTILE]
    if opt == "--pid":
        return [], [str(os.getpid()), *INTS]
    if opt == "--listen":
        return (["127.0.0.1:9877", "[::1]:9877"],
                ["127.0.0.1:65536", "127.0.0.1:0", "[::1]:0", "::1:80", "nonsense", "[::1",
                 "a" * 300 + ":80", "127.0.0.1:-1", *HOSTILE])
    if opt == "--probes":
        return ["states", "states,drops"], ["nope", ",", *HOSTILE]
    if opt == "--state":
        return ["time-wait", "close-wait,listen", "ESTABLISHED"], ["bogus", ",,", *HOSTILE]
    if name == "what":
        return [*sorted(SPECS)[:5], *sorted(TOPICS)[:3]], ["no.such.id", *HOSTILE]
    if name == "name":
        return ["list", "states", "drops", "softirq"], ["bogus", *HOSTILE]
    if isinstance(param.type, click.Choice):
        return list(param.type.choices), HOSTILE
    if isinstance(param.type, (click.FloatRange, click.types.FloatParamType)):
        return _range_values(param, FLOATS)
    if isinstance(param.type, (click.IntRange, click.types.IntParamType)):
        return _range_values(param, INTS)
    return [], HOSTILE  # an option this file does not know yet: hostile text


def _values(param: click.Parameter, tmp: str) -> st.SearchStrategy[list[str]]:
    """Strategy for one option's argv words (empty list: the option is left out). Options are
    mostly left out or given good values, so that most runs reach a report; one given value
    in five is hostile (always, for options without good values here)."""
    opt = max(param.opts, key=len)
    if isinstance(param, click.Option) and param.is_flag:
        return st.sampled_from([[], [], [opt]])
    good, bad = _choices(param, tmp)
    kinds = ["good"] * 4 + ["bad"] if good else ["bad"]
    value = st.sampled_from(kinds).flatmap(
        lambda k: st.sampled_from(good if k == "good" else bad))
    if isinstance(param, click.Argument):
        return value.map(lambda v: [v])
    weight = 1 if good else 4  # options with only hostile values: seldom given
    modes = ["omit"] * (5 * weight) + ["value"] * 4 + ["bare"]
    return st.sampled_from(modes).flatmap(
        lambda m: st.just([]) if m == "omit" else st.just([opt]) if m == "bare"
        else value.map(lambda v: [opt, v]))


@st.composite
def argv(draw, tmp: str) -> list[str]:
    commands = _subcommands()
    name = draw(st.sampled_from(sorted(commands)), label="command")
    words: list[str] = [name]
    for param in _options(commands[name]):
        words += draw(_values(param, tmp), label=param.name)
    if draw(st.integers(0, 19), label="extra") == 0:
        words.append(draw(st.sampled_from(["--help", "--no-such-option", "--version",
                                           "stray"])))
    return words


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz")
    (tmp / "out").mkdir()
    (tmp / "state").mkdir()
    (tmp / "file").write_text("not a directory\n")
    os.mkfifo(tmp / "fifo")
    snap = tmp / "fifo-snapshot"
    (snap / "proc/net").mkdir(parents=True)
    os.mkfifo(snap / "proc/net/snmp")
    os.mkfifo(snap / "sockdiag.bin")
    (tmp / "link-to-etc").symlink_to("/etc")
    return str(tmp)


@pytest.fixture
def guarded(monkeypatch, sandbox):
    """The three things an in-process run must never do, refused the way netdiag refuses
    (a NetdiagError: exit 3, one line); and a private working directory."""
    from netdiag import netns, serve
    from netdiag.ebpf import session

    def no_setns(*_a, **_kw):
        raise UsageError("fuzz: entering a network namespace is refused in-process")

    def no_server(*_a, **_kw):
        raise UsageError("fuzz: serving is refused in-process")

    def no_probes(*_a, **_kw):
        raise NetdiagError("fuzz: loading eBPF programs is refused in-process")

    monkeypatch.setattr(netns, "enter", no_setns)
    monkeypatch.setattr(netns, "_setns", no_setns)
    monkeypatch.setattr(serve, "serve", no_server)
    monkeypatch.setattr(session, "run", no_probes)
    monkeypatch.chdir(sandbox)
    monkeypatch.setenv("HOME", sandbox)
    monkeypatch.setenv("XDG_STATE_HOME", sandbox + "/state")
    monkeypatch.setenv("NETDIAG_NO_PROGRESS", "1")
    return sandbox


def _consistent(res, args: list[str]) -> None:
    check_answer(res, args)
    fmt_json = "--json" in args or any(a == "json" and b in ("--format", "-f")
                                       for b, a in zip(args, args[1:]))
    if fmt_json and res.rc in (0, 1, 2) and args[0] not in ("explain", "history", "probe") \
            and "--help" not in args and "--version" not in args and res.out.strip():
        report = load_json(res.out)
        sev = {f["severity"] for f in report.get("findings", [])}
        assert res.rc == (2 if "critical" in sev else 1 if "warning" in sev else 0), args


def test_the_fuzzer_knows_every_subcommand_and_option(sandbox):
    """Every declared option gets values (a new one is fuzzed automatically)."""
    seen = set()
    for name, cmd in _subcommands().items():
        for param in _options(cmd):
            assert _values(param, sandbox) is not None
            seen.add((name, param.name))
    assert {("check", "interval"), ("serve", "listen"), ("history", "last"),
            ("sockets", "top"), ("probe", "duration"), ("explain", "what")} <= seen


@settings(max_examples=400, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_any_arguments_in_process(guarded, data):
    args = data.draw(argv(guarded), label="argv")
    encoding = data.draw(st.sampled_from(["utf-8", "ascii"]), label="terminal")
    res = run_main(args, encoding=encoding, timeout=120)
    event(f"{args[0]} exit {res.rc}")
    _consistent(res, args)


@settings(max_examples=40, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_any_arguments_in_a_real_process(sandbox, data):
    """The real CLI, nothing replaced: raw argv bytes (not UTF-8 either), an ASCII or UTF-8
    terminal. Commands that would serve, probe, or enter every namespace are left to the
    in-process test and the scenario tests."""
    args = data.draw(argv(sandbox), label="argv")
    if args[0] in ("serve", "probe") or "--all-netns" in args:
        args = [args[0], "--no-such-option"]
    raw = [a.encode("utf-8", "surrogateescape") for a in args if "\x00" not in a]
    encoding = data.draw(st.sampled_from(["utf-8", "ascii"]), label="terminal")
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONIOENCODING=encoding, HOME=sandbox,
               XDG_STATE_HOME=sandbox + "/state", NETDIAG_NO_PROGRESS="1")
    proc = subprocess.run([sys.executable.encode(), b"-m", b"netdiag", *raw],
                          capture_output=True, timeout=300, env=env, cwd=sandbox)
    from inprocess import Result

    res = Result(proc.returncode, proc.stdout.decode(encoding), proc.stderr.decode(encoding))
    _consistent(res, [a.decode("utf-8", "surrogateescape") for a in raw])
