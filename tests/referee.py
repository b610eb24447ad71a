"""bpftrace as the referee of the probes: netdiag and a bpftrace program attached over exactly
the same window, around a workload of known size, in the test's own namespace.

    with Window(ns, "states", REFEREE["states"], attached=1) as w:
        w.load("churn", "--port", "9400", "--count", "300")
    w.report      # netdiag's JSON report
    w.referee     # bpftrace's maps: {"@name": {"k1,k2": count}} and histograms

Both are started, both are waited for until every hook is attached (bpftool perf lists each
attachment by process), then the workloads run to completion (each prints DONE), then both
get SIGINT and print what they counted. Nothing depends on timing, and the namespace filter
(bpftrace: the socket's or task's netns inode; netdiag: its own, in the kernel) keeps other
engineers' traffic on this host out of both.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, NetNS, load_json, require_root

SCHEMA = REPO / "docs" / "schema" / "probes.schema.json"

PROBELOAD = Path(__file__).parent / "helpers" / "probeload.py"
ATTACH_TIMEOUT = 90.0


def require_probes() -> None:
    require_root("loading eBPF probes")
    from netdiag.ebpf.runtime import requirements

    bad = [f"{r.reason} (fix: {r.fix})" for r in requirements().values() if not r.ok]
    if shutil.which("bpftrace") is None or shutil.which("bpftool") is None:
        bad.append("bpftrace and bpftool are needed (make test installs them)")
    if bad:
        reason = "eBPF probes cannot run here: " + "; ".join(bad)
        if os.environ.get("NETDIAG_REQUIRE_ROOT") == "1":
            pytest.fail(reason)
        pytest.skip(reason)


def probe_namespace():
    """For a module's `probe_ns` fixture: probes can run, and a fresh namespace."""
    require_probes()
    with NetNS() as ns:
        yield ns


def validate_facts(report: dict) -> None:
    """A probe report's facts against docs/schema/probes.schema.json."""
    import jsonschema

    schema = json.loads(SCHEMA.read_text())  # not netdiag output: the schema
    jsonschema.Draft202012Validator(schema).validate(report["facts"])


def attachments(pid: int) -> int:
    """How many tracepoints process `pid` has BPF programs attached to."""
    out = subprocess.run(["bpftool", "perf", "show", "--json"], capture_output=True, text=True,
                         timeout=30).stdout
    try:
        rows = json.loads(out or "[]")  # not netdiag output: bpftool's
    except ValueError:
        return 0
    return sum(1 for r in rows if r.get("pid") == pid)


def netns_inode(ns: NetNS) -> int:
    return os.stat(f"/run/netns/{ns.name}").st_ino


def stop_bpftrace(bt: subprocess.Popen, patience: float = 20.0,
                  tries: int = 4) -> tuple[str, str]:
    """bpftrace's output once it has exited on SIGINT (sent already). It polls for the
    signal every 100 ms; once in a CI run it was still attached a minute later, so the signal
    is sent again rather than waiting on one that may have been lost."""
    for _ in range(tries):
        try:
            return bt.communicate(timeout=patience)
        except subprocess.TimeoutExpired:
            bt.send_signal(signal.SIGINT)
    bt.kill()
    out, err = bt.communicate()
    raise AssertionError(f"bpftrace did not exit on SIGINT within {patience * tries:g} s: "
                         f"{err[-2000:]}")


def ready_load(ns: NetNS, mode: str, *args: str) -> subprocess.Popen:
    """A workload set up inside the namespace (its listeners bound: READY), waiting for go:
    made ready before a window opens, its listeners are listening when the probe starts."""
    p = subprocess.Popen(["ip", "netns", "exec", ns.name, sys.executable,
                          str(PROBELOAD), mode, *args], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ns.procs.append(p)
    line = p.stdout.readline()
    assert line.startswith("READY"), (line, p.stderr.read() if p.poll() is not None else "")
    return p


class Window:
    def __init__(self, ns: NetNS, probe: str | None, program: str | None, attached: int = 0,
                 *netdiag_args: str, netdiag_cmd: list[str] | None = None,
                 hooks: int | None = None, env: dict | None = None,
                 settle: bool = True) -> None:
        self.ns = ns
        self.settle = settle
        self.env = env or {}
        self.probe = probe
        self.program = program
        self.bt_attached = attached
        self.args = netdiag_args
        self.cmd = netdiag_cmd
        self.hooks = hooks
        self.procs: list[subprocess.Popen] = []
        self.loads: list[subprocess.Popen] = []
        self.report: dict = {}
        self.referee: dict = {}
        self.netdiag_stderr = ""
        self.returncode: int | None = None

    # -- start: both attached before any load runs
    def __enter__(self) -> Window:
        try:
            return self._start()
        except BaseException:
            # __exit__ does not run when __enter__ fails: a bpftrace left attached to every
            # wake-up would slow this host down for good.
            for p in self.procs:
                if p.poll() is None:
                    p.kill()
                    p.wait(timeout=30)
            raise

    def _start(self) -> Window:
        env = dict(os.environ, PYTHONPATH=str(REPO), **self.env)
        self.nd = None
        if self.probe or self.cmd:
            cmd = self.cmd or [sys.executable, "-m", "netdiag", "probe", self.probe,
                               "--duration", "300", "--json", "--netns", self.ns.name,
                               *self.args]
            self.nd = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                       text=True, env=env, cwd="/")
            self.procs.append(self.nd)
        self.bt = None
        if self.program:
            self.bt = subprocess.Popen(["bpftrace", "-f", "json", "-e", self.program],
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                       text=True, cwd="/")
            self.procs.append(self.bt)
        expected = self.hooks if self.hooks is not None else hook_count(self.probe)
        deadline = time.monotonic() + ATTACH_TIMEOUT
        while True:
            nd_ok = self.nd is None or attachments(self.nd.pid) >= expected
            bt_ok = self.bt is None or attachments(self.bt.pid) >= self.bt_attached
            if nd_ok and bt_ok:
                break
            for p in self.procs:
                if p.poll() is not None:
                    raise AssertionError(f"{p.args[:3]} exited early: {p.stderr.read()[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError("probes did not attach within "
                                     f"{ATTACH_TIMEOUT:g} s (netdiag {nd_ok}, bpftrace {bt_ok})")
            time.sleep(0.1)
        return self

    def load(self, mode: str, *args: str, wait: bool = True, ns: NetNS | None = None) -> str:
        """Run a workload to completion (DONE) inside the namespace (the window's, or `ns`);
        returns its DONE line."""
        return self.run_load(ready_load(ns or self.ns, mode, *args), wait)

    def run_load(self, p: subprocess.Popen, wait: bool = True) -> str:
        """Let a workload made ready (ready_load) run; returns its DONE line."""
        p.stdin.write("go\n")
        p.stdin.flush()
        self.loads.append(p)
        if not wait:
            return ""
        return self.finish_load(p)

    def finish_load(self, p: subprocess.Popen) -> str:
        line = p.stdout.readline()
        assert line.startswith("DONE"), (line, p.stderr.read() if p.poll() is not None else "")
        return line.strip()

    def quiesce(self, timeout: float = 15.0) -> None:
        """Wait until no connection in the namespace is between states (a delayed ACK can
        finish a close after the workload said DONE), so both stop on the same counts."""
        transient = {"01": False, "02": True, "03": True, "04": True, "09": True, "0B": True}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = self.ns.exec("cat", "/proc/net/tcp", "/proc/net/tcp6").stdout
            states = [ln.split()[3] for ln in out.splitlines()[1:] if len(ln.split()) > 3]
            if not any(transient.get(st) for st in states):
                return
            time.sleep(0.05)
        raise AssertionError("connections still changing state after the workload")

    # -- stop: SIGINT to both, read what they counted
    def __exit__(self, exc_type, *exc) -> None:
        try:
            if exc_type is None and self.settle:
                self.quiesce()
            for p in self.procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGINT)
            if self.nd is not None:
                out, err = self.nd.communicate(timeout=120)
                self.netdiag_stderr = err
                self.returncode = self.nd.returncode
                if exc_type is None:
                    assert "Traceback" not in err, err[-3000:]
                    self.report = load_json(out)
            if self.bt is not None:
                out, err = stop_bpftrace(self.bt)
                if exc_type is None:
                    self.referee = parse_bpftrace(out)
        finally:
            for p in self.procs:
                if p.poll() is None:
                    p.kill()
            for p in self.loads:
                if p.poll() is None:
                    try:
                        p.stdin.close()
                    except OSError:
                        pass

    def facts(self, name: str | None = None) -> dict:
        return self.report["facts"][name or self.probe]


def parse_bpftrace(out: str) -> dict:
    maps: dict = {}
    for line in out.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        msg = json.loads(line)  # not netdiag output: bpftrace's
        if msg.get("type") in ("map", "hist"):
            maps.update(msg["data"])
    return maps


def hook_count(probe: str | None) -> int:
    if probe is None:
        return 0
    from netdiag.ebpf.btf import kernel_layout
    from netdiag.ebpf.probes import PROBES
    from netdiag.ebpf.runtime import plan_hooks

    return len(plan_hooks(PROBES[probe].hooks, layout=kernel_layout()).enabled)


def counts(m: dict | None) -> dict[tuple, int]:
    """A bpftrace map {"a,b": n} as {(a, b): n} with integer keys where they are numbers."""
    out: dict[tuple, int] = {}
    for key, n in (m or {}).items():
        parts = tuple(int(p) if p.lstrip("-").isdigit() else p for p in str(key).split(","))
        out[parts] = out.get(parts, 0) + n
    return out


def hist(rows: list | None) -> list[tuple[int, int, int]]:
    """bpftrace's hist() buckets with counts, as (low, high, count)."""
    return [(r["min"], r["max"], r["count"]) for r in rows or [] if r["count"]]


# ---- the referee programs (INUM: the namespace's inode) -----------------------------------

SK_NS = "((struct sock *){sk})->__sk_common.skc_net.net->ns.inum"
TASK_NS = "curtask->nsproxy->net_ns->ns.inum"


def states_program(inum: int, lo: int, hi: int, listening: tuple[int, ...] = ()) -> str:
    """A server's rows (every passive open; a close on a socket whose peer's port is
    ephemeral or whose own port is one of `listening`) are keyed by local port alone."""
    ns = SK_NS.format(sk="args->skaddr")
    server_port = " || ".join(f"args->sport == {p}" for p in listening) or "0"
    return f"""
tracepoint:sock:inet_sock_set_state /args->protocol == 6 && {ns} == {inum}/ {{
  $lp = (uint64)args->sport; $rp = (uint64)args->dport;
  if ($lp >= {lo} && $lp <= {hi} && !({server_port})) {{ $lp = 0; }}
  if ($rp >= {lo} && $rp <= {hi}) {{ $rp = 0; }}
  if (args->oldstate == 3 && args->newstate == 1) {{ $rp = 0; }}
  if (args->oldstate == 1 && (args->newstate == 4 || args->newstate == 8) &&
      ({server_port})) {{ $rp = 0; }}
  @pairs[args->oldstate, args->newstate] = count();
  @flows[args->oldstate, args->newstate, $lp, $rp] = count();
  if (args->newstate == 8) {{ @cw[args->skaddr] = nsecs; @entered = count(); }}
  if (args->oldstate == 8 && @cw[args->skaddr]) {{
    @cw_ms = hist((nsecs - @cw[args->skaddr]) / 1000000); delete(@cw[args->skaddr]);
  }}
}}
END {{ clear(@cw); }}
"""


def _eph(var: str, lo: int, hi: int) -> str:
    return f"if ({var} >= {lo} && {var} <= {hi}) {{ {var} = 0; }}"


def resets_program(inum: int, lo: int, hi: int) -> str:
    sk = SK_NS.format(sk="args->skaddr")
    return f"""
tracepoint:tcp:tcp_send_reset {{
  $inum = (uint64)0;
  if ((uint64)args->skaddr != 0) {{ $inum = {sk}; }}
  else {{ $inum = ((struct sk_buff *)args->skbaddr)->dev->nd_net.net->ns.inum; }}
  if ($inum == {inum}) {{
    $lp = (uint64)((args->saddr[2] << 8) | args->saddr[3]); {_eph("$lp", lo, hi)}
    @sent[args->reason, args->state, $lp] = count();
  }}
}}
tracepoint:tcp:tcp_receive_reset /{sk} == {inum}/ {{
  $lp = (uint64)args->sport; $rp = (uint64)args->dport; {_eph("$lp", lo, hi)} {_eph("$rp", lo, hi)}
  @received[$lp, $rp] = count();
}}
"""


def drops_program(inum: int, lo: int, hi: int) -> str:
    return f"""
tracepoint:skb:kfree_skb {{
  $skb = (struct sk_buff *)args->skbaddr;
  $inum = (uint64)0;
  if ((uint64)args->rx_sk != 0) {{ $inum = {SK_NS.format(sk="args->rx_sk")}; }}
  else {{ if ((uint64)$skb->dev != 0) {{ $inum = $skb->dev->nd_net.net->ns.inum; }} }}
  if ($inum == {inum}) {{
    @reasons[args->reason] = count();
    if (args->protocol == 0x0800) {{
      $nh = (uint64)$skb->head + (uint64)$skb->network_header;
      $ihl = (uint64)(*(uint8 *)$nh & 0xf);
      if (*(uint8 *)($nh + 9) == 6) {{
        $d = (uint64)*(uint16 *)($nh + $ihl * 4 + 2);
        $port = (($d & 0xff) << 8) | ($d >> 8); {_eph("$port", lo, hi)}
        @tcp_ports[args->reason, $port] = count();
      }}
    }}
  }}
}}
"""


ERRNO_SKIP = "args->ret != -11"


def errors_program(inum: int) -> str:
    calls = ["accept", "accept4", "read", "write", "recvfrom", "sendto", "recvmsg", "sendmsg"]
    mine = f"{TASK_NS} == {inum}"
    failed = "args->ret < 0 && args->ret != -11"
    out = [f"""
tracepoint:syscalls:sys_exit_connect /{mine} && {failed} && args->ret != -114 &&
args->ret != -115/ {{
  @err_connect[-args->ret] = count();
}}
tracepoint:syscalls:sys_enter_getsockopt /{mine} && args->level == 1 &&
args->optname == 4/ {{ @opt[tid] = (uint64)args->optval; }}
tracepoint:syscalls:sys_exit_getsockopt /@opt[tid]/ {{
  if (args->ret == 0) {{ $e = *(int32 *)uptr(@opt[tid]); if ($e > 0) {{ @soerr[$e] = count(); }} }}
  delete(@opt[tid]);
}}"""]
    for call in calls:
        out.append(f"""
tracepoint:syscalls:sys_exit_{call} /{TASK_NS} == {inum} && args->ret < 0 && {ERRNO_SKIP}/ {{
  @err_{call}[-args->ret] = count();
}}""")
    return "\n".join(out) + "\nEND { clear(@opt); }\n"


def wakeups_program(inum: int) -> str:
    """The wake-up attribution of probes/wakeups.c, written again in bpftrace (with the
    tracepoints where netdiag uses raw ones): tasks woken after a listener's data_ready, in
    the same context, while the listener's wait-queue lock is held (the walk); the first
    wake-up without it, the next data_ready or the accept return ends the walk."""
    return f"""
tracepoint:sock:sk_data_ready {{
  @cur[cpu] = (uint64)0;
  if (args->protocol == 6) {{
    $sk = (struct sock *)args->skaddr;
    if ($sk->__sk_common.skc_state == 10 && $sk->__sk_common.skc_net.net->ns.inum == {inum}) {{
      @connections[$sk->__sk_common.skc_num] = count();
      @cur[cpu] = (uint64)args->skaddr; @curtid[cpu] = tid;
    }}
  }}
}}
tracepoint:sched:sched_waking {{
  if (@cur[cpu] != 0) {{
    $l = (struct sock *)@cur[cpu];
    if (@curtid[cpu] == tid && $l->sk_wq->wait.lock.rlock.raw_lock.val.counter != 0) {{
      @woken[args->pid] = count();
    }} else {{
      @cur[cpu] = (uint64)0;
    }}
  }}
}}
tracepoint:syscalls:sys_enter_accept4 /{TASK_NS} == {inum}/ {{ @in[tid] = 1; }}
tracepoint:syscalls:sys_exit_accept4 /@in[tid]/ {{
  if (@curtid[cpu] == tid) {{ @cur[cpu] = (uint64)0; }}
  if (args->ret >= 0) {{ @accepted[tid] = count(); }}
  if (args->ret == -11) {{ @eagain[tid] = count(); }}
  delete(@in[tid]);
}}
END {{ clear(@cur); clear(@curtid); clear(@in); }}
"""


def retrans_program(inum: int, lo: int, hi: int) -> str:
    return f"""
tracepoint:tcp:tcp_retransmit_skb /{SK_NS.format(sk="args->skaddr")} == {inum}/ {{
  $lp = (uint64)args->sport; $rp = (uint64)args->dport; {_eph("$lp", lo, hi)} {_eph("$rp", lo, hi)}
  @retrans[$lp, $rp, args->err < 0 ? 1 : 0] = count();
}}
"""


def backlog_program(inum: int) -> str:
    return f"""
tracepoint:syscalls:sys_enter_listen /{TASK_NS} == {inum}/ {{
  @listen[pid, args->backlog] = count();
}}
tracepoint:tcp:tcp_retransmit_synack /{SK_NS.format(sk="args->skaddr")} == {inum}/ {{
  @synack[args->sport] = count();
}}
"""


def rcvbuf_program(inum: int, lo: int, hi: int) -> str:
    sk = SK_NS.format(sk="args->skaddr")
    return f"""
tracepoint:tcp:tcp_rcv_space_adjust /{sk} == {inum}/ {{
  $lp = (uint64)args->sport; {_eph("$lp", lo, hi)} @adjust[$lp] = count();
}}
tracepoint:tcp:tcp_rcvbuf_grow /{sk} == {inum}/ {{
  $lp = (uint64)args->sport; {_eph("$lp", lo, hi)} @grow[$lp] = count();
}}
tracepoint:syscalls:sys_enter_setsockopt /{TASK_NS} == {inum} && args->level == 1 &&
(args->optname == 7 || args->optname == 8 || args->optname == 32 || args->optname == 33)/ {{
  @setsockopt[pid, args->optname] = count();
}}
"""

