"""The receive path: per-CPU backlog drops, squeezes, NET_RX imbalance, NIC ring overruns."""

from __future__ import annotations

from typing import Any

from netdiag.facts import Facts, LinkStats, SoftnetFacts
from netdiag.model import Finding, Rule, RuleSpec, Severity
from netdiag.probefacts import SoftirqResult
from netdiag.rules._policy import change_of, judge
from netdiag.rules._util import make

TOPIC = "softirq"
SUMMARY = "Receive path: NIC ring, NET_RX softirq, per-CPU backlog, ksoftirqd"

IMBALANCE_SHARE = 0.8  # one CPU doing this share of NET_RX work...
IMBALANCE_MIN_EVENTS = 10_000  # ...over at least this many softirqs (or per interval)

BACKGROUND = (
    "A received frame travels: NIC → its RX ring (DMA) → hard interrupt → NET_RX softirq on "
    "that CPU, which polls the driver (NAPI) for up to netdev_budget packets or "
    "netdev_budget_usecs → GRO → (with RPS, another CPU's backlog queue, bounded by "
    "netdev_max_backlog) → protocol → socket receive queue → the waiting process is woken. "
    "When softirq work keeps coming back, the kernel hands it to the ksoftirqd/N thread, "
    "which competes with normal processes for the CPU. A full ring drops in the NIC "
    "(rx_missed/rx_fifo), a full backlog drops in softnet_stat 'dropped', and a poll cut "
    "short counts 'time_squeeze' (a delay, not a drop)."
)

BACKLOG = RuleSpec(
    id="softirq.netdev_backlog_drops",
    topic=TOPIC,
    counters=("softnet_stat.dropped",),
    title="Packets dropped at the per-CPU input backlog",
    rule=Rule(
        text="netdev_max_backlog: maximum number of packets queued on the INPUT side when "
             "the interface receives packets faster than the kernel can process them. "
             "/proc/net/softnet_stat column 2 counts the drops, per CPU.",
        source="Documentation/admin-guide/sysctl/net.rst: netdev_max_backlog; "
               "net/core/net-procfs.c softnet_seq_show()",
    ),
    explanation=(
        "The per-CPU backlog (used by RPS, by non-NAPI drivers and by loopback/veth) was full, "
        "so the kernel dropped packets before any protocol saw them. The CPU doing the "
        "receive processing is not keeping up."
    ),
    recommendation=(
        "Spread receive work over more CPUs (RSS queues, RPS/RFS via "
        "/sys/class/net/DEV/queues/rx-*/rps_cpus), then raise net.core.netdev_max_backlog "
        "(e.g. 1000 → 4096) to absorb bursts."
    ),
    thresholds="info from 100 since boot; warning when growing (over --interval or "
               "since the previous --state-dir run)",
)

SQUEEZE = RuleSpec(
    id="softirq.time_squeeze",
    topic=TOPIC,
    counters=("softnet_stat.time_squeeze",),
    title="NET_RX softirq ran out of budget with work left",
    rule=Rule(
        text="netdev_budget / netdev_budget_usecs: maximum packets and time of one NET_RX "
             "softirq cycle. When either runs out with work left, softnet_stat column 3 "
             "(time_squeeze) is incremented and the work continues later, possibly in "
             "ksoftirqd.",
        source="Documentation/admin-guide/sysctl/net.rst: netdev_budget, netdev_budget_usecs; "
               "net/core/dev.c net_rx_action()",
    ),
    explanation=(
        "A squeeze is not a drop: the remaining packets wait for the next cycle. Frequent "
        "squeezes mean receive processing is CPU-bound on that CPU; packets wait longer, and "
        "if the NIC ring fills meanwhile the NIC drops (see the ring overrun finding)."
    ),
    recommendation=(
        "Spread the work first (RSS/RPS). Raising net.core.netdev_budget (e.g. 600) and "
        "netdev_budget_usecs lets one cycle do more, at the cost of latency for other work "
        "on that CPU."
    ),
    thresholds="info from 1000 since boot; warning when growing (over --interval or "
               "since the previous --state-dir run)",
)

IMBALANCE = RuleSpec(
    id="softirq.imbalance",
    topic=TOPIC,
    title="NET_RX work concentrated on one CPU",
    rule=Rule(
        text="NET_RX runs on the CPU that took the NIC's interrupt. With one RX queue (or "
             "all IRQs on one CPU) and no RPS, all receive processing lands on that CPU; "
             "RSS (multiple queues), RPS and RFS spread it.",
        source="Documentation/networking/scaling.rst (RSS, RPS, RFS); /proc/softirqs",
    ),
    explanation=(
        "One CPU handles most of the receive softirqs while others idle: that CPU caps the "
        "host's packet rate, and its processes get less CPU (ksoftirqd runs there)."
    ),
    recommendation=(
        "Check the NIC's queues (ethtool -l) and IRQ affinity (/proc/interrupts, irqbalance); "
        "enable RPS by writing a CPU mask to /sys/class/net/DEV/queues/rx-N/rps_cpus, and "
        "RFS via net.core.rps_sock_flow_entries."
    ),
    thresholds=f"info when one CPU does ≥ {int(IMBALANCE_SHARE * 100)}% of NET_RX on a "
               f"multi-CPU host (at least {IMBALANCE_MIN_EVENTS} softirqs); warning when that "
               "CPU also squeezes or drops",
)

RING = RuleSpec(
    id="softirq.ring_overruns",
    topic=TOPIC,
    counters=("link.rx_overruns",),
    title="NIC receive ring overruns",
    rule=Rule(
        text="rx_missed_errors / rx_fifo_errors / rx_over_errors count frames the NIC could "
             "not place in its receive ring (the ring was full); rx_dropped counts frames the "
             "kernel dropped after reception.",
        source="include/uapi/linux/if_link.h (struct rtnl_link_stats64); "
               "Documentation/networking/statistics.rst",
    ),
    explanation=(
        "The NIC filled its RX ring faster than the NET_RX softirq emptied it, so frames were "
        "lost in hardware, before any kernel counter above sees them."
    ),
    recommendation=(
        "Enlarge the ring toward its maximum (ethtool -G DEV rx N; the evidence shows current "
        "and maximum), spread interrupts over CPUs, and look at time_squeeze on the CPU "
        "handling the NIC."
    ),
    thresholds="info when notable since boot; warning when growing (over --interval or "
               "since the previous --state-dir run)",
)

SPECS = (BACKLOG, SQUEEZE, IMBALANCE, RING)


def _per_cpu_delta(now: SoftnetFacts, before: SoftnetFacts | None, field: str) -> dict[int, int]:
    prev = {c.cpu: getattr(c, field) for c in before.cpus} if before else {}
    out = {}
    for c in now.cpus:
        v = getattr(c, field)
        out[c.cpu] = v - prev[c.cpu] if c.cpu in prev and v >= prev[c.cpu] else v
    return out


# Since-boot totals worth an info line: a squeeze is a delay, not a loss, and busy hosts see
# some of both; a handful since boot says nothing about today.
SINCE_BOOT_NOTABLE = {"dropped": 100, "time_squeeze": 1000}


def _softnet_counter(spec: RuleSpec, facts: Facts, field: str, label: str) -> Finding | None:
    sn = facts.softnet
    if sn is None:
        return None
    total = {c.cpu: getattr(c, field) for c in sn.cpus}
    ev: dict[str, Any] = {f"{field}_per_cpu": total, "columns": sn.columns}
    if facts.sysctl is not None:
        for key in ("net.core.netdev_max_backlog", "net.core.netdev_budget",
                    "net.core.netdev_budget_usecs", "net.core.dev_weight"):
            ev[key.rsplit(".", 1)[1]] = facts.sysctl.get_int(key)
    before = None
    if facts.softnet_before is not None:
        prev = {c.cpu: getattr(c, field) for c in facts.softnet_before.cpus}
        # A CPU that went offline or came online makes the sums incomparable: use the CPUs
        # present in both samples.
        common = [cpu for cpu in total if cpu in prev]
        before = sum(prev[cpu] for cpu in common)
        now_sum = sum(total[cpu] for cpu in common)
        ev[f"{field}_delta_per_cpu"] = _per_cpu_delta(sn, facts.softnet_before, field)
    else:
        now_sum = sum(total.values())
    ch = change_of(f"softnet_stat.{field}", now_sum, before, facts)
    ev["change"] = ch.evidence()
    # /proc/net/softnet_stat is per CPU for the whole host: every namespace reads the same.
    ev["scope"] = "host"
    verdict = judge(ch, notable=SINCE_BOOT_NOTABLE[field])
    if ch.growing:
        grown = {cpu: n for cpu, n in ev[f"{field}_delta_per_cpu"].items() if n}
        cpus = ", ".join(f"CPU{c} +{n}" for c, n in sorted(grown.items()))
        return make(spec, verdict.severity,
                    f"{label} during {ch.seconds:g} s (host-wide): {cpus}", ev)
    if ch.delta is None and ch.reset is None and ch.total:
        # A total since boot, said as such (never "none" beside a table showing some).
        notable = SINCE_BOOT_NOTABLE[field]
        more = ("; run with --interval or --state-dir for the rate" if ch.total >= notable
                else f", too few to matter (info from {notable})")
        return make(spec, verdict.severity,
                    f"{ch.total} {label} since boot, host-wide (every namespace){more}", ev)
    if verdict.severity is Severity.OK:
        return make(spec, Severity.OK, f"no {label} to report (host-wide)", ev)
    return make(spec, verdict.severity, f"{label} (host-wide): {verdict.text}", ev)


def _imbalance(facts: Facts) -> Finding | None:
    sq = facts.softirqs
    if sq is None or len(sq.net_rx) < 2:
        return None
    rx = list(sq.net_rx)
    window = "since boot"
    probe = (facts.probes or {}).get("softirq")
    if isinstance(probe, SoftirqResult) and probe.window.seconds > 0:
        # The probe's own window: the runs it counted per CPU, as its table shows them.
        rx = [0] * len(rx)
        for row in probe.per_cpu:
            if row.softirq == "NET_RX" and 0 <= row.cpu < len(rx):
                rx[row.cpu] += row.runs
        window = f"probe window ({probe.window.seconds:g} s)"
    elif facts.softirqs_before is not None and len(facts.softirqs_before.net_rx) == len(rx):
        rx = [max(a - b, 0) for a, b in zip(rx, facts.softirqs_before.net_rx)]
        window = "interval"
    total = sum(rx)
    ev: dict[str, Any] = {"net_rx_per_cpu": rx, "net_tx_per_cpu": sq.net_tx, "window": window}
    if facts.ksoftirqd is not None:
        ev["ksoftirqd_cpu_seconds"] = facts.ksoftirqd
    if total < IMBALANCE_MIN_EVENTS:
        return make(IMBALANCE, Severity.OK, f"too little NET_RX work to judge ({total})", ev)
    top_cpu = max(range(len(rx)), key=lambda i: rx[i])
    share = rx[top_cpu] / total
    ev.update(busiest_cpu=top_cpu, busiest_share=round(share, 3))
    if share < IMBALANCE_SHARE:
        return make(IMBALANCE, Severity.OK, f"NET_RX spread: busiest CPU{top_cpu} does "
                                            f"{share:.0%}", ev)
    severity = Severity.INFO
    if facts.softnet is not None:
        cpu_row = next((c for c in facts.softnet.cpus if c.cpu == top_cpu), None)
        if cpu_row is not None and (cpu_row.dropped or cpu_row.time_squeeze):
            severity = Severity.WARNING
            ev["busiest_cpu_dropped"] = cpu_row.dropped
            ev["busiest_cpu_time_squeeze"] = cpu_row.time_squeeze
    return make(IMBALANCE, severity, f"CPU{top_cpu} does {share:.0%} of NET_RX softirqs "
                                     f"across {len(rx)} CPUs", ev)


def _overruns(lk: LinkStats) -> int:
    # From /proc/net/dev rx_missed is folded into rx_dropped: count that instead.
    if lk.rx_missed is None:
        return lk.rx_fifo + lk.rx_dropped
    return lk.rx_missed + lk.rx_fifo + (lk.rx_over or 0)


def _ring(facts: Facts) -> Finding | None:
    links = facts.links
    if links is None:
        return None
    before = {lk.name: lk for lk in facts.links_before or []}
    rows = []
    worst = None  # (verdict, change, row)
    for lk in links:
        n = _overruns(lk)
        row: dict[str, Any] = {"interface": lk.name, "rx_missed": lk.rx_missed,
                               "rx_fifo": lk.rx_fifo, "rx_over": lk.rx_over,
                               "rx_dropped": lk.rx_dropped, "tx_dropped": lk.tx_dropped,
                               "rx_ring": lk.rx_ring, "rx_ring_max": lk.rx_ring_max}
        prev = _overruns(before[lk.name]) if lk.name in before else None
        ch = change_of(f"{lk.name}.rx_overruns", n, prev, facts)
        if ch.delta is not None:
            row["overruns_delta"] = ch.delta
        verdict = judge(ch)
        if n or lk.rx_dropped:
            rows.append(row)
        if verdict.severity > Severity.OK and (worst is None or
                                               verdict.severity > worst[0].severity):
            worst = (verdict, ch, row, lk)
    ev: dict[str, Any] = {"interfaces": len(links), "with_drops": rows[:10]}
    if worst is None:
        return make(RING, Severity.OK, "no NIC ring overrun to report", ev)
    verdict, ch, row, lk = worst
    what = "ring overruns" if lk.rx_missed is not None else \
        "receive drops (rx_dropped incl. rx_missed; /proc/net/dev)"
    if ch.growing:
        title = (f"{lk.name}: {ch.delta} {what} in {ch.seconds:g} s "
                 f"(ring {row['rx_ring']}/{row['rx_ring_max']})")
    else:
        title = f"{lk.name}: {what}: {verdict.text}"
    return make(RING, verdict.severity, title, ev)


def check(facts: Facts) -> list[Finding]:
    return [f for f in (_softnet_counter(BACKLOG, facts, "dropped", "backlog drops"),
                        _softnet_counter(SQUEEZE, facts, "time_squeeze", "time squeezes"),
                        _imbalance(facts), _ring(facts)) if f is not None]
