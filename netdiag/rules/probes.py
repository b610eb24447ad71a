"""Whether the probes counted everything (every probe run): lost events are said, never hidden."""

from __future__ import annotations

from typing import Any

from netdiag.facts import Facts
from netdiag.model import Finding, Rule, RuleSpec, Severity
from netdiag.probefacts import ProbeResult
from netdiag.rules._util import make

TOPIC = "probes"
SUMMARY = "Completeness of the eBPF probe results (events lost in full maps, skipped runs)"

BACKGROUND = (
    "Probes count in the kernel, in BPF maps of fixed capacity, keyed by what the report shows "
    "(ephemeral ports are aggregated away, so a map fills with destinations or services, "
    "not with connections). An event whose key no longer fits is counted per map instead of "
    "vanishing, and the kernel counts the runs it skipped (a BPF program already running on "
    "that CPU). Either makes the affected tables lower bounds."
)

INCOMPLETE = RuleSpec(
    id="probes.incomplete",
    topic=TOPIC,
    title="Probe results incomplete: some events were not counted",
    rule=Rule(
        text="A BPF hash map holds at most max_entries keys; adding a key to a full map fails "
             "(E2BIG), and netdiag counts each such event per map. A tracing program is not "
             "run while another BPF program runs on the same CPU; the kernel counts these "
             "skipped runs in bpf_prog_info.recursion_misses.",
        source="kernel/bpf/hashtab.c (htab_map_update_elem); kernel/trace/bpf_trace.c "
               "(trace_call_bpf); include/uapi/linux/bpf.h (struct bpf_prog_info)",
    ),
    explanation=(
        "The rows the full map fed are lower bounds: they are marked approximate (rows kept "
        "in arrays that cannot fill, such as a server's rows by port, stay exact), the totals "
        "of the tables named in the evidence are short by about the events lost, and a key "
        "whose every event was lost has no row at all."
    ),
    recommendation=(
        "Probe for a shorter window (--duration, --probe-seconds), or in one namespace "
        "(--netns), so fewer distinct keys arrive; the events lost say by how much the rows "
        "fall short."
    ),
    thresholds="warning whenever a probe lost events or the kernel skipped its runs",
)

SPECS = (INCOMPLETE,)


def _loss(res: ProbeResult) -> dict[str, Any]:
    c = res.completeness
    return {"probe": res.probe, "events_lost": c.events_lost, "skipped_runs": c.skipped_runs,
            "maps": [{"map": m.map, "capacity": m.capacity, "events_lost": m.events_lost,
                      "tables": m.tables} for m in c.lost]}


def check(facts: Facts) -> list[Finding]:
    if not facts.probes:
        return []
    results = [r for r in facts.probes.values() if isinstance(r, ProbeResult)]
    bad = [r for r in results if not r.completeness.complete]
    evidence: dict[str, Any] = {
        "probes": [_loss(r) for r in results],
        "window_seconds": max((r.window.seconds for r in results), default=0.0)}
    if not bad:
        return [make(INCOMPLETE, Severity.OK, "every probe event was counted", evidence)]
    parts = []
    for r in bad:
        c = r.completeness
        what = [f"{m.events_lost} events lost in map {m.map} (full at {m.capacity} entries: "
                f"{m.bounds})" for m in c.lost]
        if c.skipped_runs:
            what.append(f"{c.skipped_runs} runs skipped by the kernel")
        parts.append(f"probe {r.probe}: " + "; ".join(what))
    return [make(INCOMPLETE, Severity.WARNING, "; ".join(parts), evidence)]
