"""What each report command asks for, without the command line around it.

The typer declarations in netdiag.cli and the start-up path in netdiag.entry (which parses the
hot commands' arguments without importing typer or click) both call these functions, so a
command means the same whichever way its arguments were read. Each returns the exit code.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable

from netdiag.errors import UsageError
from netdiag.render._safe import quoted

# Each topic asks sock_diag only for the states its rules read (LISTEN: to tell accepted
# connections from outgoing ones, and for the listener facts).
_TW, _CW, _EST, _LST, _SYNR = 6, 8, 1, 10, 3

# The one-topic commands: name -> (facts view in netdiag.views, help text, collection plan).
TOPIC_COMMANDS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "timewait": ("timewait_view",
                 "TIME_WAIT: who closes first, toward whom, and the kernel limits.",
                 {"states": {_TW, _LST}}),
    "closewait": ("closewait_view",
                  "CLOSE_WAIT: sockets the peer closed and the application did not, by "
                  "process.",
                  {"states": {_CW, _LST}}),
    "ports": ("ports_view",
              "Ephemeral ports: usage per destination, the range, listeners inside it.",
              {}),
    "backlog": ("backlog_view",
                "Listen queues: accept queue vs limit per listener, SYN queue, overflows.",
                {"sample_listeners": True, "listener_owners": True, "states": {_LST, _SYNR}}),
    "keepalive": ("keepalive_view",
                  "Keepalive: time to detect a dead peer, connections without keepalive.",
                  {"details": True, "states": {_EST, _LST}}),
    "buffers": ("buffers_view",
                "Socket buffers: what limits each busy flow, autotuning, drops, TCP memory.",
                {"details": True, "flow_sample": True, "states": {_EST, _LST}}),
    "softirq": ("softirq_view",
                "Receive path: softnet_stat, NET_RX/NET_TX per CPU, ksoftirqd, NIC rings.",
                {"rxpath": True, "link_detail": True, "census": False, "processes": "none"}),
}

_STATE_ALIASES = {"established": "ESTABLISHED", "estab": "ESTABLISHED", "syn-sent": "SYN_SENT",
                  "syn-recv": "SYN_RECV", "fin-wait-1": "FIN_WAIT1", "fin-wait-2": "FIN_WAIT2",
                  "time-wait": "TIME_WAIT", "close": "CLOSE", "close-wait": "CLOSE_WAIT",
                  "last-ack": "LAST_ACK", "listen": "LISTEN", "closing": "CLOSING"}


def parse_states(names: list[str]) -> set[int] | None:
    from netdiag.facts import STATE_BY_NAME

    if not names:
        return None
    out = set()
    for name in names:
        for part in name.split(","):
            key = _STATE_ALIASES.get(part.strip().lower(), part.strip().upper().replace("-", "_"))
            if key not in STATE_BY_NAME:
                raise UsageError(f"unknown TCP state {quoted(part)} (e.g. established, time-wait, "
                                 "close-wait, listen)")
            out.add(STATE_BY_NAME[key])
    return out


def plan(**kw):
    from netdiag.collect.gather import Plan

    return Plan(**kw)


def report(command: str, topics: list[str], plan, view: Callable, *, fmt: str,
           as_json: bool, show_ok: bool = True, show_facts: bool = True, **opts) -> int:
    from netdiag.pipeline import Request, execute

    req = Request(command=command, topics=topics, plan=plan, view=view,
                  fmt="json" if as_json else fmt, show_ok=show_ok, show_facts=show_facts,
                  **opts)
    return execute(req)


def check(*, fmt: str = "table", as_json: bool = False, netns: str | None = None,
          pid: int | None = None, interval: float | None = None, root: str | None = None,
          output: str | None = None, state_dir: str | None = None, all_netns: bool = False,
          probe_seconds: float | None = None, probes: str | None = None,
          verbose: bool = False) -> int:
    from netdiag import views
    from netdiag.pipeline import ProbeRequest
    from netdiag.rules import TOPIC_NAMES

    probe_req = None
    if probe_seconds is not None:
        from netdiag.ebpf.probes import PROBES

        names = [n.strip() for n in probes.split(",")] if probes else \
            [n for n, spec in PROBES.items() if spec.in_check]  # not softirq unless asked
        unknown = [n for n in names if n not in PROBES]
        if unknown:
            raise UsageError(f"unknown probe(s) {', '.join(unknown)}; known: "
                             f"{', '.join(PROBES)}")
        probe_req = ProbeRequest(names, probe_seconds)
    elif probes:
        raise UsageError("--probes needs --probe-seconds")
    return report("check", list(TOPIC_NAMES),
                  plan(details=True, flow_sample=True, rxpath=True, sample_listeners=True),
                  partial(views.check_view, probe_seconds=probe_seconds), fmt=fmt,
                  as_json=as_json, show_ok=False, show_facts=False,
                  netns=netns, pid=pid, interval=interval, root=root, output=output,
                  state_dir=state_dir, all_netns=all_netns, probes=probe_req, verbose=verbose)


def sockets(*, state: list[str] | None = None, port: int | None = None, top: int = 20,
            processes: bool = False, fmt: str = "table", as_json: bool = False,
            netns: str | None = None, pid: int | None = None, interval: float | None = None,
            root: str | None = None, output: str | None = None, state_dir: str | None = None,
            all_netns: bool = False, verbose: bool = False) -> int:
    from netdiag import views

    p = plan(states=parse_states(state or []), port=port, top=top,
             processes="all" if processes else "targeted", sysctl_conf=False, counters=False)
    return report("sockets", ["sockets"], p, partial(views.sockets_view, top=top), fmt=fmt,
                  as_json=as_json, netns=netns, pid=pid, interval=interval, root=root,
                  output=output, state_dir=state_dir, all_netns=all_netns, verbose=verbose)


def topic(name: str, *, fmt: str = "table", as_json: bool = False, netns: str | None = None,
          pid: int | None = None, interval: float | None = None, root: str | None = None,
          output: str | None = None, state_dir: str | None = None, all_netns: bool = False,
          verbose: bool = False) -> int:
    from netdiag import views

    view_name, _, plan_kw = TOPIC_COMMANDS[name]
    return report(name, [name], plan(**plan_kw), getattr(views, view_name), fmt=fmt,
                  as_json=as_json, netns=netns, pid=pid, interval=interval, root=root,
                  output=output, state_dir=state_dir, all_netns=all_netns, verbose=verbose)


def sysctl(*, fmt: str = "table", as_json: bool = False, netns: str | None = None,
           pid: int | None = None, root: str | None = None, output: str | None = None,
           verbose: bool = False) -> int:
    from netdiag import views

    p = plan(counters=False, sockstat=False, census=False, processes="none",
             sysctl_conf=False, file_nr=False)
    return report("sysctl", [], p, views.sysctl_view, fmt=fmt, as_json=as_json, netns=netns,
                  pid=pid, root=root, output=output, verbose=verbose)


def why(symptom: str | None, *, port: int | None = None, peer: str | None = None,
        pid: int | None = None, probe_seconds: float | None = None, fmt: str = "table",
        as_json: bool = False, netns: str | None = None, interval: float | None = None,
        output: str | None = None, state_dir: str | None = None,
        verbose: bool = False) -> int:
    """`netdiag why`: the list of symptoms, or one symptom's causes weighed on this host."""
    import sys

    from netdiag import diagnose, validate
    from netdiag.pipeline import ProbeRequest
    from netdiag.rules import TOPIC_NAMES

    fmt_name = "json" if as_json else fmt
    if symptom is None:
        from netdiag.explain import print_symptoms

        print_symptoms(diagnose.listing(), fmt_name, sys.stdout)
        return 0
    validate.text("SYMPTOM", symptom, 300)
    found = diagnose.find(symptom)
    if found is None:
        near = diagnose.nearest(symptom)
        raise UsageError(f"unknown symptom {quoted(symptom)}"
                         + (f"; did you mean {', '.join(near)}?" if near else "")
                         + " (`netdiag why` lists them)")
    scope = diagnose.Scope(port=port, pid=pid, **validate.peer(peer))
    probe_req = None
    if probe_seconds is not None and found.probes:
        probe_req = ProbeRequest(list(found.probes), probe_seconds)

    def conclude(facts, findings):
        return diagnose.report_parts(found, symptom, scope, facts, findings)

    return report("why", list(TOPIC_NAMES),
                  plan(details=True, flow_sample=True, rxpath=True, sample_listeners=True,
                       listener_owners=True),
                  lambda facts: {}, fmt=fmt, as_json=as_json, show_ok=True, show_facts=True,
                  netns=netns, pid=pid, interval=interval, output=output,
                  state_dir=state_dir, probes=probe_req, verbose=verbose, conclude=conclude)
