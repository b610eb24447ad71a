"""Benchmark: `netdiag sockets --format json` against `ss -tan | wc -l` on the same sockets.

    sudo python3 bench/census.py [--sockets 200000] [--state established|time_wait] [--runs 5]
                                 [--processes] [--command sockets|check]

`--command check` times `netdiag check` (every non-probe rule, one pass over the socket table
with tcp_info) instead of the census; `--processes` compares `sockets --processes` with
`ss -tanp`.

Builds the sockets in a fresh namespace and runs each command `--runs` times inside it,
alternating (ss first, then netdiag, then netdiag first...), so that a change in the host's
load touches both. Prints the median, the fastest and the slowest run of each, CPU time and
peak RSS (of the whole process tree), and the ratio of the medians. Then it checks that
netdiag counted what ss shows, per state, family, local port and destination (and exits 1 if
not), and that the socket table did not change while it was being measured (TIME_WAIT sockets
expire after 60 s: a time_wait run must be over before). Needs root (namespaces).

Python files are byte-compiled first (as an installed package is): without it every run would
compile netdiag's sources again (PYTHONDONTWRITEBYTECODE, a read-only checkout).
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
from scenario import Namespace, compile_sources, machine, measure  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
TIME_WAIT_LIFE = 60.0  # TCP_TIMEWAIT_LEN (include/net/tcp.h)
SS_STATES = {"ESTAB": "ESTABLISHED", "TIME-WAIT": "TIME_WAIT", "CLOSE-WAIT": "CLOSE_WAIT",
             "LISTEN": "LISTEN", "SYN-SENT": "SYN_SENT", "SYN-RECV": "SYN_RECV",
             "FIN-WAIT-1": "FIN_WAIT1", "FIN-WAIT-2": "FIN_WAIT2", "LAST-ACK": "LAST_ACK",
             "CLOSING": "CLOSING", "UNCONN": "CLOSE"}


def ss_table(ns: Namespace) -> dict:
    """What ss shows, grouped the way the census groups: by state, by family and state, by
    local port and state (connections to a listening or fixed port), by peer address and
    state, by source, destination and port (outgoing connections: an ephemeral local port
    that is not listening)."""
    eph = tuple(int(x) for x in ns.sh("cat /proc/sys/net/ipv4/ip_local_port_range").split())
    rows = []
    for line in ns.sh("ss -tanH").splitlines():
        state, _, _, local, peer = line.split()[:5]
        laddr, lport = local.rsplit(":", 1)
        paddr, pport = peer.rsplit(":", 1)
        family = "ipv6" if laddr.startswith("[") or laddr == "*" else "ipv4"
        rows.append((SS_STATES[state], family, laddr.strip("[]").removeprefix("::ffff:"),
                     int(lport), paddr.strip("[]").removeprefix("::ffff:"),
                     int(pport) if pport != "*" else 0))
    listening = {r[3] for r in rows if r[0] == "LISTEN"}
    out: dict = {"total": len(rows), "by_state": {}, "by_family_state": {}, "by_port": {},
                 "by_peer": {}, "by_destination": {}}

    def add(table: str, key: str) -> None:
        out[table][key] = out[table].get(key, 0) + 1

    for state, family, laddr, lport, paddr, pport in rows:
        add("by_state", state)
        fam = out["by_family_state"].setdefault(family, {})
        fam[state] = fam.get(state, 0) + 1
        if state == "LISTEN":
            continue
        add("by_peer", f"{paddr} {state}")
        if eph[0] <= lport <= eph[1] and lport not in listening:
            add("by_destination", f"{laddr} {paddr} {pport}")
        else:
            add("by_port", f"{lport} {state}")
    return out


def netdiag_table(ns: Namespace, env: dict) -> dict:
    """The same groupings from netdiag's own JSON (`sockets --top 1000`, and `ports`, whose
    destinations are its top 20: each of those must be exact)."""
    def run(*args: str) -> dict:
        proc = subprocess.run(["ip", "netns", "exec", ns.name, sys.executable, "-m", "netdiag",
                               *args, "--format", "json"], capture_output=True, text=True,
                              env=env, timeout=600)
        if proc.returncode not in (0, 1, 2):
            raise RuntimeError(f"netdiag {args} failed: {proc.stderr[-500:]}")
        return json.loads(proc.stdout)["facts"]

    facts = run("sockets", "--top", "1000")
    out: dict = {"total": facts["summary"]["total"], "by_state": facts["summary"]["by_state"],
                 "by_family_state": facts["by_family_and_state"], "by_port": {},
                 "by_peer": {}, "by_destination": {}}
    for table, rows, key in (("by_port", facts["by_local_port"], "local_port"),
                             ("by_peer", facts["by_peer"], "peer")):
        for row in rows:
            for state, n in row["states"].items():
                out[table][f"{row[key]} {state}"] = n
    for row in run("ports").get("outgoing_by_destination", []):
        out["by_destination"][f"{row['source']} {row['destination']} {row['port']}"] = \
            row["in_use"]
    return out


def compare(ss: dict, nd: dict) -> list[str]:
    problems = [f"{k}: ss {ss[k]!r} != netdiag {nd[k]!r}" for k in ss
                if k != "by_destination" and ss[k] != nd[k]]
    for key, n in nd["by_destination"].items():  # netdiag's top rows, each exact
        if ss["by_destination"].get(key) != n:
            problems.append(f"destination {key}: ss {ss['by_destination'].get(key)} != "
                            f"netdiag {n}")
    top = sorted(ss["by_destination"].values(), reverse=True)[:len(nd["by_destination"])]
    if sorted(nd["by_destination"].values(), reverse=True) != top:
        problems.append("netdiag's top destinations are not ss's largest")
    return problems


def summary(rows: list[tuple[float, float, int]]) -> dict:
    walls = [r[0] for r in rows]
    return {"wall_median_s": round(statistics.median(walls), 3),
            "wall_min_s": round(min(walls), 3), "wall_max_s": round(max(walls), 3),
            "cpu_median_s": round(statistics.median(r[1] for r in rows), 3),
            "peak_rss_mb": round(max(r[2] for r in rows) / 1024, 1)}


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
    compile_sources()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    with Namespace() as ns:
        made = ns.build(args.state, args.sockets)
        built = time.monotonic()
        ss = "ss -tanp | wc -l" if args.processes else "ss -tan | wc -l"
        nd = [sys.executable, "-m", "netdiag", args.command, "--format", "json"]
        if args.processes:
            nd.append("--processes")
        exec_ns = ["ip", "netns", "exec", ns.name]
        runs = {"ss": [], "netdiag": []}
        lines = []
        for i in range(args.runs):
            order = [("ss", exec_ns + ["sh", "-c", ss]), ("netdiag", exec_ns + nd)]
            for name, argv in order if i % 2 == 0 else reversed(order):
                run = measure(argv, env)
                runs[name].append((run.wall, run.cpu, run.rss_kb))
                if name == "ss":
                    lines.append(int(run.out.split()[0]) - 1)
        measured = time.monotonic() - built
        seen_ss = ss_table(ns)
        seen_nd = netdiag_table(ns, env)
        checked = time.monotonic() - built
    ss_sum, nd_sum = summary(runs["ss"]), summary(runs["netdiag"])
    result = {
        "machine": machine(), "command": " ".join(["netdiag", *nd[3:]]), "ss_command": ss,
        "state": args.state, "sockets_built": made, "runs": args.runs,
        "ss_lines": lines, "counts_checked": seen_ss["total"],
        "ss": ss_sum, "netdiag": nd_sum,
        "wall_ratio": round(nd_sum["wall_median_s"] / ss_sum["wall_median_s"], 2),
        "seconds_from_build_to_last_check": round(checked, 1),
    }
    print(f"{result['machine']}")
    print(f"{'command':<36}{'median':>9}{'min':>8}{'max':>8}{'CPU':>8}{'peak RSS':>10}")
    for label, s in ((ss, ss_sum), (result["command"], nd_sum)):
        print(f"{label:<36}{s['wall_median_s']:>8.3f}s{s['wall_min_s']:>7.3f}s"
              f"{s['wall_max_s']:>7.3f}s{s['cpu_median_s']:>7.3f}s{s['peak_rss_mb']:>7.1f} MB")
    print(f"ratio of medians netdiag/ss: {result['wall_ratio']}x   sockets built: {made}")
    problems = compare(seen_ss, seen_nd)
    if len(set(lines)) != 1 or lines[0] != seen_ss["total"]:
        problems.append(f"the socket table changed while measured: ss counted {lines} "
                        f"then {seen_ss['total']}")
    if args.state == "time_wait" and checked > TIME_WAIT_LIFE:
        problems.append(f"measured {checked:.0f} s after the build: TIME_WAIT sockets "
                        "expired meanwhile (use fewer --runs)")
    result["counts_equal_ss"] = not problems
    out = REPO / "bench" / "results"
    out.mkdir(exist_ok=True)
    name = (f"{args.command}-{args.state}-{args.sockets}{'-p' if args.processes else ''}"
            ".json")
    (out / name).write_text(json.dumps(result, indent=2) + "\n")
    if problems:
        print("COUNTS DIFFER FROM ss:\n  " + "\n  ".join(problems))
        sys.exit(1)
    print(f"counts equal ss per state, family, local port and destination "
          f"({seen_ss['total']} sockets; measured within {measured:.0f} s of the build)")


if __name__ == "__main__":
    main()
