"""Build large socket populations in throwaway network namespaces (loopback only).

Used by the benchmarks in this folder, never by the test suite. Every builder is bounded in
count and time, and the namespace (with every process in it) is deleted on exit.

    with Namespace() as ns:
        ns.build("established", 200_000)   # 100k connected pairs
        ns.build("time_wait", 100_000)     # connections closed first by the client
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import NamedTuple

REPO = Path(__file__).resolve().parent.parent

# The builder runs inside the namespace as a separate process. It holds its sockets until
# stdin closes (or --hold seconds pass).
BUILDER = r"""
import os, resource, socket, sys, time
mode, count, base_port, hold = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
per_port = int(sys.argv[5])
hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
# Source ports per destination port: established sockets may fill most of the 45536-port
# range; TIME_WAIT churn must stay far below it, or connect() slows down scanning for a free
# port (the parity cliff netdiag warns about) while TIME_WAIT expires after 60 s.
deadline = time.monotonic() + 600
keep = []
listeners = {}
def listener(port):
    s = listeners.get(port)
    if s is None:
        s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port)); s.listen(65535); listeners[port] = s
    return s
made = 0
conns = count // 2 if mode == "established" else count
for i in range(conns):
    if time.monotonic() > deadline:
        break
    port = base_port + i // per_port
    srv = listener(port)
    c = socket.create_connection(("127.0.0.1", port))
    a, _ = srv.accept()
    if mode == "established":
        keep.append(c); keep.append(a)
    else:  # time_wait: the client closes first
        c.close(); a.close()
    made += 1
print(f"READY {made}", flush=True)
end = time.monotonic() + hold
while time.monotonic() < end and sys.stdin.read(1):
    pass
"""


class Namespace:
    def __init__(self, prefix: str = "ndb") -> None:
        self.name = f"{prefix}-{uuid.uuid4().hex[:6]}"
        self.procs: list[subprocess.Popen] = []
        self.next_port = 10000

    def __enter__(self) -> Namespace:
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        self.sh("ip link set lo up")
        # Listeners use ports 10000-19999, below the source-port range (no bind collisions).
        self.sysctl("net.ipv4.ip_local_port_range", "20000 65535")
        self.sysctl("net.ipv4.tcp_max_tw_buckets", "2000000")
        self.sysctl("net.ipv4.tcp_tw_reuse", "0")
        return self

    def __exit__(self, *exc) -> None:
        for p in self.procs:
            try:
                p.stdin.close()
            except OSError:
                pass
            p.kill()
            p.wait(timeout=30)
        # and whatever they started (nginx workers, a shell's children): left running, they
        # would keep the namespace alive and load the next measurement.
        out = subprocess.run(["ip", "netns", "pids", self.name], capture_output=True,
                             text=True).stdout.split()
        for pid in (int(x) for x in out if x.isdigit()):
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        subprocess.run(["ip", "netns", "del", self.name], check=False)

    def sh(self, command: str) -> str:
        return subprocess.run(["ip", "netns", "exec", self.name, "sh", "-c", command],
                              check=True, capture_output=True, text=True).stdout

    def sysctl(self, key: str, value: str) -> None:
        self.sh(f"echo '{value}' > /proc/sys/{key.replace('.', '/')}")

    def build(self, mode: str, count: int, hold: float = 1800) -> int:
        """Create `count` sockets in `mode` ("established" or "time_wait").

        Established sockets are held by several builder processes, each within the fd hard
        limit this process may grant (a sandbox may cap it well below fs.nr_open).
        """
        import resource

        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        if mode == "time_wait":  # one churning process per core, started together
            return self._churn(count, os.cpu_count() or 1, hold)
        per_process = max(1000, min(hard, 1_000_000) - 200)
        made = 0
        while made < count:
            n = min(per_process, count - made)
            p = subprocess.Popen(
                ["ip", "netns", "exec", self.name, sys.executable, "-c", BUILDER, mode, str(n),
                 str(self.next_port), str(hold), "40000"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            self.procs.append(p)
            line = p.stdout.readline()
            if not line.startswith("READY"):
                raise RuntimeError(f"builder failed: {line!r}")
            conns = int(line.split()[1])
            made += conns * 2 if mode == "established" else conns
            self.next_port += n // 40000 + 1
        return made


    def _churn(self, count: int, workers: int, hold: float) -> int:
        per_port = 2000
        procs = []
        share = count // workers
        for _ in range(workers):
            p = subprocess.Popen(
                ["ip", "netns", "exec", self.name, sys.executable, "-c", BUILDER, "time_wait",
                 str(share), str(self.next_port), str(hold), str(per_port)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            self.procs.append(p)
            procs.append(p)
            self.next_port += share // per_port + 1
        made = 0
        for p in procs:
            line = p.stdout.readline()
            if not line.startswith("READY"):
                raise RuntimeError(f"builder failed: {line!r}")
            made += int(line.split()[1])
        return made


class Run(NamedTuple):
    wall: float  # seconds
    cpu: float  # user + system seconds of the whole process tree
    rss_kb: int  # peak RSS of the largest process in the tree, KiB
    out: str  # stdout


def measure(argv: list[str], env: dict | None = None) -> Run:
    """Run a command; return its wall and CPU seconds, peak RSS and stdout. (stderr is read
    after stdout: the commands measured here write a line or two there at most.)"""
    start = time.perf_counter()
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    out, err = p.stdout.read(), p.stderr.read()
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - start
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode not in (0, 1, 2):
        raise RuntimeError(f"{argv} failed: {err.decode()[-500:]}")
    return Run(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss, out.decode())


def compile_sources() -> None:
    """Byte-compile netdiag, as an installed package is, so that no run compiles it again."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "netdiag")],
                   check=True, stdout=subprocess.DEVNULL)


def machine() -> str:
    """A date-free description of where the figures come from."""
    import platform

    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    model = " ".join(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    cpus = len(os.sched_getaffinity(0))
    with open("/proc/meminfo") as fh:
        mem_gb = int(fh.readline().split()[1]) / 2**20
    return (f"{cpus} CPUs ({model}), {mem_gb:.0f} GB, Linux {platform.release()}, "
            f"Python {platform.python_version()}")
