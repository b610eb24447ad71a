"""Run the collectors a command needs, each isolated: one that fails leaves the rest intact
and is reported in `errors`."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from netdiag.collect import procfs, rxpath
from netdiag.collect.processes import fill_details, read_activity, scan_fds
from netdiag.collect.sockets import read_census, sample_listeners
from netdiag.collect.sysctlconf import read_sysctl_conf
from netdiag.context import Context
from netdiag.errors import NetdiagError
from netdiag.facts import ConnectionDetails, Facts, reuseport_groups
from netdiag.model import CollectorError
from netdiag.sysctls import GLOBAL_KEYS, OPTIONAL_KEYS, SYSCTL_KEYS

# Processes whose fd table is at least this full get their command looked up too, so a
# finding about them can name them.
DETAIL_FD_SHARE = 0.5
# Without --interval, the active flows are looked at again after this long, so that what
# limits them is judged over a known window (symptoms-and-limits.md §2.3: not on a busy
# time shorter than about 100 ms).
FLOW_SECOND_SAMPLE = 0.5
# CPU use of the processes holding a full accept queue is measured over this window.
ACTIVITY_WINDOW = 0.25


@dataclass
class Plan:
    """What to collect. `processes`: "none", "targeted" (owners of CLOSE_WAIT and listening
    sockets, fd counts of every process) or "all" (owner of every socket, for the census)."""

    counters: bool = True
    sockstat: bool = True
    census: bool = True
    details: bool = False  # tcp_info/skmeminfo of established connections (same dump)
    flow_sample: bool = False  # look at the active flows twice (buffers: what limits them)
    sample_listeners: bool = False  # watch accept queues during --interval
    listener_owners: bool = False  # name every holder of every listening socket (backlog)
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
    # The accept queues the backlog probe sampled during its window (a ListenerSampler),
    # when a probe window preceded the collection.
    listener_sampler: Any = None


def _ephemeral(facts: Facts) -> tuple[int, int] | None:
    rng = facts.sysctl.get_ints("net.ipv4.ip_local_port_range") if facts.sysctl else None
    if rng and len(rng) == 2:
        return rng[0], rng[1]
    return None


def _reuse_delay(facts: Facts) -> int:
    """tcp_tw_reuse_delay in ms (6.15+); 1000 where the kernel has no such sysctl (the
    delay was a fixed second before)."""
    delay = facts.sysctl.get_int("net.ipv4.tcp_tw_reuse_delay") if facts.sysctl else None
    return delay if delay and delay > 0 else 1000


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
                facts.sysctl.host_wide.append(key)
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
            resample = FLOW_SECOND_SAMPLE if plan.flow_sample and not plan.interval else 0.0
            result = guard("sockets", lambda: read_census(
                ctx, _ephemeral(facts), owners, plan.states, plan.port, plan.top,
                details=plan.details, resample=resample, young_ms=_reuse_delay(facts)))
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

    details_before = None
    if plan.listener_sampler is not None:
        facts.listener_samples = plan.listener_sampler.result()
        facts.listener_window = plan.listener_sampler.window()
    if plan.interval:
        facts.counters_before, facts.census_before, rx_before = sample()
        details_before = facts.details
        if rx_before is not None:
            facts.softnet_before, facts.softirqs_before = rx_before[0], rx_before[1]
            facts.links_before = rx_before[2][0] if rx_before[2] else None
        if plan.sample_listeners and ctx.live:
            sampler = guard("listeners", lambda: sample_listeners(plan.interval))
            if sampler is None:
                time.sleep(plan.interval)
            else:
                facts.listener_samples = sampler.result()
                facts.listener_window = sampler.window()
        else:
            time.sleep(plan.interval)
        facts.interval = plan.interval
        facts.baseline = "interval"
    facts.counters, facts.census, rx = sample()
    if details_before is not None and facts.details is not None:
        _pair_flows(details_before, facts.details, plan.interval)
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
                d = facts.details
                wanted.update(c.inode for c in d.idle_without_keepalive if c.inode)
                wanted.update(c.inode for c in d.flows if c.inode)
                for g in d.keepalive_groups[:20]:
                    wanted.update(g.inodes)
            if census is not None:
                wanted.update(census.close_wait_inodes)
                wanted.update(_listeners_to_name(facts))
                if plan.listener_owners:
                    wanted.update(lst.inode for lst in census.listeners if lst.inode)
            facts.processes = guard("processes",
                                    lambda: scan_fds(ctx, wanted, DETAIL_FD_SHARE))
        else:
            errors.append(CollectorError("processes", "process attribution needs a live host"))
    if facts.processes is not None:
        proc = facts.processes
        interesting = set(proc.owners.values()) if plan.processes != "all" else set()
        if plan.processes != "all":
            interesting.update(pid for pids in proc.shared.values() for pid in pids)
        if plan.processes == "all" and facts.census and facts.census.by_process:
            interesting = {k[0] for k, _ in facts.census.by_process.items}
        for info in proc.processes.values():
            if info.holds_sockets and info.nofile_soft and \
                    info.fds >= DETAIL_FD_SHARE * info.nofile_soft:
                interesting.add(info.pid)
        troubled = _troubled_listeners(facts)
        holders = {pid for inode in troubled for pid in proc.holders_of(inode)}
        interesting |= holders
        guard("processes", lambda: fill_details(proc, interesting))
        if holders and ctx.live:
            # Why the owners of a full accept queue are not accepting: their state, CPU, the
            # kernel function they sleep in, and whether their epoll watches the socket.
            activity = guard("processes", lambda: read_activity(ctx, holders, troubled,
                                                                ACTIVITY_WINDOW))
            if activity is not None:
                for pid, act in activity.items():
                    info = proc.processes.get(pid)
                    if info is not None:
                        act.fds, act.nofile_soft = info.fds, info.nofile_soft
                proc.activity = activity
        if proc.unreadable:
            errors.append(CollectorError(
                "processes",
                f"{proc.unreadable} of {proc.unreadable + proc.scanned} processes could not be "
                "read (their fd tables need root): their sockets are not attributed"))
    if facts.sysctl_conf is not None:
        errors.extend(CollectorError("sysctl.d", why) for why in facts.sysctl_conf.unreadable)
    errors.extend(_sysctl_errors(ctx, facts))
    return facts, errors


def _sysctl_errors(ctx: Context, facts: Facts) -> list[CollectorError]:
    """Say why a sysctl has no value: absent from this kernel, host-wide and not visible in
    this namespace, or present but unreadable."""
    if facts.sysctl is None:
        return []
    out = []
    missing = [k for k in facts.sysctl.missing if k not in OPTIONAL_KEYS]
    hidden = [k for k in missing if k in GLOBAL_KEYS and ctx.netns not in ("default",
                                                                           "snapshot")]
    absent = [k for k in missing if k not in hidden]
    if absent:
        where = "on this kernel" if ctx.live else f"in the snapshot {ctx.root}"
        out.append(CollectorError("sysctl", f"not present {where}: " + ", ".join(absent)))
    if hidden:
        why = ("the initial namespace could not be entered to read them (needs root)"
               if ctx.host_sysctls_denied else "they could not be read there")
        out.append(CollectorError(
            "sysctl", "host-wide, not visible inside this network namespace, and " + why
            + ": " + ", ".join(hidden)))
    # Present but not read (permission denied, not a regular file...): said with the reason.
    out.extend(CollectorError("sysctl", why) for why in facts.sysctl.unreadable.values())
    return out


def _listeners_to_name(facts: Facts) -> set[int]:
    """Listening sockets whose owners findings name: inside the ephemeral range, members of
    an SO_REUSEPORT group, and any with connections waiting (now or while sampled)."""
    census = facts.census
    if census is None:
        return set()
    eph = census.ephemeral_range
    out = {lst.inode for lst in census.listeners
           if lst.inode and (lst.accept_queue > 0 or (eph and eph[0] <= lst.port <= eph[1]))}
    for members in reuseport_groups(census.listeners).values():
        out.update(m.inode for m in members if m.inode)
    for s in facts.listener_samples or []:
        if s.inode and s.samples_at_limit:
            out.add(s.inode)
    return out


def _troubled_listeners(facts: Facts) -> set[int]:
    """Listening sockets at or over their limit, now or in a sample."""
    out = {lst.inode for lst in (facts.census.listeners if facts.census else [])
           if lst.inode and lst.accept_queue >= max(lst.backlog, 1)}
    out.update(s.inode for s in facts.listener_samples or [] if s.inode and s.samples_at_limit)
    return out


def _pair_flows(before: ConnectionDetails, after: ConnectionDetails, seconds: float) -> None:
    """--interval: the flows seen in both samples are judged over the interval."""
    earlier = {c.key: c for c in before.flows}
    paired = False
    for conn in after.flows:
        prev = earlier.get(conn.key)
        if prev is not None and conn.earlier is None:
            conn.earlier = prev
            conn.sample_seconds = seconds
            paired = True
    if paired:
        after.flow_sample = "interval"
