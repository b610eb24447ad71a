"""Real servers (nginx, redis-server) run inside a test's network namespace.

Each runs in the foreground under `ip netns exec` (which execs it: the Popen pid is the
server's own), is waited for with a deadline until its listening sockets show up, and is
stopped for sure: stopped workers are continued first, then the master is asked to quit and
every process left is killed.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

NGINX_CONF = """\
worker_processes {workers};
daemon {daemon};
master_process on;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
{servers}
}}
"""

SERVER_BLOCK = """\
    server {{
        listen {listen};
        location / {{ return 200 "ok\\n"; }}
    }}
"""


def wait_for(pred, timeout: float = 20.0, step: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(step)
    raise AssertionError("condition not reached in time")


def listening(ns, port: int) -> int:
    """LISTEN sockets on `port` in the namespace (ss -ltnH)."""
    out = ns.exec("ss", "-ltnH", f"sport = :{port}").stdout
    return sum(1 for line in out.splitlines() if line.strip())


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return [int(x) for x in fh.read().split()]
    except OSError:
        return []


def descendants(pid: int, limit: int = 64) -> set[int]:
    out: set[int] = set()
    todo = [pid]
    while todo and len(out) < limit:
        for kid in children(todo.pop()):
            if kid not in out:
                out.add(kid)
                todo.append(kid)
    return out


class Nginx:
    """nginx master + workers; `listens` are nginx `listen` parameters, one server each.

    `daemon`: let nginx daemonize, as it does in production (its binary upgrade works only
    once its parent is no longer the process that started it); the master is then found
    through its pid file."""

    def __init__(self, ns, directory: Path, listens: list[str], workers: int = 2,
                 daemon: bool = False) -> None:
        self.ns, self.dir, self.listens, self.workers_n = ns, directory, listens, workers
        self.daemon = daemon
        self.proc: subprocess.Popen | None = None
        self.pids: set[int] = set()
        self._master = 0

    def __enter__(self) -> Nginx:
        self.dir.mkdir(parents=True, exist_ok=True)
        servers = "".join(SERVER_BLOCK.format(listen=listen) for listen in self.listens)
        conf = self.dir / "nginx.conf"
        conf.write_text(NGINX_CONF.format(workers=self.workers_n, dir=self.dir,
                                          servers=servers,
                                          daemon="on" if self.daemon else "off"))
        self.proc = subprocess.Popen(
            # An absolute path: the binary upgrade re-executes argv[0] with execve().
            ["ip", "netns", "exec", self.ns.name, shutil.which("nginx") or "/usr/sbin/nginx",
             "-c", str(conf), "-p", str(self.dir)], stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE)
        ports = [int(listen.split()[0].rsplit(":", 1)[-1]) for listen in self.listens]
        try:
            if self.daemon:
                self.proc.wait(timeout=20)
                pidfile = self.dir / "nginx.pid"
                wait_for(lambda: pidfile.exists() and pidfile.read_text().strip())
                self._master = int(pidfile.read_text())
            else:
                self._master = self.proc.pid
            wait_for(lambda: all(listening(self.ns, p) for p in ports)
                     and len(children(self.master)) >= self.workers_n)
        except (AssertionError, subprocess.TimeoutExpired):
            self.__exit__()
            raise AssertionError(
                f"nginx did not start: {self.proc.stderr.read()[-500:]!r}") from None
        self.pids = {self.master, *children(self.master)}
        return self

    @property
    def master(self) -> int:
        return self._master

    def upgrade(self) -> int:
        """nginx's binary upgrade: USR2 makes the master fork and exec a new master that
        inherits the listening sockets (same fds), which starts its own workers."""
        os.kill(self.master, signal.SIGUSR2)
        new = wait_for(lambda: [p for p in children(self.master)
                                if len(children(p)) >= self.workers_n])
        self.pids |= descendants(self.master)
        return new[0]

    def workers(self) -> list[int]:
        return sorted(children(self.master))

    def __exit__(self, *exc) -> None:
        if self.proc is None:
            return
        pids = self.pids | (descendants(self.master) if self.master else set())
        for pid in pids:
            _signal(pid, signal.SIGCONT)
        if self.master:
            _signal(self.master, signal.SIGQUIT)
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        for pid in pids:
            _signal(pid, signal.SIGKILL)
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


class Redis:
    """redis-server in the foreground, no persistence."""

    def __init__(self, ns, port: int, *args: str, bind: str = "127.0.0.1") -> None:
        self.ns, self.port, self.args, self.bind = ns, port, args, bind
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> Redis:
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns.name, "redis-server", "--port", str(self.port),
             "--bind", self.bind, "--save", "", "--appendonly", "no", "--daemonize", "no",
             *self.args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for(lambda: listening(self.ns, self.port))
        except AssertionError:
            self.__exit__()
            raise
        return self

    @property
    def pid(self) -> int:
        return self.proc.pid

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
