"""Probe layer without a kernel: BTF parsing, format files of several kernels, per-hook
degradation, the readers on recorded maps (tests/fixtures/probes/, written by a real run with
NETDIAG_PROBE_RECORD), the declarations' completeness, the schema, and the rules on typed
results."""

from __future__ import annotations

import dataclasses
import json
import re
import struct
from pathlib import Path
from types import SimpleNamespace as NS

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netdiag.ebpf import btf, readers, tracefs
from netdiag.ebpf.probes import PROBES
from netdiag.ebpf.runtime import Hook, c_source, map_defines, plan_hooks
from netdiag.ebpf.session import mark_approximate, used_slots
from netdiag.facts import Facts
from netdiag.probefacts import (
    Completeness,
    EpollRegistration,
    Listener,
    MapLoss,
    Retransmits,
    RetransResult,
    WakeupsResult,
    Window,
    WorkerThread,
)

from conftest import FIXTURES, REPO

FMT = FIXTURES / "tracefs"
RECORDED = FIXTURES / "probes"
SCHEMA = REPO / "docs" / "schema" / "probes.schema.json"


def fmt(name: str) -> str:
    return (FMT / name).read_text()


# ---- BTF ------------------------------------------------------------------------------------

def _blob(types: list[bytes], strings: bytes) -> bytes:
    data = b"".join(types)
    header = struct.pack("<HBBIIIII", btf.BTF_MAGIC, 1, 0, 24, 0, len(data), len(data),
                         len(strings))
    return header + data + strings


def test_btf_blob_offsets_through_anonymous_members_and_no_bitfields():
    strings = b"\0sk_buff\0head\0network_header\0transport_header\0flags\0int\0"
    off = {name: strings.index(name.encode() + b"\0") for name in
           ("sk_buff", "head", "network_header", "transport_header", "flags", "int")}

    def member(name: str, type_id: int, bits: int) -> bytes:
        return struct.pack("<III", off[name] if name else 0, type_id, bits)

    types = [
        struct.pack("<III", off["int"], 1 << 24, 4) + struct.pack("<I", 32),  # [1] INT
        struct.pack("<III", 0, (4 << 24) | 2, 4) + member("transport_header", 1, 0)
        + member("network_header", 1, 16),  # [2] anonymous STRUCT
        struct.pack("<III", off["sk_buff"], (4 << 24) | (1 << 31) | 3, 224)
        + member("", 2, 1424) + member("head", 1, 1536)
        + member("flags", 1, (3 << 24) | 1600),  # [3] sk_buff, kind_flag: bitfield sizes
    ]
    parsed = btf.BTF(_blob(types, strings))
    got = parsed.offsets("sk_buff", ("head", "network_header", "transport_header", "flags"))
    assert got == {"transport_header": 178, "network_header": 180, "head": 192}
    assert parsed.offsets("nosuch", ("head",)) == {}
    with pytest.raises(ValueError):
        btf.BTF(b"\0" * 40)


def test_btf_layout_says_what_is_missing(tmp_path):
    layout = btf.kernel_layout(str(tmp_path / "no-btf"))
    assert set(layout.missing) == set(btf.GROUPS) and not layout.offsets
    assert "no BTF" in layout.why("sk_netns")
    assert layout.defines(("sk_netns",)) == {}


def test_running_kernel_layout_has_every_group():
    if not Path(btf.VMLINUX).exists():
        pytest.skip("this kernel has no BTF")
    layout = btf.kernel_layout()
    assert layout.missing == {} or set(layout.missing) <= {"syscall_regs"}
    d = layout.defines(("sk_netns",))
    assert d["NET_INUM_OFF"] == layout.offsets["NET_NS_OFF"] + layout.offsets["NS_INUM_OFF"]
    assert d["HAVE_SK_NETNS"] == 1


# ---- format files and per-hook degradation -----------------------------------------------

def test_kfree_skb_across_kernels():
    new = tracefs.parse_fields(fmt("kfree_skb.6.18"))
    assert (new["reason"].offset, new["reason"].size) == (36, 4)
    assert new["reason"].ctype == "enum skb_drop_reason" and "rx_sk" in new
    mid = tracefs.parse_fields(fmt("kfree_skb.6.1"))
    assert mid["reason"].offset == 28 and "rx_sk" not in mid
    old = tracefs.parse_fields(fmt("kfree_skb.5.10"))
    assert "reason" not in old and old["protocol"].offset == 24
    # Names come from each kernel's own table: the same number means different reasons.
    assert tracefs.parse_symbolic(fmt("kfree_skb.6.18"), "reason")[2] == "NOT_SPECIFIED"
    assert tracefs.parse_symbolic(fmt("kfree_skb.6.1"), "reason")[2] == "NO_SOCKET"
    assert len(tracefs.parse_symbolic(fmt("kfree_skb.6.18"), "reason")) > 100
    assert tracefs.parse_symbolic(fmt("kfree_skb.5.10"), "reason") == {}


def test_send_reset_layouts_and_nested_symbolic():
    new = tracefs.parse_fields(fmt("tcp_send_reset.6.18"))
    assert new["saddr"].array == 28 and "sport" not in new and "reason" in new
    reasons = tracefs.parse_symbolic(fmt("tcp_send_reset.6.18"), "reason")
    assert reasons[1] == "NO_SOCKET"  # found past the nested state table
    old = tracefs.parse_fields(fmt("tcp_send_reset.5.15"))
    assert old["sport"].offset == 28 and "reason" not in old
    assert tracefs.parse_symbolic(fmt("tcp_send_reset.5.15"), "state") == {}
    assert tracefs.parse_symbolic(fmt("tcp_send_reset.5.15"), "family") == {2: "AF_INET",
                                                                           10: "AF_INET6"}
    assert tracefs.parse_symbolic(fmt("softirq_raise.6.18"), "vec")[3] == "NET_RX"


def _fake_tracefs(tmp_path, files: dict[str, str]):
    for key, name in files.items():
        cat, event = key.split(":")
        d = tmp_path / "events" / cat / event
        d.mkdir(parents=True)
        (d / "format").write_text(fmt(name) if name else "")
    return str(tmp_path)


def test_hooks_degrade_one_by_one(tmp_path):
    root = _fake_tracefs(tmp_path, {"tcp:tcp_send_reset": "tcp_send_reset.5.15"})
    plan = plan_hooks(PROBES["resets"].hooks, root)
    assert [h.fn for h in plan.enabled] == ["np_send_reset"]
    [(hook, why)] = plan.missing
    assert hook.fn == "np_receive_reset" and "does not exist" in why
    src = c_source("resets", plan)
    assert "#define HOOK_np_send_reset 1" in src
    assert "#define HOOK_np_receive_reset" not in src
    assert "#define HAS_tcp_send_reset_sport 1" in src
    assert "#define HAS_tcp_send_reset_reason" not in src  # 5.15: no reason, compiled out
    assert "#define OFF_tcp_send_reset_saddr 34" in src


def test_a_hook_missing_a_field_or_offsets_is_skipped(tmp_path):
    root = _fake_tracefs(tmp_path, {"skb:kfree_skb": "kfree_skb.5.10"})
    plan = plan_hooks(PROBES["drops"].hooks, root)
    assert [h.fn for h in plan.enabled] == ["np_kfree_skb"]  # reason is optional
    assert "#define HAS_kfree_skb_reason" not in c_source("drops", plan)
    empty = plan_hooks(PROBES["states"].hooks, _fake_tracefs(tmp_path / "x", {}))
    assert not empty.enabled and "sock:inet_sock_set_state" in empty.missing[0][1]
    # A raw tracepoint needs its event to exist and the struct offsets its code reads.
    no_btf = btf.Layout({}, {g: "this kernel's BTF has no X" for g in btf.GROUPS})
    raw = _fake_tracefs(tmp_path / "y", {"raw_syscalls:sys_exit": ""})
    plan = plan_hooks(PROBES["errors"].hooks, raw, layout=no_btf)
    assert not plan.enabled and "BTF has no X" in plan.missing[0][1]
    plan = plan_hooks(PROBES["errors"].hooks, raw, layout=btf.Layout({}, {}))
    assert [h.fn for h in plan.enabled] == ["np_sys_exit"]


def test_defines_caps_and_large_values(monkeypatch):
    maps = PROBES["states"].maps
    d = map_defines(maps)
    assert d == {"MAX_FLOWS": 65536, "LOSS_FLOWS": 0, "MAX_CW_SINCE": 262144,
                 "LOSS_CW_SINCE": 1}
    monkeypatch.setenv("NETDIAG_PROBE_MAP_ENTRIES", "4")
    assert map_defines(maps)["MAX_FLOWS"] == 4
    plan = plan_hooks((), "/nonexistent")
    src = c_source("states", plan, {"NETNS_INUM": 4026531833, "EPH_LO": 32768})
    assert "#define NETNS_INUM 0xeffffff9ULL" in src and "#define EPH_LO 32768" in src


def test_histogram_buckets_are_labelled_by_their_real_range():
    """Slot 0 holds 0 (the old labels said 1-1 ms for 0 ms closes); slot k holds
    [2^(k-1), 2^k - 1], bpftrace's hist() buckets."""
    got = [(b.low, b.high, b.count) for b in readers.buckets({0: 5, 1: 2, 2: 3, 9: 1, 4: 0})]
    assert got == [(0, 0, 5), (1, 1, 2), (2, 3, 3), (256, 511, 1)]


# ---- readers on recorded maps -------------------------------------------------------------

class Recorded:
    """A recorded fixture as the readers' map interface."""

    def __init__(self, doc: dict) -> None:
        self.doc = doc

    @staticmethod
    def _ns(x):
        if isinstance(x, dict):
            return NS(**{k: bytes(v) if isinstance(v, list) else v for k, v in x.items()})
        return x

    def items(self, name: str) -> list:
        return [(self._ns(k), self._ns(v)) for k, v in self.doc["maps"].get(name, [])]

    def per_cpu(self, name: str) -> list[tuple[int, int, int]]:
        return [tuple(r) for r in self.doc.get("per_cpu", {}).get(name, [])]

    def values(self, name: str) -> list[int]:
        rows = sorted(self.doc["maps"].get(name, []), key=lambda kv: kv[0]["value"])
        return [v["value"] for _, v in rows]


def read_recorded(probe: str):
    doc = json.loads((RECORDED / f"{probe}.json").read_text())  # not netdiag output: maps
    ctx = readers.ReadContext(formats=doc["formats"], enabled=set(doc["enabled"]),
                              seconds=doc["seconds"], now_ns=doc["now_ns"],
                              epoll_known=doc["epoll_known"], samples=doc.get("samples"))
    res = PROBES[probe].read(Recorded(doc), ctx)
    res.probe = probe
    res.window = Window("2026-11-27T20:00:00.000Z", "2026-11-27T20:00:01.500Z", doc["seconds"])
    return res


@pytest.mark.parametrize("probe", sorted(PROBES))
def test_recorded_maps_read_into_results_that_match_the_schema(probe):
    res = read_recorded(probe)
    schema = json.loads(SCHEMA.read_text())  # not netdiag output: the schema
    jsonschema.Draft202012Validator(schema).validate({probe: dataclasses.asdict(res)})


def test_recorded_states():
    """Recorded: clients closing first toward 9600, 9601 (CLOSE_WAIT, two held), 9603 (IPv6),
    a server on 9604 closing first, three refused connects to 9602. A client's rows come from
    the hash, a server's from the array by port (by_port)."""
    res = read_recorded("states")
    closes = {(r.peer, r.remote_port, r.local_port): r.count for r in res.active_closes}
    assert closes == {("127.0.0.1", 9600, None): 20, ("::1", 9603, None): 3,
                      ("127.0.0.1", 9601, None): 4, (None, None, 9604): 5}
    passive = {(r.peer, r.remote_port, r.local_port): r.count for r in res.passive_closes}
    assert passive == {(None, None, 9600): 20, (None, None, 9601): 4, (None, None, 9603): 3,
                       ("127.0.0.1", 9604, None): 5}
    assert {(r.peer, r.remote_port): r.count for r in res.failed_connects} == \
        {("127.0.0.1", 9602): 3}
    assert {r.local_port: r.count for r in res.accepted} == \
        {9600: 20, 9601: 4, 9603: 3, 9604: 5}
    cw = res.close_wait
    assert (cw.entered, cw.left, cw.still_waiting_total) == (32, 30, 2)
    assert cw.still_waiting[0].local_port == 9601 and cw.still_waiting[0].sockets == 2
    assert {(b.low, b.high) for b in cw.left_after_ms} >= {(0, 0), (256, 511)}


def test_recorded_wakeups_tell_a_shared_socket_from_a_reuseport_group():
    res = read_recorded("wakeups")
    shared = [x for x in res.listeners if x.port == 9620]
    group = [x for x in res.listeners if x.port == 9621]
    assert len(shared) == 1 and shared[0].sockets_on_port == 1
    assert shared[0].wakeups_per_connection >= 2 and len(shared[0].processes) == 3
    assert len(group) == 2 and all(g.sockets_on_port == 2 for g in group)
    assert all(g.wakeups_per_connection == 1.0 for g in group)


def test_recorded_errors_and_resets():
    res = read_recorded("errors")
    got = {(f.call, f.error, f.reported_by): f.count for f in res.failures}
    assert got == {("connect", "ECONNREFUSED", "return"): 4,
                   ("connect", "ECONNREFUSED", "so_error"): 2,
                   ("recvfrom", "ECONNRESET", "return"): 3, ("accept4", "EMFILE", "return"): 2}
    assert res.total == 11 and res.by_errno[0].error == "ECONNREFUSED"
    rs = read_recorded("resets")
    assert {(r.reason, r.local_port): r.resets for r in rs.sent}[("NO_SOCKET", 9660)] == 4


def test_loss_marks_the_rows_fed_by_the_map():
    """A full flows hash makes a client's rows lower bounds; a server's rows by port come
    from an array that cannot fill and stay exact."""
    res = read_recorded("states")
    flows = PROBES["states"].maps[0]
    mark_approximate(res, flows.tables, flows.rows)
    mark_approximate(res, ("close_wait",))
    client = [r for r in res.active_closes + res.passive_closes if r.remote_port]
    server = [r for r in res.active_closes + res.passive_closes if not r.remote_port]
    assert client and server and res.accepted and res.connects
    assert all(r.approximate for r in client + res.connects) and res.close_wait.approximate
    assert not any(r.approximate for r in server + res.accepted)
    # The state-pair totals come from a per-CPU array that cannot fill: never marked.
    assert res.transitions and not any(t.approximate for t in res.transitions)


def test_recorded_states_pairs_are_the_totals_of_every_change():
    res = read_recorded("states")
    got = {(t.from_state, t.to_state): t.count for t in res.transitions}
    assert got[("SYN_SENT", "ESTABLISHED")] == sum(r.count for r in res.connects)
    assert got[("ESTABLISHED", "FIN_WAIT1")] == sum(r.count for r in res.active_closes)
    assert got[("SYN_RECV", "ESTABLISHED")] == sum(r.count for r in res.accepted)
    assert got[("ESTABLISHED", "CLOSE_WAIT")] == res.close_wait.entered


# ---- declarations ------------------------------------------------------------------------

MAN = (REPO / "man" / "netdiag.1").read_text()
README = (REPO / "README.md").read_text()
CHECKLIST = (REPO / "probes" / "README.md").read_text()


@pytest.mark.parametrize("name", sorted(PROBES))
def test_every_probe_declaration_is_complete(name):
    """What probes/README.md asks of a new probe: its C file with each hook and map, its man
    section, its fixture, its schema, its topics, its metrics, its README line."""
    from netdiag import metrics
    from netdiag.rules import TOPICS

    spec = PROBES[name]
    src = (REPO / "probes" / f"{name}.c").read_text()
    for hook in spec.hooks:
        assert f"#ifdef HOOK_{hook.fn}" in src and f"int {hook.fn}(" in src, hook.fn
        assert hook.netns in ("socket", "packet", "inherits", "none")
        assert set(hook.btf) <= set(btf.GROUPS)
        if hook.typed is not None:  # its typed raw tracepoint variant, and what it reads
            assert f"#ifdef TYPED_{hook.fn}" in src and set(hook.typed) <= set(btf.GROUPS)
    for m in spec.maps:
        assert f"MAX_{m.name.upper()}" in src and f"LOSS_{m.name.upper()}" in src, m.name
        for table in m.tables:
            assert table in {f.name for f in dataclasses.fields(read_recorded(name))}, table
    assert re.search(rf"^\.SS {name}$", MAN, re.M), f"man section for {name}"
    assert (RECORDED / f"{name}.json").is_file()
    assert name in json.loads(SCHEMA.read_text())["$defs"]  # not netdiag output: schema
    assert spec.topics and all(t in TOPICS for t in spec.topics)
    assert spec.metrics and all(f'"{m}"' in Path(metrics.__file__).read_text()
                                for m in spec.metrics)
    assert f"`{name}`" in README
    assert "probes/NAME.c" in CHECKLIST


def test_probe_schema_is_current():
    from schema_gen import schema

    committed = json.loads(SCHEMA.read_text())  # not netdiag output: the schema
    assert committed == schema(), \
        "run: python3 tests/schema_gen.py > docs/schema/probes.schema.json"


# ---- rules on typed results --------------------------------------------------------------

def _facts(**probes) -> Facts:
    return Facts(probes=probes)


def _listener(port: int, conns: int, wakeups: int, threads: list[tuple[int, int]],
              epoll: int | None = 4, exclusive: int = 0, group: int = 1) -> Listener:
    return Listener(
        inode=port * 10, port=port, family="ipv4", connections=conns, accepted=conns,
        eagain=0, errors=0, wakeups=wakeups,
        wakeups_per_connection=round(wakeups / conns, 2) if conns else None,
        waiters_max=4, epoll_waiters_max=epoll, exclusive_waiters_max=exclusive,
        sockets_on_port=group, processes=sorted({p for p, _ in threads}),
        threads=[WorkerThread(p, t, "srv", wakeups // len(threads), 1, 0, 0)
                 for p, t in threads])


def test_herd_verdict_names_threads_of_one_process_and_the_fix():
    from netdiag.rules import wakeups

    res = WakeupsResult(window=Window(seconds=5.0), listeners=[
        _listener(8080, 40, 160, [(100, 101), (100, 102), (100, 103), (100, 104)])])
    [f] = wakeups.check(_facts(wakeups=res))
    assert f.severity.label == "warning"
    assert "port 8080: 4 tasks woken per connection" in f.title
    assert "4 threads of pid 100" in f.title
    assert "4 epoll instances wait on it" in f.recommendation
    assert "EPOLLEXCLUSIVE" in f.recommendation and "SO_REUSEPORT" in f.recommendation


def test_herd_verdict_ok_for_a_reuseport_group_and_thin_data():
    from netdiag.rules import wakeups

    group = [_listener(8080, 10, 10, [(100 + i, 100 + i)], epoll=1, group=4) for i in range(4)]
    [f] = wakeups.check(_facts(wakeups=WakeupsResult(window=Window(seconds=5.0),
                                                     listeners=group)))
    assert f.severity.label == "ok" and "too few connections" in f.title
    group = [_listener(8080, 30, 30, [(100 + i, 100 + i)], epoll=1, group=4) for i in range(4)]
    [f] = wakeups.check(_facts(wakeups=WakeupsResult(window=Window(seconds=5.0),
                                                     listeners=group)))
    assert f.severity.label == "ok" and "SO_REUSEPORT group of 4 sockets" in f.title
    # An exclusive registration that still wakes several: the cascade of one shared epoll.
    excl = _listener(9000, 40, 120, [(7, 7), (7, 8), (7, 9)], epoll=1, exclusive=1)
    excl.epoll_registrations = [EpollRegistration(7, "srv", 1, 1, 0)]
    [f] = wakeups.check(_facts(wakeups=WakeupsResult(window=Window(seconds=5.0),
                                                     listeners=[excl])))
    assert f.severity.label == "warning" and "level-triggered" in f.recommendation


def test_retransmits_that_failed_inside_the_host_are_apart():
    from netdiag.rules import retrans

    res = RetransResult(window=Window(seconds=2.0), by_flow=[
        Retransmits(None, "10.0.0.9", 443, 0, 12, 0.0)], total=0, failed_total=12,
        failures_reported=True)
    [f] = retrans.check(_facts(retrans=res))
    assert f.severity.label == "info" and "no retransmit left the host" in f.title
    res.by_flow = [Retransmits(None, "10.0.0.9", 443, 50, 3, 25.0)]
    res.total, res.failed_total = 50, 3
    [f] = retrans.check(_facts(retrans=res))
    assert f.severity.label == "warning" and "10.0.0.9:443" in f.title
    assert "3 more attempts failed inside this host" in f.title


def test_incomplete_probe_results_are_a_warning_that_says_by_how_much():
    from netdiag.rules import probes

    res = RetransResult(probe="retrans", window=Window(seconds=2.0))
    [ok] = probes.check(_facts(retrans=res))
    assert ok.severity.label == "ok"
    res.completeness = Completeness(complete=False, events_lost=77, skipped_runs=3, lost=[
        MapLoss("retrans", 65536, 77, ["by_flow"])])
    [f] = probes.check(_facts(retrans=res))
    assert f.severity.label == "warning"
    assert ("77 events lost in map retrans (full at 65536 entries: the rows marked approximate "
            "in by_flow, and their totals, are lower bounds (a row may be missing "
            "altogether))") in f.title
    assert "3 runs skipped by the kernel" in f.title
    assert f.evidence["probes"][0]["maps"][0]["events_lost"] == 77


def test_hook_names_say_raw_tracepoints():
    assert Hook("x", "sched", "sched_waking", "f", raw=True).name == "raw:sched:sched_waking"
    assert Hook("x", "tcp", "tcp_send_reset", "f").name == "tcp:tcp_send_reset"


def test_softirq_imbalance_is_judged_over_the_probe_window():
    """Since boot CPU0 did everything; during the window the work was spread: the verdict
    follows the window the table shows."""
    from netdiag.facts import SoftirqFacts
    from netdiag.probefacts import SoftirqCpu, SoftirqResult
    from netdiag.rules import softirq

    boot = SoftirqFacts(net_rx=[900_000, 10], net_tx=[0, 0])
    [since_boot] = [f for f in softirq.check(Facts(softirqs=boot)) if f.id == "softirq.imbalance"]
    assert since_boot.severity.label == "info" and "CPU0" in since_boot.title
    res = SoftirqResult(window=Window(seconds=3.0), per_cpu=[
        SoftirqCpu("NET_RX", 0, 6000, 1.0, 0.0), SoftirqCpu("NET_RX", 1, 5500, 1.0, 0.0),
        SoftirqCpu("NET_TX", 1, 90000, 1.0, 0.0)])
    [f] = [f for f in softirq.check(Facts(softirqs=boot, probes={"softirq": res}))
           if f.id == "softirq.imbalance"]
    assert f.severity.label == "ok" and f.evidence["net_rx_per_cpu"] == [6000, 5500]
    assert f.evidence["window"] == "probe window (3 s)"


def test_the_counted_namespace_is_held_open_for_the_window_and_only_it():
    """The programs remember the counted namespace's kernel address (probes/common.h,
    counted_net): the run must hold that namespace open, or a freed namespace's address could
    be given to another while they count. The hold is the thread's own namespace, checked by
    inode, and released after the window."""
    import os

    from netdiag.ebpf.session import NetnsTarget, current_netns, hold_netns
    from netdiag.errors import NetdiagError

    def open_ns_fds() -> int:
        n = 0
        for fd in os.listdir("/proc/self/fd"):
            try:
                n += os.readlink(f"/proc/self/fd/{fd}").startswith("net:[")
            except OSError:
                pass
        return n

    before = open_ns_fds()
    target = current_netns("default")
    assert target.inode is not None
    with hold_netns(target):
        assert open_ns_fds() == before + 1
    assert open_ns_fds() == before
    with hold_netns(NetnsTarget("host-wide", None)):  # nothing to hold when nothing is filtered
        assert open_ns_fds() == before
    with pytest.raises(NetdiagError, match="no longer in the namespace"):
        with hold_netns(NetnsTarget("other", target.inode + 1)):
            pass
    assert open_ns_fds() == before



# ---- mapped arrays: the slots in use ------------------------------------------------------

@settings(max_examples=200, deadline=None)
@given(stride=st.sampled_from([8, 24, 32]), count=st.integers(0, 700),
       marks=st.lists(st.tuples(st.integers(0, 699), st.integers(0, 31), st.integers(1, 255)),
                      max_size=40))
def test_used_slots_finds_every_slot_with_any_byte_set(stride, count, marks):
    """A slot is in use when any of its bytes is non-zero (a server's row may have counted
    only closes, its first counter zero): found whatever the group boundaries."""
    buf = bytearray(count * stride)
    want = set()
    for slot, offset, value in marks:
        if slot < count:
            buf[slot * stride + offset % stride] = value
            want.add(slot)
    assert used_slots(bytes(buf), stride, count, group=16) == sorted(want)
    assert used_slots(bytes(buf), stride, count) == sorted(want)


def test_recordings_find_every_map_a_probe_uses():
    """NETDIAG_PROBE_RECORD keeps the maps a probe's source declares: every map its code
    reads or writes (NAME.lookup(...), .update, ...) is found among them, and nothing else."""
    from netdiag.ebpf.runtime import probe_sources
    from netdiag.ebpf.session import declared_maps

    common = set(declared_maps((probe_sources() / "common.h").read_text()))
    assert {"lost", "listening"} <= common
    for name in PROBES:
        src = (probe_sources() / f"{name}.c").read_text()
        used = set(re.findall(r"\b(\w+)\.(?:lookup|lookup_or_try_init|update|delete|"
                              r"increment|atomic_increment)\(", src)) - common
        found = declared_maps(src)
        assert used and used <= set(found), (name, used - set(found))
        assert all(re.search(rf"\b{m}\b", src) for m in found), name
    src = ('BPF_PERCPU_HASH(a);\nBPF_TABLE("lru_hash", u32, struct x, b, 8);\n'
           'BPF_F_TABLE("hash", struct k, struct v, c,\n  MAX_C, BPF_F_NO_PREALLOC);\n'
           'BPF_ARRAY(d, u64, 1);')
    assert declared_maps(src) == ["a", "b", "c", "d"]


def test_reset_advice_never_says_shutdown_alone_avoids_the_rst():
    """__tcp_close() resets a close with unread data whether or not the socket was shut down:
    the advice is to read to end of file first (shutdown(SHUT_WR), read, close)."""
    from netdiag.concepts import CONCEPTS
    from netdiag.diagnose.symptoms import SYMPTOMS
    from netdiag.rules import resets

    texts = {"resets.sent": resets.SENT.recommendation}
    texts.update({c.id: c.action for s in SYMPTOMS for c in s.causes})
    texts.update({c.name: c.text for c in CONCEPTS})
    for name, text in texts.items():
        assert "shut down writing first" not in text, name
        if "SHUT_WR" in text and ("RST" in text or "reset" in text):
            assert re.search(r"shutdown\(SHUT_WR\), (then )?read until", text), (name, text)
    assert "read until end of file" in resets.SENT.recommendation
    assert "whether or not it called shutdown()" in resets.SENT.recommendation
    [cause] = [c for s in SYMPTOMS for c in s.causes if c.id == "econnreset.close_unread"]
    assert "shutdown(SHUT_WR) alone does not avoid the RST" in cause.action
    [half] = [c for c in CONCEPTS if c.name == "half-close"]
    assert "close() still sends a RST" in half.text


def test_retransmits_say_they_count_skbs_and_a_servers_clients_are_not_a_destination():
    from netdiag import metrics
    from netdiag.rules import retrans

    res = RetransResult(window=Window(seconds=6.0), by_flow=[
        Retransmits(5201, None, None, 578, 0, 96.33)], total=578)
    assert "skbs" in res.counted and "TcpRetransSegs" in res.counted
    [f] = retrans.check(_facts(retrans=res))
    assert f.title.startswith("578 retransmitted packets (skbs, not segments")
    assert "clients of local port 5201" in f.title
    assert "TcpRetransSegs" in f.evidence["counted"]
    assert "top destination" not in f.recommendation
    assert "sport = :5201" in f.recommendation
    assert "once per retransmitted skb" in retrans.PEERS.rule.text
    res.by_flow = [Retransmits(None, "10.0.0.9", 443, 50, 0, 25.0)]
    res.total = 50
    [f] = retrans.check(_facts(retrans=res))
    assert "top destination" in f.recommendation and "10.0.0.9:443" in f.title
    [s] = [s for s in metrics.samples(_facts(retrans=res), [], [], "ok", "default")
           if s.name == "netdiag_probe_retransmits"]
    assert "Segments" not in s.help and "skbs" in s.help


def test_herd_titles_pluralise_only_when_not_one():
    from netdiag.rules import wakeups

    one = _listener(8081, 30, 30, [(100, 101)])
    [f] = wakeups.check(_facts(wakeups=WakeupsResult(window=Window(seconds=5.0),
                                                     listeners=[one])))
    assert "woke 1 task per connection" in f.title, f.title
    half = _listener(8081, 50, 21, [(100, 101)])
    [f] = wakeups.check(_facts(wakeups=WakeupsResult(window=Window(seconds=5.0),
                                                     listeners=[half])))
    assert "woke 0.42 tasks per connection" in f.title, f.title
    two = _listener(8080, 40, 80, [(100, 101), (100, 102)])
    [f] = wakeups.check(_facts(wakeups=WakeupsResult(window=Window(seconds=5.0),
                                                     listeners=[two])))
    assert "2 tasks woken per connection" in f.title and "2 threads of pid 100" in f.title
    assert wakeups._n(1, "process", "processes") == "1 process"


@pytest.mark.parametrize("signum,word", [(2, "interrupted"), (15, "terminated")])
def test_a_signal_before_the_window_opened_ends_the_run_as_the_contract_says(
        monkeypatch, signum, word):
    """SIGINT/SIGTERM while the probes load (before the window): outside a probe window, so
    `netdiag: interrupted` / `netdiag: terminated` and exit 3, and what was loaded unloads."""
    import os

    from inprocess import run_main

    from netdiag.ebpf import runtime, session

    closed = []

    class FakeLoaded:
        compile_s = attach_s = 0.0

        def __init__(self, name, plan, defines, fill) -> None:  # noqa: ARG002
            os.kill(os.getpid(), signum)  # the signal arrives while this probe loads

        def close(self) -> None:
            closed.append(True)

    monkeypatch.setattr(runtime, "import_bcc", lambda: object())
    monkeypatch.setattr(session, "check_requirements", lambda: None)
    monkeypatch.setattr(btf, "kernel_layout", lambda: NS(defines=lambda groups: {}))
    monkeypatch.setattr(runtime, "port_range", lambda: None)
    monkeypatch.setattr(runtime, "listening_ports", lambda: set())
    monkeypatch.setattr(runtime, "plan_hooks",
                        lambda hooks, layout=None: NS(enabled=list(hooks), missing=[]))
    monkeypatch.setattr(session, "_filter_kind", lambda spec, plan, layout: ("exact", ""))
    monkeypatch.setattr(runtime, "Loaded", FakeLoaded)
    res = run_main(["probe", "drops", "--duration", "5"])
    assert res.rc == 3 and res.err == f"netdiag: {word}\n", res
    assert closed == [True]


def test_check_says_when_its_probe_window_was_cut_short():
    """check --probe-seconds 20 interrupted at 4.6 s: table and JSON say so and how long."""
    import io

    from netdiag import views
    from netdiag.model import HostInfo, Report
    from netdiag.render.json import report_dict
    from netdiag.render.table import render_table

    from conftest import validate_json

    res = RetransResult(window=Window("2026-01-01T00:00:00.000Z", "2026-01-01T00:00:04.600Z",
                                      4.6, interrupted=True))
    facts = _facts(retrans=res)
    view = views.check_view(facts, probe_seconds=20.0)
    assert view["probe_window"] == {
        "probes": ["retrans"], "asked_seconds": 20.0, "seconds": 4.6,
        "started_at": "2026-01-01T00:00:00.000Z", "ended_at": "2026-01-01T00:00:04.600Z",
        "interrupted": True}
    report = Report(host=HostInfo("h", "k", "default"), generated_at="2026-01-01T00:00:05Z",
                    facts=view, topic="check")
    validate_json(report_dict(report))
    out = io.StringIO()
    render_table(report, out)
    assert "probe window interrupted" in out.getvalue()
    assert "lasted 4.6 s of the 20 s asked" in out.getvalue()
    assert "probe_window" not in views.check_view(Facts())
