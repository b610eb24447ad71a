"""Probe layer without a kernel: format files of several kernels, per-hook degradation,
and the readers that turn kernel maps into facts (fed here with table-shaped stand-ins)."""

from __future__ import annotations

import ipaddress
from types import SimpleNamespace as NS

from netdiag.ebpf import tracefs
from netdiag.ebpf.probes import PROBES, read_drops, read_resets, read_retrans, read_states
from netdiag.ebpf.runtime import Plan, c_source, plan_hooks

from conftest import FIXTURES

FMT = FIXTURES / "tracefs"


def fmt(name: str) -> str:
    return (FMT / name).read_text()


BTF_RAW = """[1] INT 'unsigned short' size=2 bits_offset=0 nr_bits=16 encoding=(none)
[2] PTR '(anon)' type_id=0
[10] STRUCT '(anon)' size=6 vlen=3
\t'transport_header' type_id=1 bits_offset=0
\t'network_header' type_id=1 bits_offset=16
\t'mac_header' type_id=1 bits_offset=32
[11] UNION '(anon)' size=6 vlen=2
\t'(anon)' type_id=10 bits_offset=0
\t'headers' type_id=10 bits_offset=0
[12] STRUCT 'sk_buff' size=224 vlen=3
\t'len' type_id=1 bits_offset=0
\t'(anon)' type_id=11 bits_offset=1424
\t'head' type_id=2 bits_offset=1536
[13] STRUCT 'other' size=8 vlen=1
\t'head' type_id=2 bits_offset=0
"""


def test_btf_offsets_through_anonymous_members():
    from netdiag.ebpf.btf import find_offsets, parse_raw

    types = parse_raw(BTF_RAW)
    got = find_offsets(types, "sk_buff", ("head", "network_header", "transport_header"))
    assert got == {"transport_header": 178, "network_header": 180, "head": 192}
    assert find_offsets(types, "nosuch", ("head",)) == {}


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
    # Entries whose value is a symbol, not a number, are skipped.
    assert tracefs.parse_symbolic(fmt("tcp_send_reset.5.15"), "state") == {}
    assert tracefs.parse_symbolic(fmt("tcp_send_reset.5.15"), "family") == {2: "AF_INET",
                                                                           10: "AF_INET6"}
    assert tracefs.parse_symbolic(fmt("softirq_raise.6.18"), "vec")[3] == "NET_RX"


def _fake_tracefs(tmp_path, files: dict[str, str]):
    for key, name in files.items():
        cat, event = key.split(":")
        d = tmp_path / "events" / cat / event
        d.mkdir(parents=True)
        (d / "format").write_text(fmt(name))
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


def test_a_hook_missing_a_field_is_skipped(tmp_path):
    root = _fake_tracefs(tmp_path, {"skb:kfree_skb": "kfree_skb.5.10"})
    plan = plan_hooks(PROBES["drops"].hooks, root)
    assert [h.fn for h in plan.enabled] == ["np_kfree_skb"]  # reason is optional
    assert "#define HAS_kfree_skb_reason" not in c_source("drops", plan)
    empty = plan_hooks(PROBES["states"].hooks, _fake_tracefs(tmp_path / "x", {}))
    assert not empty.enabled and "sock:inet_sock_set_state" in empty.missing[0][1]


class Table:
    def __init__(self, items):
        self._items = items

    def items(self):
        return self._items

    def values(self):
        return [v for _, v in self._items]


def val(n):
    return NS(value=n)


def v4(text: str) -> bytes:
    return ipaddress.IPv4Address(text).packed + bytes(12)


def test_states_reader_groups_closers_and_close_wait():
    t = lambda o, n, sp, dp, peer, c: (NS(family=2, oldstate=o, newstate=n, sport=sp,  # noqa
                                           dport=dp, daddr=v4(peer)), val(c))
    bpf = {"transitions": Table([t(1, 4, 40001, 443, "10.0.0.9", 3),
                                 t(1, 4, 40002, 443, "10.0.0.9", 2),
                                 t(1, 8, 8080, 50000, "10.0.0.7", 4),
                                 t(2, 1, 40003, 443, "10.0.0.9", 5)]),
           "cw_port": Table([]), "cw_since": Table([]),
           "cw_ms": Table([(val(3), val(2)), (val(0), val(0))]), "lost": Table([(0, val(1))])}
    facts = read_states(bpf, Plan(), 10.0)
    assert facts["active_closes"] == [{"peer": "10.0.0.9", "port": 443, "closes": 5,
                                       "per_s": 0.5}]
    assert facts["peer_closed_first_by_port"] == [{"local_port": 8080, "closes": 4}]
    assert facts["connects_per_peer"][0]["connects"] == 5
    assert facts["transitions"]["ESTABLISHED->FIN_WAIT1"] == 5
    assert facts["close_wait_left_ms"] == [{"from": 4, "to": 7, "count": 2}]
    assert facts["lost_events"] == 1


def test_drops_reader_names_reasons_from_the_format():
    plan = Plan(formats={"skb:kfree_skb": fmt("kfree_skb.6.1")})
    bpf = {"drops": Table([(NS(reason=2, protocol=0x0800, l4=6, port=9330), val(30)),
                           (NS(reason=15, protocol=0x86DD, l4=0, port=0), val(3))]),
           "lost": Table([(0, val(0))])}
    facts = read_drops(bpf, plan, 3.0)
    assert facts["by_reason"][0] == {"reason": "NO_SOCKET", "drops": 30, "per_s": 10.0}
    assert facts["by_reason"][1]["reason"] == "SOCKET_RCVBUFF"
    assert facts["by_protocol"] == {"ipv4": 30, "ipv6": 3}
    assert facts["by_port"] == [{"reason": "NO_SOCKET", "protocol": "tcp", "port": 9330,
                                 "drops": 30, "per_s": 10.0}]
    old = read_drops(bpf, Plan(formats={"skb:kfree_skb": fmt("kfree_skb.5.10")}), 3.0)
    assert old["by_reason"][0]["reason"] == "unknown (no reason field)"


def test_resets_and_retrans_readers():
    plan = Plan(formats={"tcp:tcp_send_reset": fmt("tcp_send_reset.6.18")})
    bpf = {"sent": Table([(NS(reason=2, state=0, lport=9330, rport=5000), val(7)),
                          (NS(reason=0, state=1, lport=80, rport=6000), val(1))]),
           "received": Table([(NS(lport=9331, rport=7000), val(2))]),
           "lost": Table([(0, val(0))])}
    facts = read_resets(bpf, plan, 1.0)
    assert facts["sent"][0] == {"reason": "NO_SOCKET", "state": "-", "local_port": 9330,
                                "resets": 7}
    assert facts["sent"][1]["reason"] == "not given by this kernel"
    assert facts["sent"][1]["state"] == "ESTABLISHED" and facts["received_total"] == 2
    r = read_retrans({"retrans": Table([(NS(family=2, dport=443, daddr=v4("10.1.1.1")),
                                         val(20))]), "lost": Table([(0, val(0))])},
                     Plan(), 2.0)
    assert r["by_peer"] == [{"peer": "10.1.1.1", "port": 443, "retransmits": 20,
                             "per_s": 10.0}]
