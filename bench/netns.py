"""Benchmark: `netdiag check --all-netns` over many namespaces with ~100 sockets each.

    sudo python3 bench/netns.py [--namespaces 200] [--sockets 100] [--runs 3]

Reports wall time and peak RSS, and the same for a quarter of the namespaces, so that memory
growing with the number of namespaces would show. Bounded, loopback only, cleans up.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from scenario import measure  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
HOLDER = r"""
import socket, sys, time
n = int(sys.argv[1]) // 2
srv = socket.socket(); srv.bind(("127.0.0.1", 7000)); srv.listen(1024)
keep = []
for _ in range(n):
    c = socket.create_connection(("127.0.0.1", 7000)); a, _ = srv.accept(); keep += [c, a]
print("READY", flush=True)
sys.stdin.read()
"""


def build(count: int, sockets: int) -> tuple[list[str], list[subprocess.Popen]]:
    names, procs = [], []
    for _ in range(count):
        name = f"ndn-{uuid.uuid4().hex[:6]}"
        subprocess.run(["ip", "netns", "add", name], check=True)
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        p = subprocess.Popen(["ip", "netns", "exec", name, sys.executable, "-c", HOLDER,
                              str(sockets)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True)
        names.append(name)
        procs.append(p)
    for p in procs:
        p.stdout.readline()
    return names, procs


def teardown(names, procs) -> None:
    for p in procs:
        p.kill()
        p.wait()
    for name in names:
        subprocess.run(["ip", "netns", "del", name], check=False)


def run(runs: int) -> tuple[float, float, int]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "netdiag", "check", "--all-netns", "--format", "json"]
    results = [measure(cmd, env) for _ in range(runs)]
    seen = len(json.loads(results[-1].out)["facts"]["namespaces"])
    return (statistics.median(r.wall for r in results),
            statistics.median(r.rss_kb for r in results) / 1024, seen)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--namespaces", type=int, default=200)
    ap.add_argument("--sockets", type=int, default=100)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/netns.py needs root")
    rows = []
    names, procs = build(args.namespaces // 4, args.sockets)
    try:
        rows.append((len(names), *run(args.runs)))
        more, more_procs = build(args.namespaces - len(names), args.sockets)
        names += more
        procs += more_procs
        rows.append((len(names), *run(args.runs)))
    finally:
        teardown(names, procs)
    print(f"{'namespaces':>10} {'seen':>6} {'wall (median)':>14} {'peak RSS':>10}")
    for count, wall, rss, seen in rows:
        print(f"{count:>10} {seen:>6} {wall:>12.2f} s {rss:>7.1f} MB")
    out = REPO / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "netns.json").write_text(json.dumps(
        [{"namespaces": c, "seen": s, "wall_s": round(w, 2), "peak_rss_mb": round(r, 1)}
         for c, w, r, s in rows], indent=2) + "\n")


if __name__ == "__main__":
    main()
