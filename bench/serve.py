"""Benchmark: what a scrape of `netdiag serve` costs on a host with many sockets.

    sudo python3 bench/serve.py [--sockets 200000] [--scrapes 5]

Builds the sockets in a fresh namespace and starts the exporter inside it twice:
- with `--min-interval 0`, every scrape runs `netdiag check --format prometheus` in a child
  process: CPU seconds (the exporter and its reaped children, from /proc/PID/stat) and wall
  time per scrape;
- with a `--min-interval` longer than the scrapes take, the first scrape runs the check and
  the next ones are answered from its cached result: CPU seconds per cached scrape.
Scrapes are made from inside the namespace (curl, loopback). Needs root.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from scenario import Namespace, compile_sources, machine  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
PORT = 19877


def cpu_seconds(pid: int) -> float:
    """utime + stime + cutime + cstime of pid (its children once reaped), in seconds."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def scrape(ns: Namespace) -> float:
    start = time.perf_counter()
    out = subprocess.run(["ip", "netns", "exec", ns.name, "curl", "-sS", "-o", "/dev/null",
                          "-w", "%{http_code}", "--max-time", "120",
                          f"http://127.0.0.1:{PORT}/metrics"],
                         capture_output=True, text=True, timeout=150)
    if out.stdout != "200":
        raise RuntimeError(f"scrape answered {out.stdout!r} {out.stderr}")
    return time.perf_counter() - start


def serve(ns: Namespace, env: dict, min_interval: float) -> subprocess.Popen:
    proc = subprocess.Popen(["ip", "netns", "exec", ns.name, sys.executable, "-m", "netdiag",
                             "serve", "--listen", f"127.0.0.1:{PORT}", "--timeout", "120",
                             "--min-interval", str(min_interval)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # listening yet? (connect from inside the namespace)
        probe = subprocess.run(["ip", "netns", "exec", ns.name, sys.executable, "-c",
                                f"import socket; socket.create_connection(('127.0.0.1', {PORT}),"
                                " timeout=1).close()"], capture_output=True)
        if probe.returncode == 0:
            return proc
        if proc.poll() is not None:
            raise RuntimeError(f"serve exited: {proc.stderr.read()[-500:]}")
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("serve did not listen within 60 s")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def measure(ns: Namespace, env: dict, min_interval: float, scrapes: int) -> dict:
    proc = serve(ns, env, min_interval)
    try:
        walls, cpus = [], []
        for _ in range(scrapes):
            before = cpu_seconds(proc.pid)
            walls.append(scrape(ns))
            time.sleep(0.3)  # let the exporter reap its child: its CPU counts once reaped
            cpus.append(cpu_seconds(proc.pid) - before)
    finally:
        stop(proc)
    return {"min_interval_s": min_interval, "scrapes": scrapes,
            "cpu_s_per_scrape": [round(c, 3) for c in cpus],
            "wall_s_per_scrape": [round(w, 3) for w in walls],
            "cpu_median_s": round(statistics.median(cpus), 3),
            "wall_median_s": round(statistics.median(walls), 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sockets", type=int, default=200_000)
    ap.add_argument("--scrapes", type=int, default=5)
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/serve.py needs root (it builds a network namespace)")
    compile_sources()
    env = dict(os.environ, PYTHONPATH=str(REPO), NETDIAG_NO_PROGRESS="1")
    with Namespace() as ns:
        made = ns.build("established", args.sockets)
        fresh = measure(ns, env, 0, args.scrapes)
        cached = measure(ns, env, 3600, args.scrapes + 1)
    # The cached run's first scrape ran the check; the others were answered from it.
    result = {"machine": machine(), "sockets": made, "every_scrape_runs_the_check": fresh,
              "cached": cached,
              "cached_scrape_cpu_median_s": round(statistics.median(
                  cached["cpu_s_per_scrape"][1:]), 4)}
    print(result["machine"])
    print(f"{made} sockets: a scrape that runs the check: {fresh['cpu_median_s']} s CPU, "
          f"{fresh['wall_median_s']} s wall (median of {args.scrapes}); a scrape answered "
          f"from the cached run: {result['cached_scrape_cpu_median_s']} s CPU")
    out = REPO / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / f"serve-{args.sockets}.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
