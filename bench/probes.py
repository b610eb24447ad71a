"""Benchmark: what each eBPF probe costs, and what it costs to start.

Loads in a fresh namespace (--loads picks them):
  conn, conn1          short loopback connections (bench/conn_driver.c: connect, accept,
                       close); conn1 pins both threads to one CPU
  pingpong, pingpong1  a one-byte ping-pong over one connection (2 writes, 2 reads and 2
                       wake-ups per round trip: the hot paths of the errors and wakeups probes);
                       pingpong is not run unless asked: its two threads bounce between the
                       CPUs, and two runs without any probe differ by 25-50% (A/A IQR)
  nginx                a real service: nginx (one worker) and wrk asking with a new connection
                       per request (Connection: close)
Unpinned, the driver's two threads mostly run on different CPUs and wait for each other:
latency-bound, with idle gaps that hide part of a probe's cost. Pinned to one CPU the same
load is CPU-bound and the kernel does the least work per event, so a probe's share of it is
the largest: the worst case. Each probe is compiled once; then, --pairs times, each load runs
--seconds without the probe and --seconds with it attached (the order alternating, so drift
cancels). The cost is 1 - the median of the per-pair throughput ratios. The noise floor comes
from the same pairs with no probe on either side (A/A): the spread (interquartile range) of
their ratios. The kernel also times the probe's programs (BPF_ENABLE_STATS): their run time as
a share of the CPU time the load used (steadier than throughput, but blind to the tracepoint
dispatch around the programs), and the time per run. Start-up is read from real
`netdiag probe` runs (bcc import, BTF, compile, attach, and from exec to the window opening).

    sudo python3 bench/probes.py [--probes states,drops] [--loads conn,nginx] [--pairs 9]
                                 [--hooks-alone]

--hooks-alone also measures each probe's hooks with programs that return at once: what the
kernel charges for the tracepoints before a probe runs its first instruction, the part of the
cost no program can save.

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

# The loads' servers listen on fixed ports, as services do (outside any ephemeral range).
SERVICE_PORT = 7001
NGINX_PORT = 7002


class DriverLoad:
    """bench/conn_driver.c in the bench namespace, optionally pinned to CPUs."""

    def __init__(self, key: str, label: str, args: tuple[str, ...],
                 cpus: str | None = None) -> None:
        self.key, self.label, self.args, self.cpus = key, label, args, cpus
        self.driver = ""

    def start(self, ns: str) -> None:
        self.driver = self.driver or c_driver()

    def stop(self) -> None:
        pass

    def run(self, ns: str, seconds: float) -> tuple[float, float]:
        """(rate, CPU seconds the load used: user + system of the driver, which includes the
        loopback softirq work it triggers)."""
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        pin = ["taskset", "-c", self.cpus] if self.cpus else []
        out = subprocess.run(["ip", "netns", "exec", ns, *pin, self.driver, str(seconds),
                              *self.args], capture_output=True, text=True, check=True)
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        return float(out.stdout.strip()), (r1.ru_utime + r1.ru_stime - r0.ru_utime -
                                           r0.ru_stime)


NGINX_CONF = """daemon off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  server {{ listen 127.0.0.1:{port} backlog=4096; root {dir}; keepalive_timeout 0; }}
}}
"""


class NginxLoad:
    """A real service: nginx (one worker) serving a small file, wrk asking with a new
    connection per request (Connection: close), as clients of many HTTP APIs do. Both ends are
    on this host (loopback), so every request's ten state changes happen here."""

    key = "nginx"
    label = "HTTP requests/s (nginx, a connection each)"

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.dir = ""

    @staticmethod
    def available() -> str | None:
        import shutil

        missing = [b for b in ("nginx", "wrk") if shutil.which(b) is None and
                   not os.path.exists(f"/usr/sbin/{b}")]
        return f"{' and '.join(missing)} not installed" if missing else None

    def start(self, ns: str) -> None:
        import tempfile
        import time

        self.dir = tempfile.mkdtemp(prefix="netdiag-bench-nginx-")
        Path(self.dir, "index.html").write_text("hello\n")
        conf = Path(self.dir, "nginx.conf")
        conf.write_text(NGINX_CONF.format(dir=self.dir, port=NGINX_PORT))
        self.proc = subprocess.Popen(["ip", "netns", "exec", ns, "nginx", "-c", str(conf),
                                      "-p", self.dir], stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # until it answers (bounded)
            if self._wrk(ns, 1)[0] > 0:
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        self.stop()
        sys.exit("nginx did not start in the bench namespace")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def _wrk(self, ns: str, seconds: float) -> tuple[float, str]:
        """Requests per second over whole seconds (wrk takes no fractions)."""
        out = subprocess.run(["ip", "netns", "exec", ns, "wrk", "-t1", "-c8",
                              f"-d{max(1, round(seconds))}s", "-H", "Connection: close",
                              f"http://127.0.0.1:{NGINX_PORT}/"],
                             capture_output=True, text=True)
        for line in out.stdout.splitlines():
            if line.startswith("Requests/sec:"):
                return float(line.split()[1]), out.stdout
        return 0.0, out.stdout

    def _nginx_cpu(self) -> float:
        """CPU seconds of the nginx master and its workers (/proc/PID/stat utime + stime)."""
        assert self.proc is not None
        tick = os.sysconf("SC_CLK_TCK")
        total = 0.0
        for pid in [self.proc.pid, *_children(self.proc.pid)]:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += (int(fields[11]) + int(fields[12])) / tick
        return total

    def run(self, ns: str, seconds: float) -> tuple[float, float]:
        c0 = self._nginx_cpu()
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        rate, _ = self._wrk(ns, seconds)
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        return rate, (r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime +
                      self._nginx_cpu() - c0)


def _children(pid: int) -> list[int]:
    try:
        return [int(x) for x in
                Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


# Unpinned, the two threads of a driver load mostly run on different CPUs and wait for each
# other (cross-CPU wake-ups): latency-bound, with idle gaps that can hide a probe's cost.
# Pinned to one CPU the same load is CPU-bound and does several times as many connections per
# CPU second: the kernel does the least work per event there, so a probe's share of it is the
# largest (the worst case). nginx + wrk is a real service with a connection per request.
def loads(keys: list[str]) -> list:
    port = str(SERVICE_PORT)
    every = [DriverLoad("conn", "conn/s", ("conn", port)),
             DriverLoad("conn1", "conn/s on one CPU", ("conn", port), "0"),
             DriverLoad("pingpong", "round trips/s", ("pingpong", port)),
             DriverLoad("pingpong1", "round trips/s on one CPU", ("pingpong", port), "0")]
    why = NginxLoad.available()
    if why is None:
        every.append(NginxLoad())
    elif "nginx" in keys:
        sys.exit(f"the nginx load cannot run: {why}")
    return [ld for ld in every if ld.key in keys]


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


def ns_port_range(ns: str) -> tuple[int, int]:
    """The bench namespace's ip_local_port_range (not this process's: the probes aggregate the
    namespace's ephemeral ports away, and a wrong range would key them one by one)."""
    out = subprocess.run(["ip", "netns", "exec", ns, "cat",
                          "/proc/sys/net/ipv4/ip_local_port_range"],
                         capture_output=True, text=True, check=True)
    lo, hi = (int(x) for x in out.stdout.split())
    return lo, hi


def load_probe(name: str, inode: int, ns: str, hooks_alone: bool = False):
    """Load one probe as `netdiag probe --netns NS` does (namespace filter, offsets, maps, the
    namespace's ephemeral range, the service port listed as listening). hooks_alone: the same
    hooks with programs that return at once, what the kernel charges before a probe's first
    instruction (the tracepoint, its trace record, the program call)."""
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
        for port in (SERVICE_PORT, NGINX_PORT):
            table[table.Key(port)] = table.Leaf(1)

    source = None
    if hooks_alone:
        source = "\n".join(["#include <uapi/linux/ptrace.h>",
                            "BPF_ARRAY(listening, u8, 65536);"] +
                           [f"int {hook.fn}(void *ctx) {{ return 0; }}"
                            for hook in plan.enabled])
    return runtime.Loaded(name, plan, defines, fill=fill, source=source)


def cli_startup(name: str, ns: str, runs: int) -> dict[str, float]:
    """Start-up of a real `netdiag probe NAME` process (the figures it reports), medians."""
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    seen = []
    for _ in range(runs):
        out = subprocess.run([sys.executable, "-m", "netdiag", "probe", name, "--duration",
                              "0.1", "--json", "--netns", ns], capture_output=True, text=True,
                             env=env)
        try:
            seen.append(json.loads(out.stdout)["facts"][name]["startup"])
        except (ValueError, KeyError) as exc:
            tail = (out.stderr.strip().splitlines() or ["no output"])[-1]
            sys.exit(f"`netdiag probe {name}` under {sys.executable} gave no start-up "
                     f"figures ({exc.__class__.__name__}): {tail}")
    return {k: round(statistics.median(s[k] for s in seen), 3) for k in seen[0]}


def enable_run_time_stats():
    """BPF_ENABLE_STATS(BPF_STATS_RUN_TIME) through libbpf: the kernel times every BPF program
    run while the returned fd is open (and stops when it closes: nothing to restore)."""
    lib = ctypes.CDLL("libbpf.so.1")
    fd = lib.bpf_enable_stats(0)
    if fd < 0:
        sys.exit("cannot enable BPF run-time statistics")
    return fd


def run_time_ns(loaded) -> dict[str, tuple[int, int]]:
    """Per program of a loaded probe: total run time (ns) and runs (bpf_prog_info)."""
    from bcc.libbcc import lib

    layout = BTF(Path("/sys/kernel/btf/vmlinux").read_bytes())
    off = layout.offsets("bpf_prog_info", ("run_time_ns", "run_cnt"))
    size = max(off.values()) + 8
    out = {}
    for hook in loaded.plan.enabled:
        fd = loaded.prog_fd(hook)
        buf = ctypes.create_string_buffer(size)
        n = ctypes.c_uint32(size)
        if fd is None or lib.bpf_obj_get_info(ctypes.c_int(fd), buf, ctypes.byref(n)) != 0:
            continue
        out[hook.fn] = (
            int.from_bytes(buf.raw[off["run_time_ns"]:off["run_time_ns"] + 8], "little"),
            int.from_bytes(buf.raw[off["run_cnt"]:off["run_cnt"] + 8], "little"))
    return out


def cpu_share(ns: str, seconds: float, load, loaded, runs: int) -> dict:
    """In-kernel time of the probe's programs against the CPU time the load itself used:
    robust where throughput is noisy, but blind to the tracepoint dispatch around them. Per
    program: runs per unit of the load (connection, round trip, request) and time per run,
    which say where a probe's cost is (each run's figure includes the two clock reads that
    time it)."""
    shares, per_run = [], []
    hooks: dict[str, list[tuple[float, float]]] = {}
    # Timing every program run costs two clock reads per run: switched on only for these
    # runs, never while throughput is measured (the probe would be charged for it).
    stats_fd = enable_run_time_stats()
    try:
        for _ in range(runs):
            loaded.attach()
            before = run_time_ns(loaded)
            try:
                rate, cpu = load.run(ns, seconds)
            finally:
                loaded.detach()
            after = run_time_ns(loaded)
            used = {fn: (after[fn][0] - t, after[fn][1] - n) for fn, (t, n) in before.items()
                    if fn in after}
            ns_used = sum(t for t, _ in used.values())
            n = sum(c for _, c in used.values())
            shares.append(ns_used / (cpu * 1e9) * 100 if cpu else 0.0)
            per_run.append(ns_used / n if n else 0.0)
            units = rate * seconds
            for fn, (t, c) in used.items():
                hooks.setdefault(fn, []).append((c / units if units else 0.0, t / c if c else 0.0))
    finally:
        os.close(stats_fd)
    return {"bpf_cpu_percent": round(statistics.median(shares), 2),
            "ns_per_run": round(statistics.median(per_run)),
            "hooks": {fn: {"runs_per_unit": round(statistics.median(r for r, _ in seen), 2),
                           "ns_per_run": round(statistics.median(t for _, t in seen))}
                      for fn, seen in hooks.items()}}


def pairs(ns: str, seconds: float, load, n: int, on=None, off=None) -> list[float]:
    """Per-pair ratios with/without (or A/A when on/off are None), order alternating."""
    ratios = []
    for i in range(n):
        runs = {}
        for side in (("base", "probe") if i % 2 == 0 else ("probe", "base")):
            if side == "probe" and on:
                on()
            try:
                runs[side] = load.run(ns, seconds)[0]
            finally:
                if side == "probe" and off:
                    off()
        ratios.append(runs["probe"] / runs["base"])
    return ratios


def _with_and_without(ns: str, args, load, loaded) -> tuple[float, float, float]:
    """Quartiles of the throughput ratios, attached over detached, in alternating pairs."""
    return _quartiles(pairs(ns, args.seconds, load, args.pairs, loaded.attach, loaded.detach))


def _quartiles(xs: list[float]) -> tuple[float, float, float]:
    q = statistics.quantiles(xs, n=4)
    return q[0], statistics.median(xs), q[2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--probes", default=",".join(PROBES))
    ap.add_argument("--loads", default="conn,conn1,pingpong1,nginx",
                    help="conn, conn1 (on one CPU), pingpong, pingpong1, nginx")
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--pairs", type=int, default=9)
    ap.add_argument("--startup-runs", type=int, default=3)
    ap.add_argument("--hooks-alone", action="store_true",
                    help="also measure each probe's hooks with programs that return at once "
                    "(the part of the cost no program can save)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/probes.py needs root")
    bad = [r for r in runtime.requirements().values() if not r.ok]
    if bad:
        sys.exit("probes cannot run: " + "; ".join(f"{r.reason} ({r.fix})" for r in bad))
    chosen = loads(args.loads.split(","))
    results = []
    floor = {}
    with Namespace("ndp") as ns:
        # The scenario namespace turns tcp_tw_reuse off for the TIME_WAIT census; here it
        # would make connect() scan a range filling with TIME_WAIT (the parity cliff) and
        # cap the load at a few thousand connections/s. Back to the kernel default.
        ns.sysctl("net.ipv4.tcp_tw_reuse", "2")
        inode = os.stat(f"/run/netns/{ns.name}").st_ino
        try:
            for load in chosen:
                load.start(ns.name)
            for load in chosen:
                lo, med, hi = _quartiles(pairs(ns.name, args.seconds, load, args.pairs))
                floor[load.label] = {"aa_median_percent": round((1 - med) * 100, 1),
                                     "aa_iqr_percent": round((hi - lo) * 100, 1),
                                     "rate": round(load.run(ns.name, args.seconds)[0])}
                f = floor[load.label]
                print(f"noise floor ({load.label}, A/A pairs): median "
                      f"{f['aa_median_percent']:+.1f}%, IQR {f['aa_iqr_percent']:.1f}%, at "
                      f"about {f['rate']} {load.label}", flush=True)
            for name in args.probes.split(","):
                row: dict = {"probe": name}
                loaded = load_probe(name, inode, ns.name)
                try:
                    loaded.detach()
                    for load in chosen:
                        lo, med, hi = _with_and_without(ns.name, args, load, loaded)
                        row[load.label] = {"cost_percent": round((1 - med) * 100, 1),
                                           "iqr_percent": round((hi - lo) * 100, 1)}
                        row[load.label].update(cpu_share(ns.name, args.seconds, load, loaded,
                                                         max(3, args.pairs // 3)))
                finally:
                    loaded.close()
                if args.hooks_alone:
                    bare = load_probe(name, inode, ns.name, hooks_alone=True)
                    try:
                        bare.detach()
                        for load in chosen:
                            _, med, _ = _with_and_without(ns.name, args, load, bare)
                            row[load.label]["hooks_alone_percent"] = round((1 - med) * 100, 1)
                    finally:
                        bare.close()
                if args.startup_runs:
                    row["startup_s"] = cli_startup(name, ns.name, args.startup_runs)
                results.append(row)
                print(_line(row, chosen), flush=True)
        finally:
            for load in chosen:
                load.stop()
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "probes.json").write_text(json.dumps(
        {"seconds": args.seconds, "pairs": args.pairs, "noise_floor": floor,
         "results": results}, indent=2) + "\n")


def _line(row: dict, chosen: list) -> str:
    parts = [f"{row['probe']:<8}"]
    for load in chosen:
        label = load.label
        r = row[label]
        parts.append(f"{label}: {r['cost_percent']:+.1f}% (IQR {r['iqr_percent']:.1f}%), "
                     f"in BPF {r['bpf_cpu_percent']:.2f}% of the load's CPU "
                     f"({r['ns_per_run']} ns/run)" +
                     (f", hooks alone {r['hooks_alone_percent']:+.1f}%"
                      if "hooks_alone_percent" in r else ""))
    # Where the time in BPF goes: each program that ran, by its share.
    hooks = []
    for load in chosen:
        ran = {fn: h for fn, h in row[load.label].get("hooks", {}).items() if h["runs_per_unit"]}
        if len(ran) > 1:
            hooks.append(f"\n    {load.key}: " + ", ".join(
                f"{fn} {h['runs_per_unit']:g}/unit x {h['ns_per_run']} ns"
                for fn, h in sorted(ran.items(), key=lambda kv: -kv[1]["runs_per_unit"] *
                                    kv[1]["ns_per_run"])))
    s = row.get("startup_s")
    if s is not None:
        parts.append(f"start-up {s['since_process_start_s']:.2f} s from exec (bcc "
                     f"{s['imports_s']:.2f}, BTF {s['btf_s']:.2f}, compile "
                     f"{s['compile_s']:.2f}, attach {s['attach_s']:.2f})")
    return "  ".join(parts) + "".join(hooks)


if __name__ == "__main__":
    main()
