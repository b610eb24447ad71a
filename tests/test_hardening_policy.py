"""Every counter rule goes through the one counter policy (rules/_policy.py). Generic: each
RuleSpec that declares `counters` is run on facts collected from a fixture snapshot, with
each declared counter driven by its name (TcpExt/Tcp/Udp/Udp6.NAME through CounterFacts,
softnet_stat.FIELD through SoftnetFacts, link.rx_overruns through LinkStats), the others
held calm. A new counter rule is covered by declaring its counters.

- a large total since boot is info at most (history, not the present);
- growth over a baseline (--interval or the previous run) is at least a warning;
- a reset (the counter went down, the clock went back, a reboot) is info at most and says
  "restarted";
- no growth is ok.
"""

from __future__ import annotations

import copy
import json

import pytest

from netdiag.collect.gather import Plan, collect
from netdiag.context import Context
from netdiag.facts import Facts, LinkStats
from netdiag.model import Severity
from netdiag.rules import SPECS, TOPICS

from conftest import HOSTS

COUNTER_SPECS = [s for s in SPECS.values() if s.counters]
PAIRS = [(s.id, c) for s in COUNTER_SPECS for c in s.counters]
LINK = "eth-test0"
BIG = 10**7
INTERVAL = 10.0
NOW = 1_800_000_000.0


def _all_counters() -> set[str]:
    return {c for s in COUNTER_SPECS for c in s.counters}


def _set(facts: Facts, counter: str, now: int, before: int | None) -> None:
    """Put one counter's value now (and before, None: no baseline) into the facts."""
    group, _, name = counter.partition(".")
    if group == "softnet_stat":
        for sn, value in ((facts.softnet, now), (facts.softnet_before, before)):
            if sn is None or value is None:
                continue
            for i, cpu in enumerate(sn.cpus):  # all on the first CPU, none elsewhere
                setattr(cpu, name, value if i == 0 else 0)
    elif group == "link":
        assert name == "rx_overruns", f"no driver for {counter}: add one here"
        for links, value in ((facts.links, now), (facts.links_before, before)):
            if links is None or value is None:
                continue
            lk = next(lk for lk in links if lk.name == LINK)
            lk.rx_missed, lk.rx_fifo, lk.rx_over, lk.rx_dropped = value, 0, 0, 0
    else:
        facts.counters.counters.setdefault(group, {})[name] = now
        if facts.counters_before is not None and before is not None:
            facts.counters_before.counters.setdefault(group, {})[name] = before


@pytest.fixture(scope="module")
def calm() -> Facts:
    """The busy fixture's facts with every declared counter at zero: no counter finding is
    above ok there, so what follows is the counter's doing alone."""
    facts, _ = collect(Context(root=HOSTS / "linux-6.18-busy"), Plan(rxpath=True, details=True))
    assert facts.counters is not None and facts.softnet is not None and facts.links is not None
    # The snapshot lacks the global tcp_mem (read in the initial namespace): roomy limits.
    facts.sysctl.values.setdefault("net.ipv4.tcp_mem", "1000000 2000000 3000000")
    facts.links.append(LinkStats(name=LINK, ifindex=99, rx_packets=10**9, rx_dropped=0,
                                 rx_missed=0, rx_fifo=0, rx_over=0, tx_dropped=0, tx_fifo=0))
    facts.counters.taken_at = NOW
    for counter in _all_counters():
        _set(facts, counter, 0, None)
    return facts


def _baseline(facts: Facts) -> Facts:
    """A copy with a baseline INTERVAL seconds earlier (as --interval makes one)."""
    f = copy.deepcopy(facts)
    f.counters_before = copy.deepcopy(f.counters)
    f.counters_before.taken_at = NOW - INTERVAL
    f.softnet_before = copy.deepcopy(f.softnet)
    f.links_before = copy.deepcopy(f.links)
    f.interval = INTERVAL
    f.baseline = "interval"
    return f


def _judge(facts: Facts, spec_id: str):
    spec = SPECS[spec_id]
    found = [f for f in TOPICS[spec.topic].check(facts) if f.id == spec_id]
    assert len(found) == 1, f"{spec_id} gave no finding on these facts"
    return found[0]


def _says(finding, word: str) -> bool:
    return word in finding.title or word in json.dumps(finding.evidence)


def test_every_counter_has_a_driver():
    for _, counter in PAIRS:
        group = counter.split(".", 1)[0]
        assert group in ("TcpExt", "Tcp", "Udp", "Udp6", "IpExt", "Ip", "softnet_stat",
                         "link"), counter


@pytest.mark.parametrize("spec_id", sorted({s for s, _ in PAIRS}))
def test_calm_is_ok(calm, spec_id):
    assert _judge(calm, spec_id).severity is Severity.OK
    assert _judge(_baseline(calm), spec_id).severity is Severity.OK


@pytest.mark.parametrize("spec_id,counter", PAIRS)
def test_a_large_total_since_boot_is_info_at_most(calm, spec_id, counter):
    f = copy.deepcopy(calm)
    _set(f, counter, BIG, None)
    got = _judge(f, spec_id)
    assert got.severity <= Severity.INFO, (counter, got.title)
    assert got.severity is Severity.INFO, (counter, got.title)  # but it is said


@pytest.mark.parametrize("spec_id,counter", PAIRS)
def test_growth_over_a_baseline_warns(calm, spec_id, counter):
    f = _baseline(calm)
    _set(f, counter, BIG + 1000, BIG)  # 100/s over 10 s
    got = _judge(f, spec_id)
    assert got.severity >= Severity.WARNING, (counter, got.title)
    f.baseline = "previous run"  # the same from --state-dir
    assert _judge(f, spec_id).severity >= Severity.WARNING


@pytest.mark.parametrize("spec_id,counter", PAIRS)
def test_no_growth_is_ok(calm, spec_id, counter):
    f = _baseline(calm)
    _set(f, counter, BIG, BIG)
    got = _judge(f, spec_id)
    assert got.severity is Severity.OK, (counter, got.title)


@pytest.mark.parametrize("spec_id,counter", PAIRS)
@pytest.mark.parametrize("how", ["went down", "clock went back", "reboot"])
def test_a_reset_is_info_at_most_and_said(calm, spec_id, counter, how):
    f = _baseline(calm)
    if how == "went down":
        _set(f, counter, 5000, BIG)
    else:
        _set(f, counter, BIG + 5000, BIG)  # would be growth, but the baseline is void
        if how == "reboot":
            f.baseline_reset = "the host rebooted since the previous run"
        elif counter.split(".", 1)[0] in ("softnet_stat", "link"):
            # These carry no timestamps of their own: the run marks the baseline void, as
            # state.attach_previous does when the clock went back.
            f.baseline_reset = "the clock went back since the previous run"
        else:
            f.counters_before.taken_at = NOW + 60
    got = _judge(f, spec_id)
    assert got.severity <= Severity.INFO, (counter, how, got.title)
    assert _says(got, "restarted"), (counter, how, got.title, got.evidence)


def test_the_clock_going_back_voids_a_stored_baseline():
    from netdiag import state
    from netdiag.facts import CounterFacts

    facts = Facts(counters=CounterFacts({"TcpExt": {"ListenOverflows": 5}}, taken_at=NOW))
    prev = state.Run(1, "default", "default", 1, None, "boot", NOW + 3600, "ok",
                     {"TcpExt": {"ListenOverflows": 1}}, [[0, 1, 2, 3]], None)
    state.attach_previous(facts, prev, state.Identity(1, None, "boot"))
    assert facts.baseline_reset and "clock" in facts.baseline_reset

