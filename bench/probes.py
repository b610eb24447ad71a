"""Benchmark: what each eBPF probe costs, and what it costs to start.

Two loads in a fresh namespace: short loopback connections (bench/conn_driver.c: connect,
accept, close) and a one-byte ping-pong over one connection (2 writes, 2 reads and 2 wake-ups
per round trip: the hot paths of the errors and wakeups probes). Each probe is compiled once;
then, --pairs times, the load runs --seconds without the probe and --seconds with it attached
(the order alternating, so drift cancels). The cost is 1 - the median of the per-pair ratios.
The noise floor comes from the same pairs with no probe on either side (A/A): the spread
(interquartile range) of their ratios. Because a shared machine makes throughput noisy, the
kernel also times the probe's programs (BPF_ENABLE_STATS): their run time as a share of the
CPU time the load used, and the time per run. Start-up is read from real `netdiag probe` runs
(bcc import, BTF, compile, attach, and from exec to the window opening).

    sudo python3 bench/probes.py [--probes states,drops] [--seconds 1] [--pairs 9]

Target: under 5% per probe. The machine may be shared: a cost inside the noise floor is no
measurable cost, and the table says what the floor was.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import resource
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from netdiag.ebpf import runtime, session  # noqa: E402
from netdiag.ebpf.btf import BTF, GROUPS, kernel_layout  # noqa: E402
from netdiag.ebpf.probes import PROBES  # noqa: E402

from scenario import Namespace  # noqa: E402

# The load's server listens on a fixed port, as a service does (outside any ephemeral range).
SERVICE_PORT = 7001
LOADS = (("conn/s", ("conn", str(SERVICE_PORT))),
         ("round trips/s", ("pingpong", str(SERVICE_PORT))))


def c_driver() -> str:
    import shutil
    import tempfile

    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        sys.exit("bench/probes.py needs a C compiler (cc) for bench/conn_driver.c")
    out = os.path.join(tempfile.mkdtemp(prefix="netdiag-bench-"), "conn_driver")
    src = str(Path(__file__).parent / "conn_driver.c")
    subprocess.run([cc, "-O2", "-pthread", "-o", out, src], check=True)
    return out


def drive(ns: str, seconds: float, driver: str, mode: tuple[str, ...]) -> float:
    out = subprocess.run(["ip", "netns", "exec", ns, driver, str(seconds), *mode],
                         capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


def ns_port_range(ns: str) -> tuple[int, int]:
    """The bench namespace's ip_local_port_range (not this process's: the probes aggregate the
    namespace's ephemeral ports away, and a wrong range would key them one by one)."""
    out = subprocess.run(["ip", "netns", "exec", ns, "cat",
                          "/proc/sys/net/ipv4/ip_local_port_range"],
                         capture_output=True, text=True, check=True)
    lo, hi = (int(x) for x in out.stdout.split())
    return lo, hi


def load_probe(name: str, inode: int, ns: str):
    """Load one probe as `netdiag probe --netns NS` does (namespace filter, offsets, maps, the
    namespace's ephemeral range, the service port listed as listening)."""
    spec = PROBES[name]
    layout = kernel_layout()
    plan = runtime.plan_hooks(spec.hooks, layout=layout)
    defines = layout.defines(tuple(GROUPS))
    defines.update(runtime.map_defines(spec.maps))
    kind, _ = session._filter_kind(spec, plan, layout)
    if kind != "host-wide":
        defines["NETNS_INUM"] = inode
    lo, hi = ns_port_range(ns)
    defines.update(EPH_LO=lo, EPH_HI=hi)
    if spec.extra:
        defines.update(spec.extra()[0])

    def fill(bpf) -> None:
        table = bpf["listening"]
        table[table.Key(SERVICE_PORT)] = table.Leaf(1)

    return runtime.Loaded(name, plan, defines, fill=fill)


def cli_startup(name: str, ns: str, runs: int) -> dict[str, float]:
    """Start-up of a real `netdiag probe NAME` process (the figures it reports), medians."""
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    seen = []
    for _ in range(runs):
        out = subprocess.run([sys.executable, "-m", "netdiag", "probe", name, "--duration",
                              "0.1", "--json", "--netns", ns], capture_output=True, text=True,
                             env=env)
        seen.append(json.loads(out.stdout)["facts"][name]["startup"])
    return {k: round(statistics.median(s[k] for s in seen), 3) for k in seen[0]}


def enable_run_time_stats():
    """BPF_ENABLE_STATS(BPF_STATS_RUN_TIME) through libbpf: the kernel times every BPF program
    run while the returned fd is open (and stops when it closes: nothing to restore)."""
    lib = ctypes.CDLL("libbpf.so.1")
    fd = lib.bpf_enable_stats(0)
    if fd < 0:
        sys.exit("cannot enable BPF run-time statistics")
    return fd


def run_time_ns(loaded) -> tuple[int, int]:
    """Total run time (ns) and runs of a loaded probe's programs (bpf_prog_info)."""
    from bcc.libbcc import lib

    layout = BTF(Path("/sys/kernel/btf/vmlinux").read_bytes())
    off = layout.offsets("bpf_prog_info", ("run_time_ns", "run_cnt"))
    size = max(off.values()) + 8
    total = runs = 0
    for hook in loaded.plan.enabled:
        fn = loaded.bpf.funcs[hook.fn.encode()]
        buf = ctypes.create_string_buffer(size)
        n = ctypes.c_uint32(size)
        if lib.bpf_obj_get_info(ctypes.c_int(fn.fd), buf, ctypes.byref(n)) != 0:
            continue
        total += int.from_bytes(buf.raw[off["run_time_ns"]:off["run_time_ns"] + 8], "little")
        runs += int.from_bytes(buf.raw[off["run_cnt"]:off["run_cnt"] + 8], "little")
    return total, runs


def cpu_share(ns: str, seconds: float, driver: str, mode: tuple[str, ...], loaded,
              runs: int) -> dict:
    """In-kernel time of the probe's programs against the CPU time the load itself used
    (user + system of the driver, which includes the loopback softirq work it triggers):
    robust where throughput is noisy, but blind to the tracepoint dispatch around them."""
    shares, per_run = [], []
    for _ in range(runs):
        loaded.attach()
        before_ns, before_runs = run_time_ns(loaded)
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        try:
            drive(ns, seconds, driver, mode)
        finally:
            loaded.detach()
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        ns_used, n = (a - b for a, b in zip(run_time_ns(loaded), (before_ns, before_runs)))
        cpu = (r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime) * 1e9
        shares.append(ns_used / cpu * 100 if cpu else 0.0)
        per_run.append(ns_used / n if n else 0.0)
    return {"bpf_cpu_percent": round(statistics.median(shares), 2),
            "ns_per_run": round(statistics.median(per_run))}


def pairs(ns: str, seconds: float, driver: str, mode: tuple[str, ...], n: int,
          on=None, off=None) -> list[float]:
    """Per-pair ratios with/without (or A/A when on/off are None), order alternating."""
    ratios = []
    for i in range(n):
        runs = {}
        for side in (("base", "probe") if i % 2 == 0 else ("probe", "base")):
            if side == "probe" and on:
                on()
            try:
                runs[side] = drive(ns, seconds, driver, mode)
            finally:
                if side == "probe" and off:
                    off()
        ratios.append(runs["probe"] / runs["base"])
    return ratios


def _quartiles(xs: list[float]) -> tuple[float, float, float]:
    q = statistics.quantiles(xs, n=4)
    return q[0], statistics.median(xs), q[2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--probes", default=",".join(PROBES))
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--pairs", type=int, default=9)
    ap.add_argument("--startup-runs", type=int, default=3)
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/probes.py needs root")
    bad = [r for r in runtime.requirements().values() if not r.ok]
    if bad:
        sys.exit("probes cannot run: " + "; ".join(f"{r.reason} ({r.fix})" for r in bad))
    driver = c_driver()
    stats_fd = enable_run_time_stats()
    results = []
    floor = {}
    with Namespace("ndp") as ns:
        # The scenario namespace turns tcp_tw_reuse off for the TIME_WAIT census; here it
        # would make connect() scan a range filling with TIME_WAIT (the parity cliff) and
        # cap the load at a few thousand connections/s. Back to the kernel default.
        ns.sysctl("net.ipv4.tcp_tw_reuse", "2")
        inode = os.stat(f"/run/netns/{ns.name}").st_ino
        for label, mode in LOADS:
            lo, med, hi = _quartiles(pairs(ns.name, args.seconds, driver, mode, args.pairs))
            floor[label] = {"aa_median_percent": round((1 - med) * 100, 1),
                            "aa_iqr_percent": round((hi - lo) * 100, 1),
                            "rate": round(drive(ns.name, args.seconds, driver, mode))}
            f = floor[label]
            print(f"noise floor ({label}, A/A pairs): median {f['aa_median_percent']:+.1f}%, "
                  f"IQR {f['aa_iqr_percent']:.1f}%, at about {f['rate']} {label}", flush=True)
        for name in args.probes.split(","):
            row: dict = {"probe": name}
            loaded = load_probe(name, inode, ns.name)
            try:
                loaded.detach()
                for label, mode in LOADS:
                    lo, med, hi = _quartiles(pairs(ns.name, args.seconds, driver, mode,
                                                   args.pairs, loaded.attach, loaded.detach))
                    row[label] = {"cost_percent": round((1 - med) * 100, 1),
                                  "iqr_percent": round((hi - lo) * 100, 1)}
                    row[label].update(cpu_share(ns.name, args.seconds, driver, mode, loaded,
                                                max(3, args.pairs // 3)))
            finally:
                loaded.close()
            row["startup_s"] = cli_startup(name, ns.name, args.startup_runs)
            results.append(row)
            print(_line(row), flush=True)
    os.close(stats_fd)
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "probes.json").write_text(json.dumps(
        {"seconds": args.seconds, "pairs": args.pairs, "noise_floor": floor,
         "results": results}, indent=2) + "\n")


def _line(row: dict) -> str:
    parts = [f"{row['probe']:<8}"]
    for label, _ in LOADS:
        r = row[label]
        parts.append(f"{label}: {r['cost_percent']:+.1f}% (IQR {r['iqr_percent']:.1f}%), "
                     f"in BPF {r['bpf_cpu_percent']:.2f}% of the load's CPU "
                     f"({r['ns_per_run']} ns/run)")
    s = row["startup_s"]
    parts.append(f"start-up {s['since_process_start_s']:.2f} s from exec (bcc "
                 f"{s['imports_s']:.2f}, BTF {s['btf_s']:.2f}, compile {s['compile_s']:.2f}, "
                 f"attach {s['attach_s']:.2f})")
    return "  ".join(parts)


if __name__ == "__main__":
    main()
