"""Run the collectors a command needs, each isolated: one that fails leaves the rest intact
and is reported in `errors`."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from netdiag.collect import procfs, rxpath
from netdiag.collect.processes import fill_details, scan_fds
from netdiag.collect.sockets import read_census, sample_listeners
from netdiag.collect.sysctlconf import read_sysctl_conf
from netdiag.context import Context
from netdiag.errors import NetdiagError
from netdiag.facts import Facts
from netdiag.model import CollectorError
from netdiag.sysctls import OPTIONAL_KEYS, SYSCTL_KEYS

# Processes whose fd table is at least this full get their command looked up too, so a
# finding about them can name them.
DETAIL_FD_SHARE = 0.5


@dataclass
class Plan:
    """What to collect. `processes`: "none", "targeted" (owners of CLOSE_WAIT and listening
    sockets, fd counts of every process) or "all" (owner of every socket, for the census)."""

    counters: bool = True
    sockstat: bool = True
    census: bool = True
    details: bool = False  # tcp_info/skmeminfo of established connections (same dump)
    sample_listeners: bool = False  # watch accept queues during --interval
    rxpath: bool = False  # softnet_stat, softirqs, ksoftirqd, links
    link_detail: bool = False  # exact link counters and ring sizes (loads pyroute2)
    processes: str = "targeted"
    sysctl_conf: bool = True
    file_nr: bool = True
    interval: float | None = None
    states: set[int] | None = None
    port: int | None = None
    top: int = 20
    errors: list[CollectorError] = field(default_factory=list)


def _ephemeral(facts: Facts) -> tuple[int, int] | None:
    rng = facts.sysctl.get_ints("net.ipv4.ip_local_port_range") if facts.sysctl else None
    if rng and len(rng) == 2:
        return rng[0], rng[1]
    return None


def collect(ctx: Context, plan: Plan) -> tuple[Facts, list[CollectorError]]:
    """Run the plan's collectors. Each is guarded: whatever one raises (a missing file, a
    parse error, a bug) becomes an error entry naming it, and its fact stays None."""
    errors: list[CollectorError] = []

    def guard(name: str, fn):
        try:
            return fn()
        except NetdiagError as exc:
            errors.append(CollectorError(name, str(exc)))
        except OSError as exc:
            errors.append(CollectorError(name, f"{exc.strerror or exc}"))
        except Exception as exc:  # noqa: BLE001 (one collector's bug must not end the report)
            errors.append(CollectorError(name, f"{type(exc).__name__}: {exc}"))
        return None

    facts = Facts(netns=ctx.netns,
                  kernel=guard("kernel", lambda: procfs.read_kernel_release(ctx)) or "unknown")
    facts.sysctl = guard("sysctl", lambda: procfs.read_sysctls(ctx, SYSCTL_KEYS))
    if facts.sysctl is not None:
        for key in list(facts.sysctl.missing):
            if key in ctx.host_sysctls:  # global: not shown inside this namespace
                facts.sysctl.values[key] = ctx.host_sysctls[key]
                facts.sysctl.missing.remove(key)
    owners = None
    if plan.processes == "all":
        if ctx.live:
            pre = guard("processes", lambda: scan_fds(ctx, None, DETAIL_FD_SHARE))
            if pre is not None:
                facts.processes = pre
                owners = pre.owners
        else:
            errors.append(CollectorError("processes", "process attribution needs a live host"))

    def sample():
        counters = census = None
        if plan.counters:
            result = guard("counters", lambda: procfs.read_counters(ctx))
            if result is not None:
                counters, errs = result
                errors.extend(CollectorError("counters", msg) for _, msg in errs)
        if plan.census:
            result = guard("sockets", lambda: read_census(
                ctx, _ephemeral(facts), owners, plan.states, plan.port, plan.top,
                details=plan.details))
            if result is not None:
                census, details, warnings = result
                facts.details = details
                errors.extend(CollectorError("sockets", w) for w in warnings)
        rx = None
        if plan.rxpath:
            rx = (guard("softnet_stat", lambda: rxpath.read_softnet(ctx)),
                  guard("softirqs", lambda: rxpath.read_softirqs(ctx)),
                  guard("links", lambda: rxpath.read_links(ctx, plan.link_detail)))
        return counters, census, rx

    if plan.interval:
        facts.counters_before, facts.census_before, rx_before = sample()
        if rx_before is not None:
            facts.softnet_before, facts.softirqs_before = rx_before[0], rx_before[1]
            facts.links_before = rx_before[2][0] if rx_before[2] else None
        if plan.sample_listeners and ctx.live:
            facts.listener_samples = guard(
                "listeners", lambda: sample_listeners(plan.interval))
            if facts.listener_samples is None:
                time.sleep(plan.interval)
        else:
            time.sleep(plan.interval)
        facts.interval = plan.interval
        facts.baseline = "interval"
    facts.counters, facts.census, rx = sample()
    if rx is not None:
        facts.softnet, facts.softirqs = rx[0], rx[1]
        if rx[2] is not None:
            facts.links, notes = rx[2]
            facts.notes.extend(notes)
        if ctx.live and plan.link_detail:
            facts.ksoftirqd = guard("ksoftirqd", rxpath.read_ksoftirqd)

    if plan.sockstat:
        result = guard("sockstat", lambda: procfs.read_sockstat(ctx))
        if result is not None:
            facts.sockstat, errs = result
            errors.extend(CollectorError("sockstat", msg) for _, msg in errs)
    if plan.file_nr:
        facts.file_nr = guard("file-nr", lambda: procfs.read_file_nr(ctx))
    if plan.sysctl_conf:
        facts.sysctl_conf = guard("sysctl.d", lambda: read_sysctl_conf(ctx))

    if plan.processes == "targeted":
        if ctx.live:
            # Attribute what findings name: CLOSE_WAIT sockets and the listeners inside the
            # ephemeral range. Resolving every fd on the host costs a syscall per fd, so the
            # walk stops resolving once these are found (all owners: `sockets --processes`).
            wanted: set[int] = set()
            census = facts.census
            if facts.details is not None:
                wanted.update(c.inode for c in facts.details.idle_without_keepalive if c.inode)
            if census is not None:
                wanted.update(census.close_wait_inodes)
                eph = census.ephemeral_range
                wanted.update(lst.inode for lst in census.listeners
                              if lst.inode and eph and eph[0] <= lst.port <= eph[1])
            facts.processes = guard("processes",
                                    lambda: scan_fds(ctx, wanted, DETAIL_FD_SHARE))
        else:
            errors.append(CollectorError("processes", "process attribution needs a live host"))
    if facts.processes is not None:
        proc = facts.processes
        interesting = set(proc.owners.values()) if plan.processes != "all" else set()
        if plan.processes == "all" and facts.census and facts.census.by_process:
            interesting = {k[0] for k, _ in facts.census.by_process.items}
        for info in proc.processes.values():
            if info.holds_sockets and info.nofile_soft and \
                    info.fds >= DETAIL_FD_SHARE * info.nofile_soft:
                interesting.add(info.pid)
        guard("processes", lambda: fill_details(proc, interesting))
        if proc.unreadable:
            errors.append(CollectorError(
                "processes",
                f"{proc.unreadable} of {proc.unreadable + proc.scanned} processes could not be "
                "read (their fd tables need root): their sockets are not attributed"))
    if facts.sysctl is not None:
        errors.extend(CollectorError("sysctl", why) for why in facts.sysctl.unreadable.values())
    if facts.sysctl_conf is not None:
        errors.extend(CollectorError("sysctl.d", why) for why in facts.sysctl_conf.unreadable)
    facts_missing = [k for k in (facts.sysctl.missing if facts.sysctl else [])
                     if k not in OPTIONAL_KEYS]
    if facts_missing:
        errors.append(CollectorError(
            "sysctl", "not present on this kernel: " + ", ".join(facts_missing)))
    return facts, errors
