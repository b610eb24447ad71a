"""Benchmark: `netdiag sockets --format json` against `ss -tan | wc -l` on the same sockets.

    sudo python3 bench/census.py [--sockets 200000] [--state established|time_wait] [--runs 5]
                                 [--processes] [--command sockets|check]

`--command check` times `netdiag check` (every non-probe rule, one pass over the socket table
with tcp_info) instead of the census.

Builds the sockets in a fresh namespace, runs each command `--runs` times inside it, and
prints medians of wall time and peak RSS and their ratio. Needs root (namespaces).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from scenario import Namespace, measure  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sockets", type=int, default=200_000)
    ap.add_argument("--state", choices=["established", "time_wait"], default="established")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--processes", action="store_true",
                    help="compare `netdiag sockets --processes` with `ss -tanp`")
    ap.add_argument("--command", choices=["sockets", "check"], default="sockets")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/census.py needs root (it builds a network namespace)")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    with Namespace() as ns:
        made = ns.build(args.state, args.sockets)
        exec_ns = ["ip", "netns", "exec", ns.name]
        ss = "ss -tanp | wc -l" if args.processes else "ss -tan | wc -l"
        nd = [sys.executable, "-m", "netdiag", args.command, "--format", "json"]
        if args.processes:
            nd.append("--processes")
        rows = {"ss": [], "netdiag": []}
        for _ in range(args.runs):
            rows["ss"].append(measure(exec_ns + ["sh", "-c", ss], env))
            rows["netdiag"].append(measure(exec_ns + nd, env))
        facts = json.loads(rows["netdiag"][-1][2])["facts"]
        counted = (facts.get("summary") or facts.get("sockets"))["total"]
        lines = int(rows["ss"][-1][2].split()[0]) - 1
    med = {k: (statistics.median(r[0] for r in v), statistics.median(r[1] for r in v))
           for k, v in rows.items()}
    result = {
        "sockets_built": made, "state": args.state, "processes": args.processes,
        "netdiag_counted": counted, "ss_counted": lines, "runs": args.runs,
        "ss_wall_s": round(med["ss"][0], 3), "ss_peak_rss_mb": round(med["ss"][1] / 1024, 1),
        "netdiag_wall_s": round(med["netdiag"][0], 3),
        "netdiag_peak_rss_mb": round(med["netdiag"][1] / 1024, 1),
        "wall_ratio": round(med["netdiag"][0] / med["ss"][0], 2),
    }
    print(f"{'command':<34}{'wall (median)':>15}{'peak RSS':>12}")
    print(f"{ss:<34}{result['ss_wall_s']:>13.3f} s{result['ss_peak_rss_mb']:>9.1f} MB")
    print(f"{' '.join(nd[1:]):<34}{result['netdiag_wall_s']:>13.3f} s"
          f"{result['netdiag_peak_rss_mb']:>9.1f} MB")
    print(f"ratio netdiag/ss: {result['wall_ratio']}x   sockets: built {made}, "
          f"ss {lines}, netdiag {counted}")
    out = REPO / "bench" / "results"
    out.mkdir(exist_ok=True)
    name = (f"{args.command}-{args.state}-{args.sockets}{'-p' if args.processes else ''}"
            ".json")
    (out / name).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
