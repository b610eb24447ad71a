"""The start-up path: netdiag.entry reads the report commands' plain invocations without typer,
click or rich, and must mean exactly what netdiag.cli's declarations mean."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import subprocess
import sys

import click
import pytest
import typer

from netdiag import cli, commands, entry, pipeline

from conftest import HOSTS, REPO, NetNS, require_root

BUSY = str(HOSTS / "linux-6.18-busy")


def _click_commands() -> dict[str, click.Command]:
    return typer.main.get_command(cli.app).commands


def _declared(command: click.Command) -> dict[str, entry.Opt]:
    """The typer declaration of a command's options, in the fast path's terms."""
    out = {}
    for param in command.params:
        if not isinstance(param, click.Option) or param.name == "help":
            continue
        # What the table cannot express: the fast path must not take such a command.
        assert param.envvar is None and param.callback is None, param.name
        assert param.nargs == 1 and not param.count and not param.required, param.name
        assert not param.hidden and not param.secondary_opts, param.name
        t = param.type
        low = high = None
        if param.is_flag:
            kind = "flag"
        elif param.multiple:
            kind = "multi"
        elif isinstance(t, click.Choice):
            kind = "format"
            assert tuple(t.choices) == entry.FORMATS or [c.value for c in t.choices] == list(
                entry.FORMATS)
        elif isinstance(t, (click.IntRange, click.FloatRange)) or t in (click.INT,
                                                                         click.FLOAT):
            kind = "int" if isinstance(t, (click.IntRange, type(click.INT))) else "float"
            low, high = getattr(t, "min", None), getattr(t, "max", None)
            assert not getattr(t, "min_open", False) and not getattr(t, "max_open", False)
            assert not getattr(t, "clamp", False)
        else:
            assert t == click.STRING, (param.name, t)
            kind = "str"
        for name in param.opts:
            out[name] = entry.Opt(param.name, kind, low, high)
    return out


@pytest.mark.parametrize("name", sorted(entry.OPTIONS))
def test_fast_options_are_the_typer_declarations(name):
    command = _click_commands()[name]
    assert entry.OPTIONS[name] == _declared(command)
    # No positional arguments the fast path would have to know about.
    assert not [p for p in command.params if isinstance(p, click.Argument)]


@pytest.mark.parametrize("name", sorted(entry.OPTIONS))
def test_defaults_are_the_typer_defaults(name):
    """An option left out means the same on both paths: netdiag.commands' defaults are the
    declared ones."""
    fn = {"check": commands.check, "sockets": commands.sockets,
          "sysctl": commands.sysctl}.get(name, commands.topic)
    sig = inspect.signature(fn).parameters
    for param in _click_commands()[name].params:
        if not isinstance(param, click.Option) or param.name == "help":
            continue
        default = param.default
        default = getattr(default, "value", default)  # the Format enum
        if param.multiple:
            default = list(default or []) or None
        assert sig[param.name].default == default, (name, param.name)


def _requests(monkeypatch, args: list[str]) -> tuple[pipeline.Request, pipeline.Request]:
    """The Request each path builds for args (the pipeline itself is not run)."""
    seen: list[pipeline.Request] = []

    def execute(req):
        seen.append(req)
        return 0

    monkeypatch.setattr(pipeline, "execute", execute)
    assert entry.parse(args) is not None, "the fast path should read these"
    assert entry.dispatch(args) == 0
    assert cli.run(args) == 0
    assert len(seen) == 2
    return seen[0], seen[1]


def _comparable(req: pipeline.Request) -> dict:
    out = dataclasses.asdict(dataclasses.replace(req, view=None, plan=None))
    view = req.view
    out["view"] = ((view.func, view.args, view.keywords)
                   if isinstance(view, functools.partial) else view)
    out["plan"] = req.plan
    return out


CASES = [
    ["sockets"],
    ["sockets", "--format", "json"],
    ["sockets", "--json", "-s", "time-wait", "--state=close-wait,listen", "-p", "80",
     "--top", "5", "-P", "-v"],
    ["sockets", "--port=0", "--top=1000", "--netns", "", "--interval", "0"],
    ["check"],
    ["check", "--format=prometheus", "--interval", "2.5", "--state-dir", "/tmp/x"],
    ["check", "--probe-seconds", "1", "--probes", "states,backlog", "-f", "nagios"],
    ["check", "--all-netns", "--output", "/tmp/x.prom", "-o", "/tmp/y.prom"],
    ["sysctl", "--root", "/x", "--pid", "12", "--json"],
    *([name, "--netns", "x", "-f", "table", "--verbose", "--state-dir", "auto"]
      for name in commands.TOPIC_COMMANDS),
]


@pytest.mark.parametrize("args", CASES, ids=" ".join)
def test_fast_path_builds_the_request_typer_builds(monkeypatch, args):
    fast, typed = _requests(monkeypatch, args)
    assert _comparable(fast) == _comparable(typed)


@pytest.mark.parametrize("args", [
    [], ["--version"], ["--help"], ["sockets", "--help"], ["check", "-h"],
    ["sockets", "-fjson"], ["sockets", "--top", "0"], ["sockets", "--top", "abc"],
    ["sockets", "--top", "+5"], ["sockets", "--port", "70000"], ["sockets", "--pid", "-1"],
    ["sockets", "--interval", "1e3"], ["sockets", "--interval", "-1"],
    ["sockets", "--interval", "nan"], ["check", "--probe-seconds", "0.1"],
    ["sockets", "--json=1"], ["sockets", "--netns"], ["sockets", "--netns", "-x"],
    ["sockets", "extra"], ["sockets", "--"], ["sockets", "--format", "JSON"],
    ["sockets", "--netns", "caf\udcc3"], ["sysctl", "--interval", "1"],
    ["probe", "states"], ["explain", "timewait"], ["history"], ["serve"],
    ["sockets", "--top", "٣"], ["sockets", "--pid", "9" * 5000], ["sockets", "--port", "1" * 40],
])
def test_what_the_fast_path_does_not_read_goes_to_typer(args):
    assert entry.parse(args) is None


def test_completion_goes_to_typer(monkeypatch):
    monkeypatch.setenv("_NETDIAG_COMPLETE", "complete_bash")
    assert entry.parse(["sockets"]) is None


def _modules_after(*args: str, netns: NetNS | None = None) -> set[str]:
    """The modules a real run of netdiag imported (the entry point, as the console script
    calls it), printed at exit."""
    code = ("import atexit, sys\n"
            "atexit.register(lambda: print('\\n'.join(sorted(sys.modules)), file=sys.stderr))\n"
            "from netdiag.entry import main\n"
            f"main({list(args)!r})\n")
    cmd = [sys.executable, "-c", code]
    if netns is not None:
        cmd = ["ip", "netns", "exec", netns.name, *cmd]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    assert proc.returncode in (0, 1, 2), proc.stderr[-2000:]
    assert proc.stdout.lstrip().startswith("{")
    return set(proc.stderr.split())


def _heavy(modules: set[str]) -> set[str]:
    return {m for m in modules if m.split(".")[0] in ("rich", "typer", "click", "pyroute2",
                                                      "bcc", "sqlite3")}


def test_a_census_in_json_imports_no_rich_typer_or_other_topics_rules():
    modules = _modules_after("sockets", "--root", BUSY, "--format", "json")
    assert not _heavy(modules)
    rules = {m for m in modules if m.startswith("netdiag.rules.")}
    assert rules == {"netdiag.rules.sockets", "netdiag.rules._util"}, rules
    assert "netdiag.cli" not in modules and "netdiag.render.table" not in modules


def test_check_in_json_imports_no_rich_or_typer():
    modules = _modules_after("check", "--root", BUSY, "--json")
    assert not _heavy(modules)
    assert "netdiag.rules.timewait" in modules  # check judges every topic


def test_a_live_census_in_a_namespace_imports_no_rich_or_typer():
    require_root("a census in a namespace of our own")
    with NetNS() as ns:
        modules = _modules_after("sockets", "--format", "json", netns=ns)
    assert not _heavy(modules)


def test_help_and_the_typer_path_still_work():
    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "netdiag", *args], capture_output=True,
                              text=True, timeout=120, env={"PYTHONPATH": str(REPO)})

    top = run("--help")
    assert top.returncode == 0 and "sockets" in top.stdout and "Commands" in top.stdout
    sub = run("sockets", "--help")
    assert sub.returncode == 0 and "--processes" in sub.stdout and "--top" in sub.stdout
    bad = run("sockets", "--top", "0", "--root", BUSY)
    assert bad.returncode == 3 and bad.stderr.startswith("netdiag: error: ")
    assert "--top" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    unknown = run("sockets", "--state", "nosuch", "--root", BUSY)  # fast path, same words
    assert unknown.returncode == 3
    assert unknown.stderr.strip() == ("netdiag: error: unknown TCP state 'nosuch' (e.g. "
                                      "established, time-wait, close-wait, listen)")
