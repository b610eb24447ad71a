"""The receive path: /proc/net/softnet_stat, /proc/softirqs, ksoftirqd CPU time, per-link
drop counters (netlink, via pyroute2) and ring sizes (ethtool netlink, where the driver has
them). NIC ring -> hard IRQ -> NET_RX softirq (or ksoftirqd) -> per-CPU backlog -> socket.
"""

from __future__ import annotations

import os

from netdiag import readfile
from netdiag.collect.procfs import read_text
from netdiag.context import Context
from netdiag.errors import ParseError, SourceMissing
from netdiag.facts import LinkStats, SoftirqFacts, SoftnetCpu, SoftnetFacts

# softnet_stat columns by position (net/core/net-procfs.c softnet_seq_show()); the row has
# 11 (before ~5.10), 13 (+ backlog_len, cpu index) or 15 (+ input_qlen, process_qlen) values.
SOFTNET_COLUMNS = ("processed", "dropped", "time_squeeze", None, None, None, None, None,
                   "cpu_collision", "received_rps", "flow_limit_count", "backlog_len", "cpu",
                   "input_qlen", "process_qlen")


def parse_softnet_stat(text: str, path: str) -> SoftnetFacts:
    cpus: list[SoftnetCpu] = []
    width = None
    for lineno, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if width is None:
            width = len(fields)
            if width < 9:
                raise ParseError(path, lineno, f"expected at least 9 columns, got {width}")
        if len(fields) != width:
            raise ParseError(path, lineno, f"expected {width} columns like line 1, got "
                                           f"{len(fields)}")
        try:
            values = [int(f, 16) for f in fields]
        except ValueError:
            raise ParseError(path, lineno, "a column is not hexadecimal") from None
        named = {name: values[i] for i, name in enumerate(SOFTNET_COLUMNS[:width]) if name}
        # Before the cpu column existed, the row number stands in; it is wrong when CPUs
        # are offline (rows exist only for online CPUs).
        cpu = named.pop("cpu", len(cpus))
        cpus.append(SoftnetCpu(cpu=cpu, **{k: named.get(k) for k in (
            "processed", "dropped", "time_squeeze", "received_rps", "flow_limit_count",
            "backlog_len")}))
    return SoftnetFacts(cpus=cpus, columns=width or 0)


def parse_softirqs(text: str, path: str) -> SoftirqFacts:
    lines = text.splitlines()
    if not lines:
        raise ParseError(path, 1, "empty file")
    ncpu = len(lines[0].split())
    rows: dict[str, list[int]] = {}
    for lineno, line in enumerate(lines[1:], 2):
        name, sep, rest = line.partition(":")
        if not sep:
            continue
        values = rest.split()
        try:
            rows[name.strip()] = [int(v) for v in values[:ncpu]]
        except ValueError:
            raise ParseError(path, lineno, f"{name.strip()}: a value is not an integer") \
                from None
    if "NET_RX" not in rows:
        raise ParseError(path, len(lines), "no NET_RX row")
    return SoftirqFacts(net_rx=rows["NET_RX"], net_tx=rows.get("NET_TX", []))


def read_softnet(ctx: Context) -> SoftnetFacts:
    rel = "proc/net/softnet_stat"
    return parse_softnet_stat(read_text(ctx, rel), ctx.display(rel))


def read_softirqs(ctx: Context) -> SoftirqFacts:
    rel = "proc/softirqs"
    return parse_softirqs(read_text(ctx, rel), ctx.display(rel))


PF_KTHREAD = 0x00200000  # include/linux/sched.h: a kernel thread


def ksoftirqd_cpu(stat: str) -> int | None:
    """The CPU of a ksoftirqd/N kernel thread from its /proc/PID/stat, None for any other
    task. The name alone proves nothing (any process may call itself "ksoftirqd/0"); the
    kernel-thread flag does. The name is between the first "(" and the last ")" (it may
    hold spaces and parentheses); `flags` is the 9th field of the line."""
    head, close, rest = stat.rpartition(")")
    name = head.partition("(")[2]
    if not close or not name.startswith("ksoftirqd/"):
        return None
    try:
        cpu = int(name.split("/", 1)[1])
        flags = int(rest.split()[6])
    except (IndexError, ValueError):
        return None
    if not flags & PF_KTHREAD or cpu < 0:
        return None
    return cpu


def ksoftirqd_threads(proc: str = "/proc") -> dict[int, str]:
    """The ksoftirqd/N kernel threads visible in `proc`: CPU -> the thread's /proc directory.
    Kernel threads are children of kthreadd (PID 2): where /proc lists them
    (/proc/2/task/2/children) only those few dozen are read, not every process of a host
    that may run a hundred thousand. None are visible from a container's PID namespace or
    under hidepid."""
    try:
        kids = readfile.read_text(f"{proc}/2/task/2/children", "/proc/2/task/2/children",
                                  limit=readfile.MAX_SMALL).split()
        pids = [k for k in kids if k.isdigit()]
    except (SourceMissing, OSError):
        pids = [e.name for e in os.scandir(proc) if e.name.isdigit()]
    out: dict[int, str] = {}
    for pid in pids:
        path = f"{proc}/{pid}"
        try:
            cpu = ksoftirqd_cpu(readfile.read_text(f"{path}/stat", f"{path}/stat",
                                                   limit=readfile.MAX_SMALL))
        except (SourceMissing, OSError):
            continue  # the task exited, or /proc hides it
        if cpu is not None:
            out[cpu] = path
    return out


def read_ksoftirqd(proc: str = "/proc") -> dict[int, float]:
    """CPU seconds (user + system, clock ticks) of each ksoftirqd/N kernel thread, by CPU:
    fields 14 and 15 of /proc/PID/stat."""
    ticks = os.sysconf("SC_CLK_TCK")
    out: dict[int, float] = {}
    for cpu, path in ksoftirqd_threads(proc).items():
        try:
            stat = readfile.read_text(f"{path}/stat", f"{path}/stat", limit=readfile.MAX_SMALL)
            fields = stat.rpartition(")")[2].split()
            out[cpu] = round((int(fields[11]) + int(fields[12])) / ticks, 2)
        except (SourceMissing, OSError, IndexError, ValueError):
            continue
    return out


def read_ksoftirqd_ns(proc: str = "/proc") -> dict[int, int]:
    """Time on CPU (ns, the scheduler's own accounting: the first value of
    /proc/PID/schedstat) of each ksoftirqd/N thread, by CPU. Read at both ends of a probe
    window, the difference is what ksoftirqd ran in it, at nanosecond resolution and with no
    program on every context switch (a thread on a CPU at the reading has its current run
    counted up to the last scheduler tick)."""
    out: dict[int, int] = {}
    for cpu, path in ksoftirqd_threads(proc).items():
        try:
            sched = readfile.read_text(f"{path}/schedstat", f"{path}/schedstat",
                                       limit=readfile.MAX_SMALL)
            out[cpu] = int(sched.split()[0])
        except (SourceMissing, OSError, IndexError, ValueError):
            continue  # the task exited, or the line is not the kernel's
    return out


def parse_proc_net_dev(text: str, path: str) -> list[LinkStats]:
    """/proc/net/dev: `name: rx bytes packets errs drop fifo frame compressed multicast tx
    bytes packets errs drop fifo colls carrier compressed`. The rx drop column is
    rx_dropped + rx_missed_errors (net/core/net-procfs.c dev_seq_printf_stats())."""
    links = []
    for lineno, line in enumerate(text.splitlines(), 1):
        name, sep, rest = line.partition(":")
        if not sep or "|" in line:
            continue  # the two header lines
        values = rest.split()
        if len(values) < 16:
            raise ParseError(path, lineno, f"{name.strip()}: expected 16 columns, got "
                                           f"{len(values)}")
        try:
            v = [int(x) for x in values[:16]]
        except ValueError:
            raise ParseError(path, lineno, f"{name.strip()}: a column is not an integer") \
                from None
        links.append(LinkStats(name=name.strip(), ifindex=0, rx_packets=v[1], rx_dropped=v[3],
                               rx_missed=None, rx_fifo=v[4], rx_over=None, tx_dropped=v[11],
                               tx_fifo=v[12], source="/proc/net/dev"))
    return links


def read_links(ctx: Context, detailed: bool = False) -> tuple[list[LinkStats], list[str]]:
    """Interface counters of the current network namespace.

    /proc/net/dev first (cheap). Exact counters (rx_missed, rx_over from rtnetlink
    IFLA_STATS64) and ring sizes (ethtool netlink) come through pyroute2, whose import costs
    a quarter second: only when asked (`detailed`) or when an interface shows drops.
    """
    rel = "proc/net/dev"
    # A line per interface: hosts with many containers have tens of thousands.
    links = parse_proc_net_dev(read_text(ctx, rel, 4 * readfile.MAX_TEXT), ctx.display(rel))
    if not ctx.live:
        return links, []
    if not detailed and not any(lk.rx_dropped or lk.rx_fifo for lk in links):
        return links, []
    return _read_links_netlink()


def _read_links_netlink(with_rings: bool = True) -> tuple[list[LinkStats], list[str]]:
    from pyroute2 import IPRoute

    notes: list[str] = []
    links: list[LinkStats] = []
    raw_names: dict[int, str] = {}  # as the kernel has them (for sysfs and ethtool)
    with IPRoute() as ipr:
        for msg in ipr.get_links():
            # Any bytes but '/', ':' and blanks make an interface name; pyroute2 returns
            # bytes for a name that is not UTF-8. Facts keep escaped text.
            raw = msg.get_attr("IFLA_IFNAME") or ""
            if isinstance(raw, bytes):
                raw = os.fsdecode(raw)
            st = msg.get_attr("IFLA_STATS64") or msg.get_attr("IFLA_STATS")
            if st is None:
                continue
            raw_names[msg["index"]] = raw
            links.append(LinkStats(
                name=readfile.text(raw), ifindex=msg["index"], rx_packets=st["rx_packets"],
                rx_dropped=st["rx_dropped"], rx_missed=st["rx_missed_errors"],
                rx_fifo=st["rx_fifo_errors"], rx_over=st["rx_over_errors"],
                tx_dropped=st["tx_dropped"], tx_fifo=st["tx_fifo_errors"]))
    if with_rings and links:
        _fill_rings(links, raw_names, notes)
    for link in links:
        link.rps_cpus = _rps_masks(raw_names[link.ifindex])
    return links, notes


def _fill_rings(links: list[LinkStats], raw_names: dict[int, str], notes: list[str]) -> None:
    try:
        from pyroute2.netlink.generic.ethtool import NlEthtool

        eth = NlEthtool()
    except Exception as exc:  # no ethtool netlink family in this kernel
        notes.append(f"ethtool netlink unavailable ({exc}); ring sizes not shown")
        return
    try:
        for link in links:
            try:
                reply = eth.get_rings(ifname=raw_names[link.ifindex])
            except Exception:
                continue  # the driver has no ring parameters (loopback, most virtual links)
            attrs = dict(reply[0]["attrs"]) if reply else {}
            link.rx_ring = attrs.get("ETHTOOL_A_RINGS_RX")
            link.rx_ring_max = attrs.get("ETHTOOL_A_RINGS_RX_MAX")
            link.tx_ring = attrs.get("ETHTOOL_A_RINGS_TX")
            link.tx_ring_max = attrs.get("ETHTOOL_A_RINGS_TX_MAX")
    finally:
        eth.close()


def _rps_masks(ifname: str) -> str | None:
    """RPS CPU masks of the rx queues, one hex mask per queue separated by spaces (a mask has
    commas of its own beyond 32 CPUs); sysfs shows the namespace netdiag started in."""
    base = f"/sys/class/net/{ifname}/queues"
    try:
        queues = sorted(q for q in os.listdir(base) if q.startswith("rx-"))
    except OSError:
        return None
    masks = []
    for q in queues:
        try:
            path = f"{base}/{q}/rps_cpus"
            masks.append(readfile.read_text(path, readfile.text(path),
                                            limit=readfile.MAX_SMALL).strip())
        except SourceMissing:
            continue
    return " ".join(masks) if masks else None
