"""Shared test fixtures: recorded host snapshots and throwaway network namespaces."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

HERE = Path(__file__).parent
FIXTURES = HERE / "fixtures"
HOSTS = FIXTURES / "hosts"
SOCKLOAD = HERE / "helpers" / "sockload.py"
REPO = HERE.parent


def require_root(what: str) -> None:
    """Skip (with the reason) when not root; fail instead under NETDIAG_REQUIRE_ROOT=1."""
    missing = []
    if os.geteuid() != 0:
        missing.append("root")
    if shutil.which("ip") is None:
        missing.append("the `ip` command (iproute2)")
    if not missing:
        return
    reason = f"{what} needs {' and '.join(missing)}"
    if os.environ.get("NETDIAG_REQUIRE_ROOT") == "1":
        pytest.fail(f"NETDIAG_REQUIRE_ROOT=1 but {reason}")
    pytest.skip(reason)


def run_netdiag(*args: str, netns: str | None = None, check_rc=None, user: str | None = None,
                env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the real CLI in a subprocess (so setns and exit codes are exercised for real)."""
    cmd = [sys.executable, "-m", "netdiag", *args]
    if netns is not None:
        cmd += ["--netns", netns]
    if user is not None:
        cmd = ["runuser", "-u", user, "--", *cmd]
    full_env = dict(os.environ, PYTHONPATH=str(REPO), COLUMNS="100")
    full_env.update(env or {})
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=full_env,
                          cwd="/")
    if check_rc is not None:
        assert proc.returncode in check_rc, (proc.returncode, proc.stdout[-2000:],
                                              proc.stderr[-2000:])
    return proc


def run_json(*args: str, netns: str | None = None, **kw) -> tuple[dict, int]:
    proc = run_netdiag(*args, "--format", "json", netns=netns, **kw)
    assert "Traceback" not in proc.stderr, proc.stderr
    return json.loads(proc.stdout), proc.returncode


def finding(report: dict, fid: str) -> dict | None:
    return next((f for f in report["findings"] if f["id"] == fid), None)


class NetNS:
    """A fresh network namespace with loopback up; deleted (with its processes) on exit."""

    def __init__(self) -> None:
        self.name = f"nd-{uuid.uuid4().hex[:8]}"
        self.procs: list[subprocess.Popen] = []

    def __enter__(self) -> NetNS:
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        self.exec("ip", "link", "set", "lo", "up")
        return self

    def __exit__(self, *exc) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        subprocess.run(["ip", "netns", "del", self.name], check=False)

    def exec(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(["ip", "netns", "exec", self.name, *cmd], check=check,
                              capture_output=True, text=True, timeout=60)

    def sysctl(self, key: str, value: str) -> None:
        path = "/proc/sys/" + key.replace(".", "/")
        self.exec("sh", "-c", f"echo '{value}' > {path}")

    def spawn_load(self, mode: str, *args: str, ready_timeout: float = 60) -> tuple[
            subprocess.Popen, str]:
        """Start sockload.py in the namespace and wait for its READY line."""
        p = subprocess.Popen(
            ["ip", "netns", "exec", self.name, sys.executable, str(SOCKLOAD), mode, *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.procs.append(p)
        deadline = time.monotonic() + ready_timeout
        line = ""
        while time.monotonic() < deadline:
            line = p.stdout.readline()
            if line.startswith("READY") or not line:
                break
        if not line.startswith("READY"):
            err = p.stderr.read() if p.poll() is not None else ""
            raise AssertionError(f"sockload {mode} did not get ready: {line!r} {err}")
        return p, line.strip()

    def ss_counts(self, *extra: str) -> dict[str, int]:
        out = self.exec("ss", "-tanH", *extra).stdout
        counts: dict[str, int] = {}
        for line in out.splitlines():
            if line.strip():
                state = line.split()[0]
                counts[state] = counts.get(state, 0) + 1
        return counts


@pytest.fixture
def netns():
    require_root("a network-namespace scenario")
    with NetNS() as ns:
        yield ns


@pytest.fixture
def host_root():
    def get(name: str) -> Path:
        path = HOSTS / name
        assert path.is_dir(), f"missing fixture {path}"
        return path

    return get
