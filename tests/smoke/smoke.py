"""Smoke suite for the installed wheel: run the console script a user gets from
`pip install netdiag-*.whl` in a fresh virtual environment, never the checkout.

    VENV/bin/python tests/smoke/smoke.py VENV WHEEL FIXTURE

Standard library only (the environment holds netdiag and its dependencies, nothing else).
Runs every command from / with a clean environment (no PYTHONPATH), so nothing can come
from the repository. Prints one line per check and a closing "N passed, N failed" line;
exits 1 when any check failed.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

RESULTS: list[tuple[str, str | None]] = []


def check(name: str):
    def wrap(fn):
        try:
            fn()
            RESULTS.append((name, None))
            print(f"ok    {name}", flush=True)
        except Exception as exc:  # noqa: BLE001 (report every failure, keep going)
            RESULTS.append((name, f"{type(exc).__name__}: {exc}"))
            print(f"FAIL  {name}: {type(exc).__name__}: {exc}", flush=True)
        return fn

    return wrap


def main() -> int:
    venv, wheel, fixture = Path(sys.argv[1]).resolve(), Path(sys.argv[2]), sys.argv[3]
    netdiag = venv / "bin" / "netdiag"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(COLUMNS="100", NETDIAG_NO_PROGRESS="1")

    def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        proc = subprocess.run([str(netdiag), *args], capture_output=True, text=True,
                              timeout=timeout, env=env, cwd="/")
        assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
        return proc

    @check("the wheel holds every package, the probe sources and the man page")
    def _():
        names = set(zipfile.ZipFile(wheel).namelist())
        for need in ("netdiag/cli.py", "netdiag/ebpf/runtime.py", "netdiag/collect/sockets.py",
                     "netdiag/rules/_policy.py", "netdiag/render/table.py",
                     "netdiag/probes/common.h", "netdiag/probes/states.c",
                     "netdiag/readfile.py"):
            assert need in names, f"{need} missing from {wheel.name}"
        assert any(n.endswith(".data/data/share/man/man1/netdiag.1") for n in names), \
            "man page missing"

    @check("netdiag is imported from the environment, not the checkout")
    def _():
        out = subprocess.run([str(venv / "bin" / "python"), "-c",
                              "import netdiag, netdiag.ebpf.runtime as r; "
                              "print(netdiag.__file__); "
                              "print(r.probe_sources() / 'common.h')"],
                             capture_output=True, text=True, env=env, cwd="/", check=True)
        module, probes = out.stdout.split()
        assert module.startswith(str(venv)), module
        assert probes.startswith(str(venv)) and Path(probes).is_file(), probes

    @check("netdiag --version")
    def _():
        proc = run("--version")
        assert proc.returncode == 0 and re.fullmatch(r"netdiag \S+\n", proc.stdout), proc

    @check("netdiag probe list")
    def _():
        proc = run("probe", "list", "--json")
        assert proc.returncode == 0, proc.stderr
        text = proc.stdout
        for name in ("states", "backlog", "wakeups", "drops", "rcvbuf", "softirq", "resets",
                     "retrans"):
            assert name in text, name
        json.loads(text)

    @check("netdiag check --root FIXTURE --format json")
    def _():
        proc = run("check", "--root", fixture, "--format", "json")
        report = json.loads(proc.stdout)
        assert set(report) == {"schema", "command", "generated_at", "host", "all_netns",
                               "status", "findings", "facts", "errors", "not_judged"}, \
            sorted(report)
        assert report["schema"] == "netdiag/2" and report["status"] == "warning"
        assert proc.returncode == 1
        assert isinstance(report["not_judged"], list)
        for f in report["findings"]:
            assert {"id", "severity", "evidence", "explanation", "recommendation",
                    "rule"} <= set(f)
            assert set(f["rule"]) == {"text", "source"}

    @check("netdiag explain timewait.flood")
    def _():
        proc = run("explain", "timewait.flood")
        assert proc.returncode == 0 and proc.stdout.startswith("timewait.flood: ")
        assert "RULE" in proc.stdout and "WHAT TO DO" in proc.stdout

    if os.geteuid() == 0:
        @check("netdiag probe states --duration 1 (root: the ebpf package, its C sources, bcc)")
        def _():
            proc = run("probe", "states", "--duration", "1", "--json", timeout=300)
            assert proc.returncode in (0, 1, 2), proc.stderr
            report = json.loads(proc.stdout)
            assert report["status"] != "unknown"
            assert "states" in json.dumps(report["facts"])
            assert not [e for e in report["errors"] if e["collector"] == "probes"], report

    @check("the man page is installed and renders with man -l")
    def _():
        page = venv / "share" / "man" / "man1" / "netdiag.1"
        assert page.is_file(), page
        proc = subprocess.run(["man", "-l", str(page)], capture_output=True, text=True,
                              env=dict(env, MANWIDTH="80", MANPAGER="cat", PAGER="cat"),
                              timeout=60)
        text = re.sub(r".\x08", "", proc.stdout)
        assert proc.returncode == 0, proc.stderr
        assert "NAME" in text and "EXIT STATUS" in text and "netdiag check" in text
        assert not proc.stderr.strip(), proc.stderr  # groff warnings are bugs in the page

    failed = [r for r in RESULTS if r[1] is not None]
    print(f"smoke: {len(RESULTS) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
