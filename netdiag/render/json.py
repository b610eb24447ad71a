"""The contract's JSON document: docs/schema/netdiag.schema.json describes it.

SCHEMA names the document's version: it changes when a change would break a consumer (a key
renamed or removed, a type changed), and CHANGELOG.md says what changed.
"""

from __future__ import annotations

import json
from typing import Any, TextIO

from netdiag.model import Report

SCHEMA = "netdiag/2"


def report_dict(report: Report) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "command": report.topic,
        "generated_at": report.generated_at,
        "host": {"hostname": report.host.hostname, "kernel": report.host.kernel,
                 "netns": report.host.netns},
        "all_netns": report.all_netns,
        "status": report.status,
        "findings": [f.to_dict() for f in report.findings],
        "facts": report.facts,
        "errors": [e.to_dict() for e in report.errors],
        # finding ids not judged (their facts missing, or their rule failed: see errors)
        "not_judged": list(report.not_judged),
    }


def _jsonable(value: Any) -> Any:
    """Sets become sorted lists; anything else JSON cannot carry becomes its text (a
    defect the schema tests catch, never a failed report)."""
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=str)
    return str(value)


def dump(data: Any, out: TextIO) -> None:
    """One JSON document on `out`: indented, ASCII (non-ASCII as \\u escapes), newline-ended."""
    json.dump(data, out, indent=2, default=_jsonable)
    out.write("\n")


def render_json(report: Report, out: TextIO) -> None:
    dump(report_dict(report), out)
