"""Benchmark: what each eBPF probe costs. Drives short loopback connections in a fresh
namespace for a few seconds, without and with the probe attached (alternating, medians of
--runs), and reports the throughput ratio and the probe's start-up (compile + attach) time.

    sudo python3 bench/probes.py [--probes states,drops] [--seconds 3] [--runs 3]

Target: under 5% cost for `states` and `drops`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from netdiag.ebpf import runtime  # noqa: E402
from netdiag.ebpf.probes import PROBES  # noqa: E402

from scenario import Namespace  # noqa: E402

DRIVER = r"""
import socket, sys, threading, time
seconds = float(sys.argv[1])
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", 0)); srv.listen(4096)
addr = srv.getsockname()
def serve():
    while True:
        try:
            c, _ = srv.accept()
        except OSError:
            return
        c.close()
threading.Thread(target=serve, daemon=True).start()
n = 0
end = time.monotonic() + seconds
while time.monotonic() < end and n < 2_000_000:
    c = socket.create_connection(addr)
    c.close()
    n += 1
print(n / seconds)
"""


def c_driver() -> str | None:
    """Compile bench/conn_driver.c (a much faster load than the Python driver) if cc exists."""
    import shutil
    import tempfile

    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None
    out = os.path.join(tempfile.mkdtemp(prefix="netdiag-bench-"), "conn_driver")
    src = str(Path(__file__).parent / "conn_driver.c")
    done = subprocess.run([cc, "-O2", "-pthread", "-o", out, src], capture_output=True)
    return out if done.returncode == 0 else None


def drive(ns: str, seconds: float, driver: str | None) -> float:
    cmd = [driver, str(seconds)] if driver else [sys.executable, "-c", DRIVER, str(seconds)]
    out = subprocess.run(["ip", "netns", "exec", ns, *cmd], capture_output=True, text=True,
                         check=True)
    return float(out.stdout.strip())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--probes", default=",".join(PROBES))
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--python-driver", action="store_true",
                    help="use the Python load generator even when a C compiler exists")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/probes.py needs root")
    runtime_reqs = [r for r in runtime.requirements().values() if not r.ok]
    if runtime_reqs:
        sys.exit("probes cannot run: " + "; ".join(f"{r.reason} ({r.fix})" for r in runtime_reqs))
    driver = None if args.python_driver else c_driver()
    print(f"load: {'bench/conn_driver.c' if driver else 'Python driver'}")
    results = []
    with Namespace("ndp") as ns:
        # The scenario namespace turns tcp_tw_reuse off for the TIME_WAIT census; here it
        # would make connect() scan a range filling with TIME_WAIT (the parity cliff) and
        # cap the load at a few thousand connections/s. Back to the kernel default.
        ns.sysctl("net.ipv4.tcp_tw_reuse", "2")
        for name in args.probes.split(","):
            spec = PROBES[name]
            plan = runtime.plan_hooks(spec.hooks)
            base, probed, startup = [], [], []
            for _ in range(args.runs):
                base.append(drive(ns.name, args.seconds, driver))
                defines = spec.defines()[0] if spec.defines else {}
                loaded = runtime.Loaded(name, plan, defines)
                startup.append(loaded.startup_seconds)
                try:
                    probed.append(drive(ns.name, args.seconds, driver))
                finally:
                    loaded.close()
            b, p = statistics.median(base), statistics.median(probed)
            results.append({"probe": name, "conn_per_s_without": round(b),
                            "conn_per_s_with": round(p), "ratio": round(p / b, 3),
                            "cost_percent": round((1 - p / b) * 100, 1),
                            "startup_s": round(statistics.median(startup), 2)})
    print(f"{'probe':<9}{'conn/s without':>16}{'with':>10}{'cost':>8}{'startup':>9}")
    for r in results:
        print(f"{r['probe']:<9}{r['conn_per_s_without']:>16}{r['conn_per_s_with']:>10}"
              f"{r['cost_percent']:>7.1f}%{r['startup_s']:>8.2f}s")
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "probes.json").write_text(json.dumps(
        {"load": "bench/conn_driver.c" if driver else "python", "results": results},
        indent=2) + "\n")


if __name__ == "__main__":
    main()
