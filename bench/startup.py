"""Benchmark: start-up. `netdiag sockets --format json` in an idle namespace, against
`ss -tan | wc -l` there and an interpreter that does nothing, and where the imports go.

    sudo python3 bench/startup.py [--runs 30]

Runs each command `--runs` times, alternating, in a fresh namespace holding no sockets, and
prints the median and spread of the wall times. Then `python -X importtime` of the same run:
netdiag's imports as they cost there, the heaviest first, and whether typer, click, rich or
any rules module other than the census's was imported (none should be). The kernel walks every
namespace's sockets for a dump: the host's TCP socket count (sockstat, all namespaces) is
printed with the figures, which mean little on a host holding many sockets elsewhere.
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
UNWANTED = ("typer", "click", "rich", "pyroute2", "bcc")


def wall(argv: list[str], env: dict) -> float:
    start = time.perf_counter()
    proc = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    if proc.returncode not in (0, 1, 2):
        raise RuntimeError(f"{argv} exited {proc.returncode}")
    return time.perf_counter() - start


def host_tcp_sockets() -> int:
    with open("/proc/net/sockstat") as fh:
        for line in fh:
            if line.startswith("TCP:"):
                fields = line.split()[1:]
                return int(dict(zip(fields[::2], fields[1::2]))["alloc"])
    return -1


def imports(ns: Namespace, argv: list[str], env: dict) -> tuple[list[tuple[str, int]], int]:
    """(top-level import, cumulative microseconds) of one run, heaviest first; their sum."""
    proc = subprocess.run(["ip", "netns", "exec", ns.name, sys.executable, "-X", "importtime",
                           *argv], capture_output=True, text=True, env=env)
    rows = []
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = line.split("|")
        if not name.startswith("  "):  # imported by the run itself, not by another import
            rows.append((name.strip(), int(cumulative)))
    rows.sort(key=lambda r: -r[1])
    return rows, sum(r[1] for r in rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=30)
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/startup.py needs root (it builds a network namespace)")
    compile_sources()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    nd = [sys.executable, "-m", "netdiag", "sockets", "--format", "json"]
    with Namespace() as ns:
        cmds = {"python -c pass": [sys.executable, "-c", "pass"],
                "ss -tan | wc -l": ["sh", "-c", "ss -tan | wc -l"],
                "netdiag sockets --format json": nd}
        times: dict[str, list[float]] = {k: [] for k in cmds}
        for _ in range(2):  # warm the page cache
            for argv in cmds.values():
                wall(["ip", "netns", "exec", ns.name, *argv], env)
        for _ in range(args.runs):
            for name, argv in cmds.items():
                times[name].append(wall(["ip", "netns", "exec", ns.name, *argv], env))
        rows, total = imports(ns, nd[1:], env)
        modules = subprocess.run(
            ["ip", "netns", "exec", ns.name, sys.executable, "-c",
             "import atexit, sys\n"
             "atexit.register(lambda: print(' '.join(sys.modules), file=sys.stderr))\n"
             "from netdiag.entry import main\nmain(['sockets', '--format', 'json'])\n"],
            capture_output=True, text=True, env=env).stderr.split()
    heavy = sorted(m for m in modules if m.split(".")[0] in UNWANTED)
    rules = sorted(m for m in modules if m.startswith("netdiag.rules."))
    result = {"machine": machine(), "host_tcp_sockets": host_tcp_sockets(), "runs": args.runs,
              "wall_ms": {k: {"median": round(statistics.median(v) * 1000, 1),
                              "min": round(min(v) * 1000, 1), "max": round(max(v) * 1000, 1)}
                          for k, v in times.items()},
              "imports_us_total": total, "imports_us": dict(rows[:12]),
              "heavy_modules_imported": heavy, "rules_modules_imported": rules}
    print(result["machine"], f"(TCP sockets on the host: {result['host_tcp_sockets']})")
    for name, w in result["wall_ms"].items():
        print(f"{name:<32}{w['median']:>8.1f} ms  (min {w['min']}, max {w['max']})")
    print(f"imports of the run (python -X importtime, top level): {total / 1000:.1f} ms")
    for name, us in rows[:12]:
        print(f"  {name:<40}{us / 1000:>7.1f} ms")
    print(f"typer/click/rich/pyroute2/bcc imported: {heavy or 'none'}; rules modules: {rules}")
    out = REPO / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "startup.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
