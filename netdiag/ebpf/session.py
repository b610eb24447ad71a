"""Run probes for a window and return their facts: the probe layer's collector.

Programs are compiled and attached, the window runs (Ctrl-C or SIGTERM ends it early and
what was gathered is still read), then everything is detached and unloaded, always.
"""

from __future__ import annotations

import time
from typing import Any

from netdiag.ebpf import runtime
from netdiag.ebpf.probes import PROBES
from netdiag.errors import UsageError


def status() -> list[dict[str, Any]]:
    """`probe list`: every probe, whether it can run here, and if not exactly why."""
    reqs = runtime.requirements()
    blockers = [(k, r) for k, r in reqs.items() if not r.ok]
    rows = []
    for spec in PROBES.values():
        plan = runtime.plan_hooks(spec.hooks) if reqs["tracefs"].ok else runtime.Plan(
            missing=[(h, "tracefs is not mounted") for h in spec.hooks])
        reasons = [f"{r.reason} (fix: {r.fix})" for _, r in blockers]
        if not plan.enabled:
            reasons.append("none of its tracepoints exist on this kernel")
        rows.append({
            "probe": spec.name,
            "runnable": not reasons,
            "why_not": "; ".join(reasons),
            "hooks": [f"{h.category}:{h.event}" for h in plan.enabled],
            "missing_parts": [f"{h.part}: {why}" for h, why in plan.missing],
            "summary": spec.summary,
            "overhead": spec.overhead,
        })
    return rows


def print_status(fmt: str, out) -> None:
    """`probe list` as a table (probe, runnable, why not) or JSON."""
    rows = status()
    if fmt == "json":
        import json

        from netdiag.render.json import SCHEMA

        json.dump({"schema": SCHEMA, "probes": rows}, out, indent=2)
        out.write("\n")
        return
    from netdiag.render.table import render_rows

    render_rows("probes", [{"probe": r["probe"], "runnable": "yes" if r["runnable"] else "no",
                            "why not / missing parts": r["why_not"] or
                            "; ".join(r["missing_parts"]) or "-"} for r in rows], out)


def check_requirements() -> None:
    reqs = runtime.requirements()
    bad = [r for r in reqs.values() if not r.ok]
    if bad:
        raise UsageError("; ".join(f"{r.reason} (fix: {r.fix})" for r in bad))


def run(names: list[str], seconds: float, interval: float | None = None, on_tick=None,
        poll=None) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """Run the named probes together for `seconds`. Returns {name: facts} and errors.

    on_tick(facts_so_far, elapsed) is called every `interval`; poll() on every loop turn
    (the backlog probe samples accept queues there).
    """
    check_requirements()
    loaded: dict[str, runtime.Loaded] = {}
    errors: list[tuple[str, str]] = []
    out: dict[str, Any] = {}
    try:
        for name in names:
            spec = PROBES[name]
            plan = runtime.plan_hooks(spec.hooks)
            if not plan.enabled:
                errors.append((f"probe:{name}", "none of its tracepoints exist here: " +
                               "; ".join(why for _, why in plan.missing)))
                continue
            defines, why = spec.defines() if spec.defines else ({}, None)
            if why:
                plan.missing.append((runtime.Hook("ports", "-", "-", "-", ()), why))
            try:
                loaded[name] = runtime.Loaded(name, plan, defines)
            except Exception as exc:  # bcc raises bare Exception on compile/attach failure
                errors.append((f"probe:{name}", f"could not load: {exc}"))
        if not loaded:
            return out, errors

        def read_all(elapsed: float) -> dict[str, Any]:
            facts = {}
            for name, probe in loaded.items():
                facts[name] = PROBES[name].read(probe.bpf, probe.plan, elapsed)
                facts[name]["seconds"] = round(elapsed, 3)
                facts[name]["startup_seconds"] = probe.startup_seconds
                facts[name]["hooks"] = [f"{h.category}:{h.event}" for h in probe.plan.enabled]
                facts[name]["missing_parts"] = [f"{h.part}: {why}"
                                                for h, why in probe.plan.missing]
            return facts

        started = time.monotonic()
        tick = (lambda elapsed: on_tick(read_all(elapsed), elapsed)) if on_tick else None
        waited = runtime.wait(seconds, interval, tick or (lambda e: None), poll)
        out = read_all(waited)
        if waited < seconds - 0.2:
            for facts in out.values():
                facts["interrupted_after_s"] = round(time.monotonic() - started, 1)
    finally:
        for probe in loaded.values():
            probe.close()
    return out, errors
