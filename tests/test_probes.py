"""eBPF probes loaded for real (root, bcc, kernel headers): the command, its failures and its
interruptions. What each probe counts is checked against bpftrace in test_probe_referee.py.

`make test` installs python3-bpfcc, bpftool, bpftrace and the kernel headers, and (test setup
only) links /lib/modules/$(uname -r)/build to them and mounts tracefs when the kernel lacks
them. Under NETDIAG_REQUIRE_ROOT=1 a missing requirement fails these tests instead of
skipping.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
from referee import (  # noqa: F401 (require_probes: other modules import it from here)
    Window,
    attachments,
    hook_count,
    probe_namespace,
    require_probes,
    validate_facts,
)

from conftest import REPO, finding, load_json, require_root, run_netdiag

pytestmark = pytest.mark.netns


@pytest.fixture
def probe_ns():
    yield from probe_namespace()


def bpf_programs() -> set[int]:
    out = subprocess.run(["bpftool", "prog", "show", "--json"], capture_output=True, text=True,
                         check=True).stdout
    return {p["id"] for p in json.loads(out)}  # not netdiag output: bpftool's


def programs_of(pid: int) -> set[int]:
    """The programs process `pid` has attached (other engineers load probes on this host too:
    only ours are checked)."""
    out = subprocess.run(["bpftool", "perf", "show", "--json"], capture_output=True, text=True,
                         check=True).stdout
    return {r["prog_id"] for r in json.loads(out or "[]")  # not netdiag output: bpftool's
            if r.get("pid") == pid}


def spawn(*args: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen([sys.executable, "-m", "netdiag", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd="/")


def wait_for(cond, what: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"{what} within {timeout:g} s"
        time.sleep(0.05)


def bcc_loaded(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/maps") as fh:
            return "libbcc" in fh.read()
    except OSError:
        return False


def test_probe_list_says_what_runs_and_why():
    report = load_json(run_netdiag("probe", "list", "--json").stdout)
    rows = {r["probe"]: r for r in report["probes"]}
    from netdiag.ebpf.probes import PROBES

    assert set(rows) == set(PROBES)
    assert "errors" in rows
    for r in rows.values():
        assert isinstance(r["runnable"], bool) and r["summary"] and r["overhead"]
        assert r["netns_filter"] in ("exact", "partial", "host-wide")
        if not r["runnable"]:
            assert "fix:" in r["why_not"] or "tracepoints" in r["why_not"] or \
                "x86-64" in r["why_not"]
        else:  # nothing stops it: null, never an empty string
            assert r["why_not"] is None
    assert rows["softirq"]["netns_filter"] == "host-wide"
    assert rows["softirq"]["in_check"] is False and rows["errors"]["in_check"] is True


def test_unknown_probe_is_a_usage_error():
    proc = run_netdiag("probe", "nosuch")
    assert proc.returncode == 3 and "unknown probe 'nosuch'" in proc.stderr


def test_table_output_of_a_probe_run(probe_ns):
    """The table: the probe's summary, its namespace and its tables, by name."""
    proc = spawn("probe", "states", "--duration", "60", "--netns", probe_ns.name)
    wait_for(lambda: attachments(proc.pid) >= 1, "states attached")
    probe_ns.exec(sys.executable, str(REPO / "tests/helpers/sockload.py"), "churn", "--port",
                  "9500", "--count", "20", "--hold", "0")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "states: active closes" in out and "states: scope" in out
    assert probe_ns.name in out and "exact" in out
    assert "9500" in out and "Traceback" not in err


def test_a_second_ctrl_c_while_detaching_still_prints_the_report(probe_ns):
    """Ctrl-C ends the window; more Ctrl-C while the hooks detach must neither print a bcc
    traceback nor lose the report, and nothing may stay loaded."""
    proc = spawn("probe", "wakeups", "--duration", "120", "--json", "--netns", probe_ns.name)
    wait_for(lambda: attachments(proc.pid) >= hook_count("wakeups"), "wakeups attached")
    ours = programs_of(proc.pid)
    proc.send_signal(signal.SIGINT)
    for _ in range(8):  # whatever phase they land in: detaching, reading, unloading
        time.sleep(0.01)
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert "Traceback" not in err and proc.returncode in (0, 1, 2), (proc.returncode, err)
    report = load_json(out)
    validate_facts(report)
    assert report["facts"]["wakeups"]["window"]["interrupted"] is True
    assert len(ours) == hook_count("wakeups")
    wait_for(lambda: not ours & bpf_programs(), "programs unloaded", 10)


def test_interrupted_at_random_moments_nothing_stays_loaded(probe_ns):
    """SIGINT or SIGTERM at a random moment of start-up (compile, attach) or of the window:
    either the report (window open) or one line and exit 3 (before it opened); never a
    traceback; nothing loaded afterwards."""
    rng = random.Random(11)
    outcomes = set()
    for i in range(6):
        proc = spawn("probe", ("drops", "states")[i % 2],
                     "--duration", "30", "--json", "--netns", probe_ns.name)
        wait_for(lambda p=proc: bcc_loaded(p.pid) or p.poll() is not None, "bcc imported")
        ours: set[int] = set()
        until = time.monotonic() + rng.uniform(0.0, 1.2)
        while time.monotonic() < until:
            ours |= programs_of(proc.pid)
        proc.send_signal(rng.choice((signal.SIGINT, signal.SIGTERM)))
        out, err = proc.communicate(timeout=60)
        assert "Traceback" not in err, err
        if proc.returncode == 3:
            assert len(err.strip().splitlines()) == 1, err
            assert "interrupted" in err or "terminated" in err, err
            outcomes.add("before")
        else:
            assert proc.returncode in (0, 1, 2), err
            assert load_json(out)["facts"]
            outcomes.add("report")
        wait_for(lambda o=ours: not o & bpf_programs(), "programs unloaded", 10)
    assert outcomes  # both outcomes are fine; what matters is each run's invariants


def test_check_folds_probe_evidence_and_exports_it(probe_ns):
    """check --probe-seconds: the probe rows of the same namespace join the census's
    findings; Prometheus gets the probe series."""
    probe_ns.spawn_load("closewait", "--port", "9380", "--count", "12")
    nd = ["check", "--netns", probe_ns.name, "--probes", "states,drops,errors"]
    with Window(probe_ns, None, None, netdiag_cmd=[sys.executable, "-m", "netdiag", *nd,
                                                    "--json", "--probe-seconds", "300"],
                hooks=sum(hook_count(p) for p in ("states", "drops", "errors"))) as w:
        w.load("refused", "--port", "9381", "--count", "15")
    report = w.report
    assert w.returncode in (1, 2), w.netdiag_stderr
    cw = finding(report, "closewait.leak")
    assert cw["evidence"]["probe_seconds"] > 0 and "probe window" in cw["explanation"]
    assert finding(report, "drops.kernel_drops")["severity"] == "info"
    conn = finding(report, "errors.connect_failures")
    assert "127.0.0.1:9381" in conn["title"] and "ECONNREFUSED" in conn["title"]
    assert finding(report, "probes.incomplete") is None  # complete: check shows no ok rows
    prom = run_netdiag(*nd, "--probe-seconds", "0.5", "--format", "prometheus",
                       check_rc=(0, 1, 2)).stdout
    for name in ("netdiag_probe_window_seconds{probe=\"states\"",
                 "netdiag_probe_active_closes", "netdiag_probe_lost_events",
                 "netdiag_probe_startup_seconds{probe=\"errors\""):
        assert name in prom, name


def test_inside_ip_netns_exec_says_so_and_points_to_netns(probe_ns):
    """`ip netns exec` mounts a fresh /sys: tracefs is not there. Say why, and the fix."""
    out = probe_ns.exec("env", f"PYTHONPATH={REPO}", sys.executable, "-m", "netdiag", "probe",
                        "states", "--duration", "1", check=False)
    assert out.returncode == 3 and "Traceback" not in out.stderr
    line = out.stderr.strip()
    assert len(line.splitlines()) == 1
    assert "ip netns exec" in line and f"--netns {probe_ns.name}" in line
    listing = load_json(probe_ns.exec("env", f"PYTHONPATH={REPO}", sys.executable, "-m",
                                       "netdiag", "probe", "list", "--json").stdout)
    assert all(f"--netns {probe_ns.name}" in r["why_not"] for r in listing["probes"])


def test_check_probe_seconds_without_root_reports_and_continues():
    require_root("dropping privileges")
    from test_scenarios import _unprivileged_python  # noqa: PLC0415

    python = _unprivileged_python()
    import site

    env = dict(os.environ, PYTHONPATH=":".join([str(REPO)] + site.getsitepackages()),
               HOME="/tmp")
    out = subprocess.run(["runuser", "-u", "nobody", "--", *python, "-m", "netdiag", "check",
                          "--json", "--probe-seconds", "1"], capture_output=True, text=True,
                         env=env, cwd="/", timeout=60)
    report = load_json(out.stdout)
    errs = [e for e in report["errors"] if e["collector"] == "probes"]
    assert errs and "not root" in errs[0]["message"] and "fix:" in errs[0]["message"]


def test_probe_without_privilege_is_one_line_and_exit_3():
    require_root("dropping privileges")
    import site

    from test_scenarios import _unprivileged_python  # noqa: PLC0415

    env = dict(os.environ, PYTHONPATH=":".join([str(REPO)] + site.getsitepackages()),
               HOME="/tmp")
    out = subprocess.run(["runuser", "-u", "nobody", "--", *_unprivileged_python(), "-m",
                          "netdiag", "probe", "states", "--duration", "1"],
                         capture_output=True, text=True, env=env, cwd="/", timeout=60)
    assert out.returncode == 3 and "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "not root" in lines[0] and "fix: run as root" in lines[0]


def test_a_probe_run_holds_the_namespace_it_counts_open_while_attached(probe_ns):
    """The programs compare a socket's namespace by kernel address after the first match
    (probes/common.h, counted_net): while they are attached, netdiag must hold that namespace
    open (an nsfs descriptor), so its address cannot be freed and given to another."""
    inode = os.stat(f"/run/netns/{probe_ns.name}").st_ino

    def holds() -> bool:
        try:
            fds = os.listdir(f"/proc/{proc.pid}/fd")
        except OSError:
            return False
        for fd in fds:
            try:
                if os.readlink(f"/proc/{proc.pid}/fd/{fd}") == f"net:[{inode}]":
                    return True
            except OSError:
                continue
        return False

    proc = spawn("probe", "states", "--duration", "120", "--json", "--netns", probe_ns.name)
    try:
        wait_for(lambda: attachments(proc.pid) >= hook_count("states"), "states attached")
        assert holds()  # setns() closes its own descriptor at once: this one is the hold
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert load_json(out)["facts"]["states"]["scope"]["filter"] == "exact"


def test_every_probe_records_its_maps_as_a_fixture_the_readers_accept(probe_ns, tmp_path):
    """NETDIAG_PROBE_RECORD writes each probe's raw maps (how tests/fixtures/probes/ are
    made): every probe's recording is complete JSON (per-CPU scratch structs left out, a
    mappable counter array as its non-zero slots) and reads back into the same facts."""
    sys.path.insert(0, str(REPO / "tests"))
    from test_ebpf_units import Recorded  # the fixtures' reader interface

    from netdiag.ebpf import readers
    from netdiag.ebpf.probes import PROBES

    for name in PROBES:
        proc = run_netdiag("probe", name, "--duration", "0.3", "--json", "--netns",
                           probe_ns.name, env={"NETDIAG_PROBE_RECORD": str(tmp_path)},
                           timeout=120)
        assert proc.returncode in (0, 1), (name, proc.stderr[-3000:])
        assert name in load_json(proc.stdout)["facts"], name
        doc = json.loads((tmp_path / f"{name}.json").read_text())  # not netdiag output: maps
        ctx = readers.ReadContext(formats=doc["formats"], enabled=set(doc["enabled"]),
                                  seconds=doc["seconds"], now_ns=doc["now_ns"],
                                  epoll_known=doc["epoll_known"], samples=doc.get("samples"))
        assert len(doc["maps"]["lost"]) == 16, name  # every slot: read by position
        again = dataclasses.asdict(PROBES[name].read(Recorded(doc), ctx))
        live = load_json(proc.stdout)["facts"][name]
        session = {"probe", "window", "startup", "scope", "completeness", "hooks",
                   "missing_parts"}
        assert {k: v for k, v in again.items() if k not in session} == \
            {k: v for k, v in live.items() if k not in session}, name


def test_softirq_says_when_proc_hides_ksoftirqd():
    """In a PID namespace with its own /proc (a container) no ksoftirqd thread is visible:
    the run says ksoftirqd time is missing and why, instead of an empty table that reads as
    'ksoftirqd never ran'."""
    require_probes()
    proc = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-m",
                           "netdiag", "probe", "softirq", "--duration", "0.3", "--json"],
                          capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=str(REPO)), cwd="/")
    assert proc.returncode == 0, proc.stderr[-3000:]
    facts = load_json(proc.stdout)["facts"]["softirq"]
    assert facts["ksoftirqd"] == []
    assert any(p.startswith("ksoftirqd time: no ksoftirqd/N kernel thread")
               for p in facts["missing_parts"]), facts["missing_parts"]


@pytest.mark.parametrize("stage", ["load", "attach"])
def test_a_kernel_refusing_typed_raw_tracepoints_gets_the_tracepoint(probe_ns, monkeypatch,
                                                                     stage):
    """states is loaded as a typed raw tracepoint where the kernel allows it (this one does);
    where the kernel refuses the program (to load it or to attach it), the same probe is
    compiled again for its tracepoint, attaches, and counts: here, failed connects in the
    test's namespace."""
    from netdiag.ebpf import runtime, typed
    from netdiag.ebpf.btf import GROUPS, kernel_layout
    from netdiag.ebpf.probes import PROBES

    spec = PROBES["states"]
    layout = kernel_layout()
    defines = layout.defines(tuple(GROUPS))
    defines.update(runtime.map_defines(spec.maps))
    defines["NETNS_INUM"] = os.stat(f"/run/netns/{probe_ns.name}").st_ino
    plan = runtime.plan_hooks(spec.hooks, layout=layout)
    assert plan.typed == ["np_set_state"]  # this kernel has btf_trace_inet_sock_set_state

    def refuse(*args) -> int:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(typed, stage, refuse)
    loaded = runtime.Loaded("states", plan, defines)
    try:
        assert loaded.hook_names() == ["sock:inet_sock_set_state"] and not plan.typed
        assert loaded.fallbacks == {"np_set_state": f"not {stage}ed: Operation not permitted"}
        assert loaded.prog_fd(spec.hooks[0]) is not None
        probe_ns.exec("bash", "-c", "for i in 1 2 3 4 5; do (exec 3<>/dev/tcp/127.0.0.1/9) "
                      "2>/dev/null; done; true")
        loaded.detach()
        pairs = {k.value: sum(v) for k, v in loaded.bpf[b"pairs"].items() if sum(v)}
    finally:
        loaded.close()
    assert pairs == {0x72: 5, 0x27: 5}  # CLOSE->SYN_SENT, SYN_SENT->CLOSE: refused


def _states_loaded(ns, untyped: bool, monkeypatch):
    """states for namespace `ns`, without its ephemeral range (every port shown as it is:
    the strictest comparison), typed or through the tracepoint."""
    from netdiag.ebpf import runtime
    from netdiag.ebpf.btf import GROUPS, kernel_layout
    from netdiag.ebpf.probes import PROBES

    spec = PROBES["states"]
    layout = kernel_layout()
    defines = layout.defines(tuple(GROUPS))
    defines.update(runtime.map_defines(spec.maps))
    defines["NETNS_INUM"] = os.stat(f"/run/netns/{ns.name}").st_ino
    with monkeypatch.context() as m:
        if untyped:
            m.setenv(runtime.UNTYPED_ENV, "1")
        plan = runtime.plan_hooks(spec.hooks, layout=layout)
    return runtime.Loaded("states", plan, defines)


def test_both_ways_in_count_the_same_keys_port_for_port(probe_ns, monkeypatch):
    """The typed variant and the tracepoint, attached at once, with every port shown as it is
    (no ephemeral range): the same state pairs and the same rows, key for key. A failed
    connect's own port is in its row (the kernel has released it from skc_num by the time the
    tracepoint fires; the record keeps inet_sport, and so does the typed variant)."""
    typed_ = _states_loaded(probe_ns, False, monkeypatch)
    traced = _states_loaded(probe_ns, True, monkeypatch)
    try:
        assert typed_.hook_names() == ["btf:sock:inet_sock_set_state"]
        assert traced.hook_names() == ["sock:inet_sock_set_state"]
        probe_ns.exec(sys.executable, "-c", (
            "import socket\n"
            "srv = socket.create_server(('127.0.0.1', 9440))\n"
            "for _ in range(5):\n"
            "    c = socket.create_connection(('127.0.0.1', 9440)); a, _ = srv.accept()\n"
            "    a.close(); c.close()\n"
            "for _ in range(5):\n"
            "    try:\n"
            "        socket.create_connection(('127.0.0.1', 9441))\n"
            "    except ConnectionRefusedError:\n"
            "        pass\n"))
        seen = []
        for loaded in (typed_, traced):
            loaded.detach()
            pairs = {k.value: sum(v) for k, v in loaded.bpf[b"pairs"].items() if sum(v)}
            flows = {(k.oldstate, k.newstate, k.lport, k.rport, bytes(k.daddr)): v.value
                     for k, v in loaded.bpf[b"flows"].items()}
            seen.append((pairs, flows))
    finally:
        typed_.close()
        traced.close()
    assert seen[0] == seen[1]
    pairs, flows = seen[0]
    assert pairs[0x27] == 5 and pairs[0x21] == 5
    failed = [k for k in flows if k[:2] == (2, 7)]
    assert len(failed) == 5 and all(k[2] != 0 and k[3] == 9441 for k in failed)
