"""Generate docs/schema/probes.schema.json from netdiag.probefacts (the typed probe results).

    python3 tests/schema_gen.py > docs/schema/probes.schema.json

test_probe_schema_is_current fails when the committed schema and the dataclasses differ, so
a change to a result type comes with its schema in the same commit.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import types
import typing
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from netdiag import probefacts  # noqa: E402
from netdiag.ebpf.probes import PROBES  # noqa: E402

RESULT_OF = {"states": probefacts.StatesResult, "backlog": probefacts.BacklogResult,
             "wakeups": probefacts.WakeupsResult, "drops": probefacts.DropsResult,
             "rcvbuf": probefacts.RcvbufResult, "softirq": probefacts.SoftirqResult,
             "resets": probefacts.ResetsResult, "retrans": probefacts.RetransResult,
             "errors": probefacts.ErrorsResult}

# Words for the fields whose meaning is not in their name.
FIELD_DOCS = {
    "local_port": "Local port; null: any ephemeral port (a client's port from "
                  "ip_local_port_range, aggregated away in the kernel).",
    "remote_port": "Remote port; null: a client's ephemeral port (seen from the server), or "
                   "any row of a server (states: connections accepted, and closes on a port "
                   "that had a listener).",
    "peer": "Remote address, kept only for a service destination (the remote port is not "
            "ephemeral); null for a server's clients, which are unbounded, whatever their "
            "port.",
    "approximate": "True when the map feeding this row lost events: the count is a lower "
                   "bound (see completeness).",
    "per_s": "Count divided by the window's seconds.",
    "started_at": "When the window opened (the last hook attached), ISO 8601 UTC, ms.",
    "ended_at": "When the window closed (hooks detached), ISO 8601 UTC, ms.",
    "filter": "exact: only the namespace's events were counted (filtered in the kernel by "
              "its inode); host-wide: every namespace's (softirqs, or no BTF); partial: the "
              "hooks in host_wide_parts saw the whole host.",
    "skipped_runs": "Program runs the kernel skipped (bpf_prog_info.recursion_misses); null "
                    "when unknown.",
    "since_process_start_s": "From the exec of netdiag to the window opening.",
    "wakeups_per_connection": "Tasks woken per connection queued on this socket; null "
                              "without connections.",
    "sockets_on_port": "Listening sockets seen on this port and family: more than one is a "
                       "SO_REUSEPORT group.",
    "epoll_waiters_max": "Epoll instances on the socket's wait queue (most seen); null when "
                         "they cannot be told apart here.",
    "retransmits": "Retransmitted skbs (packets): tcp:tcp_retransmit_skb events, not "
                   "segments; with TSO/GSO one skb carries several MSS-sized segments (nstat "
                   "TcpRetransSegs counts segments).",
    "counted": "What one count is: a retransmitted skb (a tcp_retransmit_skb event), not a "
               "segment.",
    "reported_by": "return: the call's return value; so_error: getsockopt(SO_ERROR) after a "
                   "non-blocking connect.",
}


def _type(tp) -> dict:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        sub = _type(inner[0])
        if "type" in sub:
            return {**sub, "type": [sub["type"], "null"]}
        return {"anyOf": [sub, {"type": "null"}]}
    if origin is list:
        return {"type": "array", "items": _type(args[0])}
    if dataclasses.is_dataclass(tp):
        return {"$ref": f"#/$defs/{_name(tp)}"}
    return {int: {"type": "integer"}, float: {"type": "number"}, str: {"type": "string"},
            bool: {"type": "boolean"}}[tp]


def _name(cls) -> str:
    for probe, result in RESULT_OF.items():
        if cls is result:
            return probe
    return cls.__name__


def _object(cls) -> dict:
    hints = typing.get_type_hints(cls)
    props = {}
    for f in dataclasses.fields(cls):
        prop = _type(hints[f.name])
        if f.name in FIELD_DOCS:
            prop = {**prop, "description": FIELD_DOCS[f.name]}
        props[f.name] = prop
    out = {"type": "object", "properties": props, "required": list(props),
           "additionalProperties": False}
    doc = (cls.__doc__ or "").strip()
    if doc and not doc.startswith(cls.__name__ + "("):
        out["description"] = " ".join(doc.split())
    return out


def _collect(cls, seen: dict) -> None:
    name = _name(cls)
    if name in seen:
        return
    seen[name] = _object(cls)
    for tp in typing.get_type_hints(cls).values():
        for arg in (tp, *typing.get_args(tp)):
            if dataclasses.is_dataclass(arg):
                _collect(arg, seen)


def schema() -> dict:
    defs: dict = {}
    for probe in PROBES:
        _collect(RESULT_OF[probe], defs)
        defs[probe]["description"] = PROBES[probe].summary
    defs["probe_facts"] = {
        "description": "The facts of a `netdiag probe NAME` report: one object per probe run.",
        "type": "object",
        "properties": {p: {"$ref": f"#/$defs/{p}"} for p in PROBES},
        "additionalProperties": False}
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "netdiag eBPF probe results",
            "description": "Typed results of the eBPF probes (netdiag/probefacts.py), as they "
                           "appear in the facts of `netdiag probe NAME --format json`. "
                           "Generated by tests/schema_gen.py.",
            "$ref": "#/$defs/probe_facts",
            "$defs": dict(sorted(defs.items()))}


if __name__ == "__main__":
    json.dump(schema(), sys.stdout, indent=2)  # not netdiag output: the schema itself
    sys.stdout.write("\n")
